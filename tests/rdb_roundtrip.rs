//! Round trip against real servers: random data of every type and several encodings in
//! several dbs with TTLs → SAVE → parse → (1) replay the decoded commands into a fresh
//! server and compare every key type-aware (TTL within 1 s); (2) RESTORE every raw value
//! (payload from `dump_payload`) into another fresh server and compare `DUMP` with the
//! payload byte for byte, except for hashtable-encoded sets/hashes whose re-serialization
//! follows the new dict's iteration order (those are compared by value).

mod support;
use support::*;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use bytes::Bytes;
use tandem::redis::rdb::decode::{Command, function_command};
use tandem::redis::rdb::*;

const CONFIG: &[(&str, &str)] = &[
    ("list-max-listpack-size", "16"),
    ("set-max-intset-entries", "64"),
    ("zset-max-listpack-entries", "64"),
    ("hash-max-listpack-entries", "64"),
    ("stream-node-max-entries", "20"),
];

fn start() -> RedisServer {
    let mut o = ServerOpts::default();
    for (k, v) in CONFIG {
        o = o.arg(k, v);
    }
    RedisServer::start_with(o)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn word(&mut self) -> String {
        let len = 1 + self.below(12);
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
    fn elem(&mut self) -> String {
        match self.below(4) {
            0 => (self.next() as i64 >> self.below(60)).to_string(),
            1 => self.word().repeat(1 + self.below(30) as usize),
            _ => self.word(),
        }
    }
}

fn populate(s: &RedisServer, seed: u64) {
    let mut r = Rng(seed);
    let mut c = s.client();
    // Expiries from the server's own clock, a day ahead at least: a fixed instant ages
    // into the past, and keys expired at SAVE time are not in the RDB.
    let now_ms = c.server_time_ms() + 86_400_000;
    for db in [0u64, 1, 7] {
        c.cmd(&["SELECT", &db.to_string()]);
        for i in 0..40 {
            let n = 1 + r.below(if i % 5 == 0 { 200 } else { 30 }) as usize;
            let key = format!("k:{db}:{i}");
            match i % 7 {
                0 => {
                    let v = match r.below(4) {
                        0 => r.next().to_string(),
                        1 => "z".repeat(500 + r.below(2000) as usize),
                        2 => String::from_utf8_lossy(&(0..=255u8).collect::<Vec<_>>()).into_owned(),
                        _ => r.word(),
                    };
                    c.cmd(&["SET", &key, &v]);
                }
                1 => {
                    let items: Vec<String> = (0..n).map(|_| r.elem()).collect();
                    let mut a = vec!["RPUSH", &key];
                    a.extend(items.iter().map(String::as_str));
                    c.cmd(&a);
                }
                2 => {
                    let items: Vec<String> = if r.below(2) == 0 {
                        (0..n)
                            .map(|_| (r.below(100000) as i64 - 50000).to_string())
                            .collect()
                    } else {
                        (0..n).map(|_| r.elem()).collect()
                    };
                    let mut a = vec!["SADD", &key];
                    a.extend(items.iter().map(String::as_str));
                    c.cmd(&a);
                }
                3 => {
                    let mut items = vec![];
                    for _ in 0..n {
                        let sc = match r.below(10) {
                            0 => "inf".to_string(),
                            1 => "-inf".to_string(),
                            2 => (r.below(1000) as i64 - 500).to_string(),
                            _ => format!("{}", (r.next() as f64 / u64::MAX as f64 - 0.5) * 1e6),
                        };
                        items.push(sc);
                        items.push(r.elem());
                    }
                    let mut a = vec!["ZADD", &key];
                    a.extend(items.iter().map(String::as_str));
                    c.cmd(&a);
                }
                4 => {
                    let items: Vec<String> = (0..2 * n).map(|_| r.elem()).collect();
                    let mut a = vec!["HSET", &key];
                    a.extend(items.iter().map(String::as_str));
                    c.cmd(&a);
                }
                5 => {
                    for j in 0..n {
                        let id = format!("{}-{}", 1_700_000_000_000u64 + j as u64 * 3, r.below(3));
                        let f = r.word();
                        let v = r.elem();
                        let _ = c.cmd(&["XADD", &key, &id, &f, &v, "n", &j.to_string()]);
                    }
                    if n > 4 {
                        c.cmd(&["XGROUP", "CREATE", &key, "ga", "0"]);
                        c.cmd(&[
                            "XREADGROUP",
                            "GROUP",
                            "ga",
                            "c1",
                            "COUNT",
                            "3",
                            "STREAMS",
                            &key,
                            ">",
                        ]);
                        c.cmd(&[
                            "XREADGROUP",
                            "GROUP",
                            "ga",
                            "c2",
                            "COUNT",
                            "2",
                            "STREAMS",
                            &key,
                            ">",
                        ]);
                        c.cmd(&["XGROUP", "CREATECONSUMER", &key, "ga", "idle"]);
                        c.cmd(&["XGROUP", "CREATE", &key, "gb", "$"]);
                    }
                    if n > 10 {
                        let first = format!("{}-{}", 1_700_000_000_000u64 + 27, 0);
                        c.cmd(&["XDEL", &key, &first]);
                    }
                }
                _ => {
                    c.cmd(&["SETEX", &key, "100000", "short-lived"]);
                }
            }
            if r.below(3) == 0 && i % 7 != 6 {
                let at = now_ms + r.below(1_000_000_000);
                c.cmd(&["PEXPIREAT", &key, &at.to_string()]);
            }
        }
    }
    // Big keys: decoded in chunks after read_raw says TooLarge.
    c.cmd(&["SELECT", "0"]);
    for chunk in 0..20 {
        let mut z = vec!["ZADD".to_string(), "big:zset".to_string()];
        let mut l = vec!["RPUSH".to_string(), "big:list".to_string()];
        for i in 0..500 {
            z.push(format!("{}", chunk * 500 + i));
            z.push(format!("m{}", chunk * 500 + i));
            l.push(format!("e{}", chunk * 500 + i));
        }
        c.cmd(&z.iter().map(String::as_str).collect::<Vec<_>>());
        c.cmd(&l.iter().map(String::as_str).collect::<Vec<_>>());
    }
    c.cmd(&["SET", "big:string", &"s".repeat(300_000)]);
    c.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=rtlib\nredis.register_function('rt_echo', function(keys, args) return args[1] end)",
    ]);
}

