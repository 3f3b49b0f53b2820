//! Sources and targets of other server versions: Redis 6.2 (RDB 9) and Valkey 9.1
//! (`VALKEY080`), fetched by scripts/servers.sh, against the machine's Redis 7.0.

mod support;

use std::time::Duration;

use support::data::{assert_same_db_across_versions, fill_all_types};
use support::proc::{Tandem, master_offset, wait_caught_up};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(60);

fn valkey() -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .binary_from_env("TANDEM_VALKEY_SERVER")
            .arg("repl-diskless-sync-delay", "0"),
    )
}

fn redis62() -> RedisServer {
    RedisServer::start_with(
        ServerOpts::default()
            .binary_from_env("TANDEM_REDIS62_SERVER")
            .arg("repl-diskless-sync-delay", "0"),
    )
}

fn redis70() -> RedisServer {
    RedisServer::start_with(ServerOpts::default().arg("repl-diskless-sync-delay", "0"))
}

/// Full sync, then live writes, then compare every key.
fn sync_and_compare(src: &RedisServer, dst: &RedisServer) -> String {
    let mut c = src.client();
    fill_all_types(&mut c, 0, "k:", 1);
    fill_all_types(&mut c, 4, "k:", 2);
    let t = Tandem::sync(src, dst, &[]);
    wait_caught_up(src, dst, "default", CATCH_UP);
    fill_all_types(&mut c, 0, "live:", 3);
    c.cmd(&["SELECT", "4"]);
    c.cmd(&["INCRBY", "k:int", "7"]);
    wait_caught_up(src, dst, "default", CATCH_UP);
    assert_same_db_across_versions(src, dst, 0);
    assert_same_db_across_versions(src, dst, 4);
    t.log_text()
}

#[test]
fn valkey9_source_is_rewritten_into_an_older_redis() {
    let src = valkey();
    let dst = redis70();
    let log = sync_and_compare(&src, &dst);
    // Valkey 9 sends RDB 11 (or VALKEY080 when it needs its own encodings): newer than
    // what Redis 7.0 (RDB 10) accepts in RESTORE, so every key is rewritten.
    assert!(log.contains("restored=0"), "{log}");
    let version: u32 = log
        .split("rdb_version=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the full sync logs the source's RDB version");
    assert!(version > 10, "{log}");
}

#[test]
fn redis62_source_is_restored_into_redis70() {
    let src = redis62();
    let dst = redis70();
    let log = sync_and_compare(&src, &dst);
    assert!(log.contains("rewritten=0"), "{log}");
    assert!(log.contains("rdb_version=9"), "{log}");
}

#[test]
fn redis70_source_is_restored_into_valkey9() {
    let src = redis70();
    let dst = valkey();
    let log = sync_and_compare(&src, &dst);
    assert!(log.contains("rewritten=0"), "{log}");
}

#[test]
fn link_offsets_are_exact_against_valkey_and_redis62() {
    for src in [valkey(), redis62()] {
        let out = std::process::Command::new(tandem_bin())
            .args(["redis", "tail", "--source", &src.url(), "--count", "5"])
            .env("TANDEM_LOG", "off")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("tandem attached", Duration::from_secs(20), || {
            src.info_field("replication", "slave0")
                .is_some_and(|l| l.contains("state=online"))
        });
        let mut c = src.client();
        for i in 0..5 {
            c.cmd(&["SET", &format!("k{i}"), "v"]);
        }
        let want = master_offset(&src);
        let out = out.wait_with_output().unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // 5 printed commands; the last SET's offset may be followed by nothing else.
        let last_set = lines
            .iter()
            .rev()
            .find(|l| l["argv"][0] == "SET")
            .expect("a SET");
        assert!(last_set["offset"].as_u64().unwrap() <= want);
        let mut prev = 0;
        for l in &lines {
            let off = l["offset"].as_u64().unwrap();
            assert!(off > prev, "offsets grow: {lines:?}");
            prev = off;
        }
    }
}

