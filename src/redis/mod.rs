//! Everything Redis-specific: the replica link (source), the RDB parser, the command
//! table, and the sinks (targets).

pub mod cluster;
pub mod command;
pub mod compat;
pub mod conn;
pub mod filter;
pub mod precheck;
pub mod rdb;
pub mod replica;
pub mod scan;
pub mod sink;
pub mod slot;
pub mod sync;
pub mod tls;
pub mod url;
pub mod verify;
