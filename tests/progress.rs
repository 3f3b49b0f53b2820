//! The full-sync progress display: plain lines (as JSON logs, so every figure is
//! checked) for a disk-based and a diskless transfer, and bars on a terminal.

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use support::proc::Tandem;
use support::{RedisServer, ServerOpts, tandem_bin};

const KEYS: usize = 200_000;

/// A source holding `KEYS` strings of 100 bytes, transferring its RDB diskless or not.
fn source(diskless: bool) -> RedisServer {
    let src = RedisServer::start_with(
        ServerOpts::default().arg("repl-diskless-sync", if diskless { "yes" } else { "no" }),
    );
    let mut c = src.client();
    let value = Bytes::from(vec![b'v'; 100]);
    for chunk in 0..KEYS / 1000 {
        let mut mset = vec![Bytes::from_static(b"MSET")];
        for i in chunk * 1000..(chunk + 1) * 1000 {
            mset.push(Bytes::from(format!("key:{i}")));
            mset.push(value.clone());
        }
        c.pipeline(&[mset]);
    }
    src
}

/// The progress lines of a JSON log: (keys, bytes, total_bytes, expected_keys).
fn progress_lines(log: &str) -> Vec<[u64; 4]> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // The engine's own "full sync: loading …" line has no fields.
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("full sync: "))
                && v.get("link").is_some()
        })
        .map(|v| {
            let n = |f: &str| v[f].as_u64().unwrap_or_else(|| panic!("{f} in {v}"));
            [n("keys"), n("bytes"), n("total_bytes"), n("expected_keys")]
        })
        .collect()
}

fn full_sync(src: &RedisServer, dst: &RedisServer) -> String {
    let mut t = Tandem::start(&[
        "--log-format",
        "json",
        "redis",
        "sync",
        "--source",
        &src.url(),
        "--target",
        &dst.url(),
        "--mode",
        "full",
        "--progress-interval",
        "0.05",
    ]);
    assert_eq!(
        t.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{}",
        t.log_text()
    );
    assert_copied(dst);
    t.log_text()
}

/// Every key, plus tandem's checkpoint.
fn assert_copied(dst: &RedisServer) {
    let mut c = dst.client();
    assert_eq!(c.cmd_int(&["DBSIZE"]), KEYS as i64 + 1);
    assert_eq!(c.cmd_int(&["EXISTS", "__tandem:ckpt:default"]), 1);
    assert_eq!(c.cmd_int(&["STRLEN", &format!("key:{}", KEYS - 1)]), 100);
}

/// Counts only grow, never past their totals.
fn assert_sane(lines: &[[u64; 4]], log: &str) {
    assert!(!lines.is_empty(), "no progress line:\n{log}");
    for w in lines.windows(2) {
        assert!(w[0][0] <= w[1][0] && w[0][1] <= w[1][1], "{w:?}");
    }
    for l in lines {
        assert!(l[0] <= KEYS as u64, "{l:?}");
        assert_eq!(l[3], KEYS as u64, "the source's key count: {l:?}");
    }
}

#[test]
fn disk_based_transfer_shows_bytes_of_the_rdb_size() {
    let (src, dst) = (source(false), RedisServer::start());
    let log = full_sync(&src, &dst);
    let lines = progress_lines(&log);
    assert_sane(&lines, &log);
    // The master wrote the RDB it sent to its directory.
    let size = std::fs::metadata(src.dir().join("dump.rdb")).unwrap().len();
    for l in &lines {
        assert_eq!(l[2], size, "{l:?}");
        assert!(l[1] <= size, "{l:?}");
    }
}

#[test]
fn diskless_transfer_shows_keys_of_the_source_count() {
    let (src, dst) = (source(true), RedisServer::start());
    let log = full_sync(&src, &dst);
    let lines = progress_lines(&log);
    assert_sane(&lines, &log);
    assert!(
        lines.iter().all(|l| l[2] == 0),
        "no size up front: {lines:?}"
    );
    assert!(
        !log.contains("\"expected_keys\":0"),
        "every line has the key total"
    );
}

/// On a terminal: a bar that ends as done, and log lines whole between its redraws.
/// `script` (util-linux, in every Debian) gives tandem a pseudo-terminal.
#[test]
fn a_terminal_gets_a_bar_and_whole_log_lines() {
    let (src, dst) = (source(true), RedisServer::start());
    let cmd = format!(
        "{} redis sync --source {} --target {} --mode full --skip-precheck",
        tandem_bin().display(),
        src.url(),
        dst.url()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TANDEM_LOG", "info")
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_copied(&dst);
    assert!(text.contains("full sync default"), "{text}");
    assert!(
        text.contains(&format!("done: {KEYS} keys")),
        "the bar ends as done: {text}"
    );
    // Each log line is written whole: its text is never cut by a redraw.
    for needle in ["full sync applied", "full resync"] {
        assert!(
            text.lines().any(|l| l.contains(needle)),
            "{needle} on one line: {text}"
        );
    }
}
