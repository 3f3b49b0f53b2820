//! Streams: metadata (XINFO STREAM), entries (XRANGE pages), then each consumer group's
//! state (XINFO GROUPS), consumers (XINFO CONSUMERS) and pending entries (XPENDING
//! pages). Idle times are the readers' clocks, not replicated state: never compared.

use bytes::Bytes;

use super::side::Side;
use super::types::{array, both, show, text};
use super::{DiffKind, VerifyError};
use crate::redis::conn::Frame;

const CHUNK: &str = "1000";

type Found = Option<(DiffKind, String)>;

pub async fn stream(src: &mut Side, dst: &mut Side, key: &Bytes) -> Result<Found, VerifyError> {
    let (x, y) = both(src, dst, key, &[b"XINFO", b"STREAM", key]).await?;
    let (x, y) = (
        map(src, key, "XINFO STREAM", x)?,
        map(dst, key, "XINFO STREAM", y)?,
    );
    let meta = ["last-generated-id", "max-deleted-entry-id", "entries-added"];
    if let Some(d) = differing(&x, &y, &meta) {
        return Ok(Some((DiffKind::Value, d)));
    }
    if let Some(d) = entries(src, dst, key).await? {
        return Ok(Some((DiffKind::Value, d)));
    }
    let (x, y) = both(src, dst, key, &[b"XINFO", b"GROUPS", key]).await?;
    let groups = |side: &Side, f: Frame| -> Result<Vec<Vec<(String, Frame)>>, VerifyError> {
        array(side, key, "XINFO GROUPS", f)?
            .into_iter()
            .map(|g| map(side, key, "XINFO GROUPS", g))
            .collect()
    };
    let (gx, gy) = (groups(src, x)?, groups(dst, y)?);
    let names = |g: &[Vec<(String, Frame)>]| -> Vec<String> {
        g.iter()
            .filter_map(|m| get(m, "name").and_then(text))
            .collect()
    };
    if names(&gx) != names(&gy) {
        let detail = format!("groups: source {:?}, target {:?}", names(&gx), names(&gy));
        return Ok(Some((DiffKind::Group, detail)));
    }
    let fields = ["consumers", "pending", "last-delivered-id", "entries-read"];
    for (a, b) in gx.iter().zip(&gy) {
        let group = get(a, "name").and_then(text).unwrap_or_default();
        if let Some(d) = differing(a, b, &fields) {
            return Ok(Some((DiffKind::Group, format!("group {group:?}: {d}"))));
        }
        if let Some(d) = consumers(src, dst, key, &group).await? {
            return Ok(Some((DiffKind::Group, format!("group {group:?}: {d}"))));
        }
        if let Some(d) = pending(src, dst, key, &group).await? {
            return Ok(Some((DiffKind::Group, format!("group {group:?}: {d}"))));
        }
    }
    Ok(None)
}

async fn entries(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
) -> Result<Option<String>, VerifyError> {
    let mut start = b"-".to_vec();
    loop {
        let argv: [&[u8]; 6] = [b"XRANGE", key, &start, b"+", b"COUNT", CHUNK.as_bytes()];
        let (x, y) = both(src, dst, key, &argv).await?;
        let (x, y) = (array(src, key, "XRANGE", x)?, array(dst, key, "XRANGE", y)?);
        if let Some(i) = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i)) {
            let id = |v: &[Frame]| v.get(i).map(first).unwrap_or("(none)".into());
            return Ok(Some(format!("entry: source {}, target {}", id(&x), id(&y))));
        }
        let Some(last) = x.last() else {
            return Ok(None);
        };
        start = format!("({}", first(last)).into_bytes();
    }
}

async fn consumers(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    group: &str,
) -> Result<Option<String>, VerifyError> {
    let (x, y) = both(
        src,
        dst,
        key,
        &[b"XINFO", b"CONSUMERS", key, group.as_bytes()],
    )
    .await?;
    let list = |side: &Side, f: Frame| -> Result<Vec<(String, String)>, VerifyError> {
        let mut out = Vec::new();
        for c in array(side, key, "XINFO CONSUMERS", f)? {
            let m = map(side, key, "XINFO CONSUMERS", c)?;
            let field = |n| get(&m, n).map(show).unwrap_or_default();
            out.push((field("name"), field("pending")));
        }
        out.sort();
        Ok(out)
    };
    let (a, b) = (list(src, x)?, list(dst, y)?);
    Ok((a != b).then(|| format!("consumers (name, pending): source {a:?}, target {b:?}")))
}

async fn pending(
    src: &mut Side,
    dst: &mut Side,
    key: &Bytes,
    group: &str,
) -> Result<Option<String>, VerifyError> {
    let mut start = b"-".to_vec();
    loop {
        let argv: [&[u8]; 6] = [
            b"XPENDING",
            key,
            group.as_bytes(),
            &start,
            b"+",
            CHUNK.as_bytes(),
        ];
        let (x, y) = both(src, dst, key, &argv).await?;
        // (id, consumer, deliveries): the idle time (third) is left out.
        let rows = |side: &Side, f: Frame| -> Result<Vec<[String; 3]>, VerifyError> {
            let mut out = Vec::new();
            for e in array(side, key, "XPENDING", f)? {
                let e = array(side, key, "XPENDING", e)?;
                let at = |i: usize| e.get(i).map(show).unwrap_or_default();
                out.push([at(0), at(1), at(3)]);
            }
            Ok(out)
        };
        let (a, b) = (rows(src, x)?, rows(dst, y)?);
        if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
            return Ok(Some(format!(
                "pending entry (id, consumer, deliveries): source {:?}, target {:?}",
                a.get(i),
                b.get(i)
            )));
        }
        let Some(last) = a.last() else {
            return Ok(None);
        };
        start = format!("({}", last[0].trim_matches('"')).into_bytes();
    }
}

/// A RESP2 flat map as (name, value) pairs.
fn map(side: &Side, key: &Bytes, cmd: &str, f: Frame) -> Result<Vec<(String, Frame)>, VerifyError> {
    let items = array(side, key, cmd, f)?;
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((text(&k).unwrap_or_default(), v));
    }
    Ok(out)
}

fn get<'a>(m: &'a [(String, Frame)], name: &str) -> Option<&'a Frame> {
    m.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The first of `fields` present on both sides with different values.
fn differing(a: &[(String, Frame)], b: &[(String, Frame)], fields: &[&str]) -> Option<String> {
    fields.iter().find_map(|f| match (get(a, f), get(b, f)) {
        (Some(x), Some(y)) if x != y => {
            Some(format!("{f}: source {}, target {}", show(x), show(y)))
        }
        _ => None,
    })
}

/// An entry's id (the first element of `[id, [fields…]]`).
fn first(entry: &Frame) -> String {
    match entry {
        Frame::Array(v) => v.first().and_then(text).unwrap_or_default(),
        other => show(other),
    }
}
