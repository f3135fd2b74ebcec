//! The keys that sign bearer tokens: a JWKS (RFC 7517) read into the keys
//! countersign accepts, held so that a new set replaces the old one whole.
//! A `jwks_file` is read at start and reloaded when it changes
//! ([`crate::reload`]); a `jwks_url` is fetched at start, every
//! `identity.jwt.refresh`, and early when a token names a key id the set
//! does not have (a rotation). A set that fails to load or fetch never
//! replaces the last good one.
//!
//! Only signature keys of the asymmetric families are taken, each with the
//! algorithms it may verify: its own `alg` when the JWKS names one, else
//! every algorithm of its type and curve. Symmetric (`oct`) keys,
//! encryption keys and curves ring cannot check are left out and named in
//! the log.

use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::crypto::ACCEPTED;
use crate::app::Shared;
use crate::config::{JwksSource, JwtConfig};

/// Largest JWKS accepted, in bytes (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The soonest a token with an unknown key id may trigger another fetch.
const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

/// One accepted signing key.
#[derive(Debug)]
pub struct Key {
    /// Its `kid`, if the JWKS gives one.
    pub kid: Option<String>,
    /// The algorithms it may verify.
    pub algorithms: Vec<Algorithm>,
    /// The public key.
    pub key: DecodingKey,
}

/// A loaded key set.
#[derive(Debug, Default)]
pub struct KeySet {
    /// The keys taken.
    pub keys: Vec<Key>,
    /// Keys left out, each with why (for the log).
    pub skipped: Vec<String>,
    /// SHA-256 of the JWKS as read, hex: which set is in force.
    pub fingerprint: String,
}

/// Why a JWKS was not taken.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("it is not a JWKS (a JSON object with a `keys` array): {0}")]
    NotJwks(String),
    /// Not one key countersign can use.
    #[error("it has no signing key countersign accepts (RSA, EC P-256/P-384 or Ed25519, for signatures){}", skipped(.0))]
    NoUsableKey(Vec<String>),
    /// Over [`MAX_JWKS_BYTES`].
    #[error("it is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// The URL could not be fetched.
    #[error("cannot fetch {url}: {error}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        error: String,
    },
}

fn skipped(list: &[String]) -> String {
    if list.is_empty() {
        String::new()
    } else {
        format!("; left out: {}", list.join("; "))
    }
}

/// Reads a JWKS document into the keys countersign accepts.
pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| JwksError::NotJwks(e.to_string()))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksError::NotJwks("there is no `keys` array".into()))?;
    let mut set = KeySet {
        fingerprint: hex::encode(Sha256::digest(bytes)),
        ..KeySet::default()
    };
    for (i, entry) in entries.iter().enumerate() {
        let name = match entry.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key `{kid}`"),
            None => format!("keys[{i}]"),
        };
        match key(entry) {
            Ok(k) => set.keys.push(k),
            Err(why) => set.skipped.push(format!("{name}: {why}")),
        }
    }
    if set.keys.is_empty() {
        return Err(JwksError::NoUsableKey(set.skipped));
    }
    Ok(set)
}

/// One JWK, if countersign can verify with it.
fn key(entry: &Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone())
        .map_err(|e| format!("not a JWK countersign reads ({e})"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (`use: enc`)".into());
    }
    let possible: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("the curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            return Err(format!("the curve {:?} is not supported", p.curve))
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (`oct`) key: shared secrets are never accepted".into())
        }
    };
    let algorithms = match entry.get("alg").and_then(Value::as_str) {
        None => possible,
        Some(named) => match Algorithm::from_str(named) {
            Ok(alg) if possible.contains(&alg) && ACCEPTED.contains(&alg) => vec![alg],
            _ => {
                return Err(format!(
                    "its `alg` {named} does not fit its key type, or is not accepted"
                ))
            }
        },
    };
    let key =
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("its key material is malformed ({e})"))?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

