//! The network side of the replica link: handshake, RDB transfer, stream, ACKs and
//! reconnects. Everything received goes straight into the spool; nothing here waits for
//! the consumer except through the spool's bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::error::LinkError;
use super::handshake::{PsyncReply, Resume, Transfer, handshake};
use super::spool::{Record, SpoolWriter};
use crate::core::ReplPosition;
use crate::core::lag::LagClock;
use crate::core::shutdown::Shutdown;
use crate::ops::LinkStatus;
use crate::redis::conn::{ConnError, encode_command};
use crate::redis::url::Endpoint;

/// How the link connects and where it starts.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub source: Endpoint,
    /// Resume after this position (the last byte the consumer already has); `None`
    /// asks for a full resync.
    pub resume_after: Option<ReplPosition>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Connect and handshake timeout.
    pub timeout: Duration,
    /// Silence after which the master is considered gone (Redis's `repl-timeout`).
    pub read_timeout: Duration,
    /// Interval of the periodic `REPLCONF ACK`.
    pub ack_interval: Duration,
    /// Told when stream bytes arrive (lag in seconds).
    pub lag: Arc<LagClock>,
    /// The link's `/status` entry: received offset, reconnects.
    pub status: Arc<LinkStatus>,
}

impl LinkConfig {
    pub fn new(source: Endpoint, spool_dir: PathBuf) -> Self {
        Self {
            source,
            resume_after: None,
            spool_dir,
            spool_max_bytes: 4 << 30,
            timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            ack_interval: Duration::from_secs(1),
            lag: Arc::default(),
            status: Arc::default(),
        }
    }
}

