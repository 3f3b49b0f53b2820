//! Every metric name tandem exports, described once. docs/METRICS.md lists them.

use crate::redis::url::Endpoint;

pub const LINK_RECONNECTS: &str = "tandem_link_reconnects_total";
pub const LINK_BYTES: &str = "tandem_link_received_bytes_total";
pub const FULL_SYNCS: &str = "tandem_full_syncs_total";
pub const RECEIVED_OFFSET: &str = "tandem_link_received_offset";
pub const APPLIED_OFFSET: &str = "tandem_applied_offset";
pub const LAG_SECONDS: &str = "tandem_lag_seconds";

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
    metrics::describe_counter!(FULL_SYNC_KEYS, "Keys written to the target by full syncs");
    metrics::describe_gauge!(
        RECEIVED_OFFSET,
        "Replication offset of the last byte received from a source"
    );
    metrics::describe_gauge!(
        APPLIED_OFFSET,
        "Source offset up to which the target holds everything (lag in bytes: received minus applied)"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        "Age of the oldest write received from a source and not yet on the target (0 when caught up)"
    );
    describe_sink();
    describe_policy();
    describe_twoway();
    describe_mongo();
    describe_kafka();
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

pub fn received_offset(ep: &Endpoint, offset: u64) {
    metrics::gauge!(RECEIVED_OFFSET, "source" => source_label(ep)).set(offset as f64);
}

pub fn applied_offset(ep: &Endpoint, offset: u64) {
    metrics::gauge!(APPLIED_OFFSET, "source" => source_label(ep)).set(offset as f64);
}

pub fn lag_seconds(ep: &Endpoint, lag: std::time::Duration) {
    lag_seconds_of(&source_label(ep), lag);
}

/// [`lag_seconds`] for a source named by its host list (MongoDB links).
pub fn lag_seconds_of(source: &str, lag: std::time::Duration) {
    metrics::gauge!(LAG_SECONDS, "source" => source.to_string()).set(lag.as_secs_f64());
}

pub fn full_sync_started(ep: &Endpoint) {
    metrics::counter!(FULL_SYNCS, "source" => source_label(ep)).increment(1);
}

pub const SINK_BATCHES: &str = "tandem_sink_batches_total";
pub const SINK_COMMANDS: &str = "tandem_sink_commands_total";
pub const SINK_COMMAND_ERRORS: &str = "tandem_sink_command_errors_total";
pub const SINK_RETRIES: &str = "tandem_sink_retries_total";

pub fn describe_sink() {
    metrics::describe_counter!(SINK_BATCHES, "Transactions (batches) the target confirmed");
    metrics::describe_counter!(SINK_COMMANDS, "Replicated commands the target confirmed");
    metrics::describe_counter!(
        SINK_COMMAND_ERRORS,
        "Replicated commands the target rejected inside an applied batch, by command"
    );
    metrics::describe_counter!(
        SINK_RETRIES,
        "Target write attempts retried after a failure"
    );
    metrics::describe_counter!(
        MIGRATION_BARRIER_WAITS,
        "Cluster source: RESTORE-ASKINGs held until the old master's writes of the key landed"
    );
    metrics::describe_counter!(
        MIGRATION_BARRIER_GAVE_UP,
        "Cluster source: barrier waits that gave up with no DEL from the old master"
    );
    metrics::describe_counter!(
        TARGET_LOST_WRITES,
        "Cluster target failovers that lost confirmed writes (tandem resumed from before them)"
    );
    metrics::describe_counter!(
        RESYNC_CLEARED_KEYS,
        "Target keys of the link's scope removed before the RDB of a full resync"
    );
    metrics::describe_counter!(
        MIGRATION_CHECK_RETRIES,
        "Cluster source: checks of where a deleted key lives asked again (source in flux)"
    );
}

pub const MIGRATION_BARRIER_WAITS: &str = "tandem_migration_barrier_waits_total";
pub const MIGRATION_BARRIER_GAVE_UP: &str = "tandem_migration_barrier_gave_up_total";
pub const MIGRATION_CHECK_RETRIES: &str = "tandem_migration_check_retries_total";
pub const RESYNC_CLEARED_KEYS: &str = "tandem_resync_cleared_keys_total";
pub const TARGET_LOST_WRITES: &str = "tandem_target_lost_writes_total";

