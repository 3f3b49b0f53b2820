//! The fault proxy itself (tests/support/faultproxy.rs), through a real redis-server:
//! each fault does what the fault tests rely on, and nothing else.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::faultproxy::{Dir, FaultProxy, Flow};
use support::*;

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// What a read within the stream's timeout gives: bytes, EOF, reset, or nothing.
#[derive(Debug, PartialEq)]
enum Got {
    Data(Vec<u8>),
    Eof,
    Reset,
    Silence,
}

fn read_once(s: &mut TcpStream) -> Got {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => Got::Eof,
        Ok(n) => Got::Data(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Got::Silence,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Got::Reset,
        Err(e) => panic!("unexpected read error {e}"),
    }
}

#[test]
fn passes_commands_both_ways() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port);
    let mut c = Client::connect(proxy.port).unwrap();
    assert_eq!(c.cmd_text(&["SET", "k", "v"]), "OK");
    assert_eq!(server.client().cmd_text(&["GET", "k"]), "v");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.forwarded(Dir::Down), 5, "+OK\\r\\n");
}

#[test]
fn cut_resets_both_sides() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port);
    let mut s = raw(proxy.port);
    s.write_all(b"CLIENT SETNAME viaproxy\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    while got.len() < 12 {
        match read_once(&mut s) {
            Got::Data(d) => got.extend(d),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, b"+OK\r\n+PONG\r\n");
    proxy.cut();
    assert_eq!(proxy.connections(), 0);
    assert_eq!(read_once(&mut s), Got::Reset);
    wait_until(
        "the server dropped its side",
        Duration::from_secs(5),
        || {
            !server
                .client()
                .cmd_text(&["CLIENT", "LIST"])
                .contains("name=viaproxy")
        },
    );
    // New connections pass again.
    assert_eq!(
        Client::connect(proxy.port).unwrap().cmd_text(&["PING"]),
        "PONG"
    );
}

#[test]
fn stall_holds_bytes_and_loses_none() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port);
    let mut s = raw(proxy.port);
    proxy.set(Dir::Down, Flow::Stall);
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_once(&mut s), Got::Silence);
    proxy.set(Dir::Down, Flow::Pass);
    assert_eq!(read_once(&mut s), Got::Data(b"+PONG\r\n".to_vec()));
    // Stalled upwards: the server never sees the write until it passes.
    proxy.set(Dir::Up, Flow::Stall);
    s.write_all(b"SET stalled 1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.client().cmd_int(&["EXISTS", "stalled"]), 0);
    proxy.set(Dir::Up, Flow::Pass);
    assert_eq!(read_once(&mut s), Got::Data(b"+OK\r\n".to_vec()));
    assert_eq!(server.client().cmd_int(&["EXISTS", "stalled"]), 1);
}

#[test]
fn slow_limits_the_rate() {
    let server = RedisServer::start();
    let value = "x".repeat(40_000);
    server.cmd(&["SET", "big", &value]);
    let proxy = FaultProxy::start(server.port);
    proxy.set(Dir::Down, Flow::Slow(100_000));
    let mut c = Client::connect(proxy.port).unwrap();
    let start = Instant::now();
    assert_eq!(c.cmd_text(&["GET", "big"]), value);
    let took = start.elapsed();
    // 40 kB at 100 kB/s: 0.4 s, give or take one read's worth.
    assert!(took >= Duration::from_millis(330), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn blackhole_is_silence_without_reset_until_cut() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port);
    let mut s = raw(proxy.port);
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_once(&mut s), Got::Data(b"+PONG\r\n".to_vec()));
    proxy.set_both(Flow::Blackhole);
    s.write_all(b"SET lost 1\r\n").unwrap();
    for _ in 0..3 {
        assert_eq!(read_once(&mut s), Got::Silence);
    }
    assert_eq!(server.client().cmd_int(&["EXISTS", "lost"]), 0);
    // A new connection is accepted and goes nowhere.
    let mut fresh = raw(proxy.port);
    fresh.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_once(&mut fresh), Got::Silence);
    assert_eq!(proxy.connections(), 2);
    proxy.cut();
    assert_eq!(read_once(&mut s), Got::Reset);
    assert_eq!(read_once(&mut fresh), Got::Reset);
}

#[test]
fn refuse_resets_new_connections_and_a_new_upstream_takes_over() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    second.cmd(&["SET", "which", "second"]);
    let proxy = FaultProxy::start(first.port);
    proxy.refuse(true);
    let mut s = raw(proxy.port);
    let _ = s.write_all(b"PING\r\n");
    assert!(
        matches!(read_once(&mut s), Got::Reset | Got::Eof),
        "a refused connection ends at once"
    );
    assert_eq!(proxy.accepted(), 1);
    proxy.refuse(false);
    proxy.set_upstream(second.port);
    let mut c = Client::connect(proxy.port).unwrap();
    assert_eq!(c.cmd_text(&["GET", "which"]), "second");
}

#[test]
fn cut_replication_resets_only_the_replication_links() {
    let server = RedisServer::replication_source();
    let proxy = FaultProxy::start(server.port);
    let mut plain = Client::connect(proxy.port).unwrap();
    assert_eq!(plain.cmd_text(&["SET", "k", "v"]), "OK");
    let mut replica = raw(proxy.port);
    replica.write_all(b"PSYNC ? -1\r\n").unwrap();
    wait_until(
        "the full resync answer",
        Duration::from_secs(10),
        || matches!(read_once(&mut replica), Got::Data(d) if d.starts_with(b"+FULLRESYNC")),
    );
    assert_eq!(proxy.cut_replication(), 1);
    let start = Instant::now();
    let end = loop {
        match read_once(&mut replica) {
            Got::Data(_) | Got::Silence if start.elapsed() < Duration::from_secs(5) => continue,
            other => break other,
        }
    };
    assert_eq!(end, Got::Reset, "the replication link is reset");
    assert_eq!(
        plain.cmd_text(&["GET", "k"]),
        "v",
        "the other connection is kept"
    );
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.cut_replication(), 0, "nothing left to cut");
}
