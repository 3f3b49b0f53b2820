//! The Tair modules themselves (TairHash, TairString, TairZset; `TANDEM_TAIR_MODULES`,
//! exported by scripts/servers.sh from ../shared/tair-modules): full sync by RESTORE and
//! by rewrite compared with the source and with each other (versions, field expiries,
//! flags, score bits), live module writes, and a target without the modules.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::proc::{Tandem, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(60);
const MODULES: [&str; 3] = [
    "tairhash_module.so",
    "tairstring_module.so",
    "tairzset_module.so",
];

fn opts(v: &str, modules: bool) -> ServerOpts {
    let mut o = ServerOpts::default().arg("repl-diskless-sync-delay", "0");
    if v == "8.2" {
        o = o.binary_from_env("TANDEM_REDIS82_SERVER");
    }
    if modules {
        let dir = std::env::var("TANDEM_TAIR_MODULES").unwrap_or_else(|_| {
            panic!("TANDEM_TAIR_MODULES is not set: run the tests with ./scripts/test.sh (the modules are in ../shared/tair-modules)")
        });
        for m in MODULES {
            o = o.arg("loadmodule", &format!("{dir}/{m}"));
        }
    }
    o
}

fn start_all(specs: &[(&'static str, bool)]) -> Vec<RedisServer> {
    std::thread::scope(|s| {
        let hs: Vec<_> = specs
            .iter()
            .map(|&(v, m)| s.spawn(move || RedisServer::start_with(opts(v, m))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn ok(c: &mut Client, args: &[&str]) {
    let r = c.cmd(args);
    assert!(!matches!(r, Frame::Error(_)), "{args:?}: {r:?}");
}

/// Keys of all three types, with versions, flags, field and key expiries, odd scores; a
/// TairHash renamed (its value still embeds the old name); a db other than 0.
fn fill_tair(c: &mut Client, far_ms: u64) {
    let far = far_ms.to_string();
    c.cmd(&["SELECT", "0"]);
    ok(c, &["EXHSET", "th:1", "f1", "v1", "ABS", "5"]);
    ok(c, &["EXHSET", "th:1", "f2", "v2", "PXAT", &far]);
    ok(c, &["EXHSET", "th:1", "f3", "v3", "PXAT", &far, "ABS", "9"]);
    for i in 0..200 {
        ok(
            c,
            &["EXHSET", "th:big", &format!("f{i}"), &format!("{}", i * 7)],
        );
    }
    ok(c, &["EXHSET", "th:old", "a", "1", "ABS", "3"]);
    ok(c, &["RENAME", "th:old", "th:new"]);
    ok(c, &["EXSET", "ts:1", "val", "ABS", "7", "FLAGS", "3"]);
    ok(c, &["EXSET", "ts:int", "12345"]);
    ok(c, &["EXSET", "ts:ttl", "soon", "PX", "600000"]);
    ok(
        c,
        &[
            "EXZADD",
            "tz:1",
            "1.5#2#3",
            "a",
            "0.1#-0#1e300",
            "b",
            "-inf#inf#5e-324",
            "c",
        ],
    );
    ok(
        c,
        &["EXZADD", "tz:1d", "0.30000000000000004", "x", "1e-7", "y"],
    );
    c.cmd(&["SELECT", "2"]);
    ok(c, &["EXHSET", "th:db2", "f", "v", "ABS", "2"]);
    ok(c, &["EXSET", "ts:db2", "v2", "ABS", "4"]);
    c.cmd(&["SELECT", "0"]);
}

/// Live module writes as applications issue them.
fn live_tair(c: &mut Client, far_ms: u64) {
    let far = (far_ms + 1000).to_string();
    ok(c, &["EXHSET", "th:1", "f1", "w1"]);
    ok(c, &["EXHINCRBY", "th:1", "n", "4"]);
    ok(c, &["EXHDEL", "th:big", "f0", "f1"]);
    ok(c, &["EXHPEXPIREAT", "th:big", "f2", &far]);
    ok(c, &["EXHSET", "th:live", "a", "1", "ABS", "11"]);
    ok(c, &["EXSET", "ts:1", "new", "VER", "7"]);
    ok(c, &["EXINCRBY", "ts:int", "5"]);
    ok(c, &["EXCAS", "ts:int", "x", "2"]);
    ok(c, &["EXSET", "ts:live", "l", "ABS", "21", "FLAGS", "8"]);
    ok(c, &["EXZADD", "tz:1", "9#9#9", "d"]);
    ok(c, &["EXZINCRBY", "tz:1", "1#0#0", "a"]);
    ok(c, &["EXZREM", "tz:1", "b"]);
    ok(c, &["EXZADD", "tz:live", "2.5", "m"]);
    // Propagated without its timeout (the module's bug): applied as the pop it was.
    ok(c, &["EXZADD", "{z}a", "1", "m1", "2", "m2"]);
    ok(c, &["EXZADD", "{z}b", "3", "m3"]);
    ok(c, &["EXBZPOPMIN", "{z}a", "1"]);
    ok(c, &["EXZUNIONSTORE", "{z}u", "2", "{z}a", "{z}b"]);
}

fn text(f: Frame) -> String {
    match f {
        Frame::BulkString(b) | Frame::SimpleString(b) => String::from_utf8_lossy(&b).into(),
        Frame::Integer(i) => i.to_string(),
        Frame::Null => "(nil)".into(),
        Frame::Array(v) => v.into_iter().map(text).collect::<Vec<_>>().join(","),
        Frame::Error(e) => panic!("server error: {e}"),
    }
}

/// A TTL in ms, as the absolute instant it ends (so two reads a moment apart agree
/// within the clock's step), or -1.
fn deadline(c: &mut Client, pttl: i64) -> i64 {
    if pttl < 0 {
        return pttl;
    }
    c.server_time_ms() as i64 + pttl
}

/// Every key of `db` read with the modules' own commands: (key → lines, deadlines).
fn read_tair(s: &RedisServer, db: u32) -> BTreeMap<String, (Vec<String>, Vec<i64>)> {
    let mut c = s.client();
    let mut out = BTreeMap::new();
    for k in support::data::keys(&mut c, db) {
        let key = String::from_utf8(k).unwrap();
        let kind = text(c.cmd(&["TYPE", &key]));
        let mut lines = vec![kind.clone()];
        let pttl = c.cmd_int(&["PTTL", &key]);
        let mut times = vec![deadline(&mut c, pttl)];
        match kind.as_str() {
            "tairhash-" => {
                let Frame::Array(fields) = c.cmd(&["EXHKEYS", &key]) else {
                    panic!("EXHKEYS {key}")
                };
                let mut fields: Vec<String> = fields.into_iter().map(text).collect();
                fields.sort();
                for f in fields {
                    let vv = text(c.cmd(&["EXHGETWITHVER", &key, &f]));
                    lines.push(format!("{f}={vv}"));
                    let t = c.cmd_int(&["EXHPTTL", &key, &f]);
                    times.push(deadline(&mut c, t));
                }
            }
            "exstrtype" => lines.push(text(c.cmd(&["EXGET", &key, "WITHFLAGS"]))),
            // Printed with 17 digits: equal text is equal bits.
            "tairzset_" => lines.push(text(c.cmd(&["EXZRANGE", &key, "0", "-1", "WITHSCORES"]))),
            other => panic!("{key}: unexpected type {other}"),
        }
        out.insert(key, (lines, times));
    }
    out
}

fn assert_same_tair(a: &RedisServer, b: &RedisServer, what: &str) {
    for db in [0, 2] {
        let (x, y) = (read_tair(a, db), read_tair(b, db));
        assert_eq!(
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>(),
            "{what} db {db}"
        );
        for (k, (lx, tx)) in &x {
            let (ly, ty) = &y[k];
            assert_eq!(lx, ly, "{what} db {db} key {k}");
            assert_eq!(tx.len(), ty.len(), "{what} {k}");
            for (p, q) in tx.iter().zip(ty) {
                assert!(
                    (p < &0 && p == q) || (*p >= 0 && *q >= 0 && (p - q).abs() <= 1500),
                    "{what} db {db} key {k}: expiry {p} vs {q}"
                );
            }
        }
    }
}

fn restored_and_rewritten(log: &str) -> (u64, u64) {
    let field = |name: &str| {
        log.split(&format!("{name}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {log}"))
    };
    (field("restored"), field("rewritten"))
}

/// Same version on both sides: RESTORE passes the values through; `--rewrite-only`
/// writes them with EXHSET/EXSET/EXZADD. Both must hold exactly what the source holds,
/// the renamed TairHash under its new name, and so after live module writes.
#[test]
fn full_sync_by_restore_and_by_rewrite_agree_with_the_source() {
    let s = start_all(&[("7.0", true), ("7.0", true), ("7.0", true)]);
    let (src, by_restore, by_rewrite) = (&s[0], &s[1], &s[2]);
    let mut c = src.client();
    let far = c.server_time_ms() + 86_400_000;
    fill_tair(&mut c, far);
    let t1 = Tandem::sync(src, by_restore, &[]);
    let t2 = Tandem::sync(src, by_rewrite, &["--rewrite-only"]);
    wait_caught_up(src, by_restore, "default", CATCH_UP);
    wait_caught_up(src, by_rewrite, "default", CATCH_UP);
    assert_eq!(restored_and_rewritten(&t1.log_text()), (10, 0));
    assert_eq!(restored_and_rewritten(&t2.log_text()), (0, 10));
    assert_same_tair(src, by_restore, "source vs RESTORE");
    assert_same_tair(src, by_rewrite, "source vs rewrite");
    assert_same_tair(by_restore, by_rewrite, "RESTORE vs rewrite");
    live_tair(&mut c, far);
    wait_caught_up(src, by_restore, "default", CATCH_UP);
    wait_caught_up(src, by_rewrite, "default", CATCH_UP);
    assert_same_tair(src, by_restore, "live, RESTORE side");
    assert_same_tair(src, by_rewrite, "live, rewrite side");
    for t in [&t1, &t2] {
        assert!(!t.log_text().contains("ERROR"), "{}", t.log_text());
    }
}

/// Redis 8.2 writes RDB 12, which Redis 7.0 cannot RESTORE: the module values are
/// rewritten from the RDB, exactly.
#[test]
fn a_newer_source_is_rewritten_into_an_older_target_with_the_modules() {
    let s = start_all(&[("8.2", true), ("7.0", true)]);
    let (src, dst) = (&s[0], &s[1]);
    let mut c = src.client();
    let far = c.server_time_ms() + 86_400_000;
    fill_tair(&mut c, far);
    let t = Tandem::sync(src, dst, &[]);
    wait_caught_up(src, dst, "default", CATCH_UP);
    assert_eq!(restored_and_rewritten(&t.log_text()), (0, 10));
    assert_same_tair(src, dst, "8.2 into 7.0");
    live_tair(&mut c, far);
    wait_caught_up(src, dst, "default", CATCH_UP);
    assert_same_tair(src, dst, "8.2 into 7.0, live");
}

/// A target without the modules could hold none of these values: the precheck says so
/// up front, naming the modules.
#[test]
fn a_target_without_the_modules_fails_the_precheck_naming_them() {
    let s = start_all(&[("7.0", true), ("7.0", false)]);
    let (src, dst) = (&s[0], &s[1]);
    let mut c = src.client();
    let far = c.server_time_ms() + 86_400_000;
    fill_tair(&mut c, far);
    let mut t = Tandem::sync(src, dst, &[]);
    let (err, log) = t.one_error_line(Duration::from_secs(20));
    assert!(err.contains("precheck failed"), "{err}");
    for m in ["exstrtype", "tairhash", "tairzset"] {
        assert!(log.contains(m), "{m}: {log}");
    }
}

/// Module writes to the same keys on both sides at once: two-way converges on one value
/// per key (the conflict winner's, copied whole), versions and scores included.
#[test]
fn twoway_tair_with_contested_module_keys_converges() {
    let s = start_all(&[("7.0", true), ("7.0", true)]);
    let (a, b) = (&s[0], &s[1]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().to_string_lossy().into_owned();
    let t = Tandem::start(&[
        "redis",
        "twoway",
        "--a",
        &a.url(),
        "--b",
        &b.url(),
        "--conflict-log",
        &log_path,
    ]);
    wait_until("both links attached", Duration::from_secs(30), || {
        support::proc::checkpoint(b, "default:a2b").is_some_and(|(s, _)| s == "incr")
            && support::proc::checkpoint(a, "default:b2a").is_some_and(|(s, _)| s == "incr")
    });
    let writers: Vec<_> = [(a.port, 1u64), (b.port, 2u64)]
        .into_iter()
        .map(|(port, seed)| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port).unwrap();
                let mut r = support::data::Lcg(seed);
                for i in 0..600 {
                    let k = r.below(8);
                    let v = format!("{seed}-{i}");
                    let args: Vec<String> = match i % 3 {
                        0 => vec![
                            "EXHSET".into(),
                            format!("th:{k}"),
                            format!("f{}", r.below(3)),
                            v,
                        ],
                        1 => vec![
                            "EXSET".into(),
                            format!("ts:{k}"),
                            v,
                            "FLAGS".into(),
                            seed.to_string(),
                        ],
                        _ => vec![
                            "EXZADD".into(),
                            format!("tz:{k}"),
                            format!("{}#{seed}", r.below(100)),
                            v,
                        ],
                    };
                    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
                    ok(&mut c, &args);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut last = String::new();
    let converged = (0..500).any(|_| {
        let (x, y) = (read_tair(a, 0), read_tair(b, 0));
        let same = x.len() == y.len()
            && x.iter()
                .zip(&y)
                .all(|((ka, (la, _)), (kb, (lb, _)))| ka == kb && la == lb);
        if !same {
            last = format!("{} keys vs {}", x.len(), y.len());
            std::thread::sleep(Duration::from_millis(10));
        }
        same
    });
    assert!(
        converged,
        "sides differ after the writers stopped ({last})\n{}",
        t.log_text()
    );
    assert_same_tair(a, b, "two-way");
    let conflicts = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        conflicts.lines().count() > 0,
        "the workload contested no key"
    );
}

/// Into a 3-master cluster with the modules: module keys land on the master owning
/// their slot (full sync and live writes), and read back exactly.
#[test]
fn module_keys_into_a_cluster_target() {
    let src = RedisServer::start_with(opts("7.0", true));
    let cluster = Cluster::start_with(3, 0, opts("7.0", true));
    let mut c = src.client();
    let far = c.server_time_ms() + 86_400_000;
    // db 0 only: a cluster has no other.
    ok(&mut c, &["EXHSET", "th:1", "f1", "v1", "ABS", "5"]);
    ok(
        &mut c,
        &["EXHSET", "th:1", "f2", "v2", "PXAT", &far.to_string()],
    );
    ok(&mut c, &["EXSET", "ts:1", "val", "ABS", "7", "FLAGS", "3"]);
    ok(
        &mut c,
        &["EXZADD", "tz:1", "1.5#2#3", "a", "0.1#-0#1e300", "b"],
    );
    let t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &src.url(),
        "--target",
        &cluster.url(),
    ]);
    let want =
        |key: &str| -> bool { cluster.master_for(key).client().cmd_int(&["EXISTS", key]) == 1 };
    wait_until("full sync landed", CATCH_UP, || {
        ["th:1", "ts:1", "tz:1"].iter().all(|k| want(k))
    });
    live_tair(&mut c, far);
    wait_until("live writes landed", CATCH_UP, || {
        ["th:live", "ts:live", "tz:live"].iter().all(|k| want(k))
    });
    let read = |s: &RedisServer, key: &str| {
        let mut c = s.client();
        let kind = text(c.cmd(&["TYPE", key]));
        match kind.as_str() {
            "tairhash-" => {
                let mut f: Vec<String> = match c.cmd(&["EXHKEYS", key]) {
                    Frame::Array(v) => v.into_iter().map(text).collect(),
                    other => panic!("{other:?}"),
                };
                f.sort();
                f.iter()
                    .map(|f| format!("{f}={}", text(c.cmd(&["EXHGETWITHVER", key, f]))))
                    .collect::<Vec<_>>()
                    .join(";")
            }
            "exstrtype" => text(c.cmd(&["EXGET", key, "WITHFLAGS"])),
            _ => text(c.cmd(&["EXZRANGE", key, "0", "-1", "WITHSCORES"])),
        }
    };
    for key in [
        "th:1", "ts:1", "tz:1", "th:big", "ts:int", "th:live", "ts:live", "tz:live",
    ] {
        let dst = cluster.master_for(key);
        // Live writes to keys the full sync did not carry (th:big, ts:int) are absent on
        // both sides or equal.
        wait_until(&format!("{key} equal"), Duration::from_secs(10), || {
            read(&src, key) == read(dst, key)
        });
    }
    assert!(!t.log_text().contains("ERROR"), "{}", t.log_text());
}
