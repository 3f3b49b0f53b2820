//! The content of one key, type by type, read in chunks so that a key of any size is
//! compared in bounded memory: lists by LRANGE pages, hashes, sets and sorted sets by
//! scanning the source and looking the elements up on the target (equal counts and
//! every source element present means equal), streams by XRANGE pages plus their
//! groups, consumers and pending entries, anything else (module values) by DUMP.

use bytes::Bytes;

use super::compare::{Ctx, ttl_diff};
use super::side::{Cmd, Side};
use super::{DiffKind, VerifyError};
use crate::redis::conn::Frame;

/// Elements per chunk.
const CHUNK: i64 = 1000;

type Found = Option<(DiffKind, String)>;

pub async fn content(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    kind: &str,
    len: i64,
    ctx: &Ctx,
) -> Result<Found, VerifyError> {
    match kind {
        "string" => string(src, dst, key, len).await,
        "list" => list(src, dst, key, len).await,
        "hash" => hash(src, dst, key, ctx).await,
        "set" => members(src, dst, key, b"SSCAN", b"SISMEMBER").await,
        "zset" => members(src, dst, key, b"ZSCAN", b"ZSCORE").await,
        "stream" => super::types_stream::stream(src, dst, key).await,
        _ => dump(src, dst, key).await,
    }
}

/// The same command on both sides at once.
pub async fn both(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    argv: &[&[u8]],
) -> Result<(Frame, Frame), VerifyError> {
    tokio::try_join!(src.one(key, argv), dst.one(key, argv))
}

async fn string(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    len: i64,
) -> Result<Found, VerifyError> {
    let step = 256 << 10;
    let mut at = 0;
    while at < len {
        let (a, b) = (at.to_string(), (at + step - 1).to_string());
        let (x, y) = both(
            src,
            dst,
            key,
            &[b"GETRANGE", key, a.as_bytes(), b.as_bytes()],
        )
        .await?;
        if x != y {
            return Ok(Some((
                DiffKind::Value,
                format!("bytes from offset {at} differ"),
            )));
        }
        at += step;
    }
    Ok(None)
}

async fn list(src: &mut Side, dst: &mut Side, key: &Bytes, len: i64) -> Result<Found, VerifyError> {
    let mut at = 0;
    while at < len {
        let (a, b) = (at.to_string(), (at + CHUNK - 1).to_string());
        let (x, y) = both(src, dst, key, &[b"LRANGE", key, a.as_bytes(), b.as_bytes()]).await?;
        let (x, y) = (array(src, key, "LRANGE", x)?, array(dst, key, "LRANGE", y)?);
        if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
            let detail = format!(
                "element {} differs: {}",
                at + i as i64,
                value_detail(&x[i], &y[i])
            );
            return Ok(Some((DiffKind::Value, detail)));
        }
        at += CHUNK;
    }
    Ok(None)
}

/// Collections up to this many elements are read whole in a pipeline with other keys
/// (`compare::batch`); larger ones in chunks, key by key.
const WHOLE: i64 = 256;

