//! Two-way with a cluster side while that cluster is operated on under load: a master
//! killed (-9) and replaced by its replica, and a slot migrated between masters. Both
//! sides write their own counters and lists the whole time; afterwards every counter
//! and list is exact on both sides and the sides are identical key by key.

mod support;
mod support_cluster;
mod support_twoway;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use support::data::snapshot;
use support::*;
use support_cluster::*;
use support_twoway::*;

const SLACK: Duration = Duration::from_millis(1500);
const CONVERGE: Duration = Duration::from_secs(90);

/// One writer's keys and what it knows of them. Every write is `INCR` (a counter) or
/// `RPUSH` (a list): both answer the key's new value (the count or the length), so the
/// writer checks each answer against what it did, and a doubled or lost write shows at
/// once on the side it writes.
struct Counts {
    keys: Vec<String>,
    /// Writes known to have taken effect (and, on a master that may die, to be on its
    /// replica too): the exact value the key must end with.
    count: Vec<i64>,
    /// Writes since `count` whose fate is unknown (connection lost before the answer,
    /// or answered but not acknowledged by the replica before the master died).
    pending: Vec<i64>,
}

impl Counts {
    /// `counters` counters and `lists` lists under each prefix.
    fn new(prefixes: &[&str], counters: usize, lists: usize) -> Counts {
        let mut keys = Vec::new();
        for p in prefixes {
            keys.extend((0..counters).map(|i| format!("{p}n:{i}")));
            keys.extend((0..lists).map(|i| format!("{p}l:{i}")));
        }
        let n = keys.len();
        Counts {
            keys,
            count: vec![0; n],
            pending: vec![0; n],
        }
    }

    fn args(&self, i: usize) -> Vec<&str> {
        let k = self.keys[i].as_str();
        if k.contains("l:") {
            vec!["RPUSH", k, "x"]
        } else {
            vec!["INCR", k]
        }
    }

    /// Key `i` answered `v`; `sure`: the write is known to survive.
    fn answered(&mut self, i: usize, v: &Frame, sure: bool) {
        let Frame::Integer(v) = *v else {
            panic!("{}: {v:?}", self.keys[i])
        };
        let (c, p) = (self.count[i], self.pending[i]);
        assert!(
            (c + 1..=c + 1 + p).contains(&v),
            "{} answered {v}: expected {} (+ up to {p} unsure) — a write was lost or doubled",
            self.keys[i],
            c + 1
        );
        if sure {
            (self.count[i], self.pending[i]) = (v, 0);
        } else {
            self.pending[i] += 1;
        }
    }

    fn unsure(&self) -> bool {
        self.pending.iter().any(|&p| p > 0)
    }
}

/// Writes every key of `counts` once per round through a cluster client until `stop`
/// (and then until no write is unsure). Writes to the master on `doomed` (the one the
/// test kills) count as sure only once `WAIT 2` says its replica and tandem have them:
/// Redis itself loses what a killed master acknowledged but never replicated.
fn cluster_writer(
    a: &Cluster,
    mut counts: Counts,
    doomed: Option<u16>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> JoinHandle<Counts> {
    let mut cc = ClusterClient::new(a);
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) || counts.unsure() {
            for i in 0..counts.keys.len() {
                let owned: Vec<String> = counts.args(i).iter().map(|a| a.to_string()).collect();
                let args: Vec<&str> = owned.iter().map(|a| a.as_str()).collect();
                match cc.try_on_key(&owned[1], &[&args]) {
                    Ok((port, r)) => {
                        let sure = doomed != Some(port) || cc.wait_replicas(port, 2, 5000) == 2;
                        counts.answered(i, &r[0], sure);
                    }
                    Err(_) => counts.pending[i] += 1,
                }
            }
            rounds.fetch_add(1, Ordering::SeqCst);
        }
        counts
    })
}

