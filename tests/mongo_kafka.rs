//! `tandem mongo kafka` against secantus as the source and noida-db as the broker,
//! read back by a `read_committed` consumer: every message field by field in both fetch
//! modes, per-`_id` order on three partitions, exactly once across kill -9, every
//! codec, and the errors a user meets first.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use support::kafka::{KafkaBroker, Msg};
use support::mongo::*;
use support::proc::Tandem;

const LIMIT: Duration = Duration::from_secs(60);

fn start(src: &MongoServer, k: &KafkaBroker, extra: &[&str]) -> Tandem {
    let (s, b) = (src.uri(), k.brokers());
    let mut args = vec!["mongo", "kafka", "--source", &s, "--brokers", &b];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// The consumer's blocking polls, off the async workers.
fn read(r: &mut support::kafka::Reader, n: usize) -> Vec<Msg> {
    tokio::task::block_in_place(|| r.at_least(n, LIMIT).to_vec())
}

/// A `data` / `old` element as JSON, whatever the shape (`{"doc": "<text>"}` parsed).
fn row(v: &Value, field: &str) -> Value {
    match &v[field] {
        Value::Null => Value::Null,
        rows => {
            let r = &rows[0];
            match r.get("doc").and_then(|d| d.as_str()) {
                Some(text) if r.as_object().map(|o| o.len()) == Some(1) => {
                    serde_json::from_str(text).expect("doc text is JSON")
                }
                _ => r.clone(),
            }
        }
    }
}

/// The fields every message has, with the values they must hold; `(type, table, data,
/// old)` returned for the caller's own checks.
fn envelope(m: &Msg, db: &str) -> (String, Value, Value, Value) {
    let v = &m.value;
    assert_eq!(v["database"], db, "{v}");
    for k in ["mysqlType", "sqlType", "gtid", "serverId"] {
        assert_eq!(v[k], Value::Null, "{k} in {v}");
    }
    let ty = v["type"].as_str().unwrap().to_string();
    assert_eq!(v["isDdl"], json!(ty == "DDL"), "{v}");
    if ty == "DDL" {
        assert_eq!(
            (v["pkNames"].clone(), v["data"].clone(), v["old"].clone()),
            (Value::Null, Value::Null, Value::Null),
            "{v}"
        );
        assert!(v["sql"].is_string(), "{v}");
    } else {
        assert_eq!(v["pkNames"], json!(["_id"]), "{v}");
        assert_eq!(v["sql"], Value::Null, "{v}");
        assert_eq!(v["data"].as_array().map(|a| a.len()), Some(1), "{v}");
    }
    let (es, ts) = (v["es"].as_u64().unwrap(), v["ts"].as_u64().unwrap());
    assert!(
        es > 1_600_000_000_000 && ts >= es.saturating_sub(5_000),
        "{v}"
    );
    (ty, v["table"].clone(), row(v, "data"), row(v, "old"))
}

fn sql(m: &Msg) -> Value {
    serde_json::from_str(m.value["sql"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_copy_then_every_kind_field_by_field() {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    k.create_topic("cs", 1).await;
    let db = a.database("kcs");
    let o = db.collection::<Document>("o");
    o.insert_many([
        doc! {"_id": 1, "a": 1},
        doc! {"_id": 2, "a": 2},
        doc! {"_id": 3, "s": "x"},
    ])
    .await
    .unwrap();
    let mut t = start(&src, &k, &["--topic", "cs", "--id", "cs"]);
    let mut r = k.consumer("cs");
    let copied = read(&mut r, 3);
    for (m, want) in copied.iter().zip([
        json!({"_id": 1, "a": 1}),
        json!({"_id": 2, "a": 2}),
        json!({"_id": 3, "s": "x"}),
    ]) {
        assert_eq!(
            envelope(m, "kcs"),
            ("INSERT".into(), json!("o"), want, Value::Null)
        );
        assert_eq!(m.value["id"], 0, "copy messages carry id 0");
        assert_eq!(
            m.value["data"][0]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["doc"]
        );
    }
    o.insert_one(doc! {"_id": 4, "n": 1}).await.unwrap();
    o.update_one(doc! {"_id": 1}, doc! {"$set": {"a": 10}})
        .await
        .unwrap();
    o.update_one(doc! {"_id": 2}, doc! {"$unset": {"a": ""}})
        .await
        .unwrap();
    o.update_one(doc! {"_id": 4}, doc! {"$inc": {"n": 1}})
        .await
        .unwrap();
    o.replace_one(doc! {"_id": 3}, doc! {"r": true})
        .await
        .unwrap();
    o.delete_one(doc! {"_id": 2}).await.unwrap();
    db.create_collection("c2").await.unwrap();
    o.create_index(mongodb::IndexModel::builder().keys(doc! {"a": 1}).build())
        .await
        .unwrap();
    a.database("admin")
        .run_command(doc! {"renameCollection": "kcs.c2", "to": "kcs.c3"})
        .await
        .unwrap();
    db.collection::<Document>("c3").drop().await.unwrap();
    let all = read(&mut r, 13);
    let ch = &all[3..];
    let want = [
        ("INSERT", "o", json!({"_id": 4, "n": 1}), Value::Null),
        ("UPDATE", "o", json!({"$set": {"a": 10}}), json!({"_id": 1})),
        (
            "UPDATE",
            "o",
            json!({"$unset": {"a": ""}}),
            json!({"_id": 2}),
        ),
        ("UPDATE", "o", json!({"$set": {"n": 2}}), json!({"_id": 4})),
        (
            "UPDATE",
            "o",
            json!({"_id": 3, "r": true}),
            json!({"_id": 3}),
        ),
        ("DELETE", "o", json!({"_id": 2}), Value::Null),
    ];
    let mut last_id = 0;
    for (m, (ty, table, data, old)) in ch.iter().zip(want) {
        assert_eq!(
            envelope(m, "kcs"),
            (ty.to_string(), json!(table), data, old),
            "{}",
            m.value
        );
        let id = m.value["id"].as_u64().unwrap();
        assert!(id > last_id, "ids follow the source order: {}", m.value);
        last_id = id;
    }
    let ddl: Vec<(String, Value, Value)> = ch[6..]
        .iter()
        .map(|m| (envelope(m, "kcs").0, m.value["table"].clone(), sql(m)))
        .collect();
    assert_eq!(
        (ddl[0].0.as_str(), &ddl[0].1, &ddl[0].2["create"]),
        ("DDL", &json!("c2"), &json!("c2"))
    );
    assert_eq!(
        (&ddl[1].1, &ddl[1].2["createIndexes"]),
        (&json!("o"), &json!("o"))
    );
    assert_eq!(ddl[1].2["indexes"][0]["key"], json!({"a": 1}));
    assert_eq!(ddl[1].2["indexes"][0]["name"], json!("a_1"));
    assert_eq!(
        (&ddl[2].1, &ddl[2].2),
        (
            &json!("c2"),
            &json!({"renameCollection": "kcs.c2", "to": "kcs.c3", "dropTarget": false})
        )
    );
    assert_eq!(
        (&ddl[3].1, &ddl[3].2),
        (&json!("c3"), &json!({"drop": "c3"}))
    );
    dump_for_docs("change-stream", &all);
    let rest = tokio::task::block_in_place(|| r.drain(Duration::from_millis(500)).len());
    assert_eq!(rest, 13, "nothing more than the changes made");
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// Oplog mode: the entries secantus logs as mongod does (inserts, replacements,
/// deletes, create, drop, dropDatabase; its update entries have a shape of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_copy_then_inserts_replacements_deletes_and_ddl() {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    k.create_topic("op", 1).await;
    let db = a.database("kop");
    let o = db.collection::<Document>("o");
    o.insert_many([doc! {"_id": "a", "v": 1}, doc! {"_id": "b", "v": 2}])
        .await
        .unwrap();
    let mut t = start(
        &src,
        &k,
        &["--topic", "op", "--fetch", "oplog", "--id", "op"],
    );
    let mut r = k.consumer("op");
    let copied = read(&mut r, 2);
    assert_eq!(
        envelope(&copied[0], "kop"),
        (
            "INSERT".into(),
            json!("o"),
            json!({"_id": "a", "v": 1}),
            Value::Null
        )
    );
    assert_eq!(
        envelope(&copied[1], "kop"),
        (
            "INSERT".into(),
            json!("o"),
            json!({"_id": "b", "v": 2}),
            Value::Null
        )
    );
    o.insert_one(doc! {"_id": "c", "d": {"x": [1, 2]}})
        .await
        .unwrap();
    o.replace_one(doc! {"_id": "a"}, doc! {"w": "replaced"})
        .await
        .unwrap();
    o.delete_one(doc! {"_id": "b"}).await.unwrap();
    db.create_collection("made").await.unwrap();
    db.collection::<Document>("made").drop().await.unwrap();
    let gone = a.database("kgone");
    gone.collection::<Document>("x")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    gone.drop().await.unwrap();
    let all = read(&mut r, 2 + 3 + 2 + 1 + 2);
    let ch = &all[2..];
    assert_eq!(
        envelope(&ch[0], "kop"),
        (
            "INSERT".into(),
            json!("o"),
            json!({"_id": "c", "d": {"x": [1, 2]}}),
            Value::Null
        )
    );
    assert_eq!(
        envelope(&ch[1], "kop"),
        (
            "UPDATE".into(),
            json!("o"),
            json!({"_id": "a", "w": "replaced"}),
            json!({"_id": "a"})
        )
    );
    assert_eq!(
        envelope(&ch[2], "kop"),
        (
            "DELETE".into(),
            json!("o"),
            json!({"_id": "b"}),
            Value::Null
        )
    );
    assert_eq!(envelope(&ch[3], "kop").0, "DDL");
    assert_eq!(
        (ch[3].value["table"].clone(), sql(&ch[3])["create"].clone()),
        (json!("made"), json!("made"))
    );
    assert_eq!(
        (ch[4].value["table"].clone(), sql(&ch[4])),
        (json!("made"), json!({"drop": "made"}))
    );
    // kgone.x is created implicitly by its first insert (secantus logs no create for
    // it); dropDatabase comes as the collection's drop, then the database's.
    let tail: Vec<(String, Value)> = ch[5..]
        .iter()
        .map(|m| (envelope(m, "kgone").0, m.value["table"].clone()))
        .collect();
    assert_eq!(
        tail,
        [
            ("INSERT".into(), json!("x")),
            ("DDL".into(), json!("x")),
            ("DDL".into(), Value::Null)
        ],
        "{:?}",
        ch[5..].iter().map(|m| &m.value).collect::<Vec<_>>()
    );
    assert_eq!(sql(&ch[6]), json!({"drop": "x"}));
    assert_eq!(sql(&ch[7]), json!({"dropDatabase": 1}));
    assert!(ch[0].value["id"].as_u64().unwrap() > 0);
    dump_for_docs("oplog", &all);
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// `--update-format full-document` with canonical JSON and plain objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_document_updates_canonical_objects() {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    let o = a.database("kfd").collection::<Document>("o");
    o.insert_one(doc! {"_id": 1, "n": 1i64}).await.unwrap();
    let mut t = start(
        &src,
        &k,
        &[
            "--topic",
            "fd",
            "--create-topics",
            "--update-format",
            "full-document",
            "--json",
            "canonical",
            "--data-shape",
            "object",
        ],
    );
    let mut r = k.consumer_when_created("fd").await;
    read(&mut r, 1);
    o.update_one(doc! {"_id": 1}, doc! {"$set": {"s": "x"}})
        .await
        .unwrap();
    let all = read(&mut r, 2);
    assert_eq!(
        envelope(&all[1], "kfd"),
        (
            "UPDATE".into(),
            json!("o"),
            json!({"_id": {"$numberInt": "1"}, "n": {"$numberLong": "1"}, "s": "x"}),
            json!({"_id": {"$numberInt": "1"}})
        )
    );
    assert_eq!(
        all[0].value["data"],
        json!([{"_id": {"$numberInt": "1"}, "n": {"$numberLong": "1"}}])
    );
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// Keyed by `_id` on three partitions: each document's messages in one partition, in
/// the order of its changes; in-line DDL once in every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_id_order_on_three_partitions() {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    k.create_topic("ord", 3).await;
    let db = a.database("kord");
    db.create_collection("o").await.unwrap();
    let o = db.collection::<Document>("o");
    let mut t = start(&src, &k, &["--topic", "ord", "--batch-ops", "7"]);
    let mut r = k.consumer("ord");
    // Written after the (empty) copy: a document the copy reads shows up again in the
    // changes (copy.rs says why), which is not what this test is about.
    tokio::task::block_in_place(|| t.wait_log("copy done", LIMIT));
    o.insert_many((0..30).map(|i| doc! {"_id": i, "n": 0}))
        .await
        .unwrap();
    for round in 1..=6 {
        for i in 0..30 {
            o.update_one(doc! {"_id": i}, doc! {"$inc": {"n": 1}})
                .await
                .unwrap();
        }
        if round == 3 {
            db.collection::<Document>("o")
                .create_index(mongodb::IndexModel::builder().keys(doc! {"n": 1}).build())
                .await
                .unwrap();
        }
    }
    let all = read(&mut r, 30 + 30 * 6 + 3);
    let mut by_id: BTreeMap<String, Vec<&Msg>> = BTreeMap::new();
    let mut ddl_parts = Vec::new();
    for m in &all {
        if m.value["type"] == "DDL" {
            ddl_parts.push(m.partition);
            continue;
        }
        by_id
            .entry(String::from_utf8(m.key.clone()).unwrap())
            .or_default()
            .push(m);
    }
    ddl_parts.sort();
    assert_eq!(ddl_parts, [0, 1, 2], "one copy of the DDL per partition");
    assert_eq!(by_id.len(), 30);
    let mut parts = std::collections::BTreeSet::new();
    for (key, ms) in &by_id {
        let p = ms[0].partition;
        parts.insert(p);
        assert!(
            ms.iter().all(|m| m.partition == p),
            "{key} in several partitions"
        );
        assert_eq!(ms[0].value["type"], "INSERT");
        let ns: Vec<Value> = ms[1..]
            .iter()
            .map(|m| row(&m.value, "data")["$set"]["n"].clone())
            .collect();
        assert_eq!(ns, (1..=6).map(|n| json!(n)).collect::<Vec<_>>(), "{key}");
        assert_eq!(
            key,
            &format!(
                "{{\"$numberInt\":\"{}\"}}",
                row(&ms[0].value, "data")["_id"]
            )
        );
    }
    assert_eq!(parts.len(), 3, "30 keys spread over the 3 partitions");
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

/// tandem killed with SIGKILL during the copy and then in the middle of each burst of
/// inserts and `$inc`s, restarted while the burst goes on: a `read_committed` consumer
/// sees every copied document once and every change once, in order.
///
/// Ignored in the normal suite: a kill inside a transaction leaves it open on noida-db,
/// which neither aborts it when the restarted producer fences the old one (Kafka does)
/// nor after the transaction timeout, so `read_committed` readers stall behind it
/// (docs/KAFKA.md). Run it with `--ignored` against a broker that aborts fenced
/// transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "noida-db keeps a killed producer's open transaction open: see docs/KAFKA.md"]
async fn kill9_loop_exactly_once() {
    kill_loop(true).await;
}

/// The same loop with each kill between transactions (once everything written so far
/// is visible to `read_committed`), which noida-db handles: what a restart reads back
/// and resumes from is exact — nothing twice, nothing missing, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_transactions_exactly_once() {
    kill_loop(false).await;
}

async fn kill_loop(mid_transaction: bool) {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    k.create_topic("kill", 3).await;
    let o = a.database("kkill").collection::<Document>("o");
    const SEEDED: i32 = 2000;
    o.insert_many((0..SEEDED).map(|i| doc! {"_id": i, "n": 0, "pad": "p".repeat(64)}))
        .await
        .unwrap();
    let args = ["--topic", "kill", "--batch-ops", "50", "--id", "k9"];
    let mut t = start(&src, &k, &args);
    let mut r = k.consumer("kill");
    let mut logs = Vec::new();
    // Round 0: killed during the copy (or, between transactions, once it is read).
    read(
        &mut r,
        if mid_transaction {
            300
        } else {
            SEEDED as usize
        },
    );
    t.kill9();
    logs.push(t.log_text());
    t = start(&src, &k, &args);
    read(&mut r, SEEDED as usize);
    // The rounds write only once this run streams: a document inserted while a resumed
    // copy still runs is copied and then streamed too (src/mongo/kafka/copy.rs: the order
    // of events, two messages), which the exact count below would take for a duplicate
    // (CI: round 1's 60 inserts landed in the copy resumed after `_id` 1999).
    tokio::task::block_in_place(|| t.wait_log("to=\"incremental\"", LIMIT));
    let mut incs: BTreeMap<i32, i32> = BTreeMap::new();
    let mut expected = SEEDED as usize;
    for round in 1..=5i32 {
        let burst = {
            let o = o.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..60 {
                    o.insert_one(doc! {"_id": 10_000 + round * 100 + i, "n": 0})
                        .await
                        .unwrap();
                    let id = (round * 37 + i * 11) % SEEDED;
                    o.update_one(doc! {"_id": id}, doc! {"$inc": {"n": 1}})
                        .await
                        .unwrap();
                    done.push(id);
                }
                done
            })
        };
        let mut burst = Some(burst);
        let mut done = None;
        if mid_transaction {
            read(&mut r, expected + 20);
        } else {
            done = Some(burst.take().unwrap().await.unwrap());
            read(&mut r, expected + 120);
        }
        t.kill9();
        logs.push(t.log_text());
        t = start(&src, &k, &args);
        let done = match (done, burst) {
            (Some(d), _) => d,
            (None, Some(b)) => b.await.unwrap(),
            (None, None) => unreachable!("one of the two is set"),
        };
        for id in done {
            *incs.entry(id).or_default() += 1;
        }
        expected += 120;
        if tokio::task::block_in_place(|| r.try_at_least(expected, LIMIT)).is_err() {
            let mut u = k.consumer_at("kill", "read_uncommitted");
            let n = tokio::task::block_in_place(|| u.drain(Duration::from_secs(2)).len());
            panic!(
                "round {round}: {} of {expected} committed messages visible, {n} with read_uncommitted\n{}",
                r.got.len(),
                t.log_text()
            );
        }
    }
    let all = tokio::task::block_in_place(|| r.drain(Duration::from_secs(1)).to_vec());
    let ctx = || {
        format!(
            "{}\n--- last ---\n{}",
            logs.join("\n--- next process ---\n"),
            t.log_text()
        )
    };
    assert_eq!(
        all.len(),
        expected,
        "messages: {} expected {expected}\n{}",
        all.len(),
        ctx()
    );
    let mut inserts: BTreeMap<i64, usize> = BTreeMap::new();
    let mut sets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for m in &all {
        let (ty, _, data, old) = envelope(m, "kkill");
        match ty.as_str() {
            "INSERT" => *inserts.entry(data["_id"].as_i64().unwrap()).or_default() += 1,
            "UPDATE" => sets
                .entry(old["_id"].as_i64().unwrap())
                .or_default()
                .push(data["$set"]["n"].as_i64().unwrap()),
            other => panic!("unexpected {other}: {}", m.value),
        }
    }
    let dup: Vec<_> = inserts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        dup.is_empty(),
        "inserts not exactly once: {dup:?}\n{}",
        ctx()
    );
    assert_eq!(inserts.len(), SEEDED as usize + 5 * 60);
    for (id, n) in &incs {
        let want: Vec<i64> = (1..=*n as i64).collect();
        assert_eq!(
            sets.get(&(*id as i64)),
            Some(&want),
            "updates of {id}\n{}",
            ctx()
        );
    }
    assert_eq!(sets.len(), incs.len());
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_produces_and_reads_back() {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    let o = a.database("kcodec").collection::<Document>("o");
    o.insert_many((0..20).map(|i| doc! {"_id": i, "text": "compressible ".repeat(50)}))
        .await
        .unwrap();
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"] {
        let topic = format!("codec-{codec}");
        let mut t = start(
            &src,
            &k,
            &[
                "--topic",
                &topic,
                "--create-topics",
                "--mode",
                "full",
                "--compression",
                codec,
                "--id",
                codec,
            ],
        );
        assert_eq!(t.wait_exit(LIMIT), Some(0), "{codec}: {}", t.log_text());
        let mut r = k.consumer(&topic);
        let got = read(&mut r, 20);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(
                envelope(m, "kcodec"),
                (
                    "INSERT".into(),
                    json!("o"),
                    json!({"_id": i, "text": "compressible ".repeat(50)}),
                    Value::Null
                ),
                "{codec}"
            );
        }
        assert_eq!(
            tokio::task::block_in_place(|| r.drain(Duration::from_millis(300)).len()),
            20,
            "{codec}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_unreachable_broker_and_oversized_message_are_one_clear_error() {
    let (src, k) = (MongoServer::source(), KafkaBroker::start());
    let a = src.client().await;
    let mut t = start(&src, &k, &["--topic", "nosuch"]);
    let (line, _) = t.one_error_line(LIMIT);
    assert!(
        line.contains("\"nosuch\"") && line.contains("--create-topics"),
        "{line}"
    );

    let port = support::free_port();
    let s = src.uri();
    let dead = format!("127.0.0.1:{port}");
    let mut t = Tandem::start(&[
        "mongo",
        "kafka",
        "--source",
        &s,
        "--brokers",
        &dead,
        "--topic",
        "t",
    ]);
    let (line, _) = t.one_error_line(LIMIT);
    assert!(line.contains(&dead) && line.contains("answered"), "{line}");

    a.database("kbig")
        .collection::<Document>("o")
        .insert_one(doc! {"_id": "huge", "s": "x".repeat(1_200_000)})
        .await
        .unwrap();
    let mut t = start(
        &src,
        &k,
        &[
            "--topic",
            "big",
            "--create-topics",
            "--mode",
            "full",
            "--include-ns",
            "kbig.*",
        ],
    );
    let (line, log) = t.one_error_line(LIMIT);
    assert!(
        line.contains("kbig.o")
            && line.contains("\"huge\"")
            && line.contains("larger than the broker accepts"),
        "{line}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// With TANDEM_KAFKA_DUMP set, the messages of a test are printed (docs/KAFKA.md
/// quotes them).
fn dump_for_docs(what: &str, all: &[Msg]) {
    if std::env::var_os("TANDEM_KAFKA_DUMP").is_some() {
        for m in all {
            println!("{what}: {}", m.value);
        }
    }
}
