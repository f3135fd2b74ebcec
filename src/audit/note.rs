//! C2SP signed notes with Ed25519 keys (the format of Go's
//! `golang.org/x/mod/sumdb/note`): how checkpoints are signed, and how
//! anyone holding the public key checks them.
//!
//! - A signed note is its text (UTF-8, ending in a newline), a blank line,
//!   and one line per signature: `— <name> <base64(key id || signature)>`.
//! - The key id is the first 4 bytes of `SHA-256(name || "\n" || 0x01 ||
//!   public key)`; 0x01 marks Ed25519. The signature is Ed25519 over the
//!   text.
//! - A verifier key is `<name>+<hex key id>+<base64(0x01 || public key)>`;
//!   a signer key is `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature type byte of Ed25519 keys.
const ED25519: u8 = 0x01;

/// The dash that starts a signature line (U+2014).
const DASH: &str = "\u{2014} ";

/// Why a key or a note was refused. Each message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A key that is not in the signed-note format.
    #[error("not a signed-note {0} key: {1}")]
    BadKey(&'static str, String),
    /// A note that is not in the signed-note format.
    #[error("not a signed note: {0}")]
    Malformed(String),
    /// No signature by this key.
    #[error("the note has no signature by {0}")]
    NotSignedBy(String),
    /// A signature by this key that does not verify.
    #[error("the signature by {0} does not verify: the note was altered or signed by another key")]
    BadSignature(String),
    /// The system's random source failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
}

/// A key name: non-empty, no `+`, no white space (what the format allows).
fn check_name(kind: &'static str, name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::BadKey(
            kind,
            format!("the name `{name}` must be non-empty, without `+` or spaces"),
        ));
    }
    Ok(())
}

/// The 4-byte key id of an Ed25519 public key under `name`.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Splits `name+hexid+base64` (the verifier key layout) and checks the
/// parts; returns the name, the id and the 32 key bytes after the type.
fn parse_parts(kind: &'static str, text: &str) -> Result<(String, [u8; 4], [u8; 32]), NoteError> {
    let bad = |why: &str| NoteError::BadKey(kind, why.to_string());
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <name>+<key id>+<key>"));
    };
    check_name(kind, name)?;
    if id.len() != 8
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad("the key id must be 8 lower-case hex digits"));
    }
    let id: [u8; 4] = hex::decode(id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the key id is not hex"))?;
    let raw = BASE64
        .decode(b64)
        .map_err(|_| bad("the key is not base64"))?;
    if raw.len() != 33 || raw[0] != ED25519 {
        return Err(bad("the key must be base64 of 0x01 (Ed25519) and 32 bytes"));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&raw[1..]);
    Ok((name.to_string(), id, key))
}

/// Who may check a note: a name, its key id and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl Verifier {
    /// Parses a verifier key (`<name>+<hex id>+<base64(0x01 || key)>`);
    /// the id must be the key's own.
    pub fn parse(text: &str) -> Result<Verifier, NoteError> {
        let text = text.trim();
        let (name, id, key) = parse_parts("verifier", text)?;
        let bad = |why: &str| NoteError::BadKey("verifier", why.to_string());
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not an Ed25519 public key"))?;
        if key.is_weak() {
            return Err(bad("a weak (small-order) Ed25519 key"));
        }
        if key_id(&name, key.as_bytes()) != id {
            return Err(bad("the key id does not belong to this name and key"));
        }
        Ok(Verifier { name, id, key })
    }

    /// The key's name (for checkpoints, the log's origin by default).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key text.
    pub fn encode(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            BASE64.encode(raw)
        )
    }

    /// The public key as a Standard Webhooks `whpk_` key: how a webhook
    /// receiver checks the `v1a` signature of a published checkpoint.
    pub fn webhook_key(&self) -> String {
        format!("whpk_{}", BASE64.encode(self.key.as_bytes()))
    }

    /// Checks `note` and returns its text: it must be well formed and
    /// carry a signature line with this key's name and id that verifies.
    /// Signatures by other keys are ignored.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split(note)?;
        let mut found = false;
        for (name, blob) in signatures {
            if name != self.name || blob.len() < 4 || blob[..4] != self.id {
                continue;
            }
            found = true;
            let ok = Signature::from_slice(&blob[4..])
                .is_ok_and(|sig| self.key.verify_strict(text.as_bytes(), &sig).is_ok());
            if ok {
                return Ok(text);
            }
        }
        let who = format!("{}+{}", self.name, hex::encode(self.id));
        if found {
            Err(NoteError::BadSignature(who))
        } else {
            Err(NoteError::NotSignedBy(who))
        }
    }
}

/// A signature line: the key name and the decoded key id and signature.
type SignatureLine<'a> = (&'a str, Vec<u8>);

