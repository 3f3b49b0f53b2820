//! The full copy: catalog first (collections with their options, views), then the
//! documents in `_id` partitions copied in parallel by unordered batched inserts, then
//! the secondary indexes.
//!
//! Resumable: the partition plan and each finished partition are recorded in
//! `__tandem.copy` on the target, so a restart copies only what is not done. A
//! partition interrupted half-way is copied again; the documents it already wrote are
//! refused as duplicates and skipped, and the changes made since the copy began (which
//! the incremental phase replays from the copy's start position) bring every document
//! to the source's state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::Collection;
use tokio::sync::Mutex;

use super::apply::ddl::{clean_index, clean_options};
use super::apply::fold::{id_bytes, raw_id};
use super::checkpoint::{COPY, TAGS};
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::ns::{Namespace, NsFilter, TANDEM_DB};
use super::partition;
use crate::core::shutdown::Shutdown;
use crate::ops::status::LinkStatus;

pub struct CopyConfig {
    pub id: String,
    pub filter: NsFilter,
    pub workers: usize,
    /// Documents per partition, about.
    pub partition_docs: u64,
    pub batch_docs: usize,
    /// Two-way: each batch is a transaction that writes `__tandem` first, so the
    /// target's own link sees the copy as tandem's writes (echoes), not local ones.
    pub tagged: bool,
}

#[derive(Debug, Default)]
pub struct CopyStats {
    pub collections: u64,
    pub views: u64,
    pub docs: u64,
    pub bytes: u64,
    pub indexes: u64,
}

#[derive(Debug, Clone)]
struct Coll {
    src: Namespace,
    dst: Namespace,
    kind: String,
    options: Document,
}

#[derive(Debug, Clone)]
struct Part {
    coll: usize,
    n: i32,
    min: Bson,
    max: Bson,
    /// The whole collection in one scan (time series, or no `_id` index).
    whole: bool,
}

