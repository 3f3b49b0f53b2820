//! The cluster-target sink: writes routed by hash slot, one single-slot transaction per
//! slot batch, each carrying that slot's checkpoint.
//!
//! Contract of [`ClusterSink`] (on top of [`super::Sink`]'s):
//! - Routing: each command goes to the slot of its keys. A unit stays in one slot
//!   (one target transaction), except a single SPLITTABLE command (MSET, DEL, UNLINK,
//!   TOUCH, MSETNX → MSET), which is split per slot exactly, and full-sync units
//!   (idempotent RESTOREs). Anything else spanning slots is a [`SinkError::Refused`]
//!   naming the command, the source offset and the slots; nothing is dropped.
//! - Target db is 0; MOVE and SWAPDB are refused; keyless writes (FLUSHALL,
//!   FUNCTION …, SCRIPT …) are a barrier: everything before lands, then the command runs
//!   on every master.
//! - Checkpoints: slot `s`'s batches write `__tandem:ckpt:<id>:{tag(s)}` in the same
//!   `MULTI … EXEC`. At most one batch per slot is in flight, so a slot's batches land in
//!   order whatever the redirections; many slots are pipelined per master.
//!   `__tandem:ckpt:<id>` (the *floor*) is rewritten as [`Sink::applied`] advances:
//!   every unit at or below it is on the target in every slot.
//! - Restart: resume from the floor (or the lowest slot checkpoint without one); a unit
//!   part is skipped when its slot's checkpoint is at or beyond it.
//! - `MOVED` refreshes the slot map and resends; `ASK` resends with `ASKING` to the
//!   named node; `TRYAGAIN`/`CLUSTERDOWN` and other retryable refusals wait and resend.
//!   After a lost connection the slot checkpoints of the batches in flight say which
//!   landed (`run`/`seq`), so no batch is applied twice.
//! - A slot whose master changed is checked before its next batch (`owners.rs`): a
//!   promoted replica that lacks confirmed writes sends the floor back and the engine
//!   resumes from it ([`SinkError::TargetLostWrites`]).
//! - Full sync: RESTOREs go per master in plain pipelines instead (`plain`): idempotent,
//!   they need neither a transaction nor a slot checkpoint.

mod owners;
mod plain;
mod route;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tracing::{error, info};

use super::batch::Batch;
use super::bulk::{self, BulkLimit};
use super::checkpoint::{self, CkptState, HsetStem, TargetCheckpoint};
use super::frontier::Frontier;
use super::standalone::SinkConfig;
use super::{ReplyClass, Sink, SinkError, classify_reply};
use crate::core::{ReplPosition, ShortId};
use crate::redis::cluster::ckpt::{read_ckpt, read_slot_ckpts};
use crate::redis::cluster::nodes::{Backoff, Nodes, Redirect, redirect};
use crate::redis::cluster::tags::slot_ckpt_key;
use crate::redis::conn::{Conn, ConnError, Frame, encode_command};
use crate::redis::slot::{SLOTS, key_slot};
use crate::redis::url::Endpoint;

/// Batches in flight per master, at most.
const NODE_WINDOW: usize = 256;
/// First allocation of a slot batch: room for a few commands and the checkpoint, so
/// that the common small batch never grows.
const SLOT_BUF_START: usize = 1024;
/// Open slot batches are held until this many `--batch-commands` (or `--batch-bytes`)
/// are buffered over all slots; beyond that, the slots opened longest ago are sent, one
/// for each that opens. Every slot batch costs the target a MULTI, a checkpoint HSET and
/// an EXEC besides its commands, and keys spread over 16384 slots, so sending at
/// `--batch-commands` made transactions of one or two commands (the target spent three
/// quarters of its time on the wrapping). Holding a deep pool while a backlog lasts
/// brings several commands per slot, and sending its oldest slots one by one keeps the
/// masters busy while tandem reads on (sending the whole pool at once left them idle
/// while the next pool filled: 1.2 of the 2 cores used). When the stream goes idle the
/// engine flushes whatever is open, so latency under light load does not change.
/// 128 × the default 2000 commands is about 16 commands per slot batch over all slots;
/// 64 (about 8) measured 0.65× of the rate into a standalone target, 128 0.91×
/// (docs/BENCHMARKS.md).
const PUMP_COMMANDS_FACTOR: usize = 128;
const PUMP_BYTES_FACTOR: usize = 8;
/// A node's connection is flushed once this many batches wait in its write buffer.
const FLUSH_BATCHES: usize = 32;
/// How often the floor checkpoint is rewritten while writes flow.
const FLOOR_EVERY: Duration = Duration::from_millis(500);

/// A batch sent (or to send) for one slot.
struct Sent {
    slot: u16,
    batch: Batch,
    /// Its ticket in `ClusterSink::frontier`; none for the floor checkpoint.
    ticket: Option<u64>,
    /// Send to this node with `ASKING` (an `ASK` redirection).
    ask: Option<usize>,
    /// The node a plain batch is for (its commands' slots are that master's).
    node: Option<usize>,
    not_before: Option<Instant>,
    retry: Option<Backoff>,
    /// The floor checkpoint, not a slot batch: it holds no slot busy and confirms no
    /// unit.
    floor: bool,
}

