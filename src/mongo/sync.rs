//! `tandem mongo sync`: the checkpoint decides where to begin (a new copy, a copy to
//! resume, or changes after a position), then one reader feeds one applier until a
//! signal stops it. The checkpoint is on the target, or in `--checkpoint-file`
//! (`checkpoint_file.rs`: no transactions, at least once).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::apply::fold::OnConflict;
use super::apply::pool::Pool;
use super::apply::{Applier, ApplyConfig};
use super::checkpoint::{self, Checkpoint, Phase};
use super::checkpoint_file::CheckpointFile;
use super::copy::{self, CopyConfig};
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::event::Unit;
use super::ns::NsFilter;
use super::source::oplog::OplogReader;
use super::source::stream::{Start, StreamReader};
use super::source::{self, Reader};
use crate::core::shutdown::Shutdown;
use crate::core::{MongoPosition, OpTime};
use crate::ops::status::{LinkState, LinkStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Copy, then changes.
    All,
    /// Copy only.
    Full,
    /// Changes only, from now (or from the checkpoint).
    Incr,
}

/// When the source no longer holds the checkpoint's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnHistoryLost {
    /// Stop with one error saying a new full sync is needed.
    Fail,
    /// Drop the replicated namespaces on the target and copy again.
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fetch {
    ChangeStream,
    Oplog,
}

#[derive(Clone)]
pub struct SyncConfig {
    pub source: MongoEndpoint,
    pub target: MongoEndpoint,
    pub id: String,
    pub mode: Mode,
    pub fetch: Fetch,
    pub filter: NsFilter,
    pub on_conflict: OnConflict,
    pub workers: usize,
    pub partition_docs: u64,
    /// Operations per target transaction, at most (a source transaction is never split).
    pub batch_ops: usize,
    pub on_history_lost: OnHistoryLost,
    /// The checkpoint in this file, batches without transactions.
    pub checkpoint_file: Option<PathBuf>,
    pub status: Arc<LinkStatus>,
    /// A sharded source read shard by shard (`--fetch oplog`): each shard's replica set.
    pub shards: Vec<super::shards::Shard>,
    /// Two-way's stage between the reader and the applier (`twoway/`).
    pub judge: Option<Arc<dyn Judge>>,
}

/// A stage between the source reader and the applier: two-way drops its echoes and
/// decides each write's conflicts there.
///
/// Called once for every unit read, in source order, before it is batched; the unit it
/// returns is applied instead (a unit with nothing left is `Payload::Noop`, so the
/// position still advances). `None` drops the unit without moving the position: an
/// echo must not, since the checkpoint written for it would be an echo on the other
/// side, and so on forever. After a reconnection the units after the last applied
/// position are read, and judged, again.
pub trait Judge: Send + Sync {
    fn judge(&self, u: Unit) -> Option<Unit>;
}

pub async fn run(cfg: SyncConfig, shutdown: Shutdown) -> Result<()> {
    let st = cfg.status.clone();
    st.set_state(LinkState::Connecting);
    let mut result = run_inner(&cfg, shutdown.clone()).await;
    for _ in 0..3 {
        match &result {
            Err(e)
                if e.code == Some(crate::mongo::error::HISTORY_LOST)
                    && cfg.on_history_lost == OnHistoryLost::Resync
                    && cfg.mode != Mode::Incr
                    && cfg.shards.is_empty() =>
            {
                tracing::warn!("{e}");
                if let Err(e) = reset(&cfg).await {
                    result = Err(e);
                    break;
                }
                result = run_inner(&cfg, shutdown.clone()).await;
            }
            _ => break,
        }
    }
    st.ended(result.as_ref().err().map(|e| e.to_string()));
    result
}

