//! Reading tandem's checkpoints from a cluster target: the floor key and every slot's
//! `__tandem:ckpt:<id>:{<tag>}` (one pipeline of HGETALLs per master).

use bytes::Bytes;

use super::nodes::Nodes;
use super::tags::slot_ckpt_key;
use crate::redis::conn::Frame;
use crate::redis::sink::{SinkError, TargetCheckpoint};
use crate::redis::slot::{SLOTS, key_slot};

/// Read the checkpoint hash at `key`, following redirections.
pub async fn read_ckpt(
    nodes: &mut Nodes,
    key: &Bytes,
) -> Result<Option<TargetCheckpoint>, SinkError> {
    let reply = nodes
        .request_slot(key_slot(key), &[b"HGETALL", key])
        .await?;
    TargetCheckpoint::from_hgetall(&nodes.seed.to_string(), key, reply)
}

/// Every slot checkpoint of link `id`: one pipeline of HGETALLs per master; a slot that
/// answers with a redirection (a migration in progress) is read again on its own.
pub async fn read_slot_ckpts(
    nodes: &mut Nodes,
    id: &str,
) -> Result<Vec<Option<TargetCheckpoint>>, SinkError> {
    let mut out: Vec<Option<TargetCheckpoint>> = vec![None; SLOTS as usize];
    let mut again = Vec::new();
    let endpoint = nodes.seed.to_string();
    for shard in nodes.topo.shards.clone() {
        let node = nodes.index_of(&shard.master);
        let mut conn = nodes.open(node).await?;
        let slots: Vec<u16> = shard.slots.iter().flat_map(|&(lo, hi)| lo..=hi).collect();
        for chunk in slots.chunks(1024) {
            for &slot in chunk {
                conn.queue(&[b"HGETALL", slot_ckpt_key(id, slot).as_bytes()]);
            }
            conn.flush().await?;
            for &slot in chunk {
                match conn.read_frame().await? {
                    Frame::Error(_) => again.push(slot),
                    f => {
                        let key = slot_ckpt_key(id, slot);
                        out[slot as usize] =
                            TargetCheckpoint::from_hgetall(&endpoint, key.as_bytes(), f)?;
                    }
                }
            }
        }
    }
    for slot in again {
        out[slot as usize] = read_ckpt(nodes, &Bytes::from(slot_ckpt_key(id, slot))).await?;
    }
    Ok(out)
}
