//! A sharded source read shard by shard (`--source-shard`, `--fetch oplog`): two
//! secantus servers stand in for two shards' replica sets (no mongos is installable
//! here, so the copy reads through `--source`, the first of them). Each shard has its own
//! checkpoint, and a collection whose documents live on both shards lands whole, exactly
//! once across kill -9.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use support::mongo::*;
use support::proc::Tandem;

const CATCH_UP: Duration = Duration::from_secs(60);

fn sync(a: &MongoServer, b: &MongoServer, dst: &MongoServer) -> Tandem {
    let (sa, sb) = (format!("a={}", a.uri()), format!("b={}", b.uri()));
    Tandem::start(&[
        "mongo",
        "sync",
        "--source",
        &a.uri(),
        "--target",
        &dst.uri(),
        "--fetch",
        "oplog",
        "--source-shard",
        &sa,
        "--source-shard",
        &sb,
        "--batch-ops",
        "10",
    ])
}

/// Every document of `db.coll` on either shard, by `_id` (as `dump` names it).
async fn union(shards: &[&Client], db: &str, coll: &str) -> BTreeMap<String, Document> {
    let mut out = BTreeMap::new();
    for c in shards {
        for (id, raw) in dump(c, db, coll).await {
            let id = String::from_utf8(id).unwrap();
            let d = Document::from_reader(&mut raw.as_slice()).unwrap();
            assert!(out.insert(id.clone(), d).is_none(), "{id} on both shards");
        }
    }
    out
}

async fn wait_both(a: &Client, b: &Client, t: &Client) {
    wait_marker(a, t, "default@a", CATCH_UP).await;
    wait_marker(b, t, "default@b", CATCH_UP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_copy_then_changes_of_both_exactly_once_across_kill9() {
    let (sa, sb, dst) = (
        MongoServer::source(),
        MongoServer::source(),
        MongoServer::start(),
    );
    let (a, b, t) = (sa.client().await, sb.client().await, dst.client().await);
    let copied = a.database("sa").collection::<Document>("c");
    copied
        .insert_many((0..300).map(|i| doc! {"_id": i, "v": i}))
        .await
        .unwrap();
    // The "sharded" collection: even _ids on shard a, odd ones on shard b.
    for c in [&a, &b] {
        c.database("both").create_collection("c").await.unwrap();
    }
    let (ca, cb) = (
        a.database("both").collection::<Document>("c"),
        b.database("both").collection::<Document>("c"),
    );
    let mut p = sync(&sa, &sb, &dst);
    wait_both(&a, &b, &t).await;
    // Written after the start: the copy reads shard a only (it stands in for the mongos).
    ca.insert_one(doc! {"_id": "ctr-a", "n": 0}).await.unwrap();
    cb.insert_one(doc! {"_id": "ctr-b", "n": 0}).await.unwrap();
    for (shard, id) in [("a", "default@a"), ("b", "default@b")] {
        let c = checkpoint(&t, id).await.unwrap_or_else(|| panic!("{id}"));
        assert_eq!(c.get_str("phase").unwrap(), "incr", "shard {shard}");
    }
    assert_same_coll(&a, &t, "sa", "c").await;

    let mut logs = Vec::new();
    for round in 0..4i32 {
        let burst = |c: Collection<Document>, parity: i32, ctr: &'static str| {
            tokio::spawn(async move {
                for i in 0..60 {
                    let id = round * 1000 + i * 2 + parity;
                    c.insert_one(doc! {"_id": id, "r": round}).await.unwrap();
                    // Replacements: secantus logs update operators in a shape of its
                    // own, unlike mongod (tests/mongo_oplog.rs).
                    let n = round * 60 + i + 1;
                    c.replace_one(doc! {"_id": ctr}, doc! {"n": n, "last": id})
                        .await
                        .unwrap();
                }
            })
        };
        let (ja, jb) = (burst(ca.clone(), 0, "ctr-a"), burst(cb.clone(), 1, "ctr-b"));
        let tc = t.database("both").collection::<Document>("c");
        let floor = tc.count_documents(doc! {}).await.unwrap();
        support::mongo::wait_for("tandem applying both bursts", CATCH_UP, || async {
            tc.count_documents(doc! {}).await.unwrap() > floor + 10
                || (ja.is_finished() && jb.is_finished())
        })
        .await;
        p.kill9();
        logs.push(p.log_text());
        ja.await.unwrap();
        jb.await.unwrap();
        p = sync(&sa, &sb, &dst);
        wait_both(&a, &b, &t).await;
    }
    let want = union(&[&a, &b], "both", "c").await;
    let got = union(&[&t], "both", "c").await;
    assert_eq!(want.len(), 2 + 4 * 120);
    if want != got {
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .map(|(k, _)| k)
            .collect();
        panic!(
            "target differs: missing {missing:?}, different {differ:?}, {} on the target\n{}",
            got.len(),
            logs.join("\n--- next process ---\n")
        );
    }
    for (ctr, n) in [("\"ctr-a\"", 240), ("\"ctr-b\"", 240)] {
        let d = &got[&format!("String({ctr})")];
        assert_eq!(d.get_i32("n").unwrap(), n, "{ctr}");
        assert!(matches!(d.get("last"), Some(Bson::Int32(_))), "{ctr}");
    }
    assert_same_coll(&a, &t, "sa", "c").await;
    assert_eq!(p.interrupt(), Some(0), "{}", p.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_of_one_name_or_a_change_stream_are_refused() {
    let (sa, sb, dst) = (
        MongoServer::source(),
        MongoServer::source(),
        MongoServer::start(),
    );
    let run = |extra: &[&str]| {
        let (s, d) = (sa.uri(), dst.uri());
        let mut args = vec!["mongo", "sync", "--source", &s, "--target", &d];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(support::tandem_bin())
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ua, ub) = (sa.uri(), sb.uri());
    // Both secantus servers call their replica set "secantus".
    let (code, err) = run(&[
        "--fetch",
        "oplog",
        "--source-shard",
        &ua,
        "--source-shard",
        &ub,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("a second shard named \"secantus\"") && err.contains("NAME=URI"),
        "{err}"
    );
    let (code, err) = run(&["--source-shard", &ua]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--fetch oplog"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
