//! Sinks: where replicated data is written.
//!
//! A sink takes [`Batch`]es in order and applies each as one atomic unit on the target:
//! `MULTI <commands> HSET __tandem:ckpt:<id> … EXEC`. The checkpoint inside the same
//! transaction is what makes restarts exactly-once (the target never holds more or less
//! than its checkpoint says) and what marks the transaction as tandem's own in the
//! target's replication stream (two-way sync drops it there).

pub mod batch;
pub mod checkpoint;
pub mod standalone;

pub use batch::{Batch, BatchBuilder};
pub use checkpoint::{CkptState, TargetCheckpoint};
pub use standalone::StandaloneSink;

use crate::redis::conn::ConnError;

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
    #[error("{endpoint}: checkpoint {key} is unreadable: {detail}")]
    BadCheckpoint {
        endpoint: String,
        key: String,
        detail: String,
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
