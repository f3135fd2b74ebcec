//! The decision object a policy returns, and the contract it must keep
//! (docs/reference.md#the-decision). Anything that breaks the contract is an error, and the caller
//! fails closed on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// What the policy wants done with the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forward it.
    Allow,
    /// Refuse it.
    Deny,
    /// Wait for reviewers.
    Hold,
}

impl Action {
    /// Name as in the decision object.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Hold => "hold",
        }
    }
}

/// Who must approve a held call, and by when.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    /// Reviewers named directly.
    pub reviewers: Vec<String>,
    /// Reviewer groups named.
    pub groups: Vec<String>,
    /// Approvals needed.
    pub min: u32,
    /// Time until the hold expires, as written (e.g. `30m`).
    pub expires_in: Option<String>,
    /// The same, parsed.
    #[serde(skip)]
    pub expires_after: Option<Duration>,
}

/// A decision that keeps the contract.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// allow, deny or hold.
    pub action: Action,
    /// low, medium, high or critical.
    pub risk: String,
    /// Sentences for humans.
    pub reasons: Vec<String>,
    /// Stable rule ids.
    pub rules: Vec<String>,
    /// Required with hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// What an opa-envoy object result asks besides allow/deny: headers
    /// for the upstream and the agent, and a denial's status and body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyResult>,
}

/// The parts of opa-envoy-plugin's object result
/// (`{"allowed": .., "headers": .., "response_headers_to_add": ..,
/// "request_headers_to_remove": .., "http_status": .., "body": ..}`)
/// beyond `allowed`, checked to be valid HTTP.
#[derive(Debug, Clone, Default)]
pub struct EnvoyResult {
    /// Allowed: set on the request sent upstream. Denied: set on the
    /// denial the agent gets.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// Added to the response the agent gets (allowed or denied).
    pub response_headers_to_add: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// Removed from the request sent upstream (allowed only).
    pub request_headers_to_remove: Vec<hyper::header::HeaderName>,
    /// The denial's status (default 403).
    pub http_status: Option<hyper::StatusCode>,
    /// The denial's body, sent as given (default countersign's JSON).
    pub body: Option<String>,
}

/// The record keeps the names of headers a policy sets, not their values
/// (a policy may inject a credential from its data); the denial's status
/// and body are what the agent was told, and are kept.
impl Serialize for EnvoyResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names =
            |hs: &[(hyper::header::HeaderName, hyper::header::HeaderValue)]| -> Vec<String> {
                hs.iter().map(|(n, _)| n.as_str().to_string()).collect()
            };
        serde_json::json!({
            "headers": names(&self.headers),
            "response_headers_to_add": names(&self.response_headers_to_add),
            "request_headers_to_remove": self
                .request_headers_to_remove
                .iter()
                .map(hyper::header::HeaderName::as_str)
                .collect::<Vec<_>>(),
            "http_status": self.http_status.map(|c| c.as_u16()),
            "body": self.body,
        })
        .serialize(s)
    }
}

/// `{"name": "value" | ["v1", "v2"]}` as header pairs (a list sets the
/// header once per value, as opa-envoy does).
fn header_pairs(
    v: &Value,
    field: &str,
) -> Result<Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>, String> {
    let obj = match v {
        Value::Null => return Ok(vec![]),
        Value::Object(o) => o,
        _ => {
            return Err(format!(
                "`{field}` must be an object of header names to values"
            ))
        }
    };
    let mut out = Vec::new();
    for (name, value) in obj {
        let n = hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{field}` names `{name}`, which is not a header name"))?;
        if crate::proxy::forward::is_proxy_owned(n.as_str()) {
            return Err(format!(
                "`{field}` sets `{n}`, which only countersign writes (hop-by-hop headers, `host` and `content-length` route and frame the message)"
            ));
        }
        let values: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str().ok_or_else(|| {
                        format!("`{field}.{name}` must be a string or a list of strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(format!(
                    "`{field}.{name}` must be a string or a list of strings"
                ))
            }
        };
        for v in values {
            let hv = hyper::header::HeaderValue::from_str(v)
                .map_err(|_| format!("`{field}.{name}` is not a valid header value"))?;
            out.push((n.clone(), hv));
        }
    }
    Ok(out)
}

/// opa-envoy-plugin's object result: `allowed` decides; the rest is
/// checked into an [`EnvoyResult`].
fn envoy_object(obj: &serde_json::Map<String, Value>) -> Result<Decision, String> {
    let allowed = match obj.get("allowed") {
        Some(Value::Bool(b)) => *b,
        _ => return Err("`allowed` must be true or false".into()),
    };
    let remove = strings(
        obj.get("request_headers_to_remove").unwrap_or(&Value::Null),
        "request_headers_to_remove",
    )?
    .into_iter()
    .map(|n| {
        hyper::header::HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
            format!("`request_headers_to_remove` names `{n}`, which is not a header name")
        })
    })
    .collect::<Result<Vec<_>, _>>()?;
    let http_status = match obj.get("http_status") {
        None | Some(Value::Null) => None,
        // A refusal is a refusal: a 2xx (or 1xx) would tell the agent the
        // call went through.
        Some(v) => match v.as_u64() {
            Some(n @ 300..=599) => hyper::StatusCode::from_u16(n as u16).ok(),
            _ => {
                return Err(format!(
                    "`http_status` is {v}; a denial's status must be from 300 to 599"
                ))
            }
        },
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(b)) => Some(b.clone()),
        Some(v) => return Err(format!("`body` is {v}; it must be a string")),
    };
    let envoy = EnvoyResult {
        headers: header_pairs(obj.get("headers").unwrap_or(&Value::Null), "headers")?,
        response_headers_to_add: header_pairs(
            obj.get("response_headers_to_add").unwrap_or(&Value::Null),
            "response_headers_to_add",
        )?,
        request_headers_to_remove: remove,
        http_status,
        body,
    };
    Ok(Decision {
        action: if allowed { Action::Allow } else { Action::Deny },
        risk: if allowed { "low" } else { "medium" }.into(),
        reasons: if allowed {
            vec![]
        } else {
            vec!["the policy's result has allowed: false".into()]
        },
        rules: vec!["entrypoint.envoy".into()],
        approval: None,
        envoy: Some(envoy),
    })
}

/// Reviewer names and their groups, to check that a hold can be released.
pub type Directory = BTreeMap<String, Vec<String>>;

const RISKS: [&str; 4] = ["low", "medium", "high", "critical"];

fn strings(v: &Value, field: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{field}` must be a list of strings"))
            })
            .collect(),
        // Rego sets serialize as arrays, but a single string is a common slip.
        _ => Err(format!("`{field}` must be a list of strings")),
    }
}

