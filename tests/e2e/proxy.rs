//! The proxy path as an agent sees it, and what the upstream and the record see.

use crate::support::*;
use serde_json::{json, Value};

async fn payout(
    client: &reqwest::Client,
    proxy: std::net::SocketAddr,
    amount: u64,
    invoice: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(format!("http://{proxy}/v1/payouts"))
        .header("content-type", "application/json")
        .header("x-agent-id", "ap-agent-7")
        .header("x-agent-on-behalf-of", "carol")
        .header("x-agent-intent", "pay invoice INV-118")
        .body(format!(
            r#"{{"amount": {amount}, "currency": "EUR", "to": "ACME GmbH"}}"#
        ));
    if let Some(inv) = invoice {
        req = req
            .header("x-evidence-invoice", inv)
            .header("x-evidence-po", "PO-77");
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_call_reaches_upstream_byte_for_byte_and_is_recorded() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let cs = d.start().await;
    let body = r#"{"amount": 250, "currency": "EUR", "to": "ACME GmbH"}"#;
    let resp = client()
        .post(format!("http://{}/v1/payouts?dry_run=false", cs.proxy_addr))
        .header("content-type", "application/json")
        .header("x-agent-id", "ap-agent-7")
        .header("x-agent-on-behalf-of", "carol")
        .header("x-agent-intent", "pay invoice INV-118")
        .header("x-evidence-invoice", "doc://inv/118; sha256=abc")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not cross")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = action_id(&resp);
    assert_eq!(resp.json::<Value>().await.unwrap()["echo_size"], body.len());

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].body,
        body.as_bytes(),
        "the upstream gets the body byte for byte"
    );
    assert_eq!(seen[0].path_and_query, "/v1/payouts?dry_run=false");
    for stripped in [
        "x-agent-id",
        "x-agent-on-behalf-of",
        "x-agent-intent",
        "x-evidence-invoice",
        "x-hop",
    ] {
        assert!(
            !seen[0].headers.contains_key(stripped),
            "{stripped} must not reach the upstream"
        );
    }
    assert_eq!(seen[0].headers["x-countersign-action-id"], id.as_str());

    wait_for_records(&d.db_path(), &id, 2).await;
    assert_eq!(kinds_of(&d.db_path(), &id), ["decided", "completed"]);
    let decided = payload_of(&d.db_path(), &id, "decided");
    assert_eq!(decided["decision"]["action"], "allow");
    assert_eq!(
        decided["decision"]["rules"],
        json!(["payments.payout.small"])
    );
    assert_eq!(decided["agent"]["on_behalf_of"], "carol");
    assert_eq!(decided["evidence"]["invoice"], "doc://inv/118; sha256=abc");
    assert_eq!(decided["request"]["body"]["json"]["amount"], 250);
    assert_eq!(decided["request"]["query"]["dry_run"], json!(["false"]));
    assert!(decided["policy"]["revision"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let completed = payload_of(&d.db_path(), &id, "completed");
    assert_eq!(completed["response"]["status"], 201);
    assert_eq!(completed["response"]["body"]["json"]["ok"], true);
    assert!(
        completed["response"]["headers"].get("set-cookie").is_none(),
        "response cookies are not kept"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_call_gets_403_and_never_reaches_upstream() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let cs = d.start().await;
    let resp = payout(&client(), cs.proxy_addr, 250, None).await;
    assert_eq!(resp.status(), 403);
    let id = action_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["state"], "denied");
    assert_eq!(body["action_id"], id.as_str());
    assert_eq!(body["risk"], "high");
    assert_eq!(body["rules"], json!(["payments.payout.missing_invoice"]));
    assert!(body["reasons"][0].as_str().unwrap().contains("invoice"));
    assert!(upstream.seen().is_empty());
    assert_eq!(kinds_of(&d.db_path(), &id), ["decided"]);
    assert_eq!(payload_of(&d.db_path(), &id, "decided")["state"], "denied");
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_gets_404_json() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let yaml = std::fs::read_to_string(d.config_path())
        .unwrap()
        .replace("path_prefix: /", "path_prefix: /v1");
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    for path in ["/admin/users", "/v1x/payouts"] {
        let resp = client()
            .get(format!("http://{}{path}", cs.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.headers().contains_key("x-countersign-action-id"));
        assert!(resp.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("no route"));
    }
    assert!(upstream.seen().is_empty());
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413_with_or_without_content_length() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let cs = d.start().await;
    let big = vec![b'x'; 5000]; // max_body_bytes is 4096
    let resp = client()
        .post(format!("http://{}/v1/payouts", cs.proxy_addr))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let id = action_id(&resp);
    // Chunked: no content-length, so the limit is found while reading.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(cs.proxy_addr).await.unwrap();
    let chunk = "y".repeat(3000);
    let raw = format!(
        "POST /v1/payouts HTTP/1.1\r\nhost: payments\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    tcp.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(upstream.seen().is_empty());
    wait_for_records(&d.db_path(), &id, 1).await;
    let failed = payload_of(&d.db_path(), &id, "failed");
    assert_eq!(failed["reason"], "body_too_large");
    assert_eq!(failed["request"]["method"], "POST");
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gets_502_and_is_recorded_failed() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Deployment::new(&format!("http://127.0.0.1:{port}"), &payments_policy(), "");
    let cs = d.start().await;
    let resp = payout(&client(), cs.proxy_addr, 100, Some("INV-1")).await;
    assert_eq!(resp.status(), 502);
    let id = action_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["state"], "failed");
    wait_for_records(&d.db_path(), &id, 2).await;
    assert_eq!(kinds_of(&d.db_path(), &id), ["decided", "failed"]);
    assert_eq!(
        payload_of(&d.db_path(), &id, "failed")["reason"],
        "upstream_unreachable"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_and_is_recorded_failed() {
    let upstream = Upstream::start().await;
    let policy = ALLOW_ALL;
    let d = Deployment::new(&upstream.url(), policy, "");
    let cs = d.start().await;
    let resp = client()
        .get(format!("http://{}/slow", cs.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let id = action_id(&resp);
    wait_for_records(&d.db_path(), &id, 2).await;
    assert_eq!(
        payload_of(&d.db_path(), &id, "failed")["reason"],
        "upstream_timeout"
    );
    cs.stop().await;
}

/// Sends `GET /slow` (answered after 3 s) on a raw socket and hangs up
/// once the upstream has the call.
async fn hang_up_once_upstream_has_it(proxy: std::net::SocketAddr, upstream: &Upstream) {
    let request = format!("GET /slow HTTP/1.1\r\nhost: {proxy}\r\n\r\n");
    let agent = raw_agent(proxy, &request).await;
    eventually(async || upstream.seen().len(), |n| *n == 1).await;
    drop(agent);
}

/// Holds SQLite's write lock while raw agents send `GET` for each of
/// `paths`, waits until the process has made `evaluations` decisions in
/// all (they then wait on the lock), hangs every agent up, and releases
/// the lock.
async fn hang_up_while_the_store_is_locked(
    d: &Deployment,
    cs: &countersign::app::Running,
    paths: &[&str],
    evaluations: f64,
) {
    let lock = rusqlite::Connection::open(d.db_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut agents = Vec::new();
    for path in paths {
        let request = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", cs.proxy_addr);
        agents.push(raw_agent(cs.proxy_addr, &request).await);
    }
    let admin = format!("http://{}", cs.admin_addr);
    let evaluated = eventually(
        async || gauge(&admin, "countersign_policy_eval_seconds_count").await,
        |n| *n >= evaluations,
    )
    .await;
    assert_eq!(evaluated, evaluations);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(agents);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    lock.execute_batch("COMMIT").unwrap();
}

/// The action decided for a call to `path`, once it has `n` records: its
/// id and its record kinds. Fails the test if no decision was recorded.
async fn decided_at(db: &std::path::Path, path: &str, n: usize) -> (String, Vec<String>) {
    let found = eventually(
        async || {
            let rows = records(db);
            let id = rows
                .iter()
                .find(|r| r.2 == "decided" && r.3["request"]["path"] == path)
                .map(|r| r.1.clone());
            id.map(|id| (kinds_of(db, &id), id))
        },
        |found| found.as_ref().is_some_and(|(k, _)| k.len() == n),
    )
    .await;
    let (kinds, id) = found.unwrap_or_else(|| panic!("no decision recorded for {path}"));
    (id, kinds)
}

/// An agent that hangs up while its allowed call is upstream: the forward
/// runs to its end and the upstream's answer is recorded (not left for the
/// sweep to mark interrupted, which would say only that nobody knows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_hangs_up_mid_forward_still_gets_the_result_recorded() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    // /slow answers after 3 s.
    d.edit_config("    timeout: 1s\n", "    timeout: 10s\n");
    let cs = d.start().await;
    hang_up_once_upstream_has_it(cs.proxy_addr, &upstream).await;
    let ids = eventually(
        async || {
            let rows = records(&d.db_path());
            rows.iter()
                .filter(|r| r.2 == "completed")
                .map(|r| r.1.clone())
                .collect::<Vec<_>>()
        },
        |ids| !ids.is_empty(),
    )
    .await;
    assert_eq!(ids.len(), 1, "the answer nobody heard is recorded");
    assert_eq!(kinds_of(&d.db_path(), &ids[0]), ["decided", "completed"]);
    assert_eq!(
        payload_of(&d.db_path(), &ids[0], "completed")["response"]["status"],
        201
    );
    cs.stop().await;
}

/// A forward whose agent hung up keeps its connection's place under
/// `limits.max_connections`: hanging up cannot put more calls upstream
/// than the limit allows. With a limit of one, the next agent is served
/// only once the forward it would overtake has its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_whose_agent_hung_up_still_counts_against_the_connection_limit() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        "limits: { max_connections: 1 }\n",
    );
    // /slow answers after 3 s.
    d.edit_config("    timeout: 1s\n", "    timeout: 10s\n");
    let cs = d.start().await;
    hang_up_once_upstream_has_it(cs.proxy_addr, &upstream).await;
    let next = client()
        .get(format!("http://{}/v1/next", cs.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 201);
    let completed: Vec<Row> = records(&d.db_path())
        .into_iter()
        .filter(|r| r.2 == "completed")
        .collect();
    assert!(
        completed
            .iter()
            .any(|r| r.3["response"]["status"] == 201 && r.1 != action_id(&next)),
        "the next agent was served before the hung-up forward ended"
    );
    cs.stop().await;
}

/// Agents that hang up at every moment of an allowed call. Each action
/// ends at once and says what happened upstream: `completed` if the
/// upstream got it (it sees the action id), `failed` / `agent_hung_up` if
/// nothing was sent; never left for the sweep to call "unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_hang_up_at_any_moment_leave_an_exact_record() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    let body = r#"{"amount": 10}"#;
    let request = format!(
        "POST /v1/payouts HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        cs.proxy_addr,
        body.len()
    );
    for i in 0..40u64 {
        let agent = raw_agent(cs.proxy_addr, &request).await;
        tokio::time::sleep(std::time::Duration::from_micros(i * 100)).await;
        drop(agent);
    }
    let ended = |rows: &Vec<Row>| {
        let decided = rows.iter().filter(|r| r.2 == "decided").count();
        let ends = rows
            .iter()
            .filter(|r| r.2 == "completed" || r.2 == "failed")
            .count();
        decided > 0 && decided == ends
    };
    let rows = eventually(async || records(&d.db_path()), ended).await;
    assert!(ended(&rows), "an action was left unended");
    let sent: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| {
            s.headers["x-countersign-action-id"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (_, id, _, _) in rows.iter().filter(|r| r.2 == "decided") {
        if sent.contains(id) {
            assert_eq!(kinds_of(&d.db_path(), id), ["decided", "completed"], "{id}");
        } else {
            assert_eq!(kinds_of(&d.db_path(), id), ["decided", "failed"], "{id}");
            let failed = payload_of(&d.db_path(), id, "failed");
            assert_eq!(failed["reason"], "agent_hung_up", "{id}");
        }
    }
    cs.stop().await;
}

/// The moment the sweeps above can only hope to hit, made certain: the
/// agents hang up while their decisions wait for the store (the test holds
/// SQLite's write lock). Once the lock is released, the allowed call ends
/// `failed` / `agent_hung_up` and nothing reaches the upstream; the held
/// call is cancelled (under `on_wait_timeout: cancel`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_hang_up_while_their_decision_commits_are_recorded_exactly() {
    let upstream = Upstream::start().await;
    let policy = r#"package countersign
import rego.v1
default decision := {"action": "allow", "risk": "low"}
decision := {"action": "hold", "risk": "medium", "reasons": ["held"], "rules": ["test.hold"],
  "approval": {"reviewers": ["alice"], "min": 1}} if startswith(input.request.path, "/v1/held")
"#;
    let d = Deployment::new(
        &upstream.url(),
        policy,
        "hold: { wait: 30s, on_wait_timeout: cancel }\n",
    );
    d.edit_config("busy_timeout: 200ms", "busy_timeout: 10s");
    let cs = d.start().await;
    // One call first, so the policy's revision is in the record and these
    // decisions go straight to the (locked) store; the first calls of a
    // revision are the next test's.
    let warm = client()
        .get(format!("http://{}/v1/warm", cs.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 201);
    // Both decisions are made (and go to the store straight after) and
    // wait on the lock; then the agents go. (The warm-up was the first.)
    hang_up_while_the_store_is_locked(&d, &cs, &["/v1/allowed", "/v1/held"], 3.0).await;
    let (allowed, k) = decided_at(&d.db_path(), "/v1/allowed", 2).await;
    assert_eq!(k, ["decided", "failed"]);
    assert_eq!(
        payload_of(&d.db_path(), &allowed, "failed")["reason"],
        "agent_hung_up"
    );
    let (_, k) = decided_at(&d.db_path(), "/v1/held", 2).await;
    assert_eq!(k, ["decided", "cancelled"]);
    let paths: Vec<String> = upstream
        .seen()
        .iter()
        .map(|s| s.path_and_query.clone())
        .collect();
    assert_eq!(
        paths,
        ["/v1/warm"],
        "nothing of the agents that hung up was forwarded"
    );
    cs.stop().await;
}

/// The first calls of a policy revision wait for each other (one of them
/// records the revision) before their decisions go to the store. Agents
/// that hang up while they wait still leave their decisions in the record,
/// each ended `failed` / `agent_hung_up`, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_hang_up_during_a_new_revisions_first_calls_are_recorded() {
    let upstream = Upstream::start().await;
    let policy = "package countersign\nimport rego.v1\ndecision := {\"action\": \"allow\", \"risk\": \"low\"}\n";
    let d = Deployment::new(&upstream.url(), policy, "");
    d.edit_config("busy_timeout: 200ms", "busy_timeout: 10s");
    let cs = d.start().await;
    // No call before: the revision is not in the record yet. All three
    // are decided: the first waits on the lock to record the revision with
    // its decision, the others wait for it.
    let paths = ["/v1/first", "/v1/second", "/v1/third"];
    hang_up_while_the_store_is_locked(&d, &cs, &paths, 3.0).await;
    for path in paths {
        let (id, kinds) = decided_at(&d.db_path(), path, 2).await;
        assert_eq!(kinds, ["decided", "failed"], "{path}");
        assert_eq!(
            payload_of(&d.db_path(), &id, "failed")["reason"],
            "agent_hung_up",
            "{path}"
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "nothing of the agents that hung up was forwarded"
    );
    cs.stop().await;
}

/// Sends a payout the policy cannot decide; returns the `failed` record.
async fn refused_by_policy(policy: &str, extra: &str, expect_in_error: &str) -> Value {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), policy, extra);
    let cs = d.start().await;
    let resp = payout(&client(), cs.proxy_addr, 100, Some("INV-1")).await;
    assert_eq!(resp.status(), 503);
    let id = action_id(&resp);
    let body: Value = resp.json().await.unwrap();
    let error = body["error"].as_str().unwrap().to_string();
    assert!(error.contains(expect_in_error), "{error}");
    assert!(upstream.seen().is_empty(), "a failed policy never forwards");
    wait_for_records(&d.db_path(), &id, 1).await;
    let failed = payload_of(&d.db_path(), &id, "failed");
    assert!(failed["error"].as_str().unwrap().contains(expect_in_error));
    assert_eq!(
        failed["request"]["body"]["json"]["amount"], 100,
        "the refused request is still in the record"
    );
    cs.stop().await;
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_runtime_error_fails_closed() {
    // Divide by zero (no evidence count... on purpose): an evaluation error in Rego.
    let policy = "package countersign\nimport rego.v1\n
share := 10 / (count(input.evidence) - 2) if input.request.method == \"POST\"
decision := {\"action\": \"allow\", \"risk\": \"low\", \"reasons\": [sprintf(\"%v\", [share])]}\n";
    let failed = refused_by_policy(policy, "", "policy evaluation failed").await;
    assert_eq!(failed["reason"], "policy_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_error_in_a_deny_rule_never_lets_a_default_allow_through() {
    let policy = "package countersign\nimport rego.v1\n
default decision := {\"action\": \"allow\", \"risk\": \"low\"}
decision := {\"action\": \"deny\", \"risk\": \"high\"} if { 10 / (count(input.evidence) - 2) > 1 }\n";
    refused_by_policy(policy, "", "divide by zero").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_timeout_fails_closed() {
    let policy = "package countersign\nimport rego.v1\n
spin := count([x | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000); x > y]) if input.request.method == \"POST\"
decision := {\"action\": \"allow\", \"risk\": \"low\", \"reasons\": [sprintf(\"%v\", [spin])]}\n";
    let failed = refused_by_policy(policy, "policy: { timeout: 20ms }\n", "time limit").await;
    assert_eq!(failed["reason"], "policy_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_decision_object_fails_closed() {
    let policy = "package countersign\nimport rego.v1\ndecision := {\"action\": \"maybe\", \"risk\": \"low\"}\n";
    let failed = refused_by_policy(policy, "", "breaks the contract").await;
    assert_eq!(failed["reason"], "policy_contract");
    let unreleasable = "package countersign\nimport rego.v1\n
decision := {\"action\": \"hold\", \"risk\": \"high\", \"approval\": {\"reviewers\": [\"alice\"], \"min\": 2}}\n";
    refused_by_policy(unreleasable, "", "could never be released").await;
    let undefined = "package countersign\nimport rego.v1\ndecision := {\"action\": \"allow\", \"risk\": \"low\"} if false\n";
    refused_by_policy(undefined, "", "undefined").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_that_cannot_commit_refuses_the_call_and_forwards_nothing() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let cs = d.start().await;
    // Another process holds the write lock: the proxy's commit times out (busy_timeout 200ms).
    let locker = rusqlite::Connection::open(d.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let resp = payout(&client(), cs.proxy_addr, 100, Some("INV-1")).await;
    assert_eq!(resp.status(), 503);
    let resp_lost = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("record could not be written"),
        "{body}"
    );
    assert!(
        upstream.seen().is_empty(),
        "nothing is forwarded without a durable decision"
    );
    let lost = resp_lost
        .get("x-countersign-action-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    locker.execute_batch("ROLLBACK").unwrap();
    // The store recovers: the next call goes through and the chain is intact.
    let resp = payout(&client(), cs.proxy_addr, 100, Some("INV-1")).await;
    assert_eq!(resp.status(), 201);
    cs.stop().await;
    // The refused call has no decision on record, so no other record of it either.
    assert!(records(&d.db_path()).iter().all(|r| r.1 != lost));
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_is_passed_whole_and_recorded_cut_with_full_digest() {
    let upstream = Upstream::start().await;
    let policy = ALLOW_ALL;
    let d = Deployment::new(&upstream.url(), policy, "");
    let cs = d.start().await;
    let n = 300_000;
    let resp = client()
        .get(format!("http://{}/stream?n={n}", cs.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = action_id(&resp);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), n);
    wait_for_records(&d.db_path(), &id, 2).await;
    let r = &payload_of(&d.db_path(), &id, "completed")["response"];
    assert_eq!(r["body_size"], n);
    assert_eq!(r["body"]["truncated"], true);
    assert_eq!(
        r["body"]["text"].as_str().unwrap().len(),
        1024,
        "cut at max_response_bytes"
    );
    use sha2::Digest;
    assert_eq!(r["body_sha256"], hex::encode(sha2::Sha256::digest(&body)));
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credential_is_injected_and_the_agents_is_dropped() {
    let upstream = Upstream::start().await;
    std::env::set_var("CS_TEST_UPSTREAM_TOKEN", "Bearer UPSTREAM-CANARY-7f3a");
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "    timeout: 1s\n",
        "    timeout: 1s\n    upstream_auth: { header: authorization, value_env: CS_TEST_UPSTREAM_TOKEN }\n",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    let resp = client()
        .get(format!("http://{}/v1/balance", cs.proxy_addr))
        .header("authorization", "Bearer AGENT-SUPPLIED")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = action_id(&resp);
    let seen = upstream.seen();
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth, ["Bearer UPSTREAM-CANARY-7f3a"]);
    wait_for_records(&d.db_path(), &id, 2).await;
    cs.stop().await;
    let db = std::fs::read(d.db_path()).unwrap();
    let wal = std::fs::read(d.dir.path().join("audit.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !contains(&bytes, b"UPSTREAM-CANARY"),
            "the injected credential never enters the record"
        );
        assert!(
            !contains(&bytes, b"AGENT-SUPPLIED"),
            "the agent's credential is redacted"
        );
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_commits_and_all_are_recorded() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let cs = d.start().await;
    let client = client();
    let calls = (0..200).map(|i| {
        let client = client.clone();
        let proxy = cs.proxy_addr;
        tokio::spawn(async move {
            payout(&client, proxy, 10 + i, Some("INV-1"))
                .await
                .status()
                .as_u16()
        })
    });
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    assert_eq!(upstream.seen().len(), 200);
    // Group commit: the 400 records took fewer commits (fsyncs) than records.
    let metrics = metrics_text(&format!("http://{}", cs.admin_addr)).await;
    let commits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("countersign_record_commit_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(commits < 400, "{commits} commits for 400 records");
    cs.stop().await;
    let recs = records(&d.db_path());
    // Per call: decided, completed, answered; and the policy's text once.
    assert_eq!(recs.len(), 601);
    for kind in ["decided", "completed", "answered"] {
        assert_eq!(recs.iter().filter(|r| r.2 == kind).count(), 200, "{kind}");
    }
    assert_eq!(recs.iter().filter(|r| r.2 == "policy").count(), 1);
    let out = countersign(&[
        "audit",
        "verify",
        "--config",
        d.config_path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_and_rebuilds_the_action() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "");
    let cs = d.start().await;
    let resp = payout(&client(), cs.proxy_addr, 250, Some("INV-118")).await;
    let id = action_id(&resp);
    wait_for_records(&d.db_path(), &id, 2).await;
    let admin = format!("http://{}", cs.admin_addr);
    assert_eq!(
        client()
            .get(format!("{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = client()
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // regorus 0.14's VM answers differently from the interpreter, so `auto` stays on the interpreter and says why.
    assert_eq!(ready["policy"]["engine"], "interpreter");
    assert!(ready["policy"]["vm_fallback_reason"]
        .as_str()
        .unwrap()
        .contains("can allow what the interpreter refuses"));
    assert_eq!(
        client()
            .get(format!("{admin}/v1/actions"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong = client()
        .get(format!("{admin}/v1/actions"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let list: Value = admin_json(&format!("{admin}/v1/actions?state=completed")).await;
    assert_eq!(list["actions"][0]["action_id"], id.as_str());
    let none: Value = admin_json(&format!("{admin}/v1/actions?state=pending")).await;
    assert_eq!(none["actions"], json!([]));
    let action: Value = admin_json(&format!("{admin}/v1/actions/{id}")).await;
    assert_eq!(action["state"], "completed");
    assert_eq!(action["agent"]["id"], "ap-agent-7");
    assert_eq!(action["evidence"]["po"], "PO-77");
    assert_eq!(
        action["decision"]["rules"],
        json!(["payments.payout.small"])
    );
    assert_eq!(action["result"]["response"]["status"], 201);
    answered_of(&d.db_path(), &id).await;
    let action: Value = admin_json(&format!("{admin}/v1/actions/{id}")).await;
    let kinds: Vec<&str> = action["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["decided", "completed", "answered"]);
    let missing = client()
        .get(format!("{admin}/v1/actions/{}", "0".repeat(32)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let metrics = metrics_text(&admin).await;
    assert!(
        metrics.contains("countersign_decisions_total{action=\"allow\",risk=\"low\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("countersign_record_commit_seconds_count"));
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_style_policy_runs_unchanged() {
    let upstream = Upstream::start().await;
    let policy = r#"package envoy.authz

import rego.v1

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "balance"
}

allow if {
	input.attributes.request.http.method == "POST"
	input.parsed_body.amount < 100
	input.attributes.request.http.headers["content-type"] == "application/json"
}
"#;
    let d = Deployment::new(
        &upstream.url(),
        policy,
        "policy: { entrypoint: data.envoy.authz.allow, input: envoy }\n",
    );
    let cs = d.start().await;
    let c = client();
    assert_eq!(
        c.get(format!("http://{}/v1/balance", cs.proxy_addr))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(payout(&c, cs.proxy_addr, 50, None).await.status(), 201);
    assert_eq!(payout(&c, cs.proxy_addr, 500, None).await.status(), 403);
    assert_eq!(
        c.delete(format!("http://{}/v1/payouts/1", cs.proxy_addr))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(upstream.seen().len(), 2);
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reload_and_a_broken_one_keeps_the_last_good_in_force() {
    let upstream = Upstream::start().await;
    let allow_all = "package countersign\nimport rego.v1\ndecision := {\"action\": \"allow\", \"risk\": \"low\", \"rules\": [\"first\"]}\n";
    let d = Deployment::new(&upstream.url(), allow_all, "");
    let cs = d.start().await;
    let admin = format!("http://{}", cs.admin_addr);
    let c = client();
    let ready = || async {
        c.get(format!("{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let first = ready().await["policy"]["revision"].clone();
    assert_eq!(
        c.get(format!("http://{}/v1/balance", cs.proxy_addr))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    std::fs::write(
        d.dir.path().join("policies/policy.rego"),
        allow_all
            .replace("\"allow\"", "\"deny\"")
            .replace("first", "second"),
    )
    .unwrap();
    let second = eventually(
        async || ready().await["policy"]["revision"].clone(),
        |r| *r != first,
    )
    .await;
    assert_ne!(second, first, "the changed policy was loaded");
    let resp = c
        .get(format!("http://{}/v1/balance", cs.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let id = action_id(&resp);
    assert_eq!(
        payload_of(&d.db_path(), &id, "decided")["policy"]["revision"],
        second,
        "the record names the revision that decided"
    );

    std::fs::write(
        d.dir.path().join("policies/broken.rego"),
        "package countersign\ndecision := {\n",
    )
    .unwrap();
    let status = eventually(ready, |s| !s["policy"]["reload_error"].is_null()).await;
    assert!(
        status["policy"]["reload_error"]
            .as_str()
            .unwrap()
            .contains("broken.rego"),
        "{status}"
    );
    assert_eq!(
        status["policy"]["revision"], second,
        "the last good revision stays in force"
    );
    assert_eq!(
        c.get(format!("http://{}/v1/balance", cs.proxy_addr))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let metrics = metrics_text(&admin).await;
    assert!(
        metrics.contains("countersign_reload_failures_total{what=\"policy\"} 1"),
        "{metrics}"
    );

    // Emptied (every .rego file gone): refused and reported the same way.
    std::fs::remove_file(d.dir.path().join("policies/broken.rego")).unwrap();
    std::fs::remove_file(d.dir.path().join("policies/policy.rego")).unwrap();
    let status = eventually(ready, |s| {
        s["policy"]["reload_error"]
            .as_str()
            .is_some_and(|e| !e.contains("broken.rego"))
    })
    .await;
    let error = status["policy"]["reload_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains(".rego"), "{status}");
    assert_eq!(status["policy"]["revision"], second, "{status}");
    assert_eq!(
        c.get(format!("http://{}/v1/balance", cs.proxy_addr))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reload_across_a_configmap_symlink_swap() {
    // The layout a Kubernetes ConfigMap volume has: visible names are links
    // into `..data`, itself a link to a timestamped folder that is replaced
    // by renaming a new link over it.
    use std::os::unix::fs::symlink;
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let dir = d.dir.path().join("policies");
    std::fs::remove_file(dir.join("policy.rego")).unwrap();
    let version = |name: &str, policy: &str| {
        std::fs::create_dir(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("policy.rego"), policy).unwrap();
    };
    version("..2026_11_27_01", ALLOW_ALL);
    symlink("..2026_11_27_01", dir.join("..data")).unwrap();
    symlink("..data/policy.rego", dir.join("policy.rego")).unwrap();
    let cs = d.start().await;
    let c = client();
    assert_eq!(
        c.get(format!("http://{}/v1/balance", cs.proxy_addr))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    version(
        "..2026_11_27_02",
        &ALLOW_ALL.replace("\"allow\"", "\"deny\""),
    );
    symlink("..2026_11_27_02", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_11_27_01")).unwrap();
    let balance = format!("http://{}/v1/balance", cs.proxy_addr);
    let status = eventually(
        async || c.get(&balance).send().await.unwrap().status().as_u16(),
        |s| *s == 403,
    )
    .await;
    assert_eq!(status, 403, "the swapped-in policy decides");
    let ready: Value = c
        .get(format!("http://{}/readyz", cs.admin_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready["policy"]["reload_error"].is_null(), "{ready}");
    assert_eq!(
        ready["policy"]["files"].as_array().unwrap().len(),
        1,
        "hidden ..data folders are not read twice"
    );
    cs.stop().await;
}
