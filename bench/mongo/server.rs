//! secantus (`secantusd-py`): a MongoDB-wire server that presents as a one-node replica
//! set. Each server gets a fresh storage directory and an ephemeral loopback port, and
//! is killed on drop (the data is scratch).

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::Client;
use mongodb::bson::doc;

use super::util::{Ctx, Result, log_tail};

const START_LIMIT: Duration = Duration::from_secs(30);

/// `TANDEM_SECANTUSD`, or the venv scripts/servers.sh makes under target/.
pub fn binary() -> PathBuf {
    match std::env::var("TANDEM_SECANTUSD") {
        Ok(p) if !p.is_empty() => p.into(),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mongo-venv/bin/secantusd-py"),
    }
}

/// "SecantusDB 0.7.0b3" from the venv's package metadata, when the binary is in one.
pub fn version() -> String {
    let lib = binary()
        .parent()
        .and_then(|b| b.parent())
        .map(|v| v.join("lib"));
    let found = lib
        .and_then(|l| std::fs::read_dir(l).ok())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|py| std::fs::read_dir(py.path().join("site-packages")).ok())
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|n| {
            let v = n.strip_prefix("secantusdb-")?.strip_suffix(".dist-info")?;
            Some(format!("SecantusDB {v}"))
        });
    found.unwrap_or_else(|| "SecantusDB (version unknown)".to_string())
}

pub struct Secantus {
    pub role: &'static str,
    pub uri: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Secantus {
    /// Starts a server and waits (bounded) until it answers `ping`.
    pub async fn start(role: &'static str) -> Result<Secantus> {
        let bin = binary();
        if !bin.exists() {
            return Err(format!(
                "{} is missing: run scripts/servers.sh (it installs secantusdb), or set TANDEM_SECANTUSD",
                bin.display()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("tandem-bench-mongo-")
            .tempdir()
            .ctx("creating a temporary directory")?;
        let port = free_port()?;
        let log = File::create(dir.path().join("server.log")).ctx("creating the server log")?;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.path().join("data"))
            .args(["--cache-size", "256M"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .ctx(format!("starting {}", bin.display()))?;
        let mut s = Secantus {
            role,
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            child,
            dir,
        };
        s.wait_listening(port).await?;
        Ok(s)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        log_tail(&self.dir.path().join("server.log"), 20)
    }

    async fn wait_listening(&mut self, port: u16) -> Result<()> {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "{} server exited with {st}:\n{}",
                    self.role,
                    self.log()
                ));
            }
            if start.elapsed() > START_LIMIT {
                return Err(format!(
                    "{} server did not listen within {START_LIMIT:?}:\n{}",
                    self.role,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// A client, once the server answers `ping` (it does a little after it listens).
    pub async fn client(&self) -> Result<Client> {
        let c = Client::with_uri_str(&self.uri).await.ctx(&self.uri)?;
        let start = Instant::now();
        loop {
            match c.database("admin").run_command(doc! {"ping": 1}).await {
                Ok(_) => return Ok(c),
                Err(e) if start.elapsed() > START_LIMIT => {
                    return Err(format!("{} server {}: ping: {e}", self.role, self.uri));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port the kernel just handed out (free unless something grabs it right away).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ctx("binding an ephemeral loopback port")?;
    Ok(l.local_addr().ctx("reading the bound port")?.port())
}
