//! Intset decoding: `encoding:u32le (2|4|8) length:u32le values (LE, sorted)`.

pub fn decode(data: &[u8]) -> Result<Vec<i64>, (usize, String)> {
    if data.len() < 8 {
        return Err((0, "shorter than an intset header".into()));
    }
    let width = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err((0, format!("bad intset encoding {width}")));
    }
    if len.checked_mul(width).map(|b| b + 8) != Some(data.len()) {
        return Err((
            4,
            format!(
                "{len} values of {width} bytes do not fill {} bytes",
                data.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(len);
    for c in data[8..].chunks_exact(width) {
        let v = match width {
            2 => i16::from_le_bytes([c[0], c[1]]) as i64,
            4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
            _ => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
        };
        if out.last().is_some_and(|&p| p >= v) {
            return Err((
                8 + out.len() * width,
                "intset values not strictly increasing".into(),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        let mut d = vec![2, 0, 0, 0, 2, 0, 0, 0];
        d.extend_from_slice(&(-5i16).to_le_bytes());
        d.extend_from_slice(&7i16.to_le_bytes());
        assert_eq!(decode(&d).unwrap(), vec![-5, 7]);
        let mut d = vec![8, 0, 0, 0, 1, 0, 0, 0];
        d.extend_from_slice(&i64::MAX.to_le_bytes());
        assert_eq!(decode(&d).unwrap(), vec![i64::MAX]);
    }

    #[test]
    fn corrupt() {
        assert!(decode(&[3, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&[2, 0, 0, 0, 5, 0, 0, 0, 1, 0]).is_err());
        assert!(decode(&[2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 1, 0]).is_err());
        assert!(decode(&[2, 0, 0]).is_err());
    }
}
