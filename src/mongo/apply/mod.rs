//! The applier: units from a reader onto the target, each batch in one target
//! transaction that first upserts the link's checkpoint (`__tandem.checkpoints`).
//!
//! Contract of [`Applier::apply`]: when it returns `Ok`, every unit given is on the
//! target and the checkpoint names the last unit's position; when it returns an error,
//! the target holds exactly the batches before the failing one (a batch is all or
//! nothing), and the checkpoint names the last of those. A restart therefore resumes
//! after what landed: nothing applied twice, nothing skipped. DDL units are the one
//! exception to one-transaction-per-batch (the server does not run DDL in a
//! transaction): each is applied alone, then checkpointed; see `ddl.rs`.
//!
//! With a checkpoint file (`--checkpoint-file`, a target without transactions) the
//! contract is weaker: a failing batch may be partly on the target, and the file names
//! it as in flight, so whoever applies it again does so inside the replay window
//! (`checkpoint_file.rs`). At least once, converging to the same end states.

pub mod bulk;
pub mod ddl;
pub mod desc;
pub mod diff;
pub mod fold;
pub mod pool;

pub use desc::{apply_update_description, diff_to_description, diff_to_description_raw};
pub use diff::{
    DiffError, apply_diff, apply_diff_raw, apply_inner_diff, apply_inner_diff_raw, codes,
    validate_diff, validate_diff_raw,
};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::ClientSession;
use mongodb::options::{ReadConcern, TransactionOptions, WriteConcern};

use self::fold::{DocKey, Folded, OnConflict, doc_key};
use super::checkpoint::{self, CHECKPOINTS};
use super::checkpoint_file::CheckpointFile;
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::event::{Ddl, Op, Payload, Unit};
use super::ns::{Namespace, NsFilter, TANDEM_DB};
use crate::core::{MongoPosition, OpTime};
use crate::ops::status::LinkStatus;

/// Statements per write command, and about that many bytes at most.
const CHUNK_DOCS: usize = 1000;
const CHUNK_BYTES: usize = 8 << 20;
/// `_id`s per read of the touched documents: some servers' `$in` costs grow with the
/// square of the list (secantus: 0.02 s for 100, 1.4 s for 1000), none is slower for
/// short lists but by a round trip.
const FETCH_IDS: usize = 100;
const MAX_DOC_BYTES: usize = 16 << 20;
const TXN_ATTEMPTS: usize = 30;

#[derive(Clone)]
pub struct ApplyConfig {
    pub id: String,
    pub filter: NsFilter,
    pub on_conflict: OnConflict,
    /// Changes at or before this time are replayed over documents that may already
    /// hold them: copied ones, or a batch another worker's checkpoint or a checkpoint
    /// file's `in_flight` says may have landed.
    pub copy_end: Option<OpTime>,
    /// Two-way: each DDL is announced in `__tandem.ddl` just before it is applied, so
    /// the other link can tell its echo (DDL runs outside transactions and carries no
    /// tag of its own).
    pub tag_ddl: bool,
}

pub struct Applier {
    target: MongoEndpoint,
    cfg: ApplyConfig,
    last: Option<MongoPosition>,
    status: Option<Arc<LinkStatus>>,
    /// One session for every transaction of this process (see `new_session`).
    session: Option<ClientSession>,
    /// Which target namespaces are capped (forgotten at every DDL).
    capped: HashMap<Namespace, bool>,
    /// Whether the target has the `bulkWrite` command: 0 not asked yet, 1 yes, 2 no.
    bulk: std::sync::atomic::AtomicU8,
    /// Conflicts of the attempt in flight, counted once it commits (an attempt that
    /// is retried must not count them twice).
    pending: std::sync::Mutex<Vec<fold::Conflict>>,
    /// The next transaction reads every document it touches: the last one skipped the
    /// read of its plain inserts and met a document that was there (`fetch`).
    read_all: std::sync::atomic::AtomicBool,
    /// Where the checkpoint lives when not on the target: batches are then written
    /// without a transaction.
    file: Option<Arc<CheckpointFile>>,
}

/// The field of `fetch`'s stand-in for a document presumed present.
const PRESUMED: &str = "\u{1}tandem: presumed present";

