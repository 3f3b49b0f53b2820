//! `tandem mongo replay`: a recorded oplog applied to a target with the same applier
//! and checkpoints as a live link, so a replay interrupted and started again applies
//! each entry once.

use std::path::PathBuf;

use super::apply::fold::OnConflict;
use super::apply::{Applier, ApplyConfig};
use super::checkpoint;
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::ns::NsFilter;
use super::source::file::{FILE_HISTORY, FileReader};
use crate::core::OpTime;
use crate::core::shutdown::Shutdown;

pub struct ReplayConfig {
    pub file: PathBuf,
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
    let mut reader = FileReader::open(&cfg.file, cfg.until)?;
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
    while let Some(u) = reader.next_unit()? {
        if done.is_some_and(|d| u.pos.ts <= d) {
            stats.skipped += 1;
            continue;
        }
        ops += u.ops().max(1);
        batch.push(u);
        if ops >= cfg.batch_ops {
            stats.units += batch.len() as u64;
            applier.apply(std::mem::take(&mut batch)).await?;
            ops = 0;
            if shutdown.is_triggered() {
                return Ok(stats);
            }
        }
    }
    stats.units += batch.len() as u64;
    applier.apply(batch).await?;
    Ok(stats)
}
