//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bson::{Bson, Document};

/// The BSON bytes: comparing these checks field order and numeric types.
pub fn bytes(doc: &Document) -> Vec<u8> {
    bson::to_vec(doc).expect("serializable document")
}

/// Binary equality of two values (`-0.0` differs from `0.0`, NaN equals itself).
pub fn same(a: &Bson, b: &Bson) -> bool {
    bytes(&bson::doc! { "v": a.clone() }) == bytes(&bson::doc! { "v": b.clone() })
}

/// Object keys sorted recursively, arrays kept in order: equality "as values".
pub fn canonical(value: &Bson) -> Bson {
    match value {
        Bson::Document(doc) => {
            let mut fields: Vec<_> = doc.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Bson::Document(fields.into_iter().collect())
        }
        Bson::Array(items) => Bson::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

pub fn same_as_values(a: &Document, b: &Document) -> bool {
    same(
        &canonical(&Bson::Document(a.clone())),
        &canonical(&Bson::Document(b.clone())),
    )
}

/// Whether the diff describes a real change of `pre`: every sub-diff meets a value of its own
/// kind, array sub-diffs meet existing elements, and there is no binary section. Diffs that fail
/// this are re-applications, which the change-stream form cannot express.
pub fn meets_shape(pre: &Document, diff: &Document) -> bool {
    diff.iter()
        .all(|(key, section)| match key.as_bytes().first() {
            Some(b'b') => false,
            Some(b's') => match (pre.get(&key[1..]), section) {
                (Some(Bson::Document(target)), Bson::Document(sub)) if !is_array_diff(sub) => {
                    meets_shape(target, sub)
                }
                (Some(Bson::Array(target)), Bson::Document(sub)) if is_array_diff(sub) => {
                    array_meets_shape(target, sub)
                }
                _ => false,
            },
            _ => true,
        })
}

fn is_array_diff(diff: &Document) -> bool {
    diff.keys().next().map(String::as_str) == Some("a")
}

fn array_meets_shape(pre: &[Bson], diff: &Document) -> bool {
    diff.iter().all(|(key, entry)| {
        let Some(idx) = key.strip_prefix('s').and_then(|n| n.parse::<usize>().ok()) else {
            return true;
        };
        match (pre.get(idx), entry) {
            (Some(Bson::Document(target)), Bson::Document(sub)) if !is_array_diff(sub) => {
                meets_shape(target, sub)
            }
            (Some(Bson::Array(target)), Bson::Document(sub)) if is_array_diff(sub) => {
                array_meets_shape(target, sub)
            }
            _ => false,
        }
    })
}

/// Whether some `i` names a field that already exists: the diff then moves it to the end, which
/// a change-stream description cannot say.
pub fn moves_existing_field(pre: &Document, diff: &Document) -> bool {
    diff.iter()
        .any(|(key, section)| match (key.as_bytes().first(), section) {
            (Some(b'i'), Bson::Document(inserts)) => inserts.keys().any(|k| pre.contains_key(k)),
            (Some(b's'), Bson::Document(sub)) => match pre.get(&key[1..]) {
                Some(Bson::Document(target)) => moves_existing_field(target, sub),
                Some(Bson::Array(target)) => array_moves(target, sub),
                _ => false,
            },
            _ => false,
        })
}

fn array_moves(pre: &[Bson], diff: &Document) -> bool {
    diff.iter().any(|(key, entry)| {
        let idx = key.strip_prefix('s').and_then(|n| n.parse::<usize>().ok());
        match (idx.and_then(|i| pre.get(i)), entry) {
            (Some(Bson::Document(target)), Bson::Document(sub)) => {
                moves_existing_field(target, sub)
            }
            (Some(Bson::Array(target)), Bson::Document(sub)) => array_moves(target, sub),
            _ => false,
        }
    })
}
