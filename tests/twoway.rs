//! `tandem redis twoway` against real servers: no loops, no doubled writes, contested
//! keys converge, and exactly-once across kill -9.

mod support;
mod support_cluster;

use std::time::Duration;

use bytes::Bytes;
use support::data::{Lcg, assert_same_db, fill_all_types, snapshot};
use support::proc::{Tandem, checkpoint};
use support::*;
use support_cluster::*;

const SLACK: Duration = Duration::from_millis(1500);

fn server() -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-backlog-size", "64mb"),
    )
}

fn twoway(a: &RedisServer, b: &RedisServer, extra: &[&str]) -> Tandem {
    let (ua, ub) = (a.url(), b.url());
    let mut args = vec!["redis", "twoway", "--a", &ua, "--b", &ub];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// Both sides hold the same data in `dbs` (polled; the checkpoints alone cannot say
/// "caught up" in two-way, since a trailing echo moves no checkpoint by design).
fn wait_same(a: &RedisServer, b: &RedisServer, dbs: &[u32], limit: Duration) {
    wait_until("both sides identical", limit, || {
        dbs.iter().all(|&db| {
            let (sa, sb) = (snapshot(a, db), snapshot(b, db));
            sa.len() == sb.len()
                && sa
                    .iter()
                    .zip(sb.iter())
                    .all(|((ka, (va, _)), (kb, (vb, _)))| ka == kb && va == vb)
        })
    });
}

fn attached(a: &RedisServer, b: &RedisServer) {
    wait_until("both links attached", Duration::from_secs(30), || {
        checkpoint(b, "default:a2b").is_some_and(|(s, _)| s == "incr")
            && checkpoint(a, "default:b2a").is_some_and(|(s, _)| s == "incr")
    });
}

#[test]
fn disjoint_writes_on_both_sides_end_identical() {
    let a = server();
    let b = server();
    fill_all_types(&mut a.client(), 0, "a-pre:", 1);
    let _t = twoway(&a, &b, &[]);
    attached(&a, &b);
    let mut ca = a.client();
    let mut cb = b.client();
    for db in [0, 2] {
        fill_all_types(&mut ca, db, "from-a:", 10 + db as u64);
        fill_all_types(&mut cb, db, "from-b:", 20 + db as u64);
    }
    for (c, p) in [(&mut ca, "from-a:"), (&mut cb, "from-b:")] {
        c.cmd(&["SELECT", "0"]);
        c.cmd(&["MULTI"]);
        c.cmd(&["SET", &format!("{p}tx"), "1"]);
        c.cmd(&["INCR", &format!("{p}tx-n")]);
        c.cmd(&["EXEC"]);
        let script = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";
        c.cmd(&[
            "EVAL",
            script,
            "2",
            &format!("{p}ev-l"),
            &format!("{p}ev-n"),
            "v",
        ]);
    }
    wait_same(&a, &b, &[0, 2], Duration::from_secs(60));
    for db in [0, 2] {
        assert_same_db(&a, db, &b, db, SLACK);
    }
    assert!(!snapshot(&a, 0).is_empty());
}

#[test]
fn counters_incremented_on_one_side_are_not_doubled() {
    let a = server();
    let b = server();
    let t = twoway(&a, &b, &[]);
    attached(&a, &b);
    let (pa, pb) = (a.port, b.port);
    let wa = std::thread::spawn(move || {
        let mut c = Client::connect(pa).unwrap();
        for i in 0..2000 {
            c.cmd(&["INCR", &format!("a:{}", i % 20)]);
        }
    });
    let wb = std::thread::spawn(move || {
        let mut c = Client::connect(pb).unwrap();
        let cmds: Vec<Vec<Bytes>> = (0..2000)
            .map(|i| {
                vec![
                    Bytes::from("INCRBY"),
                    Bytes::from(format!("b:{}", i % 20)),
                    Bytes::from("2"),
                ]
            })
            .collect();
        c.pipeline(&cmds);
    });
    wa.join().unwrap();
    wb.join().unwrap();
    wait_until("counters arrived", Duration::from_secs(60), || {
        let (mut ca, mut cb) = (a.client(), b.client());
        (0..20).all(|k| {
            ca.cmd(&["GET", &format!("b:{k}")]) == Frame::BulkString(b"200".to_vec())
                && cb.cmd(&["GET", &format!("a:{k}")]) == Frame::BulkString(b"100".to_vec())
        })
    });
    // Let any (wrong) echo come back before checking nothing was doubled.
    wait_same(&a, &b, &[0], Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    for side in [&a, &b] {
        let mut c = side.client();
        for k in 0..20 {
            assert_eq!(
                c.cmd_text(&["GET", &format!("a:{k}")]),
                "100",
                "a:{k} on :{}",
                side.port
            );
            assert_eq!(
                c.cmd_text(&["GET", &format!("b:{k}")]),
                "200",
                "b:{k} on :{}",
                side.port
            );
        }
    }
    assert_same_db(&a, 0, &b, 0, SLACK);
    assert!(
        !t.log_text().contains("conflict:"),
        "no key was written on both sides"
    );
}

/// Random writes to a small shared key set on both sides at once; after the writers
/// stop, both sides are identical within 5 s. Several seeds.
#[test]
fn contested_keys_converge_after_writers_stop() {
    let mut conflicts_seen = 0;
    for seed in 1..=4u64 {
        let a = server();
        let b = server();
        let log = tempfile::NamedTempFile::new().unwrap();
        let log_path = log.path().to_string_lossy().into_owned();
        let t = twoway(&a, &b, &["--conflict-log", &log_path]);
        attached(&a, &b);
        let writers: Vec<_> = [(a.port, seed * 100 + 1), (b.port, seed * 100 + 2)]
            .into_iter()
            .map(|(port, s)| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(port).unwrap();
                    random_writes(&mut |a| c.cmd(a), s, 1500)
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let mut last = String::new();
        let converged = (0..500).any(|_| {
            let (sa, sb) = (snapshot(&a, 0), snapshot(&b, 0));
            let same = sa.len() == sb.len()
                && sa
                    .iter()
                    .zip(sb.iter())
                    .all(|((ka, (va, _)), (kb, (vb, _)))| ka == kb && va == vb);
            if !same {
                last = format!("{} keys vs {}", sa.len(), sb.len());
                std::thread::sleep(Duration::from_millis(10));
            }
            same
        });
        assert!(
            converged,
            "seed {seed}: sides differ 5 s after writers stopped ({last})\n{}",
            t.log_text()
        );
        assert_same_db(&a, 0, &b, 0, SLACK);
        let conflicts = std::fs::read_to_string(log.path()).unwrap();
        for line in conflicts.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["winner"] == "a" || v["winner"] == "b", "{line}");
            assert!(
                v["a"]["command"].is_string() && v["b"]["command"].is_string(),
                "{line}"
            );
            conflicts_seen += 1;
        }
    }
    // The workload really contested keys (otherwise this test proves nothing).
    assert!(conflicts_seen > 0, "no conflict was detected in any seed");
}

/// `n` random writes (key at index 1) to a small key set through `run`.
fn random_writes(run: &mut dyn FnMut(&[&str]) -> Frame, seed: u64, n: usize) {
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

/// SIGKILL of tandem in the middle of two-way traffic: both directions resume from
/// their checkpoints and apply every write exactly once.
#[test]
fn kill9_during_twoway_resumes_exactly_once_both_ways() {
    let a = server();
    let b = server();
    let mut t = twoway(&a, &b, &["--batch-commands", "200"]);
    attached(&a, &b);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [(a.port, "a"), (b.port, "b")]
        .into_iter()
        .map(|(port, side)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(port).unwrap();
                let mut rounds = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && rounds < 50_000 {
                    let cmds: Vec<Vec<Bytes>> = (0..20)
                        .map(|i| vec![Bytes::from("INCR"), Bytes::from(format!("{side}:{i}"))])
                        .collect();
                    c.pipeline(&cmds);
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        t.kill9();
        t = twoway(&a, &b, &["--batch-commands", "200"]);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    wait_same(&a, &b, &[0], Duration::from_secs(60));
    for (side, n) in ["a", "b"].iter().zip(&rounds) {
        for srv in [&a, &b] {
            let mut c = srv.client();
            for i in 0..20 {
                let v = c.cmd_text(&["GET", &format!("{side}:{i}")]);
                assert_eq!(
                    v,
                    n.to_string(),
                    "{side}:{i} on :{}\n{}",
                    srv.port,
                    t.log_text()
                );
            }
        }
    }
    assert!(
        t.log_text()
            .contains("resuming from the target's checkpoint")
    );
}

// ---- A cluster side -------------------------------------------------------------------

/// Lowest slot of each master of a fresh 3-master cluster: the shard names in link ids.
const SHARDS: [u16; 3] = [0, 5461, 10922];

fn cluster() -> Cluster {
    let c = start_cluster(3, 0);
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    c.all_nodes(&["CONFIG", "SET", "repl-backlog-size", "64mb"]);
    c
}

fn twoway_urls(a: &str, b: &str, extra: &[&str]) -> Tandem {
    let mut args = vec!["redis", "twoway", "--a", a, "--b", b];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

type Snap = std::collections::BTreeMap<Vec<u8>, (support::data::KeyValue, i64)>;

fn same_values(x: &Snap, y: &Snap) -> bool {
    x.len() == y.len()
        && x.iter()
            .zip(y.iter())
            .all(|((ka, (va, _)), (kb, (vb, _)))| ka == kb && va == vb)
}

/// Both directions attached, A a cluster and B standalone: the B→A floor on A and
/// every A shard's A→B checkpoint on B are in state `incr`.
fn attached_cluster_a(a: &Cluster, b: &RedisServer) {
    wait_until("both links attached", Duration::from_secs(60), || {
        cluster_checkpoint(a, "default:b2a").is_some_and(|(s, _)| s == "incr")
            && SHARDS.iter().all(|s| {
                checkpoint(b, &format!("default:a2b:{s}")).is_some_and(|(s, _)| s == "incr")
            })
    });
}

/// Hash-tagged prefixes whose keys land on each of the three masters.
fn tagged_prefixes(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for m in &c.masters {
        let p = (0..1000)
            .map(|i| format!("{{t{i}}}:"))
            .find(|p| c.master_for(p).port == m.port && !out.contains(p))
            .expect("a tag per master");
        out.push(p);
    }
    out
}

/// A transaction on hash-tagged keys and a script, on `c` (a master or a server).
fn tx_and_script(c: &mut Client, p: &str) {
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

#[test]
fn cluster_side_disjoint_writes_and_counters_end_identical() {
    let a = cluster();
    let b = server();
    let prefixes = tagged_prefixes(&a);
    for (i, p) in prefixes.iter().enumerate() {
        fill_all_types(
            &mut a.master_for(p).client(),
            0,
            &format!("{p}pre:"),
            i as u64,
        );
    }
    let t = twoway_urls(&a.url(), &b.url(), &[]);
    attached_cluster_a(&a, &b);
    for (i, p) in prefixes.iter().enumerate() {
        let mut c = a.master_for(p).client();
        fill_all_types(&mut c, 0, &format!("{p}from-a:"), 10 + i as u64);
        tx_and_script(&mut c, &format!("{p}a-"));
    }
    fill_all_types(&mut b.client(), 0, "from-b:", 20);
    // Hash-tagged on B too: a transaction spanning slots cannot land atomically on A.
    tx_and_script(&mut b.client(), "{b}");
    let mut ca = ClusterClient::new(&a);
    let bport = b.port;
    let wb = std::thread::spawn(move || {
        let cmds: Vec<Vec<Bytes>> = (0..2000)
            .map(|i| {
                let k = format!("b:{}", i % 20);
                vec![Bytes::from("INCRBY"), Bytes::from(k), Bytes::from("2")]
            })
            .collect();
        Client::connect(bport).unwrap().pipeline(&cmds);
    });
    for i in 0..2000 {
        ca.cmd(&["INCR", &format!("a:{}", i % 20)], 1);
    }
    wb.join().unwrap();
    wait_until("both sides identical", Duration::from_secs(60), || {
        same_values(&cluster_snapshot(&a), &snapshot(&b, 0))
    });
    assert_same_snapshot(&cluster_snapshot(&a), &snapshot(&b, 0), SLACK);
    let mut cb = b.client();
    for k in 0..20 {
        for (key, want) in [(format!("a:{k}"), "100"), (format!("b:{k}"), "200")] {
            let want = Frame::BulkString(want.as_bytes().to_vec());
            assert_eq!(ca.cmd(&["GET", &key], 1), want, "{key} on A");
            assert_eq!(cb.cmd(&["GET", &key]), want, "{key} on B");
        }
    }
    assert!(snapshot(&b, 0).len() > 100);
    assert!(
        !t.log_text().contains("conflict:"),
        "no key was written on both sides\n{}",
        t.log_text()
    );
}

/// Conflict log lines of one run: checks their shape, returns them.
fn conflict_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
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

type Writer = dyn FnMut(&[&str]) -> Frame + Send;

/// Random writes to a shared key set on a cluster A and a standalone B at once (and,
/// last seed, on two clusters): identical within 5 s of the writers stopping.
#[test]
fn cluster_side_contested_keys_converge_after_writers_stop() {
    let mut shard_streams = std::collections::BTreeSet::new();
    let mut conflicts_seen = 0;
    for seed in 1..=3u64 {
        let a = cluster();
        let b_cluster = (seed == 3).then(cluster);
        let b_server = (seed != 3).then(server);
        let b_url = match (&b_cluster, &b_server) {
            (Some(c), _) => c.url(),
            (_, Some(s)) => s.url(),
            _ => unreachable!(),
        };
        let snap_b = || match (&b_cluster, &b_server) {
            (Some(c), _) => cluster_snapshot(c),
            (_, Some(s)) => snapshot(s, 0),
            _ => unreachable!(),
        };
        let log = tempfile::NamedTempFile::new().unwrap();
        let log_path = log.path().to_string_lossy().into_owned();
        let t = twoway_urls(&a.url(), &b_url, &["--conflict-log", &log_path]);
        match (&b_cluster, &b_server) {
            (Some(bc), _) => attached_both_clusters(&a, bc),
            (_, Some(bs)) => attached_cluster_a(&a, bs),
            _ => unreachable!(),
        }
        let mut ca = ClusterClient::new(&a);
        let wa =
            std::thread::spawn(move || random_writes(&mut |x| ca.cmd(x, 1), seed * 100 + 1, 1500));
        let mut writer_b: Box<Writer> = match (&b_cluster, &b_server) {
            (Some(c), _) => {
                let mut cc = ClusterClient::new(c);
                Box::new(move |x| cc.cmd(x, 1))
            }
            (_, Some(s)) => {
                let mut c = s.client();
                Box::new(move |x| c.cmd(x))
            }
            _ => unreachable!(),
        };
        let wb = std::thread::spawn(move || random_writes(&mut *writer_b, seed * 100 + 2, 1500));
        wa.join().unwrap();
        wb.join().unwrap();
        let mut last = String::new();
        let converged = (0..500).any(|_| {
            let (sa, sb) = (cluster_snapshot(&a), snap_b());
            let same = same_values(&sa, &sb);
            if !same {
                last = format!("{} keys vs {}", sa.len(), sb.len());
                std::thread::sleep(Duration::from_millis(10));
            }
            same
        });
        assert!(
            converged,
            "seed {seed}: sides differ 5 s after writers stopped ({last})\n{}",
            t.log_text()
        );
        assert_same_snapshot(&cluster_snapshot(&a), &snap_b(), SLACK);
        for v in conflict_lines(log.path()) {
            shard_streams.insert(v["a"]["stream"].as_str().unwrap().to_string());
            conflicts_seen += 1;
        }
    }
    assert!(conflicts_seen > 0, "no conflict was detected in any seed");
    // A's writes were read per shard (stream "a:<lowest slot>"), not as one stream.
    assert!(
        shard_streams.iter().all(|s| s.starts_with("a:")) && shard_streams.len() > 1,
        "{shard_streams:?}"
    );
}

/// Both directions attached, both sides clusters: every shard's floor on the other side.
fn attached_both_clusters(a: &Cluster, b: &Cluster) {
    wait_until("both links attached", Duration::from_secs(60), || {
        SHARDS.iter().all(|s| {
            cluster_checkpoint(a, &format!("default:b2a:{s}")).is_some_and(|(s, _)| s == "incr")
                && cluster_checkpoint(b, &format!("default:a2b:{s}"))
                    .is_some_and(|(s, _)| s == "incr")
        })
    });
}

/// How far both directions got: (A's shards applied on B, B applied on A).
fn progress(a: &Cluster, b: &RedisServer) -> (u64, u64) {
    let a2b = SHARDS
        .iter()
        .filter_map(|s| checkpoint(b, &format!("default:a2b:{s}")))
        .map(|c| c.1)
        .sum();
    let b2a = cluster_checkpoint(a, "default:b2a").map_or(0, |c| c.1);
    (a2b, b2a)
}

/// SIGKILL of tandem under counter load on both sides, A a cluster: every increment
/// lands exactly once on the other side.
#[test]
fn kill9_with_a_cluster_side_resumes_exactly_once_both_ways() {
    let a = cluster();
    let b = server();
    let args = ["--batch-commands", "200"];
    let mut t = twoway_urls(&a.url(), &b.url(), &args);
    attached_cluster_a(&a, &b);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ca = ClusterClient::new(&a);
    let sa = stop.clone();
    let wa = std::thread::spawn(move || {
        let mut rounds = 0u64;
        while !sa.load(std::sync::atomic::Ordering::SeqCst) && rounds < 50_000 {
            for i in 0..20 {
                ca.cmd(&["INCR", &format!("a:{i}")], 1);
            }
            rounds += 1;
        }
        rounds
    });
    let (sb, bport) = (stop.clone(), b.port);
    let wb = std::thread::spawn(move || {
        let mut c = Client::connect(bport).unwrap();
        let mut rounds = 0u64;
        while !sb.load(std::sync::atomic::Ordering::SeqCst) && rounds < 50_000 {
            let cmds: Vec<Vec<Bytes>> = (0..20)
                .map(|i| vec![Bytes::from("INCR"), Bytes::from(format!("b:{i}"))])
                .collect();
            c.pipeline(&cmds);
            rounds += 1;
        }
        rounds
    });
    for _ in 0..3 {
        let before = progress(&a, &b);
        wait_until(
            "both directions make progress",
            Duration::from_secs(60),
            || {
                let now = progress(&a, &b);
                now.0 > before.0 && now.1 > before.1
            },
        );
        assert!(t.is_running(), "tandem died: {}", t.log_text());
        t.kill9();
        t = twoway_urls(&a.url(), &b.url(), &args);
    }
    let before = progress(&a, &b);
    wait_until(
        "progress after the last restart",
        Duration::from_secs(60),
        || {
            let now = progress(&a, &b);
            now.0 > before.0 && now.1 > before.1
        },
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = [wa.join().unwrap(), wb.join().unwrap()];
    wait_until("both sides identical", Duration::from_secs(60), || {
        same_values(&cluster_snapshot(&a), &snapshot(&b, 0))
    });
    let mut ca = ClusterClient::new(&a);
    let mut cb = b.client();
    for (side, n) in ["a", "b"].iter().zip(rounds) {
        let want = Frame::BulkString(n.to_string().into_bytes());
        for i in 0..20 {
            let key = format!("{side}:{i}");
            assert_eq!(
                ca.cmd(&["GET", &key], 1),
                want,
                "{key} on A\n{}",
                t.log_text()
            );
            assert_eq!(cb.cmd(&["GET", &key]), want, "{key} on B\n{}", t.log_text());
        }
    }
    assert!(
        t.log_text()
            .contains("resuming from the target's checkpoint")
    );
}
