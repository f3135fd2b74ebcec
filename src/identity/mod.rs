//! Who made a call and for whom, proven rather than declared. The agent
//! headers (`x-agent-id`, `x-agent-on-behalf-of`) are what the agent says;
//! this module checks what it can prove:
//!
//! - a bearer token (JWT) signed by a configured issuer ([`jwt`], keys from
//!   [`jwks`], signatures checked with ring by [`crypto`]), which can also
//!   prove delegation: RFC 8693's `act` claim names the agent, `sub` the
//!   person it acts for;
//! - a client certificate on the proxy listener ([`mtls`]);
//! - in sidecar mode, the pod's own identity from its environment (only
//!   calls from inside the pod reach a loopback listener).
//!
//! The result, a [`Verified`], reaches the policy (`input.agent.verified`)
//! and the record next to what the headers declared, with the proof (key
//! id, `jti`, expiry; certificate fingerprint) and never the credential.
//! A credential that is presented and does not verify refuses the call
//! (401) on any route; a route with `identity.required` refuses a call
//! that proves nothing.

pub mod crypto;
pub mod jwks;
pub mod jwt;
pub mod mtls;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::approval::identity::normalise;
use crate::capture::Agent;
use crate::config::{CertSubject, IdentityConfig, MtlsConfig};

/// How an identity was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// A bearer token (JWT) signed by the configured issuer.
    Jwt,
    /// A client certificate that chains to `identity.mtls.client_ca`.
    Mtls,
    /// The sidecar's pod, asserted from configuration (sidecar mode).
    Pod,
}

impl Method {
    /// The name used in the policy input and the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Jwt => "jwt",
            Method::Mtls => "mtls",
            Method::Pod => "pod",
        }
    }
}

/// An identity countersign verified for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// How it was proven.
    pub method: Method,
    /// Who the credential is for: the token's subject (with delegation,
    /// the person the agent acts for), the certificate's mapped name, or
    /// the pod.
    pub subject: String,
    /// Who vouches for it: the token's issuer (none for a certificate or a pod).
    pub issuer: Option<String>,
    /// The agent acting for the subject (RFC 8693 `act.sub`), when the
    /// token names one.
    pub actor: Option<String>,
    /// What the credential asserts: a token's claims, a certificate's names.
    pub claims: Value,
    /// How it was proven, for the record: key id, `jti`, expiry; or the
    /// certificate's SHA-256 fingerprint. Never the credential itself.
    pub proof: Value,
}

impl Verified {
    /// The agent that made the call: the actor when the token names one,
    /// else the subject.
    pub fn agent(&self) -> &str {
        self.actor.as_deref().unwrap_or(&self.subject)
    }

    /// The person the agent acted for: the subject, when an actor is named.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.actor.as_ref().map(|_| self.subject.as_str())
    }

    /// The declared fields (`id`, `on_behalf_of`) that name someone else
    /// than this identity proves, compared as separation of duties
    /// compares names. A field that is not declared, or not proven, is no
    /// mismatch.
    pub fn mismatches(&self, declared: &Agent) -> Vec<&'static str> {
        let differs = |declared: Option<&str>, proven: Option<&str>| match (declared, proven) {
            (Some(d), Some(p)) => normalise(d) != normalise(p),
            _ => false,
        };
        let mut out = Vec::new();
        if differs(declared.id.as_deref(), Some(self.agent())) {
            out.push("id");
        }
        if differs(declared.on_behalf_of.as_deref(), self.on_behalf_of()) {
            out.push("on_behalf_of");
        }
        out
    }

    /// `agent.verified` in the policy input and the record.
    pub fn to_json(&self, declared: &Agent) -> Value {
        json!({
            "method": self.method.as_str(),
            "subject": self.subject,
            "issuer": self.issuer,
            "actor": self.actor,
            "agent": self.agent(),
            "on_behalf_of": self.on_behalf_of(),
            "claims": self.claims,
            "proof": self.proof,
            "mismatch": self.mismatches(declared),
        })
    }
}

