//! Fuzz-style properties: arbitrary diff-like and description-like documents, and corrupted
//! BSON bytes, never make the library panic, and validation is consistent with application.

use tandem::mongo::apply as mongo_diff;

use bson::{Binary, Bson, Document, RawDocument, doc, spec::BinarySubtype};
use mongo_diff::{
    apply_diff, apply_diff_raw, apply_update_description, diff_to_description, validate_diff,
    validate_diff_raw,
};
use proptest::collection::vec;
use proptest::prelude::*;

#[path = "mongo_diff/common.rs"]
mod common;
#[path = "mongo_diff/model.rs"]
mod model;

/// Names that mean something somewhere in a diff, plus near misses.
const DIFF_KEYS: &[&str] = &[
    "d",
    "u",
    "i",
    "b",
    "s",
    "sa",
    "sb",
    "s0",
    "s1",
    "s3",
    "a",
    "l",
    "u0",
    "u1",
    "u2",
    "u10",
    "u01",
    "s99",
    "x",
    "",
    "dd",
    "uu",
    "3u",
    "5",
    "o",
    "é",
    "sé",
    "u99999999999999999999",
];

fn diff_key() -> impl Strategy<Value = String> {
    proptest::sample::select(DIFF_KEYS).prop_map(str::to_owned)
}

fn diff_scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        Just(Bson::Null),
        any::<bool>().prop_map(Bson::Boolean),
        (-2i32..12).prop_map(Bson::Int32),
        (-2i64..4).prop_map(Bson::Int64),
        Just(Bson::Double(1.0)),
        "[a-c]{0,2}".prop_map(Bson::String),
        vec(any::<u8>(), 0..4).prop_map(|bytes| Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes,
        })),
    ]
}

fn diff_value() -> impl Strategy<Value = Bson> {
    diff_scalar().prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            3 => vec((diff_key(), inner.clone()), 0..5)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect())),
            1 => vec(inner, 0..3).prop_map(Bson::Array),
        ]
    })
}

fn diff_document() -> impl Strategy<Value = Document> {
    vec((diff_key(), diff_value()), 0..5).prop_map(|fields| fields.into_iter().collect())
}

/// Mostly well-formed diffs (sections in order, array diffs with ascending indexes) with a few
/// random faults injected, so that the deep checks are reached, not just the top-level ones.
fn plausible_diff() -> impl Strategy<Value = Document> {
    let name = || proptest::sample::select(&["a", "b", "x", "0", "1", "", "é"][..]);
    let leaf = vec((name(), diff_scalar()), 0..3).prop_map(|fields| {
        let mut diff = Document::new();
        for (section, (key, value)) in ["d", "u", "i"].iter().zip(fields) {
            let value = if *section == "d" {
                Bson::Boolean(false)
            } else {
                value
            };
            diff.insert(*section, doc! { key: value });
        }
        if diff.is_empty() {
            diff.insert("u", doc! { "a": 1 });
        }
        diff
    });
    let binary = (name(), -1i32..5, vec(any::<u8>(), 0..3)).prop_map(|(key, o, bytes)| {
        doc! { "b": { key: { "o": o, "d": Binary { subtype: BinarySubtype::Generic, bytes } } } }
    });
    prop_oneof![leaf, binary].prop_recursive(4, 40, 4, move |inner| {
        let array = (
            prop_oneof![6 => Just(Bson::Boolean(true)), 1 => diff_scalar()],
            proptest::option::of(-1i32..6),
            vec((any::<bool>(), 0usize..8, inner.clone()), 0..4),
            proptest::option::of((diff_key(), diff_value())),
        )
            .prop_map(|(header, size, entries, fault)| {
                let mut diff = doc! { "a": header };
                if let Some(size) = size {
                    diff.insert("l", size);
                }
                for (update, idx, sub) in entries {
                    if update {
                        diff.insert(format!("u{idx}"), 1);
                    } else {
                        diff.insert(format!("s{idx}"), sub);
                    }
                }
                if let Some((key, value)) = fault {
                    diff.insert(key, value);
                }
                diff
            });
        let sub = prop_oneof![inner.clone(), array];
        (
            inner,
            vec((name(), sub), 0..3),
            proptest::option::of((diff_key(), diff_value())),
        )
            .prop_map(|(mut diff, subs, fault)| {
                for (key, sub) in subs {
                    diff.insert(format!("s{key}"), sub);
                }
                if let Some((key, value)) = fault {
                    diff.insert(key, value);
                }
                diff
            })
    })
}

