//! The replica link against a real redis-server: offsets, full resyncs, +CONTINUE after
//! a cut, ACKs, and the errors a user sees.

mod support;

use std::process::Command as Process;
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tandem::core::ReplPosition;
use tandem::core::shutdown::{Shutdown, shutdown_pair};
use tandem::redis::replica::{self, Event, LinkConfig, ReplicaLink};
use tandem::redis::url::Endpoint;

fn quick_server(diskless: bool) -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync", if diskless { "yes" } else { "no" })
            .arg("repl-diskless-sync-delay", "0")
            // Quiet sources: no PING between our writes and the offset comparison.
            .arg("repl-ping-replica-period", "3600"),
    )
}

fn link_to(server: &RedisServer, spool: &tempfile::TempDir, shutdown: Shutdown) -> ReplicaLink {
    let cfg = LinkConfig::new(Endpoint::parse(&server.url()).unwrap(), spool.path().into());
    replica::start(cfg, 0, shutdown).expect("link starts")
}

fn master_offset(server: &RedisServer) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .unwrap()
        .parse()
        .unwrap()
}

/// Offset the master shows for its first replica (what it last got in REPLCONF ACK).
fn replica_ack_offset(server: &RedisServer) -> Option<u64> {
    let line = server.info_field("replication", "slave0")?;
    line.split(',')
        .find_map(|kv| kv.strip_prefix("offset="))
        .and_then(|v| v.parse().ok())
}

struct Received {
    rdb: Vec<u8>,
    full_syncs: usize,
    continues: Vec<(String, u64)>,
    commands: Vec<replica::Command>,
    replid: String,
}

/// Read events until `done` holds for what was received, confirming every command.
async fn collect_until(
    link: &mut ReplicaLink,
    rec: &mut Received,
    limit: Duration,
    mut done: impl FnMut(&Received) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done(rec) {
        let ev = tokio::time::timeout_at(deadline, link.events.next())
            .await
            .expect("timed out waiting for replication events")
            .expect("link error")
            .expect("link ended");
        match ev {
            Event::FullSync { replid, .. } => {
                rec.full_syncs += 1;
                rec.rdb.clear();
                rec.replid = replid;
            }
            Event::RdbChunk(b) => rec.rdb.extend_from_slice(&b),
            Event::RdbEnd => {}
            Event::Continue { replid, offset } => {
                rec.replid = replid.clone();
                rec.continues.push((replid, offset));
            }
            Event::Command(c) => {
                link.handle
                    .confirm(ReplPosition::new(rec.replid.clone(), c.offset));
                rec.commands.push(c);
            }
            Event::Echo(c) => panic!("a one-way link read an echo at {}", c.offset),
        }
    }
}

fn new_received() -> Received {
    Received {
        rdb: Vec::new(),
        full_syncs: 0,
        continues: Vec::new(),
        commands: Vec::new(),
        replid: String::new(),
    }
}

