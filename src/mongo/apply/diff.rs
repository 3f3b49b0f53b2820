//! placeholder until the exact applier lands
use bson::Document;
#[derive(Debug)]
pub struct DiffError { pub code: u32, pub message: String }
impl std::fmt::Display for DiffError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{} (code {})", self.message, self.code) } }
pub fn apply_diff(_pre: &Document, _o: &Document) -> Result<Document, DiffError> { Err(DiffError{code:0, message:"unimplemented".into()}) }
