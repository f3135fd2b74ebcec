//! What countersign captures of a call: the request with its canonical
//! target ([`crate::proxy::target`]), the agent's declared identity and
//! intent, and its evidence items (each sent once, named, at most
//! [`MAX_AGENT_HEADER_BYTES`]). Two
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
use crate::proxy::body::{self, BodyError, Parsed};
use crate::proxy::target::Target;

/// The value that replaces a redacted header value, query value or secret.
pub const REDACTED: &str = "[redacted]";

/// Request headers whose values are never treated as secrets, even off the
/// allowlist: the record keeps them elsewhere anyway (`host`, `body_size`)
/// or they only describe the connection. Scrubbing their values from text
/// would blank the recorded host and common words, protecting nothing.
/// MCP's protocol framing and the media types
/// ([`crate::proxy::mcp::PROTOCOL_HEADERS`]) are not secrets either: the
/// policy reads them, a held MCP call is forwarded with them, and scrubbed
/// as secrets `tools/call` would vanish from the record.
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

/// Who is acting: as the agent declares it, and as countersign verified it.
#[derive(Debug, Clone, Default)]
pub struct Agent {
    /// Acting agent id, as declared.
    pub id: Option<String>,
    /// Person or team it acts for, as declared.
    pub on_behalf_of: Option<String>,
    /// Its stated purpose.
    pub intent: Option<String>,
    /// The identity the call proved ([`crate::identity`]), if any.
    pub verified: Option<std::sync::Arc<crate::identity::Verified>>,
}

/// Largest value, in bytes, of one agent or evidence header. Evidence is a
/// value or a reference (`doc://inv/118; sha256=...`), not the document.
pub const MAX_AGENT_HEADER_BYTES: usize = 4096;

/// Why the agent or evidence headers were refused. Each message says what
/// to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentHeaderError {
    /// The same agent or evidence header more than once.
    #[error("the header `{0}` is sent more than once; send it once (the agent, its principal, its intent and each evidence item have one value)")]
    Repeated(String),
    /// `x-evidence-` with nothing after the prefix.
    #[error("the header `{0}` names no evidence item; put the item's name after the prefix, as in `{0}invoice`")]
    EmptyEvidenceName(String),
    /// A value over [`MAX_AGENT_HEADER_BYTES`].
    #[error("the header `{name}` is {size} bytes, over the {max}-byte limit for agent and evidence headers; send a reference (such as `doc://...; sha256=...`) instead of the content")]
    Oversized {
        /// Header name.
        name: String,
        /// Its value's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A value that is not UTF-8 text.
    #[error("the header `{0}` is not UTF-8 text; servers read such bytes differently (as Latin-1, replaced, or dropped), so the policy cannot judge what the upstream would read: send UTF-8")]
    NotText(String),
    /// A header name with `_`: servers that map `-` and `_` alike (CGI,
    /// WSGI, Rack) would read it as another header the policy did not see.
    #[error("the header `{0}` has an underscore in its name, which some servers read as a hyphen; send it with hyphens")]
    Underscore(String),
}

/// A head whose agent or evidence headers were refused: the request as
/// captured without them (for the record), and why.
#[derive(Debug)]
pub struct HeadRefused {
    /// The request, agent and evidence left empty.
    pub request: Box<CapturedRequest>,
    /// Why.
    pub error: AgentHeaderError,
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
    /// The canonical path ([`Target::path`]): routed, judged, recorded and
    /// forwarded as it is. For a refused target, the path as sent.
    pub path: String,
    /// The canonical query (without `?`), if any.
    pub query: Option<String>,
    /// The query as name → values, percent-decoded (parsed once, used by
    /// the policy input and the record).
    pub query_map: Map<String, Value>,
    /// The target exactly as the agent sent it, when it differs from the
    /// canonical one (for the record only: the policy never reads it).
    pub as_sent: Option<String>,
    /// Headers other than agent/evidence headers: lower-case names, values
    /// of repeated headers joined by ", ", in first-seen order.
    pub headers: Vec<(String, String)>,
    /// Agent identity.
    pub agent: Agent,
    /// Evidence items by name (the part after the evidence prefix).
    pub evidence: BTreeMap<String, String>,
    /// The agent and evidence headers as sent (lower-case name, value), for
    /// the opa-envoy input, whose policies read them among the headers.
    pub agent_headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
    /// The body as the policy reads it (parsed once by
    /// [`CapturedRequest::parse_body`], used by the policy input and the record).
    pub body_parsed: Parsed,
    /// Every `Content-Type` value, to refuse more than one.
    content_types: Vec<String>,
    /// What [`CapturedRequest::refused_early`] withheld from a refused
    /// target (parameter values, user info): secrets for the record.
    withheld: Vec<String>,
}

