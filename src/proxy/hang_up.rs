//! What a call leaves in the record when its agent hangs up after the
//! decision. hyper drops a call's future as soon as it sees the agent's end
//! close, possibly without polling it again after an await: any step
//! written "after the await" may never run. So the pipeline arms a
//! [`Guard`] before the `decided` record is sent, and commits the decision
//! in a task of its own wherever it has to wait first
//! ([`commit_in_task`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::app::Shared;
use crate::approval;
use crate::audit::record::{Draft, State};
use crate::config::OnWaitTimeout;
use crate::policy::Policy;

/// What a guard does when the agent hangs up.
#[derive(Clone, Copy)]
enum Then {
    /// Cancel the hold (only under `hold.on_wait_timeout: cancel`).
    CancelHold,
    /// Record the allowed call as never sent: `failed` / `agent_hung_up`.
    /// Without it the sweep would later mark the call
    /// `forward_interrupted` (whether the upstream acted is unknown) when
    /// nothing was sent.
    RecordUnsent,
}

/// Acts for the call if it is dropped while armed (the agent hung up).
pub struct Guard {
    shared: Arc<Shared>,
    action_id: String,
    then: Then,
    armed: bool,
    /// Set when it fires, for a task still committing the decision: what
    /// the guard did before the decision was in the store found nothing,
    /// so that task acts once it has committed ([`Guard::fired`]).
    gone: Arc<AtomicBool>,
}

const UNSENT: &str = "the agent hung up before the call was forwarded; nothing was sent upstream";

impl Guard {
    /// For a held call: armed if the configuration cancels holds whose
    /// agent stops waiting.
    pub fn cancelling_hold(shared: &Arc<Shared>, action_id: &str) -> Guard {
        let armed = shared.config.hold.on_wait_timeout == OnWaitTimeout::Cancel;
        Guard::new(shared, action_id, Then::CancelHold, armed)
    }

    /// For an allowed call, until its forward begins.
    pub fn recording_unsent(shared: &Arc<Shared>, action_id: &str) -> Guard {
        Guard::new(shared, action_id, Then::RecordUnsent, true)
    }

    fn new(shared: &Arc<Shared>, action_id: &str, then: Then, armed: bool) -> Guard {
        Guard {
            shared: shared.clone(),
            action_id: action_id.to_string(),
            then,
            armed,
            gone: Arc::default(),
        }
    }

    /// The call is answered, its forward has begun, or its decision was
    /// never recorded: dropping does nothing.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// For a task that commits the decision: whether the guard has fired.
    /// Checked after the commit, so between it and the guard's own act one
    /// of the two finds the action.
    fn fired(&self) -> impl Fn() -> bool + Send + 'static {
        let gone = self.gone.clone();
        move || gone.load(Ordering::SeqCst)
    }

    /// Does what `then` says, once queued records are in (the `decided`
    /// record may still be on its way). Both the guard and a committing
    /// task may call it: each step is conditional, so at most one lands.
    async fn act(then: Then, shared: &Arc<Shared>, action_id: &str) {
        let _ = shared.store.flush().await;
        match then {
            Then::CancelHold => {
                if approval::cancel(shared, action_id, "the agent hung up while waiting").await {
                    tracing::info!(action_id, "agent hung up; hold cancelled");
                }
            }
            Then::RecordUnsent => {
                let Ok(Some(life)) = shared.store.action(action_id).await else {
                    return;
                };
                if life.state != State::Allowed || life.ending.is_some() {
                    return;
                }
                // 499: nginx's "client closed request"; nobody got an answer.
                let d = Draft::failed(action_id, "forward", "agent_hung_up", UNSENT, 499);
                if let Ok(true) = shared
                    .store
                    .commit_if(action_id, life.last_seq, vec![d])
                    .await
                {
                    tracing::info!(
                        action_id,
                        "agent hung up before the forward; recorded as not sent"
                    );
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.gone.store(true, Ordering::SeqCst);
        let (shared, id, then) = (
            self.shared.clone(),
            std::mem::take(&mut self.action_id),
            self.then,
        );
        self.shared
            .detached
            .spawn(async move { Guard::act(then, &shared, &id).await });
    }
}

/// Commits `decided` in a task of its own, so it lands (and what must
/// follow it, `after_commit`, runs) whatever the agent does meanwhile.
/// If the agent hung up before the commit landed, the guard's own act may
/// have found nothing: the task acts for it.
pub async fn commit_in_task(
    shared: &Arc<Shared>,
    policy: &Arc<Policy>,
    decided: Draft,
    guard: Option<&Guard>,
    after_commit: impl FnOnce(&Arc<Shared>, &str) + Send + 'static,
) -> Result<(), String> {
    let gone = guard.map(|g| (g.then, g.fired()));
    let (task_shared, policy) = (shared.clone(), policy.clone());
    let action_id = decided.action_id.clone();
    let committing = shared.detached.spawn(async move {
        let shared = task_shared;
        let id = decided.action_id.clone();
        let committed = shared
            .revisions
            .commit_decided(&shared.store, &policy, decided)
            .await;
        if committed.is_ok() {
            after_commit(&shared, &id);
            if let Some((then, fired)) = gone {
                if fired() {
                    Guard::act(then, &shared, &id).await;
                }
            }
        }
        committed.map_err(|e| e.to_string())
    });
    committing.await.unwrap_or_else(|e| {
        tracing::error!(%action_id, error = %e, "the decision's commit stopped unexpectedly");
        Err("the decision's commit stopped unexpectedly; see the system log".into())
    })
}
