//! A batch of keys compared on both sides: type and expiry (one pipeline per side, both
//! sides at once), then lengths, then content.

use bytes::Bytes;

use super::side::{Cmd, Side};
use super::types::{self, int, text};
use super::{Diff, DiffKind, VerifyError, VerifyMode};
use crate::redis::conn::Frame;

pub struct Ctx {
    pub mode: VerifyMode,
    pub ttl_tolerance_ms: i64,
    /// Both sides have HPEXPIRETIME: hash field TTLs are compared too.
    pub field_ttls: bool,
}

/// Strings up to this size are read with one GET; longer ones in GETRANGE chunks.
const WHOLE_STRING: i64 = 512 << 10;

/// What one side says about a key.
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    kind: String,
    /// Absolute expiry in ms since the epoch.
    expires: Option<i64>,
}

pub async fn batch(
    src: &mut Side,
    dst: &mut Side,
    db: u32,
    tdb: u32,
    keys: &[Bytes],
    ctx: &Ctx,
) -> Result<Vec<Diff>, VerifyError> {
    let (s, d) = tokio::try_join!(src.select(db), dst.select(tdb))?;
    let _ = (s, d);
    let (sm, dm) = tokio::try_join!(meta(src, keys), meta(dst, keys))?;
    let mut diffs = Vec::new();
    let diff = |key: &Bytes, kind, detail: String| Diff {
        db,
        key: key.clone(),
        kind,
        detail,
    };
    let mut same: Vec<(Bytes, String)> = Vec::new();
    for ((key, s), d) in keys.iter().zip(sm).zip(dm) {
        match (s.kind.as_str(), d.kind.as_str()) {
            ("none", "none") => {}
            (_, "none") => diffs.push(diff(key, DiffKind::Missing, "not on the target".into())),
            ("none", _) => diffs.push(diff(key, DiffKind::Extra, "on the target only".into())),
            (a, b) if a != b => {
                diffs.push(diff(key, DiffKind::Type, format!("source {a}, target {b}")))
            }
            _ if ctx.mode == VerifyMode::Keys => {}
            _ => match ttl_diff(s.expires, d.expires, ctx.ttl_tolerance_ms) {
                Some(detail) => diffs.push(diff(key, DiffKind::Ttl, detail)),
                None => same.push((key.clone(), s.kind)),
            },
        }
    }
    if ctx.mode == VerifyMode::Keys || same.is_empty() {
        return Ok(diffs);
    }
    let (sl, dl) = tokio::try_join!(lengths(src, &same), lengths(dst, &same))?;
    let mut content = Vec::new();
    for ((key, kind), (a, b)) in same.into_iter().zip(sl.into_iter().zip(dl)) {
        if a != b {
            let detail = format!("{kind} length: source {a:?}, target {b:?}");
            diffs.push(diff(&key, DiffKind::Length, detail));
        } else {
            content.push((key, kind, a.unwrap_or(0)));
        }
    }
    if ctx.mode == VerifyMode::Length {
        return Ok(diffs);
    }
    // Small strings are read in one pipeline; everything else key by key in chunks.
    let small: Vec<&(Bytes, String, i64)> = content
        .iter()
        .filter(|(_, k, n)| k == "string" && *n <= WHOLE_STRING)
        .collect();
    let gets = |side: &Side| -> Vec<Cmd> {
        let _ = side;
        small
            .iter()
            .map(|(k, _, _)| Cmd::new(k, &[b"GET", k]))
            .collect()
    };
    let (sv, dv) = tokio::try_join!(src.by_key(gets(src)), dst.by_key(gets(dst)))?;
    for ((key, _, _), (a, b)) in small.iter().zip(sv.into_iter().zip(dv)) {
        if a != b {
            diffs.push(diff(key, DiffKind::Value, types::value_detail(&a, &b)));
        }
    }
    // Small collections: read whole, in pipelines, on both sides at once. Only a key
    // that differs is read again element by element, for the detail of the difference.
    let (whole, rest): (Vec<_>, Vec<_>) = content
        .iter()
        .filter(|(_, k, n)| !(k == "string" && *n <= WHOLE_STRING))
        .partition(|(_, k, n)| types::whole_read(k, *n, ctx).is_some());
    let mut recheck: Vec<&(Bytes, String, i64)> = Vec::new();
    for part in pipelines(&whole) {
        let reads = || -> Vec<Cmd> {
            part.iter()
                .filter_map(|(k, kind, n)| {
                    let (cmd, args) = types::whole_read(kind, *n, ctx)?;
                    let mut argv: Vec<&[u8]> = vec![cmd, k];
                    argv.extend_from_slice(args);
                    Some(Cmd::new(k, &argv))
                })
                .collect()
        };
        let (sv, dv) = tokio::try_join!(src.by_key(reads()), dst.by_key(reads()))?;
        for (e, (a, b)) in part.iter().zip(sv.into_iter().zip(dv)) {
            if !types::same_whole(&e.1, a, b) {
                recheck.push(e);
            }
        }
    }
    for (key, kind, len) in recheck.into_iter().chain(rest) {
        if let Some((kind, detail)) = types::content(src, dst, key, kind, *len, ctx).await? {
            diffs.push(diff(key, kind, detail));
        }
    }
    Ok(diffs)
}

/// Elements read whole per pipeline at most, so memory stays bounded by keys of many
/// small collections too.
const WHOLE_PIPELINE: i64 = 20_000;

