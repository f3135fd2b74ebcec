//! MCP on a `protocol: mcp` route (docs/mcp.md): reads the JSON-RPC
//! message of a Streamable HTTP call into [`Call`] (what the policy sees as
//! `input.mcp`), refuses calls whose `Mcp-Method` / `Mcp-Name` headers
//! disagree with the body or whose protocol version is not supported, and
//! answers refusals the MCP way: a tool result with `isError: true` for a
//! `tools/call`, a JSON-RPC error otherwise.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::body::Parsed;
use super::pipeline::Outcome;
use crate::http::{json as json_response, Body};

/// The protocol versions countersign understands on an MCP route: the
/// Streamable HTTP transport (2025-03-26 and later, with sessions) and the
/// stateless transport of 2026-07-28 (`Mcp-Method` / `Mcp-Name`).
/// 2024-11-05 spoke the older HTTP+SSE transport and is refused.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// The first version whose results carry `resultType`.
const RESULT_TYPE_SINCE: &str = "2026-07-28";

/// Headers a held MCP call keeps for its forward, whatever
/// `capture.headers_allow` says: without them the server answers as if the
/// call came from another session or protocol version, or refuses it
/// (406 without `accept`). They name the protocol, the method, the session
/// and the media types, not a secret.
pub const PROTOCOL_HEADERS: [&str; 6] = [
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "accept",
    "content-type",
];

/// The `_meta` key under which clients that cannot set headers send
/// evidence: an object of name → string.
pub const EVIDENCE_META: &str = "countersign/evidence";

/// JSON-RPC: the message is not a valid request.
const INVALID_REQUEST: i64 = -32600;
/// MCP: the HTTP headers disagree with the body.
const HEADER_MISMATCH: i64 = -32020;
/// MCP: the protocol version is not supported.
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// countersign (implementation-defined band): refused by policy or review.
const REFUSED: i64 = -32010;
/// countersign: the call could not be completed (store, upstream).
const UNAVAILABLE: i64 = -32011;

/// One MCP call as the policy sees it (`input.mcp`).
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// `request`, `notification`, `response` (a client answering the
    /// server), `stream` (GET: the server's message stream) or `close`
    /// (DELETE: the end of a session).
    pub kind: &'static str,
    /// The JSON-RPC method; `None` for responses, GET and DELETE.
    pub method: Option<String>,
    /// The JSON-RPC id of a request or response.
    pub id: Option<Value>,
    /// For `tools/call`: the tool's name.
    pub tool: Option<String>,
    /// For `tools/call`: the whole arguments.
    pub arguments: Option<Value>,
    /// `Mcp-Session-Id`, when the call belongs to a session.
    pub session_id: Option<String>,
    /// The protocol version the call declares (header or `_meta`).
    pub protocol_version: Option<String>,
    /// The progress token the client sent, if any.
    pub progress_token: Option<Value>,
    /// Evidence from `params._meta["countersign/evidence"]`.
    pub evidence: BTreeMap<String, String>,
}

/// Why an MCP call is refused before the policy runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// The body is not one JSON-RPC 2.0 message.
    #[error("the body is not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(String),
    /// A header the transport defines is repeated or not text.
    #[error("the {0} header is repeated or not text")]
    BadHeader(&'static str),
    /// `Mcp-Method` / `Mcp-Name` disagree with the body.
    #[error("the {header} header says `{header_value}` but the body says `{body_value}`")]
    HeaderMismatch {
        /// Which header.
        header: &'static str,
        /// What it says.
        header_value: String,
        /// What the body says (empty when it says nothing).
        body_value: String,
    },
    /// A protocol version countersign does not speak.
    #[error("MCP protocol version `{0}` is not supported here (supported: 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28)")]
    UnsupportedVersion(String),
    /// `_meta["countersign/evidence"]` is not an object of strings, or
    /// contradicts an `x-evidence-*` header.
    #[error("params._meta[\"countersign/evidence\"]: {0}")]
    BadEvidence(String),
}

