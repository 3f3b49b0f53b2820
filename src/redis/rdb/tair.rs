//! Tair module values (TairString `exstrtype`, TairHash `tairhash-`, TairZset
//! `tairzset_`, all encver 0), decoded from their MODULE_2 opcodes. Layouts (from the
//! module sources, confirmed on real files):
//! - `exstrtype`: UINT version, UINT flags, STRING value.
//! - `tairhash-`: UINT nfields, STRING key name (stale after RENAME: ignored), then per
//!   field STRING field, UINT version, UINT expire_at_ms (0 = none), STRING value.
//! - `tairzset_`: UINT length, UINT score_num, then per member STRING member and
//!   score_num DOUBLEs (highest member first).

use std::io::Read;

use super::error::{RdbError, Result};
use super::module::{read_double, read_eof, read_string, read_uint};
use super::reader::Source;
use super::types::{TairHashField, ValueChunk};

/// Dimensions beyond this are treated as corrupt (TairZset allows far fewer).
const MAX_DIMS: u64 = 4096;

pub(crate) fn is_known(name: &str, encver: u32) -> bool {
    encver == 0 && matches!(name, "exstrtype" | "tairhash-" | "tairzset_")
}

pub(crate) enum TairDecoder {
    Start(&'static str),
    Hash { left: u64 },
    Zset { left: u64, dims: u64 },
    Done,
}

impl TairDecoder {
    pub(crate) fn new(name: &str) -> Self {
        TairDecoder::Start(match name {
            "exstrtype" => "exstrtype",
            "tairhash-" => "tairhash-",
            _ => "tairzset_",
        })
    }

    pub(crate) fn next<R: Read>(
        &mut self,
        src: &mut Source<R>,
        max_elems: usize,
    ) -> Result<Option<ValueChunk>> {
        let max = max_elems.max(1);
        loop {
            match self {
                TairDecoder::Start("exstrtype") => {
                    let version = read_uint(src, "exstrtype version")?;
                    let flags = read_uint(src, "exstrtype flags")?;
                    let value = read_string(src, "exstrtype value")?;
                    read_eof(src)?;
                    *self = TairDecoder::Done;
                    return Ok(Some(ValueChunk::TairString {
                        value,
                        version,
                        flags,
                    }));
                }
                TairDecoder::Start("tairhash-") => {
                    let left = read_uint(src, "tairhash field count")?;
                    read_string(src, "tairhash key name")?;
                    *self = TairDecoder::Hash { left };
                }
                TairDecoder::Start(_) => {
                    let left = read_uint(src, "tairzset length")?;
                    let at = src.offset();
                    let dims = read_uint(src, "tairzset score count")?;
                    if dims == 0 || dims > MAX_DIMS {
                        return Err(RdbError::corrupt(
                            at,
                            "tairzset score count",
                            format!("{dims} dimensions"),
                        ));
                    }
                    *self = TairDecoder::Zset { left, dims };
                }
                TairDecoder::Hash { left } => {
                    if *left == 0 {
                        read_eof(src)?;
                        *self = TairDecoder::Done;
                        continue;
                    }
                    let n = (*left).min(max as u64);
                    let mut out = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let field = read_string(src, "tairhash field")?;
                        let version = read_uint(src, "tairhash field version")?;
                        let expire_at_ms = read_uint(src, "tairhash field expiry")?;
                        let value = read_string(src, "tairhash value")?;
                        out.push(TairHashField {
                            field,
                            value,
                            version,
                            expire_at_ms,
                        });
                    }
                    *left -= n;
                    return Ok(Some(ValueChunk::TairHash(out)));
                }
                TairDecoder::Zset { left, dims } => {
                    if *left == 0 {
                        read_eof(src)?;
                        *self = TairDecoder::Done;
                        continue;
                    }
                    let n = (*left).min(max as u64);
                    let mut out = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let member = read_string(src, "tairzset member")?;
                        let mut scores = Vec::with_capacity(*dims as usize);
                        for _ in 0..*dims {
                            scores.push(read_double(src, "tairzset score")?);
                        }
                        out.push((member, scores));
                    }
                    *left -= n;
                    return Ok(Some(ValueChunk::TairZset(out)));
                }
                TairDecoder::Done => return Ok(None),
            }
        }
    }
}
