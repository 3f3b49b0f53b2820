//! Tailing `local.oplog.rs` of one replica set: a tailable, awaitData cursor on
//! `ts > checkpoint`, after checking that the checkpoint's entry is still there.
//!
//! The cursor is driven with `find` / `getMore` commands rather than the driver's
//! cursor, because the reader needs to see batch boundaries. A server may answer the
//! `find` from one snapshot and begin tailing from a slightly later point (secantus does:
//! ../shared/research/secantus.md). The entries committed in between would then be
//! skipped silently. So, where the opening snapshot ends (the first batch shorter than
//! asked for), the reader checks once that no entry lies between that batch's last entry
//! and the next batch's first. If one does, it reopens after the last entry it handed
//! out. On mongod the check finds nothing and costs one indexed query per open.

use std::collections::VecDeque;

use bson::{Document, doc};
use mongodb::Collection;

use super::assemble::{Assembler, Ready, chain_link};
use super::entry::{self, Header};
use crate::core::{MongoPosition, OpTime};
use crate::mongo::checkpoint::ts;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::{MongoError, Result};
use crate::mongo::event::{Payload, Unit};

pub struct OplogReader {
    name: String,
    history: String,
    oplog: Collection<Document>,
    client: mongodb::Client,
    cursor: Option<Tail>,
    last: OpTime,
    asm: Assembler,
    ready: VecDeque<Unit>,
}

/// Entries per `find` / `getMore` batch.
const BATCH: usize = 1000;

/// An open tailable cursor and the entries of its last batch not yet handed out.
struct Tail {
    id: i64,
    /// The session the cursor was opened in: a server refuses a `getMore` from another.
    session: mongodb::ClientSession,
    buf: VecDeque<Document>,
    /// Looking for the end of the opening snapshot (the first short batch).
    seeking: bool,
    /// That end was found at this entry: no entry may lie between it and the next
    /// batch's first.
    check_after: Option<OpTime>,
}

impl Tail {
    async fn kill(&mut self) {
        if self.id != 0 {
            let cmd = doc! {"killCursors": "oplog.rs", "cursors": [self.id]};
            let client = self.session.client();
            let _ = client
                .database("local")
                .run_command(cmd)
                .session(&mut self.session)
                .await;
            self.id = 0;
        }
    }
}

impl Drop for Tail {
    /// A reader dropped (its link stopping or reconnecting) closes its cursor, which
    /// `noCursorTimeout` would otherwise keep on the server.
    fn drop(&mut self) {
        if self.id == 0 {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (client, id) = (self.session.client(), self.id);
            rt.spawn(async move {
                let cmd = doc! {"killCursors": "oplog.rs", "cursors": [id]};
                let _ = client.database("local").run_command(cmd).await;
            });
        }
    }
}

impl OplogReader {
    /// A reader of the entries after `after` (0: from the newest entry on). Fails with
    /// a history-lost error when the oplog no longer holds `after`.
    pub async fn open(ep: &MongoEndpoint, history: &str, after: OpTime) -> Result<OplogReader> {
        let name = ep.name();
        let oplog = ep
            .client
            .database("local")
            .collection::<Document>("oplog.rs");
        if after.0 != 0 {
            let first = oplog
                .find_one(doc! {"ts": {"$gte": ts(after)}})
                .await
                .map_err(|e| MongoError::from_driver(format!("{name}: reading the oplog"), &e))?;
            let found = first
                .as_ref()
                .and_then(|d| entry::header(d).ok())
                .map(|h| h.ts);
            if found != Some(after) {
                return Err(history_lost(&name, after));
            }
        }
        Ok(OplogReader {
            name,
            history: history.to_string(),
            oplog,
            client: ep.client.clone(),
            cursor: None,
            last: after,
            asm: Assembler::default(),
            ready: VecDeque::new(),
        })
    }

    pub async fn next(&mut self) -> Result<Option<Unit>> {
        if let Some(u) = self.ready.pop_front() {
            return Ok(Some(u));
        }
        if let Some(e) = self.cursor.as_mut().and_then(|c| c.buf.pop_front()) {
            return self.read_entry(&e).await;
        }
        match self.cursor.take() {
            None => self.open_cursor().await?,
            Some(tail) => self.get_more(tail).await?,
        }
        Ok(None)
    }

