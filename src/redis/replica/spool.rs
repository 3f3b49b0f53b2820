//! The on-disk spool between the source socket and the consumer.
//!
//! The network task appends everything the master sends (RDB bytes and stream bytes,
//! framed as records) as fast as the network allows; the consumer reads at its own pace.
//! So a slow target never makes the master drop tandem for its replica output-buffer
//! limit, and a multi-GB RDB never sits in memory. The spool is a sequence of segment
//! files; a segment is deleted once the consumer has read past it. The writer waits when
//! more than `max_bytes` are unread (back-pressure instead of filling the disk).
//!
//! Records never span segments: `[kind u8][len u32 LE][payload]`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 5;

/// What a spool record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The master starts sending an RDB: a new history at `offset`.
    FullResync { replid: String, offset: u64 },
    /// A chunk of the RDB file.
    Rdb(Bytes),
    /// The RDB is complete.
    RdbEnd,
    /// The stream continues at `offset` (after a reconnect or at start-up), possibly
    /// under a new replication id (PSYNC2 failover).
    Continue { replid: String, offset: u64 },
    /// Raw replication-stream bytes.
    Stream(Bytes),
    /// The link stopped for good; the text says why.
    Failed(String),
}

const K_FULL: u8 = 1;
const K_RDB: u8 = 2;
const K_RDB_END: u8 = 3;
const K_CONT: u8 = 4;
const K_STREAM: u8 = 5;
const K_FAILED: u8 = 6;

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let (kind, payload): (u8, &[u8]) = match self {
            Record::Rdb(b) => (K_RDB, b),
            Record::Stream(b) => (K_STREAM, b),
            Record::RdbEnd => (K_RDB_END, b""),
            Record::Failed(s) => (K_FAILED, s.as_bytes()),
            Record::FullResync { replid, offset } | Record::Continue { replid, offset } => {
                let kind = if matches!(self, Record::FullResync { .. }) {
                    K_FULL
                } else {
                    K_CONT
                };
                out.push(kind);
                let text = format!("{replid} {offset}");
                out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
                return;
            }
        };
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }

    fn decode(kind: u8, payload: Bytes) -> std::io::Result<Record> {
        let pos = |p: &Bytes| -> std::io::Result<(String, u64)> {
            let t = std::str::from_utf8(p).map_err(std::io::Error::other)?;
            let (id, off) = t
                .split_once(' ')
                .ok_or_else(|| std::io::Error::other("bad spool position record"))?;
            Ok((id.to_string(), off.parse().map_err(std::io::Error::other)?))
        };
        Ok(match kind {
            K_FULL => {
                let (replid, offset) = pos(&payload)?;
                Record::FullResync { replid, offset }
            }
            K_CONT => {
                let (replid, offset) = pos(&payload)?;
                Record::Continue { replid, offset }
            }
            K_RDB => Record::Rdb(payload),
            K_RDB_END => Record::RdbEnd,
            K_STREAM => Record::Stream(payload),
            K_FAILED => Record::Failed(String::from_utf8_lossy(&payload).into()),
            k => return Err(std::io::Error::other(format!("bad spool record kind {k}"))),
        })
    }
}

struct Segments {
    /// (global start position, path) of every segment not yet deleted, oldest first.
    list: VecDeque<(u64, PathBuf)>,
}

struct Shared {
    dir: PathBuf,
    segments: Mutex<Segments>,
    /// Global bytes written (all records, all segments).
    written: watch::Sender<u64>,
    /// Global bytes the reader has consumed.
    consumed: watch::Sender<u64>,
    /// The writer is gone (closed or dropped): the reader ends at `written`.
    closed: watch::Sender<bool>,
}

/// Creates a spool in `dir` (which must exist and is owned by the spool).
pub fn spool(dir: &Path, max_bytes: u64) -> std::io::Result<(SpoolWriter, SpoolReader)> {
    let (written, _) = watch::channel(0);
    let (consumed, _) = watch::channel(0);
    let (closed, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        segments: Mutex::new(Segments {
            list: VecDeque::new(),
        }),
        written,
        consumed,
        closed,
    });
    let writer = SpoolWriter {
        shared: shared.clone(),
        file: None,
        seg_start: 0,
        pos: 0,
        max_bytes: max_bytes.max(SEGMENT_BYTES * 2),
        scratch: Vec::new(),
    };
    let reader = SpoolReader {
        shared,
        file: None,
        pos: 0,
        buf: BytesMut::new(),
    };
    Ok((writer, reader))
}

pub struct SpoolWriter {
    shared: Arc<Shared>,
    file: Option<File>,
    seg_start: u64,
    pos: u64,
    max_bytes: u64,
    scratch: Vec<u8>,
}

