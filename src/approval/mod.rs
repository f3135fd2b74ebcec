//! Held actions: the calls a policy holds until named reviewers decide.
//!
//! The store is the truth. A held action's `decided` record carries the
//! exact request to forward; every review, expiry, cancellation and forward
//! is a conditional append to the store, so any process of a fleet can take
//! a review and exactly one of them acts on each transition. What lives in
//! memory is only [`Waiters`]: the agents of this process waiting on an
//! action, woken when the store says it changed.

pub mod execute;
pub mod identity;
pub mod keys;
pub mod notify;
pub mod review;
pub mod sweep;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use serde_json::{json, Value};

use crate::app::Shared;
use crate::audit::lifecycle::{Hold, Lifecycle};
use crate::audit::record::{Draft, Kind, State};
use crate::audit::redact::Secrets;
use crate::policy::decision::{Approval, Directory};

/// The upstream's whole answer to an approved request, for the agent
/// waiting on it in this process.
#[derive(Debug)]
pub struct Delivered {
    /// Status code.
    pub status: u16,
    /// Headers (hop-by-hop removed).
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// One agent waiting on a held action in this process.
#[derive(Default)]
pub struct Waiter {
    /// Poked whenever the action changes.
    pub changed: tokio::sync::Notify,
    /// The upstream's answer, when this process forwarded it.
    delivered: Mutex<Option<Arc<Delivered>>>,
}

impl Waiter {
    /// The whole upstream answer, if this process forwarded the action.
    pub fn delivered(&self) -> Option<Arc<Delivered>> {
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The agents waiting in this process, by action id.
#[derive(Default)]
pub struct Waiters {
    map: DashMap<String, Arc<Waiter>>,
}

/// Takes a waiter out of the index when the agent stops waiting.
pub struct Registration<'a> {
    waiters: &'a Waiters,
    id: String,
    /// The waiter.
    pub waiter: Arc<Waiter>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.waiters.map.remove(&self.id);
    }
}

impl Waiters {
    /// Registers an agent waiting on `id`.
    pub fn register(&self, id: &str) -> Registration<'_> {
        let waiter = Arc::new(Waiter::default());
        self.map.insert(id.to_string(), waiter.clone());
        Registration {
            waiters: self,
            id: id.to_string(),
            waiter,
        }
    }

    /// Whether an agent waits on `id` here.
    pub fn has(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    /// How many agents wait here.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none do.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Wakes the agent waiting on `id` (an empty id wakes every one: a
    /// change may have been missed).
    pub fn poke(&self, id: &str) {
        if id.is_empty() {
            for w in self.map.iter() {
                w.changed.notify_one();
            }
        } else if let Some(w) = self.map.get(id) {
            w.changed.notify_one();
        }
    }

    /// Hands the upstream's answer to the agent waiting on `id`, if any.
    pub fn deliver(&self, id: &str, delivered: Arc<Delivered>) {
        if let Some(w) = self.map.get(id) {
            *w.delivered.lock().unwrap_or_else(|p| p.into_inner()) = Some(delivered);
            w.changed.notify_one();
        }
    }
}

/// The configured reviewers: names with groups, their keys and aliases.
/// Reloaded as a whole when the config changes.
pub struct Reviewers {
    /// Names and groups, for the decision contract and eligibility.
    pub directory: Directory,
    /// Each reviewer's key (a shared secret or an Ed25519 public key), by name.
    pub keys: std::collections::BTreeMap<String, keys::ReviewerKey>,
    /// Other names each reviewer goes by, for separation of duties.
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
}

impl Reviewers {
    /// Reads every reviewer's key; the error names the reviewer.
    pub fn from_config(config: &crate::config::Config) -> Result<Reviewers, String> {
        let mut keys = std::collections::BTreeMap::new();
        // Approvals count people: one key under two names would let one
        // person meet a quorum of two alone. Keys are compared as they
        // sign, not as they are spelled (`ReviewerKey::identity`).
        let mut owners: std::collections::BTreeMap<[u8; 32], String> = Default::default();
        for (name, r) in &config.reviewers {
            let in_config = |e: &dyn std::fmt::Display| {
                format!("{}: reviewers.{name}: {e}", config.file.display())
            };
            let text = r.key.read().map_err(|e| in_config(&e))?;
            let key = keys::ReviewerKey::parse(&text).map_err(|e| in_config(&e))?;
            let identity = keys::ReviewerKey::identity(&text).map_err(|e| in_config(&e))?;
            if let Some(other) = owners.insert(identity, name.clone()) {
                return Err(in_config(&format!(
                    "has the same key as reviewers.{other} (HMAC pads a short secret with zero bytes and hashes a long one, so different texts can be one key); every reviewer needs a key of their own, since approvals count people"
                )));
            }
            keys.insert(name.clone(), key);
        }
        let directory = config
            .reviewers
            .iter()
            .map(|(n, r)| (n.clone(), r.groups.clone()))
            .collect();
        let aliases = config
            .reviewers
            .iter()
            .map(|(n, r)| (n.clone(), r.aliases.clone()))
            .collect();
        Ok(Reviewers {
            directory,
            keys,
            aliases,
        })
    }