    async fn open_cursor(&mut self) -> Result<()> {
        let filter = if self.last.0 == 0 {
            doc! {}
        } else {
            doc! {"ts": {"$gt": ts(self.last)}}
        };
        let cmd = doc! {
            "find": "oplog.rs", "filter": filter, "tailable": true, "awaitData": true,
            "noCursorTimeout": true, "batchSize": BATCH as i32,
        };
        let mut session = self
            .client
            .start_session()
            .await
            .map_err(|e| self.err("starting a session", &e))?;
        let reply = self
            .client
            .database("local")
            .run_command(cmd)
            .session(&mut session)
            .await
            .map_err(|e| self.cursor_err("opening a tailable cursor", &e))?;
        let (id, batch) = self.batch_of(&reply, "firstBatch")?;
        let mut tail = Tail {
            id,
            session,
            buf: VecDeque::new(),
            seeking: true,
            check_after: None,
        };
        self.take_batch(&mut tail, batch).await?;
        self.cursor = Some(tail);
        Ok(())
    }

    async fn get_more(&mut self, mut tail: Tail) -> Result<()> {
        if tail.id == 0 {
            // The server closed the cursor (the oplog rolled over under it, or it was
            // killed): reopen after the last entry read.
            return Ok(());
        }
        let cmd = doc! {
            "getMore": tail.id, "collection": "oplog.rs", "batchSize": BATCH as i32,
            "maxTimeMS": 500,
        };
        let sent = self
            .client
            .database("local")
            .run_command(cmd)
            .session(&mut tail.session)
            .await;
        let reply = match sent {
            Ok(r) => r,
            Err(e) if crate::mongo::error::driver_code(&e) == Some(43) => return Ok(()),
            Err(e) => return Err(self.cursor_err("reading the oplog", &e)),
        };
        let (id, batch) = self.batch_of(&reply, "nextBatch")?;
        tail.id = id;
        if let (Some(after), Some(first)) = (tail.check_after, batch.first()) {
            let first = entry::header(first)?.ts;
            let skipped = self
                .oplog
                .find_one(doc! {"ts": {"$gt": ts(after), "$lt": ts(first)}})
                .await
                .map_err(|e| self.err("checking the oplog for skipped entries", &e))?;
            if skipped.is_some() {
                tracing::info!(
                    "{}: the tailable cursor skipped entries after {after}: reopening",
                    self.name
                );
                tail.kill().await;
                return Ok(());
            }
            tail.check_after = None;
        }
        self.take_batch(&mut tail, batch).await?;
        self.cursor = Some(tail);
        Ok(())
    }

    /// Queues a batch; the first short one ends the opening snapshot.
    async fn take_batch(&mut self, tail: &mut Tail, batch: Vec<Document>) -> Result<()> {
        if tail.seeking && batch.len() < BATCH {
            tail.seeking = false;
            let end = match batch.last() {
                Some(e) => entry::header(e)?.ts,
                None => self.last,
            };
            tail.check_after = Some(end);
        }
        tail.buf.extend(batch);
        Ok(())
    }

    fn batch_of(&self, reply: &Document, field: &str) -> Result<(i64, Vec<Document>)> {
        let bad = || MongoError::fatal(&self.name, format!("a cursor reply without {field}"));
        let c = reply.get_document("cursor").map_err(|_| bad())?;
        let id = match c.get("id") {
            Some(bson::Bson::Int64(n)) => *n,
            Some(bson::Bson::Int32(n)) => *n as i64,
            _ => return Err(bad()),
        };
        let batch = c
            .get_array(field)
            .map_err(|_| bad())?
            .iter()
            .map(|b| match b {
                bson::Bson::Document(d) => Ok(d.clone()),
                _ => Err(MongoError::fatal(
                    &self.name,
                    "an oplog entry is not a document",
                )),
            })
            .collect::<Result<_>>()?;
        Ok((id, batch))
    }

