//! Zipmap decoding (Redis < 2.6 small hashes): `zmlen:u8 (len key len free value free*)* 0xFF`,
//! lengths being 1 byte (< 254) or 254 + u32le.

pub type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

pub fn decode(data: &[u8]) -> Result<Pairs<'_>, (usize, String)> {
    if data.is_empty() {
        return Err((0, "empty zipmap".into()));
    }
    let mut pos = 1;
    let mut out = Vec::new();
    let len_at = |pos: &mut usize| -> Result<Option<usize>, (usize, String)> {
        let b = *data
            .get(*pos)
            .ok_or((*pos, "truncated zipmap".to_string()))?;
        match b {
            0..=253 => {
                *pos += 1;
                Ok(Some(b as usize))
            }
            254 => {
                let s = data
                    .get(*pos + 1..*pos + 5)
                    .ok_or((*pos, "truncated zipmap length".to_string()))?;
                *pos += 5;
                Ok(Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize))
            }
            _ => Ok(None),
        }
    };
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], (usize, String)> {
        let s = pos
            .checked_add(n)
            .and_then(|e| data.get(*pos..e))
            .ok_or((*pos, format!("zipmap item of {n} bytes passes the end")))?;
        *pos += n;
        Ok(s)
    };
    loop {
        let Some(klen) = len_at(&mut pos)? else {
            if pos != data.len() - 1 {
                return Err((pos, "zipmap terminator before the end".into()));
            }
            break;
        };
        let key = take(&mut pos, klen)?;
        let vlen = len_at(&mut pos)?.ok_or((pos, "zipmap key without value".to_string()))?;
        let free = take(&mut pos, 1)?[0] as usize;
        let val = take(&mut pos, vlen)?;
        take(&mut pos, free)?;
        out.push((key, val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic() {
        let d = [
            2, 3, b'f', b'o', b'o', 3, 0, b'b', b'a', b'r', 1, b'k', 1, 2, b'v', 0, 0, 0xff,
        ];
        assert_eq!(
            decode(&d).unwrap(),
            vec![(&b"foo"[..], &b"bar"[..]), (&b"k"[..], &b"v"[..])]
        );
        for cut in 0..d.len() {
            assert!(decode(&d[..cut]).is_err(), "cut {cut}");
        }
    }
}
