//! Client certificates on the proxy listener. The TLS handshake asks for a
//! certificate and checks that the client holds its private key, but lets
//! any certificate through; right after the handshake the chain is checked
//! against `identity.mtls.client_ca` ([`ClientCerts::check`]) and the
//! verdict travels with every request of the connection. That way a
//! certificate that does not verify is answered with a recorded 401 like a
//! bad token, instead of a handshake failure nobody can see, and a request
//! can never be served from a connection whose certificate was not checked:
//! the pipeline refuses it on any route.
//!
//! The names a certificate carries (URI and DNS SANs through rustls' own
//! X.509 parser, the subject's common name) and its SHA-256 fingerprint are
//! what the policy and the record get.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// What a client presented on its connection.
#[derive(Debug, Clone)]
pub enum Presented {
    /// A certificate that chains to the client CA.
    Valid(Certificate),
    /// A certificate that does not; why.
    Invalid(String),
}

/// The facts of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    /// URI subject alternative names (SPIFFE IDs).
    pub uri_sans: Vec<String>,
    /// DNS subject alternative names.
    pub dns_sans: Vec<String>,
    /// The subject's common name, when it has exactly one.
    pub cn: Option<String>,
}

/// The client CA of the proxy listener: the lenient verifier the handshake
/// uses and the strict one that judges the certificate afterwards.
#[derive(Debug)]
pub struct ClientCerts {
    strict: Arc<dyn ClientCertVerifier>,
}

impl ClientCerts {
    /// Reads the CA bundle (PEM). The error names the file.
    pub fn load(client_ca: &Path) -> Result<ClientCerts, String> {
        let bad = |e: &dyn std::fmt::Display| {
            format!("identity.mtls.client_ca {}: {e}", client_ca.display())
        };
        let pem = std::fs::read(client_ca).map_err(|e| bad(&e))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        if roots.is_empty() {
            return Err(bad(&"holds no PEM certificates"));
        }
        let strict = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| bad(&e))?;
        Ok(ClientCerts { strict })
    }

    /// The verifier for the TLS handshake: asks for a certificate (naming
    /// the client CA), checks the client's proof that it holds the key,
    /// and leaves the chain to [`ClientCerts::check`].
    pub fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(AfterHandshake(self.strict.clone()))
    }

    /// Judges the certificate a client presented on a finished handshake;
    /// `None` when it presented none.
    pub fn check(&self, chain: Option<&[CertificateDer<'static>]>) -> Option<Presented> {
        let (end_entity, intermediates) = chain?.split_first()?;
        Some(
            match self
                .strict
                .verify_client_cert(end_entity, intermediates, UnixTime::now())
            {
                Ok(_) => match facts(end_entity) {
                    Ok(c) => Presented::Valid(c),
                    Err(e) => Presented::Invalid(e),
                },
                Err(e) => Presented::Invalid(format!(
                    "it does not verify against identity.mtls.client_ca: {e}"
                )),
            },
        )
    }
}

/// The handshake side of [`ClientCerts`]: every check but the chain's.
#[derive(Debug)]
struct AfterHandshake(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AfterHandshake {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A call without a certificate is answered (and recorded) by the
        // pipeline: 401 where one is required.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Checked right after the handshake by ClientCerts::check; every
        // request of the connection carries the verdict.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The names and fingerprint of a certificate.
fn facts(der: &CertificateDer<'_>) -> Result<Certificate, String> {
    let cert =
        webpki::EndEntityCert::try_from(der).map_err(|e| format!("it cannot be read: {e}"))?;
    Ok(Certificate {
        sha256: hex::encode(Sha256::digest(der.as_ref())),
        uri_sans: cert.valid_uri_names().map(str::to_string).collect(),
        dns_sans: cert.valid_dns_names().map(str::to_string).collect(),
        cn: common_name(cert.subject()),
    })
}

/// One DER element: its tag, its content and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SET: u8 = 0x31;
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
/// UTF8String, PrintableString, IA5String.
const TEXT: [u8; 3] = [0x0c, 0x13, 0x16];

/// The subject's common name from its DER `Name` (the content of the
/// outer SEQUENCE, as webpki gives it): `None` when there is none, more
/// than one, or the name does not parse.
fn common_name(name: &[u8]) -> Option<String> {
    let mut found = None;
    let mut rdns = name;
    while !rdns.is_empty() {
        let (tag, set, rest) = element(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (tag, attribute, rest) = element(attributes)?;
            attributes = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = element(attribute)?;
            if tag != OID || oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            if !TEXT.contains(&tag) || found.is_some() {
                return None;
            }
            found = Some(String::from_utf8(text.to_vec()).ok()?);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_name_is_read_from_a_der_name() {
        // SET { SEQUENCE { OID 2.5.4.6, PrintableString "DE" } },
        // SET { SEQUENCE { OID 2.5.4.3, UTF8String "agent-7" } }
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'D', b'E', 0x31,
            0x10, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x07, b'a', b'g', b'e', b'n',
            b't', b'-', b'7',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("agent-7"));
        assert_eq!(common_name(&name[..13]), None, "no CN");
        assert_eq!(common_name(&name[..20]), None, "cut short");
        let twice = [&name[..], &name[13..]].concat();
        assert_eq!(common_name(&twice), None, "two CNs are ambiguous");
    }
}
