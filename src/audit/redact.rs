//! Secret values scrubbed out of what countersign keeps or relays: every
//! occurrence of a known secret inside a string becomes `[redacted]`.
//!
//! Structural redaction (header values off the allowlist, query parameters
//! with secret names) already keeps secrets out of the fields that hold
//! them. What it cannot reach is text that *repeats* them: a policy reason
//! built from `input.request.headers.authorization`, an upstream that
//! echoes its request headers (`TRACE`, `/anything`), an error message that
//! quotes a URL. A [`Secrets`] set, built per call from the values that were
//! redacted plus the route's upstream credential, finds those repeats.
//!
//! The matching is byte-exact (plus a few encoded forms of each value, see
//! [`SecretsBuilder::value`]); a secret that was transformed (hashed,
//! base64-encoded, split) is not recognised.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::capture::REDACTED;

/// Values shorter than this many bytes are not hunted through text. Every
/// string of the record is searched for every secret, so a short value
/// ("1", "gzip", "close", "2026") would match unrelated text all over the
/// record (times, digests, bodies) and corrupt it without protecting
/// anything worth protecting: at 8 bytes a chance match inside a hex digest
/// is about one in four billion, and credentials are longer. Short values
/// are still redacted where they stand (the header map, the query map, the
/// recorded URL); only copies of them elsewhere are left as they are.
pub const MIN_SECRET_LEN: usize = 8;

/// Top-level payload keys that hold the request as the agent declared it,
/// or the bytes a held action will forward: never scrubbed. The request is
/// recorded as decided (header values and secret query parameters are
/// already redacted in it, the body is the agent's own text), and an agent
/// must not be able to blank parts of what reviewers see by repeating them
/// in a header.
const AS_DECLARED: [&str; 4] = ["request", "agent", "evidence", "hold"];

/// Keys, at any depth, whose values are digests computed by countersign:
/// never scrubbed, so reviews and checks against them keep working.
const DIGESTS: [&str; 2] = ["request_digest", "body_sha256"];

/// A set of secret values to scrub; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    matcher: Arc<Matcher>,
}

#[derive(Debug, Default)]
struct Matcher {
    /// Longest first, so the longest secret at a position wins.
    needles: Vec<Vec<u8>>,
    /// Whether some needle starts with this byte (a fast skip).
    first: Vec<bool>,
    longest: usize,
}

/// Collects secret values; see [`Secrets::builder`].
#[derive(Debug, Default)]
pub struct SecretsBuilder {
    values: BTreeSet<Vec<u8>>,
}

impl SecretsBuilder {
    /// Adds a value, and the forms in which it is usually repeated:
    ///
    /// - the credential part of `scheme credential` (`Bearer abc…` → `abc…`);
    /// - each item of a `;`/`,`-separated list, and the value of each
    ///   `name=value` item (cookies, `Digest` parameters);
    /// - each of those as it appears escaped inside a JSON string (also
    ///   with `/` written `\/`) and percent-encoded.
    ///
    /// Forms shorter than [`MIN_SECRET_LEN`] bytes are left out.
    pub fn value(&mut self, value: &str) -> &mut Self {
        let value = value.trim();
        let mut parts = vec![value];
        if let Some((scheme, credential)) = value.split_once(' ') {
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                parts.push(credential.trim());
            }
        }
        for item in value.split([';', ',']) {
            let item = item.trim();
            parts.push(item);
            if let Some((_, v)) = item.split_once('=') {
                parts.push(v.trim().trim_matches('"'));
            }
        }
        for part in parts {
            self.form(part);
            let json = serde_json::to_string(part).unwrap_or_default();
            let json = json
                .get(1..json.len().saturating_sub(1))
                .unwrap_or_default();
            self.form(json);
            self.form(&json.replace('/', "\\/"));
            self.form(&form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>());
            self.form(&percent_encode_all(part));
        }
        self
    }

    /// Adds exactly this byte string (no derived forms), if long enough.
    pub fn form(&mut self, form: &str) -> &mut Self {
        if form.len() >= MIN_SECRET_LEN {
            self.values.insert(form.as_bytes().to_vec());
        }
        self
    }

    /// Adds every value of another set.
    pub fn extend(&mut self, other: &Secrets) -> &mut Self {
        self.values.extend(other.matcher.needles.iter().cloned());
        self
    }

    /// The finished set.
    pub fn build(self) -> Secrets {
        let mut needles: Vec<Vec<u8>> = self.values.into_iter().collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let mut first = vec![false; 256];
        for n in &needles {
            first[n[0] as usize] = true;
        }
        let longest = needles.first().map_or(0, Vec::len);
        Secrets {
            matcher: Arc::new(Matcher {
                needles,
                first,
                longest,
            }),
        }
    }
}

