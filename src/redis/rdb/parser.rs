//! The event-level parser: header, opcodes, key headers, and the value API.

use std::io::Read;

use super::error::{RdbError, RdbErrorKind, Result};
use super::module::{self, module_name};
use super::reader::Source;
use super::types::*;
use super::value::{ChunkLimits, Decoder, skip_value};

/// Highest Redis RDB version understood (`REDIS0012`, Redis 7.4–8.x).
pub const MAX_REDIS_VERSION: u32 = 12;
/// The Valkey RDB version understood (`VALKEY080`, Valkey 9.0).
pub const VALKEY_VERSION: u32 = 80;

const OP_SLOT_INFO: u8 = 244;
const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

/// Parser options.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// Verify the trailing CRC64 when it is non-zero.
    pub verify_checksum: bool,
    /// Cap on any single string or encoded blob (default 4 GiB).
    pub max_string: u64,
    /// Bounds of the chunks `next_chunk` yields.
    pub chunk: ChunkLimits,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            verify_checksum: true,
            max_string: 4 << 30,
            chunk: ChunkLimits::default(),
        }
    }
}

enum Pending {
    None,
    Unread(u8),
    Decoding(Box<Decoder>),
}

/// Streaming RDB parser over any `Read`. See the module docs for the protocol.
pub struct RdbParser<R> {
    src: Source<R>,
    magic: Magic,
    version: u32,
    opts: ParseOptions,
    db: u64,
    pending: Pending,
    finished: bool,
    value_only: bool,
}

impl<R: Read> RdbParser<R> {
    /// Read and check the 9-byte header.
    pub fn new(reader: R) -> Result<Self> {
        Self::with_options(reader, ParseOptions::default())
    }