fn save(s: &RedisServer) -> std::path::PathBuf {
    assert_eq!(s.cmd(&["SAVE"]), Frame::SimpleString("OK".into()));
    s.dir().join("dump.rdb")
}

fn to_bytes(c: &Command) -> Vec<Bytes> {
    c.iter().map(|a| Bytes::from(a.clone())).collect()
}

fn text(f: &Frame) -> String {
    frame_to_string(f)
}

/// A type-aware, order-normalized description of a key's value.
fn describe(c: &mut Client, key: &[u8]) -> (String, String) {
    let ty = text(&c.cmd_bytes(&[b"TYPE", key]));
    let v = match ty.as_str() {
        "string" => format!("{:?}", c.cmd_bytes(&[b"GET", key])),
        "list" => format!("{:?}", c.cmd_bytes(&[b"LRANGE", key, b"0", b"-1"])),
        "set" => {
            let Frame::Array(mut a) = c.cmd_bytes(&[b"SMEMBERS", key]) else {
                panic!()
            };
            a.sort_by_key(|f| format!("{f:?}"));
            format!("{a:?}")
        }
        "zset" => format!(
            "{:?}",
            c.cmd_bytes(&[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])
        ),
        "hash" => {
            let Frame::Array(a) = c.cmd_bytes(&[b"HGETALL", key]) else {
                panic!()
            };
            let mut pairs: Vec<String> = a.chunks(2).map(|p| format!("{p:?}")).collect();
            pairs.sort();
            format!("{pairs:?}")
        }
        "stream" => {
            let mut out = format!("{:?}", c.cmd_bytes(&[b"XRANGE", key, b"-", b"+"]));
            let Frame::Array(info) = c.cmd_bytes(&[b"XINFO", b"STREAM", key]) else {
                panic!()
            };
            for p in info.chunks(2) {
                let name = text(&p[0]);
                if [
                    "length",
                    "last-generated-id",
                    "max-deleted-entry-id",
                    "entries-added",
                    "groups",
                ]
                .contains(&name.as_str())
                {
                    out += &format!(" {name}={:?}", p[1]);
                }
            }
            let Frame::Array(groups) = c.cmd_bytes(&[b"XINFO", b"GROUPS", key]) else {
                panic!()
            };
            for g in groups {
                let Frame::Array(g) = g else { panic!() };
                let mut name = vec![];
                for p in g.chunks(2) {
                    let k = text(&p[0]);
                    if k == "name"
                        && let Frame::BulkString(n) = &p[1]
                    {
                        name = n.clone();
                    }
                    if [
                        "name",
                        "consumers",
                        "pending",
                        "last-delivered-id",
                        "entries-read",
                    ]
                    .contains(&k.as_str())
                    {
                        out += &format!(" g.{k}={:?}", p[1]);
                    }
                }
                let Frame::Array(cons) = c.cmd_bytes(&[b"XINFO", b"CONSUMERS", key, &name]) else {
                    panic!()
                };
                for cn in cons {
                    let Frame::Array(cn) = cn else { panic!() };
                    for p in cn.chunks(2) {
                        if ["name", "pending"].contains(&text(&p[0]).as_str()) {
                            out += &format!(" c.{}={:?}", text(&p[0]), p[1]);
                        }
                    }
                }
                let Frame::Array(pend) =
                    c.cmd_bytes(&[b"XPENDING", key, &name, b"-", b"+", b"100000"])
                else {
                    panic!()
                };
                for pe in pend {
                    let Frame::Array(pe) = pe else { panic!() };
                    // id, consumer, idle (skipped: it moves), delivery count
                    out += &format!(" p={:?}/{:?}/{:?}", pe[0], pe[1], pe[3]);
                }
            }
            out
        }
        other => format!("<{other}>"),
    };
    (ty, v)
}

