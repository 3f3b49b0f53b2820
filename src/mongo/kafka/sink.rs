//! The Kafka side: one producer whose every batch is one Kafka transaction holding the
//! batch's messages and the link's [`State`] record in the compacted position topic.
//! A `read_committed` consumer therefore sees a batch whole or not at all, and the
//! position read back on start says exactly which batches it sees.
//!
//! `transactional.id` is `tandem-<id>`: `init_transactions` of a restarted tandem
//! aborts what its predecessor left open and fences it, so a zombie can never commit
//! after its successor began. With `--acks 1|0` there are no transactions: messages are
//! awaited, then the position is written, and a crash in between sends the batch again
//! (at least once; `0` does not even wait for the broker).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::state::State;
use crate::mongo::error::{MongoError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Acks {
    /// Every in-sync replica; batches are Kafka transactions (exactly once).
    All,
    /// The leader only; no transactions (at least once).
    #[value(name = "1")]
    One,
    /// Nothing awaited; no transactions, no delivery guarantee.
    #[value(name = "0")]
    Zero,
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// The bootstrap list as given: `host:port[,…]`.
    pub brokers: String,
    pub id: String,
    pub compression: Compression,
    pub acks: Acks,
    /// Create missing topics (with `partitions` partitions) instead of failing.
    pub create_topics: bool,
    pub partitions: i32,
    pub positions_topic: String,
    /// librdkafka settings passed through (`-X key=value`); values are never printed.
    pub settings: Vec<(String, String)>,
}

pub struct Sink {
    cfg: SinkConfig,
    producer: FutureProducer<Quiet>,
    transactional: bool,
    partitions: HashMap<String, i32>,
    /// Messages sent in the open batch, with what each is (for an error naming it).
    pending: VecDeque<(DeliveryFuture, String)>,
    failed: Option<MongoError>,
    open: bool,
}

const META_TIMEOUT: Duration = Duration::from_secs(10);
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

impl Sink {
    fn name(&self) -> String {
        kafka_name(&self.cfg.brokers)
    }

    /// Connects, checks (or creates) every topic, fences a previous producer of this
    /// link, and returns the sink with the link's committed state.
    pub async fn connect(cfg: SinkConfig, topics: &[String]) -> Result<(Sink, Option<State>)> {
        let name = kafka_name(&cfg.brokers);
        let consumer = positions_consumer(&cfg)?;
        let mut partitions = blocking(&name, {
            let (c, topics, cfg) = (consumer.clone(), topics.to_vec(), cfg.clone());
            move || check_topics(&c, &topics, &cfg)
        })
        .await??;
        let missing: Vec<String> = topics
            .iter()
            .chain(std::iter::once(&cfg.positions_topic))
            .filter(|t| !partitions.contains_key(*t))
            .cloned()
            .collect();
        if !missing.is_empty() {
            create(&cfg, &missing).await?;
            partitions = blocking(&name, {
                let (c, topics, cfg) = (consumer.clone(), topics.to_vec(), cfg.clone());
                move || wait_created(&c, &topics, &cfg)
            })
            .await??;
        }
        let transactional = cfg.acks == Acks::All;
        let producer: FutureProducer<Quiet> = producer_config(&cfg, transactional)
            .create_with_context(Quiet)
            .map_err(|e| MongoError::from_kafka(&name, &e))?;
        if transactional {
            let p = producer.clone();
            blocking(&name, move || p.init_transactions(TXN_TIMEOUT))
                .await?
                .map_err(|e| {
                    MongoError::from_kafka(format!("{name}: starting transactions"), &e)
                })?;
        }
        // Only now: init_transactions aborted any transaction the last process left
        // open, so the committed records are all there is.
        let state = blocking(&name, {
            let cfg = cfg.clone();
            move || read_state(&consumer, &cfg)
        })
        .await??;
        let sink = Sink {
            cfg,
            producer,
            transactional,
            partitions,
            pending: VecDeque::new(),
            failed: None,
            open: false,
        };
        Ok((sink, state))
    }

    pub fn transactional(&self) -> bool {
        self.transactional
    }

    /// Partitions of a topic given to [`Sink::connect`].
    pub fn partitions(&self, topic: &str) -> i32 {
        self.partitions.get(topic).copied().unwrap_or(1)
    }

    /// Queues one message of the open batch (opening it if needed). `what` names the
    /// document for an error (namespace and `_id`); it is built only when needed.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
        what: impl Fn() -> String,
    ) -> Result<()> {
        if !self.open {
            if self.transactional {
                self.producer
                    .begin_transaction()
                    .map_err(|e| MongoError::from_kafka(self.name(), &e))?;
            }
            self.open = true;
        }
        loop {
            let mut rec = FutureRecord::to(topic).key(key).payload(value);
            if let Some(p) = partition {
                rec = rec.partition(p);
            }
            match self.producer.send_result(rec) {
                Ok(f) => {
                    self.pending.push_back((f, what()));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The local queue is full: wait for the oldest message, then retry.
                    if !self.settle_one().await {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, _)) => {
                    return Err(self.message_error(&e, &what(), value.len()));
                }
            }
        }
    }

    /// Commits the open batch with `state` as the link's position (a batch of no
    /// messages commits the position alone).
    pub async fn commit(&mut self, state: &State) -> Result<()> {
        let (topic, key, value) = (
            self.cfg.positions_topic.clone(),
            self.cfg.id.clone(),
            state.to_json(),
        );
        let what = || format!("the position record of link {key:?}");
        if self.transactional {
            self.send(&topic, Some(0), key.as_bytes(), &value, what)
                .await?;
            self.settle_all().await?;
            let p = self.producer.clone();
            let name = self.name();
            let r = blocking(&name, move || p.commit_transaction(TXN_TIMEOUT)).await?;
            self.open = false;
            if let Err(e) = r {
                return Err(MongoError::from_kafka(
                    format!("{}: committing a transaction", self.name()),
                    &e,
                ));
            }
        } else {
            self.settle_all().await?;
            self.open = true;
            self.send(&topic, Some(0), key.as_bytes(), &value, what)
                .await?;
            self.settle_all().await?;
            self.open = false;
        }
        crate::metrics::kafka_transaction(self.transactional);
        Ok(())
    }

    /// Awaits the oldest message in flight; `false` when none is.
    async fn settle_one(&mut self) -> bool {
        let Some((f, what)) = self.pending.pop_front() else {
            return false;
        };
        let err = match f.await {
            Ok(Ok(_)) => return true,
            Ok(Err((e, m))) => self.message_error(&e, &what, m.payload().map_or(0, |p| p.len())),
            Err(_) => MongoError::retryable(self.name(), "the producer went away"),
        };
        self.failed.get_or_insert(err);
        true
    }

    async fn settle_all(&mut self) -> Result<()> {
        while self.settle_one().await {}
        match self.failed.take() {
            Some(e) => {
                self.abort().await;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Drops the open batch (a later [`Sink::connect`] would abort it anyway).
    async fn abort(&mut self) {
        self.pending.clear();
        if self.open && self.transactional {
            let p = self.producer.clone();
            let _ = blocking(&self.name(), move || p.abort_transaction(TXN_TIMEOUT)).await;
        }
        self.open = false;
    }

    fn message_error(&self, e: &KafkaError, what: &str, len: usize) -> MongoError {
        let mut err = MongoError::from_kafka(format!("{}: producing {what}", self.name()), e);
        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
            err.message = format!("{len} bytes: {}", err.message);
        }
        err
    }
}

/// librdkafka's own log lines and error events at debug level: every failure that
/// matters reaches tandem as the error of a call, which names brokers and documents;
/// an unreachable broker would otherwise print a line per retry.
#[derive(Clone, Copy)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        tracing::debug!("librdkafka {level:?} {fac}: {msg}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for Quiet {}

/// `kafka://host:port,…` for error contexts.
pub fn kafka_name(brokers: &str) -> String {
    format!("kafka://{brokers}")
}

fn base_config(cfg: &SinkConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "tandem")
        .set("log_level", "3");
    for (k, v) in &cfg.settings {
        c.set(k, v);
    }
    c
}

fn producer_config(cfg: &SinkConfig, transactional: bool) -> ClientConfig {
    let mut c = base_config(cfg);
    let codec = match cfg.compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    };
    // The Java client's partitioner: a keyed message lands where other producers of
    // the same key put it.
    c.set("compression.type", codec)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "200000");
    match cfg.acks {
        Acks::All => {
            c.set("acks", "all").set("enable.idempotence", "true");
        }
        Acks::One => {
            c.set("acks", "1").set("enable.idempotence", "false");
        }
        Acks::Zero => {
            c.set("acks", "0").set("enable.idempotence", "false");
        }
    }
    if transactional {
        c.set("transactional.id", format!("tandem-{}", cfg.id))
            // Short: a broker that does not abort a fenced producer's open transaction
            // at once holds read_committed consumers back until this timeout.
            .set("transaction.timeout.ms", "10000");
    }
    c
}