/// A slot's open batch: what each command touches, in one cache line (16384 of them are
/// written in random order; each line more was a cache miss per command). What a batch
/// needs only when it opens or closes is in `ClusterSink::slot_ticket`/`slot_epoch`.
#[derive(Default)]
#[repr(align(64))]
struct SlotOpen {
    buf: BytesMut,
    origin: Vec<Option<u64>>,
    /// Source offset after the last unit with a part in the batch.
    end_offset: u64,
}

/// A write of the unit being received.
struct UnitWrite {
    db: u32,
    argv: Vec<Bytes>,
    offset: u64,
    /// Its RESP encoding as the source sent it, when at hand: forwarded as is when the
    /// command goes to one slot unchanged (the common case), instead of encoding again.
    raw: Option<Bytes>,
    /// Its slot, known up front ([`Sink::write_keyed`]): `argv` is then only the name
    /// and the key, and the command is not resolved again.
    slot: Option<u16>,
}

/// A write routed to one slot.
struct Part {
    slot: u16,
    /// A full-sync RESTORE ([`Sink::write_keyed`]): may go in a plain batch.
    keyed: bool,
    argv: Vec<Bytes>,
    raw: Option<Bytes>,
    offset: u64,
}

/// A source position with the db selected there and the checkpoint state.
type At = (ReplPosition, u32, CkptState);

struct Epoch {
    replid: ShortId,
    db: u32,
    state: CkptState,
    stem: HsetStem,
}

struct NodeLink {
    conn: Option<Conn>,
    in_flight: VecDeque<Sent>,
    /// How many of the newest batches in flight are still in the connection's write
    /// buffer (queued, not flushed).
    unflushed: usize,
}

impl NodeLink {
    /// Send what is buffered.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if let Some(conn) = self.conn.as_mut() {
            conn.flush().await?;
        }
        self.unflushed = 0;
        Ok(())
    }
}

pub struct ClusterSink {
    cfg: SinkConfig,
    nodes: Nodes,
    links: Vec<NodeLink>,
    run: ShortId,
    next_seq: u64,
    slots: Vec<SlotOpen>,
    /// Buffers of confirmed slot batches, reused by the next ones: a slot batch holds
    /// two or three commands when keys spread over all slots, and allocating its three
    /// buffers each time was a fifth of tandem's CPU into a cluster.
    spare: Vec<SlotOpen>,
    /// Open slots, oldest first. Entries go stale when a hot slot is sent out of turn;
    /// `listed` says whether a slot has an entry.
    open_list: VecDeque<u16>,
    listed: Vec<bool>,
    busy: Vec<bool>,
    open_cmds: usize,
    open_bytes: usize,
    /// Slot checkpoint keys, made once.
    ckpt_keys: Vec<Option<Bytes>>,
    retry: VecDeque<Sent>,
    unit: Vec<UnitWrite>,
    /// Scratch for routing a unit (kept for its capacity).
    parts: Vec<Part>,
    /// The distinct (replication id, db, state) of the units seen, with their checkpoints'
    /// constant part; a slot batch's checkpoint is `epochs[slot_epoch[slot]]` at its
    /// `end_offset`.
    epochs: Vec<Epoch>,
    /// The index in `epochs` of the unit being ended.
    epoch: u32,
    slot_epoch: Vec<u32>,
    /// The ticket of each slot's open batch.
    slot_ticket: Vec<u64>,
    /// Per slot, the last batch of this run the target confirmed: (seq, source offset).
    slot_confirmed: Vec<(u64, u64)>,
    /// A ticket per slot batch not yet confirmed (open, in flight or waiting to be
    /// resent): what `applied` is.
    frontier: Frontier<At>,
    /// What `applied` was last set to: (replication id, offset, state), so that the
    /// confirms that do not move it (most, with many slots) take no lock on the watch.
    applied_at: Option<(ShortId, u64, CkptState)>,
    /// Per slot, the offset its checkpoint held at start (`incr` state only); cleared
    /// when a full sync starts (another history).
    skip: Option<Vec<Option<u64>>>,
    start: Option<TargetCheckpoint>,
    applied: watch::Sender<Option<TargetCheckpoint>>,
    floor_key: Bytes,
    floor_written: Option<(u64, CkptState)>,
    floor_at: Instant,
    /// `cfg.target` as messages show it.
    endpoint: String,
    bulk: BulkLimit,
    /// Per master, its open pipeline of full-sync RESTOREs.
    plain: Vec<plain::PlainOpen>,
    plain_spare: Vec<BytesMut>,
    /// Tickets of plain batches split over several routes: how many parts are not yet
    /// confirmed.
    holds: HashMap<u64, usize>,
    /// Whether the last unit was in state `full`.
    last_full: Option<bool>,
}

