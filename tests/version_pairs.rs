//! Every source × target pair of Redis 6.2, Redis 7.0, Redis 8.2 and Valkey 9.1: full
//! sync of every type, then live writes each source propagates in its own way (Redis 8
//! sends `HINCRBYFLOAT` as `HSETEX`, Redis 7+ `EXPIRE … NX` as `PEXPIREAT … NX` and a
//! group read as `XGROUP SETID … ENTRIESREAD`, Valkey `SET … IFEQ` as itself), every key
//! compared. And what has no equivalent on an older target: one clear error.

mod support;

use std::time::{Duration, Instant};

use support::data::{assert_same_db_across_versions, fill_all_types};
use support::proc::{Tandem, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    Redis62,
    Redis70,
    Redis82,
    Valkey91,
}

const ALL: [V; 4] = [V::Redis62, V::Redis70, V::Redis82, V::Valkey91];

fn start(v: V) -> RedisServer {
    let opts = ServerOpts::default().arg("repl-diskless-sync-delay", "0");
    RedisServer::start_with(match v {
        V::Redis62 => opts.binary_from_env("TANDEM_REDIS62_SERVER"),
        V::Redis70 => opts,
        V::Redis82 => opts.binary_from_env("TANDEM_REDIS82_SERVER"),
        V::Valkey91 => opts.binary_from_env("TANDEM_VALKEY_SERVER"),
    })
}

/// Starts the servers side by side: startup time is the slowest one's, not their sum.
fn start_all(vs: &[V]) -> Vec<RedisServer> {
    std::thread::scope(|s| {
        let handles: Vec<_> = vs.iter().map(|&v| s.spawn(move || start(v))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn ok(c: &mut Client, args: &[&str]) {
    let r = c.cmd(args);
    assert!(!matches!(r, Frame::Error(_)), "{args:?}: {r:?}");
}

/// Live writes, each as `v` propagates it (only what `v` itself accepts).
fn live_mix(c: &mut Client, v: V) {
    c.cmd(&["SELECT", "0"]);
    ok(c, &["HSET", "m:hash", "f", "1", "g", "x"]);
    ok(c, &["HINCRBYFLOAT", "m:hash", "f", "0.25"]);
    ok(c, &["HINCRBY", "m:hash", "n", "3"]);
    ok(c, &["INCRBYFLOAT", "m:float", "1.5"]);
    ok(c, &["SET", "m:str", "hello"]);
    ok(c, &["RPUSH", "m:list", "a", "b", "c"]);
    ok(c, &["LMOVE", "m:list", "m:list2", "LEFT", "RIGHT"]);
    ok(c, &["ZADD", "m:z", "1", "a", "2", "b"]);
    ok(c, &["ZPOPMIN", "m:z"]);
    ok(c, &["XADD", "m:s", "1-1", "f", "v"]);
    ok(c, &["XADD", "m:s", "2-1", "f", "w"]);
    ok(c, &["XGROUP", "CREATE", "m:s", "g", "0"]);
    ok(c, &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "m:s", ">"]);
    ok(c, &["XACK", "m:s", "g", "1-1"]);
    ok(c, &["SETEX", "m:ttl", "5000", "v"]);
    if v != V::Redis62 {
        ok(c, &["EXPIRE", "m:str", "4000", "NX"]);
        ok(c, &["LMPOP", "1", "m:list", "RIGHT"]);
    }
    if v == V::Redis82 {
        ok(c, &["XADD", "m:s", "KEEPREF", "3-1", "f", "x"]);
        ok(c, &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "m:s", ">"]);
        ok(c, &["XACKDEL", "m:s", "g", "KEEPREF", "IDS", "1", "3-1"]);
        ok(c, &["HGETDEL", "m:hash", "FIELDS", "1", "g"]);
    }
    if v == V::Valkey91 {
        ok(c, &["SET", "m:str", "world", "IFEQ", "hello"]);
    }
    c.cmd(&["SELECT", "4"]);
    ok(c, &["INCRBY", "k:int", "7"]);
}

/// Full sync of every type, then the live mix; every key of both dbs compared.
fn pair(sv: V, tv: V, src: &RedisServer, dst: &RedisServer) {
    let mut c = src.client();
    fill_all_types(&mut c, 0, "k:", 1);
    fill_all_types(&mut c, 4, "k:", 2);
    let t = Tandem::sync(src, dst, &[]);
    wait_caught_up(src, dst, "default", CATCH_UP);
    live_mix(&mut c, sv);
    wait_caught_up(src, dst, "default", CATCH_UP);
    for db in [0, 4] {
        let r = std::panic::catch_unwind(|| assert_same_db_across_versions(src, dst, db));
        if let Err(e) = r {
            eprintln!("{sv:?} -> {tv:?}:\n{}", t.log_text());
            std::panic::resume_unwind(e);
        }
    }
    let log = t.log_text();
    assert!(!log.contains("ERROR"), "{sv:?} -> {tv:?}: {log}");
}

/// `sv` into each other version, one after the other (the test binary runs the four
/// sources in parallel).
fn from(sv: V) {
    let targets: Vec<V> = ALL.into_iter().filter(|&t| t != sv).collect();
    let mut vs = vec![sv; targets.len()];
    vs.extend(&targets);
    let mut servers = start_all(&vs);
    let dsts = servers.split_off(targets.len());
    for ((src, dst), tv) in servers.iter().zip(&dsts).zip(&targets) {
        pair(sv, *tv, src, dst);
    }
}

#[test]
fn from_redis62_into_every_other_version() {
    from(V::Redis62)
}

#[test]
fn from_redis70_into_every_other_version() {
    from(V::Redis70)
}

#[test]
fn from_redis82_into_every_other_version() {
    from(V::Redis82)
}

#[test]
fn from_valkey91_into_every_other_version() {
    from(V::Valkey91)
}

/// A hash field TTL set live on Redis 8.2 cannot be held by Redis 7.0: the link stops at
/// once with one error naming the command, the key, the source offset and the target.
#[test]
fn a_field_ttl_into_redis70_stops_with_one_clear_error() {
    let s = start_all(&[V::Redis82, V::Redis70]);
    let (src, dst) = (&s[0], &s[1]);
    let mut t = Tandem::sync(src, dst, &[]);
    wait_caught_up(src, dst, "default", CATCH_UP);
    let mut c = src.client();
    ok(&mut c, &["HSET", "user:1", "a", "1", "b", "2"]);
    ok(&mut c, &["HEXPIRE", "user:1", "100", "FIELDS", "1", "a"]);
    let began = Instant::now();
    let (err, _) = t.one_error_line(Duration::from_secs(20));
    assert!(began.elapsed() < Duration::from_secs(10), "{err}");
    assert!(
        err.contains("HPEXPIREAT of key \"user:1\" at source offset ")
            && err.contains("the target (Redis 7.0.")
            && err.contains("has no hash field TTLs"),
        "{err}"
    );
    // The HSET before it landed; nothing after it did.
    assert_eq!(dst.client().cmd_text(&["HGET", "user:1", "b"]), "2");
}

/// Found up front: a source holding hashes with field TTLs fails the precheck.
#[test]
fn the_precheck_fails_on_source_field_ttls_for_a_target_without_them() {
    let s = start_all(&[V::Redis82, V::Redis62]);
    let (src, dst) = (&s[0], &s[1]);
    let mut c = src.client();
    ok(&mut c, &["HSET", "h", "a", "1"]);
    ok(&mut c, &["HEXPIRE", "h", "100", "FIELDS", "1", "a"]);
    let mut t = Tandem::sync(src, dst, &[]);
    let (err, log) = t.one_error_line(Duration::from_secs(20));
    assert!(err.contains("precheck failed"), "{err}");
    assert!(
        log.contains(
            "the source has 1 hashes with field TTLs; Redis 6.2.14 has no hash field TTLs"
        ),
        "{log}"
    );
}

/// A batch the target refuses (here: a user that may not run SETRANGE) surfaces at
/// once naming the command, never after the 30 s reply timeout.
#[test]
fn a_refused_batch_surfaces_at_once_with_its_command() {
    let s = start_all(&[V::Redis70, V::Redis70]);
    let (src, dst) = (&s[0], &s[1]);
    ok(
        &mut dst.client(),
        &[
            "ACL",
            "SETUSER",
            "t",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-setrange",
        ],
    );
    let target = format!("redis://t:pw@127.0.0.1:{}", dst.port);
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &src.url(),
        "--target",
        &target,
        "--skip-precheck",
    ]);
    wait_caught_up(src, dst, "default", CATCH_UP);
    ok(&mut src.client(), &["SETRANGE", "k", "0", "abc"]);
    let began = Instant::now();
    let (err, _) = t.one_error_line(Duration::from_secs(25));
    assert!(began.elapsed() < Duration::from_secs(10), "{err}");
    assert!(
        err.contains("SETRANGE at source offset") && err.contains("NOPERM"),
        "{err}"
    );
    assert!(!err.contains("pw"), "{err}");
}

