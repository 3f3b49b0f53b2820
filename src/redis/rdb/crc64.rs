//! CRC-64/Jones as used by Redis for the RDB trailer and DUMP payloads (reflected
//! polynomial 0xad93d23594c935a9, i.e. 0x95ac9329ac4bc9b5 reversed; init 0, no final xor).
//! The whole-file checksum was ~16-19% of full-decode time with table lookups, so on
//! x86_64 with PCLMULQDQ 16-byte blocks are folded by carry-less multiplication (Intel,
//! "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ"), and the last block
//! and the tail go through slicing-by-16 tables (32 KiB), also the fallback elsewhere.

const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5;

const fn make_tables() -> [[u64; 256]; 16] {
    let mut t = [[0u64; 256]; 16];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            k += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut s = 1;
    while s < 16 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static TABLES: [[u64; 256]; 16] = make_tables();

/// Continue a CRC-64/Jones over `data` (start with `crc = 0`).
pub fn crc64(crc: u64, data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= 64 && std::arch::is_x86_feature_detected!("pclmulqdq") {
        // SAFETY: the only requirement of a `target_feature` function is that the CPU
        // has the feature, which was just checked at run time.
        return unsafe { clmul::crc64(crc, data) };
    }
    crc64_table(crc, data)
}

fn crc64_table(mut crc: u64, data: &[u8]) -> u64 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        let lo = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let hi = u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
        let b = |v: u64, k: u32| ((v >> (8 * k)) & 0xff) as usize;
        crc = t[15][b(lo, 0)]
            ^ t[14][b(lo, 1)]
            ^ t[13][b(lo, 2)]
            ^ t[12][b(lo, 3)]
            ^ t[11][b(lo, 4)]
            ^ t[10][b(lo, 5)]
            ^ t[9][b(lo, 6)]
            ^ t[8][b(lo, 7)]
            ^ t[7][b(hi, 0)]
            ^ t[6][b(hi, 1)]
            ^ t[5][b(hi, 2)]
            ^ t[4][b(hi, 3)]
            ^ t[3][b(hi, 4)]
            ^ t[2][b(hi, 5)]
            ^ t[1][b(hi, 6)]
            ^ t[0][b(hi, 7)];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::*;

    use super::{POLY_REFLECTED, crc64_table};

    /// x^n mod P, in the reflected bit order (bit j is the coefficient of x^(63-j)).
    const fn x_pow_mod(n: u32) -> u64 {
        // Reflected: multiplying by x is a right shift, reducing by P an xor.
        let mut r: u64 = 1 << 63; // x^0
        let mut i = 0;
        while i < n {
            r = if r & 1 == 1 {
                (r >> 1) ^ POLY_REFLECTED
            } else {
                r >> 1
            };
            i += 1;
        }
        r
    }

    // Block bit m (little-endian) is the coefficient of x^(127-m), so the low lane
    // (x^127..x^64) folds 128 bits forward with x^191 and the high lane with x^127
    // (the carry-less product of two reflected values is one degree short).
    const K_LO: u64 = x_pow_mod(191);
    const K_HI: u64 = x_pow_mod(127);

    #[target_feature(enable = "sse2")]
    fn load(b: &[u8]) -> __m128i {
        let lo = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let hi = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        _mm_set_epi64x(hi as i64, lo as i64)
    }

    // The same 512 bits forward, for four blocks folded side by side.
    const K4_LO: u64 = x_pow_mod(575);
    const K4_HI: u64 = x_pow_mod(511);

    /// `x` moved forward by the distance `k` encodes, xored onto `next`.
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn fold(x: __m128i, k: __m128i, next: __m128i) -> __m128i {
        let lo = _mm_clmulepi64_si128(x, k, 0x00);
        let hi = _mm_clmulepi64_si128(x, k, 0x11);
        _mm_xor_si128(_mm_xor_si128(lo, hi), next)
    }

    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) fn crc64(crc: u64, data: &[u8]) -> u64 {
        let k1 = _mm_set_epi64x(K_HI as i64, K_LO as i64);
        if data.len() < 16 {
            return crc64_table(crc, data);
        }
        let mut x = _mm_xor_si128(load(&data[..16]), _mm_set_epi64x(0, crc as i64));
        let mut rest = &data[16..];
        if rest.len() >= 64 + 48 {
            // Four independent chains hide the multiplier's latency; they are then
            // folded into one, each 128 bits onto the next.
            let k4 = _mm_set_epi64x(K4_HI as i64, K4_LO as i64);
            let mut l = [
                x,
                load(&rest[..16]),
                load(&rest[16..32]),
                load(&rest[32..48]),
            ];
            rest = &rest[48..];
            let mut quads = rest.chunks_exact(64);
            for q in &mut quads {
                for (j, lane) in l.iter_mut().enumerate() {
                    *lane = fold(*lane, k4, load(&q[16 * j..16 * j + 16]));
                }
            }
            rest = quads.remainder();
            x = fold(fold(fold(l[0], k1, l[1]), k1, l[2]), k1, l[3]);
        }
        let mut blocks = rest.chunks_exact(16);
        for b in &mut blocks {
            x = fold(x, k1, load(b));
        }
        // `x` is congruent to everything so far: finish it (and the tail) by table.
        let lo = _mm_cvtsi128_si64(x) as u64;
        let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x)) as u64;
        let mut last = [0u8; 16];
        last[..8].copy_from_slice(&lo.to_le_bytes());
        last[8..].copy_from_slice(&hi.to_le_bytes());
        crc64_table(crc64_table(0, &last), blocks.remainder())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_test_vector() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc64(0, &data);
        for split in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 500, 999, 1000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc64(crc64(0, a), b), whole, "split at {split}");
            assert_eq!(crc64_table(crc64_table(0, a), b), whole, "split at {split}");
        }
        // Every length and start value through both paths.
        for n in (0..300).chain([511, 512, 513, 1000]) {
            for init in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
                assert_eq!(
                    crc64(init, &data[..n]),
                    bytewise(init, &data[..n]),
                    "n {n} init {init:#x}"
                );
            }
        }
        assert_eq!(bytewise(0, &data), whole);
        // A long pseudo-random buffer, where the folding loop runs thousands of times.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..100_003)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(crc64(7, &big), crc64_table(7, &big));
    }

    /// Bit-at-a-time reference, independent of the tables.
    fn bytewise(mut c: u64, data: &[u8]) -> u64 {
        for &b in data {
            c ^= b as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ POLY_REFLECTED
                } else {
                    c >> 1
                };
            }
        }
        c
    }
}
