//! mongod oplog entries (`local.oplog.rs` documents, or a recorded dump of them) into
//! operations. Only mongod's formats are read: a shape mongod does not write is an
//! error naming the entry, never a guess.

use bson::{Bson, Document};

use crate::core::OpTime;
use crate::mongo::error::{MongoError, Result};
use crate::mongo::event::{Change, Ddl, Op};
use crate::mongo::ns::Namespace;

/// Identifies one transaction: the session id (its raw BSON) and the transaction number.
pub type TxnKey = (Vec<u8>, i64);

/// One oplog entry, read.
#[derive(Debug, PartialEq)]
pub enum Entry {
    /// Writes applied at this entry: a plain write, a one-entry transaction, or an
    /// `applyOps` batch.
    Ops {
        ops: Vec<Op>,
        txn: bool,
    },
    /// A part of a large transaction (`partialTxn`), or its prepare (`prepare: true`):
    /// held until the transaction commits.
    Part {
        key: TxnKey,
        ops: Vec<Op>,
        prev: OpTime,
        prepare: bool,
    },
    /// The last entry of a multi-entry transaction (`applyOps` with `count`): its ops,
    /// and the entry before it (the chain is read back through `prevOpTime`).
    ChainEnd {
        key: TxnKey,
        ops: Vec<Op>,
        prev: OpTime,
    },
    /// A prepared transaction committed. `commit` is the transaction's
    /// `commitTimestamp`, the same on every shard it spans (this entry is at or after
    /// it).
    Commit {
        key: TxnKey,
        prev: OpTime,
        commit: Option<OpTime>,
    },
    Abort {
        key: TxnKey,
    },
    Ddl(Ddl),
    /// Nothing to apply (noops, index-build starts, chunk migrations, …).
    Noop,
}

/// An entry's common fields.
#[derive(Debug)]
pub struct Header {
    pub ts: OpTime,
    pub wall_ms: u64,
}

pub fn header(e: &Document) -> Result<Header> {
    let ts = match e.get("ts") {
        Some(Bson::Timestamp(t)) => OpTime::new(t.time, t.increment),
        _ => return Err(bad(e, "no `ts` timestamp")),
    };
    let wall_ms = match e.get("wall") {
        Some(Bson::DateTime(d)) => d.timestamp_millis().max(0) as u64,
        _ => 0,
    };
    Ok(Header { ts, wall_ms })
}

fn bad(e: &Document, why: &str) -> MongoError {
    let ts = match e.get("ts") {
        Some(Bson::Timestamp(t)) => format!("{}.{}", t.time, t.increment),
        _ => "?".into(),
    };
    let op = e.get_str("op").unwrap_or("?");
    let ns = e.get_str("ns").unwrap_or("?");
    MongoError::fatal(
        format!("oplog entry ts {ts} (op {op:?}, ns {ns:?})"),
        why.to_string(),
    )
}

pub fn parse(e: &Document) -> Result<Entry> {
    if e.get_bool("fromMigrate").unwrap_or(false) {
        // A chunk migration between shards moves documents that exist already.
        return Ok(Entry::Noop);
    }
    let op = e.get_str("op").map_err(|_| bad(e, "no `op` field"))?;
    match op {
        "n" => Ok(Entry::Noop),
        "i" | "u" | "d" => Ok(Entry::Ops {
            ops: vec![crud(e, e)?],
            txn: false,
        }),
        "c" => command(e),
        // Container writes (8.x internal key-value stores), never user documents.
        "ci" | "cd" => Ok(Entry::Noop),
        other => Err(bad(e, &format!("unknown op type {other:?}"))),
    }
}

fn ns_of(e: &Document, outer: &Document) -> Result<Namespace> {
    let ns = e.get_str("ns").map_err(|_| bad(outer, "no `ns`"))?;
    Namespace::parse(ns).ok_or_else(|| bad(outer, &format!("malformed namespace {ns:?}")))
}

fn doc_field<'a>(e: &'a Document, f: &str, outer: &Document) -> Result<&'a Document> {
    e.get_document(f)
        .map_err(|_| bad(outer, &format!("`{f}` is not a document")))
}