    pub fn with_options(reader: R, opts: ParseOptions) -> Result<Self> {
        let mut src = Source::new(reader, opts.verify_checksum, opts.max_string);
        let head: [u8; 9] = src
            .take(9, "RDB header (REDIS0xxx or VALKEYxxx)")?
            .try_into()
            .unwrap_or([0; 9]);
        let digits = |d: &[u8]| -> Option<u32> {
            if d.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(d).ok()?.parse().ok()
            } else {
                None
            }
        };
        let (magic, version) = if &head[..5] == b"REDIS" {
            let v = digits(&head[5..])
                .ok_or_else(|| RdbError::corrupt(5, "RDB version", "not 4 digits"))?;
            if !(1..=MAX_REDIS_VERSION).contains(&v) {
                return Err(RdbError::new(
                    RdbErrorKind::UnsupportedVersion {
                        magic: "REDIS",
                        version: v,
                    },
                    5,
                ));
            }
            (Magic::Redis, v)
        } else if &head[..6] == b"VALKEY" {
            let v = digits(&head[6..])
                .ok_or_else(|| RdbError::corrupt(6, "RDB version", "not 3 digits"))?;
            if v != VALKEY_VERSION {
                return Err(RdbError::new(
                    RdbErrorKind::UnsupportedVersion {
                        magic: "VALKEY",
                        version: v,
                    },
                    6,
                ));
            }
            (Magic::Valkey, v)
        } else {
            return Err(RdbError::new(RdbErrorKind::BadMagic, 0));
        };
        Ok(RdbParser {
            src,
            magic,
            version,
            opts,
            db: 0,
            pending: Pending::None,
            finished: false,
            value_only: false,
        })
    }

    /// A parser over one serialized value (`type byte + value`, as returned by
    /// [`read_raw`](Self::read_raw) or a DUMP payload without its 10-byte footer), to
    /// decode it with [`next_chunk`](Self::next_chunk). `rdb_version` is the version of
    /// the file it came from (it decides the meaning of type byte 22).
    pub fn for_value(raw: R, rdb_version: u32, opts: ParseOptions) -> Result<Self> {
        let mut src = Source::new(raw, false, opts.max_string);
        let t = src.u8("value type")?;
        Ok(RdbParser {
            src,
            magic: if rdb_version >= VALKEY_VERSION {
                Magic::Valkey
            } else {
                Magic::Redis
            },
            version: rdb_version,
            opts,
            db: 0,
            pending: Pending::Unread(t),
            finished: true,
            value_only: true,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn magic(&self) -> Magic {
        self.magic
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.src.offset()
    }

    fn valkey(&self) -> bool {
        self.magic == Magic::Valkey
    }

    /// Finish whatever is left of the current value.
    fn drain_value(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => Ok(()),
            Pending::Unread(t) => {
                let vk = self.valkey();
                skip_value(&mut self.src, t, vk)
            }
            Pending::Decoding(mut d) => {
                let lim = self.opts.chunk;
                while d.next(&mut self.src, &lim)?.is_some() {}
                Ok(())
            }
        }
    }

    /// The next event, or `None` after [`Event::End`]. An unread value of the previous
    /// key is skipped first.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        self.drain_value()?;
        if self.finished {
            return Ok(None);
        }
        let mut expire: Option<i64> = None;
        let mut idle = None;
        let mut freq = None;
        loop {
            let at = self.src.offset();
            let op = self.src.u8("opcode or value type")?;
            match op {
                OP_EXPIRETIME_MS => expire = Some(self.src.u64_le("expire time (ms)")? as i64),
                OP_EXPIRETIME => expire = Some(self.src.u32_le("expire time (s)")? as i64 * 1000),
                OP_IDLE => idle = Some(self.src.len("LRU idle time")?),
                OP_FREQ => freq = Some(self.src.u8("LFU frequency")?),
                OP_SELECTDB => {
                    self.db = self.src.len("db number")?;
                    return Ok(Some(Event::SelectDb { db: self.db }));
                }
                OP_RESIZEDB => {
                    let db_size = self.src.len("db size hint")?;
                    let expires_size = self.src.len("expires size hint")?;
                    return Ok(Some(Event::ResizeDb {
                        db_size,
                        expires_size,
                    }));
                }
                OP_AUX => {
                    let key = self.src.string("aux field name")?;
                    let value = self.src.string("aux field value")?;
                    return Ok(Some(Event::Aux { key, value }));
                }
                OP_SLOT_INFO => {
                    let slot = self.src.len("slot id")?;
                    let size = self.src.len("slot size")?;
                    let expires_size = self.src.len("slot expires size")?;
                    return Ok(Some(Event::SlotInfo {
                        slot,
                        size,
                        expires_size,
                    }));
                }
                OP_FUNCTION2 => {
                    let code = self.src.string("function library code")?;
                    return Ok(Some(Event::Function { code }));
                }
                OP_FUNCTION_PRE_GA => {
                    return Err(RdbError::corrupt(
                        at,
                        "opcode",
                        "pre-GA function format (Redis 7.0 RC) is not supported",
                    ));
                }
                OP_MODULE_AUX => {
                    let module_id = self.src.len("module id")?;
                    let wat = self.src.offset();
                    let when_op = self.src.len("module aux when opcode")?;
                    if when_op != module::OP_UINT {
                        return Err(RdbError::corrupt(
                            wat,
                            "module aux when opcode",
                            format!("{when_op}, expected 2"),
                        ));
                    }
                    let when = self.src.len("module aux when")?;
                    module::skip_opcodes(&mut self.src)?;
                    let (module_name, _) = module_name(module_id);
                    return Ok(Some(Event::ModuleAux {
                        module_id,
                        module_name,
                        when,
                    }));
                }
                OP_EOF => {
                    self.finished = true;
                    let checksum = if self.version >= 5 {
                        let computed = self.src.crc_now();
                        let stored = self.src.u64_le("CRC64 trailer")?;
                        if stored != 0 && self.opts.verify_checksum && stored != computed {
                            return Err(RdbError::new(
                                RdbErrorKind::ChecksumMismatch { stored, computed },
                                at + 1,
                            ));
                        }
                        (stored != 0).then_some(stored)
                    } else {
                        None
                    };
                    return Ok(Some(Event::End { checksum }));
                }
                t => {
                    if !is_value_type(t, self.valkey()) {
                        return Err(RdbError::new(RdbErrorKind::UnknownType(t), at));
                    }
                    let key = self.src.string("key")?;
                    self.pending = Pending::Unread(t);
                    return Ok(Some(Event::Key(KeyHeader {
                        db: self.db,
                        key,
                        expire_at_ms: expire,
                        lru_idle: idle,
                        lfu_freq: freq,
                        rdb_type: t,
                        offset: at,
                    })));
                }
            }
        }
    }

    /// Take the pending value as raw bytes (type byte + value exactly as serialized) if
    /// it is at most `limit` bytes. Otherwise returns [`RawValue::TooLarge`] and leaves
    /// the value unread (the bytes looked at are replayed), so the caller continues with
    /// [`next_chunk`](Self::next_chunk). Memory: at most `limit` + one read buffer.
    pub fn read_raw(&mut self, limit: usize) -> Result<RawValue> {
        let mut raw = Vec::new();
        Ok(match self.read_raw_in(limit, &mut raw)? {
            true => RawValue::Complete(raw),
            false => RawValue::TooLarge,
        })
    }

    /// [`Self::read_raw`] into `raw` (its allocation reused): `true` when `raw` holds the
    /// value, `false` for [`RawValue::TooLarge`] (then `raw` is empty).
    pub fn read_raw_in(&mut self, limit: usize, raw: &mut Vec<u8>) -> Result<bool> {
        let Pending::Unread(t) = self.pending else {
            return Err(RdbError::new(
                RdbErrorKind::Usage("read_raw needs an unread value"),
                self.src.offset(),
            ));
        };
        self.src.tee_start_in(&[t], limit, std::mem::take(raw));
        let vk = self.valkey();
        match skip_value(&mut self.src, t, vk) {
            Ok(()) if self.src.tee_len() <= limit => {
                self.pending = Pending::None;
                *raw = self.src.tee_take();
                Ok(true)
            }
            Ok(()) => {
                self.src.tee_rewind(1);
                Ok(false)
            }
            Err(RdbError {
                kind: RdbErrorKind::RawLimit,
                ..
            }) => {
                self.src.tee_rewind(1);
                Ok(false)
            }
            Err(e) => {
                self.src.tee_take();
                self.pending = Pending::None;
                Err(e)
            }
        }
    }

    /// The next bounded chunk of the pending value, `None` once it is complete.
    /// Can be mixed with nothing else for this value (except a prior `TooLarge`).
    pub fn next_chunk(&mut self) -> Result<Option<ValueChunk>> {
        let lim = self.opts.chunk;
        let valkey = self.valkey();
        match &mut self.pending {
            Pending::None => Ok(None),
            Pending::Unread(t) => {
                let d = Box::new(Decoder::new(*t, valkey));
                self.pending = Pending::Decoding(d);
                self.next_chunk()
            }
            Pending::Decoding(d) => {
                let r = d.next(&mut self.src, &lim);
                if matches!(r, Ok(None) | Err(_)) {
                    self.pending = Pending::None;
                }
                r
            }
        }
    }

    /// Skip the pending value without decoding it.
    pub fn skip_value(&mut self) -> Result<()> {
        self.drain_value()
    }

    /// For a parser made with [`for_value`](Self::for_value): check that the value
    /// used the whole input.
    pub fn expect_end(&mut self) -> Result<()> {
        if self.value_only && !self.src.at_eof()? {
            return Err(RdbError::corrupt(
                self.src.offset(),
                "end of value",
                "trailing bytes",
            ));
        }
        Ok(())
    }
}

