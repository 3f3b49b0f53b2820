//! Faults on a cluster target (3 masters) of `tandem redis sync`: every connection
//! tandem opens to a master goes through that master's fault proxy. Each scenario runs
//! under writes on the standalone source and ends with every counter and list compared
//! exactly (tests/support/load.rs) through a slot-routing client.
//!
//! Putting the proxies in tandem's path: tandem learns the masters from `CLUSTER
//! SHARDS` (`CLUSTER SLOTS` before Redis 7), which list each node's announced
//! address, and `MOVED` names it too. `cluster-announce-port <proxy port>` (set with
//! `CONFIG SET`) makes every node announce its proxy instead of its own port; the
//! announced bus port stays the real port + 10000 (`cluster-announce-bus-port` unset),
//! so the cluster bus never crosses a proxy and the cluster itself sees no fault, only
//! tandem does. The announced ip is left alone (127.0.0.1, where the proxies listen). A
//! restarted node announces its own port again until the setting is applied again.

mod support;
mod support_cluster;

use std::time::Duration;

use support::kill::{Target, kill_loop};
use support::load::{Writer, assert_exact_by, stat};
use support::proc::Tandem;
use support::*;
use support_cluster::proxied::ProxiedCluster;
use support_cluster::{ClusterClient, cluster_checkpoint, wait_caught_up_any};

const CATCH_UP: Duration = Duration::from_secs(90);