/// The members of a JSON-RPC message.
const MESSAGE_MEMBERS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
/// The `params` members the transport and the policy input read.
const PARAMS_MEMBERS: [&str; 5] = ["name", "arguments", "uri", "_meta", "cursor"];
/// The methods of the protocol's versions countersign speaks.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/elicitation/complete",
    "notifications/tasks/status",
];

/// Refuses a name that a lenient reader takes for one of `known` but that
/// is not spelled exactly so (`Method`, `paramſ`, `Tools/Call`): the
/// policy would read it as some other member or method, while a server
/// that matches names loosely (Go's `encoding/json` folds case) acts on it
/// as the one it resembles.
fn exactly_spelled<'a>(
    names: impl IntoIterator<Item = &'a String>,
    known: &[&str],
    what: &str,
) -> Result<(), McpError> {
    for name in names {
        if known.contains(&name.as_str()) {
            continue;
        }
        // The known names are ASCII, so a case-blind ASCII comparison
        // with the folded name is their fold's (no fold per known name).
        let folded = crate::fold::fold(name);
        if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(&folded)) {
            return Err(McpError::NotJsonRpc(format!(
                "`{name}` is the {what} `{k}` to readers that ignore case; spell it `{k}`"
            )));
        }
    }
    Ok(())
}

impl McpError {
    fn code(&self) -> i64 {
        match self {
            McpError::HeaderMismatch { .. } | McpError::BadHeader(_) => HEADER_MISMATCH,
            McpError::UnsupportedVersion(_) => UNSUPPORTED_PROTOCOL_VERSION,
            McpError::NotJsonRpc(_) | McpError::BadEvidence(_) => INVALID_REQUEST,
        }
    }

    /// Short reason for metrics and the record.
    pub fn reason(&self) -> &'static str {
        match self {
            McpError::HeaderMismatch { .. } | McpError::BadHeader(_) => "mcp_header_mismatch",
            McpError::UnsupportedVersion(_) => "mcp_unsupported_version",
            McpError::NotJsonRpc(_) => "mcp_invalid",
            McpError::BadEvidence(_) => "bad_evidence",
        }
    }
}

fn header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, McpError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(McpError::BadHeader(name));
    }
    first
        .to_str()
        .map(|s| Some(s.trim().to_string()))
        .map_err(|_| McpError::BadHeader(name))
}

