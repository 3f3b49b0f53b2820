//! The full copy into Kafka: every replicated collection (views have no documents of
//! their own) read in `_id` order, each document an `INSERT` message.
//!
//! Resumable without duplicates: every transaction also commits how far the copy got
//! (the collections done, and the last `_id` of the one in progress), so a restart
//! goes on after that `_id`. Reading in `_id` order is what makes one `_id` enough.
//! A reader task per collection reads ahead of the producer (`READ_AHEAD` batches),
//! so the source is read while the previous batch is produced and committed.
//!
//! The changes made while the copy runs follow it from the position taken before it
//! began (a document changed meanwhile may show up in its copied state and again in
//! the changes: that is the order of events, not a duplicate of one).

use bson::{Bson, Document, doc};

use super::canal::Meta;
use super::sink::Sink;
use super::state::State;
use super::{Emitter, KafkaConfig};
use crate::core::shutdown::Shutdown;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::{MongoError, Result};
use crate::mongo::event::Op;
use crate::mongo::ns::Namespace;

/// Copies what `state.copy` says is left; `false` when shutdown stopped it (the
/// progress so far committed).
pub(super) async fn copy(
    cfg: &KafkaConfig,
    sink: &mut Sink,
    state: &mut State,
    shutdown: &Shutdown,
) -> Result<bool> {
    let st = cfg.status.clone();
    st.full_sync_started();
    let colls = catalog(cfg).await?;
    let mut progress = state.copy.clone().unwrap_or_default();
    let mut emitter = Emitter::new(cfg);
    let mut pending = 0usize;
    tracing::info!(
        "copy: {} collections, {} already done",
        colls.len(),
        progress.done.len()
    );
    for ns in colls {
        let name = ns.to_string();
        if progress.done.contains(&name) {
            continue;
        }
        let after = match &progress.current {
            Some((n, id)) if *n == name => Some(id.clone()),
            _ => None,
        };
        // The next documents are read while these are produced and committed: the copy
        // runs at the slower of the two rates, not at their sum.
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(read(cfg.source.clone(), ns.clone(), after, tx));
        let _stop_reader = crate::mongo::sync::AbortOnDrop(reader);
        let mut copied = 0u64;
        while let Some(docs) = rx.recv().await {
            for (d, id) in docs? {
                let now = super::now_ms();
                let meta = Meta {
                    id: 0,
                    es: now,
                    ts: now,
                };
                let op = Op::Insert {
                    ns: ns.clone(),
                    doc: d,
                };
                emitter.op(sink, op, meta, None).await?;
                pending += 1;
                copied += 1;
                progress.current = Some((name.clone(), id));
                if pending >= cfg.batch_ops || emitter.bytes >= 8 << 20 {
                    state.copy = Some(progress.clone());
                    sink.commit(state).await?;
                    emitter.committed(&st, state);
                    st.full_sync_keys(std::mem::take(&mut pending) as u64);
                    if shutdown.is_triggered() {
                        tracing::info!(
                            "copy stopped by a signal; a restart resumes after _id of the last committed document"
                        );
                        return Ok(false);
                    }
                }
            }
        }
        tracing::info!("copy: {ns}: {copied} documents");
        st.mongo(|m| *m.copy_documents.entry(name.clone()).or_default() += copied);
        progress.done.push(name);
        progress.current = None;
    }
    state.copy = None;
    sink.commit(state).await?;
    emitter.committed(&st, state);
    st.full_sync_keys(pending as u64);
    tracing::info!("copy done; changes follow from {}", state.pos);
    Ok(true)
}

/// Batches of documents read ahead of the producer, each of `READ_BATCH`.
const READ_AHEAD: usize = 4;
const READ_BATCH: usize = 1000;

type Batch = Result<Vec<(Document, Bson)>>;

