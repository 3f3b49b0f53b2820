//! One-way sync: a source link into a target sink, full sync then incremental, with
//! exactly-once checkpoints (see docs/ARCHITECTURE.md).
//!
//! ```text
//! link events ─┬─ FullSync/RdbChunk ─▶ rdb_feed ─▶ parser thread (full.rs) ─▶ writes ─┐
//!              └─ Command ─▶ UnitBuilder ─▶ IncrPolicy (incr.rs) ─▶ writes ───────────┤
//!                                                          BatchBuilder ◀──────────────┘
//!                                   sink (MULTI … HSET checkpoint EXEC) ─▶ target
//!                   applied checkpoint ─▶ LinkHandle::confirm ─▶ REPLCONF ACK
//! ```

pub mod full;
pub mod incr;
pub mod migration;
pub mod rdb_feed;
pub mod restore;
pub mod resync;
pub mod scripts;
pub mod twoway;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::core::shutdown::Shutdown;
use crate::core::{ReplPosition, ShortId};
use crate::ops::{LinkState, LinkStatus, Status};
use crate::redis::compat::TargetCaps;
use crate::redis::conn::{Frame, frame_text, info_field};
use crate::redis::replica::{self, Event, LinkConfig, LinkError};
use crate::redis::sink::standalone::SinkConfig;
use crate::redis::sink::{CkptState, Sink, SinkError, StandaloneSink};
use crate::redis::url::Endpoint;
use full::{Group, LoadOptions, TargetRdb};
use incr::{IncrError, IncrPolicy, IncrStats, UnitBuilder};
use restore::Write;

/// The applied position is passed on to the source (REPLCONF ACK), the lag clock and the
/// status at most once per this interval (the first move at once).
const CONFIRM_EVERY: Duration = Duration::from_millis(1);

/// What to replicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Full sync (unless a checkpoint allows resuming), then incremental, until stopped.
    All,
    /// Full sync only; stop once the RDB is applied.
    Full,
    /// Incremental only: resume from the checkpoint, or start at the source's current
    /// position without copying existing data.
    Incr,
}

