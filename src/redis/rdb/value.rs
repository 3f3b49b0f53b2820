//! Turning one serialized value into bounded [`ValueChunk`]s, and skipping a value
//! exactly (the structural walk `read_raw` uses to find the value's end).
//!
//! Values whose elements are stored one by one (linked lists, hashtables, skiplists,
//! quicklist nodes, stream nodes, Tair values) are read incrementally, so a key of
//! millions of elements costs one chunk of memory. Single-blob encodings (listpack,
//! ziplist, intset, zipmap) are read whole: Redis bounds them by its `*-max-*` configs.

use std::io::Read;

use bytes::Bytes;

use super::arena::{Arena, Blob, Span, blob_spans};
use super::blob::{Family, Queue, blob_err, decode_blob};
use super::error::{RdbError, RdbErrorKind, Result};
use super::module::{self, module_name};
use super::reader::{Len, Source};
use super::stream::{StreamDecoder, skip_stream};
use super::tair::{self, TairDecoder};
use super::types::rdb_type as t;
use super::types::*;

/// Chunk bounds for decoding.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// At most this many elements (members, fields, entries) per chunk.
    pub max_elements: usize,
    /// A chunk is closed once its payload passes this many bytes; also the piece size
    /// of large strings.
    pub max_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_elements: 512,
            max_bytes: 1 << 20,
        }
    }
}

#[derive(Clone, Copy)]
enum Elem {
    List,
    Set,
    ZsetText,
    ZsetBin,
    Hash,
    /// Redis 7.4 GA (min expire, relative TTLs) or pre-GA (absolute TTLs).
    HashMeta {
        min_expire: Option<u64>,
    },
    ValkeyHash2,
}

enum State {
    Start,
    StrPieces { left: u64 },
    Elems { kind: Elem, left: u64 },
    Quicklist { v2: bool, left: u64 },
    Queue,
    Stream(Box<StreamDecoder>),
    Tair(TairDecoder),
    Done,
}

pub(crate) struct Decoder {
    rdb_type: u8,
    valkey: bool,
    state: State,
    queue: Option<Queue>,
}

impl Decoder {
    pub(crate) fn new(rdb_type: u8, valkey: bool) -> Self {
        Decoder {
            rdb_type,
            valkey,
            state: State::Start,
            queue: None,
        }
    }

    pub(crate) fn next<R: Read>(
        &mut self,
        src: &mut Source<R>,
        lim: &ChunkLimits,
    ) -> Result<Option<ValueChunk>> {
        let r = self.step(src, lim);
        if r.is_err() {
            self.state = State::Done;
        }
        r
    }