/// Reads the call: the transport's headers and, for a POST, the JSON-RPC
/// message in the (strict JSON) body. A POST must carry exactly one
/// message; batches went away with 2025-06-18.
pub fn read(method: &str, headers: &HeaderMap, body: &Parsed) -> Result<Call, McpError> {
    let mut call = Call {
        session_id: header(headers, "mcp-session-id")?,
        protocol_version: header(headers, "mcp-protocol-version")?,
        ..Default::default()
    };
    let header_method = header(headers, "mcp-method")?;
    let header_name = header(headers, "mcp-name")?;
    if method != "POST" {
        call.kind = if method == "DELETE" {
            "close"
        } else {
            "stream"
        };
        check_version(&call)?;
        if let Some(m) = header_method {
            return Err(McpError::HeaderMismatch {
                header: "mcp-method",
                header_value: m,
                body_value: String::new(),
            });
        }
        return Ok(call);
    }
    let Parsed::Json(message) = body else {
        return Err(McpError::NotJsonRpc(
            "a POST carries one JSON-RPC message as application/json".into(),
        ));
    };
    let Some(message) = message.as_object() else {
        return Err(McpError::NotJsonRpc(
            "not a JSON object (batches are not part of the transport since 2025-06-18)".into(),
        ));
    };
    exactly_spelled(message.keys(), &MESSAGE_MEMBERS, "member")?;
    if let Some(Value::Object(params)) = message.get("params") {
        exactly_spelled(params.keys(), &PARAMS_MEMBERS, "params member")?;
    }
    if let Some(Value::String(method)) = message.get("method") {
        exactly_spelled([method], METHODS, "method")?;
        if message.contains_key("result") || message.contains_key("error") {
            return Err(McpError::NotJsonRpc(
                "it has a `method` and a `result` or `error`: a request and a response at once"
                    .into(),
            ));
        }
    }
    if message.get("jsonrpc") != Some(&json!("2.0")) {
        return Err(McpError::NotJsonRpc("`jsonrpc` is not \"2.0\"".into()));
    }
    call.id = message.get("id").cloned();
    if let Some(id) = &call.id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err(McpError::NotJsonRpc(
                "`id` is neither a string nor an integer".into(),
            ));
        }
    }
    let params = message.get("params");
    if params.is_some_and(|p| !p.is_object()) {
        return Err(McpError::NotJsonRpc("`params` is not an object".into()));
    }
    let meta = params.and_then(|p| p.get("_meta"));
    match message.get("method") {
        Some(Value::String(m)) => {
            call.kind = if call.id.is_some() {
                "request"
            } else {
                "notification"
            };
            call.method = Some(m.clone());
        }
        Some(_) => return Err(McpError::NotJsonRpc("`method` is not a string".into())),
        None if call.id.is_some()
            && (message.contains_key("result") || message.contains_key("error")) =>
        {
            call.kind = "response";
        }
        None => return Err(McpError::NotJsonRpc("no `method`".into())),
    }
    // The version a 2026-07-28 message declares in `_meta` must agree with the header.
    if let Some(v) = meta.and_then(|m| m.get("io.modelcontextprotocol/protocolVersion")) {
        let v = v.as_str().unwrap_or_default().to_string();
        match &call.protocol_version {
            Some(h) if *h != v => {
                return Err(McpError::HeaderMismatch {
                    header: "mcp-protocol-version",
                    header_value: h.clone(),
                    body_value: v,
                })
            }
            _ => call.protocol_version = Some(v),
        }
    }
    check_version(&call)?;
    if let Some(h) = header_method {
        let body_value = call.method.clone().unwrap_or_default();
        if h != body_value {
            return Err(McpError::HeaderMismatch {
                header: "mcp-method",
                header_value: h,
                body_value,
            });
        }
    }
    // What `Mcp-Name` names: the tool or prompt, or the resource's URI.
    let named = params.and_then(|p| match call.method.as_deref() {
        Some("tools/call" | "prompts/get") => p.get("name"),
        Some("resources/read") => p.get("uri"),
        _ => None,
    });
    if let Some(h) = header_name {
        let body_value = named
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if h != body_value {
            return Err(McpError::HeaderMismatch {
                header: "mcp-name",
                header_value: h,
                body_value,
            });
        }
    }
    if call.method.as_deref() == Some("tools/call") {
        match params.and_then(|p| p.get("name")) {
            Some(Value::String(n)) => call.tool = Some(n.clone()),
            _ => {
                return Err(McpError::NotJsonRpc(
                    "a tools/call without a tool name".into(),
                ))
            }
        }
        call.arguments = Some(
            params
                .and_then(|p| p.get("arguments"))
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
    }
    call.progress_token = meta.and_then(|m| m.get("progressToken")).cloned();
    if let Some(evidence) = meta.and_then(|m| m.get(EVIDENCE_META)) {
        let Some(map) = evidence.as_object() else {
            return Err(McpError::BadEvidence("not an object".into()));
        };
        for (name, value) in map {
            let Some(value) = value.as_str() else {
                return Err(McpError::BadEvidence(format!("`{name}` is not a string")));
            };
            call.evidence
                .insert(name.to_ascii_lowercase(), value.to_string());
        }
    }
    Ok(call)
}

fn check_version(call: &Call) -> Result<(), McpError> {
    match &call.protocol_version {
        Some(v) if !SUPPORTED_VERSIONS.contains(&v.as_str()) => {
            Err(McpError::UnsupportedVersion(v.clone()))
        }
        _ => Ok(()),
    }
}

