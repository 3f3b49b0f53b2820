//! The shared core: positions, checkpoint stores, the conflict detector, lag in seconds.
//! Nothing here knows about Redis commands or MongoDB documents.

pub mod checkpoint;
pub mod conflict;
pub mod lag;
pub mod position;
pub mod short_id;
pub mod shutdown;

pub use position::{MongoPosition, OpTime, ReplPosition};
pub use short_id::ShortId;

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
