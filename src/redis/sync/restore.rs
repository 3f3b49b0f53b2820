//! The full sync's writes, built on the parser thread: each `RESTORE` is encoded as RESP
//! straight into one buffer per group, with the DUMP footer (RDB version, CRC64) written
//! in place. The apply side forwards those bytes; per key, nothing is allocated and no
//! argv is built (with many small keys, those allocations and copies were most of
//! tandem's CPU in a full sync).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::redis::conn::{decimal, push_bulk};
use crate::redis::rdb::crc64::crc64;

/// One write of a group, in source order.
#[derive(Debug)]
pub enum Write {
    /// A command built from the RDB (a rewritten key's chunk, a function, a script).
    Argv(u32, Vec<Bytes>),
    /// One `RESTORE key ttl payload REPLACE ABSTTL`, encoded: `raw` is the whole command
    /// and `key` its key (both slices of the group's buffer).
    Restore { db: u32, key: Bytes, raw: Bytes },
}

enum Item {
    Argv(u32, Vec<Bytes>),
    Restore {
        db: u32,
        raw: Range<usize>,
        key: Range<usize>,
    },
}

/// Collects a group's writes; [`GroupBuilder::take`] hands them over.
#[derive(Default)]
pub struct GroupBuilder {
    buf: BytesMut,
    items: Vec<Item>,
}

impl GroupBuilder {
    /// Writes collected so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn argv(&mut self, db: u32, argv: Vec<Bytes>) {
        self.items.push(Item::Argv(db, argv));
    }

    /// `RESTORE key <expire_at_ms or 0> <DUMP payload of value> REPLACE ABSTTL`, where
    /// `value` is the RDB type byte and value as serialized in an RDB of `rdb_version`.
    pub fn restore(
        &mut self,
        db: u32,
        key: &[u8],
        expire_at_ms: Option<i64>,
        value: &[u8],
        rdb_version: u16,
    ) {
        let start = self.buf.len();
        let mut digits = [0u8; 20];
        let ttl = decimal(expire_at_ms.unwrap_or(0).max(0) as u64, &mut digits);
        self.buf.reserve(key.len() + ttl.len() + value.len() + 96);
        self.buf.extend_from_slice(b"*6\r\n$7\r\nRESTORE\r\n");
        let mut len_digits = [0u8; 20];
        self.buf.extend_from_slice(b"$");
        self.buf
            .extend_from_slice(decimal(key.len() as u64, &mut len_digits));
        self.buf.extend_from_slice(b"\r\n");
        let key_at = self.buf.len();
        self.buf.extend_from_slice(key);
        let key_range = key_at..self.buf.len();
        self.buf.extend_from_slice(b"\r\n");
        push_bulk(&mut self.buf, ttl);
        // The DUMP payload: value, RDB version (LE u16), CRC64 of both (LE u64).
        let version = rdb_version.to_le_bytes();
        let crc = crc64(crc64(0, value), &version);
        self.buf.extend_from_slice(b"$");
        self.buf
            .extend_from_slice(decimal(value.len() as u64 + 10, &mut len_digits));
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(&version);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
            .extend_from_slice(b"\r\n$7\r\nREPLACE\r\n$6\r\nABSTTL\r\n");
        self.items.push(Item::Restore {
            db,
            raw: start..self.buf.len(),
            key: key_range,
        });
    }

    /// The writes so far, in order; the builder starts over empty.
    pub fn take(&mut self) -> Vec<Write> {
        let buf = self.buf.split().freeze();
        self.items
            .drain(..)
            .map(|item| match item {
                Item::Argv(db, argv) => Write::Argv(db, argv),
                Item::Restore { db, raw, key } => Write::Restore {
                    db,
                    key: buf.slice(key),
                    raw: buf.slice(raw),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::conn::encode_command;
    use crate::redis::rdb::dump_payload;

    #[test]
    fn a_restore_is_the_command_the_argv_path_encodes() {
        let mut g = GroupBuilder::default();
        let value = b"\x00\x05hello";
        g.restore(3, b"k:1", Some(1_700_000_000_123), value, 11);
        g.argv(0, vec![Bytes::from_static(b"PING")]);
        g.restore(0, b"", None, b"\x00\x00", 9);
        let w = g.take();
        assert!(g.is_empty());
        assert_eq!(w.len(), 3);
        let expect = |key: &[u8], ttl: &str, value: &[u8], version: u16| {
            let payload = dump_payload(value, version);
            let mut b = BytesMut::new();
            encode_command(
                &mut b,
                &[
                    b"RESTORE",
                    key,
                    ttl.as_bytes(),
                    &payload,
                    b"REPLACE",
                    b"ABSTTL",
                ],
            );
            b.freeze()
        };
        match &w[0] {
            Write::Restore { db, key, raw } => {
                assert_eq!((*db, &key[..]), (3, &b"k:1"[..]));
                assert_eq!(raw, &expect(b"k:1", "1700000000123", value, 11));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&w[1], Write::Argv(0, a) if a[0] == "PING"));
        match &w[2] {
            Write::Restore { db, key, raw } => {
                assert_eq!((*db, key.len()), (0, 0));
                assert_eq!(raw, &expect(b"", "0", b"\x00\x00", 9));
            }
            other => panic!("{other:?}"),
        }
    }
}
