//! `tandem mongo replay` of real mongod oplog entries (../shared/fixtures/mongo/
//! oplog-entries.jsonl: MongoDB's own tests, real dumps) into a live target, compared
//! exactly with each record's expected state; then a recorded oplog replayed twice
//! (the second run applies nothing), and a transaction split by --until.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;
use support::mongo::*;
use support::tandem_bin;

fn fixtures() -> PathBuf {
    PathBuf::from(
        std::env::var("TANDEM_SHARED_FIXTURES").unwrap_or_else(|_| "/work/shared/fixtures".into()),
    )
    .join("mongo")
}

fn ejson(v: &Value) -> Bson {
    Bson::try_from(v.clone()).expect("canonical extended JSON")
}

/// Every database a record touches: entries (and applyOps inside them), given, expect.
fn dbs_of(r: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if (k == "ns" || k == "renameCollection" || k == "to") && x.is_string() {
                        let s = x.as_str().unwrap();
                        if let Some((db, _)) = s.split_once('.') {
                            out.insert(db.to_string());
                        }
                    }
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&r["entries"], &mut out);
    for k in ["given", "expect"] {
        if let Some(m) = r[k].as_object() {
            for ns in m.keys() {
                let ns = if ns == "collections" { continue } else { ns };
                out.insert(
                    ns.split_once('.')
                        .map(|(d, _)| d.to_string())
                        .unwrap_or_default(),
                );
            }
        }
        if let Some(c) = r[k]["collections"].as_object() {
            for ns in c.keys() {
                out.insert(ns.split_once('.').unwrap().0.to_string());
            }
        }
    }
    out.retain(|d| !["admin", "local", "config", ""].contains(&d.as_str()));
    out
}

async fn docs(c: &Client, ns: &str) -> Vec<Vec<u8>> {
    let (db, coll) = ns.split_once('.').unwrap();
    let mut cur = c
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap();
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        out.push(cur.current().as_bytes().to_vec());
    }
    out.sort();
    out
}

