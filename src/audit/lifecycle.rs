//! One action's life, folded from its records: the single place that says
//! what state an action is in and what it may do next. The store index,
//! reviews, expiry, forwarding, recovery and the status URL all read an
//! action through [`Lifecycle::fold`], so a new kind of record is one match
//! arm here.
//!
//! [`verify`] checks an action's records against the chain before anything
//! acts on them: nothing is forwarded from bytes the chain does not protect.

use std::collections::BTreeSet;
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::record::{Kind, Record, State, GENESIS};
use super::store::backend::Links;

/// The request a held action forwards once approved, exactly as reviewed.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Method.
    pub method: String,
    /// Path and query, as forwarded.
    pub path_and_query: String,
    /// Headers forwarded (the allowlisted ones), in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
    /// Secret query values were `[redacted]` in `path_and_query`: the
    /// real one is only in the memory of the process that held the call.
    pub query_redacted: bool,
}

/// What a hold decision asked for.
#[derive(Debug, Clone)]
pub struct Hold {
    /// The digest reviews must carry.
    pub request_digest: String,
    /// Reviewers who may decide.
    pub eligible: BTreeSet<String>,
    /// Approvals needed.
    pub min: u32,
    /// When it expires.
    pub expires_at: SystemTime,
    /// What is forwarded once approved.
    pub forward: Forward,
}

/// A claim to forward an approved action (the `forwarded` record); its
/// lease is the action's [`Lifecycle::lease_until`].
#[derive(Debug, Clone)]
pub struct Claim {
    /// The process that claimed it.
    pub owner: Option<String>,
}

/// How an action ended, if it did with a result or a failure.
#[derive(Debug, Clone)]
pub enum Ending {
    /// The upstream answered; `response` is the record's view of it.
    Completed {
        /// The recorded response (status, kept headers, body view, digest).
        response: Value,
    },
    /// It ended without an upstream answer.
    Failed {
        /// Machine-readable reason.
        reason: String,
        /// What happened.
        error: String,
        /// The HTTP status the agent got (or gets).
        status: u16,
    },
}

/// An action as its records tell it.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Action id.
    pub action_id: String,
    /// Current state.
    pub state: State,
    /// Seq of the newest record (for conditional appends).
    pub last_seq: i64,
    /// When the first record was written.
    pub decided_at: Option<String>,
    /// Route name.
    pub route: Option<String>,
    /// Route upstream, as recorded.
    pub upstream: Option<String>,
    /// Declared agent id.
    pub agent_id: Option<String>,
    /// Declared principal.
    pub on_behalf_of: Option<String>,
    /// The verified subject (a token's `sub`, a certificate's name, the pod).
    pub verified_subject: Option<String>,
    /// The verified actor (a token's `act.sub`).
    pub verified_actor: Option<String>,
    /// Evidence as recorded.
    pub evidence: Value,
    /// The request digest from the decision.
    pub request_digest: Option<String>,
    /// The hold, for held actions.
    pub hold: Option<Hold>,
    /// Reviewers who approved.
    pub approvals: BTreeSet<String>,
    /// Reviewers who reviewed either way.
    pub reviewed: BTreeSet<String>,
    /// Who rejected, with their comment.
    pub rejection: Option<(String, Option<String>)>,
    /// The forward claim, once approved and claimed.
    pub claim: Option<Claim>,
    /// Until when the process forwarding the call (allowed, or approved
    /// and claimed) answers for its result.
    pub lease_until: Option<SystemTime>,
    /// The result, once ended with one.
    pub ending: Option<Ending>,
}

#[derive(Deserialize)]
struct RawForward {
    method: String,
    path_and_query: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body_base64: String,
    #[serde(default)]
    query_redacted: bool,
}

#[derive(Deserialize)]
struct RawHold {
    request_digest: String,
    eligible: BTreeSet<String>,
    min: u32,
    expires_at: String,
    forward: RawForward,
}

fn time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s).map_err(|e| format!("bad time `{s}`: {e}"))
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn hold_of(v: &Value) -> Result<Hold, String> {
    let raw: RawHold = serde_json::from_value(v.clone())
        .map_err(|e| format!("the hold block is malformed: {e}"))?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(&raw.forward.body_base64)
        .map_err(|e| format!("the held body is not base64: {e}"))?;
    Ok(Hold {
        request_digest: raw.request_digest,
        eligible: raw.eligible,
        min: raw.min,
        expires_at: time(&raw.expires_at)?,
        forward: Forward {
            method: raw.forward.method,
            path_and_query: raw.forward.path_and_query,
            headers: raw.forward.headers,
            body: body.into(),
            query_redacted: raw.forward.query_redacted,
        },
    })
}

