//! Cluster topology: which master serves which slots, and its replicas.
//!
//! Read with `CLUSTER SHARDS` (Redis 7+), falling back to `CLUSTER SLOTS` on older
//! servers. Any node answers for the whole cluster, so a seed URL may name a replica.

use std::time::Duration;

use crate::redis::conn::{Conn, ConnError, Frame, frame_text, info_field};
use crate::redis::slot::SLOTS;
use crate::redis::url::Endpoint;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("{endpoint}: unreadable cluster topology: {detail}")]
    Topology { endpoint: String, detail: String },
}

/// One node of the cluster, as announced by the cluster itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// The 40-character node id (empty when the server did not say, old CLUSTER SLOTS).
    pub id: String,
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// `seed` with this node's host and port: credentials and TLS carry over.
    pub fn endpoint(&self, seed: &Endpoint) -> Endpoint {
        let mut ep = seed.with_db(0);
        ep.host = self.host.clone();
        ep.port = self.port;
        ep
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A master with the slot ranges it serves (inclusive) and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: NodeAddr,
    pub replicas: Vec<NodeAddr>,
    pub slots: Vec<(u16, u16)>,
}

impl Shard {
    pub fn lowest_slot(&self) -> Option<u16> {
        self.slots.iter().map(|r| r.0).min()
    }

    /// Whether `id` is this shard's master or one of its replicas.
    pub fn has_node(&self, id: &str) -> bool {
        !id.is_empty() && (self.master.id == id || self.replicas.iter().any(|r| r.id == id))
    }
}

/// Every master that serves at least one slot.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub shards: Vec<Shard>,
}

/// Slot → index into [`Topology::shards`].
#[derive(Debug, Clone)]
pub struct SlotMap {
    owner: Vec<Option<u16>>,
}

impl SlotMap {
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner[slot as usize].map(usize::from)
    }
}

impl Topology {
    pub fn slot_map(&self) -> SlotMap {
        let mut owner = vec![None; SLOTS as usize];
        for (i, s) in self.shards.iter().enumerate() {
            for &(lo, hi) in &s.slots {
                for slot in lo..=hi.min(SLOTS - 1) {
                    owner[slot as usize] = Some(i as u16);
                }
            }
        }
        SlotMap { owner }
    }

    /// Read the topology through `conn` (any node of the cluster).
    pub async fn load(conn: &mut Conn) -> Result<Topology, ClusterError> {
        let endpoint = conn.endpoint().to_string();
        let bad = |detail: String| ClusterError::Topology {
            endpoint: endpoint.clone(),
            detail,
        };
        let mut shards = match conn.request(&[b"CLUSTER", b"SHARDS"]).await? {
            Frame::Array(items) => parse_shards(&items, conn.is_tls()).map_err(bad)?,
            // Before Redis 7: unknown subcommand.
            Frame::Error(_) => match conn.query(&[b"CLUSTER", b"SLOTS"]).await? {
                Frame::Array(items) => parse_slots(&items).map_err(bad)?,
                other => return Err(bad(format!("CLUSTER SLOTS answered {other:?}"))),
            },
            other => return Err(bad(format!("CLUSTER SHARDS answered {other:?}"))),
        };
        shards.retain(|s| !s.slots.is_empty());
        shards.sort_by_key(|s| s.lowest_slot());
        Ok(Topology { shards })
    }

    /// Connect to `seed` and read the topology.
    pub async fn discover(seed: &Endpoint, timeout: Duration) -> Result<Topology, ClusterError> {
        let mut conn = Conn::connect(&seed.with_db(0), timeout).await?;
        Self::load(&mut conn).await
    }
}

/// Whether the server behind `conn` runs in cluster mode.
pub async fn is_cluster(conn: &mut Conn) -> Result<bool, ConnError> {
    let info = conn.query(&[b"INFO", b"cluster"]).await?;
    Ok(frame_text(&info)
        .and_then(|t| info_field(&t, "cluster_enabled"))
        .is_some_and(|v| v == "1"))
}

fn text(f: &Frame) -> Option<String> {
    frame_text(f)
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        other => frame_text(other)?.parse().ok(),
    }
}

/// A RESP2 map (flat key/value array) as pairs.
fn pairs(f: &Frame) -> Option<Vec<(String, &Frame)>> {
    let Frame::Array(items) = f else { return None };
    items
        .chunks(2)
        .map(|c| match c {
            [k, v] => Some((text(k)?, v)),
            _ => None,
        })
        .collect()
}