/// Merges the call's `_meta` evidence into the evidence headers brought;
/// a name given both ways with different values is refused (which one
/// would the reviewers have seen?).
pub fn merge_evidence(
    into: &mut BTreeMap<String, String>,
    from_meta: &BTreeMap<String, String>,
) -> Result<(), McpError> {
    for (name, value) in from_meta {
        match into.get(name) {
            Some(v) if v != value => {
                return Err(McpError::BadEvidence(format!(
                    "`{name}` disagrees with the x-evidence-{name} header"
                )))
            }
            _ => {
                into.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(())
}

impl Call {
    /// `input.mcp` of the policy input.
    pub fn to_input(&self) -> Value {
        json!({
            "kind": self.kind,
            "method": self.method,
            "id": self.id,
            "tool": self.tool,
            "arguments": self.arguments,
            "session_id": self.session_id,
            "protocol_version": self.protocol_version,
        })
    }

    fn is_tool_call(&self) -> bool {
        self.kind == "request" && self.method.as_deref() == Some("tools/call")
    }

    /// A tool result the model reads: `isError: true` and `text`, valid
    /// for the call's protocol version.
    pub fn tool_error(&self, text: &str, action_id: &str) -> Value {
        let mut result = json!({
            "content": [{"type": "text", "text": text}],
            "isError": true,
            "_meta": {"countersign/action_id": action_id},
        });
        if self
            .protocol_version
            .as_deref()
            .is_some_and(|v| v >= RESULT_TYPE_SINCE)
        {
            result["resultType"] = json!("complete");
        }
        json!({"jsonrpc": "2.0", "id": self.id, "result": result})
    }
}

/// A JSON-RPC error answer (id `null` when the message had none we could read).
fn error(id: Option<&Value>, code: i64, message: &str, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message, "data": data}})
}

/// What the pipeline knows of an MCP call when it has to answer it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The JSON-RPC id in the body, if the body could be read at all.
    pub id: Option<Value>,
    /// The call, once read and checked.
    pub call: Option<Call>,
}

/// What the model reads for a refused call.
fn text_of(outcome: &Outcome, action_id: &str) -> String {
    let mut text = match outcome {
        Outcome::Denied(d) if !d.reasons.is_empty() => {
            format!("countersign denied this call: {}", d.reasons.join("; "))
        }
        Outcome::Rejected {
            reviewer,
            comment: Some(c),
        } => format!(
            "countersign: reviewer {reviewer} rejected this call: {c}; nothing was forwarded"
        ),
        other => format!("countersign: {}", other.message()),
    };
    text.push_str(&format!(" (action {action_id})"));
    text
}

/// Renders an outcome for an MCP route. A `tools/call` the policy, a
/// reviewer or the upstream refused becomes a tool result with
/// `isError: true` (HTTP 200), so the model sees why; any other request
/// gets a JSON-RPC error; a notification or a GET/DELETE keeps the HTTP
/// status (the transport has nothing to answer with).
pub fn render(outcome: Outcome, seen: &Seen, action_id: &str) -> Response<Body> {
    let Some(call) = &seen.call else {
        // Refused before the message could be trusted (too large, not
        // JSON-RPC, headers that disagree): a JSON-RPC error at the HTTP
        // status; the SDKs surface the error from the body.
        let status = outcome.status();
        let code = match &outcome {
            Outcome::Mcp(e) => e.code(),
            _ => INVALID_REQUEST,
        };
        let text = text_of(&outcome, action_id);
        let body = error(
            seen.id.as_ref(),
            code,
            &text,
            json!({"action_id": action_id, "reason": outcome.reason()}),
        );
        return with_own(json_response(status, &body), body);
    };
    if call.kind != "request" {
        return outcome.into_response(action_id);
    }
    let decided = matches!(
        outcome,
        Outcome::Denied(_)
            | Outcome::Rejected { .. }
            | Outcome::Expired
            | Outcome::WaitCancelled
            | Outcome::PolicyFailed { .. }
            | Outcome::StoreUnavailable(_)
            | Outcome::UpstreamFailed(_)
            | Outcome::UpstreamTimeout(_)
    );
    let text = text_of(&outcome, action_id);
    if decided && call.is_tool_call() {
        let body = call.tool_error(&text, action_id);
        return with_own(json_response(StatusCode::OK, &body), body);
    }
    let code = match outcome {
        Outcome::Denied(_)
        | Outcome::Rejected { .. }
        | Outcome::Expired
        | Outcome::WaitCancelled => REFUSED,
        _ if decided => UNAVAILABLE,
        _ => INVALID_REQUEST,
    };
    let status = if decided {
        StatusCode::OK
    } else {
        outcome.status()
    };
    let body = error(
        call.id.as_ref(),
        code,
        &text,
        json!({"action_id": action_id}),
    );
    with_own(json_response(status, &body), body)
}

