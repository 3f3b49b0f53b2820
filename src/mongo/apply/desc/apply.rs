//! Replaying an `updateDescription` with `$set` / `$unset` semantics.
//!
//! Paths are walked iteratively: a description's path can have as many components as its string
//! has dots, so recursion could overflow the stack.

use bson::{Bson, Document};

use super::{DiffError, MAX_ARRAY_LEN, Path, check_document_depth, codes};

/// One path component. `Auto` comes from splitting on `.`: an index if the container turns out
/// to be an array, a field name otherwise — the same reading `$set` gives a dotted path.
#[derive(Debug)]
enum Component {
    Field(String),
    Index(usize),
    Auto(String),
}

enum Slot<'a> {
    Doc(&'a mut Document),
    Array(&'a mut Vec<Bson>),
}

pub(super) fn apply_description(doc: &mut Document, desc: &Document) -> Result<(), DiffError> {
    // Values are cloned into `doc`, recursively: refuse what would overflow the stack.
    check_document_depth(desc, "the update description")?;
    let root = Path::default();
    let disambiguated = optional_doc(desc, "disambiguatedPaths")?;
    for entry in optional_array(desc, "truncatedArrays")? {
        let Bson::Document(entry) = entry else {
            return Err(type_mismatch("truncatedArrays entry", entry));
        };
        let field = match entry.get("field") {
            Some(Bson::String(field)) => field,
            other => return Err(bad_member("truncatedArrays.field", other)),
        };
        let size = match entry.get("newSize") {
            Some(Bson::Int32(n)) => usize::try_from(*n).ok(),
            Some(Bson::Int64(n)) => usize::try_from(*n).ok(),
            _ => None,
        };
        let Some(size) = size.filter(|n| *n <= MAX_ARRAY_LEN) else {
            return Err(bad_member("truncatedArrays.newSize", entry.get("newSize")));
        };
        let components = components(field, disambiguated)?;
        truncate(doc, &components, size, &root.child(field.as_str()))?;
    }
    for (path, value) in optional_doc(desc, "updatedFields")?.unwrap_or(&Document::new()) {
        let components = components(path, disambiguated)?;
        set(doc, &components, value.clone(), &root.child(path.as_str()))?;
    }
    for path in optional_array(desc, "removedFields")? {
        let Bson::String(path) = path else {
            return Err(type_mismatch("removedFields entry", path));
        };
        unset(doc, &components(path, disambiguated)?);
    }
    Ok(())
}

fn optional_doc<'a>(desc: &'a Document, key: &str) -> Result<Option<&'a Document>, DiffError> {
    match desc.get(key) {
        None => Ok(None),
        Some(Bson::Document(doc)) => Ok(Some(doc)),
        Some(other) => Err(type_mismatch(key, other)),
    }
}

fn optional_array<'a>(desc: &'a Document, key: &str) -> Result<&'a [Bson], DiffError> {
    match desc.get(key) {
        None => Ok(&[]),
        Some(Bson::Array(items)) => Ok(items),
        Some(other) => Err(type_mismatch(key, other)),
    }
}

fn type_mismatch(what: &str, value: &Bson) -> DiffError {
    let msg = format!("{what} has the wrong type: {:?}", value.element_type());
    DiffError::new(codes::TYPE_MISMATCH, &Path::default(), msg)
}

fn bad_member(what: &str, value: Option<&Bson>) -> DiffError {
    let msg = format!("{what} is missing or invalid: {value:?}");
    DiffError::new(codes::FAILED_TO_PARSE, &Path::default(), msg)
}

/// The components of `path`: from `disambiguatedPaths` when listed there, else split on `.`.
fn components(path: &str, disambiguated: Option<&Document>) -> Result<Vec<Component>, DiffError> {
    let Some(listed) = disambiguated.and_then(|d| d.get(path)) else {
        return Ok(path
            .split('.')
            .map(|p| Component::Auto(p.to_owned()))
            .collect());
    };
    let err =
        |msg: String| DiffError::new(codes::FAILED_TO_PARSE, &Path::default().child(path), msg);
    let Bson::Array(parts) = listed else {
        return Err(err(format!(
            "disambiguatedPaths entry is not an array: {listed}"
        )));
    };
    if parts.is_empty() {
        return Err(err("disambiguatedPaths entry is empty".to_owned()));
    }
    parts
        .iter()
        .map(|part| {
            match part {
                Bson::String(name) => Some(Component::Field(name.clone())),
                Bson::Int32(i) => usize::try_from(*i).map(Component::Index).ok(),
                Bson::Int64(i) => usize::try_from(*i).map(Component::Index).ok(),
                _ => None,
            }
            .ok_or_else(|| err(format!("bad disambiguatedPaths component {part}")))
        })
        .collect()
}

