//! Two-way (active-active) sync: two one-way engines in one process, A→B and B→A, that
//! drop each other's echoes and share a conflict detector; plus the resolver that makes
//! contested keys converge (docs/TWO-WAY.md).

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::incr::{TargetWrite, Unit};
use super::{Mode, SyncConfig, SyncError};
use crate::core::conflict::{Conflict, Detector, Policy, Side, Verdict, Write};
use crate::core::shutdown::{Shutdown, shutdown_pair};
use crate::redis::command::{Flags, key_indexes, resolve};
use crate::redis::conn::{Conn, ConnError, Frame, frame_text, info_field};
use crate::redis::filter::{TANDEM_PREFIX, any_writes_tandem_key};
use crate::redis::sink::StandaloneSink;
use crate::redis::sink::checkpoint;
use crate::redis::sink::standalone::SinkConfig;
use crate::redis::url::Endpoint;

pub type Key = (u32, Bytes);

/// What one engine of a two-way pair needs beyond a one-way sync.
pub struct Hooks {
    pub side: Side,
    pub detector: Arc<Detector<Key>>,
    /// The checkpoint key the *reverse* link writes into this side: its echoes in this
    /// side's stream tell how much of the other side this side holds.
    pub reverse_ckpt_key: Bytes,
    pub seen_other: u64,
    pub initial_seen_other: u64,
    /// Offset of this side's stream applied on the other side.
    pub applied: watch::Sender<u64>,
    /// Offset up to which this side's stream is handled: applied, or dropped as echo.
    pub settled: watch::Sender<u64>,
    attached: Option<oneshot::Sender<()>>,
    log: Option<Arc<Mutex<std::fs::File>>>,
}

impl Hooks {
    /// The link's stream position is established: the other link may start writing.
    pub fn attached(&mut self) {
        if let Some(tx) = self.attached.take() {
            let _ = tx.send(());
        }
    }

    /// Whether `unit` is tandem's own (an echo): then it is not applied, and if it holds
    /// the reverse link's checkpoint, remember how far the other side is applied here.
    pub fn note_echo(&mut self, unit: &Unit) -> bool {
        if !any_writes_tandem_key(unit.cmds.iter().map(|c| c.argv.as_slice())) {
            return false;
        }
        // The checkpoint write closes a batch: look from the end, once.
        let ckpt = unit.cmds.iter().rev().map(|c| &c.argv).find(|argv| {
            argv.len() >= 4
                && argv[0].eq_ignore_ascii_case(b"HSET")
                && argv[1] == self.reverse_ckpt_key
        });
        if let Some(argv) = ckpt {
            let field = |name: &[u8]| {
                argv[2..]
                    .chunks(2)
                    .find(|p| p.len() == 2 && &p[0][..] == name)
                    .map(|p| p[1].clone())
            };
            let incr = field(b"state").is_some_and(|s| &s[..] == b"incr");
            let off =
                field(b"offset").and_then(|o| std::str::from_utf8(&o).ok()?.parse::<u64>().ok());
            if let (true, Some(off)) = (incr, off) {
                self.seen_other = self.seen_other.max(off);
                self.detector.note_seen(self.side, self.seen_other);
            }
        }
        crate::metrics::echo_dropped();
        true
    }

