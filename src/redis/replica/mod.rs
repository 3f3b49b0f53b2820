//! The replica link: tandem as one of the source's replicas (PSYNC).

pub mod spool;
