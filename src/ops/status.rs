//! The status document served at `/status`: per link, what an operator asks first (is
//! it streaming, how far behind, what failed last), as JSON.
//!
//! Engines update it where they already emit metrics. The per-read and per-batch paths
//! only touch atomics; the mutex is taken on rare events (state changes, a new replid,
//! an error) and when the document is rendered.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::core::lag::LagClock;
use crate::redis::url::Endpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connecting,
    FullSync,
    Incremental,
    Stopped,
    Error,
}

impl LinkState {
    /// The name `/status` shows.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::FullSync => "full_sync",
            LinkState::Incremental => "incremental",
            LinkState::Stopped => "stopped",
            LinkState::Error => "error",
        }
    }

    const ALL: [LinkState; 5] = [
        LinkState::Connecting,
        LinkState::FullSync,
        LinkState::Incremental,
        LinkState::Stopped,
        LinkState::Error,
    ];
}

/// The whole process: what `/status` shows. One per process, passed down in
/// `SyncConfig` (never a global), so tests and embedders can hold their own.
#[derive(Debug)]
pub struct Status {
    mode: &'static str,
    id: String,
    started: Instant,
    links: Mutex<Vec<Arc<LinkStatus>>>,
    /// `POST /pause`: shared by every link of the process.
    pause: Arc<Pause>,
}

/// Whether links apply what they receive (`POST /pause`, `POST /resume`). Paused, a
/// Redis link stops taking units from its spool (the link task keeps draining the
/// source into it, and the ACK stays at what the target holds).
#[derive(Debug, Default)]
pub struct Pause {
    paused: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
}

impl Pause {
    pub fn set(&self, paused: bool) {
        let was = self.paused.swap(paused, Relaxed);
        if was != paused {
            tracing::info!(
                paused,
                "applying {}",
                if paused { "paused" } else { "resumed" }
            );
        }
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    /// Return once not paused.
    pub async fn resumed(&self) {
        loop {
            // Created before the check: a resume in between still wakes it.
            let woken = self.resumed.notified();
            if !self.is_paused() {
                return;
            }
            woken.await;
        }
    }
}

impl Default for Status {
    fn default() -> Self {
        Status::new("sync", "default")
    }
}

impl Status {
    pub fn new(mode: &'static str, id: &str) -> Self {
        Status {
            mode,
            id: id.to_string(),
            started: Instant::now(),
            links: Mutex::new(Vec::new()),
            pause: Arc::default(),
        }
    }

    /// The entry of link `id`, created on first use. A restarted link (a cluster
    /// shard after a failover) keeps its entry and counters; its source is updated.
    pub fn link(&self, id: &str, source: &Endpoint, target: &Endpoint) -> Arc<LinkStatus> {
        self.link_addrs(id, source.addr(), target.addr())
    }

    /// [`Status::link`] for any kind of endpoint: `source` and `target` are shown as
    /// given, so they must be host lists without credentials.
    pub fn link_addrs(&self, id: &str, source: String, target: String) -> Arc<LinkStatus> {
        let mut links = lock(&self.links);
        if let Some(l) = links.iter().find(|l| l.id == id) {
            lock(&l.rare).source = source;
            return l.clone();
        }
        let l = Arc::new(LinkStatus {
            id: id.to_string(),
            target,
            rare: Mutex::new(Rare {
                source,
                ..Rare::default()
            }),
            pause: self.pause.clone(),
            ..LinkStatus::default()
        });
        links.push(l.clone());
        l
    }

    /// Every link's full-sync counters, in link order.
    pub fn progress(&self) -> Vec<Progress> {
        let mut p: Vec<Progress> = lock(&self.links).iter().map(|l| l.progress()).collect();
        p.sort_by(|a, b| a.link.cmp(&b.link));
        p
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut links: Vec<LinkSnapshot> = lock(&self.links).iter().map(|l| l.snapshot()).collect();
        links.sort_by(|a, b| a.id.cmp(&b.id));
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            mode: self.mode,
            id: self.id.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            paused: self.pause.is_paused(),
            links,
        }
    }

