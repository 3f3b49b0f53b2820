//! The resolver of `converge`: once both writes of a conflict are applied both ways
//! (`Detector::due`), the winner's whole document — or its absence — is copied to the
//! loser, in a transaction that writes `__tandem.tags` first so the loser's link drops
//! it as an echo.
//!
//! The copy read the winner's document as it was then, which may already hold a later
//! write the winner's link has not observed yet; that write then reaches the loser a
//! second time. So each resolved document is checked again until both sides agree: when
//! they differ and neither side wrote it since, the winner is copied again (bounded).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Document, doc};

use super::Key;
use super::judge::{ConflictLog, Progress, key_id};
use crate::core::conflict::{Conflict, Detector, Side, Write};
use crate::core::shutdown::Shutdown;
use crate::mongo::checkpoint::TAGS;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::Result;
use crate::mongo::ns::TANDEM_DB;

/// Rechecks of one document before the resolver gives up on it (and says so).
const RECHECKS: u32 = 20;
const RECHECK_AFTER: Duration = Duration::from_millis(500);

pub struct Resolver {
    pub sides: [MongoEndpoint; 2],
    pub id: String,
    pub detector: Arc<Detector<Key>>,
    pub progress: Arc<Progress>,
    pub log: Option<Arc<ConflictLog>>,
}

struct Recheck {
    key: Key,
    winner: Side,
    /// The latest writes known when it was last copied.
    writes: [Option<Write>; 2],
    at: Instant,
    left: u32,
}

impl Resolver {
    pub async fn run(self, mut shutdown: Shutdown) -> Result<()> {
        let mut rechecks: VecDeque<Recheck> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tick.tick() => {}
            }
            let progress = self.progress.clone();
            for c in self.detector.due(|s| progress.applied(s)) {
                self.copy(&c.key, c.winner).await?;
                crate::metrics::mongo_resolved("copied");
                if let Some(log) = &self.log {
                    log.write(&c, "resolved");
                }
                rechecks.push_back(self.recheck_of(&c));
            }
            let now = Instant::now();
            let mut later = VecDeque::new();
            while let Some(r) = rechecks.pop_front() {
                if r.at > now {
                    later.push_back(r);
                    continue;
                }
                if let Some(next) = self.recheck(r).await? {
                    later.push_back(next);
                }
            }
            rechecks = later;
        }
    }

    fn recheck_of(&self, c: &Conflict<Key>) -> Recheck {
        Recheck {
            key: c.key.clone(),
            winner: c.winner,
            writes: self.detector.last_writes(&c.key),
            at: Instant::now() + RECHECK_AFTER,
            left: RECHECKS,
        }
    }

    /// Both sides compared once more; the recheck to do next, if any.
    async fn recheck(&self, mut r: Recheck) -> Result<Option<Recheck>> {
        let a = self.read(Side::A, &r.key).await?;
        let b = self.read(Side::B, &r.key).await?;
        if a == b {
            return Ok(None);
        }
        let writes = self.detector.last_writes(&r.key);
        let quiet = writes == r.writes;
        let caught_up = writes
            .iter()
            .flatten()
            .all(|w| self.progress.applied(w.space) >= w.own);
        r.at = Instant::now() + RECHECK_AFTER;
        if !quiet || !caught_up {
            // A newer write is still travelling: it decides, or makes a conflict of its own.
            r.writes = writes;
            return Ok(Some(r));
        }
        if r.left == 0 {
            tracing::warn!(
                ns = %r.key.0, id = %key_id(&r.key),
                "conflict: the two sides still differ after {RECHECKS} copies of the winner; left as is"
            );
            return Ok(None);
        }
        r.left -= 1;
        self.copy(&r.key, r.winner).await?;
        crate::metrics::mongo_resolved("rechecked");
        Ok(Some(r))
    }

    async fn read(&self, side: Side, key: &Key) -> Result<Option<Document>> {
        let ep = &self.sides[side as usize];
        ep.client
            .database(&key.0.db)
            .collection::<Document>(&key.0.coll)
            .find_one(doc! {"_id": key_id(key)})
            .await
            .map_err(|e| ep.err(format!("reading {} for a conflict", key.0), &e))
    }

    /// The winner's document (or its absence) written on the loser, tagged.
    async fn copy(&self, key: &Key, winner: Side) -> Result<()> {
        let doc = self.read(winner, key).await?;
        let ep = &self.sides[winner.other() as usize];
        let id = key_id(key);
        let coll = ep
            .client
            .database(&key.0.db)
            .collection::<Document>(&key.0.coll);
        let tags = ep.client.database(TANDEM_DB).collection::<Document>(TAGS);
        let what = format!("resolving a conflict on {} (_id {id})", key.0);
        let mut tx = ep.retrying(&what);
        loop {
            let mut s = tx.begin().await?;
            let r = async {
                tags.update_one(doc! {"_id": &self.id}, doc! {"$inc": {"resolved": 1i64}})
                    .upsert(true)
                    .session(&mut s)
                    .await?;
                match &doc {
                    Some(d) => {
                        coll.replace_one(doc! {"_id": id.clone()}, d.clone())
                            .upsert(true)
                            .session(&mut s)
                            .await?;
                    }
                    None => {
                        coll.delete_one(doc! {"_id": id.clone()})
                            .session(&mut s)
                            .await?;
                    }
                }
                s.commit_transaction().await
            }
            .await;
            if tx.ended(&mut s, r).await? {
                return Ok(());
            }
        }
    }
}
