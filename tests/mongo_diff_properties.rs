//! Property tests against a model of mongod (`tests/model`): random documents, random update
//! operators, a diff computed from (pre, post), then both appliers must reproduce post.

use tandem::mongo::apply as mongo_diff;

use bson::{Bson, Document, doc};
use mongo_diff::{apply_diff, apply_update_description, diff_to_description, validate_diff};
use proptest::collection::vec;
use proptest::prelude::*;

#[path = "mongo_diff/common.rs"]
mod common;
#[path = "mongo_diff/model.rs"]
mod model;

use common::{bytes, same_as_values};
use model::{Knobs, apply_op, diff_doc, document, op};

/// Checks one (pre, post) pair through the diff and through its change-stream form.
///
/// * `apply_diff(pre, diff)` must equal `post` byte for byte (field order, numeric types).
/// * Re-applying the diff to `post` must give `post` (oplog application is idempotent).
/// * `apply_update_description(pre, diff_to_description(diff))` must equal `post` byte for byte,
///   except when the diff moved an existing field to the end with `i`: the change stream turns
///   that into a plain set, which keeps the field in place, so there only the values (objects
///   compared with sorted keys, arrays in order, exact BSON types) must be equal.
fn check_pair(pre: &Document, post: &Document, seed: u64) -> Result<(), TestCaseError> {
    let diff = diff_doc(pre, post, &mut Knobs::new(seed));
    if diff.is_empty() {
        // mongod logs no entry for a no-op update.
        return Ok(());
    }
    let oplog_o = doc! { "$v": 2, "diff": diff.clone() };
    prop_assert_eq!(validate_diff(&oplog_o), Ok(()), "diff {}", diff);
    let applied = apply_diff(pre, &oplog_o).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        bytes(&applied),
        bytes(post),
        "diff {} gave {}",
        diff,
        applied
    );
    let again = apply_diff(post, &oplog_o).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        bytes(&again),
        bytes(post),
        "re-applying {} gave {}",
        diff,
        again
    );

    let desc = diff_to_description(&oplog_o).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut replayed = pre.clone();
    apply_update_description(&mut replayed, &desc)
        .map_err(|e| TestCaseError::fail(format!("{desc}: {e}")))?;
    if common::moves_existing_field(pre, &diff) {
        prop_assert!(
            same_as_values(&replayed, post),
            "{} gave {}",
            desc,
            replayed
        );
    } else {
        prop_assert_eq!(bytes(&replayed), bytes(post), "{} gave {}", desc, replayed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Realistic updates: a few operators applied by the mongod model.
    #[test]
    fn operators_round_trip(pre in document(), ops in vec(op(), 1..6), seed in any::<u64>()) {
        let mut post = pre.clone();
        for op in &ops {
            apply_op(&mut post, op);
        }
        check_pair(&pre, &post, seed)?;
    }

    /// Arbitrary rewrites: any post-image at all, from the same field-name pool.
    #[test]
    fn arbitrary_pairs_round_trip(pre in document(), post in document(), seed in any::<u64>()) {
        check_pair(&pre, &post, seed)?;
    }

    /// Editing inside a shared structure, where sub-diffs and array diffs dominate.
    #[test]
    fn nested_edits_round_trip(inner in document(), ops in vec(op(), 1..6), seed in any::<u64>()) {
        let pre = doc! { "_id": 1, "nested": { "inner": inner.clone() }, "list": [inner, 2] };
        let mut post = pre.clone();
        for op in &ops {
            apply_op(&mut post, op);
        }
        check_pair(&pre, &post, seed)?;
    }
}

#[test]
fn model_produces_sub_and_array_diffs() {
    // Guards against a generator that silently stops exercising the interesting forms.
    let pre = doc! { "a": { "b": 1, "c": [1, 2, 3] }, "d": 1 };
    let post = doc! { "a": { "b": 2, "c": [1, 5] }, "d": 1, "e": Bson::Null };
    let mut seen_sub = false;
    for seed in 0..64 {
        let diff = diff_doc(&pre, &post, &mut Knobs::new(seed));
        seen_sub |= diff.contains_key("sa");
        check_pair(&pre, &post, seed).unwrap();
    }
    assert!(seen_sub);
}