/// The key set in force, and how to get a newer one.
pub struct Keys {
    current: RwLock<Arc<KeySet>>,
    /// Where keys come from.
    pub source: JwksSource,
    /// For a URL source.
    client: Option<reqwest::Client>,
    refresh: Duration,
    /// When the URL was last asked (successfully or not).
    last_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Keys {
    /// Reads a `jwks_file` now (an unreadable or unusable file is an
    /// error); a `jwks_url` starts empty until [`refresh`] fetches it.
    pub fn new(config: &JwtConfig) -> Result<Keys, String> {
        let (set, client) = match &config.jwks {
            JwksSource::File(path) => (
                read_file(path).map_err(|e| format!("identity.jwt.jwks_file: {e}"))?,
                None,
            ),
            JwksSource::Url { ca, .. } => {
                let client = crate::proxy::forward::outbound_client_trusting(
                    "identity.jwt.jwks_url",
                    ca.as_deref(),
                )
                .map_err(|e| e.to_string())?;
                (KeySet::default(), Some(client))
            }
        };
        Ok(Keys {
            current: RwLock::new(Arc::new(set)),
            source: config.jwks.clone(),
            client,
            refresh: config.refresh,
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The set in force.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new set in force.
    pub fn install(&self, set: KeySet) {
        for why in &set.skipped {
            tracing::warn!(key = %why, "a JWKS key was left out");
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    /// Fetches the URL once and puts the set in force if it is usable.
    /// True when the set in force changed.
    pub async fn fetch(&self) -> Result<bool, JwksError> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    /// [`Keys::fetch`], with `fetching` held by the caller.
    async fn fetch_locked(&self) -> Result<bool, JwksError> {
        let (JwksSource::Url { url, .. }, Some(client)) = (&self.source, &self.client) else {
            return Ok(false);
        };
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let failed = |error: String| JwksError::Fetch {
            url: url.clone(),
            error,
        };
        let response = client
            .get(url)
            .header(hyper::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("it answered {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let set = parse(&bytes)?;
        let changed = set.fingerprint != self.current().fingerprint;
        if changed {
            tracing::info!(
                keys = set.keys.len(),
                fingerprint = &set.fingerprint[..16],
                "JWKS fetched"
            );
            self.install(set);
        }
        Ok(changed)
    }

    /// A token named a key id the set lacks: fetch the URL again now
    /// (the issuer may have rotated its keys), unless it was asked very
    /// recently. True when a newer set is in force.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        if self.client.is_none() {
            return false;
        }
        let before = self.current().fingerprint.clone();
        // Callers that arrive together wait for one fetch, then see its set.
        let _one = self.fetching.lock().await;
        let cooldown = self.refresh.min(UNKNOWN_KID_COOLDOWN);
        let recent = self
            .last_fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < cooldown);
        if recent {
            return self.current().fingerprint != before;
        }
        match self.fetch_locked().await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch for an unknown key id failed; the last good keys stay in force");
                false
            }
        }
    }
}

/// Reads and parses a JWKS file.
pub fn read_file(path: &std::path::Path) -> Result<KeySet, JwksError> {
    let bytes = std::fs::read(path).map_err(|e| JwksError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    parse(&bytes)
}

/// Keeps a `jwks_url` fresh until shutdown: fetched at once, then every
/// `identity.jwt.refresh` (sooner, every few seconds, while no set has
/// been fetched yet). A failed fetch keeps the last good keys and shows in
/// the log, `/readyz` and `countersign_reload_failures_total{what="jwks"}`.
pub async fn refresh(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let Some(keys) = shared.identity.jwt().map(|j| j.keys()) else {
        return;
    };
    if !matches!(keys.source, JwksSource::Url { .. }) {
        return;
    }
    loop {
        let ok = match keys.fetch().await {
            Ok(_) => {
                shared.reload_ok("jwks");
                true
            }
            Err(e) => {
                let why = format!(
                    "the JWKS could not be refreshed; the last good keys stay in force: {e}"
                );
                shared.reload_failed("jwks", why);
                false
            }
        };
        let wait = if ok || !keys.current().keys.is_empty() {
            keys.refresh
        } else {
            keys.refresh.min(Duration::from_secs(5))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

    #[test]
    fn usable_keys_are_taken_and_the_rest_named() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "r2", "alg": "PS256", "use": "sig", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "lie", "alg": "HS256", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "weird"}
        ]});
        let set = parse(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["r1", "r2", "e1"]);
        assert_eq!(set.keys[0].algorithms.len(), 6);
        assert_eq!(set.keys[1].algorithms, [Algorithm::PS256]);
        assert_eq!(set.keys[2].algorithms, [Algorithm::ES256]);
        assert_eq!(set.skipped.len(), 5, "{:?}", set.skipped);
        assert!(set
            .skipped
            .iter()
            .any(|s| s.contains("hmac") && s.contains("symmetric")));
    }

    #[test]
    fn a_set_without_usable_keys_is_refused() {
        let e = parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap_err();
        assert!(matches!(e, JwksError::NoUsableKey(_)), "{e}");
        assert!(matches!(parse(b"[]").unwrap_err(), JwksError::NotJwks(_)));
        assert!(matches!(
            parse(b"not json").unwrap_err(),
            JwksError::NotJwks(_)
        ));
    }
}
