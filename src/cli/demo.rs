//! `tandem demo`: two local redis-servers on free loopback ports, `redis twoway`
//! between them, a live write load on both sides (some keys written on both), then
//! convergence shown with `verify`. Everything stops on Ctrl-C or after `--seconds`;
//! nothing listens outside 127.0.0.1 and nothing is left running (children are killed
//! on drop).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};

use super::CliResult;
use crate::redis::conn::{Conn, Frame};
use crate::redis::url::Endpoint;
use crate::redis::verify::{VerifyConfig, VerifyMode, verify};

#[derive(Args)]
pub struct DemoArgs {
    /// Stop by itself after this many seconds of load (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// The redis-server binary (default: `redis-server` from PATH).
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
}

const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(args: DemoArgs) -> CliResult {
    let dir = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = demo(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn demo(args: &DemoArgs, dir: &std::path::Path) -> CliResult {
    let (pa, pb, pm) = (free_port()?, free_port()?, free_port()?);
    let mut servers = vec![server(&args.redis_server, pa, dir).await?];
    servers.push(server(&args.redis_server, pb, dir).await?);
    let result = with_servers(args, pa, pb, pm, dir).await;
    // Killed and waited for, so that nothing listens once the demo has returned.
    for s in &mut servers {
        let _ = s.kill().await;
    }
    result
}

async fn with_servers(
    args: &DemoArgs,
    pa: u16,
    pb: u16,
    pm: u16,
    dir: &std::path::Path,
) -> CliResult {
    let (a, b) = (endpoint(pa)?, endpoint(pb)?);
    let conflicts = dir.join("conflicts.jsonl");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find tandem itself: {e}"))?;
    let mut twoway = Command::new(exe)
        .args([
            "redis",
            "twoway",
            "--a",
            &a.to_string(),
            "--b",
            &b.to_string(),
        ])
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{pm}"),
            "--conflict-log",
        ])
        .arg(&conflicts)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("twoway.log"))?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start tandem redis twoway: {e}"))?;
    println!("A: {a}   B: {b}   (two-way, conflicts converge)");
    println!("status:  curl -s http://127.0.0.1:{pm}/status");
    println!("metrics: curl -s http://127.0.0.1:{pm}/metrics");
    // Writes on B before its link to A attaches would be missed (two-way copies A
    // into B only): start the load once both directions stream.
    wait_streaming(pm, &mut twoway).await?;
    let shutdown = super::shutdown_on_signal();
    let (mut ca, mut cb) = (
        Conn::connect(&a, TIMEOUT).await?,
        Conn::connect(&b, TIMEOUT).await?,
    );
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut i = 0u64;
    let started = std::time::Instant::now();
    let limit = args.seconds.map(Duration::from_secs);
    while !shutdown.is_triggered() && limit.is_none_or(|l| started.elapsed() < l) {
        tick.tick().await;
        // Keys of each side's own, and ten keys both sides write: conflicts.
        for _ in 0..20 {
            let both = format!("demo:both:{}", i % 10);
            ca.query(&[b"SET", format!("demo:a:{i}").as_bytes(), b"from A"])
                .await?;
            cb.query(&[b"SET", format!("demo:b:{i}").as_bytes(), b"from B"])
                .await?;
            ca.query(&[b"SET", both.as_bytes(), format!("A{i}").as_bytes()])
                .await?;
            cb.query(&[b"SET", both.as_bytes(), format!("B{i}").as_bytes()])
                .await?;
            i += 1;
        }
        if i.is_multiple_of(200) {
            let (na, nb) = (dbsize(&mut ca).await?, dbsize(&mut cb).await?);
            println!(
                "{:>3} s: A holds {na} keys, B holds {nb}",
                started.elapsed().as_secs()
            );
        }
    }
    println!("load stopped after {i} writes on each side; waiting for both sides to agree…");
    let cfg = VerifyConfig {
        source: a.clone(),
        target: b.clone(),
        mode: VerifyMode::Full,
        rounds: 20,
        round_delay: Duration::from_millis(500),
        include_prefixes: Vec::new(),
        exclude_prefixes: Vec::new(),
        db_map: Default::default(),
        ttl_tolerance_ms: 1000,
    };
    let report = verify(&cfg).await?;
    let resolved = std::fs::read_to_string(&conflicts).unwrap_or_default();
    let shown = resolved.lines().next().unwrap_or("");
    println!("conflicts resolved: {}", resolved.lines().count());
    if !shown.is_empty() {
        println!("  e.g. {shown}");
    }
    let (na, nb) = (dbsize(&mut ca).await?, dbsize(&mut cb).await?);
    println!("A holds {na} keys, B holds {nb}");
    let outcome = match report.diffs.len() {
        0 => format!("verify: {} keys compared: identical", report.keys_compared),
        n => format!("verify: {n} differences, e.g. {}", report.diffs[0]),
    };
    println!("{outcome}");
    stop(&mut twoway).await;
    if report.diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("the two sides did not converge ({outcome})").into())
    }
}

/// Poll `/status` until both links are incremental (bounded: 30 s).
async fn wait_streaming(port: u16, child: &mut Child) -> Result<(), String> {
    for _ in 0..300 {
        if let Ok(Some(code)) = child.try_wait() {
            return Err(format!(
                "tandem redis twoway exited ({code}) before streaming"
            ));
        }
        if let Some(doc) = status(port).await {
            let links = doc["links"].as_array().cloned().unwrap_or_default();
            if links.len() == 2 && links.iter().all(|l| l["state"] == "incremental") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("tandem redis twoway did not start streaming within 30 s".into())
}

async fn status(port: u16) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// SIGINT (a clean stop), then kill if it takes longer than a few seconds.
async fn stop(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn endpoint(port: u16) -> Result<Endpoint, String> {
    Endpoint::parse(&format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())
}

/// A redis-server on `port` of 127.0.0.1, ready (PING answered), killed on drop.
async fn server(binary: &PathBuf, port: u16, dir: &std::path::Path) -> Result<Child, String> {
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", &format!("redis-{port}.log")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} ({e}): install it (apt-get install redis-server) or pass --redis-server PATH",
                binary.display()
            )
        })?;
    let ep = endpoint(port)?;
    for _ in 0..100 {
        if let Ok(mut c) = Conn::connect(&ep, TIMEOUT).await
            && matches!(c.request(&[b"PING"]).await, Ok(Frame::SimpleString(_)))
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{ep}: redis-server did not answer PING within 5 s"))
}

async fn dbsize(c: &mut Conn) -> Result<i64, crate::redis::conn::ConnError> {
    Ok(match c.query(&[b"DBSIZE"]).await? {
        Frame::Integer(n) => n,
        _ => -1,
    })
}