impl Lifecycle {
    /// Folds an action's records (in seq order) into its state. An error
    /// means the records do not describe an action this version understands.
    pub fn fold(records: &[Record]) -> Result<Lifecycle, String> {
        let first = records.first().ok_or("the action has no records")?;
        let mut life = Lifecycle {
            action_id: first.action_id.clone(),
            state: State::Failed,
            last_seq: 0,
            decided_at: Some(first.time.clone()),
            route: None,
            upstream: None,
            agent_id: None,
            on_behalf_of: None,
            verified_subject: None,
            verified_actor: None,
            evidence: Value::Null,
            request_digest: None,
            hold: None,
            approvals: BTreeSet::new(),
            reviewed: BTreeSet::new(),
            rejection: None,
            claim: None,
            lease_until: None,
            ending: None,
        };
        for r in records {
            life.last_seq = r.seq;
            let p = &r.payload;
            if life.route.is_none() {
                life.route = text(&p["route"]["name"]);
                life.upstream = text(&p["route"]["upstream"]);
                life.agent_id = text(&p["agent"]["id"]);
                life.on_behalf_of = text(&p["agent"]["on_behalf_of"]);
                life.verified_subject = text(&p["agent"]["verified"]["subject"]);
                life.verified_actor = text(&p["agent"]["verified"]["actor"]);
                life.evidence = p["evidence"].clone();
            }
            let kind =
                Kind::parse(&r.kind).ok_or_else(|| format!("unknown record kind `{}`", r.kind))?;
            match kind {
                Kind::Decided => {
                    life.state = p["state"]
                        .as_str()
                        .and_then(State::parse)
                        .ok_or("the decided record has no valid state")?;
                    life.request_digest = text(&p["request_digest"]);
                    life.lease_until = p["lease_until"].as_str().and_then(|t| time(t).ok());
                    if life.state == State::Pending {
                        life.hold = Some(hold_of(&p["hold"])?);
                    }
                }
                Kind::Reviewed => {
                    if let Some(name) = p["reviewer"].as_str() {
                        life.reviewed.insert(name.to_string());
                        if p["verdict"] == "approve" {
                            life.approvals.insert(name.to_string());
                        }
                    }
                }
                Kind::Approved => life.state = State::Approved,
                Kind::Rejected => {
                    life.state = State::Rejected;
                    life.rejection = Some((
                        text(&p["reviewer"]).unwrap_or_default(),
                        text(&p["comment"]),
                    ));
                }
                Kind::Expired => life.state = State::Expired,
                Kind::Cancelled => life.state = State::Cancelled,
                Kind::Forwarded => {
                    life.lease_until = p["lease_until"].as_str().and_then(|t| time(t).ok());
                    life.claim = Some(Claim {
                        owner: text(&p["owner"]),
                    });
                }
                Kind::Completed => {
                    life.state = State::Completed;
                    life.ending = Some(Ending::Completed {
                        response: p["response"].clone(),
                    });
                }
                Kind::Failed => {
                    life.state = State::Failed;
                    life.ending = Some(Ending::Failed {
                        reason: text(&p["reason"]).unwrap_or_default(),
                        error: text(&p["error"]).unwrap_or_default(),
                        status: p["status"].as_u64().unwrap_or(502) as u16,
                    });
                }
                // Facts about the action, not steps of it.
                Kind::Notified | Kind::ReviewRefused | Kind::Answered | Kind::Policy => {}
            }
        }
        Ok(life)
    }

    /// Everyone the action is for or by, as separation of duties compares
    /// them: the declared agent and principal, and the verified subject and
    /// actor (a declared name can be anything; the verified ones were proven).
    pub fn parties(&self) -> [(&'static str, Option<&str>); 4] {
        [
            ("agent", self.agent_id.as_deref()),
            ("on_behalf_of", self.on_behalf_of.as_deref()),
            ("verified subject", self.verified_subject.as_deref()),
            ("verified actor", self.verified_actor.as_deref()),
        ]
    }

    /// The URL a held request goes to, as the digest covers it.
    pub fn forward_url(&self) -> Option<String> {
        let hold = self.hold.as_ref()?;
        Some(format!(
            "{}{}",
            self.upstream.as_deref()?,
            hold.forward.path_and_query
        ))
    }
}

/// Checks an action's records against the chain: each record's hash covers
/// its stored content, and links to the records around it; for a hold, the
/// stored forward bytes still hash to the digest reviewers signed. Returns
/// the first bad seq and why.
pub fn verify(records: &[Record], links: &[Links]) -> Result<(), (i64, String)> {
    for r in records {
        if !r.hash_matches() {
            return Err((
                r.seq,
                "its content does not match its hash (the record was altered)".into(),
            ));
        }
        let l = links
            .iter()
            .find(|l| l.seq == r.seq)
            .ok_or((r.seq, "its chain links could not be read".to_string()))?;
        let before_ok = match &l.before_hash {
            Some(h) => *h == r.prev_hash,
            None => r.seq == 1 && r.prev_hash == GENESIS,
        };
        if !before_ok {
            return Err((r.seq, "its prev_hash does not match the record before it (records removed, reordered or rewritten)".into()));
        }
        if l.after_prev_hash.as_ref().is_some_and(|h| *h != r.hash) {
            return Err((
                r.seq,
                "the record after it does not link to it (the record was rewritten)".into(),
            ));
        }
    }
    let life = Lifecycle::fold(records).map_err(|e| (records.first().map_or(0, |r| r.seq), e))?;
    if let Some(hold) = life.hold.as_ref().filter(|h| !h.forward.query_redacted) {
        // (With a redacted query the digest cannot be recomputed from the
        // record; such a request is only ever forwarded from the memory of
        // the process that held it, never from these bytes.)
        let decided = records
            .iter()
            .find(|r| r.kind == "decided")
            .map_or(0, |r| r.seq);
        let url = life
            .forward_url()
            .ok_or((decided, "the held action has no upstream".to_string()))?;
        let body_sha256 = hex::encode(Sha256::digest(&hold.forward.body));
        let digest = crate::capture::request_digest(
            &hold.forward.method,
            &url,
            &body_sha256,
            &life.evidence,
        );
        if digest != hold.request_digest || life.request_digest.as_deref() != Some(digest.as_str())
        {
            return Err((
                decided,
                "the stored request to forward does not match the digest that was reviewed".into(),
            ));
        }
    }
    Ok(())
}
