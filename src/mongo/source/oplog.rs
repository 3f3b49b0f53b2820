//! Tailing `local.oplog.rs` of one replica set: a tailable, awaitData cursor on
//! `ts > checkpoint`, after checking that the checkpoint's entry is still there.

use std::collections::VecDeque;
use std::time::Duration;

use bson::{Document, doc};
use mongodb::options::CursorType;
use mongodb::{Collection, Cursor};

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
    cursor: Option<Cursor<Document>>,
    last: OpTime,
    asm: Assembler,
    ready: VecDeque<Unit>,
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
        if self.cursor.is_none() {
            let filter = if self.last.0 == 0 {
                doc! {}
            } else {
                doc! {"ts": {"$gt": ts(self.last)}}
            };
            let c = self
                .oplog
                .find(filter)
                .cursor_type(CursorType::TailableAwait)
                .max_await_time(Duration::from_millis(500))
                .no_cursor_timeout(true)
                .batch_size(1000)
                .await
                .map_err(|e| self.err("opening a tailable cursor", &e))?;
            self.cursor = Some(c);
        }
        let cursor = self.cursor.as_mut().expect("opened above");
        match cursor.advance().await {
            Ok(true) => {}
            Ok(false) => {
                // The cursor died (the oplog rolled over under it, or the server
                // closed it): reopen after the last entry read.
                self.cursor = None;
                return Ok(None);
            }
            Err(e) => {
                self.cursor = None;
                if crate::mongo::error::driver_code(&e) == Some(136) {
                    return Err(history_lost(&self.name, self.last));
                }
                return Err(self.err("reading the oplog", &e));
            }
        }
        let raw = cursor.current();
        let e: Document = raw.try_into().map_err(|e| {
            MongoError::fatal(&self.name, format!("oplog entry is not valid BSON: {e}"))
        })?;
        let unit = self.read_entry(&e).await?;
        Ok(unit)
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
        Ok(Some(unit_of(pos, wall_ms, payload, txn)))
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

pub(crate) fn unit_of(pos: MongoPosition, wall_ms: u64, payload: Payload, txn: bool) -> Unit {
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
