//! A cluster-wide change stream (`showExpandedEvents`, so DDL is seen too). Events of
//! one transaction (one `lsid` + `txnNumber`) come out as one unit.
//!
//! A transaction's events are all in the oplog once it commits, so they arrive
//! together: the group ends at the first event of another transaction or write, or
//! when a getMore finds nothing more (`next_if_any` returning `None`).

use std::time::Duration;

use bson::{Bson, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ResumeToken;

use super::oplog::{history_lost, lsid_of, unit_of};
use crate::core::{MongoPosition, OpTime};
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::{MongoError, Result};
use crate::mongo::event::{Change, Ddl, Op, Payload, Unit};
use crate::mongo::ns::Namespace;

/// Where a stream starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// After the event of this resume token (raw BSON).
    After(Vec<u8>),
    /// At this operation time, inclusive.
    At(OpTime),
}

pub struct StreamReader {
    name: String,
    history: String,
    source: MongoEndpoint,
    stream: ChangeStream<Document>,
    group: Option<Group>,
    held: Option<Unit>,
}

struct Group {
    key: (Vec<u8>, i64),
    ops: Vec<Op>,
    last_token: Vec<u8>,
    ts: OpTime,
    wall_ms: u64,
    lsid: Option<Vec<u8>>,
}

impl StreamReader {
    pub async fn open(ep: &MongoEndpoint, history: &str, start: Start) -> Result<StreamReader> {
        let name = ep.name();
        let w = ep
            .client
            .watch()
            .show_expanded_events(true)
            .max_await_time(Duration::from_millis(300))
            .batch_size(1000u32);
        let w = match &start {
            Start::After(tok) => {
                let d = Document::from_reader(&mut tok.as_slice()).map_err(|e| {
                    MongoError::fatal(&name, format!("stored resume token is not BSON: {e}"))
                })?;
                let t: ResumeToken = bson::from_document(d)
                    .map_err(|e| MongoError::fatal(&name, format!("stored resume token: {e}")))?;
                w.resume_after(t)
            }
            Start::At(ts) => w.start_at_operation_time(bson::Timestamp {
                time: ts.secs(),
                increment: ts.inc(),
            }),
        };
        let stream = w
            .await
            .map_err(|e| open_error(&name, &e, &start))?
            .with_type::<Document>();
        Ok(StreamReader {
            name,
            history: history.to_string(),
            source: ep.clone(),
            stream,
            group: None,
            held: None,
        })
    }

    pub async fn next(&mut self) -> Result<Option<Unit>> {
        if let Some(u) = self.held.take() {
            return Ok(Some(u));
        }
        for _ in 0..10_000 {
            let ev = self
                .stream
                .next_if_any()
                .await
                .map_err(|e| self.err("reading", &e))?;
            let Some(ev) = ev else {
                // Nothing more now: a transaction being gathered is complete.
                return Ok(self.group.take().map(|g| self.group_unit(g)));
            };
            let parsed = self.event(&ev).await?;
            let (token, ts, wall_ms) = meta(&ev);
            tracing::trace!(
                "{}: event {} {:?} at {ts}",
                self.name,
                ev.get_str("operationType").unwrap_or("?"),
                ev.get_document("documentKey").ok()
            );
            let txn = txn_key(&ev);
            match (txn, self.group.as_mut()) {
                (Some(k), Some(g)) if g.key == k => {
                    g.ops.extend(parsed.into_ops());
                    g.last_token = token;
                    g.ts = ts;
                }
                (txn, _) => {
                    let done = self.group.take().map(|g| self.group_unit(g));
                    let unit = match txn {
                        Some(key) => {
                            self.group = Some(Group {
                                key,
                                ops: parsed.into_ops(),
                                last_token: token,
                                ts,
                                wall_ms,
                                lsid: lsid_of(&ev),
                            });
                            None
                        }
                        None => {
                            let pos = MongoPosition::stream(&self.history, ts, token);
                            Some(unit_of(pos, wall_ms, parsed.payload(), false, lsid_of(&ev)))
                        }
                    };
                    match (done, unit) {
                        (Some(d), u) => {
                            self.held = u;
                            return Ok(Some(d));
                        }
                        (None, Some(u)) => return Ok(Some(u)),
                        (None, None) => {}
                    }
                }
            }
        }
        Ok(None)
    }

