//! The shared core: positions, checkpoint stores and (later) the conflict detector.
//! Nothing here knows about Redis commands or MongoDB documents.

pub mod checkpoint;
pub mod conflict;
pub mod position;
pub mod shutdown;

pub use position::ReplPosition;
