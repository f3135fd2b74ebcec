//! The agent's side of a hold: wait up to `hold.wait` for the
//! reviewers, then answer with the upstream's response (approved), 403
//! (rejected or expired), or 202 with a status URL (`accept`) / 504 and a
//! cancelled action (`cancel`). The status URL is served here too
//! (docs/reference.md#holds-from-the-agents-side).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::pipeline::Outcome;
use crate::app::Shared;
use crate::approval::execute::{self, Forwarded};
use crate::approval::{self, Delivered, Waiter};
use crate::audit::lifecycle::{Ending, Lifecycle};
use crate::audit::record::State;
use crate::audit::store::StoreError;
use crate::audit::view::action_json;
use crate::config::OnWaitTimeout;
use crate::http::{full, json as json_response, Body};

/// Path prefix of the status URLs on the proxy listener.
pub const STATUS_PREFIX: &str = "/.countersign/actions/";

/// How often a waiting agent re-reads its action from a shared store even
/// without a notification (notifications can be lost with a connection).
const POLL_SHARED: Duration = Duration::from_secs(1);

/// Waits for the reviewers on behalf of the agent. Any process may take
/// the reviews; this one wakes whenever the store says the action changed,
/// forwards it itself once approved (so the agent gets the whole answer),
/// and expires it on time.
///
/// `guard` is the call's hang-up guard (armed by the pipeline before the
/// hold was committed); it is disarmed here once the agent has an answer.
pub async fn wait(
    shared: &Arc<Shared>,
    action_id: &str,
    expires_at: SystemTime,
    mut guard: super::hang_up::Guard,
) -> Result<Response<Body>, Outcome> {
    let cfg = &shared.config.hold;
    let registration = shared.waiters.register(action_id);
    let waiter = registration.waiter.clone();
    let deadline = tokio::time::Instant::now() + cfg.wait;
    let expiry = tokio::time::Instant::now()
        + expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
    loop {
        // Boxed (as is the cancel below): the future a held call keeps
        // while it waits then holds only the waiting.
        let looked = Box::pin(look(shared, action_id, &waiter));
        let looked = looked.await;
        if let Some(answer) = looked {
            guard.disarm();
            return answer;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        // One timer, for the first of: the end of the wait; the expiry, if
        // it comes first (past it, when the expiry could not be recorded
        // yet because the store is failing, now and then rather than in a
        // tight loop); on a shared store, the next poll (its notifications
        // can be lost with a connection; local changes always notify).
        // Ten thousand held calls each keep this future while they wait.
        let mut wake = deadline;
        if expiry < deadline {
            let expiry_wake = if now < expiry {
                expiry
            } else {
                now + Duration::from_millis(200)
            };
            wake = wake.min(expiry_wake);
        }
        if shared.store.is_shared() {
            wake = wake.min(now + POLL_SHARED);
        }
        tokio::select! {
            _ = waiter.changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    if cfg.on_wait_timeout == OnWaitTimeout::Cancel {
        // Still armed while the cancellation commits: an agent that hangs
        // up now is cancelled by the guard instead.
        let cancelled = Box::pin(approval::cancel(
            shared,
            action_id,
            "not decided within hold.wait (on_wait_timeout: cancel)",
        ));
        let cancelled = cancelled.await;
        guard.disarm();
        if cancelled {
            return Err(Outcome::WaitCancelled);
        }
        // Decided at the last moment: give the agent the outcome if it is final.
        let looked = Box::pin(look(shared, action_id, &waiter));
        if let Some(answer) = looked.await {
            return answer;
        }
    }
    drop(registration);
    Ok(accepted(action_id))
}

/// Reads the action and acts for the agent: `Some` once there is an
/// answer for it.
async fn look(
    shared: &Arc<Shared>,
    action_id: &str,
    waiter: &Waiter,
) -> Option<Result<Response<Body>, Outcome>> {
    let life = match shared.store.action(action_id).await {
        Ok(Some(l)) => l,
        Ok(None) => return None,
        Err(e @ StoreError::Tampered { .. }) => {
            return Some(Err(Outcome::StoreUnavailable(e.to_string())))
        }
        // The store is down: keep waiting; nothing moves without it.
        Err(_) => return None,
    };
    match life.state {
        State::Pending => {
            approval::expire(shared, &life).await;
            None
        }
        State::Approved if life.claim.is_none() => {
            // In a task of its own, as the webhook's and the sweep's
            // forwards are: an agent that hangs up mid-forward does not
            // cut it short, and its result is still recorded.
            let (s, id) = (shared.clone(), action_id.to_string());
            let forwarding = shared
                .detached
                .spawn(async move { execute::forward(&s, &id).await });
            let forwarded = forwarding.await.unwrap_or_else(|e| {
                tracing::error!(action_id, error = %e, "the approved forward stopped unexpectedly");
                Forwarded::Failed {
                    reason: "forward_interrupted".into(),
                    error:
                        "the forward stopped unexpectedly; whether the upstream acted is unknown"
                            .into(),
                    status: 502,
                }
            });
            match forwarded {
                Forwarded::Delivered(d) => Some(Ok(relay(&d))),
                Forwarded::Failed { error, status, .. } => {
                    Some(Err(upstream_failure(error, status)))
                }
                Forwarded::NotOurs => None,
            }
        }
        State::Approved | State::Allowed => None,
        State::Completed => match waiter.delivered() {
            Some(d) => Some(Ok(relay(&d))),
            None => Some(Ok(from_record(&life))),
        },
        State::Rejected => {
            let (reviewer, comment) = life.rejection.clone().unwrap_or_default();
            Some(Err(Outcome::Rejected { reviewer, comment }))
        }
        State::Expired => Some(Err(Outcome::Expired)),
        State::Cancelled => Some(Err(Outcome::WaitCancelled)),
        State::Failed | State::Denied => match life.ending {
            Some(Ending::Failed { error, status, .. }) => {
                Some(Err(upstream_failure(error, status)))
            }
            _ => Some(Err(Outcome::UpstreamFailed("the action failed".into()))),
        },
    }
}

fn upstream_failure(error: String, status: u16) -> Outcome {
    if status == 504 {
        Outcome::UpstreamTimeout(error)
    } else {
        Outcome::UpstreamFailed(error)
    }
}

/// The upstream's whole answer, as this process received it.
fn relay(d: &Delivered) -> Response<Body> {
    let mut r = Response::new(full(d.body.clone()));
    *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *r.headers_mut() = d.headers.clone();
    r
}

/// The upstream's answer as recorded, when another process forwarded the
/// call: the status, the kept headers, and the recorded body (cut at
/// `capture.max_response_bytes`, marked by `x-countersign-from-record`).
fn from_record(life: &Lifecycle) -> Response<Body> {
    let Some(Ending::Completed { response }) = &life.ending else {
        return json_response(
            StatusCode::BAD_GATEWAY,
            &json!({"error": "no recorded response"}),
        );
    };
    let body = match response["body"]["encoding"].as_str() {
        Some("json") => serde_json::to_vec(&response["body"]["json"]).unwrap_or_default(),
        Some("text") => response["body"]["text"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
        Some("base64") => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(response["body"]["base64"].as_str().unwrap_or_default())
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let status = response["status"].as_u64().unwrap_or(502) as u16;
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(headers) = response["headers"].as_object() {
        for (n, v) in headers {
            if let (Ok(n), Some(Ok(v))) = (
                hyper::header::HeaderName::from_bytes(n.as_bytes()),
                v.as_str().map(hyper::header::HeaderValue::from_str),
            ) {
                r.headers_mut().insert(n, v);
            }
        }
    }
    r.headers_mut().insert(
        "x-countersign-from-record",
        hyper::header::HeaderValue::from_static("true"),
    );
    r
}

/// 202: the proxy keeps the action and forwards it itself once approved.
fn accepted(action_id: &str) -> Response<Body> {
    let url = format!("{STATUS_PREFIX}{action_id}");
    let body = json!({"action_id": action_id, "state": "pending", "status_url": url});
    let mut r = json_response(StatusCode::ACCEPTED, &body);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&url) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    // The `answered` record keeps this body: it is countersign's, not the upstream's.
    r.extensions_mut().insert(super::pipeline::OwnAnswer(body));
    r
}

/// `GET /.countersign/actions/<id>`: the state and, once completed, the
/// upstream's status, headers and body (as recorded). The action id (80
/// random bits) is the capability: only the agent that got it can ask.
pub async fn status(shared: &Shared, id: &str) -> Response<Body> {
    let not_found = || json_response(StatusCode::NOT_FOUND, &json!({"error": "no such action"}));
    let records = match shared.store.action_records(id).await {
        Ok(r) if r.is_empty() => return not_found(),
        Ok(r) => r,
        Err(e) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": e.to_string()}),
            )
        }
    };
    let view = action_json(id, &records);
    let mut out = json!({
        "action_id": id,
        "state": view["state"],
        "status_url": format!("{STATUS_PREFIX}{id}"),
        "decision": {"risk": view["decision"]["risk"], "reasons": view["decision"]["reasons"], "rules": view["decision"]["rules"]},
        "reviews": view["reviews"],
    });
    let result = &view["result"];
    if result["outcome"] == "completed" {
        let resp = &result["response"];
        out["response"] = json!({
            "status": resp["status"],
            "headers": resp["headers"],
            "body": body_value(&resp["body"]),
            "body_sha256": resp["body_sha256"],
            "body_size": resp["body_size"],
        });
    } else if result["outcome"] == "failed" {
        out["error"] = result["error"].clone();
    }
    json_response(StatusCode::OK, &out)
}

/// The recorded body as the agent wants it: JSON as JSON, text as text.
fn body_value(body: &Value) -> Value {
    match body["encoding"].as_str() {
        Some("json") => body["json"].clone(),
        Some("text") => body["text"].clone(),
        Some("base64") => json!({"base64": body["base64"]}),
        _ => Value::Null,
    }
}
