//! `tandem mongo verify`, and the errors a user meets with `tandem mongo sync`: each one
//! line naming the endpoint or namespace, never a panic, never a password.

mod support;

use std::process::Command;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use support::mongo::*;
use support::mongo_data::*;
use support::{free_port, tandem_bin};

const CATCH_UP: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tandem_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_exactly_the_differences() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    seed(&a).await;
    let mut t = start_sync(&src, &dst, &[]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    let (s, d) = (src.uri(), dst.uri());
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "mongo",
            "verify",
            "--source",
            &s,
            "--target",
            &d,
            "--rounds",
            "2",
            "--round-delay-ms",
            "50",
            "--exclude-ns",
            "tandem_marker.*",
            "--partition-docs",
            "300",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, out, err) = verify(&[]);
    assert_eq!((code, out.trim()), (0, "identical"), "{err}");
    if !src.is_real() {
        // 2,955 documents: types 50, mixed 605 (3 ranges across _id types), orders 2,000
        // (7), people 300 (1), three empty collections (1 each).
        assert!(
            err.contains("compared 2955 source documents in 15 _id ranges; 0 ranges matched by hash (the servers cannot hash documents: every range read)"),
            "{err}"
        );
    }
    // One of each kind of difference, made on the target.
    let orders = b.database("mshop").collection::<Document>("orders");
    orders
        .update_one(doc! {"_id": 7}, doc! {"$set": {"qty": -1}})
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": 8}).await.unwrap();
    orders.insert_one(doc! {"_id": "extra"}).await.unwrap();
    orders.drop_index("qty_1_sku_-1").await.unwrap();
    // In three ranges of a collection whose ranges span _id types.
    let mixed = b.database("mshop").collection::<Document>("mixed");
    mixed
        .update_one(doc! {"_id": "s0301"}, doc! {"$set": {"v": -1}})
        .await
        .unwrap();
    mixed.delete_one(doc! {"_id": 100}).await.unwrap();
    mixed.insert_one(doc! {"_id": 5000}).await.unwrap();
    b.database("mhr")
        .collection::<Document>("people")
        .drop()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("diffs.jsonl");
    let (code, out, err) = verify(&["--out", out_file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().into(),
                l["ns"].as_str().unwrap().into(),
                l["detail"].as_str().unwrap().chars().take(40).collect(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, String)> = vec![
        ("document-differs", "mshop.mixed", "_id \"s0301\""),
        ("document-differs", "mshop.orders", "_id 7"),
        ("extra-document", "mshop.mixed", "_id 5000"),
        ("extra-document", "mshop.orders", "_id \"extra\""),
        ("missing-document", "mshop.mixed", "_id 100"),
        ("missing-document", "mshop.orders", "_id 8"),
        (
            "missing-index",
            "mshop.orders",
            "qty_1_sku_-1: { \"v\": 2, \"key\": { \"qty\": ",
        ),
        (
            "missing-namespace",
            "mhr.people",
            "collection mhr.people is not on the targ",
        ),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{out}");
    assert!(out.trim_end().ends_with("8 differences"), "{out}");
    let (code, _, _) = run(&[
        "mongo",
        "verify",
        "--source",
        "mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=500",
        "--target",
        &d,
    ]);
    assert_eq!(
        code, 2,
        "an unreachable source is an error (exit 2), not a difference"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_one_line_without_secrets() {
    let src = MongoServer::start();
    let standalone = MongoServer::start_with(MongoOpts {
        standalone: true,
        ..Default::default()
    });
    let closed = free_port();
    let secret = "pw-s3cr3t";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--source".into(),
                src.uri(),
                "--target".into(),
                standalone.uri(),
            ],
            "standalone server, which cannot run transactions",
        ),
        (
            vec![
                "--source".into(),
                format!(
                    "mongodb://al:{secret}@127.0.0.1:{closed}/?directConnection=true&serverSelectionTimeoutMS=500"
                ),
                "--target".into(),
                src.uri(),
            ],
            "cannot reach the server",
        ),
        (
            vec![
                "--source".into(),
                format!("mongodb://al:{secret}@127.0.0.1:notaport"),
                "--target".into(),
                src.uri(),
            ],
            "--source: invalid connection string",
        ),
        (
            vec![
                "--source".into(),
                "redis://127.0.0.1:1".into(),
                "--target".into(),
                src.uri(),
            ],
            "--source: expected a MongoDB connection string",
        ),
        (
            vec![
                "--source".into(),
                standalone.uri(),
                "--target".into(),
                src.uri(),
            ],
            "the server is a standalone mongod",
        ),
        (
            vec![
                "--source".into(),
                src.uri(),
                "--target".into(),
                src.uri(),
                "--ns-map".into(),
                "a.b".into(),
            ],
            "--ns-map \"a.b\": expected FROM:TO",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["mongo".to_string(), "sync".into()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, out, err) = run(&refs);
        assert_eq!(code, 1, "{refs:?}: {out}{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{refs:?}: {err}");
        assert!(
            lines[0].starts_with("tandem: error: ") && lines[0].contains(want),
            "{refs:?}: {err}"
        );
        assert!(
            !err.contains(secret) && !out.contains(secret),
            "{refs:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_namespaces_that_do_not_fit_are_named() {
    let (src, dst) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    a.database("mfit")
        .create_collection("capped")
        .capped(true)
        .size(4096)
        .await
        .unwrap();
    b.database("mfit")
        .create_collection("capped")
        .await
        .unwrap();
    let (code, _, err) = run(&[
        "mongo",
        "sync",
        "--source",
        &src.uri(),
        "--target",
        &dst.uri(),
        "--mode",
        "full",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("mfit.capped: exists on the target with different options"),
        "{err}"
    );
    b.database("mfit")
        .collection::<Document>("capped")
        .drop()
        .await
        .unwrap();
    b.database("__tandem").drop().await.unwrap();
    a.database("mfit")
        .collection::<Document>("full")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    b.database("mfit")
        .collection::<Document>("full")
        .insert_one(doc! {"_id": 2})
        .await
        .unwrap();
    let (code, _, err) = run(&[
        "mongo",
        "sync",
        "--source",
        &src.uri(),
        "--target",
        &dst.uri(),
        "--mode",
        "full",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("mfit.full: the target collection already holds 1 documents"),
        "{err}"
    );
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// An insert of a document the target already has, a replacement or delete of one it
/// lacks (the applier presumes, without reading, that they fit: the presumption must
/// fail into the conflict path): `fail` stops naming the namespace, `_id` and source
/// position; `overwrite` makes the document the source's where it can, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_follow_the_policy_and_are_counted() {
    let (src, dst) = (MongoServer::start(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    let (sc, tc) = (
        a.database("mconf").collection::<Document>("c"),
        b.database("mconf").collection::<Document>("c"),
    );
    sc.insert_many(vec![doc! {"_id": 0}, doc! {"_id": 3}, doc! {"_id": 4}])
        .await
        .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut t = start_sync(
        &src,
        &dst,
        &["--metrics-addr", &addr, "--on-conflict", "overwrite"],
    );
    wait_marker(&a, &b, "default", CATCH_UP).await;
    tc.insert_one(doc! {"_id": 1, "side": "target"})
        .await
        .unwrap();
    tc.delete_one(doc! {"_id": 0}).await.unwrap();
    tc.delete_many(doc! {"_id": {"$in": [3, 4]}}).await.unwrap();
    sc.replace_one(doc! {"_id": 3}, doc! {"side": "source"})
        .await
        .unwrap();
    sc.delete_one(doc! {"_id": 4}).await.unwrap();
    sc.insert_one(doc! {"_id": 1, "side": "source"})
        .await
        .unwrap();
    sc.update_one(doc! {"_id": 0}, doc! {"$set": {"x": 1}})
        .await
        .unwrap();
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_eq!(
        tc.find_one(doc! {"_id": 1}).await.unwrap(),
        Some(doc! {"_id": 1, "side": "source"})
    );
    assert_eq!(
        tc.find_one(doc! {"_id": 0}).await.unwrap(),
        None,
        "an update cannot rebuild a missing document"
    );
    assert_eq!(
        tc.find_one(doc! {"_id": 3}).await.unwrap(),
        Some(doc! {"_id": 3, "side": "source"}),
        "a replacement can"
    );
    assert_eq!(tc.count_documents(doc! {}).await.unwrap(), 2, "_id 1 and 3");
    let status: serde_json::Value = serde_json::from_str(&http_get(port, "/status")).unwrap();
    let link = &status["links"][0];
    assert_eq!(link["mongo"]["conflicts"], 4, "{status}");
    assert_eq!(link["state"], "incremental", "{status}");
    assert!(
        link["mongo"]["position"]
            .as_str()
            .unwrap()
            .starts_with("secantus@stream:"),
        "{status}"
    );
    let metrics = http_get(port, "/metrics");
    assert!(
        metrics.contains(
            r#"tandem_mongo_conflicts_total{what="insert-exists",resolved="overwritten"} 1"#
        ),
        "{metrics}"
    );
    for line in [
        r#"tandem_mongo_conflicts_total{what="update-missing",resolved="skipped"} 1"#,
        r#"tandem_mongo_conflicts_total{what="replace-missing",resolved="overwritten"} 1"#,
        r#"tandem_mongo_conflicts_total{what="delete-missing",resolved="skipped"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert_eq!(t.interrupt(), Some(0), "{}", t.log_text());
    // The default policy stops at the next one, naming it.
    tc.insert_one(doc! {"_id": 2}).await.unwrap();
    let mut t = start_sync(&src, &dst, &[]);
    sc.insert_one(doc! {"_id": 2}).await.unwrap();
    let (line, log) = t.one_error_line(CATCH_UP);
    let err = [line.as_str()];
    assert!(
        err[0].contains("mconf.c _id 2: duplicate key")
            && err[0].contains("at source position secantus@stream:"),
        "{log}"
    );
}
