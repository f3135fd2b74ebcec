//! Reviewer keys and Standard Webhooks signatures (docs/reference.md#reviews), both kinds:
//!
//! - symmetric: `whsec_` + base64 of a shared secret; the signature is
//!   `v1,<base64 HMAC-SHA256>`. countersign and the reviewer hold the same
//!   secret, so a signature proves the review to countersign only.
//! - asymmetric: the reviewer holds `whsk_` + base64 of an Ed25519 seed,
//!   the config holds only `whpk_` + base64 of the public key; the
//!   signature is `v1a,<base64 Ed25519 signature>`. Anyone with the public
//!   key can check a recorded review, and the config holds nothing that
//!   can sign one.
//!
//! Either way the signed message is `<webhook-id>.<webhook-timestamp>.<body>`
//! and the timestamp must be within [`TOLERANCE_SECS`] of now. The server
//! side is [`ReviewerKey`]; the reviewer's side is [`SigningKey`].

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use hyper::HeaderMap;
use serde::Serialize;
use subtle::ConstantTimeEq;

/// How far a `webhook-timestamp` may be from now, either way.
pub const TOLERANCE_SECS: u64 = 5 * 60;

/// Fewest bytes a reviewer's shared secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

const SECRET_PREFIX: &str = "whsec_";
const PUBLIC_PREFIX: &str = "whpk_";
const SIGNING_PREFIX: &str = "whsk_";

/// Which kind of key proved a signature; the record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A shared `whsec_` secret, HMAC-SHA256 (`v1,`).
    Hmac,
    /// An Ed25519 key pair, `whpk_`/`whsk_` (`v1a,`).
    Ed25519,
}

impl KeyKind {
    /// `hmac` or `ed25519`, as in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Hmac => "hmac",
            KeyKind::Ed25519 => "ed25519",
        }
    }

    /// The signature version tag this kind signs with.
    fn version(self) -> &'static str {
        match self {
            KeyKind::Hmac => "v1",
            KeyKind::Ed25519 => "v1a",
        }
    }
}

/// A key that cannot be used; each message says what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No known prefix.
    #[error("the key must be a Standard Webhooks key: whsec_ (a shared secret) or whpk_ (an Ed25519 public key), followed by base64")]
    NotAKey,
    /// A reviewer's Ed25519 secret where the config wants the public key.
    #[error("the key is an Ed25519 secret key (whsk_); the config must hold only the reviewer's public key (whpk_, the .pub file of countersign keygen --reviewer), and the secret stays with the reviewer")]
    SecretInConfig,
    /// A public key where signing needs the secret.
    #[error("the key is a public key (whpk_), which cannot sign; use the reviewer's secret key (whsk_, the .key file of countersign keygen --reviewer) or a shared whsec_ secret")]
    PublicKeyCannotSign,
    /// Not a key the review tool can sign with.
    #[error("the key must be a reviewer's secret: whsk_ (Ed25519, from countersign keygen --reviewer) or whsec_ (a shared secret), followed by base64")]
    NotASigningKey,
    /// The part after the prefix is not base64.
    #[error("the key is not valid base64 after {0}")]
    Base64(&'static str),
    /// Wrong number of key bytes.
    #[error("a {prefix} key is base64 of {expected} bytes, but this one has {got}")]
    Length {
        /// The key's prefix.
        prefix: &'static str,
        /// Bytes accepted.
        expected: &'static str,
        /// Bytes found.
        got: usize,
    },
    /// A shared secret too short to resist guessing.
    #[error("the whsec_ secret has only {0} bytes; use at least 16 random bytes (24 or more recommended)")]
    ShortSecret(usize),
    /// Not a point on the curve, or one of small order (it would let
    /// anyone forge a signature).
    #[error("the whpk_ key is not a usable Ed25519 public key")]
    BadPublicKey,
    /// A 64-byte secret whose public half is not its own.
    #[error("the whsk_ key's public half does not belong to its secret half; the file is damaged")]
    MismatchedPair,
    /// The system's random source failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A Standard Webhooks header is missing or not text.
    #[error("the {0} header is missing or not text")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not whole seconds.
    #[error("webhook-timestamp is not a number of seconds since 1970")]
    BadTimestamp,
    /// The timestamp is outside the tolerance.
    #[error(
        "webhook-timestamp is more than 5 minutes from now ({0} s off); sign with the current time"
    )]
    Stale(u64),
    /// No signature of the kind this reviewer's key makes.
    #[error(
        "webhook-signature has no {wanted}, signature, which this reviewer's {kind} key needs"
    )]
    NoSignatureOfKind {
        /// The version tag wanted.
        wanted: &'static str,
        /// The reviewer's key kind.
        kind: &'static str,
    },
    /// A signature of the right kind that does not verify.
    #[error("the signature does not verify with this reviewer's {0} key")]
    Invalid(&'static str),
    /// HMAC signatures (as the `standardwebhooks` library makes them) cover text bodies only.
    #[error("the signed content is not UTF-8 text")]
    NotText,
}