fn is_value_type(t: u8, valkey: bool) -> bool {
    match t {
        0..=7 => t != 6 || !valkey,
        9..=21 => true,
        22 => true,
        23..=25 => !valkey,
        _ => false,
    }
}

/// Build a `DUMP`/`RESTORE` payload: value bytes, 2-byte LE RDB version, CRC64 LE of
/// everything before it. `raw` is what [`RdbParser::read_raw`] returned. The target
/// refuses versions newer than its own, so pass the target's version when the type is
/// one it knows (the sink's decision).
pub fn dump_payload(raw: &[u8], rdb_version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 10);
    out.extend_from_slice(raw);
    out.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = super::crc64::crc64(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Split a DUMP payload into (value bytes, RDB version) after checking its CRC64.
pub fn parse_dump_payload(payload: &[u8]) -> Result<(&[u8], u16)> {
    if payload.len() < 11 {
        return Err(RdbError::corrupt(
            0,
            "DUMP payload",
            "shorter than its footer",
        ));
    }
    let n = payload.len();
    let crc = u64::from_le_bytes(payload[n - 8..].try_into().unwrap_or([0; 8]));
    let computed = super::crc64::crc64(0, &payload[..n - 8]);
    if crc != computed {
        return Err(RdbError::new(
            RdbErrorKind::ChecksumMismatch {
                stored: crc,
                computed,
            },
            (n - 8) as u64,
        ));
    }
    let ver = u16::from_le_bytes([payload[n - 10], payload[n - 9]]);
    Ok((&payload[..n - 10], ver))
}
