//! TLS for `rediss://` endpoints (rustls with the ring provider).
//!
//! Every connection tandem opens — replica link, target writes, probes, cluster nodes —
//! goes through [`crate::redis::conn::Conn`], which calls [`connect`] here when the
//! endpoint says TLS. The settings come from the URL's query (see `url.rs`).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::conn::ConnError;
use super::url::{Endpoint, TlsOpts};

/// Handshake over `tcp` as `ep` says. `shown` is the endpoint as printed in errors.
pub async fn connect(
    tcp: TcpStream,
    ep: &Endpoint,
    shown: &str,
) -> Result<TlsStream<TcpStream>, ConnError> {
    let fail = |detail: String| ConnError::Tls {
        endpoint: shown.to_string(),
        detail,
    };
    let config = client_config(&ep.tls_opts).map_err(fail)?;
    let name = ep.tls_opts.sni.as_deref().unwrap_or(&ep.host);
    let name = ServerName::try_from(name.to_string())
        .map_err(|_| fail(format!("{name:?} is not a valid server name")))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| io_error(shown, e))
}

/// An I/O error on a TLS connection: the ones rustls raised (bad certificate, an alert
/// from the server) are TLS errors that retrying cannot fix; the rest are the network's.
pub fn io_error(shown: &str, source: std::io::Error) -> ConnError {
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(e) => ConnError::Tls {
            endpoint: shown.to_string(),
            detail: describe(e),
        },
        None => ConnError::Io {
            endpoint: shown.to_string(),
            source,
        },
    }
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (add cert=…&key=… to the URL)".into()
        }
        rustls::Error::InvalidCertificate(c) => {
            format!(
                "the server's certificate is not accepted ({c:?}); cacert=… names the CA that signed it"
            )
        }
        other => other.to_string(),
    }
}

fn client_config(o: &TlsOpts) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if o.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(o)?)
    };
    let config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("no certificate in {}", cert.display()));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key do not fit: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn roots(o: &TlsOpts) -> Result<Arc<RootCertStore>, String> {
    let Some(ca) = &o.ca else {
        return native_roots();
    };
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read CA certificates from {}: {e}", ca.display()))?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("no usable CA certificate in {}", ca.display()));
    }
    Ok(Arc::new(store))
}

/// The system trust store, read once per process.
fn native_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "no CA certificates in the system store; name one with cacert=…".into(),
                );
            }
            Ok(Arc::new(store))
        })
        .clone()
}

/// `insecure=true`: any certificate is accepted, but the handshake signatures are still
/// checked (so the session is at least with the holder of the presented key).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
