//! The replica handshake: AUTH, REPLCONF, PSYNC, and reading the master's answer.

use std::time::Duration;

use bytes::BytesMut;

use super::error::LinkError;
use crate::redis::conn::{Conn, Frame, Stream};
use crate::redis::url::Endpoint;

/// What PSYNC gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsyncReply {
    /// An RDB of `size` bytes (`None`: diskless, ends with `eof_mark`) follows; the stream
    /// after it starts at `offset`.
    FullResync {
        replid: String,
        offset: u64,
        transfer: Transfer,
    },
    /// The stream continues where asked; `replid` is the master's current id (it differs
    /// from the one asked for after a failover).
    Continue { replid: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    Sized(u64),
    EofMark([u8; 40]),
}

/// Where to resume: the replication id and the next byte wanted (offset + 1).
#[derive(Debug, Clone)]
pub struct Resume {
    pub replid: String,
    pub offset: u64,
}

pub struct Handshaken {
    pub stream: Box<dyn Stream>,
    pub buffered: BytesMut,
    pub reply: PsyncReply,
    /// The source's key count just before PSYNC (a progress display's total; `None`
    /// when `INFO` is refused, e.g. to a user with replication rights only).
    pub keys: Option<u64>,
}

/// Connect, authenticate, announce ourselves and ask for the stream.
pub async fn handshake(
    ep: &Endpoint,
    resume: Option<&Resume>,
    timeout: Duration,
) -> Result<Handshaken, LinkError> {
    let mut conn = Conn::connect_unauthenticated(ep, timeout).await?;
    conn.authenticate(ep).await?;
    let endpoint = conn.endpoint().to_string();
    // A PING first tells a foreign service apart from a Redis that refuses us.
    match conn.request(&[b"PING"]).await? {
        Frame::SimpleString(s) if &s[..] == b"PONG" => {}
        Frame::Error(e) if e.starts_with("NOAUTH") => {
            return Err(crate::redis::conn::ConnError::Auth {
                endpoint,
                message: "the server requires a password (put it in the URL)".into(),
            }
            .into());
        }
        Frame::Error(e) if crate::redis::conn::is_transient_server_error(&e) => {
            return Err(LinkError::Refused {
                endpoint,
                command: "PING",
                message: e.to_string(),
            });
        }
        other => {
            return Err(crate::redis::conn::ConnError::Protocol {
                endpoint,
                detail: format!("unexpected PING reply {}", short(&other)),
            }
            .into());
        }
    }
    let port = local_port_hint(ep);
    expect_ok(
        &mut conn,
        &[b"REPLCONF", b"listening-port", port.as_bytes()],
        "REPLCONF",
    )
    .await?;
    expect_ok(
        &mut conn,
        &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"],
        "REPLCONF",
    )
    .await?;
    let keys = source_keys(&mut conn).await?;
    let (id, off) = match resume {
        Some(r) => (r.replid.clone(), r.offset.to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    conn.queue(&[b"PSYNC", id.as_bytes(), off.as_bytes()]);
    conn.flush().await?;
    let line = read_status_line(&mut conn).await?;
    let reply = parse_psync_reply(&endpoint, &line, resume)?;
    let reply = match reply {
        PsyncReply::FullResync { replid, offset, .. } => {
            let transfer = read_transfer_header(&mut conn).await?;
            PsyncReply::FullResync {
                replid,
                offset,
                transfer,
            }
        }
        c => c,
    };
    let buffered = conn.take_buffered();
    let (stream, rest) = conn.into_parts();
    debug_assert!(rest.is_empty());
    Ok(Handshaken {
        stream,
        buffered,
        reply,
        keys,
    })
}

/// The keys of every db `INFO keyspace` lists. Only progress depends on it, so a refusal
/// is no error; a broken connection still is.
async fn source_keys(conn: &mut Conn) -> Result<Option<u64>, LinkError> {
    let reply = conn.request(&[b"INFO", b"keyspace"]).await?;
    let total: u64 = crate::redis::conn::frame_text(&reply)
        .map(|t| crate::redis::conn::info_keyspace(&t))
        .unwrap_or_default()
        .iter()
        .map(|(_, k)| k)
        .sum();
    Ok((total > 0).then_some(total))
}

async fn expect_ok(conn: &mut Conn, argv: &[&[u8]], what: &'static str) -> Result<(), LinkError> {
    match conn.request(argv).await? {
        Frame::SimpleString(_) => Ok(()),
        Frame::Error(e) => Err(LinkError::Refused {
            endpoint: conn.endpoint().to_string(),
            command: what,
            message: e.to_string(),
        }),
        other => Err(crate::redis::conn::ConnError::Protocol {
            endpoint: conn.endpoint().to_string(),
            detail: format!("unexpected {what} reply {}", short(&other)),
        }
        .into()),
    }
}

/// Skip the bare newlines a master sends as keep-alives while it prepares the RDB.
async fn read_status_line(conn: &mut Conn) -> Result<String, LinkError> {
    for _ in 0..1_000_000 {
        let line = conn.read_line(4096).await?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !text.is_empty() {
            return Ok(text);
        }
    }
    Err(crate::redis::conn::ConnError::Protocol {
        endpoint: conn.endpoint().to_string(),
        detail: "only keep-alive newlines, never a reply".into(),
    }
    .into())
}

fn parse_psync_reply(
    endpoint: &str,
    line: &str,
    resume: Option<&Resume>,
) -> Result<PsyncReply, LinkError> {
    let bad = |detail: String| {
        LinkError::from(crate::redis::conn::ConnError::Protocol {
            endpoint: endpoint.to_string(),
            detail,
        })
    };
    if let Some(rest) = line.strip_prefix("+FULLRESYNC ") {
        let mut it = rest.split_whitespace();
        let replid = it.next().unwrap_or_default().to_string();
        let offset = it.next().and_then(|o| o.parse().ok());
        match offset {
            Some(offset) if replid.len() == 40 => Ok(PsyncReply::FullResync {
                replid,
                offset,
                transfer: Transfer::Sized(0),
            }),
            _ => Err(bad(format!("malformed +FULLRESYNC line {line:?}"))),
        }
    } else if let Some(rest) = line.strip_prefix("+CONTINUE") {
        // Only a resume can be continued; a master continuing `PSYNC ? -1` would hand
        // over a stream without the data it applies to.
        if resume.is_none() {
            return Err(bad(format!("{line:?} to a full resync request")));
        }
        let replid = match rest.trim() {
            "" => resume.map(|r| r.replid.clone()).unwrap_or_default(),
            id if id.len() == 40 => id.to_string(),
            _ => return Err(bad(format!("malformed +CONTINUE line {line:?}"))),
        };
        Ok(PsyncReply::Continue { replid })
    } else if let Some(msg) = line.strip_prefix('-') {
        Err(LinkError::Refused {
            endpoint: endpoint.to_string(),
            command: "PSYNC",
            message: msg.to_string(),
        })
    } else {
        let shown: String = line.chars().take(60).collect();
        Err(bad(format!("unexpected PSYNC reply {shown:?}")))
    }
}

/// After +FULLRESYNC: `$<len>` or `$EOF:<40-byte mark>`, possibly after keep-alives.
async fn read_transfer_header(conn: &mut Conn) -> Result<Transfer, LinkError> {
    let line = read_status_line(conn).await?;
    let bad = |detail: String| {
        LinkError::from(crate::redis::conn::ConnError::Protocol {
            endpoint: conn.endpoint().to_string(),
            detail,
        })
    };
    if let Some(mark) = line.strip_prefix("$EOF:") {
        let bytes: [u8; 40] = mark
            .as_bytes()
            .try_into()
            .map_err(|_| bad(format!("EOF mark of {} bytes, expected 40", mark.len())))?;
        return Ok(Transfer::EofMark(bytes));
    }
    match line.strip_prefix('$').and_then(|n| n.parse().ok()) {
        Some(n) => Ok(Transfer::Sized(n)),
        None => {
            let shown: String = line.chars().take(60).collect();
            Err(bad(format!("expected the RDB size line, got {shown:?}")))
        }
    }
}

fn short(f: &Frame) -> String {
    let s = format!("{f:?}");
    s.chars().take(60).collect()
}

/// The port we announce. A replica normally announces the port it listens on; tandem
/// listens on none, so it announces 1 (shown in the source's INFO as `port=1`, which
/// tells an operator the replica is not a redis-server), or `TANDEM_ANNOUNCE_PORT`.
fn local_port_hint(_ep: &Endpoint) -> String {
    std::env::var("TANDEM_ANNOUNCE_PORT").unwrap_or_else(|_| "1".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psync_replies() {
        let id = "a".repeat(40);
        let r = parse_psync_reply("e", &format!("+FULLRESYNC {id} 42"), None).unwrap();
        assert!(matches!(r, PsyncReply::FullResync { offset: 42, .. }));
        let resume = Resume {
            replid: id.clone(),
            offset: 43,
        };
        let r = parse_psync_reply("e", "+CONTINUE", Some(&resume)).unwrap();
        assert_eq!(r, PsyncReply::Continue { replid: id.clone() });
        let new = "b".repeat(40);
        let r = parse_psync_reply("e", &format!("+CONTINUE {new}"), Some(&resume)).unwrap();
        assert_eq!(r, PsyncReply::Continue { replid: new });
        let e = parse_psync_reply("e", "-NOMASTERLINK Can't SYNC", None).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let e = parse_psync_reply("e", "-ERR unknown command", None).unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(parse_psync_reply("e", "HTTP/1.1 400", None).is_err());
        assert!(parse_psync_reply("e", "+FULLRESYNC short 1", None).is_err());
        let e = parse_psync_reply("e", "+CONTINUE", None).unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("to a full resync request"), "{e}");
    }
}
