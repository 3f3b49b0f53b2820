//! Cluster helpers for the cluster tests: a MOVED/ASK-following client, slot owners,
//! whole-cluster snapshots, tandem's floor checkpoint on a cluster target, moving a slot.
#![allow(dead_code)]

pub mod proxied;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::data::{KeyValue, snapshot};
use crate::support::proc::master_offset;
use crate::support::{Client, Cluster, Frame, RedisServer, frame_to_string, wait_until};

/// A cluster-aware client for tests: routes each command by the slot of its first key
/// (`key_at`), follows MOVED, and re-reads the slot map after a lost connection
/// (a failover). Bounded: gives up after 60 s on one command.
pub struct ClusterClient {
    ports: Vec<u16>,
    owner: std::collections::HashMap<u16, u16>,
    conns: std::collections::HashMap<u16, Client>,
}

impl ClusterClient {
    pub fn new(cluster: &Cluster) -> ClusterClient {
        let ports = cluster.nodes().map(|n| n.port).collect();
        let mut c = ClusterClient {
            ports,
            owner: Default::default(),
            conns: Default::default(),
        };
        c.refresh();
        c
    }

    fn refresh(&mut self) {
        for &p in &self.ports.clone() {
            let Ok(mut cl) = Client::connect(p) else {
                continue;
            };
            let Ok(Frame::Array(ranges)) = cl.try_cmd(&["CLUSTER", "SLOTS"]) else {
                continue;
            };
            self.owner.clear();
            for r in ranges {
                let Frame::Array(r) = r else { continue };
                let (Frame::Integer(lo), Frame::Integer(hi), Frame::Array(m)) =
                    (&r[0], &r[1], &r[2])
                else {
                    continue;
                };
                let Frame::Integer(port) = m[1] else { continue };
                for s in *lo..=*hi {
                    self.owner.insert(s as u16, port as u16);
                }
            }
            return;
        }
    }

    /// Run `args` (key at index `key_at`) on the key's master.
    pub fn cmd(&mut self, args: &[&str], key_at: usize) -> Frame {
        let slot = ::tandem::redis::slot::key_slot(args[key_at].as_bytes());
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{args:?} kept failing"
            );
            let port = self.owner.get(&slot).copied().unwrap_or(self.ports[0]);
            let Some(conn) = self.conn_to(port) else {
                continue;
            };
            match conn.try_cmd(args) {
                Ok(Frame::Error(e)) if e.starts_with("MOVED") => {
                    let addr = e.split_whitespace().nth(2).unwrap_or("");
                    let p: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
                    self.owner.insert(slot, p);
                }
                Ok(Frame::Error(e))
                    if e.starts_with("TRYAGAIN")
                        || e.starts_with("CLUSTERDOWN")
                        || e.starts_with("ASK") =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                    self.refresh();
                }
                Ok(f) => return f,
                Err(_) => {
                    self.conns.remove(&port);
                    std::thread::sleep(Duration::from_millis(100));
                    self.refresh();
                }
            }
        }
    }
}

impl ClusterClient {
    /// The connection to `port`, opened if needed; `None` (after a pause and a re-read
    /// of the slot map) when the node does not answer.
    fn conn_to(&mut self, port: u16) -> Option<&mut Client> {
        if let std::collections::hash_map::Entry::Vacant(v) = self.conns.entry(port) {
            match Client::connect(port) {
                Ok(c) => {
                    v.insert(c);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    self.refresh();
                    return None;
                }
            }
        }
        self.conns.get_mut(&port)
    }

