//! The byte source under the parser: a buffered reader with direct slice access, an
//! absolute byte offset for every error, a running CRC64 over consumed bytes, and an
//! optional bounded "tee" that captures consumed bytes (the raw value for `RESTORE`),
//! which can be rewound so the same bytes are parsed again.
//!
//! Allocation rule: a length read from the input never sizes an allocation directly.
//! Large reads grow their buffer in steps of at most [`CHUNK`] as data actually arrives,
//! so a forged length costs at most what the input really contains.

use std::io::Read;

use super::arena::push_int;
use super::crc64::crc64;
use super::error::{RdbError, RdbErrorKind, Result};
use super::lzf;

const BUF_SIZE: usize = 256 * 1024;
/// Growth step for reads whose size comes from the input.
pub(crate) const CHUNK: usize = 64 * 1024;

struct Tee {
    data: Vec<u8>,
    from: usize,
    limit: usize,
}

pub(crate) struct Source<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    base: u64,
    crc_on: bool,
    crc: u64,
    crc_from: usize,
    tee: Option<Tee>,
    /// Upper bound on any single string/blob, whatever the input claims.
    pub(crate) max_string: u64,
}

/// RDB length-or-encoding prefix.
pub(crate) enum Len {
    Plain(u64),
    Int8,
    Int16,
    Int32,
    Lzf,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R, crc_on: bool, max_string: u64) -> Self {
        Source {
            inner,
            buf: vec![0; BUF_SIZE],
            pos: 0,
            end: 0,
            base: 0,
            crc_on,
            crc: 0,
            crc_from: 0,
            tee: None,
            max_string,
        }
    }

    #[inline]
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn flush_side(&mut self) {
        if self.crc_on && self.pos > self.crc_from {
            self.crc = crc64(self.crc, &self.buf[self.crc_from..self.pos]);
            self.crc_from = self.pos;
        }
        if let Some(t) = &mut self.tee
            && self.pos > t.from
        {
            t.data.extend_from_slice(&self.buf[t.from..self.pos]);
            t.from = self.pos;
        }
    }

    /// CRC64 of every byte consumed so far.
    pub(crate) fn crc_now(&mut self) -> u64 {
        self.flush_side();
        self.crc
    }

    /// Make at least `n` bytes (n <= BUF_SIZE) available at `pos`.
    #[cold]
    fn refill(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.flush_side();
        if let Some(t) = &self.tee
            && t.data.len() > t.limit
        {
            return Err(RdbError::new(RdbErrorKind::RawLimit, self.offset()));
        }
        // Compact: keep the unconsumed tail at the front.
        let keep = self.end - self.pos;
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.crc_from = self.crc_from.saturating_sub(self.pos);
        if let Some(t) = &mut self.tee {
            t.from = t.from.saturating_sub(self.pos);
        }
        self.pos = 0;
        self.end = keep;
        if self.buf.len() > BUF_SIZE && self.end <= BUF_SIZE && self.crc_from <= BUF_SIZE {
            self.buf.truncate(BUF_SIZE);
            self.buf.shrink_to_fit();
        }
        while self.end < n {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(RdbError::eof(self.offset(), what)),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RdbError::new(RdbErrorKind::Io(e), self.offset())),
            }
        }
        Ok(())
    }

    /// Is the input exhausted (no byte left)? Used after the trailer.
    pub(crate) fn at_eof(&mut self) -> Result<bool> {
        if self.pos < self.end {
            return Ok(false);
        }
        match self.refill(1, "") {
            Ok(()) => Ok(false),
            Err(RdbError {
                kind: RdbErrorKind::UnexpectedEof { .. },
                ..
            }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8]> {
        debug_assert!(n <= BUF_SIZE);
        if self.end - self.pos < n {
            self.refill(n, what)?;
        }
        let s = self.pos;
        self.pos += n;
        Ok(&self.buf[s..s + n])
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        if self.pos < self.end {
            let b = self.buf[self.pos];
            self.pos += 1;
            return Ok(b);
        }
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u32_le(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64_le(&mut self, what: &'static str) -> Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub(crate) fn f64_le(&mut self, what: &'static str) -> Result<f64> {
        Ok(f64::from_bits(self.u64_le(what)?))
    }

    /// Read `n` bytes into a new Vec, growing as the data arrives.
    pub(crate) fn read_vec(&mut self, n: u64, what: &'static str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(n, &mut out, what)?;
        Ok(out)
    }

    /// Append `n` bytes to `out`, growing it as the data arrives.
    pub(crate) fn read_into(
        &mut self,
        n: u64,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<()> {
        let at = self.offset();
        if n > self.max_string {
            return Err(RdbError::new(
                RdbErrorKind::TooLarge {
                    what,
                    len: n,
                    limit: self.max_string,
                },
                at,
            ));
        }
        let n = n as usize;
        // The common case: the whole string is already buffered.
        if self.end - self.pos >= n {
            out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(());
        }
        out.reserve(n.min(CHUNK));
        let mut left = n;
        while left > 0 {
            if self.pos == self.end {
                self.refill(1, what).map_err(|e| relocate_eof(e, at))?;
            }
            let k = left.min(self.end - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            left -= k;
        }
        Ok(())
    }

    /// Append up to `n` bytes to `out` (at most one buffer's worth); returns how many.
    pub(crate) fn read_some(
        &mut self,
        n: usize,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<usize> {
        if self.pos == self.end {
            self.refill(1, what)?;
        }
        let k = n.min(self.end - self.pos);
        out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }

    pub(crate) fn skip(&mut self, n: u64, what: &'static str) -> Result<()> {
        let at = self.offset();
        let mut left = n;
        while left > 0 {
            if self.pos == self.end {
                self.refill(1, what).map_err(|e| relocate_eof(e, at))?;
            }
            let k = left.min((self.end - self.pos) as u64) as usize;
            self.pos += k;
            left -= k as u64;
        }
        Ok(())
    }

    // ---- raw capture ----

    /// Start capturing consumed bytes; `prefix` is put in front (the type byte).
    pub(crate) fn tee_start(&mut self, prefix: &[u8], limit: usize) {
        self.tee_start_in(prefix, limit, Vec::with_capacity(prefix.len() + 64));
    }

    /// [`Self::tee_start`] capturing into `data` (cleared first), so that a caller taking
    /// one value after another reuses one allocation.
    pub(crate) fn tee_start_in(&mut self, prefix: &[u8], limit: usize, mut data: Vec<u8>) {
        data.clear();
        data.extend_from_slice(prefix);
        self.tee = Some(Tee {
            data,
            from: self.pos,
            limit,
        });
    }

    pub(crate) fn tee_len(&self) -> usize {
        self.tee
            .as_ref()
            .map(|t| t.data.len() + (self.pos - t.from))
            .unwrap_or(0)
    }

    /// Stop capturing and return the captured bytes.
    pub(crate) fn tee_take(&mut self) -> Vec<u8> {
        self.flush_side();
        self.tee.take().map(|t| t.data).unwrap_or_default()
    }

    /// Stop capturing and put the captured bytes (minus the first `skip_prefix`, which
    /// were never read from the input) back in front of the input, so they are read
    /// again. They are not counted twice in the CRC.
    pub(crate) fn tee_rewind(&mut self, skip_prefix: usize) {
        self.flush_side();
        let Some(t) = self.tee.take() else { return };
        let replay = &t.data[skip_prefix.min(t.data.len())..];
        let rest = self.end - self.pos;
        let mut nb = Vec::with_capacity((replay.len() + rest).max(BUF_SIZE));
        nb.extend_from_slice(replay);
        nb.extend_from_slice(&self.buf[self.pos..self.end]);
        let filled = nb.len();
        nb.resize(filled.max(BUF_SIZE), 0);
        self.base = self.offset() - replay.len() as u64;
        self.buf = nb;
        self.pos = 0;
        self.end = filled;
        self.crc_from = replay.len();
    }

    // ---- RDB primitives ----

    pub(crate) fn len_enc(&mut self, what: &'static str) -> Result<Len> {
        let b = self.u8(what)?;
        Ok(match b >> 6 {
            0 => Len::Plain((b & 0x3f) as u64),
            1 => Len::Plain((((b & 0x3f) as u64) << 8) | self.u8(what)? as u64),
            2 => match b {
                0x80 => {
                    let s = self.take(4, what)?;
                    Len::Plain(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as u64)
                }
                0x81 => {
                    let s = self.take(8, what)?;
                    Len::Plain(u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
                }
                _ => {
                    return Err(RdbError::corrupt(
                        self.offset() - 1,
                        what,
                        format!("unknown length prefix {b:#04x}"),
                    ));
                }
            },
            _ => match b & 0x3f {
                0 => Len::Int8,
                1 => Len::Int16,
                2 => Len::Int32,
                3 => Len::Lzf,
                k => {
                    return Err(RdbError::corrupt(
                        self.offset() - 1,
                        what,
                        format!("unknown string encoding {k}"),
                    ));
                }
            },
        })
    }

    /// A plain RDB length (not a special string encoding).
    pub(crate) fn len(&mut self, what: &'static str) -> Result<u64> {
        let at = self.offset();
        match self.len_enc(what)? {
            Len::Plain(n) => Ok(n),
            _ => Err(RdbError::corrupt(
                at,
                what,
                "string encoding where a length belongs",
            )),
        }
    }

    /// A count of elements that follow: bounded so that a forged count fails at the first
    /// missing element rather than at an allocation.
    pub(crate) fn count(&mut self, what: &'static str) -> Result<u64> {
        self.len(what)
    }

    /// An RDB string in any encoding, fully materialized.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.string_into(&mut out, what)?;
        Ok(out)
    }

    /// Append an RDB string in any encoding to `out` (so many elements can share one
    /// buffer, see `arena.rs`).
    pub(crate) fn string_into(&mut self, out: &mut Vec<u8>, what: &'static str) -> Result<()> {
        let at = self.offset();
        let len = self.len_enc(what)?;
        self.string_with_into(len, at, out, what)
    }

    /// The rest of a string whose prefix `len` (read at `at`) was already consumed.
    pub(crate) fn string_with(&mut self, len: Len, at: u64, what: &'static str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.string_with_into(len, at, &mut out, what)?;
        Ok(out)
    }

    fn string_with_into(
        &mut self,
        len: Len,
        at: u64,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<()> {
        match len {
            Len::Plain(n) => self.read_into(n, out, what),
            Len::Int8 => {
                let v = self.u8(what)? as i8;
                push_int(out, v as i64);
                Ok(())
            }
            Len::Int16 => {
                let s = self.take(2, what)?;
                push_int(out, i16::from_le_bytes([s[0], s[1]]) as i64);
                Ok(())
            }
            Len::Int32 => {
                let s = self.take(4, what)?;
                push_int(out, i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64);
                Ok(())
            }
            Len::Lzf => self.lzf_body(at, out, what),
        }
    }

    fn lzf_body(&mut self, at: u64, out: &mut Vec<u8>, what: &'static str) -> Result<()> {
        let clen = self.len(what)?;
        let ulen = self.len(what)?;
        // LZF expands at most ~88x (a 3-byte back-reference yields 264 bytes), so a
        // larger claim is corrupt; checking it bounds the output allocation by the input.
        if ulen > clen.saturating_mul(100).saturating_add(64) || ulen > self.max_string {
            return Err(RdbError::corrupt(
                at,
                what,
                format!("LZF claims {ulen} bytes from {clen} compressed"),
            ));
        }
        let fail = |d| RdbError::corrupt(at, what, d);
        if clen <= BUF_SIZE as u64 {
            // Decompress straight out of the read buffer: no copy of the input.
            let comp = self.take(clen as usize, what)?;
            return lzf::decompress_into(comp, ulen as usize, out).map_err(fail);
        }
        let comp = self.read_vec(clen, what)?;
        lzf::decompress_into(&comp, ulen as usize, out).map_err(fail)
    }

    pub(crate) fn skip_string(&mut self, what: &'static str) -> Result<()> {
        match self.len_enc(what)? {
            Len::Plain(n) => self.skip(n, what),
            Len::Int8 => self.skip(1, what),
            Len::Int16 => self.skip(2, what),
            Len::Int32 => self.skip(4, what),
            Len::Lzf => {
                let clen = self.len(what)?;
                let _ulen = self.len(what)?;
                self.skip(clen, what)
            }
        }
    }

    /// Old-style zset score: 1 length byte, then ASCII (253 nan, 254 +inf, 255 -inf).
    pub(crate) fn string_double(&mut self, what: &'static str) -> Result<f64> {
        let at = self.offset();
        let n = self.u8(what)?;
        match n {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let s = self.take(n as usize, what)?;
                std::str::from_utf8(s)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .ok_or_else(|| RdbError::corrupt(at, what, "not a decimal number"))
            }
        }
    }

    pub(crate) fn skip_string_double(&mut self, what: &'static str) -> Result<()> {
        let n = self.u8(what)?;
        if n < 253 {
            self.skip(n as u64, what)?;
        }
        Ok(())
    }
}

fn relocate_eof(e: RdbError, at: u64) -> RdbError {
    match e.kind {
        RdbErrorKind::UnexpectedEof { expected } => RdbError::eof(at, expected),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_strings() {
        let data = [
            0x05, 0x41, 0x02, 0x80, 0, 0, 1, 0, 0xc0, 0xfe, 0xc1, 0x39, 0x30, 0x03, b'a', b'b',
            b'c',
        ];
        let mut s = Source::new(&data[..], true, 1 << 20);
        assert_eq!(s.len("x").unwrap(), 5);
        assert_eq!(s.len("x").unwrap(), 0x102);
        assert_eq!(s.len("x").unwrap(), 256);
        assert_eq!(s.string("x").unwrap(), b"-2");
        assert_eq!(s.string("x").unwrap(), b"12345");
        assert_eq!(s.string("x").unwrap(), b"abc");
        assert_eq!(s.offset(), data.len() as u64);
        assert_eq!(s.crc_now(), crc64(0, &data));
        let e = s.u8("more").unwrap_err();
        assert_eq!(e.offset, data.len() as u64);
    }

    #[test]
    fn forged_length_does_not_allocate() {
        let data = [0x80, 0xff, 0xff, 0xff, 0xf0, b'a'];
        let mut s = Source::new(&data[..], false, u64::MAX);
        let e = s.string("value").unwrap_err();
        assert!(matches!(e.kind, RdbErrorKind::UnexpectedEof { .. }), "{e}");
        assert_eq!(e.offset, 5);
    }

    #[test]
    fn tee_and_rewind_replays_bytes_once_in_crc() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = Source::new(&data[..], true, u64::MAX);
        s.skip(10, "x").unwrap();
        s.tee_start(&[9], 1000);
        let e = s.skip(500_000, "x").unwrap_err();
        assert!(matches!(e.kind, RdbErrorKind::RawLimit));
        s.tee_rewind(1);
        assert_eq!(s.offset(), 10);
        let v = s.read_vec(500_000, "x").unwrap();
        assert_eq!(&v[..], &data[10..500_010]);
        s.skip((data.len() - 500_010) as u64, "x").unwrap();
        assert_eq!(s.crc_now(), crc64(0, &data));
        assert!(s.at_eof().unwrap());
    }
}
