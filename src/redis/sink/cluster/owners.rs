//! A slot served by another node than the one that confirmed its batches.
//!
//! A resharding moves the slot's keys, its checkpoint among them, so the new master
//! holds what the old one confirmed. A failover may not: a replica promoted before it
//! received the last writes of its master lacks them, and the cluster does not say so.
//! Before the first batch goes to a slot's new master, the slot's checkpoint there is
//! read; when it is behind what tandem saw confirmed, the floor checkpoint is written
//! back to the oldest position such a slot holds and the sink stops with
//! [`SinkError::TargetLostWrites`]: a new engine resumes from the floor, every slot
//! skipping what its own checkpoint covers, so the lost writes are applied again and
//! nothing twice. A slot with no checkpoint at all there (or one of another history)
//! cannot say where to resume: the floor goes to state `full` and the restart copies
//! everything again.

use bytes::Bytes;
use tracing::warn;

use super::ClusterSink;
use crate::core::ReplPosition;
use crate::redis::cluster::ckpt::read_ckpt;
use crate::redis::cluster::tags::slot_ckpt_key;
use crate::redis::sink::SinkError;
use crate::redis::sink::checkpoint::{CkptState, TargetCheckpoint};
use crate::redis::slot::key_slot;

impl ClusterSink {
    /// Check the slots whose master changed (see the module doc).
    pub(super) async fn verify_owners(&mut self) -> Result<(), SinkError> {
        let mut lost: Vec<(u16, Option<TargetCheckpoint>)> = Vec::new();
        let copying = self.last_full == Some(true);
        while self.nodes.has_changed() {
            let changed = self.nodes.take_changed();
            let serving = self.nodes.serving();
            for (slot, was) in changed {
                // During the copy, RESTOREs carry no checkpoint to tell what a promoted
                // replica lacks: a master that serves nothing any more failed over, and
                // the copy starts again.
                if copying && !serving.contains(&was) {
                    lost.push((slot, None));
                    continue;
                }
                let (had_seq, _) = self.slot_confirmed[slot as usize];
                if had_seq == 0 {
                    continue;
                }
                let key = Bytes::from(slot_ckpt_key(&self.cfg.id, slot));
                let held = read_ckpt(&mut self.nodes, &key).await?;
                if !held
                    .as_ref()
                    .is_some_and(|h| h.run == self.run && h.seq >= had_seq)
                {
                    lost.push((slot, held));
                }
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        let Some(now) = self.applied.borrow().clone() else {
            return Ok(());
        };
        let resumable = lost.iter().all(|(_, h)| {
            h.as_ref()
                .is_some_and(|h| h.pos.replid == now.pos.replid && !h.state.is_full())
        });
        let floor = match resumable {
            true => {
                let offset = lost
                    .iter()
                    .filter_map(|(_, h)| h.as_ref().map(|h| h.pos.offset))
                    .min()
                    .expect("at least one");
                TargetCheckpoint {
                    pos: ReplPosition::new(now.pos.replid.clone(), offset),
                    db: 0,
                    state: CkptState::Incr,
                    run: self.run.clone(),
                    seq: 0,
                }
            }
            false => TargetCheckpoint {
                state: CkptState::Full,
                seq: 0,
                ..now.clone()
            },
        };
        let (slot, held) = &lost[0];
        let (_, had_offset) = self.slot_confirmed[*slot as usize];
        let example = format!(
            "{slot} had offset {had_offset}, holds {}",
            held.as_ref().map_or("no checkpoint".into(), |h| format!(
                "offset {}",
                h.pos.offset
            ))
        );
        let resume = match resumable {
            true => format!("source offset {}", floor.pos.offset),
            false => "a new full sync".to_string(),
        };
        warn!(target = %self.endpoint, slots = lost.len(), %example,
              "cluster target: a failover lost confirmed writes; resuming from {resume}");
        // Written back on purpose: the target holds less than the floor said.
        let argv = floor.hset_argv(&self.floor_key);
        let argv: Vec<&[u8]> = argv.iter().map(|a| &a[..]).collect();
        let reply = self
            .nodes
            .request_slot(key_slot(&self.floor_key), &argv)
            .await?;
        if let crate::redis::conn::Frame::Error(e) = reply {
            return Err(SinkError::Refused {
                endpoint: self.endpoint.clone(),
                command: "HSET (floor checkpoint)".into(),
                offset: floor.pos.offset,
                message: e.to_string(),
            });
        }
        self.floor_written = None;
        crate::metrics::target_lost_writes();
        Err(SinkError::TargetLostWrites {
            endpoint: self.endpoint.clone(),
            slots: lost.len(),
            example,
            resume,
            serving: self
                .nodes
                .masters()
                .iter()
                .map(|&n| self.nodes.endpoint(n))
                .collect(),
        })
    }
}
