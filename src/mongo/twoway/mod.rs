//! `tandem mongo twoway`: two `mongo sync` links in one process, A→B and B→A, each with
//! a judge between its reader and its applier (`judge.rs`: echoes dropped, local writes
//! through the shared conflict detector of `core::conflict`), and under `converge` a
//! resolver (`resolve.rs`) that copies each conflict's winner across.
//!
//! The link that copies first attaches second: the other one has its start position
//! saved before the copy writes anything, so no local write on the copy's target is
//! missed while the copy lands. Copy batches are transactions tagged like every other
//! tandem write, so the target's own link drops them as echoes.

pub mod judge;
pub mod resolve;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use judge::{ConflictLog, Progress, SideJudge, known_sessions, space};
use resolve::Resolver;

use super::apply::fold::{DocKey, OnConflict};
use super::checkpoint;
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::ns::NsFilter;
use super::sync::{self, Fetch, Mode, OnHistoryLost, SyncConfig};
use crate::core::conflict::{Detector, Policy, Seen, Side};
use crate::core::shutdown::{Shutdown, TaskGroup};
use crate::ops::status::LinkStatus;

/// What the detector keys documents by: namespace and `_id` bytes.
pub type Key = DocKey;

/// Which side is copied into the other first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FullSync {
    AToB,
    BToA,
    None,
}

/// Which side's DDL is applied on the other. Both ways, a DDL carries no tag of its
/// own: the applier announces each one in `__tandem.ddl` just before it, and the other
/// link drops the DDL that follows the announcement as its echo (`judge.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DdlFlow {
    AToB,
    BToA,
    Both,
    None,
}

pub struct TwoWayConfig {
    pub a: MongoEndpoint,
    pub b: MongoEndpoint,
    pub id: String,
    pub fetch: Fetch,
    pub filter: NsFilter,
    pub policy: Policy,
    pub prefer: Side,
    pub full_sync: FullSync,
    pub ddl: DdlFlow,
    pub conflict_log: Option<PathBuf>,
    /// How long writes count for conflict detection.
    pub retention: Duration,
    pub partition_docs: u64,
    pub batch_ops: usize,
    /// `[a→b, b→a]`.
    pub status: [Arc<LinkStatus>; 2],
}

/// The checkpoint `_id` of the link that reads `side` (it lives on the other side).
pub fn link_id(id: &str, side: Side) -> String {
    match side {
        Side::A => format!("{id}:a2b"),
        Side::B => format!("{id}:b2a"),
    }
}

/// Runs both links (and the resolver) until shutdown or the first fatal error.
pub async fn run(cfg: TwoWayConfig, shutdown: Shutdown) -> Result<()> {
    let detector = Arc::new(Detector::new(cfg.policy, cfg.prefer, cfg.retention));
    for side in [Side::A, Side::B] {
        detector.add_observer(side, space(side));
    }
    let log = match &cfg.conflict_log {
        Some(p) => Some(Arc::new(ConflictLog::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    MongoError::fatal(format!("--conflict-log {}", p.display()), e.to_string())
                })?,
        ))),
        None => None,
    };
    let progress = Arc::new(Progress::default());
    // What each side's judge knows of the sessions tandem writes that side with.
    let sessions = [
        known_sessions(&cfg.a, &link_id(&cfg.id, Side::B)).await?,
        known_sessions(&cfg.b, &link_id(&cfg.id, Side::A)).await?,
    ];
    let on_conflict = match cfg.policy {
        Policy::Ignore => OnConflict::Ignore,
        Policy::Converge | Policy::Overwrite => OnConflict::Overwrite,
    };
    let link = |side: Side| {
        let (source, target) = match side {
            Side::A => (cfg.a.clone(), cfg.b.clone()),
            Side::B => (cfg.b.clone(), cfg.a.clone()),
        };
        let copies = matches!(
            (cfg.full_sync, side),
            (FullSync::AToB, Side::A) | (FullSync::BToA, Side::B)
        );
        let ddl = matches!(
            (cfg.ddl, side),
            (DdlFlow::AToB, Side::A) | (DdlFlow::BToA, Side::B) | (DdlFlow::Both, _)
        );
        let judge = SideJudge {
            side,
            reverse: link_id(&cfg.id, side.other()),
            detector: detector.clone(),
            progress: progress.clone(),
            ddl,
            log: log.clone(),
            seen: Mutex::new(Seen::default()),
            sessions: Mutex::new(sessions[side as usize].clone()),
            ddl_echo: Mutex::new(None),
        };
        SyncConfig {
            source,
            target,
            id: link_id(&cfg.id, side),
            mode: if copies { Mode::All } else { Mode::Incr },
            fetch: cfg.fetch,
            filter: cfg.filter.clone(),
            on_conflict,
            // One applier per direction: its checkpoint, read back from the echoes,
            // is how much of the other side this side holds.
            workers: 1,
            partition_docs: cfg.partition_docs,
            batch_ops: cfg.batch_ops,
            on_history_lost: OnHistoryLost::Fail,
            checkpoint_file: None,
            status: cfg.status[side as usize].clone(),
            shards: Vec::new(),
            judge: Some(Arc::new(judge)),
        }
    };
    let (first, second) = match cfg.full_sync {
        FullSync::BToA => (link(Side::A), link(Side::B)),
        _ => (link(Side::B), link(Side::A)),
    };
    let mut runs = TaskGroup::new(&shutdown);
    let (first_target, first_id) = (first.target.clone(), first.id.clone());
    runs.spawn(sync::run(first, runs.shutdown()));
    attached(&first_target, &first_id, &mut runs).await?;
    runs.spawn(sync::run(second, runs.shutdown()));
    if cfg.policy == Policy::Converge {
        let r = Resolver {
            sides: [cfg.a.clone(), cfg.b.clone()],
            id: cfg.id.clone(),
            detector: detector.clone(),
            progress: progress.clone(),
            log,
        };
        runs.spawn(r.run(runs.shutdown()));
    }
    runs.join().await
}

/// Waits until the first link has saved its start position (its checkpoint exists),
/// or fails if it stopped first.
async fn attached(
    target: &MongoEndpoint,
    id: &str,
    runs: &mut TaskGroup<MongoError>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..2400 {
        if checkpoint::load(target, id).await?.is_some() {
            return Ok(());
        }
        match runs.try_ended() {
            Some(Err(e)) => return Err(e),
            // Stopped by shutdown before it attached: nothing to wait for.
            Some(Ok(())) => return Ok(()),
            None => {}
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(MongoError::retryable(
        target.name(),
        format!("link {id:?} did not save its start position within 120 s"),
    ))
}