/// Vector sets are a module type of Redis 8 with no command form tandem writes: RESTORE
/// carries them to another Redis 8.2; a target without them stops the full sync naming
/// the key and the module, instead of losing the key.
#[test]
fn vector_sets_restore_into_redis82_and_stop_clearly_elsewhere() {
    let s = start_all(&[V::Redis82, V::Redis82, V::Redis70]);
    let (src, same, older) = (&s[0], &s[1], &s[2]);
    let mut c = src.client();
    ok(&mut c, &["VADD", "vs", "VALUES", "3", "1", "2", "3", "e1"]);
    ok(&mut c, &["VADD", "vs", "VALUES", "3", "1", "2", "4", "e2"]);
    ok(&mut c, &["VSETATTR", "vs", "e1", "{\"a\":1}"]);
    let t = Tandem::sync(src, same, &[]);
    wait_caught_up(src, same, "default", CATCH_UP);
    let mut d = same.client();
    assert_eq!(d.cmd_int(&["VCARD", "vs"]), 2, "{}", t.log_text());
    assert_eq!(d.cmd_text(&["VGETATTR", "vs", "e1"]), "{\"a\":1}");
    // Live vector set writes travel as themselves.
    ok(&mut c, &["VADD", "vs", "VALUES", "3", "0", "0", "1", "e3"]);
    ok(&mut c, &["VREM", "vs", "e2"]);
    ok(&mut c, &["VSETATTR", "vs", "e3", "{\"b\":2}"]);
    wait_caught_up(src, same, "default", CATCH_UP);
    let members = |s: &RedisServer| s.client().cmd(&["VSIM", "vs", "ELE", "e1", "WITHSCORES"]);
    assert_eq!(members(src), members(same));
    assert_eq!(d.cmd_text(&["VGETATTR", "vs", "e3"]), "{\"b\":2}");
    assert_eq!(d.cmd_int(&["VCARD", "vs"]), 2);
    let mut t = Tandem::sync(src, older, &[]);
    let (err, _) = t.one_error_line(Duration::from_secs(20));
    assert!(
        err.contains("key \"vs\": a value of module type vectorset has no command form"),
        "{err}"
    );
}