/// `%XX` for every byte that is not unreserved (RFC 3986), spaces as `%20`.
fn percent_encode_all(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Secrets {
    /// An empty builder.
    pub fn builder() -> SecretsBuilder {
        SecretsBuilder::default()
    }

    /// Whether there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.matcher.needles.is_empty()
    }

    /// The length of the longest secret form, in bytes.
    pub fn longest(&self) -> usize {
        self.matcher.longest
    }

    /// `bytes` with every secret replaced; `None` when none occurs.
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let (out, _) = self.matcher.scan(bytes, true)?;
        Some(out)
    }

    /// `text` with every secret replaced; `None` when none occurs.
    pub fn scrub_str(&self, text: &str) -> Option<String> {
        // Secrets are UTF-8 and UTF-8 is self-synchronising: a match always
        // starts and ends on character boundaries.
        self.scrub_bytes(text.as_bytes()).map(|b| {
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        })
    }

    /// Scrubs every string (and object key) in `value`, at any depth,
    /// except the values of digest keys.
    pub fn scrub_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Some(clean) = self.scrub_str(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v)),
            Value::Object(map) => {
                let dirty_keys: Vec<String> = map
                    .keys()
                    .filter(|k| self.scrub_str(k).is_some())
                    .cloned()
                    .collect();
                for k in dirty_keys {
                    if let (Some(v), Some(clean)) = (map.remove(&k), self.scrub_str(&k)) {
                        map.insert(clean, v);
                    }
                }
                for (k, v) in map.iter_mut() {
                    if !DIGESTS.contains(&k.as_str()) {
                        self.scrub_value(v);
                    }
                }
            }
            _ => {}
        }
    }

    /// Scrubs a record payload or a notice: everything except the request
    /// as the agent declared it (top-level `request`, `agent`, `evidence`),
    /// a held action's forward (`hold`) and digests. This is the one place
    /// a payload is made safe to keep; see [`crate::audit::record::Draft::redacted`].
    pub fn scrub_payload(&self, payload: &mut Value) {
        if self.is_empty() {
            return;
        }
        match payload.as_object_mut() {
            Some(map) => {
                for (k, v) in map.iter_mut() {
                    if !AS_DECLARED.contains(&k.as_str()) && !DIGESTS.contains(&k.as_str()) {
                        self.scrub_value(v);
                    }
                }
            }
            None => self.scrub_value(payload),
        }
    }

    /// Scrubs header values in place; true when one changed. Values that
    /// would no longer be valid header values are dropped.
    pub fn scrub_headers(&self, headers: &mut hyper::HeaderMap) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut changed = false;
        let mut clean = hyper::HeaderMap::with_capacity(headers.len());
        for (name, value) in headers.iter() {
            match self.scrub_bytes(value.as_bytes()) {
                None => {
                    clean.append(name.clone(), value.clone());
                }
                Some(bytes) => {
                    changed = true;
                    if let Ok(v) = hyper::header::HeaderValue::from_bytes(&bytes) {
                        clean.append(name.clone(), v);
                    }
                }
            }
        }
        if changed {
            *headers = clean;
        }
        changed
    }
}

impl Matcher {
    /// Copies `data` with secrets replaced. With `last` false, more data may
    /// follow: the scan stops at the first position where a secret could
    /// begin but is not complete yet, and returns that position, so the
    /// caller can carry the rest over. `None` when nothing was replaced and
    /// nothing held back (the input is clean as it is).
    fn scan(&self, data: &[u8], last: bool) -> Option<(Vec<u8>, usize)> {
        if self.needles.is_empty() {
            return None;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0; // data[..copied] is already in `out`
        let mut i = 0;
        while i < data.len() {
            if !self.first[data[i] as usize] {
                i += 1;
                continue;
            }
            let rest = &data[i..];
            // A longer secret may still complete with the next chunk: decide
            // nothing here until it has (leftmost-longest, as in one piece).
            if !last
                && self
                    .needles
                    .iter()
                    .any(|n| n.len() > rest.len() && n.starts_with(rest))
            {
                let mut o = out.unwrap_or_default();
                o.extend_from_slice(&data[copied..i]);
                return Some((o, i));
            }
            match self.needles.iter().find(|n| rest.starts_with(n)) {
                Some(n) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(data.len()));
                    o.extend_from_slice(&data[copied..i]);
                    o.extend_from_slice(REDACTED.as_bytes());
                    i += n.len();
                    copied = i;
                }
                None => i += 1,
            }
        }
        out.map(|mut o| {
            o.extend_from_slice(&data[copied..]);
            (o, data.len())
        })
    }
}

/// Scrubs a body that arrives in chunks: a secret split across chunks is
/// still found. Only bytes that could be the start of a secret are held
/// back (at most the longest secret's length less one), and only until the
/// next chunk or the end, so a stream that carries no secret passes
/// through unchanged and undelayed.
#[derive(Debug)]
pub struct StreamScrubber {
    secrets: Secrets,
    pending: Vec<u8>,
}