/// The answer for a held `tools/call` not decided within `hold.wait`: a
/// tool error naming the action and where to learn its outcome. The call
/// stays held and is forwarded once if approved.
pub fn still_held(call: &Call, action_id: &str, status_url: &str) -> Response<Body> {
    let text = format!(
        "countersign is holding this call for review as action {action_id}; it was not decided in time to answer here. \
If reviewers approve it, it will run once, without being sent again; do not retry it. \
Learn its outcome with GET {status_url} on this server."
    );
    let body = if call.is_tool_call() {
        call.tool_error(&text, action_id)
    } else {
        error(
            call.id.as_ref(),
            REFUSED,
            &text,
            json!({"action_id": action_id, "state": "pending", "status_url": status_url}),
        )
    };
    with_own(json_response(StatusCode::OK, &body), body)
}

/// Whether the client takes a server-sent event stream as the answer.
pub fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// One server-sent event carrying a JSON-RPC message.
fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// A held call whose client sent a progress token: answers at once with
/// an event stream, sends `notifications/progress` every `interval` while
/// reviewers decide (so the client's timeout does not fire), then the
/// answer as the last event(s): the upstream's, relayed, or a tool error.
/// `wait` is the agent's side of the hold ([`super::hold::wait`]); if the
/// client hangs up it is dropped, as when any agent hangs up.
pub fn hold_with_progress<W>(
    call: Call,
    action_id: String,
    interval: std::time::Duration,
    wait: W,
) -> Response<Body>
where
    W: std::future::Future<Output = Result<Response<Body>, Outcome>> + Send + 'static,
{
    let (tx, body) = crate::http::ChannelBody::new(4);
    let token = call.progress_token.clone().unwrap_or(Value::Null);
    tokio::spawn(async move {
        tokio::pin!(wait);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut n = 0u64;
        let answer = loop {
            tokio::select! {
                answer = &mut wait => break answer,
                _ = tick.tick() => {
                    n += 1;
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                        "progressToken": token, "progress": n,
                        "message": format!("held for review by countersign (action {action_id})")}});
                    if tx.send(Ok(event(&note))).await.is_err() {
                        return; // the client hung up
                    }
                }
            }
        };
        let last = match answer {
            Ok(r) if r.status() == StatusCode::ACCEPTED => {
                let url = format!("{}{action_id}", super::hold::STATUS_PREFIX);
                own_json(still_held(&call, &action_id, &url))
            }
            Ok(r) => relayed(r, &call, &action_id).await,
            Err(outcome) => own_json(render(
                outcome,
                &Seen {
                    id: call.id.clone(),
                    call: Some(call.clone()),
                },
                &action_id,
            )),
        };
        let _ = tx.send(Ok(last)).await;
    });
    let mut r = Response::new(http_body_util::BodyExt::boxed(body));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    // The `answered` record keeps what countersign wrote, not the events.
    r.extensions_mut().insert(super::pipeline::OwnAnswer(json!({
        "stream": "text/event-stream",
        "note": "progress notifications while held, then the answer as the last event",
    })));
    r
}

