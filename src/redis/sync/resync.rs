//! A full resync over data this link wrote before (its checkpoint was on the target, or
//! it streamed in this run): the target's keys in the link's scope are removed before
//! the new RDB is loaded, as a replica empties itself before loading its master's RDB.
//!
//! Without it, `RESTORE … REPLACE` overwrote what the new RDB holds and nothing removed
//! the keys deleted on the source while the link could not continue (a backlog overrun,
//! another history): the target kept them for good.
//!
//! Why remove first rather than sweep after the load: a sweep must know which keys the
//! RDB held, i.e. hold every key name (or a hash of it, which is not exact) until the
//! load ends; removing first needs nothing but the scope, and the stream after the RDB
//! is applied to a target that holds exactly the RDB. The price is a target that lacks
//! the link's keys until they are loaded again — the state a native replica is in while
//! it loads.
//!
//! The scope is what this link, and only it, writes: the target dbs the replicated
//! source dbs map to, keys that pass the key filters, never `__tandem:` keys, and for a
//! master of a cluster source only the slots that master serves (a slot it is migrating
//! or importing is left alone: its keys may be the other master's link's by now).
//! Two-way links never clear (their target is the other side's own data).

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use super::SyncError;
use crate::redis::cluster::is_cluster;
use crate::redis::conn::{Conn, ConnError, Frame, info_keyspace};
use crate::redis::filter::{FilterConfig, is_tandem_key};
use crate::redis::slot::key_slot;
use crate::redis::url::Endpoint;

/// What a full resync does with the target's keys of the link's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnResync {
    /// Remove them before loading the new RDB: the target ends as the source is.
    Clear,
    /// Load over them: keys deleted on the source meanwhile stay on the target.
    Keep,
}

const TIMEOUT: Duration = Duration::from_secs(30);
const PAGE: &[u8] = b"1000";

/// Slots a cluster source master serves for sure: owned, and not migrating or
/// importing. `None`: the source is not a cluster.
pub async fn source_slots(source: &Endpoint) -> Result<Option<HashSet<u16>>, SyncError> {
    let mut c = Conn::connect(&source.with_db(0), TIMEOUT)
        .await
        .map_err(|e| setup(source, e))?;
    if !is_cluster(&mut c).await.map_err(|e| setup(source, e))? {
        return Ok(None);
    }
    let nodes = c
        .query(&[b"CLUSTER", b"NODES"])
        .await
        .map_err(|e| setup(source, e))?;
    let text = match nodes {
        Frame::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => return Err(bad(source, format!("CLUSTER NODES answered {other:?}"))),
    };
    let line = text
        .lines()
        .find(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("myself")))
        .ok_or_else(|| bad(source, "CLUSTER NODES has no myself line".into()))?;
    Ok(Some(parse_served(line)))
}

/// The slots of a `CLUSTER NODES` line (fields 9 on): `0-5460`, `7`, and `[93->-id]` /
/// `[93-<-id]` for a slot migrating or importing, which is taken out.
fn parse_served(line: &str) -> HashSet<u16> {
    let mut served = HashSet::new();
    let mut moving = Vec::new();
    for f in line.split(' ').skip(8) {
        if let Some(m) = f.strip_prefix('[') {
            if let Some(s) = m.split('-').next().and_then(|s| s.parse::<u16>().ok()) {
                moving.push(s);
            }
            continue;
        }
        let (a, b) = f.split_once('-').unwrap_or((f, f));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            served.extend(a..=b.min(16383));
        }
    }
    for s in moving {
        served.remove(&s);
    }
    served
}

/// Remove the keys of the link's scope from the target's `nodes` (see the module doc);
/// returns how many.
pub async fn clear(
    nodes: &[Endpoint],
    filter: &FilterConfig,
    slots: Option<&HashSet<u16>>,
) -> Result<u64, SyncError> {
    let mut removed = 0;
    for node in nodes {
        removed += clear_node(node, filter, slots).await?;
    }
    crate::metrics::resync_cleared_keys(removed);
    Ok(removed)
}

