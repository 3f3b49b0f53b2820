//! Folding a batch of operations into the final state of each document it touches.
//!
//! The applier reads every touched document once (inside the target transaction),
//! applies the batch's operations to them in memory, in source order, and writes only
//! each document's end state. Updates are applied by tandem's own exact diff applier
//! rather than translated into update operators, so the target document is exactly the
//! source's, field order included; and a document written ten times in a batch costs
//! one write.

use std::collections::{BTreeMap, HashMap};

use bson::{Bson, Document, doc};

use super::{desc, diff};
use crate::mongo::event::{Change, Op};
use crate::mongo::ns::Namespace;

/// What to do when an operation does not fit the target: an insert of a document that
/// exists, an update or delete of one that does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnConflict {
    /// Stop with an error naming the namespace, `_id` and source position.
    Fail,
    /// Keep the target's document.
    Ignore,
    /// Make the target's document the source's (where the operation says what that is).
    Overwrite,
}

/// A document's identity inside one batch: its namespace and its `_id`'s raw BSON.
pub type DocKey = (Namespace, Vec<u8>);

pub fn doc_key(ns: &Namespace, id: &Bson) -> DocKey {
    (ns.clone(), id_bytes(id))
}

/// An `_id` as bytes: equal exactly when the `_id`s are (type included).
pub fn id_bytes(id: &Bson) -> Vec<u8> {
    bson::to_vec(&doc! {"_id": id.clone()}).unwrap_or_default()
}

/// A raw document's `_id`, decoded.
pub fn raw_id(d: &bson::RawDocument) -> Option<Bson> {
    d.get("_id")
        .ok()
        .flatten()
        .and_then(|v| v.to_raw_bson().try_into().ok())
}

/// The end state of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    pub id: Bson,
    /// It existed on the target before the batch.
    pub existed: bool,
    /// Its state after the batch (`None`: deleted or never there).
    pub doc: Option<Document>,
    /// Whether the batch changed it at all.
    pub changed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub ns: Namespace,
    pub id: Bson,
    pub what: &'static str,
    pub resolved: &'static str,
}

#[derive(Debug, Default)]
pub struct Folded {
    pub docs: BTreeMap<Namespace, Vec<Final>>,
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug)]
pub struct FoldError {
    pub ns: Namespace,
    pub id: Bson,
    pub message: String,
    /// Index of the operation in the batch.
    pub index: usize,
}