fn replay(file: &std::path::Path, target: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(tandem_bin())
        .args(["mongo", "replay", "--oplog"])
        .arg(file)
        .args(["--target", target])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Records that cannot apply as given, with what the one error line must say:
/// a record that names an index it never creates, a command secantus lacks, and a
/// transaction's last entry recorded without the entries before it.
const REFUSED: &[(&str, &str)] = &[
    (
        "collMod/ttl-after-retryable-insert-2026",
        "collMod of mongodump_test_db.coll1: cannot find index",
    ),
    (
        "convertToCapped/command",
        "convertToCapped of test.coll: no such command",
    ),
    (
        "applyOps/classify-ApplyOpsEndMultiEntryTransaction",
        "at line 1: the transaction committed here began before the file",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_mongod_entries_replay_exactly() {
    let dst = MongoServer::start();
    let b = dst.client().await;
    let text = std::fs::read_to_string(fixtures().join("oplog-entries.jsonl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let mut compared = 0;
    for (k, line) in text.lines().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap();
        let name = r["name"].as_str().unwrap().to_string();
        for db in dbs_of(&r) {
            b.database(&db).drop().await.unwrap();
        }
        if let Some(given) = r["given"].as_object() {
            for (ns, list) in given {
                let (db, coll) = ns.split_once('.').unwrap();
                let d: Vec<Document> = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| ejson(v).as_document().unwrap().clone())
                    .collect();
                b.database(db)
                    .collection::<Document>(coll)
                    .insert_many(d)
                    .await
                    .unwrap();
            }
        }
        let file = dir.path().join(format!("{k}.jsonl"));
        let lines: Vec<String> = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let policy = if r.get("expect").is_some() {
            "fail"
        } else {
            "ignore"
        };
        let id = format!("fixture-{k}");
        let (code, _out, err) = replay(&file, &dst.uri(), &["--id", &id, "--on-conflict", policy]);
        assert!(!err.contains("panicked"), "{name}: {err}");
        if let Some((_, what)) = REFUSED.iter().find(|(n, _)| *n == name) {
            assert_eq!(
                code, 1,
                "{name} was expected to be refused by the server: {err}"
            );
            assert!(err.contains(what), "{name}: {err}");
            report.push(format!("{name}: refused ({what})"));
            continue;
        }
        if code != 0 {
            report.push(format!("{name}: FAILED {}", err.trim()));
            continue;
        }
        report.push(format!("{name}: applied"));
        let Some(expect) = r.get("expect").and_then(|e| e.as_object()) else {
            continue;
        };
        for (ns, want) in expect {
            if ns == "collections" {
                for (cns, spec) in want.as_object().unwrap() {
                    let (db, coll) = cns.split_once('.').unwrap();
                    let names: Vec<String> = index_specs(&b, db, coll)
                        .await
                        .iter()
                        .map(|d| d.get_str("name").unwrap().to_string())
                        .collect();
                    let mut want: Vec<String> = spec["indexes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect();
                    want.sort();
                    assert_eq!(names, want, "{name}: indexes of {cns}");
                }
                continue;
            }
            let mut want: Vec<Vec<u8>> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| mongodb::bson::to_vec(ejson(v).as_document().unwrap()).unwrap())
                .collect();
            want.sort();
            assert_eq!(docs(&b, ns).await, want, "{name}: documents of {ns}");
            compared += 1;
        }
    }
    eprintln!("{}", report.join("\n"));
    let failed: Vec<&String> = report.iter().filter(|l| l.contains(": FAILED")).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.len(), text.lines().count());
    assert!(compared >= 15, "only {compared} namespaces compared");
}

/// A BSON oplog file (as `mongodump --oplog` writes) replayed in three runs: up to the
/// middle of a prepared transaction (none of it applied), to the end, and again
/// (nothing applied twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bson_file_until_and_rerun_apply_each_entry_once() {
    let dst = MongoServer::start();
    let b = dst.client().await;
    let text = std::fs::read_to_string(fixtures().join("oplog-entries.jsonl")).unwrap();
    let record = |name: &str| -> Value {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["name"] == name)
            .unwrap()
    };
    let mut bytes = Vec::new();
    let mut entries = Vec::new();
    for name in ["create/plain-then-insert", "txn/large-prepared-committed"] {
        for e in record(name)["entries"].as_array().unwrap() {
            entries.push(ejson(e).as_document().unwrap().clone());
        }
    }
    // In time order, as an oplog dump is.
    entries.sort_by_key(|e| match e.get("ts") {
        Some(Bson::Timestamp(t)) => (t.time, t.increment),
        _ => (0, 0),
    });
    for e in &entries {
        bytes.extend(mongodb::bson::to_vec(e).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oplog.bson");
    std::fs::write(&file, &bytes).unwrap();
    let ts = |e: &Document| match e.get("ts") {
        Some(Bson::Timestamp(t)) => format!("{}.{}", t.time, t.increment),
        _ => unreachable!(),
    };
    // Up to the prepare entry: the transaction is not committed by then.
    let prepare = entries
        .iter()
        .find(|e| {
            e.get_document("o")
                .is_ok_and(|o| o.get_bool("prepare") == Ok(true))
        })
        .unwrap();
    let (code, out, err) = replay(&file, &dst.uri(), &["--until", &ts(prepare)]);
    assert_eq!(code, 0, "{err}");
    // The transaction's entries come first in time (2018, the others 2020).
    assert_eq!(
        out.trim(),
        "replayed 0 units (0 already applied by an earlier run)",
        "{out}"
    );
    assert_eq!(
        docs(&b, "txntest.g").await.len(),
        0,
        "a prepared transaction applied before its commit"
    );
    let (code, out, err) = replay(&file, &dst.uri(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "replayed 3 units (0 already applied by an earlier run)",
        "{out}"
    );
    assert_eq!(docs(&b, "commit_index.test").await.len(), 1);
    let want = record("txn/large-prepared-committed")["expect"]["txntest.g"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(docs(&b, "txntest.g").await.len(), want);
    let (code, out, err) = replay(&file, &dst.uri(), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "replayed 0 units (3 already applied by an earlier run)",
        "{out}"
    );
    assert_eq!(docs(&b, "txntest.g").await.len(), want);
    // A truncated file: one error naming the byte offset.
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    let (code, _, err) = replay(&file, &dst.uri(), &["--id", "other"]);
    assert_eq!(code, 1, "{err}");
    let last_start = bytes.len()
        - mongodb::bson::to_vec(entries.last().unwrap())
            .unwrap()
            .len();
    assert!(
        err.contains(&format!("at byte offset {last_start}")) && err.contains("truncated"),
        "{err}"
    );
}

/// Documents of `ns` as BSON bytes, sorted, for comparing with `docs`.
fn bytes_of(want: &[Document]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = want
        .iter()
        .map(|d| mongodb::bson::to_vec(d).unwrap())
        .collect();
    out.sort();
    out
}

fn replay_files(files: &[PathBuf], target: &str, extra: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(tandem_bin());
    c.args(["mongo", "replay"]);
    for f in files {
        c.arg("--oplog").arg(f);
    }
    let out = c.args(["--target", target]).args(extra).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The fixture's prepared transaction (`txn/small-prepared-committed`) as a sharded
/// cluster writes it: its ops split across two shards' oplogs (plus one more insert
/// on the second), each shard with its own prepare and its own commit entry carrying
/// the one `commitTimestamp`, among plain writes of each shard. Replayed from both
/// files it is one unit, whole at the first shard's commit (even with `--until` before
/// the second shard's commit entry), never half; a rerun applies nothing twice; a
/// second shard whose commit is missing is one error naming its file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_prepared_on_two_shards_replays_as_one() {
    let dst = MongoServer::start();
    let b = dst.client().await;
    let text = std::fs::read_to_string(fixtures().join("oplog-entries.jsonl")).unwrap();
    let record: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["name"] == "txn/small-prepared-committed")
        .unwrap();
    let entries = record["entries"].as_array().unwrap();
    let (prepare, commit) = (&entries[0], &entries[1]);
    assert_eq!(prepare["o"]["prepare"], true);
    let ops = prepare["o"]["applyOps"].as_array().unwrap();
    let t = 1515616500;
    let ts = |i: u32| serde_json::json!({"$timestamp": {"t": t, "i": i}});
    let plain = |i: u32, id: &str| {
        serde_json::json!({"ts": ts(i), "t": {"$numberLong": "1"}, "op": "i",
            "ns": "txntest.other", "o": {"_id": id}})
    };
    let prepared = |i: u32, ops: Vec<Value>| {
        let mut e = prepare.clone();
        e["ts"] = ts(i);
        e["o"]["applyOps"] = Value::Array(ops);
        e
    };
    let committed = |i: u32, prev: u32| {
        let mut e = commit.clone();
        e["ts"] = ts(i);
        e["prevOpTime"]["ts"] = ts(prev);
        e
    };
    // The commit time the coordinator chose: the later prepare's.
    assert_eq!(commit["o"]["commitTimestamp"], ts(11));
    let mut extra = ops[1].clone();
    extra["o"] = serde_json::json!({"_id": {"$numberInt": "2"}, "x": {"$numberInt": "2"}});
    let shard0 = vec![
        plain(2, "a"),
        prepared(3, vec![ops[0].clone(), ops[2].clone()]),
        committed(12, 3),
        plain(14, "c"),
    ];
    let shard1 = vec![
        plain(4, "b"),
        prepared(11, vec![ops[1].clone(), ops[3].clone(), extra]),
        plain(13, "d"),
        committed(20, 11),
    ];
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, es: &[Value]| {
        let p = dir.path().join(name);
        let lines: Vec<String> = es.iter().map(|e| e.to_string()).collect();
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let files = [
        write("shard0.jsonl", &shard0),
        write("shard1.jsonl", &shard1),
    ];
    let run = |extra: &[&str]| {
        let (code, out, err) = replay_files(&files, &dst.uri(), extra);
        assert_eq!(code, 0, "{err}");
        out.trim().to_string()
    };
    let whole = bytes_of(&[doc! {"_id": 0, "x": 1}, doc! {"_id": 2, "x": 2}]);
    let other = |ids: &[&str]| bytes_of(&ids.iter().map(|i| doc! {"_id": *i}).collect::<Vec<_>>());

    assert_eq!(
        run(&["--until", &format!("{t}.11")]),
        "replayed 2 units (0 already applied by an earlier run)"
    );
    assert_eq!(docs(&b, "txntest.e").await, bytes_of(&[]));
    assert_eq!(docs(&b, "txntest.other").await, other(&["a", "b"]));
    // Up to the first shard's commit: the transaction whole, shard 1's part with it.
    assert_eq!(
        run(&["--until", &format!("{t}.12")]),
        "replayed 1 units (2 already applied by an earlier run)"
    );
    assert_eq!(docs(&b, "txntest.e").await, whole);
    assert_eq!(docs(&b, "txntest.other").await, other(&["a", "b"]));
    assert_eq!(
        run(&[]),
        "replayed 2 units (3 already applied by an earlier run)"
    );
    assert_eq!(
        run(&[]),
        "replayed 0 units (5 already applied by an earlier run)"
    );
    assert_eq!(docs(&b, "txntest.e").await, whole);
    assert_eq!(
        docs(&b, "txntest.other").await,
        other(&["a", "b", "c", "d"])
    );

    // Shard 1's commit entry missing: the transaction cannot be whole.
    let cut = write("shard1-cut.jsonl", &shard1[..3]);
    let (code, out, err) = replay_files(
        &[files[0].clone(), cut.clone()],
        &dst.uri(),
        &["--id", "cut"],
    );
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(&format!("oplog file {}", cut.display()))
            && lines[0].contains(&format!("committed at {t}.11"))
            && lines[0].contains("still prepared"),
        "{err}"
    );
}
