//! The documents of one namespace compared, partition by partition: the source's `_id`
//! ranges (`partition.rs`), several at once. Where both servers can hash documents
//! themselves (`$toHashedIndexKey`), a partition is first compared by its count and the
//! sum of its documents' hashes, and read only when those differ; otherwise (secantus,
//! servers before 7.0) both sides' documents are read and compared byte for byte.

use std::collections::HashMap;

use bson::{Bson, Document, RawDocumentBuf, doc};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::Collection;

use crate::mongo::apply::fold::{id_bytes, raw_id};
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::Result;
use crate::mongo::ns::Namespace;
use crate::mongo::partition;

/// How one namespace's documents are compared.
#[derive(Clone, Copy, Debug)]
pub struct DocsConfig {
    /// About this many source documents per partition.
    pub partition_docs: u64,
    /// Partitions compared at once.
    pub parallel: usize,
    /// Both servers hash documents (see `can_hash`), and hashing is not turned off.
    pub hash: bool,
    pub batch: usize,
}

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `_id`s whose document differs, is missing on the target or extra there.
    pub differ: Vec<Bson>,
    pub partitions: u64,
    /// Partitions found equal by count and hash, without reading their documents.
    pub hashed_equal: u64,
    /// Documents read from the source (only where a partition was read).
    pub read: u64,
}

/// Whether the server computes a document's hash in an aggregation
/// (`$toHashedIndexKey`, MongoDB 7.0 on).
pub async fn can_hash(ep: &MongoEndpoint) -> bool {
    let pipeline = vec![
        doc! {"$documents": [{"a": 1}]},
        doc! {"$project": {"_id": 0, "h": {"$toHashedIndexKey": "$$ROOT"}}},
    ];
    let Ok(cur) = ep.client.database("admin").aggregate(pipeline).await else {
        return false;
    };
    let Ok(docs) = cur.try_collect::<Vec<Document>>().await else {
        return false;
    };
    matches!(docs.first().and_then(|d| d.get("h")), Some(Bson::Int64(_)))
}

pub async fn compare(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    sns: &Namespace,
    dns: &Namespace,
    cfg: DocsConfig,
) -> Result<Outcome> {
    let count = source
        .client
        .database(&sns.db)
        .collection::<Document>(&sns.coll)
        .estimated_document_count()
        .await
        .map_err(|e| source.err(format!("counting {sns}"), &e))?;
    let buckets = count.div_ceil(cfg.partition_docs.max(1)).max(1);
    let bounds = partition::bounds(source, sns, buckets).await?;
    let ranges: Vec<(Bson, Bson)> = bounds
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect();
    let mut out = Outcome {
        partitions: ranges.len() as u64,
        ..Outcome::default()
    };
    let mut parts = futures_util::stream::iter(ranges)
        .map(|(min, max)| async move {
            if cfg.hash {
                let (a, b) = tokio::try_join!(
                    range_hash(source, sns, &min, &max),
                    range_hash(target, dns, &min, &max)
                )?;
                if a == b {
                    return Ok(None);
                }
            }
            compare_range(source, target, sns, dns, &min, &max, cfg.batch)
                .await
                .map(Some)
        })
        .buffer_unordered(cfg.parallel.max(1));
    while let Some(r) = parts.next().await {
        match r? {
            None => out.hashed_equal += 1,
            Some((read, differ)) => {
                out.read += read;
                out.differ.extend(differ);
            }
        }
    }
    Ok(out)
}

/// The count and the sum of the document hashes of one range (folded to 32 bits each,
/// so the sum stays exact).
async fn range_hash(
    ep: &MongoEndpoint,
    ns: &Namespace,
    min: &Bson,
    max: &Bson,
) -> Result<(i64, i64)> {
    // In `$expr`, comparisons follow the BSON order across types, as the bounds do; a
    // plain `$gte`/`$lt` match would be type-bracketed.
    let mut conds = Vec::new();
    if *min != Bson::MinKey {
        conds.push(Bson::Document(
            doc! {"$gte": ["$_id", {"$literal": min.clone()}]},
        ));
    }
    if *max != Bson::MaxKey {
        conds.push(Bson::Document(
            doc! {"$lt": ["$_id", {"$literal": max.clone()}]},
        ));
    }
    let pipeline = vec![
        doc! {"$match": {"$expr": {"$and": conds}}},
        doc! {"$group": {
            "_id": Bson::Null,
            "n": {"$sum": 1i64},
            "h": {"$sum": {"$mod": [{"$toHashedIndexKey": "$$ROOT"}, 4_294_967_291i64]}},
        }},
    ];
    let what = format!("hashing {ns}");
    let docs: Vec<Document> = ep
        .client
        .database(&ns.db)
        .collection::<Document>(&ns.coll)
        .aggregate(pipeline)
        .await
        .map_err(|e| ep.err(&what, &e))?
        .try_collect()
        .await
        .map_err(|e| ep.err(&what, &e))?;
    let num = |d: &Document, k: &str| match d.get(k) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => *v as i64,
        _ => 0,
    };
    Ok(docs
        .first()
        .map(|d| (num(d, "n"), num(d, "h")))
        .unwrap_or((0, 0)))
}

/// Both sides' documents of one range read and compared: the source's held by `_id`,
/// the target's streamed against them. Returns the documents read from the source and
/// the `_id`s that differ.
async fn compare_range(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    sns: &Namespace,
    dns: &Namespace,
    min: &Bson,
    max: &Bson,
    batch: usize,
) -> Result<(u64, Vec<Bson>)> {
    let s: Collection<RawDocumentBuf> = source.client.database(&sns.db).collection(&sns.coll);
    let t: Collection<RawDocumentBuf> = target.client.database(&dns.db).collection(&dns.coll);
    let mut held: HashMap<Vec<u8>, RawDocumentBuf> = HashMap::new();
    let what = format!("reading {sns}");
    let mut cur = partition::find_range(&s, doc! {}, min, max)
        .batch_size(batch as u32)
        .await
        .map_err(|e| source.err(&what, &e))?;
    while cur.advance().await.map_err(|e| source.err(&what, &e))? {
        let d = cur.current();
        held.insert(
            id_bytes(&raw_id(d).unwrap_or(Bson::Null)),
            d.to_raw_document_buf(),
        );
    }
    let read = held.len() as u64;
    let mut differ = Vec::new();
    let what = format!("reading {dns}");
    let mut cur = partition::find_range(&t, doc! {}, min, max)
        .batch_size(batch as u32)
        .await
        .map_err(|e| target.err(&what, &e))?;
    while cur.advance().await.map_err(|e| target.err(&what, &e))? {
        let d = cur.current();
        match held.remove(&id_bytes(&raw_id(d).unwrap_or(Bson::Null))) {
            Some(mine) if mine.as_bytes() == d.as_bytes() => {}
            _ => differ.push(raw_id(d).unwrap_or(Bson::Null)),
        }
    }
    differ.extend(held.values().map(|d| raw_id(d).unwrap_or(Bson::Null)));
    Ok((read, differ))
}
