//! A cluster whose masters announce fault proxies (`cluster-announce-port`): every
//! connection tandem opens to a master, learned from `CLUSTER SHARDS` or a redirect,
//! crosses that master's proxy, while the cluster bus (the real port + 10000) does not.
//! A restarted node announces its own port again until [`ProxiedCluster::announce`].

use crate::support::faultproxy::{Dir, FaultProxy};
use crate::support::{Client, Cluster, Frame, ServerOpts, frame_to_string, wait_until};

use super::cluster_checkpoint;

const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(90);

/// A 3-master cluster, each master announcing its fault proxy.
pub struct ProxiedCluster {
    pub cluster: Cluster,
    pub proxies: Vec<FaultProxy>,
}

impl ProxiedCluster {
    /// `persist`: every write on disk before it is answered (`appendfsync always`), so
    /// that a restarted master comes back with what it confirmed.
    pub fn start(persist: bool) -> ProxiedCluster {
        let mut opts = ServerOpts::default();
        if persist {
            opts = opts.arg("appendonly", "yes").arg("appendfsync", "always");
        }
        let cluster = Cluster::start_with(3, 0, opts);
        let proxies: Vec<FaultProxy> = cluster
            .masters
            .iter()
            .map(|m| FaultProxy::start(m.port))
            .collect();
        let c = ProxiedCluster { cluster, proxies };
        for i in 0..3 {
            c.announce(i);
        }
        c
    }

    /// Master `i` announces its proxy; wait until every node says so.
    pub fn announce(&self, i: usize) {
        let (m, p) = (&self.cluster.masters[i], &self.proxies[i]);
        let port = p.port.to_string();
        assert_eq!(
            m.cmd(&["CONFIG", "SET", "cluster-announce-port", &port]),
            Frame::SimpleString(b"OK".to_vec())
        );
        let needle = format!("127.0.0.1:{port}@{}", m.port + 10000);
        wait_until("every node announces the proxy", CATCH_UP, || {
            self.cluster.masters.iter().all(|n| {
                Client::connect(n.port)
                    .and_then(|mut c| c.try_cmd(&["CLUSTER", "NODES"]))
                    .is_ok_and(|f| frame_to_string(&f).contains(&needle))
            })
        });
    }

    /// The seed tandem is given: master 0's proxy.
    pub fn url(&self) -> String {
        self.proxies[0].url()
    }

    pub fn floor(&self) -> Option<(String, u64)> {
        cluster_checkpoint(&self.cluster, "default")
    }

    /// tandem wrote to every master through its proxy (before any test read, which
    /// goes through them too).
    pub fn assert_written_through_proxies(&self) {
        for p in &self.proxies {
            assert!(
                p.forwarded(Dir::Up) > 0,
                "nothing crossed proxy :{}",
                p.port
            );
        }
    }
}
