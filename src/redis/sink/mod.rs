//! Sinks: where replicated data is written.
//!
//! A sink takes [`Batch`]es in order and applies each as one atomic unit on the target:
//! `MULTI <commands> HSET __tandem:ckpt:<id> … EXEC`. The checkpoint inside the same
//! transaction is what makes restarts exactly-once (the target never holds more or less
//! than its checkpoint says) and what marks the transaction as tandem's own in the
//! target's replication stream (two-way sync drops it there).

pub mod batch;
pub mod bulk;
pub mod checkpoint;
pub mod cluster;
pub mod frontier;
pub mod standalone;

pub use batch::{Batch, BatchBuilder};
pub use checkpoint::{CkptState, TargetCheckpoint};
pub use cluster::ClusterSink;
pub use standalone::StandaloneSink;

use bytes::Bytes;
use tokio::sync::watch;

use crate::core::ReplPosition;
use crate::redis::conn::{ConnError, Frame};
use crate::redis::url::Endpoint;

/// The boundary between the sync engine and a target.
///
/// The engine hands over writes unit by unit: `write` for each command of a source unit
/// (a `MULTI … EXEC` or a single command), then `end_unit` with the source position
/// after it. A unit is never split across target transactions. The sink groups units
/// into batches as it sees fit and writes each batch atomically with its checkpoint.
///
/// Contract:
/// - Order: units are applied in the order given (per key slot for cluster targets).
/// - `Ok` from `write`/`end_unit` promises nothing about durability; `Ok` from `flush`
///   promises every unit ended so far is on the target with its checkpoint.
/// - `applied()` moves forward as batches are confirmed; it never moves backwards and
///   never covers a unit that is not fully on the target.
/// - A retryable failure (lost connection, OOM, loading) is retried inside the sink
///   without applying any unit twice; an `Err` is final.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Queue one command of the current unit, to run in target db `db`; `offset` is the
    /// source offset after it (for error messages).
    async fn write(&mut self, db: u32, argv: Vec<Bytes>, offset: u64) -> Result<(), SinkError>;
    /// `write` of a command whose RESP encoding is at hand (`raw`, as received from the
    /// source): a sink may forward those bytes instead of encoding `argv` again.
    async fn write_encoded(
        &mut self,
        db: u32,
        argv: Vec<Bytes>,
        raw: Bytes,
        offset: u64,
    ) -> Result<(), SinkError> {
        let _ = raw;
        self.write(db, argv, offset).await
    }
    /// A command with one key, already encoded (`raw`: exactly one RESP command named
    /// `name`, whose only key is `key`), and idempotent (applied twice, it leaves what
    /// applying it once does): the sink routes by `key` and sends `raw` as is. The full
    /// sync's RESTOREs come this way, so no argv is built per key.
    async fn write_keyed(
        &mut self,
        db: u32,
        name: &'static [u8],
        key: Bytes,
        raw: Bytes,
        offset: u64,
    ) -> Result<(), SinkError>;
    /// The current unit is complete; `pos` is the source position after it and `db` the
    /// source db selected there.
    async fn end_unit(
        &mut self,
        pos: ReplPosition,
        db: u32,
        state: CkptState,
    ) -> Result<(), SinkError>;
    /// Land everything ended so far and wait for the target to confirm it. Bookkeeping
    /// beyond the batches' own checkpoints (a cluster's floor checkpoint) may still be
    /// on its way.
    async fn flush(&mut self) -> Result<(), SinkError>;
    /// [`Sink::flush`], and the bookkeeping too: the last call before the sink is dropped
    /// (shutdown, the end of a full-sync-only run).
    async fn close(&mut self) -> Result<(), SinkError> {
        self.flush().await
    }
    /// Follows the last checkpoint the target confirmed.
    fn applied(&self) -> watch::Receiver<Option<TargetCheckpoint>>;
    /// The checkpoint the target held when the sink connected.
    fn checkpoint_at_start(&self) -> Option<&TargetCheckpoint>;
    /// Run one command outside any batch (probes such as INFO); flushes first.
    async fn query(&mut self, argv: &[&[u8]]) -> Result<Frame, SinkError>;
    /// The nodes holding the target's keys: the target, or a cluster's masters as the
    /// sink last saw them (the endpoint tandem was given may have failed over since).
    fn masters(&self) -> Vec<Endpoint>;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The target refused the batch for a reason that waiting will not fix.
    #[error("{endpoint}: target refused a write ({command} at source offset {offset}): {message}")]
    Refused {
        endpoint: String,
        command: String,
        offset: u64,
        message: String,
    },
    /// Resending cannot help: the target refuses the argument on every connection.
    #[error(
        "{endpoint}: the target cannot take {command}{key} at source offset {offset}: an \
         argument of {len} bytes is longer than its proto-max-bulk-len ({limit}); raise it \
         on the target (CONFIG SET proto-max-bulk-len) and restart tandem"
    )]
    TooLong {
        endpoint: String,
        command: String,
        /// ` of key "…"`, or empty for a command without one.
        key: String,
        offset: u64,
        len: u64,
        limit: u64,
    },
    #[error("{endpoint}: checkpoint {key} is unreadable: {detail}")]
    BadCheckpoint {
        endpoint: String,
        key: String,
        detail: String,
    },
    /// After a reconnect the target holds less than it had confirmed (it restarted
    /// without persisting them): resending the batches in flight would leave a hole.
    #[error(
        "{endpoint}: the target lost writes it had confirmed: its checkpoint went back \
         from {had} to {now} (restarted without persistence?); {fix}"
    )]
    TargetWentBack {
        endpoint: String,
        had: String,
        now: String,
        /// What the operator does next.
        fix: &'static str,
    },
    /// A cluster target's slots moved to another node that lacks writes the old one had
    /// confirmed (a replica promoted before it received them). The sink has written the
    /// floor checkpoint back to `resume`; a new engine resumes from there (the slots
    /// that kept their writes skip what they hold).
    #[error(
        "{endpoint}: the target lost writes it had confirmed: {slots} slots now served by \
         another node hold less than they had (slot {example}; a failover that promoted a \
         replica before it had them); resuming from {resume}"
    )]
    TargetLostWrites {
        endpoint: String,
        slots: usize,
        example: String,
        resume: String,
        /// The masters serving now: the new engine discovers the cluster from them (the
        /// endpoint tandem was given may be the node that failed).
        serving: Vec<Endpoint>,
    },
    #[error("{endpoint}: target unavailable for {secs} s, giving up: {last}")]
    GaveUp {
        endpoint: String,
        secs: u64,
        last: String,
    },
}

/// How the sink treats an error reply from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// Waiting can fix it (loading, busy, out of memory, failing disk save): the batch
    /// was not applied; retry it later.
    Retry,
    /// Nothing tandem can do (the target is a replica, lacks permissions, or is a
    /// cluster answering MOVED to a standalone sink): stop with the message.
    Fatal,
    /// One command failed inside an applied transaction (e.g. WRONGTYPE: the target
    /// diverged from the source). Counted and logged with the command and offset.
    Data,
}

/// The one place deciding what an error reply means.
pub fn classify_reply(message: &str) -> ReplyClass {
    let code = message.split_whitespace().next().unwrap_or("");
    match code {
        "LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "NOMASTERLINK" | "OOM"
        | "MISCONF" => ReplyClass::Retry,
        "READONLY" | "NOPERM" | "NOAUTH" | "WRONGPASS" | "MOVED" | "ASK" | "CROSSSLOT" => {
            ReplyClass::Fatal
        }
        _ => ReplyClass::Data,
    }
}
