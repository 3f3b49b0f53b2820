//! `tandem redis twoway` against real servers: no loops, no doubled writes, contested
//! keys converge, and exactly-once across kill -9.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::data::{Lcg, assert_same_db, fill_all_types, snapshot};
use support::proc::{Tandem, checkpoint};
use support::*;

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
            .map(|(port, s)| std::thread::spawn(move || random_writes(port, s, 1500)))
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

fn random_writes(port: u16, seed: u64, n: usize) {
    let mut c = Client::connect(port).unwrap();
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
        let reply = c.cmd(&refs);
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
