//! Held actions: the calls a policy holds until named reviewers decide.
//!
//! The store is the truth (a held action's `decided` record carries the exact
//! request to forward); [`Holds`] only indexes the pending ones in memory so a
//! review, an expiry or a waiting agent can find them. Each [`Held`] action
//! serializes its own reviews behind a lock and publishes its [`Status`] on a
//! watch channel that waiting agents follow.

pub mod execute;
pub mod notify;
pub mod recover;
pub mod review;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};

use crate::app::Shared;
use crate::audit::record::{Draft, Kind, State};
use crate::audit::redact::Secrets;
use crate::policy::decision::{Approval, Directory};

/// Where a held action stands, as waiting agents see it.
#[derive(Debug, Clone)]
pub enum Status {
    /// Waiting for reviews.
    Pending,
    /// Approved; being forwarded.
    Approved,
    /// Rejected by a reviewer.
    Rejected {
        /// Who rejected it.
        reviewer: String,
        /// Their comment.
        comment: Option<String>,
    },
    /// Nobody decided in time.
    Expired,
    /// Cancelled while pending.
    Cancelled,
    /// Forwarded and answered.
    Completed(Arc<Delivered>),
    /// Approved, but forwarding failed.
    Failed {
        /// Machine-readable reason.
        reason: String,
        /// What happened.
        error: String,
        /// The status the agent gets (502/504).
        status: u16,
    },
}

impl Status {
    /// Whether nothing more will happen to the action.
    pub fn is_final(&self) -> bool {
        !matches!(self, Status::Pending | Status::Approved)
    }
}

/// The upstream's whole answer to an approved request.
#[derive(Debug)]
pub struct Delivered {
    /// Status code.
    pub status: u16,
    /// Headers (hop-by-hop removed).
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// What reviewers have done so far.
#[derive(Debug, Default)]
pub struct Progress {
    /// Reviewers who approved.
    pub approvals: BTreeSet<String>,
    /// Reviewers who reviewed (either way).
    pub reviewed: BTreeSet<String>,
    /// Set once approved, rejected, expired or cancelled.
    pub resolved: bool,
}

/// The request a held action will forward, exactly as reviewed.
#[derive(Debug, Clone)]
pub struct HeldRequest {
    /// Method.
    pub method: String,
    /// Path and query, as the agent sent them.
    pub path_and_query: String,
    /// Headers forwarded: the allowlisted ones (the only ones the record
    /// may keep), in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
}

/// A pending action.
#[derive(Debug)]
pub struct Held {
    /// Action id.
    pub action_id: String,
    /// Route name.
    pub route: String,
    /// What will be forwarded.
    pub request: HeldRequest,
    /// The digest reviews must carry.
    pub request_digest: String,
    /// The acting agent (may not approve).
    pub agent_id: Option<String>,
    /// Whom it acts for (may not approve).
    pub on_behalf_of: Option<String>,
    /// Reviewers who may decide.
    pub eligible: BTreeSet<String>,
    /// Approvals needed.
    pub min: u32,
    /// When it expires.
    pub expires_at: SystemTime,
    /// When it was held.
    pub held_at: SystemTime,
    /// What its records must not carry: the values capture redacted, the
    /// route's credential. Empty for an action restored after a restart
    /// (it carries no redacted value then: see [`hold_payload`]).
    pub secrets: Secrets,
    /// Reviews so far; the lock serializes reviews of this action.
    pub progress: Mutex<Progress>,
    status: watch::Sender<Status>,
}

impl Held {
    /// Builds a pending action.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        action_id: String,
        route: String,
        request: HeldRequest,
        request_digest: String,
        agent_id: Option<String>,
        on_behalf_of: Option<String>,
        eligible: BTreeSet<String>,
        min: u32,
        held_at: SystemTime,
        expires_at: SystemTime,
    ) -> Held {
        Held {
            action_id,
            route,
            request,
            request_digest,
            agent_id,
            on_behalf_of,
            eligible,
            min,
            expires_at,
            held_at,
            secrets: Secrets::default(),
            progress: Mutex::new(Progress::default()),
            status: watch::channel(Status::Pending).0,
        }
    }

