//! `tandem redis verify` against real servers: planted differences of every kind found
//! exactly (standalone and cluster pairs), none on a converged live pair under load,
//! and a clear error (exit 2, no password) when an endpoint refuses.

mod support;
mod support_cluster;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::data::fill_all_types;
use support::proc::{Tandem, wait_caught_up};
use support::*;
use support_cluster::*;

/// A verify run: exit code, stdout, and the differences written to `--out` as
/// (kind, db, key).
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    diffs: Vec<(String, u64, String)>,
    lines: Vec<serde_json::Value>,
}

fn verify(source: &str, target: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("diffs.jsonl");
    let o = Command::new(tandem_bin())
        .args(["redis", "verify", "--source", source, "--target", target])
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .expect("run tandem verify");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let diffs = lines
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["db"].as_u64().unwrap(),
                v["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        diffs,
        lines,
    }
}

fn assert_none(run: &Run) {
    let got = (run.code, run.diffs.len());
    assert_eq!(got, (0, 0), "{}{}", run.stdout, run.stderr);
}

/// A verify run that must find nothing.
fn identical(source: &str, target: &str) -> Run {
    let run = verify(source, target, &[]);
    assert_none(&run);
    run
}

fn expect(list: &[(&str, u64, &str)]) -> Vec<(String, u64, String)> {
    list.iter()
        .map(|(k, db, key)| (k.to_string(), *db, key.to_string()))
        .collect()
}

