//! The admin listener: health, readiness and metrics without a token; the
//! actions API behind the bearer admin token; the signed review webhook.
//! It runs on its own thread (see [`handler`]).

mod review;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::app::Shared;

use crate::audit::record::State;
use crate::audit::store::backend::ListFilter;
use crate::audit::view::action_json;
use crate::http::{json as json_response, text, Body};

/// The admin listener's handler. Probes (`/healthz`, `/readyz`,
/// `/metrics`) are answered on the admin listener's own thread, so they
/// answer whatever the proxy is doing; everything else (the actions API,
/// reviews) runs on `main`, the runtime where held actions, forwarding and
/// notifications live.
pub fn handler(shared: Arc<Shared>, main: tokio::runtime::Handle) -> crate::http::Handler {
    Arc::new(move |req| {
        let shared = shared.clone();
        let probe = req.method() == Method::GET
            && matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
        if probe {
            return Box::pin(handle(shared, req));
        }
        let task = main.spawn(handle(shared, req));
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "an admin request failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the request failed inside countersign; see its log",
                )
            })
        })
    })
}

/// Routes one admin request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if method == Method::POST {
        return match path
            .strip_prefix("/v1/actions/")
            .and_then(|p| p.strip_suffix("/reviews"))
        {
            Some(id) => {
                let id = id.to_string();
                review::handle(&shared, &id, req).await
            }
            None => error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint; reviews go to POST /v1/actions/<id>/reviews",
            ),
        };
    }
    if method != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET, and POST for reviews, are served here",
        );
    }
    match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain; charset=utf-8"),
        "/readyz" => readyz(&shared),
        "/metrics" => {
            let p = shared.policy();
            let body =
                shared
                    .metrics
                    .render(p.revision(), p.engine_kind().as_str(), shared.waiters.len());
            text(StatusCode::OK, body, "text/plain; version=0.0.4")
        }
        "/v1/actions" => match refuse_unauthorized(&shared, &req) {
            Some(refusal) => refusal,
            None => list(&shared, req.uri().query()).await,
        },
        p => match p.strip_prefix("/v1/actions/") {
            Some(id) if req.headers().contains_key(review::REVIEWER_HEADER) => {
                review::show_to_reviewer(&shared, id, &req).await
            }
            Some(id) => match refuse_unauthorized(&shared, &req) {
                Some(refusal) => refusal,
                None => show(&shared, id).await,
            },
            None => error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint; try /healthz, /readyz, /metrics or /v1/actions",
            ),
        },
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({"error": message}))
}

/// Ready while the store commits: a store that cannot (disk full, locked,
/// read-only) answers 503 with the reason until a commit succeeds again.
fn readyz(shared: &Shared) -> Response<Body> {
    let p = shared.policy();
    let failure = shared.store.failure();
    let tampered = shared.store.tampered();
    // Not ready while the record cannot be written: every call would be refused.
    let (status, state) = match &failure {
        None => (StatusCode::OK, "ready"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_failing"),
    };
    json_response(
        status,
        &json!({
            "status": state,
            // Lets a script tell its own process from another on the port.
            "pid": std::process::id(),
            "policy": {
                "revision": p.revision(),
                "engine": p.engine_kind().as_str(),
                "vm_fallback_reason": p.vm_fallback_reason(),
                "entrypoint": p.entrypoint(),
                "files": p.files(),
                "loaded_at": p.loaded_at(),
                "reload_error": shared.reload_errors().get("policy"),
            },
            "store": {
                "kind": shared.store.kind(),
                "at": shared.store.describe(),
                "error": failure.as_ref().map(|f| &f.error),
                "failing_since": failure.as_ref().map(|f| &f.since),
                "tampered_actions": tampered,
            },
            "reload_errors": shared.reload_errors(),
        }),
    )
}

/// Whether the given token is the admin token, in time that says nothing
/// about it: both are hashed to SHA-256 first, so the comparison always
/// runs over 32 bytes whatever the lengths (comparing the raw strings would
/// stop early on a length mismatch and leak the token's length), and the
/// digests are compared in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// The 401 answer for a request without the admin token; `None` when it has it.
fn refuse_unauthorized(shared: &Shared, req: &Request<Incoming>) -> Option<Response<Body>> {
    let Some(token) = &shared.admin_token else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "the actions API is disabled: set admin.token_env in the config",
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.as_bytes(), token.as_bytes()) {
        None
    } else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send Authorization: Bearer <token>",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        Some(r)
    }
}

async fn list(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let mut filter = ListFilter::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "state" => match State::parse(&v) {
                Some(_) => filter.state = Some(v.into_owned()),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "state must be one of allowed, denied, pending, approved, rejected, expired, cancelled, completed, failed",
                    )
                }
            },
            "risk" => filter.risk = Some(v.into_owned()),
            "since" => match humantime::parse_rfc3339_weak(&v) {
                Ok(t) => filter.since = Some(humantime::format_rfc3339_micros(t).to_string()),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "since must be an RFC 3339 time like 2026-11-27T00:00:00Z",
                    )
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => filter.limit = n,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "limit must be a whole number from 1 to 1000",
                    )
                }
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown filter `{other}`; use state, risk, since or limit"),
                )
            }
        }
    }
    if filter.limit == 0 {
        filter.limit = 100;
    }
    match shared.store.list(filter).await {
        Ok(actions) => json_response(StatusCode::OK, &json!({"actions": actions})),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn show(shared: &Shared, id: &str) -> Response<Body> {
    match shared.store.action_records(id).await {
        Ok(records) if records.is_empty() => error(StatusCode::NOT_FOUND, "no such action"),
        Ok(records) => json_response(StatusCode::OK, &action_json(id, &records)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(same(b"test-admin-token", b"test-admin-token"));
        for other in [
            &b""[..],
            b"test-admin-toke",
            b"test-admin-token ",
            b"Test-admin-token",
            b"test-admin-tokenX",
        ] {
            assert!(!same(other, b"test-admin-token"), "{other:?}");
        }
    }
}
