//! Bad input, never a panic (issue 20): a source that closes or answers garbage in the
//! handshake, a replication stream that ends mid-command, a value longer than the
//! target's `proto-max-bulk-len`. The misbehaving sources are fake masters written here
//! (real sockets on 127.0.0.1, speaking just enough of the replica protocol); the
//! targets are real servers. Each case asserts the exact outcome: the error line, the
//! exit code, and what reached the target.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::proc::{Tandem, checkpoint, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(30);
const REPLID: &str = "0123456789abcdef0123456789abcdef01234567";

/// A fake master on 127.0.0.1: `serve(n, stream)` handles the `n`-th connection
/// (0-based); connections are served one after another on a thread.
struct FakeMaster {
    port: u16,
    conns: Arc<AtomicUsize>,
}

impl FakeMaster {
    /// Every connection goes to `serve`, untouched.
    fn start(serve: impl Fn(usize, TcpStream) + Send + 'static) -> FakeMaster {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { return };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                serve(n, s);
            }
        });
        FakeMaster { port, conns }
    }

    /// Replica links only: a connection opening with `PING` gets `+PONG` and goes to
    /// `serve(n, …)`, `n` counting those; any other (`redis sync` asks first whether
    /// the source is a cluster) is answered as a plain standalone server would.
    fn links(serve: impl Fn(usize, BufReader<TcpStream>) + Send + 'static) -> FakeMaster {
        let links = Arc::new(AtomicUsize::new(0));
        let counter = links.clone();
        let fake = FakeMaster::start(move |_, s| {
            let mut r = BufReader::new(s);
            let Some(first) = read_command(&mut r) else {
                return;
            };
            if first[0].eq_ignore_ascii_case("PING") {
                if r.get_mut().write_all(b"+PONG\r\n").is_ok() {
                    serve(counter.fetch_add(1, Ordering::SeqCst), r);
                }
                return;
            }
            let mut argv = first;
            loop {
                if r.get_mut().write_all(answer(&argv)).is_err() {
                    return;
                }
                match read_command(&mut r) {
                    Some(a) => argv = a,
                    None => return,
                }
            }
        });
        FakeMaster {
            port: fake.port,
            conns: links,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// One RESP command (an array of bulks) from `r`; `None` at EOF.
fn read_command(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut argv = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0u8; len + 2];
        r.read_exact(&mut buf).ok()?;
        buf.truncate(len);
        argv.push(String::from_utf8_lossy(&buf).into_owned());
    }
    Some(argv)
}

/// A standalone master's answer to the commands a replica or a probe sends.
fn answer(argv: &[String]) -> &'static [u8] {
    match argv[0].to_ascii_uppercase().as_str() {
        "PING" => b"+PONG\r\n",
        "REPLCONF" | "AUTH" => b"+OK\r\n",
        "INFO" => b"$0\r\n\r\n",
        _ => b"-ERR unknown command\r\n",
    }
}

/// Answer the replica handshake like a master until PSYNC; returns PSYNC's arguments.
fn handshake_until_psync(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    loop {
        let argv = read_command(r)?;
        if argv[0].eq_ignore_ascii_case("PSYNC") {
            return Some(argv);
        }
        r.get_mut().write_all(answer(&argv)).ok()?;
    }
}

/// Read and drop whatever tandem sends (its ACKs) until it closes.
fn drain(mut r: BufReader<TcpStream>) {
    let mut buf = [0u8; 4096];
    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
}

