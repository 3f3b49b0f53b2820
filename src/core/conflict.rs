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

use std::collections::VecDeque;
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

/// One side's writes that may still count, in the order they were observed.
struct SideLog<K> {
    writes: VecDeque<(K, Write)>,
    /// The sequence number of `writes[0]` (numbers grow by one per write of the side).
    base: u64,
    /// Writes numbered below this are in the index (always a prefix: the index holds the
    /// latest write per key only if it is filled in order).
    indexed: u64,
    /// The log is compacted when it reaches this length ([`Detector::compact`]) and
    /// its oldest write has not been dropped since it last did.
    compact_at: usize,
    /// Writes were dropped from the front since the log last reached `compact_at`.
    front_moved: bool,
}

impl<K> SideLog<K> {
    fn end(&self) -> u64 {
        self.base + self.writes.len() as u64
    }

    fn get(&self, seq: u64) -> Option<&Write> {
        let i = seq.checked_sub(self.base)?;
        self.writes.get(usize::try_from(i).ok()?).map(|(_, w)| w)
    }
}

/// No write of that side in this slot of an index entry.
const NONE: u64 = u64::MAX;

struct State<K> {
    /// Per side, its writes not yet forgotten (a prefix of forgotten ones is dropped as
    /// soon as the other side holds it; see [`forgotten`]).
    logs: [SideLog<K>; 2],
    /// Per key, the sequence number of each side's latest indexed write (or [`NONE`]).
    ///
    /// Filled lazily: while the other side has no write that counts, a write cannot be
    /// concurrent with anything yet and is only appended to its log. It is indexed when
    /// the other side writes: then every write is looked up. With one side idle (the
    /// common case), the detector costs an append per write and touches no hash table.
    index: HashMap<K, [u64; 2]>,
    /// Per side, per stream of that side (observer), how much of each of the other
    /// side's spaces that stream holds. Only registered observers count.
    held: [HashMap<Space, Seen>; 2],
    /// Converge: conflicts waiting until both writes landed both ways.
    pending: HashMap<K, Conflict<K>>,
    detected: u64,
    /// `index` is swept of entries pointing only at dropped writes when it reaches this
    /// size: one sequential pass instead of a random access per dropped write.
    sweep_at: usize,
    /// The latest observation clock, for checks that have no write at hand.
    now_ms: u64,
    /// Writes observed since the logs were last trimmed for the retention.
    since_trim: u32,
}

/// Smallest index size that triggers a sweep.
const SWEEP_MIN: usize = 4096;

/// Smallest log length that triggers a compaction (small in tests, so that the property
/// test goes through it).
const COMPACT_MIN: usize = if cfg!(test) { 8 } else { 1 << 16 };

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

pub struct Detector<K> {
    policy: Policy,
    prefer: Side,
    retention_ms: u64,
    state: Mutex<State<K>>,
}