async fn clear_node(
    node: &Endpoint,
    filter: &FilterConfig,
    slots: Option<&HashSet<u16>>,
) -> Result<u64, SyncError> {
    let mut c = Conn::connect(&node.with_db(0), TIMEOUT)
        .await
        .map_err(|e| setup(node, e))?;
    let info = match c
        .query(&[b"INFO", b"keyspace"])
        .await
        .map_err(|e| setup(node, e))?
    {
        Frame::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => return Err(bad(node, format!("INFO keyspace answered {other:?}"))),
    };
    let mut removed = 0;
    for (db, _) in info_keyspace(&info) {
        if !replicated_into(filter, db) {
            continue;
        }
        c.query(&[b"SELECT", db.to_string().as_bytes()])
            .await
            .map_err(|e| setup(node, e))?;
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let (next, keys) = scan_page(&mut c, node, &cursor).await?;
            let mine: Vec<Bytes> = keys
                .into_iter()
                .filter(|k| {
                    !is_tandem_key(k)
                        && filter.key_allowed(k)
                        && slots.is_none_or(|s| s.contains(&key_slot(k)))
                })
                .collect();
            removed += unlink(&mut c, node, &mine).await?;
            if &next[..] == b"0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(removed)
}

/// Some replicated source db maps to target db `db`.
fn replicated_into(filter: &FilterConfig, db: u32) -> bool {
    std::iter::once(db)
        .chain(filter.db_map.keys().copied())
        .any(|d| filter.db_allowed(d) && filter.map_db(d) == db)
}

async fn scan_page(
    c: &mut Conn,
    node: &Endpoint,
    cursor: &Bytes,
) -> Result<(Bytes, Vec<Bytes>), SyncError> {
    let reply = c
        .query(&[b"SCAN", cursor, b"COUNT", PAGE])
        .await
        .map_err(|e| setup(node, e))?;
    if let Frame::Array(mut parts) = reply
        && parts.len() == 2
        && let (Frame::Array(keys), Frame::BulkString(next)) =
            (parts.pop().unwrap(), parts.pop().unwrap())
    {
        let keys = keys
            .into_iter()
            .filter_map(|k| match k {
                Frame::BulkString(b) => Some(b),
                _ => None,
            })
            .collect();
        return Ok((next, keys));
    }
    Err(bad(
        node,
        "SCAN answered something else than [cursor, keys]".into(),
    ))
}

/// One `UNLINK` per key (a cluster node refuses keys of several slots in one), pipelined.
async fn unlink(c: &mut Conn, node: &Endpoint, keys: &[Bytes]) -> Result<u64, SyncError> {
    for k in keys {
        c.queue(&[b"UNLINK", k]);
    }
    c.flush().await.map_err(|e| setup(node, e))?;
    let mut removed = 0;
    for k in keys {
        match c.read_frame().await.map_err(|e| setup(node, e))? {
            Frame::Integer(n) => removed += n as u64,
            other => {
                return Err(bad(
                    node,
                    format!(
                        "UNLINK {:?} answered {other:?}",
                        String::from_utf8_lossy(&k[..k.len().min(100)])
                    ),
                ));
            }
        }
    }
    Ok(removed)
}

/// Log what a clear did.
pub fn report(removed: u64) {
    info!(
        removed,
        "full resync over this link's earlier data: removed its keys from the target \
         before loading the new RDB (--on-resync keep loads over them)"
    );
}

fn setup(ep: &Endpoint, e: ConnError) -> SyncError {
    bad(ep, e.to_string())
}

fn bad(ep: &Endpoint, detail: String) -> SyncError {
    SyncError::Setup {
        endpoint: ep.to_string(),
        detail: format!("clearing the link's keys before a full resync: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_slots_leave_out_the_moving_ones() {
        let line = "e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected \
                    0-2 7 [1->-b2c3] [9-<-a1b2]";
        let s = parse_served(line);
        let mut v: Vec<u16> = s.into_iter().collect();
        v.sort();
        assert_eq!(v, vec![0, 2, 7]);
    }

    #[test]
    fn a_target_db_is_cleared_only_when_a_replicated_source_db_maps_to_it() {
        let f = FilterConfig {
            include_dbs: vec![1, 2],
            db_map: [(1, 0)].into_iter().collect(),
            ..Default::default()
        };
        assert!(replicated_into(&f, 0), "source db 1 maps there");
        assert!(!replicated_into(&f, 1), "db 1 goes to 0");
        assert!(replicated_into(&f, 2));
        assert!(!replicated_into(&f, 3), "not replicated");
    }
}
