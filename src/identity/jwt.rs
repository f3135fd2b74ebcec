//! Bearer tokens: `Authorization: Bearer <JWT>` (or the configured header),
//! verified against the issuer's keys ([`super::jwks`]): the signature
//! (asymmetric algorithms only, each key only with the algorithms it is
//! for), `iss`, `aud`, `exp` and `nbf` (with `identity.jwt.leeway` of clock
//! skew), and no critical header extension. The subject comes from
//! `identity.jwt.claims.subject` (`sub`), the actor from
//! `identity.jwt.claims.actor` (RFC 8693 `act.sub`).
//!
//! No message here quotes the token: errors name the claim or the key id.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, Validation};
use serde_json::{json, Value};

use super::crypto::ACCEPTED;
use super::jwks::{Key, Keys};
use super::{Method, Verified};
use crate::config::JwtConfig;

/// Why a bearer token was refused. Each says what was wrong with it,
/// never what it was.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token header came more than once.
    #[error("the `{0}` header is sent more than once; send one token")]
    Repeated(String),
    /// Not three base64url parts with a JSON header.
    #[error("it is not a JWT ({0})")]
    Malformed(String),
    /// `none`, HMAC or an unknown algorithm.
    #[error("it is signed with `{0}`; only RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 and EdDSA are accepted")]
    Algorithm(String),
    /// A `crit` header: extensions that would change its meaning.
    #[error("its header has critical extensions ({0}) that countersign does not understand")]
    Critical(String),
    /// No key has the token's `kid`.
    #[error("no key with id `{0}` is in the issuer's key set (JWKS)")]
    UnknownKey(String),
    /// No key has been loaded (a JWKS URL not fetched yet).
    #[error("no signing keys are loaded yet (the JWKS has not been fetched)")]
    NoKeys,
    /// The key named is not for the token's algorithm.
    #[error("key `{kid}` is not for {alg:?}")]
    AlgorithmNotForKey {
        /// The key id.
        kid: String,
        /// The token's algorithm.
        alg: Algorithm,
    },
    /// The token names no key id and no key is for its algorithm.
    #[error("it names no key id and no key in the issuer's key set is for {0:?}")]
    NoKeyFor(Algorithm),
    /// The signature does not verify.
    #[error("its signature does not verify with the issuer's keys")]
    BadSignature,
    /// Past `exp` (plus leeway).
    #[error("it has expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("it is not valid yet (nbf)")]
    NotYetValid,
    /// Another `iss`.
    #[error("it was not issued by `{0}` (identity.jwt.issuer)")]
    WrongIssuer(String),
    /// Not for this audience.
    #[error("it is not for the audience `{0}` (identity.jwt.audience)")]
    WrongAudience(String),
    /// A required claim is missing or of the wrong type.
    #[error("its `{0}` claim is missing or not of the right type")]
    Claim(String),
}

/// Checks bearer tokens for one issuer.
pub struct TokenVerifier {
    config: JwtConfig,
    keys: Keys,
}

/// Whether a header value is a `Bearer` credential.
pub fn is_bearer(value: &[u8]) -> bool {
    value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ")
}

impl TokenVerifier {
    /// A verifier for `config`; a JWKS file is read now.
    pub fn new(config: &JwtConfig) -> Result<TokenVerifier, String> {
        Ok(TokenVerifier {
            keys: Keys::new(config)?,
            config: config.clone(),
        })
    }

    /// The key set.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The header tokens come in (lower-case).
    pub fn header(&self) -> &str {
        &self.config.header
    }

