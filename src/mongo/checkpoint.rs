//! tandem's checkpoint on a MongoDB target: one document per link in
//! `__tandem.checkpoints`, upserted first inside every transaction that applies a batch,
//! so it says exactly what the target holds.

use bson::{Binary, Bson, DateTime, Document, Timestamp, doc, spec::BinarySubtype};

use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::ns::TANDEM_DB;
use crate::core::{MongoPosition, OpTime};

pub const CHECKPOINTS: &str = "checkpoints";
/// Copy progress: one document per finished partition.
pub const COPY: &str = "copy";
/// Two-way: what tandem writes first in a transaction that has no checkpoint of its
/// own (a tagged copy batch, a conflict's resolution), so the other link knows it.
pub const TAGS: &str = "tags";
/// Two-way with DDL both ways: the DDL a link is about to apply, written just before it
/// (`{_id: link, key}`), so the other link knows the DDL that follows is its echo.
pub const DDL_TAGS: &str = "ddl";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The full copy is running; `pos` is where the changes made during it begin.
    Copy,
    /// Incremental: `pos` is the last applied change.
    Incr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub pos: MongoPosition,
    pub phase: Phase,
    /// Where the copy ended: changes at or before it are replayed over copied
    /// documents, so a duplicate insert or a missing document is expected there.
    pub copy_end: Option<OpTime>,
}

pub fn ts(t: OpTime) -> Bson {
    Bson::Timestamp(Timestamp {
        time: t.secs(),
        increment: t.inc(),
    })
}

fn op_time(b: Option<&Bson>) -> Option<OpTime> {
    match b {
        Some(Bson::Timestamp(t)) => Some(OpTime::new(t.time, t.increment)),
        _ => None,
    }
}

/// The fields a batch sets: the position only (phase and copy end stay).
pub fn position_fields(pos: &MongoPosition) -> Document {
    let token = match &pos.token {
        Some(t) => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: t.clone(),
        }),
        None => Bson::Null,
    };
    doc! {
        "history": &pos.history,
        "ts": ts(pos.ts),
        "token": token,
        "at": DateTime::now(),
    }
}

pub fn full_fields(c: &Checkpoint) -> Document {
    let mut d = position_fields(&c.pos);
    d.insert(
        "phase",
        if c.phase == Phase::Copy {
            "copy"
        } else {
            "incr"
        },
    );
    d.insert("copy_end", c.copy_end.map(ts).unwrap_or(Bson::Null));
    d
}

pub fn parse(id: &str, d: &Document) -> Result<Checkpoint> {
    let bad = |why: &str| {
        MongoError::fatal(
            format!("checkpoint {TANDEM_DB}.{CHECKPOINTS} {{_id: {id:?}}}"),
            why.to_string(),
        )
    };
    let history = d.get_str("history").map_err(|_| bad("no history"))?;
    let t = op_time(d.get("ts")).ok_or_else(|| bad("no ts"))?;
    let token = match d.get("token") {
        Some(Bson::Binary(b)) => Some(b.bytes.clone()),
        _ => None,
    };
    let phase = match d.get_str("phase") {
        Ok("copy") => Phase::Copy,
        Ok("incr") | Err(_) => Phase::Incr,
        Ok(other) => return Err(bad(&format!("unknown phase {other:?}"))),
    };
    Ok(Checkpoint {
        pos: MongoPosition {
            history: history.to_string(),
            ts: t,
            token,
        },
        phase,
        copy_end: op_time(d.get("copy_end")),
    })
}

pub async fn load(target: &MongoEndpoint, id: &str) -> Result<Option<Checkpoint>> {
    let coll = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(CHECKPOINTS);
    let d = coll.find_one(doc! {"_id": id}).await.map_err(|e| {
        MongoError::from_driver(format!("{}: reading checkpoint {id:?}", target.name()), &e)
    })?;
    d.map(|d| parse(id, &d)).transpose()
}

/// Outside a transaction: the copy's start and end, and after a DDL.
pub async fn save(target: &MongoEndpoint, id: &str, c: &Checkpoint) -> Result<()> {
    upsert(target, id, full_fields(c)).await
}

/// The position only (phase and copy end stay).
pub async fn save_position(target: &MongoEndpoint, id: &str, pos: &MongoPosition) -> Result<()> {
    upsert(target, id, position_fields(pos)).await
}

async fn upsert(target: &MongoEndpoint, id: &str, fields: Document) -> Result<()> {
    let coll = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(CHECKPOINTS);
    coll.update_one(doc! {"_id": id}, doc! {"$set": fields})
        .upsert(true)
        .await
        .map_err(|e| {
            MongoError::from_driver(format!("{}: writing checkpoint {id:?}", target.name()), &e)
        })?;
    Ok(())
}

/// The checkpoints of parallel apply workers of link `id` (`<id>/<k>`).
pub async fn load_workers(target: &MongoEndpoint, id: &str) -> Result<Vec<(String, Checkpoint)>> {
    let coll = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(CHECKPOINTS);
    let prefix = format!("{id}/");
    let mut cur = coll
        .find(doc! {"_id": {"$gte": &prefix, "$lt": format!("{id}0")}})
        .await
        .map_err(|e| {
            MongoError::from_driver(
                format!("{}: reading checkpoints of {id:?}", target.name()),
                &e,
            )
        })?;
    let mut out = Vec::new();
    while cur.advance().await.map_err(|e| {
        MongoError::from_driver(
            format!("{}: reading checkpoints of {id:?}", target.name()),
            &e,
        )
    })? {
        let d = Document::try_from(cur.current())
            .map_err(|e| MongoError::fatal(target.name(), format!("checkpoint: {e}")))?;
        let wid = d.get_str("_id").unwrap_or_default().to_string();
        if wid
            .strip_prefix(&prefix)
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push((wid.clone(), parse(&wid, &d)?));
        }
    }
    Ok(out)
}

pub async fn delete(target: &MongoEndpoint, id: &str) -> Result<()> {
    let coll = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(CHECKPOINTS);
    coll.delete_one(doc! {"_id": id}).await.map_err(|e| {
        MongoError::from_driver(format!("{}: removing checkpoint {id:?}", target.name()), &e)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let c = Checkpoint {
            pos: MongoPosition::stream("rs0", OpTime::new(5, 6), vec![1, 2, 3]),
            phase: Phase::Copy,
            copy_end: Some(OpTime::new(7, 1)),
        };
        assert_eq!(parse("x", &full_fields(&c)).unwrap(), c);
        let o = Checkpoint {
            pos: MongoPosition::oplog("rs0", OpTime::new(5, 6)),
            phase: Phase::Incr,
            copy_end: None,
        };
        assert_eq!(parse("x", &full_fields(&o)).unwrap(), o);
        assert!(parse("x", &doc! {"ts": 1}).is_err());
    }
}