async fn run_inner(cfg: &SyncConfig, shutdown: Shutdown) -> Result<()> {
    let info = source::probe(&cfg.source).await?;
    let file = match &cfg.checkpoint_file {
        Some(p) => Some(Arc::new(CheckpointFile::open(p, &cfg.id).await?)),
        None => None,
    };
    match &file {
        None => check_target(&cfg.target).await?,
        Some(f) => tracing::info!(
            "checkpoint in {}: batches are applied without transactions, at least once",
            f.name()
        ),
    }
    if !cfg.shards.is_empty() {
        if file.is_some() {
            return Err(MongoError::fatal(
                "--checkpoint-file",
                "not for a source read shard by shard: each shard needs a checkpoint of its own",
            ));
        }
        return super::shards::run(cfg, &cfg.shards, shutdown).await;
    }
    if info.sharded && cfg.fetch == Fetch::Oplog {
        return Err(MongoError::fatal(
            cfg.source.name(),
            "is a mongos: oplog mode reads each shard's replica set; use --fetch change-stream",
        ));
    }
    cfg.status.set_replid(&info.history);
    super::apply::end_previous_sessions(&cfg.target, &cfg.id).await?;
    let mut ckpt = match &file {
        Some(f) => f.load().await.map(|s| s.ckpt),
        None => checkpoint::load(&cfg.target, &cfg.id).await?,
    };
    if ckpt.is_none() {
        refuse_leftovers(cfg, file.as_deref()).await?;
    }
    let ckpt_name = match &file {
        Some(f) => f.name(),
        None => format!("checkpoint {:?} on {}", cfg.id, cfg.target.name()),
    };
    if let Some(c) = &ckpt
        && c.pos.history != info.history
    {
        return Err(MongoError::fatal(
            ckpt_name.clone(),
            format!(
                "belongs to history {:?}, the source is {:?}: use another --id for another source",
                c.pos.history, info.history
            ),
        ));
    }
    if let Some(c) = &ckpt
        && (c.pos.token.is_some()) != (cfg.fetch == Fetch::ChangeStream)
    {
        return Err(MongoError::fatal(
            ckpt_name,
            "was written in the other --fetch mode; positions of the two do not translate: use the same --fetch or a new --id",
        ));
    }
    if ckpt.is_none() {
        let pos = start_position(&cfg.source, cfg.fetch, &info.history, info.last_write).await?;
        let phase = if cfg.mode == Mode::Incr {
            Phase::Incr
        } else {
            Phase::Copy
        };
        let c = Checkpoint {
            pos,
            phase,
            copy_end: None,
        };
        save(cfg, file.as_deref(), &c).await?;
        ckpt = Some(c);
    }
    let mut ckpt = ckpt.expect("set above");
    if ckpt.phase == Phase::Copy {
        if !run_copy(cfg, &shutdown).await? {
            return Ok(());
        }
        let end = source::probe(&cfg.source).await?.last_write;
        ckpt.phase = Phase::Incr;
        ckpt.copy_end = Some(end);
        save(cfg, file.as_deref(), &ckpt).await?;
    }
    if cfg.mode == Mode::Full {
        return Ok(());
    }
    incremental(cfg, ckpt, file, shutdown).await
}

async fn save(cfg: &SyncConfig, file: Option<&CheckpointFile>, c: &Checkpoint) -> Result<()> {
    match file {
        Some(f) => f.save(c).await,
        None => checkpoint::save(&cfg.target, &cfg.id, c).await,
    }
}

/// A link without a checkpoint is new only if the target holds no trace of it: copy
/// progress, or (with a file) a checkpoint on the target, would otherwise be taken for
/// work done (a finished copy skipped, the changes since then lost). Losing the file,
/// or switching between `--checkpoint-file` and none, lands here.
async fn refuse_leftovers(cfg: &SyncConfig, file: Option<&CheckpointFile>) -> Result<()> {
    let t = cfg.target.client.database(super::ns::TANDEM_DB);
    let on = cfg.target.name();
    let id = &cfg.id;
    let start_over = "or start over with another --id and empty target collections";
    if let Some(f) = file
        && checkpoint::load(&cfg.target, id).await?.is_some()
    {
        return Err(MongoError::fatal(
            format!(
                "{} does not exist, but {on} holds link {id:?}'s checkpoint in {}.{}",
                f.name(),
                super::ns::TANDEM_DB,
                checkpoint::CHECKPOINTS
            ),
            "left by a run without --checkpoint-file: go on without the flag, or use another --id",
        ));
    }
    let progress = t
        .collection::<bson::Document>(checkpoint::COPY)
        .count_documents(bson::doc! {"link": id})
        .await
        .map_err(|e| cfg.target.err("reading copy progress", &e))?;
    if progress == 0 {
        return Ok(());
    }
    let (what, why) = match file {
        Some(f) => (
            format!("{} does not exist", f.name()),
            "left by a run with another checkpoint file, or without one: give that file, or \
             run as that run did,",
        ),
        None => (
            format!("link {id:?} has no checkpoint on {on}"),
            "left by a run with --checkpoint-file: give that file,",
        ),
    };
    Err(MongoError::fatal(
        format!(
            "{what}, but {on} holds its copy progress in {}.{}",
            super::ns::TANDEM_DB,
            checkpoint::COPY
        ),
        format!("{why} {start_over}"),
    ))
}