impl SpoolWriter {
    /// Append one record. Waits while the unread part of the spool exceeds its bound.
    pub async fn append(&mut self, rec: &Record) -> std::io::Result<()> {
        self.wait_for_room().await;
        self.scratch.clear();
        rec.encode(&mut self.scratch);
        if self.file.is_none() || self.pos - self.seg_start >= SEGMENT_BYTES {
            self.rotate()?;
        }
        let f = self.file.as_mut().expect("segment open");
        f.write_all(&self.scratch)?;
        self.pos += self.scratch.len() as u64;
        self.shared.written.send_replace(self.pos);
        Ok(())
    }

    async fn wait_for_room(&self) {
        let mut rx = self.shared.consumed.subscribe();
        loop {
            let unread = self.pos - *rx.borrow_and_update();
            if unread < self.max_bytes {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.shared.dir.join(format!("{:020}.seg", self.pos));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        self.shared
            .segments
            .lock()
            .unwrap()
            .list
            .push_back((self.pos, path));
        self.file = Some(file);
        self.seg_start = self.pos;
        Ok(())
    }

    /// Bytes not yet consumed.
    pub fn unread(&self) -> u64 {
        self.pos - *self.shared.consumed.borrow()
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.shared.closed.send_replace(true);
    }
}

pub struct SpoolReader {
    shared: Arc<Shared>,
    file: Option<File>,
    pos: u64,
    buf: BytesMut,
}

/// Bytes the reader reads from disk at once.
const READ_CHUNK: usize = 1 << 20;

impl SpoolReader {
    /// The next record, or `None` once the writer is gone and everything was read.
    pub async fn next(&mut self) -> std::io::Result<Option<Record>> {
        let mut written = self.shared.written.subscribe();
        let mut closed = self.shared.closed.subscribe();
        loop {
            if let Some(rec) = self.try_next()? {
                return Ok(Some(rec));
            }
            // `borrow`, not `borrow_and_update`: marking a write as seen here, before
            // its bytes were read, would make `changed()` sleep until the next write.
            if *closed.borrow_and_update() && self.pos >= *written.borrow() {
                return Ok(None);
            }
            tokio::select! {
                _ = written.changed() => {}
                _ = closed.changed() => {}
            }
        }
    }

    /// Bytes written that this reader has not read yet.
    pub fn has_unread(&self) -> bool {
        *self.shared.written.borrow() > self.pos || !self.buf.is_empty()
    }

    /// The next record if it is fully written, without waiting.
    pub fn try_next(&mut self) -> std::io::Result<Option<Record>> {
        let written = *self.shared.written.borrow();
        let avail = written - self.pos;
        if (self.buf.len() as u64) < HEADER as u64 && !self.fill(avail, HEADER)? {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_le_bytes(self.buf[1..5].try_into().unwrap()) as usize;
        if self.buf.len() < HEADER + len && !self.fill(avail, HEADER + len)? {
            return Ok(None);
        }
        let mut rec = self.buf.split_to(HEADER + len);
        let payload = rec.split_off(HEADER).freeze();
        let rec = Record::decode(kind, payload)?;
        let consumed = self.pos - self.buf.len() as u64;
        self.shared.consumed.send_replace(consumed);
        Ok(Some(rec))
    }

    /// Make `need` bytes available in `buf` if the writer has written them.
    fn fill(&mut self, avail: u64, need: usize) -> std::io::Result<bool> {
        let buffered = self.buf.len() as u64;
        if buffered + avail < need as u64 {
            return Ok(false);
        }
        let mut empty_reads = 0;
        while self.buf.len() < need {
            self.open_segment_at_pos()?;
            let left = (self.shared.written.borrow().saturating_sub(self.pos)) as usize;
            let want = left.min(READ_CHUNK.max(need - self.buf.len()));
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let f = self.file.as_mut().expect("segment open");
            let n = f.read(&mut self.buf[start..])?;
            self.buf.truncate(start + n);
            if n == 0 {
                // End of this segment: the next read opens the following one.
                empty_reads += 1;
                if empty_reads > 2 {
                    return Err(std::io::Error::other(format!(
                        "spool segment truncated at byte {}",
                        self.pos
                    )));
                }
                self.file = None;
                self.drop_finished_segments();
            }
            self.pos += n as u64;
        }
        Ok(true)
    }

    fn open_segment_at_pos(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let segs = self.shared.segments.lock().unwrap();
        let (start, path) = segs
            .list
            .iter()
            .rev()
            .find(|(s, _)| *s <= self.pos)
            .cloned()
            .ok_or_else(|| std::io::Error::other("spool segment missing"))?;
        drop(segs);
        let mut f = File::open(&path)?;
        f.seek(SeekFrom::Start(self.pos - start))?;
        self.file = Some(f);
        Ok(())
    }

    /// Delete segments that end at or before the read position.
    fn drop_finished_segments(&mut self) {
        let mut segs = self.shared.segments.lock().unwrap();
        while segs.list.len() > 1 && segs.list[1].0 <= self.pos {
            let (_, path) = segs.list.pop_front().unwrap();
            let _ = std::fs::remove_file(path);
        }
    }
}
