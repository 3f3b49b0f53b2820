//! `tandem mongo sync | replay | verify | twoway | kafka`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::CliResult;
use super::twoway::{ConflictArg, SideArg};
use crate::core::OpTime;
use crate::mongo::apply::fold::OnConflict;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::ns::NsFilter;
use crate::mongo::shards::{self, Shard};
use crate::mongo::sync::{Fetch, Mode, OnHistoryLost, SyncConfig};
use crate::mongo::twoway::{DdlFlow, FullSync, TwoWayConfig};
use crate::ops::Status;

#[derive(Subcommand)]
pub enum MongoCmd {
    /// Replicate a source into a target: copy, then changes, exactly once, transactions whole.
    Sync(SyncArgs),
    /// Apply a recorded oplog (mongodump's oplog.bson, a dump of local.oplog.rs, or JSON lines).
    Replay(ReplayArgs),
    /// Compare namespaces, options, indexes and every document of two deployments.
    Verify(VerifyArgs),
    /// Two-way (active-active) between two deployments: no echoes, conflicts that converge.
    Twoway(TwowayArgs),
    /// Stream a source into Kafka as Canal JSON: copy, then changes, exactly once.
    Kafka(Box<super::kafka::KafkaArgs>),
}

#[derive(Args)]
pub struct NsArgs {
    /// Replicate only these namespaces: db.coll, with * wildcards (repeatable).
    #[arg(long = "include-ns")]
    include_ns: Vec<String>,
    /// Never replicate these namespaces (repeatable).
    #[arg(long = "exclude-ns")]
    exclude_ns: Vec<String>,
    /// Write namespace FROM as TO: db.coll:db2.coll2, or a database db.*:db2.* (repeatable).
    #[arg(long = "ns-map")]
    ns_map: Vec<String>,
}

impl NsArgs {
    fn filter(&self) -> Result<NsFilter, String> {
        NsFilter::new(&self.include_ns, &self.exclude_ns, &self.ns_map)
    }
}

#[derive(Args)]
pub struct SyncArgs {
    /// Source connection string: mongodb://[user:pass@]host:port[,…]/?replicaSet=…
    #[arg(long)]
    source: String,
    /// Target connection string (a replica set or a mongos: batches are transactions; a
    /// standalone server with --checkpoint-file).
    #[arg(long)]
    target: String,
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// How changes are read: a cluster-wide change stream, or the oplog.
    #[arg(long, value_enum, default_value = "change-stream")]
    fetch: Fetch,
    #[command(flatten)]
    ns: NsArgs,
    /// Parallel workers: of the copy, and of the changes (each applier with a checkpoint
    /// of its own; documents hashed to appliers, transactions and DDL applied alone).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Documents per copy partition, about.
    #[arg(long, default_value_t = 100_000)]
    partition_docs: u64,
    /// Operations per target transaction, at most (a source transaction is never split).
    #[arg(long, default_value_t = 1000)]
    batch_ops: usize,
    /// An insert of an existing document, an update or delete of a missing one.
    #[arg(long, value_enum, default_value = "fail")]
    on_conflict: OnConflict,
    /// When the source's oplog no longer holds the checkpoint: stop, or drop the
    /// replicated namespaces on the target and copy again.
    #[arg(long, value_enum, default_value = "fail")]
    on_history_lost: OnHistoryLost,
    /// Link name: the target's checkpoint is `__tandem.checkpoints` {_id: <id>}.
    #[arg(long, default_value = "default")]
    id: String,
    /// Keep the checkpoint in this local file instead of on the target, and apply
    /// batches without transactions: for a target that cannot run them (a standalone
    /// mongod). At least once: a crash replays the last batch, which converges to the
    /// source's state; source transactions are not atomic on the target (docs/MONGO.md).
    /// Changes are applied by one applier (--workers sets the copy's).
    #[arg(long, value_name = "PATH")]
    checkpoint_file: Option<PathBuf>,
    /// Operator endpoint: Prometheus text at /metrics, JSON status at /status.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    progress: super::ProgressArgs,
    /// A shard of a sharded source, read through its own oplog (with --fetch oplog;
    /// repeat for each shard): `[NAME=]mongodb://…` of the shard's replica set. NAME
    /// (default: its replica set's name) keys the shard's checkpoint `<id>@NAME`.
    /// Without it, a mongos --source in oplog mode has its shards found by `listShards`
    /// and reached with the --source URI's credentials and options.
    #[arg(long = "source-shard", value_name = "[NAME=]URI")]
    source_shard: Vec<String>,
}

