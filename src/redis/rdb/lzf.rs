//! LZF decompression (the format of liblzf's lzf_d.c, used for RDB strings).

/// Decompress `input` into exactly `out_len` bytes. Every back-reference and literal run
/// is bounds-checked; the error string says what was wrong.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decompress_into(input, out_len, &mut out)?;
    Ok(out)
}

/// Append the decompressed bytes to `dst` (back-references never reach before the
/// bytes `dst` already held), so a string lands in its final buffer in one pass.
pub(crate) fn decompress_into(input: &[u8], out_len: usize, dst: &mut Vec<u8>) -> Result<(), String> {
    let base = dst.len();
    dst.reserve(out_len);
    let mut out = Tail { v: dst, base };
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            if i + run > input.len() {
                return Err(format!("literal run of {run} passes the end of the input"));
            }
            if out.len() + run > out_len {
                return Err("output longer than declared".into());
            }
            out.extend_from_slice(&input[i..i + run]);
            i += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                let Some(&b) = input.get(i) else {
                    return Err("truncated back-reference length".into());
                };
                len += b as usize;
                i += 1;
            }
            let Some(&lo) = input.get(i) else {
                return Err("truncated back-reference offset".into());
            };
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + lo as usize + 1;
            let len = len + 2;
            if back > out.len() {
                return Err(format!(
                    "back-reference {back} bytes before the start of the output"
                ));
            }
            if out.len() + len > out_len {
                return Err("output longer than declared".into());
            }
            let start = out.len() - back;
            if back >= len {
                out.extend_from_within(start..start + len);
            } else {
                // Overlapping copy repeats the pattern, so it must go byte by byte.
                for k in 0..len {
                    let b = out[start + k];
                    out.push(b);
                }
            }
        }
    }
    if out.len() != out_len {
        return Err(format!(
            "decompressed to {} bytes, declared {out_len}",
            out.len()
        ));
    }
    Ok(())
}

/// The part of a `Vec` after `base`, indexed from 0: the output of one decompression.
struct Tail<'a> {
    v: &'a mut Vec<u8>,
    base: usize,
}

impl Tail<'_> {
    fn len(&self) -> usize {
        self.v.len() - self.base
    }
    fn extend_from_slice(&mut self, s: &[u8]) {
        self.v.extend_from_slice(s)
    }
    fn extend_from_within(&mut self, r: std::ops::Range<usize>) {
        self.v
            .extend_from_within(r.start + self.base..r.end + self.base)
    }
    fn push(&mut self, b: u8) {
        self.v.push(b)
    }
}

impl std::ops::Index<usize> for Tail<'_> {
    type Output = u8;
    fn index(&self, i: usize) -> &u8 {
        &self.v[self.base + i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_backref() {
        // "abc" literal, then back-reference of length 6 at distance 3: "abcabcabc".
        let input = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(decompress(&input, 9).unwrap(), b"abcabcabc");
    }

    #[test]
    fn long_backref() {
        // literal "x", then len=7+b (extended) copy at distance 1 → run of 'x'.
        let input = [0, b'x', (7 << 5), 10, 0];
        let out = decompress(&input, 1 + 7 + 10 + 2).unwrap();
        assert!(out.iter().all(|&b| b == b'x'));
        assert_eq!(out.len(), 20);
    }

    #[test]
    fn errors_not_panics() {
        assert!(decompress(&[5, 1, 2], 6).is_err());
        assert!(decompress(&[(1 << 5), 0], 3).is_err());
        assert!(decompress(&[0, b'a'], 2).is_err());
        assert!(decompress(&[0xe0], 10).is_err());
        assert!(decompress(&[1, b'a', b'b'], 1).is_err());
    }
}
