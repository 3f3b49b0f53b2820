//! Two-way (active-active) sync: two one-way directions in one process, A→B and B→A,
//! that drop each other's echoes and share a conflict detector; plus the resolver that
//! makes contested keys converge (docs/TWO-WAY.md).
//!
//! Either side may be a Redis Cluster (detected). A cluster side is read by one engine
//! per master, as the one-way cluster source does, so it has one offset *space* per
//! shard; the detector compares offsets only within a space.

mod hooks;
mod key;
mod resolve;
mod side_conn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::info;

use super::{Mode, SyncConfig, SyncError};
use crate::core::conflict::{Detector, Policy, Seen, Side, Space, SpillTo};
use crate::core::shutdown::{Shutdown, shutdown_pair};
use crate::redis::cluster::nodes::Nodes;
use crate::redis::cluster::source::{self as cluster_source, HookFactory};
use crate::redis::cluster::{Topology, ckpt::read_ckpt};
use crate::redis::conn::Conn;
use crate::redis::sink::{CkptState, SinkError, TargetCheckpoint, checkpoint};
use crate::redis::url::Endpoint;
pub use hooks::{Applied, Hooks};
pub use key::KeyBytes;

/// `(db, key)`.
pub type Key = (u32, KeyBytes);

/// The offset space of a stream: a cluster shard by its lowest slot when first seen
/// (the suffix of its link id), a standalone side's only stream as 0x10000.
pub fn space(side: Side, shard: Option<u16>) -> Space {
    ((side as u32) << 17) | shard.map_or(0x1_0000, u32::from)
}

/// `a`, `b`, `a:5461` — for logs.
pub fn space_name(s: Space) -> String {
    let side = if s >> 17 == 0 { "a" } else { "b" };
    match s & 0x1_ffff {
        0x1_0000 => side.to_string(),
        slot => format!("{side}:{slot}"),
    }
}

/// Per stream: how far it is applied on the other side, how far handled (applied or
/// dropped as echo), and the master it is read from (to tell when it is caught up).
#[derive(Default)]
pub struct Progress(Mutex<HashMap<Space, StreamProgress>>);

#[derive(Clone, Debug)]
pub struct StreamProgress {
    pub applied: u64,
    pub settled: u64,
    pub master: Option<Endpoint>,
}

impl Progress {
    fn update(&self, space: Space, f: impl FnOnce(&mut StreamProgress)) {
        let mut m = self.0.lock().unwrap();
        f(m.entry(space).or_insert(StreamProgress {
            applied: 0,
            settled: 0,
            master: None,
        }));
    }

    pub fn applied(&self, space: Space) -> u64 {
        self.0.lock().unwrap().get(&space).map_or(0, |p| p.applied)
    }

    fn streams(&self) -> Vec<(Space, StreamProgress)> {
        let m = self.0.lock().unwrap();
        m.iter().map(|(s, p)| (*s, p.clone())).collect()
    }
}

/// Which side is copied to the other at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FullSync {
    AToB,
    BToA,
    None,
}

pub struct TwoWayConfig {
    /// Template for both links (source/target/id/mode are set per link).
    pub base: SyncConfig,
    pub a: Endpoint,
    pub b: Endpoint,
    pub policy: Policy,
    pub prefer: Side,
    pub full_sync: FullSync,
    pub retention: Duration,
    pub conflict_log: Option<std::path::PathBuf>,
}

/// One side as found at start.
#[derive(Clone)]
struct SideInfo {
    ep: Endpoint,
    /// A cluster: its shards by lowest slot.
    shards: Option<Vec<u16>>,
}

impl SideInfo {
    async fn probe(ep: &Endpoint) -> Result<SideInfo, SyncError> {
        if !cluster_source::detect(ep, Duration::from_secs(10)).await? {
            return Ok(SideInfo {
                ep: ep.clone(),
                shards: None,
            });
        }
        if ep.db != 0 {
            return Err(SyncError::Setup {
                endpoint: ep.to_string(),
                detail: format!(
                    "is a Redis Cluster, which has only db 0, but the URL selects db {}",
                    ep.db
                ),
            });
        }
        let topo = Topology::discover(ep, Duration::from_secs(10))
            .await
            .map_err(|e| SyncError::Setup {
                endpoint: ep.to_string(),
                detail: format!("cluster topology: {e}"),
            })?;
        let shards = topo.shards.iter().filter_map(|s| s.lowest_slot()).collect();
        Ok(SideInfo {
            ep: ep.clone(),
            shards: Some(shards),
        })
    }

