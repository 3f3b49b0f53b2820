use bson::{Bson, doc, oid::ObjectId};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::mongo::ns::Namespace;

const META: Meta = Meta {
    id: 42,
    es: 1000,
    ts: 2000,
};

fn enc(json: JsonMode, shape: DataShape) -> Encoder {
    Encoder { json, shape }
}

fn parse(out: &[u8]) -> Value {
    serde_json::from_slice(out).expect("the envelope is JSON")
}

fn op_json(e: Encoder, op: Op, image: Option<Document>) -> (Kind, Value) {
    let mut out = Vec::new();
    let k = e.op(op, META, image, &mut out);
    (k, parse(&out))
}

fn ns() -> Namespace {
    Namespace::new("shop", "orders")
}

/// Every field of the envelope but `data`, `old`, `sql`, `type`, `isDdl`, `pkNames`, and
/// the field order the cloud service writes.
fn assert_common(v: &Value, table: Value) {
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "data",
            "database",
            "es",
            "id",
            "isDdl",
            "mysqlType",
            "old",
            "pkNames",
            "sql",
            "sqlType",
            "table",
            "ts",
            "type",
            "gtid",
            "serverId"
        ]
    );
    assert_eq!(v["database"], "shop");
    assert_eq!(v["table"], table);
    assert_eq!(
        (v["es"].clone(), v["ts"].clone(), v["id"].clone()),
        (json!(1000), json!(2000), json!(42))
    );
    for k in ["mysqlType", "sqlType", "gtid", "serverId"] {
        assert_eq!(v[k], Value::Null, "{k}");
    }
}

