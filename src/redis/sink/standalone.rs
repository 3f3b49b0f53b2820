//! The standalone-target sink: one pipelined connection, a bounded window of batches in
//! flight, and exactly-once recovery.
//!
//! Contract of [`StandaloneSink`]:
//! - Batches are applied in submission order, each atomically (MULTI/EXEC) with its
//!   checkpoint.
//! - `submit` returns once the batch is sent; it waits when `window` batches are
//!   unacknowledged. `flush` returns once every submitted batch is acknowledged.
//! - [`StandaloneSink::applied`] moves to a batch's checkpoint once the target confirmed
//!   its EXEC; it never moves backwards.
//! - After a lost connection or a retryable refusal, the sink reconnects, reads the
//!   checkpoint from the target to learn which in-flight batches landed (their `run` and
//!   `seq` are in it), and resends only the others. A batch is therefore applied exactly
//!   once, whatever happened to the connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{error, warn};

use super::batch::{Batch, BatchBuilder};
use super::bulk::BulkLimit;
use super::checkpoint::{self, CkptState, TargetCheckpoint};
use super::{ReplyClass, SinkError, classify_reply};
use crate::core::{ReplPosition, ShortId};
use crate::redis::conn::{Conn, ConnError, Frame};
use crate::redis::url::Endpoint;

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub target: Endpoint,
    /// More nodes of a cluster target to discover it from when `target` does not answer
    /// (an engine started again after a failover of the node it names).
    pub also_discover_from: Vec<Endpoint>,
    /// The link id: the checkpoint key is `__tandem:ckpt:<id>`.
    pub id: String,
    /// Batches sent but not yet acknowledged, at most.
    pub window: usize,
    pub timeout: Duration,
    /// How long to keep retrying an unavailable target before giving up.
    pub give_up_after: Duration,
    /// A batch is sent once it holds this many commands…
    pub batch_commands: usize,
    /// …or this many encoded bytes.
    pub batch_bytes: usize,
    /// Replicated commands the target confirmed (the link's `/status` entry reads it).
    pub applied_commands: Arc<AtomicU64>,
}

impl SinkConfig {
    pub fn new(target: Endpoint, id: &str) -> Self {
        Self {
            target,
            also_discover_from: Vec::new(),
            id: id.to_string(),
            window: 8,
            timeout: Duration::from_secs(30),
            give_up_after: Duration::from_secs(300),
            batch_commands: 2000,
            batch_bytes: 4 << 20,
            applied_commands: Arc::default(),
        }
    }

