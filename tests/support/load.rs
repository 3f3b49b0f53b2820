//! Load whose end state can be checked exactly: pipelined `INCR`s over counters and
//! `RPUSH`es of the round number over lists. A write lost or applied twice shows as a
//! counter or a list that differs, and the counters add up to the writes sent. Keys
//! may carry a prefix, so that each side of a two-way pair has its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

use super::data::Lcg;
use super::{Client, Frame, RedisServer};

pub const COUNTERS: u64 = 200;
pub const LISTS: u64 = 50;
/// Commands of each kind per pipelined round.
pub const PER_ROUND: u64 = 50;

pub struct Writer {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Write to `port` until stopped (at most `max_rounds`), pausing `pause` between
    /// rounds (zero: as fast as the server takes them).
    pub fn start(port: u16, seed: u64, pause: Duration, max_rounds: u64) -> Writer {
        Self::start_prefixed(port, "", seed, pause, max_rounds)
    }

    /// `start`, with every key prefixed by `prefix`.
    pub fn start_prefixed(
        port: u16,
        prefix: &str,
        seed: u64,
        pause: Duration,
        max_rounds: u64,
    ) -> Writer {
        let prefix = prefix.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (flag, done) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut c = Client::connect(port).expect("writer connects");
            let mut r = Lcg(seed);
            for round in 0..max_rounds {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                c.pipeline(&round_commands(&mut r, round, &prefix));
                done.store(round + 1, Ordering::SeqCst);
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        });
        Writer {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Rounds written so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Stop and return the rounds written.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        self.rounds()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn round_commands(r: &mut Lcg, round: u64, prefix: &str) -> Vec<Vec<Bytes>> {
    let mut cmds = Vec::with_capacity(2 * PER_ROUND as usize);
    for _ in 0..PER_ROUND {
        let k = r.below(COUNTERS);
        cmds.push(vec![
            Bytes::from("INCR"),
            Bytes::from(format!("{prefix}cnt:{k}")),
        ]);
        cmds.push(vec![
            Bytes::from("RPUSH"),
            Bytes::from(format!("{prefix}lst:{}", k % LISTS)),
            Bytes::from(round.to_string()),
        ]);
    }
    cmds
}

/// Every counter and list of `dst` equals `src`'s, and the counters add up to
/// `rounds` rounds of writes: nothing lost, nothing applied twice.
pub fn assert_exact(src: &RedisServer, dst: &RedisServer, rounds: u64) {
    let (mut s, mut d) = (src.client(), dst.client());
    assert_exact_by(&mut |a| s.cmd(a), &mut |a| d.cmd(a), "", rounds);
}

/// A command run where the key (at index 1) lives: one server, or a cluster's master
/// for the key's slot.
pub type Read<'a> = dyn FnMut(&[&str]) -> Frame + 'a;

/// `assert_exact` for the keys under `prefix`, read through `src` and `dst` (a cluster,
/// the other side of a two-way pair).
pub fn assert_exact_by(src: &mut Read, dst: &mut Read, prefix: &str, rounds: u64) {
    let mut total = 0u64;
    for k in 0..COUNTERS {
        let key = format!("{prefix}cnt:{k}");
        let a = src(&["GET", &key]);
        assert_eq!(a, dst(&["GET", &key]), "{key}");
        if let Frame::BulkString(v) = a {
            total += String::from_utf8(v).unwrap().parse::<u64>().unwrap();
        }
    }
    assert_eq!(total, rounds * PER_ROUND, "every INCR counted once");
    let mut items = 0;
    for k in 0..LISTS {
        let key = format!("{prefix}lst:{k}");
        let len = src(&["LLEN", &key]);
        assert_eq!(len, dst(&["LLEN", &key]), "{key} length");
        assert_eq!(
            src(&["LRANGE", &key, "0", "-1"]),
            dst(&["LRANGE", &key, "0", "-1"]),
            "{key} order"
        );
        let Frame::Integer(len) = len else {
            panic!("LLEN {key}: {len:?}")
        };
        items += len as u64;
    }
    assert_eq!(items, rounds * PER_ROUND, "every RPUSH landed once");
}

/// `n` string keys of `size` bytes each that do not compress (an RDB of about
/// `n * size` bytes), written in pipelines.
pub fn fill_incompressible(c: &mut Client, n: usize, size: usize, seed: u64) {
    let mut r = Lcg(seed);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let cmds: Vec<Vec<Bytes>> = chunk
            .iter()
            .map(|i| {
                let v: String = (0..size / 16)
                    .map(|_| format!("{:016x}", r.next()))
                    .collect();
                vec![
                    Bytes::from("SET"),
                    Bytes::from(format!("bulk:{i}")),
                    Bytes::from(v),
                ]
            })
            .collect();
        c.pipeline(&cmds);
    }
}

/// A server's `INFO stats` counter (`sync_full`, `sync_partial_ok`, …).
pub fn stat(server: &RedisServer, name: &str) -> u64 {
    server
        .info_field("stats", name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO stats has no {name}"))
}
