//! `tandem mongo sync --fetch oplog` against secantus: copy, then the entries secantus
//! logs as mongod does (inserts, deletes, replacements, create, drop, dropDatabase),
//! exactly once across kill -9, and a clear error when the oplog lost the checkpoint.
//! (Update diffs, transactions and index DDL in mongod's oplog format are covered by the
//! recorded fixtures in mongo_replay.rs: secantus writes other shapes for them.)

mod support;

use std::time::Duration;

use mongodb::bson::{Document, doc};
use support::mongo::*;
use support::mongo_data::*;
use support::proc::Tandem;

const CATCH_UP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_copy_then_inserts_replacements_deletes_and_ddl() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    seed(&a).await;
    let mut t = start_sync(&src, &dst, &["--fetch", "oplog"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr"]).await;
    let shop = a.database("mshop");
    let o = shop.collection::<Document>("orders");
    o.insert_many((9000..9200).map(|i| doc! {"_id": i, "v": i}))
        .await
        .unwrap();
    o.replace_one(
        doc! {"_id": 9001},
        doc! {"w": "replaced", "n": [1, {"x": null}]},
    )
    .await
    .unwrap();
    let mut typed = every_type(5);
    typed.remove("$dollar"); // a replacement may not hold one; the copy test has it
    o.replace_one(doc! {"_id": 5}, typed).await.unwrap();
    o.delete_one(doc! {"_id": 9002}).await.unwrap();
    o.delete_many(doc! {"_id": {"$lt": 500}}).await.unwrap();
    shop.create_collection("made")
        .capped(true)
        .size(65536)
        .await
        .unwrap();
    shop.collection::<Document>("made")
        .insert_many((0..30).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    shop.collection::<Document>("implicit")
        .insert_one(doc! {"_id": "first"})
        .await
        .unwrap();
    shop.collection::<Document>("validated")
        .drop()
        .await
        .unwrap();
    let gone = a.database("mgone");
    gone.collection::<Document>("x")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert!(
        b.list_database_names()
            .await
            .unwrap()
            .contains(&"mgone".to_string())
    );
    gone.drop().await.unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr", "mgone"]).await;
    assert!(
        !b.list_database_names()
            .await
            .unwrap()
            .contains(&"mgone".to_string()),
        "dropDatabase not applied"
    );
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// Inserts (a doubled one would be a duplicate key, a skipped one a missing document),
/// tandem killed with SIGKILL in the middle of each burst and restarted while the burst
/// goes on: secantus's tailable cursor skips the entries committed while it opens, which
/// the reader must notice (source/oplog.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_kill9_loop_inserts_exactly_once() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    a.database("mok").create_collection("c").await.unwrap();
    let mut t = start_sync(&src, &dst, &["--fetch", "oplog", "--batch-ops", "10"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    let (sc, tc) = (
        a.database("mok").collection::<Document>("c"),
        b.database("mok").collection::<Document>("c"),
    );
    let mut logs = Vec::new();
    for round in 0..5i32 {
        let burst = {
            let sc = sc.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    sc.insert_one(doc! {"_id": round * 1000 + i, "r": round})
                        .await
                        .unwrap();
                    if i % 50 == 0 {
                        sc.delete_one(doc! {"_id": round * 1000 + i}).await.unwrap();
                    }
                }
            })
        };
        let floor = tc.count_documents(doc! {}).await.unwrap();
        wait_for("tandem applying the burst", CATCH_UP, || async {
            tc.count_documents(doc! {}).await.unwrap() > floor + 20 || burst.is_finished()
        })
        .await;
        t.kill9();
        logs.push(t.log_text());
        t = Tandem::start(&[
            "mongo",
            "sync",
            "--source",
            &src.uri(),
            "--target",
            &dst.uri(),
            "--fetch",
            "oplog",
            "--batch-ops",
            "10",
        ]);
        burst.await.unwrap();
        wait_marker(&a, &b, "default", CATCH_UP).await;
    }
    let (want, got) = (ids(&sc).await, ids(&tc).await);
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && want.len() == 5 * (200 - 4),
        "source {} documents, target {}; missing {missing:?}, extra {extra:?}\n{}\n--- last ---\n{}",
        want.len(),
        got.len(),
        logs.join("\n--- next process ---\n"),
        t.log_text()
    );
    assert_same_coll(&a, &b, "mok", "c").await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

async fn ids(c: &mongodb::Collection<Document>) -> std::collections::BTreeSet<i32> {
    let mut out = std::collections::BTreeSet::new();
    let mut cur = c.find(doc! {}).await.unwrap();
    while cur.advance().await.unwrap() {
        out.insert(cur.deserialize_current().unwrap().get_i32("_id").unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_history_lost_is_one_clear_error() {
    let src = MongoServer::start_with(MongoOpts {
        extra: vec!["--oplog-max-entries".into(), "100".into()],
        ..Default::default()
    });
    let dst = MongoServer::start();
    let (a, b) = (src.client().await, dst.client().await);
    let mut t = start_sync(&src, &dst, &["--fetch", "oplog", "--mode", "incr"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    // Pruning runs every 1000 writes: 3000 push the checkpoint's entry out.
    let c = a.database("mlost").collection::<Document>("c");
    for k in 0..30 {
        c.insert_many((0..100).map(|i| doc! {"_id": k * 100 + i}))
            .await
            .unwrap();
    }
    let mut t = start_sync(&src, &dst, &["--fetch", "oplog"]);
    let (line, log) = t.one_error_line(CATCH_UP);
    let errors = [line.as_str()];
    assert!(
        errors[0].contains("no longer holds position") && errors[0].contains("new full sync"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // Asked to, tandem copies again instead.
    let mut t = start_sync(
        &src,
        &dst,
        &["--fetch", "oplog", "--on-history-lost", "resync"],
    );
    // The old checkpoint says "incremental" until the resync replaces it.
    for _ in 0..3000 {
        if t.log_text().contains("copy done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same_coll(&a, &b, "mlost", "c").await;
    assert!(
        t.log_text().contains("--on-history-lost resync: dropping"),
        "{}",
        t.log_text()
    );
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}
