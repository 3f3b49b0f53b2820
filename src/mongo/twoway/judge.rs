//! Two-way's stage between a link's reader and its applier (`sync::Judge`).
//!
//! - **Echoes.** Everything tandem writes on a side touches `__tandem` in the same
//!   transaction (the applier's checkpoint comes first in each batch; a tagged copy
//!   batch or a resolution writes `__tandem.tags`), and the applier's transactions run
//!   in sessions it records in `__tandem.sessions`. A unit that touches `__tandem`, or
//!   was written in one of those sessions, is dropped whole: it never travels back.
//!   The session rule also holds where the tag is not in the same unit: a server that
//!   logs a transaction's writes as separate entries, or one shard's part of a
//!   transaction whose `__tandem` write went to another shard. When an echo carries
//!   the reverse link's checkpoint, its position says how much of the other side this
//!   side now holds.
//! - **Local writes** go through the shared detector (`core::conflict`), keyed by
//!   (namespace, `_id`): a write is concurrent with the other side's latest write of the
//!   same document when neither side had applied the other's when it was made.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bson::{Bson, Document};

use super::Key;
use crate::core::conflict::{Conflict, Detector, Seen, Side, Space, Verdict, Write};
use crate::mongo::apply::SESSIONS;
use crate::mongo::apply::fold::doc_key;
use crate::mongo::checkpoint::CHECKPOINTS;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::Result;
use crate::mongo::event::{Change, Op, Payload, Unit};
use crate::mongo::ns::TANDEM_DB;
use crate::mongo::sync::Judge;

/// Each side is one offset space (one stream): A is 0, B is 1.
pub fn space(side: Side) -> Space {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// How far each side's stream is applied on the other side, as the echoes say.
#[derive(Default)]
pub struct Progress([AtomicU64; 2]);

impl Progress {
    pub fn applied(&self, s: Space) -> u64 {
        self.0[s as usize].load(Ordering::Acquire)
    }
    fn advance(&self, s: Space, to: u64) {
        self.0[s as usize].fetch_max(to, Ordering::AcqRel);
    }
}

/// One JSON line per conflict (`--conflict-log`).
pub struct ConflictLog(Mutex<std::fs::File>);

impl ConflictLog {
    pub fn new(f: std::fs::File) -> Self {
        ConflictLog(Mutex::new(f))
    }

    pub fn write(&self, c: &Conflict<Key>, outcome: &str) {
        let op =
            |w: &Write| serde_json::json!({"op": w.command, "observed_ms": w.at_ms, "ts": w.own});
        let line = serde_json::json!({
            "ns": c.key.0.to_string(),
            "_id": key_id(&c.key).to_string(),
            "a": op(&c.writes[0]),
            "b": op(&c.writes[1]),
            "winner": c.winner.name(),
            "outcome": outcome,
        });
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!("writing the conflict log: {e}");
        }
    }
}

/// A document key's `_id`, decoded.
pub fn key_id(k: &Key) -> Bson {
    bson::from_slice::<Document>(&k.1)
        .ok()
        .and_then(|d| d.get("_id").cloned())
        .unwrap_or(Bson::Null)
}

pub struct SideJudge {
    pub side: Side,
    /// The checkpoint `_id` of the link that writes this side.
    pub reverse: String,
    pub detector: Arc<Detector<Key>>,
    pub progress: Arc<Progress>,
    /// This side's DDL is applied on the other side.
    pub ddl: bool,
    pub log: Option<Arc<ConflictLog>>,
    pub seen: Mutex<Seen>,
    /// The `lsid.id`s of the reverse link's sessions on this side.
    pub sessions: Mutex<HashSet<Vec<u8>>>,
}

/// The sessions link `link`'s applier used on `ep`, as its record there says (the
/// current one and its history): what a judge starts knowing after a restart.
pub async fn known_sessions(ep: &MongoEndpoint, link: &str) -> Result<HashSet<Vec<u8>>> {
    let rec = ep
        .client
        .database(TANDEM_DB)
        .collection::<Document>(SESSIONS)
        .find_one(bson::doc! {"_id": link})
        .await
        .map_err(|e| ep.err("reading tandem's sessions", &e))?;
    Ok(rec.map(|d| session_ids(&d)).unwrap_or_default())
}

/// The session ids a `__tandem.sessions` record names.
fn session_ids(d: &Document) -> HashSet<Vec<u8>> {
    let id = |l: &Bson| match l.as_document().and_then(|l| l.get("id")) {
        Some(Bson::Binary(b)) => Some(b.bytes.clone()),
        _ => None,
    };
    let mut out: HashSet<Vec<u8>> = d.get("lsid").and_then(id).into_iter().collect();
    if let Ok(h) = d.get_array("history") {
        out.extend(h.iter().filter_map(id));
    }
    out
}

impl SideJudge {
    fn is_echo(&self, u: &Unit) -> bool {
        u.touches_tandem
            || u.lsid.as_ref().is_some_and(|l| {
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(l)
            })
    }

    fn echo(&self, u: &Unit) {
        crate::metrics::mongo_echo_dropped();
        let Payload::Ops(ops) = &u.payload else {
            return;
        };
        for op in ops {
            let ns = op.ns();
            if ns.db == TANDEM_DB
                && ns.coll == SESSIONS
                && op.id() == &Bson::String(self.reverse.clone())
                && let Op::Insert { doc, .. } | Op::Replace { doc, .. } = op
            {
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(session_ids(doc));
            }
        }
        let Some(t) = ops.iter().find_map(|o| reverse_position(o, &self.reverse)) else {
            return;
        };
        let other = space(self.side.other());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen = seen.with(other, t);
        self.detector
            .note_seen(self.side, space(self.side), other, t);
        self.progress.advance(other, t);
    }

