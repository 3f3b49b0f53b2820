//! Processes under test: `redis-server` instances and the `tandem` binary, each in its
//! own temporary directory on a free loopback port, killed on drop (so also when a
//! scenario fails or panics).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Res;
use super::client::{Client, info_field};

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Poll `cond` (bounded by `limit`), sleeping `every` between tries; the error names
/// `what`. `cond` may fail, which ends the wait at once.
pub fn wait_until(
    what: &str,
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> Res<bool>,
) -> Res<()> {
    let start = Instant::now();
    let mut tries = 0u64;
    loop {
        if cond()? {
            return Ok(());
        }
        tries += 1;
        if start.elapsed() >= limit {
            return Err(
                format!("timed out after {limit:?} ({tries} tries) waiting for {what}").into(),
            );
        }
        std::thread::sleep(every);
    }
}

/// A free loopback port whose cluster-bus twin (port + 10000) is free too.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let port = addr.port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair in 200 tries");
}

pub struct Redis {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` with no persistence; `extra` are more `--name value` options.
    pub fn start(extra: &[&str]) -> Res<Redis> {
        let mut last_err = String::new();
        // A port may be taken between probing and binding: retry on a new one.
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("tandem-bench-").tempdir()?;
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("redis.log"))?;
            let mut cmd = Command::new(REDIS_SERVER);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--dir", &dir.path().to_string_lossy()])
                .args(["--protected-mode", "no"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {REDIS_SERVER}: {e}"))?;
            let mut r = Redis { port, child, dir };
            let up = wait_until(
                "redis-server to accept",
                Duration::from_secs(10),
                Duration::from_millis(10),
                || {
                    if let Ok(Some(st)) = r.child.try_wait() {
                        return Err(format!("redis-server exited: {st}").into());
                    }
                    Ok(Client::connect(port)
                        .and_then(|mut c| c.cmd(&[b"PING"]))
                        .is_ok())
                },
            );
            match up {
                Ok(()) => return Ok(r),
                Err(e) => last_err = format!("{e}; log: {}", r.log_tail()),
            }
        }
        Err(format!("redis-server did not start: {last_err}").into())
    }

    pub fn client(&self) -> Res<Client> {
        Ok(Client::connect(self.port)?)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("redis.log"))
    }

    /// The replica's own applied offset (`master_repl_offset` on a replica).
    pub fn repl_offset(&self) -> Res<u64> {
        let info = self.client()?.info("replication")?;
        Ok(info_field(&info, "master_repl_offset")
            .and_then(|v| v.parse().ok())
            .ok_or("no master_repl_offset in INFO")?)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// `kill -<sig> <pid>` (std has no signal API; the harness only signals its own
/// children, by pid).
pub fn signal(pid: u32, sig: &str) -> Res<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !st.success() {
        return Err(format!("kill -{sig} {pid} failed").into());
    }
    Ok(())
}

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident set size (VmHWM) of a live process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Whether `tandem <args…> --help` succeeds: how the harness learns which subcommands
/// the binary has (scenarios of missing ones are reported as not available).
pub fn tandem_has(bin: &Path, args: &[&str]) -> bool {
    Command::new(bin)
        .args(args)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tandem_help(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub struct Tandem {
    child: Child,
    dir: tempfile::TempDir,
    stopped: bool,
}

impl Tandem {
    /// `tandem <args…>` with its working directory (and spool, when the subcommand
    /// takes `--spool-dir`) in a fresh temporary directory, metrics on a free port.
    pub fn start(bin: &Path, args: &[String]) -> Res<Tandem> {
        let dir = tempfile::Builder::new()
            .prefix("tandem-bench-t-")
            .tempdir()?;
        let sub: Vec<&str> = args.iter().take(2).map(String::as_str).collect();
        let help = tandem_help(bin, &sub);
        let mut all: Vec<String> = args.to_vec();
        if help.contains("--metrics-addr") {
            all.push("--metrics-addr".into());
            all.push(format!("127.0.0.1:{}", free_port()));
        }
        if help.contains("--spool-dir") {
            all.push("--spool-dir".into());
            all.push(dir.path().join("spool").to_string_lossy().into_owned());
        }
        let log = std::fs::File::create(dir.path().join("tandem.log"))?;
        let child = Command::new(bin)
            .args(&all)
            .current_dir(dir.path())
            .env("TANDEM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Tandem {
            child,
            dir,
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("tandem.log"))
    }

    /// An error if the process has exited (with its log), so waits fail fast.
    pub fn check_alive(&mut self) -> Res<()> {
        if let Some(st) = self.child.try_wait()? {
            self.stopped = true;
            return Err(format!("tandem exited ({st}): {}", self.log_tail()).into());
        }
        Ok(())
    }

    /// Peak RSS so far (read before stopping: /proc entries vanish with the process).
    pub fn peak_rss(&self) -> Option<u64> {
        if self.stopped {
            None
        } else {
            peak_rss(self.pid())
        }
    }

    /// SIGTERM, bounded wait, then SIGKILL.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = signal(self.pid(), "TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tandem {
    fn drop(&mut self) {
        if !self.stopped {
            // A SIGSTOPped process ignores SIGTERM until continued.
            let _ = signal(self.pid(), "CONT");
            self.stop();
        }
    }
}