impl ClusterSink {
    /// Discover the target's masters and read every slot checkpoint of `cfg.id`.
    pub async fn connect(cfg: SinkConfig) -> Result<Self, SinkError> {
        let mut nodes = Nodes::connect_any(
            cfg.target.clone(),
            &cfg.also_discover_from,
            cfg.timeout,
            cfg.give_up_after,
        )
        .await?;
        let floor_key = Bytes::from(checkpoint::key(&cfg.id));
        let floor = read_ckpt(&mut nodes, &floor_key).await?;
        let per_slot = read_slot_ckpts(&mut nodes, &cfg.id).await?;
        // The smallest of the masters' limits: a write may go to any of them.
        let bulk = BulkLimit::new(
            nodes
                .request_all(&[b"CONFIG", b"GET", b"proto-max-bulk-len"])
                .await?
                .iter()
                .filter_map(|(_, f)| bulk::parse(f))
                .min(),
        );
        let start = match floor {
            Some(f) => Some(f),
            None => {
                let full = per_slot.iter().flatten().find(|c| c.state.is_full());
                full.or_else(|| per_slot.iter().flatten().min_by_key(|c| c.pos.offset))
                    .cloned()
            }
        };
        let skip = per_slot
            .iter()
            .map(|c| {
                // A slot checkpoint of another history (left from before a full
                // resync, in a slot the new one never wrote) says nothing of this one.
                c.as_ref()
                    .filter(|c| !c.state.is_full())
                    .filter(|c| start.as_ref().is_some_and(|s| s.pos.replid == c.pos.replid))
                    .map(|c| c.pos.offset)
            })
            .collect();
        let held = per_slot.iter().flatten().count();
        info!(target = %cfg.target, masters = nodes.topo.shards.len(), slot_checkpoints = held,
              "cluster target");
        let links = Vec::new();
        let (applied, _) = watch::channel(start.clone());
        let cfg_endpoint = cfg.target.to_string();
        Ok(Self {
            run: super::checkpoint::new_run_id(),
            cfg,
            nodes,
            links,
            next_seq: 1,
            slots: (0..SLOTS).map(|_| SlotOpen::default()).collect(),
            spare: Vec::new(),
            open_list: VecDeque::new(),
            listed: vec![false; SLOTS as usize],
            busy: vec![false; SLOTS as usize],
            open_cmds: 0,
            open_bytes: 0,
            ckpt_keys: vec![None; SLOTS as usize],
            retry: VecDeque::new(),
            unit: Vec::new(),
            parts: Vec::new(),
            epochs: Vec::new(),
            epoch: 0,
            slot_epoch: vec![0; SLOTS as usize],
            slot_ticket: vec![0; SLOTS as usize],
            slot_confirmed: vec![(0, 0); SLOTS as usize],
            applied_at: None,
            frontier: Frontier::default(),
            skip: Some(skip),
            start,
            applied,
            floor_key,
            floor_written: None,
            floor_at: Instant::now(),
            endpoint: cfg_endpoint,
            bulk,
            plain: Vec::new(),
            plain_spare: Vec::new(),
            holds: HashMap::new(),
            last_full: None,
        })
    }

    fn pump_commands(&self) -> usize {
        self.cfg.batch_commands.saturating_mul(PUMP_COMMANDS_FACTOR)
    }

    fn pump_bytes(&self) -> usize {
        self.cfg.batch_bytes.saturating_mul(PUMP_BYTES_FACTOR)
    }

    /// Append `part` (of a unit ending at source offset `end_offset`, in the current
    /// epoch) to its slot's open batch, unless the slot's checkpoint already holds it.
    fn queue_part(&mut self, part: &Part, end_offset: u64) {
        let (slot, offset) = (part.slot, part.offset);
        if let Some(skip) = &self.skip
            && skip[slot as usize].is_some_and(|held| offset <= held)
        {
            return;
        }
        let open = &mut self.slots[slot as usize];
        let fresh = open.origin.is_empty();
        if fresh {
            if !self.listed[slot as usize] {
                self.listed[slot as usize] = true;
                self.open_list.push_back(slot);
            }
            match self.spare.pop() {
                Some(spare) => *open = spare,
                None => open.buf.reserve(SLOT_BUF_START),
            }
            self.slot_ticket[slot as usize] = self.frontier.open();
        }
        // Counted from before MULTI: closing the batch takes back its whole length.
        let before = open.buf.len();
        if fresh {
            // The batch is built in place: MULTI first, the checkpoint and EXEC appended
            // when it closes, so closing copies nothing.
            encode_command(&mut open.buf, &[b"MULTI"]);
        }
        match &part.raw {
            Some(raw) => open.buf.extend_from_slice(raw),
            None => {
                let args: Vec<&[u8]> = part.argv.iter().map(|a| a.as_ref()).collect();
                encode_command(&mut open.buf, &args);
            }
        }
        self.open_bytes += open.buf.len() - before;
        open.origin.push(Some(offset));
        self.open_cmds += 1;
        open.end_offset = end_offset;
        self.slot_epoch[slot as usize] = self.epoch;
    }

