//! Where the detector keeps the writes that still count, and how it finds a key's latest
//! write per side.
//!
//! Each side's writes are a log in observation order, dropped from the front once they
//! no longer count. A write is found by key through an index from the key's *hash* to
//! the latest write of each side with that hash; each logged write links to the
//! previous one of its side with the same hash, so a (rare) collision costs a step along
//! that chain, never a wrong answer. Index entries are 24 bytes and hold no key (56
//! with it): with both sides writing the index is probed once per write, and the
//! smaller table halves its memory (tandem's CPU did not move measurably with it,
//! docs/BENCHMARKS.md).
//!
//! The index is filled lazily: while the other side has no write that counts, a write
//! cannot be concurrent with anything yet and is only appended; it is indexed when the
//! other side writes. With one side idle the store touches no hash table at all.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::path::PathBuf;

use super::Write;
use super::spill::{Names, Segment, second_hash};

/// No write: the end of a chain, or an empty side of an index entry.
const NONE: u64 = u64::MAX;

/// Smallest index size that triggers a sweep.
const SWEEP_MIN: usize = 4096;

/// Smallest log length that triggers a compaction (small in tests, so that the property
/// test goes through it).
const COMPACT_MIN: usize = if cfg!(test) { 8 } else { 1 << 16 };

struct Logged<K> {
    key: K,
    hash: u64,
    /// The previous write of this side with the same hash (set when indexed).
    prev: u64,
    w: Write,
}

/// One side's writes that may still count, in the order they were observed.
struct SideLog<K> {
    writes: VecDeque<Logged<K>>,
    /// The sequence number of `writes[0]` (numbers grow by one per write of the side).
    base: u64,
    /// Writes numbered below this are in the index (always a prefix: each write links
    /// to the one before it with its hash, so they are indexed in order).
    indexed: u64,
    /// The log is compacted when it reaches this length and its oldest write has not
    /// been dropped since it last did ([`Store::compact`]).
    compact_at: usize,
    /// Writes were dropped from the front since the log last reached `compact_at`.
    front_moved: bool,
}

impl<K> SideLog<K> {
    fn new() -> Self {
        SideLog {
            writes: VecDeque::new(),
            base: 0,
            indexed: 0,
            compact_at: COMPACT_MIN,
            front_moved: false,
        }
    }

    fn end(&self) -> u64 {
        self.base + self.writes.len() as u64
    }

    /// `seq` if still in the log: dropped ones are a prefix, so a chain ends at the
    /// first dropped link.
    fn get(&self, seq: u64) -> Option<&Logged<K>> {
        let i = seq.checked_sub(self.base)?;
        self.writes.get(usize::try_from(i).ok()?)
    }
}

/// The index hashes nothing: its keys are hashes already.
#[derive(Default)]
pub struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where and when a side's oldest writes go to disk ([`super::spill`]).
pub struct SpillTo {
    pub dir: PathBuf,
    /// Writes a side holds in memory; past it, the older half is moved to a segment.
    pub in_memory: usize,
}

pub struct Store<K, S> {
    logs: [SideLog<K>; 2],
    /// Per side, its writes older than `logs` on disk, oldest first.
    segments: [Vec<Segment>; 2],
    spill: Option<SpillTo>,
    names: Names,
    /// Key hash → the sequence number of the latest indexed write of each side with it.
    index: HashMap<u64, [u64; 2], BuildHasherDefault<Passthrough>>,
    hasher: S,
    /// `index` is swept of entries pointing only at dropped writes when it reaches this
    /// size: one sequential pass instead of a random access per dropped write.
    sweep_at: usize,
}

impl<K: Clone + Eq + Hash, S: BuildHasher> Store<K, S> {
    pub fn new(hasher: S) -> Self {
        Store {
            logs: [SideLog::new(), SideLog::new()],
            segments: [Vec::new(), Vec::new()],
            spill: None,
            names: Names::default(),
            index: HashMap::default(),
            hasher,
            sweep_at: SWEEP_MIN,
        }
    }

    pub fn spill_to(&mut self, to: SpillTo) {
        self.spill = Some(to);
    }

    /// Writes held, both sides, in memory and on disk.
    pub fn len(&self) -> usize {
        self.logs.iter().map(|l| l.writes.len()).sum::<usize>()
            + self
                .segments
                .iter()
                .flatten()
                .map(|s| s.writes)
                .sum::<usize>()
    }

