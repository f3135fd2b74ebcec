//! TLS to the database with rustls (ring), one verifier per `sslmode`:
//! verify-full checks the chain and the host name, verify-ca the chain
//! only, require and prefer encrypt without checking who answers (libpq's
//! meanings, kept so a connection string means here what it means to psql).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::dsn::SslMode;

/// The client's mode and the TLS connector for `mode`. `ca_file` (PEM)
/// replaces the system roots, like libpq's `sslrootcert`: a private
/// database CA should not share trust with every public CA.
pub fn connector(
    mode: SslMode,
    ca_file: Option<&Path>,
) -> Result<(postgres::config::SslMode, MakeRustlsConnect), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_mode = match mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca_file) {
        (SslMode::VerifyFull, _) => rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(ca_file)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("cannot build the certificate verifier: {e}"))?,
        // Without a CA file the chain would be checked against every
        // public CA, and without the name check any certificate anyone
        // bought would pass: that protects nothing, so it is refused.
        (SslMode::VerifyCa, None) => {
            return Err(
                "sslmode=verify-ca needs audit.ca_file (the CA that issued the \
                        database's certificate); with the system's public roots use verify-full"
                    .into(),
            )
        }
        // libpq too treats require as verify-ca when given a CA file.
        (SslMode::VerifyCa | SslMode::Require, Some(ca)) => Arc::new(NoHostCheck {
            roots: Some(Arc::new(roots(Some(ca))?)),
            algorithms: provider.signature_verification_algorithms,
        }),
        (SslMode::Require | SslMode::Prefer | SslMode::Disable, _) => Arc::new(NoHostCheck {
            roots: None,
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17+ checks the ALPN name when a client sends one.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok((client_mode, MakeRustlsConnect::new(config)))
}

/// The CA file's certificates, or the system's roots without one.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let Some(ca) = ca_file else {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        return Ok(roots);
    };
    let bad = |e: &dyn std::fmt::Display| format!("audit.ca_file {}: {e}", ca.display());
    let pem = std::fs::read(ca).map_err(|e| bad(&e))?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"holds no PEM certificates"));
    }
    Ok(roots)
}

/// A verifier that never compares the certificate's names with the host.
/// With `roots` (verify-ca, or require with a CA file) the certificate must
/// chain to the CA file: for servers reached by an address their
/// certificate does not list. Without (require, prefer) any certificate is
/// accepted, so the connection is private against a passive listener but
/// not against someone who can answer in the server's place. Either way the
/// handshake signature is checked (the server holds the key of the
/// certificate it shows).
#[derive(Debug)]
struct NoHostCheck {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoHostCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