    fn report(&self, c: &Conflict<Key>) {
        crate::metrics::conflict(self.detector.policy());
        tracing::info!(
            ns = %c.key.0, id = %key_id(&c.key), winner = c.winner.name(),
            a = c.writes[0].command, b = c.writes[1].command,
            "conflict: document written on both sides"
        );
        if let Some(log) = &self.log {
            let outcome = match self.detector.policy() {
                crate::core::conflict::Policy::Converge => "converge",
                crate::core::conflict::Policy::Ignore => "ignored",
                crate::core::conflict::Policy::Overwrite => "overwritten",
            };
            log.write(c, outcome);
        }
    }
}

impl Judge for SideJudge {
    fn judge(&self, mut u: Unit) -> Option<Unit> {
        if self.is_echo(&u) {
            self.echo(&u);
            return None;
        }
        match std::mem::replace(&mut u.payload, Payload::Noop) {
            Payload::Ddl(d) if self.ddl => u.payload = Payload::Ddl(d),
            Payload::Ddl(d) => tracing::info!(
                "{:?} on side {} is not applied to the other side (--ddl)",
                d.kind(),
                self.side.name()
            ),
            Payload::Noop => {}
            Payload::Ops(ops) => {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let now = crate::core::wall_ms();
                let kept: Vec<Op> = ops
                    .into_iter()
                    .filter(|op| {
                        let w = Write {
                            space: space(self.side),
                            own: u.pos.ts.0,
                            seen_other: seen.clone(),
                            at_ms: now,
                            command: op.kind(),
                        };
                        let key = doc_key(op.ns(), op.id());
                        let (verdict, conflict) = self.detector.observe(self.side, key, w);
                        if let Some(c) = conflict {
                            self.report(&c);
                        }
                        verdict == Verdict::Apply
                    })
                    .collect();
                if !kept.is_empty() {
                    u.payload = Payload::Ops(kept);
                }
            }
        }
        Some(u)
    }
}

/// The position an op of an echo holds, when it writes checkpoint `reverse`.
fn reverse_position(op: &Op, reverse: &str) -> Option<u64> {
    let ns = op.ns();
    if ns.db != TANDEM_DB || ns.coll != CHECKPOINTS || op.id() != &Bson::String(reverse.into()) {
        return None;
    }
    let ts = |d: &Document| match d.get("ts") {
        Some(Bson::Timestamp(t)) => Some(((t.time as u64) << 32) | t.increment as u64),
        _ => None,
    };
    match op {
        Op::Insert { doc, .. } | Op::Replace { doc, .. } => ts(doc),
        Op::Update { change, .. } => match change {
            Change::Description(d) => d.get_document("updatedFields").ok().and_then(ts),
            Change::Modifiers(m) => m.get_document("$set").ok().and_then(ts),
            // mongod's diff tree (`u`, `i`), or secantus's flat `updatedFields`.
            Change::Diff(d) => {
                let diff = d.get_document("diff").ok()?;
                ["u", "i", "updatedFields"]
                    .iter()
                    .find_map(|k| diff.get_document(k).ok().and_then(ts))
            }
        },
        Op::Delete { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongo::ns::Namespace;
    use bson::doc;

    fn ckpt_ns() -> Namespace {
        Namespace {
            db: TANDEM_DB.into(),
            coll: CHECKPOINTS.into(),
        }
    }

    #[test]
    fn the_reverse_checkpoint_position_is_read_from_every_op_shape() {
        let t = bson::Timestamp {
            time: 7,
            increment: 3,
        };
        let want = Some((7u64 << 32) | 3);
        let id = Bson::String("l:b2a".into());
        let shapes = [
            Op::Insert {
                ns: ckpt_ns(),
                doc: doc! {"_id": "l:b2a", "ts": t},
            },
            Op::Replace {
                ns: ckpt_ns(),
                id: id.clone(),
                doc: doc! {"_id": "l:b2a", "ts": t},
            },
            Op::Update {
                ns: ckpt_ns(),
                id: id.clone(),
                change: Change::Description(doc! {"updatedFields": {"ts": t, "at": 1}}),
            },
            Op::Update {
                ns: ckpt_ns(),
                id: id.clone(),
                change: Change::Modifiers(doc! {"$set": {"ts": t}}),
            },
            Op::Update {
                ns: ckpt_ns(),
                id: id.clone(),
                change: Change::Diff(doc! {"$v": 2, "diff": {"u": {"ts": t}}}),
            },
            // secantus's oplog update (../shared/research/secantus.md, item 3).
            Op::Update {
                ns: ckpt_ns(),
                id: id.clone(),
                change: Change::Diff(doc! {"$v": 2, "diff": {
                    "updatedFields": {"ts": t}, "removedFields": [], "truncatedArrays": []
                }}),
            },
        ];
        for op in &shapes {
            assert_eq!(reverse_position(op, "l:b2a"), want, "{op:?}");
            assert_eq!(
                reverse_position(op, "l:a2b"),
                None,
                "another link's: {op:?}"
            );
        }
        let elsewhere = Op::Insert {
            ns: Namespace {
                db: "shop".into(),
                coll: CHECKPOINTS.into(),
            },
            doc: doc! {"_id": "l:b2a", "ts": t},
        };
        assert_eq!(reverse_position(&elsewhere, "l:b2a"), None);
    }
}
