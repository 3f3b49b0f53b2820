//! The shards of one sharded side read as one stream, with every cross-shard
//! transaction joined into one unit (docs/MONGO-SHARDS.md).
//!
//! A transaction that spans shards reaches each shard's oplog as a prepared part: a
//! `prepare` entry at a time `p` no later than the commit time C the coordinator picks,
//! then a `commitTransaction {commitTimestamp: C}` entry at C or later. Between the two
//! the shard holds the transaction's document locks. The merger relies on exactly that:
//!
//! - a part is held until every other shard is *settled*: its own part of the same
//!   transaction (same session, number and C) is queued, or the shard has read past C
//!   with no prepare of it open (it is no participant: a lone part is legal, the other
//!   shards having only read);
//! - the parts are joined at the position of the part that comes first (its shard's
//!   head), so positions out never go back;
//! - the units of another shard that the join jumps over write none of the
//!   transaction's documents (the locks), so every document keeps its order.
//!
//! One scalar position no longer says where to resume: a joined part was applied ahead
//! of units of its shard still to come. [`Checkpoint`] says it per shard, with the parts
//! applied ahead, and where each shard's reader must start again to see the prepares
//! still open.

use std::collections::{HashMap, VecDeque};

use super::entry::TxnKey;
use crate::core::OpTime;

/// What a shard's reader hands the merger, in that shard's oplog order.
#[derive(Debug)]
pub enum Feed<U> {
    /// A unit that is not part of a cross-shard transaction, at its entry's time.
    Unit { unit: U, at: OpTime },
    /// A transaction prepared here (`prepare` entry): its commit is still to come.
    Prepared { key: TxnKey, at: OpTime },
    /// A prepared transaction's part committed here, at `at`, with the transaction's
    /// `commitTimestamp`.
    Committed {
        unit: U,
        key: TxnKey,
        commit: OpTime,
        at: OpTime,
    },
    /// A prepared transaction aborted here.
    Aborted { key: TxnKey, at: OpTime },
    /// Nothing more up to `at` (an idle shard's no-op, a reader's majority point).
    Through(OpTime),
    /// The shard's input is over (the end of a recorded file).
    End,
}

/// A position of the merged stream: the time of a unit, ties broken by shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MergedAt {
    pub ts: OpTime,
    pub shard: usize,
}

/// A unit out of the merger.
#[derive(Debug)]
pub struct Merged<U> {
    pub at: MergedAt,
    /// The unit, or the parts of a cross-shard transaction joined in shard order.
    pub unit: U,
    /// Where each part came from: one entry for a plain unit.
    pub parts: Vec<(usize, OpTime)>,
}

#[derive(Debug)]
pub enum Step<U> {
    Out(Merged<U>),
    /// Nothing can come out before this shard's reader says more.
    Need(usize),
    /// Every shard ended and everything came out.
    Done,
}

/// Where a merged stream stands, enough to resume it exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub shards: Vec<ShardMark>,
    /// Joined parts that came out before their shard's `applied` reached them: a
    /// resumed reader drops them.
    pub ahead: Vec<(usize, OpTime)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardMark {
    /// Every unit of the shard at or before this time came out.
    pub applied: OpTime,
    /// The earliest prepare whose part has not come out: the reader starts again here
    /// (or just after `applied`, whichever is earlier) to see it open again.
    pub prepared_since: Option<OpTime>,
}

impl ShardMark {
    /// Where the shard's reader starts again (inclusive).
    pub fn read_from(&self) -> OpTime {
        let after = OpTime(self.applied.0 + 1);
        self.prepared_since.map_or(after, |p| p.min(after))
    }
}

/// A feed that breaks the rules a real oplog keeps.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("entry at {at} after one at {read}: an oplog is in time order")]
    OutOfOrder {
        shard: usize,
        at: OpTime,
        read: OpTime,
    },
    #[error(
        "a prepared transaction's part committed at {at} without being prepared \
         in what was read (start the reader at the checkpoint's read_from)"
    )]
    NotPrepared { shard: usize, at: OpTime },
    #[error(
        "the input ended with a part of the transaction committed at {commit} \
         still prepared: its commit on this shard is missing"
    )]
    EndedPrepared { shard: usize, commit: OpTime },
}