/// Checks a raw policy result against the contract. `directory` is the
/// configured reviewers; `None` skips the reviewer checks (for
/// `policy eval`, which has no config). `max_expiry` is `hold.max_expiry`:
/// a hold may not ask to stay pending longer.
pub fn check(
    raw: &Value,
    directory: Option<&Directory>,
    max_expiry: Duration,
) -> Result<Decision, String> {
    let obj = match raw {
        Value::Null => {
            return Err("the entrypoint is undefined for this input (no decision)".into())
        }
        // OPA Envoy-plugin style: a boolean allow rule.
        Value::Bool(true) => {
            return Ok(Decision {
                action: Action::Allow,
                risk: "low".into(),
                reasons: vec![],
                rules: vec!["entrypoint.boolean".into()],
                approval: None,
                envoy: None,
            })
        }
        Value::Bool(false) => {
            return Ok(Decision {
                action: Action::Deny,
                risk: "medium".into(),
                reasons: vec!["the policy's boolean entrypoint is false".into()],
                rules: vec!["entrypoint.boolean".into()],
                approval: None,
                envoy: None,
            })
        }
        // opa-envoy-plugin's object result.
        Value::Object(o) if o.contains_key("allowed") && !o.contains_key("action") => {
            return envoy_object(o)
        }
        Value::Object(o) => o,
        other => {
            return Err(format!(
                "the decision must be an object or a boolean, not {other}"
            ))
        }
    };
    let action = match obj.get("action").and_then(Value::as_str) {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        Some("hold") => Action::Hold,
        Some(other) => {
            return Err(format!(
                "`action` is `{other}`; it must be allow, deny or hold"
            ))
        }
        None => return Err("`action` is missing; it must be allow, deny or hold".into()),
    };
    let risk = match obj.get("risk").and_then(Value::as_str) {
        Some(r) if RISKS.contains(&r) => r.to_string(),
        Some(r) => {
            return Err(format!(
                "`risk` is `{r}`; it must be low, medium, high or critical"
            ))
        }
        None => return Err("`risk` is missing; it must be low, medium, high or critical".into()),
    };
    let reasons = strings(obj.get("reasons").unwrap_or(&Value::Null), "reasons")?;
    let rules = strings(obj.get("rules").unwrap_or(&Value::Null), "rules")?;
    let approval = match (action, obj.get("approval")) {
        (Action::Hold, Some(a @ Value::Object(_))) => Some(approval(a, directory, max_expiry)?),
        (Action::Hold, _) => return Err("`approval` is required with hold".into()),
        _ => None,
    };
    Ok(Decision {
        action,
        risk,
        reasons,
        rules,
        approval,
        envoy: None,
    })
}