impl CapturedRequest {
    /// Captures the head of a request whose target is canonical; the body is
    /// attached with [`CapturedRequest::with_body`]. Refuses repeated,
    /// nameless, oversized or non-text agent and evidence headers.
    pub fn from_parts(
        parts: &Parts,
        scheme: &str,
        target: &Target,
        cfg: &CaptureConfig,
    ) -> Result<CapturedRequest, HeadRefused> {
        let mut request = CapturedRequest::head(parts, scheme, cfg);
        request.path = target.path().to_string();
        request.query = target.query().map(str::to_string);
        request.query_map = target.query_fields().clone();
        let sent = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
        request.as_sent = (sent != target.path_and_query()).then(|| sent.to_string());
        if let Err(error) = request.take_agent_headers(parts, cfg) {
            request.agent = Agent::default();
            request.evidence.clear();
            return Err(HeadRefused {
                request: Box::new(request),
                error,
            });
        }
        Ok(request)
    }

    /// Captures the head of a request refused before its target was
    /// checked (a refused method or target), for its record: the target as
    /// sent but for what may be secret in it (query values, path
    /// parameters, user info in the target or the Host), and agent headers
    /// taken as far as they are valid.
    pub fn refused_early(parts: &Parts, scheme: &str, cfg: &CaptureConfig) -> CapturedRequest {
        let mut request = CapturedRequest::head(parts, scheme, cfg);
        let mut withheld = Vec::new();
        request.path = withhold_path_parameters(parts.uri.path(), &mut withheld);
        request.query = parts
            .uri
            .query()
            .map(|q| withhold_query_values(q, &mut withheld));
        let authority =
            parts
                .uri
                .authority()
                .map(|a| match withhold_user_info(a.as_str(), &mut withheld) {
                    Some(host) => format!("{REDACTED}@{host}"),
                    None => a.to_string(),
                });
        request.as_sent = Some(format!(
            "{}{}{}",
            parts
                .uri
                .scheme_str()
                .map(|s| format!("{s}://"))
                .unwrap_or_default(),
            authority.unwrap_or_default(),
            request.path_and_query()
        ));
        // A Host with user info was refused; the recorded host is made
        // from it (lower-cased), so it must not keep the password.
        if let Some(host) = parts.headers.get(hyper::header::HOST) {
            let host = String::from_utf8_lossy(host.as_bytes());
            if withhold_user_info(&host, &mut withheld).is_some() {
                request.host = REDACTED.to_string();
            }
        }
        request.withheld = withheld;
        if request.take_agent_headers(parts, cfg).is_err() {
            request.agent = Agent::default();
            request.evidence.clear();
        }
        request
    }

    /// Everything but the target and the agent headers. Hop-by-hop headers
    /// (and any header the agent names in `Connection`) are left out: they
    /// are not forwarded, so the policy and the record must not see them
    /// either (a policy could otherwise judge `x-dry-run: true` on a call
    /// the upstream runs without it).
    fn head(parts: &Parts, scheme: &str, cfg: &CaptureConfig) -> CapturedRequest {
        let names = &cfg.agent_headers;
        let hop = crate::proxy::forward::connection_tokens(&parts.headers);
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut content_types = Vec::new();
        for (name, value) in &parts.headers {
            let name = name.as_str();
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if names.is_agent_header(name) || crate::proxy::forward::is_hop_by_hop(name, &hop) {
                continue;
            }
            if name == hyper::header::CONTENT_TYPE.as_str() {
                content_types.push(value.clone());
            }
            if let Some(existing) = headers.iter_mut().find(|(n, _)| n == name) {
                existing.1.push_str(", ");
                existing.1.push_str(&value);
            } else {
                headers.push((name.to_string(), value));
            }
        }
        // The forwarding client (reqwest) sends `accept: */*` when the call
        // has no Accept header, and cannot be told not to; the policy and
        // the record see the call as the upstream will get it.
        if !headers.iter().any(|(n, _)| n == "accept") {
            headers.push(("accept".to_string(), "*/*".to_string()));
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
            path: String::new(),
            query: None,
            query_map: Map::new(),
            as_sent: None,
            headers,
            agent: Agent::default(),
            evidence: BTreeMap::new(),
            agent_headers: Vec::new(),
            body: Bytes::new(),
            body_sha256: hex::encode(Sha256::digest([])),
            body_parsed: Parsed::Opaque,
            content_types,
            withheld: Vec::new(),
        }
    }