    fn step<R: Read>(
        &mut self,
        src: &mut Source<R>,
        lim: &ChunkLimits,
    ) -> Result<Option<ValueChunk>> {
        let max = lim.max_elements.max(1) as u64;
        loop {
            match &mut self.state {
                State::Done => return Ok(None),
                State::Start => {
                    if let Some(c) = self.start(src, lim)? {
                        return Ok(Some(c));
                    }
                }
                State::Queue => match &mut self.queue {
                    Some(q) if q.len() > 0 => return Ok(Some(q.take(lim))),
                    _ => self.state = State::Done,
                },
                State::StrPieces { left } => {
                    if *left == 0 {
                        self.state = State::Done;
                        continue;
                    }
                    let want = (*left).min(lim.max_bytes.max(1) as u64) as usize;
                    let mut piece = Vec::with_capacity(want.min(super::reader::CHUNK));
                    while piece.len() < want {
                        src.read_some(want - piece.len(), &mut piece, "string value")?;
                    }
                    *left -= want as u64;
                    return Ok(Some(ValueChunk::StringAppend(piece)));
                }
                State::Quicklist { v2, left } => {
                    if let Some(q) = &mut self.queue
                        && q.len() > 0
                    {
                        return Ok(Some(q.take(lim)));
                    }
                    if *left == 0 {
                        self.state = State::Done;
                        continue;
                    }
                    *left -= 1;
                    let v2 = *v2;
                    let container = if v2 {
                        src.len("quicklist container")?
                    } else {
                        2
                    };
                    let at = src.offset();
                    let blob = src.string("quicklist node")?;
                    let (buf, spans) = match container {
                        1 => {
                            let n = blob.len();
                            (Bytes::from(blob), vec![(0, n)])
                        }
                        2 if v2 => blob_spans(blob, Blob::Listpack)
                            .map_err(blob_err(at, "quicklist listpack"))?,
                        2 => blob_spans(blob, Blob::Ziplist)
                            .map_err(blob_err(at, "quicklist ziplist"))?,
                        c => {
                            return Err(RdbError::corrupt(
                                at,
                                "quicklist container",
                                format!("unknown container {c}"),
                            ));
                        }
                    };
                    self.queue = Some(Queue::new(Family::List, Elements::new(buf, spans)));
                }
                State::Elems { kind, left } => {
                    if *left == 0 {
                        self.state = State::Done;
                        continue;
                    }
                    let kind = *kind;
                    let n = (*left).min(max);
                    let mut done = 0u64;
                    // A guess of 16 bytes per element saves most regrowths of the buffer.
                    let mut a = Arena::with_capacity((n as usize * 16).min(lim.max_bytes));
                    let mut spans = Vec::with_capacity(n as usize);
                    let chunk = match kind {
                        Elem::List | Elem::Set => {
                            while done < n && a.bytes() < lim.max_bytes {
                                src.string_into(&mut a.buf, "element")?;
                                spans.push(a.end());
                                done += 1;
                            }
                            let v = Elements::new(a.freeze(), spans);
                            if matches!(kind, Elem::List) {
                                ValueChunk::List(v)
                            } else {
                                ValueChunk::Set(v)
                            }
                        }
                        Elem::ZsetText | Elem::ZsetBin => {
                            let mut scores = Vec::with_capacity(n as usize);
                            while done < n && a.bytes() + 8 * scores.len() < lim.max_bytes {
                                src.string_into(&mut a.buf, "zset member")?;
                                spans.push(a.end());
                                scores.push(if matches!(kind, Elem::ZsetBin) {
                                    src.f64_le("zset score")?
                                } else {
                                    src.string_double("zset score")?
                                });
                                done += 1;
                            }
                            ValueChunk::Zset {
                                members: Elements::new(a.freeze(), spans),
                                scores,
                            }
                        }
                        Elem::Hash | Elem::HashMeta { .. } | Elem::ValkeyHash2 => {
                            let mut ttls = Vec::with_capacity(n as usize);
                            let mut vspans = Vec::with_capacity(n as usize);
                            while done < n && a.bytes() < lim.max_bytes {
                                let (f, v, ttl) = read_hash_field(src, kind, &mut a)?;
                                spans.push(f);
                                vspans.push(v);
                                ttls.push(ttl);
                                done += 1;
                            }
                            let buf = a.freeze();
                            ValueChunk::Hash {
                                fields: Elements::new(buf.clone(), spans),
                                values: Elements::new(buf, vspans),
                                expire_at_ms: ttls,
                            }
                        }
                    };
                    if let State::Elems { left, .. } = &mut self.state {
                        *left -= done;
                    }
                    return Ok(Some(chunk));
                }
                State::Stream(s) => {
                    let r = s.next(src, max as usize)?;
                    if r.is_none() {
                        self.state = State::Done;
                    }
                    return Ok(r);
                }
                State::Tair(d) => {
                    let r = d.next(src, max as usize)?;
                    if r.is_none() {
                        self.state = State::Done;
                    }
                    return Ok(r);
                }
            }
        }
    }