fn positions_consumer(cfg: &SinkConfig) -> Result<std::sync::Arc<BaseConsumer<Quiet>>> {
    let c: BaseConsumer<Quiet> = base_config(cfg)
        .set("group.id", format!("tandem-positions-{}", cfg.id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .create_with_context(Quiet)
        .map_err(|e| MongoError::from_kafka(kafka_name(&cfg.brokers), &e))?;
    Ok(std::sync::Arc::new(c))
}

/// Partition counts of the topics that exist; an error for a missing one unless
/// `--create-topics` (the position topic is tandem's own and always created).
fn check_topics(
    c: &BaseConsumer<Quiet>,
    topics: &[String],
    cfg: &SinkConfig,
) -> Result<HashMap<String, i32>> {
    let name = kafka_name(&cfg.brokers);
    let md = c.fetch_metadata(None, META_TIMEOUT).map_err(|e| {
        let mut err = MongoError::from_kafka(&name, &e);
        if err.is_retryable() {
            err.code = Some(crate::mongo::error::KAFKA_UNREACHABLE);
            err.message = format!(
                "no broker of {} answered within {} s ({})",
                cfg.brokers,
                META_TIMEOUT.as_secs(),
                err.message
            );
        }
        err
    })?;
    let mut out = HashMap::new();
    for t in md.topics() {
        if let Some(e) = t.error() {
            let e = KafkaError::MetadataFetch(e.into());
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) {
                return Err(MongoError::from_kafka(
                    format!("{name}: topic {}", t.name()),
                    &e,
                ));
            }
            continue;
        }
        out.insert(t.name().to_string(), t.partitions().len() as i32);
    }
    if !cfg.create_topics
        && let Some(t) = topics.iter().find(|t| !out.contains_key(*t))
    {
        return Err(MongoError::fatal(
            format!("{name}: topic {t:?}"),
            "does not exist: create it (with the partitions it needs), or pass --create-topics",
        ));
    }
    Ok(out)
}

async fn create(cfg: &SinkConfig, topics: &[String]) -> Result<()> {
    let name = kafka_name(&cfg.brokers);
    let admin: AdminClient<Quiet> = base_config(cfg)
        .create_with_context(Quiet)
        .map_err(|e| MongoError::from_kafka(&name, &e))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            if *t == cfg.positions_topic {
                NewTopic::new(t, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact")
            } else {
                NewTopic::new(t, cfg.partitions, TopicReplication::Fixed(-1))
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(META_TIMEOUT));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| MongoError::from_kafka(format!("{name}: creating topics"), &e))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!("{name}: created topic {t:?}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(MongoError::from_kafka(
                    format!("{name}: creating topic {t:?}"),
                    &KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

/// Topics just created appear in metadata a little later.
fn wait_created(
    c: &BaseConsumer<Quiet>,
    topics: &[String],
    cfg: &SinkConfig,
) -> Result<HashMap<String, i32>> {
    let start = Instant::now();
    loop {
        let got = check_topics(c, topics, cfg)?;
        let all = topics
            .iter()
            .chain(std::iter::once(&cfg.positions_topic))
            .all(|t| got.contains_key(t));
        if all || start.elapsed() > META_TIMEOUT {
            if !all {
                return Err(MongoError::retryable(
                    kafka_name(&cfg.brokers),
                    "topics created are not in the metadata yet",
                ));
            }
            return Ok(got);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last committed record of this link in the position topic.
fn read_state(c: &BaseConsumer<Quiet>, cfg: &SinkConfig) -> Result<Option<State>> {
    let name = kafka_name(&cfg.brokers);
    let topic = &cfg.positions_topic;
    let err = |e: &KafkaError| MongoError::from_kafka(format!("{name}: reading {topic}"), e);
    let md = c
        .fetch_metadata(Some(topic), META_TIMEOUT)
        .map_err(|e| err(&e))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for p in &parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, *p, META_TIMEOUT)
            .map_err(|e| err(&e))?;
        if hi > lo {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| err(&e))?;
            open += 1;
        }
    }
    if open == 0 {
        return Ok(None);
    }
    c.assign(&tpl).map_err(|e| err(&e))?;
    let mut last = None;
    let start = Instant::now();
    while open > 0 {
        if start.elapsed() > TXN_TIMEOUT {
            return Err(MongoError::retryable(
                format!("{name}: reading {topic}"),
                "did not reach its end within 60 s (a transaction of another link open?)",
            ));
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(err(&e)),
            Some(Ok(m)) => {
                if m.key() == Some(cfg.id.as_bytes())
                    && let Some(v) = m.payload()
                {
                    last = Some(v.to_vec());
                }
            }
        }
    }
    let _ = c.unassign();
    last.map(|v| State::parse(&format!("{name}: {topic} record {:?}", cfg.id), &v))
        .transpose()
}

/// librdkafka's blocking calls run off the async workers.
async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MongoError::fatal(name, format!("a Kafka client call failed: {e}")))
}