/// Why a call's identity was refused (401).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The bearer token did not verify.
    #[error("the bearer token was refused: {0}")]
    Token(#[from] jwt::TokenError),
    /// The client certificate did not verify, or names no one.
    #[error("the client certificate was refused: {0}")]
    Certificate(String),
    /// `identity.mtls.required` and no certificate came with the call.
    #[error("this listener requires a client certificate (identity.mtls.required) and none was presented")]
    CertificateRequired,
}

impl IdentityError {
    /// Whether the answer should invite a bearer token (`WWW-Authenticate`).
    pub fn is_token(&self) -> bool {
        matches!(self, IdentityError::Token(_))
    }
}

/// The configured ways of proving identity, for every call.
pub struct Identity {
    jwt: Option<jwt::TokenVerifier>,
    mtls: Option<MtlsConfig>,
    pod: Option<Verified>,
}

impl Identity {
    /// Nothing is verified: identity is what the headers declare.
    pub fn none() -> Identity {
        Identity {
            jwt: None,
            mtls: None,
            pod: None,
        }
    }

    /// Builds the verifiers: reads the pod identity from its environment
    /// variable and a JWKS file now (a JWKS URL is fetched by
    /// [`jwks::refresh`]). The error names the field.
    pub fn from_config(config: &IdentityConfig) -> Result<Identity, String> {
        crypto::install();
        let jwt = match &config.jwt {
            None => None,
            Some(j) => Some(jwt::TokenVerifier::new(j)?),
        };
        let pod = match &config.pod {
            None => None,
            Some(p) => {
                let subject = std::env::var(&p.subject_env)
                    .ok()
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        format!(
                            "identity.pod.subject_env: the environment variable {} is not set or empty (the Helm chart fills it from the downward API)",
                            p.subject_env
                        )
                    })?;
                Some(Verified {
                    method: Method::Pod,
                    subject,
                    issuer: None,
                    actor: None,
                    claims: json!({}),
                    proof: json!({"source": format!("environment variable {}", p.subject_env)}),
                })
            }
        };
        Ok(Identity {
            jwt,
            mtls: config.mtls.clone(),
            pod,
        })
    }

    /// The bearer-token verifier, when tokens are configured.
    pub fn jwt(&self) -> Option<&jwt::TokenVerifier> {
        self.jwt.as_ref()
    }

    /// Whether `header` (lower-case) with `value` is the bearer token
    /// countersign consumed: it is not forwarded (its audience is
    /// countersign, not the upstream).
    pub fn consumes(&self, header: &str, value: &[u8]) -> bool {
        self.jwt
            .as_ref()
            .is_some_and(|j| j.header() == header && jwt::is_bearer(value))
    }

    /// Verifies what the call presents: a bearer token, a client
    /// certificate (`peer`, from the TLS handshake), and in sidecar mode
    /// the pod. Anything presented must verify; when several do, the token
    /// is the identity (it can prove delegation), then the certificate,
    /// then the pod. `Ok(None)`: nothing was proven.
    pub async fn verify(
        &self,
        headers: &hyper::HeaderMap,
        peer: Option<&mtls::Presented>,
    ) -> Result<Option<Verified>, IdentityError> {
        let certificate = match (&self.mtls, peer) {
            (None, _) => None,
            (Some(m), None) if m.required => return Err(IdentityError::CertificateRequired),
            (Some(_), None) => None,
            (Some(_), Some(mtls::Presented::Invalid(e))) => {
                return Err(IdentityError::Certificate(e.clone()))
            }
            (Some(m), Some(mtls::Presented::Valid(c))) => Some(from_certificate(c, m.subject)?),
        };
        let token = match &self.jwt {
            None => None,
            Some(j) => match j.bearer(headers)? {
                None => None,
                Some(token) => Some(j.verify(token).await?),
            },
        };
        Ok(token.or(certificate).or_else(|| self.pod.clone()))
    }
}

