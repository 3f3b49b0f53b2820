//! Full-sync RESTOREs into a cluster target: one plain pipeline per master.
//!
//! In state `full` a slot checkpoint buys nothing (a restart copies everything again) and
//! a RESTORE … REPLACE lands the same however often it is sent. So the RESTOREs of a full
//! sync are not held per slot in `MULTI … EXEC` with a checkpoint each: that made 16384
//! small batches of about 15 keys, each costing the target three commands more and
//! tandem an allocation per batch (0.6–0.7× of the rate into a standalone target). They
//! go instead into one open pipeline per master, sent at `--batch-commands` or
//! `--batch-bytes` without `MULTI`.
//!
//! What a plain batch gives up is atomicity and the "which landed" answer of a slot
//! checkpoint; it never needs them: a command refused with `MOVED`, `ASK` or a retryable
//! error is sent again on its own route, and after a lost connection every command of the
//! batch is sent again. Rewritten big keys (DEL, then chunks) are not idempotent and stay
//! in slot transactions. The engine drains the sink when its state changes between full
//! and incremental, so no RESTORE resent late can land over a later write of its key.
//!
//! A batch split over several routes keeps its ticket in the frontier until every part
//! is confirmed (`holds`).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{ClusterSink, Failure, Part, Sent};
use crate::redis::cluster::nodes::{Backoff, Redirect, redirect};
use crate::redis::conn::{Frame, encode_command};
use crate::redis::scan::{self, Scan};
use crate::redis::sink::batch::Batch;
use crate::redis::sink::{ReplyClass, SinkError, classify_reply};
use crate::redis::slot::key_slot;

/// A master's open pipeline of full-sync RESTOREs.
#[derive(Default)]
pub(super) struct PlainOpen {
    buf: BytesMut,
    origin: Vec<Option<u64>>,
    end_offset: u64,
    epoch: u32,
    ticket: u64,
    first_slot: u16,
}

/// Spare pipeline buffers kept per master.
const SPARE_PER_NODE: usize = 2;
/// Batches in flight per master before the oldest one's replies are read: a sent batch
/// is kept until confirmed (to resend it), so without a bound a full sync held every
/// RESTORE sent and not yet read back (row 5: 127 MB peak RSS). 4 gave 40 MB but 0.87×
/// of the standalone rate (tandem waited on one master while the others ran dry), 12
/// 62 MB and 0.93× (docs/BENCHMARKS.md).
const PLAIN_WINDOW: usize = 12;

impl ClusterSink {
    /// Append a full-sync RESTORE to its master's pipeline; `false` when the slot has no
    /// known master (the caller queues it on the slot's batch, which waits for one).
    pub(super) fn queue_plain(&mut self, part: &Part, end_offset: u64) -> bool {
        let (Some(node), Some(raw)) = (self.nodes.owner(part.slot), part.raw.as_ref()) else {
            return false;
        };
        while self.plain.len() <= node {
            self.plain.push(PlainOpen::default());
        }
        if self.plain[node].origin.is_empty() {
            let ticket = self.frontier.open();
            let buf = self.plain_spare.pop().unwrap_or_else(|| {
                BytesMut::with_capacity(self.cfg.batch_bytes.min(1 << 20) + 4096)
            });
            let open = &mut self.plain[node];
            open.buf = buf;
            open.ticket = ticket;
            open.first_slot = part.slot;
        }
        let open = &mut self.plain[node];
        open.buf.extend_from_slice(raw);
        open.origin.push(Some(part.offset));
        open.end_offset = end_offset;
        open.epoch = self.epoch;
        true
    }

    /// Send the masters' pipelines that reached a batch's size (all of them with
    /// `force`), each flushed at once: a plain batch is a whole `--batch-commands`.
    pub(super) async fn send_plain(&mut self, force: bool) -> Result<(), SinkError> {
        for node in 0..self.plain.len() {
            let open = &self.plain[node];
            let due = !open.origin.is_empty()
                && (force
                    || open.origin.len() >= self.cfg.batch_commands
                    || open.buf.len() >= self.cfg.batch_bytes);
            if !due {
                continue;
            }
            let sent = self.build_plain(node);
            self.send(sent).await?;
            if let Err(e) = self.link(node).flush().await {
                self.node_failed(node, e).await?;
            }
            while self.links[node].in_flight.len() > PLAIN_WINDOW {
                self.settle(node).await?;
            }
        }
        Ok(())
    }