    /// Read the value's prologue and pick the state; may queue a whole blob or return
    /// a first chunk directly.
    fn start<R: Read>(
        &mut self,
        src: &mut Source<R>,
        lim: &ChunkLimits,
    ) -> Result<Option<ValueChunk>> {
        let at = src.offset();
        let rt = self.rdb_type;
        self.state = State::Done;
        let state = match rt {
            t::STRING => {
                let sat = src.offset();
                let piece = lim.max_bytes.max(1);
                return match src.len_enc("string value")? {
                    Len::Plain(n) if n > piece as u64 => {
                        // First piece as SET, the rest as APPENDs.
                        let mut v = Vec::with_capacity(piece.min(super::reader::CHUNK));
                        while v.len() < piece {
                            src.read_some(piece - v.len(), &mut v, "string value")?;
                        }
                        self.state = State::StrPieces {
                            left: n - piece as u64,
                        };
                        Ok(Some(ValueChunk::String(v)))
                    }
                    len => Ok(Some(ValueChunk::String(src.string_with(
                        len,
                        sat,
                        "string value",
                    )?))),
                };
            }
            t::LIST => State::Elems {
                kind: Elem::List,
                left: src.count("list length")?,
            },
            t::SET => State::Elems {
                kind: Elem::Set,
                left: src.count("set size")?,
            },
            t::ZSET => State::Elems {
                kind: Elem::ZsetText,
                left: src.count("zset size")?,
            },
            t::ZSET_2 => State::Elems {
                kind: Elem::ZsetBin,
                left: src.count("zset size")?,
            },
            t::HASH => State::Elems {
                kind: Elem::Hash,
                left: src.count("hash size")?,
            },
            t::HASH_METADATA_PRE_GA if self.valkey => State::Elems {
                kind: Elem::ValkeyHash2,
                left: src.count("hash size")?,
            },
            t::HASH_METADATA_PRE_GA => State::Elems {
                kind: Elem::HashMeta { min_expire: None },
                left: src.count("hash size")?,
            },
            t::HASH_METADATA if !self.valkey => {
                let min = src.u64_le("hash min expire")?;
                State::Elems {
                    kind: Elem::HashMeta {
                        min_expire: Some(min),
                    },
                    left: src.count("hash size")?,
                }
            }
            t::LIST_QUICKLIST => State::Quicklist {
                v2: false,
                left: src.count("quicklist node count")?,
            },
            t::LIST_QUICKLIST_2 => State::Quicklist {
                v2: true,
                left: src.count("quicklist node count")?,
            },
            t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => {
                State::Stream(Box::new(StreamDecoder::new(rt)))
            }
            t::MODULE_2 => {
                // Capture from the type byte on, in case the module is unknown and the
                // value must be passed through as a RESTORE payload.
                src.tee_start(&[rt], usize::try_from(src.max_string).unwrap_or(usize::MAX));
                let id = match src.len("module id") {
                    Ok(id) => id,
                    Err(e) => {
                        src.tee_take();
                        return Err(e);
                    }
                };
                let (name, encver) = module_name(id);
                if tair::is_known(&name, encver) {
                    src.tee_take();
                    State::Tair(TairDecoder::new(&name))
                } else {
                    let r = module::skip_opcodes(src);
                    let raw = src.tee_take();
                    r.map_err(|e| match e.kind {
                        RdbErrorKind::RawLimit => RdbError::new(
                            RdbErrorKind::TooLarge {
                                what: "module value",
                                len: raw.len() as u64,
                                limit: src.max_string,
                            },
                            at,
                        ),
                        _ => e,
                    })?;
                    return Ok(Some(ValueChunk::ModuleRaw {
                        module_name: name,
                        raw,
                    }));
                }
            }
            t::HASH_ZIPMAP
            | t::LIST_ZIPLIST
            | t::SET_INTSET
            | t::ZSET_ZIPLIST
            | t::HASH_ZIPLIST
            | t::HASH_LISTPACK
            | t::ZSET_LISTPACK
            | t::SET_LISTPACK
            | t::HASH_LISTPACK_EX_PRE_GA
            | t::HASH_LISTPACK_EX
                if !(self.valkey && rt >= t::HASH_LISTPACK_EX_PRE_GA) =>
            {
                if rt == t::HASH_LISTPACK_EX {
                    src.u64_le("hash min expire")?;
                }
                let bat = src.offset();
                let blob = src.string("encoded value")?;
                self.queue = Some(decode_blob(rt, blob, bat)?);
                State::Queue
            }
            t::MODULE_PRE_GA => {
                return Err(RdbError::corrupt(
                    at,
                    "module value",
                    "pre-GA module values (type 6) cannot be parsed without the module",
                ));
            }
            other => {
                return Err(RdbError::new(
                    RdbErrorKind::UnknownType(other),
                    at.saturating_sub(1),
                ));
            }
        };
        self.state = state;
        Ok(None)
    }
}