impl<K: Clone + Eq + Hash> Detector<K> {
    pub fn new(policy: Policy, prefer: Side, retention: Duration) -> Self {
        let log = || SideLog {
            writes: VecDeque::new(),
            base: 0,
            indexed: 0,
            compact_at: COMPACT_MIN,
            front_moved: false,
        };
        Self {
            policy,
            prefer,
            retention_ms: retention.as_millis() as u64,
            state: Mutex::new(State {
                logs: [log(), log()],
                index: HashMap::default(),
                held: [HashMap::default(), HashMap::default()],
                pending: HashMap::default(),
                detected: 0,
                sweep_at: SWEEP_MIN,
                now_ms: 0,
                since_trim: 0,
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
        st.since_trim += 1;
        if st.since_trim >= TRIM_EVERY {
            st.since_trim = 0;
            let now = st.now_ms;
            self.trim(st, Some(now));
        }
        let (me, other) = (side.idx(), side.other().idx());
        let log = &mut st.logs[me];
        if log.writes.len() >= log.compact_at {
            if log.front_moved {
                // A log long only because the other side lags behind (its writes are
                // being dropped) would mostly keep its writes: compacting it costs a
                // hash probe per write for little. Wait until it doubles again.
                log.front_moved = false;
                log.compact_at = log.writes.len() * 2;
            } else {
                Self::compact(st, me);
            }
        }
        if st.logs[other].writes.is_empty() {
            // Nothing of the other side counts: no conflict now, and the write is
            // indexed only if the other side writes while it still counts.
            st.logs[me].writes.push_back((key, w));
            return (Verdict::Apply, None);
        }
        Self::index_all(st);
        if st.index.len() >= st.sweep_at {
            Self::sweep(st);
        }
        let seq = st.logs[me].end();
        let slot = st.index.entry(key.clone()).or_insert([NONE, NONE]);
        let prior = slot[other];
        slot[me] = seq;
        st.logs[me].writes.push_back((key.clone(), w));
        st.logs[me].indexed = seq + 1;
        let (logs, held) = (&st.logs, &st.held);
        let w = &logs[me].writes.back().expect("just pushed").1;
        // The common case, no concurrent write of the other side, clones nothing.
        let concurrent = logs[other].get(prior).is_some_and(|o| {
            w.seen_other.get(o.space) < o.own
                && o.seen_other.get(w.space) < w.own
                && !forgotten(held, side.other(), o, Some(w.at_ms), self.retention_ms)
        });
        if !concurrent {
            return (Verdict::Apply, None);
        }
        let o = logs[other].get(prior).expect("concurrent").clone();
        let w = w.clone();
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

    /// Index every logged write not yet indexed, side by side in log order (so each key
    /// ends pointing at its latest write per side).
    fn index_all(st: &mut State<K>) {
        let State { logs, index, .. } = st;
        for (s, log) in logs.iter_mut().enumerate() {
            let from = log.indexed.max(log.base);
            for seq in from..log.end() {
                let (key, _) = &log.writes[(seq - log.base) as usize];
                // One probe whether the key is there or not (a lookup then an insert
                // probed twice for every new key).
                index.entry(key.clone()).or_insert([NONE, NONE])[s] = seq;
            }
            log.indexed = log.end();
        }
    }

    /// Keep only the latest write per key of side `s`'s log. A log is trimmed from its
    /// oldest write, which can count for long: on a cluster side's streams that never
    /// see a floor checkpoint, until the retention. Without compaction the log would
    /// then hold every write of the window; with it, about twice the keys written in it
    /// (what the per-key map held before the log). Amortized: the next compaction waits
    /// until the log has doubled. Only a log whose front is stuck is compacted.
    fn compact(st: &mut State<K>, s: usize) {
        Self::index_all(st);
        let State { logs, index, .. } = st;
        let log = &mut logs[s];
        let (old_base, new_base) = (log.base, log.end());
        // Renumbered from the old end on: references to dropped writes fall below the
        // new base and read as forgotten (none should remain: only the latest is kept).
        let mut seq = new_base;
        for (i, (key, w)) in std::mem::take(&mut log.writes).into_iter().enumerate() {
            if let Some(slot) = index.get_mut(&key)
                && slot[s] == old_base + i as u64
            {
                slot[s] = seq;
                seq += 1;
                log.writes.push_back((key, w));
            }
        }
        log.base = new_base;
        log.indexed = seq;
        log.compact_at = (log.writes.len() * 2).max(COMPACT_MIN);
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
        let mut guard = self.state.lock().unwrap();
        let st = &mut *guard;
        Self::index_all(st);
        let Some(slot) = st.index.get(key) else {
            return [None, None];
        };
        let live = |side: Side| {
            st.logs[side.idx()]
                .get(slot[side.idx()])
                .filter(|w| !forgotten(&st.held, side, w, Some(st.now_ms), self.retention_ms))
                .cloned()
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
        Self::sweep(st);
        st.logs.iter().map(|l| l.writes.len()).sum()
    }

    /// Drop each log's oldest writes while they no longer count. A log is in
    /// observation order, which is offset order per stream: with one stream a side (or
    /// streams that progress together) that is every forgotten write; others wait
    /// behind an older one that still counts, and are checked when looked up.
    fn trim(&self, st: &mut State<K>, now_ms: Option<u64>) {
        let State { logs, held, .. } = st;
        for side in [Side::A, Side::B] {
            let log = &mut logs[side.idx()];
            while log
                .writes
                .front()
                .is_some_and(|(_, w)| forgotten(held, side, w, now_ms, self.retention_ms))
            {
                log.writes.pop_front();
                log.base += 1;
                log.front_moved = true;
            }
            log.indexed = log.indexed.max(log.base);
            if log.writes.len() * 4 < log.compact_at {
                log.compact_at = (log.compact_at / 2).max(COMPACT_MIN);
            }
        }
    }

    /// Drop index entries whose writes were all dropped from the logs.
    fn sweep(st: &mut State<K>) {
        let State { logs, index, .. } = st;
        let bases = [logs[0].base, logs[1].base];
        index.retain(|_, slot| (0..2).any(|s| slot[s] != NONE && slot[s] >= bases[s]));
        st.sweep_at = (st.index.len() * 2).max(SWEEP_MIN);
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
    fn writes_that_keep_counting_are_kept_once_per_key() {
        // B's stream never says it holds A's writes (a cluster side's master without a
        // floor): only the retention forgets them, so the log is compacted instead.
        let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];
        let d = det(Policy::Converge);
        d.add_observer(Side::B, SB);
        for i in 0..10_000u64 {
            d.observe(Side::A, keys[(i % 10) as usize], w(SA, i + 1, 0, 1));
            assert!(d.state.lock().unwrap().logs[0].writes.len() <= 20);
        }
        let kept = d.remembered();
        assert!(
            (10..=20).contains(&kept),
            "10 keys, compacted at 20: {kept}"
        );
        assert_eq!(d.last_writes(&"k3")[0].as_ref().map(|w| w.own), Some(9_994));
        // And a write of B still meets the latest of A's.
        let (_, c) = d.observe(Side::B, "k3", w(SB, 5, 0, 2));
        assert_eq!(c.expect("conflict").writes[0].own, 9_994);
    }

    #[test]
    fn seen_merges_pointwise() {
        let a = seen(&[(A0, 5), (A1, 9)]);
        let b = seen(&[(A0, 7), (SB, 3)]);
        let m = a.max(&b);
        assert_eq!((m.get(A0), m.get(A1), m.get(SB), m.get(99)), (7, 9, 3, 0));
    }

    /// The detector as first written, kept as the model: per key the latest write of
    /// each side, checked against the other side's when observed; nothing indexed
    /// lazily, nothing dropped.
    mod model {
        use super::super::*;
        use std::collections::HashMap as Map;

        pub struct Model {
            pub policy: Policy,
            pub prefer: Side,
            pub retention_ms: u64,
            pub last: Map<u8, [Option<Write>; 2]>,
            pub held: [HashMap<Space, Seen>; 2],
            pub pending: Map<u8, Conflict<u8>>,
            pub detected: u64,
            pub now_ms: u64,
        }

        impl Model {
            pub fn observe(
                &mut self,
                side: Side,
                key: u8,
                w: Write,
            ) -> (Verdict, Option<Conflict<u8>>) {
                self.now_ms = self.now_ms.max(w.at_ms);
                let e = self.last.entry(key).or_default();
                let concurrent = e[side.other().idx()].as_ref().is_some_and(|o| {
                    w.seen_other.get(o.space) < o.own
                        && o.seen_other.get(w.space) < w.own
                        && !forgotten(
                            &self.held,
                            side.other(),
                            o,
                            Some(w.at_ms),
                            self.retention_ms,
                        )
                });
                let o = e[side.other().idx()].clone();
                e[side.idx()] = Some(w.clone());
                if !concurrent {
                    return (Verdict::Apply, None);
                }
                let o = o.unwrap();
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
                    key,
                    writes,
                    winner,
                };
                self.detected += 1;
                if self.policy == Policy::Converge {
                    self.pending.insert(key, c.clone());
                }
                let v = if self.policy == Policy::Ignore {
                    Verdict::Skip
                } else {
                    Verdict::Apply
                };
                (v, Some(c))
            }

            pub fn last_writes(&self, key: u8) -> [Option<Write>; 2] {
                let Some(e) = self.last.get(&key) else {
                    return [None, None];
                };
                let live = |side: Side| {
                    e[side.idx()].clone().filter(|w| {
                        !forgotten(&self.held, side, w, Some(self.now_ms), self.retention_ms)
                    })
                };
                [live(Side::A), live(Side::B)]
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// side, key, which of the side's two streams, ms later, offset step, what
        /// the writing stream holds of the other side's two streams.
        Write(bool, u8, bool, u64, u64, [u64; 2]),
        /// side, observer stream, other side's stream, offset.
        Seen(bool, bool, bool, u64),
        /// Applied offsets of the four streams.
        Due([u64; 4]),
        Last(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<bool>(), 0u8..5, any::<bool>(), 0u64..3, 1u64..8, [0u64..60, 0u64..60])
                .prop_map(|(s, k, x, dt, step, seen)| Op::Write(s, k, x, dt, step, seen)),
            3 => (any::<bool>(), any::<bool>(), any::<bool>(), 0u64..60)
                .prop_map(|(s, o, x, off)| Op::Seen(s, o, x, off)),
            1 => [0u64..80, 0u64..80, 0u64..80, 0u64..80].prop_map(Op::Due),
            1 => (0u8..5).prop_map(Op::Last),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the interleaving of writes, checkpoints and resolutions, the
        /// lazily indexed, trimmed detector says exactly what the model says.
        #[test]
        fn agrees_with_the_model(
            ops in proptest::collection::vec(op(), 1..120),
            observers in [any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()],
            policy in prop_oneof![Just(Policy::Converge), Just(Policy::Ignore), Just(Policy::Overwrite)],
            retention in 2u64..40,
        ) {
            let sp = |side: bool, x: bool| -> Space { (side as u32) * 2 + x as u32 };
            let side_of = |b: bool| if b { Side::B } else { Side::A };
            let d: Detector<u8> = Detector::new(policy, Side::A, Duration::from_millis(retention));
            let mut m = model::Model {
                policy, prefer: Side::A, retention_ms: retention,
                last: Default::default(), held: Default::default(),
                pending: Default::default(), detected: 0, now_ms: 0,
            };
            for (i, on) in observers.iter().enumerate() {
                if *on {
                    let (side, x) = (i >= 2, i % 2 == 1);
                    d.add_observer(side_of(side), sp(side, x));
                    m.held[side_of(side).idx()].entry(sp(side, x)).or_default();
                }
            }
            let (mut now, mut own) = (0u64, [0u64; 4]);
            for op in ops {
                match op {
                    Op::Write(side, key, x, dt, step, seen) => {
                        now += dt;
                        let s = sp(side, x);
                        own[s as usize] += step;
                        let seen_other = Seen::default()
                            .with(sp(!side, false), seen[0])
                            .with(sp(!side, true), seen[1]);
                        let w = Write { space: s, own: own[s as usize], seen_other, at_ms: now, command: "SET" };
                        let got = d.observe(side_of(side), key, w.clone());
                        let want = m.observe(side_of(side), key, w);
                        prop_assert_eq!(got.0, want.0);
                        prop_assert_eq!(got.1.map(|c| (c.key, c.writes, c.winner)), want.1.map(|c| (c.key, c.writes, c.winner)));
                    }
                    Op::Seen(side, o, x, off) => {
                        let (obs, space) = (sp(side, o), sp(!side, x));
                        d.note_seen(side_of(side), obs, space, off);
                        if let Some(h) = m.held[side_of(side).idx()].get_mut(&obs) {
                            *h = h.with(space, off);
                        }
                    }
                    Op::Due(applied) => {
                        let f = |s: Space| applied[s as usize];
                        let mut got: Vec<_> = d.due(f).into_iter().map(|c| (c.key, c.winner.idx())).collect();
                        let ready: Vec<u8> = m.pending.iter()
                            .filter(|(_, c)| c.writes.iter().all(|w| f(w.space) >= w.own))
                            .map(|(k, _)| *k).collect();
                        let mut want: Vec<_> = ready.iter().map(|k| {
                            let c = m.pending.remove(k).unwrap();
                            (c.key, c.winner.idx())
                        }).collect();
                        got.sort();
                        want.sort();
                        prop_assert_eq!(got, want);
                    }
                    Op::Last(key) => {
                        prop_assert_eq!(d.last_writes(&key), m.last_writes(key));
                    }
                }
                prop_assert_eq!(d.detected(), m.detected);
                prop_assert_eq!(d.pending(), m.pending.len());
            }
            for key in 0..5 {
                prop_assert_eq!(d.last_writes(&key), m.last_writes(key));
            }
        }
    }
}
