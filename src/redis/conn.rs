//! A plain request/response Redis connection used for handshakes, probes and (pipelined)
//! target writes. RESP framing is the `redis-protocol` crate's, except for the one
//! hot-path shape in `scan.rs` (an `EXEC` reply without errors, skipped undecoded).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::scan::Clean;
use super::url::Endpoint;

pub use redis_protocol::resp2::types::BytesFrame as Frame;

/// The byte stream under a connection: TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{endpoint}: cannot connect: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint}: timed out {what}")]
    Timeout {
        endpoint: String,
        what: &'static str,
    },
    #[error("{endpoint}: connection lost: {source}")]
    Io {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint}: connection closed by the server")]
    Closed { endpoint: String },
    #[error("{endpoint}: authentication failed: {message}")]
    Auth { endpoint: String, message: String },
    #[error("{endpoint}: not a Redis server? {detail}")]
    Protocol { endpoint: String, detail: String },
    #[error("{endpoint}: {command} failed: {message}")]
    Server {
        endpoint: String,
        command: String,
        message: String,
    },
    /// TLS set-up or handshake failed for a reason retrying cannot fix (a certificate
    /// file, an untrusted or mismatched certificate, a server that requires a client
    /// certificate).
    #[error("{endpoint}: TLS: {detail}")]
    Tls { endpoint: String, detail: String },
}

impl ConnError {
    /// Whether trying again later can help: the network, a loading server, a replica
    /// whose master link is down. Wrong credentials or a foreign protocol cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnError::Connect { .. }
            | ConnError::Timeout { .. }
            | ConnError::Io { .. }
            | ConnError::Closed { .. } => true,
            ConnError::Server { message, .. } => is_transient_server_error(message),
            ConnError::Auth { .. } | ConnError::Protocol { .. } | ConnError::Tls { .. } => false,
        }
    }
}

/// Server error replies that go away by themselves.
pub fn is_transient_server_error(message: &str) -> bool {
    let code = message.split_whitespace().next().unwrap_or("");
    matches!(
        code,
        "LOADING" | "NOMASTERLINK" | "MASTERDOWN" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN"
    )
}

pub struct Conn {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    endpoint: String,
    timeout: Duration,
    tls: bool,
    /// [`MAX_REPLY`]; lower in unit tests.
    max_reply: usize,
}

/// The top-level header of an incomplete reply, when it announces more than a Redis
/// server ever sends: a bulk over [`MAX_BULK`], or an array with more elements than
/// [`MAX_REPLY`] bytes could hold.
fn declared_too_long(buf: &[u8]) -> Option<String> {
    let kind = *buf.first()?;
    if kind != b'$' && kind != b'*' {
        return None;
    }
    let end = buf.iter().take(24).position(|&b| b == b'\r')?;
    let n: u64 = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    match kind {
        b'$' if n > MAX_BULK => Some(format!(
            "a reply announces a {n}-byte value, more than a Redis server sends \
             ({MAX_BULK} bytes, proto-max-bulk-len)"
        )),
        // Each element takes at least 3 bytes (`:0\r\n` is 4).
        b'*' if n > (MAX_REPLY / 3) as u64 => Some(format!(
            "a reply announces an array of {n} elements, more than {MAX_REPLY} bytes hold"
        )),
        _ => None,
    }
}

const READ_CHUNK: usize = 64 * 1024;

/// The longest bulk a reply may declare: a Redis server's default `proto-max-bulk-len`
/// (512 MiB), the largest value it takes in.
pub const MAX_BULK: u64 = 512 << 20;

/// The most one reply may hold before it is whole (a 512 MiB value inside its array,
/// with room to spare): past it the peer is not answering as a Redis server does, and
/// holding more would let it take all memory.
pub const MAX_REPLY: usize = 1 << 30;

