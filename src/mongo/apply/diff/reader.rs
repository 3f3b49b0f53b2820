//! Parsing one level of a `$v: 2` diff, with the server's checks in the server's order.
//!
//! The server validates a level in three steps, and which error a malformed diff gets depends on
//! that order: the section layout when the level's reader is made ([`DocReader::new`],
//! [`SubDiff::new`]), the sub-diff headers while the parent's tables are built
//! ([`DocReader::next_sub_diff`]), and array entries one at a time while the array is walked
//! ([`ArrayReader::next`]).

use std::collections::HashMap;

use bson::{RawBsonRef, RawDocument};

use super::{DiffError, Path, codes};

/// Diff levels; a guard only, as the input's BSON depth is already bounded (`depth.rs`).
pub(crate) const MAX_DEPTH: usize = super::depth::MAX_BSON_DEPTH;

/// An array with this many elements, all `null`, is already larger than 16 MiB of BSON.
pub(crate) const MAX_ARRAY_LEN: usize = 1_987_591;

pub(crate) type Entry<'a> = (&'a str, RawBsonRef<'a>);

/// Reads all elements of a raw document; malformed bytes become an error instead of a panic.
pub(crate) fn entries<'a>(doc: &'a RawDocument, path: &Path) -> Result<Vec<Entry<'a>>, DiffError> {
    doc.iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DiffError::new(codes::INVALID_BSON, path, e.to_string()))
}

/// A parsed `s<field>` / `s<idx>` value: which kind it is follows from its first field.
pub(crate) enum SubDiff<'a> {
    Doc(DocReader<'a>),
    Array(ArrayReader<'a>),
}

impl<'a> SubDiff<'a> {
    /// The server's `getReader`: empty fails, `a` first means an array diff.
    pub(crate) fn new(diff: &'a RawDocument, path: &Path) -> Result<Self, DiffError> {
        let fields = entries(diff, path)?;
        match fields.first() {
            None => Err(DiffError::new(codes::EMPTY_DIFF, path, "empty sub-diff")),
            Some(("a", _)) => Ok(SubDiff::Array(ArrayReader::from_entries(fields, path)?)),
            Some(_) => Ok(SubDiff::Doc(DocReader::from_entries(fields, path)?)),
        }
    }
}

/// One document level: its sections located and type-checked, contents not yet read.
pub(crate) struct DocReader<'a> {
    pub(crate) deletes: Option<&'a RawDocument>,
    pub(crate) updates: Option<&'a RawDocument>,
    pub(crate) inserts: Option<&'a RawDocument>,
    pub(crate) binaries: Option<&'a RawDocument>,
    /// Every field from the first `s…` on; each is checked when it is read.
    sub_diffs: std::vec::IntoIter<Entry<'a>>,
}

impl<'a> DocReader<'a> {
    pub(crate) fn new(diff: &'a RawDocument, path: &Path) -> Result<Self, DiffError> {
        let fields = entries(diff, path)?;
        if fields.is_empty() {
            return Err(DiffError::new(codes::EMPTY_DIFF, path, "empty diff"));
        }
        Self::from_entries(fields, path)
    }

    fn from_entries(fields: Vec<Entry<'a>>, path: &Path) -> Result<Self, DiffError> {
        let mut reader = DocReader {
            deletes: None,
            updates: None,
            inserts: None,
            binaries: None,
            sub_diffs: Vec::new().into_iter(),
        };
        // Only the first byte names the section; each may come once, in this order.
        let mut prev_order = 0;
        let mut fields = fields.into_iter();
        while let Some((name, value)) = fields.next() {
            let Some(&first) = name.as_bytes().first() else {
                let msg = "section with an empty field name";
                return Err(DiffError::new(codes::EMPTY_SECTION_NAME, path, msg));
            };
            let order = match first {
                b'd' => 1,
                b'u' => 2,
                b'i' => 3,
                b'b' => 4,
                b's' => 5,
                _ => 0,
            };
            if order <= prev_order {
                let msg = format!("unexpected section {name:?} in document diff");
                return Err(DiffError::new(codes::UNEXPECTED_SECTION, path, msg));
            }
            let RawBsonRef::Document(section) = value else {
                let msg = format!(
                    "section {name:?} must be an object, got {:?}",
                    value.element_type()
                );
                return Err(DiffError::new(codes::BAD_SECTION_TYPE, path, msg));
            };
            match first {
                b'd' => reader.deletes = Some(section),
                b'u' => reader.updates = Some(section),
                b'i' => reader.inserts = Some(section),
                b'b' => reader.binaries = Some(section),
                _ => {
                    let mut rest = vec![(name, value)];
                    rest.extend(fields);
                    reader.sub_diffs = rest.into_iter();
                    break;
                }
            }
            prev_order = order;
        }
        Ok(reader)
    }

