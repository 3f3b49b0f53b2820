//! `tandem redis sync` with Redis Cluster on either side, against real 3-master
//! clusters: every type, cross-slot splitting and its limits, source failover, target
//! slot migration, and kill -9, all with exact outcomes.

mod support;
mod support_cluster;

use std::time::Duration;

use bytes::Bytes;

use support::data::{fill_all_types, snapshot};
use support::proc::{Tandem, master_offset};
use support::*;
use support_cluster::*;

const SLACK: Duration = Duration::from_millis(1500);
const CATCH_UP: Duration = Duration::from_secs(90);

fn cluster(replicas: usize) -> Cluster {
    let c = start_cluster(3, replicas);
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    c.all_nodes(&["CONFIG", "SET", "repl-backlog-size", "64mb"]);
    c
}

fn sync_to_cluster(src: &RedisServer, dst: &Cluster, extra: &[&str]) -> Tandem {
    let (s, t) = (src.url(), dst.url());
    let mut args = vec!["redis", "sync", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

fn wait_cluster_target(src: &RedisServer, dst: &Cluster, id: &str) {
    wait_caught_up_any(src, &|| cluster_checkpoint(dst, id), CATCH_UP);
}

#[test]
fn standalone_to_cluster_every_type_and_cross_slot_split() {
    let src = RedisServer::replication_source();
    let dst = cluster(0);
    let mut c = src.client();
    fill_all_types(&mut c, 0, "k:", 1);
    fill_all_types(&mut c, 0, "", 2);
    let t = sync_to_cluster(&src, &dst, &[]);
    wait_cluster_target(&src, &dst, "default");
    assert_same_snapshot(&snapshot(&src, 0), &cluster_snapshot(&dst), SLACK);
    // Live writes: cross-slot MSET, MSETNX, DEL, UNLINK are split per slot exactly.
    c.cmd(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "{a}x", "5"]);
    c.cmd(&["MSETNX", "n1", "1", "n2", "2", "n3", "3"]);
    c.cmd(&["DEL", "k:str", "k:int", "k:list", "nothing"]);
    c.cmd(&["UNLINK", "k:set", "str", "k:zset"]);
    c.cmd(&["INCRBY", "int", "7"]);
    c.cmd(&["MULTI"]);
    c.cmd(&["SET", "{tx}1", "a"]);
    c.cmd(&["RPUSH", "{tx}2", "b", "c"]);
    c.cmd(&["EXEC"]);
    fill_all_types(&mut c, 0, "late:", 3);
    wait_cluster_target(&src, &dst, "default");
    assert_same_snapshot(&snapshot(&src, 0), &cluster_snapshot(&dst), SLACK);
    // A cross-slot RENAME cannot be applied: a clear error, non-zero exit.
    let before = cluster_snapshot(&dst);
    c.cmd(&["RENAME", "a", "b"]);
    let mut t = t;
    let (err, log) = t.one_error_line(Duration::from_secs(30));
    let (sa, sb) = (
        tandem::redis::slot::key_slot(b"a"),
        tandem::redis::slot::key_slot(b"b"),
    );
    assert!(err.contains("RENAME"), "{log}");
    assert!(err.contains(&format!("[{sa}, {sb}]")), "{log}");
    let offset = master_offset(&src);
    assert!(err.contains(&format!("offset {offset}")), "{err}");
    // Nothing of the RENAME applied.
    assert_same_snapshot(&before, &cluster_snapshot(&dst), SLACK);
}

/// A write the cluster refuses early in a large full sync (a key in db 1 without
/// `--db-map`, the precheck skipped) ends tandem at once with the error, although the RDB parser has far more
/// keys queued than the channels between it and the sink hold.
#[test]
fn a_refusal_early_in_a_large_full_sync_surfaces_at_once() {
    let src = RedisServer::replication_source();
    let dst = cluster(0);
    let mut c = src.client();
    c.cmd(&["SELECT", "1"]);
    for chunk in 0..40 {
        let mut args = vec!["MSET".to_string()];
        for i in 0..1000 {
            args.push(format!("k:{chunk}:{i}"));
            args.push("v".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.cmd(&args);
    }
    // The precheck would find the db up front; past it, the sink refuses the first key.
    let mut t = sync_to_cluster(&src, &dst, &["--skip-precheck"]);
    let (err, log) = t.one_error_line(Duration::from_secs(60));
    assert!(err.contains("RESTORE") && err.contains("db 1"), "{log}");
    assert!(err.contains("--db-map 1:0"), "{log}");
}

fn sync_urls(src: &str, dst: &str, extra: &[&str]) -> Tandem {
    let mut args = vec!["redis", "sync", "--source", src, "--target", dst];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// Lowest slot of each master of a fresh 3-master cluster: the shard names in link ids.
const SHARDS: [u16; 3] = [0, 5461, 10922];

/// Wait until every shard's checkpoint (read by `read(link id)`) reached the offset of
/// the shard's current master.
fn wait_shards(src: &Cluster, read: &dyn Fn(&str) -> Option<(String, u64)>) {
    wait_until("every shard caught up", CATCH_UP, || {
        SHARDS.iter().all(|&s| {
            let port = src.owner_port(s);
            let m = src.nodes().find(|n| n.port == port).unwrap();
            let want = master_offset(m);
            read(&format!("default:{s}")).is_some_and(|(st, o)| st == "incr" && o == want)
        })
    });
}

/// Wait until the checkpoint on `dst` of every shard of `c` (masters in `SHARDS` order,
/// none failed over) reached its master's offset.
fn shards_caught_up(c: &Cluster, dst: &RedisServer) {
    wait_until("every shard caught up", CATCH_UP, || {
        (0..3).all(|i| {
            let want = master_offset(&c.masters[i]);
            support::proc::checkpoint(dst, &format!("default:{}", SHARDS[i]))
                .is_some_and(|(st, o)| st == "incr" && o == want)
        })
    })
}

/// Every type on every master of `c` (keys hash-tagged to stay on their master).
fn fill_cluster(c: &Cluster, seed: u64) {
    for (i, p) in tagged_prefixes(c).iter().enumerate() {
        fill_all_types(&mut c.master_for(p).client(), 0, p, seed + i as u64);
    }
}

fn live_writes(cc: &mut ClusterClient, n: usize) {
    for i in 0..n {
        let k = format!("live:{i}");
        cc.cmd(&["INCRBY", &k, "3"], 1);
        cc.cmd(&["RPUSH", &format!("llist:{}", i % 17), &k], 1);
        cc.cmd(
            &[
                "MSET",
                &format!("{{m{i}}}a"),
                "1",
                &format!("{{m{i}}}b"),
                "2",
            ],
            1,
        );
    }
    cc.cmd(&["DEL", "live:3"], 1);
    cc.cmd(&["EXPIRE", "live:4", "1000"], 1);
}

#[test]
fn cluster_to_cluster_every_type() {
    let src = cluster(0);
    let dst = cluster(0);
    fill_cluster(&src, 10);
    let _t = sync_urls(&src.url(), &dst.url(), &[]);
    wait_shards(&src, &|id| cluster_checkpoint(&dst, id));
    assert_same_snapshot(&cluster_snapshot(&src), &cluster_snapshot(&dst), SLACK);
    let mut cc = ClusterClient::new(&src);
    live_writes(&mut cc, 300);
    wait_shards(&src, &|id| cluster_checkpoint(&dst, id));
    assert_same_snapshot(&cluster_snapshot(&src), &cluster_snapshot(&dst), SLACK);
}

#[test]
fn cluster_to_standalone_every_type() {
    let src = cluster(0);
    let dst = RedisServer::start();
    fill_cluster(&src, 20);
    let mut t = sync_urls(&src.url(), &dst.url(), &[]);
    wait_shards(&src, &|id| support::proc::checkpoint(&dst, id));
    assert_same_snapshot(&cluster_snapshot(&src), &snapshot(&dst, 0), SLACK);
    let mut cc = ClusterClient::new(&src);
    live_writes(&mut cc, 300);
    wait_shards(&src, &|id| support::proc::checkpoint(&dst, id));
    assert_same_snapshot(&cluster_snapshot(&src), &snapshot(&dst, 0), SLACK);
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// A writer of INCRs and RPUSHes through a cluster-aware client; returns the number
/// of rounds of `keys` INCRs it completed.
fn cluster_writer(
    c: &Cluster,
    keys: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let mut cc = ClusterClient::new(c);
    std::thread::spawn(move || {
        let mut rounds = 0u64;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && rounds < 100_000 {
            for k in 0..keys {
                cc.cmd(&["INCR", &format!("cnt:{k}")], 1);
            }
            cc.cmd(
                &[
                    "RPUSH",
                    &format!("lst:{}", rounds % 20),
                    &rounds.to_string(),
                ],
                1,
            );
            rounds += 1;
        }
        rounds
    })
}

fn standalone_writer(
    src: &RedisServer,
    keys: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let port = src.port;
    std::thread::spawn(move || {
        let mut c = Client::connect(port).unwrap();
        let mut rounds = 0u64;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && rounds < 100_000 {
            let mut cmds = Vec::new();
            for k in 0..keys {
                cmds.push(vec![Bytes::from("INCR"), Bytes::from(format!("cnt:{k}"))]);
            }
            cmds.push(vec![
                Bytes::from("RPUSH"),
                Bytes::from(format!("lst:{}", rounds % 20)),
                Bytes::from(rounds.to_string()),
            ]);
            c.pipeline(&cmds);
            rounds += 1;
        }
        rounds
    })
}

/// Counters and lists on the target equal the writer's exact totals.
fn assert_counters(read: &mut dyn FnMut(&[&str]) -> Frame, keys: u64, rounds: u64) {
    for k in 0..keys {
        let key = format!("cnt:{k}");
        assert_eq!(
            read(&["GET", &key]),
            Frame::BulkString(rounds.to_string().into_bytes()),
            "{key}"
        );
    }
    let mut total = 0;
    for l in 0..20 {
        match read(&["LLEN", &format!("lst:{l}")]) {
            Frame::Integer(n) => total += n as u64,
            other => panic!("LLEN {other:?}"),
        }
    }
    assert_eq!(total, rounds, "every RPUSH once");
}

#[test]
fn source_failover_under_load_keeps_counters_exact() {
    let src = cluster(1);
    let dst = RedisServer::start();
    let t = sync_urls(&src.url(), &dst.url(), &[]);
    wait_shards(&src, &|id| support::proc::checkpoint(&dst, id));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = cluster_writer(&src, 60, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    // The replica of the first master takes over (a manual failover: no write lost).
    let replica = &src.replicas[0];
    assert_eq!(
        replica.cmd(&["CLUSTER", "FAILOVER"]),
        Frame::SimpleString("OK".into())
    );
    wait_until("replica promoted", Duration::from_secs(30), || {
        replica.info_field("replication", "role").as_deref() == Some("master")
    });
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    assert!(rounds > 5, "the writer barely ran ({rounds})");
    wait_shards(&src, &|id| support::proc::checkpoint(&dst, id));
    let mut d = dst.client();
    assert_counters(&mut |a| d.cmd(a), 60, rounds);
    let log = t.log_text();
    assert!(log.contains("source failover"), "{log}");
    // The new master continued the stream: no full resync on it.
    assert_eq!(
        replica.info_field("stats", "sync_full").as_deref(),
        Some("0"),
        "{log}"
    );
}

#[test]
fn target_slot_migration_under_load_loses_nothing() {
    let src = RedisServer::replication_source();
    let dst = cluster(0);
    let _t = sync_to_cluster(&src, &dst, &[]);
    wait_cluster_target(&src, &dst, "default");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = standalone_writer(&src, 200, stop.clone());
    // Move the slot of cnt:7 (and with it its checkpoint key) to another master.
    let slot = tandem::redis::slot::key_slot(b"cnt:7");
    let (to_port, moved) = move_slot(&dst, slot, 10, Duration::from_millis(50), |from| {
        // The slot must hold data when it moves: wait until tandem wrote cnt:7 there.
        wait_until("cnt:7 on the target", Duration::from_secs(30), || {
            from.client().cmd(&["EXISTS", "cnt:7"]) == Frame::Integer(1)
        });
    });
    assert!(moved > 0, "the slot held keys");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    wait_cluster_target(&src, &dst, "default");
    let mut cc = ClusterClient::new(&dst);
    assert_counters(&mut |a| cc.cmd(a, 1), 200, rounds);
    assert_eq!(dst.owner_port(slot), to_port);
}

#[test]
fn kill9_under_load_into_a_cluster_keeps_counters_exact() {
    let src = RedisServer::replication_source();
    let dst = cluster(0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = standalone_writer(&src, 200, stop.clone());
    for round in 0..4 {
        // Restarts skip the precheck: its reads add seconds per restart under load, and
        // an unthrottled writer then overruns the backlog (a full resync this test rules out).
        let mut t = sync_to_cluster(&src, &dst, &["--batch-commands", "300", "--skip-precheck"]);
        let before = cluster_checkpoint(&dst, "default")
            .map(|c| c.1)
            .unwrap_or(0);
        wait_until("tandem makes progress", CATCH_UP, || {
            cluster_checkpoint(&dst, "default").is_some_and(|(s, o)| s == "incr" && o > before)
        });
        std::thread::sleep(Duration::from_millis(200 + 100 * round));
        assert!(t.is_running(), "tandem died: {}", t.log_text());
        t.kill9();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    let t = sync_to_cluster(&src, &dst, &[]);
    wait_cluster_target(&src, &dst, "default");
    assert!(
        t.log_text()
            .contains("resuming from the target's checkpoint")
    );
    let mut cc = ClusterClient::new(&dst);
    assert_counters(&mut |a| cc.cmd(a, 1), 200, rounds);
    assert_eq!(src.info_field("stats", "sync_full").as_deref(), Some("1"));
}

/// `n` keys of mixed types (strings, hashes, lists, sets, sorted sets, a few streams,
/// some with TTLs) spread over every slot, plus three values over 1 MB.
fn fill_mixed(c: &mut Client, n: u64, seed: u64) {
    let mut r = support::data::Lcg(seed);
    let val = |r: &mut support::data::Lcg, len: usize| -> Bytes {
        Bytes::from(
            (0..len)
                .map(|_| b'a' + r.below(26) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let b = |s: String| Bytes::from(s);
    let mut cmds: Vec<Vec<Bytes>> = Vec::new();
    for i in 0..n {
        let key = b(format!("mixed:{i}"));
        let cmd = match r.below(100) {
            0..50 => {
                let len = 20 + r.below(200) as usize;
                vec![b("SET".into()), key.clone(), val(&mut r, len)]
            }
            50..65 => {
                let mut v = vec![b("HSET".into()), key.clone()];
                for f in 0..8 {
                    v.push(b(format!("f{f}")));
                    v.push(val(&mut r, 16));
                }
                v
            }
            65..80 => {
                let mut v = vec![b("RPUSH".into()), key.clone()];
                v.extend((0..10).map(|_| val(&mut r, 12)));
                v
            }
            80..90 => {
                let mut v = vec![b("SADD".into()), key.clone()];
                v.extend((0..10).map(|_| val(&mut r, 8)));
                v
            }
            _ => {
                let mut v = vec![b("ZADD".into()), key.clone()];
                for m in 0..10 {
                    v.push(b(format!("{}", r.below(1000))));
                    v.push(b(format!("m{m}")));
                }
                v
            }
        };
        cmds.push(cmd);
        if r.below(20) == 0 {
            cmds.push(vec![b("PEXPIRE".into()), key, b("600000".into())]);
        }
        if cmds.len() >= 1000 {
            c.pipeline(&cmds);
            cmds.clear();
        }
    }
    for s in 0..3 {
        for e in 1..=200 {
            cmds.push(vec![
                b("XADD".into()),
                b(format!("stream:{s}")),
                b(format!("{e}-1")),
                b("f".into()),
                val(&mut r, 30),
            ]);
        }
    }
    // Values over 1 MB: a string, a hash, a list.
    cmds.push(vec![
        b("SET".into()),
        b("big:str".into()),
        val(&mut r, 1_500_000),
    ]);
    c.pipeline(&cmds);
    cmds.clear();
    for chunk in 0..4 {
        let mut h = vec![b("HSET".into()), b("big:hash".into())];
        let mut l = vec![b("RPUSH".into()), b("big:list".into())];
        for f in 0..300 {
            h.push(b(format!("f{chunk}:{f}")));
            h.push(val(&mut r, 1000));
            l.push(val(&mut r, 1000));
        }
        cmds.push(h);
        cmds.push(l);
    }
    c.pipeline(&cmds);
}

/// Regression: a full sync of tens of thousands of keys into a cluster target. A pump
/// of `--batch-commands` keys makes hundreds of slot batches per master; once a master's
/// window was full, the sink waited for the replies of batches still in its write
/// buffer, hit the 30 s reply timeout ("cluster target connection lost"), and did the
/// same again after resending: no progress at all.
#[test]
fn full_sync_of_many_mixed_keys_and_big_values_into_a_cluster() {
    let src = RedisServer::replication_source();
    let dst = cluster(0);
    let mut c = src.client();
    fill_mixed(&mut c, 20_000, 11);
    let t = sync_to_cluster(&src, &dst, &[]);
    wait_caught_up_any(
        &src,
        &|| cluster_checkpoint(&dst, "default"),
        Duration::from_secs(60),
    );
    let log = t.log_text();
    assert!(!log.contains("connection lost"), "{log}");
    let expected = snapshot(&src, 0);
    assert_eq!(expected.len(), 20_000 + 3 + 3);
    // The two snapshots are seconds apart: TTLs (10 minutes) within 30 s.
    assert_same_snapshot(&expected, &cluster_snapshot(&dst), Duration::from_secs(30));
}

/// Resharding on the target during a full sync: the RESTOREs go in plain pipelines per
/// master, and those of the slot that moves meet `ASK` (a key not yet on the old master)
/// and then `MOVED`; each must be sent again on its new route, none lost or doubled.
#[test]
fn target_slot_migration_during_a_full_sync_loses_no_key() {
    let src = RedisServer::replication_source();
    let dst = cluster(0);
    let mut c = src.client();
    fill_mixed(&mut c, 20_000, 23);
    // 3000 keys in one slot, spread through the RDB among the others.
    for i in 0..3000 {
        c.cmd(&["SET", &format!("{{hot}}k{i}"), &format!("v{i}")]);
    }
    let expected = snapshot(&src, 0);
    let total = expected.len() as u64;
    // Small batches: many round trips, so the copy lasts while the slot moves.
    let t = sync_to_cluster(&src, &dst, &["--batch-commands", "10"]);
    let slot = tandem::redis::slot::key_slot(b"{hot}");
    let (to_port, moved) = move_slot(&dst, slot, 20, Duration::from_millis(2), |from| {
        wait_until(
            "the first hot keys on the target",
            Duration::from_secs(60),
            || {
                from.client()
                    .cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
                    != Frame::Integer(0)
            },
        );
        let dbsize = |m: &RedisServer| match m.client().cmd(&["DBSIZE"]) {
            Frame::Integer(n) => n as u64,
            other => panic!("DBSIZE: {other:?}"),
        };
        let held: u64 = dst.masters.iter().map(dbsize).sum();
        assert!(held < total, "the copy was over before the slot moved");
    });
    assert!(moved > 0, "the slot held keys when it moved");
    wait_caught_up_any(&src, &|| cluster_checkpoint(&dst, "default"), CATCH_UP);
    assert_eq!(dst.owner_port(slot), to_port);
    let log = t.log_text();
    assert!(!log.contains("connection lost"), "{log}");
    assert_same_snapshot(&expected, &cluster_snapshot(&dst), Duration::from_secs(60));
}

/// Resharding on the source: a slot full of keys moves from one source master to
/// another (CLUSTER SETSLOT + MIGRATE) while writes flow elsewhere. The importing
/// master's stream carries RESTORE-ASKING of each key, the old master's a DEL of it;
/// whatever order the two engines apply them in, the target must end with every key.
#[test]
fn source_slot_migration_loses_no_key() {
    let src = cluster(0);
    let dst = RedisServer::start();
    // 300 keys under one hash tag: one slot, on one master.
    let mut cc = ClusterClient::new(&src);
    for i in 0..300 {
        cc.cmd(&["SET", &format!("{{mig}}k{i}"), &format!("v{i}")], 1);
    }
    let _t = sync_urls(&src.url(), &dst.url(), &[]);
    wait_shards(&src, &|id| support::proc::checkpoint(&dst, id));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = cluster_writer(&src, 50, stop.clone());
    let slot = tandem::redis::slot::key_slot(b"{mig}");
    let (_, moved) = move_slot(&src, slot, 20, Duration::ZERO, |_| {});
    assert_eq!(moved, 300);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    wait_shards(&src, &|id| support::proc::checkpoint(&dst, id));
    let mut d = dst.client();
    for i in 0..300 {
        assert_eq!(
            d.cmd(&["GET", &format!("{{mig}}k{i}")]),
            Frame::BulkString(format!("v{i}").into_bytes()),
            "{{mig}}k{i} after the migration"
        );
    }
    assert_counters(&mut |a| d.cmd(a), 50, rounds);
}

/// Resharding on the source while the old master's link lags: a key written on X, then
/// migrated to Y and written again there, must end with Y's value. X's stream (its
/// older write, then the migration's DEL) is held back at X's fault proxy while Y's
/// stream (`RESTORE-ASKING`, then the new write) flows. Without the barrier the target
/// took Y's writes first and X's older write last, and kept it.
#[test]
fn a_key_migrated_then_rewritten_keeps_its_new_value_when_the_old_masters_link_lags() {
    use support::faultproxy::{Dir, Flow};
    use support_cluster::proxied::ProxiedCluster;
    let src = ProxiedCluster::start(false);
    let c = &src.cluster;
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start();
    let key = "{mig}k";
    let slot = tandem::redis::slot::key_slot(b"{mig}");
    assert!(!SHARDS.contains(&slot), "a shard's name must not move");
    let xi = slot as usize / 5461;
    let yi = (xi + 1) % 3;
    let (x, y) = (&c.masters[xi], &c.masters[yi]);
    x.cmd(&["SET", key, "v0"]);
    let t = sync_urls(&src.url(), &dst.url(), &[]);
    let caught_up = || shards_caught_up(c, &dst);
    caught_up();
    src.proxies[xi].set(Dir::Down, Flow::Stall);
    x.cmd(&["SET", key, "v1"]);
    let (x_id, y_id) = (
        x.client().cmd_text(&["CLUSTER", "MYID"]),
        y.client().cmd_text(&["CLUSTER", "MYID"]),
    );
    let s = slot.to_string();
    y.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &x_id]);
    x.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &y_id]);
    let yport = y.port.to_string();
    assert_eq!(
        x.cmd(&["MIGRATE", "127.0.0.1", &yport, key, "0", "5000"]),
        Frame::SimpleString(b"OK".to_vec())
    );
    for m in &c.masters {
        m.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &y_id]);
    }
    y.cmd(&["SET", key, "v2"]);
    let held = "waiting until its old master's writes landed";
    let get = || dst.client().cmd(&["GET", key]);
    wait_until("the new master's stream read", CATCH_UP, || {
        get() == Frame::BulkString(b"v2".to_vec()) || t.log_text().contains(held)
    });
    src.proxies[xi].set(Dir::Down, Flow::Pass);
    caught_up();
    assert_eq!(get(), Frame::BulkString(b"v2".to_vec()), "{}", t.log_text());
    assert!(t.log_text().contains(held), "{}", t.log_text());
    assert_eq!(
        y.client().cmd(&["GET", key]),
        Frame::BulkString(b"v2".to_vec())
    );
}

/// A master's DEL is checked against the source (does the key live on another master
/// now?). When that check meets `CLUSTERDOWN` — a third master frozen past the node
/// timeout — it waits and asks again; before, the shard stopped on the first refusal
/// and took the whole sync down (a CI run). The DEL lands once the cluster is up.
#[test]
fn a_deletes_resharding_check_outlasts_a_cluster_down_source() {
    use support::faultproxy::{Dir, Flow};
    use support_cluster::proxied::ProxiedCluster;
    let src = ProxiedCluster::start(false);
    let c = &src.cluster;
    let dst = RedisServer::start();
    let key = "{del}k";
    let xi = tandem::redis::slot::key_slot(b"{del}") as usize / 5461;
    let (x, z) = (&c.masters[xi], &c.masters[(xi + 1) % 3]);
    x.cmd(&["SET", key, "v"]);
    let mut t = sync_urls(&src.url(), &dst.url(), &[]);
    let caught_up = || shards_caught_up(c, &dst);
    caught_up();
    assert_eq!(dst.cmd(&["GET", key]), Frame::BulkString(b"v".to_vec()));
    // tandem reads the DEL only once X answers CLUSTERDOWN.
    src.proxies[xi].set(Dir::Down, Flow::Stall);
    assert_eq!(x.cmd(&["DEL", key]), Frame::Integer(1));
    z.freeze(true);
    wait_until("the cluster is down", CATCH_UP, || {
        let info = x.client().cmd_text(&["CLUSTER", "INFO"]);
        info.contains("cluster_state:fail")
    });
    src.proxies[xi].set(Dir::Down, Flow::Pass);
    t.wait_log("checking where a deleted key lives: CLUSTERDOWN", CATCH_UP);
    z.freeze(false);
    c.wait_ok();
    caught_up();
    assert_eq!(dst.cmd(&["GET", key]), Frame::Null, "{}", t.log_text());
    assert!(t.is_running(), "{}", t.log_text());
    assert!(!t.log_text().contains("shard stopped"), "{}", t.log_text());
}

/// Three source masters into one standalone target; one master's link is down while
/// keys are deleted there and its 16 kB backlog overflows. Its full resync removes,
/// before loading, only the keys of the slots that master serves: the other masters'
/// keys on the target are other links' and stay, and the deleted ones go.
#[test]
fn a_source_masters_full_resync_clears_only_its_own_slots() {
    use support_cluster::proxied::ProxiedCluster;
    let src = ProxiedCluster::start(false);
    let c = &src.cluster;
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    let dst = RedisServer::start();
    let tags = tagged_prefixes(c);
    let mut cc = ClusterClient::new(c);
    for t in &tags {
        for i in 0..20 {
            cc.cmd(&["SET", &format!("{t}gone{i}"), "v"], 1);
            cc.cmd(&["SET", &format!("{t}kept{i}"), "v"], 1);
        }
    }
    let t = sync_urls(&src.url(), &dst.url(), &[]);
    let caught_up = || shards_caught_up(c, &dst);
    caught_up();
    let x = &c.masters[1];
    x.cmd(&["CONFIG", "SET", "repl-backlog-size", "16384"]);
    let xt = tags
        .iter()
        .find(|t| c.master_for(t).port == x.port)
        .unwrap();
    src.proxies[1].refuse(true);
    assert_eq!(src.proxies[1].cut_replication(), 1);
    for i in 0..20 {
        assert_eq!(x.cmd(&["DEL", &format!("{xt}gone{i}")]), Frame::Integer(1));
    }
    let filler = "f".repeat(1000);
    for i in 0..100 {
        x.cmd(&["SET", &format!("{xt}fill{i}"), &filler]);
    }
    // The other masters' deleted keys go through their streams, as usual.
    let other = tags.iter().find(|t| *t != xt).unwrap();
    cc.cmd(&["DEL", &format!("{other}gone0")], 1);
    src.proxies[1].refuse(false);
    t.wait_log("backlog overrun or another history", CATCH_UP);
    caught_up();
    let mut want: Vec<Vec<u8>> = c
        .masters
        .iter()
        .flat_map(|m| support::data::keys(&mut m.client(), 0))
        .collect();
    want.sort();
    assert_eq!(
        support::data::keys(&mut dst.client(), 0),
        want,
        "{}",
        t.log_text()
    );
    assert_eq!(want.len(), 20 * 2 * 3 - 20 - 1 + 100);
    // Master 1's 40 keys from before the cut, no other master's.
    assert!(t.log_text().contains("removed=40"), "{}", t.log_text());
}
