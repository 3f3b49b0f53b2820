//! The change-stream form of an update: a change event's `updateDescription`.
//!
//! ```text
//! { updatedFields: {<dotted path>: value}, removedFields: [path], truncatedArrays: [{field, newSize}],
//!   disambiguatedPaths?: {<path>: [component]} }
//! ```
//!
//! [`diff_to_description`] produces it from a `$v: 2` diff the way mongod's change stream does
//! (`change_stream_document_diff_parser.cpp`); [`apply_update_description`] replays it on a
//! document the way the equivalent `$set`/`$unset` update would. The description loses two
//! things the diff has: the move of an `i` field that already existed to the end of its object
//! (it becomes a plain in-place set), and the re-application behaviour of sub-diffs (a type
//! mismatch writes `null` in a diff; in a description the path is set or fails).

use bson::{Bson, Document, RawBsonRef, RawDocument};

use super::diff::{
    ArrayMod, ArrayReader, DiffError, DocReader, MAX_ARRAY_LEN, Path, SubDiff,
    check_document_depth, codes, inner_diff, section_entries, to_raw, validate_diff_raw,
};

mod apply;

/// Replays a change event's `updateDescription` on `doc`, as mongod's `$set`/`$unset` would.
///
/// Order: `truncatedArrays` (resize to exactly `newSize`, null-padding like a diff's `l`), then
/// `updatedFields` in order, then `removedFields`. A path is split on `.` unless
/// `disambiguatedPaths` lists its components (strings are field names, integers array indexes).
/// Setting creates missing objects on the way, appends new fields to the end of their object,
/// and null-pads an array up to an index past its end. Removing a missing path does nothing; on
/// an array element it writes `null`, as `$unset` does.
///
/// Fails with [`codes::PATH_NOT_VIABLE`] when a set path runs through a scalar or names a field
/// inside an array (`doc` may be partly updated then), and with [`codes::TYPE_MISMATCH`] /
/// [`codes::FAILED_TO_PARSE`] for a malformed description.
pub fn apply_update_description(doc: &mut Document, desc: &Document) -> Result<(), DiffError> {
    apply::apply_description(doc, desc)
}

/// Converts the `o` field of a `$v: 2` update oplog entry to the `updateDescription` that
/// mongod's change stream emits for it.
///
/// Per diff level: `u`, `i` and `b` entries become `updatedFields` (in that order; a `b` entry's
/// value is its raw `{o, d}` object, exactly as the server emits it, so it does not replay),
/// `d` entries `removedFields`, then the sub-diffs are described depth first. In an array diff
/// `l` becomes a `truncatedArrays` entry and `u<n>` the path `<array>.<n>`. A path gets a
/// `disambiguatedPaths` entry once it contains a field name with a `.` or a numeric field name
/// below the top level (`^(0|[1-9][0-9]*)$`), the server's rule; the key is only present when
/// some path needs it. The diff is validated first ([`validate_diff`](super::diff::validate_diff)).
pub fn diff_to_description(oplog_o: &Document) -> Result<Document, DiffError> {
    diff_to_description_raw(&to_raw(oplog_o, "the oplog entry")?)
}

/// [`diff_to_description`] on raw BSON.
pub fn diff_to_description_raw(oplog_o: &RawDocument) -> Result<Document, DiffError> {
    validate_diff_raw(oplog_o)?;
    let root = Path::default();
    let mut builder = Builder::default();
    builder.describe_object(DocReader::new(inner_diff(oplog_o)?, &root)?, &root)?;
    Ok(builder.finish())
}

#[derive(Default)]
struct Builder {
    updated: Document,
    removed: Vec<Bson>,
    truncated: Vec<Bson>,
    disambiguated: Document,
    /// Current path: components and whether the path is ambiguous up to each of them.
    parts: Vec<(Bson, bool)>,
    /// Every path emitted, to refuse a description that would need one key twice.
    emitted: std::collections::HashSet<String>,
}