    /// Takes the agent and evidence headers: each at most once, named,
    /// within [`MAX_AGENT_HEADER_BYTES`], UTF-8. Today's agents have no
    /// reason to send one twice, and "the last one wins" would let the
    /// policy and the record disagree with what a reviewer reads.
    fn take_agent_headers(
        &mut self,
        parts: &Parts,
        cfg: &CaptureConfig,
    ) -> Result<(), AgentHeaderError> {
        let names = &cfg.agent_headers;
        for (name, value) in &parts.headers {
            let name = name.as_str();
            if name.contains('_') {
                return Err(AgentHeaderError::Underscore(name.to_string()));
            }
            // Any header: the policy reads its value as text, and an
            // upstream that drops the bytes that are not (`errors='ignore'`)
            // would read `adm\xffin` as the `admin` a rule refused.
            if std::str::from_utf8(value.as_bytes()).is_err() {
                return Err(AgentHeaderError::NotText(name.to_string()));
            }
            if !names.is_agent_header(name) {
                continue;
            }
            if parts.headers.get_all(name).iter().count() > 1 {
                return Err(AgentHeaderError::Repeated(name.to_string()));
            }
            if value.len() > MAX_AGENT_HEADER_BYTES {
                return Err(AgentHeaderError::Oversized {
                    name: name.to_string(),
                    size: value.len(),
                    max: MAX_AGENT_HEADER_BYTES,
                });
            }
            let value = std::str::from_utf8(value.as_bytes())
                .map_err(|_| AgentHeaderError::NotText(name.to_string()))?
                .to_string();
            self.agent_headers.push((name.to_string(), value.clone()));
            if name == names.id {
                self.agent.id = Some(value);
            } else if name == names.on_behalf_of {
                self.agent.on_behalf_of = Some(value);
            } else if name == names.intent {
                self.agent.intent = Some(value);
            } else if let Some(item) = name.strip_prefix(names.evidence_prefix.as_str()) {
                if item.is_empty() {
                    return Err(AgentHeaderError::EmptyEvidenceName(name.to_string()));
                }
                self.evidence.insert(item.to_string(), value);
            }
        }
        Ok(())
    }

    /// Attaches the body and its digest; [`CapturedRequest::parse_body`]
    /// reads it for the policy.
    pub fn with_body(mut self, body: Bytes) -> CapturedRequest {
        self.body_sha256 = hex::encode(Sha256::digest(&body));
        self.body = body;
        self
    }

