//! tandem's own counters, read from its Prometheus endpoint (`--metrics-addr`): how
//! many transactions an apply took, so the note can say how full they were.

use std::net::TcpListener;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BATCHES: &str = "tandem_sink_batches_total";
const OPS: &str = "tandem_sink_commands_total";

/// A loopback port for the endpoint (free unless something grabs it right away).
pub fn free_port() -> Option<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ok()?;
    Some(l.local_addr().ok()?.port())
}

/// (transactions, operations) applied so far; `None` if the endpoint does not answer.
pub async fn applied(port: u16) -> Option<(u64, u64)> {
    let body = tokio::time::timeout(Duration::from_secs(5), get_metrics(port))
        .await
        .ok()??;
    Some((sum(&body, BATCHES)?, sum(&body, OPS)?))
}

async fn get_metrics(port: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// The counter's value, summed over its label sets.
fn sum(body: &str, name: &str) -> Option<u64> {
    let values: Vec<u64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
