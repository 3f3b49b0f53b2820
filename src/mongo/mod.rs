//! Everything MongoDB-specific, in pipeline order: source readers (change streams, the
//! oplog, recorded oplog files) → the full copy → the applier (exact `$v:2` diffs,
//! transactions whole, DDL as barriers) → the target, each batch in one transaction
//! with its checkpoint; or into Kafka as Canal JSON (`kafka/`), each batch in one Kafka
//! transaction with its position. Positions, lag and status come from `crate::core` and
//! `crate::ops`, shared with the Redis side.

pub mod apply;
pub mod checkpoint;
pub mod checkpoint_file;
pub mod copy;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod kafka;
pub mod ns;
pub mod partition;
pub mod replay;
pub mod shards;
pub mod source;
pub mod sync;
pub mod twoway;
pub mod verify;
