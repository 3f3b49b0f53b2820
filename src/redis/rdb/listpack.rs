//! Listpack decoding (listpack.c format), fully bounds-checked.
//!
//! Layout: `total_bytes:u32le num_elements:u16le entry* 0xFF`, each entry being
//! `encoding+data backlen`, where backlen (1–5 bytes) encodes the size of
//! `encoding+data` so the list can be walked backwards. We walk forwards and verify it.

/// One listpack element: bytes, or an integer the listpack stored as such.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LpVal<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl LpVal<'_> {
    /// The element as Redis shows it (integers in decimal).
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            LpVal::Str(s) => s.to_vec(),
            LpVal::Int(i) => i.to_string().into_bytes(),
        }
    }

    pub fn as_int(self) -> Option<i64> {
        match self {
            LpVal::Int(i) => Some(i),
            LpVal::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
        }
    }
}

/// Error: (offset inside the blob, what was wrong).
pub type LpError = (usize, String);

pub struct Listpack<'a> {
    data: &'a [u8],
    pos: usize,
    declared: u16,
    seen: usize,
    done: bool,
}

impl<'a> Listpack<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, LpError> {
        if data.len() < 7 {
            return Err((
                0,
                format!("{} bytes is shorter than a listpack header", data.len()),
            ));
        }
        let total = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if total != data.len() {
            return Err((
                0,
                format!("header says {total} bytes, blob has {}", data.len()),
            ));
        }
        if data[data.len() - 1] != 0xff {
            return Err((data.len() - 1, "missing 0xFF terminator".into()));
        }
        Ok(Listpack {
            data,
            pos: 6,
            declared: u16::from_le_bytes([data[4], data[5]]),
            seen: 0,
            done: false,
        })
    }

    /// Number of elements from the header, when it is not the "unknown" marker.
    pub fn declared_len(&self) -> Option<usize> {
        (self.declared != u16::MAX).then_some(self.declared as usize)
    }

    fn need(&self, at: usize, n: usize) -> Result<&'a [u8], LpError> {
        // The last byte is the terminator, so entries must end before it.
        if at + n > self.data.len() - 1 {
            return Err((at, format!("entry of {n} bytes passes the end")));
        }
        Ok(&self.data[at..at + n])
    }

    /// The two encodings that make up most listpacks (7-bit integers, strings under
    /// 64 bytes), whose entry is under 128 bytes so its back-length is one byte. `None`
    /// leaves anything else, including every error, to `next_entry`.
    #[inline]
    fn next_small(&mut self) -> Option<LpVal<'a>> {
        let at = self.pos;
        let b = *self.data.get(at)?;
        let size = match b {
            0..0x80 => 1,
            0x80..0xc0 => 1 + (b & 0x3f) as usize,
            _ => return None,
        };
        // Entry and back-length must end before the terminator.
        if at + size + 1 > self.data.len() - 1 || self.data[at + size] as usize != size {
            return None;
        }
        self.pos = at + size + 1;
        self.seen += 1;
        Some(if b < 0x80 {
            LpVal::Int(b as i64)
        } else {
            LpVal::Str(&self.data[at + 1..at + size])
        })
    }

    fn next_entry(&mut self) -> Result<Option<LpVal<'a>>, LpError> {
        let at = self.pos;
        let b = self.data[at];
        if b == 0xff {
            if at != self.data.len() - 1 {
                return Err((at, "terminator before the end of the blob".into()));
            }
            if self.declared != u16::MAX && self.declared as usize != self.seen {
                return Err((
                    at,
                    format!(
                        "header says {} elements, found {}",
                        self.declared, self.seen
                    ),
                ));
            }
            return Ok(None);
        }
        let (val, size) = if b & 0x80 == 0 {
            (LpVal::Int((b & 0x7f) as i64), 1)
        } else if b & 0xc0 == 0x80 {
            let n = (b & 0x3f) as usize;
            (LpVal::Str(self.need(at + 1, n)?), 1 + n)
        } else if b & 0xe0 == 0xc0 {
            let s = self.need(at, 2)?;
            let u = (((s[0] & 0x1f) as i64) << 8) | s[1] as i64;
            let v = if u >= 1 << 12 { u - (1 << 13) } else { u };
            (LpVal::Int(v), 2)
        } else if b & 0xf0 == 0xe0 {
            let s = self.need(at, 2)?;
            let n = (((s[0] & 0x0f) as usize) << 8) | s[1] as usize;
            (LpVal::Str(self.need(at + 2, n)?), 2 + n)
        } else {
            match b {
                0xf0 => {
                    let s = self.need(at + 1, 4)?;
                    let n = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
                    (LpVal::Str(self.need(at + 5, n)?), 5 + n)
                }
                0xf1 => {
                    let s = self.need(at + 1, 2)?;
                    (LpVal::Int(i16::from_le_bytes([s[0], s[1]]) as i64), 3)
                }
                0xf2 => {
                    let s = self.need(at + 1, 3)?;
                    let v = i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8;
                    (LpVal::Int(v as i64), 4)
                }
                0xf3 => {
                    let s = self.need(at + 1, 4)?;
                    (
                        LpVal::Int(i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64),
                        5,
                    )
                }
                0xf4 => {
                    let s = self.need(at + 1, 8)?;
                    (
                        LpVal::Int(i64::from_le_bytes(s.try_into().unwrap_or([0; 8]))),
                        9,
                    )
                }
                _ => return Err((at, format!("unknown entry encoding {b:#04x}"))),
            }
        };
        let bl = backlen_size(size);
        let back = self.need(at + size, bl)?;
        if decode_backlen(back) != Some(size) {
            return Err((
                at + size,
                format!("back-length does not match entry size {size}"),
            ));
        }
        self.pos = at + size + bl;
        self.seen += 1;
        Ok(Some(val))
    }
}

