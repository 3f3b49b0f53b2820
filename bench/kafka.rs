//! `cargo bench --bench kafka -- [--docs N] [--tandem PATH]`
//!
//! Messages/s and MB/s into the broker: tandem's full copy of N documents from secantus
//! into a topic (Canal JSON, lz4, acks=all, one Kafka transaction per 5000 messages),
//! beside a plain rdkafka producer (idempotent, acks=all, lz4, no transactions) sending
//! the very messages tandem wrote, read back from the topic, in the same run, and beside
//! the source's own rate for the copy's read (a plain `find` in `_id` order). tandem's
//! CPU time per 10k messages and peak RSS come from /usr/bin/time. Needs
//! scripts/servers.sh (TANDEM_SECANTUSD, TANDEM_NOIDA in the environment).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listen(p: u16) {
    for _ in 0..3000 {
        if TcpStream::connect(("127.0.0.1", p)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("port {p} never listened");
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let docs: i64 = arg(&args, "--docs").map_or(100_000, |s| s.parse().unwrap());
    let tandem = arg(&args, "--tandem").unwrap_or_else(|| "target/release/tandem".into());
    let dir = tempfile::tempdir().unwrap();
    let (kp, mp) = (port(), port());
    let _k = Proc(
        Command::new(std::env::var("TANDEM_NOIDA").expect("TANDEM_NOIDA (scripts/servers.sh)"))
            .args(["start", "--data-dir"])
            .arg(dir.path().join("k"))
            .args([
                "--host",
                "127.0.0.1",
                "--only",
                "kafka",
                "--kafka-port",
                &kp.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _m = Proc(
        Command::new(std::env::var("TANDEM_SECANTUSD").expect("TANDEM_SECANTUSD"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &mp.to_string(),
                "--storage-path",
            ])
            .arg(dir.path().join("m"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listen(kp);
    wait_listen(mp);
    let uri = format!("mongodb://127.0.0.1:{mp}/?directConnection=true");
    let brokers = format!("127.0.0.1:{kp}");
    let c = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let coll = c
        .database("bench")
        .collection::<mongodb::bson::Document>("o");
    for chunk in (0..docs).collect::<Vec<_>>().chunks(10_000) {
        coll.insert_many(chunk.iter().map(|i| {
            doc! {"_id": *i, "name": format!("customer {i}"), "qty": i % 100, "price": 9.99,
            "tags": ["a", "b", "c"], "addr": {"city": "Berlin", "zip": format!("{:05}", i % 99999)},
            "note": "the quick brown fox jumps over the lazy dog"}
        }))
        .await
        .unwrap();
    }
    eprintln!("seeded {docs} documents");

    // The source's own rate for the copy's read (in `_id` order, 1000 per batch): the
    // copy cannot be faster than this, whatever the producer does.
    let raw = c
        .database("bench")
        .collection::<mongodb::bson::RawDocumentBuf>("o");
    let r0 = Instant::now();
    let mut cur = raw
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(1000)
        .await
        .unwrap();
    let mut read = 0i64;
    while cur.advance().await.unwrap() {
        read += 1;
    }
    assert_eq!(read, docs);
    let r_secs = r0.elapsed().as_secs_f64();

    // tandem: the copy, under /usr/bin/time for CPU and peak RSS.
    let t0 = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args([
            "-f",
            "%U %S %M",
            &tandem,
            "mongo",
            "kafka",
            "--source",
            &uri,
            "--brokers",
            &brokers,
        ])
        .args([
            "--topic",
            "t",
            "--create-topics",
            "--mode",
            "full",
            "--compression",
            "lz4",
        ])
        .args(["--batch-ops", "5000", "--id", "bench"])
        .env("TANDEM_LOG", "warn")
        .output()
        .unwrap();
    let t_secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tandem failed: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let f: Vec<f64> = last
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (cpu, rss_kb) = (f[0] + f[1], f[2]);

    // Read tandem's messages back: the plain producer sends exactly these.
    let cons: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "bench")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Beginning).unwrap();
    cons.assign(&tpl).unwrap();
    let mut msgs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(docs as usize);
    let start = Instant::now();
    while (msgs.len() as i64) < docs {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "read back {} of {docs}",
            msgs.len()
        );
        if let Some(Ok(m)) = cons.poll(Duration::from_millis(200)) {
            msgs.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    let bytes: usize = msgs.iter().map(|(k, v)| k.len() + v.len()).sum();

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    let b0 = Instant::now();
    let mut futs = Vec::with_capacity(msgs.len());
    for (k, v) in &msgs {
        loop {
            match p.send_result(FutureRecord::to("t").key(k).payload(v)) {
                Ok(f) => {
                    futs.push(f);
                    break;
                }
                Err(_) => p.poll(Duration::from_millis(5)),
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    for f in futs {
        f.await.unwrap().unwrap();
    }
    let b_secs = b0.elapsed().as_secs_f64();

    let n = docs as f64;
    let mb = bytes as f64 / 1e6;
    println!("| | messages/s | MB/s | wall s |");
    println!("|---|---|---|---|");
    println!(
        "| tandem mongo kafka (copy, txn per 5000) | {:.0} | {:.1} | {t_secs:.2} |",
        n / t_secs,
        mb / t_secs
    );
    println!(
        "| plain rdkafka producer, same messages | {:.0} | {:.1} | {b_secs:.2} |",
        n / b_secs,
        mb / b_secs
    );
    println!(
        "| source read alone (find in _id order, 1000 per batch) | {:.0} | | {r_secs:.2} |",
        n / r_secs
    );
    println!();
    println!("ratio tandem / plain: {:.0}%", 100.0 * b_secs / t_secs);
    println!(
        "ratio tandem / the slower of plain producer and source read: {:.0}%",
        100.0 * b_secs.max(r_secs) / t_secs
    );
    println!(
        "tandem CPU (user+sys) per 10k messages: {:.3} s; peak RSS {:.0} MB",
        cpu / n * 1e4,
        rss_kb / 1024.0
    );
    println!("{docs} messages, {mb:.1} MB (keys + Canal JSON values, before compression)");
}
