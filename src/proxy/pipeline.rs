//! The life of one call, in order: route → capture → decide → record
//! (write-ahead) → forward → record the result. Every way out of this
//! function is an [`Outcome`] whose HTTP status is chosen in one place,
//! [`Outcome::into_response`].
//!
//! Each call has its [`Secrets`]: the values capture redacted plus the
//! route's credential. Every record of the call is built through
//! [`Draft::redacted`] with them, and so is the notice to reviewers; the
//! response the agent gets is scrubbed of the route's credential.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::forward::{end_to_end_headers, ForwardError, ResponseCapture};
use super::Route;
use crate::app::Shared;
use crate::approval::{self, Held, HeldRequest};
use crate::audit::record::{Draft, IndexUpdate, Kind, State, Summary};
use crate::audit::redact::{Secrets, StreamScrubber};
use crate::audit::store::now_rfc3339;
use crate::capture::CapturedRequest;
use crate::http::{json as json_response, Body, ChannelBody};
use crate::policy::decision::{self, Action, Decision};
use crate::policy::input;
use std::time::SystemTime;

/// How a call ends when it is not forwarded (or forwarding failed).
#[derive(Debug)]
pub enum Outcome {
    /// No route matches.
    NoRoute,
    /// Body over `capture.max_body_bytes`.
    BodyTooLarge(u64),
    /// The body could not be read.
    BadBody(String),
    /// The policy said deny.
    Denied(Box<Decision>),
    /// The policy failed, timed out or broke the contract.
    PolicyFailed {
        /// `policy_error`, `policy_timeout` or `policy_contract`.
        reason: &'static str,
        /// What went wrong.
        error: String,
    },
    /// A reviewer rejected the held call.
    Rejected {
        /// Who.
        reviewer: String,
        /// Their comment.
        comment: Option<String>,
    },
    /// Nobody decided before the hold expired.
    Expired,
    /// The hold was cancelled (not decided within `hold.wait` under `cancel`).
    WaitCancelled,
    /// The write-ahead record did not commit.
    StoreUnavailable(String),
    /// The upstream could not be reached.
    UpstreamFailed(String),
    /// The upstream did not answer in time.
    UpstreamTimeout(String),
}

