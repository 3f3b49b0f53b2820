//! Element bytes gathered in one buffer per chunk (or per blob): a chunk of N elements
//! costs one allocation and N reference-counted [`Bytes`] views of it, instead of N
//! allocations — one `Vec` per element was ~40% of full-decode time in malloc.

use bytes::Bytes;

use super::listpack::{Listpack, LpVal};
use super::ziplist;

/// Append `v` in decimal, the way Redis shows integers, without going through `fmt`
/// (which allocates a `String` per element with `to_string`).
pub(crate) fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    // At most 20 bytes: pushing them one by one beats a memcpy call for each integer.
    out.reserve(tmp.len() - i);
    for &d in &tmp[i..] {
        out.push(d);
    }
}

/// Elements appended back to back into one buffer.
#[derive(Default)]
pub(crate) struct Arena {
    pub(crate) buf: Vec<u8>,
    start: usize,
}

impl Arena {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Arena {
            buf: Vec::with_capacity(n),
            start: 0,
        }
    }

    /// Close the element written into `buf` since the previous one; its span.
    pub(crate) fn end(&mut self) -> (usize, usize) {
        let s = (self.start, self.buf.len());
        self.start = self.buf.len();
        s
    }

    pub(crate) fn push_int(&mut self, v: i64) -> (usize, usize) {
        push_int(&mut self.buf, v);
        self.end()
    }

    /// Payload bytes so far (what chunk size limits count).
    pub(crate) fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// An element's bytes: `buf[start..end]`.
pub(crate) type Span = (usize, usize);

/// (offset inside the blob, what was wrong), as the listpack/ziplist decoders report.
pub(crate) type BlobError = (usize, String);

/// Which encoding [`blob_spans`] reads.
#[derive(Clone, Copy)]
pub(crate) enum Blob {
    Listpack,
    Ziplist,
}

/// Spans of listpack/ziplist elements decoded from `blob`: strings stay where they are
/// in the blob (no copy), integers are printed after its end.
pub(crate) fn blob_spans(mut blob: Vec<u8>, kind: Blob) -> Result<(Bytes, Vec<Span>), BlobError> {
    let mut ints = Vec::new();
    let spans = {
        let base = blob.as_ptr() as usize;
        let end = blob.len();
        let mut span = |v: LpVal<'_>| match v {
            // Decoders return subslices of `blob`, so the address difference is the
            // element's offset in it.
            LpVal::Str(s) => match (s.as_ptr() as usize).checked_sub(base) {
                Some(o) if o + s.len() <= end => (o, o + s.len()),
                // Not from `blob` (no decoder does this): copy it.
                _ => {
                    let o = end + ints.len();
                    ints.extend_from_slice(s);
                    (o, end + ints.len())
                }
            },
            LpVal::Int(i) => {
                let s = end + ints.len();
                push_int(&mut ints, i);
                (s, end + ints.len())
            }
        };
        match kind {
            // Walked directly: no intermediate list of elements.
            Blob::Listpack => {
                let lp = Listpack::new(&blob)?;
                let mut spans = Vec::with_capacity(lp.declared_len().unwrap_or(0).min(end));
                for v in lp {
                    spans.push(span(v?));
                }
                spans
            }
            Blob::Ziplist => ziplist::decode(&blob)?.into_iter().map(span).collect(),
        }
    };
    blob.extend_from_slice(&ints);
    Ok((Bytes::from(blob), spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_print_like_to_string() {
        for v in [
            0,
            1,
            -1,
            9,
            10,
            -10,
            123_456,
            i64::MAX,
            i64::MIN,
            -4096,
            99_999,
        ] {
            let mut b = Vec::new();
            push_int(&mut b, v);
            assert_eq!(b, v.to_string().into_bytes(), "{v}");
        }
    }

    #[test]
    fn arena_and_blob_spans_keep_order() {
        let mut a = Arena::default();
        a.buf.extend_from_slice(b"ab");
        let x = a.end();
        let y = a.push_int(-7);
        let z = a.end();
        let b = a.freeze();
        assert_eq!(
            [&b[x.0..x.1], &b[y.0..y.1], &b[z.0..z.1]],
            [&b"ab"[..], b"-7", b""]
        );

        let blob = crate::redis::rdb::listpack::tests::encode(&[
            LpVal::Int(5),
            LpVal::Str(b"hello"),
            LpVal::Str(b""),
            LpVal::Int(-12),
        ]);
        let (b, spans) = blob_spans(blob, Blob::Listpack).unwrap();
        let got: Vec<&[u8]> = spans.iter().map(|&(s, e)| &b[s..e]).collect();
        assert_eq!(got, [&b"5"[..], b"hello", b"", b"-12"]);
    }
}