    /// Parses the body for the policy (strict JSON, form fields), or says
    /// why it is refused.
    pub fn parse_body(&mut self) -> Result<(), BodyError> {
        let encoding = self
            .headers
            .iter()
            .find(|(n, _)| n == "content-encoding")
            .map(|(_, v)| v.as_str());
        self.body_parsed = body::parse(&self.content_types, encoding, &self.body)?;
        Ok(())
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
            if !cfg.headers_allow.contains(name)
                && !NOT_SECRET.contains(&name.as_str())
                && !crate::proxy::mcp::PROTOCOL_HEADERS.contains(&name.as_str())
            {
                b.value(value);
            }
        }
        for (name, values) in &self.query_map {
            if cfg.redacts_query(name) {
                for v in values.as_array().into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        b.value(v);
                    }
                }
            }
        }
        for (name, raw) in query_pairs(self.query.as_deref().unwrap_or_default()) {
            if cfg.redacts_query(&name) {
                b.form(raw);
            }
        }
        // As sent and decoded: a message may quote either.
        for raw in &self.withheld {
            b.form(raw);
            if let Some((_, decoded)) = form_urlencoded::parse(format!("x={raw}").as_bytes()).next()
            {
                b.value(&decoded);
            }
        }
        b
    }

    /// The request as the record keeps it: header values off the allowlist
    /// and secret query values are replaced; the body is kept as JSON,
    /// text, or base64, cut at `capture.max_recorded_body_bytes` (its
    /// digest and size are the whole body's). `url` is the recorded one
    /// (none when no route took the call).
    pub fn record_view(&self, cfg: &CaptureConfig, url: Option<&str>) -> Value {
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
                if cfg.redacts_query(name) {
                    let n = values.as_array().map_or(1, Vec::len);
                    (name.clone(), json!(vec![REDACTED; n]))
                } else {
                    (name.clone(), values.clone())
                }
            })
            .collect();
        let target = self.recorded_path_and_query(cfg);
        let query_redacted = target != self.path_and_query();
        let mut view = json!({
            "method": self.method,
            "url": url,
            "scheme": self.scheme,
            "host": self.host,
            "path": self.path,
            "target": target,
            "query": query,
            "headers": headers,
            "body": self.body_record(cfg.max_recorded_body_bytes as usize),
            "body_sha256": self.body_sha256,
            "body_size": self.body.len(),
        });
        if let Some(sent) = &self.as_sent {
            // The spelling as sent carries the query as sent: with secret
            // values in it, only its path is kept.
            view["as_sent"] = match (query_redacted, sent.split_once('?')) {
                (true, Some((path, _))) => json!(format!("{path}?{REDACTED}")),
                _ => json!(sent),
            };
        }
        view
    }

    /// The body as the record keeps it, up to `max` bytes: a whole JSON
    /// body from the JSON parsed once; a form body as the text it was.
    fn body_record(&self, max: usize) -> Value {
        if self.body.len() > max {
            return body_view_of(&self.body[..max], true);
        }
        match (&self.body_parsed, self.body.is_empty()) {
            (_, true) => json!({"encoding": "empty"}),
            (Parsed::Json(parsed), false) => json!({"encoding": "json", "json": parsed}),
            (_, false) => text_or_base64(&self.body, false),
        }
    }

    /// The digest a review must carry (see [`request_digest`]).
    pub fn request_digest(&self, url: &str) -> String {
        request_digest(&self.method, url, &self.body_sha256, &self.evidence_json())
    }

    /// The agent block of the policy input and the record: what the
    /// headers declared, and `verified` (null when nothing was proven).
    pub fn agent_json(&self) -> Value {
        let verified = crate::identity::verified_json(self.agent.verified.as_ref(), &self.agent);
        json!({"id": self.agent.id, "on_behalf_of": self.agent.on_behalf_of, "intent": self.agent.intent, "verified": verified})
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

/// The host of an authority with user info (`user:pass@host`), the user
/// info and its password going to `withheld` as sent and lower-cased (the
/// recorded host is lower-cased); `None` when there is no user info.
fn withhold_user_info<'a>(authority: &'a str, withheld: &mut Vec<String>) -> Option<&'a str> {
    let (user_info, host) = authority.rsplit_once('@')?;
    let password = user_info.split_once(':').map(|(_, p)| p);
    for secret in [Some(user_info), password].into_iter().flatten() {
        withheld.push(secret.to_string());
        withheld.push(secret.to_ascii_lowercase());
    }
    Some(host)
}

/// A refused target's parts as the record may keep them. Such a target was
/// refused because readers disagree on where its parts begin and end (`;`
/// separates query parameters to some frameworks, and path parameters such
/// as `;jsessionid=` to Java servers), so no per-name rule
/// (`capture.redact_query`) can tell which value is secret. Every path
/// parameter is `[redacted]`, and what it withheld goes to `withheld`.
fn withhold_path_parameters(path: &str, withheld: &mut Vec<String>) -> String {
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| match segment.split_once(';') {
            Some((name, params)) => {
                withheld.extend(params.split(';').map(str::to_string));
                format!("{name};{REDACTED}")
            }
            None => segment.to_string(),
        })
        .collect();
    segments.join("/")
}

/// The query of a refused target as the record may keep it (see
/// [`withhold_path_parameters`]): every value, split at `&` or `;`, is
/// `[redacted]` and names are kept; a piece without `=` may be a bare
/// token, so it goes whole. The separators stay as sent.
fn withhold_query_values(query: &str, withheld: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        match rest[..end].split_once('=') {
            Some((name, value)) => {
                withheld.push(value.to_string());
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            None if end == 0 => {}
            None => {
                withheld.push(rest[..end].to_string());
                out.push_str(REDACTED);
            }
        }
        let Some(separator) = rest[end..].chars().next() else {
            return out;
        };
        out.push(separator);
        rest = &rest[end + 1..];
    }
}

/// `path_and_query` with the values of query parameters named in `names`
/// (field bases, [`crate::fold::field`], matched after percent-decoding)
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

/// A query parameter name as `form_urlencoded` decodes it, as the base of
/// the field frameworks read ([`crate::fold::field`]).
fn decoded_name(raw: &str) -> String {
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(k, _)| crate::fold::field(&k).base)
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
        // Names PHP reads as `api_key`.
        assert_eq!(
            recorded_path_and_query(
                "/v1/x?api.key=s1&+api_key=s2&api_key[]=s3&api+key=s4",
                &names
            ),
            "/v1/x?api.key=[redacted]&+api_key=[redacted]&api_key[]=[redacted]&api+key=[redacted]"
        );
    }

    #[test]
    fn host_port_is_removed() {
        assert_eq!(strip_port("payments:8080"), "payments");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("payments"), "payments");
    }
}
