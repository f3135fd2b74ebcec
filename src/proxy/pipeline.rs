//! The life of one call, in order: method and canonical target → route →
//! capture (agent headers, body) → decide → record (write-ahead) → forward
//! → record the result. Every way out of this
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
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::body::{BodyError, Parsed};
use super::forward::{end_to_end_headers, ForwardError, Outgoing, ResponseCapture};
use super::hang_up::{self, Guard};
use super::receive::{self, ReceiveError};
use super::target::{Target, TargetError};
use super::Route;
use crate::app::Shared;
use crate::approval;
use crate::audit::lifecycle::{Forward, Hold};
use crate::audit::record::{Draft, IndexUpdate, Kind, State, Summary};
use crate::audit::redact::{Secrets, StreamScrubber};
use crate::audit::store::{now_rfc3339, rfc3339};
use crate::capture::CapturedRequest;
use crate::config::{CaptureConfig, Protocol, ResultDurability};
use crate::http::{json as json_response, Body, ChannelBody};
use crate::policy::decision::{self, Action, Decision};
use crate::policy::input;
use std::time::SystemTime;

/// How a call ends when it is not forwarded (or forwarding failed).
#[derive(Debug)]
pub enum Outcome {
    /// The request target is one servers read differently ([`super::target`]).
    BadTarget(String),
    /// The method is not one the route takes.
    MethodNotAllowed {
        /// The method sent.
        method: String,
        /// The methods that would be taken (the `Allow` header).
        allowed: Vec<String>,
    },
    /// A repeated, nameless, oversized or non-text agent or evidence header.
    BadAgentHeader(String),
    /// A presented credential (bearer token, client certificate) did not verify.
    Unauthenticated(crate::identity::IdentityError),
    /// The route requires a verified identity and the call proved none.
    IdentityRequired {
        /// Bearer tokens are configured (the answer invites one).
        bearer: bool,
    },
    /// No route matches.
    NoRoute,
    /// Body over `capture.max_body_bytes`.
    BodyTooLarge(u64),
    /// The body could not be read.
    BadBody(String),
    /// A JSON body (or one that looks like JSON) that is not strict JSON.
    BadJson(String),
    /// A malformed form body.
    BadForm(String),
    /// More than one `Content-Type`, or one that is not one media type.
    BadContentType(String),
    /// A request body in a content coding (`gzip`, ...).
    BadContentEncoding(String),
    /// The budget for buffered request bodies is spent (its size in bytes).
    Overloaded(u64),
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
    /// An MCP call that breaks the transport (header/body mismatch,
    /// unsupported version, not JSON-RPC).
    Mcp(super::mcp::McpError),
}