/// The full copy of a link whose checkpoint says it is unfinished; `false` when
/// shutdown stopped it.
pub(super) async fn run_copy(cfg: &SyncConfig, shutdown: &Shutdown) -> Result<bool> {
    if cfg.mode == Mode::Incr {
        return Err(MongoError::fatal(
            format!("checkpoint {:?}", cfg.id),
            "a copy of this link is unfinished: run with --mode all or full to finish it",
        ));
    }
    cfg.status.full_sync_started();
    let cc = CopyConfig {
        id: cfg.id.clone(),
        filter: cfg.filter.clone(),
        workers: cfg.workers,
        partition_docs: cfg.partition_docs,
        batch_docs: 1000,
        tagged: cfg.judge.is_some(),
    };
    Ok(
        copy::copy(&cfg.source, &cfg.target, &cc, &cfg.status, shutdown)
            .await?
            .is_some(),
    )
}

/// `--on-history-lost resync`: the target's replicated namespaces, the copy progress
/// and the checkpoint are removed, so the next run copies everything again.
async fn reset(cfg: &SyncConfig) -> Result<()> {
    let file = match &cfg.checkpoint_file {
        Some(p) => Some(CheckpointFile::open(p, &cfg.id).await?),
        None => None,
    };
    let drv = |what: String, e: &mongodb::error::Error| {
        MongoError::from_driver(format!("{}: {what}", cfg.target.name()), e)
    };
    let mut drop = std::collections::BTreeSet::new();
    let dbs = cfg
        .source
        .client
        .list_database_names()
        .await
        .map_err(|e| MongoError::from_driver(cfg.source.name(), &e))?;
    for db in dbs.iter().filter(|d| cfg.filter.accepts_db(d)) {
        for c in cfg.source.collections(db, None).await? {
            let ns = super::ns::Namespace::new(db, c.get_str("name").unwrap_or_default());
            if cfg.filter.accepts(&ns) {
                drop.insert(cfg.filter.map(&ns));
            }
        }
    }
    let tdbs = cfg
        .target
        .client
        .list_database_names()
        .await
        .map_err(|e| drv("listDatabases".into(), &e))?;
    for db in tdbs.iter().filter(|d| cfg.filter.accepts_db(d)) {
        for c in cfg.target.collections(db, None).await? {
            let ns = super::ns::Namespace::new(db, c.get_str("name").unwrap_or_default());
            if cfg.filter.accepts(&ns) && cfg.filter.map(&ns) == ns {
                drop.insert(ns);
            }
        }
    }
    tracing::warn!(
        "--on-history-lost resync: dropping {} namespaces on the target and copying again",
        drop.len()
    );
    for ns in &drop {
        let coll = cfg
            .target
            .client
            .database(&ns.db)
            .collection::<bson::Document>(&ns.coll);
        coll.drop()
            .await
            .map_err(|e| drv(format!("dropping {ns}"), &e))?;
    }
    let t = cfg.target.client.database(super::ns::TANDEM_DB);
    t.collection::<bson::Document>(checkpoint::COPY)
        .delete_many(bson::doc! {"link": &cfg.id})
        .await
        .map_err(|e| drv("clearing copy progress".into(), &e))?;
    if let Some(f) = file {
        return f.remove().await;
    }
    t.collection::<bson::Document>(checkpoint::CHECKPOINTS)
        .delete_one(bson::doc! {"_id": &cfg.id})
        .await
        .map_err(|e| drv("clearing the checkpoint".into(), &e))?;
    for (wid, _) in checkpoint::load_workers(&cfg.target, &cfg.id).await? {
        checkpoint::delete(&cfg.target, &wid).await?;
    }
    Ok(())
}

/// The target must run transactions: a replica set or a sharded cluster.
async fn check_target(target: &MongoEndpoint) -> Result<()> {
    let hello = target.hello().await?;
    if hello.get_str("setName").is_err() && hello.get_str("msg") != Ok("isdbgrid") {
        return Err(MongoError::fatal(
            target.name(),
            "the target is a standalone server, which cannot run transactions: tandem writes each \
             batch and its checkpoint in one transaction. Run the target as a replica set, or \
             give --checkpoint-file PATH to keep the checkpoint in a local file and apply batches \
             without transactions (at least once, see docs/MONGO.md)",
        ));
    }
    Ok(())
}