impl Outcome {
    fn status(&self) -> StatusCode {
        match self {
            Outcome::NoRoute => StatusCode::NOT_FOUND,
            Outcome::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadBody(_) => StatusCode::BAD_REQUEST,
            Outcome::Denied(_) | Outcome::Rejected { .. } | Outcome::Expired => {
                StatusCode::FORBIDDEN
            }
            Outcome::WaitCancelled => StatusCode::GATEWAY_TIMEOUT,
            Outcome::PolicyFailed { .. } | Outcome::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Outcome::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            Outcome::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Short reason for metrics and the record.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::NoRoute => "no_route",
            Outcome::BodyTooLarge(_) => "body_too_large",
            Outcome::BadBody(_) => "bad_body",
            Outcome::Denied(_) => "denied",
            Outcome::PolicyFailed { reason, .. } => reason,
            Outcome::Rejected { .. } => "rejected",
            Outcome::Expired => "expired",
            Outcome::WaitCancelled => "cancelled",
            Outcome::StoreUnavailable(_) => "store_unavailable",
            Outcome::UpstreamFailed(_) => "upstream_unreachable",
            Outcome::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    /// One sentence for the agent and the record.
    pub fn message(&self) -> String {
        match self {
            Outcome::NoRoute => "no route matches this host and path; check the routes in the countersign config".into(),
            Outcome::BodyTooLarge(max) => format!("the request body is larger than capture.max_body_bytes ({max} bytes); nothing was forwarded"),
            Outcome::BadBody(e) => format!("the request body could not be read: {e}"),
            Outcome::Denied(_) => "the policy denied this call".into(),
            Outcome::PolicyFailed { error: e, .. } => format!("the policy could not decide, so the call was refused: {e}"),
            Outcome::Rejected { reviewer, .. } => format!("reviewer {reviewer} rejected this call; nothing was forwarded"),
            Outcome::Expired => "no reviewer decided before the hold expired; nothing was forwarded".into(),
            Outcome::WaitCancelled => "the call was not decided within hold.wait, so it was cancelled; nothing was forwarded".into(),
            Outcome::StoreUnavailable(e) => format!("the record could not be written, so the call was refused: {e}"),
            Outcome::UpstreamFailed(e) => e.clone(),
            Outcome::UpstreamTimeout(e) => e.clone(),
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Outcome::Denied(_) => "denied",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Expired => "expired",
            Outcome::WaitCancelled => "cancelled",
            _ => "failed",
        }
    }

    /// The JSON answer the agent gets.
    pub fn into_response(self, action_id: &str) -> Response<Body> {
        let mut body =
            json!({"action_id": action_id, "state": self.state(), "error": self.message()});
        if let Outcome::Denied(d) = &self {
            body["risk"] = json!(d.risk);
            body["reasons"] = json!(d.reasons);
            body["rules"] = json!(d.rules);
        }
        if let Outcome::Rejected { reviewer, comment } = &self {
            body["reviewer"] = json!(reviewer);
            body["comment"] = json!(comment);
        }
        json_response(self.status(), &body)
    }
}

/// Entry point for every call on the proxy listener.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    scheme: &'static str,
) -> Response<Body> {
    let action_id = crate::audit::record::new_action_id();
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET {
        if let Some(id) = path.strip_prefix(super::hold::STATUS_PREFIX) {
            let mut status = super::hold::status(&shared, id).await;
            // The answer is about that action, so it carries that action's id.
            if let (true, Ok(v)) = (
                crate::audit::record::is_action_id(id),
                HeaderValue::from_str(id),
            ) {
                status.headers_mut().insert("x-countersign-action-id", v);
            }
            return status;
        }
    }
    let mut response = match run(&shared, &action_id, req, scheme).await {
        Ok(r) => r,
        Err(outcome) => {
            let by_review = matches!(
                outcome,
                Outcome::Rejected { .. } | Outcome::Expired | Outcome::WaitCancelled
            );
            if !matches!(outcome, Outcome::Denied(_)) && !by_review {
                shared.metrics.refused(outcome.reason());
            }
            tracing::info!(action_id, %method, path, outcome = outcome.reason(), "call not forwarded");
            outcome.into_response(&action_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&action_id) {
        response.headers_mut().insert("x-countersign-action-id", v);
    }
    tracing::debug!(
        action_id,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "answered"
    );
    response
}

/// Everything the record needs to describe an action from its first record.
struct Story<'a> {
    action_id: &'a str,
    route: &'a Route,
    request: &'a CapturedRequest,
    /// The URL the call goes to (the request digest covers it).
    url: String,
    /// The same URL with secret query values `[redacted]`: what is recorded.
    shown_url: String,
    /// What must not be recorded anywhere.
    secrets: Secrets,
}

impl Story<'_> {
    fn first_payload(&self, shared: &Shared, policy: Option<(&str, &str)>) -> Value {
        let mut p = json!({
            "route": {"name": self.route.config.name, "upstream": self.route.config.upstream},
            "request": self.request.record_view(&shared.config.capture, &self.shown_url),
            "agent": self.request.agent_json(),
            "evidence": self.request.evidence_json(),
        });
        if let Some((revision, engine)) = policy {
            p["policy"] = json!({"revision": revision, "engine": engine, "entrypoint": shared.config.policy.entrypoint});
        }
        p
    }

    fn summary(&self) -> Summary {
        Summary {
            route: self.route.config.name.clone(),
            method: self.request.method.clone(),
            path: self.request.path.clone(),
            agent: self.request.agent.id.clone(),
        }
    }

    /// A `failed` record for a call that ended before a decision: it carries
    /// the whole request so the record still tells the story.
    fn refused_before_decision(
        &self,
        shared: &Shared,
        policy: Option<(&str, &str)>,
        outcome: &Outcome,
    ) -> Draft {
        let mut payload = self.first_payload(shared, policy);
        payload["stage"] = json!("decide");
        payload["reason"] = json!(outcome.reason());
        payload["error"] = json!(outcome.message());
        payload["status"] = json!(outcome.status().as_u16());
        Draft {
            action_id: self.action_id.to_string(),
            kind: Kind::Failed,
            payload,
            index: IndexUpdate {
                state: Some(State::Failed),
                risk: None,
                summary: Some(self.summary()),
            },
        }
        .redacted(&self.secrets)
    }
}

async fn run(
    shared: &Arc<Shared>,
    action_id: &str,
    req: Request<Incoming>,
    scheme: &'static str,
) -> Result<Response<Body>, Outcome> {
    let capture_cfg = &shared.config.capture;
    let (parts, body) = req.into_parts();

    // 1. Route.
    let head = CapturedRequest::from_parts(&parts, scheme, capture_cfg);
    let route = shared
        .route_for(&head.host, &head.path)
        .ok_or(Outcome::NoRoute)?;
    let url = route.upstream.url_for(&head.path_and_query());
    let shown_url = route
        .upstream
        .url_for(&head.recorded_path_and_query(capture_cfg));
    let secrets = {
        let mut b = head.secrets(capture_cfg);
        b.extend(route.upstream.credential());
        b.build()
    };
    let story_of = |request| Story {
        action_id,
        route,
        request,
        url: url.clone(),
        shown_url: shown_url.clone(),
        secrets: secrets.clone(),
    };

    // 2. Capture the body, within the limit and the time allowed.
    let max = capture_cfg.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = if declared.is_some_and(|n| n > max) {
        Err(Outcome::BodyTooLarge(max))
    } else {
        match tokio::time::timeout(
            capture_cfg.body_timeout,
            Limited::new(body, max as usize).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(Outcome::BodyTooLarge(max))
            }
            Ok(Err(e)) => Err(Outcome::BadBody(e.to_string())),
            Err(_) => Err(Outcome::BadBody(format!(
                "not received within {:?}",
                capture_cfg.body_timeout
            ))),
        }
    };
    let body: Bytes = match body {
        Ok(b) => b,
        Err(outcome) => {
            shared.store.enqueue(vec![
                story_of(&head).refused_before_decision(shared, None, &outcome)
            ]);
            return Err(outcome);
        }
    };
    let request = head.with_body(body);
    let story = story_of(&request);

