//! Test datasets of every type and encoding, and a type-aware comparison of two servers.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::{Client, Frame, RedisServer};

/// A small deterministic generator, so a failure can be replayed.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn b(s: impl Into<Vec<u8>>) -> Bytes {
    Bytes::from(s.into())
}

/// Writes keys of every type, in small and large encodings, some with TTLs, into `db`.
/// Key names start with `p` (the prefix) so filters can be tested.
pub fn fill_all_types(c: &mut Client, db: u32, p: &str, seed: u64) {
    let mut r = Lcg(seed);
    c.cmd(&["SELECT", &db.to_string()]);
    let mut cmds: Vec<Vec<Bytes>> = Vec::new();
    let mut add = |v: Vec<Bytes>| cmds.push(v);
    // Strings: raw, int-encoded, long (LZF-compressible), binary.
    add(vec![b("SET"), b(format!("{p}str")), b("hello")]);
    add(vec![b("SET"), b(format!("{p}int")), b("12345")]);
    add(vec![b("SET"), b(format!("{p}neg")), b("-99")]);
    add(vec![b("SET"), b(format!("{p}long")), b("ab".repeat(5000))]);
    add(vec![
        b("SET"),
        b(format!("{p}bin")),
        Bytes::from(vec![0u8, 255, 10, 13, 0]),
    ]);
    add(vec![
        b("SET"),
        b(format!("{p}ttl")),
        b("soon"),
        b("PX"),
        b("600000"),
    ]);
    add(vec![b("SETBIT"), b(format!("{p}bits")), b("1000"), b("1")]);
    add(vec![
        b("PFADD"),
        b(format!("{p}hll")),
        b("a"),
        b("b"),
        b("c"),
    ]);
    // Lists: small (listpack) and large (quicklist of several nodes).
    add(vec![
        b("RPUSH"),
        b(format!("{p}list")),
        b("a"),
        b("1"),
        b("b"),
    ]);
    let mut big = vec![b("RPUSH"), b(format!("{p}biglist"))];
    for i in 0..3000 {
        big.push(b(format!("item-{i}-{}", r.below(1000))));
    }
    add(big);
    // Sets: intset, listpack-ish small, hashtable.
    add(vec![
        b("SADD"),
        b(format!("{p}intset")),
        b("1"),
        b("2"),
        b("300000"),
    ]);
    add(vec![b("SADD"), b(format!("{p}set")), b("x"), b("y")]);
    let mut bigset = vec![b("SADD"), b(format!("{p}bigset"))];
    for i in 0..1000 {
        bigset.push(b(format!("m{i}")));
    }
    add(bigset);
    // Sorted sets: listpack and skiplist, odd scores.
    add(vec![
        b("ZADD"),
        b(format!("{p}zset")),
        b("1.5"),
        b("a"),
        b("-inf"),
        b("b"),
        b("3e100"),
        b("c"),
    ]);
    let mut bigz = vec![b("ZADD"), b(format!("{p}bigzset"))];
    for i in 0..1000 {
        bigz.push(b(format!("{}", i as f64 / 7.0)));
        bigz.push(b(format!("z{i}")));
    }
    add(bigz);
    // Hashes: listpack and hashtable.
    add(vec![
        b("HSET"),
        b(format!("{p}hash")),
        b("f1"),
        b("v1"),
        b("f2"),
        b("2"),
    ]);
    let mut bigh = vec![b("HSET"), b(format!("{p}bighash"))];
    for i in 0..600 {
        bigh.push(b(format!("field{i}")));
        bigh.push(b(format!("value{}", r.below(100000))));
    }
    add(bigh);
    add(vec![b("EXPIRE"), b(format!("{p}bighash")), b("3000")]);
    // Streams with a consumer group and pending entries.
    for i in 0..20 {
        add(vec![
            b("XADD"),
            b(format!("{p}stream")),
            b(format!("{}-1", 1000 + i)),
            b("f"),
            b(format!("{i}")),
        ]);
    }
    add(vec![
        b("XGROUP"),
        b("CREATE"),
        b(format!("{p}stream")),
        b("g1"),
        b("0"),
    ]);
    add(vec![
        b("XREADGROUP"),
        b("GROUP"),
        b("g1"),
        b("alice"),
        b("COUNT"),
        b("3"),
        b("STREAMS"),
        b(format!("{p}stream")),
        b(">"),
    ]);
    c.pipeline(&cmds);
}

/// One key's value in a canonical, comparable form.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub kind: String,
    pub value: Vec<Vec<u8>>,
}