/// Where the applier records its session, so the next process can end it.
pub const SESSIONS: &str = "sessions";
/// Earlier sessions kept in the record: more than a restart loop leaves unapplied.
const SESSION_HISTORY: usize = 16;

/// Ends the sessions a previous process of link `id` left (its own and its workers',
/// `<id>/<k>`), aborting any transaction it was killed in: until then such a transaction
/// holds its documents, and even a plain write of one of them (a checkpoint) waits.
pub async fn end_previous_sessions(target: &MongoEndpoint, id: &str) -> Result<()> {
    let rec = target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(SESSIONS);
    let filter =
        doc! {"$or": [{"_id": id}, {"_id": {"$gte": format!("{id}/"), "$lt": format!("{id}0")}}]};
    let mut cur = rec.find(filter).await.map_err(|e| {
        MongoError::from_driver(format!("{}: reading the last sessions", target.name()), &e)
    })?;
    let mut lsids = Vec::new();
    while cur.advance().await.map_err(|e| {
        MongoError::from_driver(format!("{}: reading the last sessions", target.name()), &e)
    })? {
        if let Ok(d) = Document::try_from(cur.current())
            && let Ok(l) = d.get_document("lsid")
        {
            lsids.push(Bson::Document(l.clone()));
        }
    }
    if !lsids.is_empty()
        && let Err(e) = target
            .client
            .database("admin")
            .run_command(doc! {"killSessions": lsids})
            .await
    {
        tracing::debug!("ending the previous process's sessions: {e}");
    }
    Ok(())
}

impl Applier {
    pub fn new(
        target: MongoEndpoint,
        cfg: ApplyConfig,
        last: Option<MongoPosition>,
        status: Option<Arc<LinkStatus>>,
    ) -> Self {
        Applier {
            target,
            cfg,
            last,
            status,
            session: None,
            capped: HashMap::new(),
            bulk: std::sync::atomic::AtomicU8::new(
                if std::env::var_os("TANDEM_NO_BULKWRITE").is_some() {
                    2
                } else {
                    0
                },
            ),
            pending: std::sync::Mutex::new(Vec::new()),
            read_all: std::sync::atomic::AtomicBool::new(false),
            file: None,
        }
    }

    /// Checkpoints in `file`, batches without transactions (see the module's contract).
    pub fn with_checkpoint_file(mut self, file: Arc<CheckpointFile>) -> Self {
        self.file = Some(file);
        self
    }

    pub fn last(&self) -> Option<&MongoPosition> {
        self.last.as_ref()
    }

    /// Applies `units`, in order (see the module's contract).
    pub async fn apply(&mut self, units: Vec<Unit>) -> Result<()> {
        let mut run: Vec<Unit> = Vec::new();
        for u in units {
            if let Some(last) = &self.last
                && let Ok(std::cmp::Ordering::Less) = u.pos.try_cmp(last)
            {
                return Err(MongoError::fatal(
                    format!("{}: checkpoint {:?}", self.target.name(), self.cfg.id),
                    format!("would move backwards from {last} to {}", u.pos),
                ));
            }
            let u = self.route(u);
            if let Payload::Ddl(d) = &u.payload {
                let d = d.clone();
                self.flush(std::mem::take(&mut run)).await?;
                if self.cfg.tag_ddl {
                    ddl::announce(&self.target, &self.cfg.id, &d)
                        .await
                        .map_err(|e| e.at(&u.pos))?;
                }
                ddl::apply(&self.target, &d)
                    .await
                    .map_err(|e| e.at(&u.pos))?;
                self.capped.clear();
                match &self.file {
                    Some(f) => f.commit(&u.pos).await?,
                    None => checkpoint::save_position(&self.target, &self.cfg.id, &u.pos).await?,
                }
                crate::metrics::mongo_applied(d.kind(), 1);
                if let Some(st) = &self.status {
                    st.mongo(|m| {
                        *m.applied.entry(d.kind().to_string()).or_default() += 1;
                        m.position = u.pos.to_string();
                    });
                }
                self.advanced(&u.pos);
            } else {
                run.push(u);
            }
        }
        self.flush(run).await
    }