    /// The checkpoint of a batch of epoch `epoch` ending at source offset `offset`.
    fn checkpoint_at(&self, epoch: u32, offset: u64, seq: u64) -> TargetCheckpoint {
        let epoch = &self.epochs[epoch as usize];
        TargetCheckpoint {
            pos: ReplPosition {
                replid: epoch.replid.clone(),
                offset,
            },
            db: epoch.db,
            state: epoch.state,
            run: self.run.clone(),
            seq,
        }
    }

    /// Close slot `slot`'s open batch with its checkpoint.
    fn build(&mut self, slot: u16) -> Sent {
        let open = std::mem::take(&mut self.slots[slot as usize]);
        let epoch = self.slot_epoch[slot as usize];
        let ckpt = self.checkpoint_at(epoch, open.end_offset, self.next_seq);
        let epoch = &self.epochs[epoch as usize];
        self.next_seq += 1;
        self.open_cmds -= open.origin.len();
        self.open_bytes -= open.buf.len();
        let mut buf = open.buf;
        let key = self.ckpt_keys[slot as usize]
            .get_or_insert_with(|| Bytes::from(slot_ckpt_key(&self.cfg.id, slot)))
            .clone();
        epoch.stem.encode(&mut buf, &key, ckpt.pos.offset, ckpt.seq);
        encode_command(&mut buf, &[b"EXEC"]);
        let mut origin = open.origin;
        let data_commands = origin.len();
        origin.push(None);
        self.busy[slot as usize] = true;
        Sent {
            slot,
            batch: Batch {
                payload: buf.freeze(),
                origin,
                data_commands,
                ckpt,
                plain: false,
            },
            ticket: Some(self.slot_ticket[slot as usize]),
            ask: None,
            node: None,
            not_before: None,
            retry: None,
            floor: false,
        }
    }

    fn link(&mut self, node: usize) -> &mut NodeLink {
        while self.links.len() <= node {
            self.links.push(NodeLink {
                conn: None,
                in_flight: VecDeque::new(),
                unflushed: 0,
            });
        }
        &mut self.links[node]
    }

