//! The merger against simulated shard oplogs that keep MongoDB's two-phase commit
//! rules: parts prepared at or before the commit time, committed at or after it, the
//! documents of a transaction locked on their shard from its start to its commit.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

/// A write: (shard, document, write number in the order it became visible).
type W = (usize, u32, u64);

#[derive(Clone, Debug)]
enum Ev {
    Unit(Vec<W>, u64),
    Prepared(u64, u64),
    Committed(Vec<W>, u64, u64, u64),
    Aborted(u64, u64),
}

impl Ev {
    fn at(&self) -> u64 {
        match self {
            Ev::Unit(_, t) | Ev::Prepared(_, t) | Ev::Committed(_, _, _, t) | Ev::Aborted(_, t) => {
                *t
            }
        }
    }

    fn feed(&self) -> Feed<Vec<W>> {
        let key = |k: &u64| (k.to_le_bytes().to_vec(), 1);
        match self.clone() {
            Ev::Unit(w, t) => Feed::Unit {
                unit: w,
                at: OpTime(t),
            },
            Ev::Prepared(k, t) => Feed::Prepared {
                key: key(&k),
                at: OpTime(t),
            },
            Ev::Committed(w, k, c, t) => Feed::Committed {
                unit: w,
                key: key(&k),
                commit: OpTime(c),
                at: OpTime(t),
            },
            Ev::Aborted(k, t) => Feed::Aborted {
                key: key(&k),
                at: OpTime(t),
            },
        }
    }
}

struct Txn {
    key: u64,
    /// Per participant: its shard and its writes.
    parts: Vec<(usize, Vec<W>)>,
    prepared: Vec<Option<u64>>,
    committed: Vec<bool>,
}

