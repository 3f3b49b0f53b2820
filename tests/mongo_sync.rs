//! `tandem mongo sync` against real servers (secantus, a MongoDB-wire replica set):
//! the full copy of catalog, indexes and every BSON type, then every kind of change,
//! transactions whole, exactly once across kill -9.

mod support;

use std::time::Duration;

use mongodb::bson::{Binary, Bson, DateTime, Document, JavaScriptCodeWithScope, Regex, Timestamp, doc, oid::ObjectId, spec::BinarySubtype};
use mongodb::{Client, IndexModel};
use support::mongo::*;
use support::proc::Tandem;

const CATCH_UP: Duration = Duration::from_secs(60);

/// One document holding every BSON type secantus stores as is.
fn every_type(i: i32) -> Document {
    doc! {
        "_id": i,
        "double": 1.5 + i as f64,
        "neg_zero": -0.0f64,
        "nan": f64::NAN,
        "inf": f64::INFINITY,
        "string": format!("s{i} ünïcødé"),
        "doc": {"a": 1, "b": {"c": [1, 2, {"d": null}]}},
        "array": [1, "two", 3.0, [4], {"five": 5}],
        "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![7; 16] },
        "md5": Binary { subtype: BinarySubtype::Md5, bytes: vec![9; 16] },
        "user_bin": Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: vec![1, 2] },
        "oid": ObjectId::parse_str("5ea8b2fca5fd2094399b496a").unwrap(),
        "bool": i % 2 == 0,
        "date": DateTime::from_millis(1_600_000_000_000 + i as i64),
        "null": null,
        "regex": Regex { pattern: "^a.*b$".into(), options: "im".into() },
        "code": Bson::JavaScriptCode("function() { return 1; }".into()),
        "code_scope": Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope { code: "x + 1".into(), scope: doc! {"x": 1} }),
        "int32": i,
        "int64": 1i64 << 40,
        "ts": Timestamp { time: 17, increment: 3 },
        "dec": Bson::Decimal128("1234.5678".parse().unwrap()),
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
        "dbref": {"$ref": "other", "$id": 5},
        "dotted.name": 1,
        "$dollar": 2,
    }
}

async fn seed(c: &Client) {
    let shop = c.database("mshop");
    shop.create_collection("capped").capped(true).size(1 << 20).await.unwrap();
    shop.create_collection("validated")
        .validator(doc! {"qty": {"$gte": 0}})
        .validation_level(mongodb::options::ValidationLevel::Moderate)
        .await
        .unwrap();
    shop.create_collection("collated")
        .collation(mongodb::options::Collation::builder().locale("en").strength(mongodb::options::CollationStrength::Secondary).build())
        .await
        .unwrap();
    let types = shop.collection::<Document>("types");
    types.insert_many((0..50).map(every_type)).await.unwrap();
    // Mixed _id types, in BSON order across types.
    let mixed = shop.collection::<Document>("mixed");
    mixed
        .insert_many(vec![
            doc! {"_id": "str", "v": 1},
            doc! {"_id": ObjectId::parse_str("5ea8b2fca5fd2094399b4961").unwrap(), "v": 2},
            doc! {"_id": {"compound": 1, "k": "x"}, "v": 3},
            doc! {"_id": 2.5, "v": 4},
            doc! {"_id": Binary { subtype: BinarySubtype::Generic, bytes: vec![1] }, "v": 5},
        ])
        .await
        .unwrap();
    let orders = shop.collection::<Document>("orders");
    orders
        .insert_many((0..2000).map(|i| doc! {"_id": i, "qty": i % 7, "sku": format!("sku{}", i % 100), "at": DateTime::from_millis(1_700_000_000_000 + i as i64), "loc": {"type": "Point", "coordinates": [i as f64 / 100.0, 1.0]}, "tags": ["a", "b"]}))
        .await
        .unwrap();
    let idx = |k: Document, o: Option<mongodb::options::IndexOptions>| IndexModel::builder().keys(k).options(o).build();
    use mongodb::options::IndexOptions as O;
    orders
        .create_indexes(vec![
            idx(doc! {"sku": 1}, Some(O::builder().name("sku_unique_when_set".to_string()).unique(true).partial_filter_expression(doc! {"sku": {"$type": "string"}, "qty": {"$gt": 100}}).build())),
            idx(doc! {"qty": 1, "sku": -1}, None),
            idx(doc! {"at": 1}, Some(O::builder().expire_after(Duration::from_secs(10 * 365 * 86400)).build())),
            idx(doc! {"maybe": 1}, Some(O::builder().sparse(true).build())),
            idx(doc! {"sku": 1, "qty": 1}, Some(O::builder().name("coll_idx".to_string()).collation(mongodb::options::Collation::builder().locale("fr").build()).build())),
            idx(doc! {"tags": 1}, Some(O::builder().hidden(true).build())),
            idx(doc! {"loc": "2dsphere"}, None),
            idx(doc! {"attrs.$**": 1}, None),
        ])
        .await
        .unwrap();
    shop.create_collection("big_orders").view_on("orders".to_string()).pipeline(vec![doc! {"$match": {"qty": {"$gt": 5}}}]).await.unwrap();
    let hr = c.database("mhr");
    hr.collection::<Document>("people").insert_many((0..300).map(|i| doc! {"_id": ObjectId::new(), "n": i, "name": format!("p{i}")})).await.unwrap();
}

async fn assert_same(src: &Client, dst: &Client, dbs: &[&str]) {
    let (a, b) = (catalog(src, dbs).await, catalog(dst, dbs).await);
    assert_eq!(a, b, "collections and options differ");
    for (ns, o) in &a {
        if o.contains_key("viewOn") {
            continue;
        }
        let (db, coll) = ns.split_once('.').unwrap();
        assert_same_coll(src, dst, db, coll).await;
        assert_eq!(index_specs(src, db, coll).await, index_specs(dst, db, coll).await, "{ns}: indexes differ");
    }
}

fn start_sync(src: &MongoServer, dst: &MongoServer, extra: &[&str]) -> Tandem {
    let (s, t) = (src.uri(), dst.uri());
    let mut args = vec!["mongo", "sync", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_then_changes_of_every_kind() {
    let (src, dst) = (MongoServer::source(), MongoServer::start());
    let (a, b) = (src.client().await, dst.client().await);
    seed(&a).await;
    let mut t = start_sync(&src, &dst, &["--partition-docs", "300", "--workers", "3"]);
    wait_marker(&a, &b, "default", CATCH_UP).await;
    assert_same(&a, &b, &["mshop", "mhr"]).await;
    assert!(t.is_running(), "{}", t.log_text());
    t.interrupt();
}