/// Reads `ns` in `_id` order after `after` into `tx`, in batches, with each document's
/// `_id`; ends when done or when the receiver is gone (shutdown, an error).
async fn read(
    source: MongoEndpoint,
    ns: Namespace,
    after: Option<Bson>,
    tx: tokio::sync::mpsc::Sender<Batch>,
) {
    if let Err(e) = scan(&source, &ns, after, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn scan(
    source: &MongoEndpoint,
    ns: &Namespace,
    after: Option<Bson>,
    tx: &tokio::sync::mpsc::Sender<Batch>,
) -> Result<()> {
    let coll = source
        .client
        .database(&ns.db)
        .collection::<Document>(&ns.coll);
    let failed = |e: &mongodb::error::Error| source.err(format!("reading {ns}"), e);
    for filter in scans_after(after.as_ref()) {
        let mut cur = coll
            .find(filter)
            .sort(doc! {"_id": 1})
            .batch_size(READ_BATCH as u32)
            .await
            .map_err(|e| failed(&e))?;
        let mut batch = Vec::with_capacity(READ_BATCH);
        while cur.advance().await.map_err(|e| failed(&e))? {
            let d: Document = cur.deserialize_current().map_err(|e| failed(&e))?;
            let Some(id) = d.get("_id").cloned() else {
                return Err(MongoError::fatal(
                    format!("{}: {ns}", source.name()),
                    "holds a document without _id, which the copy cannot order",
                ));
            };
            batch.push((d, id));
            if batch.len() >= READ_BATCH && tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                return Ok(());
            }
        }
        if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The replicated collections (not views), in a stable order.
async fn catalog(cfg: &KafkaConfig) -> Result<Vec<Namespace>> {
    let dbs = cfg
        .source
        .client
        .list_database_names()
        .await
        .map_err(|e| cfg.source.err("listDatabases", &e))?;
    let mut out = Vec::new();
    for db in dbs.iter().filter(|d| cfg.filter.accepts_db(d)) {
        for c in cfg.source.collections(db, None).await? {
            let ns = Namespace::new(db, c.get_str("name").unwrap_or_default());
            if c.get_str("type").unwrap_or("collection") != "view" && cfg.filter.accepts(&ns) {
                out.push(ns);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// MongoDB's order of `_id` types, coarse: one comparison class per entry
/// (`$gt` compares within a class only, so the classes after the resume point are
/// read by type).
const TYPE_CLASSES: &[&[&str]] = &[
    &["minKey"],
    &["null"],
    &["number"],
    &["string", "symbol"],
    &["object"],
    &["binData"],
    &["objectId"],
    &["bool"],
    &["date"],
    &["timestamp"],
    &["regex"],
    &["maxKey"],
];

fn class_of(b: &Bson) -> usize {
    match b {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Binary(_) => 5,
        Bson::ObjectId(_) => 6,
        Bson::Boolean(_) => 7,
        Bson::DateTime(_) => 8,
        Bson::Timestamp(_) => 9,
        Bson::RegularExpression(_) => 10,
        Bson::MaxKey => 11,
        // JavaScript, DbPointer, arrays (not an _id): read after the rest.
        _ => 11,
    }
}

/// The queries that read, in `_id` order, the documents after `after` (all of them
/// without it).
fn scans_after(after: Option<&Bson>) -> Vec<Document> {
    let Some(after) = after else {
        return vec![doc! {}];
    };
    let k = class_of(after);
    let mut out = vec![doc! {"_id": {"$gt": after.clone()}}];
    for types in &TYPE_CLASSES[k + 1..] {
        out.push(doc! {"_id": {"$type": types.to_vec()}});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_within_the_class_then_reads_later_classes_by_type() {
        assert_eq!(scans_after(None), vec![doc! {}]);
        let s = scans_after(Some(&Bson::Int32(5)));
        assert_eq!(s[0], doc! {"_id": {"$gt": 5}});
        assert_eq!(s[1], doc! {"_id": {"$type": ["string", "symbol"]}});
        assert_eq!(s.len(), TYPE_CLASSES.len() - 2);
        assert_eq!(scans_after(Some(&Bson::MaxKey)).len(), 1);
    }
}
