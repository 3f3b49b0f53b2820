//! Ziplist decoding (ziplist.c format, RDB versions before 10), bounds-checked.
//!
//! Layout: `zlbytes:u32le zltail:u32le zllen:u16le entry* 0xFF`; entry =
//! `prevlen(1 or 0xFE+u32le) encoding data`.

use super::listpack::LpVal;

pub type ZlError = (usize, String);

pub fn decode(data: &[u8]) -> Result<Vec<LpVal<'_>>, ZlError> {
    if data.len() < 11 {
        return Err((0, format!("{} bytes is shorter than a ziplist", data.len())));
    }
    let total = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if total != data.len() {
        return Err((
            0,
            format!("header says {total} bytes, blob has {}", data.len()),
        ));
    }
    let tail = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    let count = u16::from_le_bytes([data[8], data[9]]);
    let end = data.len() - 1;
    if data[end] != 0xff {
        return Err((end, "missing 0xFF terminator".into()));
    }
    let need = |at: usize, n: usize| -> Result<&[u8], ZlError> {
        if at.checked_add(n).is_none_or(|e| e > end) {
            return Err((at, format!("entry field of {n} bytes passes the end")));
        }
        Ok(&data[at..at + n])
    };
    let mut out = Vec::with_capacity((count as usize).min(data.len()));
    let mut pos = 10;
    let mut prev_size = 0usize;
    let mut last_start = 10;
    while pos < end {
        let start = pos;
        let p = need(pos, 1)?[0];
        let (prevlen, plen) = if p < 254 {
            (p as usize, 1)
        } else if p == 254 {
            let s = need(pos + 1, 4)?;
            (u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize, 5)
        } else {
            return Err((pos, "0xFF in prevlen".into()));
        };
        if prevlen != prev_size {
            return Err((
                pos,
                format!("prevlen {prevlen} but previous entry is {prev_size} bytes"),
            ));
        }
        pos += plen;
        let e = need(pos, 1)?[0];
        let val = match e >> 6 {
            0 => {
                let n = (e & 0x3f) as usize;
                pos += 1;
                let s = need(pos, n)?;
                pos += n;
                LpVal::Str(s)
            }
            1 => {
                let s = need(pos, 2)?;
                let n = (((s[0] & 0x3f) as usize) << 8) | s[1] as usize;
                pos += 2;
                let s = need(pos, n)?;
                pos += n;
                LpVal::Str(s)
            }
            2 => {
                if e != 0x80 {
                    return Err((pos, format!("bad string encoding {e:#04x}")));
                }
                let s = need(pos + 1, 4)?;
                let n = u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
                pos += 5;
                let s = need(pos, n)?;
                pos += n;
                LpVal::Str(s)
            }
            _ => {
                pos += 1;
                let (v, n) = match e {
                    0xc0 => {
                        let s = need(pos, 2)?;
                        (i16::from_le_bytes([s[0], s[1]]) as i64, 2)
                    }
                    0xd0 => {
                        let s = need(pos, 4)?;
                        (i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64, 4)
                    }
                    0xe0 => {
                        let s = need(pos, 8)?;
                        (i64::from_le_bytes(s.try_into().unwrap_or([0; 8])), 8)
                    }
                    0xf0 => {
                        let s = need(pos, 3)?;
                        ((i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as i64, 3)
                    }
                    0xfe => (need(pos, 1)?[0] as i8 as i64, 1),
                    0xf1..=0xfd => ((e & 0x0f) as i64 - 1, 0),
                    _ => return Err((pos - 1, format!("bad integer encoding {e:#04x}"))),
                };
                pos += n;
                LpVal::Int(v)
            }
        };
        out.push(val);
        prev_size = pos - start;
        last_start = start;
    }
    if count != u16::MAX && count as usize != out.len() {
        return Err((
            8,
            format!("header says {count} entries, found {}", out.len()),
        ));
    }
    if !out.is_empty() && tail != last_start || out.is_empty() && tail != 10 {
        return Err((
            4,
            format!("tail offset {tail} does not point at the last entry"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test encoder: strings and small immediates / int16 only.
    pub(crate) fn encode(items: &[LpVal<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut prev = 0usize;
        let mut last = 10;
        for it in items {
            let start = body.len();
            last = 10 + start;
            if prev < 254 {
                body.push(prev as u8);
            } else {
                body.push(254);
                body.extend_from_slice(&(prev as u32).to_le_bytes());
            }
            match *it {
                LpVal::Int(i) if (0..=12).contains(&i) => body.push(0xf1 + i as u8),
                LpVal::Int(i) => {
                    body.push(0xc0);
                    body.extend_from_slice(&(i as i16).to_le_bytes());
                }
                LpVal::Str(s) if s.len() < 64 => {
                    body.push(s.len() as u8);
                    body.extend_from_slice(s);
                }
                LpVal::Str(s) => {
                    body.push(0x40 | (s.len() >> 8) as u8);
                    body.push(s.len() as u8);
                    body.extend_from_slice(s);
                }
            }
            prev = body.len() - start;
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((body.len() + 11) as u32).to_le_bytes());
        out.extend_from_slice(&(last as u32).to_le_bytes());
        out.extend_from_slice(&(items.len() as u16).to_le_bytes());
        out.extend_from_slice(&body);
        out.push(0xff);
        out
    }

    #[test]
    fn roundtrip() {
        let big = vec![b'q'; 300];
        let items = [
            LpVal::Str(b"a"),
            LpVal::Int(7),
            LpVal::Int(-300),
            LpVal::Str(&big),
            LpVal::Str(b"after-big"),
        ];
        assert_eq!(decode(&encode(&items)).unwrap(), items);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn corrupt() {
        let enc = encode(&[LpVal::Str(b"abc"), LpVal::Int(3)]);
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut]).is_err());
        }
        let mut bad = enc.clone();
        bad[11] = 40;
        assert!(decode(&bad).is_err());
    }
}
