//! Faults on the source link, injected by the fault proxy between tandem and the
//! source (tests/support/faultproxy.rs). Each scenario runs under live writes and ends
//! with every counter and list compared exactly (tests/support/load.rs).

mod support;

use std::time::{Duration, Instant};

use support::faultproxy::{Dir, FaultProxy, Flow, delete_past_the_backlog_while_cut};
use support::load::{Writer, assert_exact, fill_incompressible, stat};
use support::proc::{Tandem, checkpoint, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(90);

fn source(extra: &[(&str, &str)]) -> RedisServer {
    let mut opts = ServerOpts::default()
        .arg("repl-diskless-sync-delay", "0")
        .arg("repl-ping-replica-period", "1");
    for (k, v) in extra {
        opts = opts.arg(k, v);
    }
    RedisServer::start_with(opts)
}

fn sync_via(source_url: &str, target: &RedisServer, extra: &[&str]) -> Tandem {
    let t = target.url();
    let mut args = vec!["redis", "sync", "--source", source_url, "--target", &t];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// The link is cut twice while the RDB is on the wire (slowed down so a cut lands in
/// it), then five times while commands stream. Each cut in the RDB starts the full sync
/// over (the master cannot continue a transfer); each cut in the stream resumes with
/// `+CONTINUE` at the byte after the last one received.
#[test]
fn cuts_mid_rdb_start_over_and_cuts_mid_stream_continue() {
    let src = source(&[("repl-backlog-size", "64mb")]);
    let dst = RedisServer::start();
    fill_incompressible(&mut src.client(), 3000, 1000, 7);
    let proxy = FaultProxy::start(src.port);
    proxy.set(Dir::Down, Flow::Slow(1_000_000));
    let writer = Writer::start(src.port, 1, Duration::from_millis(5), 1_000_000);
    let t = sync_via(&proxy.url(), &dst, &[]);
    for cut in 1..=2u64 {
        let at = proxy.forwarded(Dir::Down) + 600_000;
        wait_until("part of the RDB through", CATCH_UP, || {
            proxy.forwarded(Dir::Down) >= at
        });
        assert!(
            !t.log_text().contains("full sync applied"),
            "cut {cut} must land inside the RDB"
        );
        proxy.cut();
    }
    proxy.set(Dir::Down, Flow::Pass);
    t.wait_log("full sync applied", CATCH_UP);
    for _ in 0..5 {
        let before = proxy.forwarded(Dir::Down);
        wait_until("stream bytes flowing", CATCH_UP, || {
            proxy.forwarded(Dir::Down) > before + 20_000
        });
        proxy.cut();
    }
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    let log = t.log_text();
    assert_eq!(
        count(&log, "the full sync starts over"),
        2,
        "each cut in the RDB restarts it\n{log}"
    );
    assert!(
        count(&log, "partial resync accepted") >= 5,
        "each cut in the stream continues\n{log}"
    );
    assert_eq!(
        stat(&src, "sync_full"),
        3,
        "one full resync per RDB cut, no more"
    );
    assert!(stat(&src, "sync_partial_ok") >= 5);
}

/// A backlog of 16 kB cannot cover what is written while the link is down: the
/// master answers `+FULLRESYNC`, tandem says so and copies again, and the end state
/// is still exact.
#[test]
fn backlog_overrun_while_disconnected_is_a_logged_full_resync_still_exact() {
    let src = source(&[("repl-backlog-size", "16kb")]);
    let dst = RedisServer::start();
    let proxy = FaultProxy::start(src.port);
    let writer = Writer::start(src.port, 2, Duration::from_millis(2), 1_000_000);
    let t = sync_via(&proxy.url(), &dst, &["--skip-precheck"]);
    t.wait_log("full sync applied", CATCH_UP);
    proxy.refuse(true);
    proxy.cut();
    // Far more than the backlog holds (a round is ~2.5 kB of stream).
    let at = writer.rounds() + 100;
    wait_until("writes while the link is down", CATCH_UP, || {
        writer.rounds() >= at
    });
    proxy.refuse(false);
    t.wait_log("backlog overrun or another history", CATCH_UP);
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    assert_eq!(stat(&src, "sync_full"), 2, "{}", t.log_text());
}

/// A blackholed link (no data, no RST, no FIN) is noticed by `--repl-timeout` within
/// a bounded time, reconnected once the path is back, and continued with `+CONTINUE`.
#[test]
fn a_blackholed_source_link_is_detected_by_the_replication_timeout() {
    let src = source(&[("repl-backlog-size", "64mb")]);
    let dst = RedisServer::start();
    let proxy = FaultProxy::start(src.port);
    let writer = Writer::start(src.port, 3, Duration::from_millis(5), 1_000_000);
    let t = sync_via(&proxy.url(), &dst, &["--repl-timeout", "2"]);
    t.wait_log("full sync applied", CATCH_UP);
    wait_until("some stream applied", CATCH_UP, || {
        checkpoint(&dst, "default").is_some_and(|(s, o)| s == "incr" && o > 0)
    });
    proxy.set_both(Flow::Blackhole);
    let start = Instant::now();
    t.wait_log("replica link lost", Duration::from_secs(10));
    let noticed = start.elapsed();
    assert!(
        noticed >= Duration::from_millis(1500) && noticed < Duration::from_secs(6),
        "a 2 s replication timeout noticed the blackhole after {noticed:?}"
    );
    // The path comes back: connections opened meanwhile went nowhere and are reset.
    proxy.set_both(Flow::Pass);
    proxy.cut();
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    assert_eq!(stat(&src, "sync_full"), 1, "{}", t.log_text());
    assert!(t.log_text().contains("partial resync accepted"));
}

/// A standalone source with a replica, behind one address (a virtual IP, a DNS name:
/// here the proxy). The primary dies, its replica is promoted and the address moves to
/// it: tandem reconnects there with the old history's id and offset, and the promoted
/// replica continues it (PSYNC2): no full resync, nothing lost or doubled.
#[test]
fn a_promoted_replica_behind_the_same_address_continues_the_stream() {
    // No PINGs: the replica and tandem must stop at the same offset when the primary
    // dies (a PING only tandem saw would put it ahead of the replica).
    let mut primary = source(&[("repl-ping-replica-period", "3600")]);
    let replica = RedisServer::start_replica_of(&primary);
    let proxy = FaultProxy::start(primary.port);
    let dst = RedisServer::start();
    let writer = Writer::start(primary.port, 4, Duration::from_millis(2), 200);
    let t = sync_via(&proxy.url(), &dst, &[]);
    let rounds = {
        wait_until("200 rounds written", CATCH_UP, || writer.rounds() == 200);
        let r = writer.stop();
        wait_caught_up(&primary, &dst, "default", CATCH_UP);
        let want = support::proc::master_offset(&primary);
        wait_until("the replica has every write", CATCH_UP, || {
            replica
                .info_field("replication", "master_repl_offset")
                .is_some_and(|o| o.parse::<u64>().unwrap() == want)
        });
        r
    };
    let old_id = primary.info_field("replication", "master_replid").unwrap();
    primary.kill();
    replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    proxy.set_upstream(replica.port);
    proxy.cut();
    t.wait_log("partial resync accepted", CATCH_UP);
    let writer = Writer::start(replica.port, 5, Duration::from_millis(2), 200);
    wait_until("200 more rounds written", CATCH_UP, || {
        writer.rounds() == 200
    });
    let more = writer.stop();
    wait_caught_up(&replica, &dst, "default", CATCH_UP);
    assert_exact(&replica, &dst, rounds + more);
    assert_eq!(stat(&replica, "sync_full"), 0, "{}", t.log_text());
    let new_id = replica.info_field("replication", "master_replid").unwrap();
    assert_ne!(new_id, old_id);
    let log = t.log_text();
    assert!(log.contains("partial resync accepted"), "{log}");
    assert!(
        log.contains(&new_id),
        "the new history id is taken up\n{log}"
    );
}

/// Keys deleted on the source while the link is down, and a backlog too small to
/// continue: the full resync must not leave them on the target. `--on-resync clear`
/// (the default) removes the link's keys before loading the new RDB — only those: a
/// key outside the key filter and a db that is not replicated keep theirs.
/// `--on-resync keep` loads over them and the deleted keys stay (what tandem did before).
#[test]
fn a_full_resync_removes_the_keys_deleted_on_the_source_meanwhile() {
    for mode in ["clear", "keep"] {
        let src = source(&[("repl-backlog-size", "16kb")]);
        let dst = RedisServer::start();
        let mut s = src.client();
        for i in 0..50 {
            s.cmd(&["SET", &format!("gone:{i}"), "v"]);
            s.cmd(&["SET", &format!("kept:{i}"), "v"]);
        }
        let mut d = dst.client();
        d.cmd(&["SET", "local:x", "theirs"]);
        d.cmd(&["SELECT", "3"]);
        d.cmd(&["SET", "db3:x", "theirs"]);
        d.cmd(&["SELECT", "0"]);
        let proxy = FaultProxy::start(src.port);
        let args = [
            "--skip-precheck",
            "--exclude-prefix",
            "local:",
            "--include-db",
            "0",
            "--on-resync",
            mode,
        ];
        let t = sync_via(&proxy.url(), &dst, &args);
        wait_caught_up(&src, &dst, "default", CATCH_UP);
        delete_past_the_backlog_while_cut(&proxy, &mut s, &t, CATCH_UP);
        wait_caught_up(&src, &dst, "default", CATCH_UP);
        let mut want = data::keys(&mut s, 0);
        let got = data::keys(&mut d, 0);
        assert_eq!(stat(&src, "sync_full"), 2, "{}", t.log_text());
        if mode == "clear" {
            want.push(b"local:x".to_vec());
            want.sort();
            assert_eq!(got, want, "{}", t.log_text());
            // gone:* and kept:*, then loaded again from the new RDB.
            assert!(t.log_text().contains("removed=100"), "{}", t.log_text());
        } else {
            assert_eq!(got.iter().filter(|k| k.starts_with(b"gone:")).count(), 50);
            assert!(
                !t.log_text().contains("removed its keys"),
                "{}",
                t.log_text()
            );
        }
        assert_eq!(
            d.cmd(&["GET", "local:x"]),
            Frame::BulkString(b"theirs".to_vec())
        );
        assert_eq!(data::keys(&mut d, 3), vec![b"db3:x".to_vec()]);
    }
}
