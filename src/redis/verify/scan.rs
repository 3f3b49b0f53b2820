//! Round 1: every key of the source, compared on the target; then every key of the
//! target, looked up on the source (extras).

use bytes::Bytes;

use super::compare::{self, Ctx};
use super::side::{Cmd, Side};
use super::{BATCH, Diff, DiffKind, Report, VerifyConfig, VerifyError};
use crate::redis::conn::{Frame, frame_text};

/// Keys asked for per SCAN call.
const SCAN_COUNT: &str = "1000";

pub async fn first_round(
    src: &mut Side,
    dst: &mut Side,
    cfg: &VerifyConfig,
    ctx: &Ctx,
    report: &mut Report,
) -> Result<Vec<Diff>, VerifyError> {
    let mut diffs = Vec::new();
    for (node, db) in units(src).await? {
        let tdb = cfg.target_db(db);
        if dst.is_cluster() && tdb != 0 {
            return Err(VerifyError::Config(format!(
                "source db {db} maps to target db {tdb}, but the target is a cluster (db 0 only): add --db-map {db}:0"
            )));
        }
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = page(src, node, db, &cursor, cfg).await?;
            for chunk in keys.chunks(BATCH) {
                report.keys_compared += chunk.len() as u64;
                diffs.extend(compare::batch(src, dst, db, tdb, chunk, ctx).await?);
            }
            if next.as_ref() == b"0" {
                break;
            }
            cursor = next;
        }
    }
    for (node, tdb) in units(dst).await? {
        let Some(db) = cfg.source_db(tdb) else {
            continue;
        };
        if src.is_cluster() && db != 0 {
            continue;
        }
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = page(dst, node, tdb, &cursor, cfg).await?;
            for chunk in keys.chunks(BATCH) {
                diffs.extend(extras(src, db, chunk).await?);
            }
            if next.as_ref() == b"0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(diffs)
}

/// Target keys the source lacks.
async fn extras(src: &mut Side, db: u32, keys: &[Bytes]) -> Result<Vec<Diff>, VerifyError> {
    src.select(db).await?;
    let cmds = keys.iter().map(|k| Cmd::new(k, &[b"EXISTS", k])).collect();
    let replies = src.by_key(cmds).await?;
    let mut out = Vec::new();
    for (k, r) in keys.iter().zip(replies) {
        match r {
            Frame::Integer(0) => out.push(Diff {
                db,
                key: k.clone(),
                kind: DiffKind::Extra,
                detail: "on the target only".into(),
            }),
            Frame::Integer(_) => {}
            other => return Err(src.bad_reply(k, "EXISTS", &other)),
        }
    }
    Ok(out)
}

/// (node, db) pairs to scan: each db holding keys on a standalone server, each master
/// of a cluster.
async fn units(side: &mut Side) -> Result<Vec<(usize, u32)>, VerifyError> {
    if side.is_cluster() {
        return Ok((0..side.node_count()).map(|n| (n, 0)).collect());
    }
    let info = side
        .on_node(
            0,
            &[vec![
                Bytes::from_static(b"INFO"),
                Bytes::from_static(b"keyspace"),
            ]],
        )
        .await?;
    let text = info.first().and_then(frame_text).unwrap_or_default();
    Ok(keyspace_dbs(&text).into_iter().map(|db| (0, db)).collect())
}

/// The dbs listed in an `INFO keyspace` reply (`db3:keys=1,expires=0,avg_ttl=0`).
pub fn keyspace_dbs(info: &str) -> Vec<u32> {
    info.lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect()
}

/// One SCAN page: the next cursor and the wanted keys.
async fn page(
    side: &mut Side,
    node: usize,
    db: u32,
    cursor: &Bytes,
    cfg: &VerifyConfig,
) -> Result<(Bytes, Vec<Bytes>), VerifyError> {
    side.select(db).await?;
    let argv = vec![
        Bytes::from_static(b"SCAN"),
        cursor.clone(),
        Bytes::from_static(b"COUNT"),
        Bytes::from_static(SCAN_COUNT.as_bytes()),
    ];
    let reply = side
        .on_node(node, &[argv])
        .await?
        .pop()
        .unwrap_or(Frame::Null);
    let bad = || VerifyError::Reply {
        endpoint: side.endpoint(node).to_string(),
        command: "SCAN".into(),
        detail: "unexpected reply".into(),
    };
    let Frame::Array(mut parts) = reply else {
        return Err(bad());
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let keys = match parts.pop() {
        Some(Frame::Array(keys)) => keys,
        _ => return Err(bad()),
    };
    let next = match parts.pop() {
        Some(Frame::BulkString(c)) => c,
        _ => return Err(bad()),
    };
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        match k {
            Frame::BulkString(k) if cfg.wanted(&k) => out.push(k),
            Frame::BulkString(_) => {}
            _ => return Err(bad()),
        }
    }
    Ok((next, out))
}

#[cfg(test)]
mod tests {
    use super::keyspace_dbs;

    #[test]
    fn reads_dbs_from_info_keyspace() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb12:keys=1,expires=1,avg_ttl=5\r\n";
        assert_eq!(keyspace_dbs(info), vec![0, 12]);
        assert_eq!(keyspace_dbs("# Keyspace\r\n"), Vec::<u32>::new());
    }
}
