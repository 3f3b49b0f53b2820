//! `tandem redis precheck` on real servers, and the precheck `redis sync` runs first.

mod support;

use std::process::Command;
use std::time::Duration;

use support::proc::Tandem;
use support::*;

fn precheck(source: &str, target: &str, extra: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(tandem_bin())
        .args(["redis", "precheck", "--source", source, "--target", target])
        .args(extra)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code(), text)
}

/// (name, verdict) of each item of a JSON report.
fn verdicts(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"));
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().into(),
                i["verdict"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn a_wrong_password_fails_without_showing_it() {
    let src = password_source("right-pw-4242");
    let dst = RedisServer::start();
    let url = format!("redis://:wrong-pw-4242@127.0.0.1:{}", src.port);
    let (code, text) = precheck(&url, &dst.url(), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        text.lines().next().unwrap(),
        format!(
            "FAIL reach.source: redis://127.0.0.1:{}: authentication failed: WRONGPASS invalid username-password pair or user is disabled. (fix: check the URL, the password (or --source-password-file) and that the server listens)",
            src.port
        )
    );
    assert!(!text.contains("wrong-pw-4242"), "{text}");
    let (code, json) = precheck(&url, &dst.url(), &["--format", "json"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        verdicts(&json),
        [
            ("reach.source".to_string(), "fail".to_string()),
            ("reach.target".into(), "pass".into())
        ]
    );
}

#[test]
fn warns_on_an_evicting_target_and_reports_every_item_as_json() {
    let src = RedisServer::start();
    let dst = RedisServer::start_with(ServerOpts::default().arg("maxmemory-policy", "allkeys-lru"));
    dst.cmd(&["SET", "already", "here"]);
    let (code, json) = precheck(&src.url(), &dst.url(), &["--format", "json"]);
    assert_eq!(code, Some(0), "{json}");
    let got = verdicts(&json);
    let want: Vec<(String, String)> = [
        ("reach.source", "pass"),
        ("reach.target", "pass"),
        ("versions", "pass"),
        ("acl.source", "pass"),
        ("acl.target", "pass"),
        ("maxmemory-policy", "warn"),
        ("databases", "pass"),
        ("target-keys", "warn"),
        ("backlog", "pass"),
        ("modules", "pass"),
        ("field_ttls", "pass"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{json}");
    let (_, text) = precheck(&src.url(), &dst.url(), &[]);
    assert!(
        text.contains(&format!("WARN maxmemory-policy: redis://127.0.0.1:{}: allkeys-lru: when memory runs out the server silently evicts replicated keys", dst.port)),
        "{text}"
    );
}

#[test]
fn sync_stops_at_start_on_a_failing_item_unless_told_to_skip() {
    let src = RedisServer::start_with(ServerOpts::default().arg("repl-diskless-sync-delay", "0"));
    let dst = RedisServer::start();
    src.cmd(&["SET", "k", "v"]);
    // A target user that may write but not RESTORE.
    let r = dst.cmd(&[
        "ACL",
        "SETUSER",
        "writer",
        "on",
        ">writer-pw",
        "~*",
        "+@all",
        "-restore",
    ]);
    assert_eq!(r, Frame::SimpleString(b"OK".to_vec()));
    let target = format!("redis://writer:writer-pw@127.0.0.1:{}", dst.port);
    let (code, text) = precheck(&src.url(), &target, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL acl.target: user \"writer\" may not run RESTORE"),
        "{text}"
    );
    let mut t = Tandem::start(&["redis", "sync", "--source", &src.url(), "--target", &target]);
    let (line, log) = t.one_error_line(Duration::from_secs(20));
    assert!(line.starts_with("tandem: error: precheck failed (--skip-precheck to go on anyway): acl.target: user \"writer\" may not run RESTORE"), "{log}");
    assert!(!log.contains("writer-pw"), "{log}");
    assert_eq!(dst.cmd(&["EXISTS", "k"]), Frame::Integer(0));
    // Skipped: the link starts (what the target then refuses is the engine's to report).
    let t = Tandem::start(&[
        "redis",
        "sync",
        "--skip-precheck",
        "--source",
        &src.url(),
        "--target",
        &target,
    ]);
    wait_until("the link starts", Duration::from_secs(20), || {
        t.log_text().contains("full resync")
    });
    assert!(
        !t.log_text().contains("precheck failed"),
        "{}",
        t.log_text()
    );
}