    fn cursor_err(&self, what: &str, e: &mongodb::error::Error) -> MongoError {
        if crate::mongo::error::driver_code(e) == Some(136) {
            return history_lost(&self.name, self.last);
        }
        self.err(what, e)
    }

    async fn read_entry(&mut self, e: &Document) -> Result<Option<Unit>> {
        let Header { ts, wall_ms } = entry::header(e)?;
        self.last = ts;
        let pos = MongoPosition::oplog(&self.history, ts);
        let ready = self.asm.push(entry::parse(e)?);
        let (payload, txn) = match ready {
            Ready::Held => return Ok(None),
            Ready::Unit { payload, txn } => (payload, txn),
            Ready::Missing { before, ops } => {
                let mut chain = self.read_chain(before).await?;
                chain.extend(ops);
                (Payload::Ops(chain), true)
            }
        };
        Ok(Some(unit_of(pos, wall_ms, payload, txn, lsid_of(e))))
    }

    /// The ops of the chain ending just before `before`, read back through `prevOpTime`.
    async fn read_chain(&mut self, mut before: OpTime) -> Result<Vec<crate::mongo::event::Op>> {
        let mut parts = Vec::new();
        for _ in 0..100_000 {
            if before.0 == 0 {
                break;
            }
            let e = self
                .oplog
                .find_one(doc! {"ts": ts(before)})
                .await
                .map_err(|e| self.err("reading a transaction's earlier entries", &e))?
                .ok_or_else(|| history_lost(&self.name, before))?;
            let (ops, prev) = chain_link(entry::parse(&e)?).ok_or_else(|| {
                MongoError::fatal(
                    &self.name,
                    format!("oplog entry {before} is not part of the transaction that names it"),
                )
            })?;
            parts.push(ops);
            before = prev;
        }
        Ok(parts.into_iter().rev().flatten().collect())
    }

    fn err(&self, what: &str, e: &mongodb::error::Error) -> MongoError {
        MongoError::from_driver(format!("{}: {what}", self.name), e)
            .at(&MongoPosition::oplog(&self.history, self.last))
    }
}

/// The time of the newest entry in the oplog: where an oplog reader starts when nothing
/// was applied yet (an operation time from `hello` may belong to no entry at all).
pub async fn newest_entry(ep: &MongoEndpoint) -> Result<OpTime> {
    let oplog = ep
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let last = oplog
        .find_one(doc! {})
        .sort(doc! {"$natural": -1})
        .await
        .map_err(|e| MongoError::from_driver(format!("{}: reading the oplog", ep.name()), &e))?
        .ok_or_else(|| MongoError::fatal(ep.name(), "the oplog is empty"))?;
    Ok(entry::header(&last)?.ts)
}

/// The `id` of an oplog entry's or change event's `lsid`.
pub(crate) fn lsid_of(d: &Document) -> Option<Vec<u8>> {
    match d.get_document("lsid").ok()?.get("id")? {
        bson::Bson::Binary(b) => Some(b.bytes.clone()),
        _ => None,
    }
}

pub(crate) fn unit_of(
    pos: MongoPosition,
    wall_ms: u64,
    payload: Payload,
    txn: bool,
    lsid: Option<Vec<u8>>,
) -> Unit {
    let touches_tandem = match &payload {
        Payload::Ops(ops) => ops.iter().any(|o| o.ns().db == crate::mongo::ns::TANDEM_DB),
        Payload::Ddl(d) => d
            .namespaces()
            .iter()
            .any(|n| n.db == crate::mongo::ns::TANDEM_DB),
        Payload::Noop => false,
    };
    Unit {
        pos,
        wall_ms,
        txn,
        touches_tandem,
        lsid,
        payload,
    }
}

pub fn history_lost(name: &str, at: OpTime) -> MongoError {
    let mut e = MongoError::fatal(
        name,
        format!(
            "the source's history no longer holds position {at} (the oplog rolled past it): \
             a new full sync is needed (drop the replicated namespaces on the target and \
             start again with a new --id, or pass --on-history-lost resync)"
        ),
    );
    e.code = Some(crate::mongo::error::HISTORY_LOST);
    e
}