fn assert_one_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(lines[0].starts_with("tandem: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

/// An RDB holding `seed:key` = `seed-value`, saved by a real server.
fn small_rdb() -> Vec<u8> {
    let s = RedisServer::start();
    assert_eq!(
        s.cmd(&["SET", "seed:key", "seed-value"]),
        Frame::SimpleString("OK".into())
    );
    assert_eq!(s.cmd(&["SAVE"]), Frame::SimpleString("OK".into()));
    std::fs::read(s.dir().join("dump.rdb")).unwrap()
}

/// `tandem redis tail --source url` until it exits (at most `limit`, then killed):
/// (exit code, stderr, time taken).
fn run_tail_within(url: &str, limit: Duration) -> (Option<i32>, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let began = Instant::now();
    let mut child = Command::new(tandem_bin())
        .args(["redis", "tail", "--source", url, "--count", "1"])
        .env("TANDEM_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run tandem");
    let mut code = None;
    while began.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            code = s.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = began.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (code, std::fs::read_to_string(&log).unwrap(), took)
}

/// Connections closed by the source before the first handshake completes are a wrong
/// port or a server that refuses us, like a refused connection: one line, exit 1, no
/// second attempt. (Once a handshake has succeeded, the same error is retried: see
/// `a_stream_cut_mid_command_waits_for_the_source_then_completes_the_command`.)
#[test]
fn a_source_that_closes_mid_handshake_is_one_line_and_exit_1() {
    let fake = FakeMaster::start(|_, s| {
        let mut r = BufReader::new(s);
        let _ = read_command(&mut r);
    });
    let (code, err, took) = run_tail_within(&fake.url(), Duration::from_secs(15));
    assert_eq!(code, Some(1), "{err}");
    let line = assert_one_error_line(&err);
    assert!(
        line.contains(&fake.endpoint()) && line.contains("connection closed by the server"),
        "{line}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(fake.connections(), 1);

    // The same through `redis sync` (no precheck: the link itself must say it).
    let target = RedisServer::start();
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &fake.url(),
        "--target",
        &target.url(),
        "--skip-precheck",
    ]);
    let (line, _) = t.one_error_line(Duration::from_secs(15));
    assert!(
        line.contains(&fake.endpoint()) && line.contains("connection closed by the server"),
        "{line}"
    );
    assert_eq!(fake.connections(), 2);
}

/// Answers that are not a replica handshake's, absurd lengths among them: one line
/// naming the endpoint and what was wrong, exit 1, at once, and no allocation of the
/// announced length (a 93 GB bulk header would abort on allocation failure).
#[test]
fn garbage_and_absurd_lengths_in_the_handshake_are_one_line() {
    let cases: [(&[u8], &str, &str); 5] = [
        // PING answered with the header of a 93 GB bulk: refused from the header,
        // before waiting for (or holding) what it announces.
        (
            b"",
            "$99999999999\r\n",
            "announces a 99999999999-byte value",
        ),
        // PSYNC answered with a bulk header instead of +FULLRESYNC/+CONTINUE.
        (
            b"PSYNC",
            "$99999999999\r\n",
            "unexpected PSYNC reply \"$99999999999\"",
        ),
        // An RDB size that does not fit 64 bits.
        (
            b"PSYNC",
            "+FULLRESYNC 0123456789abcdef0123456789abcdef01234567 0\r\n$999999999999999999999\r\n",
            "expected the RDB size line, got \"$999999999999999999999\"",
        ),
        // `+CONTINUE` to `PSYNC ? -1`: there is nothing to continue (this panicked).
        (
            b"PSYNC",
            "+CONTINUE\r\n",
            "\"+CONTINUE\" to a full resync request",
        ),
        // Not RESP at all.
        (b"", "\x00\x01\x02garbage\r\n", "not a Redis server?"),
    ];
    for (at, answer, want) in cases {
        let answer = answer.as_bytes().to_vec();
        let fake = FakeMaster::start(move |_, s| {
            let mut r = BufReader::new(s);
            if at.is_empty() {
                let _ = read_command(&mut r);
            } else if handshake_until_psync(&mut r).is_none() {
                return;
            }
            let _ = r.get_mut().write_all(&answer);
            let _ = r.get_mut().shutdown(std::net::Shutdown::Write);
            drain(r);
        });
        let (code, err, took) = run_tail_within(&fake.url(), Duration::from_secs(15));
        assert_eq!(code, Some(1), "{want}: {err}");
        let line = assert_one_error_line(&err);
        assert!(
            line.contains(&fake.endpoint()) && line.contains(want),
            "{want:?} not in {line}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(fake.connections(), 1, "{line}");
    }
}

fn sync_from(fake: &FakeMaster, target: &RedisServer) -> Tandem {
    Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &fake.url(),
        "--target",
        &target.url(),
        "--skip-precheck",
    ])
}

