//! `tandem mongo twoway` between two live secantus servers: no echoes (counters
//! `$inc`-ed on one side end equal, not doubled), contested documents converge,
//! transactions stay whole, exactly once across kill -9 in both directions.

mod support;

use std::path::Path;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use support::mongo::*;
use support::proc::Tandem;

const CATCH_UP: Duration = Duration::from_secs(60);
const A2B: &str = "default:a2b";
const B2A: &str = "default:b2a";

fn start_twoway(a: &MongoServer, b: &MongoServer, extra: &[&str]) -> Tandem {
    let (ua, ub) = (a.uri(), b.uri());
    let mut args = vec!["mongo", "twoway", "--a", &ua, "--b", &ub];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// Both directions caught up: a marker each way.
async fn both_ways(a: &Client, b: &Client) {
    wait_marker(a, b, A2B, CATCH_UP).await;
    wait_marker(b, a, B2A, CATCH_UP).await;
}

async fn counters(c: &Client, coll: &str) -> Vec<(Bson, i32)> {
    dump_docs(c, "tw", coll)
        .await
        .into_iter()
        .map(|d| (d.get("_id").unwrap().clone(), d.get_i32("n").unwrap_or(-1)))
        .collect()
}

async fn dump_docs(c: &Client, db: &str, coll: &str) -> Vec<Document> {
    dump(c, db, coll)
        .await
        .into_iter()
        .map(|(_, d)| mongodb::bson::from_slice(&d).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_writes_flow_both_ways_once() {
    let (sa, sb) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (sa.client().await, sb.client().await);
    let on_a = a.database("tw").collection::<Document>("from_a");
    on_a.insert_many((0..300).map(|i| doc! {"_id": i, "n": 0, "arr": []}))
        .await
        .unwrap();
    // The copy goes A → B, in tagged batches that B's link must not send back.
    let mut t = start_twoway(&sa, &sb, &["--partition-docs", "100"]);
    both_ways(&a, &b).await;
    assert_same_coll(&a, &b, "tw", "from_a").await;
    let on_b = b.database("tw").collection::<Document>("from_b");
    on_b.insert_many((0..100).map(|i| doc! {"_id": format!("b{i}"), "n": 0}))
        .await
        .unwrap();
    for round in 0..3 {
        for i in 0..50 {
            on_a.update_one(
                doc! {"_id": i},
                doc! {"$inc": {"n": 1}, "$push": {"arr": round}},
            )
            .await
            .unwrap();
            on_b.update_one(doc! {"_id": format!("b{i}")}, doc! {"$inc": {"n": 1}})
                .await
                .unwrap();
        }
    }
    on_a.delete_many(doc! {"_id": {"$gte": 290}}).await.unwrap();
    on_b.replace_one(doc! {"_id": "b99"}, doc! {"n": 7, "replaced": true})
        .await
        .unwrap();
    // A transaction on B: all of it on A, or none.
    let mut s = b.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    for i in 0..3 {
        on_b.insert_one(doc! {"_id": format!("txn{i}"), "n": 100})
            .session(&mut s)
            .await
            .unwrap();
    }
    s.commit_transaction().await.unwrap();
    both_ways(&a, &b).await;
    for coll in ["from_a", "from_b"] {
        assert_same_coll(&a, &b, "tw", coll).await;
    }
    let want_a: Vec<(Bson, i32)> = (0..290)
        .map(|i| (Bson::Int32(i), if i < 50 { 3 } else { 0 }))
        .collect();
    let mut got_a = counters(&b, "from_a").await;
    got_a.sort_by_key(|(id, _)| id.as_i32());
    assert_eq!(got_a, want_a, "A's $inc applied once on B");
    let got_b = counters(&a, "from_b").await;
    assert_eq!(got_b.len(), 103, "{got_b:?}");
    for (id, n) in &got_b {
        let id = id.as_str().unwrap();
        let want = match id {
            "b99" => 7,
            t if t.starts_with("txn") => 100,
            b => {
                if b[1..].parse::<i32>().unwrap() < 50 {
                    3
                } else {
                    0
                }
            }
        };
        assert_eq!(*n, want, "{id}: B's $inc applied once on A");
    }
    let arr = dump_docs(&a, "tw", "from_a").await;
    assert_eq!(arr[0].get_array("arr").unwrap().len(), 3, "{:?}", arr[0]);
    assert_quiet(&a, &b).await;
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// Random writes to the same documents on both sides at once, over several seeds:
/// conflicts occur (the conflict log says so), and within 5 s of both sides going
/// quiet they hold the same documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contested_documents_converge() {
    let (sa, sb) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (sa.client().await, sb.client().await);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("conflicts.jsonl");
    let mut t = start_twoway(
        &sa,
        &sb,
        &[
            "--full-sync",
            "none",
            "--conflict-log",
            log.to_str().unwrap(),
        ],
    );
    both_ways(&a, &b).await;
    for seed in 1..=3u64 {
        let coll = format!("c{seed}");
        let load = |c: Client, side: u64| {
            let coll = coll.clone();
            tokio::spawn(async move {
                let cl = c.database("tw").collection::<Document>(&coll);
                let mut x = seed * 7919 + side * 104_729;
                for k in 0..150u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = (x % 8) as i32;
                    match x % 5 {
                        0 => {
                            let _ = cl
                                .replace_one(
                                    doc! {"_id": id},
                                    doc! {"n": k as i32, "by": side as i32},
                                )
                                .upsert(true)
                                .await;
                        }
                        1 => {
                            let _ = cl.delete_one(doc! {"_id": id}).await;
                        }
                        2 => {
                            let _ = cl
                                .update_one(
                                    doc! {"_id": id},
                                    doc! {"$set": {"s": format!("{side}-{k}")}},
                                )
                                .await;
                        }
                        _ => {
                            let _ = cl
                                .update_one(doc! {"_id": id}, doc! {"$inc": {"n": 1}})
                                .upsert(true)
                                .await;
                        }
                    }
                }
            })
        };
        let (la, lb) = (load(a.clone(), 1), load(b.clone(), 2));
        la.await.unwrap();
        lb.await.unwrap();
        // Within 5 s of the writers stopping (markers both ways first).
        let quiet = std::time::Instant::now();
        both_ways(&a, &b).await;
        let left = Duration::from_secs(5).saturating_sub(quiet.elapsed());
        wait_for(
            &format!("seed {seed}: both sides holding the same documents"),
            left.max(Duration::from_millis(100)),
            || async { dump(&a, "tw", &coll).await == dump(&b, "tw", &coll).await },
        )
        .await;
    }
    let lines = conflict_lines(&log);
    assert!(
        !lines.is_empty(),
        "contested writes made no conflict\n{}",
        t.log_text()
    );
    for l in &lines {
        assert!(l["ns"].as_str().unwrap().starts_with("tw.c"), "{l}");
        assert!(["a", "b"].contains(&l["winner"].as_str().unwrap()), "{l}");
    }
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

fn conflict_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `$inc` load on both sides (each on its own documents, some in transactions) while
/// tandem is killed with SIGKILL three times: every counter exact on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_both_ways_exactly_once() {
    let (sa, sb) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (sa.client().await, sb.client().await);
    let args = ["--full-sync", "none", "--batch-ops", "20"];
    let mut t = start_twoway(&sa, &sb, &args);
    both_ways(&a, &b).await;
    let load = |c: Client, prefix: &'static str| {
        tokio::spawn(async move {
            let cl = c.database("tw").collection::<Document>("k");
            let mut s = c.start_session().await.unwrap();
            for k in 0..600i32 {
                let id = format!("{prefix}{}", k % 10);
                if k % 10 == 0 {
                    s.start_transaction().await.unwrap();
                    for d in [&id, &format!("{prefix}{}", (k + 1) % 10)] {
                        cl.update_one(doc! {"_id": d}, doc! {"$inc": {"n": 1}})
                            .upsert(true)
                            .session(&mut s)
                            .await
                            .unwrap();
                    }
                    s.commit_transaction().await.unwrap();
                } else {
                    cl.update_one(doc! {"_id": &id}, doc! {"$inc": {"n": 1}})
                        .upsert(true)
                        .await
                        .unwrap();
                }
            }
        })
    };
    let (la, lb) = (load(a.clone(), "a"), load(b.clone(), "b"));
    let mut kills = 0;
    while kills < 3 {
        let before = (applied(&a).await, applied(&b).await);
        wait_for("tandem applying both ways", CATCH_UP, || async {
            (applied(&a).await > before.0 && applied(&b).await > before.1)
                || (la.is_finished() && lb.is_finished())
        })
        .await;
        t.kill9();
        kills += 1;
        t = start_twoway(&sa, &sb, &args);
    }
    la.await.unwrap();
    lb.await.unwrap();
    both_ways(&a, &b).await;
    let (on_a, on_b) = (counters(&a, "k").await, counters(&b, "k").await);
    assert_eq!(on_a, on_b, "both sides hold the same counters");
    let total: i32 = on_a.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 2 * (600 + 60), "every $inc applied once, both ways");
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// How many batches a link has committed on this side: its checkpoint's `ts` moves.
async fn applied(c: &Client) -> i64 {
    let ckpts = c.database("__tandem").collection::<Document>("checkpoints");
    let mut n = 0i64;
    let mut cur = ckpts.find(doc! {}).await.unwrap();
    while cur.advance().await.unwrap() {
        let d = cur.deserialize_current().unwrap();
        if let Some(Bson::Timestamp(t)) = d.get("ts") {
            n += ((t.time as i64) << 32) | t.increment as i64;
        }
    }
    n
}

/// No ping-pong: once both sides are quiet, neither oplog grows for a second (an echo
/// that moved a checkpoint would be echoed back, and so on).
async fn assert_quiet(a: &Client, b: &Client) {
    let still = (last_op(a).await, last_op(b).await);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (na, nb) = (newest_ops(a, still.0).await, newest_ops(b, still.1).await);
        assert!(
            na.is_empty() && nb.is_empty(),
            "writes go on while both sides are quiet\nA: {na:?}\nB: {nb:?}"
        );
    }
}

