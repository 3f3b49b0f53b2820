//! The command table: which replicated commands tandem applies, their key positions and
//! flags. One file per command family.
