//! The consumer side of the link: spool records in, events with offsets out.
//!
//! Offsets count every byte of the replication stream (PING, SELECT and REPLCONF
//! included), exactly as the master's `master_repl_offset` does, so that after the source
//! goes quiet the last event's offset equals the master's.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::Resp2Frame;

use super::echo;
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
    /// Two-way links only ([`EventReader::drop_echoes`]): a whole transaction of tandem's
    /// own, dropped unread but for its last write `ckpt` (the checkpoint or conflict tag
    /// it carries). `ckpt.offset` is the offset after its `EXEC`, `ckpt.db` the db
    /// selected then.
    Echo(Command),
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
    /// Hand out tandem's own transactions as [`Event::Echo`].
    drop_echoes: bool,
    /// A transaction at `buf[0]` being scanned for an echo, waiting for more bytes.
    tx: Option<echo::TxScan>,
    /// The offset of a `MULTI` found not to be an echo: it is read command by command.
    not_echo_at: Option<u64>,
    /// Wall-clock milliseconds read when the current bytes were taken from the spool,
    /// and again every [`CLOCK_EVERY`] events: reading the clock per command was 5% of
    /// a two-way link's CPU.
    clock_ms: u64,
    since_clock: u32,
}

/// Events between two clock reads within the same spool record.
const CLOCK_EVERY: u32 = 256;

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
            drop_echoes: false,
            tx: None,
            not_echo_at: None,
            clock_ms: 0,
            since_clock: 0,
        }
    }

    /// When the last event was read, in wall-clock milliseconds (at most a spool record
    /// or [`CLOCK_EVERY`] events old): two-way sync's observation time of a write.
    pub fn observed_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Hand out tandem's own transactions (two-way: the other link's batches) as one
    /// [`Event::Echo`] each, framed but not built (`echo.rs`).
    pub fn drop_echoes(&mut self) {
        self.drop_echoes = true;
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
                && let Some(ev) = self.parse_event()?
            {
                self.since_clock += 1;
                if self.since_clock >= CLOCK_EVERY {
                    self.since_clock = 0;
                    self.clock_ms = crate::core::wall_ms();
                }
                return Ok(Some(ev));
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
                self.clock_ms = crate::core::wall_ms();
                self.since_clock = 0;
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
        self.tx = None;
        self.not_echo_at = None;
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

    fn parse_event(&mut self) -> Result<Option<Event>, LinkError> {
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
        if self.drop_echoes
            && self.not_echo_at != Some(self.offset)
            && echo::starts_multi(&self.buf)
        {
            let state = self.tx.take().unwrap_or_default();
            match echo::scan(&self.buf, state, &mut self.spans) {
                echo::Tx::Incomplete(state) => {
                    self.tx = Some(state);
                    self.partial = true;
                    return Ok(None);
                }
                echo::Tx::NotEcho => self.not_echo_at = Some(self.offset),
                echo::Tx::Echo { used, ckpt, db } => {
                    return Ok(Some(Event::Echo(self.echo(used, ckpt, db)?)));
                }
            }
        }
        Ok(self.parse_command()?.map(Event::Command))
    }

    /// Consume an echo of `used` bytes, keeping its last write `ckpt`.
    fn echo(
        &mut self,
        used: usize,
        ckpt: std::ops::Range<usize>,
        db: Option<u32>,
    ) -> Result<Command, LinkError> {
        let start = self.offset;
        let at = start + ckpt.start as u64;
        self.offset += used as u64;
        if let Some(db) = db {
            self.db = db;
        }
        let all = self.buf.split_to(used).freeze();
        let raw = all.slice(ckpt);
        let Scan::Complete { .. } = scan::command(&raw, &mut self.spans) else {
            // echo.rs framed it already; a disagreement is a bug, reported, not a panic.
            return Err(self.bad_at(at, "echo transaction's last write could not be read"));
        };
        let argv = self.spans.iter().map(|r| raw.slice(r.clone())).collect();
        Ok(Command {
            db: self.db,
            argv,
            start,
            offset: self.offset,
            raw,
        })
    }

    fn parse_command(&mut self) -> Result<Option<Command>, LinkError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::replica::echo::resp;
    use crate::redis::replica::spool::spool;

    /// What a two-way link reads from `stream` fed in pieces of `piece` bytes:
    /// (kind, db, offset after, argv) per event.
    fn read(stream: &[u8], piece: usize) -> Vec<(&'static str, u32, u64, Vec<Vec<u8>>)> {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut w, r) = spool(dir.path(), 1 << 30).unwrap();
            let mut rd = EventReader::new(r, "src".into(), 0);
            rd.drop_echoes();
            let start = Record::Continue {
                replid: "r".into(),
                offset: 100,
            };
            w.append(&start).await.unwrap();
            for chunk in stream.chunks(piece) {
                let rec = Record::Stream(Bytes::copy_from_slice(chunk));
                w.append(&rec).await.unwrap();
            }
            drop(w);
            let mut out = Vec::new();
            while let Some(ev) = rd.next().await.unwrap() {
                let (kind, c) = match ev {
                    Event::Command(c) => ("cmd", c),
                    Event::Echo(c) => ("echo", c),
                    _ => continue,
                };
                let argv = c.argv.iter().map(|a| a.to_vec()).collect();
                out.push((kind, c.db, c.offset, argv));
            }
            out
        })
    }

    #[test]
    fn a_two_way_link_reads_an_echo_as_one_event_wherever_the_bytes_split() {
        let user = resp(&[&["MULTI"], &["SET", "a", "1"], &["EXEC"]]);
        let echo = resp(&[
            &["MULTI"],
            &["SELECT", "2"],
            &["SET", "k", "v"],
            &["SELECT", "0"],
            &["HSET", "__tandem:ckpt:x", "offset", "5"],
            &["EXEC"],
        ]);
        let after = resp(&[&["SELECT", "4"], &["INCR", "n"]]);
        let stream = [&user[..], &echo, &after].concat();
        let total = 100 + stream.len() as u64;
        let hset: Vec<Vec<u8>> = ["HSET", "__tandem:ckpt:x", "offset", "5"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        let user_end = 100 + user.len() as u64;
        let echo_end = user_end + echo.len() as u64;
        for piece in [1, 2, 7, 16, 64, stream.len()] {
            let evs = read(&stream, piece);
            let kinds: Vec<&str> = evs.iter().map(|e| e.0).collect();
            assert_eq!(
                kinds,
                ["cmd", "cmd", "cmd", "echo", "cmd", "cmd"],
                "piece {piece}"
            );
            assert_eq!(evs[2].2, user_end, "the user's EXEC");
            assert_eq!(evs[3], ("echo", 0, echo_end, hset.clone()), "piece {piece}");
            assert_eq!((evs[5].1, evs[5].2), (4, total), "INCR in db 4, last byte");
        }
    }
}