async fn newest_ops(c: &Client, after: mongodb::bson::Timestamp) -> Vec<Document> {
    let oplog = c.database("local").collection::<Document>("oplog.rs");
    let mut cur = oplog
        .find(doc! {"ts": {"$gt": after}})
        .projection(doc! {"op": 1, "ns": 1, "ts": 1, "o._id": 1, "lsid": 1})
        .await
        .unwrap();
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        out.push(cur.deserialize_current().unwrap());
    }
    out
}

/// Oplog mode (`--fetch oplog`) both ways, with the operations secantus logs as mongod
/// does (inserts, replacements, deletes; its update entries have their own shape): each
/// side's writes reach the other once, tandem's own transactions are not sent back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_mode_both_ways_without_echoes() {
    let (sa, sb) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (sa.client().await, sb.client().await);
    let mut t = start_twoway(&sa, &sb, &["--fetch", "oplog", "--full-sync", "none"]);
    both_ways(&a, &b).await;
    let (on_a, on_b) = (
        a.database("tw").collection::<Document>("oa"),
        b.database("tw").collection::<Document>("ob"),
    );
    on_a.insert_many((0..100).map(|i| doc! {"_id": i, "v": 0}))
        .await
        .unwrap();
    on_b.insert_many((0..100).map(|i| doc! {"_id": i, "v": 0}))
        .await
        .unwrap();
    for i in 0..30 {
        on_a.replace_one(doc! {"_id": i}, doc! {"v": 1, "side": "a"})
            .await
            .unwrap();
        on_b.replace_one(doc! {"_id": i}, doc! {"v": 2, "side": "b"})
            .await
            .unwrap();
    }
    on_a.delete_many(doc! {"_id": {"$gte": 90}}).await.unwrap();
    on_b.delete_many(doc! {"_id": {"$lt": 5}}).await.unwrap();
    both_ways(&a, &b).await;
    assert_same_coll(&a, &b, "tw", "oa").await;
    assert_same_coll(&a, &b, "tw", "ob").await;
    let oa = dump_docs(&b, "tw", "oa").await;
    assert_eq!(oa.len(), 90);
    assert_eq!(
        oa.iter().filter(|d| d.get_str("side") == Ok("a")).count(),
        30
    );
    let ob = dump_docs(&a, "tw", "ob").await;
    assert_eq!(ob.len(), 95);
    assert_eq!(
        ob.iter().filter(|d| d.get_str("side") == Ok("b")).count(),
        25
    );
    // A handoff is no conflict: B writes a document after A's write of it arrived, as
    // B's link knows from the echo of the A→B checkpoint (in secantus's update shape).
    let no_conflict = |t: &Tandem| {
        let log = t.log_text();
        assert!(!log.contains("conflict: document written"), "{log}");
    };
    no_conflict(&t);
    a.database("tw")
        .collection::<Document>("oh")
        .insert_one(doc! {"_id": 1, "v": "a"})
        .await
        .unwrap();
    both_ways(&a, &b).await;
    // A replacement: secantus logs updates in a shape of its own, which mongod never
    // writes and tandem does not apply.
    b.database("tw")
        .collection::<Document>("oh")
        .replace_one(doc! {"_id": 1}, doc! {"v": "b"})
        .await
        .unwrap();
    both_ways(&a, &b).await;
    assert_eq!(dump_docs(&a, "tw", "oh").await, [doc! {"_id": 1, "v": "b"}]);
    no_conflict(&t);
    assert_quiet(&a, &b).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// Oplog mode across kill -9: inserts on both sides while tandem is killed three times.
