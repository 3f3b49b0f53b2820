//! The conflict detector of two-way sync, shared by the Redis and (later) MongoDB
//! modules: it knows keys only as opaque values (`(db, key)` for Redis, `(namespace,
//! _id)` for MongoDB).
//!
//! # What is a conflict
//!
//! Two links run in one process: A→B reads A's stream and writes B, B→A the reverse.
//! Each link observes every *local* write of its source side (tandem's own writes, the
//! echoes, are dropped before they reach the detector). For a local write it knows:
//! - `own`: the source offset just after it;
//! - `seen_other`: how much of the *other* side's stream this side had applied when the
//!   write happened — the offset in the last checkpoint of the reverse link that appeared
//!   in this side's stream before the write (the echoes carry it).
//!
//! A side may have several streams (a Redis Cluster has one per master): each is an
//! offset *space* ([`Space`], opaque here). A write's `own` offset lives in its stream's
//! space, and `seen_other` maps each of the other side's spaces to how much of it the
//! writing stream held (a [`Seen`]). A standalone side, or MongoDB, has one space.
//!
//! Writes `a` (on A) and `b` (on B) to the same key are concurrent when each happened
//! before the other was applied on its side: `a.seen_other[b.space] < b.own &&
//! b.seen_other[a.space] < a.own`. Replaying them then leaves A with `b` last and B with `a` last: the sides
//! diverge (unless the two commands commute, like two INCRs — we do not guess). A write
//! is compared with the latest observed write of the other side: if a later write on
//! that side already followed the other's write, the pair converges by itself.
//!
//! # Resolution
//!
//! - `Converge`: the incoming write is applied, and once both writes have landed on
//!   both sides ([`Detector::due`]), the key is resolved: the winner — the later
//!   observation, ties to the preferred side — has its whole value copied over (the
//!   Redis module does `DUMP` → `RESTORE REPLACE`, tagged like any tandem write).
//! - `Ignore`: the incoming write is skipped (the target keeps its value).
//! - `Overwrite`: the incoming write is applied; nothing else.
//!
//! Entries older than the retention are forgotten: a conflict whose writes are further
//! apart than that (a link lagging by more) is not detected. docs/TWO-WAY.md says so.

mod spill;
mod store;

pub use store::SpillTo;

use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use store::Store;

// Every local write is hashed a few times (remember, settle, forget): foldhash is several
// times cheaper than SipHash on short keys and still seeded per process.
use foldhash::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Converge,
    Ignore,
    Overwrite,
}

/// One stream's offset space (one shard of one side). The caller numbers them.
pub type Space = u32;

/// How much of each of the other side's spaces a stream held: space → offset, absent
/// meaning 0. Shared (`Arc`) because every write of a stream between two echoes carries
/// the same one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen(Arc<Vec<(Space, u64)>>);

impl Seen {
    pub fn get(&self, space: Space) -> u64 {
        self.0
            .iter()
            .find(|(s, _)| *s == space)
            .map_or(0, |(_, o)| *o)
    }

    /// The same, with `space` held at least up to `offset`.
    pub fn with(&self, space: Space, offset: u64) -> Seen {
        if self.get(space) >= offset {
            return self.clone();
        }
        let mut v: Vec<(Space, u64)> = self
            .0
            .iter()
            .filter(|(s, _)| *s != space)
            .cloned()
            .collect();
        v.push((space, offset));
        Seen(Arc::new(v))
    }

    /// The pointwise maximum of both.
    pub fn max(&self, other: &Seen) -> Seen {
        other
            .0
            .iter()
            .fold(self.clone(), |acc, &(s, o)| acc.with(s, o))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Space, u64)> + '_ {
        self.0.iter().copied()
    }
}

/// One local write as its link observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The stream it was read from.
    pub space: Space,
    pub own: u64,
    pub seen_other: Seen,
    /// Wall-clock milliseconds when the link observed it.
    pub at_ms: u64,
    /// The command's name, for the conflict log.
    pub command: &'static str,
}

/// What the link should do with the write it is about to apply to the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    Skip,
}

/// A detected conflict.
#[derive(Clone, Debug)]
pub struct Conflict<K> {
    pub key: K,
    /// The latest write of each side, `[a, b]`.
    pub writes: [Write; 2],
    pub winner: Side,
}

