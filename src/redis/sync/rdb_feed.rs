//! The bridge between the async link (RDB chunks arrive as events) and the blocking RDB
//! parser thread: a bounded channel of chunks read as a `std::io::Read`.
//!
//! The async side awaits a free slot and the parser thread blocks on an empty channel:
//! neither side parks a runtime thread, and a chunk costs no thread hand-off of its own
//! (a `spawn_blocking` per chunk was a tenth of tandem's CPU in a full sync of small keys).

use std::io::Read;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc::{Receiver, Sender, channel};

/// Chunks in flight between the link and the parser thread (1 MiB each at most).
const DEPTH: usize = 16;

pub fn rdb_feed() -> (Sender<Bytes>, ChunkReader) {
    let (tx, rx) = channel(DEPTH);
    (
        tx,
        ChunkReader {
            rx,
            cur: Bytes::new(),
        },
    )
}

/// Reads the chunks in order; end of file when the sender is dropped. Only for a
/// blocking thread (`blocking_recv` panics inside the runtime).
pub struct ChunkReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}
