//! The detector against hand-made cases, and against a plain per-key model (the first
//! detector) under random interleavings, also with keys that all collide.

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
        assert!(d.state.lock().unwrap().store.len() <= 20);
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

/// Key hashes folded into this many values (0: not folded), so that keys collide
/// in the detector's index and it must tell them apart by their bytes.
struct Collide(u64);

impl std::hash::BuildHasher for Collide {
    type Hasher = CollideHasher;
    fn build_hasher(&self) -> CollideHasher {
        CollideHasher(std::hash::DefaultHasher::new(), self.0)
    }
}

struct CollideHasher(std::hash::DefaultHasher, u64);

impl std::hash::Hasher for CollideHasher {
    fn finish(&self) -> u64 {
        match self.1 {
            0 => self.0.finish(),
            n => self.0.finish() % n,
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
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
        buckets in prop_oneof![Just(0u64), Just(1u64), Just(2u64)],
        spill in prop_oneof![Just(0usize), 1usize..6, 6usize..24],
    ) {
        let sp = |side: bool, x: bool| -> Space { (side as u32) * 2 + x as u32 };
        let side_of = |b: bool| if b { Side::B } else { Side::A };
        let mut d = Detector::with_hasher(
            policy, Side::A, Duration::from_millis(retention), Collide(buckets),
        );
        if spill > 0 {
            d = d.spill_to(SpillTo { dir: std::env::temp_dir().join("tandem-detector-test"), in_memory: spill });
        }
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