    fn streams(&self) -> Vec<Option<u16>> {
        match &self.shards {
            Some(s) => s.iter().map(|&l| Some(l)).collect(),
            None => vec![None],
        }
    }
}

/// The id of the link reading `shard` of the side that `dir` reads.
fn link_id(dir: &str, shard: Option<u16>) -> String {
    match shard {
        Some(l) => format!("{dir}:{l}"),
        None => dir.to_string(),
    }
}

/// What `observer` already holds of `other`'s streams: the checkpoints the reverse
/// link(s) left in it (on a cluster, the floors, which hold in every slot).
async fn initial_seen(
    observer: &SideInfo,
    other: &SideInfo,
    other_side: Side,
    reverse_dir: &str,
) -> Result<Seen, SyncError> {
    let mut seen = Seen::default();
    let mut nodes = match observer.shards {
        Some(_) => Some(
            Nodes::connect(
                observer.ep.clone(),
                Duration::from_secs(10),
                Duration::from_secs(30),
            )
            .await?,
        ),
        None => None,
    };
    let mut conn = match observer.shards {
        Some(_) => None,
        None => Some(
            Conn::connect(&observer.ep.with_db(0), Duration::from_secs(10))
                .await
                .map_err(SinkError::from)?,
        ),
    };
    for shard in other.streams() {
        let id = link_id(reverse_dir, shard);
        let c = match (&mut nodes, &mut conn) {
            (Some(n), _) => read_ckpt(n, &Bytes::from(checkpoint::key(&id))).await?,
            (_, Some(c)) => TargetCheckpoint::load(c, &id).await?,
            _ => None,
        };
        if let Some(c) = c.filter(|c| c.state == CkptState::Incr) {
            seen = seen.with(space(other_side, shard), c.pos.offset);
        }
    }
    Ok(seen)
}

/// Writes of one side the conflict detector keeps in memory (see `run`).
const DETECTOR_IN_MEMORY: usize = 1 << 16;

