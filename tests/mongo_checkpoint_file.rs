//! `tandem mongo sync --checkpoint-file` into a standalone secantus (no transactions):
//! the copy and every kind of change, convergence across kill -9, the replay of a batch
//! left in flight, and the errors of a standalone without the flag and of bad files.

mod support;

use std::path::Path;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use support::mongo::*;
use support::mongo_data::*;
use support::proc::Tandem;

const CATCH_UP: Duration = Duration::from_secs(60);

fn standalone() -> MongoServer {
    MongoServer::start_with(MongoOpts {
        standalone: true,
        ..Default::default()
    })
}

fn with_file(src: &MongoServer, dst: &MongoServer, file: &Path, extra: &[&str]) -> Tandem {
    let f = file.to_str().unwrap();
    let mut args = vec!["--checkpoint-file", f];
    args.extend_from_slice(extra);
    start_sync(src, dst, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_target_without_the_flag_is_one_error() {
    let (src, dst) = (MongoServer::source(), standalone());
    let hello = dst
        .client()
        .await
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert!(
        hello.get_str("setName").is_err(),
        "not a standalone: {hello}"
    );
    let mut t = start_sync(&src, &dst, &[]);
    let (line, log) = t.one_error_line(CATCH_UP);
    assert!(line.contains("standalone"), "{log}");
    assert!(line.contains("--checkpoint-file PATH"), "{log}");
}

/// The copy of catalog, indexes and every BSON type, then CRUD with the update
/// operators, DDL and transactions, into a standalone target; nothing of the
/// checkpoint is written to the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_then_changes_into_a_standalone() {
    let (src, dst) = (MongoServer::source(), standalone());
    let (a, b) = (src.client().await, dst.client().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("link.ckpt");
    seed(&a).await;
    let mut t = with_file(&src, &dst, &file, &["--partition-docs", "300"]);
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr"]).await;
    changes(&a).await;
    let c = a.database("mfile").collection::<Document>("c");
    c.insert_many((0..200).map(|i| doc! {"_id": i, "n": 0, "arr": [], "s": "x"}))
        .await
        .unwrap();
    for i in 0..200 {
        let u = match i % 4 {
            0 => doc! {"$inc": {"n": 5}},
            1 => doc! {"$push": {"arr": i}},
            2 => doc! {"$set": {"s": format!("v{i}"), "sub.k": i}},
            _ => doc! {"$unset": {"s": ""}},
        };
        c.update_one(doc! {"_id": i}, u).await.unwrap();
    }
    c.delete_many(doc! {"_id": {"$gte": 150}}).await.unwrap();
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr", "mtmp", "mfile"]).await;
    assert!(checkpoint(&b, "default").await.is_none());
    let saved = checkpoint_file(&file).unwrap();
    assert_eq!(saved["link"], "default", "{saved}");
    assert_eq!(saved["in_flight"], serde_json::Value::Null, "{saved}");
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    // A lost file is not a new link: the target's copy progress says otherwise.
    std::fs::remove_file(&file).unwrap();
    let mut t = with_file(&src, &dst, &file, &[]);
    let (line, log) = t.one_error_line(CATCH_UP);
    assert!(line.contains(&file.display().to_string()), "{log}");
    assert!(line.contains("does not exist"), "{log}");
    assert!(line.contains("copy progress"), "{log}");
}

/// `$set` load with inserts and deletes (and `$inc`, `$push`: logged as their results)
/// while tandem is killed with SIGKILL again and again: with at-least-once batches the
/// replays must still end in exactly the source's documents, and never stop the link
/// with a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loop_converges_exactly() {
    kill9_loop("change-stream").await;
}

/// The same through the oplog, with replacements for updates: secantus logs updates
/// in a shape of its own, not mongod's `$v:2` diffs (tests/mongo_oplog.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loop_converges_exactly_oplog() {
    kill9_loop("oplog").await;
}

async fn kill9_loop(fetch: &str) {
    let (src, dst) = (MongoServer::source(), standalone());
    let (a, b) = (src.client().await, dst.client().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("link.ckpt");
    let coll = a.database("mfkill").collection::<Document>("c");
    coll.insert_many((0..30).map(|i| doc! {"_id": i, "v": 0, "n": 0, "arr": []}))
        .await
        .unwrap();
    let args = ["--batch-ops", "20", "--fetch", fetch];
    let mut t = with_file(&src, &dst, &file, &args);
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    let oplog = fetch == "oplog";
    let load = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for k in 0..1500i32 {
                let id = k % 30;
                let field = format!("f{}", k % 7);
                if oplog {
                    coll.replace_one(doc! {"_id": id}, doc! {"v": k, field: k, "n": k / 30})
                        .await
                        .unwrap();
                } else {
                    coll.update_one(
                        doc! {"_id": id},
                        doc! {"$set": {"v": k, field: k}, "$inc": {"n": 1}, "$push": {"arr": k}},
                    )
                    .await
                    .unwrap();
                }
                if k % 5 == 0 {
                    coll.insert_one(doc! {"_id": 1000 + k, "k": k})
                        .await
                        .unwrap();
                }
                if k % 5 == 0 && k >= 50 {
                    coll.delete_one(doc! {"_id": 1000 + k - 50}).await.unwrap();
                }
            }
        })
    };
    let mut kills = 0;
    while !load.is_finished() || kills < 4 {
        // Spread over the load by what the target received, not by time.
        let before = sum_v(&b).await;
        wait_for("tandem applying", CATCH_UP, || async {
            sum_v(&b).await > before || load.is_finished()
        })
        .await;
        t.kill9();
        kills += 1;
        t = with_file(&src, &dst, &file, &args);
        if kills >= 10 {
            break;
        }
    }
    load.await.unwrap();
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_same_coll(&a, &b, "mfkill", "c").await;
    assert!(kills >= 4, "only {kills} kills");
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

