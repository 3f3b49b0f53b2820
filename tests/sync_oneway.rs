//! `tandem redis sync` against real servers: full sync then incremental, every type,
//! several dbs, filters, RESTORE vs rewrite, exactly-once across kill -9, WAIT, and the
//! target errors a user meets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::data::{Lcg, assert_same_db, fill_all_types};
use support::proc::{Tandem, checkpoint, master_offset, wait_caught_up};
use support::*;

const SLACK: Duration = Duration::from_millis(1500);
const CATCH_UP: Duration = Duration::from_secs(60);

/// Writes after the full sync: overwrites, deletes, expiries, a transaction, a script.
fn incremental_writes(c: &mut Client, db: u32, p: &str) {
    c.cmd(&["SELECT", &db.to_string()]);
    c.cmd(&["SET", &format!("{p}str"), "changed"]);
    c.cmd(&["INCRBY", &format!("{p}int"), "5"]);
    c.cmd(&["DEL", &format!("{p}set")]);
    c.cmd(&["LPUSH", &format!("{p}list"), "head"]);
    c.cmd(&["ZINCRBY", &format!("{p}zset"), "2.25", "a"]);
    c.cmd(&["HDEL", &format!("{p}hash"), "f1"]);
    c.cmd(&["EXPIRE", &format!("{p}long"), "500"]);
    c.cmd(&["PERSIST", &format!("{p}bighash")]);
    c.cmd(&["XADD", &format!("{p}stream"), "*", "f", "new"]);
    c.cmd(&["XACK", &format!("{p}stream"), "g1", "1000-1"]);
    c.cmd(&["MULTI"]);
    c.cmd(&["SET", &format!("{p}tx1"), "a"]);
    c.cmd(&["RPUSH", &format!("{p}tx2"), "b", "c"]);
    let r = c.cmd(&["EXEC"]);
    assert!(matches!(r, Frame::Array(_)), "{r:?}");
    let script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('INCR', KEYS[2]); return 1";
    c.cmd(&[
        "EVAL",
        script,
        "2",
        &format!("{p}ev1"),
        &format!("{p}ev2"),
        "x",
    ]);
    c.cmd(&["RENAME", &format!("{p}tx1"), &format!("{p}renamed")]);
    c.cmd(&["SETEX", &format!("{p}setex"), "1000", "v"]);
}