impl<'a> Iterator for Listpack<'a> {
    type Item = Result<LpVal<'a>, LpError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(v) = self.next_small() {
            return Some(Ok(v));
        }
        match self.next_entry() {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// Backlen bytes are big-endian 7-bit groups; every byte but the first has the high bit.
fn decode_backlen(b: &[u8]) -> Option<usize> {
    let mut v: usize = 0;
    for (i, &x) in b.iter().enumerate() {
        let cont = x & 0x80 != 0;
        if cont != (i > 0) {
            return None;
        }
        v = (v << 7) | (x & 0x7f) as usize;
    }
    Some(v)
}

/// Decode a whole listpack into its elements.
pub fn decode(data: &[u8]) -> Result<Vec<LpVal<'_>>, LpError> {
    let lp = Listpack::new(data)?;
    let mut out = Vec::with_capacity(lp.declared_len().unwrap_or(0).min(data.len()));
    for v in lp {
        out.push(v?);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Minimal listpack encoder for tests.
    pub(crate) fn encode(items: &[LpVal<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for it in items {
            let start = body.len();
            match *it {
                LpVal::Int(i) if (0..=127).contains(&i) => body.push(i as u8),
                LpVal::Int(i) if (-4096..4096).contains(&i) => {
                    let u = (i as u16) & 0x1fff;
                    body.push(0xc0 | (u >> 8) as u8);
                    body.push(u as u8);
                }
                LpVal::Int(i) if i16::try_from(i).is_ok() => {
                    body.push(0xf1);
                    body.extend_from_slice(&(i as i16).to_le_bytes());
                }
                LpVal::Int(i) if (-(1 << 23)..(1 << 23)).contains(&i) => {
                    body.push(0xf2);
                    body.extend_from_slice(&(i as i32).to_le_bytes()[..3]);
                }
                LpVal::Int(i) if i32::try_from(i).is_ok() => {
                    body.push(0xf3);
                    body.extend_from_slice(&(i as i32).to_le_bytes());
                }
                LpVal::Int(i) => {
                    body.push(0xf4);
                    body.extend_from_slice(&i.to_le_bytes());
                }
                LpVal::Str(s) if s.len() < 64 => {
                    body.push(0x80 | s.len() as u8);
                    body.extend_from_slice(s);
                }
                LpVal::Str(s) if s.len() < 4096 => {
                    body.push(0xe0 | (s.len() >> 8) as u8);
                    body.push(s.len() as u8);
                    body.extend_from_slice(s);
                }
                LpVal::Str(s) => {
                    body.push(0xf0);
                    body.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    body.extend_from_slice(s);
                }
            }
            let l = body.len() - start;
            let n = backlen_size(l);
            for k in (0..n).rev() {
                let g = ((l >> (7 * k)) & 0x7f) as u8;
                body.push(if k == n - 1 { g } else { g | 0x80 });
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((body.len() + 7) as u32).to_le_bytes());
        out.extend_from_slice(&(items.len() as u16).to_le_bytes());
        out.extend_from_slice(&body);
        out.push(0xff);
        out
    }

    #[test]
    fn roundtrip_all_encodings() {
        let long = vec![b'z'; 5000];
        let mid = vec![b'y'; 300];
        let items = [
            LpVal::Int(0),
            LpVal::Int(127),
            LpVal::Int(-1),
            LpVal::Int(4095),
            LpVal::Int(-4096),
            LpVal::Int(30000),
            LpVal::Int(-8_000_000),
            LpVal::Int(2_000_000_000),
            LpVal::Int(i64::MIN),
            LpVal::Str(b""),
            LpVal::Str(b"hello"),
            LpVal::Str(&mid),
            LpVal::Str(&long),
        ];
        let enc = encode(&items);
        assert_eq!(decode(&enc).unwrap(), items);
    }

    #[test]
    fn corrupt_inputs_error() {
        let enc = encode(&[LpVal::Str(b"abc"), LpVal::Int(5)]);
        for cut in 0..enc.len() {
            assert!(decode(&enc[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = enc.clone();
        bad[6] = 0x8f; // string length 15 > remaining
        assert!(decode(&bad).is_err());
        let mut bad = enc.clone();
        bad[4] = 3; // wrong count
        assert!(decode(&bad).is_err());
        let mut bad = enc;
        bad[10] = 0x7f; // backlen wrong
        assert!(decode(&bad).is_err());
    }
}