impl Outcome {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::BadTarget(_)
            | Outcome::BadAgentHeader(_)
            | Outcome::BadBody(_)
            | Outcome::BadJson(_)
            | Outcome::BadForm(_)
            | Outcome::BadContentType(_)
            | Outcome::Mcp(_) => StatusCode::BAD_REQUEST,
            Outcome::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Outcome::Unauthenticated(_) | Outcome::IdentityRequired { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Outcome::NoRoute => StatusCode::NOT_FOUND,
            Outcome::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadContentEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            // An opa-envoy result may name the denial's status.
            Outcome::Denied(d) => d
                .envoy
                .as_ref()
                .and_then(|e| e.http_status)
                .unwrap_or(StatusCode::FORBIDDEN),
            Outcome::Rejected { .. } | Outcome::Expired => StatusCode::FORBIDDEN,
            Outcome::WaitCancelled => StatusCode::GATEWAY_TIMEOUT,
            Outcome::PolicyFailed { .. }
            | Outcome::StoreUnavailable(_)
            | Outcome::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            Outcome::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Short reason for metrics and the record.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::BadTarget(_) => "bad_target",
            Outcome::MethodNotAllowed { .. } => "method_not_allowed",
            Outcome::BadAgentHeader(_) => "bad_agent_header",
            Outcome::Unauthenticated(crate::identity::IdentityError::CertificateRequired) => {
                "identity_required"
            }
            Outcome::Unauthenticated(_) => "identity_invalid",
            Outcome::IdentityRequired { .. } => "identity_required",
            Outcome::NoRoute => "no_route",
            Outcome::BodyTooLarge(_) => "body_too_large",
            Outcome::BadBody(_) => "bad_body",
            Outcome::BadJson(_) => "bad_json",
            Outcome::BadForm(_) => "bad_form",
            Outcome::BadContentType(_) => "bad_content_type",
            Outcome::BadContentEncoding(_) => "bad_content_encoding",
            Outcome::Overloaded(_) => "overloaded",
            Outcome::Denied(_) => "denied",
            Outcome::PolicyFailed { reason, .. } => reason,
            Outcome::Rejected { .. } => "rejected",
            Outcome::Expired => "expired",
            Outcome::WaitCancelled => "cancelled",
            Outcome::StoreUnavailable(_) => "store_unavailable",
            Outcome::UpstreamFailed(_) => "upstream_unreachable",
            Outcome::UpstreamTimeout(_) => "upstream_timeout",
            Outcome::Mcp(e) => e.reason(),
        }
    }

    /// One sentence for the agent and the record.
    pub fn message(&self) -> String {
        match self {
            Outcome::BadTarget(e) => format!("{e}. Nothing was forwarded."),
            Outcome::MethodNotAllowed { method, allowed } => format!("the method {method} is not accepted here (this route takes {}); TRACE, CONNECT and non-standard methods are accepted only on a route that lists them in `methods`. Nothing was forwarded.", allowed.join(", ")),
            Outcome::BadAgentHeader(e) => format!("{e}. Nothing was forwarded."),
            Outcome::Unauthenticated(e) => format!("{e}. Nothing was forwarded."),
            Outcome::IdentityRequired { .. } => "this route requires a verified identity (routes[].identity.required): present a bearer token or a client certificate countersign can verify. Nothing was forwarded.".into(),
            Outcome::NoRoute => "no route matches this host and path; check the routes in the countersign config".into(),
            Outcome::BodyTooLarge(max) => format!("the request body is larger than capture.max_body_bytes ({max} bytes); nothing was forwarded"),
            Outcome::BadBody(e) => format!("the request body could not be read: {e}"),
            Outcome::BadJson(e) | Outcome::BadForm(e) | Outcome::BadContentType(e) | Outcome::BadContentEncoding(e) => format!("{e}. Nothing was forwarded."),
            Outcome::Overloaded(max) => format!("countersign is already buffering as many request bodies as limits.max_buffered_body_bytes allows ({max} bytes); nothing was forwarded; try again shortly"),
            Outcome::Denied(_) => "the policy denied this call".into(),
            Outcome::PolicyFailed { error: e, .. } => format!("the policy could not decide, so the call was refused: {e}"),
            Outcome::Rejected { reviewer, .. } => format!("reviewer {reviewer} rejected this call; nothing was forwarded"),
            Outcome::Expired => "no reviewer decided before the hold expired; nothing was forwarded".into(),
            Outcome::WaitCancelled => "the call was not decided within hold.wait, so it was cancelled; nothing was forwarded".into(),
            Outcome::StoreUnavailable(e) => format!("the record could not be written, so the call was refused: {e}"),
            Outcome::UpstreamFailed(e) => e.clone(),
            Outcome::UpstreamTimeout(e) => e.clone(),
            Outcome::Mcp(e) => format!("{e}. Nothing was forwarded."),
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

    /// The JSON body the agent gets.
    pub fn body(&self, action_id: &str) -> Value {
        let mut body =
            json!({"action_id": action_id, "state": self.state(), "error": self.message()});
        if let Outcome::Denied(d) = self {
            body["risk"] = json!(d.risk);
            body["reasons"] = json!(d.reasons);
            body["rules"] = json!(d.rules);
        }
        if let Outcome::Rejected { reviewer, comment } = self {
            body["reviewer"] = json!(reviewer);
            body["comment"] = json!(comment);
        }
        body
    }

    /// The JSON answer the agent gets.
    pub fn into_response(self, action_id: &str) -> Response<Body> {
        let allow = match &self {
            Outcome::MethodNotAllowed { allowed, .. } => {
                HeaderValue::from_str(&allowed.join(", ")).ok()
            }
            _ => None,
        };
        // RFC 6750: a refused or missing bearer token is answered with a challenge.
        let challenge = match &self {
            Outcome::Unauthenticated(e) if e.is_token() => Some(HeaderValue::from_static(
                "Bearer realm=\"countersign\", error=\"invalid_token\"",
            )),
            Outcome::IdentityRequired { bearer: true } => {
                Some(HeaderValue::from_static("Bearer realm=\"countersign\""))
            }
            _ => None,
        };
        let body = self.body(action_id);
        let overloaded = matches!(self.reason(), "overloaded" | "policy_overloaded");
        let mut response = json_response(self.status(), &body);
        if let Outcome::Denied(d) = &self {
            if let Some(e) = &d.envoy {
                // As opa-envoy answers a denial: its body as given, its
                // `headers` and `response_headers_to_add` on the answer.
                if let Some(text) = &e.body {
                    *response.body_mut() = crate::http::full(Bytes::from(text.clone()));
                    response.headers_mut().remove(hyper::header::CONTENT_TYPE);
                    response
                        .headers_mut()
                        .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
                }
                add_headers(response.headers_mut(), &e.headers);
                add_headers(response.headers_mut(), &e.response_headers_to_add);
            }
        }
        if let Some(allow) = allow {
            response.headers_mut().insert(hyper::header::ALLOW, allow);
        }
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(hyper::header::WWW_AUTHENTICATE, challenge);
        }
        if overloaded {
            // The condition passes as calls finish; say when to try again.
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
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
    // Every later step, the status URL included, reads the canonical target.
    let target = Target::of(req.uri(), req.headers(), scheme);
    let path = match &target {
        Ok(t) => t.path().to_string(),
        Err(_) => req.uri().path().to_string(),
    };
    if req.method() == hyper::Method::GET && target.is_ok() {
        if let Some(id) = path.strip_prefix(super::hold::STATUS_PREFIX) {
            let status = Box::pin(super::hold::status(&shared, id));
            let mut status = status.await;
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
    let mut trace = Trace::default();
    // Boxed: the connection's future then holds only what the current
    // stage needs, and a held call waits (for minutes) after `run` and all
    // it kept are gone. (Boxing the steps inside `run` too only adds
    // allocations: `run` is gone before anything waits long.) Boxed in a
    // statement of its own: a temporary lives to the end of its
    // statement, so `Box::pin(step()).await` would keep room for the
    // unboxed future across the await.
    let ran = Box::pin(run(&shared, &action_id, req, scheme, target, &mut trace));
    let ran = ran.await;
    // A held call waits here, once `run` and all it kept are gone.
    let ran = match ran {
        Ok(Ran::Answered(response)) => Ok(response),
        Ok(Ran::Held(held)) => {
            let answer = Box::pin(await_review(&shared, &action_id, *held));
            answer.await
        }
        Err(outcome) => Err(outcome),
    };
    let (mut response, own_body, recorded) = match ran {
        Ok(r) => {
            let own = r.extensions().get::<OwnAnswer>().map(|a| a.0.clone());
            (r, own, true)
        }
        Err(outcome) => {
            let by_review = matches!(
                outcome,
                Outcome::Rejected { .. } | Outcome::Expired | Outcome::WaitCancelled
            );
            if !matches!(outcome, Outcome::Denied(_)) && !by_review {
                shared.metrics.refused(outcome.reason());
            }
            tracing::info!(action_id, %method, path, outcome = outcome.reason(), "call not forwarded");
            // A call no route takes is not an action, and a call whose
            // decision could not be written has no record: neither gets
            // one now.
            let recorded = !matches!(outcome, Outcome::NoRoute) && !trace.decision_lost;
            let response = match &trace.mcp {
                Some(mcp) => super::mcp::render(outcome, mcp, &action_id),
                None => {
                    let body = outcome.body(&action_id);
                    let mut r = outcome.into_response(&action_id);
                    r.extensions_mut().insert(OwnAnswer(body));
                    r
                }
            };
            let body = response
                .extensions()
                .get::<OwnAnswer>()
                .map(|a| a.0.clone());
            (response, body, recorded)
        }
    };
    if recorded {
        let mut drafts = Vec::with_capacity(2);
        if let Some(completed) = response
            .extensions_mut()
            .remove::<ResultRecord>()
            .and_then(|r| r.take())
        {
            drafts.push(completed);
        }
        drafts.push(answered(&action_id, &response, own_body, &trace.secrets));
        shared.store.enqueue(drafts);
    }
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

/// What `handle` needs to know of a call's way through `run` to record
/// what the agent got.
#[derive(Default)]
struct Trace {
    /// The call's secrets, once known: the `answered` record is scrubbed
    /// like every other record of the call.
    secrets: Secrets,
    /// The `decided` record could not be committed: the call has no record.
    decision_lost: bool,
    /// On an MCP route: what is known of the call, so refusals are
    /// answered the MCP way.
    mcp: Option<super::mcp::Seen>,
}

/// The `completed` record of a relayed upstream answer, riding on the
/// response to `handle`, which queues it with the `answered` record. If
/// the response is dropped instead (the agent hung up as it was handed
/// over, and hyper dropped the call before `handle` ran again), the
/// record is queued on its own: an answer nobody heard is still recorded.
#[derive(Clone)]
struct ResultRecord(Arc<UnqueuedResult>);

struct UnqueuedResult {
    draft: std::sync::Mutex<Option<Draft>>,
    store: crate::audit::store::Store,
}

impl ResultRecord {
    fn new(draft: Draft, shared: &Shared) -> ResultRecord {
        ResultRecord(Arc::new(UnqueuedResult {
            draft: std::sync::Mutex::new(Some(draft)),
            store: shared.store.clone(),
        }))
    }

    /// The record, for `handle` to queue (once).
    fn take(&self) -> Option<Draft> {
        let mut d = self.0.draft.lock().unwrap_or_else(|e| e.into_inner());
        d.take()
    }
}

impl Drop for UnqueuedResult {
    fn drop(&mut self) {
        let d = self.draft.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(completed) = d.take() {
            tracing::info!(action_id = %completed.action_id, "the agent hung up before its answer; the result is recorded");
            self.store.enqueue(vec![completed]);
        }
    }
}

/// Marks a response countersign wrote itself (not the upstream's), with
/// its JSON body, so the `answered` record can keep what the agent got.
#[derive(Debug, Clone)]
pub struct OwnAnswer(pub Value);

/// The `answered` record: what the agent got. countersign's own answers
/// (refusals, 202 with the status URL, errors) are kept whole; an
/// upstream answer relayed is kept as its status (its recorded view is
/// the `completed` record). Scrubbed like every record of the call.
fn answered(
    action_id: &str,
    response: &Response<Body>,
    own: Option<Value>,
    secrets: &Secrets,
) -> Draft {
    let status = response.status().as_u16();
    let payload = match own {
        Some(body) => {
            let headers: serde_json::Map<String, Value> = response
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.to_string(), json!(v.to_str().ok()?))))
                .collect();
            json!({"source": "countersign", "status": status, "headers": headers, "body": body})
        }
        None => json!({"source": "upstream", "status": status}),
    };
    Draft::new(action_id, Kind::Answered, payload, None).redacted(secrets)
}

/// Everything the record needs to describe an action from its first record.
/// A call refused before a route took it has no route and no URL.
struct Story<'a> {
    action_id: &'a str,
    route: Option<&'a Route>,
    request: &'a CapturedRequest,
    /// The URL the call goes to with secret query values `[redacted]`: what is recorded.
    shown_url: Option<String>,
    /// What must not be recorded anywhere.
    secrets: Secrets,
}

impl Story<'_> {
    fn first_payload(&self, shared: &Shared, policy: Option<(&str, &str)>) -> Value {
        let route = self
            .route
            .map(|r| json!({"name": r.config.name, "upstream": r.config.upstream}));
        let mut p = json!({
            "route": route,
            "request": self.request.record_view(&shared.config.capture, self.shown_url.as_deref()),
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
            route: self
                .route
                .map(|r| r.config.name.clone())
                .unwrap_or_default(),
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
                summary: Some(self.summary()),
                ..Default::default()
            },
        }
        .redacted(&self.secrets)
    }

    /// Records a call refused before a decision and hands the outcome back.
    fn refuse(&self, shared: &Shared, policy: Option<(&str, &str)>, outcome: Outcome) -> Outcome {
        shared
            .store
            .enqueue(vec![self.refused_before_decision(shared, policy, &outcome)]);
        outcome
    }
}

