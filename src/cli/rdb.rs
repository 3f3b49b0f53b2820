//! `tandem rdb inspect`: look inside an RDB file.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::CliResult;
use crate::redis::rdb::{InspectFormat, inspect};

#[derive(Args)]
pub struct InspectArgs {
    /// The RDB file (as written by SAVE/BGSAVE, or received by `tandem redis tail`).
    file: PathBuf,
    #[arg(long, value_enum, default_value = "summary")]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Keys per db and type, encodings, sizes, biggest keys.
    Summary,
    /// One JSON object per key.
    Json,
    /// RESP commands that recreate the data (`| redis-cli --pipe`).
    Resp,
}

pub fn run(args: InspectArgs) -> CliResult {
    let format = match args.format {
        Format::Summary => InspectFormat::Summary,
        Format::Json => InspectFormat::Json,
        Format::Resp => InspectFormat::Resp,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    inspect(&args.file, format, &mut out).map_err(|e| format!("{}: {e}", args.file.display()))?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}
