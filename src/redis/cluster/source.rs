//! `tandem redis sync` with a cluster on either side.
//!
//! - Cluster target: the engine writes into a [`ClusterSink`].
//! - Cluster source: one replica link + engine per master, all in this process, sharing
//!   the shutdown. Shard `i`'s link id is `<id>:<lowest slot of the shard when tandem
//!   first saw it>`; its checkpoints are its own. A shard is followed by the ids of its
//!   nodes (master and replicas), so a failover (a replica promoted) keeps the identity:
//!   the monitor sees another master for the same nodes, stops that shard's engine
//!   (landing what it holds) and starts it again on the new master, which resumes from
//!   the target's checkpoint with `PSYNC <replid> <offset+1>` (`+CONTINUE` under PSYNC2).
//! - Resharding on the source: each master's stream carries the writes it served; a
//!   migrated key arrives as `RESTORE-ASKING` on the importing master's stream and as
//!   `DEL` on the old one. Masters that get slots after start are picked up by the
//!   monitor and replicated from scratch (full sync of that master). See docs/CLUSTER.md.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{Topology, is_cluster};
use crate::core::shutdown::{Shutdown, shutdown_pair};
use crate::redis::conn::Conn;
use crate::redis::sink::standalone::SinkConfig;
use crate::redis::sink::{ClusterSink, SinkError, StandaloneSink};
use crate::redis::sync::twoway::Hooks;
use crate::redis::sync::{SyncConfig, SyncError, link_status, run_engine as engine, sink_config};
use crate::redis::url::Endpoint;

/// Two-way: the hooks for a shard's engine, by shard name (`<lowest slot>`) and current
/// master; called again on each restart of the shard (failover).
pub type HookFactory = Arc<dyn Fn(&str, &Endpoint) -> Hooks + Send + Sync>;

/// How often the source topology is re-read to detect failovers and new masters.
const MONITOR_EVERY: Duration = Duration::from_millis(500);

/// Run a sync whatever the modes of source and target (detected, not configured).
pub async fn run(cfg: SyncConfig, shutdown: Shutdown) -> Result<(), SyncError> {
    let timeout = Duration::from_secs(10);
    let target_cluster = detect(&cfg.target, timeout).await?;
    let source_cluster = detect(&cfg.source, timeout).await?;
    if !source_cluster {
        return run_engine(cfg, target_cluster, shutdown, None).await;
    }
    run_cluster_source(cfg, target_cluster, shutdown, None).await
}

pub async fn detect(ep: &Endpoint, timeout: Duration) -> Result<bool, SyncError> {
    let mut conn = Conn::connect(&ep.with_db(0), timeout)
        .await
        .map_err(SinkError::from)?;
    Ok(is_cluster(&mut conn).await.map_err(SinkError::from)?)
}

/// One engine (one source link) into a sink of the target's kind. A cluster target
/// that lost confirmed writes in a failover (`sink/cluster/owners.rs`) has its floor
/// checkpoint written back: the engine starts again from the target's checkpoints, a
/// few times at most (one-way only: two-way hooks belong to one engine).
pub async fn run_engine(
    cfg: SyncConfig,
    target_cluster: bool,
    shutdown: Shutdown,
    mut hooks: Option<Hooks>,
) -> Result<(), SyncError> {
    const RESTARTS: usize = 5;
    let mut restarts = 0;
    let mut sink_cfg = sink_config(&cfg);
    loop {
        // Two-way runs once (`run_engine_once` turns the loss into an error).
        let once = run_engine_once(
            cfg.clone(),
            sink_cfg.clone(),
            target_cluster,
            shutdown.clone(),
            hooks.take(),
        );
        match once.await {
            Err(SyncError::Sink(e @ SinkError::TargetLostWrites { .. }))
                if restarts < RESTARTS && !shutdown.is_triggered() =>
            {
                restarts += 1;
                warn!(id = %cfg.id, "{e}: starting the engine again");
                if let SinkError::TargetLostWrites { serving, .. } = e {
                    sink_cfg.also_discover_from = serving;
                }
            }
            r => return r,
        }
    }
}