/// Where the changes begin when nothing was applied yet: now. (Also `mongo kafka`'s.)
pub(super) async fn start_position(
    source: &MongoEndpoint,
    fetch: Fetch,
    history: &str,
    last_write: OpTime,
) -> Result<MongoPosition> {
    match fetch {
        Fetch::Oplog => Ok(MongoPosition::oplog(
            history,
            super::source::oplog::newest_entry(source).await?,
        )),
        // No token yet: an empty one means "at this operation time, inclusive".
        Fetch::ChangeStream => Ok(MongoPosition::stream(
            history,
            OpTime(last_write.0 + 1),
            Vec::new(),
        )),
    }
}

/// The reader of the changes after `pos`, in the mode `pos` was taken in.
pub(super) async fn open_reader(src: &MongoEndpoint, pos: &MongoPosition) -> Result<Reader> {
    let h = &pos.history;
    Ok(match &pos.token {
        Some(t) if t.is_empty() => Reader::Stream(Box::new(
            StreamReader::open(src, h, Start::At(pos.ts)).await?,
        )),
        Some(t) => Reader::Stream(Box::new(
            StreamReader::open(src, h, Start::After(t.clone())).await?,
        )),
        None => Reader::Oplog(Box::new(OplogReader::open(src, h, pos.ts).await?)),
    })
}

/// Where the workers of this run start, and how far the copy-window semantics extend:
/// the lowest and highest checkpoints of the previous run's workers (pool.rs). Their
/// checkpoints are then rewritten for this run's number of workers: the main checkpoint
/// first (it records both), so a crash in between loses neither.
async fn worker_start(
    cfg: &SyncConfig,
    ckpt: &Checkpoint,
    ids: &[String],
) -> Result<(MongoPosition, Option<OpTime>)> {
    let old = checkpoint::load_workers(&cfg.target, &cfg.id).await?;
    let mut resume = ckpt.pos.clone();
    let mut window = ckpt.copy_end;
    if let Some((_, lo)) = old.iter().min_by_key(|(_, c)| c.pos.ts) {
        for (wid, c) in &old {
            if c.pos.try_cmp(&ckpt.pos).is_err() {
                return Err(MongoError::fatal(
                    format!("checkpoint {wid:?} on {}", cfg.target.name()),
                    format!("is of another history or fetch mode than {:?}", cfg.id),
                ));
            }
        }
        resume = lo.pos.clone();
        let hi = old.iter().map(|(_, c)| c.pos.ts).max().unwrap_or(resume.ts);
        window = Some(window.map_or(hi, |w| w.max(hi)));
    }
    if old.is_empty() && ids.len() == 1 {
        return Ok((resume, window));
    }
    let main = Checkpoint {
        pos: resume.clone(),
        phase: Phase::Incr,
        copy_end: window,
    };
    checkpoint::save(&cfg.target, &cfg.id, &main).await?;
    if ids.len() > 1 {
        for wid in ids {
            checkpoint::save_position(&cfg.target, wid, &resume).await?;
        }
    }
    for (wid, _) in old.iter().filter(|(w, _)| !ids.contains(w)) {
        checkpoint::delete(&cfg.target, wid).await?;
    }
    Ok((resume, window))
}

/// With a checkpoint file, how far the restart replays like the copy window: to the
/// copy's end, and past it to the end of the batch the file names as in flight (the
/// last process may have written part of it).
async fn replay_window(f: &CheckpointFile, copy_end: Option<OpTime>) -> Option<OpTime> {
    let in_flight = f.load().await.and_then(|s| s.in_flight);
    if let Some(t) = in_flight {
        tracing::info!(
            "{}: the batch up to {t} may be partly applied; it is replayed like the copy window",
            f.name()
        );
    }
    copy_end.max(in_flight)
}

