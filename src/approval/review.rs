//! One review attempt, from signed webhook to new state
//! (docs/reference.md#reviews). Every attempt, accepted or refused, is
//! written to the record with its reason, and with the signature and the
//! exact bytes it covers once it verified.

use std::sync::Arc;
use std::time::SystemTime;

use hyper::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::keys::KeyKind;
use crate::app::Shared;
use crate::audit::lifecycle::Lifecycle;
use crate::audit::record::{is_action_id, Draft, Kind, State};
use crate::audit::store::StoreError;

/// The review body a reviewer signs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// The action reviewed; must be the one in the URL, so a review signed
    /// for one action cannot approve another with the same digest.
    pub action_id: String,
    /// Reviewer name, as configured.
    pub reviewer: String,
    /// `approve` or `reject`.
    pub verdict: String,
    /// Free text for the record.
    #[serde(default)]
    pub comment: Option<String>,
    /// The action's `request_digest`.
    pub request_digest: String,
}

/// Why a review was refused; the HTTP status is chosen here.
#[derive(Debug)]
pub enum Refusal {
    /// 400: the body is not a review.
    Malformed(String),
    /// 401: missing, bad or stale signature.
    Unauthenticated(String),
    /// 403: not a reviewer of this action, or reviewing their own action.
    Forbidden(String),
    /// 404: no such action.
    NotFound,
    /// 409: replayed message, wrong digest, already reviewed or decided.
    Conflict(String),
    /// 503: the record could not be written; nothing changed.
    Unavailable(String),
}

impl Refusal {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::Unauthenticated(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::NotFound => 404,
            Refusal::Conflict(_) => 409,
            Refusal::Unavailable(_) => 503,
        }
    }

    /// One sentence for the reviewer and the record.
    pub fn message(&self) -> String {
        match self {
            Refusal::NotFound => "no such action".into(),
            Refusal::Malformed(m)
            | Refusal::Unauthenticated(m)
            | Refusal::Forbidden(m)
            | Refusal::Conflict(m)
            | Refusal::Unavailable(m) => m.clone(),
        }
    }
}

/// An accepted review's result.
#[derive(Debug)]
pub struct Accepted {
    /// The action's new state name.
    pub state: &'static str,
    /// Approvals so far.
    pub approvals: usize,
    /// Approvals needed.
    pub min: u32,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl ReviewBody {
    /// Refuses a review whose signed `action_id` is not the action posted to.
    pub fn bound_to(&self, id: &str) -> Result<(), Refusal> {
        if self.action_id == id {
            Ok(())
        } else {
            Err(Refusal::Conflict(format!(
                "the review is signed for action `{}`, not for this one; a review approves only the action it names",
                self.action_id
            )))
        }
    }
}

/// Separation of duties: refuses an approval by the agent itself or by the
/// person it acts for (as declared, and as verified: a declared header
/// cannot hide the proven subject), by the reviewer's name or any alias,
/// compared as [`super::identity::normalise`] puts them.
pub fn not_a_party(shared: &Shared, life: &Lifecycle, reviewer: &str) -> Result<(), Refusal> {
    let reviewers = shared.reviewers();
    match reviewers.party_to(reviewer, &life.parties()) {
        None => Ok(()),
        Some(m) => Err(Refusal::Forbidden(format!(
            "`{reviewer}` cannot approve an action they are a party to: {m}"
        ))),
    }
}

/// What the record keeps of a signature: the `webhook-signature` header as
/// sent and the exact bytes it covers after `<webhook-id>.<webhook-timestamp>.`
/// (`signed_body` when they are UTF-8 text, else `signed_body_base64`), so
/// the review can be checked again from the record alone (by anyone, for
/// an Ed25519 key). When the signature did not verify, only the body's
/// digest and size are kept: an unauthenticated sender cannot fill the
/// record with bodies.
pub fn signature_evidence(
    key: Option<KeyKind>,
    headers: &HeaderMap,
    body: &[u8],
) -> serde_json::Map<String, serde_json::Value> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut out = serde_json::Map::new();
    out.insert("key".into(), json!(key));
    out.insert(
        "webhook_signature".into(),
        json!(header(headers, "webhook-signature")),
    );
    match (key, std::str::from_utf8(body)) {
        (Some(_), Ok(text)) => {
            out.insert("signed_body".into(), json!(text));
        }
        (Some(_), Err(_)) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(body);
            out.insert("signed_body_base64".into(), json!(b64));
        }
        (None, _) => {
            let digest = hex::encode(sha2::Sha256::digest(body));
            out.insert("body_sha256".into(), json!(digest));
            out.insert("body_size".into(), json!(body.len()));
        }
    }
    out
}