#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub source: Endpoint,
    pub target: Endpoint,
    pub id: String,
    pub mode: Mode,
    pub policy: IncrPolicy,
    pub big_key_bytes: usize,
    pub rewrite_only: bool,
    pub batch_commands: usize,
    pub batch_bytes: usize,
    pub window: usize,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Silence on the source link after which it is dropped and reconnected (Redis's
    /// `repl-timeout`): how long a blackholed link goes unnoticed.
    pub repl_timeout: Duration,
    /// The source is one master of a cluster: DELs pass the resharding guard, and
    /// `RESTORE-ASKING`s its barrier, shared by the cluster's engines (`migration.rs`).
    /// Set by the cluster source, never by users.
    pub cluster_source: Option<Arc<migration::Moved>>,
    /// The process's `/status` registry; each engine reports under its link `id`.
    pub status: Arc<Status>,
    /// A full resync over data this link wrote: clear its keys first, or load over them.
    pub on_resync: resync::OnResync,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Incr(#[from] IncrError),
    #[error("{source_ep}: full sync failed: {detail}")]
    Full { source_ep: String, detail: String },
    #[error("the replication link ended unexpectedly")]
    LinkEnded,
    /// The endpoints cannot be used as given (found at start).
    #[error("{endpoint}: {detail}")]
    Setup { endpoint: String, detail: String },
}

/// Run until `shutdown` (or, in `Mode::Full`, until the RDB is applied). On shutdown the
/// batch in flight is finished and its checkpoint written before returning.
pub async fn run(cfg: SyncConfig, shutdown: Shutdown) -> Result<(), SyncError> {
    let sink = StandaloneSink::connect(sink_config(&cfg))
        .await
        .inspect_err(|e| link_status(&cfg).ended(Some(e.to_string())))?;
    run_with_sink(cfg, sink, shutdown).await
}

/// The sink settings of a link (its confirmed commands count in its status entry).
pub fn sink_config(cfg: &SyncConfig) -> SinkConfig {
    let mut sink_cfg = SinkConfig::new(cfg.target.clone(), &cfg.id);
    sink_cfg.window = cfg.window;
    sink_cfg.batch_commands = cfg.batch_commands;
    sink_cfg.batch_bytes = cfg.batch_bytes;
    sink_cfg.applied_commands = link_status(cfg).commands_counter();
    sink_cfg
}

/// The `/status` entry of the link `cfg` describes.
pub fn link_status(cfg: &SyncConfig) -> Arc<LinkStatus> {
    cfg.status.link(&cfg.id, &cfg.source, &cfg.target)
}

/// Run the engine into any sink.
pub async fn run_with_sink<S: Sink>(
    cfg: SyncConfig,
    sink: S,
    shutdown: Shutdown,
) -> Result<(), SyncError> {
    run_engine(cfg, sink, shutdown, None).await
}

/// Run the engine into any sink, with the two-way hooks when given.
pub async fn run_engine<S: Sink>(
    cfg: SyncConfig,
    sink: S,
    shutdown: Shutdown,
    hooks: Option<twoway::Hooks>,
) -> Result<(), SyncError> {
    let status = link_status(&cfg);
    status.set_state(LinkState::Connecting);
    let result = engine(cfg, sink, shutdown, hooks, status.clone()).await;
    status.ended(result.as_ref().err().map(|e| e.to_string()));
    result
}

async fn engine<S: Sink>(
    cfg: SyncConfig,
    mut sink: S,
    mut shutdown: Shutdown,
    hooks: Option<twoway::Hooks>,
    status: Arc<LinkStatus>,
) -> Result<(), SyncError> {
    let (target_rdb, caps) = probe_target(&mut sink).await?;
    let start = sink.checkpoint_at_start().cloned();
    let mut link_cfg = LinkConfig::new(cfg.source.clone(), cfg.spool_dir.clone());
    link_cfg.spool_max_bytes = cfg.spool_max_bytes;
    link_cfg.read_timeout = cfg.repl_timeout;
    link_cfg.lag = status.lag_clock();
    link_cfg.status = status.clone();
    let mut initial_db = 0;
    match &start {
        Some(c) if c.state == CkptState::Incr && cfg.mode != Mode::Full => {
            info!(position = %c.pos, "resuming from the target's checkpoint");
            link_cfg.resume_after = Some(c.pos.clone());
            initial_db = c.db;
        }
        Some(c) if c.state == CkptState::Full => {
            warn!(position = %c.pos, "a previous full sync did not finish; starting over")
        }
        _ => {}
    }
    let lag = link_cfg.lag.clone();
    let mut link = replica::start(link_cfg, initial_db, shutdown.clone())?;
    if hooks.is_some() {
        link.events.drop_echoes();
    }
    // Confirm to the source what the target holds, as it happens; the lag gauge also
    // ticks while nothing is applied (that is when it grows).
    let mut applied = sink.applied();
    let handle = link.handle.clone();
    let applied_offset = hooks.as_ref().map(|h| h.applied_handle());
    let source_ep = cfg.source.clone();
    let st = status.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut streaming = false;
        loop {
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let c = applied.borrow_and_update().clone();
                    if let Some(c) = c.filter(|c| c.state == CkptState::Incr) {
                        crate::metrics::applied_offset(&source_ep, c.pos.offset);
                        // The clock first: whoever sees this offset in `/status`
                        // also sees the lag it implies.
                        lag.applied(c.pos.offset);
                        st.applied(c.pos.offset);
                        streaming = true;
                        if let Some(a) = &applied_offset {
                            a.set(c.pos.offset);
                        }
                        handle.confirm(c.pos);
                        // Coalesce: a cluster sink moves `applied` per slot batch, tens
                        // of thousands of times a second, and each move woke this task
                        // and the ACK writer on other threads and sent an ACK (a tenth
                        // of tandem's CPU). The newest value is taken after the pause.
                        tokio::time::sleep(CONFIRM_EVERY).await;
                    }
                }
                _ = tick.tick() => {}
            }
            // Lag in seconds is about the stream; during a full sync it is not defined.
            if streaming {
                crate::metrics::lag_seconds(&source_ep, lag.lag());
            }
        }
    });
    let mut eng = Engine {
        cfg: &cfg,
        sink,
        target_rdb,
        caps,
        replid: start
            .map(|c| c.pos.replid)
            .unwrap_or_else(|| ShortId::from("")),
        units: UnitBuilder::default(),
        stats: IncrStats::default(),
        db: initial_db,
        hooks,
        scripts: scripts::ScriptCache::default(),
        migration: cfg
            .cluster_source
            .as_ref()
            .map(|m| migration::MigrationGuard::new(cfg.source.clone(), m.clone())),
        status,
    };
    let result = eng.run(&mut link, &mut shutdown).await;
    // Land what is complete and write its checkpoint, unless the target itself failed:
    // its refused batch is still in flight, and settling it again would only wait for
    // a reply that never comes (the error would surface after the reply timeout).
    let flushed = match result {
        Err(SyncError::Sink(_)) => Ok(()),
        _ => eng.finish().await,
    };
    link.stop().await;
    result?;
    flushed?;
    Ok(())
}