    // 3. Decide.
    let policy = shared.policy();
    let revision = (policy.revision(), policy.engine_kind().as_str());
    let time = now_rfc3339();
    let ctx = input::Context {
        action_id,
        time: &time,
        route: &route.config.name,
        upstream: &route.config.upstream,
    };
    let doc = input::to_rego(input::build(&ctx, &request, shared.config.policy.input));
    let eval_started = Instant::now();
    let raw = policy.evaluate(doc);
    shared
        .metrics
        .policy_eval_seconds
        .observe(eval_started.elapsed().as_secs_f64());
    // One snapshot of the reviewers for the contract check and the hold.
    let reviewers = shared.reviewers();
    let decided = match raw {
        Err(e) => Err(Outcome::PolicyFailed {
            reason: e.reason(),
            error: e.to_string(),
        }),
        Ok(raw) => {
            decision::check(&raw, Some(&reviewers.directory)).map_err(|e| Outcome::PolicyFailed {
                reason: "policy_contract",
                error: format!("the decision breaks the contract: {e}"),
            })
        }
    };
    let decision = match decided {
        Ok(d) => d,
        Err(outcome) => {
            shared.store.enqueue(vec![story.refused_before_decision(
                shared,
                Some(revision),
                &outcome,
            )]);
            return Err(outcome);
        }
    };
    shared
        .metrics
        .decision(decision.action.as_str(), &decision.risk);

    // 4. Write ahead: the decision is durable before any byte goes upstream.
    let state = match decision.action {
        Action::Allow => State::Allowed,
        Action::Deny => State::Denied,
        Action::Hold => State::Pending,
    };
    let mut payload = story.first_payload(shared, Some(revision));
    payload["decision"] = serde_json::to_value(&decision).unwrap_or(Value::Null);
    payload["state"] = json!(state.as_str());
    let digest = request.request_digest(&story.url);
    payload["request_digest"] = json!(digest);
    let held = decision.approval.as_ref().map(|a| {
        held_action(
            shared,
            action_id,
            route,
            &request,
            digest,
            a,
            &reviewers.directory,
        )
        .with_secrets(secrets.clone())
    });
    if let Some(h) = &held {
        payload["hold"] = approval::hold_payload(h, &request.recorded_path_and_query(capture_cfg));
    }
    let decided = Draft {
        action_id: action_id.to_string(),
        kind: Kind::Decided,
        payload,
        index: IndexUpdate {
            state: Some(state),
            risk: Some(decision.risk.clone()),
            summary: Some(story.summary()),
        },
    }
    .redacted(&secrets);
    if let Err(e) = shared.store.commit(vec![decided]).await {
        return Err(Outcome::StoreUnavailable(e.to_string()));
    }
    let rules: Vec<String> = decision
        .rules
        .iter()
        .map(|r| secrets.scrub_str(r).unwrap_or_else(|| r.clone()))
        .collect();
    tracing::info!(action_id, route = %route.config.name, method = %request.method, path = %request.path,
        action = decision.action.as_str(), risk = %decision.risk, ?rules, "decided");