/// An insert, update or delete (top level, or inside `applyOps`).
fn crud(e: &Document, outer: &Document) -> Result<Op> {
    let ns = ns_of(e, outer)?;
    let o = doc_field(e, "o", outer)?;
    match e.get_str("op").unwrap_or("") {
        "i" => Ok(Op::Insert { ns, doc: o.clone() }),
        "d" => {
            let id = o
                .get("_id")
                .ok_or_else(|| bad(outer, "delete without `o._id`"))?;
            Ok(Op::Delete { ns, id: id.clone() })
        }
        "u" => {
            let id = doc_field(e, "o2", outer)?
                .get("_id")
                .ok_or_else(|| bad(outer, "update without `o2._id`"))?
                .clone();
            let v = o.get("$v").and_then(num);
            let change = if v == Some(2) {
                if !matches!(o.get("diff"), Some(Bson::Document(_))) {
                    return Err(bad(outer, "`$v: 2` update without a `diff` document"));
                }
                Change::Diff(o.clone())
            } else if v.is_some() || o.keys().any(|k| k.starts_with('$')) {
                Change::Modifiers(o.clone())
            } else {
                return Ok(Op::Replace {
                    ns,
                    id,
                    doc: o.clone(),
                });
            };
            Ok(Op::Update { ns, id, change })
        }
        other => Err(bad(outer, &format!("op {other:?} inside applyOps"))),
    }
}

