//! LZF decompression (the format of liblzf's lzf_d.c, used for RDB strings).

/// Decompress `input` into exactly `out_len` bytes. Every back-reference and literal run
/// is bounds-checked; the error string says what was wrong.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    decompress_into(input, out_len, &mut out)?;
    Ok(out)
}

/// Room past the declared output, so short copies can move a fixed 32 or 8 bytes (a
/// couple of vector moves) instead of calling memcpy for every literal run and
/// back-reference; the excess is cut off at the end.
const SLACK: usize = 32;

/// Append the decompressed bytes to `dst` (back-references never reach before the
/// bytes `dst` already held), so a string lands in its final buffer in one pass.
pub(crate) fn decompress_into(
    input: &[u8],
    out_len: usize,
    dst: &mut Vec<u8>,
) -> Result<(), String> {
    let base = dst.len();
    dst.resize(base + out_len + SLACK, 0);
    let r = run(input, &mut dst[base..], out_len);
    match r {
        Ok(n) if n == out_len => {
            dst.truncate(base + out_len);
            Ok(())
        }
        Ok(n) => {
            dst.truncate(base);
            Err(format!("decompressed to {n} bytes, declared {out_len}"))
        }
        Err(e) => {
            dst.truncate(base);
            Err(e)
        }
    }
}

/// Decompress into `out` (`out_len` + [`SLACK`] bytes); returns the bytes produced.
fn run(input: &[u8], out: &mut [u8], out_len: usize) -> Result<usize, String> {
    let mut i = 0;
    let mut o = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let run = ctrl + 1;
            if i + run > input.len() {
                return Err(format!("literal run of {run} passes the end of the input"));
            }
            if o + run > out_len {
                return Err("output longer than declared".into());
            }
            if i + 32 <= input.len() {
                // o < out_len, so o + 32 fits in the slack.
                out[o..o + 32].copy_from_slice(&input[i..i + 32]);
            } else {
                out[o..o + run].copy_from_slice(&input[i..i + run]);
            }
            i += run;
            o += run;
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
            if back > o {
                return Err(format!(
                    "back-reference {back} bytes before the start of the output"
                ));
            }
            if o + len > out_len {
                return Err("output longer than declared".into());
            }
            let s = o - back;
            if back >= 8 {
                // 8 bytes at a time: each source word lies before the bytes being
                // written (back >= 8), and the overrun stays within the slack.
                let mut k = 0;
                while k < len {
                    let w: [u8; 8] = out[s + k..s + k + 8].try_into().unwrap_or([0; 8]);
                    out[o + k..o + k + 8].copy_from_slice(&w);
                    k += 8;
                }
            } else {
                // A short distance repeats the pattern: byte by byte.
                for k in 0..len {
                    out[o + k] = out[s + k];
                }
            }
            o += len;
        }
    }
    Ok(o)
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

    /// Random literal runs and back-references (short distances that repeat a
    /// pattern, long ones, runs ending at the very end) against a byte-by-byte model.
    #[test]
    fn random_streams_match_model() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rng = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..500 {
            let (mut input, mut expect) = (Vec::new(), Vec::<u8>::new());
            for _ in 0..rng(60) {
                if expect.is_empty() || rng(2) == 0 {
                    let run = 1 + rng(32);
                    input.push((run - 1) as u8);
                    for _ in 0..run {
                        let b = rng(256) as u8;
                        input.push(b);
                        expect.push(b);
                    }
                } else {
                    let len = 3 + rng(262);
                    let back = 1 + rng(expect.len().min(8192));
                    let (l, hi) = (len - 2, ((back - 1) >> 8) as u8);
                    if l < 7 {
                        input.push(((l as u8) << 5) | hi);
                    } else {
                        input.push((7 << 5) | hi);
                        input.push((l - 7) as u8);
                    }
                    input.push((back - 1) as u8);
                    let s = expect.len() - back;
                    for k in 0..len {
                        expect.push(expect[s + k]);
                    }
                }
            }
            assert_eq!(decompress(&input, expect.len()).unwrap(), expect);
            let mut into = b"prefix".to_vec();
            decompress_into(&input, expect.len(), &mut into).unwrap();
            assert_eq!(&into[6..], &expect[..]);
        }
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