    /// Run `cmds` in order, once each, on the master serving `key`'s slot; returns that
    /// master's port and the replies. A MOVED, ASK, TRYAGAIN or CLUSTERDOWN answer to
    /// the first command (nothing ran) is followed; a connection lost after sending is
    /// an error, since the commands may or may not have run: the caller decides.
    pub fn try_on_key(
        &mut self,
        key: &str,
        cmds: &[&[&str]],
    ) -> std::io::Result<(u16, Vec<Frame>)> {
        let slot = ::tandem::redis::slot::key_slot(key.as_bytes());
        let start = Instant::now();
        let mut ask = None;
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{cmds:?} kept being redirected"
            );
            let asking = ask.is_some();
            let port = ask
                .take()
                .unwrap_or_else(|| self.owner.get(&slot).copied().unwrap_or(self.ports[0]));
            // Nothing was sent if there is no connection: safe to try again.
            let Some(conn) = self.conn_to(port) else {
                continue;
            };
            let mut replies = Vec::new();
            let mut run = || -> std::io::Result<()> {
                if asking {
                    conn.try_cmd(&["ASKING"])?;
                }
                for c in cmds {
                    replies.push(conn.try_cmd(c)?);
                    if matches!(&replies[0], Frame::Error(_)) {
                        break;
                    }
                }
                Ok(())
            };
            if let Err(e) = run() {
                self.conns.remove(&port);
                self.refresh();
                return Err(e);
            }
            match &replies[0] {
                Frame::Error(e) if e.starts_with("MOVED") || e.starts_with("ASK ") => {
                    let addr = e.split_whitespace().nth(2).unwrap_or("");
                    let p: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
                    if e.starts_with("MOVED") {
                        self.owner.insert(slot, p);
                    } else {
                        ask = Some(p);
                    }
                }
                Frame::Error(e) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {
                    std::thread::sleep(Duration::from_millis(20));
                    self.refresh();
                }
                _ => return Ok((port, replies)),
            }
        }
    }

    /// `WAIT replicas timeout_ms` on the connection to `port` (the one `try_on_key` just
    /// used): how many replicas acknowledged everything written on it.
    pub fn wait_replicas(&mut self, port: u16, replicas: u32, timeout_ms: u32) -> i64 {
        let conn = self.conns.get_mut(&port);
        let args = ["WAIT", &replicas.to_string(), &timeout_ms.to_string()];
        match conn.map(|c| c.try_cmd(&args)) {
            Some(Ok(Frame::Integer(n))) => n,
            _ => {
                self.conns.remove(&port);
                0
            }
        }
    }
}

pub trait ClusterExt {
    fn owner_port(&self, slot: u16) -> u16;
    fn all_nodes(&self, args: &[&str]);
}

impl ClusterExt for Cluster {
    /// The master currently serving `slot` per CLUSTER SLOTS (follows failovers and
    /// migrations, unlike `master_for`).
    fn owner_port(&self, slot: u16) -> u16 {
        for n in self.nodes() {
            let Ok(mut c) = Client::connect(n.port) else {
                continue;
            };
            let Ok(Frame::Array(ranges)) = c.try_cmd(&["CLUSTER", "SLOTS"]) else {
                continue;
            };
            for r in ranges {
                let Frame::Array(r) = r else { continue };
                if let (Frame::Integer(lo), Frame::Integer(hi), Frame::Array(m)) =
                    (&r[0], &r[1], &r[2])
                    && (*lo..=*hi).contains(&(slot as i64))
                    && let Frame::Integer(p) = m[1]
                {
                    return p as u16;
                }
            }
        }
        panic!("no node knows the owner of slot {slot}");
    }

    /// Run `args` on every node (e.g. CONFIG SET).
    fn all_nodes(&self, args: &[&str]) {
        for n in self.nodes() {
            n.cmd(args);
        }
    }
}

/// Snapshot of a whole cluster (every master's db 0): key → (value, PTTL).
pub fn cluster_snapshot(cluster: &Cluster) -> BTreeMap<Vec<u8>, (KeyValue, i64)> {
    let mut out = BTreeMap::new();
    for m in cluster.nodes() {
        if m.info_field("replication", "role").as_deref() != Some("master") {
            continue;
        }
        out.extend(snapshot(m, 0));
    }
    out
}