    fn build_plain(&mut self, node: usize) -> Sent {
        let open = std::mem::take(&mut self.plain[node]);
        let ckpt = self.checkpoint_at(open.epoch, open.end_offset, 0);
        Sent {
            slot: open.first_slot,
            batch: Batch {
                payload: open.buf.freeze(),
                data_commands: open.origin.len(),
                origin: open.origin,
                ckpt,
                plain: true,
            },
            ticket: Some(open.ticket),
            ask: None,
            node: Some(node),
            not_before: None,
            retry: None,
            floor: false,
        }
    }

    /// Read the replies of the plain batch at the front of `node`'s pipeline: confirm
    /// it, or send its refused commands again on their routes.
    pub(super) async fn read_plain(&mut self, node: usize) -> Result<(), Failure> {
        let link = &mut self.links[node];
        let conn = link.conn.as_mut().expect("in flight means connected");
        let n = link
            .in_flight
            .front()
            .expect("a batch in flight")
            .batch
            .replies();
        let mut errors = Vec::new();
        for i in 0..n {
            if conn.skip_buffered(b"+OK\r\n") {
                continue;
            }
            if let Frame::Error(e) = conn.read_frame().await? {
                errors.push((i, e.to_string()));
            }
        }
        let mut sent = link.in_flight.pop_front().expect("a batch in flight");
        if errors.is_empty() {
            self.confirm(sent);
            return Ok(());
        }
        let mut redo = Vec::new();
        let mut retry_why = None;
        let mut commands = None;
        for (i, e) in errors {
            if sent.batch.origin[i].is_none() {
                // An ASKING: the command after it says what happened.
                continue;
            }
            match redirect(&e) {
                Some(Redirect::Moved(addr)) => {
                    let cmds = commands.get_or_insert_with(|| split(&sent.batch.payload));
                    if let Some(slot) = cmds.get(i).and_then(|c| c.1) {
                        self.nodes.moved(slot, &addr);
                    }
                    redo.push((i, None));
                }
                Some(Redirect::Ask(addr)) => {
                    redo.push((i, Some(self.nodes.index_of_addr(&addr))));
                }
                None if classify_reply(&e) == ReplyClass::Retry => {
                    retry_why.get_or_insert_with(|| self.refusal(&sent, i, &e).to_string());
                    redo.push((i, None));
                }
                None => self.command_failed(&sent, i, &e)?,
            }
        }
        if redo.is_empty() {
            self.confirm(sent);
            return Ok(());
        }
        self.cfg
            .confirmed(sent.batch.data_commands.saturating_sub(redo.len()));
        let had_retry = sent.retry.is_some();
        let mut backoff = sent
            .retry
            .take()
            .unwrap_or_else(|| Backoff::new(self.cfg.give_up_after));
        // Redirected again, the map lags: do not spin (as for slot batches).
        let waited = match retry_why {
            Some(why) => backoff.wait(&self.cfg.target, &why).await,
            None if had_retry => backoff.wait_quietly().await,
            None => Ok(()),
        };
        waited.map_err(Failure::Sink)?;
        self.reroute(sent, &redo, backoff);
        Ok(())
    }

    /// `node`'s connection broke with this plain batch in flight: send every command of
    /// it again, to whoever owns its slot now (the slot map was refreshed).
    pub(super) fn plain_lost(&mut self, mut sent: Sent) {
        let redo: Vec<(usize, Option<usize>)> = (0..sent.batch.origin.len())
            .filter(|&i| sent.batch.origin[i].is_some())
            .map(|i| (i, None))
            .collect();
        let backoff = sent
            .retry
            .take()
            .unwrap_or_else(|| Backoff::new(self.cfg.give_up_after));
        self.reroute(sent, &redo, backoff);
    }

