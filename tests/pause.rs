//! `POST /pause` and `POST /resume` on `--metrics-addr`: while paused nothing reaches the
//! target and its checkpoint stays put, though the link keeps receiving; after resume
//! everything written meanwhile lands exactly once.

mod support;

use std::time::Duration;

use support::http::request;
use support::proc::{Tandem, checkpoint, master_offset, wait_caught_up};
use support::*;

fn status(port: u16) -> serde_json::Value {
    let (code, _, body) = request(port, "GET", "/status").expect("/status answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn nothing_is_lost_or_doubled_across_a_pause_under_load() {
    let src = RedisServer::start_with(ServerOpts::default().arg("repl-diskless-sync-delay", "0"));
    let dst = RedisServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut t = Tandem::sync(&src, &dst, &["--metrics-addr", &addr]);
    let mut c = src.client();
    let write = |c: &mut Client, from: u64, to: u64| {
        for i in from..to {
            c.cmd(&["INCR", "counter"]);
            c.cmd(&["RPUSH", "list", &i.to_string()]);
        }
    };
    write(&mut c, 0, 300);
    wait_caught_up(&src, &dst, "default", Duration::from_secs(60));

    assert_eq!(request(port, "POST", "/pause").map(|r| r.0), Some(200));
    assert_eq!(status(port)["paused"], true);
    let held = checkpoint(&dst, "default").unwrap();
    write(&mut c, 300, 800);
    let want = master_offset(&src);
    // The link keeps reading the source into its spool while nothing is applied.
    wait_until(
        "the paused link received everything",
        Duration::from_secs(30),
        || status(port)["links"][0]["received_offset"].as_u64() == Some(want),
    );
    assert_eq!(checkpoint(&dst, "default"), Some(held.clone()));
    assert_eq!(dst.client().cmd_text(&["GET", "counter"]), "300");
    assert_eq!(dst.client().cmd_int(&["LLEN", "list"]), 300);
    assert_eq!(
        status(port)["links"][0]["applied_offset"].as_u64(),
        Some(held.1)
    );

    assert_eq!(request(port, "POST", "/resume").map(|r| r.0), Some(200));
    assert_eq!(status(port).get("paused"), None);
    write(&mut c, 800, 1000);
    wait_caught_up(&src, &dst, "default", Duration::from_secs(60));
    assert_eq!(dst.client().cmd_text(&["GET", "counter"]), "1000");
    let Frame::Array(items) = dst.cmd(&["LRANGE", "list", "0", "-1"]) else {
        panic!("LRANGE")
    };
    let got: Vec<String> = items.iter().map(frame_to_string).collect();
    let expected: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
    assert_eq!(t.interrupt(), Some(0));
}
