//! The Prometheus endpoint: exact counters and offsets after a known workload, and no
//! credentials anywhere in what an operator scrapes or reads.

mod support;

use std::time::Duration;

use support::proc::Tandem;
use support::*;

#[test]
fn metrics_count_exactly_and_never_show_credentials() {
    let src = password_source("s3cret-pw");
    let dst = RedisServer::start();
    let mut c = src.client();
    c.cmd(&["AUTH", "s3cret-pw"]);
    for i in 0..50 {
        c.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    let port = free_port();
    let source_url = format!("redis://:s3cret-pw@127.0.0.1:{}", src.port);
    let metrics_addr = format!("127.0.0.1:{port}");
    let t = Tandem::start(&[
        "redis",
        "sync",
        "--source",
        &source_url,
        "--target",
        &dst.url(),
        "--metrics-addr",
        &metrics_addr,
    ]);
    // The source needs a password, so its offset is read here rather than through the
    // unauthenticated helpers.
    let offset = |c: &mut Client| -> u64 {
        let info = c.cmd_text(&["INFO", "replication"]);
        info.lines()
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    wait_until("full sync done", Duration::from_secs(60), || {
        support::proc::checkpoint(&dst, "default").is_some_and(|(s, _)| s == "incr")
    });
    for _ in 0..100 {
        c.cmd(&["INCR", "counter"]);
    }
    let want = offset(&mut c);
    assert!(want > 0);
    wait_until(
        "checkpoint at the source's offset",
        Duration::from_secs(60),
        || {
            support::proc::checkpoint(&dst, "default")
                .is_some_and(|(s, o)| s == "incr" && o == want)
        },
    );
    let label = format!("{{source=\"127.0.0.1:{}\"}}", src.port);
    let mut text = String::new();
    wait_until(
        "metrics show the applied offset",
        Duration::from_secs(10),
        || {
            text = scrape_metrics(port);
            metric_value(&text, &format!("tandem_applied_offset{label}")) == Some(want as f64)
        },
    );
    assert_eq!(
        metric_value(&text, &format!("tandem_link_received_offset{label}")),
        Some(want as f64),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, &format!("tandem_full_syncs_total{label}")),
        Some(1.0),
        "{text}"
    );
    // 50 keys restored by the full sync + 100 INCRs, nothing else.
    assert_eq!(
        metric_value(&text, "tandem_sink_commands_total"),
        Some(150.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "tandem_full_sync_keys_total"),
        Some(50.0),
        "{text}"
    );
    for name in [
        "tandem_applied_offset",
        "tandem_sink_commands_total",
        "tandem_full_sync_keys_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} undescribed:\n{text}"
        );
    }
    assert!(!text.contains("s3cret-pw"), "password in metrics:\n{text}");
    assert!(!t.log_text().contains("s3cret-pw"), "password in logs");
    assert_eq!(dst.client().cmd_text(&["GET", "counter"]), "100");
}

/// `tandem_lag_seconds`: 0 when caught up, grows while the target cannot apply (paused
/// with CLIENT PAUSE … WRITE), back to 0 once everything landed.
#[test]
fn lag_seconds_grows_while_the_target_stalls_and_returns_to_zero() {
    let src = RedisServer::start_with(ServerOpts::default().arg("repl-diskless-sync-delay", "0"));
    let dst = RedisServer::start();
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut t = Tandem::sync(&src, &dst, &["--metrics-addr", &metrics_addr]);
    let mut c = src.client();
    c.cmd(&["SET", "warm", "1"]);
    support::proc::wait_caught_up(&src, &dst, "default", Duration::from_secs(60));
    let lag = format!("tandem_lag_seconds{{source=\"127.0.0.1:{}\"}}", src.port);
    wait_until("lag 0 when caught up", Duration::from_secs(10), || {
        metric_value(&scrape_metrics(port), &lag) == Some(0.0)
    });
    // Writes are held back for 4 s; the source keeps sending them meanwhile.
    dst.client().cmd(&["CLIENT", "PAUSE", "4000", "WRITE"]);
    for _ in 0..10 {
        c.cmd(&["INCR", "n"]);
    }
    wait_until(
        "lag above 1 s during the pause",
        Duration::from_secs(10),
        || metric_value(&scrape_metrics(port), &lag).is_some_and(|v| v >= 1.0),
    );
    support::proc::wait_caught_up(&src, &dst, "default", Duration::from_secs(60));
    wait_until("lag back to 0", Duration::from_secs(10), || {
        metric_value(&scrape_metrics(port), &lag) == Some(0.0)
    });
    assert!(t.is_running(), "{}", t.log_text());
    assert_eq!(dst.client().cmd_text(&["GET", "n"]), "10");
}
