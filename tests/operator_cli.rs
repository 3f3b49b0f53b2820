//! The operator-facing surface of the CLI: help text for every flag, JSON logs that
//! parse line by line, and passwords from files and the environment that never show.

mod support;

use std::process::Command;
use std::time::Duration;

use support::proc::{Tandem, wait_caught_up};
use support::*;

/// The flags of `tandem redis <cmd> --help` that have no description.
fn undocumented(cmd: &str) -> Vec<String> {
    let out = Command::new(tandem_bin())
        .args(["redis", cmd, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut missing = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if t.starts_with("--") || t.starts_with("-h, --") {
            // clap's long help: the description is the next line, indented further.
            let next = lines.get(i + 1).copied().unwrap_or("");
            if next.trim().is_empty() || next.trim_start().starts_with('-') {
                missing.push(t.to_string());
            }
        }
    }
    missing
}

#[test]
fn every_flag_has_help_text() {
    for cmd in ["sync", "twoway", "tail", "verify"] {
        assert_eq!(
            undocumented(cmd),
            Vec::<String>::new(),
            "tandem redis {cmd} --help"
        );
    }
}

const PASSWORD: &str = "pw-operator-7731";

#[test]
fn json_logs_parse_line_by_line_and_never_show_the_password() {
    let src = password_source(PASSWORD);
    let dst = RedisServer::start();
    src.client().cmd(&["AUTH", PASSWORD]);
    let mut c = src.client();
    c.cmd(&["AUTH", PASSWORD]);
    c.cmd(&["SET", "k", "v"]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", src.port);
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &url,
        "--target",
        &dst.url(),
        "--log-format",
        "json",
    ]);
    wait_until("k copied", Duration::from_secs(30), || {
        dst.cmd(&["GET", "k"]) == Frame::BulkString(b"v".to_vec())
    });
    assert_eq!(t.interrupt(), Some(0));
    let log = t.log_text();
    let mut states = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "link state" {
            states.push(v["to"].as_str().unwrap().to_string());
        }
    }
    assert!(!log.contains(PASSWORD), "{log}");
    assert_eq!(states, ["full_sync", "incremental", "stopped"], "{log}");
    // An error ends as a JSON line too.
    let bad = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}", src.port);
    let out = Command::new(tandem_bin())
        .args([
            "redis",
            "verify",
            "--log-format",
            "json",
            "--source",
            &bad,
            "--target",
            &dst.url(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn passwords_from_a_file_or_the_environment() {
    let src = password_source(PASSWORD);
    let dst = password_source("target-pw-5519");
    let mut c = src.client();
    c.cmd(&["AUTH", PASSWORD]);
    c.cmd(&["SET", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.pw");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let src_url = format!("redis://127.0.0.1:{}", src.port);
    let dst_url = format!("redis://127.0.0.1:{}", dst.port);
    let verify = |envs: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(tandem_bin())
            .args([
                "redis", "verify", "--rounds", "1", "--source", &src_url, "--target", &dst_url,
            ])
            .args(args)
            .env_remove("TANDEM_SOURCE_PASSWORD")
            .env_remove("TANDEM_TARGET_PASSWORD")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(PASSWORD) && !text.contains("target-pw-5519"),
            "{text}"
        );
        (out.status.code(), text)
    };
    let file_arg = file.to_str().unwrap();
    // Without the target's password: an authentication error naming the target.
    let (code, text) = verify(&[], &["--source-password-file", file_arg]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "redis://127.0.0.1:{}: INFO failed: NOAUTH Authentication required.",
            dst.port
        )),
        "{text}"
    );
    let (code, text) = verify(
        &[("TANDEM_TARGET_PASSWORD", "target-pw-5519")],
        &["--source-password-file", file_arg],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("missing db0 \"k\""), "{text}");

    let pw_file = dir.path().join("target.pw");
    std::fs::write(&pw_file, "target-pw-5519").unwrap();
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &src_url,
        "--target",
        &dst_url,
        "--source-password-file",
        file_arg,
        "--target-password-file",
        pw_file.to_str().unwrap(),
    ]);
    wait_until("k copied", Duration::from_secs(30), || {
        let mut d = dst.client();
        d.cmd(&["AUTH", "target-pw-5519"]);
        d.cmd(&["GET", "k"]) == Frame::BulkString(b"v".to_vec())
    });
    let (code, text) = verify(
        &[
            ("TANDEM_SOURCE_PASSWORD", PASSWORD),
            ("TANDEM_TARGET_PASSWORD", "target-pw-5519"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(t.interrupt(), Some(0));
    assert!(!t.log_text().contains(PASSWORD));
    let _ = wait_caught_up;
}
