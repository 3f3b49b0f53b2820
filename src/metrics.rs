//! Every metric name tandem exports, described once. docs/METRICS.md lists them.

use crate::redis::url::Endpoint;

pub const LINK_RECONNECTS: &str = "tandem_link_reconnects_total";
pub const LINK_BYTES: &str = "tandem_link_received_bytes_total";
pub const FULL_SYNCS: &str = "tandem_full_syncs_total";

/// Describe every metric once, at start-up.
pub fn describe() {
    metrics::describe_counter!(
        LINK_RECONNECTS,
        "Reconnects of a replica link to its source"
    );
    metrics::describe_counter!(
        LINK_BYTES,
        "Replication stream bytes received from a source"
    );
    metrics::describe_counter!(
        FULL_SYNCS,
        "Full resyncs (RDB transfers) started by a source"
    );
}

fn source_label(ep: &Endpoint) -> String {
    ep.addr()
}

pub fn link_reconnect(ep: &Endpoint) {
    metrics::counter!(LINK_RECONNECTS, "source" => source_label(ep)).increment(1);
}

pub fn link_bytes(ep: &Endpoint, n: u64) {
    metrics::counter!(LINK_BYTES, "source" => source_label(ep)).increment(n);
}

pub fn full_sync_started(ep: &Endpoint) {
    metrics::counter!(FULL_SYNCS, "source" => source_label(ep)).increment(1);
}
