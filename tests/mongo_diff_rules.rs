//! Behaviours the golden vectors do not pin down: error paths, inputs the server cannot apply,
//! laziness, binary edge cases, `$v` handling and the exact change-stream form.

use tandem::mongo::apply as mongo_diff;

use bson::{Binary, Bson, DateTime, Document, doc, oid::ObjectId, spec::BinarySubtype};
use mongo_diff::{
    apply_diff, apply_inner_diff, apply_update_description, codes, diff_to_description,
    validate_diff,
};

#[path = "mongo_diff/common.rs"]
mod common;
use common::bytes;

fn v2(diff: Document) -> Document {
    doc! { "$v": 2, "diff": diff }
}

fn code(result: Result<impl std::fmt::Debug, mongo_diff::DiffError>) -> u32 {
    result.expect_err("expected an error").code
}

#[test]
fn errors_name_the_offending_path() {
    let pre = doc! { "a": { "b": [0, 1, 2, 3] } };
    let diff = v2(doc! { "sa": { "sb": { "a": true, "u3": 1, "s9": 7 } } });
    let err = apply_diff(&pre, &diff).unwrap_err();
    assert_eq!(err.code, codes::ARRAY_SUB_DIFF_NOT_OBJECT);
    assert_eq!(err.path, "a.b.9");
    assert!(err.to_string().starts_with("at \"a.b.9\": "), "{err}");

    let err = apply_diff(&doc! {}, &v2(doc! { "u": { "k": 1 }, "i": { "k": 2 } })).unwrap_err();
    assert_eq!((err.code, err.path.as_str()), (codes::DUPLICATE_FIELD, "k"));
}

#[test]
fn array_diffs_the_server_cannot_apply_are_rejected() {
    let pre = doc! { "arr": [1, 2, 3] };
    // Not ascending: mongod's applier would never terminate.
    let descending = v2(doc! { "sarr": { "a": true, "u2": 0, "u1": 0 } });
    assert_eq!(code(apply_diff(&pre, &descending)), codes::BAD_VALUE);
    let repeated = v2(doc! { "sarr": { "a": true, "u1": 0, "u01": 0 } });
    assert_eq!(code(apply_diff(&pre, &repeated)), codes::BAD_VALUE);
    // An index at or past `l`: mongod trips an invariant.
    let past_size = v2(doc! { "sarr": { "a": true, "l": 2, "u2": 0 } });
    assert_eq!(code(apply_diff(&pre, &past_size)), codes::BAD_VALUE);
    let negative = v2(doc! { "sarr": { "a": true, "l": -1 } });
    assert_eq!(code(apply_diff(&pre, &negative)), codes::BAD_VALUE);
    // Sizes no 16 MiB document can have are refused before allocating anything.
    let huge = v2(doc! { "sarr": { "a": true, "l": i32::MAX } });
    assert_eq!(code(apply_diff(&pre, &huge)), codes::BSON_OBJECT_TOO_LARGE);
    let far = v2(doc! { "sarr": { "a": true, "u99999999": 1 } });
    assert_eq!(code(apply_diff(&pre, &far)), codes::BSON_OBJECT_TOO_LARGE);
    // `l` must directly follow `a`; anywhere else it is an entry name that is too short.
    let late_l = v2(doc! { "sarr": { "a": true, "u0": 1, "l": 2 } });
    assert_eq!(
        code(apply_diff(&pre, &late_l)),
        codes::ARRAY_ENTRY_NAME_TOO_SHORT
    );
    // Leading zeros are a valid index, as in the server's parser.
    let padded = v2(doc! { "sarr": { "a": true, "u01": 9 } });
    assert_eq!(
        apply_diff(&pre, &padded).unwrap(),
        doc! { "arr": [1, 9, 3] }
    );
}

#[test]
fn contents_of_unreached_sub_diffs_are_checked_only_by_validate() {
    // The server reads a sub-diff's section layout with its parent but its contents only when
    // it meets a matching value; `validate_diff` is the strict check.
    let diff = v2(doc! { "smissing": { "u": { "k": 1 }, "sdeep": { "a": true, "x": 1 } } });
    assert_eq!(
        apply_diff(&doc! { "other": 1 }, &diff).unwrap(),
        doc! { "other": 1 }
    );
    assert_eq!(
        code(validate_diff(&diff)),
        codes::ARRAY_ENTRY_NAME_TOO_SHORT
    );
    let pre = doc! { "missing": { "deep": [1] } };
    assert_eq!(
        code(apply_diff(&pre, &diff)),
        codes::ARRAY_ENTRY_NAME_TOO_SHORT
    );
    // Its own layout is checked even when the field is missing.
    let bad_layout = v2(doc! { "smissing": { "x": {} } });
    assert_eq!(
        code(apply_diff(&doc! {}, &bad_layout)),
        codes::UNEXPECTED_SECTION
    );
}

