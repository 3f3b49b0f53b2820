//! Connections to the masters of a cluster target, and requests routed by slot that
//! follow `MOVED` (refresh the slot map) and `ASK` (`ASKING` on the named node).
//!
//! Two connections per master: the pipelined one carrying batches (owned by the sink)
//! and a control one for single requests (checkpoint reads, keyless writes, probes), so
//! a request never has to wait behind a pipeline's replies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{NodeAddr, SlotMap, Topology};
use crate::redis::conn::{Conn, ConnError, Frame};
use crate::redis::sink::{ReplyClass, SinkError, classify_reply};
use crate::redis::url::Endpoint;

/// A redirection in an error reply: `MOVED <slot> <host:port>` or `ASK <slot> <host:port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    Moved(String),
    Ask(String),
}

pub fn redirect(message: &str) -> Option<Redirect> {
    let mut it = message.split_whitespace();
    let kind = it.next()?;
    let _slot = it.next()?;
    let addr = it.next()?.to_string();
    match kind {
        "MOVED" => Some(Redirect::Moved(addr)),
        "ASK" => Some(Redirect::Ask(addr)),
        _ => None,
    }
}

/// The cluster as the sink sees it: topology, slot map, and node addresses by index.
pub struct Nodes {
    pub seed: Endpoint,
    pub timeout: Duration,
    pub give_up_after: Duration,
    pub topo: Topology,
    map: SlotMap,
    /// Every node ever routed to; indexes are stable for the sink's life.
    pub addrs: Vec<NodeAddr>,
    /// `topo.shards[i]` is `addrs[shard_node[i]]`.
    shard_node: Vec<usize>,
    /// Owners learned from `MOVED` since the last refresh.
    moved: HashMap<u16, usize>,
    ctl: HashMap<usize, Conn>,
    /// Slots whose master is another node than before (a failover, a resharding),
    /// with the address of the one before, since the last [`Nodes::take_changed`].
    changed: Vec<(u16, String)>,
}

impl Nodes {
    pub async fn connect(
        seed: Endpoint,
        timeout: Duration,
        give_up_after: Duration,
    ) -> Result<Nodes, SinkError> {
        Self::connect_any(seed, &[], timeout, give_up_after).await
    }

    /// Discover from `seed`, or when it does not answer with a slot map, from the first
    /// of `others` that does; `seed` stays the endpoint named in errors and the source
    /// of credentials.
    pub async fn connect_any(
        seed: Endpoint,
        others: &[Endpoint],
        timeout: Duration,
        give_up_after: Duration,
    ) -> Result<Nodes, SinkError> {
        let mut found = Topology::discover(&seed, timeout)
            .await
            .map_err(|e| cluster_err(&seed, e));
        for ep in others {
            match &found {
                Ok(t) if !t.shards.is_empty() => break,
                _ => {}
            }
            if let Ok(t) = Topology::discover(ep, timeout).await {
                found = Ok(t);
            }
        }
        let topo = found?;
        let mut nodes = Nodes {
            seed,
            timeout,
            give_up_after,
            map: topo.slot_map(),
            topo: Topology::default(),
            addrs: Vec::new(),
            shard_node: Vec::new(),
            moved: HashMap::new(),
            ctl: HashMap::new(),
            changed: Vec::new(),
        };
        nodes.install(topo);
        nodes.changed.clear();
        Ok(nodes)
    }

    fn install(&mut self, topo: Topology) {
        let before: Vec<Option<String>> = (0..crate::redis::slot::SLOTS)
            .map(|s| self.owner(s).map(|n| self.addrs[n].addr()))
            .collect();
        self.moved.clear();
        self.map = topo.slot_map();
        self.shard_node = topo
            .shards
            .iter()
            .map(|s| self.index_of(&s.master))
            .collect();
        self.topo = topo;
        for (slot, was) in before.into_iter().enumerate() {
            let now = self.owner(slot as u16).map(|n| self.addrs[n].addr());
            if let (Some(was), Some(now)) = (was, now)
                && was != now
            {
                self.changed.push((slot as u16, was));
            }
        }
    }

