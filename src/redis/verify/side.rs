//! One side of a verify (source or target): a standalone server or every master of a
//! cluster, each key's reads routed to the master of its slot, pipelined.

use std::time::Duration;

use bytes::Bytes;

use super::VerifyError;
use crate::redis::cluster::{SlotMap, Topology, is_cluster};
use crate::redis::conn::{Conn, Frame, command_name};
use crate::redis::slot::key_slot;
use crate::redis::url::Endpoint;

/// What the server can answer, read once at connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// `PEXPIRETIME` (Redis 7+): absolute expiry without a clock read.
    pub pexpiretime: bool,
    /// `HPEXPIRETIME` (Redis 7.4+, Valkey 9): hash field TTLs.
    pub hpexpiretime: bool,
}

pub struct Side {
    /// "source" or "target", for messages.
    pub role: &'static str,
    nodes: Vec<Conn>,
    /// The db each node's connection has selected (standalone only changes it).
    selected: Vec<u32>,
    slots: Option<SlotMap>,
    pub caps: Caps,
}

/// One command and the key that routes it.
pub struct Cmd {
    pub key: Bytes,
    pub argv: Vec<Bytes>,
}

impl Cmd {
    pub fn new(key: &Bytes, argv: &[&[u8]]) -> Cmd {
        Cmd {
            key: key.clone(),
            argv: argv.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
        }
    }
}

impl Side {
    pub async fn connect(
        role: &'static str,
        ep: &Endpoint,
        timeout: Duration,
    ) -> Result<Side, VerifyError> {
        let mut seed = Conn::connect(&ep.with_db(0), timeout).await?;
        let (nodes, slots) = if is_cluster(&mut seed).await? {
            let topo = Topology::load(&mut seed).await?;
            let mut nodes = Vec::new();
            for shard in &topo.shards {
                nodes.push(Conn::connect(&shard.master.endpoint(ep), timeout).await?);
            }
            (nodes, Some(topo.slot_map()))
        } else {
            (vec![seed], None)
        };
        let mut side = Side {
            role,
            selected: vec![0; nodes.len()],
            nodes,
            slots,
            caps: Caps::default(),
        };
        side.caps = Caps {
            pexpiretime: side.has_command("PEXPIRETIME").await?,
            hpexpiretime: side.has_command("HPEXPIRETIME").await?,
        };
        Ok(side)
    }

    async fn has_command(&mut self, name: &str) -> Result<bool, VerifyError> {
        let reply = self.nodes[0]
            .query(&[b"COMMAND", b"INFO", name.as_bytes()])
            .await?;
        Ok(
            matches!(reply, Frame::Array(items) if items.first().is_some_and(|f| !matches!(f, Frame::Null))),
        )
    }

    pub fn is_cluster(&self) -> bool {
        self.slots.is_some()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn endpoint(&self, node: usize) -> &str {
        self.nodes[node].endpoint()
    }

    fn node_of(&self, key: &[u8]) -> Result<usize, VerifyError> {
        match &self.slots {
            None => Ok(0),
            Some(map) => map
                .owner(key_slot(key))
                .ok_or_else(|| VerifyError::Topology {
                    endpoint: self.nodes[0].endpoint().to_string(),
                    detail: format!("no master serves slot {}", key_slot(key)),
                }),
        }
    }

    /// Make `db` the current db of a standalone server (a cluster has only db 0).
    pub async fn select(&mut self, db: u32) -> Result<(), VerifyError> {
        if self.is_cluster() || self.selected[0] == db {
            return Ok(());
        }
        self.nodes[0]
            .query(&[b"SELECT", db.to_string().as_bytes()])
            .await?;
        self.selected[0] = db;
        Ok(())
    }

    /// Send `cmds` to one node in one pipeline; replies in order, errors as frames.
    pub async fn on_node(
        &mut self,
        node: usize,
        cmds: &[Vec<Bytes>],
    ) -> Result<Vec<Frame>, VerifyError> {
        let conn = &mut self.nodes[node];
        for c in cmds {
            let argv: Vec<&[u8]> = c.iter().map(|a| a.as_ref()).collect();
            conn.queue(&argv);
        }
        conn.flush().await?;
        let mut out = Vec::with_capacity(cmds.len());
        for c in cmds {
            let f = conn.read_frame().await?;
            if let Frame::Error(e) = &f
                && (e.starts_with("MOVED") || e.starts_with("ASK"))
            {
                return Err(VerifyError::Topology {
                    endpoint: conn.endpoint().to_string(),
                    detail: format!(
                        "{} answered {e}: the cluster's slots moved during verify; run it again",
                        command_name(&[c[0].as_ref()])
                    ),
                });
            }
            out.push(f);
        }
        Ok(out)
    }

    /// Each command on the master of its key's slot, pipelined per node; replies in the
    /// order of `cmds`.
    pub async fn by_key(&mut self, cmds: Vec<Cmd>) -> Result<Vec<Frame>, VerifyError> {
        if self.nodes.len() == 1 {
            let argvs: Vec<Vec<Bytes>> = cmds.into_iter().map(|c| c.argv).collect();
            return self.on_node(0, &argvs).await;
        }
        let mut per_node: Vec<(Vec<usize>, Vec<Vec<Bytes>>)> =
            vec![(Vec::new(), Vec::new()); self.nodes.len()];
        let n = cmds.len();
        for (i, c) in cmds.into_iter().enumerate() {
            let node = self.node_of(&c.key)?;
            per_node[node].0.push(i);
            per_node[node].1.push(c.argv);
        }
        let mut out: Vec<Option<Frame>> = vec![None; n];
        for (node, (idx, argvs)) in per_node.into_iter().enumerate() {
            if argvs.is_empty() {
                continue;
            }
            for (i, f) in idx.into_iter().zip(self.on_node(node, &argvs).await?) {
                out[i] = Some(f);
            }
        }
        Ok(out.into_iter().map(|f| f.unwrap_or(Frame::Null)).collect())
    }

    /// One command on the master of `key`.
    pub async fn one(&mut self, key: &Bytes, argv: &[&[u8]]) -> Result<Frame, VerifyError> {
        let mut r = self.by_key(vec![Cmd::new(key, argv)]).await?;
        Ok(r.pop().unwrap_or(Frame::Null))
    }

    /// The error for a reply of the wrong shape, naming this side's endpoint.
    pub fn bad_reply(&self, key: &Bytes, command: &str, reply: &Frame) -> VerifyError {
        let endpoint = match self.node_of(key) {
            Ok(n) => self.endpoint(n).to_string(),
            Err(_) => self.endpoint(0).to_string(),
        };
        let detail = match reply {
            Frame::Error(e) => e.to_string(),
            other => format!("unexpected reply {}", super::types::short(other)),
        };
        VerifyError::Reply {
            endpoint,
            command: command.to_string(),
            detail,
        }
    }
}
