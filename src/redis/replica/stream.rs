//! The consumer side of the link: spool records in, events with offsets out.
//!
//! Offsets count every byte of the replication stream (PING, SELECT and REPLCONF
//! included), exactly as the master's `master_repl_offset` does, so that after the source
//! goes quiet the last event's offset equals the master's.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::Resp2Frame;

use super::error::LinkError;
use super::spool::{Record, SpoolReader};
use crate::redis::scan::{self, Scan};

/// One command of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The database selected when the command ran (after applying it, for SELECT).
    pub db: u32,
    pub argv: Vec<Bytes>,
    /// Offset of the command's first byte.
    pub start: u64,
    /// Offset just after the command: the position to confirm once it is applied.
    pub offset: u64,
    /// The command exactly as received (RESP), to forward unchanged without re-encoding.
    pub raw: Bytes,
}

impl Command {
    pub fn name_is(&self, name: &str) -> bool {
        self.argv
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new history begins: `RdbChunk`s follow, then `RdbEnd`, then commands from
    /// `offset` on.
    FullSync {
        replid: String,
        offset: u64,
    },
    RdbChunk(Bytes),
    RdbEnd,
    /// Commands continue at `offset` under `replid` (at start-up from a checkpoint, or
    /// after a reconnect, possibly under a new id after a failover).
    Continue {
        replid: String,
        offset: u64,
    },
    Command(Command),
}

pub struct EventReader {
    spool: SpoolReader,
    endpoint: String,
    buf: BytesMut,
    /// Offset of `buf[0]`.
    offset: u64,
    db: u32,
    in_stream: bool,
    /// `buf` holds only the start of a command (more bytes are needed).
    partial: bool,
    /// Argument spans of the command being parsed (reused).
    spans: Vec<std::ops::Range<usize>>,
}

impl EventReader {
    pub fn new(spool: SpoolReader, endpoint: String, initial_db: u32) -> Self {
        Self {
            spool,
            endpoint,
            buf: BytesMut::new(),
            offset: 0,
            db: initial_db,
            in_stream: false,
            partial: false,
            spans: Vec::new(),
        }
    }

    /// The next event; `Ok(None)` once the link has stopped and everything was read.
    pub async fn next(&mut self) -> Result<Option<Event>, LinkError> {
        loop {
            if let Some(ev) = self.try_next()? {
                return Ok(Some(ev));
            }
            let Some(rec) = self.spool.next().await? else {
                return Ok(None);
            };
            if let Some(ev) = self.take(rec)? {
                return Ok(Some(ev));
            }
        }
    }

    /// The next event if one is at hand, without waiting (the hot loop calls this and
    /// only awaits — with its shutdown check — when nothing is ready).
    pub fn try_next(&mut self) -> Result<Option<Event>, LinkError> {
        loop {
            if self.in_stream
                && let Some(cmd) = self.parse_command()?
            {
                return Ok(Some(Event::Command(cmd)));
            }
            let Some(rec) = self.spool.try_next()? else {
                return Ok(None);
            };
            if let Some(ev) = self.take(rec)? {
                return Ok(Some(ev));
            }
        }
    }

    /// Apply one spool record: stream bytes are buffered (no event yet), the others are
    /// events.
    fn take(&mut self, rec: Record) -> Result<Option<Event>, LinkError> {
        Ok(Some(match rec {
            Record::Stream(bytes) => {
                self.partial = false;
                if self.buf.is_empty() {
                    self.buf = BytesMut::from(bytes);
                } else {
                    self.buf.extend_from_slice(&bytes);
                }
                return Ok(None);
            }
            Record::FullResync { replid, offset } => {
                self.reset(offset);
                self.in_stream = false;
                Event::FullSync { replid, offset }
            }
            Record::Rdb(b) => Event::RdbChunk(b),
            Record::RdbEnd => {
                self.in_stream = true;
                Event::RdbEnd
            }
            Record::Continue { replid, offset } => {
                // After a reconnect the stream resumes exactly at the byte after the last
                // one received, which may be inside a command: keep the partial bytes.
                // At start-up there are none.
                if !self.in_stream || offset != self.offset + self.buf.len() as u64 {
                    self.reset(offset);
                }
                self.in_stream = true;
                Event::Continue { replid, offset }
            }
            Record::Failed(why) => return Err(LinkError::Stopped(why)),
        }))
    }

    fn reset(&mut self, offset: u64) {
        self.buf.clear();
        self.offset = offset;
    }

    /// Whether the next event is already at hand (the caller may defer flushing).
    pub fn next_is_buffered(&self) -> bool {
        self.in_stream && !self.buf.is_empty()
    }

    /// Whether anything more is already at hand: parsed-but-unread bytes or spooled
    /// records not yet read. The sync loop lands a batch as soon as this is false.
    pub fn has_pending(&self) -> bool {
        (!self.buf.is_empty() && !self.partial) || self.spool.has_unread()
    }

    /// Offset after the last complete command handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn parse_command(&mut self) -> Result<Option<Command>, LinkError> {
        // Bare newlines are keep-alives; they still count as stream bytes.
        let skip = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        if skip > 0 {
            let _ = self.buf.split_to(skip);
            self.offset += skip as u64;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let start = self.offset;
        let (argv, raw) = match scan::command(&self.buf, &mut self.spans) {
            Scan::Complete { used } => {
                self.offset += used as u64;
                let raw = self.buf.split_to(used).freeze();
                let argv: Vec<Bytes> = self.spans.iter().map(|r| raw.slice(r.clone())).collect();
                (argv, raw)
            }
            Scan::Incomplete => {
                self.partial = true;
                return Ok(None);
            }
            Scan::Invalid { at, why } => return Err(self.bad_at(start + at as u64, why)),
            Scan::NotMultibulk => return self.other_frame(start),
        };
        if argv.is_empty() {
            return Err(self.bad_at(start, "empty command"));
        }
        if argv[0].eq_ignore_ascii_case(b"SELECT") {
            self.db = argv
                .get(1)
                .and_then(|d| std::str::from_utf8(d).ok()?.parse().ok())
                .ok_or_else(|| self.bad_at(start, "SELECT without a db number"))?;
        }
        Ok(Some(Command {
            db: self.db,
            argv,
            start,
            offset: self.offset,
            raw,
        }))
    }

    /// Not a command: decode the frame in full to say what it is.
    fn other_frame(&mut self, start: u64) -> Result<Option<Command>, LinkError> {
        match decode_bytes_mut(&mut self.buf).map_err(|e| self.bad(e.details()))? {
            None => {
                self.partial = true;
                Ok(None)
            }
            Some((frame, _, _)) => Err(self.bad_at(start, &format!("{:?} frame", frame.kind()))),
        }
    }

    fn bad(&self, detail: &str) -> LinkError {
        self.bad_at(self.offset, detail)
    }

    fn bad_at(&self, offset: u64, detail: &str) -> LinkError {
        LinkError::Stream {
            endpoint: self.endpoint.clone(),
            offset,
            detail: detail.to_string(),
        }
    }
}