/// A full resync with a real RDB, then a stream that ends in the middle of a command,
/// then a source that is down (twice it accepts and closes at once) and comes back.
/// Policy: after a handshake has succeeded, a lost source is retried with backoff, like
/// Redis's own replicas; every retry names the source and the offset tandem holds. The
/// half command is never applied half: it waits, and the resumed `PSYNC <id> <offset+1>`
/// (offset counting the half) brings its rest.
#[test]
fn a_stream_cut_mid_command_waits_for_the_source_then_completes_the_command() {
    let rdb = small_rdb();
    let cmd = b"*3\r\n$3\r\nSET\r\n$8\r\nhalf:key\r\n$5\r\nwhole\r\n";
    let cut = 20; // inside the key
    let (psync_tx, psync_rx) = std::sync::mpsc::channel();
    let fake = FakeMaster::links(move |n, mut r| {
        match n {
            0 => {
                let Some(argv) = handshake_until_psync(&mut r) else {
                    return;
                };
                let _ = psync_tx.send(argv);
                let mut out = format!("+FULLRESYNC {REPLID} 0\r\n${}\r\n", rdb.len()).into_bytes();
                out.extend_from_slice(&rdb);
                out.extend_from_slice(&cmd[..cut]);
                let _ = r.get_mut().write_all(&out);
                // Wait for tandem's first ACK: the bytes are with it.
                let _ = read_command(&mut r);
            }
            1 | 2 => {}
            _ => {
                let Some(argv) = handshake_until_psync(&mut r) else {
                    return;
                };
                let _ = psync_tx.send(argv);
                let mut out = b"+CONTINUE\r\n".to_vec();
                out.extend_from_slice(&cmd[cut..]);
                let _ = r.get_mut().write_all(&out);
                drain(r);
            }
        }
    });
    let target = RedisServer::start();
    let mut t = sync_from(&fake, &target);
    let first = psync_rx.recv_timeout(CATCH_UP).unwrap();
    assert_eq!(first, ["PSYNC", "?", "-1"]);
    let resumed = psync_rx.recv_timeout(CATCH_UP).unwrap();
    assert_eq!(
        resumed,
        [
            "PSYNC".to_string(),
            REPLID.to_string(),
            (cut + 1).to_string()
        ]
    );
    assert_eq!(fake.connections(), 4, "link connections");
    let done = cmd.len() as u64;
    wait_until("the whole command applied", CATCH_UP, || {
        checkpoint(&target, "default") == Some(("incr".into(), done))
    });
    let mut c = target.client();
    assert_eq!(c.cmd_text(&["GET", "half:key"]), "whole");
    assert_eq!(c.cmd_text(&["GET", "seed:key"]), "seed-value");
    let log = t.log_text();
    let lost = format!("{} offset={cut} ", fake.endpoint());
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("replica link lost") && l.contains(&lost))
            .count(),
        3,
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(t.interrupt(), Some(0));
}

/// `+FULLRESYNC` announcing a 93 GB RDB, then 1 000 bytes and a close: after a
/// successful handshake that is a cut mid-RDB, retried with `PSYNC ? -1` (a full
/// resync starting over). The announced size is never allocated: tandem's memory stays
/// small while it retries. SIGINT meanwhile exits 0.
#[test]
fn an_absurd_rdb_size_then_a_cut_is_retried_without_allocating_it() {
    let (psync_tx, psync_rx) = std::sync::mpsc::channel();
    let fake = FakeMaster::links(move |_, mut r| {
        let Some(argv) = handshake_until_psync(&mut r) else {
            return;
        };
        let _ = psync_tx.send(argv);
        let mut out = format!("+FULLRESYNC {REPLID} 0\r\n$99999999999\r\nREDIS0011").into_bytes();
        out.resize(out.len() + 1000, b'x');
        let _ = r.get_mut().write_all(&out);
    });
    let target = RedisServer::start();
    let mut t = sync_from(&fake, &target);
    for _ in 0..3 {
        let argv = psync_rx.recv_timeout(CATCH_UP).unwrap();
        assert_eq!(argv, ["PSYNC", "?", "-1"]);
    }
    assert!(t.is_running(), "{}", t.log_text());
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 200 * 1024, "tandem holds {rss_kb} kB");
    let log = t.log_text();
    assert!(log.contains("full resync"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // A stop during the transfer is a stop, not "the replication link ended
    // unexpectedly" with exit 1 (as it was).
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    assert!(!t.log_text().contains("tandem: error"), "{}", t.log_text());
}

fn password_less_quiet_source() -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-ping-replica-period", "3600"),
    )
}