#[derive(Default)]
struct Sim {
    n: usize,
    t: u64,
    last: Vec<u64>,
    logs: Vec<Vec<Ev>>,
    locked: Vec<BTreeSet<u32>>,
    open: Vec<Txn>,
    writes: u64,
    keys: u64,
    /// What must come out: plain writes, and each committed transaction's writes.
    plain: BTreeSet<W>,
    committed: Vec<BTreeSet<W>>,
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim {
            n,
            t: 1,
            last: vec![0; n],
            logs: vec![Vec::new(); n],
            locked: vec![BTreeSet::new(); n],
            ..Sim::default()
        }
    }

    /// The time of a new entry on `shard`: the cluster clock, later than the shard's
    /// last entry. Several shards may share one time.
    fn tick(&mut self, shard: usize) -> u64 {
        let ts = self.t.max(self.last[shard] + 1);
        self.last[shard] = ts;
        self.t = ts;
        ts
    }

    fn write(&mut self, shard: usize, doc: u32) -> W {
        self.writes += 1;
        (shard, doc, self.writes)
    }

    fn act(&mut self, kind: u8, a: u8, b: u8) {
        let n = self.n;
        match kind % 6 {
            0 | 1 => {
                let (s, d) = (a as usize % n, b as u32 % 6);
                if !self.locked[s].contains(&d) {
                    let w = self.write(s, d);
                    let t = self.tick(s);
                    self.plain.insert(w);
                    self.logs[s].push(Ev::Unit(vec![w], t));
                }
            }
            2 => {
                let mut parts = Vec::new();
                for s in 0..n {
                    if b & (1 << s) == 0 {
                        continue;
                    }
                    let d = (a as u32 + s as u32) % 6;
                    if self.locked[s].insert(d) {
                        let mut ws = vec![self.write(s, d)];
                        if a.is_multiple_of(3) && self.locked[s].insert((d + 1) % 6) {
                            ws.push(self.write(s, (d + 1) % 6));
                        }
                        parts.push((s, ws));
                    }
                }
                if !parts.is_empty() {
                    self.keys += 1;
                    let k = parts.len();
                    self.open.push(Txn {
                        key: self.keys,
                        parts,
                        prepared: vec![None; k],
                        committed: vec![false; k],
                    });
                }
            }
            3 => self.prepare(a as usize),
            4 => self.commit(a as usize),
            _ => {
                if b.is_multiple_of(4) {
                    self.abort(a as usize);
                } else {
                    self.t += 1;
                }
            }
        }
    }

    fn prepare(&mut self, x: usize) {
        if self.open.is_empty() {
            return;
        }
        let x = x % self.open.len();
        let Some(p) = self.open[x].prepared.iter().position(Option::is_none) else {
            return;
        };
        let s = self.open[x].parts[p].0;
        let t = self.tick(s);
        self.open[x].prepared[p] = Some(t);
        let key = self.open[x].key;
        self.logs[s].push(Ev::Prepared(key, t));
    }

    fn commit(&mut self, x: usize) {
        if self.open.is_empty() {
            return;
        }
        let x = x % self.open.len();
        if self.open[x].prepared.iter().any(Option::is_none) {
            return;
        }
        let c = self.open[x]
            .prepared
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap();
        let p = self.open[x].committed.iter().position(|c| !c).unwrap();
        let (s, ws) = self.open[x].parts[p].clone();
        let t = self.tick(s);
        assert!(t >= c);
        let key = self.open[x].key;
        self.logs[s].push(Ev::Committed(ws.clone(), key, c, t));
        for w in &ws {
            self.locked[s].remove(&w.1);
        }
        self.open[x].committed[p] = true;
        if self.open[x].committed.iter().all(|c| *c) {
            let txn = self.open.remove(x);
            self.committed
                .push(txn.parts.into_iter().flat_map(|(_, w)| w).collect());
        }
    }

    fn abort(&mut self, x: usize) {
        if self.open.is_empty() {
            return;
        }
        let x = x % self.open.len();
        if self.open[x].committed.iter().any(|c| *c) {
            return;
        }
        let txn = self.open.remove(x);
        for (p, (s, ws)) in txn.parts.iter().enumerate() {
            if txn.prepared[p].is_some() {
                let t = self.tick(*s);
                self.logs[*s].push(Ev::Aborted(txn.key, t));
            }
            for w in ws {
                self.locked[*s].remove(&w.1);
            }
        }
    }

    /// The recording stops: a transaction that began committing commits everywhere;
    /// of the others, some stay open (never committed in what was read), some abort.
    fn end(&mut self) {
        let mut x = 0;
        while x < self.open.len() {
            if self.open[x].committed.iter().any(|c| *c) {
                while x < self.open.len() && self.open[x].committed.iter().any(|c| *c) {
                    self.commit(x);
                }
            } else if self.open[x].key.is_multiple_of(2) {
                self.abort(x);
            } else {
                x += 1;
            }
        }
    }
}

fn join(mut first: Vec<W>, rest: Vec<Vec<W>>) -> Vec<W> {
    for r in rest {
        first.extend(r);
    }
    first
}

type Out = Vec<(MergedAt, Vec<W>)>;

/// Runs a merger over the logs, each shard read from `from` (inclusive); `eager`
/// pushes entries no one asked for yet, as a reader that reads ahead does. Stops
/// after `stop` units out.
fn run(
    logs: &[Vec<Ev>],
    ckpt: Option<&Checkpoint>,
    eager: &[u8],
    stop: usize,
) -> (Out, Checkpoint) {
    let mut m = match ckpt {
        Some(c) => Merger::resume(c, join),
        None => Merger::new(logs.len(), join),
    };
    let from: Vec<u64> = match ckpt {
        Some(c) => c.shards.iter().map(|s| s.read_from().0).collect(),
        None => vec![0; logs.len()],
    };
    let mut next: Vec<usize> = logs
        .iter()
        .zip(&from)
        .map(|(l, f)| l.iter().position(|e| e.at() >= *f).unwrap_or(l.len()))
        .collect();
    let mut ended = vec![false; logs.len()];
    let mut feed = |m: &mut Merger<Vec<W>, _>, j: usize| {
        if next[j] < logs[j].len() {
            m.push(j, logs[j][next[j]].feed()).unwrap();
            next[j] += 1;
        } else if !ended[j] {
            m.push(j, Feed::End).unwrap();
            ended[j] = true;
        }
    };
    let mut out = Vec::new();
    let mut e = eager.iter();
    let bound = 10 * logs.iter().map(Vec::len).sum::<usize>() + 100;
    for _ in 0..bound {
        if out.len() == stop {
            break;
        }
        if let Some(b) = e.next() {
            feed(&mut m, *b as usize % logs.len());
        }
        match m.step().unwrap() {
            Step::Out(u) => {
                assert_eq!(u.parts[0], (u.at.shard, u.at.ts));
                out.push((u.at, u.unit));
            }
            Step::Need(j) => feed(&mut m, j),
            Step::Done => break,
        }
    }
    (out, m.checkpoint())
}

