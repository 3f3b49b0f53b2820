//! Slots moving between the masters of a cluster *source* (resharding).
//!
//! `MIGRATE` moves a key from master X to master Y: Y's stream carries the
//! `RESTORE-ASKING` that created it there, X's stream the `DEL` that removed it from X.
//! tandem reads the two streams with two engines, so the target may get the `RESTORE`
//! first and the `DEL` second — and lose the key (tests/sync_cluster.rs
//! `source_slot_migration_loses_no_key` failed that way before this guard).
//!
//! The guard looks at every `DEL`/`UNLINK` of a cluster source's engine before it is
//! applied and asks the source where each key lives now: `EXISTS key` on X answers
//! normally when X still serves the key's slot (a user's DEL: applied), and `ASK`/`MOVED`
//! when the slot is migrating or gone; then the new owner is asked (`ASKING`, `EXISTS`).
//! A key that exists there is dropped from the DEL: its value lives on in the other
//! master's stream, which the other engine applies. A key that exists nowhere is
//! deleted. Either way the target ends as the source is.
//!
//! The cost is one round trip to the source per DEL/UNLINK unit of a cluster source.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::SyncError;
use super::incr::TargetWrite;
use crate::redis::cluster::nodes::{Redirect, redirect};
use crate::redis::conn::{Conn, ConnError, Frame};
use crate::redis::url::Endpoint;

pub struct MigrationGuard {
    source: Endpoint,
    conns: HashMap<String, Conn>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn is_delete(argv: &[Bytes]) -> bool {
    argv.len() >= 2
        && (argv[0].eq_ignore_ascii_case(b"DEL") || argv[0].eq_ignore_ascii_case(b"UNLINK"))
}

impl MigrationGuard {
    pub fn new(source: Endpoint) -> Self {
        Self {
            source,
            conns: HashMap::new(),
        }
    }

    /// `writes` with the keys that moved to another source master taken out of their
    /// DEL/UNLINK (and a DEL left with no key dropped).
    pub async fn filter(
        &mut self,
        writes: Vec<TargetWrite>,
    ) -> Result<Vec<TargetWrite>, SyncError> {
        if !writes.iter().any(|w| is_delete(&w.argv)) {
            return Ok(writes);
        }
        let mut out = Vec::with_capacity(writes.len());
        for mut w in writes {
            if !is_delete(&w.argv) {
                out.push(w);
                continue;
            }
            let mut keep = vec![w.argv[0].clone()];
            for key in &w.argv[1..] {
                if !self.lives_elsewhere(key).await? {
                    keep.push(key.clone());
                }
            }
            if keep.len() == w.argv.len() {
                out.push(w);
            } else if keep.len() > 1 {
                w.argv = keep;
                w.raw = None;
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Whether `key` is now served by another master of the source, and exists there.
    async fn lives_elsewhere(&mut self, key: &Bytes) -> Result<bool, SyncError> {
        let home = self.source.addr();
        let reply = self.request(&home, &[b"EXISTS", key], false).await?;
        let Frame::Error(e) = reply else {
            return Ok(false);
        };
        let addr = match redirect(&e) {
            Some(Redirect::Ask(a)) | Some(Redirect::Moved(a)) => a,
            None => return Err(self.err(&home, format!("EXISTS answered {e}"))),
        };
        match self.request(&addr, &[b"EXISTS", key], true).await? {
            Frame::Integer(n) => Ok(n > 0),
            other => Err(self.err(&addr, format!("EXISTS answered {other:?}"))),
        }
    }

    async fn request(
        &mut self,
        addr: &str,
        argv: &[&[u8]],
        asking: bool,
    ) -> Result<Frame, SyncError> {
        let conn = match self.conns.get_mut(addr) {
            Some(c) => c,
            None => {
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .ok_or_else(|| self.err(addr, "unreadable node address".into()))?;
                let mut ep = self.source.with_db(0);
                ep.host = host.trim_matches(['[', ']']).to_string();
                ep.port = port;
                let c = Conn::connect(&ep, TIMEOUT).await.map_err(link_err)?;
                self.conns.entry(addr.to_string()).or_insert(c)
            }
        };
        if asking {
            conn.queue(&[b"ASKING"]);
        }
        conn.queue(argv);
        let sent = conn.flush().await;
        let reply = match sent {
            Ok(()) if asking => match conn.read_frame().await {
                Ok(_) => conn.read_frame().await,
                Err(e) => Err(e),
            },
            Ok(()) => conn.read_frame().await,
            Err(e) => Err(e),
        };
        reply.map_err(|e| {
            self.conns.remove(addr);
            link_err(e)
        })
    }

    fn err(&self, addr: &str, detail: String) -> SyncError {
        SyncError::Setup {
            endpoint: addr.to_string(),
            detail: format!("checking where a deleted key lives (source resharding): {detail}"),
        }
    }
}

fn link_err(e: ConnError) -> SyncError {
    SyncError::Sink(e.into())
}
