//! A `tandem mongo sync` child process, watched through /proc while it runs: its CPU
//! time and peak RSS, read by polling rather than by reaping it, so the final totals of
//! the exited (zombie) process are still readable.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::procfs;
use super::util::{Ctx, Result, log_tail};

/// How often the stop condition (exit, or a document on the target) is checked.
const POLL: Duration = Duration::from_millis(20);
/// How often VmHWM is read (CPU comes with every poll: the stat file is read anyway).
const SAMPLE: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub peak_rss_kb: u64,
}

pub struct Tandem {
    child: Child,
    reaped: bool,
    started: Instant,
    log: PathBuf,
    hz: u64,
    usage: Usage,
    last_rss: Option<Instant>,
}

impl Tandem {
    /// `tandem mongo sync ARGS…`, its stderr (the log) in `log`.
    pub fn spawn(bin: &Path, args: &[String], log: PathBuf) -> Result<Tandem> {
        Self::spawn_cmd(bin, "sync", args, log)
    }

    /// `tandem mongo CMD ARGS…`.
    pub fn spawn_cmd(bin: &Path, cmd: &str, args: &[String], log: PathBuf) -> Result<Tandem> {
        let file = File::create(&log).ctx(format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(["mongo", cmd])
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .ctx(format!("starting {}", bin.display()))?;
        Ok(Tandem {
            child,
            reaped: false,
            started: Instant::now(),
            log,
            hz: procfs::ticks_per_sec(),
            usage: Usage::default(),
            last_rss: None,
        })
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "tandem {what}; its log ({}) ends:\n{}",
            self.log.display(),
            log_tail(&self.log, 20)
        )
    }

    /// Takes a sample; false once the process has exited.
    fn sample(&mut self) -> bool {
        let pid = self.child.id();
        let Some(st) = procfs::stat(pid, self.hz) else {
            return false;
        };
        self.usage.cpu = st.cpu;
        if st.exited {
            return false;
        }
        if self.last_rss.is_none_or(|t| t.elapsed() >= SAMPLE) {
            if let Some(kb) = procfs::peak_rss_kb(pid) {
                self.usage.peak_rss_kb = kb;
            }
            self.last_rss = Some(Instant::now());
        }
        true
    }

    /// Reaps the exited process: an error unless it exited 0.
    fn reap(&mut self) -> Result<()> {
        let st = self.child.wait().ctx("waiting for tandem")?;
        self.reaped = true;
        if st.success() {
            Ok(())
        } else {
            Err(self.failure(&format!("exited with {st}")))
        }
    }

    /// Waits until tandem exits 0; the time since it started.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<Duration> {
        loop {
            if !self.sample() {
                let took = self.started.elapsed();
                self.reap()?;
                return Ok(took);
            }
            if self.started.elapsed() > limit {
                return Err(self.failure(&format!("did not exit within {limit:?}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `cond` until it holds while tandem runs; the time since it started. Usage
    /// is sampled at that moment, so it leaves out the shutdown that follows.
    pub async fn wait_until<F, Fut>(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: F,
    ) -> Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        loop {
            if cond().await? {
                let took = self.started.elapsed();
                self.last_rss = None;
                self.sample();
                return Ok(took);
            }
            if !self.sample() {
                self.reap()?;
                return Err(self.failure(&format!("exited before {what}")));
            }
            if start.elapsed() > limit {
                return Err(self.failure(&format!("timed out after {limit:?} waiting for {what}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGINT (tandem finishes the batch in flight and exits 0), then waits for it.
    pub async fn stop(&mut self, limit: Duration) -> Result<()> {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .ctx("running kill -INT")?;
        if !st.success() {
            return Err(format!("kill -INT {pid} failed: {st}"));
        }
        let deadline = self.started.elapsed() + limit;
        self.wait_exit(deadline).await.map(|_| ())
    }
}

impl Drop for Tandem {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
