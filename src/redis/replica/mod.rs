//! The replica link: tandem as one of the source's replicas (PSYNC).
//!
//! ```text
//! socket ──(link.rs: handshake, RDB, stream, ACKs, reconnects)──▶ spool (disk)
//! spool ──(stream.rs: records → events with offsets)──▶ consumer
//! consumer ──LinkHandle::confirm(position)──▶ REPLCONF ACK
//! ```

mod echo;
pub mod error;
pub mod handshake;
pub mod link;
pub mod spool;
pub mod stream;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::LinkError;
pub use link::LinkConfig;
pub use stream::{Command, Event, EventReader};

use crate::core::ReplPosition;
use crate::core::shutdown::Shutdown;

/// A running link: read `events`, confirm applied positions through `handle`.
pub struct ReplicaLink {
    pub events: EventReader,
    pub handle: LinkHandle,
    pub task: JoinHandle<Result<(), LinkError>>,
}

impl ReplicaLink {
    /// End the link task and wait until it is gone: its connection closed and its
    /// spool no longer written, so another link may start in the same directory (an
    /// engine started again after a target failover, `cluster/source.rs`).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Tells the link what the consumer has durably applied. That position, not what was
/// merely received, is what the master sees in `REPLCONF ACK` (and so what `WAIT`
/// counts).
#[derive(Clone)]
pub struct LinkHandle {
    confirmed: watch::Sender<Option<ReplPosition>>,
}

impl LinkHandle {
    pub fn confirm(&self, pos: ReplPosition) {
        self.confirmed.send_replace(Some(pos));
    }
}

/// Start the link: spool in `cfg.spool_dir` (created; stale segments removed).
/// `initial_db` is the db selected at `cfg.resume_after` (0 for a full sync).
pub fn start(
    cfg: LinkConfig,
    initial_db: u32,
    shutdown: Shutdown,
) -> Result<ReplicaLink, LinkError> {
    std::fs::create_dir_all(&cfg.spool_dir)?;
    for entry in std::fs::read_dir(&cfg.spool_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "seg") {
            std::fs::remove_file(path)?;
        }
    }
    let (writer, reader) = spool::spool(&cfg.spool_dir, cfg.spool_max_bytes)?;
    let (confirmed, confirmed_rx) = watch::channel(None);
    let endpoint = cfg.source.to_string();
    let task = tokio::spawn(link::run_link(cfg, writer, confirmed_rx, shutdown));
    Ok(ReplicaLink {
        events: EventReader::new(reader, endpoint, initial_db),
        handle: LinkHandle { confirmed },
        task,
    })
}