#[derive(Args)]
pub struct TwowayArgs {
    /// Side A: mongodb://… (a replica set or a mongos).
    #[arg(long)]
    a: String,
    /// Side B: mongodb://…
    #[arg(long)]
    b: String,
    /// What happens to a document written on both sides at once.
    #[arg(long, value_enum, default_value = "converge")]
    conflict: ConflictArg,
    /// The winner when two conflicting writes were observed at the same millisecond.
    #[arg(long, value_enum, default_value = "a")]
    prefer: SideArg,
    /// Copy one side into the other first (the other side's local writes still flow).
    #[arg(long, value_enum, default_value = "a-to-b")]
    full_sync: FullSync,
    /// Whose DDL is applied on the other side; `both` applies each side's on the other
    /// (what a schema change on both sides at once means: docs/TWO-WAY.md).
    #[arg(long, value_enum, default_value = "a-to-b")]
    ddl: DdlFlow,
    /// How changes are read on both sides.
    #[arg(long, value_enum, default_value = "change-stream")]
    fetch: Fetch,
    /// Replicate only these namespaces: db.coll, with * wildcards (repeatable).
    #[arg(long = "include-ns")]
    include_ns: Vec<String>,
    /// Never replicate these namespaces (repeatable).
    #[arg(long = "exclude-ns")]
    exclude_ns: Vec<String>,
    /// Link name: checkpoints are `__tandem.checkpoints` {_id: "<id>:a2b"} on B and
    /// {_id: "<id>:b2a"} on A.
    #[arg(long, default_value = "default")]
    id: String,
    /// One JSON line per conflict.
    #[arg(long)]
    conflict_log: Option<PathBuf>,
    /// How long writes are remembered for conflict detection (seconds); conflicts of
    /// writes further apart (a link lagging more) are not detected.
    #[arg(long, default_value_t = 300)]
    conflict_window_secs: u64,
    /// Documents per copy partition, about.
    #[arg(long, default_value_t = 100_000)]
    partition_docs: u64,
    /// Operations per target transaction, at most (a source transaction is never split).
    #[arg(long, default_value_t = 1000)]
    batch_ops: usize,
    /// Operator endpoint: Prometheus text at /metrics, JSON status at /status.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    progress: super::ProgressArgs,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The recorded oplog: BSON documents back to back, or JSON lines of Extended JSON.
    /// Given once per shard of a sharded cluster, the files are merged in time order
    /// and each cross-shard (prepared) transaction is applied as one transaction.
    #[arg(long, required = true)]
    oplog: Vec<PathBuf>,
    #[arg(long)]
    target: String,
    /// Stop after the entries at this time: SECONDS or SECONDS.INCREMENT.
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    ns: NsArgs,
    #[arg(long, value_enum, default_value = "fail")]
    on_conflict: OnConflict,
    #[arg(long, default_value_t = 1000)]
    batch_ops: usize,
    /// Checkpoint name on the target.
    #[arg(long, default_value = "replay")]
    id: String,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    source: String,
    #[arg(long)]
    target: String,
    #[command(flatten)]
    ns: NsArgs,
    /// Rounds: later ones re-check only what differed, after --round-delay-ms.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, default_value_t = 1000)]
    round_delay_ms: u64,
    /// Every difference as JSON lines to this file (stdout lists the first 20).
    #[arg(long)]
    out: Option<PathBuf>,
    /// About this many documents per compared `_id` range.
    #[arg(long, default_value_t = 10_000)]
    partition_docs: u64,
    /// Ranges compared at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Read every range's documents, even where both servers could compare ranges by
    /// hash first (`$toHashedIndexKey` folds numeric types, so a difference in a
    /// number's type alone is seen only this way).
    #[arg(long)]
    no_hash: bool,
}

