//! The resolver's connections to both sides: one request per key, or a batch of keys
//! pipelined on a standalone side (a burst leaves hundreds of thousands of conflicts,
//! and a round trip per request bounded how fast they converged).
//!
//! On a cluster side every request goes to the master owning the key's slot (following
//! `MOVED`), and the copy's tag key carries the slot's hash tag so that it sits in the
//! same single-slot transaction: the loser's stream for that shard shows a `__tandem:`
//! write in it and drops the copy as an echo.

use std::time::Duration;

use bytes::Bytes;

use super::{Key, SideInfo};
use crate::redis::cluster::nodes::{Nodes, Redirect, redirect};
use crate::redis::cluster::tags;
use crate::redis::conn::{Conn, ConnError, Frame};
use crate::redis::slot::key_slot;
use crate::redis::sync::SyncError;

pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// A key's value as `DUMP` and `PTTL` give it: `None` when the key does not exist.
pub(super) type Dumped = Option<(Bytes, i64)>;

/// A side as the resolver talks to it.
pub(super) enum SideConn {
    One(Conn),
    Cluster(Box<Nodes>),
}

impl SideConn {
    pub(super) async fn connect(side: &SideInfo) -> Result<SideConn, SyncError> {
        Ok(match side.shards {
            Some(_) => SideConn::Cluster(Box::new(
                Nodes::connect(side.ep.clone(), TIMEOUT, Duration::from_secs(30)).await?,
            )),
            None => SideConn::One(
                Conn::connect(&side.ep.with_db(0), TIMEOUT)
                    .await
                    .map_err(sink_err)?,
            ),
        })
    }

    /// `DUMP` and `PTTL` of each of `keys`, pipelined on a standalone side; on a
    /// cluster side one key after the other, each on its slot's master.
    pub(super) async fn dump_many(&mut self, keys: &[&Key]) -> Result<Vec<Dumped>, SyncError> {
        let c = match self {
            SideConn::One(c) => c,
            SideConn::Cluster(n) => {
                let mut out = Vec::with_capacity(keys.len());
                for key in keys {
                    let slot = key_slot(&key.1);
                    let payload = n.request_slot(slot, &[b"DUMP", &key.1]).await?;
                    let pttl = n.request_slot(slot, &[b"PTTL", &key.1]).await?;
                    out.push(dumped(payload, pttl));
                }
                return Ok(out);
            }
        };
        let mut db = None;
        let mut replies = 0;
        for key in keys {
            if db != Some(key.0) {
                c.queue(&[b"SELECT", key.0.to_string().as_bytes()]);
                db = Some(key.0);
                replies += 1;
            }
            c.queue(&[b"DUMP", &key.1]);
            c.queue(&[b"PTTL", &key.1]);
            replies += 2;
        }
        c.flush().await.map_err(sink_err)?;
        let mut frames = Vec::with_capacity(replies);
        for _ in 0..replies {
            frames.push(c.read_frame().await.map_err(sink_err)?);
        }
        let mut frames = frames.into_iter();
        let mut db = None;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if db != Some(key.0) {
                if let Some(Frame::Error(e)) = frames.next() {
                    return Err(SyncError::Setup {
                        endpoint: c.endpoint().to_string(),
                        detail: format!("SELECT {}: {e}", key.0),
                    });
                }
                db = Some(key.0);
            }
            let (payload, pttl) = (frames.next(), frames.next());
            out.push(dumped(
                payload.unwrap_or(Frame::Null),
                pttl.unwrap_or(Frame::Null),
            ));
        }
        Ok(out)
    }

    /// Replace each item's key by its value (DUMP payload and PTTL; `None`: delete it)
    /// together with the tag write, each in its own transaction: pipelined on a
    /// standalone side, one after the other on a cluster side ([`replace_in_cluster`]).
    /// Returns the EXEC failure of each, if any.
    pub(super) async fn replace_many(
        &mut self,
        items: &[(&Key, Dumped)],
        id: &str,
        winner: &str,
    ) -> Result<Vec<Option<String>>, SyncError> {
        let c = match self {
            SideConn::One(c) => c,
            SideConn::Cluster(n) => {
                let mut out = Vec::with_capacity(items.len());
                for (key, value) in items {
                    out.push(replace_in_cluster(n, key, value, id, winner).await?);
                }
                return Ok(out);
            }
        };
        for (key, value) in items {
            queue_replace(c, key, value, id, winner);
        }
        c.flush().await.map_err(sink_err)?;
        let mut out = Vec::with_capacity(items.len());
        for _ in items {
            let mut exec = Frame::Null;
            for _ in 0..REPLACE_REPLIES {
                exec = c.read_frame().await.map_err(sink_err)?;
            }
            out.push(exec_failure(&exec));
        }
        Ok(out)
    }
}