/// The command that reads a small collection whole, as (command, arguments after the
/// key), if `kind` has one and the key is small. Hashes with field TTLs to compare take
/// the chunked path, which reads those too.
pub fn whole_read(
    kind: &str,
    len: i64,
    ctx: &Ctx,
) -> Option<(&'static [u8], &'static [&'static [u8]])> {
    if len > WHOLE {
        return None;
    }
    Some(match kind {
        "list" => (b"LRANGE", &[b"0", b"-1"]),
        "hash" if !ctx.field_ttls => (b"HGETALL", &[]),
        "set" => (b"SMEMBERS", &[]),
        "zset" => (b"ZRANGE", &[b"0", b"-1", b"WITHSCORES"]),
        _ => return None,
    })
}

/// Whether two whole reads hold the same content: lists in order; hashes, sets and
/// sorted sets as the same elements in any order (servers order them by encoding).
/// A reply that is not an array is never the same, so the chunked path explains it.
pub fn same_whole(kind: &str, a: Frame, b: Frame) -> bool {
    let (Frame::Array(mut a), Frame::Array(mut b)) = (a, b) else {
        return false;
    };
    if a.len() != b.len() {
        return false;
    }
    let pairs = |v: Vec<Frame>| -> Vec<(Frame, Frame)> {
        let mut it = v.into_iter();
        let mut out = Vec::new();
        while let (Some(x), Some(y)) = (it.next(), it.next()) {
            out.push((x, y));
        }
        out
    };
    let order = |x: &Frame, y: &Frame| bulk(x).cmp(&bulk(y));
    match kind {
        "list" => a == b,
        "set" => {
            a.sort_by(order);
            b.sort_by(order);
            a == b
        }
        "hash" | "zset" => {
            let (mut a, mut b) = (pairs(a), pairs(b));
            a.sort_by(|p, q| order(&p.0, &q.0));
            b.sort_by(|p, q| order(&p.0, &q.0));
            // Scores as the exact doubles they print ("1" and "1.0" are one score).
            let same = |x: &Frame, y: &Frame| {
                x == y || (kind == "zset" && score(x).is_some() && score(x) == score(y))
            };
            a.iter()
                .zip(&b)
                .all(|(p, q)| p.0 == q.0 && same(&p.1, &q.1))
        }
        _ => false,
    }
}

/// One page of `<scan> key cursor COUNT n` on the source: (next cursor, flat items).
async fn scan_page(
    src: &mut Side,
    key: &Bytes,
    scan: &[u8],
    cursor: &Bytes,
) -> Result<(Bytes, Vec<Frame>), VerifyError> {
    let name = String::from_utf8_lossy(scan).into_owned();
    let count = CHUNK.to_string();
    let r = src
        .one(key, &[scan, key, cursor, b"COUNT", count.as_bytes()])
        .await?;
    let mut parts = array(src, key, &name, r)?;
    if parts.len() != 2 {
        return Err(src.bad_reply(key, &name, &Frame::Array(parts)));
    }
    let items = array(src, key, &name, parts.pop().unwrap_or(Frame::Null))?;
    let next = parts.pop().unwrap_or(Frame::Null);
    let Frame::BulkString(next) = next else {
        return Err(src.bad_reply(key, &name, &next));
    };
    Ok((next, items))
}

async fn hash(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    ctx: &Ctx,
) -> Result<Found, VerifyError> {
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let (next, items) = scan_page(src, key, b"HSCAN", &cursor).await?;
        let (fields, values): (Vec<Frame>, Vec<Frame>) = items
            .chunks(2)
            .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or(Frame::Null)))
            .unzip();
        if !fields.is_empty() {
            let names: Vec<&[u8]> = fields.iter().filter_map(bulk).collect();
            let mut argv: Vec<&[u8]> = vec![b"HMGET", key];
            argv.extend(&names);
            let got = dst.one(key, &argv).await?;
            let got = array(dst, key, "HMGET", got)?;
            for ((f, want), have) in fields.iter().zip(&values).zip(&got) {
                if want != have {
                    let detail = format!("field {} : {}", show(f), value_detail(want, have));
                    return Ok(Some((DiffKind::Value, detail)));
                }
            }
            if ctx.field_ttls
                && let Some(detail) = field_ttls(src, dst, key, &names, ctx).await?
            {
                return Ok(Some((DiffKind::Ttl, detail)));
            }
        }
        if next.as_ref() == b"0" {
            return Ok(None);
        }
        cursor = next;
    }
}

/// Hash field expiries (HPEXPIRETIME) of `fields` on both sides.
async fn field_ttls(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    fields: &[&[u8]],
    ctx: &Ctx,
) -> Result<Option<String>, VerifyError> {
    let n = fields.len().to_string();
    let mut argv: Vec<&[u8]> = vec![b"HPEXPIRETIME", key, b"FIELDS", n.as_bytes()];
    argv.extend(fields);
    let (x, y) = both(src, dst, key, &argv).await?;
    let (x, y) = (
        array(src, key, "HPEXPIRETIME", x)?,
        array(dst, key, "HPEXPIRETIME", y)?,
    );
    for ((f, a), b) in fields.iter().zip(&x).zip(&y) {
        let at = |t: &Frame| int(t).filter(|t| *t >= 0);
        if let Some(d) = ttl_diff(at(a), at(b), ctx.ttl_tolerance_ms) {
            return Ok(Some(format!(
                "field {}: {d}",
                show(&Frame::BulkString(Bytes::copy_from_slice(f)))
            )));
        }
    }
    Ok(None)
}

/// Sets (SSCAN + SISMEMBER) and sorted sets (ZSCAN + ZSCORE, scores compared as the
/// exact doubles they print).
async fn members(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    scan: &[u8],
    lookup: &'static [u8],
) -> Result<Found, VerifyError> {
    let zset = lookup == b"ZSCORE";
    let name = String::from_utf8_lossy(lookup).into_owned();
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let (next, items) = scan_page(src, key, scan, &cursor).await?;
        let step = if zset { 2 } else { 1 };
        let cmds: Vec<Cmd> = items
            .chunks(step)
            .filter_map(|p| Some(Cmd::new(key, &[lookup, key, bulk(&p[0])?])))
            .collect();
        let got = dst.by_key(cmds).await?;
        for (p, have) in items.chunks(step).zip(&got) {
            let same = if zset {
                let want = p.get(1).and_then(score);
                want.is_some() && want == score(have)
            } else {
                matches!(have, Frame::Integer(1))
            };
            if !same {
                if let Frame::Error(_) = have {
                    return Err(dst.bad_reply(key, &name, have));
                }
                let detail = if zset {
                    format!(
                        "member {}: score source {}, target {}",
                        show(&p[0]),
                        show(&p[1]),
                        show(have)
                    )
                } else {
                    format!("member {} not on the target", show(&p[0]))
                };
                return Ok(Some((DiffKind::Value, detail)));
            }
        }
        if next.as_ref() == b"0" {
            return Ok(None);
        }
        cursor = next;
    }
}

