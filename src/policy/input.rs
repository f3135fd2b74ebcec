//! The policy input document (docs/reference.md#the-policy-input), and its
//! opa-envoy-plugin variant for policies ported from OPA.

use serde_json::{json, Map, Value};

use crate::capture::{CapturedRequest, REDACTED};
use crate::config::{CaptureConfig, InputShape};

/// Facts about the call that are not part of the request itself.
pub struct Context<'a> {
    /// Action id.
    pub action_id: &'a str,
    /// RFC 3339 time of the decision.
    pub time: &'a str,
    /// Route name.
    pub route: &'a str,
    /// Route upstream.
    pub upstream: &'a str,
}

/// Builds the input document as JSON. `request.path` and `request.target`
/// are the canonical target ([`crate::proxy::target`]): `target` is exactly
/// the path and query the upstream receives.
pub fn build(ctx: &Context<'_>, req: &CapturedRequest, shape: InputShape) -> Value {
    let headers: Map<String, Value> = req
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    let mut input = json!({
        "action_id": ctx.action_id,
        "time": ctx.time,
        "route": {"name": ctx.route, "upstream": ctx.upstream},
        "agent": req.agent_json(),
        "request": {
            "method": req.method,
            "scheme": req.scheme,
            "host": req.host,
            "path": req.path,
            "target": req.path_and_query(),
            "query": req.query_map,
            "headers": headers,
            "body": req.body_parsed.to_input(),
            "body_format": req.body_parsed.format(),
            "body_sha256": req.body_sha256,
            "body_size": req.body.len(),
        },
        "evidence": req.evidence_json(),
    });
    if shape == InputShape::Envoy {
        add_envoy(&mut input, req);
    }
    input
}

/// The policy input as the record keeps it (the `decided` record's
/// `input`, which `audit replay` evaluates again).
pub struct Recorded {
    /// The input, redacted like the record's request view.
    pub input: Value,
    /// The body was larger than `capture.max_recorded_body_bytes`, so it
    /// is left out (`null`) and a replay cannot see it.
    pub body_omitted: bool,
}

/// `input` redacted as the record's request view is: header values off
/// `capture.headers_allow` and the values of query parameters named in
/// `capture.redact_query` become `[redacted]`, the target is the recorded
/// one, and a body over `capture.max_recorded_body_bytes` is left out.
/// (The record then scrubs the call's secrets from whatever else repeats
/// them.) A replay evaluates exactly this, so a policy that reads a
/// redacted value may decide differently on replay; docs/record.md says so.
pub fn recorded(input: &Value, req: &CapturedRequest, cfg: &CaptureConfig) -> Recorded {
    let mut out = input.clone();
    let redacted = Value::String(REDACTED.to_string());
    let redact_headers = |headers: &mut Value| {
        if let Some(map) = headers.as_object_mut() {
            for (name, value) in map.iter_mut() {
                if !cfg.headers_allow.contains(name) {
                    *value = redacted.clone();
                }
            }
        }
    };
    let redact_query = |query: &mut Value| {
        if let Some(map) = query.as_object_mut() {
            for (name, values) in map.iter_mut() {
                if cfg.redacts_query(name) {
                    let n = values.as_array().map_or(1, Vec::len);
                    *values = json!(vec![REDACTED; n]);
                }
            }
        }
    };
    let target = req.recorded_path_and_query(cfg);
    let body_omitted = req.body.len() as u64 > cfg.max_recorded_body_bytes;
    redact_headers(&mut out["request"]["headers"]);
    redact_query(&mut out["request"]["query"]);
    out["request"]["target"] = json!(target);
    if body_omitted {
        out["request"]["body"] = Value::Null;
    }
    if out.get("attributes").is_some() {
        let http = &mut out["attributes"]["request"]["http"];
        // The agent and evidence headers are recorded anyway (`agent`,
        // `evidence`): kept, so a replay reads what the policy read.
        let agent_values: Vec<(String, Value)> = req
            .agent_headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        redact_headers(&mut http["headers"]);
        if let Some(map) = http["headers"].as_object_mut() {
            map.extend(agent_values);
        }
        http["path"] = json!(target);
        if body_omitted {
            http["body"] = Value::Null;
        }
        redact_query(&mut out["parsed_query"]);
        if body_omitted {
            out["parsed_body"] = Value::Null;
        }
    }
    Recorded {
        input: out,
        body_omitted,
    }
}

/// Adds the fields opa-envoy-plugin policies read: `attributes.request.http`,
/// `parsed_path`, `parsed_query` and `parsed_body`, from the same canonical
/// target as the native input.
fn add_envoy(input: &mut Value, req: &CapturedRequest) {
    // Envoy shows every header, the agent and evidence headers among them.
    let mut headers = input["request"]["headers"].clone();
    if let Some(map) = headers.as_object_mut() {
        for (name, value) in &req.agent_headers {
            map.insert(name.clone(), Value::String(value.clone()));
        }
    }
    let parsed_path: Vec<Value> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(percent_decode(s)))
        .collect();
    let obj = input
        .as_object_mut()
        .expect("the input document is an object");
    obj.insert(
        "attributes".into(),
        json!({
            "request": {"http": {
                "id": obj["action_id"],
                "method": req.method,
                "path": req.path_and_query(),
                "host": req.host,
                "scheme": req.scheme,
                "headers": headers,
                "body": String::from_utf8_lossy(&req.body),
                "size": req.body.len(),
            }}
        }),
    );
    obj.insert("parsed_path".into(), Value::Array(parsed_path));
    obj.insert("parsed_query".into(), obj["request"]["query"].clone());
    obj.insert("parsed_body".into(), obj["request"]["body"].clone());
}

/// Decodes one segment of a canonical path (its escapes are valid and
/// decode to UTF-8; `+` and `&` are themselves).
fn percent_decode(s: &str) -> String {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = (raw[i] == b'%')
            .then(|| std::str::from_utf8(raw.get(i + 1..i + 3)?).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Converts the JSON input to the policy engine's value type.
pub fn to_rego(input: Value) -> regorus::Value {
    regorus::Value::from(input)
}

/// A plausible input used once at load to warm the engine and to check the
/// VM against the interpreter.
pub fn probe() -> regorus::Value {
    to_rego(json!({
        "action_id": "00000000000000000000000000000000",
        "time": "2026-01-01T00:00:00Z",
        "route": {"name": "probe", "upstream": "http://probe.invalid"},
        "agent": {"id": "probe-agent", "on_behalf_of": "probe-owner", "intent": "load check"},
        "request": {
            "method": "GET", "scheme": "http", "host": "probe.invalid", "path": "/", "target": "/",
            "query": {}, "headers": {}, "body": null, "body_format": null,
            "body_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "body_size": 0
        },
        "evidence": {},
        "attributes": {"request": {"http": {"method": "GET", "path": "/", "host": "probe.invalid", "headers": {}, "body": ""}}},
        "parsed_path": [], "parsed_query": {}, "parsed_body": null
    }))
}