/// Largest RDB/stream chunk written to the spool as one record.
const CHUNK: usize = 1 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the link until shutdown or a fatal error. Retryable failures reconnect with
/// backoff and `PSYNC <replid> <next offset>`, except before the first successful
/// handshake, where a network error is reported at once (a wrong host should fail fast).
pub async fn run_link(
    cfg: LinkConfig,
    mut spool: SpoolWriter,
    confirmed: watch::Receiver<Option<ReplPosition>>,
    mut shutdown: Shutdown,
) -> Result<(), LinkError> {
    let mut state = LinkState {
        resume: cfg.resume_after.as_ref().map(|p| Resume {
            replid: p.replid.to_string(),
            offset: p.offset + 1,
        }),
        connected_once: false,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            r = connection(&cfg, &mut state, &mut spool, confirmed.clone()) => r,
            _ = shutdown.wait() => return Ok(()),
        };
        let err = match attempt {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let retry = err.is_retryable() && (state.connected_once || !is_network(&err));
        if !retry {
            let _ = spool.append(&Record::Failed(err.to_string())).await;
            return Err(err);
        }
        // The offset held tells an operator where the stream stopped (a cut inside a
        // command included: its first bytes wait in the spool for the rest).
        let held = state
            .resume
            .as_ref()
            .map_or("none (full resync)".to_string(), |r| {
                (r.offset - 1).to_string()
            });
        warn!(source = %cfg.source, offset = %held, error = %err, "replica link lost, reconnecting in {backoff:?}");
        crate::metrics::link_reconnect(&cfg.source);
        cfg.status.reconnecting(err.to_string());
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Failures that, before any handshake succeeded, mean a wrong address rather than a
/// source in trouble: nothing listening, silence, or a peer that hangs up on a replica's
/// first commands (another service, a TLS port spoken to in plain text).
fn is_network(e: &LinkError) -> bool {
    matches!(
        e,
        LinkError::Conn(
            ConnError::Connect { .. }
                | ConnError::Timeout { .. }
                | ConnError::Closed { .. }
                | ConnError::Io { .. }
        )
    )
}

struct LinkState {
    /// Next byte wanted: PSYNC's argument.
    resume: Option<Resume>,
    connected_once: bool,
}

/// One connection's life: returns when it breaks.
async fn connection(
    cfg: &LinkConfig,
    state: &mut LinkState,
    spool: &mut SpoolWriter,
    confirmed: watch::Receiver<Option<ReplPosition>>,
) -> Result<(), LinkError> {
    let endpoint = cfg.source.to_string();
    let hs = handshake(&cfg.source, state.resume.as_ref(), cfg.timeout).await?;
    state.connected_once = true;
    let (mut rd, mut wr) = tokio::io::split(hs.stream);
    let mut pending = hs.buffered;
    // Offsets ACKed for this connection must belong to these histories.
    let mut ack_ids: Vec<String> = Vec::new();
    let mut received = match hs.reply {
        PsyncReply::FullResync {
            replid,
            offset,
            transfer,
        } => {
            info!(source = %endpoint, %replid, offset, "full resync");
            // The consumer now holds part of a new RDB, not the old position: a cut
            // during the transfer must ask for a full resync again, never continue
            // the old history under a half-loaded RDB.
            state.resume = None;
            // Before the record: the engine resets its counts when it reads it.
            let size = match transfer {
                Transfer::Sized(n) => Some(n),
                Transfer::EofMark(_) => None,
            };
            cfg.status.full_sync_expected(size, hs.keys);
            spool
                .append(&Record::FullResync {
                    replid: replid.clone(),
                    offset,
                })
                .await?;
            let mut src = Prefixed {
                pending: &mut pending,
                rd: &mut rd,
            };
            transfer_rdb(&endpoint, transfer, &mut src, spool, cfg.read_timeout).await?;
            spool.append(&Record::RdbEnd).await?;
            crate::metrics::full_sync_started(&cfg.source);
            ack_ids.push(replid.clone());
            state.resume = Some(Resume {
                replid,
                offset: offset + 1,
            });
            offset
        }
        PsyncReply::Continue { replid } => {
            let resume = state
                .resume
                .as_mut()
                .expect("CONTINUE only answers a resume");
            let offset = resume.offset - 1;
            info!(source = %endpoint, %replid, offset, "partial resync accepted");
            if replid != resume.replid {
                ack_ids.push(resume.replid.clone());
                resume.replid = replid.clone();
            }
            ack_ids.push(replid.clone());
            spool.append(&Record::Continue { replid, offset }).await?;
            offset
        }
    };
    // The master does not stream after a diskless transfer until it gets an ACK.
    send_ack(&mut wr, ack_offset(&confirmed, &ack_ids))
        .await
        .map_err(|source| io_err(&endpoint, source))?;
    let acks = tokio::spawn(ack_loop(wr, confirmed, ack_ids, cfg.ack_interval));
    let _abort = AbortOnDrop(acks);
    if !pending.is_empty() {
        received += pending.len() as u64;
        spool
            .append(&Record::Stream(pending.split().freeze()))
            .await?;
    }
    set_resume(state, received);
    crate::metrics::received_offset(&cfg.source, received);
    cfg.status.received(received);
    cfg.lag.received(received);
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let n = read_some(&endpoint, &mut rd, &mut buf, cfg.read_timeout).await?;
        received += n as u64;
        crate::metrics::link_bytes(&cfg.source, n as u64);
        crate::metrics::received_offset(&cfg.source, received);
        cfg.status.received(received);
        cfg.lag.received(received);
        spool.append(&Record::Stream(buf.split().freeze())).await?;
        set_resume(state, received);
    }
}

fn set_resume(state: &mut LinkState, received: u64) {
    if let Some(r) = state.resume.as_mut() {
        r.offset = received + 1;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn io_err(endpoint: &str, source: std::io::Error) -> LinkError {
    ConnError::Io {
        endpoint: endpoint.to_string(),
        source,
    }
    .into()
}

async fn read_some<R: AsyncRead + Unpin>(
    endpoint: &str,
    rd: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<usize, LinkError> {
    match tokio::time::timeout(timeout, rd.read_buf(buf)).await {
        Err(_) => Err(ConnError::Timeout {
            endpoint: endpoint.to_string(),
            what: "waiting for the replication stream",
        }
        .into()),
        Ok(Err(source)) => Err(io_err(endpoint, source)),
        Ok(Ok(0)) => Err(ConnError::Closed {
            endpoint: endpoint.to_string(),
        }
        .into()),
        Ok(Ok(n)) => Ok(n),
    }
}

/// Bytes already buffered by the handshake, then the socket.
struct Prefixed<'a, R> {
    pending: &'a mut BytesMut,
    rd: &'a mut R,
}

impl<R: AsyncRead + Unpin> Prefixed<'_, R> {
    async fn read(&mut self, endpoint: &str, max: usize, t: Duration) -> Result<Bytes, LinkError> {
        if self.pending.is_empty() {
            self.pending.reserve(CHUNK);
            read_some(endpoint, self.rd, self.pending, t).await?;
        }
        let n = self.pending.len().min(max);
        Ok(self.pending.split_to(n).freeze())
    }
}

async fn transfer_rdb<R: AsyncRead + Unpin>(
    endpoint: &str,
    transfer: Transfer,
    src: &mut Prefixed<'_, R>,
    spool: &mut SpoolWriter,
    t: Duration,
) -> Result<(), LinkError> {
    match transfer {
        Transfer::Sized(mut left) => {
            while left > 0 {
                let chunk = src
                    .read(endpoint, left.min(CHUNK as u64) as usize, t)
                    .await?;
                left -= chunk.len() as u64;
                spool.append(&Record::Rdb(chunk)).await?;
            }
        }
        Transfer::EofMark(mark) => {
            // The mark ends the transfer; like Redis's own replica, look for it at the
            // end of what has arrived, holding back the last 40 bytes until we know.
            let mut held = BytesMut::new();
            loop {
                let chunk = src.read(endpoint, CHUNK, t).await?;
                held.extend_from_slice(&chunk);
                if held.len() >= 40 && held[held.len() - 40..] == mark {
                    held.truncate(held.len() - 40);
                    if !held.is_empty() {
                        spool.append(&Record::Rdb(held.freeze())).await?;
                    }
                    return Ok(());
                }
                if held.len() > 40 {
                    let out = held.split_to(held.len() - 40).freeze();
                    spool.append(&Record::Rdb(out)).await?;
                }
            }
        }
    }
    Ok(())
}

fn ack_offset(confirmed: &watch::Receiver<Option<ReplPosition>>, ids: &[String]) -> u64 {
    match &*confirmed.borrow() {
        Some(p) if ids.iter().any(|id| **id == *p.replid) => p.offset,
        _ => 0,
    }
}

async fn send_ack<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    offset: u64,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let off = offset.to_string();
    encode_command(&mut buf, &[b"REPLCONF", b"ACK", off.as_bytes()]);
    wr.write_all(&buf).await
}

/// ACKs the confirmed offset whenever it moves (so `WAIT` on the source returns as soon
/// as the consumer confirms) and every `interval` regardless (the master's liveness
/// check of its replicas).
async fn ack_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut wr: W,
    mut confirmed: watch::Receiver<Option<ReplPosition>>,
    ids: Vec<String>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = confirmed.changed() => if r.is_err() { return },
        }
        let off = ack_offset(&confirmed, &ids);
        if send_ack(&mut wr, off).await.is_err() {
            return;
        }
    }
}
