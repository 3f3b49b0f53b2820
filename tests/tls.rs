//! `rediss://`: tandem syncs between TLS-only endpoints of real servers (client
//! certificates required, Redis's default), and a TLS mistake is one clear error line.
//!
//! Each server listens on a plain port too, for the test's own checks; tandem is only
//! given the TLS port, where plain RESP is refused, so a passing sync went over TLS.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use support::data::{assert_same_db, fill_all_types};
use support::proc::{Tandem, wait_caught_up};
use support::*;

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    /// A CA that signed nothing here: trusting only it must fail.
    stranger_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(dir: &Path, name: &str, issuer: &CertifiedIssuer<'static, KeyPair>) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pki() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("tandem-tls-")
        .tempdir()
        .unwrap();
    let root = ca("tandem test CA");
    let stranger = ca("somebody else");
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca_path = write("ca.crt", root.pem());
    let stranger_ca = write("stranger.crt", stranger.pem());
    let server = leaf(dir.path(), "server", &root);
    let client = leaf(dir.path(), "client", &root);
    Pki {
        _dir: dir,
        ca: ca_path,
        server,
        client,
        stranger_ca,
    }
}

/// A server with a plain port (for the test) and a TLS port (for tandem).
fn tls_server(pki: &Pki) -> (RedisServer, u16) {
    let tls_port = free_port();
    let s = RedisServer::start_with(
        ServerOpts::default()
            .arg("tls-port", &tls_port.to_string())
            .arg("tls-cert-file", pki.server.0.to_str().unwrap())
            .arg("tls-key-file", pki.server.1.to_str().unwrap())
            .arg("tls-ca-cert-file", pki.ca.to_str().unwrap())
            .arg("repl-diskless-sync-delay", "0"),
    );
    (s, tls_port)
}

fn q(p: &Path) -> String {
    p.to_str().unwrap().replace('%', "%25").replace('&', "%26")
}

fn url(pki: &Pki, port: u16) -> String {
    format!(
        "rediss://127.0.0.1:{port}?cacert={}&cert={}&key={}",
        q(&pki.ca),
        q(&pki.client.0),
        q(&pki.client.1)
    )
}

#[test]
fn sync_runs_over_tls_with_client_certificates() {
    let pki = pki();
    let (src, src_tls) = tls_server(&pki);
    let (dst, dst_tls) = tls_server(&pki);
    let mut c = src.client();
    for db in [0, 2] {
        fill_all_types(&mut c, db, "tls:", 7 + db as u64);
    }
    let (s, t) = (url(&pki, src_tls), url(&pki, dst_tls));
    let mut tandem = Tandem::start(&[
        "redis", "sync", "--source", &s, "--target", &t, "--id", "tls",
    ]);
    wait_caught_up(&src, &dst, "tls", Duration::from_secs(60));
    // Incremental: counters and a list, then WAIT on the source: the ACK that counts
    // the write also travels over the TLS replica link.
    c.cmd(&["SELECT", "0"]);
    for i in 0..500 {
        c.cmd(&["INCR", &format!("tls:n{}", i % 7)]);
        c.cmd(&["RPUSH", "tls:list-inc", &i.to_string()]);
    }
    assert_eq!(c.cmd_int(&["WAIT", "1", "20000"]), 1);
    wait_caught_up(&src, &dst, "tls", Duration::from_secs(60));
    assert!(tandem.is_running(), "{}", tandem.log_text());
    for db in [0, 2] {
        assert_same_db(&src, db, &dst, db, Duration::from_millis(1500));
    }
    let mut d = dst.client();
    assert_eq!(d.cmd_int(&["LLEN", "tls:list-inc"]), 500);
    let total: i64 = (0..7)
        .map(|i| {
            d.cmd_text(&["GET", &format!("tls:n{i}")])
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 500);
}

/// Runs `tandem redis sync` that must fail at once; returns its single error line.
fn one_error_line(source: &str, target: &str) -> String {
    let mut t = Tandem::start(&["redis", "sync", "--source", source, "--target", target]);
    let (err, log) = t.one_error_line(Duration::from_secs(60));
    assert!(!log.contains("s3cret"), "{log}");
    err
}

#[test]
fn tls_mistakes_are_one_clear_error() {
    let pki = pki();
    let (src, src_tls) = tls_server(&pki);
    let dst = RedisServer::start();
    let target = dst.url();
    let endpoint = format!("127.0.0.1:{src_tls}");

    // The server's certificate is signed by a CA the URL does not trust.
    let untrusted = format!(
        "rediss://:s3cret@127.0.0.1:{src_tls}?cacert={}&cert={}&key={}",
        q(&pki.stranger_ca),
        q(&pki.client.0),
        q(&pki.client.1)
    );
    let e = one_error_line(&untrusted, &target);
    assert!(
        e.contains(&endpoint) && e.contains("TLS") && e.contains("certificate"),
        "{e}"
    );

    // The server requires a client certificate (tls-auth-clients defaults to yes).
    let anonymous = format!("rediss://127.0.0.1:{src_tls}?cacert={}", q(&pki.ca));
    let e = one_error_line(&anonymous, &target);
    assert!(
        e.contains(&endpoint) && e.contains("client certificate"),
        "{e}"
    );

    // A CA file that is not there.
    let missing = format!("rediss://127.0.0.1:{src_tls}?cacert=/nonexistent/ca.pem");
    let e = one_error_line(&missing, &target);
    assert!(
        e.contains("/nonexistent/ca.pem") && e.contains(&endpoint),
        "{e}"
    );

    // TLS spoken to a plain port.
    let plain = format!("rediss://127.0.0.1:{}?cacert={}", src.port, q(&pki.ca));
    let e = one_error_line(&plain, &target);
    assert!(
        e.contains(&format!("127.0.0.1:{}", src.port)) && e.contains("does the port speak TLS?"),
        "{e}"
    );

    // Plain RESP spoken to the TLS port.
    let e = one_error_line(&format!("redis://127.0.0.1:{src_tls}"), &target);
    assert!(e.contains(&endpoint), "{e}");

    // Query options without TLS are refused before anything connects.
    let e = one_error_line(&format!("redis://127.0.0.1:{src_tls}?cacert=x"), &target);
    assert!(e.contains("use rediss://"), "{e}");
}