enum Queued<U> {
    Plain {
        unit: U,
        at: OpTime,
    },
    Part {
        unit: U,
        at: OpTime,
        key: TxnKey,
        commit: OpTime,
        prepared: OpTime,
    },
}

impl<U> Queued<U> {
    fn at(&self) -> OpTime {
        match self {
            Queued::Plain { at, .. } | Queued::Part { at, .. } => *at,
        }
    }

    fn unit(self) -> U {
        match self {
            Queued::Plain { unit, .. } | Queued::Part { unit, .. } => unit,
        }
    }
}

struct Shard<U> {
    queue: VecDeque<Queued<U>>,
    /// The time of the last entry read: nothing at or before it is still to come.
    read: OpTime,
    ended: bool,
    /// Prepared here, not yet committed or aborted: the prepare's time.
    open: HashMap<TxnKey, OpTime>,
    applied: OpTime,
    /// Resuming: what came out before the checkpoint.
    skip_through: OpTime,
}

/// Merges N shard feeds; `join` puts a transaction's parts together (first part
/// first, then the others in shard order).
pub struct Merger<U, J: Fn(U, Vec<U>) -> U> {
    shards: Vec<Shard<U>>,
    ahead: Vec<(usize, OpTime)>,
    join: J,
}

impl<U, J: Fn(U, Vec<U>) -> U> Merger<U, J> {
    pub fn new(shards: usize, join: J) -> Self {
        Self::resume(
            &Checkpoint {
                shards: vec![ShardMark::default(); shards],
                ahead: Vec::new(),
            },
            join,
        )
    }

    /// Continues after `ckpt`: each shard's reader starts at its mark's `read_from`.
    pub fn resume(ckpt: &Checkpoint, join: J) -> Self {
        Merger {
            shards: ckpt
                .shards
                .iter()
                .map(|m| Shard {
                    queue: VecDeque::new(),
                    read: OpTime(0),
                    ended: false,
                    open: HashMap::new(),
                    applied: m.applied,
                    skip_through: m.applied,
                })
                .collect(),
            ahead: ckpt.ahead.clone(),
            join,
        }
    }

    pub fn push(&mut self, shard: usize, feed: Feed<U>) -> Result<(), MergeError> {
        let at = match &feed {
            Feed::Unit { at, .. }
            | Feed::Prepared { at, .. }
            | Feed::Committed { at, .. }
            | Feed::Aborted { at, .. }
            | Feed::Through(at) => Some(*at),
            Feed::End => None,
        };
        let s = &mut self.shards[shard];
        if let Some(at) = at {
            if at <= s.read && s.read.0 != 0 && !matches!(feed, Feed::Through(_)) {
                return Err(MergeError::OutOfOrder {
                    shard,
                    at,
                    read: s.read,
                });
            }
            s.read = s.read.max(at);
        }
        match feed {
            Feed::Unit { unit, at } => {
                if at > s.skip_through {
                    s.queue.push_back(Queued::Plain { unit, at });
                }
            }
            Feed::Prepared { key, at } => {
                s.open.insert(key, at);
            }
            Feed::Committed {
                unit,
                key,
                commit,
                at,
            } => {
                let prepared = s.open.remove(&key);
                // Out before the checkpoint: its prepare may lie before `read_from`.
                if at <= s.skip_through || self.ahead.contains(&(shard, at)) {
                    return Ok(());
                }
                let Some(prepared) = prepared else {
                    return Err(MergeError::NotPrepared { shard, at });
                };
                {
                    s.queue.push_back(Queued::Part {
                        unit,
                        at,
                        key,
                        commit,
                        prepared,
                    });
                }
            }
            Feed::Aborted { key, .. } => {
                s.open.remove(&key);
            }
            Feed::Through(_) => {}
            Feed::End => s.ended = true,
        }
        Ok(())
    }

