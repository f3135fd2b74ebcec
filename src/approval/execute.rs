//! Forwarding an approved held request: exactly the bytes that were
//! reviewed, once. The `forwarded` record is committed before the first byte
//! goes upstream, so after a crash an interrupted forward is visible and is
//! never silently sent again. The answer is scrubbed of the route's
//! credential before it is kept for the agent, and every record of it of
//! the action's secrets.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use serde_json::json;

use super::{finish, Delivered, Held, Status};
use crate::app::Shared;
use crate::audit::record::{Draft, Kind};
use crate::proxy::forward::{end_to_end_headers, ForwardError, ResponseCapture};

async fn fail(shared: &Shared, held: &Held, reason: &str, error: String, status: u16) {
    shared
        .metrics
        .upstream(if status == 504 { "timeout" } else { "error" });
    // The upstream may already have acted: the record of it must not be lost.
    shared
        .store
        .commit_until_durable(vec![Draft::failed(
            &held.action_id,
            "forward",
            reason,
            &error,
            status,
        )
        .redacted(&held.secrets)])
        .await;
    finish(
        shared,
        held,
        Status::Failed {
            reason: reason.to_string(),
            error,
            status,
        },
    );
}

/// Forwards an approved action and records the result.
pub async fn forward(shared: Arc<Shared>, held: Arc<Held>) {
    let Some(route) = shared.routes.iter().find(|r| r.config.name == held.route) else {
        let error = format!(
            "route `{}` is no longer configured; nothing was forwarded",
            held.route
        );
        return fail(&shared, &held, "route_missing", error, 502).await;
    };
    let shown = crate::capture::recorded_path_and_query(
        &held.request.path_and_query,
        &shared.config.capture.redact_query,
    );
    let marked = Draft::new(
        &held.action_id,
        Kind::Forwarded,
        json!({"url": route.upstream.url_for(&shown), "request_digest": held.request_digest}),
        None,
    )
    .redacted(&held.secrets);
    if let Err(e) = shared.store.commit(vec![marked]).await {
        // Without the mark a crash could resend; keep it approved and retry
        // the whole step (mark, then send) until the store takes it.
        tracing::error!(action_id = %held.action_id, error = %e, "cannot mark the forward; retrying before sending");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        return Box::pin(forward(shared, held)).await;
    }
    let mut headers = HeaderMap::new();
    for (n, v) in &held.request.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(n, v);
        }
    }
    let started = Instant::now();
    let sent = route
        .upstream
        .send(
            &held.request.method,
            &held.request.path_and_query,
            &headers,
            |_| false,
            held.request.body.clone(),
            &held.action_id,
        )
        .await;
    shared
        .metrics
        .upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    let response = match sent {
        Ok(r) => r,
        Err(e @ ForwardError::Timeout(_)) => {
            return fail(&shared, &held, "upstream_timeout", e.to_string(), 504).await
        }
        Err(e) => return fail(&shared, &held, "upstream_unreachable", e.to_string(), 502).await,
    };
    let status = response.status().as_u16();
    shared.metrics.upstream(&format!("{}xx", status / 100));
    let credential = route.upstream.credential();
    let mut upstream_headers = response.headers().clone();
    credential.scrub_headers(&mut upstream_headers);
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let error = format!(
                "the upstream's response body broke off: {}",
                e.without_url()
            );
            return fail(&shared, &held, "upstream_unreachable", error, 502).await;
        }
    };
    let mut kept = end_to_end_headers(&upstream_headers);
    let body = match credential.scrub_bytes(&body) {
        None => body,
        Some(clean) => {
            kept.insert(
                hyper::header::CONTENT_LENGTH,
                HeaderValue::from(clean.len()),
            );
            Bytes::from(clean)
        }
    };
    let mut capture = ResponseCapture::new(shared.config.capture.max_response_bytes, &held.secrets);
    capture.push(&body);
    let response = capture.finish(status, &upstream_headers, &shared.config.capture);
    let completed = Draft::completed(
        &held.action_id,
        response,
        started.elapsed().as_secs_f64() * 1e3,
        None,
    )
    .redacted(&held.secrets);
    shared.store.commit_until_durable(vec![completed]).await;
    tracing::info!(action_id = %held.action_id, status, "approved action forwarded and completed");
    finish(
        &shared,
        &held,
        Status::Completed(Arc::new(Delivered {
            status,
            headers: kept,
            body,
        })),
    );
}
