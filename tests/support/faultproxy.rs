//! A TCP proxy on 127.0.0.1 that tandem connects through, to break a link on command:
//! cut it (RST), stall it (nothing forwarded, nothing lost), slow it down (bytes per
//! second), blackhole it (bytes read and dropped, no RST, no FIN: the peer sees silence),
//! or refuse new connections (accepted and reset at once: "connection refused" as a
//! restarting server gives it). Each direction has its own setting. A cut can also
//! take only the replication links (connections whose client sent `PSYNC`), leaving
//! the other connections to the same server (tandem's writes, two-way) open.
//!
//! Plain threads and blocking sockets: every read has a short timeout so a pump sees a
//! new setting or a cut within [`POLL`], and nothing here waits without a bound.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a pump looks at its setting while it has nothing to read.
const POLL: Duration = Duration::from_millis(10);

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client (tandem) to server.
    Up,
    /// Server to client.
    Down,
}

/// What a direction does with the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Pass,
    /// Read nothing: the sender's buffers fill; nothing is lost when it passes again.
    Stall,
    /// At most this many bytes per second.
    Slow(u64),
    /// Read and drop: the stream the peer sees has a hole (cut the link afterwards).
    Blackhole,
}

#[derive(Default)]
struct Shared {
    flows: Mutex<[Option<Flow>; 2]>,
    upstream: AtomicU16,
    /// Bumped by `cut`: every connection opened before it is reset.
    generation: AtomicU64,
    refuse: AtomicBool,
    stop: AtomicBool,
    open: AtomicUsize,
    accepted: AtomicU64,
    forwarded: [AtomicU64; 2],
    conns: Mutex<Vec<Weak<ConnFlags>>>,
}

/// One connection's state, held by its pumps: gone when the connection is.
#[derive(Default)]
struct ConnFlags {
    /// The client sent `PSYNC`: a replication link.
    replica: AtomicBool,
    /// Reset by `cut_replication`.
    killed: AtomicBool,
}

