//! Building the post-image, following the server's `DiffApplier` step by step.

use std::collections::HashSet;

use bson::{Binary, Bson, Document, RawBsonRef};

use super::reader::{
    ArrayMod, ArrayReader, DocReader, FieldMod, MAX_ARRAY_LEN, MAX_DEPTH, SubDiff, Tables,
};
use super::{DiffError, Path, codes};

/// Applies one document level: the pre-image's fields in order, then the appended ones.
pub(crate) fn apply_object(
    pre: &Document,
    reader: DocReader<'_>,
    path: &Path,
    depth: usize,
) -> Result<Document, DiffError> {
    check_depth(depth, path)?;
    let Tables {
        mut mods, appends, ..
    } = Tables::build(reader, path)?;
    let mut out = Document::new();
    // `u` fields that existed were written in place; every other `u`/`i` field goes at the end.
    let mut written_in_place = HashSet::new();
    for (name, value) in pre {
        let Some(modification) = mods.remove(name.as_str()) else {
            out.insert(name.clone(), value.clone());
            continue;
        };
        match modification {
            // An `i` of an existing field drops it here; it is appended below.
            FieldMod::Delete | FieldMod::Insert => {}
            FieldMod::Update(new) => {
                out.insert(name.clone(), to_bson(new, &path.child(name))?);
                written_in_place.insert(name.as_str());
            }
            FieldMod::Sub(sub) => {
                let new = apply_sub(Some(value), sub, &path.child(name), depth)?;
                out.insert(name.clone(), new);
            }
            FieldMod::Binary { offset, data } => {
                out.insert(name.clone(), apply_binary(value, offset, data));
            }
        }
    }
    for (name, value) in appends {
        if !written_in_place.contains(name) {
            out.insert(name, to_bson(value, &path.child(name))?);
        }
    }
    Ok(out)
}

/// A sub-diff meets a value of another kind only when an old entry is re-applied and a later one
/// overwrites the field, so the server writes `null` as a placeholder that keeps the position.
fn apply_sub(
    pre: Option<&Bson>,
    sub: SubDiff<'_>,
    path: &Path,
    depth: usize,
) -> Result<Bson, DiffError> {
    Ok(match (pre, sub) {
        (Some(Bson::Document(doc)), SubDiff::Doc(reader)) => {
            Bson::Document(apply_object(doc, reader, path, depth + 1)?)
        }
        (Some(Bson::Array(arr)), SubDiff::Array(reader)) => {
            Bson::Array(apply_array(arr, reader, path, depth + 1)?)
        }
        _ => Bson::Null,
    })
}

/// Applies an array diff: entries are consumed in ascending index order while the pre-image is
/// walked, then the array is extended (null-padded) to `l` or to the last entry.
fn apply_array(
    pre: &[Bson],
    mut reader: ArrayReader<'_>,
    path: &Path,
    depth: usize,
) -> Result<Vec<Bson>, DiffError> {
    check_depth(depth, path)?;
    let new_size = reader.new_size;
    let kept = new_size.map_or(pre.len(), |size| size.min(pre.len()));
    let mut out = Vec::with_capacity(new_size.unwrap_or(pre.len()));
    let mut next = reader.next(path)?;
    for (idx, value) in pre.iter().take(kept).enumerate() {
        match take_at(&mut next, idx) {
            Some(modification) => {
                out.push(apply_index(
                    Some(value),
                    modification,
                    &path.index(idx),
                    depth,
                )?);
                next = reader.next(path)?;
            }
            None => out.push(value.clone()),
        }
    }
    let mut idx = kept;
    while new_size.is_some_and(|size| idx < size) || next.is_some() {
        if idx > MAX_ARRAY_LEN {
            // Unreachable: the reader bounds every index; this only guards the loop.
            let msg = "array grows past the document size limit";
            return Err(DiffError::new(codes::BSON_OBJECT_TOO_LARGE, path, msg));
        }
        match take_at(&mut next, idx) {
            Some(modification) => {
                out.push(apply_index(None, modification, &path.index(idx), depth)?);
                next = reader.next(path)?;
            }
            None => out.push(Bson::Null),
        }
        idx += 1;
    }
    Ok(out)
}

fn take_at<'a>(next: &mut Option<(usize, ArrayMod<'a>)>, idx: usize) -> Option<ArrayMod<'a>> {
    if next.as_ref().is_some_and(|(at, _)| *at == idx) {
        next.take().map(|(_, modification)| modification)
    } else {
        None
    }
}

fn apply_index(
    pre: Option<&Bson>,
    modification: ArrayMod<'_>,
    path: &Path,
    depth: usize,
) -> Result<Bson, DiffError> {
    match modification {
        ArrayMod::Update(value) => to_bson(value, path),
        ArrayMod::Sub(sub) => apply_sub(pre, sub, path, depth),
    }
}

/// Keeps the first `offset` bytes and appends `data`, with the pre-image's subtype. An offset
/// past the end means the value is already newer than this diff (re-application): keep it.
fn apply_binary(pre: &Bson, offset: usize, data: &[u8]) -> Bson {
    match pre {
        Bson::Binary(bin) => match bin.bytes.get(..offset) {
            Some(head) => Bson::Binary(Binary {
                subtype: bin.subtype,
                bytes: [head, data].concat(),
            }),
            None => pre.clone(),
        },
        _ => Bson::Null,
    }
}

pub(crate) fn to_bson(value: RawBsonRef<'_>, path: &Path) -> Result<Bson, DiffError> {
    Bson::try_from(value).map_err(|e| DiffError::new(codes::INVALID_BSON, path, e.to_string()))
}

pub(crate) fn check_depth(depth: usize, path: &Path) -> Result<(), DiffError> {
    if depth > MAX_DEPTH {
        let msg = format!("diff nested deeper than {MAX_DEPTH} levels");
        return Err(DiffError::new(codes::OVERFLOW, path, msg));
    }
    Ok(())
}