#[test]
fn insert_in_both_shapes_and_both_json_modes() {
    let d = doc! {"_id": 1, "n": 2i64, "f": 1.5, "s": "x"};
    let (k, v) = op_json(
        enc(JsonMode::Relaxed, DataShape::Doc),
        Op::Insert {
            ns: ns(),
            doc: d.clone(),
        },
        None,
    );
    assert_eq!(k, Kind::Insert);
    assert_common(&v, json!("orders"));
    assert_eq!(
        (
            v["type"].clone(),
            v["isDdl"].clone(),
            v["pkNames"].clone(),
            v["old"].clone(),
            v["sql"].clone()
        ),
        (
            json!("INSERT"),
            json!(false),
            json!(["_id"]),
            Value::Null,
            Value::Null
        )
    );
    assert_eq!(
        v["data"],
        json!([{"doc": r#"{"_id":1,"n":2,"f":1.5,"s":"x"}"#}])
    );
    let (_, v) = op_json(
        enc(JsonMode::Canonical, DataShape::Object),
        Op::Insert { ns: ns(), doc: d },
        None,
    );
    assert_eq!(
        v["data"],
        json!([{"_id": {"$numberInt": "1"}, "n": {"$numberLong": "2"}, "f": {"$numberDouble": "1.5"}, "s": "x"}])
    );
}

#[test]
fn update_delta_replace_delete_and_post_image() {
    let e = enc(JsonMode::Relaxed, DataShape::Object);
    let desc = doc! {
        "updatedFields": {"a.b": 1, "c": "x"},
        "removedFields": ["d"],
        "truncatedArrays": [{"field": "arr", "newSize": 2}],
    };
    let upd = Op::Update {
        ns: ns(),
        id: Bson::Int32(7),
        change: Change::Description(desc),
    };
    let (k, v) = op_json(e, upd.clone(), None);
    assert_eq!(k, Kind::Update);
    assert_common(&v, json!("orders"));
    assert_eq!(v["type"], "UPDATE");
    assert_eq!(
        v["data"],
        json!([{"$push": {"arr": {"$each": [], "$slice": 2}}, "$set": {"a.b": 1, "c": "x"}, "$unset": {"d": ""}}])
    );
    assert_eq!(v["old"], json!([{"_id": 7}]));
    let (_, v) = op_json(e, upd, Some(doc! {"_id": 7, "whole": true}));
    assert_eq!(v["data"], json!([{"_id": 7, "whole": true}]));

    let (k, v) = op_json(
        e,
        Op::Replace {
            ns: ns(),
            id: Bson::Int32(7),
            doc: doc! {"_id": 7, "r": 1},
        },
        None,
    );
    assert_eq!((k, v["type"].clone()), (Kind::Update, json!("UPDATE")));
    assert_eq!(
        (v["data"].clone(), v["old"].clone()),
        (json!([{"_id": 7, "r": 1}]), json!([{"_id": 7}]))
    );

    let (k, v) = op_json(
        e,
        Op::Delete {
            ns: ns(),
            id: Bson::String("k".into()),
        },
        None,
    );
    assert_eq!(
        (k, v["type"].clone(), v["old"].clone()),
        (Kind::Delete, json!("DELETE"), Value::Null)
    );
    assert_eq!(v["data"], json!([{"_id": "k"}]));

    let (_, v) = op_json(
        e,
        Op::Update {
            ns: ns(),
            id: Bson::Int32(1),
            change: Change::Modifiers(doc! {"$set": {"x": 1}}),
        },
        None,
    );
    assert_eq!(v["data"], json!([{"$set": {"x": 1}}]));
}

#[test]
fn oplog_diffs_become_set_and_unset() {
    let o = doc! {"$v": 2, "diff": {"d": {"gone": false}, "u": {"a": 5}, "i": {"new": "n"}, "ssub": {"u": {"x": 1}}}};
    let d = delta(&Change::Diff(o));
    assert_eq!(
        d,
        doc! {"$set": {"a": 5, "new": "n", "sub.x": 1}, "$unset": {"gone": ""}}
    );
}

#[test]
fn ddl_messages_carry_the_command_in_sql() {
    let e = enc(JsonMode::Relaxed, DataShape::Doc);
    let cases = [
        (
            Ddl::Create {
                ns: ns(),
                options: doc! {"capped": true, "size": 4096},
            },
            json!("orders"),
            json!({"create": "orders", "capped": true, "size": 4096}),
        ),
        (
            Ddl::Drop { ns: ns() },
            json!("orders"),
            json!({"drop": "orders"}),
        ),
        (
            Ddl::DropDatabase { db: "shop".into() },
            Value::Null,
            json!({"dropDatabase": 1}),
        ),
        (
            Ddl::Rename {
                from: ns(),
                to: Namespace::new("shop", "o2"),
                drop_target: false,
            },
            json!("orders"),
            json!({"renameCollection": "shop.orders", "to": "shop.o2", "dropTarget": false}),
        ),
        (
            Ddl::CreateIndexes {
                ns: ns(),
                specs: vec![doc! {"key": {"a": 1}, "name": "a_1"}],
            },
            json!("orders"),
            json!({"createIndexes": "orders", "indexes": [{"key": {"a": 1}, "name": "a_1"}]}),
        ),
        (
            Ddl::DropIndexes {
                ns: ns(),
                names: vec!["a_1".into()],
            },
            json!("orders"),
            json!({"dropIndexes": "orders", "index": ["a_1"]}),
        ),
    ];
    for (ddl, table, sql) in cases {
        let mut out = Vec::new();
        e.ddl(&ddl, META, &mut out);
        let v = parse(&out);
        assert_common(&v, table);
        assert_eq!(
            (
                v["type"].clone(),
                v["isDdl"].clone(),
                v["data"].clone(),
                v["old"].clone(),
                v["pkNames"].clone()
            ),
            (
                json!("DDL"),
                json!(true),
                Value::Null,
                Value::Null,
                Value::Null
            )
        );
        let got: Value = serde_json::from_str(v["sql"].as_str().unwrap()).unwrap();
        assert_eq!(got, sql, "{ddl:?}");
    }
}

#[test]
fn keys_are_canonical_ids() {
    assert_eq!(id_key(&Bson::Int32(1)), br#"{"$numberInt":"1"}"#.to_vec());
    assert_eq!(id_key(&Bson::String("1".into())), br#""1""#.to_vec());
    let oid = ObjectId::parse_str("65a1f0c2e4b0a1b2c3d4e5f6").unwrap();
    assert_eq!(
        id_key(&Bson::ObjectId(oid)),
        br#"{"$oid":"65a1f0c2e4b0a1b2c3d4e5f6"}"#.to_vec()
    );
    assert_ne!(id_key(&Bson::Int64(1)), id_key(&Bson::Int32(1)));
}

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        ".{0,12}".prop_map(Bson::String),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        any::<i64>().prop_map(|m| Bson::DateTime(bson::DateTime::from_millis(m))),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|bytes| Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes
        })),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            proptest::collection::vec(("[a-z]{1,4}", inner), 0..4)
                .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    (
        leaf(),
        proptest::collection::vec(("[a-z]{1,6}", value()), 0..6),
    )
        .prop_map(|(id, kv)| {
            let mut d = doc! {"_id": id};
            for (k, v) in kv {
                if k != "_id" {
                    d.insert(k, v);
                }
            }
            d
        })
}

proptest! {
    /// Any document comes back from a canonical message exactly, whatever its shape,
    /// and the envelope is always valid JSON with the document's namespace.
    #[test]
    fn canonical_messages_give_the_document_back(d in document(), object in any::<bool>(), db in "[a-z]{1,8}", coll in ".{1,10}") {
        let shape = if object { DataShape::Object } else { DataShape::Doc };
        let e = enc(JsonMode::Canonical, shape);
        let mut out = Vec::new();
        e.op(Op::Insert { ns: Namespace::new(&db, &coll), doc: d.clone() }, META, None, &mut out);
        let v = parse(&out);
        prop_assert_eq!(&v["database"], &json!(db));
        prop_assert_eq!(&v["table"], &json!(coll));
        let row = match shape {
            DataShape::Object => v["data"][0].clone(),
            DataShape::Doc => serde_json::from_str(v["data"][0]["doc"].as_str().unwrap()).unwrap(),
        };
        let back = Bson::try_from(row).unwrap();
        // NaN is not equal to itself: compare the canonical text instead.
        prop_assert_eq!(back.into_canonical_extjson(), Bson::Document(d).into_canonical_extjson());
    }

    /// Relaxed messages are JSON too, and a delete's data is exactly the `_id`.
    #[test]
    fn relaxed_delete_keeps_the_id(d in document()) {
        let id = d.get("_id").unwrap().clone();
        let mut out = Vec::new();
        enc(JsonMode::Relaxed, DataShape::Object).op(Op::Delete { ns: ns(), id: id.clone() }, META, None, &mut out);
        let v = parse(&out);
        prop_assert_eq!(&v["data"][0]["_id"], &id.into_relaxed_extjson());
    }
}
