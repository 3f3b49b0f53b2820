//! A small model of mongod for the property tests: random documents, update operators applied
//! the way mongod applies them, and a diff calculator in the spirit of `computeOplogDiff`.
#![allow(dead_code)]

use bson::{Binary, Bson, DateTime, Document, oid::ObjectId, spec::BinarySubtype};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::common::same;

/// Field names: plain, numeric strings (top-level and nested), empty, `$`-prefixed, dotted
/// (`e` itself is never a name, so `e.f` cannot collide with a path), and diff section letters.
const KEYS: &[&str] = &[
    "a", "b", "c", "x", "0", "1", "2", "10", "", "$k", "e.f", "s", "u", "i", "l", "d",
];

pub fn key() -> impl Strategy<Value = String> {
    proptest::sample::select(KEYS).prop_map(str::to_owned)
}

/// Few distinct values per type, so that "unchanged" and "same number, other type" both happen.
pub fn scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        Just(Bson::Null),
        Just(Bson::Undefined),
        any::<bool>().prop_map(Bson::Boolean),
        (-2i32..3).prop_map(Bson::Int32),
        (-2i64..3).prop_map(Bson::Int64),
        proptest::sample::select(vec![0.0, -0.0, 1.0, 2.5, f64::NAN]).prop_map(Bson::Double),
        "[ab]{0,2}".prop_map(Bson::String),
        vec(any::<u8>(), 0..3).prop_map(|bytes| Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes,
        })),
        (0i64..2).prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        Just(Bson::ObjectId(ObjectId::from_bytes([7; 12]))),
    ]
}

pub fn value() -> impl Strategy<Value = Bson> {
    scalar().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Bson::Array),
            vec((key(), inner), 0..4)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect())),
        ]
    })
}

pub fn document() -> impl Strategy<Value = Document> {
    vec((key(), value()), 0..6).prop_map(|fields| fields.into_iter().collect())
}

/// An update operator. `at` picks an existing value by walking the document (see [`locate`]).
#[derive(Debug, Clone)]
pub enum Op {
    /// `$set` of an existing path to a new value.
    Set { at: Vec<u8>, value: Bson },
    /// `$set` of a new path below an existing object or array: `name.chain...` in an object,
    /// an index `len + gap` (null-padded) in an array.
    Create {
        at: Vec<u8>,
        name: String,
        gap: u8,
        chain: Vec<String>,
        value: Bson,
    },
    /// `$unset`: removes an object field, nulls an array element.
    Unset { at: Vec<u8> },
    /// `$push` with `$each`.
    Push { at: Vec<u8>, values: Vec<Bson> },
    /// `$pop` / `$slice`-like shrinking of an array.
    Shrink { at: Vec<u8>, keep: u8 },
    /// A pipeline update that rewrites a field at the end of its object (`$replaceWith` with a
    /// re-ordered object, `$unset` then `$set`).
    MoveToEnd { at: Vec<u8> },
}

pub fn op() -> impl Strategy<Value = Op> {
    let at = || vec(any::<u8>(), 0..4);
    prop_oneof![
        (at(), value()).prop_map(|(at, value)| Op::Set { at, value }),
        (at(), key(), 0u8..3, vec(key(), 0..2), value()).prop_map(
            |(at, name, gap, chain, value)| Op::Create {
                at,
                name,
                gap,
                chain,
                value
            }
        ),
        at().prop_map(|at| Op::Unset { at }),
        (at(), vec(scalar(), 1..3)).prop_map(|(at, values)| Op::Push { at, values }),
        (at(), any::<u8>()).prop_map(|(at, keep)| Op::Shrink { at, keep }),
        at().prop_map(|at| Op::MoveToEnd { at }),
    ]
}

#[derive(Debug, Clone)]
pub enum Step {
    Field(String),
    Index(usize),
}