async fn run(
    shared: &Arc<Shared>,
    action_id: &str,
    req: Request<Incoming>,
    scheme: &'static str,
    target: Result<Target, TargetError>,
    trace: &mut Trace,
) -> Result<Ran, Outcome> {
    let capture_cfg = &shared.config.capture;
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str();
    fn unrouted<'a>(
        action_id: &'a str,
        request: &'a CapturedRequest,
        cfg: &CaptureConfig,
    ) -> Story<'a> {
        Story {
            action_id,
            route: None,
            request,
            shown_url: None,
            secrets: request.secrets(cfg).build(),
        }
    }

    // 1. Method, target and route: the canonical target is what routes,
    //    what the policy judges and what is forwarded.
    if !shared.routes.iter().any(|r| r.allows_method(method)) {
        let request = CapturedRequest::refused_early(&parts, scheme, capture_cfg);
        let mut allowed: Vec<String> = Vec::new();
        for m in shared.routes.iter().flat_map(Route::allowed_methods) {
            if !allowed.contains(&m) {
                allowed.push(m);
            }
        }
        let outcome = Outcome::MethodNotAllowed {
            method: method.to_string(),
            allowed,
        };
        let story = unrouted(action_id, &request, capture_cfg);
        trace.secrets = story.secrets.clone();
        return Err(story.refuse(shared, None, outcome));
    }
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            let request = CapturedRequest::refused_early(&parts, scheme, capture_cfg);
            let story = unrouted(action_id, &request, capture_cfg);
            trace.secrets = story.secrets.clone();
            return Err(story.refuse(shared, None, Outcome::BadTarget(e.to_string())));
        }
    };
    let (mut head, refused_head) =
        match CapturedRequest::from_parts(&parts, scheme, &target, capture_cfg) {
            Ok(head) => (head, None),
            Err(refused) => (*refused.request, Some(refused.error)),
        };
    // A call no route takes is not an action (docs/record.md): counted, not recorded.
    let Some(route) = shared.route_for(&head.host, &head.path) else {
        return Err(Outcome::NoRoute);
    };
    let url = route.upstream.url_for(&head.path_and_query());
    let shown_url = route
        .upstream
        .url_for(&head.recorded_path_and_query(capture_cfg));
    let secrets = {
        let mut b = head.secrets(capture_cfg);
        b.extend(route.upstream.credential());
        b.build()
    };
    trace.secrets = secrets.clone();
    if route.config.protocol == Protocol::Mcp {
        trace.mcp = Some(Default::default());
    }
    let story_of = |request| Story {
        action_id,
        route: Some(route),
        request,
        shown_url: Some(shown_url.clone()),
        secrets: secrets.clone(),
    };
    if !route.allows_method(method) {
        let outcome = Outcome::MethodNotAllowed {
            method: method.to_string(),
            allowed: route.allowed_methods(),
        };
        return Err(story_of(&head).refuse(shared, None, outcome));
    }
    if let Some(e) = refused_head {
        return Err(story_of(&head).refuse(shared, None, Outcome::BadAgentHeader(e.to_string())));
    }

    // Identity: a credential that is presented must verify, on any route;
    // a route that requires one refuses a call that proves nothing.
    let presented = parts
        .extensions
        .get::<crate::http::PeerCertificate>()
        .map(|p| p.0.clone());
    match shared
        .identity
        .verify(&parts.headers, presented.as_deref())
        .await
    {
        Ok(Some(verified)) => head.agent.verified = Some(Arc::new(verified)),
        Ok(None) if route.config.identity_required => {
            let bearer = shared.identity.jwt().is_some();
            return Err(story_of(&head).refuse(shared, None, Outcome::IdentityRequired { bearer }));
        }
        Ok(None) => {}
        Err(e) => return Err(story_of(&head).refuse(shared, None, Outcome::Unauthenticated(e))),
    }

    // 2. Capture the body, within the limit, the time allowed and the
    //    shared budget. The reservation is held until this call is done with
    //    the request (forwarded, refused, or handed to a hold and answered).
    let max = capture_cfg.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let received = if declared.is_some_and(|n| n > max) {
        Err(Outcome::BodyTooLarge(max))
    } else {
        let budget = &shared.body_budget;
        let receiving = tokio::time::timeout(
            capture_cfg.body_timeout,
            receive::receive(body, declared, max, budget),
        );
        match receiving.await {
            Ok(Ok(received)) => Ok(received),
            Ok(Err(ReceiveError::TooLarge)) => Err(Outcome::BodyTooLarge(max)),
            Ok(Err(ReceiveError::OverBudget)) => Err(Outcome::Overloaded(budget.max())),
            Ok(Err(ReceiveError::Broken(e))) => Err(Outcome::BadBody(e)),
            Err(_) => Err(Outcome::BadBody(format!(
                "not received within {:?}",
                capture_cfg.body_timeout
            ))),
        }
    };
    let (body, _reservation): (Bytes, _) = match received {
        Ok(b) => b,
        Err(outcome) => return Err(story_of(&head).refuse(shared, None, outcome)),
    };
    let mut request = head.with_body(body);
    // What the policy reads of the body must be what any reader gets.
    if let Err(e) = request.parse_body() {
        let outcome = match e {
            BodyError::Json(_) => Outcome::BadJson(e.to_string()),
            BodyError::Form(_) => Outcome::BadForm(e.to_string()),
            BodyError::RepeatedContentType(_) | BodyError::NotOneMediaType(_) => {
                Outcome::BadContentType(e.to_string())
            }
            BodyError::Encoded => Outcome::BadContentEncoding(e.to_string()),
        };
        return Err(story_of(&request).refuse(shared, None, outcome));
    }
    // On an MCP route: the JSON-RPC message, checked against the
    // transport's headers before the policy sees anything.
    let mcp_call = if route.config.protocol == Protocol::Mcp {
        let seen = trace.mcp.get_or_insert_with(Default::default);
        if let Parsed::Json(v) = &request.body_parsed {
            seen.id = v.get("id").cloned();
        }
        let read =
            super::mcp::read(method, &parts.headers, &request.body_parsed).and_then(|call| {
                super::mcp::merge_evidence(&mut request.evidence, &call.evidence)?;
                Ok(call)
            });
        match read {
            Ok(call) => {
                seen.call = Some(call.clone());
                Some(call)
            }
            Err(e) => return Err(story_of(&request).refuse(shared, None, Outcome::Mcp(e))),
        }
    } else {
        None
    };
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
    let mut input_json = input::build(&ctx, &request, shared.config.policy.input);
    if let Some(call) = &mcp_call {
        input_json["mcp"] = call.to_input();
    }
    // What `audit replay` evaluates again: the input as the record may
    // keep it (redacted like the request view; the record is scrubbed).
    let recorded_input = input::recorded(&input_json, &request, capture_cfg);
    let doc = input::to_rego(input_json);
    let eval_started = Instant::now();
    // On the policy threads, never here: a slow policy must not stall the
    // async workers. The wait is bounded by policy.timeout whatever happens.
    let raw = shared.policy_pool.evaluate(policy.clone(), doc).await;
    let eval_time = eval_started.elapsed();
    shared
        .metrics
        .policy_eval_seconds
        .observe(eval_time.as_secs_f64());
    if let Some(log) = &shared.decision_log {
        // The OPA decision-log line: the recorded (redacted) input, and
        // the call's secrets scrubbed from all of it, as in the record.
        let error = raw.as_ref().err().map(ToString::to_string);
        let mut line = crate::policy::decision_log::Entry {
            decision_id: action_id,
            entrypoint: policy.entrypoint(),
            input: &recorded_input.input,
            result: raw.as_ref().ok(),
            error: error.as_deref(),
            revision: policy.revision(),
            timestamp: &time,
            eval_ns: eval_time.as_nanos(),
            instance: &shared.instance,
        }
        .to_json();
        secrets.scrub_value(&mut line);
        log.write(&line);
    }
    // One snapshot of the reviewers for the contract check and the hold.
    let reviewers = shared.reviewers();
    let decided = match raw {
        Err(e) => Err(Outcome::PolicyFailed {
            reason: e.reason(),
            error: e.to_string(),
        }),
        Ok(raw) => {
            let max_expiry = shared.config.hold.max_expiry;
            decision::check(&raw, Some(&reviewers.directory), max_expiry).map_err(|e| {
                Outcome::PolicyFailed {
                    reason: "policy_contract",
                    error: format!("the decision breaks the contract: {e}"),
                }
            })
        }
    };
    let decision = match decided {
        Ok(d) => d,
        Err(outcome) => return Err(story.refuse(shared, Some(revision), outcome)),
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
    let digest = request.request_digest(&url);
    payload["request_digest"] = json!(digest);
    payload["input"] = recorded_input.input;
    if recorded_input.body_omitted {
        payload["input_body_omitted"] = json!(true);
    }
    let hold = decision.approval.as_ref().map(|a| {
        let mcp = route.config.protocol == Protocol::Mcp;
        held_action(shared, &request, digest, a, &reviewers.directory, mcp)
    });
    let mut index = IndexUpdate {
        state: Some(state),
        risk: Some(decision.risk.clone()),
        summary: Some(story.summary()),
        ..Default::default()
    };
    if let Some(h) = &hold {
        payload["hold"] = approval::hold_payload(h, &request.recorded_path_and_query(capture_cfg));
        index.expires_at = Some(rfc3339(h.expires_at));
    }
    if state == State::Allowed {
        // On a shared store, past this lease another process may mark the
        // call interrupted if no result was recorded (this one died).
        let lease = rfc3339(
            SystemTime::now()
                + route.config.timeout
                + shared.config.capture.body_timeout
                + shared.config.audit.lease,
        );
        payload["lease_until"] = json!(lease);
        index.lease_until = Some(lease);
    }
    let decided = Draft {
        action_id: action_id.to_string(),
        kind: Kind::Decided,
        payload,
        index,
    }
    .redacted(&secrets);
    // Guarded from here, before the record is sent (hyper drops the call
    // when the agent hangs up, possibly without polling it again after the
    // commit): a held call is still cancelled (under `on_wait_timeout:
    // cancel`), an allowed one is recorded as never sent.
    let mut guard = match decision.action {
        Action::Hold => Some(Guard::cancelling_hold(shared, action_id)),
        Action::Allow => Some(Guard::recording_unsent(shared, action_id)),
        Action::Deny => None,
    };
    let committed = match &hold {
        // A hold's commit, and what must follow it (keeping the real query
        // for the forward, notifying the reviewers), run to their end in a
        // task of their own: an agent that hangs up while the hold commits
        // still leaves a hold its reviewers hear of and can have forwarded.
        Some(held) if decision.action == Action::Hold => {
            let sealed = approval::Sealed {
                path_and_query: held.forward.path_and_query.clone(),
                secrets: secrets.clone(),
                keep_until: held.expires_at + route.config.timeout + shared.config.audit.lease,
            };
            let notice = notice(shared, action_id, held, &decision, &story);
            let announce = move |shared: &Arc<Shared>, id: &str| {
                shared.sealed.keep(id, sealed);
                approval::notify::spawn(shared, id, notice);
            };
            hang_up::commit_in_task(shared, &policy, decided, guard.as_ref(), announce).await
        }
        // The revision is in the record: the decision is one commit.
        _ if shared.revisions.is_known(policy.revision()) => shared
            .store
            .commit(vec![decided])
            .await
            .map_err(|e| e.to_string()),
        // The first calls of a revision wait (for each other, and to learn
        // whether the record has the revision) before their `decided`
        // record goes to the store; an agent that hangs up then would drop
        // the call before it.
        _ => hang_up::commit_in_task(shared, &policy, decided, guard.as_ref(), |_, _| {}).await,
    };
    if let Err(e) = committed {
        if let Some(g) = &mut guard {
            g.disarm();
        }
        trace.decision_lost = true;
        return Err(Outcome::StoreUnavailable(e));
    }
    // Allowed calls are the bulk of the traffic and the record has them:
    // the system log names them at debug, denials and holds at info. (The
    // fields, the scrubbed rules among them, are built only for a line
    // that is written.)
    macro_rules! decided {
        ($level:ident) => {
            tracing::$level!(action_id, route = %route.config.name, method = %request.method,
                path = %request.path, action = decision.action.as_str(), risk = %decision.risk,
                rules = ?scrubbed(&decision.rules, &secrets), "decided")
        };
    }
    match decision.action {
        Action::Deny => {
            decided!(info);
            Err(Outcome::Denied(Box::new(decision)))
        }
        Action::Hold => {
            decided!(info);
            let hold = hold.expect("the contract requires approval with hold");
            let hang_up = guard.expect("made for the hold");
            // An MCP client that sent a progress token hears from us while it waits.
            if let Some(call) = mcp_call
                .as_ref()
                .filter(|c| c.progress_token.is_some() && super::mcp::accepts_sse(&parts.headers))
            {
                let interval = shared.config.hold.progress_interval;
                let (shared, id) = (shared.clone(), action_id.to_string());
                let expires_at = hold.expires_at;
                let wait =
                    async move { super::hold::wait(&shared, &id, expires_at, hang_up).await };
                return Ok(Ran::Answered(super::mcp::hold_with_progress(
                    call.clone(),
                    action_id.to_string(),
                    interval,
                    wait,
                )));
            }
            Ok(Ran::Held(Box::new(HeldCall {
                expires_at: hold.expires_at,
                mcp_call,
                hang_up,
            })))
        }
        Action::Allow => {
            decided!(debug);
            let slot = parts
                .extensions
                .get::<crate::http::ConnectionSlot>()
                .cloned();
            let mut response = forward_to_end(
                (shared, action_id),
                guard.expect("made for the allow"),
                (route, slot),
                parts.headers,
                decision.envoy.clone(),
                request,
                secrets,
            )
            .await?;
            // opa-envoy's `response_headers_to_add` come back to the agent.
            if let Some(e) = &decision.envoy {
                add_headers(response.headers_mut(), &e.response_headers_to_add);
            }
            Ok(Ran::Answered(response))
        }
    }
}

