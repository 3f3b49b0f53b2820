//! MongoDB `$v: 2` ("delta") oplog update diffs.
//!
//! An update oplog entry written by MongoDB 5.0+ carries `o: {$v: 2, diff: {...}}`. The diff is
//! not a list of update operators: it describes the post-image relative to the pre-image, and
//! its exact byte layout (field order, numeric types) is what replica-set members agree on. This
//! module reproduces the server's applier (`document_diff_applier.cpp` with the existence check
//! for inserts switched on) and its parser's validation (`document_diff_serialization.cpp`),
//! including the error codes.
//!
//! Diff format, per document level: optional sections `d` (`{field: false}`), `u`
//! (`{field: value}`), `i` (`{field: value}`), `b` (`{field: {o: offset, d: BinData}}`), in that
//! order, then any number of sub-diffs `s<field>: {...}`. An array sub-diff is
//! `{a: true, l?: newSize, u<idx>: value, s<idx>: {...}}` with ascending indexes.
//!
//! Parsing is lazy in the same places as in the server: a level's section layout is checked when
//! its parent is read, but its contents only when the level is applied, so a sub-diff aimed at a
//! missing field is not looked into. [`validate_diff`] checks everything eagerly.

use std::fmt;

use bson::{Document, RawBsonRef, RawDocument, RawDocumentBuf};

mod apply;
mod depth;
mod reader;
mod validate;

pub(crate) use depth::check_document as check_document_depth;

pub(crate) use reader::{
    ArrayMod, ArrayReader, DocReader, MAX_ARRAY_LEN, SubDiff, section_entries,
};

/// Error codes carried by [`DiffError::code`].
///
/// Codes above 10000 are the server's own `uassert` codes for the same condition. The small ones
/// are the server's generic `ErrorCodes`, used where mongod has no check of its own (it would
/// crash on an invariant or loop forever) or for the change-stream side.
pub mod codes {
    /// Input the server cannot apply and never produces: array indexes not strictly ascending,
    /// an index at or past `l`, a negative `l`. (mongod: invariant failure or endless loop.)
    pub const BAD_VALUE: u32 = 2;
    /// An `updateDescription` that is not shaped like one.
    pub const FAILED_TO_PARSE: u32 = 9;
    /// An `updateDescription` member of the wrong BSON type.
    pub const TYPE_MISMATCH: u32 = 14;
    /// Input nested deeper than 200 levels (the server's BSON depth limit; stored documents have
    /// at most 100), refused before anything recurses.
    pub const OVERFLOW: u32 = 15;
    /// Malformed BSON bytes, or a document that cannot be encoded (e.g. a key with a NUL byte).
    pub const INVALID_BSON: u32 = 22;
    /// An `updateDescription` path runs through a scalar, or names a field inside an array.
    pub const PATH_NOT_VIABLE: u32 = 28;
    /// A binary-diff entry is not an object.
    pub const WRONG_TYPE_FOR_FIELD: u32 = 10065;
    /// The result would exceed the 16 MiB document limit (huge `l` or array index).
    pub const BSON_OBJECT_TOO_LARGE: u32 = 10334;
    /// The same field is named twice in one diff level.
    pub const DUPLICATE_FIELD: u32 = 4728000;
    /// An empty diff or sub-diff.
    pub const EMPTY_DIFF: u32 = 4770500;
    /// An array `s<idx>` entry is not an object.
    pub const ARRAY_SUB_DIFF_NOT_OBJECT: u32 = 4770501;
    /// An array entry is neither `u<idx>` nor `s<idx>`.
    pub const BAD_ARRAY_ENTRY_KIND: u32 = 4770502;
    /// Unknown or out-of-order section in a document diff.
    pub const UNEXPECTED_SECTION: u32 = 4770503;
    /// An array diff that does not start with `a`.
    pub const MISSING_ARRAY_HEADER: u32 = 4770504;
    /// A section with an empty name.
    pub const EMPTY_SECTION_NAME: u32 = 4770505;
    /// A section (`d`, `u`, `i`, `b`, first `s…`) or `l` of the wrong BSON type.
    pub const BAD_SECTION_TYPE: u32 = 4770507;
    /// A later `s<field>` sub-diff that is not an object (the server's code has 6 digits).
    pub const SUB_DIFF_NOT_OBJECT: u32 = 470510;
    /// An array entry whose index is not a decimal unsigned integer.
    pub const BAD_ARRAY_INDEX: u32 = 4770512;
    /// A section after the sub-diffs. (Unreachable in practice: reported as 4770514.)
    pub const TRAILING_SECTION: u32 = 4770513;
    /// A field after the first sub-diff that is not itself a sub-diff.
    pub const FIELD_AFTER_SUB_DIFF: u32 = 4770514;
    /// The array header `a` is not a bool.
    pub const ARRAY_HEADER_NOT_BOOL: u32 = 4770519;
    /// The array header `a` is `false`.
    pub const ARRAY_HEADER_NOT_TRUE: u32 = 4770520;
    /// An array entry name shorter than two characters.
    pub const ARRAY_ENTRY_NAME_TOO_SHORT: u32 = 4770521;
    /// `$v` is present but not an integer.
    pub const VERSION_NOT_INTEGER: u32 = 4772600;
    /// `diff` is missing or not an object.
    pub const DIFF_NOT_OBJECT: u32 = 4772601;
    /// `$v` is missing or not 2: not a delta entry.
    pub const UNSUPPORTED_VERSION: u32 = 4772604;
    /// A binary diff's `d` is not BinData.
    pub const BINARY_DATA_NOT_BINDATA: u32 = 12262900;
    /// A binary diff's `o` is negative (or not an integer).
    pub const BINARY_BAD_OFFSET: u32 = 12262901;
}

