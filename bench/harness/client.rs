//! A small blocking RESP client: enough to drive servers, pipeline loads and poll.
//!
//! Blocking std sockets keep the harness simple and its timings free of any async
//! runtime's scheduling; one client per thread.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub use redis_protocol::resp2::types::OwnedFrame as Frame;

pub struct Client {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Start of unparsed bytes in `rbuf`.
    rpos: usize,
    wbuf: Vec<u8>,
    queued: usize,
}

impl Client {
    pub fn connect(port: u16) -> io::Result<Client> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        // Bounded: a wedged server fails the run instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_write_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client {
            stream,
            rbuf: Vec::with_capacity(64 << 10),
            rpos: 0,
            wbuf: Vec::with_capacity(64 << 10),
            queued: 0,
        })
    }

    /// One command, one reply (server errors come back as `Frame::Error`).
    pub fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Frame> {
        self.queue(args);
        self.stream.write_all(&self.wbuf)?;
        self.wbuf.clear();
        self.queued = 0;
        self.read_frame()
    }

    /// Like `cmd`, but a server error is an `Err`.
    pub fn ok(&mut self, args: &[&[u8]]) -> io::Result<Frame> {
        match self.cmd(args)? {
            Frame::Error(e) => Err(io::Error::other(format!(
                "{}: {e}",
                String::from_utf8_lossy(args[0])
            ))),
            f => Ok(f),
        }
    }

    pub fn queue(&mut self, args: &[&[u8]]) {
        encode(&mut self.wbuf, args);
        self.queued += 1;
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn queued_bytes(&self) -> usize {
        self.wbuf.len()
    }

    /// Sends everything queued and reads all replies; any error reply fails the
    /// pipeline (a load that silently lost writes would make every number wrong).
    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf)?;
        self.wbuf.clear();
        let n = std::mem::take(&mut self.queued);
        let mut first_err = None;
        for _ in 0..n {
            if let Frame::Error(e) = self.read_frame()? {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(io::Error::other(format!("pipeline error reply: {e}"))),
            None => Ok(()),
        }
    }

    fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if self.rpos < self.rbuf.len() {
                match redis_protocol::resp2::decode::decode(&self.rbuf[self.rpos..]) {
                    Ok(Some((frame, used))) => {
                        self.rpos += used;
                        if self.rpos == self.rbuf.len() {
                            self.rbuf.clear();
                            self.rpos = 0;
                        }
                        return Ok(frame);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::other(format!("bad reply: {e:?}"))),
                }
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            let len = self.rbuf.len();
            self.rbuf.resize(len + (64 << 10), 0);
            let n = self.stream.read(&mut self.rbuf[len..])?;
            self.rbuf.truncate(len + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }

    pub fn info(&mut self, section: &str) -> io::Result<String> {
        match self.ok(&[b"INFO", section.as_bytes()])? {
            Frame::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            f => Err(io::Error::other(format!("INFO: unexpected {f:?}"))),
        }
    }

    /// `DBSIZE`, or `None` while the server cannot answer yet (e.g. `-LOADING`).
    pub fn dbsize(&mut self) -> io::Result<Option<u64>> {
        Ok(match self.cmd(&[b"DBSIZE"])? {
            Frame::Integer(n) => Some(n as u64),
            _ => None,
        })
    }

    /// A hash as field/value pairs (empty when missing or while loading).
    pub fn hgetall(&mut self, key: &str) -> io::Result<Vec<(String, String)>> {
        let Frame::Array(items) = self.cmd(&[b"HGETALL", key.as_bytes()])? else {
            return Ok(Vec::new());
        };
        let text = |f: &Frame| match f {
            Frame::BulkString(b) | Frame::SimpleString(b) => String::from_utf8_lossy(b).into(),
            other => format!("{other:?}"),
        };
        Ok(items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), text(&c[1])))
            .collect())
    }

    pub fn get(&mut self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(match self.cmd(&[b"GET", key])? {
            Frame::BulkString(b) => Some(b),
            _ => None,
        })
    }
}

/// A field of an INFO text (`name:value` lines).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}