/// `keys` cut into runs of at most `WHOLE_PIPELINE` elements.
fn pipelines<'a>(keys: &[&'a (Bytes, String, i64)]) -> Vec<Vec<&'a (Bytes, String, i64)>> {
    let mut out = Vec::new();
    let mut part: Vec<&(Bytes, String, i64)> = Vec::new();
    let mut held = 0;
    for k in keys {
        if held + k.2 > WHOLE_PIPELINE && !part.is_empty() {
            out.push(std::mem::take(&mut part));
            held = 0;
        }
        held += k.2;
        part.push(*k);
    }
    if !part.is_empty() {
        out.push(part);
    }
    out
}

/// TYPE and expiry of each key on one side.
async fn meta(side: &mut Side, keys: &[Bytes]) -> Result<Vec<Meta>, VerifyError> {
    let exact = side.caps.pexpiretime;
    let mut cmds = Vec::with_capacity(keys.len() * 3);
    for k in keys {
        cmds.push(Cmd::new(k, &[b"TYPE", k]));
        if exact {
            cmds.push(Cmd::new(k, &[b"PEXPIRETIME", k]));
        } else {
            // The clock of the node that holds the key, read in the same pipeline.
            cmds.push(Cmd::new(k, &[b"PTTL", k]));
            cmds.push(Cmd::new(k, &[b"TIME"]));
        }
    }
    let replies = side.by_key(cmds).await?;
    let per = if exact { 2 } else { 3 };
    let mut out = Vec::with_capacity(keys.len());
    for (k, r) in keys.iter().zip(replies.chunks(per)) {
        let kind = text(&r[0]).ok_or_else(|| side.bad_reply(k, "TYPE", &r[0]))?;
        let cmd = if exact { "PEXPIRETIME" } else { "PTTL" };
        let t = int(&r[1]).ok_or_else(|| side.bad_reply(k, cmd, &r[1]))?;
        let expires = match t {
            // -1: no expiry; -2: gone since TYPE (the type says "none" or will next round).
            -1 | -2 => None,
            t if exact => Some(t),
            t => Some(server_ms(&r[2]).ok_or_else(|| side.bad_reply(k, "TIME", &r[2]))? + t),
        };
        out.push(Meta { kind, expires });
    }
    Ok(out)
}

/// `TIME` as ms since the epoch.
fn server_ms(f: &Frame) -> Option<i64> {
    let Frame::Array(p) = f else { return None };
    let secs: i64 = text(p.first()?)?.parse().ok()?;
    let micros: i64 = text(p.get(1)?)?.parse().ok()?;
    Some(secs * 1000 + micros / 1000)
}

pub fn ttl_diff(a: Option<i64>, b: Option<i64>, tolerance: i64) -> Option<String> {
    match (a, b) {
        (None, None) => None,
        (Some(a), Some(b)) if (a - b).abs() <= tolerance => None,
        (Some(a), Some(b)) => Some(format!(
            "expiry differs by {} ms (source {a}, target {b}, ms since the epoch)",
            b - a
        )),
        (Some(a), None) => Some(format!("source expires at {a} ms, target never")),
        (None, Some(b)) => Some(format!("target expires at {b} ms, source never")),
    }
}

/// The length command of each type; module types have none (compared by DUMP).
fn length_command(kind: &str) -> Option<&'static [u8]> {
    Some(match kind {
        "string" => b"STRLEN",
        "list" => b"LLEN",
        "set" => b"SCARD",
        "zset" => b"ZCARD",
        "hash" => b"HLEN",
        "stream" => b"XLEN",
        _ => return None,
    })
}

async fn lengths(
    side: &mut Side,
    keys: &[(Bytes, String)],
) -> Result<Vec<Option<i64>>, VerifyError> {
    let cmds: Vec<Cmd> = keys
        .iter()
        .filter_map(|(k, kind)| Some(Cmd::new(k, &[length_command(kind)?, k])))
        .collect();
    let mut replies = side.by_key(cmds).await?.into_iter();
    let mut out = Vec::with_capacity(keys.len());
    for (k, kind) in keys {
        let Some(cmd) = length_command(kind) else {
            out.push(None);
            continue;
        };
        let r = replies.next().unwrap_or(Frame::Null);
        let n = int(&r).ok_or_else(|| side.bad_reply(k, &String::from_utf8_lossy(cmd), &r))?;
        out.push(Some(n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Bytes, pipelines, ttl_diff};

    #[test]
    fn whole_reads_are_cut_by_elements() {
        let keys: Vec<(Bytes, String, i64)> = [8000, 8000, 8000, 30_000, 1]
            .iter()
            .enumerate()
            .map(|(i, n)| (Bytes::from(format!("k{i}")), "list".to_string(), *n))
            .collect();
        let refs: Vec<&(Bytes, String, i64)> = keys.iter().collect();
        let sizes: Vec<Vec<i64>> = pipelines(&refs)
            .iter()
            .map(|p| p.iter().map(|k| k.2).collect())
            .collect();
        // A key over the budget goes alone.
        assert_eq!(
            sizes,
            vec![vec![8000, 8000], vec![8000], vec![30_000], vec![1]]
        );
    }

    #[test]
    fn expiries_match_within_the_tolerance_only() {
        assert_eq!(ttl_diff(None, None, 0), None);
        assert_eq!(ttl_diff(Some(1000), Some(1500), 500), None);
        assert!(
            ttl_diff(Some(1000), Some(1501), 500)
                .unwrap()
                .contains("501 ms")
        );
        assert!(
            ttl_diff(Some(1000), None, 500)
                .unwrap()
                .contains("target never")
        );
        assert!(
            ttl_diff(None, Some(7), 500)
                .unwrap()
                .contains("source never")
        );
    }
}