pub(super) async fn incremental(
    cfg: &SyncConfig,
    ckpt: Checkpoint,
    file: Option<Arc<CheckpointFile>>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let st = cfg.status.clone();
    // One file holds one position: with it, one applier.
    let ids: Vec<String> = if cfg.workers <= 1 || file.is_some() {
        vec![cfg.id.clone()]
    } else {
        (0..cfg.workers)
            .map(|k| format!("{}/{k}", cfg.id))
            .collect()
    };
    let (resume, window) = match &file {
        Some(f) => (ckpt.pos.clone(), replay_window(f, ckpt.copy_end).await),
        None => worker_start(cfg, &ckpt, &ids).await?,
    };
    let ckpt = Checkpoint {
        pos: resume,
        copy_end: window,
        ..ckpt
    };
    let _stop_gauge = lag_gauge(&st, &cfg.source);
    let appliers = ids
        .iter()
        .map(|id| {
            let apply_cfg = ApplyConfig {
                id: id.clone(),
                filter: cfg.filter.clone(),
                on_conflict: cfg.on_conflict,
                copy_end: ckpt.copy_end,
                tag_ddl: cfg.judge.is_some(),
            };
            let a = Applier::new(
                cfg.target.clone(),
                apply_cfg,
                Some(ckpt.pos.clone()),
                Some(st.clone()),
            );
            match &file {
                Some(f) => a.with_checkpoint_file(f.clone()),
                None => a,
            }
        })
        .collect();
    let mut applier = Pool::new(appliers);
    let mut failures = 0u32;
    loop {
        let from = applier.last().unwrap_or_else(|| ckpt.pos.clone());
        let reader = match open_reader(&cfg.source, &from).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() && failures < 60 => {
                failures += 1;
                st.reconnecting(e.to_string());
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        st.set_state(LinkState::Incremental);
        tracing::info!("{}: reading changes after {from}", cfg.source.name());
        let (read, mut rx) = spawn_reader(reader, st.clone(), cfg.judge.clone());
        let outcome = pump(&mut applier, &mut rx, cfg.batch_ops, &mut shutdown).await;
        read.abort();
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && failures < 60 => {
                failures += 1;
                st.reconnecting(e.to_string());
                tracing::warn!("{e}; resuming after the last applied position");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The lag gauge moves while nothing lands too (a stalled target), once a second.
pub(super) fn lag_gauge(st: &LinkStatus, source: &MongoEndpoint) -> AbortOnDrop {
    let (lag, source) = (st.lag_clock(), source.addr().to_string());
    AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            crate::metrics::lag_seconds_of(&source, lag.lag());
        }
    }))
}

/// The reader in a task of its own, feeding a bounded channel (marking what arrived
/// on the lag clock and `/status`); it ends at the first error, which it sends on.
pub(super) fn spawn_reader(
    reader: Reader,
    st: Arc<LinkStatus>,
    judge: Option<Arc<dyn Judge>>,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Result<Unit>>) {
    let (tx, rx) = mpsc::channel::<Result<Unit>>(4096);
    let lag = st.lag_clock();
    let read = tokio::spawn(async move {
        let mut reader = reader;
        loop {
            match reader.next().await {
                Ok(Some(u)) => {
                    let u = match &judge {
                        Some(j) => match j.judge(u) {
                            Some(u) => u,
                            None => continue,
                        },
                        None => u,
                    };
                    lag.received(u.pos.ts.0);
                    st.received(u.pos.ts.0);
                    if tx.send(Ok(u)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    (read, rx)
}

/// Batches what the reader has ready (never waiting for more once it has some) and
/// applies it; returns `Ok` when shutdown is asked for, after the batch in flight.
async fn pump(
    applier: &mut Pool,
    rx: &mut mpsc::Receiver<Result<Unit>>,
    batch_ops: usize,
    shutdown: &mut Shutdown,
) -> Result<()> {
    loop {
        let first = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            u = rx.recv() => u,
        };
        let Some(first) = first else {
            return Err(MongoError::retryable("reader", "the source reader stopped"));
        };
        let mut batch = vec![first?];
        let mut ops = batch[0].ops();
        while ops < batch_ops {
            match rx.try_recv() {
                Ok(u) => {
                    let u = u;
                    match u {
                        Ok(u) => {
                            ops += u.ops().max(1);
                            batch.push(u);
                        }
                        Err(e) => {
                            applier.apply(batch).await?;
                            return Err(e);
                        }
                    }
                }
                Err(_) => break,
            }
        }
        applier.apply(batch).await?;
        if shutdown.is_triggered() {
            return Ok(());
        }
    }
}

/// A task stopped when its owner goes.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