/// The event for an answer countersign wrote itself.
fn own_json(r: Response<Body>) -> Bytes {
    match r.extensions().get::<super::pipeline::OwnAnswer>() {
        Some(own) => event(&own.0),
        None => Bytes::new(),
    }
}

/// The upstream's answer as events: a stream is relayed as it is, a JSON
/// message becomes one event, anything else a JSON-RPC error.
async fn relayed(r: Response<Body>, call: &Call, action_id: &str) -> Bytes {
    let sse = r
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    let status = r.status();
    let bytes = match http_body_util::BodyExt::collect(r.into_body()).await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return event(&error(
                call.id.as_ref(),
                UNAVAILABLE,
                &format!("countersign: the upstream's answer broke off: {e} (action {action_id})"),
                json!({"action_id": action_id}),
            ))
        }
    };
    if sse {
        return bytes;
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.get("jsonrpc").is_some() => event(&v),
        _ => event(&error(
            call.id.as_ref(),
            UNAVAILABLE,
            &format!("countersign: the MCP server answered HTTP {status} without a JSON-RPC message (action {action_id})"),
            json!({"action_id": action_id, "status": status.as_u16()}),
        )),
    }
}

fn with_own(mut r: Response<Body>, body: Value) -> Response<Body> {
    r.extensions_mut().insert(super::pipeline::OwnAnswer(body));
    r
}

