//! `tandem redis sync`: one-way replication from a source into a target.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{CliResult, secret};
use crate::ops::Status;
use crate::redis::filter::FilterConfig;
use crate::redis::sync::incr::{IncrPolicy, OnFlush, OnUnsupported};
use crate::redis::sync::resync::OnResync;
use crate::redis::sync::{Mode, SyncConfig};

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    ends: secret::SourceTarget,
    /// all: full sync then incremental; full: full sync only; incr: incremental only
    /// (from the target's checkpoint).
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Link name: the target's checkpoint is `__tandem:ckpt:<id>`.
    #[arg(long, default_value = "default")]
    id: String,
    /// Replicate only this source db (repeatable).
    #[arg(long = "include-db")]
    include_db: Vec<u32>,
    /// Do not replicate this source db (repeatable).
    #[arg(long = "exclude-db")]
    exclude_db: Vec<u32>,
    /// Replicate only keys starting with this prefix (repeatable).
    #[arg(long = "include-prefix")]
    include_prefix: Vec<String>,
    /// Do not replicate keys starting with this prefix (repeatable).
    #[arg(long = "exclude-prefix")]
    exclude_prefix: Vec<String>,
    /// Replicate only keys matching this regular expression.
    #[arg(long = "include-regex")]
    include_regex: Option<String>,
    /// Do not replicate keys matching this regular expression.
    #[arg(long = "exclude-regex")]
    exclude_regex: Option<String>,
    /// Map a source db to a target db: FROM:TO (repeatable).
    #[arg(long = "db-map")]
    db_map: Vec<String>,
    /// A command tandem cannot replicate: stop the link naming it (fail), or count,
    /// log and skip it (skip).
    #[arg(long, value_enum, default_value = "fail")]
    on_unsupported: OnUnsupported,
    /// FLUSHALL/FLUSHDB: apply within the replicated scope, skip, or stop.
    #[arg(long, value_enum, default_value = "apply")]
    on_flush: OnFlush,
    /// A full resync over data this link wrote (the source could not continue from the
    /// checkpoint): clear removes the target's keys of the link's scope first, so keys
    /// deleted on the source meanwhile go too; keep loads over them.
    #[arg(long, value_enum, default_value = "clear")]
    on_resync: OnResync,
    /// Keys whose serialized value is larger are rewritten in chunks instead of RESTOREd.
    #[arg(long, default_value_t = 64 << 20)]
    big_key_bytes: usize,
    /// Rewrite every key as commands (never RESTORE).
    #[arg(long)]
    rewrite_only: bool,
    /// Commands per target transaction, at most.
    #[arg(long, default_value_t = 2000)]
    batch_commands: usize,
    /// Bytes per target transaction, about.
    #[arg(long, default_value_t = 4 << 20)]
    batch_bytes: usize,
    /// Transactions sent to the target before the first is confirmed.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Directory of the on-disk spool of the source stream.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Largest size of the spool, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    spool_max_bytes: u64,
    /// Seconds of silence on a source link after which it is dropped and reconnected
    /// (like Redis's `repl-timeout`; keep it above the source's `repl-ping-replica-period`).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    repl_timeout: u64,
    /// Start even when the precheck (run first, see `tandem redis precheck`) fails.
    #[arg(long)]
    skip_precheck: bool,
    /// Operator endpoint: Prometheus text at /metrics, JSON status at /status.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    progress: super::ProgressArgs,
}

pub async fn run(args: SyncArgs) -> CliResult {
    let source = args.ends.source()?;
    let target = args.ends.target()?;
    let filter = filter_config(&args)?;
    if !args.skip_precheck {
        let what = crate::redis::precheck::Use::Sync;
        super::precheck::before_start(&source, &target, what, &filter).await?;
    }
    let status = Arc::new(Status::new("sync", &args.id));
    if let Some(addr) = args.metrics_addr {
        crate::ops::http::serve(addr, status.clone()).await?;
    }
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tandem-spool-{}-{}", args.id, std::process::id()))
    });
    let cfg = SyncConfig {
        source,
        target,
        id: args.id.clone(),
        mode: args.mode,
        policy: IncrPolicy {
            filter,
            on_unsupported: args.on_unsupported,
            on_flush: args.on_flush,
            drop_echoes: false,
        },
        big_key_bytes: args.big_key_bytes,
        rewrite_only: args.rewrite_only,
        batch_commands: args.batch_commands.max(1),
        batch_bytes: args.batch_bytes.max(1024),
        window: args.window.max(1),
        spool_dir: spool_dir.clone(),
        spool_max_bytes: args.spool_max_bytes,
        repl_timeout: std::time::Duration::from_secs(args.repl_timeout),
        cluster_source: None,
        status: status.clone(),
        on_resync: args.on_resync,
    };
    let shutdown = super::shutdown_on_signal();
    let display = args.progress.start(status, shutdown.clone());
    // Cluster on either side is detected here; standalone → standalone is `sync::run`.
    let result = crate::redis::cluster::source::run(cfg, shutdown).await;
    display.finish().await;
    if args.spool_dir.is_none() {
        let _ = std::fs::remove_dir_all(&spool_dir);
    }
    result?;
    Ok(())
}

fn filter_config(
    args: &SyncArgs,
) -> Result<FilterConfig, Box<dyn std::error::Error + Send + Sync>> {
    let db_map = super::verify::db_map(&args.db_map)?;
    let regex = |r: &Option<String>, flag: &str| -> Result<_, String> {
        r.as_ref()
            .map(|r| regex::bytes::Regex::new(r).map_err(|e| format!("{flag}: {e}")))
            .transpose()
    };
    Ok(FilterConfig {
        include_dbs: args.include_db.clone(),
        exclude_dbs: args.exclude_db.clone(),
        include_prefixes: super::verify::prefixes(&args.include_prefix),
        exclude_prefixes: super::verify::prefixes(&args.exclude_prefix),
        include_regex: regex(&args.include_regex, "--include-regex")?,
        exclude_regex: regex(&args.exclude_regex, "--exclude-regex")?,
        db_map,
    })
}