/// One item of [`SideConn::replace_many`] on a cluster side: on the master owning the
/// key's slot, with a tag key of that slot (following `MOVED`).
async fn replace_in_cluster(
    n: &mut Nodes,
    key: &Key,
    value: &Dumped,
    id: &str,
    winner: &str,
) -> Result<Option<String>, SyncError> {
    let ttl = ttl_arg(value);
    let write = restore_or_del(key, value, &ttl);
    if key.0 != 0 {
        return Ok(Some(format!("db {} does not exist on a cluster", key.0)));
    }
    let slot = key_slot(&key.1);
    let tag = format!("__tandem:conflict:{id}:{{{}}}", tags::tag(slot));
    let hset = tag_write(&tag, key, winner);
    let mut last = String::new();
    // Bounded: a slot in migration settles within seconds.
    for _ in 0..50 {
        let Some(node) = n.owner(slot) else {
            n.refresh().await.ok();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match cluster_tx(n, node, &[&write, &hset[..]]).await {
            Ok(Tx::Done(exec)) => return Ok(exec_failure(&exec)),
            Ok(Tx::Redirected(e)) => {
                if let Some(Redirect::Moved(addr)) = redirect(&e) {
                    n.moved(slot, &addr);
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                last = e;
            }
            Err(e) if e.is_retryable() => {
                last = e.to_string();
                n.refresh().await.ok();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(sink_err(e)),
        }
    }
    Ok(Some(format!("slot {slot}: {last}")))
}

/// Replies to one [`queue_replace`]: MULTI, four QUEUED, EXEC.
const REPLACE_REPLIES: usize = 6;

/// Queue the transaction of [`SideConn::replace_many`] for one item on a standalone side.
fn queue_replace(c: &mut Conn, key: &Key, value: &Dumped, id: &str, winner: &str) {
    let ttl = ttl_arg(value);
    let write = restore_or_del(key, value, &ttl);
    let tag = format!("__tandem:conflict:{id}");
    let db = key.0.to_string();
    c.queue(&[b"MULTI"]);
    c.queue(&[b"SELECT", db.as_bytes()]);
    c.queue(&write);
    c.queue(&[b"SELECT", b"0"]);
    c.queue(&tag_write(&tag, key, winner));
    c.queue(&[b"EXEC"]);
}

/// The TTL argument of [`restore_or_del`].
fn ttl_arg(value: &Dumped) -> String {
    value.as_ref().map(|v| v.1.to_string()).unwrap_or_default()
}

/// `RESTORE key ttl payload REPLACE` for a value, `DEL key` for none.
fn restore_or_del<'a>(key: &'a Key, value: &'a Dumped, ttl: &'a str) -> Vec<&'a [u8]> {
    match value {
        Some((p, _)) => vec![b"RESTORE", &key.1, ttl.as_bytes(), p, b"REPLACE"],
        None => vec![b"DEL", &key.1],
    }
}

/// The tag write that makes a copy tandem's own: the loser's stream drops it as an echo.
fn tag_write<'a>(tag: &'a str, key: &'a Key, winner: &'a str) -> [&'a [u8]; 6] {
    [
        b"HSET",
        tag.as_bytes(),
        b"key",
        &key.1,
        b"winner",
        winner.as_bytes(),
    ]
}

/// A `DUMP` and a `PTTL` reply as the copy wants them: the payload and the TTL to
/// restore with (0: none).
fn dumped(payload: Frame, pttl: Frame) -> Dumped {
    match payload {
        Frame::BulkString(p) => {
            let ttl = match pttl {
                Frame::Integer(t) if t > 0 => t,
                _ => 0,
            };
            Some((p, ttl))
        }
        _ => None,
    }
}

enum Tx {
    Done(Frame),
    /// A queued command was refused (MOVED, ASK, TRYAGAIN…): EXEC discarded it all.
    Redirected(String),
}

async fn cluster_tx(n: &mut Nodes, node: usize, cmds: &[&[&[u8]]]) -> Result<Tx, ConnError> {
    n.request_node(node, false, &[b"MULTI"]).await?;
    let mut refused = None;
    for argv in cmds {
        if let Frame::Error(e) = n.request_node(node, false, argv).await? {
            refused.get_or_insert(e.to_string());
        }
    }
    let exec = n.request_node(node, false, &[b"EXEC"]).await?;
    Ok(match refused {
        Some(e) => Tx::Redirected(e),
        None => Tx::Done(exec),
    })
}

fn exec_failure(exec: &Frame) -> Option<String> {
    match exec {
        Frame::Array(items) => items
            .iter()
            .find(|f| matches!(f, Frame::Error(_)))
            .map(|f| format!("{f:?}")),
        other => Some(format!("{other:?}")),
    }
}

pub(super) fn sink_err(e: ConnError) -> SyncError {
    SyncError::Sink(e.into())
}