    /// Writes held in memory, both sides.
    pub fn in_memory(&self) -> usize {
        self.logs.iter().map(|l| l.writes.len()).sum()
    }

    /// Move side `s`'s older half to a new segment when it holds too many in memory.
    fn spill_if_full(&mut self, s: usize) {
        let Some(to) = &self.spill else { return };
        let log = &mut self.logs[s];
        if log.writes.len() <= to.in_memory {
            return;
        }
        let n = log.writes.len() / 2;
        let moved: Vec<_> = log
            .writes
            .iter()
            .take(n)
            .map(|l| ((l.hash, second_hash(&l.key)), l.w.clone()))
            .collect();
        match Segment::create(&to.dir, moved, &mut self.names) {
            Ok(seg) => {
                tracing::debug!(
                    side = s,
                    writes = n,
                    segments = self.segments[s].len() + 1,
                    "conflict detector: writes moved to disk"
                );
                self.segments[s].push(seg);
                // Index entries and chain links into them now end there (`get`).
                log.writes.drain(..n);
                log.base += n as u64;
                log.indexed = log.indexed.max(log.base);
            }
            Err(e) => {
                tracing::warn!(dir = %to.dir.display(), "conflict detector: cannot move writes to disk, keeping them in memory: {e}");
                self.spill = None;
            }
        }
    }