/// How `run` left a call: answered, or held for review (the wait happens
/// in `handle`, after `run` has dropped the request it no longer needs).
enum Ran {
    Answered(Response<Body>),
    Held(Box<HeldCall>),
}

/// What a held call needs while it waits.
struct HeldCall {
    /// When the hold expires (the rest of it is in the record).
    expires_at: SystemTime,
    mcp_call: Option<super::mcp::Call>,
    /// Cancels the hold if the agent hangs up (armed before the commit).
    hang_up: Guard,
}

/// Waits for the reviewers' verdict on a held call (up to `hold.wait`) and
/// answers the agent.
async fn await_review(
    shared: &Arc<Shared>,
    action_id: &str,
    HeldCall {
        expires_at,
        mcp_call,
        hang_up,
    }: HeldCall,
) -> Result<Response<Body>, Outcome> {
    match (
        &mcp_call,
        super::hold::wait(shared, action_id, expires_at, hang_up).await,
    ) {
        // Not decided within hold.wait: the MCP client gets a tool error
        // naming the action; the call stays held.
        (Some(call), Ok(r)) if r.status() == StatusCode::ACCEPTED => Ok(super::mcp::still_held(
            call,
            action_id,
            &format!("{}{action_id}", super::hold::STATUS_PREFIX),
        )),
        (_, answer) => answer,
    }
}

