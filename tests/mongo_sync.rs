//! `tandem mongo sync` against real servers (secantus, a MongoDB-wire replica set):
//! the full copy of catalog, indexes and every BSON type, then every kind of change,
//! transactions whole, exactly once across kill -9.

mod support;

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use support::mongo::*;
use support::mongo_data::*;

const CATCH_UP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_then_changes_of_every_kind() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    seed(&a).await;
    let mut t = start_sync(&src, &dst, &["--partition-docs", "300", "--workers", "3"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr"]).await;
    changes(&a).await;
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr", "mtmp"]).await;
    assert!(
        b.database("mshop")
            .collection::<Document>("orders")
            .find_one(doc! {"_id": 7001})
            .await
            .unwrap()
            .is_none()
    );
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// A client of the target that reads a collection's documents grouped by `tag`:
/// one query, so one snapshot.
async fn tag_counts(c: &Client, db: &str, coll: &str) -> Vec<(i32, i32)> {
    let mut cur = c
        .database(db)
        .collection::<Document>(coll)
        .aggregate(vec![
            doc! {"$group": {"_id": "$tag", "n": {"$sum": 1}}},
            doc! {"$sort": {"_id": 1}},
        ])
        .await
        .unwrap();
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        let d: Document = cur.deserialize_current().unwrap();
        out.push((d.get_i32("_id").unwrap_or(-1), d.get_i32("n").unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_half_a_transaction() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    a.database("matomic").create_collection("t").await.unwrap();
    let mut t = start_sync(&src, &dst, &["--batch-ops", "50"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    let coll = a.database("matomic").collection::<Document>("t");
    let writer = tokio::spawn(async move {
        let mut s = coll.client().start_session().await.unwrap();
        for tag in 0..8 {
            s.start_transaction().await.unwrap();
            coll.insert_many((0..300).map(|i| doc! {"_id": tag * 1000 + i, "tag": tag}))
                .session(&mut s)
                .await
                .unwrap();
            s.commit_transaction().await.unwrap();
        }
    });
    // Polled while the transactions land: every group is whole or absent.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let counts = tag_counts(&b, "matomic", "t").await;
        for (tag, n) in &counts {
            assert_eq!(*n, 300, "tag {tag} half applied: {counts:?}");
            seen.insert(*tag);
        }
        if seen.len() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_eq!(
        tag_counts(&b, "matomic", "t").await,
        (0..8).map(|t| (t, 300)).collect::<Vec<_>>()
    );
    assert_same_coll(&a, &b, "matomic", "t").await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// `$inc` / `$push` load (plain and in transactions) while tandem is killed with
/// SIGKILL at moments spread over the load, restarted with 1 to 4 parallel appliers:
/// every counter and array ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loop_change_stream_exactly_once() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    let coll = a.database("mkill").collection::<Document>("c");
    coll.insert_many((0..20).map(|i| doc! {"_id": i, "n": 0, "arr": []}))
        .await
        .unwrap();
    let mut t = start_sync(&src, &dst, &["--batch-ops", "20"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    let load = {
        let coll = coll.clone();
        tokio::spawn(async move {
            let mut s = coll.client().start_session().await.unwrap();
            for k in 0..1500i32 {
                let id = k % 20;
                if k % 10 == 0 {
                    s.start_transaction().await.unwrap();
                    coll.update_one(
                        doc! {"_id": id},
                        doc! {"$inc": {"n": 1}, "$push": {"arr": k}},
                    )
                    .session(&mut s)
                    .await
                    .unwrap();
                    coll.update_one(
                        doc! {"_id": (id + 1) % 20},
                        doc! {"$inc": {"n": 1}, "$push": {"arr": -k}},
                    )
                    .session(&mut s)
                    .await
                    .unwrap();
                    s.commit_transaction().await.unwrap();
                } else {
                    coll.update_one(
                        doc! {"_id": id},
                        doc! {"$inc": {"n": 1}, "$push": {"arr": k}},
                    )
                    .await
                    .unwrap();
                }
            }
        })
    };
    let mut kills = 0;
    while !load.is_finished() || kills < 5 {
        // Spread over the load by the number of changes applied, not by time.
        let before = applied(&b).await;
        wait_for("tandem applying", CATCH_UP, || async {
            applied(&b).await > before || load.is_finished()
        })
        .await;
        t.kill9();
        kills += 1;
        // Restarts change the number of parallel appliers too: their checkpoints differ
        // by up to a batch, and the replay from the lowest must still end exact.
        let workers = ["1", "3", "2", "4"][kills % 4];
        t = start_sync(&src, &dst, &["--batch-ops", "20", "--workers", workers]);
        if kills >= 12 {
            break;
        }
    }
    load.await.unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    let total: i32 = dump_counts(&b).await;
    assert_eq!(total, 1500 + 150, "every $inc applied once");
    assert_same_coll(&a, &b, "mkill", "c").await;
    assert!(kills >= 5, "only {kills} kills");
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

async fn applied(b: &Client) -> i64 {
    dump_counts(b).await as i64
}

async fn dump_counts(b: &Client) -> i32 {
    let coll = b.database("mkill").collection::<Document>("c");
    let mut cur = coll.find(doc! {}).await.unwrap();
    let mut n = 0;
    while cur.advance().await.unwrap() {
        let d: Document = cur.deserialize_current().unwrap();
        n += d.get_i32("n").unwrap_or(0);
    }
    n
}

/// A copy killed with SIGKILL after some partitions are done resumes with only the
/// others, and changes made during both runs converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_copy_resumes_where_it_stopped() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    let big = a.database("mresume").collection::<Document>("big");
    for k in 0..12 {
        big.insert_many(
            (0..1000).map(|i| doc! {"_id": k * 1000 + i, "k": k, "pad": "x".repeat(100)}),
        )
        .await
        .unwrap();
    }
    a.database("mresume")
        .collection::<Document>("small")
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let args = ["--partition-docs", "1000", "--workers", "1"];
    let mut t = start_sync(&src, &dst, &args);
    let progress = b.database("__tandem").collection::<Document>("copy");
    wait_for("3 copy partitions done", CATCH_UP, || async {
        progress.count_documents(doc! {"done": true}).await.unwrap() >= 3
    })
    .await;
    t.kill9();
    let done = progress.count_documents(doc! {"done": true}).await.unwrap();
    let total = progress.count_documents(doc! {}).await.unwrap();
    assert!(
        done < total,
        "the copy finished before the kill ({done} of {total})"
    );
    // Changes while tandem is down, to copied and uncopied partitions alike.
    big.update_many(
        doc! {"_id": {"$in": [5, 1500, 11_999]}},
        doc! {"$set": {"changed": true}},
    )
    .await
    .unwrap();
    big.delete_many(doc! {"_id": {"$in": [6, 1501, 11_998]}})
        .await
        .unwrap();
    big.insert_one(doc! {"_id": 50_000}).await.unwrap();
    let mut t = start_sync(&src, &dst, &args);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same_coll(&a, &b, "mresume", "big").await;
    assert_same_coll(&a, &b, "mresume", "small").await;
    let log = t.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("partitions to copy"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(&format!("copy: {} partitions to copy", total - done)),
        "{line}\n{log}"
    );
    assert_eq!(t.interrupt(), Some(0), "{log}");
}

/// Parallel appliers whose checkpoints differ (one worker's put back, as a crash
/// between two workers' commits leaves them): the restart replays from the lowest, and
/// the inserts and deletes the others already applied are taken as the replay they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliers_behind_each_other_resume_exact() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    let sc = a.database("mpar").collection::<Document>("c");
    sc.insert_many((0..10).map(|i| doc! {"_id": i, "n": 0}))
        .await
        .unwrap();
    let mut t = start_sync(&src, &dst, &["--workers", "2"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    let behind = checkpoint(&b, "default/0")
        .await
        .expect("worker checkpoints");
    sc.insert_many((10..60).map(|i| doc! {"_id": i, "n": i}))
        .await
        .unwrap();
    sc.delete_many(doc! {"_id": {"$lt": 5}}).await.unwrap();
    sc.update_many(doc! {}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    b.database("__tandem")
        .collection::<Document>("checkpoints")
        .replace_one(doc! {"_id": "default/0"}, behind)
        .await
        .unwrap();
    let mut t = start_sync(&src, &dst, &["--workers", "3"]);
    sc.insert_one(doc! {"_id": 100}).await.unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same_coll(&a, &b, "mpar", "c").await;
    assert!(t.is_running(), "{}", t.log_text());
    assert!(checkpoint(&b, "default/2").await.is_some());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}
