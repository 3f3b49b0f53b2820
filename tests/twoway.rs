//! `tandem redis twoway` against real servers: no loops, no doubled writes, contested
//! keys converge, and exactly-once across kill -9.

mod support;
mod support_cluster;
mod support_twoway;

use std::time::Duration;

use bytes::Bytes;
use support::data::{assert_same_db, fill_all_types, snapshot};
use support::proc::Tandem;
use support::*;
use support_cluster::*;
use support_twoway::*;

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
    // Every echo of the counters is handled before the checks: B's echoes of A's
    // counters precede a marker written on B now, A's of B's a marker written on A
    // once that one crossed.
    wait_same(&a, &b, &[0], Duration::from_secs(30));
    marker_crosses(&b, &a, "b-done");
    marker_crosses(&a, &b, "a-done");
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
                last = format!(
                    "{} keys vs {}: {}",
                    sa.len(),
                    sb.len(),
                    value_diff(&sa, &sb, 5)
                );
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
                last = format!(
                    "{} keys vs {}: {}",
                    sa.len(),
                    sb.len(),
                    value_diff(&sa, &sb, 5)
                );
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

/// Both sides clusters: every type on every master of each side (hash-tagged), a
/// transaction and a script, and counters through a cluster client end identical.
#[test]
fn both_sides_clusters_disjoint_writes_end_identical() {
    let a = cluster();
    let b = cluster();
    let t = twoway_urls(&a.url(), &b.url(), &[]);
    attached_both_clusters(&a, &b);
    for (side, c, seed) in [("a", &a, 10), ("b", &b, 20)] {
        for (i, p) in tagged_prefixes(c).iter().enumerate() {
            let mut cl = c.master_for(p).client();
            fill_all_types(&mut cl, 0, &format!("{p}{side}:"), seed + i as u64);
            tx_and_script(&mut cl, &format!("{p}{side}-"));
        }
        let mut cc = ClusterClient::new(c);
        for i in 0..600 {
            cc.cmd(&["INCR", &format!("{side}:n:{}", i % 30)], 1);
        }
    }
    wait_until("both sides identical", Duration::from_secs(60), || {
        same_values(&cluster_snapshot(&a), &cluster_snapshot(&b))
    });
    assert_same_snapshot(&cluster_snapshot(&a), &cluster_snapshot(&b), SLACK);
    for c in [&a, &b] {
        let mut cc = ClusterClient::new(c);
        for side in ["a", "b"] {
            for k in 0..30 {
                let key = format!("{side}:n:{k}");
                assert_eq!(cc.cmd(&["GET", &key], 1), Frame::BulkString(b"20".to_vec()));
            }
        }
    }
    let n = cluster_snapshot(&a).len();
    assert!(n > 150, "{n} keys");
    assert!(!t.log_text().contains("conflict:"), "{}", t.log_text());
}

/// A cluster has only db 0: a cluster URL naming another db is one clear error.
#[test]
fn a_cluster_url_with_a_db_is_refused_with_one_error() {
    let a = cluster();
    let b = server();
    let url = format!("{}/2", a.url());
    let mut t = twoway_urls(&url, &b.url(), &[]);
    assert_eq!(t.wait_exit(Duration::from_secs(30)), Some(1));
    let log = t.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].starts_with("tandem: error: ")
            && errors[0].contains(&format!("127.0.0.1:{}", a.masters[0].port))
            && errors[0].contains("only db 0, but the URL selects db 2"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// Copied conflicts are compared on both sides while both keep writing: each side's
/// writer never pauses (one SET after the other on keys of its own; pipelined, they
/// outran a debug build on a loaded CI machine and the test hung), so the two sides
/// are never quiet at once. Before, the resolver compared copied keys only once every
/// stream was caught up with its master: under steady load that was rare or never, and
/// the queue of copied conflicts grew for as long as the load went on.
#[test]
fn copied_conflicts_are_checked_while_both_sides_keep_writing() {
    let a = server();
    let b = server();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let t = twoway(&a, &b, &["--metrics-addr", &addr]);
    attached(&a, &b);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let metric = |name: &str| {
        let (_, _, body) = support::http::request(port, "GET", "/metrics")?;
        // The exporter may list a gauge twice (one line left at 0): take the largest.
        body.lines()
            .filter(|l| l.split(' ').next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(f64::max)
    };
    std::thread::scope(|s| {
        let background: Vec<_> = [(&a, "a"), (&b, "b")]
            .into_iter()
            .map(|(srv, side)| {
                let stop = &stop;
                s.spawn(move || {
                    let mut c = srv.client();
                    let start = std::time::Instant::now();
                    let mut i = 0u64;
                    // Bounded: the test stops it long before.
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && start.elapsed() < Duration::from_secs(120)
                    {
                        c.cmd(&["SET", &format!("bg:{side}:{}", i % 5000), "v"]);
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        // Contested keys: written on both sides at once, then left alone.
        let writers: Vec<_> = [(a.port, 7), (b.port, 8)]
            .into_iter()
            .map(|(port, seed)| {
                s.spawn(move || {
                    let mut c = Client::connect(port).unwrap();
                    random_writes(&mut |a| c.cmd(a), seed, 1500)
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let mut last = String::new();
        // Bounded in time too: a scrape of a busy tandem can take seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let checked = (0..600)
            .take_while(|_| std::time::Instant::now() < deadline)
            .any(|_| {
                let resolved = metric("tandem_conflicts_resolved_total").unwrap_or(0.0);
                let unchecked = metric("tandem_conflicts_unchecked");
                last = format!("resolved {resolved}, unchecked {unchecked:?}");
                if resolved > 0.0 && unchecked == Some(0.0) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
                false
            });
        let running = !background.iter().any(|h| h.is_finished());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written: Vec<u64> = background.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            checked,
            "copied conflicts not compared under load within 60 s ({last})\n{}",
            t.log_text()
        );
        assert!(running, "the background writers stopped first: {written:?}");
    });
}
