//! See the module list in `hardening/mod.rs`. Reviews bound to one action
//! and one reviewer identity, signed reads, reviewer key kinds, the admin
//! token, and the policy checks that keep a bad decision from reaching a
//! worker.

use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::holds::Admin;
use crate::support::*;
use countersign::approval::keys::SigningKey;

/// Holds every call under /v1 for alice or bob (one approval); allows the rest.
const HOLD_FOR_ALICE_OR_BOB: &str = r#"package countersign
import rego.v1
default decision := {"action": "allow", "risk": "low"}
decision := {"action": "hold", "risk": "high", "reasons": ["held"], "rules": ["test.hold"],
  "approval": {"reviewers": ["alice", "bob"], "min": 1}} if startswith(input.request.path, "/v1/")
"#;

/// A held call as agent `agent` acting for `on_behalf_of`; the same body
/// and evidence every time, so every such call has the same digest.
async fn held_call(
    proxy: std::net::SocketAddr,
    agent: &[u8],
    on_behalf_of: &[u8],
) -> reqwest::Response {
    let value = |v: &[u8]| reqwest::header::HeaderValue::from_bytes(v).unwrap();
    client()
        .post(format!("http://{proxy}/v1/payouts"))
        .header("content-type", "application/json")
        .header("x-agent-id", value(agent))
        .header("x-agent-on-behalf-of", value(on_behalf_of))
        .header("x-evidence-invoice", "INV-9")
        .body(r#"{"amount": 20000, "to": "Globex"}"#)
        .send()
        .await
        .unwrap()
}

/// The review a reviewer signs, bound to `action_id`.
fn review_body(action_id: &str, reviewer: &str, verdict: &str, digest: &Value) -> Value {
    json!({"action_id": action_id, "reviewer": reviewer, "verdict": verdict,
           "comment": format!("{verdict} by {reviewer}"), "request_digest": digest})
}

fn refusals(d: &Deployment, id: &str) -> Vec<Value> {
    records(&d.db_path())
        .into_iter()
        .filter(|r| r.1 == id && r.2 == "review_refused")
        .map(|r| r.3)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_cannot_approve_for_themselves_under_another_spelling_or_alias() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_OR_BOB,
        "hold: { wait: 50ms }\n",
    );
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "alice: { key_env: CS_TEST_KEY_ALICE,",
        "alice: { key_env: CS_TEST_KEY_ALICE, aliases: [\"alice@corp\"],",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    let admin = Admin::of(&cs);

    // (agent id, on behalf of): each is alice, written another way.
    let variants: [(&str, &[u8], &[u8]); 6] = [
        ("capitalised", b"ap-agent-7", b"Alice"),
        ("upper case agent", b"ALICE", b"carol"),
        (
            "no-break spaces around it",
            b"ap-agent-7",
            "\u{A0}alice\u{A0}".as_bytes(),
        ),
        (
            "full-width letters",
            b"ap-agent-7",
            "\u{FF21}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}".as_bytes(),
        ),
        (
            "a zero-width space inside",
            "al\u{200B}ice".as_bytes(),
            b"carol",
        ),
        ("the configured alias", b"ap-agent-7", b"Alice@Corp"),
    ];
    let mut ids = Vec::new();
    for (what, agent, obo) in variants {
        let resp = held_call(cs.proxy_addr, agent, obo).await;
        assert_eq!(resp.status(), 202, "{what}");
        let id = action_id(&resp);
        let (s, v) = admin.review(&id, "alice", "approve").await;
        assert_eq!(s, 403, "{what}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("party to"),
            "{what}: {v}"
        );
        ids.push((what, id));
    }
    // Somebody else's alice is not ours: without an alias, an email whose
    // local part is `alice` is another person (docs/reviewers.md says why).
    let resp = held_call(cs.proxy_addr, b"ap-agent-7", b"alice@elsewhere").await;
    let elsewhere = action_id(&resp);
    let (s, v) = admin.review(&elsewhere, "alice", "approve").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    // Alice may still reject her own action (refusing is always allowed),
    // and bob, who is no party to it, may approve another.
    let (s, _) = admin.review(&ids[0].1, "alice", "reject").await;
    assert_eq!(s, 200, "a party may reject");
    let (s, v) = admin.review(&ids[1].1, "bob", "approve").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");

    eventually(async || upstream.seen().len(), |n| *n == 2).await;
    assert_eq!(
        upstream.seen().len(),
        2,
        "only bob's and the elsewhere approvals were forwarded"
    );
    cs.stop().await;
    for (what, id) in &ids {
        let refused = refusals(&d, id);
        assert_eq!(refused.len(), 1, "{what}: {refused:?}");
        assert_eq!(refused[0]["status"], 403, "{what}");
        assert_eq!(refused[0]["reason"], "not_allowed", "{what}");
        assert_eq!(refused[0]["key"], "hmac", "{what}: the signature verified");
    }
    let alias = &refusals(&d, &ids[5].1)[0];
    assert!(
        alias["error"].as_str().unwrap().contains("`alice@corp`"),
        "the refusal names the alias that matched: {alias}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_signed_for_one_action_cannot_approve_its_twin() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_OR_BOB,
        "hold: { wait: 50ms }\n",
    );
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    let a = action_id(&held_call(cs.proxy_addr, b"ap-agent-7", b"carol").await);
    let b = action_id(&held_call(cs.proxy_addr, b"ap-agent-7", b"carol").await);
    let digest = admin.action(&a).await["request_digest"].clone();
    assert_eq!(
        digest,
        admin.action(&b).await["request_digest"],
        "twins: the same digest"
    );

    // Bob's approval of A, delivered to B first (say, by a hostile relay).
    let for_a = review_body(&a, "bob", "approve", &digest);
    let (s, v, _) = admin
        .review_signed(&b, key_of("bob"), &for_a, None, None)
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&a), "{v}");
    // A body that does not say which action it reviews is not a review.
    let mut unbound = for_a.clone();
    unbound.as_object_mut().unwrap().remove("action_id");
    let (s, _, _) = admin
        .review_signed(&b, key_of("bob"), &unbound, None, None)
        .await;
    assert_eq!(s, 400);

    assert_eq!(admin.action(&b).await["state"], "pending");
    assert!(upstream.seen().is_empty(), "B was not forwarded");
    // A review bound to A approves A.
    let (s, v, _) = admin
        .review_signed(&a, key_of("bob"), &for_a, None, None)
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    eventually(async || upstream.seen().len(), |n| *n == 1).await;
    assert_eq!(admin.action(&b).await["state"], "pending");
    assert_eq!(upstream.seen().len(), 1, "A only");
    cs.stop().await;

    assert!(!kinds_of(&d.db_path(), &b).contains(&"reviewed".to_string()));
    let refused = refusals(&d, &b);
    assert_eq!(refused[0]["status"], 409);
    assert_eq!(refused[0]["key"], "hmac");
    let signed: Value = serde_json::from_str(refused[0]["signed_body"].as_str().unwrap()).unwrap();
    assert_eq!(
        signed["action_id"],
        a.as_str(),
        "the record keeps what was signed"
    );
    assert_eq!(refused[1]["status"], 400);
    let reviewed = payload_of(&d.db_path(), &a, "reviewed");
    assert_eq!(reviewed["action_id"], a.as_str());
    assert!(reviewed["webhook_signature"]
        .as_str()
        .unwrap()
        .starts_with("v1,"));
}

