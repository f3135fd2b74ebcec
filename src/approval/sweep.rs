//! The sweep: what no waiting agent will do. Every process of a fleet runs
//! it; each step is a conditional append, so whichever process gets there
//! first acts and the others find nothing to do.
//!
//! - a pending hold past its expiry is expired;
//! - an approved action nobody claimed (its agent is gone, or waits on a
//!   process that died) is forwarded;
//! - a call whose forwarding process stopped answering for it (its lease
//!   ran out with no result) is marked `failed` / `forward_interrupted`,
//!   never resent: whether the upstream acted is unknown.
//!
//! At start, a process on a store of its own (SQLite) treats every
//! unfinished forward as interrupted at once: it was the only forwarder.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::watch;

use super::execute;
use crate::app::Shared;
use crate::audit::lifecycle::Lifecycle;
use crate::audit::record::{Draft, State};
use crate::audit::store::backend::ListFilter;
use crate::audit::store::StoreError;

/// How often the sweep looks.
const EVERY: Duration = Duration::from_secs(1);

/// How long an approved action waits for the process its agent waits on
/// to claim the forward, before any process may.
pub const CLAIM_GRACE: Duration = Duration::from_secs(2);

const INTERRUPTED: &str = "the process forwarding this call stopped before its result was recorded; whether the upstream acted is unknown. \
    It is not resent: check the upstream for x-countersign-action-id and resolve it by hand";

/// Marks an unfinished forward interrupted, if it still is unfinished.
async fn interrupt(shared: &Arc<Shared>, life: &Lifecycle) -> Result<bool, Arc<StoreError>> {
    let unfinished = life.ending.is_none()
        && (life.state == State::Allowed
            || (life.state == State::Approved && life.claim.is_some()));
    if !unfinished {
        return Ok(false);
    }
    let mut d = Draft::failed(
        &life.action_id,
        "forward",
        "forward_interrupted",
        INTERRUPTED,
        502,
    );
    d.payload["previous_state"] = json!(life.state.as_str());
    let marked = shared
        .store
        .commit_if(&life.action_id, life.last_seq, vec![d])
        .await?;
    if marked {
        tracing::warn!(action_id = %life.action_id, "a forward was interrupted; recorded as failed, not resent");
    }
    Ok(marked)
}

/// A held call whose real query only the process that held it knew, when
/// that process is gone (this one restarted, on a store of its own) or
/// its hold has expired unforwarded: it can never be forwarded as
/// reviewed, so it ends as `failed` / `query_not_kept`.
async fn abandon_unforwardable(shared: &Arc<Shared>, life: &Lifecycle, now_or_never: bool) {
    let Some(hold) = &life.hold else { return };
    let stuck = hold.forward.query_redacted
        && matches!(life.state, State::Pending | State::Approved)
        && life.claim.is_none()
        && shared.sealed.get(&life.action_id).is_none()
        && (now_or_never || SystemTime::now() >= hold.expires_at);
    if !stuck {
        return;
    }
    let d = Draft::failed(
        &life.action_id,
        "hold",
        "query_not_kept",
        super::QUERY_NOT_KEPT,
        502,
    );
    if let Ok(true) = shared
        .store
        .commit_if(&life.action_id, life.last_seq, vec![d])
        .await
    {
        tracing::warn!(action_id = %life.action_id, "a held call with secret query parameters can no longer be forwarded; recorded as failed");
    }
}

/// At start: on a store of its own, every unfinished forward was this
/// process's and is now interrupted. Returns how many were marked.
pub async fn on_start(shared: &Arc<Shared>) -> Result<usize, Arc<StoreError>> {
    // What the sweep and recovery act on comes from the index: make the
    // rows of unfinished actions agree with their records first.
    let mut open = Vec::new();
    for state in ["pending", "approved", "allowed"] {
        let filter = ListFilter {
            state: Some(state.into()),
            ..Default::default()
        };
        open.extend(
            shared
                .store
                .list(filter)
                .await?
                .into_iter()
                .map(|a| a.action_id),
        );
    }
    let fixed = shared.store.reindex(open).await?;
    if fixed > 0 {
        tracing::warn!(
            fixed,
            "index rows disagreed with their records and were rebuilt from them"
        );
    }
    if shared.store.is_shared() {
        return Ok(0);
    }
    let mut marked = 0;
    let pending = ListFilter {
        state: Some("pending".into()),
        ..Default::default()
    };
    for a in shared.store.list(pending).await? {
        if let Ok(Some(life)) = shared.store.action(&a.action_id).await {
            abandon_unforwardable(shared, &life, true).await;
        }
    }
    for state in ["allowed", "approved"] {
        let filter = ListFilter {
            state: Some(state.into()),
            ..Default::default()
        };
        for a in shared.store.list(filter).await? {
            match shared.store.action(&a.action_id).await {
                Ok(Some(life)) => {
                    abandon_unforwardable(shared, &life, true).await;
                    marked += interrupt(shared, &life).await? as usize
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(action_id = %a.action_id, error = %e, "skipping an action whose records do not verify")
                }
            }
        }
    }
    Ok(marked)
}

/// One look at what is due.
pub async fn once(shared: &Arc<Shared>) -> Result<(), Arc<StoreError>> {
    let due = shared.store.due(CLAIM_GRACE).await?;
    for id in &due.expired {
        if let Ok(Some(life)) = shared.store.action(id).await {
            super::expire(shared, &life).await;
        }
    }
    for id in due.unclaimed {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let execute::Forwarded::NotOurs = execute::forward(&shared, &id).await {
                if let Ok(Some(life)) = shared.store.action(&id).await {
                    abandon_unforwardable(&shared, &life, false).await;
                }
            }
        });
    }
    shared.sealed.forget_old();
    for id in &due.lapsed {
        if let Ok(Some(life)) = shared.store.action(id).await {
            let lapsed = life.lease_until.is_none_or(|t| t <= SystemTime::now());
            if lapsed {
                interrupt(shared, &life).await?;
            }
        }
    }
    Ok(())
}

/// Runs the sweep until shutdown.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = once(&shared).await {
            tracing::warn!(error = %e, "the sweep could not read the store; trying again");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