    /// The next unit out, or what it waits for.
    pub fn step(&mut self) -> Result<Step<U>, MergeError> {
        let head = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.queue.front().map(|q| (q.at(), i)))
            .min();
        let Some((at, i)) = head else {
            // At the end, a transaction still prepared everywhere never committed in
            // what was read: nothing of it applies.
            return Ok(self.idle_shard().map_or(Step::Done, Step::Need));
        };
        // Nothing earlier can still come from a shard with an empty queue.
        for (j, s) in self.shards.iter().enumerate() {
            if j != i && s.queue.is_empty() && !s.ended && s.read < at {
                return Ok(Step::Need(j));
            }
        }
        let (key, commit) = match self.shards[i].queue.front() {
            Some(Queued::Part { key, commit, .. }) => (key.clone(), *commit),
            _ => {
                let q = self.shards[i].queue.pop_front().expect("a head");
                self.came_out(i, at);
                return Ok(Step::Out(Merged {
                    at: MergedAt { ts: at, shard: i },
                    unit: q.unit(),
                    parts: vec![(i, at)],
                }));
            }
        };
        let mut found = Vec::new();
        for (j, s) in self.shards.iter().enumerate() {
            if j == i {
                continue;
            }
            let pos = s.queue.iter().position(|q| {
                matches!(q, Queued::Part { key: k, commit: c, .. } if *k == key && *c == commit)
            });
            match pos {
                Some(p) => found.push((j, p)),
                None if s.open.contains_key(&key) => {
                    if s.ended {
                        return Err(MergeError::EndedPrepared { shard: j, commit });
                    }
                    return Ok(Step::Need(j));
                }
                // Not a participant: every shard has read up to the head, at or after
                // C, and a participant prepares at or before C.
                None => {}
            }
        }
        let first = self.shards[i].queue.pop_front().expect("a head");
        self.came_out(i, at);
        let mut parts = vec![(i, at)];
        let mut rest = Vec::new();
        for (j, p) in found {
            let q = self.shards[j].queue.remove(p).expect("found");
            let part_at = q.at();
            parts.push((j, part_at));
            if p == 0 && part_at > self.shards[j].applied {
                // At its shard's head: nothing of that shard before it is left.
                self.came_out(j, part_at);
            } else {
                self.ahead.push((j, part_at));
            }
            rest.push(q.unit());
        }
        Ok(Step::Out(Merged {
            at: MergedAt { ts: at, shard: i },
            unit: (self.join)(first.unit(), rest),
            parts,
        }))
    }

    /// Where the merged stream stands after what came out.
    pub fn checkpoint(&self) -> Checkpoint {
        // A shard with nothing queued has let out everything it read.
        let applied: Vec<OpTime> = self
            .shards
            .iter()
            .map(|s| match s.queue.is_empty() {
                true => s.applied.max(s.read),
                false => s.applied,
            })
            .collect();
        Checkpoint {
            shards: self
                .shards
                .iter()
                .zip(&applied)
                .map(|(s, &applied)| {
                    let queued = s.queue.iter().filter_map(|q| match q {
                        Queued::Part { prepared, .. } => Some(*prepared),
                        Queued::Plain { .. } => None,
                    });
                    ShardMark {
                        applied,
                        prepared_since: s.open.values().copied().chain(queued).min(),
                    }
                })
                .collect(),
            ahead: self
                .ahead
                .iter()
                .filter(|&&(j, t)| t > applied[j])
                .copied()
                .collect(),
        }
    }

    fn came_out(&mut self, shard: usize, at: OpTime) {
        self.shards[shard].applied = at;
        self.ahead.retain(|&(j, t)| j != shard || t > at);
    }

    /// A shard that has not ended and whose input decides what comes next.
    fn idle_shard(&self) -> Option<usize> {
        self.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.ended)
            .min_by_key(|(_, s)| s.read)
            .map(|(j, _)| j)
    }
}

#[cfg(test)]
mod tests;