    /// A batch of `commands` replicated commands is on the target.
    pub(crate) fn confirmed(&self, commands: usize) {
        crate::metrics::sink_batch(commands);
        self.applied_commands
            .fetch_add(commands as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct StandaloneSink {
    cfg: SinkConfig,
    conn: Conn,
    ckpt_key: Bytes,
    /// Identifies this tandem process in checkpoints it writes.
    run: ShortId,
    next_seq: u64,
    in_flight: VecDeque<Batch>,
    start: Option<TargetCheckpoint>,
    applied: watch::Sender<Option<TargetCheckpoint>>,
    /// Units ended but not yet sent, and the checkpoint after the last of them.
    open: BatchBuilder,
    open_end: Option<(ReplPosition, u32, CkptState)>,
    bulk: BulkLimit,
    /// `cfg.target` as messages show it.
    endpoint: String,
}

impl StandaloneSink {
    /// Connect and read the checkpoint the target holds.
    pub async fn connect(cfg: SinkConfig) -> Result<Self, SinkError> {
        let mut conn = Conn::connect(&cfg.target.with_db(0), cfg.timeout).await?;
        let start = TargetCheckpoint::load(&mut conn, &cfg.id).await?;
        let bulk = BulkLimit::probe(&mut conn).await?;
        let endpoint = cfg.target.to_string();
        let run = super::checkpoint::new_run_id();
        let (applied, _) = watch::channel(start.clone());
        Ok(Self {
            ckpt_key: Bytes::from(checkpoint::key(&cfg.id)),
            cfg,
            conn,
            run,
            next_seq: 1,
            in_flight: VecDeque::new(),
            start,
            applied,
            open: BatchBuilder::new(),
            open_end: None,
            bulk,
            endpoint,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.cfg.target
    }

    /// Close `builder` with a checkpoint at `pos` and send it.
    async fn submit(
        &mut self,
        builder: BatchBuilder,
        pos: ReplPosition,
        db: u32,
        state: CkptState,
    ) -> Result<(), SinkError> {
        let ckpt = TargetCheckpoint {
            pos,
            db,
            state,
            run: self.run.clone(),
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let batch = builder.finish(ckpt, &self.ckpt_key);
        while self.in_flight.len() >= self.cfg.window.max(1) {
            self.settle_oldest().await?;
        }
        self.conn.queue_raw(&batch.payload);
        self.in_flight.push_back(batch);
        if let Err(e) = self.conn.flush().await {
            self.recover(Failure::Conn(e)).await?;
        }
        Ok(())
    }

    /// Wait until every submitted batch is acknowledged.
    async fn settle_all(&mut self) -> Result<(), SinkError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Send the open batch, if it holds any ended unit.
    async fn send_open(&mut self) -> Result<(), SinkError> {
        let Some((pos, db, state)) = self.open_end.take() else {
            return Ok(());
        };
        let b = std::mem::take(&mut self.open);
        self.submit(b, pos, db, state).await
    }

    /// Batches sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Read the oldest batch's replies; recover on failure.
    async fn settle_oldest(&mut self) -> Result<(), SinkError> {
        match self.read_batch_replies().await {
            Ok(()) => Ok(()),
            Err(e) => self.recover(e).await,
        }
    }

    async fn read_batch_replies(&mut self) -> Result<(), Failure> {
        let batch = self.in_flight.front().expect("a batch in flight");
        let expected = batch.replies();
        let mut queued_error: Option<(usize, String)> = None;
        let mut exec = None;
        for i in 0..expected {
            if i + 1 < expected && self.conn.skip_buffered(b"+QUEUED\r\n") {
                continue;
            }
            if i + 1 == expected
                && queued_error.is_none()
                && let Some(n) = self.conn.skip_clean_array().await?
            {
                // Every command succeeded: nothing to look at in the results.
                let batch = self.in_flight.front().expect("a batch in flight");
                if n != batch.origin.len() {
                    return Err(Failure::Conn(ConnError::Protocol {
                        endpoint: self.cfg.target.to_string(),
                        detail: format!(
                            "EXEC answered {n} results for {} commands",
                            batch.origin.len()
                        ),
                    }));
                }
                return self.batch_applied();
            }
            let frame = self.conn.read_frame().await?;
            if i + 1 == expected {
                exec = Some(frame);
            } else if let Frame::Error(e) = frame {
                // i == 0 is MULTI; i >= 1 are the queued commands.
                queued_error.get_or_insert((i.saturating_sub(1), e.to_string()));
            }
        }
        let batch = self.in_flight.front().expect("a batch in flight");
        match exec.expect("expected >= 2") {
            Frame::Array(results) => {
                for (i, r) in results.iter().enumerate() {
                    if let Frame::Error(e) = r {
                        self.command_failed(batch, i, e)?;
                    }
                }
            }
            Frame::Error(e) => {
                let (i, cause) = queued_error.unwrap_or((usize::MAX, e.to_string()));
                return Err(self.refusal(batch, i, &cause));
            }
            other => {
                return Err(Failure::Conn(ConnError::Protocol {
                    endpoint: self.cfg.target.to_string(),
                    detail: format!("EXEC answered {other:?}"),
                }));
            }
        }
        self.batch_applied()
    }

    fn batch_applied(&mut self) -> Result<(), Failure> {
        let batch = self.in_flight.pop_front().expect("a batch in flight");
        self.cfg.confirmed(batch.data_commands);
        self.applied.send_replace(Some(batch.ckpt));
        Ok(())
    }

    fn origin(batch: &Batch, i: usize) -> (String, u64) {
        batch.describe(i, "(tandem bookkeeping)")
    }

    fn refusal(&self, batch: &Batch, i: usize, message: &str) -> Failure {
        let (command, offset) = Self::origin(batch, i);
        let err = SinkError::Refused {
            endpoint: self.cfg.target.to_string(),
            command,
            offset,
            message: message.to_string(),
        };
        match classify_reply(message) {
            ReplyClass::Retry => Failure::Retry(err),
            ReplyClass::Fatal | ReplyClass::Data => Failure::Fatal(err),
        }
    }

    /// A command failed inside an applied transaction.
    fn command_failed(&self, batch: &Batch, i: usize, message: &str) -> Result<(), Failure> {
        let (command, offset) = Self::origin(batch, i);
        if classify_reply(message) == ReplyClass::Fatal || batch.origin.get(i) == Some(&None) {
            return Err(self.refusal(batch, i, message));
        }
        crate::metrics::sink_command_error(&command);
        error!(
            target = %self.cfg.target, command = %command, offset,
            "target rejected a replicated command (source and target differ): {message}"
        );
        Ok(())
    }

    /// Reconnect until the target takes the in-flight batches again, resending only
    /// those its checkpoint shows as not applied.
    async fn recover(&mut self, first: impl Into<Failure>) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut failure: Failure = first.into();
        let mut backoff = Duration::from_millis(50);
        loop {
            let last = match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Conn(e) if !e.is_retryable() => return Err(e.into()),
                Failure::Conn(e) => e.to_string(),
                Failure::Retry(e) => e.to_string(),
            };
            if started.elapsed() > self.cfg.give_up_after {
                return Err(SinkError::GaveUp {
                    endpoint: self.cfg.target.to_string(),
                    secs: self.cfg.give_up_after.as_secs(),
                    last,
                });
            }
            warn!(target = %self.cfg.target, "target write failed, retrying in {backoff:?}: {last}");
            crate::metrics::sink_retry();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            failure = match self.resend().await {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
        }
    }

    /// The checkpoint read after a reconnect must be at or after the last one the target
    /// confirmed: a batch of this run at least as new, or that same checkpoint.
    fn check_not_behind(&self, held: Option<&TargetCheckpoint>) -> Result<(), Failure> {
        let Some(had) = self.applied.borrow().clone() else {
            return Ok(());
        };
        let fine = held.is_some_and(|h| {
            (h.run == self.run && (had.run != self.run || h.seq >= had.seq))
                || (h.run == had.run && h.seq >= had.seq)
        });
        if fine {
            return Ok(());
        }
        Err(Failure::Fatal(SinkError::TargetWentBack {
            endpoint: self.cfg.target.to_string(),
            had: had.pos.to_string(),
            now: held.map_or("none".into(), |h| h.pos.to_string()),
            fix: "restart tandem to resume from the checkpoint the target holds",
        }))
    }

    async fn resend(&mut self) -> Result<(), Failure> {
        let mut conn = Conn::connect(&self.cfg.target.with_db(0), self.cfg.timeout).await?;
        let held = TargetCheckpoint::load(&mut conn, &self.cfg.id)
            .await
            .map_err(Failure::from_sink)?;
        // Checked before the new connection is kept: a target that went back must get
        // no batch at all (not even the final flush after the error), or its checkpoint
        // would claim what it lost.
        self.check_not_behind(held.as_ref())?;
        self.conn = conn;
        if let Some(h) = held.filter(|h| h.run == self.run) {
            while self.in_flight.front().is_some_and(|b| b.ckpt.seq <= h.seq) {
                let b = self.in_flight.pop_front().unwrap();
                self.cfg.confirmed(b.data_commands);
                self.applied.send_replace(Some(b.ckpt));
            }
        }
        for b in &self.in_flight {
            self.conn.queue_raw(&b.payload);
        }
        self.conn.flush().await?;
        while !self.in_flight.is_empty() {
            self.read_batch_replies().await?;
        }
        Ok(())
    }
}

impl super::Sink for StandaloneSink {
    async fn write(&mut self, db: u32, argv: Vec<Bytes>, offset: u64) -> Result<(), SinkError> {
        self.bulk.check_argv(&self.endpoint, &argv, offset)?;
        self.open.push(db, &argv, offset);
        Ok(())
    }

    async fn write_encoded(
        &mut self,
        db: u32,
        _argv: Vec<Bytes>,
        raw: Bytes,
        offset: u64,
    ) -> Result<(), SinkError> {
        self.bulk.check_raw(&self.endpoint, &raw, offset)?;
        self.open.push_encoded(db, &raw, offset);
        Ok(())
    }

    async fn write_keyed(
        &mut self,
        db: u32,
        _name: &'static [u8],
        _key: Bytes,
        raw: Bytes,
        offset: u64,
    ) -> Result<(), SinkError> {
        self.bulk.check_raw(&self.endpoint, &raw, offset)?;
        self.open.push_encoded(db, &raw, offset);
        Ok(())
    }

    async fn end_unit(
        &mut self,
        pos: ReplPosition,
        db: u32,
        state: CkptState,
    ) -> Result<(), SinkError> {
        self.open_end = Some((pos, db, state));
        if self.open.len() >= self.cfg.batch_commands || self.open.bytes() >= self.cfg.batch_bytes {
            self.send_open().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.send_open().await?;
        self.settle_all().await
    }

    fn applied(&self) -> watch::Receiver<Option<TargetCheckpoint>> {
        self.applied.subscribe()
    }

    fn checkpoint_at_start(&self) -> Option<&TargetCheckpoint> {
        self.start.as_ref()
    }

    fn masters(&self) -> Vec<Endpoint> {
        vec![self.cfg.target.clone()]
    }

    async fn query(&mut self, argv: &[&[u8]]) -> Result<Frame, SinkError> {
        super::Sink::flush(self).await?;
        Ok(self.conn.request(argv).await?)
    }
}

/// Why a batch did not complete, as the recovery loop sees it.
enum Failure {
    Conn(ConnError),
    Retry(SinkError),
    Fatal(SinkError),
}

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Self {
        Failure::Conn(e)
    }
}

impl Failure {
    fn from_sink(e: SinkError) -> Self {
        match e {
            SinkError::Conn(c) => Failure::Conn(c),
            other => Failure::Fatal(other),
        }
    }
}

impl From<SinkError> for Failure {
    fn from(e: SinkError) -> Self {
        Failure::from_sink(e)
    }
}

impl CkptState {
    pub fn is_full(self) -> bool {
        self == CkptState::Full
    }
}