    fn group_unit(&self, g: Group) -> Unit {
        let pos = MongoPosition::stream(&self.history, g.ts, g.last_token);
        unit_of(pos, g.wall_ms, Payload::Ops(g.ops), true, g.lsid)
    }

    fn err(&self, what: &str, e: &mongodb::error::Error) -> MongoError {
        if crate::mongo::error::driver_code(e) == Some(286) {
            return history_lost(&self.name, OpTime(0));
        }
        MongoError::from_driver(format!("{}: change stream: {what}", self.name), e)
    }

    async fn event(&mut self, ev: &Document) -> Result<Parsed> {
        let name = self.name.clone();
        let bad = |why: &str| {
            MongoError::fatal(
                format!(
                    "{name}: change event {:?}",
                    ev.get_str("operationType").unwrap_or("?")
                ),
                why.to_string(),
            )
        };
        let op = ev
            .get_str("operationType")
            .map_err(|_| bad("no operationType"))?;
        let ns = || -> Result<Namespace> {
            let n = ev.get_document("ns").map_err(|_| bad("no ns"))?;
            Ok(Namespace::new(
                n.get_str("db").map_err(|_| bad("no ns.db"))?,
                n.get_str("coll").map_err(|_| bad("no ns.coll"))?,
            ))
        };
        let id = || -> Result<Bson> {
            ev.get_document("documentKey")
                .ok()
                .and_then(|k| k.get("_id"))
                .cloned()
                .ok_or_else(|| bad("no documentKey._id"))
        };
        let full = || -> Result<Document> {
            ev.get_document("fullDocument")
                .cloned()
                .map_err(|_| bad("no fullDocument"))
        };
        let desc = || {
            ev.get_document("operationDescription")
                .cloned()
                .unwrap_or_default()
        };
        Ok(match op {
            "insert" => Parsed::Op(Op::Insert {
                ns: ns()?,
                doc: full()?,
            }),
            "replace" => Parsed::Op(Op::Replace {
                ns: ns()?,
                id: id()?,
                doc: full()?,
            }),
            "update" => Parsed::Op(Op::Update {
                ns: ns()?,
                id: id()?,
                change: Change::Description(
                    ev.get_document("updateDescription")
                        .cloned()
                        .map_err(|_| bad("no updateDescription"))?,
                ),
            }),
            "delete" => Parsed::Op(Op::Delete {
                ns: ns()?,
                id: id()?,
            }),
            "create" => {
                // The source's catalog says what `create` takes, whatever shape the
                // event's description has; the event's own fields only if the
                // collection is already gone again.
                let ns = ns()?;
                let options = match self.source_options(&ns).await? {
                    Some(o) => o,
                    None => {
                        let mut o = desc();
                        o.remove("idIndex");
                        o
                    }
                };
                Parsed::Ddl(Ddl::Create { ns, options })
            }
            "drop" => Parsed::Ddl(Ddl::Drop { ns: ns()? }),
            "dropDatabase" => Parsed::Ddl(Ddl::DropDatabase {
                db: ev
                    .get_document("ns")
                    .ok()
                    .and_then(|n| n.get_str("db").ok())
                    .ok_or_else(|| bad("no ns.db"))?
                    .to_string(),
            }),
            "rename" => {
                let to = ev.get_document("to").map_err(|_| bad("no `to`"))?;
                let to = Namespace::new(
                    to.get_str("db").unwrap_or(""),
                    to.get_str("coll").unwrap_or(""),
                );
                let drop_target = desc().contains_key("dropTarget");
                Parsed::Ddl(Ddl::Rename {
                    from: ns()?,
                    to,
                    drop_target,
                })
            }
            "createIndexes" => {
                let ns = ns()?;
                let listed = self.source.indexes(&ns).await?;
                let mut specs = Vec::new();
                for s in desc().get_array("indexes").map_err(|_| bad("no indexes"))? {
                    let Bson::Document(s) = s else { continue };
                    let name = s.get_str("name").unwrap_or("");
                    // Some servers leave options out of the event: the source's own
                    // listIndexes has the whole spec.
                    specs.push(
                        listed
                            .iter()
                            .find(|l| l.get_str("name") == Ok(name))
                            .cloned()
                            .unwrap_or_else(|| s.clone()),
                    );
                }
                Parsed::Ddl(Ddl::CreateIndexes { ns, specs })
            }
            "dropIndexes" => {
                let names = desc()
                    .get_array("indexes")
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| {
                                i.as_document()?.get_str("name").ok().map(str::to_string)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Parsed::Ddl(Ddl::DropIndexes { ns: ns()?, names })
            }
            "modify" => {
                let mut changes = desc();
                changes.remove("collectionUUID");
                Parsed::Ddl(Ddl::CollMod { ns: ns()?, changes })
            }
            "shardCollection"
            | "reshardCollection"
            | "refineCollectionShardKey"
            | "movePrimary" => Parsed::Noop,
            "invalidate" => return Err(bad("the change stream was invalidated")),
            other => return Err(bad(&format!("unsupported change event type {other:?}"))),
        })
    }

    async fn source_options(&mut self, ns: &Namespace) -> Result<Option<Document>> {
        let listed = self
            .source
            .collections(&ns.db, Some(doc! {"name": &ns.coll}))
            .await?;
        Ok(listed.first().map(|d| {
            crate::mongo::apply::ddl::clean_options(
                &d.get_document("options").cloned().unwrap_or_default(),
            )
        }))
    }
}

enum Parsed {
    Op(Op),
    Ddl(Ddl),
    Noop,
}

impl Parsed {
    fn into_ops(self) -> Vec<Op> {
        match self {
            Parsed::Op(o) => vec![o],
            _ => vec![],
        }
    }