fn bulk_list(f: Frame) -> Vec<Vec<u8>> {
    match f {
        Frame::Array(items) => items
            .into_iter()
            .flat_map(|i| match i {
                Frame::BulkString(b) | Frame::SimpleString(b) => vec![b],
                Frame::Integer(n) => vec![n.to_string().into_bytes()],
                Frame::Array(_) => bulk_list(i),
                Frame::Null => vec![b"(nil)".to_vec()],
                Frame::Error(e) => vec![e.into_bytes()],
            })
            .collect(),
        Frame::BulkString(b) | Frame::SimpleString(b) => vec![b],
        Frame::Integer(n) => vec![n.to_string().into_bytes()],
        Frame::Null => vec![],
        Frame::Error(e) => panic!("server error: {e}"),
    }
}

fn pairs_sorted(v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut p: Vec<(Vec<u8>, Vec<u8>)> =
        v.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
    p.sort();
    p.into_iter().flat_map(|(a, b)| [a, b]).collect()
}

/// Stream metadata that only newer servers report (7.0+): left out when comparing a
/// server with an older one.
const NEWER_STREAM_FIELDS: [&[u8]; 4] = [
    b"max-deleted-entry-id",
    b"entries-added",
    b"recorded-first-entry-id",
    b"active-time",
];

/// Read a key's value type-aware.
pub fn read_key(c: &mut Client, key: &[u8]) -> KeyValue {
    read_key_with(c, key, false)
}

/// `read_key`, leaving out what differs only by server version when `across_versions`.
pub fn read_key_with(c: &mut Client, key: &[u8], across_versions: bool) -> KeyValue {
    let kind = match c.cmd_bytes(&[b"TYPE", key]) {
        Frame::SimpleString(s) => String::from_utf8(s).unwrap(),
        other => panic!("TYPE: {other:?}"),
    };
    let value = match kind.as_str() {
        "string" => bulk_list(c.cmd_bytes(&[b"GET", key])),
        "list" => bulk_list(c.cmd_bytes(&[b"LRANGE", key, b"0", b"-1"])),
        "set" => {
            let mut v = bulk_list(c.cmd_bytes(&[b"SMEMBERS", key]));
            v.sort();
            v
        }
        "zset" => {
            // Scores compared as numbers: servers print the same double differently.
            let mut v = bulk_list(c.cmd_bytes(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]));
            for score in v.iter_mut().skip(1).step_by(2) {
                let n: f64 = std::str::from_utf8(score).unwrap().parse().unwrap();
                *score = format!("{n:?}").into_bytes();
            }
            v
        }
        "hash" => pairs_sorted(bulk_list(c.cmd_bytes(&[b"HGETALL", key]))),
        "stream" => {
            let mut v = bulk_list(c.cmd_bytes(&[b"XRANGE", key, b"-", b"+"]));
            let info = bulk_list(c.cmd_bytes(&[b"XINFO", b"STREAM", key, b"FULL"]));
            // Drop fields that legitimately differ between servers (delivery times).
            let mut keep = Vec::new();
            let mut skip_next = false;
            for item in info {
                if skip_next {
                    skip_next = false;
                    continue;
                }
                // entries-read and lag are not replicated by Redis 7.0 itself (a native
                // replica shows nil too), so they cannot be compared after a stream.
                if [
                    &b"seen-time"[..],
                    b"active-time",
                    b"radix-tree-keys",
                    b"radix-tree-nodes",
                    b"entries-read",
                    b"lag",
                ]
                .contains(&&item[..])
                    || (across_versions && NEWER_STREAM_FIELDS.contains(&&item[..]))
                {
                    skip_next = true;
                    continue;
                }
                keep.push(item);
            }
            v.push(b"--info--".to_vec());
            v.extend(keep.into_iter().filter(|i| !looks_like_ms_timestamp(i)));
            v
        }
        "none" => vec![],
        other => panic!("unexpected type {other}"),
    };
    KeyValue { kind, value }
}

/// Delivery times in XINFO FULL (ms since epoch) differ between servers.
fn looks_like_ms_timestamp(v: &[u8]) -> bool {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n > 1_600_000_000_000 && n < 4_000_000_000_000)
}

