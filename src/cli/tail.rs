//! `tandem redis tail`: the replication stream, printed with offsets.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{CliResult, secret};
use crate::core::ReplPosition;
use crate::redis::replica::{self, Event, LinkConfig};

#[derive(Args)]
pub struct TailArgs {
    /// Source URL: redis://[user:pass@]host:port
    #[arg(long)]
    source: String,
    /// File whose first line is the source password (or set TANDEM_SOURCE_PASSWORD):
    /// either keeps it out of the process list.
    #[arg(long)]
    source_password_file: Option<PathBuf>,
    /// Output: json (one object per command) or resp (raw protocol).
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Resume after this position (`<replid>:<offset>`) instead of a full resync.
    #[arg(long)]
    resume: Option<String>,
    /// Directory of the on-disk spool (default: a fresh temporary directory).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Stop after printing this many commands.
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// One JSON object per line: offset, db, argv.
    Json,
    /// The raw RESP of each command, preceded by a `# offset db` comment line.
    Resp,
}

pub async fn run(args: TailArgs) -> CliResult {
    let source = secret::endpoint(
        &args.source,
        "source",
        args.source_password_file.as_deref(),
        "TANDEM_SOURCE_PASSWORD",
    )?;
    let tmp;
    let spool_dir = match args.spool_dir {
        Some(d) => d,
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let mut cfg = LinkConfig::new(source, spool_dir);
    if let Some(r) = &args.resume {
        cfg.resume_after = Some(r.parse::<ReplPosition>()?);
    }
    let shutdown = super::shutdown_on_signal();
    let mut link = replica::start(cfg, 0, shutdown.clone())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut replid = String::new();
    let mut rdb_bytes = 0u64;
    let mut stop = shutdown.clone();
    loop {
        let ev = tokio::select! {
            ev = link.events.next() => ev?,
            _ = stop.wait() => None,
        };
        let Some(ev) = ev else { break };
        match ev {
            Event::FullSync { replid: id, offset } => {
                replid = id;
                rdb_bytes = 0;
                tracing::info!(%replid, offset, "receiving RDB");
            }
            Event::RdbChunk(b) => rdb_bytes += b.len() as u64,
            Event::RdbEnd => tracing::info!(bytes = rdb_bytes, "RDB received (not printed)"),
            // Only a two-way link asks for echoes to be read whole; tail prints everything.
            Event::Echo(_) => {}
            Event::Continue { replid: id, offset } => {
                replid = id;
                tracing::info!(%replid, offset, "stream continues");
            }
            Event::Command(cmd) => {
                match args.format {
                    Format::Json => {
                        let argv: Vec<serde_json::Value> = cmd
                            .argv
                            .iter()
                            .map(|a| crate::cli_support::arg_json(a))
                            .collect();
                        let line =
                            serde_json::json!({"offset": cmd.offset, "db": cmd.db, "argv": argv});
                        writeln!(out, "{line}")?;
                    }
                    Format::Resp => {
                        writeln!(out, "# offset {} db {}", cmd.offset, cmd.db)?;
                        let mut buf = bytes::BytesMut::new();
                        let argv: Vec<&[u8]> = cmd.argv.iter().map(|a| a.as_ref()).collect();
                        crate::redis::conn::encode_command(&mut buf, &argv);
                        out.write_all(&buf)?;
                    }
                }
                if link.events.next_is_buffered() {
                    // More is ready: keep going before paying for a flush.
                } else {
                    out.flush()?;
                }
                link.handle
                    .confirm(ReplPosition::new(replid.clone(), cmd.offset));
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    break;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> std::io::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("tandem-spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}