    /// The token in the request, if it carries a `Bearer` credential in
    /// the configured header. Other schemes (`Basic ...`) are not tokens
    /// for countersign and are left alone.
    pub fn bearer<'h>(&self, headers: &'h hyper::HeaderMap) -> Result<Option<&'h str>, TokenError> {
        let mut values = headers.get_all(self.config.header.as_str()).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(TokenError::Repeated(self.config.header.clone()));
        }
        if !is_bearer(value.as_bytes()) {
            return Ok(None);
        }
        let token = value
            .to_str()
            .map_err(|_| TokenError::Malformed("the header is not ASCII".into()))?;
        Ok(Some(token[7..].trim()))
    }

    /// Verifies a token and says who it proves.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let (alg, kid) = header_of(token)?;
        let mut set = self.keys.current();
        let named = |set: &super::jwks::KeySet| -> Vec<usize> {
            set.keys
                .iter()
                .enumerate()
                .filter(|(_, k)| match &kid {
                    Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
                    None => k.algorithms.contains(&alg),
                })
                .map(|(i, _)| i)
                .collect()
        };
        let mut candidates = named(&set);
        if candidates.is_empty() && self.keys.refresh_for_unknown_key().await {
            set = self.keys.current();
            candidates = named(&set);
        }
        if candidates.is_empty() {
            return Err(match (&kid, set.keys.is_empty()) {
                (_, true) => TokenError::NoKeys,
                (Some(kid), false) => TokenError::UnknownKey(kid.clone()),
                (None, false) => TokenError::NoKeyFor(alg),
            });
        }
        let mut last = TokenError::BadSignature;
        for i in candidates {
            let key = &set.keys[i];
            match self.check(token, alg, key) {
                Ok(claims) => return self.identity(claims, alg, key, &set.fingerprint),
                // Without a kid every key of the algorithm is tried.
                Err(TokenError::BadSignature) => last = TokenError::BadSignature,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn check(&self, token: &str, alg: Algorithm, key: &Key) -> Result<Value, TokenError> {
        if !key.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotForKey {
                kid: key.kid.clone().unwrap_or_default(),
                alg,
            });
        }
        let mut v = Validation::new(alg);
        v.leeway = self.config.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        // Required claims must parse: one of the wrong type counts as missing.
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        decode::<Value>(token, &key.key, &v)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer(self.config.issuer.clone()),
                ErrorKind::InvalidAudience => {
                    TokenError::WrongAudience(self.config.audience.clone())
                }
                ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
                    TokenError::Claim(c.clone())
                }
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{alg:?}")),
                ErrorKind::InvalidToken => {
                    TokenError::Malformed("its expiry is out of range".into())
                }
                other => TokenError::Malformed(format!("{other:?}")),
            })
    }

    /// The identity a verified token proves, and the proof the record keeps.
    fn identity(
        &self,
        claims: Value,
        alg: Algorithm,
        key: &Key,
        jwks: &str,
    ) -> Result<Verified, TokenError> {
        let subject = claim(&claims, &self.config.subject_claim)
            .ok_or_else(|| TokenError::Claim(self.config.subject_claim.clone()))?;
        let actor = match lookup(&claims, &self.config.actor_claim) {
            None => None,
            Some(_) => Some(
                claim(&claims, &self.config.actor_claim)
                    .ok_or_else(|| TokenError::Claim(self.config.actor_claim.clone()))?,
            ),
        };
        // `iss` must be the string it was matched against: the token
        // library also takes an array holding it, which would leave the
        // record without the issuer it trusted.
        let issuer = claims["iss"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| TokenError::Claim("iss".into()))?;
        // A NumericDate may have a fraction (RFC 7519); kept to the second.
        let time = |name: &str| {
            claims[name]
                .as_f64()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .and_then(|d| UNIX_EPOCH.checked_add(Duration::from_secs(d.as_secs())))
                .map(|t| humantime::format_rfc3339(t).to_string())
        };
        let proof = json!({
            "alg": format!("{alg:?}"),
            "kid": key.kid,
            "jti": claims.get("jti"),
            "expires_at": time("exp"),
            "issued_at": time("iat"),
            "jwks_sha256": jwks,
        });
        Ok(Verified {
            method: Method::Jwt,
            subject,
            issuer: Some(issuer),
            actor,
            claims,
            proof,
        })
    }
}

/// The token's algorithm and key id, read from its header before anything
/// else: `none`, HMAC and critical extensions are refused here.
fn header_of(token: &str) -> Result<(Algorithm, Option<String>), TokenError> {
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("it does not have three parts".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed("its header is not base64url".into()))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("its header is not JSON".into()))?;
    let named = header["alg"]
        .as_str()
        .ok_or_else(|| TokenError::Malformed("its header names no `alg`".into()))?;
    let alg = named
        .parse::<Algorithm>()
        .ok()
        .filter(|a| ACCEPTED.contains(a))
        .ok_or_else(|| TokenError::Algorithm(printable(named)))?;
    if let Some(crit) = header.get("crit") {
        return Err(TokenError::Critical(printable(&crit.to_string())));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::Malformed("its `kid` is not a string".into())),
    };
    Ok((alg, kid))
}

/// A value from the token quoted in a message: short, one line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// The value at a dotted claim path (`act.sub`).
fn lookup<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(claims, |v, name| v.get(name))
}

/// A claim that must be a non-empty string.
fn claim(claims: &Value, path: &str) -> Option<String> {
    lookup(claims, path)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn none_hmac_and_critical_headers_are_refused_before_any_key_is_used() {
        for (header, want) in [
            (json!({"alg": "none"}), "none"),
            (json!({"alg": "HS256", "kid": "k"}), "HS256"),
            (json!({"alg": "RS256", "crit": ["exp"]}), "critical"),
            (json!({"kid": "k"}), "no `alg`"),
        ] {
            let token = format!("{}.{}.", b64(&header), b64(&json!({"sub": "x"})));
            let e = header_of(&token).unwrap_err().to_string();
            assert!(e.contains(want), "{header}: {e}");
        }
        assert!(header_of("abc").is_err());
        let (alg, kid) = header_of(&format!(
            "{}.e30.sig",
            b64(&json!({"alg": "ES256", "kid": "k1"}))
        ))
        .unwrap();
        assert_eq!((alg, kid.as_deref()), (Algorithm::ES256, Some("k1")));
    }

    #[test]
    fn claim_paths_reach_into_act() {
        let claims =
            json!({"sub": "carol", "act": {"sub": "ap-agent-7", "act": {"sub": "orchestrator"}}});
        assert_eq!(claim(&claims, "sub").as_deref(), Some("carol"));
        assert_eq!(claim(&claims, "act.sub").as_deref(), Some("ap-agent-7"));
        assert_eq!(
            claim(&claims, "act.act.sub").as_deref(),
            Some("orchestrator")
        );
        assert_eq!(claim(&json!({"sub": " "}), "sub"), None);
        assert_eq!(claim(&json!({"sub": 7}), "sub"), None);
        assert!(is_bearer(b"Bearer abc") && is_bearer(b"bearer abc"));
        assert!(!is_bearer(b"Basic abc") && !is_bearer(b"Bearer "));
    }
}