pub fn migration_barrier_wait() {
    metrics::counter!(MIGRATION_BARRIER_WAITS).increment(1);
}

pub fn target_lost_writes() {
    metrics::counter!(TARGET_LOST_WRITES).increment(1);
}

pub fn resync_cleared_keys(n: u64) {
    metrics::counter!(RESYNC_CLEARED_KEYS).increment(n);
}

pub fn migration_check_retry() {
    metrics::counter!(MIGRATION_CHECK_RETRIES).increment(1);
}

pub fn migration_barrier_gave_up() {
    metrics::counter!(MIGRATION_BARRIER_GAVE_UP).increment(1);
}

pub fn sink_batch(commands: usize) {
    metrics::counter!(SINK_BATCHES).increment(1);
    metrics::counter!(SINK_COMMANDS).increment(commands as u64);
}

pub fn sink_command_error(command: &str) {
    metrics::counter!(SINK_COMMAND_ERRORS, "command" => command.to_string()).increment(1);
}

pub fn sink_retry() {
    metrics::counter!(SINK_RETRIES).increment(1);
}

pub const ECHOES_DROPPED: &str = "tandem_echo_units_dropped_total";
pub const UNSUPPORTED_SKIPPED: &str = "tandem_unsupported_skipped_total";

pub fn describe_policy() {
    metrics::describe_counter!(
        ECHOES_DROPPED,
        "Source units dropped because they were tandem's own writes (two-way), by how they \
         were read: framed (only the checkpoint read) or parsed (every command read)"
    );
    metrics::describe_counter!(
        UNSUPPORTED_SKIPPED,
        "Unsupported commands skipped under --on-unsupported skip, by command"
    );
}

/// `framed`: the reader recognised the whole transaction and built only its last write
/// (`replica/echo.rs`); otherwise every command of the unit was parsed.
pub fn echo_dropped(framed: bool) {
    let read = if framed { "framed" } else { "parsed" };
    metrics::counter!(ECHOES_DROPPED, "read" => read).increment(1);
}

pub fn unsupported_skipped(command: &str) {
    metrics::counter!(UNSUPPORTED_SKIPPED, "command" => command.to_string()).increment(1);
}

pub const FULL_SYNC_KEYS: &str = "tandem_full_sync_keys_total";

pub fn full_sync_keys(n: u64) {
    metrics::counter!(FULL_SYNC_KEYS).increment(n);
}

/// Install the Prometheus recorder (process-wide, as `metrics` requires) and describe
/// every metric; the handle renders the text served at `/metrics` (`ops::http`).
pub fn install_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

pub const CONFLICTS: &str = "tandem_conflicts_total";
pub const CONFLICT_WRITES: &str = "tandem_conflict_detector_writes";
pub const CONFLICT_WRITES_IN_MEMORY: &str = "tandem_conflict_detector_writes_in_memory";
pub const CONFLICTS_RESOLVED: &str = "tandem_conflicts_resolved_total";
pub const CONFLICTS_UNCHECKED: &str = "tandem_conflicts_unchecked";

pub fn describe_twoway() {
    metrics::describe_gauge!(
        CONFLICT_WRITES,
        "Writes the two-way conflict detector remembers, in memory and on disk"
    );
    metrics::describe_gauge!(
        CONFLICT_WRITES_IN_MEMORY,
        "Of those, the writes held in memory (the rest wait on disk)"
    );
    metrics::describe_counter!(
        CONFLICTS,
        "Keys written on both sides concurrently, by policy"
    );
    metrics::describe_counter!(
        CONFLICTS_RESOLVED,
        "Conflicts resolved by copying the winner's value to the other side"
    );
    metrics::describe_gauge!(
        CONFLICTS_UNCHECKED,
        "Copied conflicts whose two sides are not yet compared"
    );
}

pub fn conflict(policy: crate::core::conflict::Policy) {
    let p = format!("{policy:?}").to_lowercase();
    metrics::counter!(CONFLICTS, "policy" => p).increment(1);
}

pub fn conflict_writes(all: usize, in_memory: usize) {
    metrics::gauge!(CONFLICT_WRITES).set(all as f64);
    metrics::gauge!(CONFLICT_WRITES_IN_MEMORY).set(in_memory as f64);
}

