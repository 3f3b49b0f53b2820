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
//! Writes `a` (on A) and `b` (on B) to the same key are concurrent when each happened
//! before the other was applied on its side: `a.seen_other < b.own && b.seen_other <
//! a.own`. Replaying them then leaves A with `b` last and B with `a` last: the sides
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

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

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

/// One local write as its link observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub own: u64,
    pub seen_other: u64,
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
    entries: HashMap<K, Entry>,
    /// Per side, (own offset, observation time, key) of each write, oldest first: a
    /// write is forgotten once the other side holds it (no later write there can be
    /// concurrent with it) or once it is older than the retention.
    order: [VecDeque<(u64, u64, K)>; 2],
    /// Per side, how much of the other side's stream it holds (`seen_other`).
    seen_other: [u64; 2],
    /// Converge: conflicts waiting until both writes landed both ways.
    pending: HashMap<K, Conflict<K>>,
    detected: u64,
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
                entries: HashMap::new(),
                order: [VecDeque::new(), VecDeque::new()],
                seen_other: [0, 0],
                pending: HashMap::new(),
                detected: 0,
            }),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Record a local write of `side` and decide whether its link applies it to the
    /// other side. Returns the conflict when this write made one.
    pub fn observe(&self, side: Side, key: K, w: Write) -> (Verdict, Option<Conflict<K>>) {
        let mut st = self.state.lock().unwrap();
        self.evict(&mut st, w.at_ms);
        st.order[side.idx()].push_back((w.own, w.at_ms, key.clone()));
        let entry = st
            .entries
            .entry(key.clone())
            .or_insert(Entry { last: [None, None] });
        let other = entry.last[side.other().idx()].clone();
        entry.last[side.idx()] = Some(w.clone());
        let Some(o) = other else {
            return (Verdict::Apply, None);
        };
        let concurrent = w.seen_other < o.own && o.seen_other < w.own;
        if !concurrent {
            return (Verdict::Apply, None);
        }
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

    /// Conflicts whose writes are both applied on the other side: `applied[0]` is how
    /// far A→B has applied A's stream on B, `applied[1]` B→A's on A.
    pub fn due(&self, applied: [u64; 2]) -> Vec<Conflict<K>> {
        let mut st = self.state.lock().unwrap();
        let ready: Vec<K> = st
            .pending
            .iter()
            .filter(|(_, c)| applied[0] >= c.writes[0].own && applied[1] >= c.writes[1].own)
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
        st.entries
            .get(key)
            .map(|e| e.last.clone())
            .unwrap_or([None, None])
    }

    pub fn detected(&self) -> u64 {
        self.state.lock().unwrap().detected
    }

    pub fn pending(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// `side` now holds the other side's stream up to `offset` (its link read the
    /// reverse link's checkpoint there): the other side's writes up to it can no longer
    /// be concurrent with anything new on `side`.
    pub fn note_seen(&self, side: Side, offset: u64) {
        let mut st = self.state.lock().unwrap();
        let seen = &mut st.seen_other[side.idx()];
        *seen = (*seen).max(offset);
    }

    /// Entries (keys with remembered writes) held now.
    pub fn remembered(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    fn evict(&self, st: &mut State<K>, now_ms: u64) {
        for side in [Side::A, Side::B] {
            let held = st.seen_other[side.other().idx()];
            while let Some((own, at, _)) = st.order[side.idx()].front() {
                let expired = now_ms.saturating_sub(*at) > self.retention_ms;
                if !expired && *own > held {
                    break;
                }
                let (own, _, key) = st.order[side.idx()].pop_front().unwrap();
                let pending = st.pending.contains_key(&key);
                if let Some(e) = st.entries.get_mut(&key) {
                    if e.last[side.idx()].as_ref().is_some_and(|w| w.own == own) && !pending {
                        e.last[side.idx()] = None;
                    }
                    if e.last.iter().all(Option::is_none) {
                        st.entries.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(own: u64, seen_other: u64, at_ms: u64) -> Write {
        Write {
            own,
            seen_other,
            at_ms,
            command: "SET",
        }
    }

    fn det(p: Policy) -> Detector<&'static str> {
        Detector::new(p, Side::A, Duration::from_secs(60))
    }

    #[test]
    fn sequential_writes_are_not_conflicts() {
        let d = det(Policy::Converge);
        // a at A-offset 10; B had applied A up to 10 when it wrote b: b follows a.
        assert_eq!(
            d.observe(Side::A, "k", w(10, 0, 1)).1.map(|c| c.winner),
            None
        );
        assert!(d.observe(Side::B, "k", w(50, 10, 2)).1.is_none());
        assert_eq!(d.detected(), 0);
    }

    #[test]
    fn crossing_writes_conflict_and_the_later_one_wins() {
        let d = det(Policy::Converge);
        assert!(d.observe(Side::A, "k", w(10, 0, 5)).1.is_none());
        // B wrote before A's write reached it, and A wrote before B's reached A.
        let (v, c) = d.observe(Side::B, "k", w(50, 3, 9));
        assert_eq!(v, Verdict::Apply);
        let c = c.expect("conflict");
        assert_eq!(c.winner, Side::B);
        assert_eq!(d.pending(), 1);
        assert!(d.due([9, 100]).is_empty(), "A's write not yet on B");
        assert!(d.due([10, 49]).is_empty(), "B's write not yet on A");
        let due = d.due([10, 50]);
        assert_eq!(due.len(), 1);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn ties_go_to_the_preferred_side_and_ignore_skips() {
        let d = Detector::new(Policy::Ignore, Side::B, Duration::from_secs(60));
        d.observe(Side::A, "k", w(10, 0, 7));
        let (v, c) = d.observe(Side::B, "k", w(50, 0, 7));
        assert_eq!(v, Verdict::Skip);
        assert_eq!(c.unwrap().winner, Side::B);
        assert_eq!(d.pending(), 0, "ignore does not resolve");
    }

    #[test]
    fn writes_the_other_side_holds_are_forgotten() {
        let d = det(Policy::Converge);
        d.observe(Side::A, "k", w(10, 0, 1));
        d.observe(Side::A, "j", w(20, 0, 1));
        // B's stream shows it holds A up to 15: A's write at 10 is settled.
        d.note_seen(Side::B, 15);
        d.observe(Side::B, "x", w(5, 15, 2));
        assert_eq!(d.remembered(), 2, "k forgotten, j and x kept");
        assert_eq!(d.last_writes(&"k"), [None, None]);
    }

    #[test]
    fn retention_forgets_old_writes() {
        let d = Detector::new(Policy::Converge, Side::A, Duration::from_millis(100));
        d.observe(Side::A, "k", w(10, 0, 1_000));
        d.observe(Side::A, "other", w(11, 0, 5_000));
        assert!(d.observe(Side::B, "k", w(50, 0, 5_001)).1.is_none());
    }
}