/// Copies everything; `Ok(None)` when a signal stopped it first (a restart resumes).
pub async fn copy(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    cfg: &CopyConfig,
    progress: &Arc<LinkStatus>,
    shutdown: &Shutdown,
) -> Result<Option<CopyStats>> {
    let started = Instant::now();
    let mut stats = CopyStats::default();
    let colls = catalog(source, &cfg.filter).await?;
    for c in colls.iter().filter(|c| c.kind != "view") {
        ensure_collection(target, c).await?;
        stats.collections += 1;
    }
    let mut parts = Vec::new();
    for (i, c) in colls.iter().enumerate().filter(|(_, c)| c.kind != "view") {
        parts.extend(plan(source, target, cfg, i, c).await?);
    }
    let total = parts.len();
    // The plan's estimates: the progress display's total (`ops::progress`).
    let expected: u64 = parts.iter().map(|p| p.n.max(0) as u64).sum();
    progress.full_sync_expected(None, Some(expected));
    let queue = Arc::new(Mutex::new(parts.into_iter().collect::<VecDeque<_>>()));
    let colls = Arc::new(colls);
    let counts = Arc::new(Counts::default());
    tracing::info!(
        "copy: {total} partitions to copy over {} collections",
        stats.collections
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.workers.max(1) {
        let w = Worker {
            queue: queue.clone(),
            colls: colls.clone(),
            source: source.clone(),
            target: target.clone(),
            counts: counts.clone(),
            id: cfg.id.clone(),
            batch: cfg.batch_docs,
            status: progress.clone(),
            tagged: cfg.tagged,
        };
        let shutdown = shutdown.clone();
        tasks.spawn(async move { w.run(shutdown).await });
    }
    let mut failed = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tasks.abort_all();
                failed.get_or_insert(e);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failed.get_or_insert(MongoError::fatal(
                    "copy",
                    format!("a copy worker failed: {e}"),
                ));
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if shutdown.is_triggered() {
        tracing::info!(
            "copy stopped by a signal; a restart resumes it with the partitions not done"
        );
        return Ok(None);
    }
    for c in colls.iter().filter(|c| c.kind != "view") {
        stats.indexes += copy_indexes(source, target, c).await?;
    }
    for c in colls.iter().filter(|c| c.kind == "view") {
        ensure_collection(target, c).await?;
        stats.views += 1;
    }
    stats.docs = counts.docs.load(Relaxed);
    stats.bytes = counts.bytes.load(Relaxed);
    tracing::info!(
        "copy done: {} collections, {} views, {} documents ({} bytes), {} indexes in {:.1} s",
        stats.collections,
        stats.views,
        stats.docs,
        stats.bytes,
        stats.indexes,
        started.elapsed().as_secs_f64()
    );
    Ok(Some(stats))
}

#[derive(Default)]
struct Counts {
    docs: AtomicU64,
    bytes: AtomicU64,
}

/// One copy worker: takes partitions off the queue until it is empty.
struct Worker {
    queue: Arc<Mutex<VecDeque<Part>>>,
    colls: Arc<Vec<Coll>>,
    source: MongoEndpoint,
    target: MongoEndpoint,
    counts: Arc<Counts>,
    id: String,
    batch: usize,
    status: Arc<LinkStatus>,
    tagged: bool,
}

impl Worker {
    async fn run(self, shutdown: Shutdown) -> Result<()> {
        loop {
            if shutdown.is_triggered() {
                return Ok(());
            }
            let Some(p) = self.queue.lock().await.pop_front() else {
                return Ok(());
            };
            let c = &self.colls[p.coll];
            let (n, b) = self.copy_part(c, &p).await?;
            crate::metrics::mongo_copy(&c.dst.to_string(), n, b);
            mark_done(&self.target, &self.id, c, &p).await?;
        }
    }
}

/// Every replicated collection and view of the source, with its options.
async fn catalog(source: &MongoEndpoint, filter: &NsFilter) -> Result<Vec<Coll>> {
    let dbs = source
        .client
        .list_database_names()
        .await
        .map_err(|e| source.err("listDatabases", &e))?;
    let mut out = Vec::new();
    for db in dbs.iter().filter(|d| filter.accepts_db(d)) {
        let specs = source.collections(db, None).await?;
        for d in specs {
            let name = d.get_str("name").unwrap_or_default().to_string();
            let ns = Namespace::new(db, &name);
            if !filter.accepts(&ns) {
                continue;
            }
            let kind = d.get_str("type").unwrap_or("collection").to_string();
            let mut options =
                clean_options(&d.get_document("options").cloned().unwrap_or_default());
            if let Ok(on) = options.get_str("viewOn") {
                let on = filter.map(&Namespace::new(db, on)).coll;
                options.insert("viewOn", on);
            }
            out.push(Coll {
                dst: filter.map(&ns),
                src: ns,
                kind,
                options,
            });
        }
    }
    out.sort_by(|a, b| a.src.cmp(&b.src));
    Ok(out)
}

/// Creates the collection (or view) on the target, or checks that the one there has
/// the same options.
async fn ensure_collection(target: &MongoEndpoint, c: &Coll) -> Result<()> {
    let db = target.client.database(&c.dst.db);
    if let Some(d) = target
        .collections(&c.dst.db, Some(doc! {"name": &c.dst.coll}))
        .await?
        .first()
    {
        let have = clean_options(&d.get_document("options").cloned().unwrap_or_default());
        if have != c.options {
            return Err(MongoError::fatal(
                format!("{}: {}", target.name(), c.dst),
                format!(
                    "exists on the target with different options ({have} there, {} on the source)",
                    c.options
                ),
            ));
        }
        return Ok(());
    }
    let mut cmd = doc! {"create": &c.dst.coll};
    cmd.extend(c.options.clone());
    db.run_command(cmd)
        .await
        .map_err(|e| target.err(format!("creating {}", c.dst), &e))?;
    Ok(())
}

/// The partitions of a collection still to copy: the stored plan when a previous run
/// made one, a new plan otherwise.
async fn plan(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    cfg: &CopyConfig,
    i: usize,
    c: &Coll,
) -> Result<Vec<Part>> {
    let progress = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(COPY);
    let key = doc! {"link": &cfg.id, "ns": c.src.to_string()};
    let mut stored = Vec::new();
    let mut cur = progress
        .find(key.clone())
        .await
        .map_err(|e| target.err("reading copy progress", &e))?;
    while cur
        .advance()
        .await
        .map_err(|e| target.err("reading copy progress", &e))?
    {
        stored.push(
            cur.deserialize_current()
                .map_err(|e| target.err("reading copy progress", &e))?,
        );
    }
    if !stored.is_empty() {
        let mut parts = Vec::new();
        for d in stored
            .iter()
            .filter(|d| !d.get_bool("done").unwrap_or(false))
        {
            let whole = d.get_bool("whole").unwrap_or(false);
            if whole {
                // A time-series collection has no _id to skip duplicates by: start over.
                let coll = target
                    .client
                    .database(&c.dst.db)
                    .collection::<Document>(&c.dst.coll);
                coll.delete_many(doc! {})
                    .await
                    .map_err(|e| target.err(format!("emptying {}", c.dst), &e))?;
            }
            parts.push(Part {
                coll: i,
                n: d.get_i32("n").unwrap_or(0),
                min: d.get("min").cloned().unwrap_or(Bson::MinKey),
                max: d.get("max").cloned().unwrap_or(Bson::MaxKey),
                whole,
            });
        }
        return Ok(parts);
    }
    let dst = target
        .client
        .database(&c.dst.db)
        .collection::<Document>(&c.dst.coll);
    let existing = dst
        .estimated_document_count()
        .await
        .map_err(|e| target.err(format!("counting {}", c.dst), &e))?;
    if existing > 0 {
        return Err(MongoError::fatal(
            format!("{}: {}", target.name(), c.dst),
            format!(
                "the target collection already holds {existing} documents; tandem copies into empty collections (drop it, or map it elsewhere with --ns-map)"
            ),
        ));
    }
    let src = source
        .client
        .database(&c.src.db)
        .collection::<Document>(&c.src.coll);
    let count = src
        .estimated_document_count()
        .await
        .map_err(|e| source.err(format!("counting {}", c.src), &e))?;
    let whole = c.kind == "timeseries";
    let buckets = if whole {
        1
    } else {
        count.div_ceil(cfg.partition_docs.max(1)).max(1)
    };
    let bounds = partition::bounds(source, &c.src, buckets).await?;
    let mut parts = Vec::new();
    let mut docs = Vec::new();
    for (n, w) in bounds.windows(2).enumerate() {
        let p = Part {
            coll: i,
            n: n as i32,
            min: w[0].clone(),
            max: w[1].clone(),
            whole,
        };
        let mut d = key.clone();
        d.insert("_id", format!("{}|{}|{n}", cfg.id, c.src));
        d.insert("n", p.n);
        d.insert("min", p.min.clone());
        d.insert("max", p.max.clone());
        d.insert("whole", whole);
        d.insert("done", false);
        docs.push(d);
        parts.push(p);
    }
    progress
        .insert_many(docs)
        .await
        .map_err(|e| target.err("recording the copy plan", &e))?;
    Ok(parts)
}

impl Worker {
    /// Copies one partition; returns its documents and bytes.
    async fn copy_part(&self, c: &Coll, p: &Part) -> Result<(u64, u64)> {
        let src: Collection<RawDocumentBuf> = self
            .source
            .client
            .database(&c.src.db)
            .collection(&c.src.coll);
        let dst: Collection<RawDocumentBuf> = self
            .target
            .client
            .database(&c.dst.db)
            .collection(&c.dst.coll);
        let (min, max) = if p.whole {
            (Bson::MinKey, Bson::MaxKey)
        } else {
            (p.min.clone(), p.max.clone())
        };
        let mut cur = partition::find_range(&src, doc! {}, &min, &max)
            .batch_size(self.batch as u32)
            .await
            .map_err(|e| self.source.err(format!("reading {}", c.src), &e))?;
        let (mut n, mut b) = (0u64, 0u64);
        let mut buf: Vec<RawDocumentBuf> = Vec::with_capacity(self.batch);
        let mut buf_bytes = 0usize;
        // One batch is inserted while the next is read: the source's reads and the
        // target's inserts overlap instead of taking turns.
        let mut inflight: Option<(tokio::task::JoinHandle<Result<()>>, u64, u64)> = None;
        loop {
            let more = cur
                .advance()
                .await
                .map_err(|e| self.source.err(format!("reading {}", c.src), &e))?;
            if more {
                let raw = cur.current();
                buf_bytes += raw.as_bytes().len();
                buf.push(raw.to_raw_document_buf());
            }
            if (!more && !buf.is_empty()) || buf.len() >= self.batch || buf_bytes >= 8 << 20 {
                if let Some((h, len, bytes)) = inflight.take() {
                    self.landed(c, h, len, bytes).await?;
                    n += len;
                    b += bytes;
                }
                let (target, dst, ns) = (self.target.clone(), dst.clone(), c.dst.clone());
                let batch = std::mem::take(&mut buf);
                let len = batch.len() as u64;
                let tag = self.tagged.then(|| self.id.clone());
                let h = tokio::spawn(async move {
                    match tag {
                        Some(id) => insert_tagged(&target, &dst, &ns, batch, &id).await,
                        None => insert_batch(&target, &dst, &ns, batch).await,
                    }
                });
                inflight = Some((h, len, buf_bytes as u64));
                buf_bytes = 0;
            }
            if !more {
                if let Some((h, len, bytes)) = inflight.take() {
                    self.landed(c, h, len, bytes).await?;
                    n += len;
                    b += bytes;
                }
                return Ok((n, b));
            }
        }
    }

    /// Waits for an insert and counts what it landed.
    async fn landed(
        &self,
        c: &Coll,
        h: tokio::task::JoinHandle<Result<()>>,
        len: u64,
        bytes: u64,
    ) -> Result<()> {
        h.await.map_err(|e| {
            MongoError::fatal(self.target.name(), format!("an insert task failed: {e}"))
        })??;
        self.counts.docs.fetch_add(len, Relaxed);
        self.counts.bytes.fetch_add(bytes, Relaxed);
        self.status.full_sync_bytes(bytes);
        self.status.full_sync_keys(len);
        self.status
            .mongo(|m| *m.copy_documents.entry(c.dst.to_string()).or_default() += len);
        Ok(())
    }
}

/// Unordered insert; documents a previous run already copied are refused as duplicates
/// and skipped.
async fn insert_batch(
    target: &MongoEndpoint,
    dst: &Collection<RawDocumentBuf>,
    ns: &Namespace,
    batch: Vec<RawDocumentBuf>,
) -> Result<()> {
    for attempt in 0..10u64 {
        match dst.insert_many(batch.iter()).ordered(false).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if let mongodb::error::ErrorKind::InsertMany(m) = &*e.kind
                    && m.write_concern_error.is_none()
                    && let Some(errs) = &m.write_errors
                {
                    if let Some(other) = errs.iter().find(|w| w.code != 11000) {
                        let id = batch
                            .get(other.index)
                            .and_then(|d| d.get("_id").ok().flatten())
                            .map(|b| format!("{b:?}"))
                            .unwrap_or_default();
                        return Err(MongoError::fatal(
                            format!("{}: inserting into {ns} (_id {id})", target.name()),
                            other.message.clone(),
                        ));
                    }
                    return Ok(());
                }
                let err = target.err(format!("inserting into {ns}"), &e);
                if !err.is_retryable() || attempt == 9 {
                    return Err(err);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// One transaction: tandem's tag (`__tandem.tags`) first, then the batch's documents
/// the target does not hold yet (a transaction stops at a duplicate key, so they are
/// looked up instead of refused).
async fn insert_tagged(
    target: &MongoEndpoint,
    dst: &Collection<RawDocumentBuf>,
    ns: &Namespace,
    batch: Vec<RawDocumentBuf>,
    link: &str,
) -> Result<()> {
    let tags = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(TAGS);
    let what = format!("inserting into {ns}");
    let mut tx = target.retrying(&what);
    loop {
        let mut s = tx.begin().await?;
        let r = async {
            tags.update_one(doc! {"_id": link}, doc! {"$inc": {"copy": 1i64}})
                .upsert(true)
                .session(&mut s)
                .await?;
            let mut have = std::collections::HashSet::new();
            // secantus's `$in` costs the square of its list: 100 at a time.
            for chunk in batch.chunks(100) {
                let ids: Vec<Bson> = chunk.iter().filter_map(|d| raw_id(d)).collect();
                let mut cur = dst
                    .find(doc! {"_id": {"$in": ids}})
                    .projection(doc! {"_id": 1})
                    .session(&mut s)
                    .await?;
                while cur.advance(&mut s).await? {
                    if let Some(id) = raw_id(cur.current()) {
                        have.insert(id_bytes(&id));
                    }
                }
            }
            let fresh: Vec<&RawDocumentBuf> = batch
                .iter()
                .filter(|d| raw_id(d).is_none_or(|id| !have.contains(&id_bytes(&id))))
                .collect();
            if !fresh.is_empty() {
                dst.insert_many(fresh).session(&mut s).await?;
            }
            s.commit_transaction().await
        }
        .await;
        if tx.ended(&mut s, r).await? {
            return Ok(());
        }
    }
}

async fn mark_done(target: &MongoEndpoint, id: &str, c: &Coll, p: &Part) -> Result<()> {
    let progress = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(COPY);
    progress
        .update_one(
            doc! {"_id": format!("{id}|{}|{}", c.src, p.n)},
            doc! {"$set": {"done": true}},
        )
        .await
        .map_err(|e| target.err("recording copy progress", &e))?;
    Ok(())
}

/// Builds the secondary indexes once the documents are in.
async fn copy_indexes(source: &MongoEndpoint, target: &MongoEndpoint, c: &Coll) -> Result<u64> {
    let specs: Vec<Document> = source
        .indexes(&c.src)
        .await?
        .iter()
        .filter(|d| d.get_str("name") != Ok("_id_"))
        .map(clean_index)
        .collect();
    let n = specs.len() as u64;
    for s in specs {
        let name = s.get_str("name").unwrap_or("?").to_string();
        let cmd = doc! {"createIndexes": &c.dst.coll, "indexes": [s]};
        target
            .client
            .database(&c.dst.db)
            .run_command(cmd)
            .await
            .map_err(|e| target.err(format!("building index {name:?} of {}", c.dst), &e))?;
    }
    Ok(n)
}