fn actions() -> impl Strategy<Value = (usize, Vec<(u8, u8, u8)>, Vec<u8>)> {
    (
        2usize..5,
        prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..160),
        prop::collection::vec(any::<u8>(), 0..200),
    )
}

fn simulate(n: usize, acts: &[(u8, u8, u8)]) -> Sim {
    let mut sim = Sim::new(n);
    for &(k, a, b) in acts {
        sim.act(k, a, b);
    }
    sim.end();
    sim
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Every plain write once, every committed transaction once and whole, nothing of
    /// an aborted or unfinished one; positions strictly increase; each document's
    /// writes keep their order; a reader reading ahead changes nothing.
    #[test]
    fn each_transaction_once_and_whole_in_order((n, acts, eager) in actions()) {
        let sim = simulate(n, &acts);
        let (out, _) = run(&sim.logs, None, &[], usize::MAX);
        let (ahead, _) = run(&sim.logs, None, &eager, usize::MAX);
        prop_assert_eq!(&out, &ahead);
        for pair in out.windows(2) {
            prop_assert!(pair[0].0 < pair[1].0, "{:?} then {:?}", pair[0].0, pair[1].0);
        }
        let mut plain = BTreeSet::new();
        let mut txns = Vec::new();
        for (_, u) in &out {
            let set: BTreeSet<W> = u.iter().copied().collect();
            prop_assert_eq!(set.len(), u.len());
            if sim.committed.contains(&set) {
                txns.push(set);
            } else {
                prop_assert_eq!(u.len(), 1, "a unit that is no transaction: {:?}", u);
                prop_assert!(plain.insert(u[0]));
            }
        }
        prop_assert_eq!(plain, sim.plain.clone());
        txns.sort();
        let mut want = sim.committed.clone();
        want.sort();
        prop_assert_eq!(txns, want);
        let mut last: HashMap<(usize, u32), u64> = HashMap::new();
        for w in out.iter().flat_map(|(_, u)| u) {
            let prev = last.insert((w.0, w.1), w.2);
            prop_assert!(prev.is_none_or(|p| p < w.2), "document {:?} out of order", (w.0, w.1));
        }
    }

    /// Stopped after any number of units, then resumed from the checkpoint with each
    /// shard read again from its `read_from`: the rest comes out exactly.
    #[test]
    fn resuming_from_any_checkpoint_gives_exactly_the_rest((n, acts, eager) in actions()) {
        let sim = simulate(n, &acts);
        let (all, _) = run(&sim.logs, None, &[], usize::MAX);
        for k in 0..=all.len() {
            let (head, ckpt) = run(&sim.logs, None, &eager, k);
            prop_assert_eq!(&head[..], &all[..k]);
            let (rest, _) = run(&sim.logs, Some(&ckpt), &eager, usize::MAX);
            prop_assert_eq!(&rest[..], &all[k..], "resumed after {} from {:?}", k, ckpt);
        }
    }
}