/// Checks a Standard Webhooks signature with a reviewer's key (a shared
/// secret or an Ed25519 public key; 5-minute tolerance) and says which kind
/// of key proved it. Replays are the caller's to catch.
pub fn verify(
    shared: &Shared,
    reviewer: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<KeyKind, Refusal> {
    let reviewers = shared.reviewers();
    let key = reviewers.keys.get(reviewer).ok_or_else(|| {
        Refusal::Unauthenticated(format!("`{reviewer}` is not a configured reviewer"))
    })?;
    key.verify(body, headers).map_err(|e| {
        Refusal::Unauthenticated(format!(
            "the webhook signature does not verify for reviewer `{reviewer}`: {e}"
        ))
    })
}

/// Handles one review attempt for action `id`.
pub async fn review(
    shared: &Arc<Shared>,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, Refusal> {
    if !is_action_id(id) {
        return Err(Refusal::NotFound);
    }
    let parsed: Result<ReviewBody, _> = serde_json::from_slice(body);
    let webhook_id = header(headers, "webhook-id").unwrap_or("").to_string();
    // The body parses before the signature is checked, and nothing after
    // that check refuses as unauthenticated: so this says it verified.
    let named_key = parsed.as_ref().ok().and_then(|b| {
        let reviewers = shared.reviewers();
        reviewers.keys.get(&b.reviewer).map(|k| k.kind())
    });
    let attempt = json!({
        "webhook_id": webhook_id,
        "webhook_timestamp": header(headers, "webhook-timestamp"),
        "reviewer": parsed.as_ref().ok().map(|b| b.reviewer.clone()),
        "verdict": parsed.as_ref().ok().map(|b| b.verdict.clone()),
        "request_digest": parsed.as_ref().ok().map(|b| b.request_digest.clone()),
    });
    let outcome = decide(shared, id, headers, body, parsed, &webhook_id).await;
    match &outcome {
        Ok(a) => {
            shared.metrics.review(a.state);
        }
        Err(refusal) => {
            shared.metrics.review_refused(refusal_reason(refusal));
            // Unknown actions have no story to add to; the system log has it.
            if !matches!(refusal, Refusal::NotFound | Refusal::Unavailable(_)) {
                let mut payload = attempt;
                let verified =
                    named_key.filter(|_| !matches!(refusal, Refusal::Unauthenticated(_)));
                if let Some(p) = payload.as_object_mut() {
                    p.extend(signature_evidence(verified, headers, body));
                }
                payload["status"] = json!(refusal.status());
                payload["reason"] = json!(refusal_reason(refusal));
                payload["error"] = json!(refusal.message());
                shared
                    .store
                    .enqueue(vec![Draft::new(id, Kind::ReviewRefused, payload, None)]);
            }
            tracing::info!(
                action_id = id,
                status = refusal.status(),
                reason = refusal_reason(refusal),
                "review refused"
            );
        }
    }
    outcome
}

fn refusal_reason(r: &Refusal) -> &'static str {
    match r {
        Refusal::Malformed(_) => "malformed",
        Refusal::Unauthenticated(_) => "bad_signature",
        Refusal::Forbidden(_) => "not_allowed",
        Refusal::NotFound => "unknown_action",
        Refusal::Conflict(_) => "conflict",
        Refusal::Unavailable(_) => "store_unavailable",
    }
}

/// How often a review is re-read and re-checked when another process
/// changed the action in between.
const ATTEMPTS: usize = 8;

async fn decide(
    shared: &Arc<Shared>,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    parsed: Result<ReviewBody, serde_json::Error>,
    webhook_id: &str,
) -> Result<Accepted, Refusal> {
    let first = match shared.store.action(id).await {
        Ok(Some(l)) => l,
        Ok(None) => return Err(Refusal::NotFound),
        Err(StoreError::Tampered { seq, .. }) => {
            return Err(Refusal::Conflict(format!(
            "this action's records do not verify (seq {seq}); it cannot be reviewed or forwarded"
        )))
        }
        Err(e) => return Err(Refusal::Unavailable(e.to_string())),
    };
    let review =
        parsed.map_err(|e| Refusal::Malformed(format!("the body is not a review: {e}")))?;
    let key = verify(shared, &review.reviewer, body, headers)?;
    // Fleet-wide: a webhook-id is accepted once by any process.
    let fresh = !webhook_id.is_empty()
        && shared
            .store
            .first_sight(webhook_id)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    if !fresh {
        return Err(Refusal::Conflict(format!(
            "webhook-id `{webhook_id}` was already used; a review is accepted once"
        )));
    }
    review.bound_to(id)?;
    let approve = match review.verdict.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(Refusal::Malformed(format!(
                "verdict `{other}` is not approve or reject"
            )))
        }
    };
    let mut life = first;
    for _ in 0..ATTEMPTS {
        let signed = Signed {
            headers,
            body,
            webhook_id,
            key,
        };
        let (drafts, state, count, min) = check(shared, &life, &review, approve, &signed)?;
        match shared.store.commit_if(id, life.last_seq, drafts).await {
            Ok(true) => {
                tracing::info!(action_id = id, reviewer = %review.reviewer, verdict = %review.verdict, state = state.as_str(), "review accepted");
                if state != State::Pending {
                    super::resolved(shared, &life);
                }
                if state == State::Approved {
                    release(shared, id);
                }
                return Ok(Accepted {
                    state: state.as_str(),
                    approvals: count,
                    min,
                });
            }
            Ok(false) => {
                // Another review, an expiry or another process got there
                // first: read the action again and check again.
                life = match shared.store.action(id).await {
                    Ok(Some(l)) => l,
                    Ok(None) => return Err(Refusal::NotFound),
                    Err(e) => return Err(Refusal::Unavailable(e.to_string())),
                };
            }
            Err(e) => return Err(Refusal::Unavailable(e.to_string())),
        }
    }
    Err(Refusal::Unavailable(
        "the action kept changing while this review was checked; send it again".into(),
    ))
}