impl Shared {
    fn flow(&self, dir: Dir) -> Flow {
        self.flows.lock().unwrap()[dir as usize].unwrap_or(Flow::Pass)
    }
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on an ephemeral loopback port, forwarding to `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        shared.upstream.store(upstream, Ordering::SeqCst);
        let sh = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, sh));
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, dir: Dir, flow: Flow) {
        self.shared.flows.lock().unwrap()[dir as usize] = Some(flow);
    }

    pub fn set_both(&self, flow: Flow) {
        *self.shared.flows.lock().unwrap() = [Some(flow), Some(flow)];
    }

    /// Forward to another port from the next connection on (a server restarted
    /// elsewhere, a promoted replica).
    pub fn set_upstream(&self, port: u16) {
        self.shared.upstream.store(port, Ordering::SeqCst);
    }

    /// Accept new connections only to reset them (`on`), or forward them again.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Reset (RST) every open connection, both sides, and wait until they are gone.
    pub fn cut(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        while self.connections() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "fault proxy :{}: {} connections still open 5 s after a cut",
                self.port,
                self.connections()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Reset (RST) only the open replication links (the client sent `PSYNC`), and wait
    /// until they are gone; returns how many there were.
    pub fn cut_replication(&self) -> usize {
        let victims: Vec<Weak<ConnFlags>> = {
            let mut conns = self.shared.conns.lock().unwrap();
            conns.retain(|w| w.strong_count() > 0);
            conns
                .iter()
                .filter(|w| {
                    w.upgrade().is_some_and(|f| {
                        let hit = f.replica.load(Ordering::SeqCst);
                        if hit {
                            f.killed.store(true, Ordering::SeqCst);
                        }
                        hit
                    })
                })
                .cloned()
                .collect()
        };
        let start = Instant::now();
        while victims.iter().any(|w| w.strong_count() > 0) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "fault proxy :{}: a replication link still open 5 s after its cut",
                self.port
            );
            std::thread::sleep(POLL);
        }
        victims.len()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections accepted since start (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded in `dir` since start.
    pub fn forwarded(&self, dir: Dir) -> u64 {
        self.shared.forwarded[dir as usize].load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => continue,
        };
        sh.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        if sh.refuse.load(Ordering::SeqCst) {
            reset(&client);
            continue;
        }
        let sh = sh.clone();
        std::thread::spawn(move || serve(client, sh));
    }
}

/// Close with RST rather than FIN once the last handle of the socket is dropped.
fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Held by each pump of a connection: the count of open connections drops with the last.
struct Open(Arc<Shared>);
impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(client: TcpStream, sh: Arc<Shared>) {
    let generation = sh.generation.load(Ordering::SeqCst);
    sh.open.fetch_add(1, Ordering::SeqCst);
    let open = Arc::new(Open(sh.clone()));
    let dead = Arc::new(AtomicBool::new(false));
    let flags = Arc::new(ConnFlags::default());
    sh.conns.lock().unwrap().push(Arc::downgrade(&flags));
    let conn = Conn {
        generation,
        dead,
        flags,
    };
    // Blackholed when it arrives: accept and read, but never reach the server.
    if sh.flow(Dir::Up) == Flow::Blackhole {
        pump(client, None, Dir::Up, &sh, &conn);
        drop(open);
        return;
    }
    let port = sh.upstream.load(Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
        reset(&client);
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (sh2, conn2, open2) = (sh.clone(), conn.clone(), open.clone());
    let down = std::thread::spawn(move || {
        pump(s2, Some(c2), Dir::Down, &sh2, &conn2);
        drop(open2);
    });
    pump(client, Some(server), Dir::Up, &sh, &conn);
    let _ = down.join();
    drop(open);
}

/// What both pumps of a connection share.
#[derive(Clone)]
struct Conn {
    generation: u64,
    /// Set by whichever pump stops first.
    dead: Arc<AtomicBool>,
    flags: Arc<ConnFlags>,
}

/// Move bytes from `src` to `dst` as the direction's setting says, until either side
/// closes, the other pump of the connection stops, or a cut (which resets both sockets).
fn pump(mut src: TcpStream, mut dst: Option<TcpStream>, dir: Dir, sh: &Shared, conn: &Conn) {
    let _ = src.set_read_timeout(Some(POLL));
    let dead = &conn.dead;
    let cut = || {
        sh.generation.load(Ordering::SeqCst) != conn.generation
            || conn.flags.killed.load(Ordering::SeqCst)
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut() {
            reset(&src);
            if let Some(d) = &dst {
                reset(d);
            }
            break;
        }
        if dead.load(Ordering::SeqCst) {
            break;
        }
        let flow = sh.flow(dir);
        if flow == Flow::Stall {
            std::thread::sleep(POLL);
            continue;
        }
        let max = match flow {
            // A twentieth of a second's worth per read, so the rate is smooth.
            Flow::Slow(bps) => (bps / 20).clamp(1, buf.len() as u64) as usize,
            _ => buf.len(),
        };
        let n = match src.read(&mut buf[..max]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        if dir == Dir::Up
            && buf[..n]
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b"PSYNC"))
        {
            conn.flags.replica.store(true, Ordering::SeqCst);
        }
        // The setting may have changed during the read: what was read follows the new
        // one (held while stalled, dropped if blackholed).
        while sh.flow(dir) == Flow::Stall && !cut() {
            std::thread::sleep(POLL);
        }
        let flow = sh.flow(dir);
        if flow == Flow::Blackhole || cut() {
            continue;
        }
        let Some(d) = dst.as_mut() else { continue };
        if d.write_all(&buf[..n]).is_err() {
            break;
        }
        sh.forwarded[dir as usize].fetch_add(n as u64, Ordering::SeqCst);
        if let Flow::Slow(bps) = flow {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / bps.max(1) as f64));
        }
    }
    // Whichever side stops first ends the connection: the other pump sees `dead`.
    dead.store(true, Ordering::SeqCst);
    if !cut() {
        let _ = src.shutdown(Shutdown::Both);
        if let Some(d) = &dst {
            let _ = d.shutdown(Shutdown::Both);
        }
    }
}

/// The source link through `proxy` cut and refused while the source (`s`) deletes
/// `gone:0..50` and writes far more than a 16 kB backlog (`kept:fill*`); let through
/// again, tandem (`t`) finds it cannot continue and resyncs in full.
pub fn delete_past_the_backlog_while_cut(
    proxy: &FaultProxy,
    s: &mut super::Client,
    t: &super::proc::Tandem,
    limit: Duration,
) {
    proxy.refuse(true);
    proxy.cut();
    for i in 0..50 {
        s.cmd(&["DEL", &format!("gone:{i}")]);
    }
    let filler = "f".repeat(1000);
    for i in 0..100 {
        s.cmd(&["SET", &format!("kept:fill{i}"), &filler]);
    }
    proxy.refuse(false);
    t.wait_log("backlog overrun or another history", limit);
}