/// Two snapshots hold the same keys and values, with TTLs within `ttl_slack`.
pub fn assert_same_snapshot(
    a: &BTreeMap<Vec<u8>, (KeyValue, i64)>,
    b: &BTreeMap<Vec<u8>, (KeyValue, i64)>,
    ttl_slack: Duration,
) {
    crate::support::data::assert_same_snapshot(a, b, ttl_slack, "cluster")
}

/// The floor checkpoint tandem keeps on a cluster target for link `id` (every unit at
/// or below it is applied in every slot): (state, offset). Asks every master; only the
/// owner of the key answers.
pub fn cluster_checkpoint(target: &Cluster, id: &str) -> Option<(String, u64)> {
    let key = format!("__tandem:ckpt:{id}");
    for m in &target.masters {
        let Ok(mut c) = Client::connect(m.port) else {
            continue;
        };
        match c.try_cmd(&["HMGET", &key, "state", "offset"]) {
            Ok(Frame::Array(v)) => {
                return match (&v[0], &v[1]) {
                    (Frame::BulkString(s), Frame::BulkString(o)) => Some((
                        String::from_utf8_lossy(s).into_owned(),
                        String::from_utf8_lossy(o).parse().unwrap(),
                    )),
                    _ => None,
                };
            }
            _ => continue,
        }
    }
    None
}

/// Wait until link `id`'s checkpoint (standalone or cluster target) reached `source`'s
/// current offset.
pub fn wait_caught_up_any(
    source: &RedisServer,
    read: &dyn Fn() -> Option<(String, u64)>,
    limit: Duration,
) {
    wait_until("tandem caught up with the source", limit, || {
        let want = master_offset(source);
        read().is_some_and(|(s, o)| s == "incr" && o == want)
    });
}

/// A cluster of `masters` masters with `replicas` replicas each, ready (`cluster_state:ok`
/// everywhere, replicas in sync).
pub fn start_cluster(masters: usize, replicas: usize) -> Cluster {
    Cluster::start(masters, replicas)
}

/// Hash-tagged prefixes whose keys land on each of the three masters.
pub fn tagged_prefixes(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for m in &c.masters {
        let p = (0..1000)
            .map(|i| format!("{{t{i}}}:"))
            .find(|p| c.master_for(p).port == m.port && !out.contains(p))
            .expect("a tag per master");
        out.push(p);
    }
    out
}

/// Move `slot` from its master to another master of `c`: SETSLOT IMPORTING/MIGRATING,
/// MIGRATE in batches of `batch` keys (`pause` between them, to let writes interleave),
/// SETSLOT NODE on every master. `before` gets the old master once it is known. Returns
/// the new master's port and the number of keys moved.
pub fn move_slot(
    c: &Cluster,
    slot: u16,
    batch: usize,
    pause: Duration,
    before: impl FnOnce(&RedisServer),
) -> (u16, usize) {
    let from_port = c.owner_port(slot);
    let from = c.masters.iter().find(|m| m.port == from_port).unwrap();
    let to = c.masters.iter().find(|m| m.port != from_port).unwrap();
    let from_id = from.client().cmd_text(&["CLUSTER", "MYID"]);
    let to_id = to.client().cmd_text(&["CLUSTER", "MYID"]);
    before(from);
    let s = slot.to_string();
    to.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
    from.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
    let mut fc = from.client();
    let (count, port) = (batch.to_string(), to.port.to_string());
    let mut moved = 0;
    for _ in 0..1000 {
        let Frame::Array(keys) = fc.cmd(&["CLUSTER", "GETKEYSINSLOT", &s, &count]) else {
            panic!("GETKEYSINSLOT")
        };
        if keys.is_empty() {
            break;
        }
        let keys: Vec<String> = keys.iter().map(frame_to_string).collect();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(|k| k.as_str()));
        assert_eq!(fc.cmd(&args), Frame::SimpleString("OK".into()), "MIGRATE");
        moved += keys.len();
        std::thread::sleep(pause);
    }
    for m in &c.masters {
        m.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    }
    (to.port, moved)
}
