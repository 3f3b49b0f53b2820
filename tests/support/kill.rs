//! tandem killed with SIGKILL at random moments, during full syncs and during the
//! stream, under live writes; then stopped with SIGTERM, which must exit 0 with the
//! checkpoint at the source's offset and the target exact. For any target: a
//! standalone server (tests/faults_kill.rs) or a cluster (tests/faults_cluster.rs).

use std::time::{Duration, Instant};

use super::data::Lcg;
use super::load::{Read, Writer, assert_exact_by, fill_incompressible};
use super::proc::{Tandem, master_offset};
use super::{RedisServer, ServerOpts, wait_until};

const CATCH_UP: Duration = Duration::from_secs(120);

/// What the kill loop needs of a target.
pub struct Target<'a> {
    pub url: String,
    /// Remove tandem's checkpoints: the next run copies everything again.
    pub forget: Box<dyn Fn() + 'a>,
    /// The checkpoint of link `default` (on a cluster, its floor): (state, offset).
    pub checkpoint: Box<dyn Fn() -> Option<(String, u64)> + 'a>,
    /// Run a command where its key (at index 1) lives.
    pub read: Box<Read<'a>>,
}

/// What a loop did, for the report.
pub struct KillReport {
    pub in_full: u32,
    pub in_incr: u32,
    pub rounds: u64,
    pub secs: f64,
}

/// `iterations` SIGKILLs, every other one after forgetting the checkpoint (so that run
/// copies again and is killed somewhere in its copy or after), with a source of
/// `keys` incompressible 500-byte strings under writes; then a run stopped by SIGTERM.
pub fn kill_loop(target: &mut Target, iterations: u32, keys: usize) -> KillReport {
    let src = RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-ping-replica-period", "1")
            .arg("repl-backlog-size", "256mb"),
    );
    fill_incompressible(&mut src.client(), keys, 500, 3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill loop seed {seed}");
    let mut rng = Lcg(seed);
    let writer = Writer::start(src.port, seed, Duration::from_millis(3), u64::MAX);
    let started = Instant::now();
    let (mut in_full, mut in_incr) = (0u32, 0u32);
    let (s, t) = (src.url(), target.url.clone());
    let sync = |extra: &[&str]| {
        let mut args = vec!["redis", "sync", "--source", &s, "--target", &t];
        args.extend_from_slice(extra);
        Tandem::start(&args)
    };
    for i in 0..iterations {
        if i % 2 == 0 {
            (target.forget)();
        }
        let mut t = sync(&["--skip-precheck", "--batch-commands", "300"]);
        if i % 2 == 0 {
            // Somewhere in the copy: it lasts a few hundred ms.
            t.wait_log("full sync: loading", CATCH_UP);
            std::thread::sleep(Duration::from_millis(rng.below(150)));
        } else {
            // Somewhere in the stream: this run copies too when the last one was killed
            // in its copy, and a copy slowed down by a loaded machine outlasted a fixed
            // sleep (CI: 6 of 6 kills in a copy).
            t.wait_log("to=\"incremental\"", CATCH_UP);
            std::thread::sleep(Duration::from_millis(rng.below(1000)));
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
    assert!(writer.rounds() > 0, "the writer never ran");
    let mut t = sync(&["--skip-precheck"]);
    let rounds = writer.stop();
    let caught_up = || {
        let want = master_offset(&src);
        (target.checkpoint)().is_some_and(|(s, o)| s == "incr" && o == want)
    };
    // The checkpoint may already be at the source's offset when this run starts: SIGTERM
    // sent before tandem handles it would end it by the signal (exit code none; it did).
    t.wait_log("to=\"incremental\"", CATCH_UP);
    wait_until("tandem caught up with the source", CATCH_UP, caught_up);
    t.signal("TERM");
    assert_eq!(
        t.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        t.log_text()
    );
    assert_eq!(
        (target.checkpoint)(),
        Some(("incr".into(), master_offset(&src)))
    );
    let mut s = src.client();
    assert_exact_by(&mut |a| s.cmd(a), &mut *target.read, "", rounds);
    let report = KillReport {
        in_full,
        in_incr,
        rounds,
        secs: started.elapsed().as_secs_f64(),
    };
    eprintln!(
        "kill loop: {iterations} SIGKILLs survived ({in_full} during a full sync, {in_incr} \
         after it), {rounds} write rounds, {:.1} s",
        report.secs
    );
    assert!(in_full >= 1 && in_incr >= 1, "kills landed in both phases");
    report
}