#[test]
fn the_oplog_wrapper_is_checked() {
    let pre = doc! { "a": 1 };
    let diff = doc! { "u": { "a": 2 } };
    assert_eq!(
        code(apply_diff(&pre, &doc! { "diff": diff.clone() })),
        codes::UNSUPPORTED_VERSION
    );
    assert_eq!(
        code(apply_diff(&pre, &doc! { "$v": 1, "$set": { "a": 2 } })),
        codes::UNSUPPORTED_VERSION
    );
    assert_eq!(
        code(apply_diff(&pre, &doc! { "$v": "2", "diff": diff.clone() })),
        codes::VERSION_NOT_INTEGER
    );
    assert_eq!(
        code(apply_diff(&pre, &doc! { "$v": 2 })),
        codes::DIFF_NOT_OBJECT
    );
    assert_eq!(
        code(apply_diff(&pre, &doc! { "$v": 2, "diff": [] })),
        codes::DIFF_NOT_OBJECT
    );
    let long_version = doc! { "$v": 2i64, "diff": diff.clone() };
    assert_eq!(apply_diff(&pre, &long_version).unwrap(), doc! { "a": 2 });
    assert_eq!(apply_inner_diff(&pre, &diff).unwrap(), doc! { "a": 2 });
    // A key with a NUL byte cannot be encoded as BSON at all.
    assert_eq!(
        code(apply_inner_diff(&pre, &doc! { "u": { "a\0b": 1 } })),
        codes::INVALID_BSON
    );
}

#[test]
fn binary_diffs_on_other_values() {
    let bin = |bytes: &[u8]| {
        Bson::Binary(Binary {
            subtype: BinarySubtype::Column,
            bytes: bytes.to_vec(),
        })
    };
    let diff = |o: i32| v2(doc! { "b": { "col": { "o": o, "d": bin(b"xy") } } });
    let pre = doc! { "col": bin(b"abc"), "n": 1 };
    assert_eq!(
        apply_diff(&pre, &diff(3)).unwrap(),
        doc! { "col": bin(b"abcxy"), "n": 1 }
    );
    assert_eq!(
        apply_diff(&pre, &diff(0)).unwrap(),
        doc! { "col": bin(b"xy"), "n": 1 }
    );
    assert_eq!(
        apply_diff(&pre, &diff(4)).unwrap(),
        pre,
        "offset past the end: skipped"
    );
    // A missing field is left missing; another type becomes the null placeholder, as for sub-diffs.
    assert_eq!(
        apply_diff(&doc! { "n": 1 }, &diff(0)).unwrap(),
        doc! { "n": 1 }
    );
    assert_eq!(
        apply_diff(&doc! { "col": "s" }, &diff(0)).unwrap(),
        doc! { "col": Bson::Null }
    );
    let no_offset = v2(doc! { "b": { "col": { "d": bin(b"x") } } });
    assert_eq!(code(apply_diff(&pre, &no_offset)), codes::BINARY_BAD_OFFSET);
    let negative = diff(-1);
    assert_eq!(code(apply_diff(&pre, &negative)), codes::BINARY_BAD_OFFSET);
    // Sections keep their order: `b` after `i`, before the sub-diffs.
    let misplaced = v2(doc! { "b": {}, "i": { "x": 1 } });
    assert_eq!(
        code(apply_diff(&pre, &misplaced)),
        codes::UNEXPECTED_SECTION
    );
}

#[test]
fn reapplied_time_series_insert_replaces_instead_of_duplicating() {
    // The `real-dump/timeseries-bucket-reapply` diff, replayed on a bucket copied after it ran.
    let id = ObjectId::parse_str("60c7df3b15caf5ee94e01f7e").unwrap();
    let ts = DateTime::from_millis(1_623_711_547_966);
    let diff = v2(doc! {
        "scontrol": { "smax": { "u": { "_id": id, "ts": ts } } },
        "sdata": {
            "sts": { "i": { "129": ts } },
            "smeasurement": { "i": { "129": 292 } },
            "s_id": { "i": { "129": id } },
        },
    });
    let bucket = doc! {
        "_id": 1,
        "control": { "version": 1, "min": { "_id": id, "ts": ts }, "max": { "_id": id, "ts": ts } },
        "data": {
            "ts": { "128": ts, "129": ts },
            "measurement": { "128": 291, "129": 292 },
            "_id": { "128": id, "129": id },
        },
    };
    let applied = apply_diff(&bucket, &diff).unwrap();
    assert_eq!(bytes(&applied), bytes(&bucket));
}

#[test]
fn change_stream_form_matches_the_server_layout() {
    let diff = v2(doc! {
        "u": { "x.y": 1, "top": 2 },
        "sa": { "i": { "1": 2, "01": 3 } },
        "sarr": { "a": true, "l": 2, "s0": { "d": { "0": false } }, "u1": 5 },
        "s7": { "u": { "n": 1 } },
    });
    let desc = diff_to_description(&diff).unwrap();
    let expected = doc! {
        "updatedFields": { "x.y": 1, "top": 2, "a.1": 2, "a.01": 3, "arr.1": 5, "7.n": 1 },
        "removedFields": ["arr.0.0"],
        "truncatedArrays": [{ "field": "arr", "newSize": 2 }],
        "disambiguatedPaths": {
            "x.y": ["x.y"],
            "a.1": ["a", "1"],
            "arr.0.0": ["arr", 0, "0"],
        },
    };
    assert_eq!(bytes(&desc), bytes(&expected), "{desc}");

    let pre = doc! { "a": {}, "arr": [{ "0": 1, "k": 2 }, 3, 4], "7": { "n": 0 } };
    let mut replayed = pre.clone();
    apply_update_description(&mut replayed, &desc).unwrap();
    let post = apply_diff(&pre, &diff).unwrap();
    assert_eq!(bytes(&replayed), bytes(&post), "{replayed}");
}

