//! `tandem mongo kafka`: MongoDB changes into Kafka topics as Canal JSON.

use std::sync::Arc;

use clap::Args;

use super::CliResult;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::kafka::canal::{DataShape, Encoder, JsonMode};
use crate::mongo::kafka::route::{PartitionBy, Router};
use crate::mongo::kafka::sink::{Acks, Compression, SinkConfig};
use crate::mongo::kafka::{KafkaConfig, UpdateFormat};
use crate::mongo::ns::NsFilter;
use crate::mongo::sync::{Fetch, Mode};
use crate::ops::Status;

#[derive(Args)]
pub struct KafkaArgs {
    /// Source connection string: mongodb://[user:pass@]host:port[,…]/?replicaSet=…
    #[arg(long)]
    source: String,
    /// Kafka bootstrap brokers: HOST:PORT[,HOST:PORT…].
    #[arg(long)]
    brokers: String,
    /// The topic of every namespace --topic-map does not name.
    #[arg(long)]
    topic: String,
    /// Namespace (db.coll, db.*) NS to topic TOPIC; the first match wins (repeatable).
    #[arg(long = "topic-map", value_name = "NS:TOPIC")]
    topic_map: Vec<String>,
    /// DDL messages to this topic (one each); without it, in line: one copy to every
    /// partition of the namespace's topic.
    #[arg(long)]
    ddl_topic: Option<String>,
    /// The message key and so the partition: the document's _id (one document's
    /// changes in order in one partition), the namespace, or partition 0 for all.
    #[arg(long, value_enum, default_value = "id")]
    partition_by: PartitionBy,
    #[arg(long, value_enum, default_value = "lz4")]
    compression: Compression,
    /// all: every batch one Kafka transaction with its position (exactly once for a
    /// read_committed consumer). 1 or 0: no transactions, at least once (docs/KAFKA.md).
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// How changes are read: a cluster-wide change stream, or the oplog.
    #[arg(long, value_enum, default_value = "change-stream")]
    fetch: Fetch,
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Updates as their changed fields, or as the whole document after the change.
    #[arg(long, value_enum, default_value = "delta")]
    update_format: UpdateFormat,
    /// Extended JSON of documents: relaxed, or canonical (every type explicit).
    #[arg(long, value_enum, default_value = "relaxed")]
    json: JsonMode,
    /// `data` elements as {"doc": "<JSON text>"} (the cloud service's shape) or as objects.
    #[arg(long, value_enum, default_value = "doc")]
    data_shape: DataShape,
    /// Create missing topics (with --partitions partitions) instead of stopping.
    #[arg(long)]
    create_topics: bool,
    /// Partitions of the topics --create-topics creates.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// The compacted topic holding each link's committed position (created when missing).
    #[arg(long, default_value = "__tandem_positions")]
    positions_topic: String,
    /// A librdkafka setting (security.protocol, sasl.mechanism, sasl.username, …;
    /// repeatable). Values are never printed.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    kafka_setting: Vec<String>,
    /// Replicate only these namespaces: db.coll, with * wildcards (repeatable).
    #[arg(long = "include-ns")]
    include_ns: Vec<String>,
    /// Never replicate these namespaces (repeatable).
    #[arg(long = "exclude-ns")]
    exclude_ns: Vec<String>,
    /// Source operations (or copied documents) per Kafka transaction, at most; a
    /// source transaction is never split.
    #[arg(long, default_value_t = 5000)]
    batch_ops: usize,
    /// Link name: its position record's key, and `transactional.id` tandem-<id>.
    #[arg(long, default_value = "default")]
    id: String,
    /// Operator endpoint: Prometheus text at /metrics, JSON status at /status.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    progress: super::ProgressArgs,
}

pub async fn run(a: KafkaArgs) -> CliResult {
    let source = MongoEndpoint::connect("--source", &a.source).await?;
    let filter = NsFilter::new(&a.include_ns, &a.exclude_ns, &[])?;
    let map = a
        .topic_map
        .iter()
        .map(|m| Router::parse_map(m))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = a
        .kafka_setting
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    format!(
                        "-X {:?}: expected KEY=VALUE",
                        s.split('=').next().unwrap_or("")
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if a.brokers.contains('@') || a.brokers.contains("://") {
        return Err("--brokers: expected HOST:PORT[,HOST:PORT…] (credentials go in -X sasl.username=… -X sasl.password=…)".into());
    }
    let status = Arc::new(Status::new("mongo-kafka", &a.id));
    if let Some(addr) = a.metrics_addr {
        crate::ops::http::serve(addr, status.clone()).await?;
    }
    let link = status.link_addrs(&a.id, source.addr().to_string(), a.brokers.clone());
    let cfg = KafkaConfig {
        source,
        id: a.id.clone(),
        mode: a.mode,
        fetch: a.fetch,
        filter,
        router: Router {
            topic: a.topic,
            map,
            ddl_topic: a.ddl_topic,
            by: a.partition_by,
        },
        encoder: Encoder {
            json: a.json,
            shape: a.data_shape,
        },
        update_format: a.update_format,
        batch_ops: a.batch_ops.max(1),
        sink: SinkConfig {
            brokers: a.brokers,
            id: a.id,
            compression: a.compression,
            acks: a.acks,
            create_topics: a.create_topics,
            partitions: a.partitions.max(1),
            positions_topic: a.positions_topic,
            settings,
        },
        status: link,
    };
    let shutdown = super::shutdown_on_signal();
    let display = a.progress.start(status, shutdown.clone());
    let result = crate::mongo::kafka::run(cfg, shutdown).await;
    display.finish().await;
    Ok(result?)
}
