//! `tandem demo --seconds N` runs to completion: both sides converge (verify says
//! identical), conflicts were resolved, and nothing is left listening.

mod support;

use std::process::Command;

use support::*;

#[test]
fn the_demo_converges_resolves_conflicts_and_leaves_nothing_running() {
    let out = Command::new(tandem_bin())
        .args(["demo", "--seconds", "2"])
        .env("TANDEM_LOG", "warn")
        .output()
        .expect("run tandem demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}{err}");
    let ports: Vec<u16> = text
        .lines()
        .next()
        .unwrap()
        .split("redis://127.0.0.1:")
        .skip(1)
        .map(|p| p.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{text}");
    assert!(
        text.contains("status:  curl -s http://127.0.0.1:"),
        "{text}"
    );
    let resolved: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("conflicts resolved: "))
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!(resolved > 0, "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("verify: ") && last.ends_with("keys compared: identical"),
        "{text}"
    );
    for p in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "a server still listens on {p}"
        );
    }
}