/// Sets `value` at `components`, creating what is missing on the way.
fn set(
    doc: &mut Document,
    components: &[Component],
    value: Bson,
    path: &Path,
) -> Result<(), DiffError> {
    let Some((last, parents)) = components.split_last() else {
        return Ok(());
    };
    let mut slot = Slot::Doc(doc);
    for component in parents {
        let child = child_or_create(slot, component, path)?;
        slot = match child {
            Bson::Document(doc) => Slot::Doc(doc),
            Bson::Array(items) => Slot::Array(items),
            other => {
                let msg = format!("cannot create a field inside {:?}", other.element_type());
                return Err(DiffError::new(codes::PATH_NOT_VIABLE, path, msg));
            }
        };
    }
    *child_or_create(slot, last, path)? = value;
    Ok(())
}

/// The child named by `component`, created if missing: `{}` in an object (appended), and in an
/// array null padding up to the index, as `$set` does.
fn child_or_create<'a>(
    slot: Slot<'a>,
    component: &Component,
    path: &Path,
) -> Result<&'a mut Bson, DiffError> {
    match (slot, component) {
        (Slot::Doc(doc), Component::Field(name) | Component::Auto(name)) => Ok(doc
            .entry(name.clone())
            .or_insert_with(|| Bson::Document(Document::new()))),
        (Slot::Array(items), component) => {
            let Some(idx) = array_index(component) else {
                let msg = format!("cannot use {component:?} as an array index");
                return Err(DiffError::new(codes::PATH_NOT_VIABLE, path, msg));
            };
            if idx >= MAX_ARRAY_LEN {
                let msg = format!("array index {idx} exceeds the document size limit");
                return Err(DiffError::new(codes::BSON_OBJECT_TOO_LARGE, path, msg));
            }
            if items.len() <= idx {
                items.resize(idx, Bson::Null);
                items.push(Bson::Document(Document::new()));
            }
            items
                .get_mut(idx)
                .ok_or_else(|| DiffError::new(codes::PATH_NOT_VIABLE, path, "index out of range"))
        }
        (Slot::Doc(_), Component::Index(idx)) => {
            let msg = format!("array index {idx} used on an object");
            Err(DiffError::new(codes::PATH_NOT_VIABLE, path, msg))
        }
    }
}

fn array_index(component: &Component) -> Option<usize> {
    match component {
        Component::Index(idx) => Some(*idx),
        Component::Auto(name) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => {
            name.parse().ok()
        }
        _ => None,
    }
}

/// The existing value at `components`, if the whole path exists.
fn existing<'a>(doc: &'a mut Document, components: &[Component]) -> Option<&'a mut Bson> {
    let (first, rest) = components.split_first()?;
    let mut value = match first {
        Component::Field(name) | Component::Auto(name) => doc.get_mut(name)?,
        Component::Index(_) => return None,
    };
    for component in rest {
        value = match (value, component) {
            (Bson::Document(doc), Component::Field(name) | Component::Auto(name)) => {
                doc.get_mut(name)?
            }
            (Bson::Array(items), component) => items.get_mut(array_index(component)?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// `$unset`: removes an object field, writes `null` over an array element, ignores the rest.
fn unset(doc: &mut Document, components: &[Component]) {
    let Some((last, parents)) = components.split_last() else {
        return;
    };
    let parent = if parents.is_empty() {
        Some(Slot::Doc(doc))
    } else {
        match existing(doc, parents) {
            Some(Bson::Document(doc)) => Some(Slot::Doc(doc)),
            Some(Bson::Array(items)) => Some(Slot::Array(items)),
            _ => None,
        }
    };
    match (parent, last) {
        (Some(Slot::Doc(doc)), Component::Field(name) | Component::Auto(name)) => {
            doc.remove(name);
        }
        (Some(Slot::Array(items)), component) => {
            if let Some(item) = array_index(component).and_then(|idx| items.get_mut(idx)) {
                *item = Bson::Null;
            }
        }
        _ => {}
    }
}

/// Resizes the array at `components` to `size`, null-padding like a diff's `l`. A missing
/// array is left alone; anything else there means the document has diverged.
fn truncate(
    doc: &mut Document,
    components: &[Component],
    size: usize,
    path: &Path,
) -> Result<(), DiffError> {
    match existing(doc, components) {
        None => Ok(()),
        Some(Bson::Array(items)) => {
            items.resize(size, Bson::Null);
            Ok(())
        }
        Some(other) => {
            let msg = format!(
                "truncatedArrays names a {:?}, not an array",
                other.element_type()
            );
            Err(DiffError::new(codes::PATH_NOT_VIABLE, path, msg))
        }
    }
}