/// The JSON-RPC messages of a recorded response body: the JSON body
/// itself, or the `data` of each server-sent event that is JSON.
pub fn messages(response: &Value) -> Vec<Value> {
    let body = &response["body"];
    match body["encoding"].as_str() {
        Some("json") => vec![body["json"].clone()],
        Some("text") => sse_events(body["text"].as_str().unwrap_or_default())
            .into_iter()
            .filter_map(|e| serde_json::from_str(&e).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// The `data` of each event in a server-sent event stream.
pub fn sse_events(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            if !data.is_empty() {
                events.push(data.join("\n"));
                data.clear();
            }
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    if !data.is_empty() {
        events.push(data.join("\n"));
    }
    events
}

/// The `mcp` block of a `completed` record: the JSON-RPC answer to the
/// call (its `result` or `error`) and how many other messages came along.
pub fn result_view(response: &Value) -> Option<Value> {
    let messages = messages(response);
    let answer = messages.iter().find(|m| {
        m.get("jsonrpc") == Some(&json!("2.0"))
            && (m.get("result").is_some() || m.get("error").is_some())
    })?;
    Some(json!({
        "id": answer.get("id"),
        "result": answer.get("result"),
        "error": answer.get("error"),
        "messages": messages.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    fn call(body: Value) -> Parsed {
        Parsed::Json(body)
    }

    #[test]
    fn reads_a_tool_call_with_its_arguments_and_evidence() {
        let c = read(
            "POST",
            &headers(&[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-session-id", "s1"),
            ]),
            &call(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "transfer", "arguments": {"amount": 5},
                    "_meta": {"progressToken": 3, "countersign/evidence": {"Ticket": "T-1"}}}})),
        )
        .unwrap();
        assert_eq!(c.tool.as_deref(), Some("transfer"));
        assert_eq!(c.arguments, Some(json!({"amount": 5})));
        assert_eq!(c.session_id.as_deref(), Some("s1"));
        assert_eq!(c.progress_token, Some(json!(3)));
        assert_eq!(c.evidence.get("ticket").map(String::as_str), Some("T-1"));
        assert_eq!(c.kind, "request");
    }

    #[test]
    fn headers_that_disagree_with_the_body_are_refused() {
        let body = call(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "balance"}}));
        for (h, v) in [("mcp-method", "tools/list"), ("mcp-name", "transfer")] {
            let e = read("POST", &headers(&[(h, v)]), &body).unwrap_err();
            assert!(matches!(e, McpError::HeaderMismatch { .. }), "{e}");
        }
        let e = read(
            "POST",
            &headers(&[("mcp-method", "tools/call"), ("mcp-method", "tools/call")]),
            &body,
        )
        .unwrap_err();
        assert_eq!(e, McpError::BadHeader("mcp-method"));
        let ok = headers(&[("mcp-method", "tools/call"), ("mcp-name", "balance")]);
        assert!(read("POST", &ok, &body).is_ok());
    }

    #[test]
    fn members_and_methods_spelled_only_loosely_are_refused() {
        for (message, why) in [
            // A tool call dressed as a response: Go's encoding/json fills
            // `Method` and `Params` from these.
            (
                json!({"jsonrpc": "2.0", "id": 2, "result": {}, "Method": "tools/call",
                    "Params": {"name": "delete_file"}}),
                "`Method` is the member `method`",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "read"}, "param\u{17F}": {"name": "delete"}}),
                "the member `params`",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "read", "Arguments": {"path": "/etc/shadow"}}}),
                "the params member `arguments`",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 2, "method": "Tools/Call", "params": {"name": "x"}}),
                "the method `tools/call`",
            ),
            (
                json!({"jsonrpc": "2.0", "id": 2, "method": "ping", "result": {}}),
                "a request and a response at once",
            ),
        ] {
            let e = read("POST", &HeaderMap::new(), &call(message.clone())).unwrap_err();
            assert!(
                matches!(&e, McpError::NotJsonRpc(m) if m.contains(why)),
                "{message}: {e}"
            );
        }
        // Methods countersign does not know pass as they are.
        let c = read(
            "POST",
            &HeaderMap::new(),
            &call(json!({"jsonrpc": "2.0", "id": 2, "method": "vendor/Custom"})),
        )
        .unwrap();
        assert_eq!(c.method.as_deref(), Some("vendor/Custom"));
    }

    #[test]
    fn versions_outside_the_supported_ones_and_batches_are_refused() {
        let body = call(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
        let e = read(
            "POST",
            &headers(&[("mcp-protocol-version", "2024-11-05")]),
            &body,
        )
        .unwrap_err();
        assert!(matches!(e, McpError::UnsupportedVersion(_)));
        let batch = call(json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]));
        assert!(matches!(
            read("POST", &HeaderMap::new(), &batch),
            Err(McpError::NotJsonRpc(_))
        ));
        let meta = call(json!({"jsonrpc": "2.0", "id": 1, "method": "ping",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}));
        let e = read(
            "POST",
            &headers(&[("mcp-protocol-version", "2025-11-25")]),
            &meta,
        )
        .unwrap_err();
        assert!(matches!(e, McpError::HeaderMismatch { .. }));
    }

    #[test]
    fn tool_errors_carry_result_type_only_where_the_version_has_it() {
        let mut c = Call {
            kind: "request",
            method: Some("tools/call".into()),
            id: Some(json!(7)),
            protocol_version: Some("2026-07-28".into()),
            ..Default::default()
        };
        assert_eq!(c.tool_error("no", "a")["result"]["resultType"], "complete");
        c.protocol_version = Some("2025-11-25".into());
        assert!(c.tool_error("no", "a")["result"]
            .get("resultType")
            .is_none());
    }

    #[test]
    fn the_answer_is_found_in_a_stream_of_events() {
        let text = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[]}}\r\n\r\n";
        assert!(
            result_view(&json!({"body": {"encoding": "json", "json": {"result": 1}}})).is_none()
        );
        let view = result_view(&json!({"body": {"encoding": "text", "text": text}})).unwrap();
        assert_eq!(view["id"], 3);
        assert_eq!(view["messages"], 2);
        assert_eq!(view["result"], json!({"content": []}));
    }
}