    /// Keeps what the link replicates, renamed to where it lands.
    fn route(&self, mut u: Unit) -> Unit {
        let f = &self.cfg.filter;
        u.payload = match u.payload {
            Payload::Ops(ops) => Payload::Ops(
                ops.into_iter()
                    .filter(|o| f.accepts(o.ns()))
                    .map(|mut o| {
                        let to = f.map(o.ns());
                        *o.ns_mut() = to;
                        o
                    })
                    .collect(),
            ),
            Payload::Ddl(d) => match route_ddl(f, d) {
                Some(d) => Payload::Ddl(d),
                None => Payload::Noop,
            },
            Payload::Noop => Payload::Noop,
        };
        u
    }

    async fn flush(&mut self, run: Vec<Unit>) -> Result<()> {
        let Some(end) = run.last().map(|u| u.pos.clone()) else {
            return Ok(());
        };
        let window = self.cfg.copy_end;
        let ops: Vec<(&Op, bool)> = run
            .iter()
            .flat_map(|u| {
                let w = window.is_some_and(|e| u.pos.ts <= e);
                match &u.payload {
                    Payload::Ops(o) => o.iter().map(move |op| (op, w)).collect::<Vec<_>>(),
                    _ => Vec::new(),
                }
            })
            .collect();
        let conflicts = match self.file.clone() {
            Some(file) => match self.without_transaction(&file, &ops, &end).await {
                Ok(c) => c,
                Err(e) => {
                    // Maybe partly written (the file names it in flight): applied again
                    // by this process after a retryable error, the batch is a replay
                    // like the one after a crash.
                    let in_flight = file.load().await.and_then(|s| s.in_flight);
                    self.cfg.copy_end = window.max(in_flight);
                    return Err(e.at(&end));
                }
            },
            None => self.in_transaction(&ops, &end).await?,
        };
        self.count_conflicts(conflicts);
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for (op, _) in &ops {
            *kinds.entry(op.kind()).or_default() += 1;
        }
        if let Some(st) = &self.status {
            st.mongo(|m| {
                for (k, n) in &kinds {
                    *m.applied.entry(k.to_string()).or_default() += n;
                }
                m.position = end.to_string();
            });
        }
        for (k, n) in kinds {
            crate::metrics::mongo_applied(k, n);
        }
        if let Some(s) = &self.status {
            s.commands_counter()
                .fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        crate::metrics::sink_batch(ops.len());
        self.advanced(&end);
        Ok(())
    }

    /// A batch as one transaction with its checkpoint; returns its conflicts.
    async fn in_transaction(
        &mut self,
        ops: &[(&Op, bool)],
        end: &MongoPosition,
    ) -> Result<Vec<fold::Conflict>> {
        // No server writes a capped collection inside a transaction. Their end states
        // are written just before the transaction instead: writing an end state again
        // changes nothing, so a crash in between re-applies them harmlessly.
        let mut plain = Vec::with_capacity(ops.len());
        let mut capped = Vec::new();
        for (op, w) in ops {
            if self.is_capped(op.ns()).await? {
                capped.push((*op, true));
            } else {
                plain.push((*op, *w));
            }
        }
        if !capped.is_empty() {
            self.outside_transaction(&capped, None)
                .await
                .map_err(|e| e.at(end))?;
        }
        tracing::trace!(
            "{}: {} ops to {end}: {:?}",
            self.cfg.id,
            plain.len(),
            plain
                .iter()
                .map(|(o, w)| format!("{}:{:?}:{w}", o.kind(), o.id()))
                .collect::<Vec<_>>()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transaction(&plain, end).await {
                Ok(()) => break,
                Err(e)
                    if (e.code == Some(11000) || e.is_retryable())
                        && !self.read_all.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    // Maybe a presumption of `fetch` was wrong: the next attempt reads.
                    tracing::debug!("reading the whole batch before trying again: {e}");
                    self.read_all
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    if e.code == Some(11000) {
                        attempt -= 1;
                    }
                }
                Err(e) if e.is_retryable() && attempt < TXN_ATTEMPTS => {
                    crate::metrics::sink_retry();
                    tracing::info!("retrying a batch: {e}");
                    tokio::time::sleep(Duration::from_millis((20 * attempt as u64).min(1000)))
                        .await;
                }
                Err(e) => return Err(e.at(end)),
            }
        }
        self.read_all
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(std::mem::take(
            &mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// A batch with a checkpoint file: read and folded, the file names the batch in
    /// flight, the end states are written (capped collections like the rest), then the
    /// file moves to the batch's end. Returns the batch's conflicts.
    async fn without_transaction(
        &self,
        file: &CheckpointFile,
        ops: &[(&Op, bool)],
        end: &MongoPosition,
    ) -> Result<Vec<fold::Conflict>> {
        if ops.is_empty() {
            file.commit(end).await?;
            return Ok(Vec::new());
        }
        let conflicts = self.outside_transaction(ops, Some((file, end))).await?;
        file.commit(end).await?;
        Ok(conflicts)
    }

    async fn is_capped(&mut self, ns: &Namespace) -> Result<bool> {
        if let Some(c) = self.capped.get(ns) {
            return Ok(*c);
        }
        let listed = self
            .target
            .collections(&ns.db, Some(doc! {"name": &ns.coll}))
            .await?;
        let capped = listed
            .first()
            .and_then(|d| d.get_document("options").ok())
            .is_some_and(|o| o.get_bool("capped").unwrap_or(false));
        self.capped.insert(ns.clone(), capped);
        Ok(capped)
    }

    /// End states written without a transaction (capped collections, and every batch
    /// with a checkpoint file), retried; returns the conflicts. A retry may find some
    /// of them written by the failed attempt, so it folds the batch as a replay.
    ///
    /// `in_flight`: the file to mark the batch in flight in, once it folded: a conflict
    /// that stops the link has written nothing, and must stop the next run too rather
    /// than pass as a replay.
    async fn outside_transaction(
        &self,
        ops: &[(&Op, bool)],
        in_flight: Option<(&CheckpointFile, &MongoPosition)>,
    ) -> Result<Vec<fold::Conflict>> {
        let name = self.target.name();
        let replay: Vec<(&Op, bool)> = ops.iter().map(|(op, _)| (*op, true)).collect();
        for attempt in 1..=TXN_ATTEMPTS {
            let ops = if attempt == 1 { ops } else { &replay[..] };
            let mut s =
                self.target.client.start_session().await.map_err(|e| {
                    MongoError::from_driver(format!("{name}: starting a session"), &e)
                })?;
            let result = async {
                let folded = self.read_and_fold(&mut s, ops, false).await?;
                if let Some((file, end)) = in_flight {
                    file.begin(end).await?;
                }
                for (ns, docs) in &folded.docs {
                    self.write(&mut s, ns, docs).await?;
                }
                Ok::<_, MongoError>(folded.conflicts)
            }
            .await;
            match result {
                Err(e) if e.is_retryable() && attempt < TXN_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
        unreachable!("the last attempt returns")
    }

    fn advanced(&mut self, pos: &MongoPosition) {
        if let Some(s) = &self.status {
            s.applied(pos.ts.0);
            s.lag_clock().applied(pos.ts.0);
        }
        self.last = Some(pos.clone());
    }

    /// The session transactions run in. A process killed inside a transaction leaves
    /// it open on the target, holding its documents (the checkpoint among them) until
    /// the server's transaction lifetime runs out, a minute by default: the next
    /// process would wait that long. So each process records its session id and the
    /// next one ends that session first (`killSessions`), which aborts the transaction.
    async fn new_session(&self) -> Result<ClientSession> {
        let name = self.target.name();
        let drv = |what: &str, e: &mongodb::error::Error| {
            MongoError::from_driver(format!("{name}: {what}"), e)
        };
        let rec = self
            .target
            .client
            .database(TANDEM_DB)
            .collection::<Document>(SESSIONS);
        let key = doc! {"_id": &self.cfg.id};
        let old = rec
            .find_one(key.clone())
            .await
            .map_err(|e| drv("reading the last session", &e))?;
        // The last sessions, newest last: two-way's other link knows tandem's own
        // writes on this side by them (`twoway/judge.rs`), also after a restart.
        let mut history: Vec<Bson> = old
            .as_ref()
            .and_then(|d| d.get_array("history").ok())
            .cloned()
            .unwrap_or_default();
        if let Some(lsid) = old.as_ref().and_then(|d| d.get_document("lsid").ok()) {
            history.push(Bson::Document(lsid.clone()));
            let kill = doc! {"killSessions": [lsid.clone()]};
            if let Err(e) = self.target.client.database("admin").run_command(kill).await {
                tracing::debug!("ending the previous process's session: {e}");
            }
        }
        let keep = history.len().saturating_sub(SESSION_HISTORY);
        history.drain(..keep);
        let s = self
            .target
            .client
            .start_session()
            .await
            .map_err(|e| drv("starting a session", &e))?;
        rec.replace_one(
            key.clone(),
            doc! {"_id": &self.cfg.id, "lsid": s.id().clone(), "history": history},
        )
        .upsert(true)
        .await
        .map_err(|e| drv("recording the session", &e))?;
        Ok(s)
    }

    async fn transaction(&mut self, ops: &[(&Op, bool)], end: &MongoPosition) -> Result<()> {
        let mut s = match self.session.take() {
            Some(s) => s,
            None => self.new_session().await?,
        };
        let result = self.transaction_in(&mut s, ops, end).await;
        // After a retryable error the session may be dirty: the next attempt gets a
        // new one (recorded like the first).
        if !result.as_ref().is_err_and(|e| e.is_retryable()) {
            self.session = Some(s);
        }
        result
    }

    async fn transaction_in(
        &self,
        s: &mut ClientSession,
        ops: &[(&Op, bool)],
        end: &MongoPosition,
    ) -> Result<()> {
        let name = self.target.name();
        let drv = |what: &str, e: &mongodb::error::Error| {
            MongoError::from_driver(format!("{name}: {what}"), e)
        };
        let opts = TransactionOptions::builder()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .build();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        s.start_transaction()
            .with_options(opts)
            .await
            .map_err(|e| drv("starting a transaction", &e))?;
        if let Err(e) = self.body(s, ops, end).await {
            let _ = s.abort_transaction().await;
            return Err(e);
        }
        for i in 0..5 {
            match s.commit_transaction().await {
                Ok(()) => return Ok(()),
                Err(e) if e.contains_label("UnknownTransactionCommitResult") && i < 4 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(drv("committing a batch", &e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn body(
        &self,
        s: &mut ClientSession,
        ops: &[(&Op, bool)],
        end: &MongoPosition,
    ) -> Result<()> {
        // Reads first (the snapshot the end states are computed on), then the writes,
        // whose first is the checkpoint: in the other side's history a transaction
        // whose first write is to __tandem is recognisably tandem's (two-way's origin
        // tag).
        let skip = !self.read_all.load(std::sync::atomic::Ordering::Relaxed);
        let folded = self.read_and_fold(s, ops, skip).await?;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(folded.conflicts.iter().cloned());
        // With nothing read, `bulkWrite` would open the transaction and carry its read
        // concern, which it does not take: a lone checkpoint goes as an `update`.
        if !ops.is_empty() && self.bulk_write().await? {
            return bulk::write(&self.target, s, &self.cfg.id, end, &folded).await;
        }
        let ckpt = doc! {
            "update": CHECKPOINTS,
            "updates": [{"q": {"_id": &self.cfg.id}, "u": {"$set": checkpoint::position_fields(end)}, "upsert": true}],
        };
        command(&self.target, s, TANDEM_DB, ckpt, "writing the checkpoint").await?;
        for (ns, docs) in &folded.docs {
            self.write(s, ns, docs).await?;
        }
        Ok(())
    }

    /// The touched documents read, and the batch folded over them.
    async fn read_and_fold(
        &self,
        s: &mut ClientSession,
        ops: &[(&Op, bool)],
        presume: bool,
    ) -> Result<Folded> {
        let base = self.fetch(s, ops, presume).await?;
        fold::fold(ops, &base, self.cfg.on_conflict).map_err(|e| {
            MongoError::fatal(
                format!("{}: {} _id {}", self.target.name(), e.ns, e.id),
                e.message,
            )
        })
    }

    /// Whether the target takes the `bulkWrite` command (wire version 25, MongoDB 8.0).
    async fn bulk_write(&self) -> Result<bool> {
        use std::sync::atomic::Ordering::Relaxed;
        match self.bulk.load(Relaxed) {
            1 => return Ok(true),
            2 => return Ok(false),
            _ => {}
        }
        let hello = self.target.hello().await?;
        let wire = match hello.get("maxWireVersion") {
            Some(Bson::Int32(v)) => *v as i64,
            Some(Bson::Int64(v)) => *v,
            _ => 0,
        };
        let yes = wire >= 25;
        self.bulk.store(if yes { 1 } else { 2 }, Relaxed);
        Ok(yes)
    }

    /// Counts (and logs) the conflicts of a batch that landed.
    fn count_conflicts(&self, conflicts: Vec<fold::Conflict>) {
        if let Some(st) = &self.status
            && !conflicts.is_empty()
        {
            st.mongo(|m| m.conflicts += conflicts.len() as u64);
        }
        for c in &conflicts {
            crate::metrics::mongo_conflict(c.what, c.resolved);
            tracing::warn!(ns = %c.ns, id = %c.id, "conflict: {} ({})", c.what, c.resolved);
        }
    }

    /// The target's current state of every document the batch touches.
    ///
    /// `presume` (in a transaction): a document the batch writes once, outside the
    /// copy window, by an insert, a replacement or a delete, is not read. Exactly once
    /// means an inserted document is absent and a replaced or deleted one is there (a
    /// stand-in is its base: neither write looks at it). Where that is wrong (a
    /// conflict), the insert fails with a duplicate key or the write's count is short,
    /// the transaction aborts, and it runs again reading everything, which finds the
    /// conflict and handles it as `--on-conflict` says. The reads cost the target about
    /// as much as the writes (docs/BENCHMARKS.md).
    async fn fetch(
        &self,
        s: &mut ClientSession,
        ops: &[(&Op, bool)],
        presume: bool,
    ) -> Result<HashMap<DocKey, Document>> {
        // Per document: how many ops, and whether the last (so, for one, the only) is
        // a write of its whole state outside the copy window.
        let mut per_doc: HashMap<DocKey, (usize, Option<bool>)> = HashMap::new();
        for (op, w) in ops {
            let e = per_doc.entry(doc_key(op.ns(), op.id())).or_default();
            e.0 += 1;
            e.1 = match op {
                _ if *w => None,
                Op::Insert { .. } => Some(false),
                Op::Replace { .. } | Op::Delete { .. } => Some(true),
                Op::Update { .. } => None,
            };
        }
        let mut ids: BTreeMap<&Namespace, Vec<Bson>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut out = HashMap::new();
        for (op, _) in ops {
            let key = doc_key(op.ns(), op.id());
            if presume && let Some(&(1, Some(exists))) = per_doc.get(&key) {
                if exists {
                    // A field no stored document has: the stand-in never equals a
                    // replacement, which is therefore always written.
                    out.insert(key, doc! {"_id": op.id().clone(), PRESUMED: true});
                }
                continue;
            }
            if seen.insert(key) {
                ids.entry(op.ns()).or_default().push(op.id().clone());
            }
        }
        if ids.is_empty() && !ops.is_empty() {
            // A transaction's first command carries its read concern, which `bulkWrite`
            // refuses: with every read skipped, one small read opens it.
            self.target
                .client
                .database(TANDEM_DB)
                .collection::<Document>(CHECKPOINTS)
                .find_one(doc! {"_id": &self.cfg.id})
                .session(&mut *s)
                .await
                .map_err(|e| {
                    MongoError::from_driver(
                        format!("{}: reading the checkpoint", self.target.name()),
                        &e,
                    )
                })?;
        }
        for (ns, ids) in ids {
            let coll = self
                .target
                .client
                .database(&ns.db)
                .collection::<Document>(&ns.coll);
            for chunk in ids.chunks(FETCH_IDS) {
                let mut cur = coll
                    .find(doc! {"_id": {"$in": chunk.to_vec()}})
                    .session(&mut *s)
                    .await
                    .map_err(|e| {
                        MongoError::from_driver(format!("{}: reading {ns}", self.target.name()), &e)
                    })?;
                while let Some(d) = cur.next(&mut *s).await {
                    let d = d.map_err(|e| {
                        MongoError::from_driver(format!("{}: reading {ns}", self.target.name()), &e)
                    })?;
                    let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                    out.insert(doc_key(ns, &id), d);
                }
            }
        }
        Ok(out)
    }

    /// One namespace's end states: deletes first (so a unique key a deleted document
    /// held is free, and a document re-inserted whole is gone), then replacements,
    /// then inserts.
    /// One namespace's end states, a command per kind (servers without `bulkWrite`).
    async fn write(
        &self,
        s: &mut ClientSession,
        ns: &Namespace,
        docs: &[fold::Final],
    ) -> Result<()> {
        let mut deletes = Vec::new();
        let mut replaces = Vec::new();
        let mut inserts = Vec::new();
        for w in end_states(&self.target, ns, docs)? {
            match w {
                EndState::Delete(id) => deletes.push(id),
                EndState::Replace(d, size) => replaces.push((d, size)),
                EndState::Insert(d, size) => inserts.push((d, size)),
            }
        }
        for chunk in deletes.chunks(CHUNK_DOCS) {
            let cmd = doc! {"delete": &ns.coll, "deletes": [{"q": {"_id": {"$in": chunk.to_vec()}}, "limit": 0}]};
            let what = format!("deleting from {ns}");
            let reply = command(&self.target, s, &ns.db, cmd, &what).await?;
            expect_count(&self.target, &what, &reply, "n", chunk.len())?;
        }
        for chunk in chunks(&replaces) {
            let updates: Vec<Bson> = chunk
                .iter()
                .map(|(d, _)| Bson::Document(doc! {"q": {"_id": d.get("_id").cloned().unwrap_or(Bson::Null)}, "u": (*d).clone()}))
                .collect();
            let cmd = doc! {"update": &ns.coll, "updates": updates, "ordered": true};
            let what = format!("replacing in {ns}");
            let reply = command(&self.target, s, &ns.db, cmd, &what).await?;
            expect_count(&self.target, &what, &reply, "n", chunk.len())?;
        }
        for chunk in chunks(&inserts) {
            let documents: Vec<Bson> = chunk
                .iter()
                .map(|(d, _)| Bson::Document((*d).clone()))
                .collect();
            let cmd = doc! {"insert": &ns.coll, "documents": documents, "ordered": true};
            command(
                &self.target,
                s,
                &ns.db,
                cmd,
                &format!("inserting into {ns}"),
            )
            .await?;
        }
        Ok(())
    }
}

/// The end states were computed on documents read in this transaction, so every
/// delete and replacement finds its document. One that does not means the read did not
/// show what the target holds: the batch is retried from a new read rather than
/// committed with a write that changed nothing.
pub(crate) fn expect_count(
    target: &MongoEndpoint,
    what: &str,
    reply: &Document,
    field: &str,
    want: usize,
) -> Result<()> {
    let got = count_field(reply, field).unwrap_or(-1);
    if got != want as i64 {
        return Err(MongoError::retryable(
            format!("{}: {what}", target.name()),
            format!("{field} is {got} where the documents read in the transaction make it {want}"),
        ));
    }
    Ok(())
}

/// A count in a server's reply, whichever number type it came as.
pub(crate) fn count_field(reply: &Document, field: &str) -> Option<i64> {
    match reply.get(field)? {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

/// What one document's end state takes on the target.
pub(crate) enum EndState<'a> {
    Delete(Bson),
    Replace(&'a Document, usize),
    Insert(&'a Document, usize),
}

/// A namespace's end states as writes, in the order they must run: deletes first (so a
/// unique key a deleted document held is free, and a document re-inserted whole is
/// gone), then replacements, then inserts.
pub(crate) fn end_states<'a>(
    target: &MongoEndpoint,
    ns: &Namespace,
    docs: &'a [fold::Final],
) -> Result<Vec<EndState<'a>>> {
    let (mut deletes, mut replaces, mut inserts) = (Vec::new(), Vec::new(), Vec::new());
    for f in docs.iter().filter(|f| f.changed) {
        match (&f.doc, f.existed) {
            (None, true) => deletes.push(EndState::Delete(f.id.clone())),
            (None, false) => {}
            (Some(d), exists) => {
                let size = bson::to_vec(d).map(|v| v.len()).unwrap_or(0);
                if size > MAX_DOC_BYTES {
                    return Err(MongoError::fatal(
                        format!("{}: {ns} _id {}", target.name(), f.id),
                        format!(
                            "the document would be {size} bytes, over the server's 16 MB limit"
                        ),
                    ));
                }
                if exists && d.keys().any(|k| k.starts_with('$')) {
                    // A replacement document may not hold top-level `$` names: delete
                    // and insert, in the same transaction.
                    deletes.push(EndState::Delete(f.id.clone()));
                    inserts.push(EndState::Insert(d, size));
                } else if exists {
                    replaces.push(EndState::Replace(d, size));
                } else {
                    inserts.push(EndState::Insert(d, size));
                }
            }
        }
    }
    deletes.extend(replaces);
    deletes.extend(inserts);
    Ok(deletes)
}

fn chunks<'a>(items: &'a [(&'a Document, usize)]) -> Vec<&'a [(&'a Document, usize)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, size)) in items.iter().enumerate() {
        if i > start && (i - start >= CHUNK_DOCS || bytes + size > CHUNK_BYTES) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Runs a write command in the session; a reply carrying write errors is an error.
pub async fn command(
    target: &MongoEndpoint,
    s: &mut ClientSession,
    db: &str,
    cmd: Document,
    what: &str,
) -> Result<Document> {
    let reply = target
        .client
        .database(db)
        .run_command(cmd)
        .session(&mut *s)
        .await
        .map_err(|e| MongoError::from_driver(format!("{}: {what}", target.name()), &e))?;
    if let Ok(errs) = reply.get_array("writeErrors")
        && let Some(Bson::Document(first)) = errs.first()
    {
        let code = first.get_i32("code").ok();
        let msg = first.get_str("errmsg").unwrap_or("write error");
        let mut e = MongoError::fatal(format!("{}: {what}", target.name()), msg.to_string());
        e.code = code;
        return Err(e);
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(MongoError::retryable(
            format!("{}: {what}", target.name()),
            format!("write concern: {}", wce.get_str("errmsg").unwrap_or("?")),
        ));
    }
    Ok(reply)
}

/// A DDL unit as it applies on the target, or `None` when the link does not replicate
/// what it changes.
fn route_ddl(f: &NsFilter, d: Ddl) -> Option<Ddl> {
    let m = |ns: &Namespace| f.map(ns);
    Some(match d {
        Ddl::Create { ns, options } if f.accepts(&ns) => {
            let mut options = options;
            // A view's source collection is renamed with its database.
            if let Ok(on) = options.get_str("viewOn") {
                let on = f.map(&Namespace::new(&ns.db, on)).coll;
                options.insert("viewOn", on);
            }
            Ddl::Create {
                ns: m(&ns),
                options,
            }
        }
        Ddl::Drop { ns } if f.accepts(&ns) => Ddl::Drop { ns: m(&ns) },
        Ddl::DropDatabase { db } if f.accepts_whole_db(&db) => {
            Ddl::DropDatabase { db: f.map_db(&db) }
        }
        Ddl::Rename {
            from,
            to,
            drop_target,
        } if f.accepts(&from) && f.accepts(&to) => Ddl::Rename {
            from: m(&from),
            to: m(&to),
            drop_target,
        },
        Ddl::Rename { from, .. } if f.accepts(&from) => Ddl::Drop { ns: m(&from) },
        Ddl::CreateIndexes { ns, specs } if f.accepts(&ns) => {
            Ddl::CreateIndexes { ns: m(&ns), specs }
        }
        Ddl::DropIndexes { ns, names } if f.accepts(&ns) => Ddl::DropIndexes { ns: m(&ns), names },
        Ddl::CollMod { ns, changes } if f.accepts(&ns) => Ddl::CollMod {
            ns: m(&ns),
            changes,
        },
        Ddl::ConvertToCapped { ns, size } if f.accepts(&ns) => {
            Ddl::ConvertToCapped { ns: m(&ns), size }
        }
        _ => return None,
    })
}