fn keys_of(c: &mut Client) -> Vec<Vec<u8>> {
    let Frame::Array(a) = c.cmd(&["KEYS", "*"]) else {
        panic!()
    };
    let mut v: Vec<Vec<u8>> = a
        .into_iter()
        .map(|f| match f {
            Frame::BulkString(b) => b,
            _ => panic!(),
        })
        .collect();
    v.sort();
    v
}

fn compare(a: &RedisServer, b: &RedisServer) -> usize {
    let (mut ca, mut cb) = (a.client(), b.client());
    let mut n = 0;
    for db in 0..16 {
        ca.cmd(&["SELECT", &db.to_string()]);
        cb.cmd(&["SELECT", &db.to_string()]);
        let ka = keys_of(&mut ca);
        assert_eq!(ka, keys_of(&mut cb), "db {db}: key sets differ");
        for k in &ka {
            let name = String::from_utf8_lossy(k);
            assert_eq!(
                describe(&mut ca, k),
                describe(&mut cb, k),
                "db {db} key {name}"
            );
            let ta = ca.cmd_int(&["PTTL", &name]);
            let tb = cb.cmd_int(&["PTTL", &name]);
            assert!(
                (ta < 0) == (tb < 0) && (ta - tb).abs() <= 1000,
                "db {db} key {name}: PTTL {ta} vs {tb}"
            );
            n += 1;
        }
    }
    assert_eq!(
        frame_to_string(&ca.cmd(&["FUNCTION", "DUMP"])),
        frame_to_string(&cb.cmd(&["FUNCTION", "DUMP"])),
        "function libraries differ"
    );
    n
}

#[test]
fn replay_commands_and_restore_raw() {
    let src = start();
    populate(&src, 0x9e3779b97f4a7c15);
    let path = save(&src);

    // (1) Commands, with a small raw limit so big keys take the TooLarge → chunks path,
    // and small keys are decoded from their raw bytes.
    let replay = start();
    let mut rc = replay.client();
    let opts = ParseOptions {
        chunk: ChunkLimits {
            max_elements: 100,
            max_bytes: 16 * 1024,
        },
        ..Default::default()
    };
    let mut p = RdbParser::with_options(BufReader::new(File::open(&path).unwrap()), opts).unwrap();
    let version = p.version();
    let (mut raw_keys, mut chunked_keys, mut db) = (0, 0, u64::MAX);
    while let Some(ev) = p.next_event().unwrap() {
        match ev {
            Event::Function { code } => rc.pipeline(&[to_bytes(&function_command(&code))]),
            Event::Key(k) => {
                if k.db != db {
                    db = k.db;
                    rc.cmd(&["SELECT", &db.to_string()]);
                }
                let mut kc = KeyCommands::new(&k, CommandOptions::default());
                let mut cmds = vec![];
                match p.read_raw(2048).unwrap() {
                    RawValue::Complete(raw) => {
                        raw_keys += 1;
                        let mut vp = RdbParser::for_value(&raw[..], version, opts).unwrap();
                        while let Some(b) = kc.next_batch(&mut vp).unwrap() {
                            cmds.extend(b);
                        }
                        vp.expect_end().unwrap();
                    }
                    RawValue::TooLarge => {
                        chunked_keys += 1;
                        while let Some(b) = kc.next_batch(&mut p).unwrap() {
                            assert!(b.len() <= 200, "chunk too big: {} commands", b.len());
                            cmds.extend(b);
                        }
                    }
                }
                rc.pipeline(&cmds.iter().map(to_bytes).collect::<Vec<_>>());
            }
            _ => {}
        }
    }
    assert!(
        chunked_keys >= 3,
        "big keys went through chunks ({chunked_keys})"
    );
    assert!(raw_keys > 100);
    let n = compare(&src, &replay);
    assert!(n > 100, "compared {n} keys");

    // (2) RESTORE of raw values into a fresh server of the same version.
    let restored = start();
    let mut c = restored.client();
    let mut p = RdbParser::new(BufReader::new(File::open(&path).unwrap())).unwrap();
    let (mut identical, mut by_value) = (0, 0);
    let mut db = u64::MAX;
    let mut payloads = BTreeMap::new();
    while let Some(ev) = p.next_event().unwrap() {
        match ev {
            Event::Function { code } => c.pipeline(&[to_bytes(&function_command(&code))]),
            Event::Key(k) => {
                if k.db != db {
                    db = k.db;
                    c.cmd(&["SELECT", &db.to_string()]);
                }
                let RawValue::Complete(raw) = p.read_raw(64 << 20).unwrap() else {
                    panic!()
                };
                let payload = dump_payload(&raw, version as u16);
                let ttl = k.expire_at_ms.unwrap_or(0).to_string();
                let r = c.cmd_bytes(&[
                    b"RESTORE",
                    &k.key,
                    ttl.as_bytes(),
                    &payload,
                    b"ABSTTL",
                    b"REPLACE",
                ]);
                assert_eq!(
                    r,
                    Frame::SimpleString("OK".into()),
                    "RESTORE {:?}",
                    String::from_utf8_lossy(&k.key)
                );
                payloads.insert((k.db, k.key.clone()), (k.rdb_type, payload));
            }
            _ => {}
        }
    }
    for ((db, key), (rt, payload)) in &payloads {
        c.cmd(&["SELECT", &db.to_string()]);
        let Frame::BulkString(dump) = c.cmd_bytes(&[b"DUMP", key]) else {
            panic!()
        };
        if dump == *payload {
            identical += 1;
        } else {
            // Hashtable-encoded sets and hashes re-serialize in the new dict's order.
            assert!(
                matches!(rt, 2 | 4),
                "DUMP of {:?} (type {rt}) differs",
                String::from_utf8_lossy(key)
            );
            by_value += 1;
        }
    }
    assert!(
        identical >= 80,
        "{identical} identical, {by_value} by value"
    );
    compare(&src, &restored);
}