    /// The action with the secrets its records must not carry.
    pub fn with_secrets(mut self, secrets: Secrets) -> Held {
        self.secrets = secrets;
        self
    }

    /// Follows the action's status.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Publishes a new status.
    pub fn set_status(&self, status: Status) {
        self.status.send_replace(status);
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }
}

/// The in-memory index of pending (and approved, forwarding) actions.
#[derive(Default)]
pub struct Holds {
    actions: DashMap<String, Arc<Held>>,
    /// `webhook-id`s accepted or refused in the last [`REPLAY_WINDOW`].
    seen_webhook_ids: DashMap<String, SystemTime>,
}

/// How long a `webhook-id` is remembered: longer than the 5-minute
/// timestamp tolerance on either side, so a replay is caught whenever its
/// signature would still verify.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(11 * 60);

impl Holds {
    /// The held action with this id, if it is still pending or forwarding.
    pub fn get(&self, id: &str) -> Option<Arc<Held>> {
        self.actions.get(id).map(|h| h.clone())
    }

    /// How many actions are pending or forwarding.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Indexes an action.
    pub fn insert(&self, held: Arc<Held>) {
        self.actions.insert(held.action_id.clone(), held);
    }

    fn remove(&self, id: &str) {
        self.actions.remove(id);
    }

    /// Remembers a `webhook-id`; false when it was already seen (a replay).
    pub fn first_sight(&self, webhook_id: &str, at: SystemTime) -> bool {
        if self.seen_webhook_ids.len() > 10_000 {
            let horizon = SystemTime::now() - REPLAY_WINDOW;
            self.seen_webhook_ids.retain(|_, t| *t > horizon);
        }
        match self.seen_webhook_ids.entry(webhook_id.to_string()) {
            dashmap::mapref::entry::Entry::Occupied(_) => false,
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(at);
                true
            }
        }
    }
}

/// The configured reviewers: names with groups, and their signing keys.
/// Reloaded as a whole when the config changes.
pub struct Reviewers {
    /// Names and groups, for the decision contract and eligibility.
    pub directory: Directory,
    /// Standard Webhooks keys by reviewer name.
    pub keys: std::collections::BTreeMap<String, standardwebhooks::Webhook>,
}

impl Reviewers {
    /// Reads every reviewer's key; the error names the reviewer.
    pub fn from_config(config: &crate::config::Config) -> Result<Reviewers, String> {
        let mut keys = std::collections::BTreeMap::new();
        for (name, r) in &config.reviewers {
            let key = r.key.read().and_then(|k| crate::config::webhook_key(&k));
            keys.insert(
                name.clone(),
                key.map_err(|e| format!("{}: reviewers.{name}: {e}", config.file.display()))?,
            );
        }
        let directory = config
            .reviewers
            .iter()
            .map(|(n, r)| (n.clone(), r.groups.clone()))
            .collect();
        Ok(Reviewers { directory, keys })
    }
}

/// The reviewers a decision names, directly or through a group.
pub fn eligible_reviewers(approval: &Approval, directory: &Directory) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = approval
        .reviewers
        .iter()
        .filter(|r| directory.contains_key(*r))
        .cloned()
        .collect();
    for (name, groups) in directory {
        if groups.iter().any(|g| approval.groups.contains(g)) {
            out.insert(name.clone());
        }
    }
    out
}