/// Every key of `db` except tandem's metadata.
pub fn keys(c: &mut Client, db: u32) -> Vec<Vec<u8>> {
    c.cmd(&["SELECT", &db.to_string()]);
    let mut out = Vec::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..100_000 {
        let reply = c.cmd_bytes(&[b"SCAN", &cursor, b"COUNT", b"1000"]);
        let Frame::Array(mut parts) = reply else {
            panic!("SCAN: {reply:?}")
        };
        let batch = bulk_list(parts.pop().unwrap());
        out.extend(batch.into_iter().filter(|k| !k.starts_with(b"__tandem:")));
        cursor = match parts.pop().unwrap() {
            Frame::BulkString(c) => c,
            other => panic!("cursor {other:?}"),
        };
        if cursor == b"0" {
            out.sort();
            return out;
        }
    }
    panic!("SCAN did not finish");
}

/// Snapshot of a db: key → (value, PTTL).
pub fn snapshot(server: &RedisServer, db: u32) -> BTreeMap<Vec<u8>, (KeyValue, i64)> {
    snapshot_with(server, db, false)
}

pub fn snapshot_with(
    server: &RedisServer,
    db: u32,
    across_versions: bool,
) -> BTreeMap<Vec<u8>, (KeyValue, i64)> {
    let mut c = server.client();
    let ks = keys(&mut c, db);
    let mut out = BTreeMap::new();
    for k in ks {
        let v = read_key_with(&mut c, &k, across_versions);
        let ttl = match c.cmd_bytes(&[b"PTTL", &k]) {
            Frame::Integer(t) => t,
            other => panic!("PTTL: {other:?}"),
        };
        out.insert(k, (v, ttl));
    }
    out
}

/// Assert db `sdb` of `src` and db `ddb` of `dst` hold the same keys and values, with
/// TTLs within `ttl_slack`.
pub fn assert_same_db(
    src: &RedisServer,
    sdb: u32,
    dst: &RedisServer,
    ddb: u32,
    ttl_slack: Duration,
) {
    assert_same_db_with(src, sdb, dst, ddb, ttl_slack, false)
}

/// `assert_same_db` between servers of different versions.
pub fn assert_same_db_across_versions(src: &RedisServer, dst: &RedisServer, db: u32) {
    assert_same_db_with(src, db, dst, db, Duration::from_millis(1500), true)
}

fn assert_same_db_with(
    src: &RedisServer,
    sdb: u32,
    dst: &RedisServer,
    ddb: u32,
    ttl_slack: Duration,
    across_versions: bool,
) {
    let a = snapshot_with(src, sdb, across_versions);
    let b = snapshot_with(dst, ddb, across_versions);
    assert_same_snapshot(
        &a,
        &b,
        ttl_slack,
        &format!("source db {sdb}, target db {ddb}"),
    );
}

/// Snapshots hold the same keys and values, with TTLs within `ttl_slack`; `what` names
/// the two sides in the failure message.
pub fn assert_same_snapshot(
    a: &BTreeMap<Vec<u8>, (KeyValue, i64)>,
    b: &BTreeMap<Vec<u8>, (KeyValue, i64)>,
    ttl_slack: Duration,
    what: &str,
) {
    let ak: Vec<_> = a
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let bk: Vec<_> = b
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(ak, bk, "key sets differ ({what})");
    for (k, (va, ta)) in a {
        let (vb, tb) = &b[k];
        if va != vb {
            panic!(
                "value of {:?} differs ({what}): {}",
                String::from_utf8_lossy(k),
                first_difference(va, vb)
            );
        }
        if *ta < 0 || *tb < 0 {
            assert_eq!(ta, tb, "TTL presence of {:?}", String::from_utf8_lossy(k));
        } else {
            let d = (ta - tb).unsigned_abs();
            assert!(
                d <= ttl_slack.as_millis() as u64,
                "TTL of {:?}: {ta} vs {tb}",
                String::from_utf8_lossy(k)
            );
        }
    }
}

/// The first differing element of two values, shortly.
fn first_difference(a: &KeyValue, b: &KeyValue) -> String {
    if a.kind != b.kind {
        return format!("type {} vs {}", a.kind, b.kind);
    }
    let show = |v: Option<&Vec<u8>>| match v {
        Some(x) => String::from_utf8_lossy(&x[..x.len().min(60)]).into_owned(),
        None => "(end)".into(),
    };
    let n = a.value.len().max(b.value.len());
    for i in 0..n {
        if a.value.get(i) != b.value.get(i) {
            return format!(
                "element {i} of {}/{}: {:?} vs {:?} (after {:?})",
                a.value.len(),
                b.value.len(),
                show(a.value.get(i)),
                show(b.value.get(i)),
                show(i.checked_sub(1).and_then(|j| a.value.get(j)))
            );
        }
    }
    "equal".into()
}