async fn sum_v(b: &Client) -> i64 {
    let coll = b.database("mfkill").collection::<Document>("c");
    let mut cur = coll.find(doc! {}).await.unwrap();
    let mut n = 0i64;
    while cur.advance().await.unwrap() {
        let d: Document = cur.deserialize_current().unwrap();
        n += d.get_i32("v").unwrap_or(0) as i64;
    }
    n
}

/// A crash between a batch's writes and its checkpoint, made on purpose: the file put
/// back to before the batch. Without the in-flight mark the replayed inserts and
/// deletes are conflicts (the link stops, as `--on-conflict fail` says); with it they
/// are the replay they are, and the target ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_batch_in_flight_is_no_conflict() {
    let (src, dst) = (MongoServer::source(), standalone());
    let (a, b) = (src.client().await, dst.client().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("link.ckpt");
    let c = a.database("mfly").collection::<Document>("c");
    c.insert_many((0..20).map(|i| doc! {"_id": i, "n": 0}))
        .await
        .unwrap();
    let mut t = with_file(&src, &dst, &file, &[]);
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    let before = checkpoint_file(&file).unwrap();
    let mut t = with_file(&src, &dst, &file, &[]);
    c.insert_many((100..130).map(|i| doc! {"_id": i, "n": i}))
        .await
        .unwrap();
    c.delete_many(doc! {"_id": {"$lt": 5}}).await.unwrap();
    c.update_many(doc! {}, doc! {"$set": {"m": 1}, "$inc": {"n": 1}})
        .await
        .unwrap();
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    let after = checkpoint_file(&file).unwrap();
    assert_ne!(before["ts"], after["ts"]);

    std::fs::write(&file, before.to_string()).unwrap();
    let mut t = with_file(&src, &dst, &file, &[]);
    let (line, log) = t.one_error_line(CATCH_UP);
    assert!(line.contains("insert of a document that exists"), "{log}");

    let mut crashed = before.clone();
    crashed["in_flight"] = after["ts"].clone();
    std::fs::write(&file, crashed.to_string()).unwrap();
    let mut t = with_file(&src, &dst, &file, &[]);
    c.insert_one(doc! {"_id": 500}).await.unwrap();
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_same_coll(&a, &b, "mfly", "c").await;
    assert!(t.is_running(), "{}", t.log_text());
    let saved = checkpoint_file(&file).unwrap();
    assert_eq!(saved["in_flight"], serde_json::Value::Null, "{saved}");
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// A file that is not this link's checkpoint stops the link at start with one error
/// naming the file and what is wrong with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checkpoint_file_is_one_error_naming_it() {
    let (src, dst) = (MongoServer::source(), standalone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("link.ckpt");
    let good = |link: &str, history: &str| {
        serde_json::json!({
            "format": "tandem mongo checkpoint v1", "link": link, "history": history,
            "fetch": "oplog", "ts": {"t": 1, "i": 1}, "phase": "incr",
            "copy_end": null, "in_flight": null,
        })
        .to_string()
    };
    for (content, why) in [
        (
            "{\"format\": \"tandem mongo checkpoint v1\", \"li".to_string(),
            "corrupt JSON",
        ),
        ("\u{0}\u{1}garbage".to_string(), "corrupt JSON"),
        (good("other", "rs0"), "belongs to link \"other\""),
        (good("default", "no-such-history"), "belongs to history"),
    ] {
        std::fs::write(&file, &content).unwrap();
        let mut t = with_file(&src, &dst, &file, &["--fetch", "oplog"]);
        let (line, log) = t.one_error_line(CATCH_UP);
        assert!(line.contains(&file.display().to_string()), "{log}");
        assert!(line.contains(why), "{why}: {log}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
    }
}

/// `--on-history-lost resync` with a file: the file is removed with the copy progress,
/// and the copy starts again from a new position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lost_resync_starts_the_file_over() {
    let src = MongoServer::start_with(MongoOpts {
        extra: vec!["--oplog-max-entries".into(), "100".into()],
        ..Default::default()
    });
    let dst = standalone();
    let (a, b) = (src.client().await, dst.client().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("link.ckpt");
    let oplog = ["--fetch", "oplog"];
    let mut t = with_file(&src, &dst, &file, &["--fetch", "oplog", "--mode", "incr"]);
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    let old = checkpoint_file(&file).unwrap();
    // Pruning runs every 1000 writes: 3000 push the checkpoint's entry out.
    let c = a.database("mflost").collection::<Document>("c");
    for k in 0..30 {
        c.insert_many((0..100).map(|i| doc! {"_id": k * 100 + i}))
            .await
            .unwrap();
    }
    let mut t = with_file(&src, &dst, &file, &oplog);
    let (line, log) = t.one_error_line(CATCH_UP);
    assert!(line.contains("new full sync"), "{log}");
    let mut t = with_file(
        &src,
        &dst,
        &file,
        &["--fetch", "oplog", "--on-history-lost", "resync"],
    );
    // The old file says "incremental" until the resync replaces it.
    wait_for("the copy again", CATCH_UP, || async {
        t.log_text().contains("copy done")
    })
    .await;
    wait_marker_file(&a, &b, &file, CATCH_UP).await;
    assert_same_coll(&a, &b, "mflost", "c").await;
    let new = checkpoint_file(&file).unwrap();
    let at = |v: &serde_json::Value| (v["ts"]["t"].as_u64(), v["ts"]["i"].as_u64());
    assert!(at(&new) > at(&old), "{old} -> {new}");
    assert!(
        t.log_text().contains("resync: dropping"),
        "{}",
        t.log_text()
    );
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}