    /// `POST /pause` and `POST /resume`.
    pub fn set_paused(&self, paused: bool) {
        self.pause.set(paused);
    }

    pub fn to_json(&self) -> String {
        // Plain structs of strings and numbers: serializing cannot fail.
        serde_json::to_string_pretty(&self.snapshot()).unwrap_or_default()
    }
}

/// One replica link (one source master, one direction) into its target.
#[derive(Debug, Default)]
pub struct LinkStatus {
    id: String,
    /// `host:port` only: never the user or password of the URL.
    target: String,
    state: AtomicU8,
    received: AtomicU64,
    applied: AtomicU64,
    full_syncs: AtomicU64,
    full_sync_keys: AtomicU64,
    /// RDB bytes the full sync has handed to its parser, of `full_sync_total_bytes` (0: unknown, a
    /// diskless transfer); `full_sync_expected_keys` is the source's key count when the
    /// link asked for the stream (0: unknown).
    full_sync_bytes: AtomicU64,
    full_sync_total_bytes: AtomicU64,
    full_sync_expected_keys: AtomicU64,
    /// Shared with the sink, which counts what the target confirmed.
    commands: Arc<AtomicU64>,
    reconnects: AtomicU64,
    lag: Arc<LagClock>,
    rare: Mutex<Rare>,
    /// What only MongoDB links report.
    mongo: Mutex<Option<MongoDetail>>,
    pause: Arc<Pause>,
}

/// A MongoDB link's position (the offsets above are its operation times, not bytes),
/// copy progress by namespace, operations applied by kind, and conflicts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MongoDetail {
    pub position: String,
    pub copy_documents: std::collections::BTreeMap<String, u64>,
    pub applied: std::collections::BTreeMap<String, u64>,
    pub conflicts: u64,
}

#[derive(Debug, Default)]
struct Rare {
    source: String,
    replid: String,
    last_error: Option<String>,
}

impl LinkStatus {
    /// The process's pause switch (`POST /pause`).
    pub fn pause(&self) -> &Pause {
        &self.pause
    }

    /// One log line per change (not per call: engines re-assert their state). Not for
    /// the change to `error`: the error's own line says it, and a user's mistake is one
    /// line.
    pub fn set_state(&self, s: LinkState) {
        let was = self.state.swap(s as u8, Relaxed);
        if was != s as u8 && s != LinkState::Error {
            let from = LinkState::ALL.get(was as usize).map_or("?", |f| f.name());
            tracing::info!(link = %self.id, from, to = s.name(), "link state");
        }
    }

    pub fn state(&self) -> LinkState {
        LinkState::ALL
            .get(self.state.load(Relaxed) as usize)
            .copied()
            .unwrap_or(LinkState::Error)
    }

    /// The engine stopped: cleanly, or with the error that stopped it.
    pub fn ended(&self, error: Option<String>) {
        match error {
            None => self.set_state(LinkState::Stopped),
            Some(e) => {
                lock(&self.rare).last_error = Some(e);
                self.set_state(LinkState::Error);
            }
        }
    }

    /// The link lost its source and reconnects.
    pub fn reconnecting(&self, error: String) {
        self.reconnects.fetch_add(1, Relaxed);
        lock(&self.rare).last_error = Some(error);
        self.set_state(LinkState::Connecting);
    }

    pub fn set_replid(&self, replid: &str) {
        let mut r = lock(&self.rare);
        if r.replid != replid {
            r.replid = replid.to_string();
        }
    }

    pub fn received(&self, offset: u64) {
        self.received.store(offset, Relaxed);
    }

    pub fn applied(&self, offset: u64) {
        self.applied.store(offset, Relaxed);
    }

    pub fn full_sync_started(&self) {
        self.full_syncs.fetch_add(1, Relaxed);
        self.full_sync_keys.store(0, Relaxed);
        self.full_sync_bytes.store(0, Relaxed);
        self.set_state(LinkState::FullSync);
    }