fn approval(
    a: &Value,
    directory: Option<&Directory>,
    max_expiry: Duration,
) -> Result<Approval, String> {
    let reviewers = strings(
        a.get("reviewers").unwrap_or(&Value::Null),
        "approval.reviewers",
    )?;
    let groups = strings(a.get("groups").unwrap_or(&Value::Null), "approval.groups")?;
    let min = match a.get("min") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=100).contains(&n) => n as u32,
            _ => {
                return Err(format!(
                    "`approval.min` is {v}; it must be a whole number from 1 to 100"
                ))
            }
        },
    };
    let (expires_in, expires_after) = match a.get("expires_in") {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(s)) => match humantime::parse_duration(s) {
            // Longer than allowed: a hold that outlives any reviewer's
            // attention (and, far enough out, the clock's range).
            Ok(d) if d > max_expiry => {
                return Err(format!(
                    "`approval.expires_in` is `{s}`, longer than hold.max_expiry ({}); ask for less or raise hold.max_expiry",
                    humantime::format_duration(max_expiry)
                ))
            }
            Ok(d) if !d.is_zero() => (Some(s.clone()), Some(d)),
            _ => {
                return Err(format!(
                    "`approval.expires_in` is `{s}`; write a duration like 30m"
                ))
            }
        },
        Some(v) => {
            return Err(format!(
                "`approval.expires_in` is {v}; write a duration like \"30m\""
            ))
        }
    };
    if reviewers.is_empty() && groups.is_empty() {
        return Err(
            "`approval` names no reviewers or groups; nobody could release the hold".into(),
        );
    }
    if let Some(dir) = directory {
        let mut eligible = BTreeSet::new();
        for r in &reviewers {
            if !dir.contains_key(r) {
                return Err(format!(
                    "`approval.reviewers` names `{r}`, who is not a configured reviewer"
                ));
            }
            eligible.insert(r.clone());
        }
        for g in &groups {
            let members: Vec<&String> = dir
                .iter()
                .filter(|(_, gs)| gs.contains(g))
                .map(|(n, _)| n)
                .collect();
            if members.is_empty() {
                return Err(format!(
                    "`approval.groups` names `{g}`, which has no configured reviewers"
                ));
            }
            eligible.extend(members.into_iter().cloned());
        }
        if (eligible.len() as u32) < min {
            return Err(format!(
                "`approval.min` is {min} but only {} reviewer(s) are named; the hold could never be released",
                eligible.len()
            ));
        }
    }
    Ok(Approval {
        reviewers,
        groups,
        min,
        expires_in,
        expires_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn dir() -> Directory {
        BTreeMap::from([
            ("alice".into(), vec!["finance".into()]),
            ("bob".into(), vec![]),
        ])
    }

    #[test]
    fn accepts_a_full_hold() {
        let d = check(
            &json!({"action":"hold","risk":"high","reasons":["r"],"rules":["x"],
                    "approval":{"reviewers":["bob"],"groups":["finance"],"min":2,"expires_in":"30m"}}),
            Some(&dir()),
            WEEK,
        )
        .unwrap();
        assert_eq!(
            d.approval.unwrap().expires_after,
            Some(Duration::from_secs(1800))
        );
    }

    #[test]
    fn refuses_contract_breaks() {
        let cases = [
            json!(null),
            json!("allow"),
            json!({"action":"maybe","risk":"low"}),
            json!({"action":"allow"}),
            json!({"action":"allow","risk":"extreme"}),
            json!({"action":"hold","risk":"high"}),
            json!({"action":"hold","risk":"high","approval":{"reviewers":["mallory"]}}),
            json!({"action":"hold","risk":"high","approval":{"reviewers":["bob"],"min":2}}),
            json!({"action":"allow","risk":"low","reasons":"one"}),
        ];
        for c in cases {
            assert!(check(&c, Some(&dir()), WEEK).is_err(), "accepted {c}");
        }
    }

    #[test]
    fn booleans_map_to_allow_and_deny() {
        assert_eq!(
            check(&json!(true), None, WEEK).unwrap().action,
            Action::Allow
        );
        assert_eq!(
            check(&json!(false), None, WEEK).unwrap().action,
            Action::Deny
        );
    }

    #[test]
    fn the_opa_envoy_object_result_is_understood_and_checked() {
        let d = check(
            &json!({"allowed": false, "http_status": 429, "body": "slow down",
                    "headers": {"retry-after": "30"}, "response_headers_to_add": {"x-a": ["1", "2"]}}),
            None,
            WEEK,
        )
        .unwrap();
        assert_eq!(d.action, Action::Deny);
        let e = d.envoy.unwrap();
        assert_eq!(e.http_status.unwrap().as_u16(), 429);
        assert_eq!(e.response_headers_to_add.len(), 2);
        let d = check(
            &json!({"allowed": true, "request_headers_to_remove": ["cookie"]}),
            None,
            WEEK,
        )
        .unwrap();
        assert_eq!(d.action, Action::Allow);
        for bad in [
            json!({"allowed": "yes"}),
            json!({"allowed": false, "http_status": 200}),
            json!({"allowed": true, "headers": {"bad header": "x"}}),
            json!({"allowed": true, "headers": {"x-a": "line\nbreak"}}),
            json!({"allowed": true, "headers": {"x-a": 5}}),
            json!({"allowed": false, "body": {"a": 1}}),
        ] {
            assert!(check(&bad, None, WEEK).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn an_expiry_past_the_maximum_breaks_the_contract() {
        let hold = |e: &str| json!({"action":"hold","risk":"high","approval":{"reviewers":["bob"],"expires_in":e}});
        assert!(check(&hold("7d"), Some(&dir()), WEEK).is_ok());
        for too_long in ["8d", "100000000y", "584942417355y"] {
            let e = check(&hold(too_long), Some(&dir()), WEEK).unwrap_err();
            assert!(
                e.contains("hold.max_expiry") || e.contains("write a duration"),
                "{too_long}: {e}"
            );
        }
    }
}
