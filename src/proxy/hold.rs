//! The agent's side of a hold (SPEC §3): wait up to `hold.wait` for the
//! reviewers, then answer with the upstream's response (approved), 403
//! (rejected or expired), or 202 with a status URL (`accept`) / 504 and a
//! cancelled action (`cancel`). The status URL is served here too.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::pipeline::Outcome;
use crate::app::Shared;
use crate::approval::{self, Held, Status};
use crate::audit::view::action_json;
use crate::config::OnWaitTimeout;
use crate::http::{full, json as json_response, Body};

/// Path prefix of the status URLs on the proxy listener.
pub const STATUS_PREFIX: &str = "/.countersign/actions/";

/// Cancels the action if the agent's request is dropped (the agent hung
/// up) while `hold.on_wait_timeout` is `cancel`.
struct CancelOnDrop {
    shared: Arc<Shared>,
    held: Arc<Held>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let (shared, held) = (self.shared.clone(), self.held.clone());
            tokio::spawn(async move {
                if approval::cancel(&shared, &held, "the agent hung up while waiting").await {
                    tracing::info!(action_id = %held.action_id, "agent hung up; hold cancelled");
                }
            });
        }
    }
}

/// Waits for the reviewers on behalf of the agent.
pub async fn wait(shared: &Arc<Shared>, held: Arc<Held>) -> Result<Response<Body>, Outcome> {
    let cfg = &shared.config.hold;
    let mut guard = CancelOnDrop {
        shared: shared.clone(),
        held: held.clone(),
        armed: cfg.on_wait_timeout == OnWaitTimeout::Cancel,
    };
    let waited = tokio::time::timeout(cfg.wait, final_status(&held)).await;
    guard.armed = false;
    match waited {
        Ok(status) => answer(&held.action_id, status),
        Err(_) if cfg.on_wait_timeout == OnWaitTimeout::Cancel => {
            if approval::cancel(
                shared,
                &held,
                "not decided within hold.wait (on_wait_timeout: cancel)",
            )
            .await
            {
                Err(Outcome::WaitCancelled)
            } else {
                // Decided at the last moment: give the agent the outcome.
                answer(&held.action_id, final_status(&held).await)
            }
        }
        Err(_) => Ok(accepted(&held.action_id)),
    }
}

async fn final_status(held: &Held) -> Status {
    let mut rx = held.subscribe();
    loop {
        let status = rx.borrow_and_update().clone();
        if status.is_final() {
            return status;
        }
        if rx.changed().await.is_err() {
            return held.status();
        }
    }
}

fn answer(action_id: &str, status: Status) -> Result<Response<Body>, Outcome> {
    match status {
        Status::Completed(d) => {
            let mut r = Response::new(full(d.body.clone()));
            *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::BAD_GATEWAY);
            *r.headers_mut() = d.headers.clone();
            Ok(r)
        }
        Status::Rejected { reviewer, comment } => Err(Outcome::Rejected { reviewer, comment }),
        Status::Expired => Err(Outcome::Expired),
        Status::Cancelled => Err(Outcome::WaitCancelled),
        Status::Failed {
            error, status: 504, ..
        } => Err(Outcome::UpstreamTimeout(error)),
        Status::Failed { error, .. } => Err(Outcome::UpstreamFailed(error)),
        Status::Pending | Status::Approved => Ok(accepted(action_id)),
    }
}

/// 202: the proxy keeps the action and forwards it itself once approved.
fn accepted(action_id: &str) -> Response<Body> {
    let url = format!("{STATUS_PREFIX}{action_id}");
    let mut r = json_response(
        StatusCode::ACCEPTED,
        &json!({"action_id": action_id, "state": "pending", "status_url": url}),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&url) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

/// `GET /.countersign/actions/<id>`: the state and, once completed, the
/// upstream's status, headers and body (as recorded). The 128-bit action id
/// is the capability: only the agent that got it can ask.
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