/// A score's exact bits (`inf`, `-inf` included).
fn score(f: &Frame) -> Option<u64> {
    text(f)?.parse::<f64>().ok().map(f64::to_bits)
}

/// Module values and anything else: the DUMP payload without its trailer (the RDB
/// version and checksum, which differ between server versions for the same value).
async fn dump(src: &mut Side, dst: &mut Side, key: &Bytes) -> Result<Found, VerifyError> {
    let (x, y) = both(src, dst, key, &[b"DUMP", key]).await?;
    let body = |f: &Frame| match f {
        Frame::BulkString(b) if b.len() >= 10 => Some(b.slice(..b.len() - 10)),
        _ => None,
    };
    match (body(&x), body(&y)) {
        (Some(a), Some(b)) if a == b => Ok(None),
        (Some(_), Some(_)) => Ok(Some((DiffKind::Value, "DUMP payloads differ".into()))),
        (None, _) => Err(src.bad_reply(key, "DUMP", &x)),
        (_, None) => Err(dst.bad_reply(key, "DUMP", &y)),
    }
}

pub fn array(side: &Side, key: &Bytes, cmd: &str, f: Frame) -> Result<Vec<Frame>, VerifyError> {
    match f {
        Frame::Array(items) => Ok(items),
        other => Err(side.bad_reply(key, cmd, &other)),
    }
}

fn bulk(f: &Frame) -> Option<&[u8]> {
    match f {
        Frame::BulkString(b) | Frame::SimpleString(b) => Some(b),
        _ => None,
    }
}

pub fn text(f: &Frame) -> Option<String> {
    bulk(f).map(|b| String::from_utf8_lossy(b).into_owned())
}

pub fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// A value for a message: text, cut short (never a whole big value).
pub fn show(f: &Frame) -> String {
    match f {
        Frame::Null => "(none)".into(),
        Frame::Integer(i) => i.to_string(),
        other => match bulk(other) {
            Some(b) => {
                let s = crate::cli_support::arg_json(&b[..b.len().min(64)]).to_string();
                if b.len() > 64 {
                    format!("{s}… ({} bytes)", b.len())
                } else {
                    s
                }
            }
            None => short(other),
        },
    }
}

pub fn short(f: &Frame) -> String {
    let s = format!("{f:?}");
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

pub fn value_detail(a: &Frame, b: &Frame) -> String {
    format!("source {}, target {}", show(a), show(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(items: &[&str]) -> Frame {
        Frame::Array(
            items
                .iter()
                .map(|s| Frame::BulkString(Bytes::copy_from_slice(s.as_bytes())))
                .collect(),
        )
    }

    #[test]
    fn whole_reads_compare_content_not_order_except_for_lists() {
        assert!(same_whole("list", arr(&["a", "b"]), arr(&["a", "b"])));
        assert!(!same_whole("list", arr(&["a", "b"]), arr(&["b", "a"])));
        assert!(same_whole("set", arr(&["a", "b"]), arr(&["b", "a"])));
        assert!(!same_whole("set", arr(&["a", "b"]), arr(&["a", "c"])));
        assert!(same_whole(
            "hash",
            arr(&["f", "1", "g", "2"]),
            arr(&["g", "2", "f", "1"])
        ));
        assert!(!same_whole(
            "hash",
            arr(&["f", "1", "g", "2"]),
            arr(&["f", "2", "g", "1"])
        ));
        // One score printed two ways; a score one ulp apart is another score.
        assert!(same_whole("zset", arr(&["m", "1"]), arr(&["m", "1.0"])));
        assert!(!same_whole(
            "zset",
            arr(&["m", "0.1"]),
            arr(&["m", "0.10000000000000002"])
        ));
        assert!(!same_whole("set", arr(&["a"]), arr(&["a", "a"])));
        assert!(!same_whole("list", Frame::Null, arr(&[])));
        assert!(!same_whole("stream", arr(&[]), arr(&[])));
    }

    #[test]
    fn only_small_collections_are_read_whole() {
        let ctx = |field_ttls| Ctx {
            mode: super::super::VerifyMode::Full,
            ttl_tolerance_ms: 0,
            field_ttls,
        };
        assert!(whole_read("list", WHOLE, &ctx(false)).is_some());
        assert!(whole_read("list", WHOLE + 1, &ctx(false)).is_none());
        assert!(whole_read("hash", 3, &ctx(false)).is_some());
        assert!(whole_read("hash", 3, &ctx(true)).is_none());
        assert!(whole_read("stream", 3, &ctx(false)).is_none());
        assert!(whole_read("string", 3, &ctx(false)).is_none());
    }
}
