//! Cluster helpers for `tests/sync_cluster.rs`: a MOVED-following client, slot owners,
//! whole-cluster snapshots and tandem's floor checkpoint on a cluster target.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::data::{KeyValue, snapshot};
use crate::support::proc::master_offset;
use crate::support::{Client, Cluster, Frame, RedisServer, wait_until};

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
            let conn = match self.conns.entry(port) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match Client::connect(port) {
                    Ok(c) => v.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(100));
                        self.refresh();
                        continue;
                    }
                },
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
