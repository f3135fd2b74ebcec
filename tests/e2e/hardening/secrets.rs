//! Credentials and redacted values never reach the record, the log or the
//! agent. Every secret here is a fresh canary; each test first checks the
//! canary really went where it should (the upstream got the credential, the
//! policy saw the header), then that it is nowhere else: not in what the
//! agent got back, not anywhere in the SQLite files, not in the system log,
//! not in a notice.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::holds::Admin;
use crate::proxy::contains;
use crate::support::*;

/// A value found nowhere unless it leaked.
fn canary(what: &str) -> String {
    let id = countersign::audit::record::new_action_id();
    format!("{what}-CANARY-{}", &id[16..])
}

/// Adds the route's `upstream_auth` (header `authorization`, from `env`).
fn with_credential(d: &Deployment, env: &str) {
    d.edit_config(
        "    timeout: 1s\n",
        &format!(
            "    timeout: 1s\n    upstream_auth: {{ header: authorization, value_env: {env} }}\n"
        ),
    );
}

fn assert_nowhere(canaries: &[&str], places: &[(&str, &[u8])]) {
    for c in canaries {
        for (what, bytes) in places {
            assert!(
                !contains(bytes, c.as_bytes()),
                "{c} leaked into {what}: {}",
                String::from_utf8_lossy(bytes)
                    .match_indices(*c)
                    .map(|(i, _)| {
                        let text = String::from_utf8_lossy(bytes);
                        text[i.saturating_sub(80)..(i + 80).min(text.len())].to_string()
                    })
                    .next()
                    .unwrap_or_default()
            );
        }
    }
}