/// Walks from the root: each choice byte either stops (0 mod 8, or an empty container) or
/// descends into child `choice % len`. Returns the steps to an existing value.
pub fn locate(doc: &Document, choices: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut current = Some(doc);
    let mut current_array: Option<&Vec<Bson>> = None;
    for &choice in choices {
        let child = match (current, current_array) {
            (Some(doc), _) if !doc.is_empty() && choice % 8 != 0 => {
                let (name, value) = doc
                    .iter()
                    .nth(choice as usize % doc.len())
                    .expect("in range");
                steps.push(Step::Field(name.clone()));
                value
            }
            (None, Some(items)) if !items.is_empty() && choice % 8 != 0 => {
                let idx = choice as usize % items.len();
                steps.push(Step::Index(idx));
                &items[idx]
            }
            _ => break,
        };
        match child {
            Bson::Document(doc) => (current, current_array) = (Some(doc), None),
            Bson::Array(items) => (current, current_array) = (None, Some(items)),
            _ => break,
        }
    }
    steps
}

fn get_mut<'a>(doc: &'a mut Document, steps: &[Step]) -> Option<&'a mut Bson> {
    let (first, rest) = steps.split_first()?;
    let Step::Field(name) = first else {
        return None;
    };
    let mut value = doc.get_mut(name)?;
    for step in rest {
        value = match (value, step) {
            (Bson::Document(doc), Step::Field(name)) => doc.get_mut(name)?,
            (Bson::Array(items), Step::Index(idx)) => items.get_mut(*idx)?,
            _ => return None,
        };
    }
    Some(value)
}

enum Parent<'a> {
    Doc(&'a mut Document),
    Array(&'a mut Vec<Bson>),
}

fn parent_mut<'a>(doc: &'a mut Document, steps: &[Step]) -> Option<(Parent<'a>, Step)> {
    let (last, parents) = steps.split_last()?;
    if parents.is_empty() {
        return Some((Parent::Doc(doc), last.clone()));
    }
    match get_mut(doc, parents)? {
        Bson::Document(doc) => Some((Parent::Doc(doc), last.clone())),
        Bson::Array(items) => Some((Parent::Array(items), last.clone())),
        _ => None,
    }
}

fn nested(chain: &[String], value: Bson) -> Bson {
    chain.iter().rev().fold(value, |inner, name| {
        Bson::Document(bson::doc! { name.clone(): inner })
    })
}

/// Applies `op` as mongod would; an op whose path does not fit the document is skipped.
pub fn apply_op(doc: &mut Document, op: &Op) {
    match op {
        Op::Set { at, value } => {
            let steps = locate(doc, at);
            if let Some(target) = get_mut(doc, &steps) {
                *target = value.clone();
            }
        }
        Op::Create {
            at,
            name,
            gap,
            chain,
            value,
        } => {
            let steps = locate(doc, at);
            let new = nested(chain, value.clone());
            let container = if steps.is_empty() {
                None
            } else {
                get_mut(doc, &steps)
            };
            match container {
                None if steps.is_empty() => {
                    // $set keeps an existing field in place and appends a new one.
                    doc.insert(name.clone(), new);
                }
                Some(Bson::Document(sub)) => {
                    sub.insert(name.clone(), new);
                }
                Some(Bson::Array(items)) => {
                    let idx = items.len() + usize::from(*gap);
                    items.resize(idx, Bson::Null);
                    items.push(new);
                }
                _ => {}
            }
        }
        Op::Unset { at } => match parent_mut(doc, &locate(doc, at)) {
            Some((Parent::Doc(parent), Step::Field(name))) => {
                parent.remove(&name);
            }
            Some((Parent::Array(items), Step::Index(idx))) => {
                if let Some(item) = items.get_mut(idx) {
                    *item = Bson::Null;
                }
            }
            _ => {}
        },
        Op::Push { at, values } => {
            if let Some(Bson::Array(items)) = get_mut(doc, &locate(doc, at)) {
                items.extend(values.iter().cloned());
            }
        }
        Op::Shrink { at, keep } => {
            if let Some(Bson::Array(items)) = get_mut(doc, &locate(doc, at)) {
                let keep = usize::from(*keep) % (items.len() + 1);
                items.truncate(keep);
            }
        }
        Op::MoveToEnd { at } => {
            if let Some((Parent::Doc(parent), Step::Field(name))) =
                parent_mut(doc, &locate(doc, at))
                && let Some(value) = parent.remove(&name)
            {
                parent.insert(name, value);
            }
        }
    }
}