/// Append the field and the value to `a`; their spans and the field's expiry.
fn read_hash_field<R: Read>(
    src: &mut Source<R>,
    kind: Elem,
    a: &mut Arena,
) -> Result<(Span, Span, Option<i64>)> {
    let mut field_value = |src: &mut Source<R>| -> Result<(Span, Span)> {
        src.string_into(&mut a.buf, "hash field")?;
        let f = a.end();
        src.string_into(&mut a.buf, "hash value")?;
        Ok((f, a.end()))
    };
    match kind {
        Elem::HashMeta { min_expire } => {
            let at = src.offset();
            let ttl = src.len("hash field ttl")?;
            let expire = match (ttl, min_expire) {
                (0, _) => None,
                (t, Some(min)) => Some(
                    t.checked_add(min)
                        .map(|v| v - 1)
                        .ok_or_else(|| RdbError::corrupt(at, "hash field ttl", "overflows"))?,
                ),
                (t, None) => Some(t),
            };
            let expire = expire
                .map(|v| {
                    i64::try_from(v)
                        .map_err(|_| RdbError::corrupt(at, "hash field ttl", "out of range"))
                })
                .transpose()?;
            let (f, v) = field_value(src)?;
            Ok((f, v, expire))
        }
        Elem::ValkeyHash2 => {
            let (f, v) = field_value(src)?;
            let e = src.u64_le("hash field expiry")? as i64;
            Ok((f, v, (e != -1).then_some(e)))
        }
        _ => {
            let (f, v) = field_value(src)?;
            Ok((f, v, None))
        }
    }
}

/// Walk over one value without decoding it (type byte already consumed).
pub(crate) fn skip_value<R: Read>(src: &mut Source<R>, rt: u8, valkey: bool) -> Result<()> {
    let at = src.offset();
    let count_strings = |src: &mut Source<R>, per: u64, what| -> Result<()> {
        let n = src.count(what)?;
        for _ in 0..n {
            for _ in 0..per {
                src.skip_string(what)?;
            }
        }
        Ok(())
    };
    match rt {
        t::STRING => src.skip_string("string value"),
        t::LIST | t::SET => count_strings(src, 1, "element"),
        t::HASH => count_strings(src, 2, "hash field"),
        t::ZSET | t::ZSET_2 => {
            let n = src.count("zset size")?;
            for _ in 0..n {
                src.skip_string("zset member")?;
                if rt == t::ZSET {
                    src.skip_string_double("zset score")?;
                } else {
                    src.skip(8, "zset score")?;
                }
            }
            Ok(())
        }
        t::HASH_METADATA_PRE_GA if valkey => {
            let n = src.count("hash size")?;
            for _ in 0..n {
                src.skip_string("hash field")?;
                src.skip_string("hash value")?;
                src.skip(8, "hash field expiry")?;
            }
            Ok(())
        }
        t::HASH_METADATA_PRE_GA | t::HASH_METADATA if !valkey => {
            if rt == t::HASH_METADATA {
                src.skip(8, "hash min expire")?;
            }
            let n = src.count("hash size")?;
            for _ in 0..n {
                src.len("hash field ttl")?;
                src.skip_string("hash field")?;
                src.skip_string("hash value")?;
            }
            Ok(())
        }
        t::LIST_QUICKLIST | t::LIST_QUICKLIST_2 => {
            let n = src.count("quicklist node count")?;
            for _ in 0..n {
                if rt == t::LIST_QUICKLIST_2 {
                    src.len("quicklist container")?;
                }
                src.skip_string("quicklist node")?;
            }
            Ok(())
        }
        t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => skip_stream(src, rt),
        t::MODULE_2 => {
            src.len("module id")?;
            module::skip_opcodes(src)
        }
        t::HASH_ZIPMAP
        | t::LIST_ZIPLIST
        | t::SET_INTSET
        | t::ZSET_ZIPLIST
        | t::HASH_ZIPLIST
        | t::HASH_LISTPACK
        | t::ZSET_LISTPACK
        | t::SET_LISTPACK
        | t::HASH_LISTPACK_EX_PRE_GA
        | t::HASH_LISTPACK_EX
            if !(valkey && rt >= t::HASH_LISTPACK_EX_PRE_GA) =>
        {
            if rt == t::HASH_LISTPACK_EX {
                src.skip(8, "hash min expire")?;
            }
            src.skip_string("encoded value")
        }
        t::MODULE_PRE_GA => Err(RdbError::corrupt(
            at,
            "module value",
            "pre-GA module values (type 6) cannot be parsed without the module",
        )),
        other => Err(RdbError::new(
            RdbErrorKind::UnknownType(other),
            at.saturating_sub(1),
        )),
    }
}
