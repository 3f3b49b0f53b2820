//! The shared core: positions, checkpoint stores, the conflict detector, lag in seconds.
//! Nothing here knows about Redis commands or MongoDB documents.

pub mod checkpoint;
pub mod conflict;
pub mod lag;
pub mod position;
pub mod short_id;
pub mod shutdown;

pub use position::ReplPosition;
pub use short_id::ShortId;