#[test]
fn inspect_resp_recreates_dataset() {
    let src = start();
    populate(&src, 42);
    let path = save(&src);
    let mut out = Vec::new();
    inspect(&path, InspectFormat::Resp, &mut out).unwrap();
    let dst = start();
    // Feed the RESP stream as-is (what redis-cli --pipe does) and read every reply.
    let mut cmds = 0;
    let mut i = 0;
    while i < out.len() {
        assert_eq!(out[i], b'*');
        cmds += 1;
        let nl = out[i..].windows(2).position(|w| w == b"\r\n").unwrap();
        let argc: usize = std::str::from_utf8(&out[i + 1..i + nl])
            .unwrap()
            .parse()
            .unwrap();
        i += nl + 2;
        for _ in 0..argc {
            let nl = out[i..].windows(2).position(|w| w == b"\r\n").unwrap();
            let len: usize = std::str::from_utf8(&out[i + 1..i + nl])
                .unwrap()
                .parse()
                .unwrap();
            i += nl + 2 + len + 2;
        }
    }
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", dst.port)).unwrap();
    std::io::Write::write_all(&mut raw, &out).unwrap();
    std::io::Write::write_all(&mut raw, b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut cl = Client::connect(dst.port).unwrap();
    wait_until("replay done", std::time::Duration::from_secs(30), || {
        cl.cmd_int(&["DBSIZE"]) > 0
    });
    // Drain the replies on the raw connection: an error reply fails the test.
    let mut reader = std::io::BufReader::new(raw.try_clone().unwrap());
    let mut errors = 0;
    let mut line = String::new();
    let mut seen = 0;
    while seen < cmds + 1 {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        match line.as_bytes().first() {
            Some(b'-') => {
                errors += 1;
                seen += 1;
                eprintln!("error reply: {line}");
            }
            Some(b'+') | Some(b':') => seen += 1,
            Some(b'$') => {
                let n: i64 = line[1..].trim().parse().unwrap();
                if n >= 0 {
                    let mut b = vec![0; n as usize + 2];
                    std::io::Read::read_exact(&mut reader, &mut b).unwrap();
                }
                seen += 1;
            }
            Some(b'*') => {
                // XCLAIM JUSTID arrays: count the elements as part of this reply.
                let n: i64 = line[1..].trim().parse().unwrap();
                for _ in 0..n.max(0) {
                    line.clear();
                    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                    if let Some(len) = line.strip_prefix('$') {
                        let k: i64 = len.trim().parse().unwrap();
                        let mut b = vec![0; k.max(0) as usize + 2];
                        std::io::Read::read_exact(&mut reader, &mut b).unwrap();
                    }
                }
                seen += 1;
            }
            _ => panic!("unexpected reply line {line:?}"),
        }
    }
    assert_eq!(errors, 0);
    compare(&src, &dst);
}
