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

use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

struct Entry {
    last: [Option<Write>; 2],
}

struct State<K> {
    /// The latest observed write of each side per key. A write stops counting once
    /// every stream of the other side holds it (no later write there can be concurrent
    /// with it) or once it is older than the retention ([`forgotten`]); such writes are
    /// dropped in bulk by a sweep when the map has doubled, one sequential pass instead
    /// of a random hash-map access per write.
    entries: HashMap<K, Entry>,
    /// Per side, per stream of that side (observer), how much of each of the other
    /// side's spaces that stream holds. Only registered observers count.
    held: [HashMap<Space, Seen>; 2],
    /// Converge: conflicts waiting until both writes landed both ways.
    pending: HashMap<K, Conflict<K>>,
    detected: u64,
    /// `entries` is swept when it reaches this size.
    sweep_at: usize,
    /// The latest observation clock, for sweeps that have no write at hand.
    now_ms: u64,
}

/// Smallest map size that triggers a sweep.
const SWEEP_MIN: usize = 4096;

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

pub struct Detector<K> {
    policy: Policy,
    prefer: Side,
    retention_ms: u64,
    state: Mutex<State<K>>,
}

impl<K: Clone + Eq + Hash> Detector<K> {
    pub fn new(policy: Policy, prefer: Side, retention: Duration) -> Self {
        Self {
            policy,
            prefer,
            retention_ms: retention.as_millis() as u64,
            state: Mutex::new(State {
                entries: HashMap::default(),
                held: [HashMap::default(), HashMap::default()],
                pending: HashMap::default(),
                detected: 0,
                sweep_at: SWEEP_MIN,
                now_ms: 0,
            }),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Record a local write of `side` and decide whether its link applies it to the
    /// other side. Returns the conflict when this write made one.
    pub fn observe(&self, side: Side, key: K, w: Write) -> (Verdict, Option<Conflict<K>>) {
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        st.now_ms = st.now_ms.max(w.at_ms);
        if st.entries.len() >= st.sweep_at {
            self.sweep(st, Some(w.at_ms));
        }
        let entry = st
            .entries
            .entry(key.clone())
            .or_insert(Entry { last: [None, None] });
        // The common case, no concurrent write of the other side, clones nothing.
        let concurrent = entry.last[side.other().idx()].as_ref().is_some_and(|o| {
            w.seen_other.get(o.space) < o.own
                && o.seen_other.get(w.space) < w.own
                && !forgotten(&st.held, side.other(), o, Some(w.at_ms), self.retention_ms)
        });
        if !concurrent {
            entry.last[side.idx()] = Some(w);
            return (Verdict::Apply, None);
        }
        let o = entry.last[side.other().idx()].clone().expect("concurrent");
        entry.last[side.idx()] = Some(w.clone());
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
            st.pending.insert(key, c.clone());
        }
        let verdict = match self.policy {
            Policy::Ignore => Verdict::Skip,
            Policy::Converge | Policy::Overwrite => Verdict::Apply,
        };
        (verdict, Some(c))
    }

    /// Conflicts whose writes are both applied on the other side: `applied(space)` is
    /// how far that stream is applied on the other side.
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
            .filter_map(|k| st.pending.remove(&k))
            .collect()
    }

    /// The latest observed write of each side for `key`, `[a, b]`.
    pub fn last_writes(&self, key: &K) -> [Option<Write>; 2] {
        let st = self.state.lock().unwrap();
        let Some(e) = st.entries.get(key) else {
            return [None, None];
        };
        let live = |side: Side| {
            e.last[side.idx()]
                .clone()
                .filter(|w| !forgotten(&st.held, side, w, Some(st.now_ms), self.retention_ms))
        };
        [live(Side::A), live(Side::B)]
    }

    pub fn detected(&self) -> u64 {
        self.state.lock().unwrap().detected
    }

