//! Parse every shared and project RDB fixture and compare EVERY key of its manifest
//! (type, expiry, value) with what the parser decodes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem::redis::rdb::inspect::{CanonicalBuilder, bytes_json};
use tandem::redis::rdb::*;

fn shared() -> PathBuf {
    PathBuf::from(
        std::env::var("TANDEM_SHARED_FIXTURES").unwrap_or_else(|_| "/work/shared/fixtures".into()),
    )
}

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/rdb")
}

/// Per (db, key): type, canonical value, expiry, module info, RDB type byte.
type ParsedKey = (String, Value, Option<i64>, Option<Value>, u8);

struct Parsed {
    version: u32,
    keys: BTreeMap<(u64, String), ParsedKey>,
    functions: Vec<Vec<u8>>,
    aux: Vec<(Vec<u8>, Vec<u8>)>,
    checksum: Option<u64>,
}

fn key_str(k: &[u8]) -> String {
    bytes_json(k).to_string()
}

fn parse(path: &Path) -> Parsed {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut p = RdbParser::new(BufReader::new(f)).unwrap();
    let mut out = Parsed {
        version: p.version(),
        keys: BTreeMap::new(),
        functions: vec![],
        aux: vec![],
        checksum: None,
    };
    let mut ended = false;
    while let Some(ev) = p
        .next_event()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    {
        match ev {
            Event::Key(k) => {
                let mut b = CanonicalBuilder::new(k.rdb_type);
                while let Some(c) = p
                    .next_chunk()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                {
                    b.add(c);
                }
                let (ty, v, ttl) = b.finish();
                let prev = out.keys.insert(
                    (k.db, key_str(&k.key)),
                    (ty, v, k.expire_at_ms, ttl, k.rdb_type),
                );
                assert!(prev.is_none(), "duplicate key {:?}", k.key);
            }
            Event::Function { code } => out.functions.push(code),
            Event::Aux { key, value } => out.aux.push((key, value)),
            Event::End { checksum } => {
                out.checksum = checksum;
                ended = true;
            }
            _ => {}
        }
    }
    assert!(ended, "no EOF event");
    out
}

/// Numbers compared as f64 (the manifests write `1.0`, we may write `1`).
fn norm(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

/// Path and both sides of the first difference, so failures stay readable.
fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_diff(p, q, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path}: length {} vs {}", x.len(), y.len()))
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, p) in x {
                match y.get(k) {
                    Some(q) => {
                        if let Some(d) = first_diff(p, q, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}: only in parsed")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: only in manifest"))
        }
        _ => (a != b).then(|| format!("{path}: parsed {a} vs manifest {b}")),
    }
}

fn assert_same(got: &Value, want: &Value, what: &str) {
    if let Some(d) = first_diff(&norm(got), &norm(want), "value") {
        panic!("{what}: {d}");
    }
}

fn sorted(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    s.sort();
    s
}

fn check_manifest(rdb: &Path, manifest: &Path) -> usize {
    let parsed = parse(rdb);
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut lines = text.lines();
    let head: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    if let Some(h) = head["rdb_header"].as_str() {
        assert_eq!(
            h[5..].parse::<u32>().unwrap(),
            parsed.version,
            "{}",
            rdb.display()
        );
    }
    let mut n = 0;
    for line in lines {
        let m: Value = serde_json::from_str(line).unwrap();
        let id = (m["db"].as_u64().unwrap(), m["key"].to_string());
        let (ty, v, exp, _ttl, _rt) = parsed
            .keys
            .get(&id)
            .unwrap_or_else(|| panic!("{}: key {id:?} of the manifest not parsed", rdb.display()));
        let what = format!("{} key {id:?}", rdb.display());
        assert_eq!(ty, m["type"].as_str().unwrap(), "{what}: type");
        assert_eq!(*exp, m["expire_at_ms"].as_i64(), "{what}: expiry");
        match ty.as_str() {
            "set" => assert_eq!(sorted(v), sorted(&m["value"]), "{what}: value"),
            _ => assert_same(v, &m["value"], &what),
        }
        n += 1;
    }
    assert_eq!(
        n,
        parsed.keys.len(),
        "{}: parsed keys not in the manifest",
        rdb.display()
    );
    n
}