/// A target taking bulks of at most 1 MB.
fn small_bulk_target() -> RedisServer {
    let t = RedisServer::start();
    assert_eq!(
        t.cmd(&["CONFIG", "SET", "proto-max-bulk-len", "1mb"]),
        Frame::SimpleString("OK".into())
    );
    t
}

/// 2 MB that LZF cannot shrink (the RESTORE payload stays above 1 MB too).
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut s = String::with_capacity(len);
    while s.len() < len {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        s.push_str(&format!("{:016x}", x));
    }
    s.truncate(len);
    s
}

/// The target answers a bulk above its `proto-max-bulk-len` with `-ERR Protocol error`
/// and closes the connection, mostly before tandem has read the reply: resending cannot
/// help. Tandem stops at once with one line naming the target, the command, the key,
/// the source offset and the setting, before sending it.
fn assert_bulk_refused(line: &str, target: &RedisServer, command: &str) {
    for want in [
        format!("127.0.0.1:{}", target.port),
        format!("the target cannot take {command} of key \"big\" at source offset "),
        "longer than its proto-max-bulk-len (1048576)".to_string(),
    ] {
        assert!(line.contains(&want), "{want:?} not in {line}");
    }
}

#[test]
fn a_value_longer_than_the_targets_max_bulk_stops_the_full_sync() {
    let src = RedisServer::replication_source();
    let dst = small_bulk_target();
    let mut c = src.client();
    c.cmd(&["SET", "small", "1"]);
    c.cmd(&["SET", "big", &incompressible(2 << 20)]);
    let began = Instant::now();
    let mut t = Tandem::sync(&src, &dst, &["--skip-precheck"]);
    let (line, log) = t.one_error_line(Duration::from_secs(20));
    assert!(began.elapsed() < Duration::from_secs(10), "{line}");
    assert_bulk_refused(&line, &dst, "RESTORE");
    assert!(!log.contains("retrying"), "{log}");
    assert_eq!(dst.cmd(&["EXISTS", "big"]), Frame::Integer(0));
}

