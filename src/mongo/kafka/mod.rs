//! `tandem mongo kafka`: the source side of `tandem mongo sync` unchanged (the same
//! readers and start positions), and Kafka as the target: every change as a Canal JSON
//! message (`canal.rs`), routed by `route.rs`, each batch one Kafka transaction with the
//! link's position (`sink.rs`, `state.rs`). The full copy (`copy.rs`) comes first.
//!
//! Every session starts from what Kafka holds: a retryable error ends the session and
//! a new one reconnects, fences the old producer and reads the position back, exactly
//! as a restarted process does. So the path a kill -9 takes is the path every retry
//! takes.

pub mod canal;
pub mod copy;
pub mod route;
pub mod sink;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::canal::{Encoder, Kind, Meta};
use self::route::Router;
use self::sink::{Sink, SinkConfig};
use self::state::{CopyProgress, State};
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::event::{Ddl, Op, Payload, Unit};
use super::ns::{Namespace, NsFilter};
use super::source;
use super::sync::{self as msync, Fetch, Mode};
use crate::core::shutdown::Shutdown;
use crate::ops::status::{LinkState, LinkStatus};
use bson::{Bson, Document, doc};

/// What an update message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UpdateFormat {
    /// The changed fields as `$set` / `$unset` (and `$push`+`$slice` for a truncation).
    Delta,
    /// The whole document after the change, looked up on the source; the delta when
    /// the document is gone by then.
    FullDocument,
}

#[derive(Clone)]
pub struct KafkaConfig {
    pub source: MongoEndpoint,
    pub id: String,
    pub mode: Mode,
    pub fetch: Fetch,
    pub filter: NsFilter,
    pub router: Router,
    pub encoder: Encoder,
    pub update_format: UpdateFormat,
    /// Source operations per Kafka transaction, at most (a source transaction is never
    /// split; copy batches hold this many documents).
    pub batch_ops: usize,
    pub sink: SinkConfig,
    pub status: Arc<LinkStatus>,
}