pub async fn run(cmd: MongoCmd) -> CliResult {
    match cmd {
        MongoCmd::Sync(a) => sync(a).await,
        MongoCmd::Replay(a) => replay(a).await,
        MongoCmd::Twoway(a) => twoway(a).await,
        MongoCmd::Kafka(a) => super::kafka::run(*a).await,
        MongoCmd::Verify(a) => {
            let code = verify(a).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

async fn sync(a: SyncArgs) -> CliResult {
    let source = MongoEndpoint::connect("--source", &a.source).await?;
    let target = MongoEndpoint::connect("--target", &a.target).await?;
    let filter = a.ns.filter()?;
    let status = Arc::new(Status::new("mongo-sync", &a.id));
    if let Some(addr) = a.metrics_addr {
        crate::ops::http::serve(addr, status.clone()).await?;
    }
    let link = status.link_addrs(&a.id, source.addr().to_string(), target.addr().to_string());
    let shards = shards_of(&a, &source).await?;
    if !shards.is_empty() && a.on_history_lost == OnHistoryLost::Resync {
        return Err(
            "--on-history-lost resync: not for a source read shard by shard (each \
                    shard's history is its own; a new full sync is a new --id)"
                .into(),
        );
    }
    let cfg = SyncConfig {
        source,
        target,
        id: a.id,
        mode: a.mode,
        fetch: a.fetch,
        filter,
        on_conflict: a.on_conflict,
        workers: a.workers.max(1),
        partition_docs: a.partition_docs.max(1),
        batch_ops: a.batch_ops.max(1),
        on_history_lost: a.on_history_lost,
        checkpoint_file: a.checkpoint_file,
        status: link,
        shards,
        judge: None,
    };
    let shutdown = super::shutdown_on_signal();
    let display = a.progress.start(status, shutdown.clone());
    let result = crate::mongo::sync::run(cfg, shutdown).await;
    display.finish().await;
    Ok(result?)
}

/// The shards to read one by one: as listed, or a mongos's own in oplog mode.
async fn shards_of(
    a: &SyncArgs,
    source: &MongoEndpoint,
) -> Result<Vec<Shard>, Box<dyn std::error::Error + Send + Sync>> {
    if a.source_shard.is_empty() {
        if a.fetch == Fetch::Oplog && crate::mongo::source::probe(source).await?.sharded {
            return Ok(shards::discover(&a.source, source).await?);
        }
        return Ok(Vec::new());
    }
    if a.fetch != Fetch::Oplog {
        return Err(
            "--source-shard: shards are read through their oplogs, which needs --fetch oplog \
             (a change stream through the mongos covers every shard by itself)"
                .into(),
        );
    }
    let mut listed = Vec::new();
    for arg in &a.source_shard {
        let (name, uri) = shards::parse_flag(arg);
        let ep = MongoEndpoint::connect("--source-shard", uri).await?;
        listed.push((name.map(str::to_string), ep));
    }
    Ok(shards::name_shards(listed).await?)
}

fn parse_ts(s: &str) -> Result<OpTime, String> {
    let bad = || format!("--until {s:?}: expected SECONDS or SECONDS.INCREMENT");
    let (a, b) = s.split_once('.').unwrap_or((s, "4294967295"));
    Ok(OpTime::new(
        a.parse().map_err(|_| bad())?,
        b.parse().map_err(|_| bad())?,
    ))
}

async fn twoway(a: TwowayArgs) -> CliResult {
    let ep_a = MongoEndpoint::connect("--a", &a.a).await?;
    let ep_b = MongoEndpoint::connect("--b", &a.b).await?;
    let filter = NsFilter::new(&a.include_ns, &a.exclude_ns, &[])?;
    let status = Arc::new(Status::new("mongo-twoway", &a.id));
    if let Some(addr) = a.metrics_addr {
        crate::ops::http::serve(addr, status.clone()).await?;
    }
    let (sa, sb) = (ep_a.addr().to_string(), ep_b.addr().to_string());
    let links = [
        status.link_addrs(&format!("{}:a2b", a.id), sa.clone(), sb.clone()),
        status.link_addrs(&format!("{}:b2a", a.id), sb, sa),
    ];
    let cfg = TwoWayConfig {
        a: ep_a,
        b: ep_b,
        id: a.id,
        fetch: a.fetch,
        filter,
        policy: a.conflict.into(),
        prefer: a.prefer.into(),
        full_sync: a.full_sync,
        ddl: a.ddl,
        conflict_log: a.conflict_log,
        retention: Duration::from_secs(a.conflict_window_secs),
        partition_docs: a.partition_docs.max(1),
        batch_ops: a.batch_ops.max(1),
        status: links,
    };
    let shutdown = super::shutdown_on_signal();
    let display = a.progress.start(status, shutdown.clone());
    let result = crate::mongo::twoway::run(cfg, shutdown).await;
    display.finish().await;
    Ok(result?)
}

async fn replay(a: ReplayArgs) -> CliResult {
    let target = MongoEndpoint::connect("--target", &a.target).await?;
    let until = a.until.as_deref().map(parse_ts).transpose()?;
    let cfg = crate::mongo::replay::ReplayConfig {
        files: a.oplog,
        target,
        id: a.id,
        filter: a.ns.filter()?,
        on_conflict: a.on_conflict,
        until,
        batch_ops: a.batch_ops.max(1),
    };
    let stats = crate::mongo::replay::run(cfg, super::shutdown_on_signal()).await?;
    println!(
        "replayed {} units ({} already applied by an earlier run)",
        stats.units, stats.skipped
    );
    Ok(())
}

/// 0 identical, 1 differences; errors are returned (exit 1 by `main`... 2 here).
async fn verify(a: VerifyArgs) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
    let run = async {
        let source = MongoEndpoint::connect("--source", &a.source).await?;
        let target = MongoEndpoint::connect("--target", &a.target).await?;
        let cfg = crate::mongo::verify::VerifyConfig {
            filter: a.ns.filter()?,
            rounds: a.rounds,
            round_delay: Duration::from_millis(a.round_delay_ms),
            batch: 1000,
            partition_docs: a.partition_docs,
            parallel: a.parallel,
            hash: !a.no_hash,
        };
        let report = crate::mongo::verify::verify(&source, &target, &cfg).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(report)
    };
    let report = match run.await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tandem: error: {e}");
            return Ok(2);
        }
    };
    eprintln!(
        "tandem: compared {} source documents in {} _id ranges; {} ranges matched by hash{}",
        report.read,
        report.partitions,
        report.hashed_equal,
        if report.hashed {
            ""
        } else {
            " (the servers cannot hash documents: every range read)"
        }
    );
    let diffs = report.diffs;
    if let Some(path) = &a.out {
        let mut text = String::new();
        for d in &diffs {
            text.push_str(&serde_json::to_string(d).unwrap_or_default());
            text.push('\n');
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("tandem: error: --out {}: {e}", path.display());
            return Ok(2);
        }
    }
    if diffs.is_empty() {
        println!("identical");
        return Ok(0);
    }
    for d in diffs.iter().take(20) {
        println!("{} {}: {}", d.kind, d.ns, d.detail);
    }
    if diffs.len() > 20 {
        println!(
            "… and {} more (all of them with --out FILE)",
            diffs.len() - 20
        );
    }
    println!("{} differences", diffs.len());
    Ok(1)
}