/// Splits a note into its text and its signatures.
fn split(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    let bad = |why: &str| NoteError::Malformed(why.to_string());
    let at = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before the signatures"))?;
    let (text, sigs) = (&note[..at + 1], &note[at + 2..]);
    if !sigs.ends_with('\n') {
        return Err(bad("the signature lines must end with a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad("the text has control characters"));
    }
    let mut out = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        let rest = line
            .strip_prefix(DASH)
            .ok_or_else(|| bad("a signature line must start with \u{2014} and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("a signature line is `\u{2014} <name> <base64>`"))?;
        check_name("signature", name).map_err(|_| bad("a signature names a bad key name"))?;
        let blob = BASE64
            .decode(b64)
            .map_err(|_| bad("a signature is not base64"))?;
        if blob.len() < 5 {
            return Err(bad("a signature is too short"));
        }
        out.push((name, blob));
    }
    Ok((text, out))
}

/// A key that signs notes.
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "NoteSigner({}+{})", self.name, hex::encode(self.id))
    }
}

impl NoteSigner {
    /// Parses a signer key (`PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`).
    pub fn parse(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| {
            NoteError::BadKey(
                "signer",
                "it must start with PRIVATE+KEY+ (the .key file of countersign keygen)".into(),
            )
        })?;
        let (name, id, seed) = parse_parts("signer", rest)?;
        let key = SigningKey::from_bytes(&seed);
        if key_id(&name, key.verifying_key().as_bytes()) != id {
            return Err(NoteError::BadKey(
                "signer",
                "the key id does not belong to this name and key".into(),
            ));
        }
        Ok(NoteSigner { name, id, key })
    }

    /// A fresh key pair named `name`.
    pub fn generate(name: &str) -> Result<NoteSigner, NoteError> {
        check_name("signer", name)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| NoteError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(NoteSigner {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signer key text (a secret).
    pub fn encode(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.id),
            BASE64.encode(raw)
        )
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline and have no blank line of
    /// its own at the end) as a signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.ends_with("\n\n") || text.is_empty() {
            return Err(NoteError::Malformed(
                "the text must end with exactly one newline".into(),
            ));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{DASH}{} {}\n",
            self.name,
            BASE64.encode(blob)
        ))
    }

    /// The Standard Webhooks signing key of the same Ed25519 key (`v1a`
    /// signatures on published checkpoints).
    pub fn webhook_signer(&self) -> crate::approval::keys::SigningKey {
        crate::approval::keys::SigningKey::Ed25519(self.key.clone())
    }
}

#[cfg(test)]
mod tests {
    //! The vectors of golang.org/x/mod/sumdb/note (note_test.go): the
    //! PeterNeumann and EnochRoot keys and their published signatures.
    use super::*;

    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    #[test]
    fn signing_reproduces_the_published_note() {
        let signer = NoteSigner::parse(PETER_SKEY).unwrap();
        assert_eq!(signer.encode(), PETER_SKEY);
        assert_eq!(signer.verifier().encode(), PETER_VKEY);
        assert_eq!(signer.sign(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("ends in a blank line\n\n").is_err());
    }

    #[test]
    fn published_notes_open_with_their_keys_only() {
        let peter = Verifier::parse(PETER_VKEY).unwrap();
        let enoch = Verifier::parse(ENOCH_VKEY).unwrap();
        let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(peter.open(&both).unwrap(), TEXT);
        assert_eq!(enoch.open(&both).unwrap(), TEXT);
        let only_peter = format!("{TEXT}\n{PETER_SIG}");
        assert!(matches!(
            enoch.open(&only_peter),
            Err(NoteError::NotSignedBy(_))
        ));
        // Go's "invalid signature" case: four characters inserted.
        let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(matches!(peter.open(&bad), Err(NoteError::BadSignature(_))));
        // Altered text.
        let altered = only_peter.replacen("cryptography", "cryptographY", 1);
        assert!(matches!(
            peter.open(&altered),
            Err(NoteError::BadSignature(_))
        ));
        // Go's malformed notes.
        for bad in [
            TEXT.to_string(),
            format!("{TEXT}\n"),
            format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\u{1}{TEXT}\n{PETER_SIG}"),
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        ] {
            assert!(peter.open(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mangled_keys_are_refused() {
        assert!(Verifier::parse(PETER_VKEY).is_ok());
        for bad in [
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
        // Every single-byte change to the signer key is refused, as in Go.
        let mut b = PETER_SKEY.as_bytes().to_vec();
        for i in 0..b.len() {
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&b) {
                assert!(NoteSigner::parse(s).is_err(), "{s}");
            }
            b[i] = b[i].wrapping_sub(1);
        }
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let signer = NoteSigner::generate("log.example/audit").unwrap();
        let again = NoteSigner::parse(&signer.encode()).unwrap();
        let vkey = Verifier::parse(&signer.verifier().encode()).unwrap();
        let note = again.sign("log.example/audit\n3\nAAAA\n").unwrap();
        assert_eq!(vkey.open(&note).unwrap(), "log.example/audit\n3\nAAAA\n");
        assert!(NoteSigner::generate("two words").is_err());
        assert!(!format!("{signer:?}").contains(&signer.encode()[12..]));
    }
}