/// Run both directions until shutdown or the first fatal error.
pub async fn run(cfg: TwoWayConfig, shutdown: Shutdown) -> Result<(), SyncError> {
    // The writes a side holds in memory before its oldest go to disk: about 150 bytes
    // each with their index entry, so the detector stays near 20 MB under any burst.
    let detector = Arc::new(
        Detector::new(cfg.policy, cfg.prefer, cfg.retention).spill_to(SpillTo {
            dir: cfg.base.spool_dir.join("detector"),
            in_memory: DETECTOR_IN_MEMORY,
        }),
    );
    let log = match &cfg.conflict_log {
        Some(p) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| SyncError::Full {
                    source_ep: p.display().to_string(),
                    detail: format!("cannot open the conflict log: {e}"),
                })?,
        ))),
        None => None,
    };
    let sides = [
        SideInfo::probe(&cfg.a).await?,
        SideInfo::probe(&cfg.b).await?,
    ];
    let id = cfg.base.id.clone();
    let dirs = [format!("{id}:a2b"), format!("{id}:b2a")];
    // The link that copies data first attaches second: the other one must already be
    // reading its side so that no local write there is missed while the copy lands.
    let (first, second) = match cfg.full_sync {
        FullSync::BToA => (Side::A, Side::B),
        _ => (Side::B, Side::A),
    };
    let (stop, inner) = shutdown_pair();
    let mut outer = shutdown.clone();
    let stopper = stop.clone();
    tokio::spawn(async move {
        outer.wait().await;
        stopper.trigger();
    });
    let progress = Arc::new(Progress::default());
    for side in [Side::A, Side::B] {
        for shard in sides[side as usize].streams() {
            detector.add_observer(side, space(side, shard));
        }
    }
    // What each side's stream already holds of the other, read before either link
    // starts: read once the first link ran, the second side's would count what that
    // link applied since, and its own stream, resumed from an older checkpoint, would
    // take every write made before as having seen it (conflicts missed after each
    // restart under load: faults_twoway::sigkill_at_random_moments_under_twoway_load_then_sigterm_is_exact, 3 runs in 8).
    let mut seens = Vec::new();
    for side in [first, second] {
        let (src, dst) = (&sides[side as usize], &sides[side.other() as usize]);
        let reverse_dir = &dirs[side.other() as usize];
        seens.push(initial_seen(src, dst, side.other(), reverse_dir).await?);
    }
    let mut tasks = Vec::new();
    for (n, side) in [first, second].into_iter().enumerate() {
        let (src, dst) = (&sides[side as usize], &sides[side.other() as usize]);
        let copies = matches!(
            (cfg.full_sync, side),
            (FullSync::AToB, Side::A) | (FullSync::BToA, Side::B)
        );
        let mut link = cfg.base.clone();
        link.source = src.ep.clone();
        link.target = dst.ep.clone();
        link.id = dirs[side as usize].clone();
        link.mode = if copies { Mode::All } else { Mode::Incr };
        link.policy.drop_echoes = true;
        link.spool_dir = cfg.base.spool_dir.join(side.name());
        let reverse_dir = &dirs[side.other() as usize];
        let seen = seens[n].clone();
        for (s, off) in seen.iter() {
            for shard in src.streams() {
                detector.note_seen(side, space(side, shard), s, off);
            }
        }
        let (att_tx, mut att_rx) = mpsc::unbounded_channel();
        let make = {
            let (detector, progress, log) = (detector.clone(), progress.clone(), log.clone());
            let reverse_prefix = Bytes::from(checkpoint::key(reverse_dir));
            move |shard: Option<u16>, master: &Endpoint| {
                let sp = space(side, shard);
                detector.add_observer(side, sp);
                let master = master.clone();
                progress.update(sp, |p| p.master = Some(master));
                Hooks {
                    side,
                    space: sp,
                    detector: detector.clone(),
                    reverse_prefix: reverse_prefix.clone(),
                    seen: seen.clone(),
                    per_slot: HashMap::new(),
                    progress: progress.clone(),
                    attached: Some(att_tx.clone()),
                    log: log.clone(),
                    warn_gate: Default::default(),
                }
            }
        };
        let target_cluster = dst.shards.is_some();
        let sd = inner.clone();
        let trigger = stop.clone();
        let task = match src.shards {
            Some(_) => {
                let factory: HookFactory =
                    Arc::new(move |name: &str, master: &Endpoint| make(name.parse().ok(), master));
                tokio::spawn(async move {
                    let r =
                        cluster_source::run_cluster_source(link, target_cluster, sd, Some(factory))
                            .await;
                    if r.is_err() {
                        trigger.trigger();
                    }
                    r
                })
            }
            None => {
                let hooks = make(None, &src.ep);
                tokio::spawn(async move {
                    let r = cluster_source::run_engine(link, target_cluster, sd, Some(hooks)).await;
                    if r.is_err() {
                        trigger.trigger();
                    }
                    r
                })
            }
        };
        tasks.push(task);
        if n == 0 {
            // Bounded: every stream either attaches or fails (its error stops all).
            let mut stopped = inner.clone();
            let want = src.streams().len();
            let mut got = 0;
            while got < want {
                tokio::select! {
                    r = att_rx.recv() => match r {
                        Some(()) => got += 1,
                        None => break,
                    },
                    _ = stopped.wait() => break,
                }
            }
            info!(side = side.name(), streams = got, "reverse link attached");
        }
    }
    {
        let (detector, mut stop) = (detector.clone(), inner.clone());
        tokio::spawn(async move {
            loop {
                let all = detector.remembered();
                crate::metrics::conflict_writes(all, detector.in_memory());
                tokio::select! {
                    _ = stop.wait() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        });
    }
    let resolver = {
        let resolving = resolve::resolve_loop(
            [sides[0].clone(), sides[1].clone()],
            id.clone(),
            detector,
            progress,
            inner.clone(),
        );
        // A resolver that fails for good stops tandem (its error is the one reported)
        // rather than leaving the links running with no conflict ever converged.
        let trigger = stop.clone();
        tokio::spawn(async move {
            let r = resolving.await;
            if r.is_err() {
                trigger.trigger();
            }
            r
        })
    };
    let mut result = Ok(());
    for t in tasks {
        let r = t.await.map_err(|e| SyncError::Full {
            source_ep: "two-way".into(),
            detail: format!("link task: {e}"),
        })?;
        if result.is_ok() {
            result = r;
        }
    }
    stop.trigger();
    if let Ok(Err(e)) = resolver.await
        && result.is_ok()
    {
        result = Err(e);
    }
    result
}
