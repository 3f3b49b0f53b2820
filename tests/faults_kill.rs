//! tandem killed with SIGKILL at random moments, during full syncs and during the
//! stream, under live writes; then stopped with SIGTERM, which exits 0 with the
//! checkpoint at the source's offset. The end state is exact (tests/support/kill.rs).

mod support;

use support::kill::{Target, kill_loop};
use support::proc::checkpoint;
use support::*;

fn standalone_kill_loop(iterations: u32) {
    let dst = RedisServer::start();
    let mut d = dst.client();
    let mut target = Target {
        url: dst.url(),
        forget: Box::new(|| {
            dst.client().cmd(&["DEL", "__tandem:ckpt:default"]);
        }),
        checkpoint: Box::new(|| checkpoint(&dst, "default")),
        read: Box::new(move |a| d.cmd(a)),
    };
    // An RDB of ~10 MB, so that a full sync lasts long enough to be hit.
    kill_loop(&mut target, iterations, 20_000);
}

#[test]
fn sigkill_at_random_moments_then_sigterm_is_exact() {
    standalone_kill_loop(6);
}

/// The long variant: `cargo test --test faults_kill -- --ignored`.
#[test]
#[ignore]
fn sigkill_fifty_times_is_exact() {
    standalone_kill_loop(50);
}