pub fn conflict_resolved() {
    metrics::counter!(CONFLICTS_RESOLVED).increment(1);
}

pub fn conflicts_unchecked(n: usize) {
    metrics::gauge!(CONFLICTS_UNCHECKED).set(n as f64);
}

pub const MONGO_APPLIED: &str = "tandem_mongo_applied_total";
pub const MONGO_CONFLICTS: &str = "tandem_mongo_conflicts_total";
pub const MONGO_COPY_DOCS: &str = "tandem_mongo_copy_documents_total";
pub const MONGO_COPY_BYTES: &str = "tandem_mongo_copy_bytes_total";
pub const MONGO_ECHOES_DROPPED: &str = "tandem_mongo_echoes_dropped_total";
pub const MONGO_RESOLVED: &str = "tandem_mongo_conflicts_resolved_total";

pub fn describe_mongo() {
    metrics::describe_counter!(
        MONGO_APPLIED,
        "MongoDB source operations applied to the target, by kind (insert, update, replace, delete, or the DDL command)"
    );
    metrics::describe_counter!(
        MONGO_CONFLICTS,
        "MongoDB operations that did not fit the target (an insert of an existing document, an update or delete of a missing one) outside the copy window, by what and how it was resolved"
    );
    metrics::describe_counter!(
        MONGO_COPY_DOCS,
        "Documents written by the full copy, by target namespace"
    );
    metrics::describe_counter!(
        MONGO_COPY_BYTES,
        "BSON bytes written by the full copy, by target namespace"
    );
    metrics::describe_counter!(
        MONGO_ECHOES_DROPPED,
        "Two-way: source units (transactions or writes) that touch __tandem, tandem's own writes, dropped instead of sent back"
    );
    metrics::describe_counter!(
        MONGO_RESOLVED,
        "Two-way converge: documents copied from the conflict's winner to the other side, by outcome (copied, rechecked)"
    );
}

pub fn mongo_echo_dropped() {
    metrics::counter!(MONGO_ECHOES_DROPPED).increment(1);
}

pub fn mongo_resolved(outcome: &'static str) {
    metrics::counter!(MONGO_RESOLVED, "outcome" => outcome).increment(1);
}

pub fn mongo_applied(kind: &str, n: u64) {
    metrics::counter!(MONGO_APPLIED, "kind" => kind.to_string()).increment(n);
}

pub fn mongo_conflict(what: &'static str, resolved: &'static str) {
    metrics::counter!(MONGO_CONFLICTS, "what" => what, "resolved" => resolved).increment(1);
}

pub fn mongo_copy(ns: &str, docs: u64, bytes: u64) {
    metrics::counter!(MONGO_COPY_DOCS, "ns" => ns.to_string()).increment(docs);
    metrics::counter!(MONGO_COPY_BYTES, "ns" => ns.to_string()).increment(bytes);
}

pub const KAFKA_MESSAGES: &str = "tandem_kafka_messages_total";
pub const KAFKA_BYTES: &str = "tandem_kafka_bytes_total";
pub const KAFKA_TRANSACTIONS: &str = "tandem_kafka_transactions_total";

pub fn describe_kafka() {
    metrics::describe_counter!(
        KAFKA_MESSAGES,
        "Canal JSON messages committed into Kafka by `mongo kafka`, by type (insert, update, delete, ddl; the copy's are inserts)"
    );
    metrics::describe_counter!(
        KAFKA_BYTES,
        "Bytes of the Canal JSON messages committed into Kafka (values, before compression)"
    );
    metrics::describe_counter!(
        KAFKA_TRANSACTIONS,
        "Batches committed into Kafka with their position: Kafka transactions (transactional=true), or at-least-once batches with --acks 1|0"
    );
}

pub fn kafka_messages(kind: &'static str, n: u64) {
    metrics::counter!(KAFKA_MESSAGES, "type" => kind).increment(n);
}

pub fn kafka_bytes(n: u64) {
    metrics::counter!(KAFKA_BYTES).increment(n);
}

pub fn kafka_transaction(transactional: bool) {
    metrics::counter!(KAFKA_TRANSACTIONS, "transactional" => if transactional { "true" } else { "false" })
        .increment(1);
}
