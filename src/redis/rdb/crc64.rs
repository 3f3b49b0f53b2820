//! CRC-64/Jones as used by Redis for the RDB trailer and DUMP payloads (reflected
//! polynomial 0xad93d23594c935a9, i.e. 0x95ac9329ac4bc9b5 reversed; init 0, no final xor).
//! Slicing-by-16 tables (32 KiB): the whole-file checksum was ~16% of full-decode time
//! with slicing-by-8; 16 bytes per step halves the loop's dependency chain.

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
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
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
        for split in [0, 1, 7, 8, 9, 15, 16, 17, 500, 999, 1000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc64(crc64(0, a), b), whole, "split at {split}");
        }
        // bytewise reference
        let mut c = 0u64;
        for &b in &data {
            c = TABLES[0][((c ^ b as u64) & 0xff) as usize] ^ (c >> 8);
        }
        assert_eq!(c, whole);
    }
}
