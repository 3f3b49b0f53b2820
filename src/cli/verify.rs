//! `tandem redis verify`: are source and target the same? Exit 0 identical, 1
//! differences, 2 error.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;

use super::secret;

use crate::redis::verify::{VerifyConfig, VerifyMode, verify};

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    ends: secret::SourceTarget,
    /// full: every element; length: types, expiries and lengths; keys: existence and type.
    #[arg(long, value_enum, default_value = "full")]
    mode: VerifyMode,
    /// Rounds: each after the first re-checks only the previous round's differences, so
    /// writes still in flight on a live link are not reported.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Pause between rounds, in ms.
    #[arg(long, default_value_t = 1000)]
    round_delay_ms: u64,
    /// Compare only keys starting with this prefix (repeatable).
    #[arg(long = "include-prefix")]
    include_prefix: Vec<String>,
    /// Skip keys starting with this prefix (repeatable).
    #[arg(long = "exclude-prefix")]
    exclude_prefix: Vec<String>,
    /// Source db FROM is target db TO (repeatable), as given to `redis sync`.
    #[arg(long = "db-map")]
    db_map: Vec<String>,
    /// Expiries within this many ms of each other are equal.
    #[arg(long, default_value_t = 1000)]
    ttl_tolerance_ms: i64,
    /// Write every difference to this file as JSON lines (stdout shows the first 20).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Differences printed on stdout, at most.
const SHOWN: usize = 20;

/// The process exit code: 0 identical, 1 differences (an error is exit code 2).
pub async fn run(args: VerifyArgs) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = VerifyConfig {
        source: args.ends.source()?,
        target: args.ends.target()?,
        mode: args.mode,
        rounds: args.rounds.max(1),
        round_delay: Duration::from_millis(args.round_delay_ms),
        include_prefixes: prefixes(&args.include_prefix),
        exclude_prefixes: prefixes(&args.exclude_prefix),
        db_map: db_map(&args.db_map)?,
        ttl_tolerance_ms: args.ttl_tolerance_ms.max(0),
    };
    let report = verify(&cfg).await?;
    if let Some(path) = &args.out {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("--out {}: {e}", path.display()))?,
        );
        for d in &report.diffs {
            writeln!(f, "{}", d.to_json()).map_err(|e| format!("--out {}: {e}", path.display()))?;
        }
        f.flush()
            .map_err(|e| format!("--out {}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    for d in report.diffs.iter().take(SHOWN) {
        let _ = writeln!(out, "{d}");
    }
    let n = report.diffs.len();
    if n > SHOWN {
        let _ = writeln!(out, "… and {} more", n - SHOWN);
    }
    let _ = writeln!(
        out,
        "{} keys compared, {} rounds: {}",
        report.keys_compared,
        report.rounds_run,
        if n == 0 {
            "identical".to_string()
        } else {
            format!("{n} differences")
        }
    );
    Ok(if n == 0 { 0 } else { 1 })
}

/// `--include-prefix`/`--exclude-prefix` values as key prefixes.
pub fn prefixes(given: &[String]) -> Vec<Bytes> {
    given.iter().map(|p| Bytes::from(p.clone())).collect()
}

/// `FROM:TO` pairs, as `redis sync --db-map` takes them.
pub fn db_map(pairs: &[String]) -> Result<HashMap<u32, u32>, String> {
    let mut map = HashMap::new();
    for m in pairs {
        let (a, b) = m
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .ok_or_else(|| format!("--db-map {m:?}: expected FROM:TO (two db numbers)"))?;
        map.insert(a, b);
    }
    Ok(map)
}