struct Engine<'a, S> {
    cfg: &'a SyncConfig,
    sink: S,
    target_rdb: Option<TargetRdb>,
    /// What the target lacks of the source's commands (`redis/compat`).
    caps: TargetCaps,
    replid: ShortId,
    units: UnitBuilder,
    stats: IncrStats,
    db: u32,
    hooks: Option<twoway::Hooks>,
    scripts: scripts::ScriptCache,
    migration: Option<migration::MigrationGuard>,
    status: Arc<LinkStatus>,
}

impl<S: Sink> Engine<'_, S> {
    async fn run(
        &mut self,
        link: &mut replica::ReplicaLink,
        shutdown: &mut Shutdown,
    ) -> Result<(), SyncError> {
        let mut since_check = 0u32;
        loop {
            // Take what is at hand without awaiting; only wait (and watch for shutdown)
            // when nothing is — a select per event showed in profiles.
            since_check += 1;
            let ready = if since_check < 4096 {
                link.events.try_next()?
            } else {
                None
            };
            let ev = match ready {
                Some(ev) => Some(ev),
                None => {
                    since_check = 0;
                    tokio::select! {
                        biased;
                        _ = shutdown.wait() => return Ok(()),
                        ev = link.events.next() => ev?,
                    }
                }
            };
            let Some(ev) = ev else {
                return if shutdown.is_triggered() {
                    Ok(())
                } else {
                    Err(SyncError::LinkEnded)
                };
            };
            if self.status.pause().is_paused() && !self.units.in_unit() {
                // `POST /pause`: land what was taken and hold this event; the link
                // task keeps spooling the source, and the ACK stays at what the target
                // confirmed.
                self.finish().await?;
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => return Ok(()),
                    _ = self.status.pause().resumed() => {}
                }
            }
            match ev {
                Event::FullSync { replid, offset } => {
                    if let Some(h) = self.hooks.as_mut() {
                        h.attached();
                    }
                    // Over data this link wrote: its checkpoint was there, or it streamed.
                    let resync = !self.replid.is_empty();
                    if !self.replid.is_empty() {
                        warn!(
                            old = %self.replid, new = %replid,
                            "the source cannot continue from our position (backlog overrun \
                             or another history): full resync"
                        );
                    }
                    self.finish().await?;
                    self.units.reset();
                    self.status.set_replid(&replid);
                    self.replid = ShortId::from(replid);
                    let mut pos = ReplPosition::new(self.replid.clone(), offset);
                    if self.cfg.mode == Mode::Incr {
                        info!(position = %pos, "incremental only: skipping the RDB");
                        pos = match skip_rdb(link, pos).await {
                            Err(SyncError::LinkEnded) if shutdown.is_triggered() => return Ok(()),
                            r => r?,
                        };
                    } else {
                        self.status.full_sync_started();
                        loop {
                            if resync {
                                self.clear_before_load(&pos).await?;
                            }
                            // Stopped during the transfer (the link ends first): a stop
                            // like any other, not a failure; the next run starts from
                            // the checkpoint the target holds, as after a SIGKILL.
                            let next = match self.full_sync(link, pos.clone()).await {
                                Err(SyncError::LinkEnded) if shutdown.is_triggered() => {
                                    return Ok(());
                                }
                                r => r?,
                            };
                            let Some(next) = next else { break };
                            warn!(
                                old = %pos, new = %next,
                                "the source link broke during the RDB transfer: \
                                 the full sync starts over"
                            );
                            pos = next;
                        }
                    }
                    if pos.replid != self.replid {
                        self.status.set_replid(&pos.replid);
                        self.replid = pos.replid.clone();
                    }
                    self.db = 0;
                    // The RDB is applied: this position is now what the target holds.
                    self.sink.end_unit(pos, 0, CkptState::Incr).await?;
                    if self.cfg.mode == Mode::Full {
                        self.sink.close().await?;
                        return Ok(());
                    }
                    self.sink.flush().await?;
                    self.status.set_state(LinkState::Incremental);
                }
                Event::RdbChunk(_) | Event::RdbEnd => {}
                Event::Continue { replid, offset } => {
                    if let Some(h) = self.hooks.as_mut() {
                        h.attached();
                    }
                    info!(%replid, offset, "incremental stream continues");
                    self.status.set_replid(&replid);
                    self.status.set_state(LinkState::Incremental);
                    if *replid != *self.replid {
                        // PSYNC2 after a failover: same offsets, new id.
                        self.finish().await?;
                        self.replid = ShortId::from(replid);
                    }
                }
                Event::Command(mut cmd) => {
                    self.scripts.prepare(&mut cmd);
                    let Some(mut unit) = self.units.push(cmd) else {
                        continue;
                    };
                    if self.migration.is_some() && self.hooks.is_some() {
                        migration::strip_tandem_keys(&mut unit);
                    }
                    let end = unit.end;
                    self.db = unit.db;
                    let is_echo = match self.hooks.as_mut() {
                        Some(h) => h.note_echo(&unit),
                        None => false,
                    };
                    // An echo writes nothing and moves no checkpoint: a checkpoint
                    // write for it would echo back on the other side, forever.
                    if !is_echo {
                        let mut writes = self.cfg.policy.writes(unit, &mut self.stats)?;
                        if let Some(g) = self.migration.as_mut() {
                            writes = g.filter(writes).await?;
                            if !g.before_restores(&writes, shutdown).await {
                                return Ok(());
                            }
                        }
                        let writes = match self.hooks.as_ref() {
                            Some(h) => h.judge(writes, end, link.events.observed_ms()),
                            None => writes,
                        };
                        let writes = incr::for_target(&self.caps, writes)?;
                        for w in writes {
                            match w.raw {
                                Some(raw) => {
                                    self.sink.write_encoded(w.db, w.argv, raw, w.offset).await?
                                }
                                None => self.sink.write(w.db, w.argv, w.offset).await?,
                            }
                        }
                        let pos = ReplPosition::new(self.replid.clone(), end);
                        self.sink.end_unit(pos, self.db, CkptState::Incr).await?;
                        if let Some(g) = self.migration.as_mut() {
                            let moved = g.take_moved_out();
                            if !moved.is_empty() {
                                // The importing master's engine waits for this.
                                self.sink.flush().await?;
                                g.landed(moved);
                            }
                        }
                    }
                    self.unit_done(link, end).await?;
                }
                Event::Echo(ckpt) => {
                    // Only two-way links read echoes whole (`drop_echoes`), and only
                    // between units.
                    let end = ckpt.offset;
                    self.db = ckpt.db;
                    if let Some(h) = self.hooks.as_mut() {
                        h.note_echo_checkpoint(&ckpt.argv);
                    }
                    self.unit_done(link, end).await?;
                }
            }
        }
    }

    /// After a unit ending at `end`: when nothing more is at hand, land it now for low
    /// latency.
    async fn unit_done(&mut self, link: &replica::ReplicaLink, end: u64) -> Result<(), SyncError> {
        if !link.events.has_pending() && !self.units.in_unit() {
            self.sink.flush().await?;
            if let Some(h) = self.hooks.as_ref() {
                h.settled(end);
            }
        }
        Ok(())
    }

    /// A full resync over this link's earlier data (`resync.rs`): its checkpoint moves
    /// to state `full` first (a restart copies again, and clears again), then the
    /// target's keys of the link's scope go.
    async fn clear_before_load(&mut self, pos: &ReplPosition) -> Result<(), SyncError> {
        if self.hooks.is_some() || self.cfg.on_resync == resync::OnResync::Keep {
            return Ok(());
        }
        self.sink.end_unit(pos.clone(), 0, CkptState::Full).await?;
        self.finish().await?;
        let slots = match self.cfg.cluster_source {
            Some(_) => resync::source_slots(&self.cfg.source).await?,
            None => None,
        };
        let nodes = self.sink.masters();
        let removed = resync::clear(&nodes, &self.cfg.policy.filter, slots.as_ref()).await?;
        resync::report(removed);
        Ok(())
    }

    /// Land the complete units held and wait for the target to confirm all.
    async fn finish(&mut self) -> Result<(), SyncError> {
        self.sink.close().await?;
        Ok(())
    }

    /// Load the RDB that follows a `FullSync` at `pos`. A link that reconnects during
    /// the transfer gets a new full resync: the partial load is abandoned (what it
    /// wrote is overwritten by the new RDB's `RESTORE … REPLACE`s) and the new
    /// position is returned, to load again.
    async fn full_sync(
        &mut self,
        link: &mut replica::ReplicaLink,
        pos: ReplPosition,
    ) -> Result<Option<ReplPosition>, SyncError> {
        info!(position = %pos, "full sync: loading the source's RDB into the target");
        let started = std::time::Instant::now();
        let (chunks_tx, chunks) = rdb_feed::rdb_feed();
        let (writes_tx, writes) = mpsc::channel::<Group>(64);
        let opts = LoadOptions {
            target_rdb: self.target_rdb,
            big_key_bytes: self.cfg.big_key_bytes,
            rewrite_only: self.cfg.rewrite_only,
        };
        let filter = self.cfg.policy.filter.clone();
        let loader =
            tokio::task::spawn_blocking(move || full::load(chunks, &filter, &opts, writes_tx));
        let source_ep = self.cfg.source.to_string();
        let fed = self.status.clone();
        // Feed the parser while applying what it produces.
        let pump = async {
            let mut tx = Some(chunks_tx);
            loop {
                match link.events.next().await? {
                    Some(Event::RdbChunk(b)) => {
                        fed.full_sync_bytes(b.len() as u64);
                        let sender = tx.as_ref().expect("sender until RdbEnd");
                        if sender.send(b).await.is_err() {
                            // The loader stopped early; its error explains why.
                            return Ok::<_, SyncError>(None);
                        }
                    }
                    Some(Event::RdbEnd) => {
                        tx.take();
                        return Ok(None);
                    }
                    Some(Event::FullSync { replid, offset }) => {
                        // The parser sees a truncated file and stops; its error is
                        // expected and dropped below.
                        tx.take();
                        let next = ReplPosition::new(ShortId::from(replid), offset);
                        return Ok(Some(next));
                    }
                    Some(other) => {
                        return Err(SyncError::Full {
                            source_ep: source_ep.clone(),
                            detail: format!("unexpected {other:?} during the RDB transfer"),
                        });
                    }
                    None => return Err(SyncError::LinkEnded),
                }
            }
        };
        let sink = &mut self.sink;
        let status = &self.status;
        let caps = &self.caps;
        let apply = async {
            // Owned here, so that a failed apply drops it: the loader's next send then
            // fails and it stops, and so does the pump (otherwise both wait on full
            // channels for ever and the error never surfaces).
            let mut writes = writes;
            while let Some(group) = writes.recv().await {
                for w in group.writes {
                    match w {
                        // RESTORE exists on every target: nothing to translate.
                        Write::Restore { db, key, raw } => {
                            sink.write_keyed(db, b"RESTORE", key, raw, pos.offset)
                                .await?;
                        }
                        Write::Argv(db, argv) if !caps.watches_any() => {
                            sink.write(db, argv, pos.offset).await?;
                        }
                        Write::Argv(db, argv) => {
                            for argv in incr::rewritten_for_target(caps, argv, pos.offset)? {
                                sink.write(db, argv, pos.offset).await?;
                            }
                        }
                    }
                }
                // RESTOREs are idempotent; a checkpoint in state `full` makes a restart
                // start over, so any grouping is a valid unit.
                sink.end_unit(pos.clone(), 0, CkptState::Full).await?;
                status.full_sync_keys(group.keys);
            }
            sink.flush().await?;
            Ok::<(), SyncError>(())
        };
        let (pumped, applied) = tokio::join!(pump, apply);
        let stats = loader.await.map_err(|e| SyncError::Full {
            source_ep: self.cfg.source.to_string(),
            detail: format!("loader thread: {e}"),
        })?;
        let restart = pumped?;
        applied?;
        if restart.is_some() {
            return Ok(restart);
        }
        let stats = stats.map_err(|e| SyncError::Full {
            source_ep: self.cfg.source.to_string(),
            detail: e.to_string(),
        })?;
        info!(
            keys = stats.keys,
            restored = stats.restored,
            rewritten = stats.rewritten,
            expired = stats.skipped_expired,
            filtered = stats.skipped_filtered,
            functions = stats.functions,
            rdb_version = stats.rdb_version,
            secs = started.elapsed().as_secs_f64(),
            "full sync applied"
        );
        crate::metrics::full_sync_keys(stats.restored + stats.rewritten);
        Ok(None)
    }
}

