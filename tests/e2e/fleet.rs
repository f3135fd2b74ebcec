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
    member_with(upstream, policy, dsn, "hold: { wait: 20s }\n")
}

/// A fleet member with `extra` config (top-level keys).
fn member_with(upstream: &str, policy: &str, dsn: &str, extra: &str) -> Deployment {
    std::env::set_var("CS_TEST_PG_PASSWORD", pg::password());
    let d = Deployment::new(upstream, policy, extra);
    let yaml = std::fs::read_to_string(d.config_path())
        .expect("config")
        .replace(
            "audit: { store: \"sqlite://audit.db\", busy_timeout: 200ms }",
            &format!("audit: {{ store: \"{dsn}\", password_env: CS_TEST_PG_PASSWORD, lease: 1s }}"),
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

/// Holds every payout for alice and bob (two approvals); a body with
/// `"expire": true` expires after 1.5 s.
const FLEET_POLICY: &str = r#"package countersign
import rego.v1
expires := "1500ms" if input.request.body.expire == true
else := "1h"
decision := {"action": "hold", "risk": "high", "reasons": ["two approvers"], "rules": ["fleet.hold"],
  "approval": {"reviewers": ["alice", "bob"], "min": 2, "expires_in": expires}}
"#;

/// What the stress test does with each held call.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    Approve,
    Reject,
    Expire,
}

fn fate(n: u64) -> Fate {
    match n % 3 {
        0 => Fate::Approve,
        1 => Fate::Reject,
        _ => Fate::Expire,
    }
}

/// How many calls carrying `"n": i` the upstream received, by i.
fn forwarded_counts(upstream: &Upstream) -> std::collections::BTreeMap<u64, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for seen in upstream.seen() {
        let body: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if let Some(n) = body["n"].as_u64() {
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
}

/// Every action of the fleet with the `n` of its request body.
async fn actions_by_n(admin: &Admin) -> Vec<(String, u64)> {
    let list = admin_json(&format!("{}/v1/actions?limit=1000", admin.url)).await;
    let mut out = Vec::new();
    for a in list["actions"].as_array().cloned().unwrap_or_default() {
        let id = a["action_id"].as_str().unwrap_or_default().to_string();
        let view = admin.action(&id).await;
        if let Some(n) = view["request"]["body"]["json"]["n"].as_u64() {
            out.push((id, n));
        }
    }
    out
}

/// Sends one review, retrying a process that is down (killed in the test).
async fn review_somewhere(
    admins: &[String],
    first: usize,
    id: &str,
    who: &str,
    verdict: &str,
) -> u16 {
    let mut last = String::new();
    for k in 0..admins.len() * 3 {
        let admin = Admin {
            url: format!("http://{}", admins[(first + k) % admins.len()]),
        };
        let digest = match client()
            .get(format!("{}/v1/actions/{id}", admin.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                last = format!("{status} {v}");
                v["request_digest"].clone()
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        // A process that could not read the action (restarting, its store
        // briefly failing) gave no digest: ask again rather than send a
        // review the admin listener must refuse as malformed.
        if !digest.is_string() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let body = serde_json::json!({"action_id": id, "reviewer": who, "verdict": verdict, "request_digest": digest});
        let msg = format!("msg_{}", countersign::audit::record::new_action_id());
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sig = standardwebhooks::Webhook::new(key_of(who))
            .unwrap()
            .sign(&msg, ts, body.to_string().as_bytes())
            .unwrap();
        let sent = client()
            .post(format!("{}/v1/actions/{id}/reviews", admin.url))
            .header("webhook-id", msg)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().as_u16() != 503 => return r.status().as_u16(),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("no process took the review of {id}; last: {last}")
}

/// Three real `countersign serve` processes on one database and 300 held
/// calls: reviews go to random processes (some to two at once), one process
/// is killed with SIGKILL in the middle and restarted. Every approved call
/// reaches the upstream exactly once, no rejected or expired one ever does,
/// every action ends, waiting agents get the right answers, and the one
/// chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_three_hundred_holds_each_forwarded_at_most_once() {
    const N: u64 = 300;
    let upstream = Upstream::start().await;
    let dsn = fresh_database().await;
    let extra = "hold: { wait: 4s }\nlog: { format: json }\n";
    let decks: Vec<Deployment> = (0..3)
        .map(|_| member_with(&upstream.url(), FLEET_POLICY, &dsn, extra))
        .collect();
    let mut members: Vec<Option<crate::cli::Serve>> = decks
        .iter()
        .map(|d| Some(crate::cli::spawn_serve(d)))
        .collect();
    let proxies: Vec<String> = members.iter().flatten().map(|m| m.proxy.clone()).collect();
    let mut admins: Vec<String> = members.iter().flatten().map(|m| m.admin.clone()).collect();

    // The agents: each waits (hold.wait 4 s) on one of the processes.
    let mut agents = Vec::new();
    for n in 0..N {
        let proxy = proxies[(n % 3) as usize].clone();
        let expire = fate(n) == Fate::Expire;
        agents.push(tokio::spawn(async move {
            let sent = client()
                .post(format!("http://{proxy}/v1/payouts"))
                .header("content-type", "application/json")
                .header("x-agent-id", "fleet-agent")
                .body(format!(
                    r#"{{"n": {n}, "amount": 100, "expire": {expire}}}"#
                ))
                .send()
                .await;
            match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (
                        n,
                        Some((status, r.json::<Value>().await.unwrap_or(Value::Null))),
                    )
                }
                // Its process was killed while it waited.
                Err(_) => (n, None),
            }
        }));
    }
    let a = Admin {
        url: format!("http://{}", admins[0]),
    };
    let held = eventually(
        async || actions_by_n(&a).await,
        |h: &Vec<(String, u64)>| h.len() as u64 >= N,
    )
    .await;
    assert_eq!(
        held.len() as u64,
        N,
        "every call is held once, in one queue"
    );

    let mut rng = countersign::audit::record::new_action_id()
        .into_bytes()
        .into_iter()
        .cycle();
    let (first_half, second_half) = held.split_at(held.len() / 2);
    for (half, part) in [first_half, second_half].into_iter().enumerate() {
        if half == 1 {
            // SIGKILL one process in the middle, and bring it back.
            drop(members[1].take());
            let back = crate::cli::spawn_serve(&decks[1]);
            admins[1] = back.admin.clone();
            members[1] = Some(back);
        }
        let mut reviews = Vec::new();
        for (id, n) in part.iter().cloned() {
            let admins = admins.clone();
            let (r1, r2, r3) = (
                rng.next().unwrap() as usize,
                rng.next().unwrap() as usize,
                rng.next().unwrap() as usize,
            );
            reviews.push(tokio::spawn(async move {
                match fate(n) {
                    Fate::Expire => {}
                    Fate::Reject => {
                        let s = review_somewhere(&admins, r1, &id, "alice", "reject").await;
                        assert!(s == 200 || s == 409, "reject of {n}: {s}");
                    }
                    Fate::Approve => {
                        let s = review_somewhere(&admins, r1, &id, "alice", "approve").await;
                        assert!(s == 200 || s == 409, "alice on {n}: {s}");
                        // The same reviewer at two processes at once: one counts.
                        let (b1, b2) = tokio::join!(
                            review_somewhere(&admins, r2, &id, "bob", "approve"),
                            review_somewhere(&admins, r3 + 1, &id, "bob", "approve"),
                        );
                        let mut both = [b1, b2];
                        both.sort();
                        assert_eq!(both, [200, 409], "bob twice on {n}");
                    }
                }
            }));
        }
        for r in reviews {
            r.await.unwrap();
        }
    }

    // Every action ends; approved ones reach the upstream at most once
    // (exactly once unless a process died while forwarding it, which is
    // then recorded as interrupted), the others never.
    let finals = ["completed", "rejected", "expired", "failed"];
    let ended = eventually(
        async || {
            let mut states = Vec::new();
            for (id, n) in &held {
                states.push((*n, a.action(id).await));
            }
            states
        },
        |s: &Vec<(u64, Value)>| {
            s.iter()
                .all(|(_, v)| finals.contains(&v["state"].as_str().unwrap_or("")))
        },
    )
    .await;
    let counts = forwarded_counts(&upstream);
    for (n, view) in &ended {
        let sent = counts.get(n).copied().unwrap_or(0);
        let state = view["state"].as_str().unwrap_or("");
        match fate(*n) {
            Fate::Approve if state == "completed" => assert_eq!(sent, 1, "approved {n}"),
            Fate::Approve => {
                assert_eq!(
                    (state, view["result"]["reason"].as_str()),
                    ("failed", Some("forward_interrupted")),
                    "approved {n}: {view}"
                );
                assert!(sent <= 1, "approved {n} sent {sent} times");
            }
            Fate::Reject => assert_eq!((state, sent), ("rejected", 0), "rejected {n}"),
            Fate::Expire => assert_eq!((state, sent), ("expired", 0), "expired {n}"),
        }
    }
    let completed = ended
        .iter()
        .filter(|(_, v)| v["state"] == "completed")
        .count();
    assert!(
        completed >= 95,
        "nearly every approved call completes: {completed} of 100"
    );
    // The agents that kept their connection got the right answer.
    for agent in agents {
        let (n, answer) = agent.await.unwrap();
        let Some((status, body)) = answer else {
            continue;
        };
        match (fate(n), status) {
            (_, 202) => assert_eq!(body["state"], "pending", "{n}"),
            (Fate::Approve, s) => assert!(s == 201 || s == 502, "approved {n}: {s} {body}"),
            (Fate::Reject, s) => assert_eq!(
                (s, body["state"].as_str()),
                (403, Some("rejected")),
                "{n}: {body}"
            ),
            (Fate::Expire, s) => assert_eq!(
                (s, body["state"].as_str()),
                (403, Some("expired")),
                "{n}: {body}"
            ),
        }
    }
    drop(members);
    let out = countersign(&[
        "audit",
        "verify",
        "--config",
        decks[2].config_path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The database goes away mid-run: calls get 503 and nothing is forwarded;
/// once it is back the same process serves again, and every record it
/// acknowledged before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_means_503_and_nothing_forwarded_then_service_resumes() {
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(pg::Server::local)
            .await
            .unwrap(),
    );
    let dsn = tokio::task::spawn_blocking({
        let s = server.clone();
        move || s.fresh_database()
    })
    .await
    .unwrap();
    std::env::set_var("CS_TEST_PG_LOCAL_PASSWORD", &server.password);
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "audit: { store: \"sqlite://audit.db\", busy_timeout: 200ms }",
        &format!("audit: {{ store: \"{dsn}\", password_env: CS_TEST_PG_LOCAL_PASSWORD }}"),
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    let call = || async {
        client()
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .body("{}")
            .send()
            .await
            .unwrap()
    };
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        let r = call().await;
        assert_eq!(r.status(), 201);
        acknowledged.push(action_id(&r));
    }
    let before = upstream.seen().len();

    tokio::task::spawn_blocking({
        let s = server.clone();
        move || s.stop()
    })
    .await
    .unwrap();
    for _ in 0..5 {
        let r = call().await;
        assert_eq!(r.status(), 503, "no durable decision, no forward");
    }
    assert_eq!(
        upstream.seen().len(),
        before,
        "nothing reached the upstream while the store was down"
    );
    let ready = client()
        .get(format!("http://{}/readyz", cs.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    tokio::task::spawn_blocking({
        let s = server.clone();
        move || s.start()
    })
    .await
    .unwrap();
    let back = eventually(async || call().await.status().as_u16(), |s| *s == 201).await;
    assert_eq!(
        back, 201,
        "the same process serves again once the database is back"
    );
    let admin = Admin::of(&cs);
    for id in &acknowledged {
        assert_eq!(
            admin.action(id).await["state"],
            "completed",
            "acknowledged {id} is still recorded"
        );
    }
    cs.stop().await;
    let out = countersign(&[
        "audit",
        "verify",
        "--config",
        d.config_path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The cluster's blocking client is closed off the async threads.
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
