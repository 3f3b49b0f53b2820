//! The operator endpoint on `--metrics-addr`: `/metrics` (Prometheus text) and
//! `/status` (JSON) from one small HTTP/1.1 responder.
//!
//! Deliberately minimal, since it faces whoever can reach the port: GET only, one
//! request per connection (`Connection: close`), the request head bounded in size and
//! time, and a bounded number of connections at once, so a slow or hostile client
//! costs one task for a few seconds at most.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::status::Status;

/// Largest request head read; a GET needs a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request and read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;
/// The recorder's periodic maintenance (the built-in listener ran it every 5 s).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What the endpoint serves.
#[derive(Clone)]
pub struct Routes {
    pub prometheus: PrometheusHandle,
    pub status: Arc<Status>,
}

/// Listen on `addr` and install the Prometheus recorder. Errors name the address and
/// are for the user (one line); once listening, failures only affect one request.
pub async fn serve(addr: SocketAddr, status: Arc<Status>) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics endpoint {addr}: cannot listen: {e}"))?;
    let prometheus =
        crate::metrics::install_recorder().map_err(|e| format!("metrics endpoint {addr}: {e}"))?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let routes = Routes { prometheus, status };
    // Off unless asked for; an address other than loopback is the operator's explicit
    // choice, and said so, since /status names every endpoint.
    if addr.ip().is_loopback() {
        info!("metrics and status on http://{addr}/metrics and /status");
    } else {
        warn!(
            "metrics and status on http://{addr}/metrics and /status: a non-loopback \
             address, readable by anyone who can reach it"
        );
    }
    tokio::spawn(accept_loop(listener, routes));
    Ok(())
}

async fn accept_loop(listener: TcpListener, routes: Routes) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pass, rather than spin.
                warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics endpoint: too many connections, closing one");
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT, handle(sock, &routes)).await {
                debug!(%peer, "metrics endpoint: client too slow: {e}");
            }
            drop(permit);
        });
    }
}

async fn handle(mut sock: TcpStream, routes: &Routes) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let response = loop {
        if head_complete(&head) {
            break respond(&head, routes);
        }
        if head.len() >= MAX_HEAD {
            break Response::text(431, "request head too large\n");
        }
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n.min(MAX_HEAD + 1 - head.len())]),
        }
    };
    let _ = sock.write_all(&response.encode()).await;
    let _ = sock.shutdown().await;
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

pub struct Response {
    pub code: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(code: u16, body: &str) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let reason = match self.code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let allow = if self.code == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Connection: close\r\n\r\n",
            self.code,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// The answer to a complete request head.
pub fn respond(head: &[u8], routes: &Routes) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(400, "bad request\n");
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match (method, path) {
        ("POST", "/pause") => {
            routes.status.set_paused(true);
            return Response::text(200, "paused: received writes are spooled, not applied\n");
        }
        ("POST", "/resume") => {
            routes.status.set_paused(false);
            return Response::text(200, "resumed\n");
        }
        ("GET", _) => {}
        _ => return Response::text(405, "only GET (POST for /pause and /resume)\n"),
    }
    match path {
        "/metrics" => Response {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: routes.prometheus.render(),
        },
        "/status" => {
            let mut body = routes.status.to_json();
            body.push('\n');
            Response {
                code: 200,
                content_type: "application/json",
                body,
            }
        }
        _ => Response::text(404, "not found: try /metrics or /status\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn routes() -> Routes {
        // A recorder not installed globally: its handle renders what it holds.
        let prometheus = PrometheusBuilder::new().build_recorder().handle();
        Routes {
            prometheus,
            status: Arc::new(Status::new("sync", "t")),
        }
    }

    #[test]
    fn routes_and_refusals() {
        let r = routes();
        let ok = respond(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", &r);
        assert_eq!((ok.code, ok.content_type), (200, "application/json"));
        let v: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(v["mode"], "sync");
        assert_eq!(respond(b"GET /status?x=1 HTTP/1.0\r\n\r\n", &r).code, 200);
        assert_eq!(respond(b"GET /metrics HTTP/1.1\r\n\r\n", &r).code, 200);
        assert_eq!(respond(b"GET /nope HTTP/1.1\r\n\r\n", &r).code, 404);
        assert_eq!(respond(b"POST /status HTTP/1.1\r\n\r\n", &r).code, 405);
        assert_eq!(respond(b"GET /pause HTTP/1.1\r\n\r\n", &r).code, 404);
        assert_eq!(respond(b"POST /pause HTTP/1.1\r\n\r\n", &r).code, 200);
        let paused = respond(b"GET /status HTTP/1.1\r\n\r\n", &r);
        let v: serde_json::Value = serde_json::from_str(&paused.body).unwrap();
        assert_eq!(v["paused"], true);
        assert_eq!(respond(b"POST /resume HTTP/1.1\r\n\r\n", &r).code, 200);
        let v: serde_json::Value =
            serde_json::from_str(&respond(b"GET /status HTTP/1.1\r\n\r\n", &r).body).unwrap();
        assert_eq!(v.get("paused"), None);
        assert_eq!(respond(b"GET\r\n\r\n", &r).code, 400);
        assert_eq!(respond(b"GET / SMTP\r\n\r\n", &r).code, 400);
    }

    #[test]
    fn encoded_response_closes_and_counts_bytes() {
        let text = String::from_utf8(Response::text(405, "only GET\n").encode()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 9\r\n"), "{text}");
        assert!(text.contains("Allow: GET\r\n"), "{text}");
        assert!(
            text.ends_with("Connection: close\r\n\r\nonly GET\n"),
            "{text}"
        );
    }

    #[test]
    fn head_ends_at_the_blank_line() {
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.0\n\n"));
    }
}