#[test]
fn a_value_longer_than_the_targets_max_bulk_stops_the_live_stream() {
    // No PINGs in the stream: the offsets asserted are the writes'.
    let src = password_less_quiet_source();
    let dst = small_bulk_target();
    let mut t = Tandem::sync(&src, &dst, &["--skip-precheck"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    let mut c = src.client();
    c.cmd(&["SET", "before", "1"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    let at = support::proc::master_offset(&src);
    c.cmd(&["SET", "big", &incompressible(2 << 20)]);
    let began = Instant::now();
    let (line, log) = t.one_error_line(Duration::from_secs(20));
    assert!(began.elapsed() < Duration::from_secs(10), "{line}");
    assert_bulk_refused(&line, &dst, "SET");
    let after = support::proc::master_offset(&src);
    assert!(
        line.contains(&format!("at source offset {after}: ")),
        "offset {at}..{after}: {line}"
    );
    assert!(!log.contains("retrying"), "{log}");
    assert_eq!(dst.cmd(&["EXISTS", "big"]), Frame::Integer(0));
    assert_eq!(dst.client().cmd_text(&["GET", "before"]), "1");
    assert_eq!(checkpoint(&dst, "default"), Some(("incr".into(), at)));
}

/// A cluster target whose master owning the key takes 1 MB bulks. (tandem checks
/// against the smallest limit among the masters: a write may go to any of them.)
#[test]
fn a_value_longer_than_a_cluster_masters_max_bulk_stops_the_full_sync() {
    let src = password_less_quiet_source();
    let dst = Cluster::start(3, 0);
    assert_eq!(
        dst.master_for("big")
            .cmd(&["CONFIG", "SET", "proto-max-bulk-len", "1mb"]),
        Frame::SimpleString("OK".into())
    );
    src.cmd(&["SET", "big", &incompressible(2 << 20)]);
    let target = dst.url();
    let began = Instant::now();
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &src.url(),
        "--target",
        &target,
        "--skip-precheck",
    ]);
    let (line, log) = t.one_error_line(Duration::from_secs(20));
    assert!(began.elapsed() < Duration::from_secs(10), "{line}");
    assert!(
        line.contains(&format!(
            "{target}: the target cannot take RESTORE of key \"big\""
        )) && line.contains("longer than its proto-max-bulk-len (1048576)"),
        "{line}"
    );
    assert!(!log.contains("retrying"), "{log}");
    let owner = dst.master_for("big");
    assert_eq!(owner.cmd(&["EXISTS", "big"]), Frame::Integer(0));
}

/// A wrong target password with the precheck skipped: the sink's own connect says it,
/// naming the target and neither password.
#[test]
fn a_wrong_target_password_is_one_line_without_it() {
    let src = password_less_quiet_source();
    let dst = RedisServer::start_with(ServerOpts::default().arg("requirepass", "right-7731"));
    let target = format!("redis://:wrong-7731@127.0.0.1:{}", dst.port);
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &src.url(),
        "--target",
        &target,
        "--skip-precheck",
    ]);
    let (line, log) = t.one_error_line(Duration::from_secs(20));
    assert!(
        line.contains(&format!(
            "127.0.0.1:{}: authentication failed: WRONGPASS",
            dst.port
        )),
        "{line}"
    );
    assert!(
        !log.contains("wrong-7731") && !log.contains("right-7731"),
        "{log}"
    );
}

/// A live command announcing a 93 GB argument, of which 64 kB arrive: the argument is
/// held as it arrives, never reserved at its announced length (as a Redis replica,
/// tandem waits for the rest; the source's `repl-timeout` silence rule still applies).
/// Nothing of it reaches the target and SIGINT exits 0.
#[test]
fn an_absurd_bulk_in_the_live_stream_is_not_allocated() {
    let rdb = small_rdb();
    let mut stream = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999\r\n".to_vec();
    stream.resize(stream.len() + (64 << 10), b'x');
    let sent = stream.len() as u64;
    let fake = FakeMaster::links(move |_, mut r| {
        if handshake_until_psync(&mut r).is_none() {
            return;
        }
        let mut out = format!("+FULLRESYNC {REPLID} 0\r\n${}\r\n", rdb.len()).into_bytes();
        out.extend_from_slice(&rdb);
        out.extend_from_slice(&stream);
        let _ = r.get_mut().write_all(&out);
        drain(r);
    });
    let target = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &fake.url(),
        "--target",
        &target.url(),
        "--skip-precheck",
        "--metrics-addr",
        &addr,
    ]);
    let received = format!(
        "tandem_link_received_offset{{source=\"{}\"}}",
        fake.endpoint()
    );
    wait_until("the 64 kB received", CATCH_UP, || {
        std::net::TcpStream::connect(&addr).is_ok()
            && metric_value(&scrape_metrics(port), &received) == Some(sent as f64)
    });
    wait_until("the RDB applied", CATCH_UP, || {
        checkpoint(&target, "default") == Some(("incr".into(), 0))
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 200 * 1024, "tandem holds {rss_kb} kB");
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(target.cmd(&["EXISTS", "k"]), Frame::Integer(0));
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    assert_eq!(fake.connections(), 1);
}
