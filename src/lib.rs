//! tandem: replication for Redis-compatible servers and MongoDB.
//!
//! The module tree follows the pipeline; see docs/ARCHITECTURE.md.

pub mod cli;
pub mod cli_support;
pub mod core;
pub mod metrics;
pub mod mongo;
pub mod ops;
pub mod redis;