fn get<'a>(p: &'a [(String, &'a Frame)], name: &str) -> Option<&'a Frame> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn slot(v: i64) -> Result<u16, String> {
    u16::try_from(v)
        .ok()
        .filter(|s| *s < SLOTS)
        .ok_or_else(|| format!("slot {v} out of range"))
}

/// `tls`: the node list is read over TLS, so the nodes are reached on their `tls-port`
/// (CLUSTER SHARDS lists both; CLUSTER SLOTS already answers a TLS client with it).
fn parse_shards(items: &[Frame], tls: bool) -> Result<Vec<Shard>, String> {
    let mut out = Vec::new();
    for shard in items {
        let p = pairs(shard).ok_or("a shard is not a map")?;
        let Some(Frame::Array(bounds)) = get(&p, "slots") else {
            return Err("shard without slots".into());
        };
        let mut slots = Vec::new();
        for c in bounds.chunks(2) {
            let [lo, hi] = c else {
                return Err("odd slot bounds".into());
            };
            let (lo, hi) = (int(lo).ok_or("bad slot")?, int(hi).ok_or("bad slot")?);
            slots.push((slot(lo)?, slot(hi)?));
        }
        let Some(Frame::Array(nodes)) = get(&p, "nodes") else {
            return Err("shard without nodes".into());
        };
        let mut master = None;
        let mut replicas = Vec::new();
        for n in nodes {
            let np = pairs(n).ok_or("a node is not a map")?;
            let field = |k: &str| get(&np, k).and_then(text).unwrap_or_default();
            let (first, second) = if tls {
                ("tls-port", "port")
            } else {
                ("port", "tls-port")
            };
            let port = get(&np, first)
                .or_else(|| get(&np, second))
                .and_then(int)
                .ok_or("node without port")?;
            let host = [field("ip"), field("endpoint"), field("hostname")]
                .into_iter()
                .find(|h| !h.is_empty() && h != "?")
                .ok_or("node without address")?;
            let addr = NodeAddr {
                id: field("id"),
                host,
                port: port as u16,
            };
            let failed = field("health") == "fail";
            match field("role").as_str() {
                "master" if !failed => master = Some(addr),
                _ => replicas.push(addr),
            }
        }
        // A shard whose master failed and has no promoted replica yet has no master.
        if let Some(master) = master {
            out.push(Shard {
                master,
                replicas,
                slots,
            });
        }
    }
    Ok(out)
}

fn parse_slots(items: &[Frame]) -> Result<Vec<Shard>, String> {
    let mut out: Vec<Shard> = Vec::new();
    for range in items {
        let Frame::Array(r) = range else {
            return Err("a range is not an array".into());
        };
        let (Some(lo), Some(hi)) = (r.first().and_then(int), r.get(1).and_then(int)) else {
            return Err("range without bounds".into());
        };
        let mut nodes = Vec::new();
        for n in &r[2..] {
            let Frame::Array(n) = n else {
                return Err("a node is not an array".into());
            };
            let host = n.first().and_then(text).ok_or("node without host")?;
            let port = n.get(1).and_then(int).ok_or("node without port")?;
            let id = n.get(2).and_then(text).unwrap_or_default();
            nodes.push(NodeAddr {
                id,
                host,
                port: port as u16,
            });
        }
        let Some(master) = nodes.first().cloned() else {
            return Err("range without master".into());
        };
        let range = (slot(lo)?, slot(hi)?);
        match out.iter_mut().find(|s| s.master == master) {
            Some(s) => s.slots.push(range),
            None => out.push(Shard {
                master,
                replicas: nodes[1..].to_vec(),
                slots: vec![range],
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn b(s: &str) -> Frame {
        Frame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn shards_and_slots_parse_the_same_topology() {
        let node = |id: &str, port: i64, role: &str| {
            Frame::Array(vec![
                b("id"),
                b(id),
                b("port"),
                Frame::Integer(port),
                b("ip"),
                b("127.0.0.1"),
                b("role"),
                b(role),
                b("health"),
                b("online"),
            ])
        };
        let shards = vec![Frame::Array(vec![
            b("slots"),
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(99)]),
            b("nodes"),
            Frame::Array(vec![
                node("r1", 7001, "replica"),
                node("m1", 7000, "master"),
            ]),
        ])];
        let a = parse_shards(&shards, false).unwrap();
        let slots = vec![Frame::Array(vec![
            Frame::Integer(0),
            Frame::Integer(99),
            Frame::Array(vec![b("127.0.0.1"), Frame::Integer(7000), b("m1")]),
            Frame::Array(vec![b("127.0.0.1"), Frame::Integer(7001), b("r1")]),
        ])];
        let c = parse_slots(&slots).unwrap();
        assert_eq!(a, c);
        assert_eq!(a[0].master.port, 7000);
        assert!(a[0].has_node("r1"));
        let t = Topology { shards: a };
        assert_eq!(t.slot_map().owner(50), Some(0));
        assert_eq!(t.slot_map().owner(100), None);
    }
}