impl Builder {
    fn describe_object(&mut self, mut reader: DocReader<'_>, path: &Path) -> Result<(), DiffError> {
        for section in [reader.updates, reader.inserts, reader.binaries] {
            for (name, value) in entries(section, path)? {
                self.push_field(name);
                let result = self.add_updated(value, path);
                self.parts.pop();
                result?;
            }
        }
        for (name, _) in entries(reader.deletes, path)? {
            self.push_field(name);
            let result = self
                .emit(path)
                .map(|key| self.removed.push(Bson::String(key)));
            self.parts.pop();
            result?;
        }
        while let Some((name, sub)) = reader.next_sub_diff(path)? {
            self.push_field(name);
            let result = self.describe_sub(sub, &path.child(name));
            self.parts.pop();
            result?;
        }
        Ok(())
    }

    fn describe_array(
        &mut self,
        mut reader: ArrayReader<'_>,
        path: &Path,
    ) -> Result<(), DiffError> {
        if let Some(size) = reader.new_size {
            let field = self.emit(path)?;
            let size = i32::try_from(size).unwrap_or(i32::MAX);
            let entry = bson::doc! { "field": field, "newSize": size };
            self.truncated.push(Bson::Document(entry));
        }
        while let Some((idx, modification)) = reader.next(path)? {
            // An index never makes a path ambiguous by itself; it only inherits ambiguity.
            let inherited = self.parts.last().is_some_and(|(_, ambiguous)| *ambiguous);
            let index = i32::try_from(idx).unwrap_or(i32::MAX);
            self.parts.push((Bson::Int32(index), inherited));
            let result = match modification {
                ArrayMod::Update(value) => self.add_updated(value, path),
                ArrayMod::Sub(sub) => self.describe_sub(sub, &path.index(idx)),
            };
            self.parts.pop();
            result?;
        }
        Ok(())
    }

    fn describe_sub(&mut self, sub: SubDiff<'_>, path: &Path) -> Result<(), DiffError> {
        match sub {
            SubDiff::Doc(reader) => self.describe_object(reader, path),
            SubDiff::Array(reader) => self.describe_array(reader, path),
        }
    }

    /// The server's rule: a dotted name, or a numeric name that is not the first component,
    /// makes this and every longer path ambiguous.
    fn push_field(&mut self, name: &str) {
        let inherited = self.parts.last().is_some_and(|(_, ambiguous)| *ambiguous);
        let numeric = !self.parts.is_empty() && is_strict_numeric(name);
        let ambiguous = inherited || numeric || name.contains('.');
        self.parts.push((Bson::String(name.to_owned()), ambiguous));
    }

    fn add_updated(&mut self, value: RawBsonRef<'_>, path: &Path) -> Result<(), DiffError> {
        let key = self.emit(path)?;
        let value = Bson::try_from(value)
            .map_err(|e| DiffError::new(codes::INVALID_BSON, path, e.to_string()))?;
        self.updated.insert(key, value);
        Ok(())
    }

    /// Records the current path (and its components if ambiguous) and returns it dotted.
    fn emit(&mut self, path: &Path) -> Result<String, DiffError> {
        let dotted = self
            .parts
            .iter()
            .map(|(part, _)| match part {
                Bson::String(name) => name.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".");
        if !self.emitted.insert(dotted.clone()) {
            // Only possible with dotted field names; mongod would emit the key twice.
            let msg = format!("two changes map to the same path {dotted:?}");
            return Err(DiffError::new(codes::BAD_VALUE, path, msg));
        }
        if self.parts.last().is_some_and(|(_, ambiguous)| *ambiguous) {
            let components = self.parts.iter().map(|(part, _)| part.clone()).collect();
            self.disambiguated
                .insert(dotted.clone(), Bson::Array(components));
        }
        Ok(dotted)
    }

    fn finish(self) -> Document {
        let mut desc = bson::doc! {
            "updatedFields": self.updated,
            "removedFields": self.removed,
            "truncatedArrays": self.truncated,
        };
        if !self.disambiguated.is_empty() {
            desc.insert("disambiguatedPaths", self.disambiguated);
        }
        desc
    }
}

fn entries<'a>(
    section: Option<&'a RawDocument>,
    path: &Path,
) -> Result<Vec<(&'a str, RawBsonRef<'a>)>, DiffError> {
    section_entries(section, path)
}

/// `FieldRef::isNumericPathComponentStrict`: `0` or digits without a leading zero.
fn is_strict_numeric(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && !(name.len() > 1 && name.starts_with('0'))
}
