//! `tandem redis twoway`: two live deployments kept in sync both ways.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{CliResult, secret};
use crate::core::conflict::{Policy, Side};
use crate::ops::Status;
use crate::redis::filter::FilterConfig;
use crate::redis::sync::incr::{IncrPolicy, OnFlush, OnUnsupported};
use crate::redis::sync::twoway::{self, FullSync, TwoWayConfig};
use crate::redis::sync::{Mode, SyncConfig};

#[derive(Args)]
pub struct TwoWayArgs {
    /// Side A: redis://[user:pass@]host:port
    #[arg(long)]
    a: String,
    /// Side B: redis://[user:pass@]host:port
    #[arg(long)]
    b: String,
    /// File whose first line is side A's password (or set TANDEM_A_PASSWORD):
    /// either keeps it out of the process list.
    #[arg(long)]
    a_password_file: Option<PathBuf>,
    /// File whose first line is side B's password (or set TANDEM_B_PASSWORD):
    /// either keeps it out of the process list.
    #[arg(long)]
    b_password_file: Option<PathBuf>,
    /// What happens to a key written on both sides at once.
    #[arg(long, value_enum, default_value = "converge")]
    conflict: ConflictArg,
    /// The winner when two conflicting writes were observed at the same millisecond.
    #[arg(long, value_enum, default_value = "a")]
    prefer: SideArg,
    /// Copy one side into the other first (the other side's local writes still flow).
    #[arg(long, value_enum, default_value = "a-to-b")]
    full_sync: FullSync,
    /// Link name: checkpoints are `__tandem:ckpt:<id>:a2b` (on B) and `…:b2a` (on A).
    #[arg(long, default_value = "default")]
    id: String,
    /// One JSON line per conflict.
    #[arg(long)]
    conflict_log: Option<PathBuf>,
    /// How long writes are remembered for conflict detection (seconds); conflicts of
    /// writes further apart (a link lagging more) are not detected.
    #[arg(long, default_value_t = 300)]
    conflict_window_secs: u64,
    /// A command tandem cannot replicate: stop the link naming it (fail), or count,
    /// log and skip it (skip).
    #[arg(long, value_enum, default_value = "fail")]
    on_unsupported: OnUnsupported,
    /// FLUSHALL/FLUSHDB: apply on the other side, skip, or stop.
    #[arg(long, value_enum, default_value = "apply")]
    on_flush: OnFlush,
    /// Commands per target transaction, at most.
    #[arg(long, default_value_t = 2000)]
    batch_commands: usize,
    /// Transactions sent to a target before the first is confirmed.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Directory of the on-disk spools of both streams (default: a temporary one).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
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

/// `--conflict`, for both modules' two-way.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ConflictArg {
    Converge,
    Ignore,
    Overwrite,
}

impl From<ConflictArg> for Policy {
    fn from(c: ConflictArg) -> Policy {
        match c {
            ConflictArg::Converge => Policy::Converge,
            ConflictArg::Ignore => Policy::Ignore,
            ConflictArg::Overwrite => Policy::Overwrite,
        }
    }
}

/// `--prefer`, for both modules' two-way.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SideArg {
    A,
    B,
}

impl From<SideArg> for Side {
    fn from(s: SideArg) -> Side {
        match s {
            SideArg::A => Side::A,
            SideArg::B => Side::B,
        }
    }
}

pub async fn run(args: TwoWayArgs) -> CliResult {
    let a = secret::endpoint(
        &args.a,
        "a",
        args.a_password_file.as_deref(),
        "TANDEM_A_PASSWORD",
    )?;
    let b = secret::endpoint(
        &args.b,
        "b",
        args.b_password_file.as_deref(),
        "TANDEM_B_PASSWORD",
    )?;
    if !args.skip_precheck {
        let what = crate::redis::precheck::Use::TwoWay;
        super::precheck::before_start(&a, &b, what, &FilterConfig::default()).await?;
    }
    let status = Arc::new(Status::new("twoway", &args.id));
    if let Some(addr) = args.metrics_addr {
        crate::ops::http::serve(addr, status.clone()).await?;
    }
    let spool_dir = args.spool_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tandem-twoway-{}-{}", args.id, std::process::id()))
    });
    let base = SyncConfig {
        source: a.clone(),
        target: b.clone(),
        id: args.id.clone(),
        mode: Mode::All,
        policy: IncrPolicy {
            filter: FilterConfig::default(),
            on_unsupported: args.on_unsupported,
            on_flush: args.on_flush,
            drop_echoes: true,
        },
        big_key_bytes: 64 << 20,
        rewrite_only: false,
        batch_commands: args.batch_commands.max(1),
        batch_bytes: 4 << 20,
        window: args.window.max(1),
        spool_dir: spool_dir.clone(),
        spool_max_bytes: 4 << 30,
        repl_timeout: Duration::from_secs(args.repl_timeout),
        cluster_source: None,
        status: status.clone(),
        // The target of each direction is the other side's own data.
        on_resync: crate::redis::sync::resync::OnResync::Keep,
    };
    let cfg = TwoWayConfig {
        base,
        a,
        b,
        policy: args.conflict.into(),
        prefer: args.prefer.into(),
        full_sync: args.full_sync,
        retention: Duration::from_secs(args.conflict_window_secs),
        conflict_log: args.conflict_log.clone(),
    };
    let shutdown = super::shutdown_on_signal();
    let display = args.progress.start(status, shutdown.clone());
    let result = twoway::run(cfg, shutdown).await;
    display.finish().await;
    if args.spool_dir.is_none() {
        let _ = std::fs::remove_dir_all(&spool_dir);
    }
    result?;
    Ok(())
}
