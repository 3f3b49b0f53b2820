//! Single-blob encodings (listpack, ziplist, intset, zipmap) decoded at once into a
//! [`Queue`] of spans over one buffer, then handed out a chunk at a time. Redis bounds
//! these blobs by its `*-max-listpack-*` configs; quicklist nodes use the same queue.

use bytes::Bytes;

use super::arena::{Arena, Blob, Span, blob_spans};
use super::error::{RdbError, Result};
use super::listpack::LpVal;
use super::types::rdb_type as t;
use super::types::{Elements, ValueChunk};
use super::value::ChunkLimits;
use super::{intset, zipmap};

pub(crate) fn blob_err(at: u64, what: &'static str) -> impl Fn((usize, String)) -> RdbError {
    move |(pos, msg)| RdbError::corrupt(at, what, format!("{msg} (byte {pos} of the decoded blob)"))
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Family {
    List,
    Set,
    Zset,
    Hash,
}

/// A decoded blob (or quicklist node) handed out a chunk at a time. `values`, `scores`
/// and `ttls` are used by the families that have them, aligned with `members`.
pub(crate) struct Queue {
    family: Family,
    members: Elements,
    values: Elements,
    scores: Vec<f64>,
    ttls: Vec<Option<i64>>,
}

fn split_vec<T>(v: &mut Vec<T>, k: usize) -> Vec<T> {
    if k >= v.len() {
        return std::mem::take(v);
    }
    let rest = v.split_off(k);
    std::mem::replace(v, rest)
}

impl Queue {
    pub(crate) fn new(family: Family, members: Elements) -> Self {
        Queue {
            family,
            members,
            values: Elements::default(),
            scores: Vec::new(),
            ttls: Vec::new(),
        }
    }

    fn hash(fields: Elements, values: Elements, ttls: Vec<Option<i64>>) -> Self {
        Queue {
            values,
            ttls,
            ..Queue::new(Family::Hash, fields)
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn take(&mut self, lim: &ChunkLimits) -> ValueChunk {
        let (n, max) = (self.members.len(), lim.max_elements.max(1));
        let (mut k, mut bytes) = (0, 0);
        while k < n && k < max && bytes < lim.max_bytes {
            bytes += self.members.len_of(k)
                + match self.family {
                    Family::Zset => 8,
                    Family::Hash => self.values.len_of(k),
                    _ => 0,
                };
            k += 1;
        }
        let members = self.members.split_to(k);
        match self.family {
            Family::List => ValueChunk::List(members),
            Family::Set => ValueChunk::Set(members),
            Family::Zset => ValueChunk::Zset {
                members,
                scores: split_vec(&mut self.scores, k),
            },
            Family::Hash => ValueChunk::Hash {
                fields: members,
                values: self.values.split_to(k),
                expire_at_ms: split_vec(&mut self.ttls, k),
            },
        }
    }
}

/// A score as listpacks/ziplists store it: integers were printed into the buffer by
/// `blob_spans`, other scores are text.
fn score(s: &[u8], at: u64) -> Result<f64> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| RdbError::corrupt(at, "zset score", "not a number"))
}

/// Split interleaved elements (field, value, field, value…) into two sets of spans.
fn unzip_spans(spans: &[Span], per: usize) -> (Vec<Span>, Vec<Span>) {
    spans.chunks_exact(per).map(|c| (c[0], c[1])).unzip()
}

pub(crate) fn decode_blob(rt: u8, blob: Vec<u8>, at: u64) -> Result<Queue> {
    let lp = |what| move |b: Vec<u8>| blob_spans(b, Blob::Listpack).map_err(blob_err(at, what));
    let zl = |what| move |b: Vec<u8>| blob_spans(b, Blob::Ziplist).map_err(blob_err(at, what));
    let pairs = |(buf, spans): (Bytes, Vec<Span>), what| -> Result<(Bytes, Vec<Span>, Vec<Span>)> {
        if !spans.len().is_multiple_of(2) {
            return Err(RdbError::corrupt(at, what, "odd number of elements"));
        }
        let (a, b) = unzip_spans(&spans, 2);
        Ok((buf, a, b))
    };
    let zset = |decoded| -> Result<Queue> {
        let (buf, members, scores) = pairs(decoded, "zset blob")?;
        let scores = scores
            .iter()
            .map(|&(s, e)| score(&buf[s..e], at))
            .collect::<Result<Vec<f64>>>()?;
        let mut q = Queue::new(Family::Zset, Elements::new(buf, members));
        q.scores = scores;
        Ok(q)
    };
    let hash = |decoded| -> Result<Queue> {
        let (buf, f, v) = pairs(decoded, "hash blob")?;
        let ttls = vec![None; f.len()];
        Ok(Queue::hash(
            Elements::new(buf.clone(), f),
            Elements::new(buf, v),
            ttls,
        ))
    };
    Ok(match rt {
        t::HASH_ZIPMAP => {
            let spans: Vec<(Span, Span)> = {
                let base = blob.as_ptr() as usize;
                let off = |s: &[u8]| {
                    let o = (s.as_ptr() as usize).saturating_sub(base);
                    (o, o + s.len())
                };
                zipmap::decode(&blob)
                    .map_err(blob_err(at, "zipmap"))?
                    .into_iter()
                    .map(|(f, v)| (off(f), off(v)))
                    .collect()
            };
            let (f, v): (Vec<Span>, Vec<Span>) = spans.into_iter().unzip();
            let buf = Bytes::from(blob);
            let ttls = vec![None; f.len()];
            Queue::hash(Elements::new(buf.clone(), f), Elements::new(buf, v), ttls)
        }
        t::LIST_ZIPLIST => {
            let (buf, spans) = zl("list ziplist")(blob)?;
            Queue::new(Family::List, Elements::new(buf, spans))
        }
        t::SET_INTSET => {
            let mut a = Arena::default();
            let spans = intset::decode(&blob)
                .map_err(blob_err(at, "intset"))?
                .into_iter()
                .map(|i| a.push_int(i))
                .collect();
            Queue::new(Family::Set, Elements::new(a.freeze(), spans))
        }
        t::SET_LISTPACK => {
            let (buf, spans) = lp("set listpack")(blob)?;
            Queue::new(Family::Set, Elements::new(buf, spans))
        }
        t::ZSET_ZIPLIST => zset(zl("zset ziplist")(blob)?)?,
        t::ZSET_LISTPACK => zset(lp("zset listpack")(blob)?)?,
        t::HASH_ZIPLIST => hash(zl("hash ziplist")(blob)?)?,
        t::HASH_LISTPACK => hash(lp("hash listpack")(blob)?)?,
        _ => {
            // HASH_LISTPACK_EX(_PRE_GA): (field, value, absolute ttl or 0) triplets.
            let (buf, spans) = lp("hash listpack-ex")(blob)?;
            if spans.len() % 3 != 0 {
                return Err(RdbError::corrupt(
                    at,
                    "hash listpack-ex",
                    "element count not a multiple of 3",
                ));
            }
            let mut f = Vec::with_capacity(spans.len() / 3);
            let mut v = Vec::with_capacity(spans.len() / 3);
            let mut ttls = Vec::with_capacity(spans.len() / 3);
            for c in spans.chunks_exact(3) {
                let (s, e) = c[2];
                let ttl = LpVal::Str(&buf[s..e])
                    .as_int()
                    .ok_or_else(|| RdbError::corrupt(at, "hash listpack-ex", "non-integer ttl"))?;
                f.push(c[0]);
                v.push(c[1]);
                ttls.push((ttl != 0).then_some(ttl));
            }
            Queue::hash(Elements::new(buf.clone(), f), Elements::new(buf, v), ttls)
        }
    })
}