    match decision.action {
        Action::Deny => Err(Outcome::Denied(Box::new(decision))),
        Action::Hold => {
            let held = Arc::new(held.expect("the contract requires approval with hold"));
            let notice = notice(shared, &held, &decision, &story);
            approval::register(shared, held.clone(), Some(notice));
            super::hold::wait(shared, held).await
        }
        Action::Allow => forward(shared, action_id, route, &parts.headers, request, secrets).await,
    }
}

fn failed(action_id: &str, stage: &str, outcome: &Outcome, secrets: &Secrets) -> Draft {
    Draft::failed(
        action_id,
        stage,
        outcome.reason(),
        &outcome.message(),
        outcome.status().as_u16(),
    )
    .redacted(secrets)
}

/// Responses up to this size are read whole before answering; larger or
/// unsized ones stream through.
const BUFFER_LIMIT: u64 = 256 * 1024;

async fn forward(
    shared: &Arc<Shared>,
    action_id: &str,
    route: &Route,
    agent_headers: &hyper::HeaderMap,
    request: CapturedRequest,
    secrets: Secrets,
) -> Result<Response<Body>, Outcome> {
    let names = &shared.config.capture.agent_headers;
    let strip = |n: &str| names.is_agent_header(n);
    let started = Instant::now();
    let sent = route
        .upstream
        .send(
            &request.method,
            &request.path_and_query(),
            agent_headers,
            strip,
            request.body.clone(),
            action_id,
        )
        .await;
    shared
        .metrics
        .upstream_seconds
        .observe(started.elapsed().as_secs_f64());
    let mut upstream = match sent {
        Ok(r) => r,
        Err(e) => {
            let outcome = match e {
                ForwardError::Timeout(_) => Outcome::UpstreamTimeout(e.to_string()),
                ForwardError::Unreachable(_) => Outcome::UpstreamFailed(e.to_string()),
            };
            shared
                .metrics
                .upstream(if matches!(outcome, Outcome::UpstreamTimeout(_)) {
                    "timeout"
                } else {
                    "error"
                });
            shared
                .store
                .enqueue(vec![failed(action_id, "forward", &outcome, &secrets)]);
            return Err(outcome);
        }
    };
    let status = upstream.status();
    shared
        .metrics
        .upstream(&format!("{}xx", status.as_u16() / 100));
    // The route's credential never goes back: not in a header, not in the
    // body (below), and so not in the record either.
    let credential = route.upstream.credential().clone();
    let mut upstream_headers = upstream.headers().clone();
    credential.scrub_headers(&mut upstream_headers);
    let mut response = Response::builder().status(status);
    if let Some(h) = response.headers_mut() {
        *h = end_to_end_headers(&upstream_headers);
    }
    let mut capture = ResponseCapture::new(shared.config.capture.max_response_bytes, &secrets);
    let upstream_ms = started.elapsed().as_secs_f64() * 1e3;
    let result = ResultFacts {
        status: status.as_u16(),
        headers: upstream_headers,
        upstream_ms,
        secrets,
    };

    if upstream.content_length().is_some_and(|n| n <= BUFFER_LIMIT) {
        let bytes = match upstream.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let outcome = Outcome::UpstreamFailed(format!(
                    "the upstream's response body broke off: {}",
                    e.without_url()
                ));
                shared.store.enqueue(vec![failed(
                    action_id,
                    "forward",
                    &outcome,
                    &result.secrets,
                )]);
                return Err(outcome);
            }
        };
        let bytes = match credential.scrub_bytes(&bytes) {
            None => bytes,
            Some(clean) => {
                if let Some(h) = response.headers_mut() {
                    h.insert(CONTENT_LENGTH, HeaderValue::from(clean.len()));
                }
                Bytes::from(clean)
            }
        };
        capture.push(&bytes);
        shared
            .store
            .enqueue(vec![result.completed(action_id, capture, None, shared)]);
        return response
            .body(crate::http::full(bytes))
            .map_err(|e| Outcome::UpstreamFailed(e.to_string()));
    }

    // Stream: the agent gets bytes as they arrive; the record is written
    // when the body ends (or breaks off). Scrubbing may change the length,
    // so on a route with a credential the body goes out chunked.
    if !credential.is_empty() {
        if let Some(h) = response.headers_mut() {
            h.remove(CONTENT_LENGTH);
        }
    }
    let mut scrubber = StreamScrubber::new(credential);
    let (tx, body) = ChannelBody::new(8);
    let shared = shared.clone();
    let action_id = action_id.to_string();
    tokio::spawn(async move {
        let mut error = None;
        loop {
            match upstream.chunk().await {
                Ok(Some(chunk)) => {
                    let chunk = scrubber.push(chunk);
                    if chunk.is_empty() {
                        continue;
                    }
                    capture.push(&chunk);
                    if tx.send(Ok(chunk)).await.is_err() {
                        error = Some("the agent hung up before the body was complete".to_string());
                        break;
                    }
                }
                Ok(None) => {
                    let rest = scrubber.finish();
                    if !rest.is_empty() {
                        capture.push(&rest);
                        if tx.send(Ok(rest)).await.is_err() {
                            error =
                                Some("the agent hung up before the body was complete".to_string());
                        }
                    }
                    break;
                }
                Err(e) => {
                    // What was held back may be part of a secret: it is
                    // dropped with the broken body.
                    let msg = format!(
                        "the upstream's response body broke off: {}",
                        e.without_url()
                    );
                    let _ = tx.send(Err(msg.clone().into())).await;
                    error = Some(msg);
                    break;
                }
            }
        }
        shared
            .store
            .enqueue(vec![result.completed(&action_id, capture, error, &shared)]);
    });
    response
        .body(http_body_util::BodyExt::boxed(body))
        .map_err(|e| Outcome::UpstreamFailed(e.to_string()))
}