/// Every document arrives once, and no echo of a batch written before a crash comes back
/// after the restart (it would meet its own document: an `insert-exists` conflict).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_mode_kill9_no_echo_after_restart() {
    let (sa, sb) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (sa.client().await, sb.client().await);
    let args = [
        "--fetch",
        "oplog",
        "--full-sync",
        "none",
        "--batch-ops",
        "20",
    ];
    let mut t = start_twoway(&sa, &sb, &args);
    both_ways(&a, &b).await;
    let load = |c: Client, coll: &'static str| {
        tokio::spawn(async move {
            let cl = c.database("tw").collection::<Document>(coll);
            for k in 0..400i32 {
                cl.insert_one(doc! {"_id": k, "v": k}).await.unwrap();
            }
        })
    };
    let (la, lb) = (load(a.clone(), "ka"), load(b.clone(), "kb"));
    let mut logs = Vec::new();
    for _ in 0..3 {
        let before = (applied(&a).await, applied(&b).await);
        wait_for("tandem applying both ways", CATCH_UP, || async {
            (applied(&a).await > before.0 && applied(&b).await > before.1)
                || (la.is_finished() && lb.is_finished())
        })
        .await;
        logs.push(t.log_text());
        t.kill9();
        t = start_twoway(&sa, &sb, &args);
    }
    la.await.unwrap();
    lb.await.unwrap();
    both_ways(&a, &b).await;
    for coll in ["ka", "kb"] {
        assert_same_coll(&a, &b, "tw", coll).await;
        assert_eq!(dump(&a, "tw", coll).await.len(), 400, "{coll}");
    }
    logs.push(t.log_text());
    for l in &logs {
        assert!(!l.contains("conflict:"), "an echo came back:\n{l}");
    }
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}
