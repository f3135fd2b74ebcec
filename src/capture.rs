//! What countersign captures of a call: the request as the agent sent it,
//! the agent's declared identity and intent, and its evidence items. Two
//! views come out of it: the policy input (full values, in memory only) and
//! the record (allowlisted header values only, everything else `[redacted]`;
//! query parameters with secret names `[redacted]`; the body cut at
//! `capture.max_recorded_body_bytes`). The values it redacts become the
//! call's [`Secrets`], scrubbed from whatever else is recorded.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use hyper::http::request::Parts;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::audit::redact::{Secrets, SecretsBuilder};
use crate::config::CaptureConfig;

/// The value that replaces a redacted header value, query value or secret.
pub const REDACTED: &str = "[redacted]";

/// Request headers whose values are never treated as secrets, even off the
/// allowlist: the record keeps them elsewhere anyway (`host`, `body_size`)
/// or they only describe the connection. Scrubbing their values from text
/// would blank the recorded host and common words, protecting nothing.
const NOT_SECRET: [&str; 9] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Who is acting, as the agent declares it.
#[derive(Debug, Clone, Default)]
pub struct Agent {
    /// Acting agent id.
    pub id: Option<String>,
    /// Person or team it acts for.
    pub on_behalf_of: Option<String>,
    /// Its stated purpose.
    pub intent: Option<String>,
}

/// A captured request.
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    /// HTTP method.
    pub method: String,
    /// `http` or `https` (how the agent reached the proxy).
    pub scheme: String,
    /// Host the agent addressed, without port, lower-case.
    pub host: String,
    /// Path, as sent.
    pub path: String,
    /// Raw query string (without `?`), if any.
    pub query: Option<String>,
    /// The query as name → values, percent-decoded (parsed once, used by
    /// the policy input and the record).
    pub query_map: Map<String, Value>,
    /// Headers other than agent/evidence headers: lower-case names, values
    /// of repeated headers joined by ", ", in first-seen order.
    pub headers: Vec<(String, String)>,
    /// Agent identity.
    pub agent: Agent,
    /// Evidence items by name (the part after the evidence prefix).
    pub evidence: BTreeMap<String, String>,
    /// Body bytes.
    pub body: Bytes,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
    /// The body parsed as JSON, or `null` when it is empty or not JSON
    /// (parsed once, used by the policy input and the record).
    pub body_json: Value,
}

impl CapturedRequest {
    /// Captures the head; the body is attached with [`CapturedRequest::with_body`].
    pub fn from_parts(parts: &Parts, scheme: &str, cfg: &CaptureConfig) -> CapturedRequest {
        let names = &cfg.agent_headers;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut agent = Agent::default();
        let mut evidence = BTreeMap::new();
        for (name, value) in &parts.headers {
            let name = name.as_str();
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if name == names.id {
                agent.id = Some(value);
            } else if name == names.on_behalf_of {
                agent.on_behalf_of = Some(value);
            } else if name == names.intent {
                agent.intent = Some(value);
            } else if let Some(item) = name.strip_prefix(names.evidence_prefix.as_str()) {
                evidence.insert(item.to_string(), value);
            } else if let Some(existing) = headers.iter_mut().find(|(n, _)| n == name) {
                existing.1.push_str(", ");
                existing.1.push_str(&value);
            } else {
                headers.push((name.to_string(), value));
            }
        }
        let host = parts
            .uri
            .host()
            .map(str::to_string)
            .or_else(|| {
                parts
                    .headers
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let host = strip_port(&host).to_ascii_lowercase();
        CapturedRequest {
            method: parts.method.as_str().to_string(),
            scheme: scheme.to_string(),
            host,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            query_map: parts.uri.query().map(parse_query).unwrap_or_default(),
            headers,
            agent,
            evidence,
            body: Bytes::new(),
            body_sha256: hex::encode(Sha256::digest([])),
            body_json: Value::Null,
        }
    }

    /// Attaches the body, its digest and its parsed JSON.
    pub fn with_body(mut self, body: Bytes) -> CapturedRequest {
        self.body_sha256 = hex::encode(Sha256::digest(&body));
        if !body.is_empty() {
            self.body_json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        }
        self.body = body;
        self
    }

    /// Path plus query, as it goes upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }

    /// Path plus query as the record shows it: the values of query
    /// parameters named in `capture.redact_query` are `[redacted]`.
    pub fn recorded_path_and_query(&self, cfg: &CaptureConfig) -> String {
        recorded_path_and_query(&self.path_and_query(), &cfg.redact_query)
    }

    /// The values the record must not carry anywhere: header values off the
    /// allowlist (but see `NOT_SECRET`) and the values of redacted query
    /// parameters, decoded and as sent. The caller adds the route's
    /// upstream credential.
    pub fn secrets(&self, cfg: &CaptureConfig) -> SecretsBuilder {
        let mut b = Secrets::builder();
        for (name, value) in &self.headers {
            if !cfg.headers_allow.contains(name) && !NOT_SECRET.contains(&name.as_str()) {
                b.value(value);
            }
        }
        for (name, values) in &self.query_map {
            if cfg.redact_query.contains(&name.to_ascii_lowercase()) {
                for v in values.as_array().into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        b.value(v);
                    }
                }
            }
        }
        for (name, raw) in query_pairs(self.query.as_deref().unwrap_or_default()) {
            if cfg.redact_query.contains(&name.to_ascii_lowercase()) {
                b.form(raw);
            }
        }
        b
    }