/// Two shards, one cross-shard transaction whose part on shard 1 commits after an
/// unrelated write there: the transaction comes out whole at shard 0's commit, the
/// write after it, and the checkpoint in between names the part taken ahead.
#[test]
fn a_part_taken_ahead_is_in_the_checkpoint_until_its_shard_passes_it() {
    let key = || (vec![7], 1);
    let mut m = Merger::new(2, join);
    let feed = [
        (
            0,
            Feed::Prepared {
                key: key(),
                at: OpTime(1),
            },
        ),
        (
            1,
            Feed::Prepared {
                key: key(),
                at: OpTime(2),
            },
        ),
        (
            0,
            Feed::Committed {
                unit: vec![(0, 0, 1)],
                key: key(),
                commit: OpTime(2),
                at: OpTime(3),
            },
        ),
        (
            1,
            Feed::Unit {
                unit: vec![(1, 5, 3)],
                at: OpTime(4),
            },
        ),
        (
            1,
            Feed::Committed {
                unit: vec![(1, 0, 2)],
                key: key(),
                commit: OpTime(2),
                at: OpTime(5),
            },
        ),
        (0, Feed::End),
        (1, Feed::End),
    ];
    for (s, f) in feed {
        m.push(s, f).unwrap();
    }
    let Step::Out(u) = m.step().unwrap() else {
        panic!()
    };
    assert_eq!(u.unit, vec![(0, 0, 1), (1, 0, 2)]);
    assert_eq!(
        u.at,
        MergedAt {
            ts: OpTime(3),
            shard: 0
        }
    );
    assert_eq!(u.parts, vec![(0, OpTime(3)), (1, OpTime(5))]);
    let c = m.checkpoint();
    assert_eq!(c.ahead, vec![(1, OpTime(5))]);
    assert_eq!(
        c.shards[1],
        ShardMark {
            applied: OpTime(0),
            prepared_since: None
        }
    );
    let Step::Out(u) = m.step().unwrap() else {
        panic!()
    };
    assert_eq!(u.unit, vec![(1, 5, 3)]);
    assert_eq!(m.checkpoint().ahead, vec![]);
    assert!(matches!(m.step().unwrap(), Step::Done));
}

/// A shard that committed its part while another shard's input ended with its part
/// still prepared: one error, never a transaction split.
#[test]
fn a_commit_missing_on_one_shard_is_an_error_not_a_split() {
    let key = || (vec![7], 1);
    let mut m = Merger::new(2, join);
    m.push(
        0,
        Feed::Prepared {
            key: key(),
            at: OpTime(1),
        },
    )
    .unwrap();
    m.push(
        1,
        Feed::Prepared {
            key: key(),
            at: OpTime(2),
        },
    )
    .unwrap();
    m.push(
        0,
        Feed::Committed {
            unit: vec![],
            key: key(),
            commit: OpTime(2),
            at: OpTime(3),
        },
    )
    .unwrap();
    m.push(1, Feed::End).unwrap();
    assert_eq!(
        m.step().unwrap_err(),
        MergeError::EndedPrepared {
            shard: 1,
            commit: OpTime(2)
        }
    );
    assert_eq!(
        m.push(
            0,
            Feed::Unit {
                unit: vec![],
                at: OpTime(3)
            }
        )
        .unwrap_err(),
        MergeError::OutOfOrder {
            shard: 0,
            at: OpTime(3),
            read: OpTime(3)
        }
    );
}

/// The generator reaches the cases that matter: cross-shard transactions, parts
/// taken ahead, ties between shards, transactions left open or aborted.
#[test]
fn the_simulated_oplogs_hold_the_hard_cases() {
    let (mut multi, mut ahead, mut ties, mut unfinished) = (0, 0, 0, 0);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as u8
    };
    for _ in 0..200 {
        let acts: Vec<(u8, u8, u8)> = (0..120).map(|_| (rnd(), rnd(), rnd())).collect();
        let sim = simulate(3, &acts);
        multi += sim
            .committed
            .iter()
            .filter(|t| t.iter().map(|w| w.0).collect::<BTreeSet<_>>().len() > 1)
            .count();
        unfinished += sim.open.len();
        let mut times: Vec<u64> = sim.logs.iter().flatten().map(Ev::at).collect();
        let all = times.len();
        times.sort();
        times.dedup();
        ties += all - times.len();
        let (out, _) = run(&sim.logs, None, &[], usize::MAX);
        for k in 0..out.len() {
            ahead += usize::from(!run(&sim.logs, None, &[], k).1.ahead.is_empty());
        }
    }
    assert!(multi > 200, "{multi} cross-shard transactions");
    assert!(ahead > 100, "{ahead} checkpoints with parts ahead");
    assert!(ties > 200, "{ties} entries sharing a time");
    assert!(unfinished > 20, "{unfinished} transactions never committed");
}
