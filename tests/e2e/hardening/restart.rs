//! A restart (or another process of a fleet) trusts only what the chain
//! protects: edited held requests, edited index rows and calls cut off by a
//! crash never lead to an unapproved or repeated forward.

use crate::cli::{spawn_serve, HOLD_FOR_ALICE_AND_BOB};
use crate::holds::Admin;
use crate::support::*;

/// Holds one payout for alice and bob, then makes one more call so the
/// held action's records are not the newest in the chain.
async fn hold_one(proxy: &str) -> String {
    let resp = client()
        .post(format!("http://{proxy}/v1/payouts"))
        .body(r#"{"amount": 9000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = action_id(&resp);
    let later = client()
        .post(format!("http://{proxy}/v1/payouts"))
        .body(r#"{"amount": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(later.status(), 202);
    id
}

/// Edits the file by hand: `statement` must change exactly one row (an
/// edit that finds nothing would leave the test testing nothing).
fn sql(d: &Deployment, statement: &str, args: &[&dyn rusqlite::ToSql]) {
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    assert_eq!(conn.execute(statement, args).unwrap(), 1, "{statement}");
}

/// A call held by a `serve` process (the two-approver policy) that was
/// then killed: the upstream, the deployment and the action id.
async fn held_by_a_stopped_process() -> (Upstream, Deployment, String) {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_AND_BOB,
        "hold: { wait: 50ms }\nlog: { format: json }\n",
    );
    let cs = spawn_serve(&d);
    let id = hold_one(&cs.proxy).await;
    drop(cs);
    (upstream, d, id)
}

/// The decided record of `id`: (seq, time, payload text).
fn decided(d: &Deployment, id: &str) -> (i64, String, String) {
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    conn.query_row(
        "SELECT seq, time, payload FROM records WHERE action_id = ?1 AND kind = 'decided'",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_held_request_is_never_forwarded_after_a_restart() {
    // 9000 in the held body becomes 9999; once as a plain edit, once with
    // the edited record's own hash recomputed as an informed attacker would.
    for recompute_hash in [false, true] {
        let (upstream, d, id) = held_by_a_stopped_process().await;

        let (seq, time, payload) = decided(&d, &id);
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let forged = payload.replace(&b64(r#"{"amount": 9000}"#), &b64(r#"{"amount": 9999}"#));
        assert_ne!(forged, payload, "the held body is in the decided record");
        sql(
            &d,
            "UPDATE records SET payload = ?1 WHERE seq = ?2",
            &[&forged, &seq],
        );
        if recompute_hash {
            let prev: String = rusqlite::Connection::open(d.db_path())
                .unwrap()
                .query_row("SELECT prev_hash FROM records WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })
                .unwrap();
            let hash =
                countersign::audit::record::chain_hash(seq, &time, &id, "decided", &prev, &forged);
            sql(
                &d,
                "UPDATE records SET hash = ?1 WHERE seq = ?2",
                &[&hash, &seq],
            );
        }

        let cs = spawn_serve(&d);
        let a = Admin {
            url: format!("http://{}", cs.admin),
        };
        let (status, body) = a.review(&id, "alice", "approve").await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("do not verify"),
            "{body}"
        );
        let ready = eventually(
            async || readyz(&cs.admin).await,
            |r| {
                !r["store"]["tampered_actions"]
                    .as_array()
                    .unwrap()
                    .is_empty()
            },
        )
        .await;
        // (With a recomputed hash the break sits between this record and the
        // next one, so the action after it is flagged too.)
        let flagged = ready["store"]["tampered_actions"].as_array().unwrap();
        assert!(flagged.contains(&serde_json::json!(id)), "{ready}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            upstream.seen().is_empty(),
            "nothing may reach the upstream: {:?}",
            upstream.seen()
        );
        let out = countersign(&[
            "audit",
            "verify",
            "--config",
            d.config_path().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "audit verify names the edit");
        // A recomputed hash moves the break to the next record's link.
        let bad = if recompute_hash { seq + 1 } else { seq };
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("seq {bad}")),
            "{out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_row_flipped_back_to_pending_is_not_obeyed() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_AND_BOB,
        "hold: { wait: 50ms }\nlog: { format: json }\n",
    );
    let cs = spawn_serve(&d);
    let id = hold_one(&cs.proxy).await;
    let a = Admin {
        url: format!("http://{}", cs.admin),
    };
    assert_eq!(a.review(&id, "alice", "reject").await.0, 200);
    // A list writes the index rows kept back: the row to edit is on disk,
    // and the index is not behind the records at the next start.
    assert!(!a.pending().await.contains(&id));
    drop(cs);
    sql(
        &d,
        "UPDATE actions SET state = 'pending' WHERE action_id = ?1",
        &[&id],
    );

    let cs = spawn_serve(&d);
    let a = Admin {
        url: format!("http://{}", cs.admin),
    };
    assert!(
        !a.pending().await.contains(&id),
        "the index row is rebuilt from the records at start"
    );
    assert_eq!(a.action(&id).await["state"], "rejected");
    let (status, body) = a.review(&id, "bob", "approve").await;
    assert_eq!(status, 409, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(upstream.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_call_cut_off_by_a_crash_is_marked_interrupted_not_resent() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "log: { format: json }\n");
    // The upstream answers /slow after 3 s; the route waits for it.
    let yaml = std::fs::read_to_string(d.config_path())
        .unwrap()
        .replace("timeout: 1s\n", "timeout: 10s\n");
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = spawn_serve(&d);
    let proxy = cs.proxy.clone();
    let call = tokio::spawn(async move {
        client()
            .post(format!("http://{proxy}/slow"))
            .body("{}")
            .send()
            .await
    });
    let db = d.db_path();
    let decided = eventually(
        async || {
            records(&db)
                .into_iter()
                .filter(|r| r.2 == "decided")
                .count()
        },
        |n| *n == 1,
    )
    .await;
    assert_eq!(decided, 1);
    let id = records(&db)
        .into_iter()
        .find(|r| r.2 == "decided")
        .unwrap()
        .1;
    // The upstream has the call (it records it on arrival, then sleeps).
    let arrived = eventually(async || upstream.seen().len(), |n| *n == 1).await;
    assert_eq!(arrived, 1);
    drop(cs); // SIGKILL while the upstream is still working on it
    assert!(
        call.await.unwrap().is_err(),
        "the agent lost its connection"
    );

    let cs = spawn_serve(&d);
    let failed = payload_of(&db, &id, "failed");
    assert_eq!(failed["reason"], "forward_interrupted", "{failed}");
    assert_eq!(failed["previous_state"], "allowed");
    let out = countersign(&[
        "audit",
        "list",
        "--state",
        "failed",
        "--config",
        d.config_path().to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "{out:?}"
    );
    // More than one sweep of the restarted process: still sent once.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    drop(cs);
    assert_eq!(
        upstream.seen().len(),
        1,
        "sent once, never again after the restart: {:?}",
        upstream.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_response_durability_records_the_result_before_the_agent_sees_it() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "busy_timeout: 200ms }",
        "busy_timeout: 200ms, result_durability: before_response }",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    for _ in 0..20 {
        let resp = client()
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let id = action_id(&resp);
        // Read at once, from another connection: the result is already there.
        assert_eq!(kinds_of(&d.db_path(), &id), ["decided", "completed"]);
    }
    cs.stop().await;
}

/// The SQLite writer keeps the action index's rows back for a while
/// (`audit.index_lag`); the records are committed at once. Killed before
/// it wrote them, nothing is lost: `audit list` reads the newest actions
/// from the records, and a restart rebuilds their rows. (The expiry sweep
/// may write the rows within a second, before the kill: the test removes
/// whatever was written, leaving the file as a crash that lost them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_not_yet_indexed_are_listed_after_a_kill_and_a_restart() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "log: { format: json }\n");
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    let config = config.replace(
        "busy_timeout: 200ms }",
        "busy_timeout: 200ms, index_lag: 1s }",
    );
    assert!(config.contains("index_lag: 1s"), "{config}");
    std::fs::write(d.config_path(), config).unwrap();
    let cs = spawn_serve(&d);
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = client()
            .post(format!("http://{}/v1/payouts", cs.proxy))
            .header("x-agent-id", "ap-agent-7")
            .body(format!("{{\"amount\": {i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        ids.push(action_id(&resp));
    }
    drop(cs); // SIGKILL, long before the index lag is over

    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    conn.execute("DELETE FROM actions", []).unwrap();
    let indexed: i64 = conn
        .query_row("SELECT count(*) FROM actions", [], |r| r.get(0))
        .unwrap();
    let decided: i64 = conn
        .query_row(
            "SELECT count(*) FROM records WHERE kind = 'decided'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    assert_eq!(
        (indexed, decided),
        (0, 3),
        "the rows are gone, the records are not"
    );

    // The CLI, with the server down: every action, from the records.
    let config = d.config_path();
    let list = |extra: &[&str]| audit_list_ids(&config, extra);
    let mut want = ids.clone();
    want.sort();
    let mut listed = list(&[]);
    listed.sort();
    assert_eq!(listed, want);
    // With a filter and a limit, as the index would answer.
    assert_eq!(list(&["--limit", "1"]), vec![ids[2].clone()]);
    let mut low = list(&["--risk", "low"]);
    low.sort();
    assert_eq!(low, want);
    assert_eq!(list(&["--state", "denied"]), Vec::<String>::new());

    // Restarted: the rows are rebuilt, and the admin API lists them all.
    let cs = spawn_serve(&d);
    let list = admin_json(&format!("http://{}/v1/actions", cs.admin)).await;
    let listed = list["actions"].as_array().expect("an `actions` list");
    for id in &ids {
        assert!(
            listed.iter().any(|a| a["action_id"] == id.as_str()),
            "{id} missing: {list}"
        );
    }
    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    let indexed: i64 = conn
        .query_row("SELECT count(*) FROM actions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(indexed, 3, "the restart rebuilt the rows from the records");
}

/// A SQLite record has one owning process: a second `serve` on the same
/// file (the new pod of a rolling update on a shared volume) would mark the
/// first one's running forwards interrupted. It stops at once, naming the
/// owner; once the owner stops, a new process takes the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_record_is_refused_while_the_first_serves() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "log: { format: json }\n");
    let first = spawn_serve(&d);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config", d.config_path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while second.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = second.kill();
            panic!("a second process serves the same SQLite record");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.child.id())) && err.contains("audit.db.lock"),
        "names the owner: {err}"
    );
    // The first one kept serving.
    let resp = client()
        .get(format!("http://{}/v1/payouts", first.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    drop(first);
    // Gone (killed): the kernel let go of its lock with it.
    let cs = d.start().await;
    cs.stop().await;
}

/// An approval counts only with reviewers' signatures behind it. Anyone who
/// can write the file can append an `approved` record (and a forged
/// `reviewed` one) whose chain links, and the next checkpoint would sign
/// it; no one without a reviewer's key can sign the review. Such an action
/// is never forwarded, and `/readyz` lists it as tampered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_without_signed_reviews_behind_it_is_never_forwarded() {
    for with_forged_reviews in [false, true] {
        let (upstream, d, id) = held_by_a_stopped_process().await;

        let (_, time, payload) = decided(&d, &id);
        let digest = serde_json::from_str::<serde_json::Value>(&payload).unwrap()["request_digest"]
            .as_str()
            .unwrap()
            .to_string();
        let conn = rusqlite::Connection::open(d.db_path()).unwrap();
        let (mut seq, mut prev): (i64, String) = conn
            .query_row(
                "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let mut forged = Vec::new();
        if with_forged_reviews {
            for reviewer in ["alice", "bob"] {
                let body = serde_json::json!({"action_id": id, "reviewer": reviewer,
                    "verdict": "approve", "request_digest": digest});
                forged.push((
                    "reviewed",
                    serde_json::json!({"reviewer": reviewer, "verdict": "approve",
                        "request_digest": digest, "key": "hmac", "signed_body": body.to_string(),
                        "webhook_id": format!("msg_forged_{reviewer}"),
                        "webhook_timestamp": "1764460800",
                        "webhook_signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
                ));
            }
        }
        forged.push((
            "approved",
            serde_json::json!({"approvals": ["alice", "bob"], "min": 2}),
        ));
        for (kind, payload) in forged {
            seq += 1;
            let payload = payload.to_string();
            let hash =
                countersign::audit::record::chain_hash(seq, &time, &id, kind, &prev, &payload);
            conn.execute(
                "INSERT INTO records (seq, time, action_id, kind, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![seq, time, id, kind, payload, prev, hash],
            )
            .unwrap();
            prev = hash;
        }
        conn.execute(
            "UPDATE actions SET state = 'approved', last_seq = ?2 WHERE action_id = ?1",
            rusqlite::params![id, seq],
        )
        .unwrap();
        drop(conn);

        let cs = spawn_serve(&d);
        let ready = eventually(
            async || readyz(&cs.admin).await,
            |r| {
                r["store"]["tampered_actions"]
                    .as_array()
                    .is_some_and(|a| a.contains(&serde_json::json!(id)))
            },
        )
        .await;
        assert_eq!(ready["store"]["tampered_actions"], serde_json::json!([id]));
        // The sweep runs every second: give it a few chances.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        assert!(
            upstream.seen().is_empty(),
            "a forged approval reached the upstream (forged reviews: {with_forged_reviews}): {:?}",
            upstream.seen()
        );
        drop(cs);
        // The auditor's check says so too, at the forged record.
        let out = countersign(&[
            "audit",
            "verify",
            "--config",
            d.config_path().to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let says = if with_forged_reviews {
            "does not verify"
        } else {
            "a forged approval"
        };
        assert!(err.contains(says), "{err}");
    }
}
