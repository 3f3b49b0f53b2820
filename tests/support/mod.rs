//! Real servers for tests: `redis-server` processes on ephemeral loopback ports, waited
//! for by bounded polling, killed on drop. A failing test prints the tail of each
//! server's log (the log files stay in the server's temporary directory until drop).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

pub use redis_protocol::resp2::types::OwnedFrame as Frame;

/// The server binary: `TANDEM_REDIS_SERVER` (for the CI version matrix) or `redis-server`.
pub fn server_binary() -> String {
    std::env::var("TANDEM_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Poll `cond` every 10 ms until it holds; panic with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut tries = 0u64;
    loop {
        if cond() {
            return;
        }
        tries += 1;
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} ({tries} tries) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `GET /metrics` from tandem's `--metrics-addr` on 127.0.0.1:`port`.
pub fn scrape_metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the metric line starting with `prefix` (name and labels).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn free_port() -> u16 {
    // Ports of a cluster bus are port+10000, so stay below 55535.
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair found in 200 tries");
}

pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
    opts: ServerOpts,
}

#[derive(Clone, Default)]
pub struct ServerOpts {
    pub extra: Vec<String>,
    pub cluster: bool,
    /// Another server binary (version matrix); default `server_binary()`.
    pub binary: Option<String>,
}

impl ServerOpts {
    /// Run the binary named by environment variable `var` (set by scripts/servers.sh).
    pub fn binary_from_env(mut self, var: &str) -> Self {
        let path = std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: run the tests with ./scripts/test.sh, which fetches the version matrix")
        });
        self.binary = Some(path);
        self
    }

    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.extra.push(format!("--{name}"));
        self.extra.push(value.to_string());
        self
    }
}

impl RedisServer {
    /// A source for replication tests: a replica's sync starts at once, the master
    /// pings every second, and the 64 MB backlog holds what is written while tandem is
    /// down between kills.
    pub fn replication_source() -> Self {
        Self::start_with(
            ServerOpts::default()
                .arg("repl-diskless-sync-delay", "0")
                .arg("repl-ping-replica-period", "1")
                .arg("repl-backlog-size", "64mb"),
        )
    }

    pub fn start() -> Self {
        Self::start_with(ServerOpts::default())
    }

    pub fn start_with(opts: ServerOpts) -> Self {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let dir = tempfile::Builder::new()
                .prefix("tandem-redis-")
                .tempdir()
                .expect("temp dir");
            let child = Self::spawn(port, dir.path(), &opts);
            let mut server = RedisServer {
                port,
                child,
                dir,
                opts: opts.clone(),
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            last_log = server.log_tail(20);
        }
        panic!("redis-server did not start in 5 attempts; last log:\n{last_log}");
    }

    fn spawn(port: u16, dir: &Path, opts: &ServerOpts) -> Child {
        let binary = opts.binary.clone().unwrap_or_else(server_binary);
        let mut cmd = Command::new(&binary);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", "redis.log", "--daemonize", "no"])
            .args(["--protected-mode", "no"]);
        if opts.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
            cmd.args(["--cluster-config-file", "nodes.conf"]);
        }
        cmd.args(&opts.extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"))
    }

    /// SIGKILL the server and start it again on the same port and directory (with
    /// `--appendonly yes` among its options it comes back with what it persisted).
    pub fn restart(&mut self) {
        self.kill();
        let limit = Duration::from_secs(10);
        let start = Instant::now();
        loop {
            self.child = Self::spawn(self.port, self.dir.path(), &self.opts);
            if self.wait_ready(limit) {
                return;
            }
            // The port may linger for a moment after the kill.
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "redis-server :{} did not restart:\n{}",
                self.port,
                self.log_tail(20)
            );
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut c) = Client::connect(self.port) {
                match c.try_cmd(&["PING"]) {
                    Ok(Frame::SimpleString(s)) if s == b"PONG" => return true,
                    // A server with a password answers, which is all readiness means.
                    Ok(Frame::Error(e)) if e.starts_with("NOAUTH") => return true,
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port).expect("connect to test server")
    }

    pub fn cmd(&self, args: &[&str]) -> Frame {
        self.client().cmd(args)
    }

    pub fn info_field(&self, section: &str, name: &str) -> Option<String> {
        let info = self.client().cmd_text(&["INFO", section]);
        info.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim().to_string())
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kill the server process (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop (`SIGSTOP`) or resume (`SIGCONT`) the server: alive to the kernel, mute to
    /// its peers (a cluster marks it failing after its node timeout).
    pub fn freeze(&self, on: bool) {
        let sig = if on { "-STOP" } else { "-CONT" };
        let pid = self.child.id().to_string();
        let done = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        assert!(done.is_ok_and(|s| s.success()), "kill {sig} :{}", self.port);
    }

    /// Start as a replica of `master` and wait until the initial sync is done.
    pub fn start_replica_of(master: &RedisServer) -> Self {
        let r = Self::start();
        r.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
        wait_until("replica in sync", Duration::from_secs(30), || {
            r.info_field("replication", "master_link_status").as_deref() == Some("up")
        });
        r
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server :{} log tail ---\n{}",
                self.port,
                self.log_tail(30)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking client for test set-up and assertions.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send_bytes(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out)
    }

    pub fn read_reply(&mut self) -> std::io::Result<Frame> {
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(format!("bad reply: {e:?}"))),
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn try_cmd(&mut self, args: &[&str]) -> std::io::Result<Frame> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send_bytes(&bytes)?;
        self.read_reply()
    }

    /// Run a command; panics on I/O errors, returns server errors as frames.
    pub fn cmd(&mut self, args: &[&str]) -> Frame {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{:?} failed: {e}", args.first()))
    }

    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> Frame {
        self.send_bytes(args).expect("send");
        self.read_reply().expect("reply")
    }

