//! Forwarding an approved held request: exactly the bytes that were
//! reviewed (re-read from records that verify), once in the whole fleet.
//! The `forwarded` record is a conditional append (the claim): only the
//! process whose claim commits sends anything, and it is committed before
//! the first byte goes upstream, so after a crash an interrupted forward is
//! visible and is never silently sent again.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use serde_json::json;

use bytes::Bytes;

use super::{Delivered, Sealed};
use crate::app::Shared;
use crate::audit::lifecycle::Lifecycle;
use crate::audit::record::{Draft, Kind, State};
use crate::audit::redact::Secrets;
use crate::audit::store::rfc3339;
use crate::proxy::forward::{end_to_end_headers, ForwardError, Outgoing, ResponseCapture};

/// What became of one attempt to forward an approved action.
pub enum Forwarded {
    /// This process forwarded it; the upstream's whole answer.
    Delivered(Arc<Delivered>),
    /// This process claimed it, and forwarding failed.
    Failed {
        /// Machine-readable reason.
        reason: String,
        /// What happened.
        error: String,
        /// The status the agent gets (502/504).
        status: u16,
    },
    /// Not this process's to forward (not approved, already claimed, or
    /// the store is unavailable: someone looks again later).
    NotOurs,
}

async fn fail(
    shared: &Shared,
    action_id: &str,
    secrets: &Secrets,
    (reason, error, status): (&str, String, u16),
) -> Forwarded {
    shared
        .metrics
        .upstream(if status == 504 { "timeout" } else { "error" });
    // The upstream may already have acted: the record of it must not be lost.
    let d = Draft::failed(action_id, "forward", reason, &error, status).redacted(secrets);
    shared.store.commit_until_durable(vec![d]).await;
    Forwarded::Failed {
        reason: reason.to_string(),
        error,
        status,
    }
}

/// Claims and forwards an approved action, and records the result.
pub async fn forward(shared: &Arc<Shared>, action_id: &str) -> Forwarded {
    let life = match shared.store.action(action_id).await {
        Ok(Some(l)) => l,
        Ok(None) => return Forwarded::NotOurs,
        Err(e) => {
            tracing::error!(action_id, error = %e, "cannot read the approved action; not forwarding it now");
            return Forwarded::NotOurs;
        }
    };
    // Once found unbacked, not checked (and logged) again at every sweep.
    if life.state != State::Approved || life.claim.is_some() || shared.store.is_tampered(action_id)
    {
        return Forwarded::NotOurs;
    }
    if let Err(why) = signed_approvals(shared, &life).await {
        tracing::error!(
            action_id,
            why,
            "an approved action's signed reviews do not back its approval; it will not be forwarded"
        );
        shared.store.mark_tampered(action_id);
        return Forwarded::NotOurs;
    }
    let sealed = shared.sealed.get(action_id);
    if life.hold.as_ref().is_some_and(|h| h.forward.query_redacted) && sealed.is_none() {
        // The real query is only in the memory of the process that held
        // the call: not this one's to forward.
        return Forwarded::NotOurs;
    }
    let out = claim_and_send(shared, &life, sealed.as_deref()).await;
    if let Forwarded::Delivered(d) = &out {
        shared.waiters.deliver(action_id, d.clone());
    }
    if !matches!(out, Forwarded::NotOurs) {
        shared.sealed.forget(action_id);
    }
    out
}

/// Checks that an approval is backed by signed reviews
/// ([`crate::audit::reviews::Approvals`]), each verified here with the
/// reviewer's configured key. An approval that cannot be checked (a
/// reviewer's key gone, or of another kind) is not forwarded either.
async fn signed_approvals(shared: &Arc<Shared>, life: &Lifecycle) -> Result<(), String> {
    use crate::audit::reviews::{self, Checked};
    let records = shared
        .store
        .action_records(&life.action_id)
        .await
        .map_err(|e| e.to_string())?;
    let reviewers = shared.reviewers();
    let mut approvals = reviews::Approvals::default();
    for r in &records {
        // Approving reviews, the ones that back an approval.
        let signed = r.kind == Kind::Reviewed.as_str()
            && r.payload["verdict"] == "approve"
            && reviews::is_signed_review(r);
        if signed {
            let name = r.payload["reviewer"].as_str().unwrap_or_default();
            match reviews::check(r, reviewers.keys.get(name)) {
                Ok(Checked::Verified(_)) => {}
                Ok(Checked::Unverifiable(why)) => {
                    return Err(format!("seq {}: `{name}` cannot be checked: {why}", r.seq))
                }
                Err(why) => return Err(format!("seq {}: {why}", r.seq)),
            }
        }
        approvals
            .follow(r, signed)
            .map_err(|why| format!("seq {}: {why}", r.seq))?;
    }
    Ok(())
}