    /// The slots whose master changed since the last call, with the master before.
    pub fn take_changed(&mut self) -> Vec<(u16, String)> {
        let mut v = std::mem::take(&mut self.changed);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The addresses of the nodes that serve a slot now.
    pub fn serving(&self) -> std::collections::HashSet<String> {
        (0..crate::redis::slot::SLOTS)
            .filter_map(|s| self.owner(s))
            .collect::<std::collections::HashSet<usize>>()
            .into_iter()
            .map(|n| self.addrs[n].addr())
            .collect()
    }

    pub fn has_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The index of `addr`, adding it if new.
    pub fn index_of(&mut self, addr: &NodeAddr) -> usize {
        match self.addrs.iter().position(|a| a.addr() == addr.addr()) {
            Some(i) => i,
            None => {
                self.addrs.push(addr.clone());
                self.addrs.len() - 1
            }
        }
    }

    /// The index of the node at `host:port` (from a redirection).
    pub fn index_of_addr(&mut self, hostport: &str) -> usize {
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "0"));
        let addr = NodeAddr {
            id: String::new(),
            host: host.to_string(),
            port: port.parse().unwrap_or(0),
        };
        self.index_of(&addr)
    }

    /// The node serving `slot` per the current map.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        if let Some(&n) = self.moved.get(&slot) {
            return Some(n);
        }
        // `shard_node` is empty until the first `install`.
        self.map
            .owner(slot)
            .and_then(|s| self.shard_node.get(s).copied())
    }

    /// `MOVED`: `slot` is now served at `hostport`.
    pub fn moved(&mut self, slot: u16, hostport: &str) {
        let was = self.owner(slot);
        let n = self.index_of_addr(hostport);
        if let Some(w) = was
            && self.addrs[w].addr() != self.addrs[n].addr()
        {
            self.changed.push((slot, self.addrs[w].addr()));
        }
        self.moved.insert(slot, n);
    }

    /// Indexes of the current masters.
    pub fn masters(&self) -> Vec<usize> {
        self.shard_node.clone()
    }

    pub fn endpoint(&self, node: usize) -> Endpoint {
        self.addrs[node].endpoint(&self.seed)
    }

    /// Connect to `node` (the future does not borrow `self`, so it stays `Send`).
    pub fn open(
        &self,
        node: usize,
    ) -> impl std::future::Future<Output = Result<Conn, ConnError>> + Send + 'static {
        let ep = self.endpoint(node);
        let timeout = self.timeout;
        async move { Conn::connect(&ep, timeout).await }
    }

    /// Re-read the topology from any node that answers (known masters first, then the
    /// seed). Errors only when none does.
    pub async fn refresh(&mut self) -> Result<(), SinkError> {
        let mut candidates: Vec<Endpoint> =
            self.masters().iter().map(|&i| self.endpoint(i)).collect();
        candidates.extend(self.addrs.iter().map(|a| a.endpoint(&self.seed)));
        candidates.push(self.seed.clone());
        let mut last = None;
        for ep in candidates {
            match Topology::discover(&ep, self.timeout).await {
                Ok(t) if !t.shards.is_empty() => {
                    self.install(t);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => last = Some(cluster_err(&ep, e)),
            }
        }
        Err(last.unwrap_or_else(|| SinkError::GaveUp {
            endpoint: self.seed.to_string(),
            secs: 0,
            last: "no node reports a slot map".into(),
        }))
    }

    /// One request on `node`'s control connection; server errors come back as frames.
    pub async fn request_node(
        &mut self,
        node: usize,
        asking: bool,
        argv: &[&[u8]],
    ) -> Result<Frame, ConnError> {
        if !self.ctl.contains_key(&node) {
            let c = self.open(node).await?;
            self.ctl.insert(node, c);
        }
        let conn = self.ctl.get_mut(&node).expect("just inserted");
        let res = async {
            if asking {
                conn.request(&[b"ASKING"]).await?;
            }
            conn.request(argv).await
        }
        .await;
        if res.is_err() {
            self.ctl.remove(&node);
        }
        res
    }

    /// Send `argv` (whose keys are all in `slot`) to the slot's owner, following
    /// redirections and retrying what waiting can fix, for at most `give_up_after`.
    /// Returns the reply, data errors included as frames.
    pub async fn request_slot(&mut self, slot: u16, argv: &[&[u8]]) -> Result<Frame, SinkError> {
        let mut retry = Backoff::new(self.give_up_after);
        let mut ask: Option<usize> = None;
        loop {
            let (node, asking) = match ask.take() {
                Some(n) => (n, true),
                None => match self.owner(slot) {
                    Some(n) => (n, false),
                    None => {
                        retry.wait(&self.seed, "slot not served").await?;
                        let _ = self.refresh().await;
                        continue;
                    }
                },
            };
            match self.request_node(node, asking, argv).await {
                Ok(Frame::Error(e)) => match redirect(&e) {
                    Some(Redirect::Moved(a)) => {
                        retry.wait_quietly().await?;
                        self.moved(slot, &a);
                    }
                    Some(Redirect::Ask(a)) => ask = Some(self.index_of_addr(&a)),
                    None if classify_reply(&e) == ReplyClass::Retry => {
                        retry.wait(&self.seed, &e).await?
                    }
                    None => return Ok(Frame::Error(e)),
                },
                Ok(f) => return Ok(f),
                Err(e) if e.is_retryable() => {
                    retry.wait(&self.seed, &e.to_string()).await?;
                    let _ = self.refresh().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Run `argv` on every master (keyless writes). A data error is returned per node.
    pub async fn request_all(&mut self, argv: &[&[u8]]) -> Result<Vec<(usize, Frame)>, SinkError> {
        let mut out = Vec::new();
        for node in self.masters() {
            let mut retry = Backoff::new(self.give_up_after);
            loop {
                match self.request_node(node, false, argv).await {
                    Ok(Frame::Error(e)) if classify_reply(&e) == ReplyClass::Retry => {
                        retry.wait(&self.seed, &e).await?
                    }
                    Ok(f) => {
                        out.push((node, f));
                        break;
                    }
                    Err(e) if e.is_retryable() => retry.wait(&self.seed, &e.to_string()).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }
}

fn cluster_err(ep: &Endpoint, e: super::ClusterError) -> SinkError {
    match e {
        super::ClusterError::Conn(c) => SinkError::Conn(c),
        super::ClusterError::Topology { detail, .. } => SinkError::BadCheckpoint {
            endpoint: ep.to_string(),
            key: "CLUSTER SHARDS".into(),
            detail,
        },
    }
}

/// Exponential backoff bounded by a total time, after which it gives up.
#[derive(Clone)]
pub struct Backoff {
    started: Instant,
    limit: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(limit: Duration) -> Self {
        Backoff {
            started: Instant::now(),
            limit,
            next: Duration::from_millis(20),
        }
    }

    /// Sleep before the next attempt, logging why; `GaveUp` once past the limit.
    pub async fn wait(&mut self, ep: &Endpoint, why: &str) -> Result<(), SinkError> {
        if self.started.elapsed() > self.limit {
            return Err(SinkError::GaveUp {
                endpoint: ep.to_string(),
                secs: self.limit.as_secs(),
                last: why.to_string(),
            });
        }
        warn!(target = %ep, "cluster target: retrying in {:?}: {why}", self.next);
        crate::metrics::sink_retry();
        self.sleep().await;
        Ok(())
    }

    /// As `wait`, without a log line (redirections are routine).
    pub async fn wait_quietly(&mut self) -> Result<(), SinkError> {
        if self.started.elapsed() > self.limit {
            return Err(SinkError::GaveUp {
                endpoint: String::new(),
                secs: self.limit.as_secs(),
                last: "redirected for too long".into(),
            });
        }
        self.sleep().await;
        Ok(())
    }

    async fn sleep(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }
}