    pub fn cmd_text(&mut self, args: &[&str]) -> String {
        match self.cmd(args) {
            Frame::SimpleString(b) | Frame::BulkString(b) => String::from_utf8_lossy(&b).into(),
            Frame::Integer(i) => i.to_string(),
            other => panic!("{:?} returned {other:?}", args.first()),
        }
    }

    pub fn cmd_int(&mut self, args: &[&str]) -> i64 {
        match self.cmd(args) {
            Frame::Integer(i) => i,
            other => panic!("{:?} returned {other:?}", args.first()),
        }
    }

    /// The server's clock (`TIME`) in ms since the epoch. Tests that need an absolute
    /// instant (an expiry) derive it from this at run time, so they never age.
    pub fn server_time_ms(&mut self) -> u64 {
        let Frame::Array(parts) = self.cmd(&["TIME"]) else {
            panic!("TIME: not an array")
        };
        let num = |f: &Frame| match f {
            Frame::BulkString(b) => std::str::from_utf8(b).unwrap().parse::<u64>().unwrap(),
            other => panic!("TIME: {other:?}"),
        };
        num(&parts[0]) * 1000 + num(&parts[1]) / 1000
    }

    /// Send many commands in one pipeline and check none failed.
    pub fn pipeline(&mut self, cmds: &[Vec<Bytes>]) {
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_ref()).collect();
            self.send_bytes(&args).expect("send");
        }
        for c in cmds {
            let r = self.read_reply().expect("reply");
            if let Frame::Error(e) = r {
                panic!("{:?} failed: {e}", String::from_utf8_lossy(&c[0]));
            }
        }
    }
}

/// A cluster of `masters` masters (slots split evenly) each with `replicas` replicas.
pub struct Cluster {
    pub masters: Vec<RedisServer>,
    pub replicas: Vec<RedisServer>,
}

impl Cluster {
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        Self::start_with(masters, replicas, ServerOpts::default())
    }

    /// `start` with every node run with `opts` (modules, another binary).
    pub fn start_with(masters: usize, replicas: usize, opts: ServerOpts) -> Cluster {
        let opts = ServerOpts {
            cluster: true,
            ..opts
        };
        let ms: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer::start_with(opts.clone()))
            .collect();
        let per = 16384 / masters;
        for (i, m) in ms.iter().enumerate() {
            let lo = i * per;
            let hi = if i + 1 == masters {
                16383
            } else {
                lo + per - 1
            };
            let r = m.cmd(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()]);
            assert_eq!(r, Frame::SimpleString("OK".into()), "ADDSLOTSRANGE");
        }
        for m in &ms[1..] {
            m.cmd(&["CLUSTER", "MEET", "127.0.0.1", &ms[0].port.to_string()]);
        }
        let mut rs = Vec::new();
        for m in &ms {
            let id = m.client().cmd_text(&["CLUSTER", "MYID"]);
            for _ in 0..replicas {
                let r = RedisServer::start_with(opts.clone());
                r.cmd(&["CLUSTER", "MEET", "127.0.0.1", &ms[0].port.to_string()]);
                wait_until("replica sees its master", Duration::from_secs(20), || {
                    r.client().cmd_text(&["CLUSTER", "NODES"]).contains(&id)
                });
                let res = r.cmd(&["CLUSTER", "REPLICATE", &id]);
                assert_eq!(res, Frame::SimpleString("OK".into()), "CLUSTER REPLICATE");
                rs.push(r);
            }
        }
        let c = Cluster {
            masters: ms,
            replicas: rs,
        };
        c.wait_ok();
        c
    }

    pub fn nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.masters.iter().chain(self.replicas.iter())
    }

    pub fn wait_ok(&self) {
        let total = self.masters.len() + self.replicas.len();
        wait_until(
            "cluster_state:ok everywhere",
            Duration::from_secs(30),
            || {
                // `cluster_state` is in CLUSTER INFO (INFO cluster only has cluster_enabled).
                self.nodes().all(|n| {
                    n.client()
                        .cmd_text(&["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                        && n.client().cmd_text(&["CLUSTER", "NODES"]).lines().count() == total
                })
            },
        );
        for r in &self.replicas {
            wait_until("cluster replica in sync", Duration::from_secs(30), || {
                r.info_field("replication", "master_link_status").as_deref() == Some("up")
            });
        }
    }

    pub fn url(&self) -> String {
        self.masters[0].url()
    }

    /// The master serving `key`.
    pub fn master_for(&self, key: &str) -> &RedisServer {
        let slot = self.masters[0]
            .client()
            .cmd_int(&["CLUSTER", "KEYSLOT", key]);
        let per = 16384 / self.masters.len() as i64;
        let idx = ((slot / per) as usize).min(self.masters.len() - 1);
        &self.masters[idx]
    }
}

/// The tandem binary built for this test run.
pub fn tandem_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
}

pub fn frame_to_string(f: &OwnedFrame) -> String {
    match f {
        Frame::SimpleString(b) | Frame::BulkString(b) => String::from_utf8_lossy(b).into(),
        other => format!("{other:?}"),
    }
}

pub mod data;
pub mod faultproxy;
pub mod http;
pub mod kafka;
pub mod kill;
pub mod load;
pub mod mongo;
pub mod mongo_data;
pub mod proc;

/// A source that requires `password` (clients send AUTH first), with no PING in its
/// stream (offsets stay exact) and no delay before a diskless full sync.
pub fn password_source(password: &str) -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .arg("requirepass", password)
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-ping-replica-period", "3600"),
    )
}
