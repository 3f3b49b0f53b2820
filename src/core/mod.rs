//! The shared core: positions, checkpoint stores and (later) the conflict detector.
//! Nothing here knows about Redis commands or MongoDB documents.

pub mod checkpoint;
pub mod position;

pub use position::ReplPosition;