/// A reviewer's key as countersign holds it: what verifies their signatures.
pub enum ReviewerKey {
    /// A shared secret.
    Hmac(standardwebhooks::Webhook),
    /// The reviewer's Ed25519 public key.
    Ed25519(VerifyingKey),
}

impl std::fmt::Debug for ReviewerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "ReviewerKey({})", self.kind().as_str())
    }
}

fn decode(prefix: &'static str, text: &str) -> Result<Vec<u8>, KeyError> {
    BASE64
        .decode(text.trim())
        .map_err(|_| KeyError::Base64(prefix))
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(VerifyError::MissingHeader(name))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The exact bytes a Standard Webhooks signature covers.
pub fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{msg_id}.{timestamp}.").into_bytes();
    out.extend_from_slice(body);
    out
}

impl ReviewerKey {
    /// Parses a key from the config: `whsec_` or `whpk_`. A `whsk_` secret
    /// is refused: it belongs with the reviewer, not on the server.
    pub fn parse(text: &str) -> Result<ReviewerKey, KeyError> {
        let text = text.trim();
        if let Some(b64) = text.strip_prefix(SECRET_PREFIX) {
            let bytes = decode(SECRET_PREFIX, b64)?;
            if bytes.len() < MIN_SECRET_BYTES {
                return Err(KeyError::ShortSecret(bytes.len()));
            }
            let key = standardwebhooks::Webhook::from_bytes(bytes)
                .map_err(|_| KeyError::Base64(SECRET_PREFIX))?;
            Ok(ReviewerKey::Hmac(key))
        } else if let Some(b64) = text.strip_prefix(PUBLIC_PREFIX) {
            let bytes: [u8; 32] =
                decode(PUBLIC_PREFIX, b64)?
                    .try_into()
                    .map_err(|b: Vec<u8>| KeyError::Length {
                        prefix: PUBLIC_PREFIX,
                        expected: "32",
                        got: b.len(),
                    })?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey)?;
            if key.is_weak() {
                return Err(KeyError::BadPublicKey);
            }
            Ok(ReviewerKey::Ed25519(key))
        } else if text.starts_with(SIGNING_PREFIX) {
            Err(KeyError::SecretInConfig)
        } else {
            Err(KeyError::NotAKey)
        }
    }

    /// What makes two configured keys one key whatever their text, as a
    /// digest (so no secret is kept): for a shared secret, the block
    /// HMAC-SHA256 actually keys with. A secret longer than the 64-byte
    /// block is hashed first and a shorter one padded with zero bytes, so
    /// `K`, `K` followed by a zero byte, and a long key and its SHA-256
    /// all sign alike. For a public key, its canonical encoding. `text` is
    /// a key [`ReviewerKey::parse`] took.
    pub fn identity(text: &str) -> Result<[u8; 32], KeyError> {
        use sha2::{Digest, Sha256};
        let text = text.trim();
        let (kind, bytes): (&[u8], Vec<u8>) = match ReviewerKey::parse(text)? {
            ReviewerKey::Hmac(_) => {
                let secret = decode(SECRET_PREFIX, &text[SECRET_PREFIX.len()..])?;
                let mut block = if secret.len() > 64 {
                    Sha256::digest(&secret).to_vec()
                } else {
                    secret
                };
                block.resize(64, 0);
                (b"hmac-sha256", block)
            }
            ReviewerKey::Ed25519(key) => (b"ed25519", key.to_bytes().to_vec()),
        };
        Ok(Sha256::new()
            .chain_update(kind)
            .chain_update(bytes)
            .finalize()
            .into())
    }

    /// Which kind of key this is.
    pub fn kind(&self) -> KeyKind {
        match self {
            ReviewerKey::Hmac(_) => KeyKind::Hmac,
            ReviewerKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Checks the Standard Webhooks headers over `body` (the signed content
    /// after `id.timestamp.`): the timestamp within [`TOLERANCE_SECS`], and
    /// one signature of this key's kind that verifies (HMAC compared in
    /// constant time; Ed25519 verified strictly, so no second encoding of
    /// the same signature is accepted). Replays are the caller's to catch.
    pub fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<KeyKind, VerifyError> {
        let msg_id = header(headers, "webhook-id")?;
        if msg_id.trim().is_empty() {
            // Replays are caught by id; a blank one would be no id at all.
            return Err(VerifyError::MissingHeader("webhook-id"));
        }
        let signatures = header(headers, "webhook-signature")?;
        // Only the integer's own spelling: the signed content is rebuilt
        // from the number, so `+17…` or `017…` would verify a signature
        // over text other than the header sent.
        let sent = header(headers, "webhook-timestamp")?;
        let timestamp: i64 = sent.parse().map_err(|_| VerifyError::BadTimestamp)?;
        if sent != timestamp.to_string() {
            return Err(VerifyError::BadTimestamp);
        }
        let off = unix_now().abs_diff(timestamp);
        if off > TOLERANCE_SECS {
            return Err(VerifyError::Stale(off));
        }
        self.verify_recorded(msg_id, timestamp, signatures, body)
    }

    /// Checks a signature as the record keeps it (the `webhook-id`, the
    /// `webhook-timestamp`, the `webhook-signature` header and the signed
    /// body), with no clock check: how a recorded review is checked again
    /// later, by `audit verify` or an evidence bundle's reader.
    pub fn verify_recorded(
        &self,
        msg_id: &str,
        timestamp: i64,
        signatures: &str,
        body: &[u8],
    ) -> Result<KeyKind, VerifyError> {
        let kind = self.kind();
        // The header may carry several signatures, space-separated; the
        // ones of this key's kind are tried, the others ignored.
        let candidates: Vec<&str> = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(version, _)| *version == kind.version())
            .map(|(_, sig)| sig)
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::NoSignatureOfKind {
                wanted: kind.version(),
                kind: kind.as_str(),
            });
        }
        let ok = match self {
            ReviewerKey::Hmac(key) => {
                let expected = key
                    .sign(msg_id, timestamp, body)
                    .map_err(|_| VerifyError::NotText)?;
                let expected = expected.split_once(',').map(|x| x.1).unwrap_or_default();
                candidates
                    .iter()
                    .any(|c| bool::from(c.as_bytes().ct_eq(expected.as_bytes())))
            }
            ReviewerKey::Ed25519(key) => {
                let message = signed_content(msg_id, timestamp, body);
                candidates.iter().any(|c| {
                    BASE64
                        .decode(c)
                        .ok()
                        .and_then(|b| Signature::from_slice(&b).ok())
                        .is_some_and(|sig| key.verify_strict(&message, &sig).is_ok())
                })
            }
        };
        if ok {
            Ok(kind)
        } else {
            Err(VerifyError::Invalid(kind.as_str()))
        }
    }

    /// The `whpk_` form of an Ed25519 key (what an evidence bundle carries);
    /// `None` for a shared secret, which never leaves the config.
    pub fn public_text(&self) -> Option<String> {
        match self {
            ReviewerKey::Ed25519(k) => {
                Some(format!("{PUBLIC_PREFIX}{}", BASE64.encode(k.as_bytes())))
            }
            ReviewerKey::Hmac(_) => None,
        }
    }
}