/// A signed read's headers: `key` signs `content` (the path, normally).
fn signed_read(key: &str, content: &str) -> Vec<(&'static str, String)> {
    SigningKey::parse(key)
        .unwrap()
        .headers(content.as_bytes())
        .unwrap()
}

async fn read_as(admin: &Admin, path: &str, reviewer: &str, headers: &[(&str, String)]) -> u16 {
    let mut req = client()
        .get(format!("{}{path}", admin.url))
        .header("x-countersign-reviewer", reviewer);
    for (n, v) in headers {
        req = req.header(*n, v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_read_opens_only_the_action_it_names_and_only_once() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_OR_BOB,
        "hold: { wait: 50ms }\n",
    );
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    let a = action_id(&held_call(cs.proxy_addr, b"ap-agent-7", b"carol").await);
    let b = action_id(&held_call(cs.proxy_addr, b"ap-agent-7", b"carol").await);
    let (path_a, path_b) = (format!("/v1/actions/{a}"), format!("/v1/actions/{b}"));

    let read_a = signed_read(key_of("alice"), &path_a);
    assert_eq!(read_as(&admin, &path_a, "alice", &read_a).await, 200);
    // The same message again, for the same action: a replay.
    assert_eq!(read_as(&admin, &path_a, "alice", &read_a).await, 409);
    // A fresh read signed for A, sent for B: the signature covers A's path.
    let fresh_a = signed_read(key_of("alice"), &path_a);
    assert_eq!(read_as(&admin, &path_b, "alice", &fresh_a).await, 401);
    // The old form, signed over an empty body, opens nothing.
    let empty = signed_read(key_of("alice"), "");
    assert_eq!(read_as(&admin, &path_b, "alice", &empty).await, 401);
    // Signed by alice but sent as bob.
    let as_bob = signed_read(key_of("alice"), &path_b);
    assert_eq!(read_as(&admin, &path_b, "bob", &as_bob).await, 401);
    // Dave is not asked to decide: the same answer as for no such action.
    let dave = signed_read(key_of("dave"), &path_b);
    assert_eq!(read_as(&admin, &path_b, "dave", &dave).await, 404);
    let read_b = signed_read(key_of("bob"), &path_b);
    assert_eq!(read_as(&admin, &path_b, "bob", &read_b).await, 200);
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_reviewer_approves_with_the_review_tool_and_the_record_proves_it() {
    let upstream = Upstream::start().await;
    let policy = HOLD_FOR_ALICE_OR_BOB.replace("[\"alice\", \"bob\"]", "[\"erin\"]");
    let d = Deployment::new(&upstream.url(), &policy, "hold: { wait: 50ms }\n");
    // keygen, the real binary.
    let prefix = d.dir.path().join("erin");
    let out = countersign(&["keygen", "--reviewer", "--out", prefix.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key_file, pub_file) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    let secret = std::fs::read_to_string(&key_file).unwrap();
    let public = std::fs::read_to_string(&pub_file).unwrap();
    assert!(secret.starts_with("whsk_") && public.starts_with("whpk_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the secret is readable by its owner only"
        );
    }
    let again = countersign(&["keygen", "--reviewer", "--out", prefix.to_str().unwrap()]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing key is never overwritten"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), secret);
    // Nor by a checkpoint key (keygen without --reviewer) at the same prefix.
    let checkpoint_key = countersign(&["keygen", "--out", prefix.to_str().unwrap()]);
    assert_eq!(checkpoint_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&checkpoint_key.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), secret);

    // The config holds the public half only.
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "reviewers:\n",
        "reviewers:\n  erin: { key_file: erin.pub }\n",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    let resp = held_call(cs.proxy_addr, b"ap-agent-7", b"carol").await;
    assert_eq!(resp.status(), 202);
    let id = action_id(&resp);

    // An HMAC signature made with the public key's bytes as a shared secret
    // is not erin's signature.
    let digest = admin.action(&id).await["request_digest"].clone();
    let (s, v, _) = admin
        .review_signed(
            &id,
            &public.trim().replace("whpk_", "whsec_"),
            &review_body(&id, "erin", "approve", &digest),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("v1a"), "{v}");

    let admin_url = admin.url.clone();
    let (id2, key_path) = (id.clone(), key_file.clone());
    let out = tokio::task::spawn_blocking(move || {
        countersign(&[
            "review",
            &id2,
            "--admin",
            &admin_url,
            "--reviewer",
            "erin",
            "--key-file",
            key_path.to_str().unwrap(),
            "--approve",
            "--yes",
            "--comment",
            "checked with Globex",
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is now approved"));
    eventually(async || upstream.seen().len(), |n| *n == 1).await;
    assert_eq!(upstream.seen().len(), 1, "forwarded once approved");
    let view = eventually(
        async || admin.action(&id).await,
        |v| v["state"] == "completed",
    )
    .await;
    assert_eq!(view["state"], "completed", "{view}");
    assert_eq!(view["reviews"][0]["key"], "ed25519");
    cs.stop().await;

    // A third party checks the review from the record and the public key
    // alone, with an Ed25519 implementation of its own choosing.
    let reviewed = payload_of(&d.db_path(), &id, "reviewed");
    assert_eq!(reviewed["key"], "ed25519");
    let signature = reviewed["webhook_signature"].as_str().unwrap();
    let signature = signature
        .strip_prefix("v1a,")
        .expect("an Ed25519 signature");
    let signed_body = reviewed["signed_body"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(signed_body).unwrap()["action_id"],
        id.as_str()
    );
    let message = format!(
        "{}.{}.{}",
        reviewed["webhook_id"].as_str().unwrap(),
        reviewed["webhook_timestamp"].as_str().unwrap(),
        signed_body
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let public_bytes: [u8; 32] = b64
        .decode(public.trim().trim_start_matches("whpk_"))
        .unwrap()
        .try_into()
        .unwrap();
    let signature_bytes: [u8; 64] = b64.decode(signature).unwrap().try_into().unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&public_bytes)
        .unwrap()
        .verify_strict(
            message.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&signature_bytes),
        )
        .expect("the recorded signature verifies from the record alone");
    let refused = refusals(&d, &id);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]["key"].is_null() && refused[0]["signed_body"].is_null(),
        "an unverified attempt keeps only a digest of its body: {}",
        refused[0]
    );
    assert!(refused[0]["body_sha256"].is_string());
}

#[test]
fn a_reviewer_secret_in_the_config_is_refused() {
    let d = Deployment::new("http://127.0.0.1:1", ALLOW_ALL, "");
    let prefix = d.dir.path().join("erin");
    let out = countersign(&["keygen", "--reviewer", "--out", prefix.to_str().unwrap()]);
    assert!(out.status.success());
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "reviewers:\n",
        "reviewers:\n  erin: { key_file: erin.key }\n",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("countersign.yaml: reviewers.erin"), "{err}");
    assert!(err.contains("whsk_") && err.contains("whpk_"), "{err}");
    assert!(
        !err.contains(
            std::fs::read_to_string(prefix.with_extension("key"))
                .unwrap()
                .trim()
        ),
        "the error never shows the secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_exact_admin_token_opens_the_actions_api() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    let url = format!("http://{}/v1/actions", cs.admin_addr);
    let status = async |auth: Option<&str>| {
        let mut req = client().get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send().await.unwrap().status().as_u16()
    };
    let right = format!("Bearer {ADMIN_TOKEN}");
    for wrong in [
        None,
        Some("Bearer "),
        Some("Bearer test-admin-toke"),
        Some("Bearer test-admin-tokenX"),
        Some("Bearer TEST-ADMIN-TOKEN"),
        Some("Basic dGVzdC1hZG1pbi10b2tlbg=="),
        Some(ADMIN_TOKEN),
    ] {
        assert_eq!(status(wrong).await, 401, "{wrong:?}");
    }
    assert_eq!(status(Some(&right)).await, 200);
    cs.stop().await;
}

/// An admin token file left empty (a Secret never filled in) is refused by
/// `check` and at start: its empty token would match a request that sends
/// none, and the actions API would be open to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_admin_token_file_is_refused() {
    let d = Deployment::new("http://127.0.0.1:1", ALLOW_ALL, "");
    std::fs::write(d.dir.path().join("admin.token"), " \n").unwrap();
    d.edit_config("token_env: CS_TEST_ADMIN_TOKEN", "token_file: admin.token");
    let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("admin.token is empty"), "{err}");
    let config = countersign::config::Config::load(&d.config_path()).unwrap();
    let started = countersign::app::start(config).await;
    let e = started.err().expect("an empty token file does not start");
    assert!(e.to_string().contains("is empty"), "{e}");
}

#[test]
fn check_fails_on_a_policy_that_errors_on_every_call_or_a_missing_entrypoint() {
    let run = |d: &Deployment| {
        std::env::set_var("CS_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
        countersign(&["check", "--config", d.config_path().to_str().unwrap()])
    };
    let always_fails = "package countersign\nimport rego.v1\n\
        decision := {\"action\": \"allow\", \"risk\": \"low\", \"reasons\": [sprintf(\"%v\", [x])]} if { x := 1 / 0 }\n";
    let d = Deployment::new("http://127.0.0.1:1", always_fails, "");
    let out = run(&d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("countersign.yaml: policy"), "{err}");
    assert!(
        err.contains("data.countersign.decision"),
        "names the policy: {err}"
    );
    assert!(err.contains("divide by zero"), "says what fails: {err}");

    let d = Deployment::new(
        "http://127.0.0.1:1",
        ALLOW_ALL,
        "policy: { entrypoint: data.countersign.desicion }\n",
    );
    let out = run(&d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("policy.entrypoint"), "{err}");
    assert!(err.contains("data.countersign.desicion"), "{err}");

    // Undefined for the probe is not an error: this policy decides POSTs only.
    let posts_only = "package countersign\nimport rego.v1\n\
        decision := {\"action\": \"allow\", \"risk\": \"low\"} if input.request.method == \"POST\"\n";
    let d = Deployment::new("http://127.0.0.1:1", posts_only, "");
    let out = run(&d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Holds /v1/huge for an expiry no clock can hold, /v1/long for eight days;
/// allows the rest.
const HUGE_EXPIRY: &str = r#"package countersign
import rego.v1
default decision := {"action": "allow", "risk": "low"}
decision := {"action": "hold", "risk": "high", "approval": {"reviewers": ["alice"], "expires_in": "500000000000y"}} if input.request.path == "/v1/huge"
decision := {"action": "hold", "risk": "high", "approval": {"reviewers": ["alice"], "expires_in": "8d"}} if input.request.path == "/v1/long"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_past_hold_max_expiry_fails_closed_and_the_proxy_keeps_serving() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), HUGE_EXPIRY, "hold: { wait: 50ms }\n");
    let cs = d.start().await;
    let proxy = cs.proxy_addr;
    for path in ["/v1/huge", "/v1/long", "/v1/huge"] {
        let resp = client()
            .post(format!("http://{proxy}{path}"))
            .body("pay")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        let id = action_id(&resp);
        let body: Value = resp.json().await.unwrap();
        assert!(
            body.to_string().contains("hold.max_expiry"),
            "{path}: {body}"
        );
        wait_for_records(&d.db_path(), &id, 1).await;
        let failed = payload_of(&d.db_path(), &id, "failed");
        assert_eq!(failed["reason"], "policy_contract", "{path}");
    }
    let resp = client()
        .post(format!("http://{proxy}/v1/fine"))
        .body("pay")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "the proxy still serves");
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| s.path_and_query == "/v1/fine"),
        "nothing held was forwarded"
    );
    cs.stop().await;

    // Raised in the config, eight days is a valid hold.
    let d = Deployment::new(
        &upstream.url(),
        HUGE_EXPIRY,
        "hold: { wait: 50ms, max_expiry: 30d }\n",
    );
    let cs = d.start().await;
    let resp = client()
        .post(format!("http://{}/v1/long", cs.proxy_addr))
        .body("pay")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = action_id(&resp);
    let expires = admin_json(&format!("http://{}/v1/actions/{id}", cs.admin_addr)).await["hold"]
        ["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let expires = humantime::parse_rfc3339_weak(&expires).unwrap();
    let days = expires.duration_since(SystemTime::now()).unwrap().as_secs() / 86_400;
    assert_eq!(days, 7, "eight days from now, less a moment");
    cs.stop().await;
}