/// Everything a review must satisfy against the action as last read, and
/// the records it adds: the new state, approvals so far and needed.
/// What a verified review brings besides its body.
struct Signed<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
    webhook_id: &'a str,
    key: KeyKind,
}

fn check(
    shared: &Shared,
    life: &Lifecycle,
    review: &ReviewBody,
    approve: bool,
    signed: &Signed<'_>,
) -> Result<(Vec<Draft>, State, usize, u32), Refusal> {
    let (headers, body, webhook_id, key) =
        (signed.headers, signed.body, signed.webhook_id, signed.key);
    let not_pending = || {
        Refusal::Conflict(
            "the action is not pending: it was already decided, expired or cancelled".into(),
        )
    };
    let hold = life.hold.as_ref().ok_or_else(not_pending)?;
    if life.state != State::Pending || SystemTime::now() >= hold.expires_at {
        return Err(not_pending());
    }
    if !hold.eligible.contains(&review.reviewer) {
        return Err(Refusal::Forbidden(format!(
            "`{}` is not a reviewer of this action",
            review.reviewer
        )));
    }
    if approve {
        not_a_party(shared, life, &review.reviewer)?;
    }
    if review.request_digest != hold.request_digest {
        return Err(Refusal::Conflict(format!(
            "request_digest does not match this action's ({}); review the request as it is",
            hold.request_digest
        )));
    }
    if life.reviewed.contains(&review.reviewer) {
        return Err(Refusal::Conflict(format!(
            "`{}` already reviewed this action",
            review.reviewer
        )));
    }
    let id = life.action_id.as_str();
    let mut approvals = life.approvals.clone();
    if approve {
        approvals.insert(review.reviewer.clone());
    }
    let mut reviewed = json!({
        "action_id": review.action_id,
        "reviewer": review.reviewer,
        "verdict": review.verdict,
        "comment": review.comment,
        "request_digest": review.request_digest,
        "webhook_id": webhook_id,
        "webhook_timestamp": header(headers, "webhook-timestamp"),
        "approvals": approvals,
        "min": hold.min,
    });
    if let Some(r) = reviewed.as_object_mut() {
        r.extend(signature_evidence(Some(key), headers, body));
    }
    let mut drafts = vec![Draft::new(id, Kind::Reviewed, reviewed, None)];
    let state = if !approve {
        let payload = json!({"reviewer": review.reviewer, "comment": review.comment});
        drafts.push(Draft::new(
            id,
            Kind::Rejected,
            payload,
            Some(State::Rejected),
        ));
        State::Rejected
    } else if approvals.len() as u32 >= hold.min {
        let payload = json!({"approvals": approvals, "min": hold.min});
        drafts.push(Draft::new(
            id,
            Kind::Approved,
            payload,
            Some(State::Approved),
        ));
        State::Approved
    } else {
        State::Pending
    };
    Ok((drafts, state, approvals.len(), hold.min))
}

/// An approved action is forwarded by the process its agent waits on (so
/// the agent gets the whole answer); with nobody waiting here, this process
/// forwards it, after a grace period on a shared store in case the agent
/// waits on another process.
fn release(shared: &Arc<Shared>, id: &str) {
    if shared.waiters.has(id) {
        return;
    }
    let shared = shared.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if shared.store.is_shared() {
            tokio::time::sleep(super::sweep::CLAIM_GRACE / 2).await;
        }
        super::execute::forward(&shared, &id).await;
    });
}
