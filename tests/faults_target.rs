//! Faults on the target side: unreachable for a while, restarted (with and without
//! persistence), slow. The source link is never dropped meanwhile (the spool takes the
//! stream), and the end state is exact.

mod support;

use std::time::Duration;

use support::faultproxy::{Dir, FaultProxy, Flow};
use support::load::{Writer, assert_exact, stat};
use support::proc::{Tandem, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(90);

fn sync_into(src: &RedisServer, target_url: &str, extra: &[&str]) -> Tandem {
    let s = src.url();
    let mut args = vec!["redis", "sync", "--source", &s, "--target", target_url];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

fn assert_source_link_kept(src: &RedisServer, t: &Tandem) {
    let log = t.log_text();
    assert!(!log.contains("replica link lost"), "{log}");
    assert_eq!(stat(src, "sync_full"), 1, "{log}");
}

/// Every connection to the target is reset and new ones refused for 8 s, under
/// writes: tandem retries with backoff, then resends only what did not land.
#[test]
fn an_unreachable_target_is_retried_and_resumed_exactly() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let proxy = FaultProxy::start(dst.port);
    let writer = Writer::start(src.port, 11, Duration::from_millis(2), 1_000_000);
    let t = sync_into(&src, &proxy.url(), &["--batch-commands", "200"]);
    t.wait_log("full sync applied", CATCH_UP);
    let at = writer.rounds() + 20;
    wait_until("writes flowing", CATCH_UP, || writer.rounds() >= at);
    proxy.refuse(true);
    proxy.cut();
    std::thread::sleep(Duration::from_secs(8));
    let refused = proxy.accepted();
    proxy.refuse(false);
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    assert!(refused >= 3, "tandem retried only {refused} times");
    assert!(t.log_text().contains("target write failed, retrying"));
    assert_source_link_kept(&src, &t);
}

/// The target is killed and restarted twice; it persists every write before
/// answering (`appendfsync always`), so its checkpoint is what it confirmed.
#[test]
fn a_restarted_target_with_its_data_is_resumed_exactly() {
    let src = RedisServer::replication_source();
    let mut dst = RedisServer::start_with(
        ServerOpts::default()
            .arg("appendonly", "yes")
            .arg("appendfsync", "always"),
    );
    let writer = Writer::start(src.port, 12, Duration::from_millis(2), 1_000_000);
    let t = Tandem::sync(&src, &dst, &["--batch-commands", "200"]);
    t.wait_log("full sync applied", CATCH_UP);
    for _ in 0..2 {
        let at = writer.rounds() + 30;
        wait_until("writes flowing", CATCH_UP, || writer.rounds() >= at);
        dst.restart();
    }
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    assert_source_link_kept(&src, &t);
}

/// A target restarted without persistence comes back without the writes it had
/// confirmed. Resending only the batches in flight would leave a hole, so tandem stops
/// with one clear line; started again, it copies from scratch and ends exact.
#[test]
fn a_target_that_lost_confirmed_writes_stops_tandem_then_a_restart_is_exact() {
    let src = RedisServer::replication_source();
    let mut dst = RedisServer::start();
    let writer = Writer::start(src.port, 13, Duration::from_millis(2), 1_000_000);
    let mut t = Tandem::sync(&src, &dst, &[]);
    t.wait_log("full sync applied", CATCH_UP);
    let at = writer.rounds() + 30;
    wait_until("writes flowing", CATCH_UP, || writer.rounds() >= at);
    dst.restart();
    let (err, log) = t.one_error_line(CATCH_UP);
    assert!(err.contains("lost writes it had confirmed"), "{log}");
    assert!(err.contains(&format!("127.0.0.1:{}", dst.port)), "{log}");
    let t = Tandem::sync(&src, &dst, &["--skip-precheck"]);
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    drop(t);
}

/// The target link is throttled to 200 kB/s while writes arrive faster: the stream
/// waits in the spool, the source never drops tandem, and the end state is exact.
#[test]
fn a_slow_target_loses_nothing_and_keeps_the_source_link() {
    let src = RedisServer::replication_source();
    let dst = RedisServer::start();
    let proxy = FaultProxy::start(dst.port);
    let t = sync_into(&src, &proxy.url(), &[]);
    t.wait_log("full sync applied", CATCH_UP);
    proxy.set(Dir::Up, Flow::Slow(200_000));
    let writer = Writer::start(src.port, 14, Duration::ZERO, 200);
    wait_until("200 rounds written", CATCH_UP, || writer.rounds() == 200);
    let rounds = writer.stop();
    // Behind: what the source wrote (~0.5 MB of stream) cannot have crossed yet.
    let behind = support::proc::checkpoint(&dst, "default").unwrap().1;
    assert!(behind < support::proc::master_offset(&src));
    proxy.set(Dir::Up, Flow::Pass);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    assert_exact(&src, &dst, rounds);
    assert_source_link_kept(&src, &t);
}
