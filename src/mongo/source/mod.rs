//! Source readers: a change stream over the whole deployment (default), the oplog of a
//! replica set (`--fetch oplog`), or a recorded oplog file (`tandem mongo replay`).
//! Each hands out [`Unit`]s in source order, transactions whole.

pub mod assemble;
pub mod entry;
pub mod file;
pub mod merge;
pub mod oplog;
pub mod stream;

use bson::Document;

use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::event::Unit;
use crate::core::OpTime;

/// A reader of one source history.
///
/// Contract: `next` returns units in source order, each with the position just after
/// it, never part of a transaction. `Ok(None)` means nothing arrived within the
/// reader's wait (a file reader: the end of the file); calling again continues. An
/// error is retryable or fatal as [`MongoError`] classifies it; after one the reader is
/// reopened from the last applied position, never reused.
pub enum Reader {
    Stream(Box<stream::StreamReader>),
    Oplog(Box<oplog::OplogReader>),
    File(file::FileReader),
}

impl Reader {
    pub async fn next(&mut self) -> Result<Option<Unit>> {
        match self {
            Reader::Stream(r) => r.next().await,
            Reader::Oplog(r) => r.next().await,
            Reader::File(r) => r.next_unit(),
        }
    }
}

/// What the source says of itself: the history its positions belong to and its
/// latest operation time.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// The replica set's name, or `mongos` for a sharded cluster's router.
    pub history: String,
    pub sharded: bool,
    pub last_write: OpTime,
}

pub async fn probe(ep: &MongoEndpoint) -> Result<SourceInfo> {
    let hello = ep.hello().await?;
    let sharded = hello.get_str("msg") == Ok("isdbgrid");
    let history = match hello.get_str("setName") {
        Ok(s) => s.to_string(),
        Err(_) if sharded => "mongos".to_string(),
        Err(_) => {
            return Err(MongoError::fatal(
                ep.name(),
                "the server is a standalone mongod: it has no oplog and no change streams. \
                 Run it as a replica set (even of one member: --replSet rs0, then rs.initiate())",
            ));
        }
    };
    let ts = |d: &Document| match d.get("operationTime") {
        Some(bson::Bson::Timestamp(t)) => OpTime::new(t.time, t.increment),
        _ => OpTime(0),
    };
    let last_write = hello
        .get_document("lastWrite")
        .ok()
        .and_then(|lw| lw.get_document("opTime").ok())
        .and_then(|o| match o.get("ts") {
            Some(bson::Bson::Timestamp(t)) => Some(OpTime::new(t.time, t.increment)),
            _ => None,
        })
        .unwrap_or_else(|| ts(&hello));
    Ok(SourceInfo {
        history,
        sharded,
        last_write,
    })
}
