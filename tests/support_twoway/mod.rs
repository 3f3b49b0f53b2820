//! Two-way helpers for `tests/twoway.rs` and `tests/faults_twoway.rs`: random
//! workloads, cluster sides, attachment, convergence and progress checks.
#![allow(dead_code)]

use std::time::Duration;

use crate::support::data::{KeyValue, Lcg, snapshot};
use crate::support::proc::{Tandem, checkpoint};
use crate::support::{Client, Cluster, Frame, RedisServer, wait_until};
use crate::support_cluster::{ClusterExt, cluster_checkpoint, start_cluster};

/// `n` random writes (key at index 1) to a small key set through `run`.
pub fn random_writes(run: &mut dyn FnMut(&[&str]) -> Frame, seed: u64, n: usize) {
    let mut r = Lcg(seed);
    for i in 0..n {
        let k = format!("c:{}", r.below(12));
        let args: Vec<String> = match r.below(7) {
            0 => vec!["SET".into(), k, format!("v{seed}-{i}")],
            1 => vec!["INCR".into(), format!("{k}:n")],
            2 => vec!["RPUSH".into(), format!("{k}:l"), format!("{i}")],
            3 => vec![
                "HSET".into(),
                format!("{k}:h"),
                format!("f{}", r.below(3)),
                format!("{i}"),
            ],
            4 => vec!["DEL".into(), k],
            5 => vec!["SADD".into(), format!("{k}:s"), format!("{}", r.below(5))],
            _ => vec![
                "ZADD".into(),
                format!("{k}:z"),
                format!("{i}"),
                format!("m{}", r.below(4)),
            ],
        };
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let reply = run(&refs);
        assert!(!matches!(reply, Frame::Error(_)), "{args:?}: {reply:?}");
    }
}

/// Lowest slot of each master of a fresh 3-master cluster: the shard names in link ids.
pub const SHARDS: [u16; 3] = [0, 5461, 10922];

pub fn cluster() -> Cluster {
    let c = start_cluster(3, 0);
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    c.all_nodes(&["CONFIG", "SET", "repl-backlog-size", "64mb"]);
    c
}

pub fn twoway_urls(a: &str, b: &str, extra: &[&str]) -> Tandem {
    let mut args = vec!["redis", "twoway", "--a", a, "--b", b];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// Both sides hold the same data in `dbs` (polled; the checkpoints alone cannot say
/// "caught up" in two-way, since a trailing echo moves no checkpoint by design).
/// On a timeout, says which keys still differ.
pub fn wait_same(a: &RedisServer, b: &RedisServer, dbs: &[u32], limit: Duration) {
    let start = std::time::Instant::now();
    loop {
        let diff = dbs.iter().find_map(|&db| {
            let (sa, sb) = (snapshot(a, db), snapshot(b, db));
            (!same_values(&sa, &sb)).then(|| {
                let d = value_diff(&sa, &sb, 5);
                format!("db {db}: {} keys vs {}: {d}", sa.len(), sb.len())
            })
        });
        let Some(diff) = diff else { return };
        assert!(
            start.elapsed() < limit,
            "both sides still differ after {limit:?}: {diff}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes a marker on `from` and waits until it is on `to`: everything `from`'s stream
/// held before it has been handled by the link reading it.
pub fn marker_crosses(from: &RedisServer, to: &RedisServer, token: &str) {
    from.cmd(&["SET", "marker", token]);
    wait_until("a marker to cross", Duration::from_secs(60), || {
        to.client().cmd(&["GET", "marker"]) == Frame::BulkString(token.as_bytes().to_vec())
    });
}

/// Both directions of a standalone pair attached: each link's checkpoint in `incr`.
pub fn attached(a: &RedisServer, b: &RedisServer) {
    wait_until("both links attached", Duration::from_secs(30), || {
        checkpoint(b, "default:a2b").is_some_and(|(s, _)| s == "incr")
            && checkpoint(a, "default:b2a").is_some_and(|(s, _)| s == "incr")
    });
}

pub type Snap = std::collections::BTreeMap<Vec<u8>, (KeyValue, i64)>;

/// The keys whose values differ between `x` and `y` (or that one side lacks), with both
/// values, for a failure message; at most `n`.
pub fn value_diff(x: &Snap, y: &Snap, n: usize) -> String {
    let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
    keys.into_iter()
        .filter(|k| x.get(*k).map(|v| &v.0) != y.get(*k).map(|v| &v.0))
        .take(n)
        .map(|k| {
            format!(
                "{}: A {:?} / B {:?}",
                String::from_utf8_lossy(k),
                x.get(k).map(|v| &v.0),
                y.get(k).map(|v| &v.0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn same_values(x: &Snap, y: &Snap) -> bool {
    x.len() == y.len()
        && x.iter()
            .zip(y.iter())
            .all(|((ka, (va, _)), (kb, (vb, _)))| ka == kb && va == vb)
}

/// Both directions attached, A a cluster and B standalone: the B→A floor on A and
/// every A shard's A→B checkpoint on B are in state `incr`.
pub fn attached_cluster_a(a: &Cluster, b: &RedisServer) {
    wait_until("both links attached", Duration::from_secs(60), || {
        cluster_checkpoint(a, "default:b2a").is_some_and(|(s, _)| s == "incr")
            && SHARDS.iter().all(|s| {
                checkpoint(b, &format!("default:a2b:{s}")).is_some_and(|(s, _)| s == "incr")
            })
    });
}

/// A transaction on hash-tagged keys and a script, on `c` (a master or a server).
pub fn tx_and_script(c: &mut Client, p: &str) {
    c.cmd(&["MULTI"]);
    c.cmd(&["SET", &format!("{p}tx"), "1"]);
    c.cmd(&["INCR", &format!("{p}tx-n")]);
    c.cmd(&["RPUSH", &format!("{p}tx-l"), "x", "y"]);
    assert!(matches!(c.cmd(&["EXEC"]), Frame::Array(_)));
    let script = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";
    let (l, n) = (format!("{p}ev-l"), format!("{p}ev-n"));
    assert_eq!(
        c.cmd(&["EVAL", script, "2", &l, &n, "v"]),
        Frame::Integer(1)
    );
}

/// Conflict log lines of one run: checks their shape, returns them.
pub fn conflict_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["winner"] == "a" || v["winner"] == "b", "{line}");
            assert!(v["a"]["stream"].is_string() && v["b"]["command"].is_string());
            v
        })
        .collect()
}

pub type Writer = dyn FnMut(&[&str]) -> Frame + Send;

/// Both directions attached, both sides clusters: every shard's floor on the other side.
pub fn attached_both_clusters(a: &Cluster, b: &Cluster) {
    wait_until("both links attached", Duration::from_secs(60), || {
        SHARDS.iter().all(|s| {
            cluster_checkpoint(a, &format!("default:b2a:{s}")).is_some_and(|(s, _)| s == "incr")
                && cluster_checkpoint(b, &format!("default:a2b:{s}"))
                    .is_some_and(|(s, _)| s == "incr")
        })
    });
}

/// How far both directions got: (A's shards applied on B, B applied on A).
pub fn progress(a: &Cluster, b: &RedisServer) -> (u64, u64) {
    let a2b = SHARDS
        .iter()
        .filter_map(|s| checkpoint(b, &format!("default:a2b:{s}")))
        .map(|c| c.1)
        .sum();
    let b2a = cluster_checkpoint(a, "default:b2a").map_or(0, |c| c.1);
    (a2b, b2a)
}