/// A diff (or `updateDescription`) that cannot be applied.
///
/// `code` is the server's error code for the same condition (see [`codes`]); `path` is the dotted
/// path of the field the problem was found at (empty for the top level).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at \"{path}\": {message} (code {code})")]
pub struct DiffError {
    pub code: u32,
    pub path: String,
    pub message: String,
}

impl DiffError {
    pub(crate) fn new(code: u32, path: &Path, message: impl Into<String>) -> Self {
        Self {
            code,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Where in the document a diff level applies; only used to name fields in errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Path(Vec<String>);

impl Path {
    pub(crate) fn child(&self, part: impl Into<String>) -> Path {
        let mut parts = self.0.clone();
        parts.push(part.into());
        Path(parts)
    }

    pub(crate) fn index(&self, idx: usize) -> Path {
        self.child(idx.to_string())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Applies the `o` field of a `$v: 2` update oplog entry to `pre` and returns the post-image.
///
/// `oplog_o` must be `{$v: 2, diff: {...}}` (`$v` int32 or int64; other fields are ignored, as
/// the server does). The result is what mongod stores, byte for byte: fields updated by `u` or a
/// sub-diff stay in place, `i` fields (existing or not) move to the end after the `u` fields that
/// were missing, a sub-diff aimed at a value of the wrong type writes `null`, one aimed at a missing
/// field does nothing. Inserts use the server's checked mode, so re-applying an entry never makes
/// duplicate fields. A `b` entry keeps the first `o` bytes of the BinData and appends `d` (skipped
/// when `o` is past the end; `null` over a value that is not BinData, like a sub-diff). Returns
/// the server's error code for a malformed diff; never panics, and refuses input nested over
/// 200 levels ([`codes::OVERFLOW`]) rather than overflow the stack.
///
/// Duplicate field names cannot exist in a [`Document`]; use [`apply_diff_raw`] on the entry's
/// BSON bytes to have them rejected (4728000) as the server does.
pub fn apply_diff(pre: &Document, oplog_o: &Document) -> Result<Document, DiffError> {
    apply_diff_raw(pre, &to_raw(oplog_o, "the oplog entry")?)
}

/// [`apply_diff`] on the raw BSON of the oplog entry's `o` field.
pub fn apply_diff_raw(pre: &Document, oplog_o: &RawDocument) -> Result<Document, DiffError> {
    apply_inner_diff_raw(pre, inner_diff(oplog_o)?)
}

/// Applies a bare diff (the value of `o.diff`) to `pre`; see [`apply_diff`].
pub fn apply_inner_diff(pre: &Document, diff: &Document) -> Result<Document, DiffError> {
    apply_inner_diff_raw(pre, &to_raw(diff, "the diff")?)
}

/// [`apply_inner_diff`] on raw BSON.
pub fn apply_inner_diff_raw(pre: &Document, diff: &RawDocument) -> Result<Document, DiffError> {
    depth::check_raw(diff, "the diff")?;
    depth::check_document(pre, "the pre-image")?;
    let root = Path::default();
    let reader = DocReader::new(diff, &root)?;
    apply::apply_object(pre, reader, &root, 0)
}

/// Checks that `oplog_o` is a well-formed `$v: 2` update, without a pre-image.
///
/// Stricter than the server, which only looks into the parts of a diff that meet a matching
/// pre-image: this checks every level, so `Ok` means [`apply_diff`] succeeds on any pre-image.
/// The checks run in the server's order, so a diff with one fault gets the server's code.
pub fn validate_diff(oplog_o: &Document) -> Result<(), DiffError> {
    validate_diff_raw(&to_raw(oplog_o, "the oplog entry")?)
}

/// [`validate_diff`] on raw BSON (detects duplicate field names).
pub fn validate_diff_raw(oplog_o: &RawDocument) -> Result<(), DiffError> {
    depth::check_raw(oplog_o, "the oplog entry")?;
    let root = Path::default();
    let reader = DocReader::new(inner_diff(oplog_o)?, &root)?;
    validate::validate_object(reader, &root, 0)
}

/// Returns the `diff` of a `{$v: 2, diff}` update, checked as `UpdateModification` does.
pub(crate) fn inner_diff(oplog_o: &RawDocument) -> Result<&RawDocument, DiffError> {
    let root = Path::default();
    let bad_bson = |e: bson::raw::Error| DiffError::new(codes::INVALID_BSON, &root, e.to_string());
    let version = match oplog_o.get("$v").map_err(bad_bson)? {
        Some(RawBsonRef::Int32(v)) => Some(i64::from(v)),
        Some(RawBsonRef::Int64(v)) => Some(v),
        Some(other) => {
            let msg = format!(
                "expected $v to be an integer, got {:?}",
                other.element_type()
            );
            return Err(DiffError::new(codes::VERSION_NOT_INTEGER, &root, msg));
        }
        None => None,
    };
    if version != Some(2) {
        let found = version.map_or("missing".to_owned(), |v| v.to_string());
        let msg = format!("not a $v:2 delta update ($v is {found})");
        return Err(DiffError::new(codes::UNSUPPORTED_VERSION, &root, msg));
    }
    match oplog_o.get("diff").map_err(bad_bson)? {
        Some(RawBsonRef::Document(diff)) => Ok(diff),
        other => {
            let msg = format!(
                "expected 'diff' to be an object, got {:?}",
                other.map(|v| v.element_type())
            );
            Err(DiffError::new(codes::DIFF_NOT_OBJECT, &root, msg))
        }
    }
}

/// Encodes `doc`, refusing first what would overflow the stack in the encoder.
pub(crate) fn to_raw(doc: &Document, what: &str) -> Result<RawDocumentBuf, DiffError> {
    depth::check_document(doc, what)?;
    RawDocumentBuf::from_document(doc)
        .map_err(|e| DiffError::new(codes::INVALID_BSON, &Path::default(), e.to_string()))
}