    /// The next `s<field>` sub-diff, as `(field, diff)`.
    pub(crate) fn next_sub_diff(
        &mut self,
        path: &Path,
    ) -> Result<Option<(&'a str, SubDiff<'a>)>, DiffError> {
        let Some((name, value)) = self.sub_diffs.next() else {
            return Ok(None);
        };
        let Some(field) = name.strip_prefix('s') else {
            let msg = format!("only sub-diffs may follow a sub-diff, found {name:?}");
            return Err(DiffError::new(codes::FIELD_AFTER_SUB_DIFF, path, msg));
        };
        let field_path = path.child(field);
        let RawBsonRef::Document(diff) = value else {
            let msg = format!("sub-diff must be an object, got {:?}", value.element_type());
            return Err(DiffError::new(codes::SUB_DIFF_NOT_OBJECT, &field_path, msg));
        };
        Ok(Some((field, SubDiff::new(diff, &field_path)?)))
    }
}

/// One array level: header and `l` checked, entries read one by one.
pub(crate) struct ArrayReader<'a> {
    pub(crate) new_size: Option<usize>,
    entries: std::vec::IntoIter<Entry<'a>>,
    last_index: Option<usize>,
}

/// What an array diff does at one index.
pub(crate) enum ArrayMod<'a> {
    Update(RawBsonRef<'a>),
    Sub(SubDiff<'a>),
}

impl<'a> ArrayReader<'a> {
    fn from_entries(fields: Vec<Entry<'a>>, path: &Path) -> Result<Self, DiffError> {
        let mut fields = fields.into_iter().peekable();
        match fields.next() {
            Some(("a", RawBsonRef::Boolean(true))) => {}
            Some(("a", RawBsonRef::Boolean(false))) => {
                let msg = "array header 'a' must be true";
                return Err(DiffError::new(codes::ARRAY_HEADER_NOT_TRUE, path, msg));
            }
            Some(("a", other)) => {
                let msg = format!(
                    "array header must be a bool, got {:?}",
                    other.element_type()
                );
                return Err(DiffError::new(codes::ARRAY_HEADER_NOT_BOOL, path, msg));
            }
            _ => {
                let msg = "array diff must start with 'a'";
                return Err(DiffError::new(codes::MISSING_ARRAY_HEADER, path, msg));
            }
        }
        let mut new_size = None;
        if let Some(&("l", value)) = fields.peek() {
            fields.next();
            let RawBsonRef::Int32(size) = value else {
                let msg = format!("'l' must be an int32, got {:?}", value.element_type());
                return Err(DiffError::new(codes::BAD_SECTION_TYPE, path, msg));
            };
            let size = usize::try_from(size).map_err(|_| {
                DiffError::new(
                    codes::BAD_VALUE,
                    path,
                    format!("negative array size {size}"),
                )
            })?;
            check_array_len(size, path)?;
            new_size = Some(size);
        }
        Ok(ArrayReader {
            new_size,
            entries: fields.collect::<Vec<_>>().into_iter(),
            last_index: None,
        })
    }

    /// The next `u<idx>` / `s<idx>` entry.
    pub(crate) fn next(&mut self, path: &Path) -> Result<Option<(usize, ArrayMod<'a>)>, DiffError> {
        let Some((name, value)) = self.entries.next() else {
            return Ok(None);
        };
        // Byte-wise, as the server does: the first byte is the kind, the rest the index.
        let bytes = name.as_bytes();
        if bytes.len() < 2 {
            let msg = format!("array entry name {name:?} must be at least two characters");
            return Err(DiffError::new(codes::ARRAY_ENTRY_NAME_TOO_SHORT, path, msg));
        }
        let Some(idx) = parse_index(&bytes[1..]) else {
            let msg = format!("array entry {name:?}: expected an integer index");
            return Err(DiffError::new(codes::BAD_ARRAY_INDEX, path, msg));
        };
        let idx_path = path.index(idx);
        let modification = match bytes[0] {
            b'u' => ArrayMod::Update(value),
            b's' => {
                let RawBsonRef::Document(diff) = value else {
                    let msg = format!("expected a sub-diff object, got {:?}", value.element_type());
                    return Err(DiffError::new(
                        codes::ARRAY_SUB_DIFF_NOT_OBJECT,
                        &idx_path,
                        msg,
                    ));
                };
                ArrayMod::Sub(SubDiff::new(diff, &idx_path)?)
            }
            _ => {
                let msg =
                    format!("array entry {name:?} is neither 'u' (update) nor 's' (sub-diff)");
                return Err(DiffError::new(codes::BAD_ARRAY_ENTRY_KIND, path, msg));
            }
        };
        // The server's array walk never terminates (or trips an invariant) on these.
        if self.last_index.is_some_and(|last| idx <= last) {
            let msg = format!("array index {idx} does not ascend");
            return Err(DiffError::new(codes::BAD_VALUE, &idx_path, msg));
        }
        if self.new_size.is_some_and(|size| idx >= size) {
            let msg = format!("array index {idx} is not below the new size 'l'");
            return Err(DiffError::new(codes::BAD_VALUE, &idx_path, msg));
        }
        check_array_len(idx.saturating_add(1), path)?;
        self.last_index = Some(idx);
        Ok(Some((idx, modification)))
    }
}

fn check_array_len(len: usize, path: &Path) -> Result<(), DiffError> {
    if len > MAX_ARRAY_LEN {
        let msg = format!("an array of {len} elements exceeds the 16 MiB document limit");
        return Err(DiffError::new(codes::BSON_OBJECT_TOO_LARGE, path, msg));
    }
    Ok(())
}

/// `str::parseUnsignedBase10Integer`: ASCII digits only (leading zeros allowed), no overflow.
fn parse_index(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(usize::from(digit))
    })
}