/// A reviewer's key as the reviewer holds it: what signs their reviews.
pub enum SigningKey {
    /// A shared secret.
    Hmac(standardwebhooks::Webhook),
    /// An Ed25519 secret key.
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "SigningKey({})", self.kind().as_str())
    }
}

impl SigningKey {
    /// Parses a reviewer's key file: `whsk_` (base64 of the 32-byte seed,
    /// or of the 64-byte seed and public key) or `whsec_`.
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let text = text.trim();
        if let Some(b64) = text.strip_prefix(SIGNING_PREFIX) {
            let bytes = decode(SIGNING_PREFIX, b64)?;
            let key = match bytes.len() {
                32 => {
                    let mut seed = [0u8; 32];
                    seed.copy_from_slice(&bytes);
                    ed25519_dalek::SigningKey::from_bytes(&seed)
                }
                64 => {
                    let mut pair = [0u8; 64];
                    pair.copy_from_slice(&bytes);
                    ed25519_dalek::SigningKey::from_keypair_bytes(&pair)
                        .map_err(|_| KeyError::MismatchedPair)?
                }
                got => {
                    return Err(KeyError::Length {
                        prefix: SIGNING_PREFIX,
                        expected: "32 (or 64: secret and public)",
                        got,
                    })
                }
            };
            Ok(SigningKey::Ed25519(key))
        } else if let Some(b64) = text.strip_prefix(SECRET_PREFIX) {
            let bytes = decode(SECRET_PREFIX, b64)?;
            let key = standardwebhooks::Webhook::from_bytes(bytes)
                .map_err(|_| KeyError::Base64(SECRET_PREFIX))?;
            Ok(SigningKey::Hmac(key))
        } else if text.starts_with(PUBLIC_PREFIX) {
            Err(KeyError::PublicKeyCannotSign)
        } else {
            Err(KeyError::NotASigningKey)
        }
    }

    /// Which kind of key this is.
    pub fn kind(&self) -> KeyKind {
        match self {
            SigningKey::Hmac(_) => KeyKind::Hmac,
            SigningKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The `webhook-signature` value for this message: `v1,<base64>` or
    /// `v1a,<base64>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, VerifyError> {
        match self {
            SigningKey::Hmac(key) => key
                .sign(msg_id, timestamp, body)
                .map_err(|_| VerifyError::NotText),
            SigningKey::Ed25519(key) => {
                let signature = key.sign(&signed_content(msg_id, timestamp, body));
                Ok(format!("v1a,{}", BASE64.encode(signature.to_bytes())))
            }
        }
    }

    /// Standard Webhooks headers signing `body` now, with a fresh message id.
    pub fn headers(&self, body: &[u8]) -> Result<Vec<(&'static str, String)>, VerifyError> {
        let msg_id = format!("msg_{}", crate::audit::record::new_action_id());
        let timestamp = unix_now();
        let signature = self.sign(&msg_id, timestamp, body)?;
        Ok(vec![
            ("webhook-id", msg_id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ])
    }
}

/// A new reviewer key pair from the system's random source:
/// (`whsk_` secret for the reviewer, `whpk_` public key for the config).
pub fn generate() -> Result<(String, String), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok((
        format!("{SIGNING_PREFIX}{}", BASE64.encode(seed)),
        format!(
            "{PUBLIC_PREFIX}{}",
            BASE64.encode(key.verifying_key().as_bytes())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(msg_id: &str, ts: i64, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", msg_id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    const BODY: &[u8] = br#"{"action_id":"a","reviewer":"erin","verdict":"approve"}"#;

    #[test]
    fn the_published_hmac_vector_signs_and_verifies() {
        let signer = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = signer
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // The same vector verifies on the server side, at its own time.
        let key = ReviewerKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let now = unix_now();
        let sig = signer.sign("msg_x", now, BODY).unwrap();
        assert_eq!(
            key.verify(BODY, &headers("msg_x", now, &sig)).unwrap(),
            KeyKind::Hmac
        );
        assert!(key
            .verify(b"{}", &headers("msg_x", now, &sig))
            .is_err_and(|e| matches!(e, VerifyError::Invalid("hmac"))));
    }

    #[test]
    fn ed25519_signatures_verify_and_impostors_are_refused() {
        let (secret, public) = generate().unwrap();
        assert!(secret.starts_with("whsk_") && public.starts_with("whpk_"));
        let signer = SigningKey::parse(&secret).unwrap();
        let key = ReviewerKey::parse(&public).unwrap();
        assert_eq!(key.kind(), KeyKind::Ed25519);
        let now = unix_now();
        let sig = signer.sign("msg_1", now, BODY).unwrap();
        assert!(sig.starts_with("v1a,"), "{sig}");
        assert_eq!(
            key.verify(BODY, &headers("msg_1", now, &sig)).unwrap(),
            KeyKind::Ed25519
        );
        // Alongside other signatures in the same header.
        let several = format!("v1,AAAA {sig}");
        assert!(key.verify(BODY, &headers("msg_1", now, &several)).is_ok());

        // Another key's signature.
        let (other, _) = generate().unwrap();
        let forged = SigningKey::parse(&other)
            .unwrap()
            .sign("msg_1", now, BODY)
            .unwrap();
        assert!(matches!(
            key.verify(BODY, &headers("msg_1", now, &forged)),
            Err(VerifyError::Invalid("ed25519"))
        ));
        // An HMAC (v1,) signature against an Ed25519 reviewer, even one made
        // with the public key's bytes as the secret.
        let hmac = SigningKey::parse(&public.replace("whpk_", "whsec_"))
            .unwrap()
            .sign("msg_1", now, BODY)
            .unwrap();
        assert!(matches!(
            key.verify(BODY, &headers("msg_1", now, &hmac)),
            Err(VerifyError::NoSignatureOfKind { wanted: "v1a", .. })
        ));
        // A stale and a future timestamp, signed correctly.
        for ts in [now - 400, now + 400] {
            let sig = signer.sign("msg_1", ts, BODY).unwrap();
            assert!(matches!(
                key.verify(BODY, &headers("msg_1", ts, &sig)),
                Err(VerifyError::Stale(_))
            ));
        }
        // The same signature over other content: another id, or another body.
        assert!(key.verify(BODY, &headers("msg_2", now, &sig)).is_err());
        assert!(key.verify(b"{}", &headers("msg_1", now, &sig)).is_err());
        // Extreme timestamps are refused, not overflowed.
        let mut h = headers("msg_1", now, &sig);
        h.insert("webhook-timestamp", i64::MIN.to_string().parse().unwrap());
        assert!(matches!(key.verify(BODY, &h), Err(VerifyError::Stale(_))));
        // Only the integer's own spelling: the signature covers the number
        // as written, so `+…`, `0…` or padding would be other text.
        for spelled in [format!("+{now}"), format!("0{now}"), format!(" {now}")] {
            let mut h = headers("msg_1", now, &sig);
            h.insert("webhook-timestamp", spelled.parse().unwrap());
            assert!(
                matches!(key.verify(BODY, &h), Err(VerifyError::BadTimestamp)),
                "{spelled:?}"
            );
        }
    }

    #[test]
    fn keys_that_sign_alike_have_one_identity() {
        let short = "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYm9i"; // 22 bytes
        let padded = format!("whsec_{}", BASE64.encode(b"countersign-test-key-bob\0"));
        assert_eq!(
            ReviewerKey::identity(short).unwrap(),
            ReviewerKey::identity(&padded).unwrap()
        );
        let long: Vec<u8> = (0..100).collect();
        use sha2::Digest as _;
        let hashed = sha2::Sha256::digest(&long);
        assert_eq!(
            ReviewerKey::identity(&format!("whsec_{}", BASE64.encode(&long))).unwrap(),
            ReviewerKey::identity(&format!("whsec_{}", BASE64.encode(hashed))).unwrap()
        );
        assert_ne!(
            ReviewerKey::identity(short).unwrap(),
            ReviewerKey::identity("whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYWxpY2U=").unwrap()
        );
        let (_, public) = generate().unwrap();
        assert_ne!(
            ReviewerKey::identity(&public).unwrap(),
            ReviewerKey::identity(&public.replace("whpk_", "whsec_")).unwrap(),
            "a public key's bytes as a secret are another key"
        );
    }

    #[test]
    fn the_64_byte_form_of_a_secret_key_signs_the_same() {
        let (secret, public) = generate().unwrap();
        let SigningKey::Ed25519(k) = SigningKey::parse(&secret).unwrap() else {
            panic!("an ed25519 key")
        };
        let long = format!("whsk_{}", BASE64.encode(k.to_keypair_bytes()));
        let sig = SigningKey::parse(&long)
            .unwrap()
            .sign("m", unix_now(), BODY)
            .unwrap();
        let key = ReviewerKey::parse(&public).unwrap();
        assert!(key.verify(BODY, &headers("m", unix_now(), &sig)).is_ok());
        let mut pair = k.to_keypair_bytes();
        pair[40] ^= 1;
        assert!(matches!(
            SigningKey::parse(&format!("whsk_{}", BASE64.encode(pair))),
            Err(KeyError::MismatchedPair)
        ));
    }

    #[test]
    fn the_config_refuses_secrets_and_bad_keys_with_reasons() {
        let (secret, public) = generate().unwrap();
        assert!(matches!(
            ReviewerKey::parse(&secret),
            Err(KeyError::SecretInConfig)
        ));
        assert!(matches!(
            SigningKey::parse(&public),
            Err(KeyError::PublicKeyCannotSign)
        ));
        assert!(matches!(
            ReviewerKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(KeyError::NotAKey)
        ));
        assert!(matches!(
            ReviewerKey::parse("whsec_not base64!"),
            Err(KeyError::Base64(_))
        ));
        assert!(matches!(
            ReviewerKey::parse("whsec_c2hvcnQ="),
            Err(KeyError::ShortSecret(5))
        ));
        assert!(matches!(
            ReviewerKey::parse("whpk_AAAA"),
            Err(KeyError::Length { got: 3, .. })
        ));
        // The identity point: a small-order key any signature could match.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            ReviewerKey::parse(&format!("whpk_{}", BASE64.encode(identity))),
            Err(KeyError::BadPublicKey)
        ));
        assert!(!format!("{:?}", SigningKey::parse(&secret).unwrap()).contains(&secret[5..]));
    }
}