async fn run_engine_once(
    cfg: SyncConfig,
    sink_cfg: SinkConfig,
    target_cluster: bool,
    shutdown: Shutdown,
    hooks: Option<Hooks>,
) -> Result<(), SyncError> {
    let two_way = hooks.is_some();
    // The engine reports its own end; a target refusing at connect is reported here.
    let failed = |e: SinkError| {
        link_status(&cfg).ended(Some(e.to_string()));
        e
    };
    let res = if target_cluster {
        let sink = ClusterSink::connect(sink_cfg).await.map_err(failed)?;
        engine(cfg, sink, shutdown, hooks).await
    } else {
        let sink = StandaloneSink::connect(sink_cfg).await.map_err(failed)?;
        engine(cfg, sink, shutdown, hooks).await
    };
    match res {
        // Two-way: its hooks cannot start again; stop with the error.
        Err(SyncError::Sink(SinkError::TargetLostWrites {
            endpoint,
            slots,
            example,
            resume,
            ..
        })) if two_way => Err(SyncError::Setup {
            endpoint,
            detail: format!(
                "the target lost writes it had confirmed ({slots} slots, slot {example}); \
                     restart tandem to resume from {resume}"
            ),
        }),
        r => r,
    }
}

/// A source shard as tandem follows it.
struct Followed {
    /// `<lowest slot>` when first seen: the link id suffix.
    name: String,
    node_ids: HashSet<String>,
    master: watch::Sender<Endpoint>,
}

/// One engine per source master (see the module doc), with two-way hooks when given.
pub(crate) async fn run_cluster_source(
    cfg: SyncConfig,
    target_cluster: bool,
    outer: Shutdown,
    hooks: Option<HookFactory>,
) -> Result<(), SyncError> {
    let topo = Topology::discover(&cfg.source, Duration::from_secs(10))
        .await
        .map_err(|e| cluster_err(&cfg.source, e))?;
    let (stop_all, shutdown) = shutdown_pair();
    {
        let stop_all = stop_all.clone();
        let mut outer = outer.clone();
        tokio::spawn(async move {
            outer.wait().await;
            stop_all.trigger();
        });
    }
    let mut followed: Vec<Followed> = Vec::new();
    let mut tasks = JoinSet::new();
    let moved = Arc::new(crate::redis::sync::migration::Moved::default());
    let mut seen: HashSet<String> = HashSet::new();
    let spawn = |shard: &super::Shard,
                 followed: &mut Vec<Followed>,
                 tasks: &mut JoinSet<Result<(), SyncError>>| {
        let name = shard.lowest_slot().unwrap_or(0).to_string();
        let (tx, rx) = watch::channel(shard.master.endpoint(&cfg.source));
        let mut ids: HashSet<String> = shard.replicas.iter().map(|r| r.id.clone()).collect();
        ids.insert(shard.master.id.clone());
        info!(shard = %name, master = %shard.master.addr(), "following source master");
        let mut shard_cfg = cfg.clone();
        shard_cfg.id = format!("{}:{name}", cfg.id);
        shard_cfg.cluster_source = Some(moved.clone());
        shard_cfg.spool_dir = cfg.spool_dir.join(&name);
        tasks.spawn(follow_shard(
            shard_cfg,
            target_cluster,
            rx,
            shutdown.clone(),
            hooks.clone().map(|f| (name.clone(), f)),
        ));
        followed.push(Followed {
            name,
            node_ids: ids,
            master: tx,
        });
    };
    for shard in &topo.shards {
        seen.insert(shard.master.id.clone());
        spawn(shard, &mut followed, &mut tasks);
    }
    let mut tick = tokio::time::interval(MONITOR_EVERY);
    let mut first_error = None;
    let mut stopping = shutdown.clone();
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(res) => {
                    let res = res.unwrap_or_else(|e| Err(SyncError::Full {
                        source_ep: cfg.source.to_string(),
                        detail: format!("shard task: {e}"),
                    }));
                    if let Err(e) = res {
                        // One shard failing stops the others cleanly: exit non-zero.
                        first_error.get_or_insert(e);
                        stop_all.trigger();
                    }
                }
            },
            _ = tick.tick(), if !stopping.is_triggered() => {
                let candidates = followed_endpoints(&followed, &cfg.source);
                let Some(t) = discover_any(&candidates).await else { continue };
                for shard in &t.shards {
                    let known = followed.iter_mut().find(|f| {
                        f.node_ids.contains(&shard.master.id)
                            || shard.replicas.iter().any(|r| f.node_ids.contains(&r.id))
                    });
                    match known {
                        Some(f) => {
                            f.node_ids.insert(shard.master.id.clone());
                            f.node_ids.extend(shard.replicas.iter().map(|r| r.id.clone()));
                            let ep = shard.master.endpoint(&cfg.source);
                            if *f.master.borrow() != ep {
                                warn!(shard = %f.name, master = %shard.master.addr(),
                                      "source failover: following the new master");
                                f.master.send_replace(ep);
                            }
                        }
                        None if seen.insert(shard.master.id.clone()) => {
                            warn!(master = %shard.master.addr(),
                                  "a new source master serves slots: replicating it too");
                            spawn(shard, &mut followed, &mut tasks);
                        }
                        None => {}
                    }
                }
            },
            _ = stopping.wait(), if !stopping.is_triggered() => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn followed_endpoints(followed: &[Followed], seed: &Endpoint) -> Vec<Endpoint> {
    let mut v: Vec<Endpoint> = followed.iter().map(|f| f.master.borrow().clone()).collect();
    v.push(seed.clone());
    v
}

