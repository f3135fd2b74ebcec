//! A fleet on one PostgreSQL record: two countersign instances share one
//! chain and one review queue. A call held by one is reviewed through the
//! other, the waiting agent is answered by the one it called, the upstream
//! sees the call once, and an expiry both see is recorded once.

use std::time::Duration;

use serde_json::Value;

use crate::holds::Admin;
use crate::pg;
use crate::support::*;

/// One fleet member: its own listeners, the shared database `dsn`.
fn member(upstream: &str, policy: &str, dsn: &str) -> Deployment {
    std::env::set_var("CS_TEST_PG_PASSWORD", pg::password());
    let d = Deployment::new(upstream, policy, "hold: { wait: 20s }\n");
    let yaml = std::fs::read_to_string(d.config_path())
        .expect("config")
        .replace(
            "audit: { store: \"sqlite://audit.db\", busy_timeout: 200ms }",
            &format!("audit: {{ store: \"{dsn}\", password_env: CS_TEST_PG_PASSWORD }}"),
        );
    std::fs::write(d.config_path(), yaml).expect("write config");
    d
}

async fn fresh_database() -> String {
    // The harness's client is blocking.
    tokio::task::spawn_blocking(pg::fresh_database)
        .await
        .expect("create a database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_taken_by_one_replica_is_approved_through_another() {
    let upstream = Upstream::start().await;
    let dsn = fresh_database().await;
    let (da, db) = (
        member(&upstream.url(), &payments_policy(), &dsn),
        member(&upstream.url(), &payments_policy(), &dsn),
    );
    let (a, b) = (da.start().await, db.start().await);
    let (admin_a, admin_b) = (Admin::of(&a), Admin::of(&b));

    let proxy_a = a.proxy_addr;
    let agent = tokio::spawn(async move {
        let resp = client()
            .post(format!("http://{proxy_a}/v1/payouts"))
            .header("content-type", "application/json")
            .header("x-agent-id", "ap-agent-7")
            .header("x-agent-on-behalf-of", "carol")
            .header("x-evidence-invoice", "INV-204")
            .body(r#"{"amount": 25000, "currency": "EUR", "to": "Globex"}"#)
            .send()
            .await
            .expect("send");
        (
            resp.status().as_u16(),
            action_id(&resp),
            resp.text().await.unwrap_or_default(),
        )
    });

    // The other replica sees the hold in the shared queue.
    let id = admin_b.wait_pending(1).await.remove(0);
    let (s, v) = admin_a.review(&id, "alice", "approve").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("pending")), "{v}");
    // The deciding review reaches the replica that does not hold the agent.
    let (s, v) = admin_b.review(&id, "bob", "approve").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");

    // The replica holding the agent forwards once and answers it.
    let (status, agent_id, body) = agent.await.expect("agent");
    assert_eq!((status, agent_id.as_str()), (201, id.as_str()), "{body}");
    assert_eq!(upstream.seen().len(), 1, "forwarded exactly once");
    for admin in [&admin_a, &admin_b] {
        let view = eventually(
            async || admin.action(&id).await,
            |v: &Value| v["state"] == "completed",
        )
        .await;
        assert_eq!(view["state"], "completed", "{view}");
        assert_eq!(view["reviews"].as_array().map(Vec::len), Some(2));
    }
    a.stop().await;
    b.stop().await;

    // One chain for the fleet, verified from either member's config.
    let out = countersign(&[
        "audit",
        "verify",
        "--config",
        da.config_path().to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const SHORT_EXPIRY: &str = r#"package countersign
import rego.v1
decision := {"action": "hold", "risk": "high", "reasons": ["always held"], "rules": ["test.hold"],
  "approval": {"reviewers": ["alice"], "min": 1, "expires_in": "700ms"}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_both_replicas_see_is_recorded_once() {
    let upstream = Upstream::start().await;
    let dsn = fresh_database().await;
    let (da, db) = (
        member(&upstream.url(), SHORT_EXPIRY, &dsn),
        member(&upstream.url(), SHORT_EXPIRY, &dsn),
    );
    let (a, b) = (da.start().await, db.start().await);
    let resp = client()
        .post(format!("http://{}/v1/payouts", a.proxy_addr))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 403);
    let id = action_id(&resp);
    // Give the other replica's sweep time to see the same expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = Admin::of(&b).action(&id).await;
    assert_eq!(view["state"], "expired", "{view}");
    let kinds: Vec<&str> = view["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "expired").count(),
        1,
        "{kinds:?}"
    );
    assert!(upstream.seen().is_empty());
    a.stop().await;
    b.stop().await;
}
