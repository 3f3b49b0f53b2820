//! Redis Cluster support shared by the source side (one replica link per master) and the
//! target side (the slot-routing sink): detection and topology discovery.
//!
//! Cluster mode is detected (`INFO cluster` → `cluster_enabled:1`), never configured.

pub mod topology;

pub use topology::{ClusterError, NodeAddr, Shard, SlotMap, Topology, is_cluster};
pub mod ckpt;
pub mod nodes;
pub mod source;
pub mod tags;
