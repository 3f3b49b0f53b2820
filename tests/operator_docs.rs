//! The example Grafana dashboard and Prometheus alert rules in docs/ use only metrics
//! that exist (defined in src/metrics.rs), and the dashboard is valid JSON.

use std::collections::BTreeSet;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tandem_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

fn defined() -> BTreeSet<String> {
    let src = include_str!("../src/metrics.rs");
    src.lines()
        .filter(|l| l.starts_with("pub const"))
        .filter_map(|l| Some(l.split('"').nth(1)?.to_string()))
        .collect()
}

#[test]
fn dashboard_and_alerts_use_only_metrics_that_exist() {
    let known = defined();
    assert!(known.contains("tandem_lag_seconds"), "{known:?}");
    let dashboard = include_str!("../docs/grafana-dashboard.json");
    let v: serde_json::Value = serde_json::from_str(dashboard).expect("dashboard is JSON");
    assert!(!v["panels"].as_array().unwrap().is_empty());
    let alerts = include_str!("../docs/prometheus-alerts.yml");
    for (file, text) in [
        ("grafana-dashboard.json", dashboard),
        ("prometheus-alerts.yml", alerts),
    ] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics src/metrics.rs does not define: {unknown:?}"
        );
    }
    // The core alerts are there: lag, link down, errors.
    for alert in ["TandemLagHigh", "TandemLinkDown", "TandemTargetRejects"] {
        assert!(alerts.contains(&format!("alert: {alert}")), "{alert}");
    }
}

#[test]
fn names_are_read_whole() {
    let got =
        metric_names("rate(tandem_sink_commands_total[1m]) x_tandem_no {{tandem_lag_seconds}}");
    let want: BTreeSet<String> = ["tandem_lag_seconds", "tandem_sink_commands_total"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
}