/// Redis 6.2 replicating scripts verbatim (`lua-replicate-commands no`) sends `EVALSHA`
/// once it believes its replicas know the script. A target that lost its scripts would
/// answer NOSCRIPT; tandem sends the body it saw instead, and loads the RDB's scripts.
#[test]
fn verbatim_evalsha_applies_even_when_the_target_lost_the_script() {
    let src = RedisServer::start_with(
        ServerOpts::default()
            .binary_from_env("TANDEM_REDIS62_SERVER")
            .arg("repl-diskless-sync-delay", "0")
            .arg("lua-replicate-commands", "no"),
    );
    let dst = redis70();
    let mut c = src.client();
    // Known before the sync: travels in the RDB's `lua` AUX field.
    let incr = "return redis.call('INCR', KEYS[1])";
    let sha1 = c.cmd_text(&["SCRIPT", "LOAD", incr]);
    let t = Tandem::sync(&src, &dst, &[]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    for _ in 0..5 {
        c.cmd(&["EVALSHA", &sha1, "1", "n"]);
    }
    // A script run after the sync: its first EVALSHA travels as EVAL (and the source
    // notes that its replicas know it); then the target loses every script, and the
    // source sends plain EVALSHA.
    let incrby = "return redis.call('INCRBY', KEYS[1], 2)";
    let mut d = dst.client();
    let sha2 = d.cmd_text(&["SCRIPT", "LOAD", incrby]);
    c.cmd(&["SCRIPT", "LOAD", incrby]);
    c.cmd(&["EVALSHA", &sha2, "1", "m"]);
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    d.cmd(&["SCRIPT", "FLUSH"]);
    for _ in 0..5 {
        c.cmd(&["EVALSHA", &sha2, "1", "m"]);
    }
    wait_caught_up(&src, &dst, "default", CATCH_UP);
    for (key, want) in [("n", "5"), ("m", "12")] {
        assert_eq!(c.cmd_text(&["GET", key]), want);
        assert_eq!(d.cmd_text(&["GET", key]), want, "{}", t.log_text());
    }
    assert!(!t.log_text().contains("NOSCRIPT"), "{}", t.log_text());
}

fn metric(text: &str, prefix: &str) -> f64 {
    support::metric_value(text, prefix).unwrap_or(0.0)
}

/// Writes a marker on `from` and waits for it on `to`: every echo `to`'s link read before
/// it (all of `from`'s stream up to it) has been handled.
fn barrier(from: &RedisServer, to: &RedisServer, token: &str) {
    from.cmd(&["SET", "barrier", token]);
    wait_until("a marker to cross", CATCH_UP, || {
        to.client().cmd(&["GET", "barrier"]) == Frame::BulkString(token.as_bytes().to_vec())
    });
}

/// Two-way between Valkey 9 and Redis 6.2: each propagates tandem's transactions in its
/// own way, and the link reading them must still recognise them whole (the framed fast
/// path, counted apart from echoes parsed command by command) and apply nothing twice.
#[test]
fn twoway_between_valkey9_and_redis62_frames_echoes_and_doubles_nothing() {
    // No PINGs: a PING moves a link's checkpoint with a batch of the checkpoint alone,
    // whose echo is a bare HSET (read command by command), which would blur the count.
    let quiet = |env: &str| {
        RedisServer::start_with(
            ServerOpts::default()
                .binary_from_env(env)
                .arg("repl-diskless-sync-delay", "0")
                .arg("repl-ping-replica-period", "3600"),
        )
    };
    let (a, b) = (
        quiet("TANDEM_VALKEY_SERVER"),
        quiet("TANDEM_REDIS62_SERVER"),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let t = Tandem::start(&[
        "redis",
        "twoway",
        "--a",
        &a.url(),
        "--b",
        &b.url(),
        "--metrics-addr",
        &addr,
    ]);
    // After these, every start-up echo (each link's first checkpoint alone, bare) is
    // handled: each precedes a marker that crossed after it.
    barrier(&a, &b, "a0");
    barrier(&b, &a, "b0");
    barrier(&a, &b, "a0b");
    let parsed = "tandem_echo_units_dropped_total{read=\"parsed\"}";
    let framed = "tandem_echo_units_dropped_total{read=\"framed\"}";
    let before = support::scrape_metrics(port);
    let incr = |side: &RedisServer, prefix: &str, by: &str| {
        let all: Vec<Vec<bytes::Bytes>> = (0..3000)
            .map(|i| {
                vec![
                    bytes::Bytes::from("INCRBY"),
                    bytes::Bytes::from(format!("{prefix}:{}", i % 30)),
                    bytes::Bytes::from(by.to_string()),
                ]
            })
            .collect();
        side.client().pipeline(&all);
    };
    incr(&a, "a", "1");
    incr(&b, "b", "2");
    // A's counters reached B and B's reached A; then markers the other way round follow
    // every echo of them through the reverse links.
    barrier(&a, &b, "a1");
    barrier(&b, &a, "b1");
    barrier(&a, &b, "a2");
    for (side, name) in [(&a, "valkey"), (&b, "redis 6.2")] {
        let mut c = side.client();
        for k in 0..30 {
            assert_eq!(
                c.cmd_text(&["GET", &format!("a:{k}")]),
                "100",
                "a:{k} on {name}"
            );
            assert_eq!(
                c.cmd_text(&["GET", &format!("b:{k}")]),
                "200",
                "b:{k} on {name}"
            );
        }
    }
    let after = support::scrape_metrics(port);
    let log = t.log_text();
    // Both servers' streams carried tandem's batches (counters and markers both ways):
    // were any read command by command, this count would have moved.
    assert_eq!(
        metric(&after, parsed),
        metric(&before, parsed),
        "{after}\n{log}"
    );
    assert!(
        metric(&after, framed) >= metric(&before, framed) + 2.0,
        "{after}\n{log}"
    );
}