/// Choices the calculator makes where several diffs are valid (the server decides by size).
pub struct Knobs(u64);

impl Knobs {
    pub fn new(seed: u64) -> Self {
        Knobs(seed | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn flip(&mut self) -> bool {
        self.next().is_multiple_of(2)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }
}

/// Computes a `$v: 2` diff turning `pre` into `post` (empty when they are binary-equal).
///
/// Fields of `post` that keep their relative pre-image order form the kept prefix (updated in
/// place by `u` or a sub-diff); everything after it is appended: first some new fields by `u`,
/// then the rest by `i`, existing or not. Sub-diff versus whole-value `u`, the length of the kept
/// prefix and null padding by `l` are left to `knobs`, to exercise every form.
pub fn diff_doc(pre: &Document, post: &Document, knobs: &mut Knobs) -> Document {
    let post_keys: Vec<&String> = post.keys().collect();
    let pre_pos = |key: &str| pre.keys().position(|k| k == key);
    let mut kept = 0;
    let mut last = None;
    for key in &post_keys {
        match pre_pos(key) {
            Some(pos) if last.is_none_or(|l| pos > l) => {
                last = Some(pos);
                kept += 1;
            }
            _ => break,
        }
    }
    kept -= knobs.below(kept) * usize::from(knobs.flip() && knobs.flip());

    let mut deletes = Document::new();
    for key in pre.keys().filter(|k| !post.contains_key(k.as_str())) {
        deletes.insert(key.clone(), false);
    }
    let mut updates = Document::new();
    let mut subs = Document::new();
    for key in &post_keys[..kept] {
        let (old, new) = (&pre[key.as_str()], &post[key.as_str()]);
        if same(old, new) {
            continue;
        }
        match (old, new) {
            (Bson::Document(old), Bson::Document(new)) if knobs.flip() => {
                subs.insert(format!("s{key}"), diff_doc(old, new, knobs));
            }
            (Bson::Array(old), Bson::Array(new)) if knobs.flip() => {
                subs.insert(format!("s{key}"), diff_array(old, new, knobs));
            }
            _ => {
                updates.insert((*key).clone(), new.clone());
            }
        }
    }
    let appended = &post_keys[kept..];
    let new_run = appended.iter().take_while(|k| pre_pos(k).is_none()).count();
    let by_update = knobs.below(new_run);
    let mut inserts = Document::new();
    for (n, key) in appended.iter().enumerate() {
        let value = post[key.as_str()].clone();
        if n < by_update {
            updates.insert((*key).clone(), value);
        } else {
            inserts.insert((*key).clone(), value);
        }
    }
    let mut diff = Document::new();
    for (name, section) in [("d", deletes), ("u", updates), ("i", inserts)] {
        if !section.is_empty() {
            diff.insert(name, section);
        }
    }
    diff.extend(subs);
    diff
}

pub fn diff_array(pre: &[Bson], post: &[Bson], knobs: &mut Knobs) -> Document {
    let mut diff = bson::doc! { "a": true };
    // Growth may be written as null padding by `l` instead of `u<n>: null`.
    let pad = post.len() > pre.len() && knobs.flip();
    if post.len() < pre.len() || pad {
        diff.insert("l", post.len() as i32);
    }
    for (idx, new) in post.iter().enumerate() {
        match (pre.get(idx), new) {
            (Some(old), new) if same(old, new) => {}
            (Some(Bson::Document(old)), Bson::Document(new)) if knobs.flip() => {
                diff.insert(format!("s{idx}"), diff_doc(old, new, knobs));
            }
            (Some(Bson::Array(old)), Bson::Array(new)) if knobs.flip() => {
                diff.insert(format!("s{idx}"), diff_array(old, new, knobs));
            }
            (None, Bson::Null) if pad => {}
            _ => {
                diff.insert(format!("u{idx}"), new.clone());
            }
        }
    }
    diff
}
