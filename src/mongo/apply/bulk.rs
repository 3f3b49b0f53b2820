//! A batch's writes as one `bulkWrite` command (servers of wire version 25, MongoDB 8.0,
//! and later): the checkpoint upsert first, then every end state of every namespace, in
//! one round trip instead of a command per namespace and kind.

use bson::{Bson, Document, doc};
use mongodb::ClientSession;

use super::fold::Folded;
use super::{EndState, count_field, end_states, expect_count};
use crate::core::MongoPosition;
use crate::mongo::checkpoint::{self, CHECKPOINTS};
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::{MongoError, Result};
use crate::mongo::ns::TANDEM_DB;

/// Operations per command and about that many bytes: far below the server's limits
/// (100,000 operations, 48 MB messages).
const CHUNK_OPS: usize = 1000;
const CHUNK_BYTES: usize = 8 << 20;

pub async fn write(
    target: &MongoEndpoint,
    s: &mut ClientSession,
    ckpt_id: &str,
    end: &MongoPosition,
    folded: &Folded,
) -> Result<()> {
    let mut ns_info: Vec<Bson> = vec![Bson::Document(
        doc! {"ns": format!("{TANDEM_DB}.{CHECKPOINTS}")},
    )];
    // The checkpoint first: two-way's origin tag (see `Applier::body`).
    let mut ops: Vec<(Document, usize)> = vec![(
        doc! {"update": 0, "filter": {"_id": ckpt_id}, "updateMods": {"$set": checkpoint::position_fields(end)}, "upsert": true, "multi": false},
        0,
    )];
    for (ns, docs) in &folded.docs {
        let idx = ns_info.len() as i32;
        ns_info.push(Bson::Document(doc! {"ns": ns.to_string()}));
        for w in end_states(target, ns, docs)? {
            ops.push(match w {
                EndState::Delete(id) => (doc! {"delete": idx, "filter": {"_id": id}, "multi": false}, 64),
                EndState::Replace(d, size) => (
                    doc! {"update": idx, "filter": {"_id": d.get("_id").cloned().unwrap_or(Bson::Null)}, "updateMods": d.clone(), "multi": false},
                    size,
                ),
                EndState::Insert(d, size) => (doc! {"insert": idx, "document": d.clone()}, size),
            });
        }
    }
    let mut start = 0;
    while start < ops.len() {
        let mut end_i = start;
        let mut bytes = 0;
        while end_i < ops.len()
            && end_i - start < CHUNK_OPS
            && (end_i == start || bytes + ops[end_i].1 <= CHUNK_BYTES)
        {
            bytes += ops[end_i].1;
            end_i += 1;
        }
        let list: Vec<Bson> = ops[start..end_i]
            .iter()
            .map(|(d, _)| Bson::Document(d.clone()))
            .collect();
        let cmd = doc! {"bulkWrite": 1, "ops": list, "nsInfo": ns_info.clone(), "ordered": true, "errorsOnly": true};
        let reply = target
            .client
            .database("admin")
            .run_command(cmd)
            .session(&mut *s)
            .await
            .map_err(|e| {
                MongoError::from_driver(format!("{}: writing a batch", target.name()), &e)
            })?;
        check(target, &reply)?;
        let (mut deletes, mut updates) = (0, 0);
        for (d, _) in &ops[start..end_i] {
            if d.contains_key("delete") {
                deletes += 1;
            } else if d.contains_key("update") {
                updates += 1;
            }
        }
        let what = "writing a batch";
        expect_count(target, what, &reply, "nDeleted", deletes)?;
        // The checkpoint's upsert matches or inserts; every replacement matches.
        let upserted = count_field(&reply, "nUpserted").unwrap_or(0).max(0) as usize;
        expect_count(
            target,
            what,
            &reply,
            "nMatched",
            updates - upserted.min(updates),
        )?;
        start = end_i;
    }
    Ok(())
}

/// A reply that reports an error, or a write concern error, is an error.
fn check(target: &MongoEndpoint, reply: &Document) -> Result<()> {
    let n = count_field(reply, "nErrors").unwrap_or(0);
    if n > 0 {
        let first = reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .and_then(|b| {
                b.iter()
                    .filter_map(Bson::as_document)
                    .find(|d| d.get_f64("ok") != Ok(1.0))
                    .cloned()
            })
            .unwrap_or_default();
        let msg = first.get_str("errmsg").unwrap_or("write error").to_string();
        let mut e = MongoError::fatal(format!("{}: writing a batch", target.name()), msg);
        e.code = first.get_i32("code").ok();
        return Err(e);
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(MongoError::retryable(
            format!("{}: writing a batch", target.name()),
            format!("write concern: {}", wce.get_str("errmsg").unwrap_or("?")),
        ));
    }
    Ok(())
}