#[test]
fn update_descriptions_follow_set_and_unset() {
    let mut target = doc! { "a": [1, { "b": 1 }], "s": "x", "keep": 1 };
    let desc = doc! {
        "updatedFields": { "a.4": 9, "a.1.c": 2, "new.deep.field": true, "a.6.z": 1 },
        "removedFields": ["a.0", "keep", "missing.path", "s.t"],
        "truncatedArrays": [],
    };
    apply_update_description(&mut target, &desc).unwrap();
    let expected = doc! {
        "a": [Bson::Null, { "b": 1, "c": 2 }, Bson::Null, Bson::Null, 9, Bson::Null, { "z": 1 }],
        "s": "x",
        "new": { "deep": { "field": true } },
    };
    assert_eq!(bytes(&target), bytes(&expected), "{target}");

    let through_scalar = doc! { "updatedFields": { "s.t": 1 } };
    assert_eq!(
        code(apply_update_description(&mut target, &through_scalar)),
        codes::PATH_NOT_VIABLE
    );
    let field_in_array = doc! { "updatedFields": { "a.x": 1 } };
    assert_eq!(
        code(apply_update_description(&mut target, &field_in_array)),
        codes::PATH_NOT_VIABLE
    );
    let wrong_type = doc! { "removedFields": "a" };
    assert_eq!(
        code(apply_update_description(&mut target, &wrong_type)),
        codes::TYPE_MISMATCH
    );

    // Truncation null-pads like a diff's `l`, and leaves a missing array alone.
    let mut target = doc! { "a": [1, 2, 3] };
    let desc = doc! { "truncatedArrays": [{ "field": "a", "newSize": 1 }, { "field": "zz", "newSize": 1 }] };
    apply_update_description(&mut target, &desc).unwrap();
    assert_eq!(target, doc! { "a": [1] });
    let desc = doc! { "truncatedArrays": [{ "field": "a", "newSize": 3 }] };
    apply_update_description(&mut target, &desc).unwrap();
    assert_eq!(target, doc! { "a": [1, Bson::Null, Bson::Null] });
}

#[test]
fn nesting_deeper_than_any_document_is_refused_not_a_stack_overflow() {
    fn nested(depth: usize, leaf: Document, wrap: impl Fn(Document) -> Document) -> Document {
        (0..depth).fold(leaf, |inner, _| wrap(inner))
    }
    // MongoDB stores at most 100 levels; one diff level per document level.
    for (depth, ok) in [(100, true), (300, false)] {
        let pre = nested(depth, doc! { "v": 1 }, |inner| doc! { "k": inner });
        let diff = nested(
            depth,
            doc! { "u": { "v": 2 } },
            |inner| doc! { "sk": inner },
        );
        let result = apply_diff(&pre, &v2(diff.clone()));
        assert_eq!(result.is_ok(), ok, "depth {depth}: {result:?}");
        assert_eq!(validate_diff(&v2(diff.clone())).is_ok(), ok);
        assert_eq!(diff_to_description(&v2(diff)).is_ok(), ok);
        if !ok {
            assert_eq!(result.unwrap_err().code, codes::OVERFLOW);
        }
    }
}

#[test]
fn deeply_nested_raw_values_are_refused_before_decoding() {
    // Built as bytes: a `Document` this deep would overflow the stack in the `bson` crate itself.
    fn wrap(key: &str, inner: &[u8]) -> Vec<u8> {
        let mut element = vec![0x03];
        element.extend_from_slice(key.as_bytes());
        element.push(0);
        element.extend_from_slice(inner);
        let len = (4 + element.len() + 1) as i32;
        [&len.to_le_bytes()[..], &element, &[0]].concat()
    }
    let mut value = vec![5, 0, 0, 0, 0];
    for _ in 0..10_000 {
        value = wrap("k", &value);
    }
    let mut oplog_o = wrap("diff", &wrap("u", &wrap("x", &value)));
    // Prepend `$v: 2` to the outer document.
    let v = [&[0x10][..], b"$v\0", &2i32.to_le_bytes()].concat();
    let body = &oplog_o[4..];
    oplog_o = [
        &((4 + v.len() + body.len()) as i32).to_le_bytes()[..],
        &v,
        body,
    ]
    .concat();
    let raw = bson::RawDocument::from_bytes(&oplog_o).unwrap();
    let err = mongo_diff::apply_diff_raw(&doc! {}, raw).unwrap_err();
    assert_eq!(err.code, codes::OVERFLOW);
    assert_eq!(
        mongo_diff::validate_diff_raw(raw).unwrap_err().code,
        codes::OVERFLOW
    );
}
