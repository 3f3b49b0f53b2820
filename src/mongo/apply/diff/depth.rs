//! Nesting limits, checked without recursion before anything recurses.
//!
//! The `bson` crate converts, clones and encodes nested values recursively, so a value nested
//! deeply enough overflows the stack (an abort, not a panic). MongoDB stores at most 100 levels
//! and its BSON parser refuses more than 200; inputs past that are refused here first.

use bson::{Bson, Document, RawBsonRef, RawDocument};

use super::{DiffError, Path, codes};

/// The server's default `BSONDepth` limit; a stored document has at most 100 levels.
pub(crate) const MAX_BSON_DEPTH: usize = 200;

fn too_deep(what: &str) -> DiffError {
    let msg = format!("{what} is nested deeper than {MAX_BSON_DEPTH} levels");
    DiffError::new(codes::OVERFLOW, &Path::default(), msg)
}

/// Fails with [`codes::OVERFLOW`] if `doc` has more than [`MAX_BSON_DEPTH`] levels.
pub(crate) fn check_document(doc: &Document, what: &str) -> Result<(), DiffError> {
    let mut stack: Vec<(&Bson, usize)> = doc.values().map(|v| (v, 2)).collect();
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Bson>> = match value {
            Bson::Document(doc) => Box::new(doc.values()),
            Bson::Array(items) => Box::new(items.iter()),
            Bson::JavaScriptCodeWithScope(code) => Box::new(code.scope.values()),
            _ => continue,
        };
        if depth > MAX_BSON_DEPTH {
            return Err(too_deep(what));
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// [`check_document`] for raw BSON. Malformed bytes are not reported here but where they are
/// read, so that errors keep the server's order.
pub(crate) fn check_raw(doc: &RawDocument, what: &str) -> Result<(), DiffError> {
    let mut stack = vec![(doc.iter(), 1usize)];
    while let Some((iter, depth)) = stack.last_mut() {
        let depth = *depth;
        let child = match iter.next() {
            None | Some(Err(_)) => {
                stack.pop();
                continue;
            }
            Some(Ok((_, RawBsonRef::Document(child)))) => child,
            Some(Ok((_, RawBsonRef::Array(items)))) => {
                match RawDocument::from_bytes(items.as_bytes()) {
                    Ok(items) => items,
                    Err(_) => continue,
                }
            }
            Some(Ok((_, RawBsonRef::JavaScriptCodeWithScope(code)))) => code.scope,
            Some(Ok(_)) => continue,
        };
        if depth >= MAX_BSON_DEPTH {
            return Err(too_deep(what));
        }
        stack.push((child.iter(), depth + 1));
    }
    Ok(())
}
