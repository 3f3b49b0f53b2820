//! placeholder until the exact applier lands
use bson::Document;
pub fn apply_update_description(_d: &mut Document, _u: &Document) -> Result<(), super::diff::DiffError> { Err(super::diff::DiffError{code:0, message:"unimplemented".into()}) }