struct State<K, S> {
    /// The writes that still count, per side (`store.rs`).
    store: Store<K, S>,
    /// Per side, per stream of that side (observer), how much of each of the other
    /// side's spaces that stream holds. Only registered observers count.
    held: [HashMap<Space, Seen>; 2],
    /// Converge: conflicts waiting until both writes landed both ways.
    pending: HashMap<K, Waiting>,
    detected: u64,
    /// The latest observation clock, for checks that have no write at hand.
    now_ms: u64,
    /// Writes observed since the logs were last trimmed for the retention.
    since_trim: u32,
}

/// A pending conflict, without its key (the map's) and without the writes' views of the
/// other side: a burst of contested keys can leave hundreds of thousands waiting, and a
/// view read back from the disk spill is an allocation of its own per write.
struct Waiting {
    writes: [Slim; 2],
    winner: Side,
}

struct Slim {
    space: Space,
    own: u64,
    at_ms: u64,
    command: &'static str,
}

impl Waiting {
    fn of<K>(c: &Conflict<K>) -> Waiting {
        let slim = |w: &Write| Slim {
            space: w.space,
            own: w.own,
            at_ms: w.at_ms,
            command: w.command,
        };
        Waiting {
            writes: [slim(&c.writes[0]), slim(&c.writes[1])],
            winner: c.winner,
        }
    }

    fn into_conflict<K>(self, key: K) -> Conflict<K> {
        static NO_VIEW: std::sync::LazyLock<Seen> = std::sync::LazyLock::new(Seen::default);
        let full = |w: &Slim| Write {
            space: w.space,
            own: w.own,
            seen_other: NO_VIEW.clone(),
            at_ms: w.at_ms,
            command: w.command,
        };
        Conflict {
            writes: [full(&self.writes[0]), full(&self.writes[1])],
            winner: self.winner,
            key,
        }
    }
}

/// Writes between two trims of the logs by age (a trim for what the other side holds
/// happens whenever that moves).
const TRIM_EVERY: u32 = 256;

/// A write of `side` no longer counts: every stream of the other side holds it, or
/// (given a clock) it is older than the retention.
fn forgotten(
    held: &[HashMap<Space, Seen>; 2],
    side: Side,
    w: &Write,
    now_ms: Option<u64>,
    retention_ms: u64,
) -> bool {
    let expired = now_ms.is_some_and(|now| now.saturating_sub(w.at_ms) > retention_ms);
    let observers = &held[side.other().idx()];
    expired || (!observers.is_empty() && observers.values().all(|h| h.get(w.space) >= w.own))
}

pub struct Detector<K, S = foldhash::fast::RandomState> {
    policy: Policy,
    prefer: Side,
    retention_ms: u64,
    state: Mutex<State<K, S>>,
}

impl<K: Clone + Eq + Hash> Detector<K> {
    pub fn new(policy: Policy, prefer: Side, retention: Duration) -> Self {
        Self::with_hasher(policy, prefer, retention, Default::default())
    }
}