impl StreamScrubber {
    /// A scrubber for one body.
    pub fn new(secrets: Secrets) -> StreamScrubber {
        StreamScrubber {
            secrets,
            pending: Vec::new(),
        }
    }

    /// The bytes that can be passed on after `chunk` (possibly empty).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.secrets.is_empty() {
            return chunk;
        }
        let data: Vec<u8> = if self.pending.is_empty() {
            chunk.to_vec()
        } else {
            let mut d = std::mem::take(&mut self.pending);
            d.extend_from_slice(&chunk);
            d
        };
        match self.secrets.matcher.scan(&data, false) {
            None => Bytes::from(data),
            Some((out, held)) => {
                self.pending = data[held..].to_vec();
                Bytes::from(out)
            }
        }
    }

    /// The bytes held back, scrubbed, once the body has ended.
    pub fn finish(self) -> Bytes {
        match self.secrets.scrub_bytes(&self.pending) {
            Some(out) => Bytes::from(out),
            None => Bytes::from(self.pending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets(values: &[&str]) -> Secrets {
        let mut b = Secrets::builder();
        for v in values {
            b.value(v);
        }
        b.build()
    }

    #[test]
    fn every_occurrence_is_replaced_and_short_values_are_ignored() {
        let s = secrets(&["Bearer tok-0123456789", "gzip"]);
        assert_eq!(
            s.scrub_str("a tok-0123456789 b Bearer tok-0123456789 gzip")
                .unwrap(),
            "a [redacted] b [redacted] gzip"
        );
        assert_eq!(s.scrub_str("nothing here"), None);
        assert!(secrets(&["short"]).is_empty());
    }

    #[test]
    fn an_empty_set_changes_nothing() {
        let s = Secrets::default();
        assert_eq!(s.scrub_bytes(b"anything"), None);
        let mut sc = StreamScrubber::new(s);
        assert_eq!(&sc.push(Bytes::from_static(b"abc"))[..], b"abc");
        assert!(sc.finish().is_empty());
    }

    #[test]
    fn cookie_values_and_encoded_forms_are_found() {
        let s = secrets(&["theme=dark; session=sess/0123+456789"]);
        assert_eq!(s.scrub_str("sess/0123+456789").unwrap(), "[redacted]");
        assert_eq!(
            s.scrub_str(r#"{"s":"sess\/0123+456789"}"#).unwrap(),
            r#"{"s":"[redacted]"}"#
        );
        assert_eq!(
            s.scrub_str("?s=sess%2F0123%2B456789").unwrap(),
            "?s=[redacted]"
        );
    }

    #[test]
    fn payloads_keep_the_declared_request_and_digests() {
        let s = secrets(&["CANARY-123456"]);
        let mut p = json!({
            "request": {"body": {"text": "CANARY-123456"}},
            "decision": {"reasons": ["auth is Bearer CANARY-123456"], "rules": ["CANARY-123456"]},
            "request_digest": "CANARY-123456",
            "response": {"body_sha256": "CANARY-123456", "headers": {"CANARY-123456": "x"}},
        });
        s.scrub_payload(&mut p);
        assert_eq!(p["request"]["body"]["text"], "CANARY-123456");
        assert_eq!(p["request_digest"], "CANARY-123456");
        assert_eq!(p["decision"]["reasons"][0], "auth is Bearer [redacted]");
        assert_eq!(p["decision"]["rules"][0], "[redacted]");
        assert_eq!(p["response"]["body_sha256"], "CANARY-123456");
        assert_eq!(p["response"]["headers"]["[redacted]"], "x");
    }

    #[test]
    fn a_stream_is_scrubbed_like_the_whole_body_however_it_is_cut() {
        let s = secrets(&["abcdefgh", "abcdefghijkl", "xyz-secret-1"]);
        let body = b"..abcdefghijkl..abcdefgh.abcdefg..xyz-secret-1xyz-secret-".to_vec();
        let whole = s.scrub_bytes(&body).unwrap();
        for size in 1..body.len() {
            let mut sc = StreamScrubber::new(s.clone());
            let mut out = Vec::new();
            for chunk in body.chunks(size) {
                out.extend_from_slice(&sc.push(Bytes::copy_from_slice(chunk)));
            }
            out.extend_from_slice(&sc.finish());
            assert_eq!(out, whole, "chunks of {size}");
        }
    }

    #[test]
    fn a_stream_without_secret_prefixes_is_not_held_back() {
        let mut sc = StreamScrubber::new(secrets(&["abcdefgh"]));
        assert_eq!(
            &sc.push(Bytes::from_static(b"data: 1\n\n"))[..],
            b"data: 1\n\n"
        );
        assert_eq!(&sc.push(Bytes::from_static(b"x abc"))[..], b"x ");
        assert_eq!(&sc.finish()[..], b"abc");
    }
}
