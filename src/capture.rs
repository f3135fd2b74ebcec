//! What countersign captures of a call: the request as the agent sent it,
//! the agent's declared identity and intent, and its evidence items. Two
//! views come out of it: the policy input (full values, in memory only) and
//! the record (allowlisted header values only, everything else `[redacted]`).

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use hyper::http::request::Parts;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::CaptureConfig;

/// The value that replaces a header value not on the allowlist.
pub const REDACTED: &str = "[redacted]";

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

    /// The request as the record keeps it: header values off the allowlist
    /// are replaced, the body is kept as JSON, text, or base64.
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
        json!({
            "method": self.method,
            "url": url,
            "scheme": self.scheme,
            "host": self.host,
            "path": self.path,
            "query": self.query_map,
            "headers": headers,
            "body": self.body_record(),
            "body_sha256": self.body_sha256,
            "body_size": self.body.len(),
        })
    }

    /// The whole body as the record keeps it, from the JSON parsed once.
    fn body_record(&self) -> Value {
        match (&self.body_json, self.body.is_empty()) {
            (_, true) => json!({"encoding": "empty"}),
            (Value::Null, false) => text_or_base64(&self.body, false),
            (parsed, false) => json!({"encoding": "json", "json": parsed}),
        }
    }

    /// The digest a review must carry (see [`request_digest`]).
    pub fn request_digest(&self, url: &str) -> String {
        request_digest(&self.method, url, &self.body_sha256, &self.evidence_json())
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

/// The digest a review must carry: SHA-256 over the method, the URL the
/// call goes to, the body's digest and the evidence (canonical JSON), one
/// per line, printed as `sha256:<hex>`. Recomputed from the record before
/// a held request is forwarded, so stored bytes that differ from what was
/// reviewed are never sent.
pub fn request_digest(method: &str, url: &str, body_sha256: &str, evidence: &Value) -> String {
    let evidence = crate::audit::record::canonical_json(evidence);
    let text = format!("countersign-request-v1\n{method}\n{url}\n{body_sha256}\n{evidence}");
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// A body as the record keeps it, cut at `max` bytes: parsed JSON when it is
/// JSON and whole, UTF-8 text when it is text, base64 otherwise.
pub fn body_view(body: &[u8], max: usize) -> Value {
    if body.is_empty() {
        return json!({"encoding": "empty"});
    }
    let truncated = body.len() > max;
    let kept = &body[..body.len().min(max)];
    if !truncated {
        if let Ok(v) = serde_json::from_slice::<Value>(kept) {
            return json!({"encoding": "json", "json": v});
        }
    }
    text_or_base64(kept, truncated)
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
    fn host_port_is_removed() {
        assert_eq!(strip_port("payments:8080"), "payments");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("payments"), "payments");
    }
}