fn sync_into(src: &RedisServer, target: &ProxiedCluster, extra: &[&str]) -> Tandem {
    let (s, t) = (src.url(), target.url());
    let mut args = vec!["redis", "sync", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// Caught up, then every counter and list of the source equals the cluster's.
fn caught_up_and_exact(src: &RedisServer, dst: &ProxiedCluster, rounds: u64) {
    wait_caught_up_any(src, &|| dst.floor(), CATCH_UP);
    let (mut s, mut cc) = (src.client(), ClusterClient::new(&dst.cluster));
    assert_exact_by(&mut |a| s.cmd(a), &mut |a| cc.cmd(a, 1), "", rounds);
}

fn assert_source_link_kept(src: &RedisServer, t: &Tandem) {
    let log = t.log_text();
    assert!(!log.contains("replica link lost"), "{log}");
    assert_eq!(stat(src, "sync_full"), 1, "{log}");
}

/// Wait until tandem has applied more of the stream than now (the floor moved).
fn progress(dst: &Cluster) {
    let floor = || cluster_checkpoint(dst, "default");
    let before = floor().map_or(0, |c| c.1);
    wait_until("tandem makes progress", CATCH_UP, || {
        floor().is_some_and(|(s, o)| s == "incr" && o > before)
    });
}

/// One master's connections are reset and new ones refused for 8 s under writes: the
/// batches for its slots are retried with backoff, the other masters go on, and once it
/// is back only what did not land is resent.
#[test]
fn an_unreachable_master_is_retried_and_resumed_exactly() {
    let src = RedisServer::replication_source();
    let dst = ProxiedCluster::start(false);
    let writer = Writer::start(src.port, 51, Duration::from_millis(2), u64::MAX);
    let t = sync_into(&src, &dst, &["--batch-commands", "200"]);
    t.wait_log("full sync applied", CATCH_UP);
    progress(&dst.cluster);
    let victim = &dst.proxies[1];
    let accepted = victim.accepted();
    victim.refuse(true);
    victim.cut();
    std::thread::sleep(Duration::from_secs(8));
    let tries = victim.accepted() - accepted;
    victim.refuse(false);
    let rounds = writer.stop();
    wait_caught_up_any(&src, &|| dst.floor(), CATCH_UP);
    dst.assert_written_through_proxies();
    caught_up_and_exact(&src, &dst, rounds);
    assert!(
        tries >= 3,
        "tandem tried the master only {tries} times in 8 s"
    );
    let log = t.log_text();
    assert!(log.contains("cluster target: retrying"), "{log}");
    assert_source_link_kept(&src, &t);
}

/// A master is killed and restarted twice, with its data (`appendfsync always`): its
/// slot checkpoints are what it confirmed, and tandem resends only what did not land.
#[test]
fn a_restarted_master_with_its_data_is_resumed_exactly() {
    let src = RedisServer::replication_source();
    let mut dst = ProxiedCluster::start(true);
    let writer = Writer::start(src.port, 52, Duration::from_millis(2), u64::MAX);
    let t = sync_into(&src, &dst, &["--batch-commands", "200"]);
    t.wait_log("full sync applied", CATCH_UP);
    for _ in 0..2 {
        progress(&dst.cluster);
        dst.cluster.masters[2].restart();
        dst.announce(2);
    }
    let rounds = writer.stop();
    wait_caught_up_any(&src, &|| dst.floor(), CATCH_UP);
    dst.assert_written_through_proxies();
    caught_up_and_exact(&src, &dst, rounds);
    assert!(t.log_text().contains("cluster target: retrying"));
    assert_source_link_kept(&src, &t);
}

/// A master restarted without persistence comes back without the writes it had
/// confirmed (it keeps its node id and slots: `nodes.conf`). Resending only the batches
/// in flight would leave a hole in its slots, so tandem stops with one line naming the
/// master; with the checkpoints removed, as the line says, a new copy ends exact.
/// (No proxies: the restarted node must announce the address it had.)
#[test]
fn a_master_that_lost_confirmed_writes_stops_tandem_then_a_new_copy_is_exact() {
    let src = RedisServer::replication_source();
    let mut dst = Cluster::start(3, 0);
    let writer = Writer::start(src.port, 53, Duration::from_millis(2), u64::MAX);
    let (s, d) = (src.url(), dst.url());
    let sync = || {
        Tandem::start(&[
            "redis",
            "sync",
            "--source",
            &s,
            "--target",
            &d,
            "--skip-precheck",
        ])
    };
    let mut t = sync();
    t.wait_log("full sync applied", CATCH_UP);
    progress(&dst);
    dst.masters[1].restart();
    let (err, log) = t.one_error_line(CATCH_UP);
    assert!(err.contains("lost writes it had confirmed"), "{log}");
    let port = dst.masters[1].port;
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{log}");
    forget_checkpoints(&dst);
    let t = sync();
    let rounds = writer.stop();
    wait_caught_up_any(&src, &|| cluster_checkpoint(&dst, "default"), CATCH_UP);
    let (mut s, mut cc) = (src.client(), ClusterClient::new(&dst));
    assert_exact_by(&mut |a| s.cmd(a), &mut |a| cc.cmd(a, 1), "", rounds);
    drop(t);
}

/// SIGKILL six times, half of them in a full sync (the checkpoints removed first),
/// under writes, into a cluster reached through the proxies; then SIGTERM: exit 0, the
/// floor checkpoint at the source's offset, every counter and list exact.
#[test]
fn sigkill_at_random_moments_into_a_cluster_then_sigterm_is_exact() {
    let dst = ProxiedCluster::start(false);
    let mut cc = ClusterClient::new(&dst.cluster);
    let proxied = &dst;
    let mut target = Target {
        url: dst.url(),
        forget: Box::new(|| forget_checkpoints(&dst.cluster)),
        checkpoint: Box::new(|| dst.floor()),
        read: Box::new(move |a| {
            proxied.assert_written_through_proxies();
            cc.cmd(a, 1)
        }),
    };
    // An RDB of ~10 MB: a copy into three masters lasts long enough to be hit (2.5 MB
    // no longer did once the copy's RESTOREs went per master: 0 of 3 kills in the copy).
    let r = kill_loop(&mut target, 6, 20_000);
    assert_eq!(r.in_full + r.in_incr, 6);
}

/// Remove tandem's checkpoints from every master: the next run copies again.
fn forget_checkpoints(c: &Cluster) {
    for m in &c.masters {
        let mut c = m.client();
        for key in checkpoint_keys(&mut c) {
            c.cmd_bytes(&[b"DEL", &key]);
        }
    }
}

/// Every `__tandem:ckpt:*` key of one master: the floor and the slot checkpoints.
fn checkpoint_keys(c: &mut Client) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..100_000 {
        let Frame::Array(reply) =
            c.cmd(&["SCAN", &cursor, "MATCH", "__tandem:ckpt:*", "COUNT", "1000"])
        else {
            panic!("SCAN")
        };
        cursor = frame_to_string(&reply[0]);
        if let Frame::Array(keys) = &reply[1] {
            out.extend(keys.iter().map(|k| frame_to_string(k).into_bytes()));
        }
        if cursor == "0" {
            return out;
        }
    }
    panic!("SCAN did not finish");
}

/// A failover inside the target cluster that loses confirmed writes: master 0's replica
/// is frozen (it receives nothing) while tandem's batches for master 0's slots are
/// confirmed, then master 0 dies and the replica takes over without them. Before the
/// first batch for those slots goes to the new master, their checkpoints there are found
/// behind what tandem saw confirmed: the floor goes back to them and the engine starts
/// again from there, so the lost writes are applied again — and nothing twice. Before,
/// tandem went on after the failover and the counters of those slots stayed short.
#[test]
fn a_target_failover_that_lost_confirmed_writes_is_resumed_exactly() {
    let src = RedisServer::replication_source();
    let mut dst = Cluster::start(3, 1);
    let floor = |c: &Cluster| {
        let key = "__tandem:ckpt:default";
        c.nodes().find_map(|n| {
            let mut cl = Client::connect(n.port).ok()?;
            match cl.try_cmd(&["HMGET", key, "state", "offset"]).ok()? {
                Frame::Array(v) => match (&v[0], &v[1]) {
                    (Frame::BulkString(s), Frame::BulkString(o)) => Some((
                        String::from_utf8_lossy(s).into_owned(),
                        String::from_utf8_lossy(o).parse().unwrap(),
                    )),
                    _ => None,
                },
                _ => None,
            }
        })
    };
    let writer = Writer::start(src.port, 61, Duration::from_millis(2), u64::MAX);
    let (s, d) = (src.url(), dst.url());
    let mut t = Tandem::start(&["redis", "sync", "--source", &s, "--target", &d]);
    t.wait_log("full sync applied", CATCH_UP);
    progress(&dst);
    dst.replicas[0].freeze(true);
    // Writes the frozen replica never gets, confirmed by master 0 (the source waits
    // until tandem ACKs them: WAIT 1 counts tandem as its replica).
    let at = writer.rounds() + 100;
    wait_until("writes while the replica is frozen", CATCH_UP, || {
        writer.rounds() >= at
    });
    let mut sc = src.client();
    assert_eq!(sc.cmd(&["WAIT", "1", "30000"]), Frame::Integer(1));
    dst.masters[0].kill();
    dst.replicas[0].freeze(false);
    let r0 = &dst.replicas[0];
    assert_eq!(
        r0.cmd(&["CLUSTER", "FAILOVER", "TAKEOVER"]),
        Frame::SimpleString(b"OK".to_vec())
    );
    wait_until("the replica serves master 0's slots", CATCH_UP, || {
        r0.info_field("replication", "role").as_deref() == Some("master")
            && [r0, &dst.masters[1], &dst.masters[2]].iter().all(|n| {
                n.client()
                    .cmd_text(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            })
    });
    let rounds = writer.stop();
    wait_caught_up_any(&src, &|| floor(&dst), CATCH_UP);
    let mut cc = ClusterClient::new(&dst);
    let mut s = src.client();
    assert_exact_by(&mut |a| s.cmd(a), &mut |a| cc.cmd(a, 1), "", rounds);
    let log = t.log_text();
    assert!(log.contains("a failover lost confirmed writes"), "{log}");
    assert!(log.contains("starting the engine again"), "{log}");
    assert!(t.is_running(), "{log}");
}

/// The clear before a full resync into a cluster target: keys deleted on the source
/// while the link is down, with a backlog too small to continue, go from every master
/// (the sink's masters, `resync.rs`), and only the link's keys go: one outside the key
/// filter keeps its value.
#[test]
fn a_full_resync_into_a_cluster_removes_the_keys_deleted_on_the_source_meanwhile() {
    use support::faultproxy::{FaultProxy, delete_past_the_backlog_while_cut};
    let src = RedisServer::start_with(
        ServerOpts::default()
            .arg("repl-diskless-sync-delay", "0")
            .arg("repl-ping-replica-period", "1")
            .arg("repl-backlog-size", "16kb"),
    );
    let dst = Cluster::start(3, 0);
    let mut s = src.client();
    for i in 0..50 {
        s.cmd(&["SET", &format!("gone:{i}"), "v"]);
        s.cmd(&["SET", &format!("kept:{i}"), "v"]);
    }
    let mut cc = ClusterClient::new(&dst);
    cc.cmd(&["SET", "local:x", "theirs"], 1);
    let proxy = FaultProxy::start(src.port);
    let (p, d) = (proxy.url(), dst.url());
    let t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &p,
        "--target",
        &d,
        "--skip-precheck",
        "--exclude-prefix",
        "local:",
    ]);
    let floor = || cluster_checkpoint(&dst, "default");
    wait_caught_up_any(&src, &floor, CATCH_UP);
    delete_past_the_backlog_while_cut(&proxy, &mut s, &t, CATCH_UP);
    wait_caught_up_any(&src, &floor, CATCH_UP);
    let mut got: Vec<Vec<u8>> = dst
        .masters
        .iter()
        .flat_map(|m| data::keys(&mut m.client(), 0))
        .collect();
    got.sort();
    let mut want = data::keys(&mut s, 0);
    want.push(b"local:x".to_vec());
    want.sort();
    assert_eq!(stat(&src, "sync_full"), 2, "{}", t.log_text());
    assert_eq!(got, want, "{}", t.log_text());
    // gone:* and kept:*, spread over the three masters, then loaded again.
    assert!(t.log_text().contains("removed=100"), "{}", t.log_text());
    assert_eq!(
        cc.cmd(&["GET", "local:x"], 1),
        Frame::BulkString(b"theirs".to_vec())
    );
}
