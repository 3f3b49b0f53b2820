//! Every vector of the shared `update-diffs.jsonl` golden file.
//!
//! Post-images are compared as serialized BSON bytes, so field order and numeric types count.

use tandem::mongo::apply as mongo_diff;

use std::path::PathBuf;

use bson::{Bson, Document, RawDocument};
use mongo_diff::{
    apply_diff, apply_diff_raw, apply_update_description, diff_to_description, validate_diff,
    validate_diff_raw,
};
use serde_json::Value;

#[path = "mongo_diff/common.rs"]
mod common;
use common::{bytes, meets_shape, moves_existing_field, same_as_values};

/// `$MONGO_FIXTURES_DIR`; else `$TANDEM_SHARED_FIXTURES/mongo` (as the other fixture
/// tests); else the first `shared/fixtures/mongo` above this crate; else the workplace's
/// `/work/shared/fixtures/mongo`.
fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MONGO_FIXTURES_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(dir) = std::env::var("TANDEM_SHARED_FIXTURES") {
        return PathBuf::from(dir).join("mongo");
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/fixtures/mongo"))
        .find(|dir| dir.join("update-diffs.jsonl").is_file())
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures/mongo"))
}

fn doc(value: &Value) -> Document {
    match Bson::try_from(value.clone()).expect("extended JSON") {
        Bson::Document(doc) => doc,
        other => panic!("expected a document, got {other:?}"),
    }
}

fn int(value: &Value) -> u32 {
    match Bson::try_from(value.clone()).expect("extended JSON") {
        Bson::Int32(v) => v as u32,
        Bson::Int64(v) => v as u32,
        other => panic!("expected an integer, got {other:?}"),
    }
}

#[derive(Default, Debug)]
struct Counts {
    records: usize,
    apply: usize,
    error: usize,
    parse_only: usize,
    applied_twice: usize,
    hex: usize,
    /// Apply vectors whose change-stream form replays to the same bytes / the same values.
    described_exact: usize,
    described_reordered: usize,
    /// Re-application or binary vectors: no change-stream equivalent, not compared.
    not_describable: usize,
}

#[test]
fn update_diff_vectors() {
    let path = fixtures_dir().join("update-diffs.jsonl");
    let text = std::fs::read_to_string(&path).expect("readable fixture file");
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).expect("valid JSON line");
        counts.records += 1;
        let name = record["name"].as_str().unwrap_or("?").to_string();
        if let Err(why) = check_record(&record, &mut counts) {
            failures.push(format!("{name}: {why}"));
        }
    }
    println!("update-diffs.jsonl: {counts:?}");
    assert!(
        failures.is_empty(),
        "{} failing vectors:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(counts.records, 183);
    assert_eq!(counts.apply, 152);
    assert_eq!(counts.error, 26);
    assert_eq!(counts.parse_only, 5);
    assert_eq!(counts.applied_twice, 23);
    assert_eq!(counts.hex, 3);
    assert_eq!(
        counts.described_exact + counts.described_reordered + counts.not_describable,
        152
    );
    assert!(
        counts.described_exact >= 130,
        "too few vectors compared: {counts:?}"
    );
}

fn check_record(record: &Value, counts: &mut Counts) -> Result<(), String> {
    let oplog_o = doc(&record["oplog_o"]);
    if let Some(expected) = record.get("expect_error") {
        counts.error += 1;
        let code = int(&expected["code"]);
        let pre = doc(&record["pre"]);
        let (applied, validated) = match record.get("oplog_o_bson_hex") {
            Some(hex) => {
                counts.hex += 1;
                let raw =
                    hex::decode(hex.as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
                let raw = RawDocument::from_bytes(&raw).map_err(|e| e.to_string())?;
                (apply_diff_raw(&pre, raw), validate_diff_raw(raw))
            }
            None => (
                apply_diff(&pre, &oplog_o),
                mongo_diff::validate_diff(&oplog_o),
            ),
        };
        return match (applied, validated) {
            (Err(a), Err(v)) if a.code == code && v.code == code => Ok(()),
            (a, v) => Err(format!(
                "expected code {code}, apply gave {a:?}, validate gave {v:?}"
            )),
        };
    }
    if record.get("kind").and_then(Value::as_str) == Some("parse-only") {
        counts.parse_only += 1;
        validate_diff(&oplog_o).map_err(|e| format!("validate: {e}"))?;
        diff_to_description(&oplog_o).map_err(|e| format!("describe: {e}"))?;
        return Ok(());
    }
    counts.apply += 1;
    let pre = doc(&record["pre"]);
    let post = doc(&record["post"]);
    validate_diff(&oplog_o).map_err(|e| format!("validate: {e}"))?;
    let got = apply_diff(&pre, &oplog_o).map_err(|e| format!("apply: {e}"))?;
    if bytes(&got) != bytes(&post) {
        return Err(format!("apply gave {got}, expected {post}"));
    }
    // The README states re-application is a no-op for every vector; `applied_twice` marks the
    // ones whose source test asserts it.
    if record.get("applied_twice") == Some(&Value::Bool(true)) {
        counts.applied_twice += 1;
    }
    let again = apply_diff(&post, &oplog_o).map_err(|e| format!("re-apply: {e}"))?;
    if bytes(&again) != bytes(&post) {
        return Err(format!("re-apply gave {again}, expected {post}"));
    }
    check_description(&pre, &oplog_o, &post, counts)
}

/// The change-stream form of a diff that describes a real change replays to the post-image:
/// byte-exact, or equal as values where an `i` moved an existing field to the end.
fn check_description(
    pre: &Document,
    oplog_o: &Document,
    post: &Document,
    counts: &mut Counts,
) -> Result<(), String> {
    let desc = diff_to_description(oplog_o).map_err(|e| format!("describe: {e}"))?;
    let diff = oplog_o.get_document("diff").map_err(|e| e.to_string())?;
    if !meets_shape(pre, diff) {
        counts.not_describable += 1;
        return Ok(());
    }
    let mut replayed = pre.clone();
    apply_update_description(&mut replayed, &desc).map_err(|e| format!("replay {desc}: {e}"))?;
    let moved = moves_existing_field(pre, diff);
    if bytes(&replayed) == bytes(post) {
        counts.described_exact += 1;
    } else if moved && same_as_values(&replayed, post) {
        counts.described_reordered += 1;
    } else {
        return Err(format!("replaying {desc} gave {replayed}, expected {post}"));
    }
    Ok(())
}