#[test]
fn full_then_incremental_every_type_several_dbs() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let mut c = src.client();
    for (db, seed) in [(0, 1), (1, 2), (5, 3)] {
        fill_all_types(&mut c, db, "k:", seed);
    }
    // Keys tandem must not copy: already expiring and reserved.
    c.cmd(&["SELECT", "0"]);
    c.cmd(&["SET", "__tandem:foreign", "x"]);
    // A function library travels in the RDB; another one is loaded live.
    let lib = |name: &str| {
        format!(
            "#!lua name={name}\nredis.register_function('{name}_set', \
             function(keys, args) return redis.call('SET', keys[1], args[1]) end)"
        )
    };
    let r = c.cmd(&["FUNCTION", "LOAD", &lib("before")]);
    assert!(!matches!(r, Frame::Error(_)), "{r:?}");
    let mut t = Tandem::sync(&src, &dst, &[]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    for db in [0, 1, 5] {
        assert_same_db(&src, db, &dst, db, SLACK);
    }
    for db in [0, 1, 5] {
        incremental_writes(&mut c, db, "k:");
    }
    fill_all_types(&mut c, 7, "late:", 9);
    let r = c.cmd(&["FUNCTION", "LOAD", &lib("after")]);
    assert!(!matches!(r, Frame::Error(_)), "{r:?}");
    c.cmd(&["SELECT", "0"]);
    c.cmd(&["FCALL", "after_set", "1", "k:via-function", "yes"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    let mut d = dst.client();
    for name in ["before", "after"] {
        let r = d.cmd(&["FUNCTION", "LIST", "LIBRARYNAME", name]);
        assert!(
            matches!(&r, Frame::Array(a) if a.len() == 1),
            "library {name} on the target: {r:?}"
        );
    }
    for db in [0, 1, 5, 7] {
        assert_same_db(&src, db, &dst, db, SLACK);
    }
    assert_eq!(
        dst.client().cmd(&["EXISTS", "__tandem:foreign"]),
        Frame::Integer(0)
    );
    // Ctrl-C finishes cleanly and leaves the checkpoint at the source's offset.
    let want = master_offset(&src);
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    assert_eq!(checkpoint(&dst, "default"), Some(("incr".into(), want)));
}

#[test]
fn restore_and_rewrite_paths_give_the_same_data() {
    let src = RedisServer::replication_source();
    let restore_dst = RedisServer::start();
    let rewrite_dst = RedisServer::start();
    let small_keys_dst = RedisServer::start();
    let mut c = src.client();
    fill_all_types(&mut c, 0, "", 11);
    fill_all_types(&mut c, 3, "x", 12);
    let _a = Tandem::sync(&src, &restore_dst, &[]);
    let _b = Tandem::sync(&src, &rewrite_dst, &["--rewrite-only"]);
    // Every value over 200 bytes takes the chunked big-key path.
    let _c = Tandem::sync(&src, &small_keys_dst, &["--big-key-bytes", "200"]);
    for dst in [&restore_dst, &rewrite_dst, &small_keys_dst] {
        wait_caught_up(&src, dst, "default", CATCH_UP);
        assert_same_db(&src, 0, dst, 0, SLACK);
        assert_same_db(&src, 3, dst, 3, SLACK);
    }
    let log = _b.log_text();
    assert!(
        log.contains("restored=0"),
        "rewrite-only must not RESTORE: {log}"
    );
    let log = _a.log_text();
    assert!(log.contains("rewritten=0"), "RESTORE path expected: {log}");
}

#[test]
fn filters_and_db_map() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let mut c = src.client();
    fill_all_types(&mut c, 0, "keep:", 21);
    fill_all_types(&mut c, 0, "drop:", 22);
    fill_all_types(&mut c, 1, "keep:", 23);
    fill_all_types(&mut c, 2, "keep:", 24);
    let _t = Tandem::sync(
        &src,
        &dst,
        &[
            "--include-prefix",
            "keep:",
            "--exclude-db",
            "2",
            "--db-map",
            "1:4",
        ],
    );
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    // Live writes through the same filters, including a partly filtered MSET and DEL.
    c.cmd(&["SELECT", "1"]);
    c.cmd(&["MSET", "keep:m1", "1", "drop:m2", "2", "keep:m3", "3"]);
    c.cmd(&["DEL", "keep:str", "drop:str"]);
    c.cmd(&["SELECT", "2"]);
    c.cmd(&["SET", "keep:in-excluded-db", "x"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    // Expected: source db 0 and 1 minus the drop: keys; db 1 lands in db 4; db 2 nowhere.
    for (sdb, ddb) in [(0u32, 0u32), (1, 4)] {
        let mut sc = src.client();
        sc.cmd(&["SELECT", &sdb.to_string()]);
        let mut dc = dst.client();
        dc.cmd(&["SELECT", &ddb.to_string()]);
        let sk: Vec<Vec<u8>> = support::data::keys(&mut sc, sdb)
            .into_iter()
            .filter(|k| k.starts_with(b"keep:"))
            .collect();
        let dk = support::data::keys(&mut dc, ddb);
        assert_eq!(sk, dk, "keys of source db {sdb} vs target db {ddb}");
        for k in &sk {
            sc.cmd(&["SELECT", &sdb.to_string()]);
            dc.cmd(&["SELECT", &ddb.to_string()]);
            assert_eq!(
                support::data::read_key(&mut sc, k),
                support::data::read_key(&mut dc, k),
                "{}",
                String::from_utf8_lossy(k)
            );
        }
    }
    for db in [1u32, 2] {
        let mut dc = dst.client();
        assert!(
            support::data::keys(&mut dc, db).is_empty(),
            "target db {db} must stay empty"
        );
    }
}

/// Many INCR and RPUSH writers; tandem is killed with SIGKILL five times and restarted.
/// Afterwards every counter and list length is exactly the source's: nothing lost,
/// nothing applied twice.
#[test]
fn kill9_loop_keeps_counters_exact() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    src.client().cmd(&["SET", "seed", "1"]);
    let port = src.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(port).unwrap();
        let mut r = Lcg(5);
        let mut rounds = 0u64;
        while !flag.load(std::sync::atomic::Ordering::SeqCst) && rounds < 100_000 {
            let mut cmds = Vec::new();
            for _ in 0..50 {
                let k = r.below(200);
                cmds.push(vec![Bytes::from("INCR"), Bytes::from(format!("cnt:{k}"))]);
                cmds.push(vec![
                    Bytes::from("RPUSH"),
                    Bytes::from(format!("lst:{}", k % 50)),
                    Bytes::from(rounds.to_string()),
                ]);
            }
            c.pipeline(&cmds);
            rounds += 1;
        }
        rounds
    });
    for round in 0..5 {
        let mut t = Tandem::sync(&src, &dst, &["--batch-commands", "300"]);
        // Let it make progress (a checkpoint beyond the previous one), then kill it.
        let before = checkpoint(&dst, "default").map(|(_, o)| o).unwrap_or(0);
        wait_until("tandem makes progress", CATCH_UP, || {
            checkpoint(&dst, "default").is_some_and(|(s, o)| s == "incr" && o > before)
        });
        std::thread::sleep(Duration::from_millis(150 + 50 * round));
        assert!(t.is_running(), "tandem died: {}", t.log_text());
        t.kill9();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    assert!(rounds > 5, "the writer barely ran ({rounds} rounds)");
    let t = Tandem::sync(&src, &dst, &[]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    let log = t.log_text();
    assert!(
        log.contains("resuming from the target's checkpoint"),
        "{log}"
    );
    let mut s = src.client();
    let mut d = dst.client();
    let mut total = 0;
    for k in 0..200 {
        let key = format!("cnt:{k}");
        let a = s.cmd(&["GET", &key]);
        assert_eq!(a, d.cmd(&["GET", &key]), "{key}");
        if let Frame::BulkString(v) = a {
            total += String::from_utf8(v).unwrap().parse::<u64>().unwrap();
        }
    }
    assert_eq!(total, rounds * 50, "every INCR of the source counted once");
    for k in 0..50 {
        let key = format!("lst:{k}");
        assert_eq!(
            s.cmd_int(&["LLEN", &key]),
            d.cmd_int(&["LLEN", &key]),
            "{key}"
        );
        assert_eq!(
            s.cmd(&["LRANGE", &key, "0", "-1"]),
            d.cmd(&["LRANGE", &key, "0", "-1"]),
            "{key} order"
        );
    }
    // Only one full sync happened: the restarts all resumed with +CONTINUE.
    assert_eq!(src.info_field("stats", "sync_full").as_deref(), Some("1"));
}

#[test]
fn wait_on_the_source_returns_once_the_target_has_the_write() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let _t = Tandem::sync(&src, &dst, &[]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    let mut c = src.client();
    let mut d = dst.client();
    for i in 0..20 {
        let v = format!("v{i}");
        c.cmd(&["SET", "waited", &v]);
        assert_eq!(c.cmd_int(&["WAIT", "1", "10000"]), 1);
        assert_eq!(d.cmd_text(&["GET", "waited"]), v, "after WAIT returned");
    }
}

#[test]
fn a_readonly_target_stops_with_a_clear_error() {
    let src = RedisServer::replication_source();
    let other = RedisServer::start();
    let dst = RedisServer::start_replica_of(&other);
    let mut t = Tandem::sync(&src, &dst, &[]);
    let (err, log) = t.one_error_line(Duration::from_secs(60));
    assert!(err.contains("READONLY"), "{log}");
    assert!(err.contains(&format!("127.0.0.1:{}", dst.port)), "{log}");
}

#[test]
fn an_out_of_memory_target_is_retried_until_it_has_room() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let mut c = src.client();
    fill_all_types(&mut c, 0, "", 31);
    dst.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    dst.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let t = Tandem::sync(&src, &dst, &[]);
    wait_until(
        "tandem reports OOM and retries",
        Duration::from_secs(30),
        || t.log_text().contains("OOM"),
    );
    assert_eq!(dst.client().cmd_int(&["DBSIZE"]), 0);
    dst.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_same_db(&src, 0, &dst, 0, SLACK);
}

/// The target drops tandem's connection again and again under load (`CLIENT KILL`), so
/// replies of batches in flight are lost. After each reconnect tandem reads the target's
/// checkpoint to learn which of them landed and resends only the others: counters end
/// exact.
#[test]
fn lost_target_connections_never_double_or_lose_a_write() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let t = Tandem::sync(&src, &dst, &["--batch-commands", "100", "--window", "16"]);
    wait_until("full sync done", CATCH_UP, || {
        checkpoint(&dst, "default").is_some_and(|(s, _)| s == "incr")
    });
    let port = src.port;
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(port).unwrap();
        for round in 0..400u64 {
            let cmds: Vec<Vec<Bytes>> = (0..50)
                .flat_map(|i| {
                    [
                        vec![Bytes::from("INCR"), Bytes::from(format!("n:{i}"))],
                        vec![
                            Bytes::from("RPUSH"),
                            Bytes::from(format!("l:{}", i % 10)),
                            Bytes::from(round.to_string()),
                        ],
                    ]
                })
                .collect();
            c.pipeline(&cmds);
        }
    });
    let mut killed = 0;
    let mut k = dst.client();
    for _ in 0..200 {
        killed += k.cmd_int(&["CLIENT", "KILL", "TYPE", "normal"]);
        if writer.is_finished() && killed >= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    assert!(
        killed >= 5,
        "tandem's target connection was killed only {killed} times"
    );
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    let (mut s, mut d) = (src.client(), dst.client());
    for i in 0..50 {
        let key = format!("n:{i}");
        assert_eq!(d.cmd_text(&["GET", &key]), "400", "{key}\n{}", t.log_text());
    }
    for i in 0..10 {
        let key = format!("l:{i}");
        assert_eq!(
            s.cmd(&["LRANGE", &key, "0", "-1"]),
            d.cmd(&["LRANGE", &key, "0", "-1"]),
            "{key}"
        );
    }
    assert!(
        t.log_text().contains("target write failed, retrying"),
        "{}",
        t.log_text()
    );
}

