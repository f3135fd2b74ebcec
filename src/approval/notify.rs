//! Notices to reviewers' systems when an action is held: a JSON POST to each
//! `notify` URL, signed as a Standard Webhook with that hook's secret,
//! retried with backoff, each attempt's outcome recorded. Runs in its own
//! task: it never holds up the agent's request or other actions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::app::Shared;
use crate::audit::record::{Draft, Kind};

/// A configured hook, ready to sign.
pub struct Hook {
    /// Where notices go.
    pub url: String,
    /// Its signing key.
    pub key: standardwebhooks::Webhook,
    /// Attempts before giving up.
    pub attempts: u32,
    /// First retry delay; doubles after each retry.
    pub backoff: Duration,
}

/// The URL as the record keeps it: no query (it may carry a token).
fn shown(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Starts delivering `notice` to every hook.
pub fn spawn(shared: &Arc<Shared>, action_id: &str, notice: Value) {
    for index in 0..shared.hooks.len() {
        let shared = shared.clone();
        let action_id = action_id.to_string();
        let notice = notice.clone();
        tokio::spawn(async move { deliver(&shared, index, &action_id, &notice).await });
    }
}

async fn deliver(shared: &Shared, index: usize, action_id: &str, notice: &Value) {
    let hook = &shared.hooks[index];
    let body = notice.to_string();
    // One message id for every attempt: receivers deduplicate retries by it.
    let msg_id = format!("msg_{action_id}_{index}");
    let mut delay = Duration::ZERO;
    for attempt in 0..hook.attempts as usize {
        tokio::time::sleep(delay).await;
        delay = if delay.is_zero() {
            hook.backoff
        } else {
            delay * 2
        };
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let signature = match hook.key.sign(&msg_id, timestamp, body.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(hook = %shown(&hook.url), error = %e, "cannot sign the notice");
                return;
            }
        };
        let sent = shared
            .notifier
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
            .await;
        let (ok, outcome) = match sent {
            Ok(r) if r.status().is_success() => (true, json!({"status": r.status().as_u16()})),
            Ok(r) => (false, json!({"status": r.status().as_u16()})),
            // Without the URL: the hook's query may carry its token.
            Err(e) => (false, json!({"error": e.without_url().to_string()})),
        };
        let last = attempt + 1 == hook.attempts as usize;
        let mut payload = json!({
            "hook": shown(&hook.url),
            "webhook_id": msg_id,
            "attempt": attempt + 1,
            "delivered": ok,
            "final": ok || last,
        });
        if let (Some(p), Some(o)) = (payload.as_object_mut(), outcome.as_object()) {
            p.extend(o.clone());
        }
        shared.metrics.notification(ok);
        shared
            .store
            .enqueue(vec![Draft::new(action_id, Kind::Notified, payload, None)]);
        if ok {
            return;
        }
        tracing::warn!(action_id, hook = %shown(&hook.url), attempt = attempt + 1, "notification not delivered");
    }
}