fn oplog_o() -> impl Strategy<Value = Document> {
    let diff = prop_oneof![diff_document(), plausible_diff()];
    (
        diff,
        prop_oneof![8 => Just(Bson::Int32(2)), 1 => diff_scalar()],
    )
        .prop_map(|(diff, version)| doc! { "$v": version, "diff": diff })
}

/// Paths over the same names, with indexes, dots and empty components.
fn path() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![diff_key(), "[0-3]".prop_map(String::from)],
        1..4,
    )
    .prop_map(|p| p.join("."))
}

fn description() -> impl Strategy<Value = Document> {
    let component = prop_oneof![
        diff_key().prop_map(Bson::String),
        (-1i32..4).prop_map(Bson::Int32),
        Just(Bson::Null)
    ];
    (
        vec((path(), diff_value()), 0..4),
        vec(path().prop_map(Bson::String), 0..3),
        vec((path(), -1i32..6), 0..2),
        vec((path(), vec(component, 0..4)), 0..2),
    )
        .prop_map(|(updated, removed, truncated, disambiguated)| {
            let truncated: Vec<Bson> = truncated
                .into_iter()
                .map(|(field, size)| Bson::Document(doc! { "field": field, "newSize": size }))
                .collect();
            let disambiguated: Document = disambiguated
                .into_iter()
                .map(|(p, parts)| (p, Bson::Array(parts)))
                .collect();
            doc! {
                "updatedFields": updated.into_iter().collect::<Document>(),
                "removedFields": removed,
                "truncatedArrays": truncated,
                "disambiguatedPaths": disambiguated,
            }
        })
}

/// A pre-image over the names diffs target.
fn pre_image() -> impl Strategy<Value = Document> {
    prop_oneof![
        vec((diff_key(), diff_value()), 0..5).prop_map(|fields| fields.into_iter().collect()),
        model::document(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// No panic on any diff; a diff that validates applies to any pre-image and describes.
    #[test]
    fn arbitrary_diffs_never_panic(pre in pre_image(), other in model::document(), o in oplog_o()) {
        let validated = validate_diff(&o);
        let applied = apply_diff(&pre, &o);
        let applied_other = apply_diff(&other, &o);
        let described = diff_to_description(&o);
        if validated.is_ok() {
            prop_assert!(applied.is_ok(), "validated but {:?}", applied);
            prop_assert!(applied_other.is_ok(), "validated but {:?}", applied_other);
            prop_assert!(described.is_ok(), "validated but {:?}", described);
        }
        if let Err(e) = &applied {
            // Errors name a path and carry a known code.
            prop_assert!(e.code > 0);
            prop_assert!(e.to_string().starts_with("at \""));
        }
    }

    /// No panic on any description, whatever document it is replayed on.
    #[test]
    fn arbitrary_descriptions_never_panic(mut target in pre_image(), desc in description()) {
        let _ = apply_update_description(&mut target, &desc);
    }

    /// Corrupted BSON bytes of a diff are rejected or applied, never a panic.
    #[test]
    fn corrupted_bytes_never_panic(
        pre in pre_image(),
        o in oplog_o(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut raw = bson::to_vec(&o).expect("serializable");
        for (at, byte) in flips {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        if let Ok(raw) = RawDocument::from_bytes(&raw) {
            let _ = validate_diff_raw(raw);
            let _ = apply_diff_raw(&pre, raw);
        }
    }
}

/// Diagnostic, not a check: which error codes the fuzz inputs reach, so that a generator that
/// only ever trips the top-level checks is noticed. `cargo test --test fuzz -- --ignored --nocapture`
#[test]
#[ignore]
fn outcome_stats() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::default();
    let mut applied = std::collections::BTreeMap::<u32, usize>::new();
    let mut validated = std::collections::BTreeMap::<u32, usize>::new();
    for _ in 0..3000 {
        let (pre, o) = (pre_image(), oplog_o())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        *applied
            .entry(apply_diff(&pre, &o).err().map_or(0, |e| e.code))
            .or_default() += 1;
        *validated
            .entry(validate_diff(&o).err().map_or(0, |e| e.code))
            .or_default() += 1;
    }
    println!("apply (0 = ok): {applied:?}\nvalidate (0 = ok): {validated:?}");
}