/// Applies `ops` (each with whether it falls inside the copy window) to `base`, the
/// documents the target held before the batch. Inside the copy window a duplicate
/// insert or a missing document is the copy and the replay overlapping: resolved to
/// the source's state and not counted as a conflict.
pub fn fold(
    ops: &[(&Op, bool)],
    base: &HashMap<DocKey, Document>,
    policy: OnConflict,
) -> Result<Folded, Box<FoldError>> {
    let mut state: HashMap<DocKey, usize> = HashMap::new();
    let mut finals: Vec<(Namespace, Final)> = Vec::new();
    let mut out = Folded::default();
    for (index, (op, window)) in ops.iter().enumerate() {
        let ns = op.ns();
        let id = op.id();
        if matches!(id, Bson::Null) && matches!(op, Op::Insert { .. }) && !op_has_id(op) {
            return Err(Box::new(FoldError {
                ns: ns.clone(),
                id: Bson::Null,
                message: "insert of a document without _id".into(),
                index,
            }));
        }
        let key = doc_key(ns, id);
        let slot = *state.entry(key.clone()).or_insert_with(|| {
            let b = base.get(&key).cloned();
            finals.push((
                ns.clone(),
                Final {
                    id: id.clone(),
                    existed: b.is_some(),
                    doc: b,
                    changed: false,
                },
            ));
            finals.len() - 1
        });
        let f = &mut finals[slot].1;
        let conflict = |what: &'static str, resolved: &'static str| Conflict {
            ns: ns.clone(),
            id: id.clone(),
            what,
            resolved,
        };
        let fail = |what: &str| {
            Box::new(FoldError {
                ns: ns.clone(),
                id: id.clone(),
                message: what.to_string(),
                index,
            })
        };
        match op {
            Op::Insert { doc, .. } => {
                if f.doc.is_some() && !window {
                    match policy {
                        OnConflict::Fail => {
                            return Err(fail(
                                "duplicate key: insert of a document that exists on the target",
                            ));
                        }
                        OnConflict::Ignore => {
                            out.conflicts.push(conflict("insert-exists", "kept-target"));
                            continue;
                        }
                        OnConflict::Overwrite => {
                            out.conflicts.push(conflict("insert-exists", "overwritten"))
                        }
                    }
                }
                f.doc = Some(doc.clone());
                f.changed = true;
            }
            Op::Replace { doc, .. } => {
                if f.doc.is_none() && !window {
                    match policy {
                        OnConflict::Fail => {
                            return Err(fail("replacement of a document missing on the target"));
                        }
                        OnConflict::Ignore => {
                            out.conflicts
                                .push(conflict("replace-missing", "kept-target"));
                            continue;
                        }
                        OnConflict::Overwrite => out
                            .conflicts
                            .push(conflict("replace-missing", "overwritten")),
                    }
                }
                let mut d = doc.clone();
                if !d.contains_key("_id") {
                    d.insert("_id", id.clone());
                }
                f.doc = Some(d);
                f.changed = true;
            }
            Op::Update { change, .. } => {
                let Some(cur) = f.doc.as_mut() else {
                    if *window {
                        // Deleted later on the source: its delete follows in the replay.
                        continue;
                    }
                    match policy {
                        OnConflict::Fail => {
                            return Err(fail("update of a document missing on the target"));
                        }
                        // A change alone cannot rebuild the document.
                        OnConflict::Ignore | OnConflict::Overwrite => {
                            out.conflicts.push(conflict("update-missing", "skipped"));
                            continue;
                        }
                    }
                };
                apply_change(cur, change).map_err(|e| fail(&e))?;
                f.changed = true;
            }
            Op::Delete { .. } => {
                if f.doc.is_none() {
                    if !window {
                        match policy {
                            OnConflict::Fail => {
                                return Err(fail("delete of a document missing on the target"));
                            }
                            OnConflict::Ignore | OnConflict::Overwrite => {
                                out.conflicts.push(conflict("delete-missing", "skipped"))
                            }
                        }
                    }
                    continue;
                }
                f.doc = None;
                f.changed = true;
            }
        }
    }
    for (ns, f) in finals {
        out.docs.entry(ns).or_default().push(f);
    }
    Ok(out)
}

fn op_has_id(op: &Op) -> bool {
    matches!(op, Op::Insert { doc, .. } if doc.contains_key("_id"))
}