#[test]
fn a_target_user_without_permission_stops_with_a_clear_error() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let r = dst.cmd(&[
        "ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-restore",
    ]);
    assert_eq!(r, Frame::SimpleString("OK".into()));
    src.client().cmd(&["SET", "k", "v"]);
    let target = format!("redis://limited:pw@127.0.0.1:{}", dst.port);
    let source = src.url();
    let mut t = Tandem::start(&["redis", "sync", "--source", &source, "--target", &target]);
    let (err, log) = t.one_error_line(Duration::from_secs(60));
    assert!(err.contains("NOPERM") && err.contains("RESTORE"), "{log}");
    assert!(!log.contains(":pw@"), "{log}");
}

/// A stop request while the target is gone waits for the batch in flight (up to the
/// give-up time); a second one exits at once (what that batch held is resent after a
/// restart: the kill -9 tests cover that any stop point is safe).
#[test]
fn a_second_signal_stops_at_once_while_the_target_is_gone() {
    let src = RedisServer::replication_source();
    let mut dst = RedisServer::start();
    let mut t = Tandem::sync(&src, &dst, &[]);
    src.cmd(&["SET", "k", "1"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    dst.kill();
    src.cmd(&["SET", "k", "2"]);
    let limit = Duration::from_secs(20);
    wait_until("tandem retrying the lost target", limit, || {
        t.log_text().contains("retrying")
    });
    t.signal("INT");
    wait_until("the stop request acknowledged", limit, || {
        t.log_text().contains("signal again to exit at once")
    });
    assert!(t.is_running(), "a stop waits for the batch in flight");
    t.signal("INT");
    assert_eq!(t.wait_exit(limit), Some(130), "{}", t.log_text());
    assert!(t.log_text().contains("stopped at once by a second signal"));
}