fn last_offset(r: &Received) -> u64 {
    r.commands.last().map(|c| c.offset).unwrap_or(0)
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn assert_rdb_shape(rdb: &[u8]) {
    assert!(
        rdb.starts_with(b"REDIS"),
        "RDB magic missing: {:?}",
        &rdb[..rdb.len().min(9)]
    );
    // The file ends with the EOF opcode and an 8-byte checksum: nothing of the EOF mark
    // of a diskless transfer may remain.
    assert_eq!(rdb[rdb.len() - 9], 0xFF, "RDB does not end with EOF + CRC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_byte_exact_across_dbs_disk_transfer() {
    offsets_are_byte_exact(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_byte_exact_across_dbs_diskless_transfer() {
    offsets_are_byte_exact(true).await;
}

async fn offsets_are_byte_exact(diskless: bool) {
    let server = quick_server(diskless);
    let mut c = server.client();
    for i in 0..50 {
        c.cmd(&["SET", &format!("pre:{i}"), "x"]);
    }
    let spool = tempfile::tempdir().unwrap();
    let (_trigger, shutdown) = shutdown_pair();
    let mut link = link_to(&server, &spool, shutdown);
    let mut rec = new_received();
    collect_until(&mut link, &mut rec, Duration::from_secs(30), |r| {
        r.full_syncs == 1 && !r.rdb.is_empty() && r.continues.is_empty()
    })
    .await;
    // Wait for the RDB to be complete (RdbEnd follows the chunks).
    let mut rng = Lcg(if diskless { 7 } else { 11 });
    let mut expected: Vec<(u32, Vec<String>)> = Vec::new();
    for i in 0..400 {
        let db = (rng.next() % 4) as u32;
        let key = format!("k{}", rng.next() % 30);
        let argv: Vec<String> = match rng.next() % 5 {
            0 => vec!["SET".into(), key, format!("v{i}")],
            1 => vec![
                "RPUSH".into(),
                key.replace('k', "l"),
                format!("{i}"),
                "x".into(),
            ],
            2 => vec![
                "HSET".into(),
                key.replace('k', "h"),
                "f".into(),
                format!("{i}"),
            ],
            3 => vec!["INCRBY".into(), key.replace('k', "n"), format!("{}", i % 7)],
            _ => vec!["SADD".into(), key.replace('k', "s"), format!("m{i}")],
        };
        let mut cl = server.client();
        cl.cmd(&["SELECT", &db.to_string()]);
        let args: Vec<&str> = argv.iter().map(|s| s.as_str()).collect();
        let r = cl.cmd(&args);
        assert!(!matches!(r, Frame::Error(_)), "{argv:?}: {r:?}");
        expected.push((db, argv));
    }
    let target = master_offset(&server);
    collect_until(&mut link, &mut rec, Duration::from_secs(30), |r| {
        last_offset(r) >= target
    })
    .await;
    assert_rdb_shape(&rec.rdb);
    assert_eq!(
        last_offset(&rec),
        target,
        "tandem's offset equals master_repl_offset"
    );
    assert_eq!(master_offset(&server), target, "source stayed quiet");
    // Every write arrives once, in order, in its db; PING/SELECT are extra stream bytes.
    let writes: Vec<(u32, Vec<String>)> = rec
        .commands
        .iter()
        .filter(|c| !c.name_is("PING") && !c.name_is("SELECT") && !c.name_is("REPLCONF"))
        .map(|c| {
            let argv = c
                .argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned());
            (c.db, argv.collect())
        })
        .collect();
    let norm = |v: &[(u32, Vec<String>)]| -> Vec<(u32, Vec<String>)> {
        v.iter()
            .map(|(d, a)| {
                let mut a = a.clone();
                a[0] = a[0].to_ascii_uppercase();
                (*d, a)
            })
            .collect()
    };
    assert_eq!(norm(&writes), norm(&expected));
    // Offsets are contiguous: each command starts where the previous ended.
    for w in rec.commands.windows(2) {
        assert_eq!(
            w[0].offset, w[1].start,
            "gap between {:?} and {:?}",
            w[0], w[1]
        );
    }
    // The master sees the confirmed offset (ACKs go out when the confirmation moves).
    wait_until("master shows tandem's ACK", Duration::from_secs(10), || {
        replica_ack_offset(&server) == Some(target)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_report_the_confirmed_offset_not_the_received_one() {
    let server = quick_server(true);
    let spool = tempfile::tempdir().unwrap();
    let (_trigger, shutdown) = shutdown_pair();
    let mut link = link_to(&server, &spool, shutdown);
    let mut rec = new_received();
    collect_until(&mut link, &mut rec, Duration::from_secs(30), |r| {
        r.full_syncs == 1
    })
    .await;
    let mut c = server.client();
    for i in 0..20 {
        c.cmd(&["SET", "k", &i.to_string()]);
    }
    let target = master_offset(&server);
    // Read without confirming: the master must not see more than we confirm.
    let mut seen = Vec::new();
    while seen.last().map(|c: &replica::Command| c.offset) != Some(target) {
        match tokio::time::timeout(Duration::from_secs(10), link.events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Command(cmd) => seen.push(cmd),
            Event::RdbEnd | Event::RdbChunk(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mid = seen[seen.len() / 2].offset;
    link.handle
        .confirm(ReplPosition::new(rec.replid.clone(), mid));
    wait_until(
        "master shows the confirmed offset",
        Duration::from_secs(10),
        || replica_ack_offset(&server) == Some(mid),
    );
    // The periodic ACK keeps repeating it (not the received offset).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replica_ack_offset(&server), Some(mid));
    link.handle
        .confirm(ReplPosition::new(rec.replid.clone(), target));
    wait_until(
        "master shows the final offset",
        Duration::from_secs(10),
        || replica_ack_offset(&server) == Some(target),
    );
    // WAIT on the source counts tandem once it confirmed.
    let acked = c.cmd_int(&["WAIT", "1", "5000"]);
    assert_eq!(acked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_continues_without_full_resync() {
    let server = quick_server(true);
    let spool = tempfile::tempdir().unwrap();
    let (_trigger, shutdown) = shutdown_pair();
    let mut link = link_to(&server, &spool, shutdown);
    let mut rec = new_received();
    collect_until(&mut link, &mut rec, Duration::from_secs(30), |r| {
        r.full_syncs == 1
    })
    .await;
    let first_replid = rec.replid.clone();
    // A writer thread pushes a numbered sequence while the replica connection is killed
    // several times.
    const N: usize = 6000;
    let port = server.port;
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(port).unwrap();
        for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
            let cmds: Vec<Vec<Bytes>> = chunk
                .iter()
                .map(|i| {
                    vec![
                        Bytes::from("RPUSH"),
                        Bytes::from("seq"),
                        Bytes::from(i.to_string()),
                    ]
                })
                .collect();
            c.pipeline(&cmds);
        }
    });
    let killer_port = server.port;
    let killer = std::thread::spawn(move || {
        let mut killed = 0;
        let mut c = Client::connect(killer_port).unwrap();
        for _ in 0..200 {
            if killed == 3 {
                break;
            }
            let n = c.cmd_int(&["CLIENT", "KILL", "TYPE", "replica"]);
            killed += n;
            std::thread::sleep(Duration::from_millis(40));
        }
        killed
    });
    writer.join().unwrap();
    let kills = killer.join().unwrap();
    assert!(kills >= 1, "the replica connection was never killed");
    let target = master_offset(&server);
    collect_until(&mut link, &mut rec, Duration::from_secs(60), |r| {
        last_offset(r) >= target
    })
    .await;
    assert_eq!(rec.full_syncs, 1, "a cut must not cause a full resync");
    assert!(
        !rec.continues.is_empty(),
        "no +CONTINUE seen after {kills} kills"
    );
    assert!(rec.continues.iter().all(|(id, _)| *id == first_replid));
    assert_eq!(last_offset(&rec), target);
    let values: Vec<usize> = rec
        .commands
        .iter()
        .filter(|c| c.name_is("RPUSH"))
        .map(|c| std::str::from_utf8(&c.argv[2]).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        values,
        (0..N).collect::<Vec<_>>(),
        "every write once, in order"
    );
    assert_eq!(
        server.info_field("stats", "sync_full").as_deref(),
        Some("1")
    );
}

fn run_tail(url: &str) -> (i32, String) {
    let out = Process::new(tandem_bin())
        .args(["redis", "tail", "--source", url, "--count", "1"])
        .env("TANDEM_LOG", "off")
        .output()
        .expect("run tandem");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_clear_line(stderr: &str, must_contain: &[&str]) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(lines[0].starts_with("tandem: error: "), "{stderr}");
    for m in must_contain {
        assert!(lines[0].contains(m), "{m:?} not in {stderr:?}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn wrong_password_is_one_line_without_the_password() {
    let server = RedisServer::start_with(ServerOpts::default().arg("requirepass", "right-one"));
    let url = format!("redis://:wrong-secret@127.0.0.1:{}", server.port);
    let (code, err) = run_tail(&url);
    assert_eq!(code, 1, "{err}");
    assert_one_clear_line(
        &err,
        &[&format!("127.0.0.1:{}", server.port), "authentication"],
    );
    assert!(
        !err.contains("wrong-secret") && !err.contains("right-one"),
        "{err}"
    );
    // No password at all.
    let (code, err) = run_tail(&server.url());
    assert_eq!(code, 1, "{err}");
    assert_one_clear_line(&err, &["password"]);
}

#[test]
fn unreachable_host_is_one_line() {
    let port = free_port();
    let (code, err) = run_tail(&format!("redis://u:pw123@127.0.0.1:{port}"));
    assert_eq!(code, 1, "{err}");
    assert_one_clear_line(&err, &[&format!("127.0.0.1:{port}"), "connect"]);
    assert!(!err.contains("pw123"));
}

#[test]
fn a_server_refusing_psync_is_one_line() {
    let server = RedisServer::start();
    let r = server.cmd(&[
        "ACL", "SETUSER", "nosync", "on", ">pw", "~*", "+@all", "-psync", "-sync",
    ]);
    assert_eq!(r, Frame::SimpleString("OK".into()));
    let (code, err) = run_tail(&format!("redis://nosync:pw@127.0.0.1:{}", server.port));
    assert_eq!(code, 1, "{err}");
    assert_one_clear_line(&err, &["PSYNC", "NOPERM"]);
}

#[test]
fn a_foreign_service_is_one_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let (code, err) = run_tail(&format!("redis://127.0.0.1:{port}"));
    assert_eq!(code, 1, "{err}");
    assert_one_clear_line(&err, &[&format!("127.0.0.1:{port}"), "not a Redis server"]);
    server.join().unwrap();
}

#[test]
fn tail_prints_json_lines_with_offsets() {
    use std::io::BufRead;
    let server = quick_server(true);
    let mut child = Process::new(tandem_bin())
        .args(["redis", "tail", "--source", &server.url(), "--count", "100"])
        .env("TANDEM_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("tandem attached", Duration::from_secs(20), || {
        server
            .info_field("replication", "slave0")
            .is_some_and(|l| l.contains("state=online"))
    });
    let mut c = server.client();
    c.cmd(&["SELECT", "2"]);
    c.cmd(&["SET", "key", "val"]);
    let target = master_offset(&server);
    // Bound the blocking read below: kill tandem if the SET never shows up.
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        for _ in 0..200 {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Process::new("kill").arg(pid.to_string()).status();
    });
    let stdout = child.stdout.take().unwrap();
    let mut last = serde_json::Value::Null;
    for line in std::io::BufReader::new(stdout).lines() {
        last = serde_json::from_str(&line.unwrap()).unwrap();
        if last["argv"][0] == "SET" {
            break;
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(last["argv"], serde_json::json!(["SET", "key", "val"]));
    assert_eq!(last["db"], 2);
    assert_eq!(last["offset"], target);
}