    /// The request as the record keeps it: header values off the allowlist
    /// and secret query values are replaced; the body is kept as JSON,
    /// text, or base64, cut at `capture.max_recorded_body_bytes` (its
    /// digest and size are the whole body's). `url` is the recorded one.
    pub fn record_view(&self, cfg: &CaptureConfig, url: &str) -> Value {
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let kept = if cfg.headers_allow.contains(n) {
                    v.clone()
                } else {
                    REDACTED.to_string()
                };
                (n.clone(), Value::String(kept))
            })
            .collect();
        let query: Map<String, Value> = self
            .query_map
            .iter()
            .map(|(name, values)| {
                if cfg.redact_query.contains(&name.to_ascii_lowercase()) {
                    let n = values.as_array().map_or(1, Vec::len);
                    (name.clone(), json!(vec![REDACTED; n]))
                } else {
                    (name.clone(), values.clone())
                }
            })
            .collect();
        json!({
            "method": self.method,
            "url": url,
            "scheme": self.scheme,
            "host": self.host,
            "path": self.path,
            "query": query,
            "headers": headers,
            "body": self.body_record(cfg.max_recorded_body_bytes as usize),
            "body_sha256": self.body_sha256,
            "body_size": self.body.len(),
        })
    }

    /// The body as the record keeps it, up to `max` bytes; a whole JSON
    /// body from the JSON parsed once.
    fn body_record(&self, max: usize) -> Value {
        if self.body.len() > max {
            return body_view_of(&self.body[..max], true);
        }
        match (&self.body_json, self.body.is_empty()) {
            (_, true) => json!({"encoding": "empty"}),
            (Value::Null, false) => text_or_base64(&self.body, false),
            (parsed, false) => json!({"encoding": "json", "json": parsed}),
        }
    }

    /// The digest a review must carry: SHA-256 over the method, the URL the
    /// call goes to, the body's digest and the evidence (canonical JSON),
    /// one per line, printed as `sha256:<hex>`.
    pub fn request_digest(&self, url: &str) -> String {
        let evidence = crate::audit::record::canonical_json(&self.evidence_json());
        let text = format!(
            "countersign-request-v1\n{}\n{url}\n{}\n{evidence}",
            self.method, self.body_sha256
        );
        format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
    }

    /// The agent block of the policy input and the record.
    pub fn agent_json(&self) -> Value {
        json!({"id": self.agent.id, "on_behalf_of": self.agent.on_behalf_of, "intent": self.agent.intent})
    }

    /// The evidence block of the policy input and the record.
    pub fn evidence_json(&self) -> Value {
        Value::Object(
            self.evidence
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

/// A body as the record keeps it, cut at `max` bytes: parsed JSON when it is
/// JSON and whole, UTF-8 text when it is text, base64 otherwise.
pub fn body_view(body: &[u8], max: usize) -> Value {
    body_view_of(&body[..body.len().min(max)], body.len() > max)
}

/// The record's view of `kept`, the first bytes of a body, or all of it
/// when `truncated` is false.
pub fn body_view_of(kept: &[u8], truncated: bool) -> Value {
    if kept.is_empty() && !truncated {
        return json!({"encoding": "empty"});
    }
    if !truncated {
        if let Ok(v) = serde_json::from_slice::<Value>(kept) {
            return json!({"encoding": "json", "json": v});
        }
    }
    text_or_base64(kept, truncated)
}

/// `path_and_query` with the values of query parameters named in `names`
/// (lower-case, matched case-insensitively after percent-decoding)
/// replaced by `[redacted]`; everything else exactly as sent.
pub fn recorded_path_and_query(
    path_and_query: &str,
    names: &std::collections::BTreeSet<String>,
) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let pieces: Vec<String> = query
        .split('&')
        .map(|piece| match piece.split_once('=') {
            Some((raw_name, _)) if names.contains(&decoded_name(raw_name)) => {
                format!("{raw_name}={REDACTED}")
            }
            _ => piece.to_string(),
        })
        .collect();
    format!("{path}?{}", pieces.join("&"))
}

/// A query parameter name as `form_urlencoded` decodes it, lower-case.
fn decoded_name(raw: &str) -> String {
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(k, _)| k.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Each `name=value` piece of a raw query: the decoded name and the value
/// exactly as sent.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, &str)> {
    query
        .split('&')
        .filter_map(|piece| piece.split_once('='))
        .map(|(name, raw)| (decoded_name(name), raw))
}

/// A body that is not (whole) JSON: UTF-8 text when it is text, base64 otherwise.
fn text_or_base64(kept: &[u8], truncated: bool) -> Value {
    match std::str::from_utf8(kept) {
        Ok(text) => json!({"encoding": "text", "text": text, "truncated": truncated}),
        Err(e) if truncated && e.error_len().is_none() => {
            // Cut inside a multi-byte character: keep the valid prefix.
            let text = std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or_default();
            json!({"encoding": "text", "text": text, "truncated": true})
        }
        Err(_) => json!({
            "encoding": "base64",
            "base64": base64::engine::general_purpose::STANDARD.encode(kept),
            "truncated": truncated,
        }),
    }
}

fn parse_query(q: &str) -> Map<String, Value> {
    let mut map: Map<String, Value> = Map::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        match map
            .entry(k.into_owned())
            .or_insert_with(|| Value::Array(vec![]))
        {
            Value::Array(values) => values.push(Value::String(v.into_owned())),
            _ => unreachable!("query map values are arrays"),
        }
    }
    map
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_view_cuts_and_labels() {
        assert_eq!(body_view(br#"{"a":1}"#, 100)["json"]["a"], 1);
        let cut = body_view(br#"{"a":123456}"#, 5);
        assert_eq!(cut["encoding"], "text");
        assert_eq!(cut["truncated"], true);
        assert_eq!(body_view(&[0xff, 0x00], 10)["encoding"], "base64");
    }

    #[test]
    fn secret_query_values_are_redacted_as_sent() {
        let names = ["api_key".to_string(), "sig".to_string()].into();
        assert_eq!(
            recorded_path_and_query("/v1/x?API%5Fkey=s3cr%2Ft&a=1&sig&sig=&b=api_key", &names),
            "/v1/x?API%5Fkey=[redacted]&a=1&sig&sig=[redacted]&b=api_key"
        );
        assert_eq!(recorded_path_and_query("/v1/x", &names), "/v1/x");
    }

    #[test]
    fn host_port_is_removed() {
        assert_eq!(strip_port("payments:8080"), "payments");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("payments"), "payments");
    }
}
