//! `/status` on `--metrics-addr`: the JSON document of a running tandem against real
//! servers (exact counts after a known workload, states, offsets equal to the source's,
//! no credentials), served beside `/metrics`, with a 404 and a 405 for the rest.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::http::request;
use support::proc::Tandem;
use support::*;

fn status(port: u16) -> Option<Value> {
    let (code, _, body) = request(port, "GET", "/status")?;
    assert_eq!(code, 200, "{body}");
    Some(serde_json::from_str(&body).expect("/status is JSON"))
}

/// The link `id` of a status document.
fn link<'a>(doc: &'a Value, id: &str) -> Option<&'a Value> {
    doc["links"].as_array()?.iter().find(|l| l["id"] == id)
}

fn info_field(c: &mut Client, field: &str) -> String {
    let info = c.cmd_text(&["INFO", "replication"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn status_reports_the_link_exactly_and_never_credentials() {
    let src = password_source("s3cret-pw");
    let dst = RedisServer::start();
    let mut c = src.client();
    c.cmd(&["AUTH", "s3cret-pw"]);
    // tandem connects as an ACL user: neither its name nor its password may show.
    c.cmd(&[
        "ACL", "SETUSER", "repl-usr", "on", ">u5er-pw", "~*", "&*", "+@all",
    ]);
    for i in 0..50 {
        c.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    let port = free_port();
    let source_url = format!("redis://repl-usr:u5er-pw@127.0.0.1:{}", src.port);
    let addr = format!("127.0.0.1:{port}");
    let t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &source_url,
        "--target",
        &dst.url(),
        "--metrics-addr",
        &addr,
    ]);
    wait_until("the link is incremental", Duration::from_secs(60), || {
        status(port)
            .and_then(|d| link(&d, "default").map(|l| l["state"] == "incremental"))
            .unwrap_or(false)
    });
    for _ in 0..100 {
        c.cmd(&["INCR", "counter"]);
    }
    let want: u64 = info_field(&mut c, "master_repl_offset").parse().unwrap();
    let mut doc = Value::Null;
    wait_until(
        "/status shows the source's offset applied",
        Duration::from_secs(60),
        || {
            doc = status(port).unwrap_or_default();
            link(&doc, "default").is_some_and(|l| l["applied_offset"] == want)
        },
    );
    let text = doc.to_string();
    for secret in ["s3cret-pw", "u5er-pw", "repl-usr"] {
        assert!(!text.contains(secret), "{secret} in /status: {text}");
    }
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"), "{doc:#}");
    assert_eq!(doc["mode"], "sync", "{doc:#}");
    assert_eq!(doc["id"], "default", "{doc:#}");
    assert!(doc["uptime_seconds"].is_u64(), "{doc:#}");
    assert_eq!(doc["links"].as_array().map(Vec::len), Some(1), "{doc:#}");
    let l = link(&doc, "default").unwrap();
    let replid = info_field(&mut c, "master_replid");
    let expect = [
        ("source", Value::from(format!("127.0.0.1:{}", src.port))),
        ("target", Value::from(format!("127.0.0.1:{}", dst.port))),
        ("state", Value::from("incremental")),
        ("last_error", Value::Null),
        ("replid", Value::from(replid)),
        ("received_offset", Value::from(want)),
        ("applied_offset", Value::from(want)),
        ("lag_bytes", Value::from(0)),
        ("lag_seconds", Value::from(0.0)),
        ("full_syncs", Value::from(1)),
        // 50 keys by the full sync; 50 RESTOREs + 100 INCRs confirmed.
        ("full_sync_keys", Value::from(50)),
        ("commands_applied", Value::from(150)),
        ("reconnects", Value::from(0)),
    ];
    for (field, value) in expect {
        assert_eq!(l[field], value, "{field} in {l:#}");
    }

    let (code, head, body) = request(port, "GET", "/status").unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("Content-Type: application/json"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(body.ends_with("}\n"), "{body}");
    let (code, _, metrics) = request(port, "GET", "/metrics").unwrap();
    assert_eq!(code, 200);
    let line = format!(
        "tandem_applied_offset{{source=\"127.0.0.1:{}\"}} {want}",
        src.port
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in:\n{metrics}"
    );
    assert_eq!(request(port, "GET", "/nope").map(|r| r.0), Some(404));
    assert_eq!(request(port, "POST", "/status").map(|r| r.0), Some(405));
    assert!(!t.log_text().contains("u5er-pw"), "password in logs");
    assert_eq!(dst.client().cmd_text(&["GET", "counter"]), "100");
}

#[test]
fn twoway_status_lists_both_directions() {
    let opts = ServerOpts::default().arg("repl-diskless-sync-delay", "0");
    let (a, b) = (
        RedisServer::start_with(opts.clone()),
        RedisServer::start_with(opts),
    );
    let mut ca = a.client();
    for i in 0..20 {
        ca.cmd(&["SET", &format!("a{i}"), "v"]);
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (ua, ub) = (a.url(), b.url());
    let _t = Tandem::start(&[
        "redis",
        "twoway",
        "--a",
        &ua,
        "--b",
        &ub,
        "--metrics-addr",
        &addr,
    ]);
    let mut doc = Value::Null;
    wait_until(
        "both directions incremental",
        Duration::from_secs(60),
        || {
            doc = status(port).unwrap_or_default();
            ["default:a2b", "default:b2a"]
                .iter()
                .all(|id| link(&doc, id).is_some_and(|l| l["state"] == "incremental"))
        },
    );
    assert_eq!(doc["mode"], "twoway", "{doc:#}");
    assert_eq!(doc["links"].as_array().map(Vec::len), Some(2), "{doc:#}");
    let (a2b, b2a) = (
        link(&doc, "default:a2b").unwrap(),
        link(&doc, "default:b2a").unwrap(),
    );
    let (pa, pb) = (
        format!("127.0.0.1:{}", a.port),
        format!("127.0.0.1:{}", b.port),
    );
    assert_eq!(a2b["source"], pa, "{doc:#}");
    assert_eq!(a2b["target"], pb, "{doc:#}");
    assert_eq!(b2a["source"], pb, "{doc:#}");
    assert_eq!(b2a["target"], pa, "{doc:#}");
    // A is copied into B; B→A only streams (its RDB is skipped, no keys written).
    assert_eq!(a2b["full_syncs"], 1, "{doc:#}");
    assert_eq!(a2b["full_sync_keys"], 20, "{doc:#}");
    assert_eq!(b2a["full_syncs"], 0, "{doc:#}");
    assert_eq!(b2a["full_sync_keys"], 0, "{doc:#}");
}

#[test]
fn a_busy_metrics_address_is_one_error_naming_it() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    // No server is needed: the endpoint is bound before any connection is made.
    let mut t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        "redis://127.0.0.1:1",
        "--target",
        "redis://127.0.0.1:1",
        "--metrics-addr",
        &addr,
    ]);
    let (line, log) = t.one_error_line(Duration::from_secs(20));
    assert!(
        line.contains(&format!("metrics endpoint {addr}: cannot listen")),
        "{log}"
    );
}

#[test]
fn cluster_source_lists_one_link_per_master() {
    let src = Cluster::start(3, 0);
    for n in src.nodes() {
        n.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    }
    let dst = RedisServer::start();
    for i in 0..90 {
        let key = format!("k{i}");
        src.master_for(&key).cmd(&["SET", &key, "v"]);
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (s, d) = (src.url(), dst.url());
    let _t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &s,
        "--target",
        &d,
        "--metrics-addr",
        &addr,
    ]);
    // Shard links are named by their lowest slot: 0, 5461, 10922 for three masters.
    let shards: Vec<(String, &RedisServer)> = ["0", "5461", "10922"]
        .iter()
        .zip(&src.masters)
        .map(|(slot, m)| (format!("default:{slot}"), m))
        .collect();
    let mut doc = Value::Null;
    wait_until(
        "every shard link applied its master's offset",
        Duration::from_secs(90),
        || {
            doc = status(port).unwrap_or_default();
            shards.iter().all(|(id, m)| {
                let want = support::proc::master_offset(m);
                link(&doc, id)
                    .is_some_and(|l| l["state"] == "incremental" && l["applied_offset"] == want)
            })
        },
    );
    assert_eq!(doc["links"].as_array().map(Vec::len), Some(3), "{doc:#}");
    let mut keys = 0;
    for (id, m) in &shards {
        let l = link(&doc, id).unwrap();
        assert_eq!(l["source"], format!("127.0.0.1:{}", m.port), "{doc:#}");
        assert_eq!(l["target"], format!("127.0.0.1:{}", dst.port), "{doc:#}");
        assert_eq!(l["full_syncs"], 1, "{doc:#}");
        keys += l["full_sync_keys"].as_u64().unwrap();
    }
    assert_eq!(keys, 90, "{doc:#}");
    let names: Vec<String> = (0..90).map(|i| format!("k{i}")).collect();
    let mut exists = vec!["EXISTS"];
    exists.extend(names.iter().map(String::as_str));
    assert_eq!(dst.client().cmd_int(&exists), 90);
}