/// Rule ids as the system log may show them: the call's secrets scrubbed.
fn scrubbed(rules: &[String], secrets: &Secrets) -> Vec<String> {
    rules
        .iter()
        .map(|r| secrets.scrub_str(r).unwrap_or_else(|| r.clone()))
        .collect()
}

/// Appends policy-given headers to an answer; a list gives one header per value.
fn add_headers(to: &mut hyper::HeaderMap, headers: &[(hyper::header::HeaderName, HeaderValue)]) {
    for (name, value) in headers {
        to.append(name.clone(), value.clone());
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

/// Forwards an allowed call in a task of its own, so that it runs to its
/// end even if the agent hangs up (hyper then drops the call's future):
/// once the request may have reached the upstream, its result is
/// recorded, not left for the sweep to mark interrupted. An answer nobody
/// is left to hear still has its `completed` record written. (`unsent`
/// guards the call until then.)
///
/// The connection's slot goes with the forward: an agent cannot put more
/// calls upstream than `limits.max_connections` by hanging up.
async fn forward_to_end(
    (shared, action_id): (&Arc<Shared>, &str),
    mut unsent: Guard,
    (route, slot): (&Route, Option<crate::http::ConnectionSlot>),
    agent_headers: hyper::HeaderMap,
    envoy: Option<crate::policy::decision::EnvoyResult>,
    request: CapturedRequest,
    secrets: Secrets,
) -> Result<Response<Body>, Outcome> {
    let route_at = shared
        .routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .expect("the call's route is one of this process's routes");
    // Dropping the handle (the agent hung up) leaves the task running; the
    // answer it returns then drops with its `ResultRecord`, which queues
    // the record.
    let (shared, id) = (shared.clone(), action_id.to_string());
    let forwarding = shared.detached.clone().spawn(async move {
        let _slot = slot;
        let route = &shared.routes[route_at];
        forward(
            &shared,
            &id,
            route,
            &agent_headers,
            envoy.as_ref(),
            request,
            secrets,
        )
        .await
    });
    // From here the forward's own task records how it ends.
    unsent.disarm();
    forwarding.await.unwrap_or_else(|e| {
        // No result record: the sweep marks the call `forward_interrupted`
        // once its lease runs out (the upstream may have acted).
        tracing::error!(action_id, error = %e, "the forward stopped unexpectedly");
        Err(Outcome::UpstreamFailed(
            "the forward stopped unexpectedly; whether the upstream acted is unknown".into(),
        ))
    })
}

/// Responses up to this size are read whole before answering; larger or
/// unsized ones stream through.
const BUFFER_LIMIT: u64 = 256 * 1024;

async fn forward(
    shared: &Arc<Shared>,
    action_id: &str,
    route: &Route,
    agent_headers: &hyper::HeaderMap,
    envoy: Option<&crate::policy::decision::EnvoyResult>,
    request: CapturedRequest,
    secrets: Secrets,
) -> Result<Response<Body>, Outcome> {
    let names = &shared.config.capture.agent_headers;
    // The bearer token countersign verified is for countersign (its
    // audience), not for the upstream.
    let token_header = shared.identity.jwt().map(|j| j.header()).filter(|h| {
        agent_headers
            .get(*h)
            .is_some_and(|v| shared.identity.consumes(h, v.as_bytes()))
    });
    // opa-envoy's allowed result: its `headers` go upstream in place of
    // any the agent sent by those names, its `request_headers_to_remove`
    // do not. They are added after the agent's hop-by-hop headers are
    // dropped, so an agent cannot name them in `Connection` to drop them.
    let (set, removed): (&[_], &[_]) = match envoy {
        Some(e) => (&e.headers, &e.request_headers_to_remove),
        None => (&[], &[]),
    };
    let strip = |n: &str| {
        names.is_agent_header(n)
            || token_header == Some(n)
            || removed.iter().any(|r| r == n)
            || set.iter().any(|(s, _)| s == n)
    };
    let started = Instant::now();
    let sent = route
        .upstream
        .send(
            Outgoing {
                method: &request.method,
                path_and_query: &request.path_and_query(),
                body: request.body.clone(),
            },
            agent_headers,
            strip,
            set,
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
                ForwardError::Unreachable(_) | ForwardError::Encoded(_) => {
                    Outcome::UpstreamFailed(e.to_string())
                }
                ForwardError::Target(_) => Outcome::BadTarget(e.to_string()),
            };
            match outcome {
                Outcome::UpstreamTimeout(_) => shared.metrics.upstream("timeout"),
                Outcome::UpstreamFailed(_) => shared.metrics.upstream("error"),
                // Nothing reached the upstream.
                _ => {}
            }
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
        mcp: route.config.protocol == Protocol::Mcp,
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
        let completed = result.completed(action_id, capture, None, shared);
        let response = match shared.config.audit.result_durability {
            // Handed to the writer by `handle`, with the `answered` record:
            // one hand-off for both.
            ResultDurability::AfterResponse => {
                response.extension(ResultRecord::new(completed, shared))
            }
            // The agent sees the answer only once its record is durable.
            ResultDurability::BeforeResponse => {
                shared.store.commit_until_durable(vec![completed]).await;
                response
            }
        };
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
    /// On an MCP route: the JSON-RPC answer is pulled out for the record.
    mcp: bool,
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
        let response = capture.finish(self.status, &self.headers, &shared.config.capture, self.mcp);
        Draft::completed(action_id, response, self.upstream_ms, error).redacted(&self.secrets)
    }
}

/// The hold a decision creates: the request exactly as it will be
/// forwarded (allowlisted headers only: the others never enter the record,
/// so they cannot be replayed from it), who may decide, and by when.
fn held_action(
    shared: &Shared,
    request: &CapturedRequest,
    request_digest: String,
    approval: &crate::policy::decision::Approval,
    directory: &crate::policy::decision::Directory,
    mcp: bool,
) -> Hold {
    let allow = &shared.config.capture.headers_allow;
    let headers = request
        .headers
        .iter()
        .filter(|(n, _)| {
            allow.contains(n) || (mcp && super::mcp::PROTOCOL_HEADERS.contains(&n.as_str()))
        })
        .cloned()
        .collect();
    let expires_in = approval
        .expires_after
        .unwrap_or(shared.config.hold.default_expiry);
    Hold {
        request_digest,
        eligible: approval::eligible_reviewers(approval, directory),
        min: approval.min,
        // The contract bounds `expires_in` by hold.max_expiry, so this
        // cannot overflow; if it ever did, expiring at once fails closed.
        expires_at: SystemTime::now()
            .checked_add(expires_in)
            .unwrap_or_else(SystemTime::now),
        forward: Forward {
            method: request.method.clone(),
            path_and_query: request.path_and_query(),
            headers,
            body: request.body.clone(),
            // hold_payload marks it when the record's copy is redacted.
            query_redacted: false,
        },
    }
}

/// The notice sent to each `notify` hook (docs/reference.md#notifications):
/// scrubbed like a record.
fn notice(
    shared: &Shared,
    action_id: &str,
    held: &Hold,
    decision: &Decision,
    story: &Story<'_>,
) -> Value {
    let request = story.request;
    let mut notice = json!({
        "type": "action.held",
        "action_id": action_id,
        "decision": decision,
        "request": {
            "method": request.method,
            "url": story.shown_url,
            "route": story.route.map(|r| r.config.name.as_str()),
            "agent": request.agent_json(),
            "body": crate::capture::body_view(&request.body, shared.config.capture.max_response_bytes as usize),
            "body_sha256": request.body_sha256,
        },
        "evidence": request.evidence_json(),
        "request_digest": held.request_digest,
        "reviewers": held.eligible,
        "min": held.min,
        "expires_at": humantime::format_rfc3339_micros(held.expires_at).to_string(),
        "action_url": format!("{}/v1/actions/{}", shared.admin_url, action_id),
        "review_url": format!("{}/v1/actions/{}/reviews", shared.admin_url, action_id),
    });
    story.secrets.scrub_payload(&mut notice);
    notice
}
