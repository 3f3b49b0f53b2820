//! `tandem redis verify`: compare two deployments key by key, type-aware.
//!
//! Round 1 scans every key of the source (and every key of the target, for extras) and
//! compares it on both sides; later rounds re-check only the previous round's
//! differences, so writes still in flight on a live link settle before they are
//! reported. Memory is bounded by the scan batch and the chunk size, plus the list of
//! differences itself.
//!
//! - `side.rs`: one side (standalone or cluster), routed pipelined reads.
//! - `scan.rs`: which keys exist (SCAN per db and per master).
//! - `compare.rs`: a batch of keys: type, expiry, length, then content.
//! - `types.rs`: content of each type, chunk by chunk.

mod compare;
mod scan;
mod side;
mod types;
mod types_stream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::redis::cluster::ClusterError;
use crate::redis::conn::ConnError;
use crate::redis::filter::TANDEM_PREFIX;
use crate::redis::url::Endpoint;
pub use side::Side;

/// What to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMode {
    /// Existence, type, expiry, length and every element.
    Full,
    /// Existence, type, expiry and length (element count, string length).
    Length,
    /// Existence and type only.
    Keys,
}

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    pub source: Endpoint,
    pub target: Endpoint,
    pub mode: VerifyMode,
    pub rounds: u32,
    pub round_delay: Duration,
    pub include_prefixes: Vec<Bytes>,
    pub exclude_prefixes: Vec<Bytes>,
    /// Source db → target db; unmapped dbs keep their number.
    pub db_map: HashMap<u32, u32>,
    pub ttl_tolerance_ms: i64,
}

impl VerifyConfig {
    fn wanted(&self, key: &[u8]) -> bool {
        !key.starts_with(TANDEM_PREFIX)
            && (self.include_prefixes.is_empty()
                || self.include_prefixes.iter().any(|p| key.starts_with(p)))
            && !self.exclude_prefixes.iter().any(|p| key.starts_with(p))
    }

    fn target_db(&self, source_db: u32) -> u32 {
        self.db_map.get(&source_db).copied().unwrap_or(source_db)
    }

    /// The source db whose keys land in target db `db`, if any.
    fn source_db(&self, db: u32) -> Option<u32> {
        if let Some((s, _)) = self.db_map.iter().find(|(_, t)| **t == db) {
            return Some(*s);
        }
        (!self.db_map.contains_key(&db)).then_some(db)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    Type,
    Ttl,
    Length,
    Value,
    /// Stream consumer groups, consumers or pending entries.
    Group,
}

/// One difference: a key (in the source's db numbering) and what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub db: u32,
    pub key: Bytes,
    pub kind: DiffKind,
    pub detail: String,
}

impl Diff {
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "db": self.db,
            "key": crate::cli_support::arg_json(&self.key),
            "kind": self.kind,
            "detail": self.detail,
        })
        .to_string()
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind).unwrap_or_default();
        write!(
            f,
            "{} db{} {}: {}",
            kind.as_str().unwrap_or("?"),
            self.db,
            crate::cli_support::arg_json(&self.key),
            self.detail
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{endpoint}: {command}: {detail}")]
    Reply {
        endpoint: String,
        command: String,
        detail: String,
    },
    #[error("{endpoint}: {detail}")]
    Topology { endpoint: String, detail: String },
    #[error("{0}")]
    Config(String),
}

impl VerifyError {
    /// Whether running verify again later can help (the network, a moving cluster).
    pub fn is_retryable(&self) -> bool {
        match self {
            VerifyError::Conn(e) => e.is_retryable(),
            VerifyError::Cluster(ClusterError::Conn(e)) => e.is_retryable(),
            VerifyError::Topology { .. } => true,
            _ => false,
        }
    }
}

/// The outcome: the last round's differences, sorted, and how many keys were compared.
#[derive(Debug, Default)]
pub struct Report {
    pub diffs: Vec<Diff>,
    pub keys_compared: u64,
    pub rounds_run: u32,
}

/// Keys compared per pipeline.
const BATCH: usize = 500;

pub async fn verify(cfg: &VerifyConfig) -> Result<Report, VerifyError> {
    let timeout = Duration::from_secs(10);
    let (src, dst) = tokio::join!(
        Side::connect("source", &cfg.source, timeout),
        Side::connect("target", &cfg.target, timeout)
    );
    let (mut src, mut dst) = (src?, dst?);
    let ctx = compare::Ctx {
        mode: cfg.mode,
        ttl_tolerance_ms: cfg.ttl_tolerance_ms,
        field_ttls: src.caps.hpexpiretime && dst.caps.hpexpiretime,
    };
    let mut report = Report::default();
    let mut diffs = scan::first_round(&mut src, &mut dst, cfg, &ctx, &mut report).await?;
    report.rounds_run = 1;
    while report.rounds_run < cfg.rounds.max(1) && !diffs.is_empty() {
        tokio::time::sleep(cfg.round_delay).await;
        diffs = recheck(&mut src, &mut dst, cfg, &ctx, diffs).await?;
        report.rounds_run += 1;
    }
    report.diffs = diffs;
    report
        .diffs
        .sort_by(|a, b| (a.db, &a.key, a.kind).cmp(&(b.db, &b.key, b.kind)));
    Ok(report)
}

/// Compare again only the keys that differed.
async fn recheck(
    src: &mut Side,
    dst: &mut Side,
    cfg: &VerifyConfig,
    ctx: &compare::Ctx,
    diffs: Vec<Diff>,
) -> Result<Vec<Diff>, VerifyError> {
    let mut by_db: BTreeMap<u32, Vec<Bytes>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for d in diffs {
        if seen.insert((d.db, d.key.clone())) {
            by_db.entry(d.db).or_default().push(d.key);
        }
    }
    let mut out = Vec::new();
    for (db, keys) in by_db {
        for chunk in keys.chunks(BATCH) {
            let found = compare::batch(src, dst, db, cfg.target_db(db), chunk, ctx).await?;
            out.extend(found);
        }
    }
    Ok(out)
}