#[test]
fn shared_redis_fixtures_match_manifests() {
    for name in ["redis-6.2", "redis-7.2", "redis-7.4"] {
        let dir = shared().join("rdb");
        let rdb = dir.join(format!("{name}.rdb"));
        let n = check_manifest(&rdb, &dir.join(format!("{name}.manifest.jsonl")));
        assert!(n > 20, "{name}: only {n} keys");
        let p = parse(&rdb);
        assert!(p.checksum.is_some(), "{name}: checksum verified");
        assert!(p.aux.iter().any(|(k, _)| k == b"redis-ver"));
        if name != "redis-6.2" {
            assert_eq!(p.functions.len(), 1, "{name}: one function library");
            assert!(String::from_utf8_lossy(&p.functions[0]).contains("fx_echo"));
        }
    }
}

#[test]
fn redis_74_field_ttls() {
    let p = parse(&shared().join("rdb/redis-7.4.rdb"));
    let mut seen = 0;
    for ((_, key), (_, v, _, ttl, rt)) in &p.keys {
        if !key.contains("hash:fieldttl") {
            continue;
        }
        seen += 1;
        assert!(matches!(*rt, 24 | 25), "{key}: type {rt}");
        let ttl = ttl.as_ref().expect("field TTLs present");
        for (f, _) in v.as_object().unwrap() {
            let expect = ["a", "b", "f1", "f2", "f3"].contains(&f.as_str());
            match ttl.get(f) {
                Some(t) => {
                    assert!(expect, "{key}.{f} should have no TTL");
                    assert_eq!(t.as_i64(), Some(4102444800000), "{key}.{f}");
                }
                None => assert!(!expect, "{key}.{f} should have a TTL"),
            }
        }
    }
    assert!(seen >= 2);
}

#[test]
fn tair_fixture_matches_manifest() {
    let dir = shared().join("tair");
    let parsed = parse(&dir.join("tair-7.0.rdb"));
    let text = std::fs::read_to_string(dir.join("tair-7.0.manifest.jsonl")).unwrap();
    let mut n = 0;
    for line in text.lines().skip(1) {
        let m: Value = serde_json::from_str(line).unwrap();
        let id = (m["db"].as_u64().unwrap(), m["key"].to_string());
        let (ty, v, exp, _, _) = parsed
            .keys
            .get(&id)
            .unwrap_or_else(|| panic!("{id:?} missing"));
        assert_eq!(*exp, m["key_expire_at_ms"].as_i64(), "{id:?} expiry");
        let mv = &m["value"];
        match m["type"].as_str().unwrap() {
            "exstrtype" => {
                assert_eq!(ty, "exstrtype");
                assert_eq!(v["value"], mv["value"], "{id:?}");
                assert_eq!(v["version"], mv["version"], "{id:?}");
                assert_eq!(v["flags"], mv["flags"], "{id:?}");
            }
            "tairhash-" => {
                assert_eq!(ty, "tairhash-");
                let mut want: Vec<&Value> = mv["fields"].as_array().unwrap().iter().collect();
                want.sort_by_key(|f| f["field"].to_string());
                let mut got: Vec<&Value> = v["fields"].as_array().unwrap().iter().collect();
                got.sort_by_key(|f| f["field"].to_string());
                assert_eq!(got.len(), want.len(), "{id:?}");
                for (g, w) in got.iter().zip(want) {
                    for k in ["field", "value", "version", "expire_at_ms"] {
                        assert_eq!(g[k], w[k], "{id:?} {k}");
                    }
                }
            }
            "tairzset_" => {
                assert_eq!(ty, "tairzset_");
                let want = mv["members"].as_array().unwrap();
                let got = v["members"].as_array().unwrap();
                assert_eq!(got.len(), want.len(), "{id:?}");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g["member"], w["member"], "{id:?}");
                    assert_same(&g["scores_f64"], &w["scores_f64"], &format!("{id:?}"));
                }
            }
            other => {
                assert_eq!(ty, other, "{id:?}");
                let want: BTreeMap<String, Value> = match mv {
                    Value::Array(pairs) => pairs
                        .iter()
                        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].clone()))
                        .collect(),
                    _ => BTreeMap::new(),
                };
                if other == "hash" {
                    let got: BTreeMap<String, Value> = v
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    assert_eq!(got, want, "{id:?}");
                } else {
                    assert_same(v, mv, &format!("{id:?}"));
                }
            }
        }
        n += 1;
    }
    assert_eq!(n, parsed.keys.len());
    assert_eq!(n, 45);
}

#[test]
fn project_fixtures_match_manifests() {
    let mut n = 0;
    for e in std::fs::read_dir(project()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "rdb") {
            let man = path.with_extension("manifest.jsonl");
            check_manifest(&path, &man);
            n += 1;
        }
    }
    assert!(n >= 1, "no project fixtures");
}