fn header_text(resp: &reqwest::Response) -> String {
    resp.headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

/// Everything the agent got: status line facts, headers and body, and
/// whether the content-length (if any) matched the body.
async fn received(resp: reqwest::Response) -> (u16, String, Vec<u8>) {
    let status = resp.status().as_u16();
    let headers = header_text(&resp);
    let declared = resp
        .headers()
        .get("content-length")
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    let body = resp.bytes().await.unwrap().to_vec();
    if let Some(n) = declared {
        assert_eq!(n, body.len(), "content-length is the body's length");
    }
    (status, headers, body)
}

const HOLD_ECHO_FOR_ALICE: &str = r#"package countersign
import rego.v1
default decision := {"action": "allow", "risk": "low"}
decision := {"action": "hold", "risk": "high", "approval": {"reviewers": ["alice"], "min": 1}} if {
  contains(input.request.path, "held")
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_credential_never_comes_back_to_the_agent_or_into_the_record() {
    let upstream = Upstream::start().await;
    let cred = canary("CREDENTIAL");
    std::env::set_var("CS_TEST_SECRETS_CRED_ECHO", format!("Bearer {cred}"));
    let d = Deployment::new(
        &upstream.url(),
        HOLD_ECHO_FOR_ALICE,
        "hold: { wait: 10s }\n",
    );
    with_credential(&d, "CS_TEST_SECRETS_CRED_ECHO");
    let cs = d.start().await;
    let proxy = cs.proxy_addr;
    let c = client();
    let mut ids = Vec::new();
    let mut answers = Vec::new();
    // Read whole; streamed in 5-byte chunks, so the credential is split
    // across chunks; streamed because it is over 256 KiB (with a length).
    for path in ["/echo", "/echo?chunk=5", "/echo?pad=300000"] {
        let resp = c
            .get(format!("http://{proxy}{path}"))
            .header("authorization", "Bearer the-agent-cannot-set-this")
            .send()
            .await
            .unwrap();
        ids.push(action_id(&resp));
        let (status, headers, body) = received(resp).await;
        assert_eq!(status, 200, "{path}");
        let echoed: Value = serde_json::from_slice(&body).expect("the echo is still JSON");
        assert_eq!(echoed["headers"]["authorization"], "[redacted]", "{path}");
        assert!(
            headers.contains("x-echo-authorization: [redacted]"),
            "{path}: {headers}"
        );
        answers.push((path.to_string(), headers, body));
    }
    // A held call, approved while the agent waits: the answer it gets was
    // kept in memory by the approval, and is scrubbed the same way.
    let held = tokio::spawn(async move {
        client()
            .post(format!("http://{proxy}/echo/held"))
            .body("held body")
            .send()
            .await
            .unwrap()
    });
    let admin = Admin::of(&cs);
    let pending = admin.wait_pending(1).await;
    assert_eq!(admin.review(&pending[0], "alice", "approve").await.0, 200);
    let resp = held.await.unwrap();
    ids.push(action_id(&resp));
    let (status, headers, body) = received(resp).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    answers.push(("/echo/held".into(), headers, body));

    let seen = upstream.seen();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(
            s.headers["authorization"].to_str().unwrap(),
            format!("Bearer {cred}"),
            "the upstream gets the credential, not the agent's header"
        );
        assert_eq!(
            s.headers.get_all("authorization").iter().count(),
            1,
            "the credential replaces the agent's header, never joins it"
        );
        assert_eq!(s.headers["accept-encoding"], "identity");
    }
    for id in &ids {
        wait_for_records(&d.db_path(), id, 2).await;
    }
    cs.stop().await;

    let completed = payload_of(&d.db_path(), &ids[0], "completed");
    assert_eq!(
        completed["response"]["body"]["json"]["headers"]["authorization"], "[redacted]",
        "the record kept the echo, scrubbed: {completed}"
    );
    let record = record_bytes(&d);
    let mut places: Vec<(&str, &[u8])> = vec![("the record", &record)];
    for (path, headers, body) in &answers {
        places.push((path, headers.as_bytes()));
        places.push((path, body));
    }
    assert_nowhere(&[&cred], &places);
}

/// Reasons and rules built from the request's secrets.
const ECHOING_POLICY: &str = r#"package countersign
import rego.v1
auth := object.get(input.request.headers, "authorization", "none")
key := object.get(input.request.query, "api_key", ["none"])[0]
session := object.get(input.request.headers, "cookie", "none")
verdict := "hold" if {
  contains(input.request.path, "held")
} else := "deny"
decision := {"action": verdict, "risk": "high",
  "reasons": [sprintf("auth was %s", [auth]), sprintf("key was %s", [key]), sprintf("session %s", [substring(session, 8, -1)]), sprintf("token %s", [trim_prefix(auth, "Bearer ")])],
  "rules": [sprintf("rule.%s", [key])],
  "approval": {"reviewers": ["alice"], "min": 1}} if verdict == "hold"
decision := {"action": verdict, "risk": "high",
  "reasons": [sprintf("auth was %s", [auth]), sprintf("key was %s", [key]), sprintf("session %s", [substring(session, 8, -1)]), sprintf("token %s", [trim_prefix(auth, "Bearer ")])],
  "rules": [sprintf("rule.%s", [key])]} if verdict == "deny"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_output_that_echoes_secrets_is_scrubbed_from_the_record_and_the_notice() {
    let upstream = Upstream::start().await;
    let hook = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ECHOING_POLICY,
        &format!(
            "notify:\n  - {{ url: \"{}/hook\", secret_env: CS_TEST_HOOK_SECRET }}\nhold: {{ wait: 50ms }}\n",
            hook.url()
        ),
    );
    let cs = d.start().await;
    let (auth, key, session) = (canary("AUTH"), canary("APIKEY"), canary("SESSION"));
    let mut ids = Vec::new();
    for path in ["/v1/denied", "/v1/held"] {
        let resp = client()
            .post(format!(
                "http://{}{path}?api_key={key}&note=kept",
                cs.proxy_addr
            ))
            .header("authorization", format!("Bearer {auth}"))
            .header("cookie", format!("session={session}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let id = action_id(&resp);
        let status = resp.status().as_u16();
        let answer = resp.text().await.unwrap();
        assert_eq!(
            status,
            if path == "/v1/denied" { 403 } else { 202 },
            "{answer}"
        );
        if path == "/v1/denied" {
            // The agent's own values may come back to the agent.
            assert!(answer.contains(&auth), "the policy did see them: {answer}");
        }
        ids.push(id);
    }
    let notices = eventually(async || hook.seen(), |s| !s.is_empty()).await;
    assert_eq!(notices.len(), 1);
    cs.stop().await;

    for id in &ids {
        let decided = payload_of(&d.db_path(), id, "decided");
        let decision = &decided["decision"];
        assert_eq!(decision["reasons"][0], "auth was [redacted]", "{decided}");
        assert_eq!(decision["reasons"][1], "key was [redacted]");
        assert_eq!(decision["reasons"][2], "session [redacted]");
        assert_eq!(decision["reasons"][3], "token [redacted]");
        assert_eq!(decision["rules"][0], "rule.[redacted]");
        let request = &decided["request"];
        assert_eq!(
            request["query"]["api_key"],
            serde_json::json!(["[redacted]"])
        );
        assert_eq!(request["query"]["note"], serde_json::json!(["kept"]));
        assert!(
            request["url"]
                .as_str()
                .unwrap()
                .ends_with("?api_key=[redacted]&note=kept"),
            "{request}"
        );
        assert_eq!(request["headers"]["authorization"], "[redacted]");
    }
    let notice: Value = serde_json::from_slice(&notices[0].body).unwrap();
    assert_eq!(notice["decision"]["reasons"][1], "key was [redacted]");
    assert!(notice["request"]["url"]
        .as_str()
        .unwrap()
        .ends_with("?api_key=[redacted]&note=kept"));
    let record = record_bytes(&d);
    assert_nowhere(
        &[&auth, &key, &session],
        &[("the record", &record), ("the notice", &notices[0].body)],
    );
}

const ALLOW_OR_HOLD_FOR_ALICE: &str = r#"package countersign
import rego.v1
default decision := {"action": "allow", "risk": "low"}
decision := {"action": "hold", "risk": "high", "approval": {"reviewers": ["alice"], "min": 1}} if {
  contains(input.request.path, "held")
}
decision := {"action": "deny", "risk": "high", "reasons": ["the key was wrong"]} if {
  input.request.query.api_key[0] == "wrong"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_query_values_reach_the_policy_and_the_upstream_but_not_the_record() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_OR_HOLD_FOR_ALICE,
        "hold: { wait: 10s }\n",
    );
    let cs = d.start().await;
    let proxy = cs.proxy_addr;
    let (key, signature, held_key) = (canary("KEY"), canary("SIG"), canary("HELDKEY"));

    let resp = client()
        .get(format!("http://{proxy}/v1/allowed?api_key=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "the policy sees the real value");
    let allowed_path = format!("/v1/allowed?API_KEY={key}&Signature={signature}&note=kept");
    let resp = client()
        .get(format!("http://{proxy}{allowed_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let allowed = action_id(&resp);
    // A name PHP reads as `api_key` is redacted as `api_key` is.
    let php_key = canary("PHPKEY");
    let php_path = format!("/v1/allowed?api.key={php_key}");
    let resp = client()
        .get(format!("http://{proxy}{php_path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let php_allowed = action_id(&resp);

    // Held, then approved in this process: forwarded with the real query.
    let hk = held_key.clone();
    let held = tokio::spawn(async move {
        client()
            .post(format!("http://{proxy}/v1/held?api_key={hk}"))
            .body("{}")
            .send()
            .await
            .unwrap()
    });
    let admin = Admin::of(&cs);
    let pending = admin.wait_pending(1).await;
    assert_eq!(admin.review(&pending[0], "alice", "approve").await.0, 200);
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 201);
    let held_id = action_id(&resp);
    wait_for_records(&d.db_path(), &allowed, 2).await;
    wait_for_records(&d.db_path(), &php_allowed, 2).await;
    wait_for_records(&d.db_path(), &held_id, 5).await;
    cs.stop().await;

    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.path_and_query.clone())
        .collect();
    assert_eq!(
        seen,
        [
            allowed_path.clone(),
            php_path.clone(),
            format!("/v1/held?api_key={held_key}")
        ],
        "the upstream gets the query exactly as sent"
    );
    let decided = payload_of(&d.db_path(), &allowed, "decided");
    assert_eq!(
        decided["request"]["query"]["API_KEY"],
        serde_json::json!(["[redacted]"])
    );
    assert_eq!(
        decided["request"]["query"]["Signature"],
        serde_json::json!(["[redacted]"])
    );
    assert!(decided["request"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/v1/allowed?API_KEY=[redacted]&Signature=[redacted]&note=kept"));
    let held = payload_of(&d.db_path(), &held_id, "decided");
    assert_eq!(
        held["hold"]["forward"]["path_and_query"],
        "/v1/held?api_key=[redacted]"
    );
    assert_eq!(held["hold"]["forward"]["query_redacted"], true);
    let forwarded = payload_of(&d.db_path(), &held_id, "forwarded");
    assert!(forwarded["url"]
        .as_str()
        .unwrap()
        .ends_with("?api_key=[redacted]"));
    let record = record_bytes(&d);
    assert_nowhere(
        &[&key, &signature, &held_key, &php_key],
        &[("the record", &record)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_log_and_a_restart_never_see_the_canaries() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ECHOING_POLICY.replace("\"deny\"", "\"allow\"").as_str(),
        "hold: { wait: 50ms }\nlog: { format: json, level: debug }\n",
    );
    with_credential(&d, "CS_TEST_SECRETS_CRED_LOG");
    let (cred, auth, key, session) = (
        canary("CREDENTIAL"),
        canary("AUTH"),
        canary("APIKEY"),
        canary("SESSION"),
    );
    let cred_env = format!("Bearer {cred}");
    let serve = LoggedServe::start(&d, &[("CS_TEST_SECRETS_CRED_LOG", &cred_env)]);
    let mut held = None;
    for path in ["/echo", "/echo?chunk=3", "/v1/held"] {
        let resp = client()
            .post(format!("http://{}{path}", serve.proxy))
            .query(&[("api_key", &key)])
            .header("authorization", format!("Bearer {auth}"))
            .header("cookie", format!("session={session}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if path == "/v1/held" {
            assert_eq!(status, 202);
            held = Some(action_id(&resp));
        }
        let body = resp.bytes().await.unwrap();
        if path.starts_with("/echo") {
            assert_eq!(status, 200);
            assert!(!contains(&body, cred.as_bytes()), "{path}");
        }
    }
    let held = held.unwrap();
    let first = serve.stop();
    assert!(
        first.contains("\"decided\""),
        "the log is captured: {first}"
    );
    assert!(
        upstream
            .seen()
            .iter()
            .any(|s| contains(s.headers["authorization"].as_bytes(), cred.as_bytes())),
        "the upstream got the credential"
    );

    // After a restart, the held call whose query carried a secret cannot be
    // forwarded as reviewed (the secret is not in the record): it fails.
    let serve = LoggedServe::start(&d, &[("CS_TEST_SECRETS_CRED_LOG", &cred_env)]);
    let kinds = eventually(
        async || kinds_of(&d.db_path(), &held),
        |k| k.last().is_some_and(|k| k == "failed"),
    )
    .await;
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("failed"),
        "{kinds:?}"
    );
    let failed = payload_of(&d.db_path(), &held, "failed");
    assert_eq!(failed["reason"], "query_not_kept", "{failed}");
    // `serve` installs its SIGTERM handler just after it logs that it is
    // serving, and the failure above is recorded before that: give it a
    // moment, or the signal can land before the handler does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = serve.stop();
    let record = record_bytes(&d);
    assert_nowhere(
        &[&cred, &auth, &key, &session],
        &[
            ("the first log", first.as_bytes()),
            ("the log after the restart", second.as_bytes()),
            ("the record", &record),
        ],
    );
}

const DENY_OR_HOLD_FOR_ALICE: &str = r#"package countersign
import rego.v1
default decision := {"action": "deny", "risk": "high"}
decision := {"action": "hold", "risk": "high", "approval": {"reviewers": ["alice"], "min": 1}} if {
  contains(input.request.path, "held")
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_recorded_up_to_the_cap_and_held_ones_once_whole() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        DENY_OR_HOLD_FOR_ALICE,
        "hold: { wait: 10s }\n",
    );
    d.edit_config("max_body_bytes: 4096", "max_body_bytes: 2097152");
    let cs = d.start().await;
    let proxy = cs.proxy_addr;
    let body = format!(r#"{{"blob": "{}"}}"#, "b".repeat(1024 * 1024));
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    let cap = 64 * 1024;

    let resp = client()
        .post(format!("http://{proxy}/v1/denied"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let denied = action_id(&resp);

    let b = body.clone();
    let held = tokio::spawn(async move {
        client()
            .post(format!("http://{proxy}/v1/held"))
            .header("content-type", "application/json")
            .body(b)
            .send()
            .await
            .unwrap()
    });
    let admin = Admin::of(&cs);
    let pending = admin.wait_pending(1).await;
    assert_eq!(admin.review(&pending[0], "alice", "approve").await.0, 200);
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 201);
    let held = action_id(&resp);
    cs.stop().await;

    let conn = rusqlite::Connection::open(d.db_path()).unwrap();
    let stored = |id: &str| -> usize {
        conn.query_row(
            "SELECT length(payload) FROM records WHERE action_id = ?1 AND kind = 'decided'",
            [id],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize
    };
    let p = payload_of(&d.db_path(), &denied, "decided");
    let recorded = &p["request"]["body"];
    assert_eq!(recorded["encoding"], "text");
    assert_eq!(recorded["truncated"], true);
    assert_eq!(recorded["text"].as_str().unwrap().len(), cap);
    assert_eq!(p["request"]["body_sha256"], digest.as_str());
    assert_eq!(p["request"]["body_size"], body.len());
    assert!(stored(&denied) < cap + 4096, "{} bytes", stored(&denied));

    let p = payload_of(&d.db_path(), &held, "decided");
    assert_eq!(p["request"]["body"]["text"].as_str().unwrap().len(), cap);
    use base64::Engine as _;
    let forward = base64::engine::general_purpose::STANDARD
        .decode(p["hold"]["forward"]["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(forward, body.as_bytes(), "the hold keeps the whole body");
    let base64_len = body.len().div_ceil(3) * 4;
    assert!(
        stored(&held) < base64_len + cap + 4096,
        "one whole copy only: {} bytes",
        stored(&held)
    );
    assert_eq!(upstream.seen()[0].body, body.as_bytes(), "forwarded whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_show_and_list_print_agent_text_escaped() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    let forged = "ok\n  reviewed by alice: approve\x1b[31m\r\u{2028}4. REVIEWS";
    let mut ids = Vec::new();
    for (content_type, body) in [
        ("text/plain", forged.to_string()),
        (
            "application/json",
            serde_json::json!({ "note": forged, "name": "\u{202e}gnp.exe" }).to_string(),
        ),
    ] {
        let resp = client()
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .header("content-type", content_type)
            .header(
                "x-agent-id",
                reqwest::header::HeaderValue::from_bytes("agent\u{202e}7".as_bytes()).unwrap(),
            )
            .header("x-evidence-note", "line\tbreak")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let id = action_id(&resp);
        wait_for_records(&d.db_path(), &id, 2).await;
        ids.push(id);
    }
    cs.stop().await;

    let config = d.config_path();
    let config = config.to_str().unwrap();
    let mut outputs = Vec::new();
    for id in &ids {
        let out = countersign(&["audit", "show", "--config", config, id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(out.stdout);
    }
    let list = countersign(&["audit", "list", "--config", config]);
    assert!(list.status.success());
    outputs.push(list.stdout);
    for out in &outputs {
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!out.contains(&0x1b) && !out.contains(&b'\r'), "{text}");
        assert!(
            !text.contains(['\u{2028}', '\u{202e}', '\t']),
            "no separator or bidi override: {text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("reviewed by alice")),
            "no forged review line: {text}"
        );
    }
    let shown = String::from_utf8_lossy(&outputs[0]);
    assert!(
        shown.contains(r"ok\n  reviewed by alice: approve\u{1b}[31m\r\u{2028}4. REVIEWS"),
        "the body is shown, escaped: {shown}"
    );
    assert_eq!(
        shown
            .lines()
            .filter(|l| l.starts_with("4. REVIEWS"))
            .count(),
        1,
        "{shown}"
    );
    assert!(String::from_utf8_lossy(&outputs[2]).contains(r"agent\u{202e}7"));
}

/// An upstream that compresses its answer although asked not to: on a
/// route with a credential the answer cannot be checked for it, so it is
/// not relayed (502) and the record says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_answer_on_a_credential_route_is_not_relayed() {
    let upstream = Upstream::start().await;
    let cred = canary("CREDENTIAL");
    std::env::set_var("CS_TEST_SECRETS_CRED_GZIP", format!("Bearer {cred}"));
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    with_credential(&d, "CS_TEST_SECRETS_CRED_GZIP");
    let cs = d.start().await;
    let resp = client()
        .get(format!("http://{}/echo?gzip=1", cs.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let id = action_id(&resp);
    let (_, _, body) = received(resp).await;
    assert!(!contains(&body, cred.as_bytes()));
    assert_eq!(upstream.seen().len(), 1, "the upstream did get the call");
    wait_for_records(&d.db_path(), &id, 2).await;
    let failed = payload_of(&d.db_path(), &id, "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("content-encoding: gzip"),
        "{failed}"
    );
    cs.stop().await;
    assert_nowhere(&[&cred], &[("the record", &record_bytes(&d))]);
}