/// What a diff level does to one field.
pub(crate) enum FieldMod<'a> {
    Delete,
    Update(RawBsonRef<'a>),
    Insert,
    Sub(SubDiff<'a>),
    Binary { offset: usize, data: &'a [u8] },
}

/// A document level read into lookup tables, as the server's `buildObjDiffTables`.
pub(crate) struct Tables<'a> {
    pub(crate) mods: HashMap<&'a str, FieldMod<'a>>,
    /// `u` then `i` fields in diff order: appended unless written in place.
    pub(crate) appends: Vec<Entry<'a>>,
    /// Names of the sub-diffs in diff order (the map forgets it).
    pub(crate) sub_diff_order: Vec<&'a str>,
}

impl<'a> Tables<'a> {
    /// Reads every section of `reader` (and every sub-diff header) and rejects duplicate names.
    pub(crate) fn build(mut reader: DocReader<'a>, path: &Path) -> Result<Self, DiffError> {
        let mut tables = Tables {
            mods: HashMap::new(),
            appends: Vec::new(),
            sub_diff_order: Vec::new(),
        };
        for (name, _) in section_entries(reader.deletes, path)? {
            tables.add(name, FieldMod::Delete, path)?;
        }
        for (name, value) in section_entries(reader.updates, path)? {
            tables.add(name, FieldMod::Update(value), path)?;
            tables.appends.push((name, value));
        }
        while let Some((name, sub)) = reader.next_sub_diff(path)? {
            tables.add(name, FieldMod::Sub(sub), path)?;
            tables.sub_diff_order.push(name);
        }
        for (name, value) in section_entries(reader.inserts, path)? {
            tables.add(name, FieldMod::Insert, path)?;
            tables.appends.push((name, value));
        }
        for (name, value) in section_entries(reader.binaries, path)? {
            let binary = parse_binary(value, &path.child(name))?;
            tables.add(name, binary, path)?;
        }
        Ok(tables)
    }

    fn add(
        &mut self,
        name: &'a str,
        modification: FieldMod<'a>,
        path: &Path,
    ) -> Result<(), DiffError> {
        if self.mods.insert(name, modification).is_some() {
            let msg = format!("duplicate field name in diff: {name:?}");
            return Err(DiffError::new(
                codes::DUPLICATE_FIELD,
                &path.child(name),
                msg,
            ));
        }
        Ok(())
    }
}

pub(crate) fn section_entries<'a>(
    section: Option<&'a RawDocument>,
    path: &Path,
) -> Result<Vec<Entry<'a>>, DiffError> {
    section.map_or(Ok(Vec::new()), |s| entries(s, path))
}

/// A `b` entry `{o: offset, d: BinData}`.
pub(crate) fn parse_binary<'a>(
    value: RawBsonRef<'a>,
    path: &Path,
) -> Result<FieldMod<'a>, DiffError> {
    let RawBsonRef::Document(entry) = value else {
        let msg = format!(
            "binary diff must be an object, got {:?}",
            value.element_type()
        );
        return Err(DiffError::new(codes::WRONG_TYPE_FOR_FIELD, path, msg));
    };
    let bad_bson = |e: bson::raw::Error| DiffError::new(codes::INVALID_BSON, path, e.to_string());
    let data = match entry.get("d").map_err(bad_bson)? {
        Some(RawBsonRef::Binary(bin)) => bin.bytes,
        other => {
            let msg = format!(
                "binary diff 'd' must be BinData, got {:?}",
                other.map(|v| v.element_type())
            );
            return Err(DiffError::new(codes::BINARY_DATA_NOT_BINDATA, path, msg));
        }
    };
    let offset = match entry.get("o").map_err(bad_bson)? {
        Some(RawBsonRef::Int32(o)) => i64::from(o),
        Some(RawBsonRef::Int64(o)) => o,
        other => {
            let msg = format!(
                "binary diff 'o' must be an integer, got {:?}",
                other.map(|v| v.element_type())
            );
            return Err(DiffError::new(codes::BINARY_BAD_OFFSET, path, msg));
        }
    };
    let Ok(offset) = usize::try_from(offset) else {
        let msg = format!("binary diff offset {offset} is negative");
        return Err(DiffError::new(codes::BINARY_BAD_OFFSET, path, msg));
    };
    Ok(FieldMod::Binary { offset, data })
}
