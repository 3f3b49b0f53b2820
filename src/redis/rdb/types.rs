//! Public data types yielded by the parser.

use bytes::Bytes;

/// RDB value type bytes (rdb.h). Valkey 9 reuses 22 for its own hash-with-TTL type, so
/// the meaning of 22 depends on the file's magic/version (see [`RdbParser`](super::RdbParser)).
pub mod rdb_type {
    pub const STRING: u8 = 0;
    pub const LIST: u8 = 1;
    pub const SET: u8 = 2;
    pub const ZSET: u8 = 3;
    pub const HASH: u8 = 4;
    pub const ZSET_2: u8 = 5;
    pub const MODULE_PRE_GA: u8 = 6;
    pub const MODULE_2: u8 = 7;
    pub const HASH_ZIPMAP: u8 = 9;
    pub const LIST_ZIPLIST: u8 = 10;
    pub const SET_INTSET: u8 = 11;
    pub const ZSET_ZIPLIST: u8 = 12;
    pub const HASH_ZIPLIST: u8 = 13;
    pub const LIST_QUICKLIST: u8 = 14;
    pub const STREAM_LISTPACKS: u8 = 15;
    pub const HASH_LISTPACK: u8 = 16;
    pub const ZSET_LISTPACK: u8 = 17;
    pub const LIST_QUICKLIST_2: u8 = 18;
    pub const STREAM_LISTPACKS_2: u8 = 19;
    pub const SET_LISTPACK: u8 = 20;
    pub const STREAM_LISTPACKS_3: u8 = 21;
    /// Redis 7.4 RC; in Valkey 9 files (version 80) this byte is `HASH_2`.
    pub const HASH_METADATA_PRE_GA: u8 = 22;
    pub const HASH_LISTPACK_EX_PRE_GA: u8 = 23;
    pub const HASH_METADATA: u8 = 24;
    pub const HASH_LISTPACK_EX: u8 = 25;
    /// Valkey 9 (RDB 80): hash with per-field expiry.
    pub const VALKEY_HASH_2: u8 = 22;
}

/// Which server family wrote the file: decides the meaning of type byte 22.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    Redis,
    Valkey,
}

/// A stream entry ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Everything known about a key before its value is read.
#[derive(Debug, Clone)]
pub struct KeyHeader {
    pub db: u64,
    pub key: Vec<u8>,
    /// Absolute expiry in Unix milliseconds.
    pub expire_at_ms: Option<i64>,
    /// LRU idle seconds (`IDLE` opcode), when the file has it.
    pub lru_idle: Option<u64>,
    /// LFU frequency (`FREQ` opcode), when the file has it.
    pub lfu_freq: Option<u8>,
    /// The RDB type byte of the value.
    pub rdb_type: u8,
    /// Byte offset of the value's type byte.
    pub offset: u64,
}

/// One parse event, in file order.
#[derive(Debug, Clone)]
pub enum Event {
    Aux {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    SelectDb {
        db: u64,
    },
    ResizeDb {
        db_size: u64,
        expires_size: u64,
    },
    SlotInfo {
        slot: u64,
        size: u64,
        expires_size: u64,
    },
    /// Module auxiliary data: skipped (its layout belongs to the module), reported.
    ModuleAux {
        module_id: u64,
        module_name: String,
        when: u64,
    },
    /// A function library (opcode 245): the code to `FUNCTION LOAD`.
    Function {
        code: Vec<u8>,
    },
    /// A key. Its value is read next with `read_raw`, `next_chunk` or `skip_value`
    /// (or skipped automatically by the next `next_event`).
    Key(KeyHeader),
    /// End of file. `checksum` is the stored CRC64 when non-zero (it was verified).
    End {
        checksum: Option<u64>,
    },
}

/// The byte strings of one chunk, stored in one shared buffer (one allocation per
/// chunk, or a view of the listpack/ziplist blob they came from) and located by spans:
/// no allocation and no reference count per element.
#[derive(Clone, Default)]
pub struct Elements {
    buf: Bytes,
    spans: Vec<(usize, usize)>,
}

impl Elements {
    /// Every span must lie within `buf` (the parser builds them; see `arena.rs`).
    pub(crate) fn new(buf: Bytes, spans: Vec<(usize, usize)>) -> Self {
        debug_assert!(spans.iter().all(|&(s, e)| s <= e && e <= buf.len()));
        Elements { buf, spans }
    }