    pub fn full_sync_keys(&self, n: u64) {
        self.full_sync_keys.fetch_add(n, Relaxed);
    }

    /// What the coming full sync holds, as far as the link knows before it starts: the
    /// transfer's size (`None` for a diskless one) and the source's key count.
    pub fn full_sync_expected(&self, bytes: Option<u64>, keys: Option<u64>) {
        self.full_sync_total_bytes
            .store(bytes.unwrap_or(0), Relaxed);
        self.full_sync_expected_keys
            .store(keys.unwrap_or(0), Relaxed);
    }

    pub fn full_sync_bytes(&self, n: u64) {
        self.full_sync_bytes.fetch_add(n, Relaxed);
    }

    /// What a progress display shows, read without the lock.
    pub fn progress(&self) -> Progress {
        let known = |a: &AtomicU64| Some(a.load(Relaxed)).filter(|n| *n > 0);
        Progress {
            link: self.id.clone(),
            state: self.state(),
            full_syncs: self.full_syncs.load(Relaxed),
            keys: self.full_sync_keys.load(Relaxed),
            bytes: self.full_sync_bytes.load(Relaxed),
            total_bytes: known(&self.full_sync_total_bytes),
            expected_keys: known(&self.full_sync_expected_keys),
        }
    }

    /// The counter the sink adds confirmed commands to.
    pub fn commands_counter(&self) -> Arc<AtomicU64> {
        self.commands.clone()
    }

    /// Updates the MongoDB part of the entry (batches and copy chunks call it, not
    /// every operation).
    pub fn mongo(&self, f: impl FnOnce(&mut MongoDetail)) {
        let mut m = lock(&self.mongo);
        f(m.get_or_insert_with(MongoDetail::default));
    }

    /// The clock the link marks received bytes on (lag in seconds).
    pub fn lag_clock(&self) -> Arc<LagClock> {
        self.lag.clone()
    }

    fn snapshot(&self) -> LinkSnapshot {
        let state = self.state();
        let (received, applied) = (self.received.load(Relaxed), self.applied.load(Relaxed));
        // Outside incremental the two offsets may belong to different histories (a full
        // sync in progress): a difference would mean nothing.
        let streaming = state == LinkState::Incremental;
        let mongo = lock(&self.mongo).clone();
        let rare = lock(&self.rare);
        LinkSnapshot {
            id: self.id.clone(),
            source: rare.source.clone(),
            target: self.target.clone(),
            state,
            last_error: rare.last_error.clone(),
            replid: rare.replid.clone(),
            received_offset: received,
            applied_offset: applied,
            // A MongoDB link's offsets are operation times: their difference is no size.
            lag_bytes: (streaming && mongo.is_none()).then(|| received.saturating_sub(applied)),
            lag_seconds: streaming.then(|| self.lag.lag().as_secs_f64()),
            full_syncs: self.full_syncs.load(Relaxed),
            full_sync_keys: self.full_sync_keys.load(Relaxed),
            full_sync_bytes: self.full_sync_bytes.load(Relaxed),
            full_sync_total_bytes: Some(self.full_sync_total_bytes.load(Relaxed))
                .filter(|n| *n > 0),
            full_sync_expected_keys: Some(self.full_sync_expected_keys.load(Relaxed))
                .filter(|n| *n > 0),
            commands_applied: self.commands.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            mongo,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub mode: &'static str,
    pub id: String,
    pub uptime_seconds: u64,
    /// Shown only while paused (`POST /pause`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    pub links: Vec<LinkSnapshot>,
}

#[derive(Debug, Serialize)]
pub struct LinkSnapshot {
    pub id: String,
    pub source: String,
    pub target: String,
    pub state: LinkState,
    pub last_error: Option<String>,
    pub replid: String,
    pub received_offset: u64,
    pub applied_offset: u64,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub full_syncs: u64,
    pub full_sync_keys: u64,
    pub full_sync_bytes: u64,
    pub full_sync_total_bytes: Option<u64>,
    pub full_sync_expected_keys: Option<u64>,
    pub commands_applied: u64,
    pub reconnects: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongo: Option<MongoDetail>,
}

/// One link's full-sync counters, for a progress display (`ops::progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub link: String,
    pub state: LinkState,
    /// Full syncs begun so far: a change tells a display that one ended between looks.
    pub full_syncs: u64,
    pub keys: u64,
    pub bytes: u64,
    pub total_bytes: Option<u64>,
    pub expected_keys: Option<u64>,
}

/// A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_shape_and_no_credentials() {
        let st = Status::new("twoway", "prod");
        let src = Endpoint::parse("redis://alice:pw-secret@10.0.0.1:6379").unwrap();
        let dst = Endpoint::parse("redis://:other-secret@10.0.0.2:6380/3").unwrap();
        let l = st.link("prod:a2b", &src, &dst);
        l.set_replid("8de1f0c2");
        l.full_sync_started();
        l.full_sync_expected(None, Some(50));
        l.full_sync_keys(40);
        l.full_sync_keys(2);
        l.full_sync_bytes(900);
        l.set_state(LinkState::Incremental);
        l.received(1500);
        l.applied(1200);
        l.commands_counter().fetch_add(7, Relaxed);
        l.reconnecting("redis://alice@10.0.0.1:6379: connection closed".into());
        l.set_state(LinkState::Incremental);
        // Registering again (a restart) keeps the entry and its counters.
        let moved = Endpoint::parse("redis://alice:pw-secret@10.0.0.9:6379").unwrap();
        assert!(Arc::ptr_eq(&l, &st.link("prod:a2b", &moved, &dst)));
        st.link("prod:b2a", &dst, &src).ended(Some("boom".into()));