impl Conn {
    /// Connect and authenticate (AUTH with user or password), then SELECT the URL's db.
    pub async fn connect(ep: &Endpoint, timeout: Duration) -> Result<Conn, ConnError> {
        let mut conn = Self::connect_unauthenticated(ep, timeout).await?;
        conn.authenticate(ep).await?;
        if ep.db != 0 {
            conn.query(&[b"SELECT", ep.db.to_string().as_bytes()])
                .await?;
        }
        Ok(conn)
    }

    pub async fn connect_unauthenticated(
        ep: &Endpoint,
        timeout: Duration,
    ) -> Result<Conn, ConnError> {
        let endpoint = ep.to_string();
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(ep.addr())).await {
            Err(_) => {
                return Err(ConnError::Timeout {
                    endpoint,
                    what: "connecting",
                });
            }
            Ok(Err(source)) => return Err(ConnError::Connect { endpoint, source }),
            Ok(Ok(s)) => s,
        };
        tcp.set_nodelay(true).ok();
        let stream: Box<dyn Stream> = if ep.tls {
            let tls = super::tls::connect(tcp, ep, &endpoint);
            match tokio::time::timeout(timeout, tls).await {
                Err(_) => {
                    return Err(ConnError::Timeout {
                        endpoint,
                        what: "in the TLS handshake (does the port speak TLS?)",
                    });
                }
                Ok(r) => Box::new(r?),
            }
        } else {
            Box::new(tcp)
        };
        Ok(Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            endpoint,
            timeout,
            tls: ep.tls,
            max_reply: MAX_REPLY,
        })
    }

    pub async fn authenticate(&mut self, ep: &Endpoint) -> Result<(), ConnError> {
        let Some(pass) = &ep.password else {
            return Ok(());
        };
        let reply = match &ep.user {
            Some(u) => {
                self.request(&[b"AUTH", u.as_bytes(), pass.as_bytes()])
                    .await?
            }
            None => self.request(&[b"AUTH", pass.as_bytes()]).await?,
        };
        match reply {
            Frame::Error(e) => Err(ConnError::Auth {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Queue a command without sending it.
    pub fn queue(&mut self, argv: &[&[u8]]) {
        encode_command(&mut self.wbuf, argv);
    }

    /// Queue pre-encoded RESP bytes.
    pub fn queue_raw(&mut self, resp: &[u8]) {
        self.wbuf.extend_from_slice(resp);
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = self.wbuf.split();
        let res = self.stream.write_all(&buf).await;
        res.map_err(|source| super::tls::io_error(&self.endpoint, source))?;
        self.wbuf = buf;
        self.wbuf.clear();
        Ok(())
    }

    /// Read one reply frame (server errors come back as `Frame::Error`).
    pub async fn read_frame(&mut self) -> Result<Frame, ConnError> {
        loop {
            if let Some(frame) = self.try_decode()? {
                return Ok(frame);
            }
            self.fill(self.timeout).await?;
        }
    }

    fn try_decode(&mut self) -> Result<Option<Frame>, ConnError> {
        if self.rbuf.is_empty() {
            return Ok(None);
        }
        match decode_bytes_mut(&mut self.rbuf) {
            Ok(Some((frame, _, _))) => Ok(Some(frame)),
            Ok(None) => match declared_too_long(&self.rbuf) {
                // Said now, not after reading (or waiting for) what it announces.
                Some(detail) => Err(ConnError::Protocol {
                    endpoint: self.endpoint.clone(),
                    detail,
                }),
                None => Ok(None),
            },
            Err(e) => Err(ConnError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: format!("unreadable reply ({})", e.details()),
            }),
        }
    }

    /// Read more bytes into the buffer, failing after `timeout` of silence.
    async fn fill(&mut self, timeout: Duration) -> Result<(), ConnError> {
        // Callers fill only while what is buffered is not one whole reply yet.
        if self.rbuf.len() > self.max_reply {
            return Err(ConnError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: format!(
                    "a reply still incomplete after {} bytes (at most {} expected)",
                    self.rbuf.len(),
                    self.max_reply
                ),
            });
        }
        self.rbuf.reserve(READ_CHUNK);
        let read = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.rbuf)).await;
        match read {
            Err(_) => Err(ConnError::Timeout {
                endpoint: self.endpoint.clone(),
                what: "waiting for a reply",
            }),
            Ok(Err(source)) => Err(super::tls::io_error(&self.endpoint, source)),
            Ok(Ok(0)) => Err(ConnError::Closed {
                endpoint: self.endpoint.clone(),
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Send one command and return its reply, server errors included as frames.
    pub async fn request(&mut self, argv: &[&[u8]]) -> Result<Frame, ConnError> {
        self.queue(argv);
        self.flush().await?;
        self.read_frame().await
    }

    /// Send one command; a server error reply becomes `ConnError::Server`.
    pub async fn query(&mut self, argv: &[&[u8]]) -> Result<Frame, ConnError> {
        match self.request(argv).await? {
            Frame::Error(e) => Err(ConnError::Server {
                endpoint: self.endpoint.clone(),
                command: command_name(argv),
                message: e.to_string(),
            }),
            f => Ok(f),
        }
    }

    /// Hand the raw stream and any bytes already buffered to a new owner (the replica
    /// link reads the replication stream itself).
    pub fn into_parts(self) -> (Box<dyn Stream>, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// Read a single line terminated by `\n` (the replication handshake answers PSYNC
    /// with a status line, possibly preceded by bare keep-alive newlines).
    pub async fn read_line(&mut self, max: usize) -> Result<Bytes, ConnError> {
        loop {
            if let Some(pos) = self.rbuf.iter().position(|&b| b == b'\n') {
                let line = self.rbuf.split_to(pos + 1).freeze();
                return Ok(line);
            }
            if self.rbuf.len() > max {
                return Err(ConnError::Protocol {
                    endpoint: self.endpoint.clone(),
                    detail: format!("reply line longer than {max} bytes"),
                });
            }
            self.fill(self.timeout).await?;
        }
    }

    /// Consume `reply` if the buffered input starts with exactly it. For the fixed
    /// replies a pipeline gets by the thousand (`+QUEUED`), skipping them this way
    /// instead of building a frame each showed in profiles; anything else goes through
    /// the RESP decoder.
    pub fn skip_buffered(&mut self, reply: &[u8]) -> bool {
        if self.rbuf.starts_with(reply) {
            let _ = self.rbuf.split_to(reply.len());
            true
        } else {
            false
        }
    }

    /// Consume the next reply if it is an array holding no error (an `EXEC` whose
    /// commands all succeeded) and return its length, without decoding it. `None`: the
    /// reply is something else and is still there for [`Conn::read_frame`].
    pub async fn skip_clean_array(&mut self) -> Result<Option<usize>, ConnError> {
        loop {
            match crate::redis::scan::clean_array(&self.rbuf) {
                Clean::Yes { items, used } => {
                    let _ = self.rbuf.split_to(used);
                    return Ok(Some(items));
                }
                Clean::No => return Ok(None),
                Clean::Incomplete => self.fill(self.timeout).await?,
            }
        }
    }

    /// Split off everything buffered so far.
    pub fn take_buffered(&mut self) -> BytesMut {
        self.rbuf.split()
    }
}

/// The command name for messages: the first argument, upper-cased, never its arguments
/// (which may be secrets, as in AUTH).
pub fn command_name(argv: &[&[u8]]) -> String {
    argv.first()
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .unwrap_or_default()
}

/// Append `argv` as a RESP array of bulk strings.
///
/// Written out here rather than through redis-protocol's encoder, which builds a frame
/// per argument first: a cluster target gets a checkpoint HSET per slot batch, and that
/// encoder was a tenth of tandem's CPU there.
pub fn encode_command(buf: &mut BytesMut, argv: &[&[u8]]) {
    buf.reserve(16 + argv.iter().map(|a| a.len() + 16).sum::<usize>());
    push_header(buf, b'*', argv.len());
    for a in argv {
        push_bulk(buf, a);
    }
}

/// `$<len>\r\n<a>\r\n`: one bulk string.
pub fn push_bulk(buf: &mut BytesMut, a: &[u8]) {
    push_header(buf, b'$', a.len());
    buf.extend_from_slice(a);
    buf.extend_from_slice(b"\r\n");
}

/// `*<n>\r\n` or `$<n>\r\n`.
fn push_header(buf: &mut BytesMut, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    buf.extend_from_slice(&[kind]);
    buf.extend_from_slice(decimal(n as u64, &mut digits));
    buf.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf` (no allocation, unlike `to_string`).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Text of a simple/bulk reply, for INFO and friends.
pub fn frame_text(f: &BytesFrame) -> Option<String> {
    match f {
        Frame::SimpleString(b) | Frame::BulkString(b) => Some(String::from_utf8_lossy(b).into()),
        Frame::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// One field of an INFO reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim().to_string())
    })
}

/// (db, keys) of each db an `INFO keyspace` section lists (`db3:keys=12,expires=0,…`).
pub fn info_keyspace(info: &str) -> Vec<(u32, u64)> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.strip_prefix("db")?.split_once(':')?;
            let keys = rest.split(',').find_map(|f| f.strip_prefix("keys="))?;
            Some((db.parse().ok()?, keys.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis_protocol::resp2::encode::extend_encode_borrowed;
    use redis_protocol::resp2::types::BorrowedFrame;

    proptest! {
        #[test]
        fn commands_encode_as_redis_protocol_encodes_them(
            argv in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        ) {
            let args: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
            let mut ours = BytesMut::new();
            encode_command(&mut ours, &args);
            let frames: Vec<BorrowedFrame<'_>> =
                args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
            let mut theirs = BytesMut::new();
            extend_encode_borrowed(&mut theirs, &BorrowedFrame::Array(&frames), false).unwrap();
            prop_assert_eq!(ours, theirs);
        }
    }

    fn over(stream: tokio::io::DuplexStream, max_reply: usize) -> Conn {
        Conn {
            stream: Box::new(stream),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            endpoint: "127.0.0.1:1".into(),
            timeout: Duration::from_secs(5),
            tls: false,
            max_reply,
        }
    }

    /// A peer that keeps sending one reply: it ends at the cap with one error, not in
    /// all memory, and a reply of the cap's size still reads.
    #[tokio::test]
    async fn an_endless_reply_stops_at_the_cap() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut c = over(ours, 100_000);
        let feed = tokio::spawn(async move {
            peer.write_all(b"$90000\r\n").await.unwrap();
            peer.write_all(&[b'x'; 90_000]).await.unwrap();
            peer.write_all(b"\r\n$400000\r\n").await.unwrap();
            // Past the cap, then silence: the error must not wait for the timeout.
            let _ = peer.write_all(&[b'y'; 150_000]).await;
            peer
        });
        let Frame::BulkString(v) = c.read_frame().await.unwrap() else {
            panic!("not a bulk")
        };
        assert_eq!(v.len(), 90_000);
        let e = c.read_frame().await.unwrap_err().to_string();
        assert!(
            e.contains("127.0.0.1:1") && e.contains("still incomplete after"),
            "{e}"
        );
        assert!(e.contains("at most 100000"), "{e}");
        drop(feed.await.unwrap());
    }

    #[test]
    fn absurd_announced_lengths_are_refused_from_the_header() {
        let bulk = declared_too_long(b"$536870913\r\n").unwrap();
        assert!(bulk.contains("536870913-byte value"), "{bulk}");
        assert_eq!(declared_too_long(b"$536870912\r\n"), None);
        let arr = declared_too_long(b"*999999999999\r\n").unwrap();
        assert!(arr.contains("array of 999999999999"), "{arr}");
        assert_eq!(declared_too_long(b"*100000\r\n$3\r\n"), None);
        // Not a header yet, or not a length: left to the decoder.
        assert_eq!(declared_too_long(b"$99999"), None);
        assert_eq!(declared_too_long(b"+OK"), None);
    }
}
