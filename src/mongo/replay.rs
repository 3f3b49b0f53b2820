//! `tandem mongo replay`: a recorded oplog applied to a target with the same applier
//! and checkpoints as a live link, so a replay interrupted and started again applies
//! each entry once.

use std::path::PathBuf;

use super::apply::fold::OnConflict;
use super::apply::{Applier, ApplyConfig};
use super::checkpoint;
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::event::{Payload, Unit};
use super::ns::NsFilter;
use super::source::file::{FILE_HISTORY, FileReader};
use super::source::merge::{Feed, MergeError, Merger, Step};
use crate::core::shutdown::Shutdown;
use crate::core::{MongoPosition, OpTime};

pub struct ReplayConfig {
    /// One recorded oplog, or one per shard of a sharded cluster (merged, cross-shard
    /// transactions joined).
    pub files: Vec<PathBuf>,
    pub target: MongoEndpoint,
    pub id: String,
    pub filter: NsFilter,
    pub on_conflict: OnConflict,
    pub until: Option<OpTime>,
    pub batch_ops: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Units (writes, whole transactions, DDL) applied by this run.
    pub units: u64,
    /// Units at or before the checkpoint of an earlier run, not applied again.
    pub skipped: u64,
}

pub async fn run(cfg: ReplayConfig, shutdown: Shutdown) -> Result<ReplayStats> {
    let mut source = if cfg.files.len() == 1 {
        Source::One(FileReader::open(&cfg.files[0], cfg.until)?)
    } else {
        Source::Shards(Shards::open(&cfg.files, cfg.until)?)
    };
    let ckpt = checkpoint::load(&cfg.target, &cfg.id).await?;
    if let Some(c) = &ckpt
        && c.pos.history != FILE_HISTORY
    {
        return Err(MongoError::fatal(
            format!("checkpoint {:?} on {}", cfg.id, cfg.target.name()),
            "belongs to a live link, not a replay: use another --id",
        ));
    }
    let done = ckpt.as_ref().map(|c| c.pos.ts);
    let apply_cfg = ApplyConfig {
        id: cfg.id.clone(),
        filter: cfg.filter.clone(),
        on_conflict: cfg.on_conflict,
        copy_end: None,
        tag_ddl: false,
    };
    let mut applier = Applier::new(cfg.target.clone(), apply_cfg, ckpt.map(|c| c.pos), None);
    let mut stats = ReplayStats::default();
    let mut batch = Vec::new();
    let mut ops = 0;
    while let Some(u) = source.next_unit()? {
        if done.is_some_and(|d| u.pos.ts <= d) {
            stats.skipped += 1;
            continue;
        }
        // Units of several shards may share a time: a checkpoint between them would
        // lose the later ones on a resume, which skips by time.
        let tied = batch.last().is_some_and(|l: &Unit| l.pos.ts == u.pos.ts);
        if ops >= cfg.batch_ops && !tied {
            stats.units += batch.len() as u64;
            applier.apply(std::mem::take(&mut batch)).await?;
            ops = 0;
            if shutdown.is_triggered() {
                return Ok(stats);
            }
        }
        ops += u.ops().max(1);
        batch.push(u);
    }
    stats.units += batch.len() as u64;
    applier.apply(batch).await?;
    Ok(stats)
}

enum Source {
    One(FileReader),
    Shards(Shards),
}

impl Source {
    fn next_unit(&mut self) -> Result<Option<Unit>> {
        match self {
            Source::One(r) => r.next_unit(),
            Source::Shards(s) => s.next_unit(),
        }
    }
}

type Join = fn(Unit, Vec<Unit>) -> Unit;

/// One recorded oplog per shard, merged in time order with each cross-shard
/// transaction joined (src/mongo/source/merge.rs). A replay reads every file from its
/// start, and the merge comes out the same each time, so the applier's scalar
/// checkpoint (the merged time) is enough to resume: no per-shard checkpoint is
/// needed here, unlike a live link.
struct Shards {
    files: Vec<PathBuf>,
    readers: Vec<FileReader>,
    merger: Merger<Unit, Join>,
    /// `--until` holds for the merged stream, not per file: a transaction that
    /// committed first on one shard before it comes whole, its commits on other
    /// shards after it included.
    until: Option<OpTime>,
    last: Option<(OpTime, bool)>,
}

impl Shards {
    fn open(files: &[PathBuf], until: Option<OpTime>) -> Result<Shards> {
        Ok(Shards {
            files: files.to_vec(),
            readers: files
                .iter()
                .map(|f| FileReader::open(f, None))
                .collect::<Result<_>>()?,
            merger: Merger::new(files.len(), join as Join),
            until,
            last: None,
        })
    }

    fn err(&self, e: MergeError) -> MongoError {
        let shard = match &e {
            MergeError::OutOfOrder { shard, .. }
            | MergeError::NotPrepared { shard, .. }
            | MergeError::EndedPrepared { shard, .. } => *shard,
        };
        MongoError::fatal(
            format!("oplog file {}", self.files[shard].display()),
            e.to_string(),
        )
    }

    fn next_unit(&mut self) -> Result<Option<Unit>> {
        // Each step takes one entry at most; a file's entries are finite.
        loop {
            match self.merger.step().map_err(|e| self.err(e))? {
                Step::Done => return Ok(None),
                Step::Need(j) => {
                    let feed = self.readers[j].next_feed()?.unwrap_or(Feed::End);
                    self.merger.push(j, feed).map_err(|e| self.err(e))?;
                }
                Step::Out(m) => {
                    if self.until.is_some_and(|u| m.at.ts > u) {
                        return Ok(None);
                    }
                    let mut u = m.unit;
                    u.pos = MongoPosition::oplog(FILE_HISTORY, m.at.ts);
                    let ddl = matches!(u.payload, Payload::Ddl(_));
                    if let Some((t, was_ddl)) = self.last
                        && t == m.at.ts
                        && (ddl || was_ddl)
                    {
                        return Err(MongoError::fatal(
                            format!("oplog file {}", self.files[m.at.shard].display()),
                            format!(
                                "a DDL entry and an entry of another file share the time {t}: \
                                 a DDL is checkpointed alone, and a resume could not tell them apart"
                            ),
                        ));
                    }
                    self.last = Some((m.at.ts, ddl));
                    return Ok(Some(u));
                }
            }
        }
    }
}

/// A cross-shard transaction's parts as one unit: at the first part's position.
fn join(mut first: Unit, rest: Vec<Unit>) -> Unit {
    let mut ops = match std::mem::replace(&mut first.payload, Payload::Noop) {
        Payload::Ops(o) => o,
        _ => Vec::new(),
    };
    for r in rest {
        first.touches_tandem |= r.touches_tandem;
        first.wall_ms = first.wall_ms.max(r.wall_ms);
        if let Payload::Ops(o) = r.payload {
            ops.extend(o);
        }
    }
    first.payload = Payload::Ops(ops);
    first.txn = true;
    first
}
