//! Data for the MongoDB tests: every BSON type, collections with options, every index
//! kind secantus accepts; and the comparisons and process starts the tests share.
#![allow(dead_code)]

use std::time::Duration;

use mongodb::bson::{
    Binary, Bson, DateTime, Document, JavaScriptCodeWithScope, Regex, Timestamp, doc,
    oid::ObjectId, spec::BinarySubtype,
};
use mongodb::{Client, IndexModel};

use super::mongo::*;
use super::proc::Tandem;

/// One document holding every BSON type secantus stores as is.
pub fn every_type(i: i32) -> Document {
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

pub async fn seed(c: &Client) {
    let shop = c.database("mshop");
    shop.create_collection("capped")
        .capped(true)
        .size(1 << 20)
        .await
        .unwrap();
    shop.create_collection("validated")
        .validator(doc! {"qty": {"$gte": 0}})
        .validation_level(mongodb::options::ValidationLevel::Moderate)
        .await
        .unwrap();
    shop.create_collection("collated")
        .collation(
            mongodb::options::Collation::builder()
                .locale("en")
                .strength(mongodb::options::CollationStrength::Secondary)
                .build(),
        )
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
    // Enough of them that the copy's partitions span types (numbers, then strings).
    mixed
        .insert_many((0..600).map(|i| {
            if i % 2 == 0 {
                doc! {"_id": i, "v": i}
            } else {
                doc! {"_id": format!("s{i:04}"), "v": i}
            }
        }))
        .await
        .unwrap();
    let orders = shop.collection::<Document>("orders");
    orders
        .insert_many((0..2000).map(|i| doc! {"_id": i, "qty": i % 7, "sku": format!("sku{}", i % 100), "at": DateTime::from_millis(1_700_000_000_000 + i as i64), "loc": {"type": "Point", "coordinates": [i as f64 / 100.0, 1.0]}, "tags": ["a", "b"]}))
        .await
        .unwrap();
    let idx = |k: Document, o: Option<mongodb::options::IndexOptions>| {
        IndexModel::builder().keys(k).options(o).build()
    };
    use mongodb::options::IndexOptions as O;
    orders
        .create_indexes(vec![
            idx(
                doc! {"sku": 1},
                Some(
                    O::builder()
                        .name("sku_unique_when_set".to_string())
                        .unique(true)
                        .partial_filter_expression(
                            doc! {"sku": {"$type": "string"}, "qty": {"$gt": 100}},
                        )
                        .build(),
                ),
            ),
            idx(doc! {"qty": 1, "sku": -1}, None),
            idx(
                doc! {"at": 1},
                Some(
                    O::builder()
                        .expire_after(Duration::from_secs(10 * 365 * 86400))
                        .build(),
                ),
            ),
            idx(doc! {"maybe": 1}, Some(O::builder().sparse(true).build())),
            idx(
                doc! {"sku": 1, "qty": 1},
                Some(
                    O::builder()
                        .name("coll_idx".to_string())
                        .collation(mongodb::options::Collation::builder().locale("fr").build())
                        .build(),
                ),
            ),
            idx(doc! {"tags": 1}, Some(O::builder().hidden(true).build())),
            idx(doc! {"loc": "2dsphere"}, None),
            idx(doc! {"attrs.$**": 1}, None),
        ])
        .await
        .unwrap();
    shop.create_collection("big_orders")
        .view_on("orders".to_string())
        .pipeline(vec![doc! {"$match": {"qty": {"$gt": 5}}}])
        .await
        .unwrap();
    let hr = c.database("mhr");
    hr.collection::<Document>("people")
        .insert_many(
            (0..300).map(|i| doc! {"_id": ObjectId::new(), "n": i, "name": format!("p{i}")}),
        )
        .await
        .unwrap();
}

/// Namespaces [`changes`] drops or renames away.
const REMOVED: [&str; 2] = ["mshop.capped", "mshop.mixed"];

pub async fn assert_same(src: &Client, dst: &Client, dbs: &[&str]) {
    let (mut a, b) = (catalog(src, dbs).await, catalog(dst, dbs).await);
    // secantus now and then lists a collection that `changes` dropped or renamed away,
    // again, as an empty collection without options, though it logged no entry that
    // created it (two CI runs: `mshop.capped` after its drop, `mshop.mixed` after its
    // rename). No reader of the source can know of it. Such a ghost is left out when
    // it is empty on the source and absent from the target; anything else still counts.
    let mut ghosts = Vec::new();
    for (ns, o) in &a {
        let (db, coll) = ns.split_once('.').unwrap();
        if REMOVED.contains(&ns.as_str())
            && o.is_empty()
            && !b.iter().any(|(n, _)| n == ns)
            && src
                .database(db)
                .collection::<Document>(coll)
                .count_documents(doc! {})
                .await
                .unwrap()
                == 0
        {
            ghosts.push(ns.clone());
        }
    }
    if !ghosts.is_empty() {
        eprintln!("secantus lists dropped/renamed collections again, empty: {ghosts:?}");
        a.retain(|(ns, _)| !ghosts.contains(ns));
    }
    assert_eq!(a, b, "collections and options differ");
    for (ns, o) in &a {
        if o.contains_key("viewOn") {
            continue;
        }
        let (db, coll) = ns.split_once('.').unwrap();
        assert_same_coll(src, dst, db, coll).await;
        assert_eq!(
            index_specs(src, db, coll).await,
            index_specs(dst, db, coll).await,
            "{ns}: indexes differ"
        );
    }
}

pub fn start_sync(src: &MongoServer, dst: &MongoServer, extra: &[&str]) -> Tandem {
    let (s, t) = (src.uri(), dst.uri());
    let mut args = vec!["mongo", "sync", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    Tandem::start(&args)
}

/// Every kind of change after the copy: CRUD with the update operators (one new field
/// per update: secantus orders several new fields unlike mongod), DDL, transactions.
pub async fn changes(c: &Client) {
    let shop = c.database("mshop");
    let o = shop.collection::<Document>("orders");
    o.insert_one(doc! {"_id": 5000, "qty": 1, "arr": [1, 2, 3, 4, 5], "sub": {"x": 1, "y": {"z": [1, {"w": 2}]}}}).await.unwrap();
    o.insert_many((5001..5100).map(|i| doc! {"_id": i, "qty": i}))
        .await
        .unwrap();
    let one = |u: Document| {
        let o = o.clone();
        async move { o.update_one(doc! {"_id": 5000}, u).await.unwrap() }
    };
    one(doc! {"$set": {"qty": 10}}).await;
    one(doc! {"$set": {"newf": "n"}}).await;
    one(doc! {"$set": {"sub.x": 99}}).await;
    one(doc! {"$set": {"sub.y.z.1.w": 3}}).await;
    one(doc! {"$unset": {"sub.x": ""}}).await;
    one(doc! {"$inc": {"qty": 5}}).await;
    one(doc! {"$push": {"arr": 6}}).await;
    one(doc! {"$push": {"arr": {"$each": [0], "$position": 0}}}).await;
    one(doc! {"$pull": {"arr": 3}}).await;
    one(doc! {"$pop": {"arr": 1}}).await;
    one(doc! {"$addToSet": {"arr": 42}}).await;
    one(doc! {"$set": {"arr.1": 100}}).await;
    one(doc! {"$set": {"arr.9": "padded"}}).await;
    one(doc! {"$rename": {"newf": "renamed"}}).await;
    one(doc! {"$mul": {"qty": 2}}).await;
    one(doc! {"$max": {"qty": 1000}}).await;
    one(doc! {"$currentDate": {"when": true}}).await;
    one(doc! {"$push": {"arr": {"$each": [7, 8], "$slice": -4}}}).await;
    o.update_one(
        doc! {"_id": 5001},
        vec![doc! {"$set": {"p": {"$add": ["$qty", 1]}}}],
    )
    .await
    .unwrap();
    o.update_many(
        doc! {"_id": {"$gte": 5010, "$lt": 5020}},
        doc! {"$inc": {"qty": 1}},
    )
    .await
    .unwrap();
    o.replace_one(doc! {"_id": 5002}, doc! {"replaced": true, "k": [1]})
        .await
        .unwrap();
    o.delete_one(doc! {"_id": 5003}).await.unwrap();
    o.delete_many(doc! {"_id": {"$gte": 5050, "$lt": 5060}})
        .await
        .unwrap();
    o.update_one(doc! {"_id": 6000}, doc! {"$set": {"up": 1}})
        .upsert(true)
        .await
        .unwrap();
    o.delete_many(doc! {"_id": {"$lt": 100}}).await.unwrap();
    // Documents holding a top-level `$` field name, changed: tandem rewrites them whole.
    let types = shop.collection::<Document>("types");
    types
        .update_one(doc! {"_id": 3}, doc! {"$set": {"string": "changed"}})
        .await
        .unwrap();
    types
        .update_one(doc! {"_id": 4}, doc! {"$unset": {"dotted.name": ""}})
        .await
        .unwrap();
    // DDL.
    shop.create_collection("later")
        .validator(doc! {"a": {"$exists": true}})
        .await
        .unwrap();
    shop.collection::<Document>("later")
        .insert_one(doc! {"_id": 1, "a": 1})
        .await
        .unwrap();
    let later = shop.collection::<Document>("later");
    later
        .create_index(
            IndexModel::builder()
                .keys(doc! {"a": -1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    later
        .create_index(IndexModel::builder().keys(doc! {"b": 1}).build())
        .await
        .unwrap();
    later.drop_index("b_1").await.unwrap();
    shop.run_command(doc! {"collMod": "validated", "validator": {"qty": {"$gte": 1}}})
        .await
        .unwrap();
    c.database("admin")
        .run_command(doc! {"renameCollection": "mshop.mixed", "to": "mshop.mixed2"})
        .await
        .unwrap();
    shop.collection::<Document>("mixed2")
        .insert_one(doc! {"_id": "after-rename"})
        .await
        .unwrap();
    shop.collection::<Document>("capped").drop().await.unwrap();
    shop.create_collection("v2")
        .view_on("later".to_string())
        .pipeline(vec![doc! {"$project": {"a": 1}}])
        .await
        .unwrap();
    let tmp = c.database("mtmp");
    tmp.collection::<Document>("x")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    tmp.drop().await.unwrap();
    // A committed transaction over two databases, and an aborted one.
    let mut s = c.start_session().await.unwrap();
    s.start_transaction().await.unwrap();
    o.insert_one(doc! {"_id": 7000, "t": 1})
        .session(&mut s)
        .await
        .unwrap();
    o.update_one(doc! {"_id": 5000}, doc! {"$inc": {"qty": 1}})
        .session(&mut s)
        .await
        .unwrap();
    o.delete_one(doc! {"_id": 5004})
        .session(&mut s)
        .await
        .unwrap();
    c.database("mhr")
        .collection::<Document>("people")
        .insert_one(doc! {"_id": "txn", "n": -1})
        .session(&mut s)
        .await
        .unwrap();
    s.commit_transaction().await.unwrap();
    s.start_transaction().await.unwrap();
    o.insert_one(doc! {"_id": 7001})
        .session(&mut s)
        .await
        .unwrap();
    o.delete_one(doc! {"_id": 5005})
        .session(&mut s)
        .await
        .unwrap();
    s.abort_transaction().await.unwrap();
}