/// The `hold` block of a held action's `decided` record: everything needed
/// to release it after a restart, including the whole body (the record's
/// `request.body` is cut at `capture.max_recorded_body_bytes`; this is the
/// one whole copy).
///
/// `recorded_path_and_query` is the path and query with secret query
/// values `[redacted]`. When it differs from what will be forwarded, the
/// real query stays in memory only and the block says `query_redacted`:
/// such an action is forwarded as long as this process runs, but cannot be
/// restored after a restart (see [`recover`]), since the secret is not in
/// the record.
pub fn hold_payload(held: &Held, recorded_path_and_query: &str) -> Value {
    use base64::Engine as _;
    let mut forward = json!({
        "method": held.request.method,
        "path_and_query": recorded_path_and_query,
        "headers": held.request.headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&held.request.body),
    });
    if recorded_path_and_query != held.request.path_and_query {
        forward["query_redacted"] = json!(true);
    }
    json!({
        "request_digest": held.request_digest,
        "eligible": held.eligible,
        "min": held.min,
        "expires_at": humantime::format_rfc3339_micros(held.expires_at).to_string(),
        "forward": forward,
    })
}

/// Why a held action recorded with a redacted query cannot be restored.
pub const QUERY_NOT_KEPT: &str =
    "this held request carried secret query parameters (capture.redact_query); \
their values were kept in memory only, and countersign restarted before it was forwarded. \
Nothing was forwarded: the agent must send the call again";

/// Registers a pending action whose `decided` record is committed: starts
/// its expiry timer and its notifications.
pub fn register(shared: &Arc<Shared>, held: Arc<Held>, notice: Option<Value>) {
    shared.holds.insert(held.clone());
    let s = shared.clone();
    let h = held.clone();
    tokio::spawn(async move {
        let wait = h
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let mut rx = h.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(wait) => expire(&s, &h).await,
            _ = async { while !rx.borrow_and_update().is_final() { if rx.changed().await.is_err() { break } } } => {}
        }
    });
    if let Some(notice) = notice {
        notify::spawn(shared, &held.action_id, notice);
    }
}

/// Ends a pending action that nobody decided in time.
async fn expire(shared: &Arc<Shared>, held: &Arc<Held>) {
    let mut progress = held.progress.lock().await;
    if progress.resolved {
        return;
    }
    let expires_at = humantime::format_rfc3339_micros(held.expires_at).to_string();
    let payload =
        json!({"expires_at": expires_at, "approvals": progress.approvals, "min": held.min});
    // The expiry must not be lost (nothing is forwarded meanwhile, since the
    // action stays unresolved).
    shared
        .store
        .commit_until_durable(vec![Draft::new(
            &held.action_id,
            Kind::Expired,
            payload,
            Some(State::Expired),
        )])
        .await;
    progress.resolved = true;
    drop(progress);
    tracing::info!(action_id = %held.action_id, "hold expired");
    resolved(shared, held);
    finish(shared, held, Status::Expired);
}

/// Cancels a pending action (the agent stopped waiting under `cancel`).
pub async fn cancel(shared: &Arc<Shared>, held: &Arc<Held>, why: &str) -> bool {
    let mut progress = held.progress.lock().await;
    if progress.resolved {
        return false;
    }
    let draft = Draft::new(
        &held.action_id,
        Kind::Cancelled,
        json!({"reason": why}),
        Some(State::Cancelled),
    );
    if let Err(e) = shared.store.commit(vec![draft]).await {
        // Not cancelled in the record, so not cancelled: it stays pending
        // and still expires; it is never forwarded unapproved either way.
        tracing::error!(action_id = %held.action_id, error = %e, "cannot record the cancellation; the action stays pending");
        return false;
    }
    progress.resolved = true;
    drop(progress);
    resolved(shared, held);
    finish(shared, held, Status::Cancelled);
    true
}

/// Counts the time from hold to resolution (approved, rejected, expired,
/// cancelled).
pub fn resolved(shared: &Shared, held: &Held) {
    let took = SystemTime::now()
        .duration_since(held.held_at)
        .unwrap_or_default();
    shared
        .metrics
        .hold_resolution_seconds
        .observe(took.as_secs_f64());
}

/// Publishes a final status and takes the action out of the index.
pub fn finish(shared: &Shared, held: &Held, status: Status) {
    held.set_status(status);
    shared.holds.remove(&held.action_id);
}