/// What is known of an upstream answer once its headers arrived.
struct ResultFacts {
    status: u16,
    /// Already scrubbed of the route's credential.
    headers: hyper::HeaderMap,
    upstream_ms: f64,
    secrets: Secrets,
}

impl ResultFacts {
    /// The `completed` record, once the body has passed.
    fn completed(
        &self,
        action_id: &str,
        capture: ResponseCapture,
        error: Option<String>,
        shared: &Shared,
    ) -> Draft {
        let response = capture.finish(self.status, &self.headers, &shared.config.capture);
        Draft::completed(action_id, response, self.upstream_ms, error).redacted(&self.secrets)
    }
}

/// The pending action a hold decision creates: the request exactly as it
/// will be forwarded (allowlisted headers only: the others never enter the
/// record, so they cannot be replayed from it after a restart), who may
/// decide, and by when.
fn held_action(
    shared: &Shared,
    action_id: &str,
    route: &Route,
    request: &CapturedRequest,
    request_digest: String,
    approval: &crate::policy::decision::Approval,
    directory: &crate::policy::decision::Directory,
) -> Held {
    let allow = &shared.config.capture.headers_allow;
    let headers = request
        .headers
        .iter()
        .filter(|(n, _)| allow.contains(n))
        .cloned()
        .collect();
    let now = SystemTime::now();
    let expires_in = approval
        .expires_after
        .unwrap_or(shared.config.hold.default_expiry);
    Held::new(
        action_id.to_string(),
        route.config.name.clone(),
        HeldRequest {
            method: request.method.clone(),
            path_and_query: request.path_and_query(),
            headers,
            body: request.body.clone(),
        },
        request_digest,
        request.agent.id.clone(),
        request.agent.on_behalf_of.clone(),
        approval::eligible_reviewers(approval, directory),
        approval.min,
        now,
        now + expires_in,
    )
}

/// The notice sent to each `notify` hook (SPEC §4): scrubbed like a record.
fn notice(shared: &Shared, held: &Held, decision: &Decision, story: &Story<'_>) -> Value {
    let request = story.request;
    let mut notice = json!({
        "type": "action.held",
        "action_id": held.action_id,
        "decision": decision,
        "request": {
            "method": request.method,
            "url": story.shown_url,
            "route": held.route,
            "agent": request.agent_json(),
            "body": crate::capture::body_view(&request.body, shared.config.capture.max_response_bytes as usize),
            "body_sha256": request.body_sha256,
        },
        "evidence": request.evidence_json(),
        "request_digest": held.request_digest,
        "reviewers": held.eligible,
        "min": held.min,
        "expires_at": humantime::format_rfc3339_micros(held.expires_at).to_string(),
        "action_url": format!("{}/v1/actions/{}", shared.admin_url, held.action_id),
        "review_url": format!("{}/v1/actions/{}/reviews", shared.admin_url, held.action_id),
    });
    story.secrets.scrub_payload(&mut notice);
    notice
}