/// The identity a verified certificate proves: the name `subject` picks.
fn from_certificate(
    c: &mtls::Certificate,
    subject: CertSubject,
) -> Result<Verified, IdentityError> {
    let (name, what) = match subject {
        CertSubject::UriSan => (one(&c.uri_sans), "URI SAN"),
        CertSubject::DnsSan => (one(&c.dns_sans), "DNS SAN"),
        CertSubject::Cn => (c.cn.clone(), "common name"),
    };
    let name = name.ok_or_else(|| {
        IdentityError::Certificate(format!(
            "it verifies but has no single {what} to identify the client by (identity.mtls.subject)"
        ))
    })?;
    Ok(Verified {
        method: Method::Mtls,
        subject: name,
        issuer: None,
        actor: None,
        claims: json!({"uri_sans": c.uri_sans, "dns_sans": c.dns_sans, "cn": c.cn}),
        proof: json!({"sha256": c.sha256, "san": c.uri_sans.iter().chain(&c.dns_sans).collect::<Vec<_>>()}),
    })
}

/// The one name of a list; none when there are none or several (which of
/// several would be a guess).
fn one(names: &[String]) -> Option<String> {
    match names {
        [only] if !only.trim().is_empty() => Some(only.clone()),
        _ => None,
    }
}

/// The verified identity as the record and the policy see it.
pub fn verified_json(verified: Option<&Arc<Verified>>, declared: &Agent) -> Value {
    verified.map_or(Value::Null, |v| v.to_json(declared))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(subject: &str, actor: Option<&str>) -> Verified {
        Verified {
            method: Method::Jwt,
            subject: subject.into(),
            issuer: Some("https://issuer".into()),
            actor: actor.map(str::to_string),
            claims: json!({}),
            proof: json!({}),
        }
    }

    fn declared(id: Option<&str>, obo: Option<&str>) -> Agent {
        Agent {
            id: id.map(str::to_string),
            on_behalf_of: obo.map(str::to_string),
            ..Agent::default()
        }
    }

    #[test]
    fn delegation_names_the_actor_as_agent_and_the_subject_as_principal() {
        let v = token("carol", Some("ap-agent-7"));
        assert_eq!(v.agent(), "ap-agent-7");
        assert_eq!(v.on_behalf_of(), Some("carol"));
        let alone = token("system:serviceaccount:ap:agent", None);
        assert_eq!(alone.agent(), "system:serviceaccount:ap:agent");
        assert_eq!(alone.on_behalf_of(), None);
    }

    #[test]
    fn mismatches_compare_in_normal_form_and_ignore_what_is_not_proven() {
        let v = token("carol", Some("ap-agent-7"));
        assert!(v
            .mismatches(&declared(Some("AP-Agent-7"), Some(" Carol ")))
            .is_empty());
        assert_eq!(
            v.mismatches(&declared(Some("other"), Some("bob"))),
            ["id", "on_behalf_of"]
        );
        assert!(v.mismatches(&declared(None, None)).is_empty());
        let alone = token("ap-agent-7", None);
        assert!(
            alone
                .mismatches(&declared(Some("ap-agent-7"), Some("bob")))
                .is_empty(),
            "a token without an actor proves nothing about on_behalf_of"
        );
    }

    #[test]
    fn a_certificate_identifies_by_one_name_only() {
        let c = mtls::Certificate {
            sha256: "ab".into(),
            uri_sans: vec!["spiffe://corp/ns/ap/sa/agent".into()],
            dns_sans: vec!["a.corp".into(), "b.corp".into()],
            cn: Some("agent".into()),
        };
        let v = from_certificate(&c, CertSubject::UriSan).unwrap();
        assert_eq!(v.subject, "spiffe://corp/ns/ap/sa/agent");
        assert_eq!(v.proof["sha256"], "ab");
        assert_eq!(
            from_certificate(&c, CertSubject::Cn).unwrap().subject,
            "agent"
        );
        assert!(from_certificate(&c, CertSubject::DnsSan).is_err());
    }
}