    pub fn pending(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// Stream `observer` of `side` exists: until it reports what it holds, nothing of
    /// the other side is forgotten before the retention.
    pub fn add_observer(&self, side: Side, observer: Space) {
        let mut st = self.state.lock().unwrap();
        st.held[side.idx()].entry(observer).or_default();
    }

    /// Stream `observer` of `side` now holds the other side's `space` up to `offset`
    /// *in every key* (its link read a checkpoint saying so): the other side's writes
    /// up to it can no longer be concurrent with anything new in `observer`.
    pub fn note_seen(&self, side: Side, observer: Space, space: Space, offset: u64) {
        let mut st = self.state.lock().unwrap();
        let held = st.held[side.idx()].entry(observer).or_default();
        *held = held.with(space, offset);
    }

    /// Keys with writes that still count, after dropping those that do not. The caller
    /// (the metrics task) calls it every second, which also bounds how long a quiet
    /// detector keeps settled writes.
    pub fn remembered(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        let now = st.now_ms;
        self.sweep(&mut st, Some(now));
        st.entries.len()
    }

    /// Drop the writes that no longer count (kept while their key's conflict waits to
    /// be resolved), and keys left with none.
    fn sweep(&self, st: &mut State<K>, now_ms: Option<u64>) {
        let State {
            entries,
            held,
            pending,
            ..
        } = st;
        entries.retain(|key, e| {
            if !pending.is_empty() && pending.contains_key(key) {
                return true;
            }
            for side in [Side::A, Side::B] {
                let slot = &mut e.last[side.idx()];
                if slot
                    .as_ref()
                    .is_some_and(|w| forgotten(held, side, w, now_ms, self.retention_ms))
                {
                    *slot = None;
                }
            }
            e.last.iter().any(Option::is_some)
        });
        st.sweep_at = (st.entries.len() * 2).max(SWEEP_MIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA: Space = 1;
    const SB: Space = 2;

    fn seen(pairs: &[(Space, u64)]) -> Seen {
        pairs
            .iter()
            .fold(Seen::default(), |acc, &(s, o)| acc.with(s, o))
    }

    /// A write on the single stream of its side (A: `SA`, B: `SB`).
    fn w(space: Space, own: u64, seen_other: u64, at_ms: u64) -> Write {
        let other = if space == SA { SB } else { SA };
        Write {
            space,
            own,
            seen_other: seen(&[(other, seen_other)]),
            at_ms,
            command: "SET",
        }
    }

    fn applied(pairs: &'static [(Space, u64)]) -> impl Fn(Space) -> u64 {
        move |s| pairs.iter().find(|p| p.0 == s).map_or(0, |p| p.1)
    }

    fn det(p: Policy) -> Detector<&'static str> {
        Detector::new(p, Side::A, Duration::from_secs(60))
    }

    #[test]
    fn sequential_writes_are_not_conflicts() {
        let d = det(Policy::Converge);
        // a at A-offset 10; B had applied A up to 10 when it wrote b: b follows a.
        assert_eq!(
            d.observe(Side::A, "k", w(SA, 10, 0, 1)).1.map(|c| c.winner),
            None
        );
        assert!(d.observe(Side::B, "k", w(SB, 50, 10, 2)).1.is_none());
        assert_eq!(d.detected(), 0);
    }

    #[test]
    fn crossing_writes_conflict_and_the_later_one_wins() {
        let d = det(Policy::Converge);
        assert!(d.observe(Side::A, "k", w(SA, 10, 0, 5)).1.is_none());
        // B wrote before A's write reached it, and A wrote before B's reached A.
        let (v, c) = d.observe(Side::B, "k", w(SB, 50, 3, 9));
        assert_eq!(v, Verdict::Apply);
        let c = c.expect("conflict");
        assert_eq!(c.winner, Side::B);
        assert_eq!(d.pending(), 1);
        assert!(
            d.due(applied(&[(SA, 9), (SB, 100)])).is_empty(),
            "A's write not yet on B"
        );
        assert!(
            d.due(applied(&[(SA, 10), (SB, 49)])).is_empty(),
            "B's write not yet on A"
        );
        let due = d.due(applied(&[(SA, 10), (SB, 50)]));
        assert_eq!(due.len(), 1);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn ties_go_to_the_preferred_side_and_ignore_skips() {
        let d = Detector::new(Policy::Ignore, Side::B, Duration::from_secs(60));
        d.observe(Side::A, "k", w(SA, 10, 0, 7));
        let (v, c) = d.observe(Side::B, "k", w(SB, 50, 0, 7));
        assert_eq!(v, Verdict::Skip);
        assert_eq!(c.unwrap().winner, Side::B);
        assert_eq!(d.pending(), 0, "ignore does not resolve");
    }

    #[test]
    fn writes_the_other_side_holds_are_forgotten() {
        let d = det(Policy::Converge);
        d.add_observer(Side::B, SB);
        d.observe(Side::A, "k", w(SA, 10, 0, 1));
        d.observe(Side::A, "j", w(SA, 20, 0, 1));
        // B's stream shows it holds A up to 15: A's write at 10 is settled.
        d.note_seen(Side::B, SB, SA, 15);
        d.observe(Side::B, "x", w(SB, 5, 15, 2));
        assert_eq!(d.remembered(), 2, "k forgotten, j and x kept");
        assert_eq!(d.last_writes(&"k"), [None, None]);
    }

    #[test]
    fn settled_writes_are_forgotten_without_another_write() {
        let d = det(Policy::Converge);
        d.add_observer(Side::B, SB);
        d.observe(Side::A, "k", w(SA, 10, 0, 1));
        d.observe(Side::A, "j", w(SA, 20, 0, 1));
        d.note_seen(Side::B, SB, SA, 15);
        assert_eq!(d.remembered(), 1, "k forgotten as soon as B holds it");
        d.note_seen(Side::B, SB, SA, 20);
        assert_eq!(d.remembered(), 0);
    }

    #[test]
    fn retention_forgets_old_writes() {
        let d = Detector::new(Policy::Converge, Side::A, Duration::from_millis(100));
        d.observe(Side::A, "k", w(SA, 10, 0, 1_000));
        d.observe(Side::A, "other", w(SA, 11, 0, 5_000));
        assert!(d.observe(Side::B, "k", w(SB, 50, 0, 5_001)).1.is_none());
    }

    // A is a cluster of two shards (spaces 10 and 11), B one stream (SB).
    const A0: Space = 10;
    const A1: Space = 11;

    fn cw(space: Space, own: u64, seen_other: &[(Space, u64)], at_ms: u64) -> Write {
        Write {
            space,
            own,
            seen_other: seen(seen_other),
            at_ms,
            command: "SET",
        }
    }

    #[test]
    fn offsets_compare_only_within_their_space() {
        let d = det(Policy::Converge);
        // a on shard A1 at its offset 10. B holds A0 up to 1000 but A1 only up to 5.
        d.observe(Side::A, "k", cw(A1, 10, &[(SB, 0)], 1));
        let (_, c) = d.observe(Side::B, "k", cw(SB, 50, &[(A0, 1000), (A1, 5)], 2));
        assert!(c.is_some(), "A0's progress says nothing of A1's write");
        // Another key: B had A1's write when it wrote; not concurrent.
        d.observe(Side::A, "j", cw(A1, 12, &[(SB, 0)], 3));
        let (_, c) = d.observe(Side::B, "j", cw(SB, 60, &[(A1, 12)], 4));
        assert!(c.is_none());
    }

    #[test]
    fn a_conflict_is_due_once_each_write_is_applied_in_its_own_space() {
        let d = det(Policy::Converge);
        d.observe(Side::A, "k", cw(A1, 10, &[], 1));
        d.observe(Side::B, "k", cw(SB, 50, &[], 2))
            .1
            .expect("conflict");
        assert!(d.due(applied(&[(A0, 100), (SB, 50)])).is_empty());
        assert_eq!(d.due(applied(&[(A0, 0), (A1, 10), (SB, 50)])).len(), 1);
    }

    #[test]
    fn forgetting_needs_every_stream_of_the_other_side() {
        let d = det(Policy::Converge);
        d.add_observer(Side::A, A0);
        d.add_observer(Side::A, A1);
        d.observe(Side::B, "k", cw(SB, 10, &[], 1));
        d.note_seen(Side::A, A0, SB, 20);
        d.observe(Side::B, "j", cw(SB, 30, &[], 2));
        assert_eq!(d.remembered(), 2, "A1 may not hold B's write at 10 yet");
        d.note_seen(Side::A, A1, SB, 20);
        d.observe(Side::B, "x", cw(SB, 40, &[], 3));
        assert_eq!(d.remembered(), 2, "k forgotten once both shards hold it");
        assert_eq!(d.last_writes(&"k"), [None, None]);
    }

    #[test]
    fn seen_merges_pointwise() {
        let a = seen(&[(A0, 5), (A1, 9)]);
        let b = seen(&[(A0, 7), (SB, 3)]);
        let m = a.max(&b);
        assert_eq!((m.get(A0), m.get(A1), m.get(SB), m.get(99)), (7, 9, 3, 0));
    }
}