    /// Whether `reviewer` is one of an action's `parties` (the agent or the
    /// person it acts for, declared or verified), by name or alias,
    /// compared in [`identity::normalise`]'s form (separation of duties).
    /// Says which names matched.
    pub fn party_to(
        &self,
        reviewer: &str,
        parties: &[(&'static str, Option<&str>)],
    ) -> Option<identity::Match> {
        let aliases = self.aliases.get(reviewer).map(Vec::as_slice).unwrap_or(&[]);
        identity::same_person(reviewer, aliases, parties)
    }
}

/// The `hold` block of a held action's `decided` record: everything needed
/// to release it later, from any process, including the whole body (the
/// record's `request.body` is cut at `capture.max_recorded_body_bytes`;
/// this is the one whole copy).
///
/// `recorded_path_and_query` is the path and query with secret query
/// values `[redacted]`. When it differs from what will be forwarded, the
/// real query stays in this process's memory only ([`Sealed`]) and the
/// block says `query_redacted`: only this process can forward it.
pub fn hold_payload(hold: &Hold, recorded_path_and_query: &str) -> Value {
    use base64::Engine as _;
    let mut forward = json!({
        "method": hold.forward.method,
        "path_and_query": recorded_path_and_query,
        "headers": hold.forward.headers,
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&hold.forward.body),
    });
    if recorded_path_and_query != hold.forward.path_and_query {
        forward["query_redacted"] = json!(true);
    }
    json!({
        "request_digest": hold.request_digest,
        "eligible": hold.eligible,
        "min": hold.min,
        "expires_at": humantime::format_rfc3339_micros(hold.expires_at).to_string(),
        "forward": forward,
    })
}

/// Why a held action recorded with a redacted query cannot be forwarded.
pub const QUERY_NOT_KEPT: &str =
    "this held request carried secret query parameters (capture.redact_query); \
their values were kept in the memory of the process that held it, which stopped before it was forwarded. \
Nothing was forwarded: the agent must send the call again";

/// What a held action's record must not carry, kept in the memory of the
/// process that held it: the secrets to scrub from its later records, and
/// the real path and query when secret query values were redacted.
pub struct Sealed {
    /// The path and query to forward.
    pub path_and_query: String,
    /// The call's secrets (redacted header and query values, the credential).
    pub secrets: Secrets,
    /// Until when it may be needed.
    pub keep_until: SystemTime,
}

/// The sealed parts of this process's held actions, by action id.
#[derive(Default)]
pub struct SealedParts {
    map: DashMap<String, Arc<Sealed>>,
}

impl SealedParts {
    /// Keeps the sealed parts of a held action.
    pub fn keep(&self, id: &str, sealed: Sealed) {
        self.map.insert(id.to_string(), Arc::new(sealed));
    }

    /// The sealed parts of `id`, if this process held it.
    pub fn get(&self, id: &str) -> Option<Arc<Sealed>> {
        self.map.get(id).map(|s| s.clone())
    }

    /// Forgets one action's parts (it ended).
    pub fn forget(&self, id: &str) {
        self.map.remove(id);
    }

    /// Forgets parts no longer needed.
    pub fn forget_old(&self) {
        let now = SystemTime::now();
        self.map.retain(|_, s| s.keep_until > now);
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

/// Ends a pending action that nobody decided in time, unless something
/// else happened to it first. True when this call expired it.
pub async fn expire(shared: &Arc<Shared>, life: &Lifecycle) -> bool {
    let Some(hold) = &life.hold else { return false };
    if life.state != State::Pending || SystemTime::now() < hold.expires_at {
        return false;
    }
    let payload = json!({
        "expires_at": humantime::format_rfc3339_micros(hold.expires_at).to_string(),
        "approvals": life.approvals,
        "min": hold.min,
    });
    let draft = Draft::new(
        &life.action_id,
        Kind::Expired,
        payload,
        Some(State::Expired),
    );
    match shared
        .store
        .commit_if(&life.action_id, life.last_seq, vec![draft])
        .await
    {
        Ok(true) => {
            tracing::info!(action_id = %life.action_id, "hold expired");
            resolved(shared, life);
            true
        }
        Ok(false) => false,
        Err(e) => {
            // Still pending in the record, so nothing is forwarded; the
            // next look (waiter or sweep) tries again.
            tracing::error!(action_id = %life.action_id, error = %e, "cannot record the expiry yet");
            false
        }
    }
}

/// Cancels a pending action (the agent stopped waiting under `cancel`).
/// True when this call cancelled it.
pub async fn cancel(shared: &Arc<Shared>, action_id: &str, why: &str) -> bool {
    for _ in 0..5 {
        let life = match shared.store.action(action_id).await {
            Ok(Some(l)) if l.state == State::Pending => l,
            _ => return false,
        };
        let draft = Draft::new(
            action_id,
            Kind::Cancelled,
            json!({"reason": why}),
            Some(State::Cancelled),
        );
        match shared
            .store
            .commit_if(action_id, life.last_seq, vec![draft])
            .await
        {
            Ok(true) => {
                resolved(shared, &life);
                return true;
            }
            Ok(false) => continue,
            Err(e) => {
                // Not cancelled in the record, so not cancelled: it stays
                // pending and still expires; it is never forwarded unapproved.
                tracing::error!(action_id, error = %e, "cannot record the cancellation; the action stays pending");
                return false;
            }
        }
    }
    false
}

/// Counts the time from hold to resolution (approved, rejected, expired,
/// cancelled).
pub fn resolved(shared: &Shared, life: &Lifecycle) {
    if let Some(took) = held_for(life) {
        shared.metrics.hold_resolution_seconds.observe(took);
    }
}

fn held_for(life: &Lifecycle) -> Option<f64> {
    let at = humantime::parse_rfc3339_weak(life.decided_at.as_deref()?).ok()?;
    Some(SystemTime::now().duration_since(at).ok()?.as_secs_f64())
}
