//! `tandem redis sync` with Redis Cluster on either side, against real 3-master
//! clusters: every type, cross-slot splitting and its limits, source failover, target
//! slot migration, and kill -9, all with exact outcomes.

mod support;
mod support_cluster;

use std::time::Duration;

use support::data::{fill_all_types, snapshot};
use support::proc::{Tandem, master_offset};
use support::*;
use support_cluster::*;

const SLACK: Duration = Duration::from_millis(1500);
const CATCH_UP: Duration = Duration::from_secs(90);

fn source() -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-ping-replica-period", "1")
            .arg("repl-backlog-size", "64mb"),
    )
}

fn cluster(replicas: usize) -> Cluster {
    let c = start_cluster(3, replicas);
    c.all_nodes(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    c.all_nodes(&["CONFIG", "SET", "repl-backlog-size", "64mb"]);
    c
}

fn sync_to_cluster(src: &RedisServer, dst: &Cluster, extra: &[&str]) -> Tandem {
    let (s, t) = (src.url(), dst.url());
    let mut args = vec!["redis", "sync", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

fn wait_cluster_target(src: &RedisServer, dst: &Cluster, id: &str) {
    wait_caught_up_any(src, &|| cluster_checkpoint(dst, id), CATCH_UP);
}

/// Hash-tagged prefixes whose keys land on each of the three masters.
fn tagged_prefixes(c: &Cluster) -> Vec<String> {
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

#[test]
fn standalone_to_cluster_every_type_and_cross_slot_split() {
    let src = source();
    let dst = cluster(0);
    let mut c = src.client();
    fill_all_types(&mut c, 0, "k:", 1);
    fill_all_types(&mut c, 0, "", 2);
    let t = sync_to_cluster(&src, &dst, &[]);
    wait_cluster_target(&src, &dst, "default");
    assert_same_snapshot(&snapshot(&src, 0), &cluster_snapshot(&dst), SLACK);
    // Live writes: cross-slot MSET, MSETNX, DEL, UNLINK are split per slot exactly.
    c.cmd(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "{a}x", "5"]);
    c.cmd(&["MSETNX", "n1", "1", "n2", "2", "n3", "3"]);
    c.cmd(&["DEL", "k:str", "k:int", "k:list", "nothing"]);
    c.cmd(&["UNLINK", "k:set", "str", "k:zset"]);
    c.cmd(&["INCRBY", "int", "7"]);
    c.cmd(&["MULTI"]);
    c.cmd(&["SET", "{tx}1", "a"]);
    c.cmd(&["RPUSH", "{tx}2", "b", "c"]);
    c.cmd(&["EXEC"]);
    fill_all_types(&mut c, 0, "late:", 3);
    wait_cluster_target(&src, &dst, "default");
    assert_same_snapshot(&snapshot(&src, 0), &cluster_snapshot(&dst), SLACK);
    // A cross-slot RENAME cannot be applied: a clear error, non-zero exit.
    let before = cluster_snapshot(&dst);
    c.cmd(&["RENAME", "a", "b"]);
    let mut t = t;
    assert_eq!(t.wait_exit(Duration::from_secs(30)), Some(1));
    let log = t.log_text();
    let err: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("tandem: error:"))
        .collect();
    assert_eq!(err.len(), 1, "{log}");
    let (sa, sb) = (
        tandem::redis::slot::key_slot(b"a"),
        tandem::redis::slot::key_slot(b"b"),
    );
    assert!(err[0].contains("RENAME"), "{log}");
    assert!(err[0].contains(&format!("[{sa}, {sb}]")), "{log}");
    let offset = master_offset(&src);
    assert!(err[0].contains(&format!("offset {offset}")), "{}", err[0]);
    // Nothing of the RENAME applied.
    assert_same_snapshot(&before, &cluster_snapshot(&dst), SLACK);
}
