//! After a restart: rebuilds the pending actions from the record, so they can
//! still be reviewed, forwarded once approved, and expire on time. An
//! approved action whose forward had started (a `forwarded` record without a
//! result) is not sent again: it is recorded as `failed` with reason
//! `forward_interrupted`, for an operator to resolve (docs/operations.md).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::Value;

use super::{execute, register, Held, HeldRequest, Status, REPLAY_WINDOW};
use crate::app::Shared;
use crate::audit::record::{Draft, Record};
use crate::audit::store::{list_actions, records_of, ListFilter, StoreError};

fn time(s: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(s).unwrap_or_else(|_| SystemTime::now())
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Rebuilds one held action from its records; `None` if they do not describe one.
fn rebuild(records: &[Record]) -> Option<Held> {
    let decided = records.iter().find(|r| r.kind == "decided")?;
    let p = &decided.payload;
    let hold = &p["hold"];
    let forward = &hold["forward"];
    let body = base64::engine::general_purpose::STANDARD
        .decode(forward["body_base64"].as_str()?)
        .ok()?;
    let headers = forward["headers"]
        .as_array()?
        .iter()
        .filter_map(|h| Some((h[0].as_str()?.to_string(), h[1].as_str()?.to_string())))
        .collect();
    let held = Held::new(
        decided.action_id.clone(),
        p["route"]["name"].as_str()?.to_string(),
        HeldRequest {
            method: forward["method"].as_str()?.to_string(),
            path_and_query: forward["path_and_query"].as_str()?.to_string(),
            headers,
            body: body.into(),
        },
        hold["request_digest"].as_str()?.to_string(),
        p["agent"]["id"].as_str().map(str::to_string),
        p["agent"]["on_behalf_of"].as_str().map(str::to_string),
        strings(&hold["eligible"]),
        hold["min"].as_u64()? as u32,
        time(&decided.time),
        time(hold["expires_at"].as_str()?),
    );
    Some(held)
}

/// Loads every pending or approved action; returns how many were restored.
pub async fn recover(shared: &Arc<Shared>) -> Result<usize, StoreError> {
    let horizon = humantime::format_rfc3339_micros(SystemTime::now() - REPLAY_WINDOW).to_string();
    let seen: Vec<String> = shared
        .store
        .read(move |c| {
            let mut stmt = c.prepare(
                "SELECT json_extract(payload, '$.webhook_id') FROM records
                 WHERE kind IN ('reviewed', 'review_refused') AND time >= ?1",
            )?;
            let ids = stmt.query_map([horizon], |r| r.get::<_, Option<String>>(0))?;
            ids.filter_map(|r| r.transpose()).collect()
        })
        .await?;
    for id in seen {
        shared.holds.first_sight(&id, SystemTime::now());
    }

    let open: Vec<Vec<Record>> = shared
        .store
        .read(|c| {
            let mut out = Vec::new();
            for state in ["pending", "approved"] {
                let filter = ListFilter {
                    state: Some(state.into()),
                    limit: usize::MAX >> 1,
                    ..Default::default()
                };
                for a in list_actions(c, &filter)? {
                    out.push(records_of(c, &a.action_id)?);
                }
            }
            Ok(out)
        })
        .await?;
    let mut restored = 0;
    for records in open {
        let decided = records.iter().find(|r| r.kind == "decided");
        let query_lost =
            decided.is_some_and(|d| d.payload["hold"]["forward"]["query_redacted"] == true);
        if query_lost && !records.iter().any(|r| r.kind == "forwarded") {
            // The real query is not in the record, so this action can never
            // be forwarded as reviewed: end it instead of restoring it. (One
            // whose forward had begun is `forward_interrupted`, below.)
            let d = Draft::failed(
                &records[0].action_id,
                "hold",
                "query_not_kept",
                super::QUERY_NOT_KEPT,
                502,
            );
            shared
                .store
                .commit(vec![d])
                .await
                .map_err(|e| StoreError::Recovery(e.to_string()))?;
            tracing::warn!(action_id = %records[0].action_id, "held action with secret query parameters could not be restored; recorded as failed");
            continue;
        }
        let Some(held) = rebuild(&records) else {
            tracing::error!(action_id = %records[0].action_id, "a held action's records cannot be read back; it stays as recorded");
            continue;
        };
        let mut approvals = BTreeSet::new();
        let mut reviewed = BTreeSet::new();
        for r in records.iter().filter(|r| r.kind == "reviewed") {
            if let Some(name) = r.payload["reviewer"].as_str() {
                reviewed.insert(name.to_string());
                if r.payload["verdict"] == "approve" {
                    approvals.insert(name.to_string());
                }
            }
        }
        let approved = records.iter().any(|r| r.kind == "approved");
        let forwarded = records.iter().any(|r| r.kind == "forwarded");
        {
            let mut progress = held
                .progress
                .try_lock()
                .expect("a fresh action is unlocked");
            progress.approvals = approvals;
            progress.reviewed = reviewed;
            progress.resolved = approved;
        }
        let held = Arc::new(held);
        restored += 1;
        if approved && forwarded {
            let why = "countersign stopped after forwarding this approved request began; whether the upstream acted is unknown. \
                       It is not resent: check the upstream for x-countersign-action-id and resolve it by hand";
            let d = Draft::failed(&held.action_id, "forward", "forward_interrupted", why, 502);
            shared
                .store
                .commit(vec![d])
                .await
                .map_err(|e| StoreError::Recovery(e.to_string()))?;
            tracing::warn!(action_id = %held.action_id, "approved action was interrupted mid-forward; recorded as failed, not resent");
        } else if approved {
            held.set_status(Status::Approved);
            shared.holds.insert(held.clone());
            tokio::spawn(execute::forward(shared.clone(), held));
        } else {
            register(shared, held, None);
        }
    }
    Ok(restored)
}
