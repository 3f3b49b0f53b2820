//! Eager validation: every level of a diff, whether or not a pre-image would reach it.

use super::apply::{check_depth, to_bson};
use super::reader::{ArrayMod, ArrayReader, DocReader, FieldMod, SubDiff, Tables};
use super::{DiffError, Path};

pub(crate) fn validate_object(
    reader: DocReader<'_>,
    path: &Path,
    depth: usize,
) -> Result<(), DiffError> {
    check_depth(depth, path)?;
    let mut tables = Tables::build(reader, path)?;
    // Values are decoded too, so that `Ok` guarantees the applier will not fail on them.
    for (name, value) in &tables.appends {
        to_bson(*value, &path.child(*name))?;
    }
    for name in std::mem::take(&mut tables.sub_diff_order) {
        if let Some(FieldMod::Sub(sub)) = tables.mods.remove(name) {
            validate_sub(sub, &path.child(name), depth)?;
        }
    }
    Ok(())
}

fn validate_array(mut reader: ArrayReader<'_>, path: &Path, depth: usize) -> Result<(), DiffError> {
    check_depth(depth, path)?;
    while let Some((idx, modification)) = reader.next(path)? {
        match modification {
            ArrayMod::Update(value) => {
                to_bson(value, &path.index(idx))?;
            }
            ArrayMod::Sub(sub) => validate_sub(sub, &path.index(idx), depth)?,
        }
    }
    Ok(())
}

fn validate_sub(sub: SubDiff<'_>, path: &Path, depth: usize) -> Result<(), DiffError> {
    match sub {
        SubDiff::Doc(reader) => validate_object(reader, path, depth + 1),
        SubDiff::Array(reader) => validate_array(reader, path, depth + 1),
    }
}
