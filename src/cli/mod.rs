//! Command-line interface: `tandem redis …`, `tandem rdb …`.
//!
//! User errors (bad URL, wrong password, unreachable host) end as one line on stderr
//! and exit code 1; never a panic or a backtrace.

mod demo;
mod kafka;
mod mongo;
mod precheck;
mod rdb;
mod secret;
mod sync;
mod tail;
mod twoway;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The command line. Public so that the `url_flags` fuzz target (fuzz/) can run the
/// same clap parser (`Cli::command()`, `Cli::from_arg_matches`); its fields stay private.
#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Replication for Redis-compatible servers and MongoDB"
)]
pub struct Cli {
    /// Log filter (default: `info`, or the TANDEM_LOG environment variable).
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log lines as text, or as one JSON object per line (for log pipelines).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Top {
    /// Redis, Valkey and Tair sources and targets.
    #[command(subcommand)]
    Redis(Box<RedisCmd>),
    /// MongoDB replica sets and sharded clusters.
    #[command(subcommand)]
    Mongo(Box<mongo::MongoCmd>),
    /// RDB files.
    #[command(subcommand)]
    Rdb(RdbCmd),
    /// Two local redis-servers kept in sync both ways under live writes, then verified.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum RdbCmd {
    /// Summarize an RDB file, or print it as JSON lines or RESP commands.
    Inspect(rdb::InspectArgs),
}

#[derive(Subcommand)]
enum RedisCmd {
    /// Replicate a source into a target: full sync, then incremental, exactly once.
    Sync(sync::SyncArgs),
    /// Keep two live deployments in sync both ways, without loops; conflicts converge.
    Twoway(twoway::TwoWayArgs),
    /// Attach to a source as a replica and print its replication stream with offsets.
    Tail(tail::TailArgs),
    /// Compare source and target key by key: exit 0 identical, 1 differences, 2 error.
    Verify(verify::VerifyArgs),
    /// Check source and target before a sync: each item passes, warns or fails, with a fix.
    Precheck(precheck::PrecheckArgs),
}

/// The full-sync progress display (`ops::progress`).
#[derive(clap::Args, Clone, Copy)]
pub struct ProgressArgs {
    /// Seconds between progress lines during a full sync when stderr is not a terminal
    /// (on a terminal, a bar per link instead); 0 turns progress off.
    #[arg(long = "progress-interval", value_name = "SECS", default_value_t = 5.0)]
    progress_interval: f64,
}

impl ProgressArgs {
    pub fn start(
        self,
        status: std::sync::Arc<crate::ops::Status>,
        shutdown: crate::core::shutdown::Shutdown,
    ) -> crate::ops::progress::Display {
        let every =
            std::time::Duration::try_from_secs_f64(self.progress_interval).unwrap_or_default();
        crate::ops::progress::start(status, every, shutdown)
    }
}

/// An error for the user: printed as one line.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log.clone();
    let log = log.or_else(|| std::env::var("TANDEM_LOG").ok());
    let filter = tracing_subscriber::EnvFilter::try_new(log.as_deref().unwrap_or("info"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if terminal && matches!(cli.log_format, LogFormat::Text) {
        crate::ops::progress::use_bars();
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::ops::progress::LogWriter)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(terminal).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    crate::metrics::describe();
    // A panic is a bug, and it must end the process. Unwinding the main thread waited for
    // the runtime's other tasks, which went on retrying: a process alive but stopped.
    // The target's checkpoints make a restart resume exactly-once.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("tandem: internal error (a bug, please report it): exiting");
        std::process::exit(101);
    }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // verify's exit code 1 means "differences"; its errors are 2.
    let error_code = match &cli.cmd {
        Top::Redis(cmd) if matches!(**cmd, RedisCmd::Verify(_)) => 2,
        _ => 1,
    };
    let log_format = cli.log_format;
    let result = rt.block_on(async {
        match cli.cmd {
            Top::Redis(cmd) => match *cmd {
                RedisCmd::Tail(args) => tail::run(args).await.map(|()| 0),
                RedisCmd::Sync(args) => sync::run(args).await.map(|()| 0),
                RedisCmd::Twoway(args) => twoway::run(args).await.map(|()| 0),
                RedisCmd::Verify(args) => verify::run(args).await,
                RedisCmd::Precheck(args) => precheck::run(args).await,
            },
            Top::Mongo(cmd) => mongo::run(*cmd).await.map(|()| 0),
            Top::Rdb(RdbCmd::Inspect(args)) => rdb::run(args).map(|()| 0),
            Top::Demo(args) => demo::run(args).await.map(|()| 0),
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            match log_format {
                LogFormat::Text => eprintln!("tandem: error: {e}"),
                // A log pipeline reads stderr as JSON lines: the last one too.
                LogFormat::Json => tracing::error!("tandem: error: {e}"),
            }
            error_code
        }
    };
    // Exit before the runtime is dropped: a client library's background tasks (the
    // MongoDB driver's connection pools) may panic when torn down mid-flight, and a
    // panic here would turn a clean stop into an internal error.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Ctrl-C (or SIGTERM) as a `Shutdown`.
///
/// The first SIGINT/SIGTERM asks for a clean stop: the batch in flight lands and its
/// checkpoint is written. That can take until `--give-up-after` when the target is
/// unreachable, so a second signal exits at once. Nothing is lost either way: every
/// batch carries its own checkpoint, so a restart resumes exactly after what landed.
pub fn shutdown_on_signal() -> crate::core::shutdown::Shutdown {
    let (trigger, shutdown) = crate::core::shutdown::shutdown_pair();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut signalled = async || {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            signalled().await;
            tracing::info!(
                "stopping: finishing the batch in flight (signal again to exit at once)"
            );
            trigger.trigger();
            signalled().await;
            eprintln!("tandem: stopped at once by a second signal");
            std::process::exit(130);
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            trigger.trigger();
        }
    });
    shutdown
}