/// Applies one update to a document, exactly as the server did.
pub fn apply_change(cur: &mut Document, change: &Change) -> Result<(), String> {
    match change {
        Change::Diff(o) => {
            *cur = diff::apply_diff(cur, o).map_err(|e| format!("applying the $v:2 diff: {e}"))?;
        }
        Change::Description(d) => {
            desc::apply_update_description(cur, d)
                .map_err(|e| format!("applying updateDescription: {e}"))?;
        }
        Change::Modifiers(m) => {
            // A pre-5.0 entry: `$set` and `$unset` of paths, as an update description.
            let mut updated = Document::new();
            let mut removed = Vec::new();
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$v", _) => {}
                    ("$set", Bson::Document(s)) => updated.extend(s.clone()),
                    ("$unset", Bson::Document(u)) => {
                        removed.extend(u.keys().map(|k| Bson::String(k.clone())))
                    }
                    (other, _) => return Err(format!("unsupported $v:1 modifier {other:?}")),
                }
            }
            let d =
                doc! {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []};
            desc::apply_update_description(cur, &d)
                .map_err(|e| format!("applying $v:1 modifiers: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns() -> Namespace {
        Namespace::new("d", "c")
    }

    /// The operations of the model: small ids so documents are touched many times.
    fn op_strategy() -> impl Strategy<Value = Op> {
        let id = (0..4i32).prop_map(Bson::Int32);
        prop_oneof![
            (id.clone(), any::<i8>()).prop_map(|(id, v)| Op::Insert { ns: ns(), doc: doc! {"_id": id, "v": v as i32} }),
            (id.clone(), any::<i8>()).prop_map(|(id, v)| Op::Replace { ns: ns(), id, doc: doc! {"w": v as i32} }),
            (id.clone(), any::<i8>()).prop_map(|(id, v)| Op::Update {
                ns: ns(),
                id,
                change: Change::Description(doc! {"updatedFields": {"u": v as i32}, "removedFields": [], "truncatedArrays": []}),
            }),
            id.prop_map(|id| Op::Delete { ns: ns(), id }),
        ]
    }

    /// One operation at a time against a map, under `overwrite` (every conflict applied
    /// where it can be, skipped where it cannot).
    fn model(base: &[(i32, Document)], ops: &[Op]) -> BTreeMap<i32, Option<Document>> {
        let mut m: BTreeMap<i32, Option<Document>> =
            base.iter().map(|(k, d)| (*k, Some(d.clone()))).collect();
        for op in ops {
            let Bson::Int32(k) = op.id() else {
                unreachable!()
            };
            let cur = m.entry(*k).or_insert(None);
            match op {
                Op::Insert { doc, .. } => *cur = Some(doc.clone()),
                Op::Replace { doc, id, .. } => {
                    let mut d = doc.clone();
                    d.insert("_id", id.clone());
                    *cur = Some(d);
                }
                Op::Update {
                    change: Change::Description(d),
                    ..
                } => {
                    if let Some(c) = cur.as_mut() {
                        c.insert(
                            "u",
                            d.get_document("updatedFields")
                                .unwrap()
                                .get("u")
                                .unwrap()
                                .clone(),
                        );
                    }
                }
                Op::Delete { .. } => *cur = None,
                _ => unreachable!(),
            }
        }
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn end_states_match_one_at_a_time(present in proptest::collection::btree_set(0..4i32, 0..4), ops in proptest::collection::vec(op_strategy(), 0..24)) {
            let base_docs: Vec<(i32, Document)> = present.iter().map(|k| (*k, doc! {"_id": *k, "orig": true})).collect();
            let base: HashMap<DocKey, Document> = base_docs.iter().map(|(k, d)| (doc_key(&ns(), &Bson::Int32(*k)), d.clone())).collect();
            let refs: Vec<(&Op, bool)> = ops.iter().map(|o| (o, false)).collect();
            let folded = fold(&refs, &base, OnConflict::Overwrite).unwrap();
            let want = model(&base_docs, &ops);
            let finals = folded.docs.get(&ns()).cloned().unwrap_or_default();
            let touched: std::collections::BTreeSet<i32> = ops.iter().map(|o| match o.id() { Bson::Int32(k) => *k, _ => unreachable!() }).collect();
            prop_assert_eq!(finals.len(), touched.len(), "one end state per touched document");
            for f in &finals {
                let Bson::Int32(k) = f.id else { unreachable!() };
                prop_assert_eq!(f.existed, present.contains(&k));
                prop_assert_eq!(&f.doc, want.get(&k).unwrap());
            }
            // The copy window resolves the same way, without counting conflicts.
            let refs: Vec<(&Op, bool)> = ops.iter().map(|o| (o, true)).collect();
            let windowed = fold(&refs, &base, OnConflict::Fail).unwrap();
            prop_assert!(windowed.conflicts.is_empty());
            prop_assert_eq!(windowed.docs.get(&ns()).cloned().unwrap_or_default(), finals);
        }
    }

    #[test]
    fn fail_names_the_document() {
        let base = HashMap::new();
        let op = Op::Delete {
            ns: ns(),
            id: Bson::Int32(7),
        };
        let e = fold(&[(&op, false)], &base, OnConflict::Fail).unwrap_err();
        assert_eq!((e.ns, e.id, e.index), (ns(), Bson::Int32(7), 0));
        assert!(e.message.contains("delete of a document missing"));
        let f = fold(&[(&op, false)], &base, OnConflict::Ignore).unwrap();
        assert_eq!(f.conflicts.len(), 1);
    }
}