    fn payload(self) -> Payload {
        match self {
            Parsed::Op(o) => Payload::Ops(vec![o]),
            Parsed::Ddl(d) => Payload::Ddl(d),
            Parsed::Noop => Payload::Noop,
        }
    }
}

fn txn_key(ev: &Document) -> Option<(Vec<u8>, i64)> {
    let lsid = ev.get_document("lsid").ok()?;
    let n = match ev.get("txnNumber")? {
        Bson::Int64(n) => *n,
        Bson::Int32(n) => *n as i64,
        _ => return None,
    };
    Some((bson::to_vec(lsid).ok()?, n))
}

fn meta(ev: &Document) -> (Vec<u8>, OpTime, u64) {
    let token = ev
        .get_document("_id")
        .ok()
        .and_then(|d| bson::to_vec(d).ok())
        .unwrap_or_default();
    let ts = match ev.get("clusterTime") {
        Some(Bson::Timestamp(t)) => OpTime::new(t.time, t.increment),
        _ => OpTime(0),
    };
    let wall = match ev.get("wallTime") {
        Some(Bson::DateTime(d)) => d.timestamp_millis().max(0) as u64,
        _ => 0,
    };
    (token, ts, wall)
}

pub fn token_bytes(t: &ResumeToken) -> Vec<u8> {
    match bson::to_bson(t) {
        Ok(Bson::Document(d)) => bson::to_vec(&d).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn open_error(name: &str, e: &mongodb::error::Error, start: &Start) -> MongoError {
    match crate::mongo::error::driver_code(e) {
        Some(286) | Some(280) => history_lost(
            name,
            match start {
                Start::At(t) => *t,
                Start::After(_) => OpTime(0),
            },
        ),
        Some(40573) => MongoError::fatal(
            name,
            "change streams are not available: the source must be a replica set or a sharded \
             cluster (a standalone mongod has no oplog; run it with --replSet)",
        ),
        _ => MongoError::from_driver(format!("{name}: opening the change stream"), e),
    }
}