/// The same on the standalone side (never killed): one pipeline per round.
fn server_writer(
    b: &RedisServer,
    mut counts: Counts,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) -> JoinHandle<Counts> {
    let mut c = b.client();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            for i in 0..counts.keys.len() {
                let args: Vec<&[u8]> = counts.args(i).iter().map(|a| a.as_bytes()).collect();
                c.send_bytes(&args).unwrap();
            }
            for i in 0..counts.keys.len() {
                let r = c.read_reply().unwrap();
                counts.answered(i, &r, true);
            }
            rounds.fetch_add(1, Ordering::SeqCst);
        }
        counts
    })
}

/// Wait (bounded) until `rounds` grew by `n`.
fn wait_rounds(rounds: &AtomicU64, n: u64, what: &str) {
    let start = rounds.load(Ordering::SeqCst);
    wait_until(what, Duration::from_secs(60), || {
        rounds.load(Ordering::SeqCst) >= start + n
    });
}

/// Both sides identical (bounded), then every key of both writers exact on both sides.
fn assert_converged_exact(a: &Cluster, b: &RedisServer, writers: &[Counts], log: &str) {
    let start = std::time::Instant::now();
    while !same_values(&cluster_snapshot(a), &snapshot(b, 0)) {
        if start.elapsed() > CONVERGE {
            // Name the keys that differ: what a failure needs to be understood.
            let (sa, sb) = (cluster_snapshot(a), snapshot(b, 0));
            let keys: std::collections::BTreeSet<_> = sa.keys().chain(sb.keys()).collect();
            let diff: Vec<String> = keys
                .into_iter()
                .filter(|k| sa.get(*k).map(|v| &v.0) != sb.get(*k).map(|v| &v.0))
                .map(|k| {
                    let k = String::from_utf8_lossy(k);
                    let (va, vb) = (sa.get(k.as_bytes()), sb.get(k.as_bytes()));
                    let show = |v: Option<&(support::data::KeyValue, i64)>| {
                        v.map(|(v, _)| match &v.value[..] {
                            [one] => format!("{} {}", v.kind, String::from_utf8_lossy(one)),
                            all => format!("{} of {}", v.kind, all.len()),
                        })
                    };
                    format!("{k}: A {:?} B {:?}", show(va), show(vb))
                })
                .collect();
            panic!("sides differ after {CONVERGE:?}: {diff:#?}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_same_snapshot(&cluster_snapshot(a), &snapshot(b, 0), SLACK);
    let mut ca = ClusterClient::new(a);
    let mut cb = b.client();
    for w in writers {
        assert!(!w.unsure());
        for (k, &n) in w.keys.iter().zip(&w.count) {
            let read = if k.contains("l:") { "LLEN" } else { "GET" };
            let want = match read {
                "LLEN" => Frame::Integer(n),
                _ => Frame::BulkString(n.to_string().into_bytes()),
            };
            assert_eq!(ca.cmd(&[read, k], 1), want, "{k} on A\n{log}");
            assert_eq!(cb.cmd(&[read, k]), want, "{k} on B\n{log}");
        }
    }
}

fn cluster_with_replicas() -> Cluster {
    let c = start_cluster(3, 1);
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    c.all_nodes(&["CONFIG", "SET", "repl-backlog-size", "64mb"]);
    c
}

fn server() -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-backlog-size", "64mb"),
    )
}

/// A = 3 masters with a replica each, B standalone. A writes counters and lists `a:…`,
/// B `b:…` (disjoint), both at once; meanwhile A's first master — the node named in
/// `--a` — is killed with SIGKILL and its replica takes over; writing goes on after it.
///
/// Asserted: every counter and list equals, on both sides, the number of its writes
/// known to have taken effect (not doubled by a resend after the failover, not lost),
/// and the two sides are identical key by key. A write to the killed master counts only
/// once `WAIT 2` confirmed its replica has it; the one write per key that may be in
/// flight at the kill is resolved by the key's next answer on the new master.
#[test]
fn cluster_side_master_killed_under_twoway_load_keeps_counts_exact() {
    let mut a = cluster_with_replicas();
    let b = server();
    let t = twoway_urls(&a.url(), &b.url(), &[]);
    attached_cluster_a(&a, &b);
    let stop = Arc::new(AtomicBool::new(false));
    let (ra, rb) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let doomed = a.masters[0].port;
    let wa = cluster_writer(
        &a,
        Counts::new(&["a:"], 30, 6),
        Some(doomed),
        stop.clone(),
        ra.clone(),
    );
    let wb = server_writer(&b, Counts::new(&["b:"], 30, 6), stop.clone(), rb.clone());
    wait_rounds(&ra, 20, "A writes before the kill");
    // The replica of the killed master is the first one started (support::Cluster).
    let mut dead = a.masters.remove(0);
    dead.kill();
    let promoted = &a.replicas[0];
    wait_until("replica promoted", Duration::from_secs(30), || {
        promoted.info_field("replication", "role").as_deref() == Some("master")
    });
    // Writes after the failover, on both sides, reach the promoted master.
    wait_rounds(&ra, 20, "A writes after the failover");
    wait_rounds(&rb, 20, "B writes after the failover");
    stop.store(true, Ordering::SeqCst);
    let writers = [wa.join().unwrap(), wb.join().unwrap()];
    assert_converged_exact(&a, &b, &writers, &t.log_text());
    let log = t.log_text();
    assert!(log.contains("source failover"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A = 3 masters, B standalone. Both sides write their own counters and lists, half of
/// them in one slot (`{mig}a:…` on A, `{mig}b:…` on B, hash-tagged) and half spread
/// out, while that slot — already holding keys of both sides — moves from its A master
/// to another (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE). A's
/// streams then carry the move itself: RESTORE-ASKING on the importing master, DEL on
/// the old one, for A's keys and for B's keys that B→A wrote into the slot.
///
/// Asserted: no key of either side lost, every counter and list exact on both sides,
/// and the sides identical key by key.
#[test]
fn cluster_side_slot_migration_under_twoway_load_loses_nothing() {
    let a = cluster();
    let b = server();
    let t = twoway_urls(&a.url(), &b.url(), &[]);
    attached_cluster_a(&a, &b);
    let (mut ca, mut cb) = (ClusterClient::new(&a), b.client());
    for i in 0..100 {
        let v = format!("v{i}");
        ca.cmd(&["SET", &format!("{{mig}}a:s:{i}"), &v], 1);
        cb.cmd(&["SET", &format!("{{mig}}b:s:{i}"), &v]);
    }
    wait_until("the slot's keys on both sides", CONVERGE, || {
        same_values(&cluster_snapshot(&a), &snapshot(&b, 0))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (ra, rb) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counts =
        |side: &str| Counts::new(&[&format!("{{mig}}{side}:"), &format!("{side}:")], 10, 2);
    let wa = cluster_writer(&a, counts("a"), None, stop.clone(), ra.clone());
    let wb = server_writer(&b, counts("b"), stop.clone(), rb.clone());
    wait_rounds(&ra, 10, "A writes before the move");
    let slot = tandem::redis::slot::key_slot(b"{mig}");
    let (to_port, moved) = move_slot(&a, slot, 10, Duration::from_millis(20), |_| {});
    assert!(
        moved >= 200,
        "the slot held both sides' keys ({moved} moved)"
    );
    wait_rounds(&ra, 10, "A writes after the move");
    wait_rounds(&rb, 10, "B writes after the move");
    stop.store(true, Ordering::SeqCst);
    let writers = [wa.join().unwrap(), wb.join().unwrap()];
    let log = t.log_text();
    assert_converged_exact(&a, &b, &writers, &log);
    assert_eq!(a.owner_port(slot), to_port);
    // No key was written on both sides: moving a slot is no write, so no conflict, and
    // B is never handed a migrated key it already holds.
    let log = t.log_text();
    assert!(!log.contains("conflict:"), "{log}");
    assert!(!log.contains("source and target differ"), "{log}");
    for i in 0..100 {
        let want = Frame::BulkString(format!("v{i}").into_bytes());
        for side in ["a", "b"] {
            let k = format!("{{mig}}{side}:s:{i}");
            assert_eq!(ca.cmd(&["GET", &k], 1), want, "{k} on A\n{log}");
            assert_eq!(cb.cmd(&["GET", &k]), want, "{k} on B\n{log}");
        }
    }
    assert!(!log.contains("panicked"), "{log}");
}
