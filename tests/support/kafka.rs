//! A Kafka-protocol broker for tests: noida-db (PyPI `noida-db==0.2.3`, installed by
//! scripts/servers.sh) with only its Kafka service, on an ephemeral loopback port,
//! waited for by bounded polling, killed by PID on drop. Transactions and
//! `read_committed` work on it (../shared/research/kafka-broker.md).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::free_port;

/// The broker binary: `TANDEM_NOIDA` (set by scripts/servers.sh), or the venv the
/// script makes under target/.
pub fn noida_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANDEM_NOIDA") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kafka-venv/lib");
    std::fs::read_dir(&venv)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|py| py.path().join("site-packages/noida_db/noida-db"))
        .unwrap_or_else(|| venv.join("noida-db"))
}

pub struct KafkaBroker {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        let dir = tempfile::Builder::new()
            .prefix("tandem-kafka-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let child = Command::new(noida_binary())
            .arg("start")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--host", "127.0.0.1", "--only", "kafka"])
            .args(["--kafka-port", &port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (run scripts/servers.sh, which installs noida-db)",
                    noida_binary().display()
                )
            });
        let mut b = KafkaBroker { port, child, dir };
        let start = Instant::now();
        for _ in 0..3000 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return b;
            }
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("noida-db exited with {st}: {}", b.log_tail());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "noida-db did not listen within 20 s: {}",
                b.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("noida-db did not listen: {}", b.log_tail())
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = admin
            .create_topics([&t], &AdminOptions::new())
            .await
            .unwrap();
        assert!(r[0].is_ok(), "creating {name}: {:?}", r[0]);
    }

    /// [`KafkaBroker::consumer`] of a topic tandem creates: waits for it to exist.
    pub async fn consumer_when_created(&self, topic: &str) -> Reader {
        let start = Instant::now();
        loop {
            if self.partitions(topic) > 0 {
                return self.consumer(topic);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "topic {topic} not created within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn partitions(&self, topic: &str) -> usize {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        match c.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => md
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().len())
                .sum(),
            Err(_) => 0,
        }
    }

    /// A `read_committed` consumer of every partition of `topic`, from the beginning.
    pub fn consumer(&self, topic: &str) -> Reader {
        self.consumer_at(topic, "read_committed")
    }

    /// A consumer at isolation level `level` (`read_uncommitted` for diagnostics).
    pub fn consumer_at(&self, topic: &str, level: &str) -> Reader {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", "tandem-test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", level)
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let n = md.topics()[0].partitions().len();
        assert!(n > 0, "topic {topic} has no partitions");
        for p in 0..n as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        Reader { c, got: Vec::new() }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message read back.
#[derive(Clone, Debug)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: serde_json::Value,
}

pub struct Reader {
    c: BaseConsumer,
    pub got: Vec<Msg>,
}

impl Reader {
    /// Polls until at least `n` messages were read (panics after `limit`); returns all
    /// read so far.
    pub fn at_least(&mut self, n: usize, limit: Duration) -> &[Msg] {
        let start = Instant::now();
        while self.got.len() < n {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} with {} of {n} messages",
                self.got.len()
            );
            self.poll(Duration::from_millis(100));
        }
        &self.got
    }

    /// [`Reader::at_least`] without the panic.
    pub fn try_at_least(&mut self, n: usize, limit: Duration) -> Result<(), ()> {
        let start = Instant::now();
        while self.got.len() < n {
            if start.elapsed() > limit {
                return Err(());
            }
            self.poll(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Reads whatever arrives within `quiet` of silence (for "nothing more came").
    pub fn drain(&mut self, quiet: Duration) -> &[Msg] {
        let mut idle = Instant::now();
        while idle.elapsed() < quiet {
            if self.poll(Duration::from_millis(100)) {
                idle = Instant::now();
            }
        }
        &self.got
    }

    fn poll(&mut self, t: Duration) -> bool {
        match self.c.poll(t) {
            None => false,
            Some(Err(KafkaError::PartitionEOF(_))) => false,
            Some(Err(e)) => panic!("consuming: {e}"),
            Some(Ok(m)) => {
                let value = serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or_else(|e| panic!("message is not JSON ({e}): {:?}", m.payload()));
                self.got.push(Msg {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value,
                });
                true
            }
        }
    }
}