    /// The latest write of `key` on side `s`'s disk segments.
    fn on_disk(&self, s: usize, hash: u64, key: &K) -> Option<Write> {
        if self.segments[s].is_empty() {
            return None;
        }
        let id = (hash, second_hash(key));
        for seg in self.segments[s].iter().rev() {
            match seg.get(id, &self.names) {
                Ok(Some(w)) => return Some(w),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("conflict detector: reading a segment failed: {e}");
                    return None;
                }
            }
        }
        None
    }

    /// Append a write of side `me` (`other`: the other side). Returns where the other
    /// side's writes of the same hash start, for [`Store::pair`], when the other side
    /// has writes that still count.
    pub fn push(&mut self, me: usize, other: usize, key: K, w: Write) -> Option<u64> {
        let hash = self.hasher.hash_one(&key);
        let log = &mut self.logs[me];
        if log.writes.len() >= log.compact_at {
            if log.front_moved {
                // Long only because the other side lags behind (writes are being
                // dropped): compacting would keep most and cost a probe each. Wait until
                // it doubles again.
                log.front_moved = false;
                log.compact_at = log.writes.len() * 2;
            } else {
                self.compact(me);
            }
        }
        if self.logs[other].writes.is_empty() && self.segments[other].is_empty() {
            let prev = NONE;
            self.logs[me]
                .writes
                .push_back(Logged { key, hash, prev, w });
            self.spill_if_full(me);
            return None;
        }
        self.catch_up_index();
        if self.index.len() >= self.sweep_at {
            self.sweep();
        }
        let seq = self.logs[me].end();
        let slot = self.index.entry(hash).or_insert([NONE, NONE]);
        let (prev, theirs) = (slot[me], slot[other]);
        slot[me] = seq;
        let log = &mut self.logs[me];
        log.writes.push_back(Logged { key, hash, prev, w });
        log.indexed = seq + 1;
        // The pair is read before anything moves to disk.
        Some(theirs)
    }

    /// After [`Store::push`] and [`Store::pair`]: side `me` may have grown too long.
    pub fn settle(&mut self, me: usize) {
        self.spill_if_full(me);
    }

    /// The write just pushed on side `me` (its key and itself) and the other side's
    /// latest still-logged write of that key, found from `theirs` ([`Store::push`]).
    pub fn pair(&self, me: usize, other: usize, theirs: u64) -> Option<(&K, &Write, Write)> {
        let mine = self.logs[me].writes.back()?;
        let o = match Self::find(&self.logs[other], theirs, &mine.key) {
            Some(o) => o.clone(),
            None => self.on_disk(other, mine.hash, &mine.key)?,
        };
        Some((&mine.key, &mine.w, o))
    }

    /// The latest still-logged write of side `s` for `key`; call [`Store::catch_up_index`] first.
    pub fn latest(&self, s: usize, key: &K) -> Option<Write> {
        let hash = self.hasher.hash_one(key);
        let in_memory = self
            .index
            .get(&hash)
            .and_then(|slot| Self::find(&self.logs[s], slot[s], key));
        match in_memory {
            Some(w) => Some(w.clone()),
            None => self.on_disk(s, hash, key),
        }
    }

    /// Walk `log`'s chain from `seq` to the first write of `key`.
    fn find<'a>(log: &'a SideLog<K>, mut seq: u64, key: &K) -> Option<&'a Write> {
        while let Some(l) = log.get(seq) {
            if l.key == *key {
                return Some(&l.w);
            }
            seq = l.prev;
        }
        None
    }

    /// Index every logged write not yet indexed, side by side in log order.
    pub fn catch_up_index(&mut self) {
        let Store { logs, index, .. } = self;
        for (s, log) in logs.iter_mut().enumerate() {
            let from = log.indexed.max(log.base);
            for seq in from..log.end() {
                let l = &mut log.writes[(seq - log.base) as usize];
                let slot = index.entry(l.hash).or_insert([NONE, NONE]);
                l.prev = slot[s];
                slot[s] = seq;
            }
            log.indexed = log.end();
        }
    }

    /// Drop each log's oldest writes while `gone(side, write)`. A log is in observation
    /// order, which is offset order per stream: with one stream a side (or streams that
    /// progress together) that is every write that stopped counting; others wait behind
    /// an older one that still counts, and are checked when looked up.
    ///
    /// Disk segments go first, whole, once no write in them counts (a write with their
    /// newest offset per space and newest time would not); the logs only behind them:
    /// what is dropped is always a side's oldest writes, so a key's latest write is
    /// never dropped before an older one.
    pub fn trim(&mut self, mut gone: impl FnMut(usize, &Write) -> bool) {
        for (s, segs) in self.segments.iter_mut().enumerate() {
            while let Some(seg) = segs.first() {
                let all = seg.newest.iter().all(|&(space, own)| {
                    let w = Write {
                        space,
                        own,
                        seen_other: Default::default(),
                        at_ms: seg.newest_ms,
                        command: "",
                    };
                    gone(s, &w)
                });
                if !all {
                    break;
                }
                segs.remove(0);
            }
        }
        for (s, log) in self.logs.iter_mut().enumerate() {
            if !self.segments[s].is_empty() {
                continue;
            }
            while log.writes.front().is_some_and(|l| gone(s, &l.w)) {
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
    pub fn sweep(&mut self) {
        let bases = [self.logs[0].base, self.logs[1].base];
        self.index
            .retain(|_, slot| (0..2).any(|s| slot[s] != NONE && slot[s] >= bases[s]));
        self.sweep_at = (self.index.len() * 2).max(SWEEP_MIN);
    }

    /// Keep only the latest write per key of side `s`'s log. A log is trimmed from its
    /// oldest write, which can count for long: on a cluster side's streams that never
    /// see a floor checkpoint, until the retention. Without compaction the log would
    /// then hold every write of the window; with it, about twice the keys written in it.
    /// Amortized: the next compaction waits until the log has doubled.
    fn compact(&mut self, s: usize) {
        self.catch_up_index();
        let log = &self.logs[s];
        let mut keep = vec![false; log.writes.len()];
        for slot in self.index.values() {
            // The first write of each key along a chain is its latest.
            let mut seen: Vec<&K> = Vec::new();
            let mut seq = slot[s];
            while let Some(l) = log.get(seq) {
                if !seen.contains(&&l.key) {
                    seen.push(&l.key);
                    keep[(seq - log.base) as usize] = true;
                }
                seq = l.prev;
            }
        }
        for slot in self.index.values_mut() {
            slot[s] = NONE;
        }
        let log = &mut self.logs[s];
        let old = std::mem::take(&mut log.writes);
        // Renumbered from the old end on: nothing refers to the dropped writes.
        log.base += old.len() as u64;
        log.indexed = log.base;
        log.writes = old
            .into_iter()
            .zip(keep)
            .filter_map(|(l, k)| k.then_some(l))
            .collect();
        log.compact_at = (log.writes.len() * 2).max(COMPACT_MIN);
        self.catch_up_index();
        self.sweep();
    }
}