/// Skip the RDB of a full resync at `pos`; a reconnect during it starts another one,
/// whose position is the one returned.
async fn skip_rdb(
    link: &mut replica::ReplicaLink,
    mut pos: ReplPosition,
) -> Result<ReplPosition, SyncError> {
    loop {
        match link.events.next().await? {
            Some(Event::RdbEnd) => return Ok(pos),
            Some(Event::FullSync { replid, offset }) => {
                pos = ReplPosition::new(ShortId::from(replid), offset);
            }
            Some(_) => {}
            None => return Err(SyncError::LinkEnded),
        }
    }
}

/// The target's RDB version, from `INFO server` (Redis and Valkey versions map to the
/// RDB versions they write and accept), and its commands (`COMMAND`).
async fn probe_target<S: Sink>(sink: &mut S) -> Result<(Option<TargetRdb>, TargetCaps), SyncError> {
    let reply = sink.query(&[b"INFO", b"server"]).await?;
    let info = match &reply {
        Frame::Error(_) => None,
        f => frame_text(f),
    }
    .unwrap_or_default();
    let commands = sink.query(&[b"COMMAND"]).await?;
    let caps = TargetCaps::new(&info, &commands);
    Ok((target_rdb_from_info(&info), caps))
}

/// RDB version a server writes (and the newest it reads), by its version string.
pub fn target_rdb_from_info(info: &str) -> Option<TargetRdb> {
    let valkey = info_field(info, "server_name").is_some_and(|n| n == "valkey")
        || info_field(info, "valkey_version").is_some();
    let ver = info_field(info, "valkey_version")
        .filter(|_| valkey)
        .or_else(|| info_field(info, "redis_version"))?;
    let mut it = ver.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next()?, it.next().unwrap_or(0));
    let version = if valkey {
        match major {
            9.. => 80,
            8 => 11,
            _ => 11,
        }
    } else {
        match (major, minor) {
            (8.., _) | (7, 4..) => 12,
            (7, 2..) => 11,
            (7, _) => 10,
            (5 | 6, _) => 9,
            (4, _) => 8,
            (3, 2..) => 7,
            (3, _) => 6,
            _ => return None,
        }
    };
    Some(TargetRdb { version, valkey })
}