fn num(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(*i as i64),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

fn prev_ts(e: &Document) -> OpTime {
    match e.get_document("prevOpTime").ok().and_then(|p| p.get("ts")) {
        Some(Bson::Timestamp(t)) => OpTime::new(t.time, t.increment),
        _ => OpTime(0),
    }
}

fn txn_key(e: &Document) -> Result<TxnKey> {
    let lsid = e
        .get_document("lsid")
        .map_err(|_| bad(e, "transaction entry without `lsid`"))?;
    let n = e
        .get("txnNumber")
        .and_then(num)
        .ok_or_else(|| bad(e, "transaction entry without `txnNumber`"))?;
    let raw = bson::to_vec(lsid).map_err(|err| bad(e, &format!("lsid: {err}")))?;
    Ok((raw, n))
}

fn apply_ops(e: &Document, o: &Document) -> Result<Vec<Op>> {
    let list = o
        .get_array("applyOps")
        .map_err(|_| bad(e, "`applyOps` is not an array"))?;
    let mut ops = Vec::with_capacity(list.len());
    for item in list {
        let Bson::Document(inner) = item else {
            return Err(bad(e, "an `applyOps` element is not a document"));
        };
        match inner.get_str("op").unwrap_or("") {
            "n" => {}
            "c" => {
                // Nested applyOps (pre-4.0 batches): flattened in order.
                let io = doc_field(inner, "o", e)?;
                if io.contains_key("applyOps") {
                    ops.extend(apply_ops(e, io)?);
                } else {
                    return Err(bad(e, "a DDL command inside applyOps is not supported"));
                }
            }
            _ => ops.push(crud(inner, e)?),
        }
    }
    Ok(ops)
}

fn command(e: &Document) -> Result<Entry> {
    let o = doc_field(e, "o", e)?;
    // An `applyOps` names its namespaces inside; some tools' recordings leave out the
    // entry's own `admin.$cmd`.
    let ns = match e.get_str("ns") {
        Ok(ns) => ns,
        Err(_) if o.contains_key("applyOps") => "admin.$cmd",
        Err(_) => return Err(bad(e, "no `ns`")),
    };
    let db = ns
        .strip_suffix(".$cmd")
        .ok_or_else(|| bad(e, "command entry outside db.$cmd"))?;
    let name = o.keys().next().map(String::as_str).unwrap_or("");
    let coll_ns = |field: &str| -> Result<Namespace> {
        let c = o
            .get_str(field)
            .map_err(|_| bad(e, &format!("`{field}` is not a collection name")))?;
        Ok(Namespace::new(db, c))
    };
    let rest = |skip: &[&str]| -> Document {
        o.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Ok(match name {
        "applyOps" => {
            let ops = apply_ops(e, o)?;
            let partial = o.get_bool("partialTxn").unwrap_or(false)
                || e.get_bool("partialTxn").unwrap_or(false);
            let prepare =
                o.get_bool("prepare").unwrap_or(false) || e.get_bool("prepare").unwrap_or(false);
            // A batched write (`multiOpType`) carries session fields without being a
            // transaction: each of its entries applies on its own.
            let in_txn = e.contains_key("lsid")
                && e.contains_key("txnNumber")
                && !e.contains_key("multiOpType");
            let prev = prev_ts(e);
            if !in_txn {
                // A user's applyOps command or a batched insert: atomic, not a session's.
                Entry::Ops { ops, txn: true }
            } else if partial || prepare {
                Entry::Part {
                    key: txn_key(e)?,
                    ops,
                    prev,
                    prepare,
                }
            } else if prev.0 != 0 {
                Entry::ChainEnd {
                    key: txn_key(e)?,
                    ops,
                    prev,
                }
            } else {
                Entry::Ops { ops, txn: true }
            }
        }
        "commitTransaction" => Entry::Commit {
            key: txn_key(e)?,
            prev: prev_ts(e),
            commit: match o.get("commitTimestamp") {
                Some(Bson::Timestamp(t)) => Some(OpTime::new(t.time, t.increment)),
                _ => None,
            },
        },
        "abortTransaction" => Entry::Abort { key: txn_key(e)? },
        "create" => Entry::Ddl(Ddl::Create {
            ns: coll_ns("create")?,
            // `temp` marks the staging collection of a cross-database rename, which
            // the rename that follows makes permanent; `create` does not take it.
            options: rest(&["create", "idIndex", "temp"]),
        }),
        "drop" => Entry::Ddl(Ddl::Drop {
            ns: coll_ns("drop")?,
        }),
        "dropDatabase" => Entry::Ddl(Ddl::DropDatabase { db: db.to_string() }),
        "renameCollection" => {
            let from = o
                .get_str("renameCollection")
                .ok()
                .and_then(Namespace::parse);
            let to = o.get_str("to").ok().and_then(Namespace::parse);
            let (Some(from), Some(to)) = (from, to) else {
                return Err(bad(
                    e,
                    "renameCollection without `renameCollection`/`to` namespaces",
                ));
            };
            let drop_target = match o.get("dropTarget") {
                None | Some(Bson::Null) => false,
                Some(Bson::Boolean(b)) => *b,
                // mongod records the dropped collection's UUID.
                Some(_) => true,
            };
            Entry::Ddl(Ddl::Rename {
                from,
                to,
                drop_target,
            })
        }
        "createIndexes" => {
            let spec = rest(&["createIndexes"]);
            if !spec.contains_key("key") || !spec.contains_key("name") {
                return Err(bad(
                    e,
                    "createIndexes entry without the flat index spec (`key`, `name`) mongod writes",
                ));
            }
            Entry::Ddl(Ddl::CreateIndexes {
                ns: coll_ns("createIndexes")?,
                specs: vec![spec],
            })
        }
        "startIndexBuild" | "abortIndexBuild" | "dbCheck" => Entry::Noop,
        "commitIndexBuild" => {
            let specs = o
                .get_array("indexes")
                .map_err(|_| bad(e, "commitIndexBuild without `indexes`"))?
                .iter()
                .map(|s| match s {
                    Bson::Document(d) => Ok(d.clone()),
                    _ => Err(bad(e, "an index spec is not a document")),
                })
                .collect::<Result<Vec<_>>>()?;
            Entry::Ddl(Ddl::CreateIndexes {
                ns: coll_ns("commitIndexBuild")?,
                specs,
            })
        }
        "dropIndexes" | "dropIndex" | "deleteIndexes" | "deleteIndex" => {
            let names = match o.get("index") {
                Some(Bson::String(s)) => vec![s.clone()],
                Some(Bson::Array(a)) => a
                    .iter()
                    .filter_map(|b| b.as_str().map(str::to_string))
                    .collect(),
                _ => return Err(bad(e, "dropIndexes without an index name")),
            };
            Entry::Ddl(Ddl::DropIndexes {
                ns: coll_ns(name)?,
                names,
            })
        }
        "collMod" => Entry::Ddl(Ddl::CollMod {
            ns: coll_ns("collMod")?,
            changes: rest(&["collMod"]),
        }),
        "convertToCapped" => {
            let size = o.get("size").and_then(|b| match b {
                Bson::Double(d) => Some(*d),
                other => num(other).map(|n| n as f64),
            });
            Entry::Ddl(Ddl::ConvertToCapped {
                ns: coll_ns("convertToCapped")?,
                size: size.ok_or_else(|| bad(e, "convertToCapped without `size`"))?,
            })
        }
        other => return Err(bad(e, &format!("unsupported oplog command {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mongo::source::assemble::{Assembler, Ready};
    use bson::{Timestamp, doc};
    use proptest::prelude::*;

    fn ts(i: u32) -> Bson {
        Bson::Timestamp(Timestamp {
            time: 100,
            increment: i,
        })
    }

    /// `prev` 0 is mongod's "no entry before": Timestamp(0, 0).
    fn txn_entry(i: u32, prev: u32, o: Document) -> Document {
        let prev = if prev == 0 {
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            })
        } else {
            ts(prev)
        };
        doc! {"ts": ts(i), "op": "c", "ns": "admin.$cmd", "o": o, "lsid": {"id": 1}, "txnNumber": 5i64,
        "prevOpTime": {"ts": prev, "t": 1i64}}
    }

    fn ins(id: i32) -> Bson {
        Bson::Document(doc! {"op": "i", "ns": "d.c", "o": {"_id": id}})
    }

    #[test]
    fn chains_prepared_and_aborted_transactions() {
        let mut a = Assembler::default();
        let p1 = txn_entry(1, 0, doc! {"applyOps": [ins(1)], "partialTxn": true});
        let p2 = txn_entry(2, 1, doc! {"applyOps": [ins(2)], "prepare": true});
        assert!(matches!(a.push(parse(&p1).unwrap()), Ready::Held));
        assert!(matches!(a.push(parse(&p2).unwrap()), Ready::Held));
        let commit = txn_entry(
            3,
            2,
            doc! {"commitTransaction": 1, "commitTimestamp": ts(3)},
        );
        match a.push(parse(&commit).unwrap()) {
            Ready::Unit {
                payload: crate::mongo::event::Payload::Ops(ops),
                txn: true,
            } => assert_eq!(ops.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.open_transactions(), 0);
        // The end of a chain whose start this reader never saw asks for it.
        let end = txn_entry(9, 8, doc! {"applyOps": [ins(3)], "count": 2});
        match a.push(parse(&end).unwrap()) {
            Ready::Missing { before, ops } => {
                assert_eq!(before, OpTime::new(100, 8));
                assert_eq!(ops.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        a.push(parse(&p1).unwrap());
        a.push(parse(&txn_entry(4, 0, doc! {"abortTransaction": 1})).unwrap());
        assert_eq!(a.open_transactions(), 0, "abort drops the held parts");
    }

    #[test]
    fn mongod_shapes_only() {
        let e = doc! {"ts": ts(1), "op": "c", "ns": "d.$cmd", "o": {"createIndexes": "c", "indexes": [{"key": {"a": 1}, "name": "a_1"}]}};
        let err = parse(&e).unwrap_err().to_string();
        assert!(
            err.contains("ts 100.1") && err.contains("flat index spec"),
            "{err}"
        );
        let e =
            doc! {"ts": ts(2), "op": "u", "ns": "d.c", "o": {"$v": 2, "diff": 5}, "o2": {"_id": 1}};
        assert!(
            parse(&e)
                .unwrap_err()
                .to_string()
                .contains("without a `diff` document")
        );
        let e = doc! {"ts": ts(3), "op": "x", "ns": "d.c", "o": {}};
        assert!(
            parse(&e)
                .unwrap_err()
                .to_string()
                .contains("unknown op type")
        );
    }

    fn any_bson() -> impl Strategy<Value = Bson> {
        let leaf = prop_oneof![
            Just(Bson::Null),
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            "[a-z$.]{0,6}".prop_map(Bson::String),
            any::<bool>().prop_map(Bson::Boolean),
            (any::<u32>(), any::<u32>()).prop_map(|(t, i)| Bson::Timestamp(Timestamp {
                time: t,
                increment: i
            })),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("op".to_string()),
                            Just("ns".to_string()),
                            Just("o".to_string()),
                            Just("o2".to_string()),
                            Just("_id".to_string()),
                            Just("applyOps".to_string()),
                            Just("ts".to_string()),
                            Just("$v".to_string()),
                            Just("diff".to_string()),
                            Just("lsid".to_string()),
                            Just("txnNumber".to_string()),
                            "[a-z]{1,8}"
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Any document, however malformed: an entry or one error, never a panic.
        #[test]
        fn parse_never_panics(
            op in prop_oneof![Just("i"), Just("u"), Just("d"), Just("c"), Just("n"), Just("zz")],
            ns in prop_oneof![Just("d.c"), Just("admin.$cmd"), Just("d.$cmd"), Just(""), Just("nodot")],
            o in any_bson(), o2 in any_bson(), extra in any_bson(),
        ) {
            let mut e = doc! {"ts": ts(1), "op": op, "ns": ns, "o": o, "o2": o2, "x": extra};
            let _ = parse(&e);
            e.insert("lsid", doc! {"id": 1});
            e.insert("txnNumber", 1i64);
            let _ = parse(&e).map(|en| Assembler::default().push(en));
        }
    }
}