pub async fn run(cfg: KafkaConfig, shutdown: Shutdown) -> Result<()> {
    let st = cfg.status.clone();
    st.set_state(LinkState::Connecting);
    let mut failures = 0u32;
    let mut connected = false;
    let result = loop {
        let began = Instant::now();
        match session(&cfg, &shutdown, &mut connected).await {
            // Brokers that never answered are a wrong --brokers more likely than an outage.
            Err(e) if !connected && e.code == Some(super::error::KAFKA_UNREACHABLE) => {
                break Err(e);
            }
            Err(e) if e.is_retryable() && failures < 60 && !shutdown.is_triggered() => {
                // A session that ran a while was not failing to start: count afresh.
                failures = if began.elapsed() > Duration::from_secs(60) {
                    1
                } else {
                    failures + 1
                };
                st.reconnecting(e.to_string());
                tracing::warn!("{e}; reconnecting and resuming from the committed position");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            r => break r,
        }
    };
    st.ended(result.as_ref().err().map(|e| e.to_string()));
    result
}

async fn session(cfg: &KafkaConfig, shutdown: &Shutdown, connected: &mut bool) -> Result<()> {
    let info = source::probe(&cfg.source).await?;
    if info.sharded && cfg.fetch == Fetch::Oplog {
        return Err(MongoError::fatal(
            cfg.source.name(),
            "is a mongos: `mongo kafka` reads a sharded cluster through one change stream; \
             use --fetch change-stream",
        ));
    }
    cfg.status.set_replid(&info.history);
    let (mut sink, committed) = Sink::connect(cfg.sink.clone(), &cfg.router.topics()).await?;
    *connected = true;
    let what = || {
        format!(
            "{}: position {:?} in {}",
            sink::kafka_name(&cfg.sink.brokers),
            cfg.id,
            cfg.sink.positions_topic
        )
    };
    let mut state = match committed {
        Some(s) => {
            if s.pos.history != info.history {
                return Err(MongoError::fatal(
                    what(),
                    format!(
                        "belongs to history {:?}, the source is {:?}: use another --id for another source",
                        s.pos.history, info.history
                    ),
                ));
            }
            if s.pos.token.is_some() != (cfg.fetch == Fetch::ChangeStream) {
                return Err(MongoError::fatal(
                    what(),
                    "was written in the other --fetch mode; positions of the two do not \
                     translate: use the same --fetch or a new --id",
                ));
            }
            tracing::info!("{}: resuming after {}", what(), s.pos);
            s
        }
        None => {
            let pos = msync::start_position(&cfg.source, cfg.fetch, &info.history, info.last_write)
                .await?;
            let s = State {
                pos,
                copy: (cfg.mode != Mode::Incr).then(CopyProgress::default),
            };
            // Recorded before anything else, so a restart keeps this start.
            sink.commit(&s).await?;
            s
        }
    };
    if state.copy.is_some() {
        if cfg.mode == Mode::Incr {
            return Err(MongoError::fatal(
                what(),
                "a copy of this link is unfinished: run with --mode all or full to finish it",
            ));
        }
        if !copy::copy(cfg, &mut sink, &mut state, shutdown).await? {
            return Ok(());
        }
    }
    if cfg.mode == Mode::Full {
        return Ok(());
    }
    incremental(cfg, &mut sink, state, shutdown.clone()).await
}

async fn incremental(
    cfg: &KafkaConfig,
    sink: &mut Sink,
    mut state: State,
    mut shutdown: Shutdown,
) -> Result<()> {
    let st = cfg.status.clone();
    let _stop_gauge = msync::lag_gauge(&st, &cfg.source);
    let reader = msync::open_reader(&cfg.source, &state.pos).await?;
    st.set_state(LinkState::Incremental);
    tracing::info!("{}: reading changes after {}", cfg.source.name(), state.pos);
    let (read, mut rx) = msync::spawn_reader(reader, st.clone(), None);
    let _stop_reader = msync::AbortOnDrop(read);
    let mut emitter = Emitter::new(cfg);
    loop {
        let first = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            u = rx.recv() => u,
        };
        let Some(first) = first else {
            return Err(MongoError::retryable("reader", "the source reader stopped"));
        };
        let mut batch = vec![first.map_err(|e| e.at(&state.pos))?];
        let mut ops = batch[0].ops();
        let mut failed = None;
        while ops < cfg.batch_ops {
            match rx.try_recv() {
                Ok(Ok(u)) => {
                    ops += u.ops().max(1);
                    batch.push(u);
                }
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        let last = batch
            .last()
            .map(|u| u.pos.clone())
            .expect("one unit at least");
        emitter
            .batch(sink, batch)
            .await
            .map_err(|e| e.at(&state.pos))?;
        state.pos = last;
        sink.commit(&state).await.map_err(|e| e.at(&state.pos))?;
        emitter.committed(&st, &state);
        if let Some(e) = failed {
            return Err(e.at(&state.pos));
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
    }
}

/// Turns units into messages and counts what each batch holds until it commits.
struct Emitter<'a> {
    cfg: &'a KafkaConfig,
    buf: Vec<u8>,
    counts: HashMap<Kind, u64>,
    bytes: u64,
}

impl<'a> Emitter<'a> {
    fn new(cfg: &'a KafkaConfig) -> Self {
        Emitter {
            cfg,
            buf: Vec::with_capacity(4096),
            counts: HashMap::new(),
            bytes: 0,
        }
    }

    async fn batch(&mut self, sink: &mut Sink, batch: Vec<Unit>) -> Result<()> {
        let mut images = match self.cfg.update_format {
            UpdateFormat::FullDocument => {
                post_images(&self.cfg.source, &self.cfg.filter, &batch).await?
            }
            UpdateFormat::Delta => HashMap::new(),
        };
        let now = now_ms();
        for u in batch {
            let meta = Meta {
                id: u.pos.ts.0,
                es: if u.wall_ms > 0 {
                    u.wall_ms
                } else {
                    u.pos.ts.secs() as u64 * 1000
                },
                ts: now,
            };
            match u.payload {
                Payload::Ops(ops) => {
                    for op in ops {
                        if !self.cfg.filter.accepts(op.ns()) {
                            continue;
                        }
                        let image = match &op {
                            Op::Update { ns, id, .. } => {
                                images.remove(&(ns.clone(), canal::id_key(id)))
                            }
                            _ => None,
                        };
                        self.op(sink, op, meta, image).await?;
                    }
                }
                Payload::Ddl(d) => self.ddl(sink, &d, meta).await?,
                Payload::Noop => {}
            }
        }
        Ok(())
    }

    /// One document message (the copy's inserts come through here too).
    async fn op(
        &mut self,
        sink: &mut Sink,
        op: Op,
        meta: Meta,
        image: Option<Document>,
    ) -> Result<()> {
        let ns = op.ns().clone();
        let id = op.id().clone();
        let dest = self.cfg.router.doc(&ns, &id);
        self.buf.clear();
        let kind = self.cfg.encoder.op(op, meta, image, &mut self.buf);
        let what = || {
            format!(
                "the {} message of {ns} _id {}",
                kind.canal(),
                id.clone().into_relaxed_extjson()
            )
        };
        sink.send(dest.topic, dest.partition, &dest.key, &self.buf, what)
            .await?;
        *self.counts.entry(kind).or_default() += 1;
        self.bytes += self.buf.len() as u64;
        Ok(())
    }

    async fn ddl(&mut self, sink: &mut Sink, d: &Ddl, meta: Meta) -> Result<()> {
        let f = &self.cfg.filter;
        let (keep, ns) = match d {
            Ddl::DropDatabase { db } => (f.accepts_db(db), Namespace::new(db, "")),
            Ddl::Rename { from, to, .. } => (f.accepts(from) || f.accepts(to), from.clone()),
            other => {
                let ns = other.namespaces()[0].clone();
                (f.accepts(&ns), ns)
            }
        };
        if !keep {
            return Ok(());
        }
        self.buf.clear();
        self.cfg.encoder.ddl(d, meta, &mut self.buf);
        let dests = self.cfg.router.ddl(&ns, |t| sink.partitions(t));
        for dest in dests {
            let what = || format!("the DDL message ({}) of {ns}", d.kind());
            sink.send(dest.topic, dest.partition, &dest.key, &self.buf, what)
                .await?;
            *self.counts.entry(Kind::Ddl).or_default() += 1;
            self.bytes += self.buf.len() as u64;
        }
        Ok(())
    }

    /// The batch's messages are in Kafka: metrics and `/status` may say so.
    fn committed(&mut self, st: &LinkStatus, state: &State) {
        for (k, n) in self.counts.drain() {
            crate::metrics::kafka_messages(k.label(), n);
            st.mongo(|m| *m.applied.entry(k.label().to_string()).or_default() += n);
        }
        crate::metrics::kafka_bytes(std::mem::take(&mut self.bytes));
        st.mongo(|m| m.position = state.pos.to_string());
        if state.copy.is_none() {
            st.applied(state.pos.ts.0);
            st.lag_clock().applied(state.pos.ts.0);
        }
    }
}

/// The documents updated in `batch`, as the source holds them now (what a change
/// stream's `fullDocument: updateLookup` returns), keyed by namespace and `_id` key.
async fn post_images(
    source: &MongoEndpoint,
    filter: &NsFilter,
    batch: &[Unit],
) -> Result<HashMap<(Namespace, Vec<u8>), Document>> {
    let mut wanted: HashMap<Namespace, Vec<Bson>> = HashMap::new();
    for u in batch {
        if let Payload::Ops(ops) = &u.payload {
            for op in ops {
                if let Op::Update { ns, id, .. } = op
                    && filter.accepts(ns)
                {
                    wanted.entry(ns.clone()).or_default().push(id.clone());
                }
            }
        }
    }
    let mut out = HashMap::new();
    for (ns, ids) in wanted {
        let coll = source
            .client
            .database(&ns.db)
            .collection::<Document>(&ns.coll);
        let mut cur = coll
            .find(doc! {"_id": {"$in": ids}})
            .await
            .map_err(|e| source.err(format!("looking up updated documents of {ns}"), &e))?;
        while cur
            .advance()
            .await
            .map_err(|e| source.err(format!("looking up updated documents of {ns}"), &e))?
        {
            let d: Document = cur
                .deserialize_current()
                .map_err(|e| source.err(format!("reading a document of {ns}"), &e))?;
            if let Some(id) = d.get("_id") {
                out.insert((ns.clone(), canal::id_key(id)), d);
            }
        }
    }
    Ok(out)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