async fn discover_any(candidates: &[Endpoint]) -> Option<Topology> {
    for ep in candidates {
        if let Ok(Ok(t)) = tokio::time::timeout(
            Duration::from_secs(2),
            Topology::discover(ep, Duration::from_secs(1)),
        )
        .await
            && !t.shards.is_empty()
        {
            return Some(t);
        }
    }
    None
}

/// Run one shard's engine; when its master changes, stop it (landing what it holds)
/// and start again on the new master.
async fn follow_shard(
    cfg: SyncConfig,
    target_cluster: bool,
    mut master: watch::Receiver<Endpoint>,
    shutdown: Shutdown,
    hooks: Option<(String, HookFactory)>,
) -> Result<(), SyncError> {
    loop {
        let ep = master.borrow_and_update().clone();
        let (stop, local) = shutdown_pair();
        let mut shard_cfg = cfg.clone();
        shard_cfg.source = ep.clone();
        let mut outer = shutdown.clone();
        let mut changed = master.clone();
        let relay = tokio::spawn(async move {
            tokio::select! {
                _ = outer.wait() => {}
                _ = changed.changed() => {}
            }
            stop.trigger();
        });
        let h = hooks.as_ref().map(|(name, make)| make(name, &ep));
        let res = run_engine(shard_cfg, target_cluster, local, h).await;
        relay.abort();
        if shutdown.is_triggered() {
            return res;
        }
        let moved = master.has_changed().unwrap_or(false) || *master.borrow() != ep;
        match res {
            Ok(()) if !moved => return Ok(()),
            Ok(()) => info!(id = %cfg.id, "restarting on the new source master"),
            Err(e) if moved => {
                warn!(id = %cfg.id, "shard stopped ({e}); restarting on the new source master")
            }
            Err(e) => {
                // The master may be failing over: give the monitor a moment to notice.
                // Said now: the process reports the error only when every shard ended.
                warn!(id = %cfg.id, "shard stopped ({e}); waiting up to 15 s for a failover");
                let mut waited = master.clone();
                let noticed = tokio::time::timeout(Duration::from_secs(15), waited.changed()).await;
                if !matches!(noticed, Ok(Ok(()))) {
                    return Err(e);
                }
                warn!(id = %cfg.id, "shard stopped ({e}); restarting on the new source master");
            }
        }
    }
}

fn cluster_err(ep: &Endpoint, e: super::ClusterError) -> SyncError {
    match e {
        super::ClusterError::Conn(c) => SyncError::Sink(SinkError::Conn(c)),
        super::ClusterError::Topology { detail, .. } => SyncError::Full {
            source_ep: ep.to_string(),
            detail,
        },
    }
}