/// One key under two reviewer names would let one person meet a quorum of
/// two alone: `check` refuses it.
#[test]
fn one_key_for_two_reviewers_is_refused() {
    let d = Deployment::new("http://127.0.0.1:1", ALLOW_ALL, "");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "bob: { key_env: CS_TEST_KEY_BOB,",
        "bob: { key_env: CS_TEST_KEY_ALICE,",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reviewers.") && err.contains("same key"),
        "{err}"
    );

    // Different texts, one HMAC key: a short secret and the same followed by
    // a zero byte (HMAC pads with zeros); a long secret and its SHA-256
    // (HMAC hashes keys longer than its block).
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bob = b64
        .decode(key_of("bob").trim_start_matches("whsec_"))
        .unwrap();
    let long: Vec<u8> = (0..100u8).collect();
    let padded = [bob.clone(), vec![0]].concat();
    let hashed = sha2::Sha256::digest(&long).to_vec();
    for (first, second) in [(&bob, &padded), (&long, &hashed)] {
        let d = Deployment::new("http://127.0.0.1:1", ALLOW_ALL, "");
        for (file, key) in [("bob.key", first), ("carol.key", second)] {
            std::fs::write(
                d.dir.path().join(file),
                format!("whsec_{}", b64.encode(key)),
            )
            .unwrap();
        }
        d.edit_config(
            "bob: { key_env: CS_TEST_KEY_BOB,",
            "bob: { key_file: bob.key,",
        );
        d.edit_config(
            "carol: { key_env: CS_TEST_KEY_CAROL,",
            "carol: { key_file: carol.key,",
        );
        let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("reviewers.carol") && err.contains("same key as reviewers.bob"),
            "{err}"
        );
    }
}