async fn claim_and_send(
    shared: &Arc<Shared>,
    life: &Lifecycle,
    sealed: Option<&Sealed>,
) -> Forwarded {
    let action_id = life.action_id.as_str();
    let Some(hold) = &life.hold else {
        return Forwarded::NotOurs;
    };
    let route_name = life.route.clone().unwrap_or_default();
    let Some(route) = shared.routes.iter().find(|r| r.config.name == route_name) else {
        let claim = Draft::failed(
            action_id,
            "forward",
            "route_missing",
            &format!("route `{route_name}` is no longer configured; nothing was forwarded"),
            502,
        );
        return match shared
            .store
            .commit_if(action_id, life.last_seq, vec![claim])
            .await
        {
            Ok(true) => Forwarded::Failed {
                reason: "route_missing".into(),
                error: format!(
                    "route `{route_name}` is no longer configured; nothing was forwarded"
                ),
                status: 502,
            },
            _ => Forwarded::NotOurs,
        };
    };
    // What is recorded (secret query values redacted) and what is sent.
    let url = route.upstream.url_for(&hold.forward.path_and_query);
    let path_and_query = match sealed {
        Some(s) if hold.forward.query_redacted => s.path_and_query.as_str(),
        _ => hold.forward.path_and_query.as_str(),
    };
    let credential_only;
    let secrets = match sealed {
        Some(s) => &s.secrets,
        None => {
            credential_only = route.upstream.credential().clone();
            &credential_only
        }
    };
    if Some(url.as_str()) != life.forward_url().as_deref() {
        // The route's upstream changed since the review: the digest the
        // reviewers signed covers the old URL.
        let error = format!("route `{route_name}` now points elsewhere than when this call was reviewed; nothing was forwarded");
        let d = Draft::failed(action_id, "forward", "upstream_changed", &error, 502);
        return match shared
            .store
            .commit_if(action_id, life.last_seq, vec![d])
            .await
        {
            Ok(true) => Forwarded::Failed {
                reason: "upstream_changed".into(),
                error,
                status: 502,
            },
            _ => Forwarded::NotOurs,
        };
    }
    let lease_until = rfc3339(SystemTime::now() + route.config.timeout + shared.config.audit.lease);
    let claim = Draft::new(
        action_id,
        Kind::Forwarded,
        json!({"url": url, "request_digest": hold.request_digest, "owner": shared.instance, "lease_until": lease_until}),
        None,
    );
    let mut claim = claim.redacted(secrets);
    claim.index.forward_claimed = true;
    claim.index.lease_until = Some(lease_until);
    match shared
        .store
        .commit_if(action_id, life.last_seq, vec![claim])
        .await
    {
        Ok(true) => {}
        Ok(false) => return Forwarded::NotOurs,
        Err(e) => {
            // Without the claim a crash could resend: do not send; the
            // waiting agent or the sweep tries again.
            tracing::error!(action_id, error = %e, "cannot claim the forward yet; not sending");
            return Forwarded::NotOurs;
        }
    }
    let mut headers = HeaderMap::new();
    // Only the headers a held call may keep are forwarded (the allowlist,
    // and the protocol headers of an MCP route), whatever the stored list
    // says: the digest reviewers signed does not cover headers.
    let allow = &shared.config.capture.headers_allow;
    let mcp = route.config.protocol == crate::config::Protocol::Mcp;
    let kept =
        |n: &str| allow.contains(n) || (mcp && crate::proxy::mcp::PROTOCOL_HEADERS.contains(&n));
    for (n, v) in hold.forward.headers.iter().filter(|(n, _)| kept(n)) {
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
            Outgoing {
                method: &hold.forward.method,
                path_and_query,
                body: hold.forward.body.clone(),
            },
            &headers,
            |_| false,
            &[],
            action_id,
        )
        .await;
    shared
        .metrics
        .upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    let response = match sent {
        Ok(r) => r,
        Err(e @ ForwardError::Timeout(_)) => {
            let why = ("upstream_timeout", e.to_string(), 504);
            return fail(shared, action_id, secrets, why).await;
        }
        Err(e @ ForwardError::Target(_)) => {
            let why = ("bad_target", e.to_string(), 400);
            return fail(shared, action_id, secrets, why).await;
        }
        Err(e) => {
            let why = ("upstream_unreachable", e.to_string(), 502);
            return fail(shared, action_id, secrets, why).await;
        }
    };
    let status = response.status().as_u16();
    shared.metrics.upstream(&format!("{}xx", status / 100));
    // The route's credential never goes back to the agent, nor into the record.
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
            return fail(
                shared,
                action_id,
                secrets,
                ("upstream_unreachable", error, 502),
            )
            .await;
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
    let mut capture = ResponseCapture::new(shared.config.capture.max_response_bytes, secrets);
    capture.push(&body);
    let recorded = capture.finish(status, &upstream_headers, &shared.config.capture, mcp);
    let took = started.elapsed().as_secs_f64() * 1e3;
    let completed = Draft::completed(action_id, recorded, took, None).redacted(secrets);
    shared.store.commit_until_durable(vec![completed]).await;
    tracing::info!(action_id, status, "approved action forwarded and completed");
    Forwarded::Delivered(Arc::new(Delivered {
        status,
        headers: kept,
        body,
    }))
}