        let text = st.to_json();
        assert!(!text.contains("secret"), "{text}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(v["uptime_seconds"].is_u64());
        v["uptime_seconds"] = json!(0);
        // Endpoints are host:port; an error message names them as the logs do.
        for l in v["links"].as_array().unwrap() {
            for f in ["source", "target"] {
                assert!(!l[f].as_str().unwrap().contains('@'), "{l}");
            }
        }
        assert_eq!(
            v,
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "mode": "twoway",
                "id": "prod",
                "uptime_seconds": 0,
                "links": [
                    {
                        "id": "prod:a2b",
                        "source": "10.0.0.9:6379",
                        "target": "10.0.0.2:6380",
                        "state": "incremental",
                        "last_error": "redis://alice@10.0.0.1:6379: connection closed",
                        "replid": "8de1f0c2",
                        "received_offset": 1500,
                        "applied_offset": 1200,
                        "lag_bytes": 300,
                        "lag_seconds": 0.0,
                        "full_syncs": 1,
                        "full_sync_keys": 42,
                        "full_sync_bytes": 900,
                        "full_sync_total_bytes": null,
                        "full_sync_expected_keys": 50,
                        "commands_applied": 7,
                        "reconnects": 1
                    },
                    {
                        "id": "prod:b2a",
                        "source": "10.0.0.2:6380",
                        "target": "10.0.0.1:6379",
                        "state": "error",
                        "last_error": "boom",
                        "replid": "",
                        "received_offset": 0,
                        "applied_offset": 0,
                        "lag_bytes": null,
                        "lag_seconds": null,
                        "full_syncs": 0,
                        "full_sync_keys": 0,
                        "full_sync_bytes": 0,
                        "full_sync_total_bytes": null,
                        "full_sync_expected_keys": null,
                        "commands_applied": 0,
                        "reconnects": 0
                    }
                ]
            })
        );
    }

    #[test]
    fn states_round_trip_through_the_atomic() {
        let l = LinkStatus::default();
        assert_eq!(l.state(), LinkState::Connecting);
        for s in LinkState::ALL {
            l.set_state(s);
            assert_eq!(l.state(), s);
        }
        l.ended(None);
        assert_eq!(l.state(), LinkState::Stopped);
    }
}