    /// Owned copies of `items` (tests, callers building chunks by hand).
    pub fn from_slices<T: AsRef<[u8]>>(items: &[T]) -> Self {
        let mut buf = Vec::new();
        let mut spans = Vec::with_capacity(items.len());
        for it in items {
            let s = buf.len();
            buf.extend_from_slice(it.as_ref());
            spans.push((s, buf.len()));
        }
        Elements::new(Bytes::from(buf), spans)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(s, e) = self.spans.get(i)?;
        self.buf.get(s..e)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(|&(s, e)| self.buf.get(s..e).unwrap_or_default())
    }

    /// Length of element `i` (0 past the end).
    pub(crate) fn len_of(&self, i: usize) -> usize {
        self.spans.get(i).map(|&(s, e)| e - s).unwrap_or(0)
    }

    /// Split off the first `k` elements (sharing the buffer).
    pub(crate) fn split_to(&mut self, k: usize) -> Elements {
        if k >= self.spans.len() {
            return std::mem::take(self);
        }
        let rest = self.spans.split_off(k);
        Elements {
            buf: self.buf.clone(),
            spans: std::mem::replace(&mut self.spans, rest),
        }
    }
}

impl std::fmt::Debug for Elements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl PartialEq for Elements {
    fn eq(&self, o: &Self) -> bool {
        self.len() == o.len() && self.iter().eq(o.iter())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Stream metadata, yielded after all entries.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMeta {
    pub length: u64,
    pub last_id: StreamId,
    /// `None` for stream type 15 (before Redis 7.0), which lacks these.
    pub first_id: Option<StreamId>,
    pub max_deleted_id: Option<StreamId>,
    pub entries_added: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub id: StreamId,
    /// Owner; `None` only in a corrupt file (every PEL entry has an owner).
    pub consumer: Option<Vec<u8>>,
    pub delivery_time_ms: u64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub name: Vec<u8>,
    pub seen_time_ms: u64,
    /// Stream type 21 only.
    pub active_time_ms: Option<u64>,
    pub pending: u64,
}

/// A consumer group with its whole PEL (the PEL is held in memory per group: its
/// entries' owners come after it in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamGroup {
    pub name: Vec<u8>,
    pub last_delivered_id: StreamId,
    /// Stream types 19/21 only.
    pub entries_read: Option<u64>,
    pub pending: Vec<PendingEntry>,
    pub consumers: Vec<Consumer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TairHashField {
    pub field: Vec<u8>,
    pub value: Vec<u8>,
    pub version: u64,
    /// 0 = no expiry.
    pub expire_at_ms: u64,
}

/// A bounded piece of a decoded value. A key's chunks all have the same family.
///
/// Elements of lists, sets, zsets and hashes are [`Elements`]: one buffer per chunk (or
/// per listpack/ziplist blob), not one allocation each.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueChunk {
    /// The string, or its first piece when it is larger than the chunk size.
    String(Vec<u8>),
    /// A further piece of a large string (to `APPEND`).
    StringAppend(Vec<u8>),
    List(Elements),
    Set(Elements),
    /// Members and their scores (same length), in file order (not rank order).
    Zset {
        members: Elements,
        scores: Vec<f64>,
    },
    /// Fields, their values and per-field expiries (Redis 7.4+/Valkey 9), same length.
    Hash {
        fields: Elements,
        values: Elements,
        expire_at_ms: Vec<Option<i64>>,
    },
    StreamEntries(Vec<StreamEntry>),
    StreamMeta(StreamMeta),
    StreamGroup(StreamGroup),
    /// Tair `exstrtype`.
    TairString {
        value: Vec<u8>,
        version: u64,
        flags: u64,
    },
    /// Tair `tairhash-`.
    TairHash(Vec<TairHashField>),
    /// Tair `tairzset_`: member with its multi-dimensional score.
    TairZset(Vec<(Vec<u8>, Vec<f64>)>),
    /// Any other module value: the raw serialized value (type byte + value) to RESTORE.
    ModuleRaw {
        module_name: String,
        raw: Vec<u8>,
    },
}

/// Result of [`RdbParser::read_raw`](super::RdbParser::read_raw).
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// Type byte + value bytes exactly as in the file.
    Complete(Vec<u8>),
    /// The value is larger than the limit. Nothing is consumed: the value is still
    /// pending and must be taken with `next_chunk` (or skipped).
    TooLarge,
}