    /// Run each write's keys through the detector; drop the writes it says to skip.
    pub fn judge(&self, writes: Vec<TargetWrite>, unit_end: u64) -> Vec<TargetWrite> {
        let now = now_ms();
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let (db, argv) = (w.db, &w.argv);
            let (keys, name) = match resolve(argv) {
                Some(spec) if spec.has(Flags::WRITE) => {
                    (key_indexes(spec, argv).unwrap_or_default(), spec.name)
                }
                _ => (Vec::new(), ""),
            };
            let mut skip = false;
            for k in keys {
                if argv[k].starts_with(TANDEM_PREFIX) {
                    continue;
                }
                let w = Write {
                    own: unit_end,
                    seen_other: self.seen_other,
                    at_ms: now,
                    command: name,
                };
                let (verdict, conflict) =
                    self.detector.observe(self.side, (db, argv[k].clone()), w);
                if let Some(c) = conflict {
                    self.report(&c);
                }
                skip |= verdict == Verdict::Skip;
            }
            if !skip {
                out.push(w);
            }
        }
        out
    }

    fn report(&self, c: &Conflict<Key>) {
        crate::metrics::conflict(self.detector.policy());
        let key = String::from_utf8_lossy(&c.key.1);
        warn!(
            db = c.key.0, key = %key, winner = c.winner.name(),
            a = %c.writes[0].command, b = %c.writes[1].command,
            "conflict: key written on both sides"
        );
        if let Some(log) = &self.log {
            let line = serde_json::json!({
                "db": c.key.0,
                "key": crate::cli_support::arg_json(&c.key.1),
                "a": {"command": c.writes[0].command, "at_ms": c.writes[0].at_ms, "offset": c.writes[0].own},
                "b": {"command": c.writes[1].command, "at_ms": c.writes[1].at_ms, "offset": c.writes[1].own},
                "policy": format!("{:?}", self.detector.policy()).to_lowercase(),
                "winner": c.winner.name(),
            });
            let _ = writeln!(log.lock().unwrap(), "{line}");
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// Run both directions until shutdown or the first fatal error.
pub async fn run(cfg: TwoWayConfig, shutdown: Shutdown) -> Result<(), SyncError> {
    let detector = Arc::new(Detector::new(cfg.policy, cfg.prefer, cfg.retention));
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
    let id = cfg.base.id.clone();
    let ids = [format!("{id}:a2b"), format!("{id}:b2a")];
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
    let applied = [watch::channel(0u64), watch::channel(0u64)];
    let applied_rx = [applied[0].1.clone(), applied[1].1.clone()];
    let settled = [watch::channel(0u64), watch::channel(0u64)];
    let settled_rx = [settled[0].1.clone(), settled[1].1.clone()];
    let mut tasks = Vec::new();
    for (n, side) in [first, second].into_iter().enumerate() {
        let (src, dst) = match side {
            Side::A => (cfg.a.clone(), cfg.b.clone()),
            Side::B => (cfg.b.clone(), cfg.a.clone()),
        };
        let copies = matches!(
            (cfg.full_sync, side),
            (FullSync::AToB, Side::A) | (FullSync::BToA, Side::B)
        );
        let mut link = cfg.base.clone();
        link.source = src;
        link.target = dst.clone();
        link.id = ids[side as usize].clone();
        link.mode = if copies { Mode::All } else { Mode::Incr };
        link.policy.drop_echoes = true;
        link.spool_dir = cfg.base.spool_dir.join(side.name());
        let (att_tx, att_rx) = oneshot::channel();
        let reverse_ckpt_key = Bytes::from(checkpoint::key(&ids[side.other() as usize]));
        // What this side already holds of the other: the reverse link's checkpoint
        // here, if a previous run left one.
        let initial_seen_other = read_offset(&link.source, &ids[side.other() as usize]).await?;
        detector.note_seen(side, initial_seen_other);
        let hooks = Hooks {
            side,
            detector: detector.clone(),
            reverse_ckpt_key,
            seen_other: initial_seen_other,
            initial_seen_other,
            applied: applied[side as usize].0.clone(),
            settled: settled[side as usize].0.clone(),
            attached: Some(att_tx),
            log: log.clone(),
        };
        let mut sink_cfg = SinkConfig::new(dst, &link.id);
        sink_cfg.window = link.window;
        sink_cfg.batch_commands = link.batch_commands;
        sink_cfg.batch_bytes = link.batch_bytes;
        let sink = StandaloneSink::connect(sink_cfg).await?;
        let sd = inner.clone();
        let trigger = stop.clone();
        tasks.push(tokio::spawn(async move {
            let r = super::run_engine(link, sink, sd, Some(hooks)).await;
            if r.is_err() {
                trigger.trigger();
            }
            r
        }));
        if n == 0 {
            // Bounded: the link either attaches or fails (its error stops everything).
            let mut stopped = inner.clone();
            tokio::select! {
                _ = att_rx => info!(side = side.name(), "reverse link attached"),
                _ = stopped.wait() => {}
            }
        }
    }
    let resolver = tokio::spawn(resolve_loop(
        cfg.a.clone(),
        cfg.b.clone(),
        id.clone(),
        detector,
        applied_rx,
        settled_rx,
        inner.clone(),
    ));
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

async fn read_offset(side: &Endpoint, ckpt_id: &str) -> Result<u64, SyncError> {
    let mut conn = Conn::connect(&side.with_db(0), Duration::from_secs(10))
        .await
        .map_err(crate::redis::sink::SinkError::from)?;
    let c = crate::redis::sink::TargetCheckpoint::load(&mut conn, ckpt_id).await?;
    Ok(c.map(|c| c.pos.offset).unwrap_or(0))
}

/// Copies the winner's value of every due conflict to the loser, then checks (once
/// both links are caught up and nobody wrote the key since) that the two sides agree,
/// copying again if not.
async fn resolve_loop(
    a: Endpoint,
    b: Endpoint,
    id: String,
    detector: Arc<Detector<Key>>,
    applied: [watch::Receiver<u64>; 2],
    settled: [watch::Receiver<u64>; 2],
    mut shutdown: Shutdown,
) -> Result<(), SyncError> {
    if detector.policy() != Policy::Converge {
        shutdown.wait().await;
        return Ok(());
    }
    let timeout = Duration::from_secs(10);
    let mut conns = [
        Conn::connect(&a.with_db(0), timeout)
            .await
            .map_err(sink_err)?,
        Conn::connect(&b.with_db(0), timeout)
            .await
            .map_err(sink_err)?,
    ];
    let tag = Bytes::from(format!("__tandem:conflict:{id}"));
    let mut verify: Vec<(Conflict<Key>, u64, u32)> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let now_applied = [*applied[0].borrow(), *applied[1].borrow()];
        for c in detector.due(now_applied) {
            copy_winner(&mut conns, &c, &tag).await?;
            verify.push((c, now_ms(), 0));
        }
        if verify.is_empty() {
            continue;
        }
        // Verify only when both links have handled everything their sources hold.
        let offsets = [
            master_offset(&mut conns[0]).await?,
            master_offset(&mut conns[1]).await?,
        ];
        let done = [*settled[0].borrow(), *settled[1].borrow()];
        if done[0] < offsets[0] || done[1] < offsets[1] {
            continue;
        }
        let mut keep = Vec::new();
        for (c, copied_at, tries) in verify.drain(..) {
            let last = detector.last_writes(&c.key);
            if last.iter().flatten().any(|w| w.at_ms > copied_at) {
                continue; // written again since: the detector judges the new writes
            }
            let same = dump(&mut conns[0], &c.key).await? == dump(&mut conns[1], &c.key).await?;
            if !same && tries < 5 {
                copy_winner(&mut conns, &c, &tag).await?;
                keep.push((c, now_ms(), tries + 1));
            } else if !same {
                warn!(key = %String::from_utf8_lossy(&c.key.1), "conflict did not converge after 5 copies");
            }
        }
        verify = keep;
    }
}

fn sink_err(e: ConnError) -> SyncError {
    SyncError::Sink(e.into())
}

async fn master_offset(conn: &mut Conn) -> Result<u64, SyncError> {
    let info = conn
        .query(&[b"INFO", b"replication"])
        .await
        .map_err(sink_err)?;
    Ok(frame_text(&info)
        .and_then(|t| info_field(&t, "master_repl_offset"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// DUMP payload and whether a TTL is set, for comparison.
async fn dump(conn: &mut Conn, key: &Key) -> Result<(Option<Bytes>, bool), SyncError> {
    conn.query(&[b"SELECT", key.0.to_string().as_bytes()])
        .await
        .map_err(sink_err)?;
    let payload = match conn.query(&[b"DUMP", &key.1]).await.map_err(sink_err)? {
        Frame::BulkString(p) => Some(p),
        _ => None,
    };
    let ttl = matches!(conn.query(&[b"PTTL", &key.1]).await.map_err(sink_err)?, Frame::Integer(t) if t >= 0);
    Ok((payload, ttl))
}

/// Copy the winner's whole value (or its absence) to the loser in one tagged
/// transaction: the loser's link sees a `__tandem:` write in it and drops the echo.
async fn copy_winner(
    conns: &mut [Conn; 2],
    c: &Conflict<Key>,
    tag: &Bytes,
) -> Result<(), SyncError> {
    let (w, l) = (c.winner as usize, c.winner.other() as usize);
    let db = c.key.0.to_string();
    let key = &c.key.1;
    conns[w]
        .query(&[b"SELECT", db.as_bytes()])
        .await
        .map_err(sink_err)?;
    let payload = conns[w].query(&[b"DUMP", key]).await.map_err(sink_err)?;
    let pttl = match conns[w].query(&[b"PTTL", key]).await.map_err(sink_err)? {
        Frame::Integer(t) if t > 0 => t,
        _ => 0,
    };
    let loser = &mut conns[l];
    loser.queue(&[b"MULTI"]);
    loser.queue(&[b"SELECT", db.as_bytes()]);
    match &payload {
        Frame::BulkString(p) => {
            loser.queue(&[b"RESTORE", key, pttl.to_string().as_bytes(), p, b"REPLACE"])
        }
        _ => loser.queue(&[b"DEL", key]),
    }
    loser.queue(&[b"SELECT", b"0"]);
    loser.queue(&[
        b"HSET",
        tag,
        b"key",
        key,
        b"winner",
        c.winner.name().as_bytes(),
    ]);
    loser.queue(&[b"EXEC"]);
    loser.flush().await.map_err(sink_err)?;
    let mut exec = Frame::Null;
    for _ in 0..6 {
        exec = loser.read_frame().await.map_err(sink_err)?;
    }
    let failed = match &exec {
        Frame::Array(items) => items.iter().find(|f| matches!(f, Frame::Error(_))).cloned(),
        other => Some(other.clone()),
    };
    if let Some(f) = failed {
        warn!(key = %String::from_utf8_lossy(key), "conflict copy failed: {f:?}");
    } else {
        crate::metrics::conflict_resolved();
    }
    Ok(())
}