#[test]
fn finds_each_planted_difference_on_a_standalone_pair() {
    let (src, dst) = (RedisServer::start(), RedisServer::start());
    for s in [&src, &dst] {
        fill_all_types(&mut s.client(), 0, "a:", 7);
        fill_all_types(&mut s.client(), 3, "b:", 8);
    }
    let same = identical(&src.url(), &dst.url());
    assert!(same.stdout.ends_with("identical\n"), "{}", same.stdout);

    let mut c = dst.client();
    for cmd in [
        &["DEL", "a:str"][..],
        &["SET", "a:extra", "1"],
        &["HSET", "a:bighash", "field5", "changed"],
        &["DEL", "a:set"],
        &["SET", "a:set", "now a string"],
        &["EXPIRE", "a:int", "500"],
        &[
            "XREADGROUP",
            "GROUP",
            "g1",
            "bob",
            "COUNT",
            "1",
            "STREAMS",
            "a:stream",
            ">",
        ],
        &["RPUSH", "a:biglist", "one more"],
        &["ZADD", "a:bigzset", "0.5000000000000001", "z3"],
        &["SET", "__tandem:ckpt:x", "ignored"],
        &["SELECT", "3"],
        &["DEL", "b:list"],
    ] {
        assert!(!matches!(c.cmd(cmd), Frame::Error(_)), "{cmd:?}");
    }
    let all = expect(&[
        ("value", 0, "a:bighash"),
        ("length", 0, "a:biglist"),
        ("value", 0, "a:bigzset"),
        ("extra", 0, "a:extra"),
        ("ttl", 0, "a:int"),
        ("type", 0, "a:set"),
        ("missing", 0, "a:str"),
        ("group", 0, "a:stream"),
        ("missing", 3, "b:list"),
    ]);
    let run = verify(
        &src.url(),
        &dst.url(),
        &["--rounds", "2", "--round-delay-ms", "50"],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.diffs, all, "{}", run.stdout);
    assert!(run.stdout.ends_with("9 differences\n"), "{}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 10, "{}", run.stdout);
    let detail = |key: &str| {
        let l = run.lines.iter().find(|l| l["key"] == key).unwrap();
        l["detail"].as_str().unwrap().to_string()
    };
    assert_eq!(
        detail("a:bighash"),
        r#"field "field5" : source "value84108", target "changed""#
    );
    assert_eq!(detail("a:set"), "source set, target string");
    assert_eq!(
        detail("a:stream"),
        r#"group "g1": consumers: source 1, target 2"#
    );
    assert_eq!(
        detail("a:bigzset"),
        r#"member "z3": score source "0.42857142857142855", target "0.50000000000000011""#
    );

    // Filters and modes narrow the same comparison.
    let some = verify(
        &src.url(),
        &dst.url(),
        &["--include-prefix", "a:s", "--exclude-prefix", "a:se"],
    );
    assert_eq!(
        some.diffs,
        expect(&[("missing", 0, "a:str"), ("group", 0, "a:stream")])
    );
    let keys = verify(&src.url(), &dst.url(), &["--mode", "keys"]);
    let kinds = expect(&[
        ("extra", 0, "a:extra"),
        ("type", 0, "a:set"),
        ("missing", 0, "a:str"),
        ("missing", 3, "b:list"),
    ]);
    assert_eq!(keys.diffs, kinds);
    // db 3 compared as db 5 of the target: every key of b: is then missing there.
    let mapped = verify(
        &src.url(),
        &dst.url(),
        &[
            "--mode",
            "keys",
            "--db-map",
            "3:5",
            "--include-prefix",
            "b:l",
        ],
    );
    assert_eq!(
        mapped.diffs,
        expect(&[("missing", 3, "b:list"), ("missing", 3, "b:long")])
    );
}

#[test]
fn finds_planted_differences_between_clusters() {
    let (src, dst) = (start_cluster(2, 0), start_cluster(2, 0));
    let (mut sc, mut dc) = (ClusterClient::new(&src), ClusterClient::new(&dst));
    // Keys on both masters of each cluster.
    for i in 0..200 {
        let k = format!("k{i}");
        for c in [&mut sc, &mut dc] {
            c.cmd(&["SET", &k, &format!("v{i}")], 1);
            c.cmd(&["HSET", &format!("h{i}"), "f", "1"], 1);
        }
    }
    for c in [&mut sc, &mut dc] {
        c.cmd(&["XADD", "s", "1-1", "f", "v"], 1);
        c.cmd(&["XGROUP", "CREATE", "s", "g", "0"], 2);
    }
    let same = identical(&src.url(), &dst.url());
    assert!(same.stdout.contains("401 keys compared"), "{}", same.stdout);
    dc.cmd(&["DEL", "k1"], 1);
    dc.cmd(&["SET", "k2", "v9"], 1);
    dc.cmd(&["SET", "extra", "x"], 1);
    dc.cmd(&["PEXPIRE", "h3", "900000"], 1);
    dc.cmd(&["SET", "h4", "not a hash"], 1);
    dc.cmd(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"], 6);
    let run = verify(&src.url(), &dst.url(), &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let mut masters: Vec<i64> = ["k1", "k2", "h3", "h4"]
        .iter()
        .map(|k| src.masters[0].client().cmd_int(&["CLUSTER", "KEYSLOT", k]) / 8192)
        .collect();
    masters.dedup();
    assert!(masters.len() > 1, "the planted keys span both masters");
    assert_eq!(
        run.diffs,
        expect(&[
            ("extra", 0, "extra"),
            ("ttl", 0, "h3"),
            ("type", 0, "h4"),
            ("missing", 0, "k1"),
            ("value", 0, "k2"),
            ("group", 0, "s"),
        ])
    );
}

#[test]
fn a_converged_live_pair_under_load_has_no_differences() {
    let src = RedisServer::start_with(ServerOpts::default().arg("repl-diskless-sync-delay", "0"));
    let dst = RedisServer::start();
    fill_all_types(&mut src.client(), 0, "a:", 3);
    let mut tandem = Tandem::sync(&src, &dst, &[]);
    wait_caught_up(&src, &dst, "default", Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, port) = (stop.clone(), src.port);
        std::thread::spawn(move || {
            let mut c = Client::connect(port).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.cmd(&["SET", &format!("load:{i}"), &i.to_string()]);
                c.cmd(&["HSET", &format!("loadh:{}", i % 50), "n", &i.to_string()]);
                c.cmd(&["RPUSH", &format!("loadl:{}", i % 20), &i.to_string()]);
                i += 1;
            }
            i
        })
    };
    wait_until("load written", Duration::from_secs(10), || {
        src.client().cmd_int(&["DBSIZE"]) > 2000
    });
    let run = verify(
        &src.url(),
        &dst.url(),
        &["--rounds", "10", "--round-delay-ms", "300"],
    );
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().unwrap();
    assert!(writes > 500, "only {writes} writes");
    assert_none(&run);
    wait_caught_up(&src, &dst, "default", Duration::from_secs(60));
    assert_none(&verify(&src.url(), &dst.url(), &["--rounds", "1"]));
    assert_eq!(tandem.interrupt(), Some(0));
}

#[test]
fn a_refusing_endpoint_is_one_error_line_and_exit_2() {
    let src = password_source("s3cret-verify");
    let dst = RedisServer::start();
    let url = format!("redis://:wrong-pass-99@127.0.0.1:{}", src.port);
    let run = verify(&url, &dst.url(), &[]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "tandem: error: redis://127.0.0.1:{}: authentication failed: WRONGPASS invalid username-password pair or user is disabled.",
            src.port
        )
    );
    assert!(!run.stdout.contains("wrong-pass-99") && !run.stderr.contains("wrong-pass-99"));
    let ok = format!("redis://:s3cret-verify@127.0.0.1:{}", src.port);
    let run = verify(&ok, &dst.url(), &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// Hash field TTLs where both servers have HPEXPIRETIME (Valkey 9); key TTLs through
/// PTTL and the server clock where PEXPIRETIME is missing (Redis 6.2).
#[test]
fn field_ttls_on_valkey_and_key_ttls_on_redis_6() {
    let valkey =
        || RedisServer::start_with(ServerOpts::default().binary_from_env("TANDEM_VALKEY_SERVER"));
    let (src, dst) = (valkey(), valkey());
    for s in [&src, &dst] {
        s.cmd(&["HSET", "h", "a", "1", "b", "2"]);
        s.cmd(&["HPEXPIRE", "h", "600000", "FIELDS", "1", "a"]);
    }
    assert_eq!(verify(&src.url(), &dst.url(), &[]).code, 0);
    dst.cmd(&["HPEXPIRE", "h", "900000", "FIELDS", "1", "a"]);
    let run = verify(&src.url(), &dst.url(), &["--rounds", "1"]);
    assert_eq!(
        run.diffs,
        expect(&[("ttl", 0, "h")]),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.lines[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("field \"a\": expiry differs by 3000"),
        "{}",
        run.stdout
    );

    let old =
        RedisServer::start_with(ServerOpts::default().binary_from_env("TANDEM_REDIS62_SERVER"));
    let new = RedisServer::start();
    for s in [&old, &new] {
        s.cmd(&["SET", "t", "v", "PX", "600000"]);
    }
    assert_eq!(verify(&old.url(), &new.url(), &[]).code, 0);
    new.cmd(&["PEXPIRE", "t", "605000"]);
    let run = verify(&old.url(), &new.url(), &["--rounds", "1"]);
    assert_eq!(
        run.diffs,
        expect(&[("ttl", 0, "t")]),
        "{}{}",
        run.stdout,
        run.stderr
    );
}