    /// Queue commands `redo` of `sent` for resending, one plain batch per route (`ASK`:
    /// that node, after `ASKING`; otherwise the slot's master).
    fn reroute(&mut self, sent: Sent, redo: &[(usize, Option<usize>)], backoff: Backoff) {
        let cmds = split(&sent.batch.payload);
        let fallback = sent.node.unwrap_or_default();
        let mut routes: Vec<(usize, Sent)> = Vec::new();
        for &(i, ask) in redo {
            let Some((range, slot)) = cmds.get(i).cloned() else {
                continue;
            };
            let node = ask
                .or_else(|| slot.and_then(|s| self.nodes.owner(s)))
                .unwrap_or(fallback);
            let k = match routes.iter().position(|(n, _)| *n == node) {
                Some(k) => k,
                None => {
                    routes.push((node, self.empty_plain(&sent, node, slot, backoff.clone())));
                    routes.len() - 1
                }
            };
            let batch = &mut routes[k].1.batch;
            let mut buf = BytesMut::from(std::mem::take(&mut batch.payload));
            if ask.is_some() {
                encode_command(&mut buf, &[b"ASKING"]);
                batch.origin.push(None);
            }
            buf.extend_from_slice(&sent.batch.payload[range]);
            batch.payload = buf.freeze();
            batch.origin.push(sent.batch.origin[i]);
            batch.data_commands += 1;
        }
        if let Some(t) = sent.ticket {
            if routes.is_empty() {
                self.release(t);
            } else {
                *self.holds.entry(t).or_insert(1) += routes.len() - 1;
            }
        }
        self.retry.extend(routes.into_iter().map(|(_, s)| s));
    }

    fn empty_plain(&self, sent: &Sent, node: usize, slot: Option<u16>, retry: Backoff) -> Sent {
        Sent {
            slot: slot.unwrap_or(sent.slot),
            batch: Batch {
                payload: Bytes::new(),
                origin: Vec::new(),
                data_commands: 0,
                ckpt: sent.batch.ckpt.clone(),
                plain: true,
            },
            ticket: sent.ticket,
            ask: None,
            node: Some(node),
            not_before: None,
            retry: Some(retry),
            floor: false,
        }
    }

    /// A batch holding `ticket` is confirmed: confirm the ticket once every batch a split
    /// made of it is.
    pub(super) fn release(&mut self, ticket: u64) {
        match self.holds.get_mut(&ticket) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.holds.remove(&ticket);
                self.frontier.confirm(ticket);
            }
            None => self.frontier.confirm(ticket),
        }
    }

    /// Keep a confirmed plain batch's buffer for the next one.
    pub(super) fn recycle_plain(&mut self, payload: Bytes) {
        if self.plain_spare.len() >= SPARE_PER_NODE * self.plain.len().max(1) {
            return;
        }
        if let Ok(mut buf) = payload.try_into_mut() {
            buf.clear();
            self.plain_spare.push(buf);
        }
    }

    /// Whether any master's pipeline holds commands not yet sent.
    pub(super) fn plain_open(&self) -> bool {
        self.plain.iter().any(|o| !o.origin.is_empty())
    }
}

/// Each command of a payload: its bytes and its key's slot (`None` for a keyless one).
fn split(payload: &[u8]) -> Vec<(Range<usize>, Option<u16>)> {
    let mut out = Vec::new();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let rest = &payload[at..];
        let Scan::Complete { used } = scan::command(rest, &mut spans) else {
            break;
        };
        let slot = spans.get(1).map(|r| key_slot(&rest[r.clone()]));
        out.push((at..at + used, slot));
        at += used;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_each_command_and_its_slot() {
        let mut buf = BytesMut::new();
        encode_command(&mut buf, &[b"RESTORE", b"foo", b"0", b"x", b"REPLACE"]);
        encode_command(&mut buf, &[b"ASKING"]);
        encode_command(&mut buf, &[b"RESTORE", b"{foo}bar", b"0", b"y", b"REPLACE"]);
        let cmds = split(&buf);
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].1, Some(key_slot(b"foo")));
        assert_eq!(cmds[1].1, None);
        assert_eq!(cmds[2].1, Some(key_slot(b"foo")));
        assert_eq!(cmds[2].0.end, buf.len());
        assert_eq!(&buf[cmds[1].0.clone()], b"*1\r\n$6\r\nASKING\r\n");
    }
}