    /// Queue `sent` on its node's pipeline (not flushed).
    async fn send(&mut self, mut sent: Sent) -> Result<(), SinkError> {
        if self.nodes.has_changed() {
            self.verify_owners().await?;
        }
        let node = match sent
            .ask
            .or(sent.node)
            .or_else(|| self.nodes.owner(sent.slot))
        {
            Some(n) => n,
            None => {
                self.nodes.refresh().await.ok();
                return self
                    .postpone(sent, "slot not served by any master".into())
                    .await;
            }
        };
        while self.link(node).in_flight.len() >= NODE_WINDOW {
            self.settle(node).await?;
        }
        if self.link(node).conn.is_none() {
            match self.nodes.open(node).await {
                Ok(c) => self.link(node).conn = Some(c),
                Err(e) if e.is_retryable() && sent.batch.plain => {
                    self.nodes.refresh().await.ok();
                    let b = sent
                        .retry
                        .get_or_insert_with(|| Backoff::new(self.cfg.give_up_after));
                    b.wait(&self.cfg.target, &e.to_string()).await?;
                    self.plain_lost(sent);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    sent.ask = None;
                    self.nodes.refresh().await.ok();
                    return self.postpone(sent, e.to_string()).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let link = self.link(node);
        let conn = link.conn.as_mut().expect("connected");
        if sent.ask.is_some() {
            conn.queue(&[b"ASKING"]);
        }
        conn.queue_raw(&sent.batch.payload);
        link.in_flight.push_back(sent);
        link.unflushed += 1;
        if link.unflushed >= FLUSH_BATCHES
            && let Err(e) = link.flush().await
        {
            return self.node_failed(node, e).await;
        }
        Ok(())
    }

    /// Resend later (retryable refusal, no route yet); gives up after `give_up_after`.
    /// A floor checkpoint is dropped instead (see `read_front`).
    async fn postpone(&mut self, mut sent: Sent, why: String) -> Result<(), SinkError> {
        if sent.floor {
            self.floor_written = None;
            return Ok(());
        }
        let b = sent
            .retry
            .get_or_insert_with(|| Backoff::new(self.cfg.give_up_after));
        // The backoff sleeps; fine, since every other batch keeps flowing on the servers.
        b.wait(&self.cfg.target, &why).await?;
        sent.not_before = None;
        self.retry.push_back(sent);
        Ok(())
    }

    /// Send every open slot that has no batch in flight, and every retry.
    async fn pump(&mut self) -> Result<(), SinkError> {
        let retries = std::mem::take(&mut self.retry);
        for s in retries {
            self.send(s).await?;
        }
        for _ in 0..self.open_list.len() {
            self.send_oldest().await?;
        }
        self.flush_links().await
    }

    /// Take the oldest entry of the open list: send its slot's batch, or put it back at
    /// the end while the slot has a batch in flight. Returns whether a batch was sent.
    async fn send_oldest(&mut self) -> Result<bool, SinkError> {
        let Some(slot) = self.open_list.pop_front() else {
            return Ok(false);
        };
        if self.slots[slot as usize].origin.is_empty() {
            self.listed[slot as usize] = false;
            return Ok(false);
        }
        if self.busy[slot as usize] {
            self.open_list.push_back(slot);
            return Ok(false);
        }
        self.listed[slot as usize] = false;
        let s = self.build(slot);
        self.send(s).await?;
        Ok(true)
    }

    fn over_pump(&self, factor: usize) -> bool {
        self.open_cmds >= self.pump_commands().saturating_mul(factor)
            || self.open_bytes >= self.pump_bytes().saturating_mul(factor)
    }

    /// Send what every node's connection has buffered.
    async fn flush_links(&mut self) -> Result<(), SinkError> {
        for node in 0..self.links.len() {
            if let Err(e) = self.links[node].flush().await {
                self.node_failed(node, e).await?;
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.links.iter().map(|l| l.in_flight.len()).sum()
    }

    /// Read the replies of the oldest batch on `node` and act on them.
    ///
    /// The node's write buffer is flushed first: `send` settles when a node's window is
    /// full in the middle of a `pump`, and the batches this pump queued are still in the
    /// buffer (a pump of `--batch-commands` keys spread over the slots makes hundreds of
    /// slot batches per master). Waiting for the replies to bytes never sent only ended
    /// with the reply timeout, the connection "lost", and the same again on resend.
    ///
    /// Only then: flushing on every settle made one write syscall per slot batch once
    /// the window was full (an eighth of tandem's time in the cluster catch-up profile).
    async fn settle(&mut self, node: usize) -> Result<(), SinkError> {
        let link = &mut self.links[node];
        if link.unflushed >= link.in_flight.len()
            && let Err(e) = link.flush().await
        {
            return self.node_failed(node, e).await;
        }
        match self.read_front(node).await {
            Ok(()) => Ok(()),
            Err(Failure::Conn(e)) => self.node_failed(node, e).await,
            Err(Failure::Sink(e)) => Err(e),
        }
    }

    async fn read_front(&mut self, node: usize) -> Result<(), Failure> {
        let link = &mut self.links[node];
        let conn = link.conn.as_mut().expect("in flight means connected");
        let front = link.in_flight.front().expect("a batch in flight");
        if front.batch.plain {
            return self.read_plain(node).await;
        }
        if front.ask.is_some() {
            conn.read_frame().await?;
        }
        let expected = front.batch.replies();
        let mut queued_error: Option<(usize, String)> = None;
        let mut exec = None;
        for i in 0..expected {
            if i + 1 < expected && conn.skip_buffered(b"+QUEUED\r\n") {
                continue;
            }
            if i + 1 == expected
                && queued_error.is_none()
                && let Some(n) = conn.skip_clean_array().await?
            {
                // Every command succeeded: nothing to look at in the results.
                let commands = link.in_flight.front().map_or(0, |f| f.batch.origin.len());
                if n != commands {
                    return Err(Failure::Conn(ConnError::Protocol {
                        endpoint: self.nodes.endpoint(node).to_string(),
                        detail: format!("EXEC answered {n} results for {commands} commands"),
                    }));
                }
                let sent = link.in_flight.pop_front().expect("a batch in flight");
                self.confirm(sent);
                return Ok(());
            }
            let frame = conn.read_frame().await?;
            if i + 1 == expected {
                exec = Some(frame);
            } else if let Frame::Error(e) = frame {
                queued_error.get_or_insert((i.saturating_sub(1), e.to_string()));
            }
        }
        let mut sent = link.in_flight.pop_front().expect("a batch in flight");
        match exec.expect("at least MULTI and EXEC") {
            Frame::Array(results) => {
                for (i, r) in results.iter().enumerate() {
                    if let Frame::Error(e) = r {
                        self.command_failed(&sent, i, e)?;
                    }
                }
                self.confirm(sent);
                Ok(())
            }
            Frame::Error(e) => {
                let (i, cause) = queued_error.unwrap_or((usize::MAX, e.to_string()));
                if sent.floor
                    && (redirect(&cause).is_some() || classify_reply(&cause) == ReplyClass::Retry)
                {
                    // Never resent: a newer floor may land first, and the old one after
                    // it would move the floor back. The next flush writes the newest.
                    self.floor_written = None;
                    return Ok(());
                }
                match redirect(&cause) {
                    Some(Redirect::Moved(addr)) => {
                        sent.ask = None;
                        self.nodes.moved(sent.slot, &addr);
                        // Redirected again: the map lags; do not spin.
                        match sent.retry.as_mut() {
                            Some(b) => b.wait_quietly().await.map_err(Failure::Sink)?,
                            None => sent.retry = Some(Backoff::new(self.cfg.give_up_after)),
                        }
                        self.retry.push_back(sent);
                        Ok(())
                    }
                    Some(Redirect::Ask(addr)) => {
                        sent.ask = Some(self.nodes.index_of_addr(&addr));
                        self.retry.push_back(sent);
                        Ok(())
                    }
                    None => {
                        let err = self.refusal(&sent, i, &cause);
                        if classify_reply(&cause) == ReplyClass::Retry {
                            sent.ask = None;
                            self.postpone(sent, err.to_string())
                                .await
                                .map_err(Failure::Sink)
                        } else {
                            Err(Failure::Sink(err))
                        }
                    }
                }
            }
            other => Err(Failure::Conn(ConnError::Protocol {
                endpoint: self.nodes.endpoint(node).to_string(),
                detail: format!("EXEC answered {other:?}"),
            })),
        }
    }

    fn origin(batch: &Batch, i: usize) -> (String, u64) {
        batch.describe(i, "(tandem checkpoint)")
    }

    fn refusal(&self, sent: &Sent, i: usize, message: &str) -> SinkError {
        let (command, offset) = Self::origin(&sent.batch, i);
        self.refused(&command, offset, format!("slot {}: {message}", sent.slot))
    }

    fn command_failed(&self, sent: &Sent, i: usize, message: &str) -> Result<(), Failure> {
        let (command, offset) = Self::origin(&sent.batch, i);
        if classify_reply(message) == ReplyClass::Fatal || sent.batch.origin.get(i) == Some(&None) {
            return Err(Failure::Sink(self.refusal(sent, i, message)));
        }
        crate::metrics::sink_command_error(&command);
        error!(target = %self.cfg.target, command = %command, offset, slot = sent.slot,
               "target rejected a replicated command (source and target differ): {message}");
        Ok(())
    }

    /// The batch is on the target.
    fn confirm(&mut self, sent: Sent) {
        if sent.floor {
            return;
        }
        self.cfg.confirmed(sent.batch.data_commands);
        if let Some(t) = sent.ticket {
            self.release(t);
        }
        self.advance();
        if sent.batch.plain {
            self.recycle_plain(sent.batch.payload);
            return;
        }
        self.busy[sent.slot as usize] = false;
        self.slot_confirmed[sent.slot as usize] = (sent.batch.ckpt.seq, sent.batch.ckpt.pos.offset);
        self.recycle(sent);
    }

    /// Keep a confirmed batch's buffers for a later slot batch (up to a bound).
    fn recycle(&mut self, sent: Sent) {
        const SPARE_MAX: usize = 1024;
        if self.spare.len() >= SPARE_MAX {
            return;
        }
        let Ok(mut buf) = sent.batch.payload.try_into_mut() else {
            return;
        };
        if buf.capacity() > 4 * SLOT_BUF_START {
            return; // a big batch: do not keep its memory around
        }
        buf.clear();
        let mut origin = sent.batch.origin;
        origin.clear();
        self.spare.push(SlotOpen {
            buf,
            origin,
            end_offset: 0,
        });
    }

    fn advance(&mut self) {
        let Some((pos, db, state)) = self.frontier.landed() else {
            return;
        };
        let moved = self.applied_at.as_ref().is_none_or(|(replid, offset, st)| {
            *offset != pos.offset || st != state || *replid != pos.replid
        });
        if moved {
            self.applied_at = Some((pos.replid.clone(), pos.offset, *state));
            self.applied.send_replace(Some(TargetCheckpoint {
                pos: pos.clone(),
                db: *db,
                state: *state,
                run: self.run.clone(),
                seq: 0,
            }));
        }
    }

    /// `node`'s connection broke: learn from the slot checkpoints which of its batches
    /// landed; resend the others (to whoever owns their slot now).
    ///
    /// A slot still served by the same node must hold at least the last batch it
    /// confirmed: otherwise the node restarted without the writes it had confirmed, and
    /// resending only the batches in flight would leave a hole (it did: the counters of
    /// its slots restarted from the batches in flight). A slot now served by another
    /// node (a failover) is checked before its next batch goes out (`owners.rs`).
    async fn node_failed(&mut self, node: usize, e: ConnError) -> Result<(), SinkError> {
        if !e.is_retryable() {
            return Err(e.into());
        }
        crate::metrics::sink_retry();
        tracing::warn!(target = %self.nodes.endpoint(node), "cluster target connection lost: {e}");
        let link = &mut self.links[node];
        link.conn = None;
        link.unflushed = 0;
        let lost: Vec<Sent> = link.in_flight.drain(..).collect();
        let failed = self.nodes.addrs[node].clone();
        self.nodes.refresh().await.ok();
        for mut sent in lost {
            if sent.floor {
                // Rewritten by the next flush, with whatever is applied by then.
                self.floor_written = None;
                continue;
            }
            if sent.batch.plain {
                self.plain_lost(sent);
                continue;
            }
            let key = Bytes::from(slot_ckpt_key(&self.cfg.id, sent.slot));
            let held = read_ckpt(&mut self.nodes, &key).await?;
            let (had_seq, had_offset) = self.slot_confirmed[sent.slot as usize];
            let holds = |seq: u64| {
                held.as_ref()
                    .is_some_and(|h| h.run == self.run && h.seq >= seq)
            };
            let same_node = self.nodes.owner(sent.slot).is_some_and(|n| {
                let now = &self.nodes.addrs[n];
                if now.id.is_empty() || failed.id.is_empty() {
                    now.addr() == failed.addr()
                } else {
                    now.id == failed.id
                }
            });
            if had_seq > 0 && same_node && !holds(had_seq) {
                return Err(SinkError::TargetWentBack {
                    endpoint: self.nodes.endpoint(node).to_string(),
                    had: format!("offset {had_offset} in slot {}", sent.slot),
                    now: held.map_or("none".into(), |h| format!("offset {}", h.pos.offset)),
                    fix: "remove tandem's checkpoints (__tandem:ckpt:<id>*) on every master \
                          and restart tandem to copy again",
                });
            }
            let landed = holds(sent.batch.ckpt.seq);
            if landed {
                self.confirm(sent);
            } else {
                sent.ask = None;
                self.retry.push_back(sent);
            }
        }
        Ok(())
    }

    /// Send everything and wait until the target confirmed all of it.
    async fn drain(&mut self) -> Result<(), SinkError> {
        loop {
            self.send_plain(true).await?;
            self.pump().await?;
            if self.in_flight() == 0 {
                if self.retry.is_empty() && self.open_list.is_empty() && !self.plain_open() {
                    return Ok(());
                }
                continue;
            }
            let node = (0..self.links.len())
                .find(|&n| !self.links[n].in_flight.is_empty())
                .expect("something in flight");
            self.settle(node).await?;
        }
    }

    /// Queue the floor checkpoint (what `applied` says, if it moved) on its master's
    /// pipeline and send it, without waiting for the reply: the next drain reads it.
    /// Waiting made every idle flush one more round trip, in series with the batches.
    async fn queue_floor(&mut self) -> Result<(), SinkError> {
        let Some(c) = self.applied.borrow().clone() else {
            return Ok(());
        };
        if self.floor_written == Some((c.pos.offset, c.state)) {
            return Ok(());
        }
        self.floor_written = Some((c.pos.offset, c.state));
        self.floor_at = Instant::now();
        let mut buf = BytesMut::with_capacity(256);
        encode_command(&mut buf, &[b"MULTI"]);
        c.encode_hset(&mut buf, &self.floor_key);
        encode_command(&mut buf, &[b"EXEC"]);
        let sent = Sent {
            slot: key_slot(&self.floor_key),
            batch: Batch {
                payload: buf.freeze(),
                origin: vec![None],
                data_commands: 0,
                ckpt: c,
                plain: false,
            },
            ticket: None,
            ask: None,
            node: None,
            not_before: None,
            retry: None,
            floor: true,
        };
        self.send(sent).await?;
        self.flush_links().await
    }

    /// Rewrite the floor checkpoint to what `applied` says, if it moved, and wait for it.
    async fn write_floor(&mut self) -> Result<(), SinkError> {
        let Some(c) = self.applied.borrow().clone() else {
            return Ok(());
        };
        if self.floor_written == Some((c.pos.offset, c.state)) {
            return Ok(());
        }
        let argv = c.hset_argv(&self.floor_key);
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        let slot = key_slot(&self.floor_key);
        match self.nodes.request_slot(slot, &args).await? {
            Frame::Error(e) => {
                Err(self.refused("(tandem checkpoint)", c.pos.offset, e.to_string()))
            }
            _ => {
                self.floor_written = Some((c.pos.offset, c.state));
                self.floor_at = Instant::now();
                Ok(())
            }
        }
    }

    /// Keyless write: everything before it lands, then it runs on every master.
    async fn keyless(&mut self, argv: &[Bytes], offset: u64) -> Result<(), SinkError> {
        self.drain().await?;
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        for (node, reply) in self.nodes.request_all(&args).await? {
            if let Frame::Error(e) = reply {
                let name = String::from_utf8_lossy(&argv[0]).to_ascii_uppercase();
                if classify_reply(&e) == ReplyClass::Fatal {
                    return Err(self.refused(&name, offset, e.to_string()));
                }
                // Replayed after a crash (FUNCTION LOAD of a library already there)
                // or a diverged target: logged, as any data error.
                crate::metrics::sink_command_error(&name);
                error!(target = %self.nodes.endpoint(node), command = %name, offset,
                       "target rejected a keyless command: {e}");
            }
        }
        Ok(())
    }
}

enum Failure {
    Conn(ConnError),
    Sink(SinkError),
}

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Self {
        Failure::Conn(e)
    }
}

impl Sink for ClusterSink {
    async fn write(&mut self, db: u32, argv: Vec<Bytes>, offset: u64) -> Result<(), SinkError> {
        self.bulk.check_argv(&self.endpoint, &argv, offset)?;
        self.unit.push(UnitWrite {
            db,
            argv,
            offset,
            raw: None,
            slot: None,
        });
        Ok(())
    }

    async fn write_encoded(
        &mut self,
        db: u32,
        argv: Vec<Bytes>,
        raw: Bytes,
        offset: u64,
    ) -> Result<(), SinkError> {
        self.bulk.check_raw(&self.endpoint, &raw, offset)?;
        self.unit.push(UnitWrite {
            db,
            argv,
            offset,
            raw: Some(raw),
            slot: None,
        });
        Ok(())
    }

    async fn write_keyed(
        &mut self,
        db: u32,
        name: &'static [u8],
        key: Bytes,
        raw: Bytes,
        offset: u64,
    ) -> Result<(), SinkError> {
        self.bulk.check_raw(&self.endpoint, &raw, offset)?;
        self.unit.push(UnitWrite {
            db,
            slot: Some(key_slot(&key)),
            argv: vec![Bytes::from_static(name), key],
            offset,
            raw: Some(raw),
        });
        Ok(())
    }

    async fn end_unit(
        &mut self,
        pos: ReplPosition,
        db: u32,
        state: CkptState,
    ) -> Result<(), SinkError> {
        let mut writes = std::mem::take(&mut self.unit);
        let mut parts = std::mem::take(&mut self.parts);
        if state.is_full() {
            // A full sync starts another history: the held checkpoints say nothing of it.
            self.skip = None;
        }
        parts.clear();
        let routed = self.route(&mut writes, &mut parts, state);
        writes.clear();
        self.unit = writes;
        let keyless = routed?;
        let full = state.is_full();
        if self.last_full.is_some_and(|f| f != full) {
            // Plain batches may be resent in any order: none may be left when the
            // stream's writes (or another full sync's) start.
            self.drain().await?;
        }
        self.last_full = Some(full);
        for (argv, off) in &keyless {
            self.keyless(argv, *off).await?;
        }
        let same = |e: &Epoch| e.replid == pos.replid && e.db == db && e.state == state;
        if !self.epochs.get(self.epoch as usize).is_some_and(same) {
            self.epoch = match self.epochs.iter().position(same) {
                Some(i) => i as u32,
                None => {
                    let stem = HsetStem::new(pos.replid.as_bytes(), db, state, self.run.as_bytes());
                    self.epochs.push(Epoch {
                        replid: pos.replid.clone(),
                        db,
                        state,
                        stem,
                    });
                    self.epochs.len() as u32 - 1
                }
            };
        }
        for part in &parts {
            if !(full && part.keyed && self.queue_plain(part, pos.offset)) {
                self.queue_part(part, pos.offset);
            }
        }
        self.frontier.end_unit((pos, db, state));
        self.advance();
        if !keyless.is_empty() {
            // The barrier is complete once this unit is; record it at once.
            self.drain().await?;
            self.write_floor().await?;
        }
        if full {
            self.send_plain(false).await?;
            if self.floor_at.elapsed() >= FLOOR_EVERY {
                self.queue_floor().await?;
            }
        }
        // A slot batch that reached --batch-commands goes now (a hot slot, or a big key
        // being rewritten); the rest wait for the pump threshold.
        for &Part { slot, keyed, .. } in &parts {
            if full && keyed {
                continue;
            }
            let open = &self.slots[slot as usize];
            if !self.busy[slot as usize]
                && (open.origin.len() >= self.cfg.batch_commands
                    || open.buf.len() >= self.cfg.batch_bytes)
            {
                // Its open-list entry goes stale (skipped when reached).
                let sent = self.build(slot);
                self.send(sent).await?;
            }
        }
        if self.over_pump(1) {
            let mut turns = self.open_list.len();
            while turns > 0 && self.over_pump(1) {
                turns -= 1;
                self.send_oldest().await?;
            }
            // Bound memory: slots busy with a batch keep accumulating.
            while self.over_pump(2) && self.in_flight() > 0 {
                let node = (0..self.links.len())
                    .find(|&n| !self.links[n].in_flight.is_empty())
                    .expect("something in flight");
                self.settle(node).await?;
                self.pump().await?;
            }
            if self.floor_at.elapsed() >= FLOOR_EVERY {
                self.queue_floor().await?;
            }
        }
        self.parts = parts;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.drain().await?;
        self.queue_floor().await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.drain().await?;
        self.write_floor().await
    }

    fn applied(&self) -> watch::Receiver<Option<TargetCheckpoint>> {
        self.applied.subscribe()
    }

    fn checkpoint_at_start(&self) -> Option<&TargetCheckpoint> {
        self.start.as_ref()
    }

    fn masters(&self) -> Vec<Endpoint> {
        let nodes = &self.nodes;
        nodes.masters().iter().map(|&n| nodes.endpoint(n)).collect()
    }

    async fn query(&mut self, argv: &[&[u8]]) -> Result<Frame, SinkError> {
        self.drain().await?;
        let node = self.nodes.masters()[0];
        Ok(self.nodes.request_node(node, false, argv).await?)
    }
}