impl<K: Clone + Eq + Hash, S: BuildHasher> Detector<K, S> {
    /// With the hasher of the key index (tests use one that collides on purpose).
    pub fn with_hasher(policy: Policy, prefer: Side, retention: Duration, hasher: S) -> Self {
        Self {
            policy,
            prefer,
            retention_ms: retention.as_millis() as u64,
            state: Mutex::new(State {
                store: Store::new(hasher),
                held: [HashMap::default(), HashMap::default()],
                pending: HashMap::default(),
                detected: 0,
                now_ms: 0,
                since_trim: 0,
            }),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Past `to.in_memory` writes of a side, move its oldest to disk, so that memory
    /// stays bounded however far the other side's link lags (docs/TWO-WAY.md).
    pub fn spill_to(self, to: SpillTo) -> Self {
        self.state.lock().unwrap().store.spill_to(to);
        self
    }

    /// Record a local write of `side` and decide whether its link applies it to the
    /// other side. Returns the conflict when this write made one.
    pub fn observe(&self, side: Side, key: K, w: Write) -> (Verdict, Option<Conflict<K>>) {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.now_ms = st.now_ms.max(w.at_ms);
        st.since_trim += 1;
        if st.since_trim >= TRIM_EVERY {
            st.since_trim = 0;
            let now = st.now_ms;
            self.trim(st, Some(now));
        }
        let (me, other) = (side.idx(), side.other().idx());
        // Nothing of the other side counts (`None`): no conflict now.
        let Some(theirs) = st.store.push(me, other, key, w) else {
            return (Verdict::Apply, None);
        };
        let held = &st.held;
        // The common case, no concurrent write of the other side, clones nothing.
        let found = st.store.pair(me, other, theirs).filter(|(_, w, o)| {
            w.seen_other.get(o.space) < o.own
                && o.seen_other.get(w.space) < w.own
                && !forgotten(held, side.other(), o, Some(w.at_ms), self.retention_ms)
        });
        let Some((key, w, o)) = found.map(|(k, w, o)| (k.clone(), w.clone(), o)) else {
            st.store.settle(me);
            return (Verdict::Apply, None);
        };
        st.store.settle(me);
        let winner = match w.at_ms.cmp(&o.at_ms) {
            std::cmp::Ordering::Greater => side,
            std::cmp::Ordering::Less => side.other(),
            std::cmp::Ordering::Equal => self.prefer,
        };
        let writes = match side {
            Side::A => [w, o],
            Side::B => [o, w],
        };
        let c = Conflict {
            key: key.clone(),
            writes,
            winner,
        };
        st.detected += 1;
        if self.policy == Policy::Converge {
            st.pending.insert(key, Waiting::of(&c));
        }
        let verdict = match self.policy {
            Policy::Ignore => Verdict::Skip,
            Policy::Converge | Policy::Overwrite => Verdict::Apply,
        };
        (verdict, Some(c))
    }

    /// Conflicts whose writes are both applied on the other side: `applied(space)` is
    /// how far that stream is applied on the other side. Their writes come without the
    /// views of the other side (`seen_other` empty): a due conflict is only copied and
    /// logged.
    pub fn due(&self, applied: impl Fn(Space) -> u64) -> Vec<Conflict<K>> {
        let mut st = self.state.lock().unwrap();
        let ready: Vec<K> = st
            .pending
            .iter()
            .filter(|(_, c)| c.writes.iter().all(|w| applied(w.space) >= w.own))
            .map(|(k, _)| k.clone())
            .collect();
        ready
            .into_iter()
            .filter_map(|k| st.pending.remove_entry(&k))
            .map(|(k, w)| w.into_conflict(k))
            .collect()
    }

    /// The latest observed write of each side for `key`, `[a, b]`.
    pub fn last_writes(&self, key: &K) -> [Option<Write>; 2] {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.store.catch_up_index();
        let live = |side: Side| {
            st.store
                .latest(side.idx(), key)
                .filter(|w| !forgotten(&st.held, side, w, Some(st.now_ms), self.retention_ms))
        };
        [live(Side::A), live(Side::B)]
    }

    pub fn detected(&self) -> u64 {
        self.state.lock().unwrap().detected
    }

    /// Writes held in memory (the rest of [`Detector::remembered`] is on disk).
    pub fn in_memory(&self) -> usize {
        self.state.lock().unwrap().store.in_memory()
    }

    pub fn pending(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// Stream `observer` of `side` exists: until it reports what it holds, nothing of
    /// the other side is forgotten before the retention. (Writes forgotten before a
    /// stream is added stay forgotten: add every stream before the first write.)
    pub fn add_observer(&self, side: Side, observer: Space) {
        let mut st = self.state.lock().unwrap();
        st.held[side.idx()].entry(observer).or_default();
    }

    /// Stream `observer` of `side` now holds the other side's `space` up to `offset`
    /// *in every key* (its link read a checkpoint saying so): the other side's writes
    /// up to it can no longer be concurrent with anything new in `observer`. Ignored
    /// for a stream not added ([`Detector::add_observer`]).
    pub fn note_seen(&self, side: Side, observer: Space, space: Space, offset: u64) {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        let Some(held) = st.held[side.idx()].get_mut(&observer) else {
            return;
        };
        *held = held.with(space, offset);
        self.trim(st, None);
    }

    /// Writes that still count, after dropping those that do not. The caller (the
    /// metrics task) calls it every second, which also bounds how long a quiet
    /// detector keeps forgotten writes.
    pub fn remembered(&self) -> usize {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        let now = st.now_ms;
        self.trim(st, Some(now));
        st.store.sweep();
        st.store.len()
    }

    /// Drop the oldest writes of each side while they no longer count.
    fn trim(&self, st: &mut State<K, S>, now_ms: Option<u64>) {
        let held = &st.held;
        let retention = self.retention_ms;
        let side = |s: usize| if s == 0 { Side::A } else { Side::B };
        st.store
            .trim(|s, w| forgotten(held, side(s), w, now_ms, retention));
    }
}

#[cfg(test)]
mod tests;
