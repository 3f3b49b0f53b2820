//! Running the tandem binary in tests: as a child process killed on drop, with its
//! stderr kept for failure messages.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Frame, RedisServer, tandem_bin, wait_until};

pub struct Tandem {
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tandem {
    /// Start `tandem <args>`; logs go to a file printed if the test fails.
    pub fn start(args: &[&str]) -> Tandem {
        Self::start_env(args, &[])
    }

    /// `start` with these environment variables set (passwords, say).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Tandem {
        let dir = tempfile::Builder::new()
            .prefix("tandem-run-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("tandem.log");
        let spool = dir.path().join("spool");
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if args.first() == Some(&"redis")
            && !args.contains(&"--spool-dir")
            && args.get(1) == Some(&"sync")
        {
            all.push("--spool-dir".into());
            all.push(spool.to_string_lossy().into_owned());
        }
        let child = Command::new(tandem_bin())
            .args(&all)
            .env(
                "TANDEM_LOG",
                std::env::var("TANDEM_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tandem");
        Tandem {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn sync(source: &RedisServer, target: &RedisServer, extra: &[&str]) -> Tandem {
        let (s, t) = (source.url(), target.url());
        let mut args = vec!["redis", "sync", "--source", &s, "--target", &t];
        args.extend_from_slice(extra);
        Tandem::start(&args)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until the log holds `needle`: a state tandem reports once, such as
    /// the end of its copy.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        wait_until(&format!("tandem logs {needle:?}"), limit, || {
            self.log_text().contains(needle)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT, then wait for a clean exit; returns the exit code.
    pub fn interrupt(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let mut code = None;
        wait_until(
            "tandem exits after SIGINT",
            Duration::from_secs(20),
            || match self.child.try_wait() {
                Ok(Some(s)) => {
                    code = s.code();
                    true
                }
                _ => false,
            },
        );
        code
    }

    /// Send `signal` (`INT`, `TERM`) without waiting.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
    }

    /// Wait until tandem stops with exit code 1 having printed exactly one
    /// `tandem: error:` line; returns that line and the whole log.
    pub fn one_error_line(&mut self, limit: Duration) -> (String, String) {
        assert_eq!(self.wait_exit(limit), Some(1), "{}", self.log_text());
        let log = self.log_text();
        let err: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("tandem: error:"))
            .collect();
        assert_eq!(err.len(), 1, "{log}");
        (err[0].to_string(), log)
    }

    /// Wait for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut code = None;
        wait_until("tandem exits", limit, || match self.child.try_wait() {
            Ok(Some(s)) => {
                code = s.code();
                true
            }
            _ => false,
        });
        code
    }
}

impl Drop for Tandem {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- tandem log tail ---\n{}",
                lines[lines.len().saturating_sub(200)..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The checkpoint tandem keeps on `target` for link `id`: (state, offset).
pub fn checkpoint(target: &RedisServer, id: &str) -> Option<(String, u64)> {
    let mut c = target.client();
    c.cmd(&["SELECT", "0"]);
    let key = format!("__tandem:ckpt:{id}");
    let state = match c.cmd(&["HGET", &key, "state"]) {
        Frame::BulkString(s) => String::from_utf8(s).unwrap(),
        _ => return None,
    };
    let offset = c.cmd_text(&["HGET", &key, "offset"]).parse().unwrap();
    Some((state, offset))
}

pub fn master_offset(server: &RedisServer) -> u64 {
    server
        .info_field("replication", "master_repl_offset")
        .unwrap()
        .parse()
        .unwrap()
}

/// Wait until tandem's checkpoint on `target` reached the source's current offset.
pub fn wait_caught_up(source: &RedisServer, target: &RedisServer, id: &str, limit: Duration) {
    wait_until("tandem caught up with the source", limit, || {
        let want = master_offset(source);
        checkpoint(target, id).is_some_and(|(s, o)| s == "incr" && o == want)
    });
}
