//! The bridge between the async link (RDB chunks arrive as events) and the blocking RDB
//! parser thread: a bounded channel of chunks read as a `std::io::Read`.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::{Buf, Bytes};

/// Chunks in flight between the link and the parser thread (1 MiB each at most).
const DEPTH: usize = 16;

pub fn rdb_feed() -> (SyncSender<Bytes>, ChunkReader) {
    let (tx, rx) = sync_channel(DEPTH);
    (
        tx,
        ChunkReader {
            rx,
            cur: Bytes::new(),
        },
    )
}

/// Reads the chunks in order; end of file when the sender is dropped.
pub struct ChunkReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}
