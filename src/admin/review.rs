//! The reviewers' side of the admin listener: the signed review webhook
//! (`POST /v1/actions/<id>/reviews`) and a signed read of an action they are
//! asked to decide (`GET /v1/actions/<id>` with `x-countersign-reviewer`,
//! signed over the request path, so a captured read opens no other action).
//! Reviewers never need the admin token.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::error;
use crate::app::Shared;
use crate::approval::review::{review, verify};

use crate::audit::view::action_json;
use crate::http::{json as json_response, Body};

/// Names the reviewer on a signed read.
pub const REVIEWER_HEADER: &str = "x-countersign-reviewer";

/// Reviews are small; anything larger is not one.
const MAX_REVIEW_BYTES: usize = 64 * 1024;

/// `POST /v1/actions/<id>/reviews`.
pub async fn handle(shared: &Arc<Shared>, id: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REVIEW_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "a review body is at most 64 KiB",
            )
        }
    };
    match review(shared, id, &parts.headers, &body).await {
        Ok(a) => json_response(
            StatusCode::OK,
            &json!({"action_id": id, "state": a.state, "approvals": a.approvals, "min": a.min}),
        ),
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            json_response(
                status,
                &json!({"action_id": id, "error": refusal.message()}),
            )
        }
    }
}

/// `GET /v1/actions/<id>` signed by a reviewer the decision names: a
/// Standard Webhooks signature whose signed content is the request path
/// (`/v1/actions/<id>`) in place of a body, with a `webhook-id` accepted
/// once (the same replay cache as reviews).
pub async fn show_to_reviewer(
    shared: &Arc<Shared>,
    id: &str,
    req: &Request<Incoming>,
) -> Response<Body> {
    let reviewer = req
        .headers()
        .get(REVIEWER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = req.uri().path();
    if let Err(refusal) = verify(shared, &reviewer, path.as_bytes(), req.headers()) {
        return error(StatusCode::UNAUTHORIZED, &refusal.message());
    }
    let webhook_id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Signed reads share the fleet-wide replay memory with reviews.
    let fresh =
        !webhook_id.is_empty() && matches!(shared.store.first_sight(webhook_id).await, Ok(true));
    if !fresh {
        return error(
            StatusCode::CONFLICT,
            &format!("webhook-id `{webhook_id}` was already used; sign each read afresh"),
        );
    }
    let records = match shared.store.action_records(id).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let asked = records
        .iter()
        .find(|r| r.kind == "decided")
        .is_some_and(|d| {
            d.payload["hold"]["eligible"]
                .as_array()
                .is_some_and(|e| e.iter().any(|n| n.as_str() == Some(reviewer.as_str())))
        });
    if !asked {
        // The same answer for "no such action" and "not yours": a reviewer
        // learns nothing about actions they are not asked to decide.
        return error(
            StatusCode::NOT_FOUND,
            "no action that you are asked to review has this id",
        );
    }
    json_response(StatusCode::OK, &action_json(id, &records))
}
