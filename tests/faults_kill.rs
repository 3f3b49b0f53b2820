//! tandem killed with SIGKILL at random moments, during full syncs and during the
//! stream, under live writes; then stopped with SIGTERM, which exits 0 with the
//! checkpoint at the source's offset. The end state is exact.

mod support;

use std::time::{Duration, Instant};

use support::data::Lcg;
use support::load::{Writer, assert_exact, fill_incompressible};
use support::proc::{Tandem, checkpoint, master_offset, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(120);

fn kill_loop(iterations: u32) {
    let src = RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-ping-replica-period", "1")
            .arg("repl-backlog-size", "256mb"),
    );
    let dst = RedisServer::start();
    // An RDB of ~10 MB, so that a full sync lasts long enough to be hit.
    fill_incompressible(&mut src.client(), 20_000, 500, 3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill loop seed {seed}");
    let mut rng = Lcg(seed);
    let writer = Writer::start(src.port, seed, Duration::from_millis(3), u64::MAX);
    let started = Instant::now();
    let (mut in_full, mut in_incr) = (0u32, 0u32);
    for i in 0..iterations {
        if i % 2 == 0 {
            // Forget the checkpoint: this run copies everything again (what it finds on
            // the target is overwritten), and is killed somewhere in that copy or after.
            let mut d = dst.client();
            d.cmd(&["DEL", "__tandem:ckpt:default"]);
        }
        let mut t = Tandem::sync(&src, &dst, &["--skip-precheck", "--batch-commands", "300"]);
        if i % 2 == 0 {
            // Somewhere in the copy: it lasts a few hundred ms.
            t.wait_log("full sync: loading", CATCH_UP);
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        } else {
            std::thread::sleep(Duration::from_millis(100 + rng.below(1400)));
        }
        assert!(t.is_running(), "tandem died: {}", t.log_text());
        let log = t.log_text();
        if log.contains("full sync:") && !log.contains("full sync applied") {
            in_full += 1;
        } else {
            in_incr += 1;
        }
        t.kill9();
    }
    let rounds_before_stop = writer.rounds();
    assert!(rounds_before_stop > 0, "the writer never ran");
    let mut t = Tandem::sync(&src, &dst, &["--skip-precheck"]);
    let rounds = writer.stop();
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    t.signal("TERM");
    assert_eq!(
        t.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        t.log_text()
    );
    assert_eq!(
        checkpoint(&dst, "default"),
        Some(("incr".into(), master_offset(&src)))
    );
    assert_exact(&src, &dst, rounds);
    eprintln!(
        "kill loop: {iterations} SIGKILLs survived ({in_full} during a full sync, {in_incr} \
         after it), {rounds} write rounds, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(in_full >= 1 && in_incr >= 1, "kills landed in both phases");
}

#[test]
fn sigkill_at_random_moments_then_sigterm_is_exact() {
    kill_loop(6);
}

/// The long variant: `cargo test --test faults_kill -- --ignored`.
#[test]
#[ignore]
fn sigkill_fifty_times_is_exact() {
    kill_loop(50);
}
