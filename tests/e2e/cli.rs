//! The command line and the real `countersign serve` process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::proxy::contains;
use crate::support::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check(d: &Deployment) -> std::process::Output {
    std::env::set_var("CS_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    countersign(&["check", "--config", d.config_path().to_str().unwrap()])
}

#[test]
fn check_accepts_the_shipped_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "check",
            "--config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/payments/countersign.yaml"
            ),
        ])
        .env("COUNTERSIGN_ADMIN_TOKEN", "x")
        .env("REVIEWER_ALICE_KEY", key_of("alice"))
        .env("REVIEWER_BOB_KEY", key_of("bob"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("interpreter engine"));
}

#[test]
fn malformed_configs_get_one_clear_error_naming_file_and_field() {
    let cases = [
        ("routes[0]", "  - name: x\n    match: { path_prefix: / }\n    upstream: http://a\n    upstreem: http://b\n", "unknown field `upstreem`"),
        ("hold.wait", "hold: { wait: 25 parsecs }\n", "hold.wait: `25 parsecs` is not a duration"),
        ("policy.dir", "policy: { dir: no-such-dir }\n", "policy.dir:"),
        ("routes[0].upstream", "", ""),
    ];
    for (field, extra, expected) in cases {
        let d = Deployment::new("http://127.0.0.1:1", "package countersign\n", "");
        let mut yaml = std::fs::read_to_string(d.config_path()).unwrap();
        if field == "routes[0]" {
            yaml = yaml.replace("routes:\n", &format!("routes:\n{extra}"));
        } else if field == "routes[0].upstream" {
            yaml = yaml.replace("upstream: http://127.0.0.1:1", "upstream: ftp://files");
        } else {
            yaml.push_str(extra);
        }
        std::fs::write(d.config_path(), yaml).unwrap();
        let out = check(&d);
        assert_eq!(out.status.code(), Some(1), "{field}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("countersign.yaml"), "names the file: {err}");
        assert!(err.contains(field), "names the field {field}: {err}");
        assert!(
            err.contains(expected),
            "says what is wrong ({expected}): {err}"
        );
    }
}

#[test]
fn broken_rego_and_unsupported_builtins_are_refused_naming_the_file() {
    let d = Deployment::new(
        "http://127.0.0.1:1",
        "package countersign\n\ndecision := {\"action\": \n",
        "",
    );
    let out = check(&d);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("policy.rego"), "{err}");
    assert!(err.contains("countersign.yaml: policy.dir"), "{err}");

    let d = Deployment::new(
        "http://127.0.0.1:1",
        "package countersign\nimport rego.v1\nr := http.send({\"method\": \"get\", \"url\": \"http://x\"})\ndecision := {\"action\": \"allow\", \"risk\": \"low\"} if r.status_code == 200\n",
        "",
    );
    let out = check(&d);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("http.send"), "{}", stderr(&out));
}

#[test]
fn policy_test_runs_the_example_suite_and_names_a_failing_test() {
    let out = countersign(&[
        "policy",
        "test",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/payments/policies"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `opa test -v`'s layout: the file, each test with its verdict, the counts.
    assert!(stdout.contains("payments_test.rego:\n"), "{stdout}");
    assert!(
        stdout.contains("data.countersign_test.test_reads_are_allowed: PASS ("),
        "{stdout}"
    );
    assert!(stdout.ends_with("PASS: 8/8\n"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\nimport rego.v1\nlimit := 10\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\nimport rego.v1\nimport data.p\ntest_limit_is_ten if p.limit == 10\ntest_limit_is_five if p.limit == 5\n",
    )
    .unwrap();
    let out = countersign(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("data.p_test.test_limit_is_ten: PASS ("),
        "{stdout}"
    );
    assert!(
        stdout.starts_with("FAILURES\n"),
        "failures come first, as opa test prints them: {stdout}"
    );
    assert!(
        stdout.contains("data.p_test.test_limit_is_five: FAIL ("),
        "{stdout}"
    );
    assert!(stdout.contains("SUMMARY\n"), "{stdout}");
    assert!(stdout.ends_with("PASS: 1/2\nFAIL: 1/2\n"), "{stdout}");
    assert!(stderr(&out).contains("test_limit_is_five"));

    // --coverage: opa test's coverage JSON; p.rego's one rule is evaluated.
    let out = countersign(&["policy", "test", "--coverage", dir.path().to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("coverage is JSON");
    let p = report["files"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("/p.rego"))
        .map(|(_, v)| v.clone())
        .expect("p.rego is in the report");
    assert!(p["covered_lines"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(p["covered"][0]["start"]["row"], 3, "{report}");
    assert!(report["coverage"].as_f64().unwrap() > 0.0);
    assert!(stderr(&out).contains("FAIL: 1/2"));
}

#[test]
fn policy_eval_prints_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"request": {"method": "POST", "path": "/v1/payouts", "body": {"amount": 25000, "currency": "EUR"}}, "evidence": {"invoice": "INV-118"}}"#,
    )
    .unwrap();
    let out = countersign(&[
        "policy",
        "eval",
        "--policies",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/payments/policies"),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["action"], "hold");
    assert_eq!(decision["approval"]["min"], 2);
}

/// A real `countersign serve` process and a real payments API process.
struct Processes {
    countersign: Child,
    api: Child,
    proxy: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        let _ = self.countersign.kill();
        let _ = self.api.kill();
        let _ = self.countersign.wait();
        let _ = self.api.wait();
    }
}

fn payments_api_binary() -> std::path::PathBuf {
    // `cargo test` builds the examples next to the binaries.
    Path::new(env!("CARGO_BIN_EXE_countersign"))
        .parent()
        .unwrap()
        .join("examples/payments-api")
}

fn start_processes(d: &Deployment) -> Processes {
    let mut api = Command::new(payments_api_binary())
        .arg("127.0.0.1:0")
        .env("PAYMENTS_QUIET", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(api.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let api_addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let yaml = std::fs::read_to_string(d.config_path())
        .unwrap()
        .replace("http://127.0.0.1:1", &format!("http://{api_addr}"));
    std::fs::write(
        d.config_path(),
        yaml + "log: { format: json, level: debug }\nhold: { wait: 100ms }\n",
    )
    .unwrap();
    let mut cs = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config", d.config_path().to_str().unwrap()])
        .env("CS_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CS_TEST_UPSTREAM_TOKEN", "Bearer INJECTED-CANARY-51c2")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, log) = std::sync::mpsc::channel();
    let stderr = cs.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut proxy = None;
    while proxy.is_none() {
        let line = log
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("countersign serve started");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "countersign is serving" {
            proxy = v["proxy_addr"].as_str().map(str::to_string);
        }
    }
    Processes {
        countersign: cs,
        api,
        proxy: proxy.unwrap(),
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_never_reach_the_record_or_the_log() {
    let d = Deployment::new("http://127.0.0.1:1", &payments_policy(), "");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "    timeout: 1s\n",
        "    timeout: 1s\n    upstream_auth: { header: x-payments-key, value_env: CS_TEST_UPSTREAM_TOKEN }\n",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let mut p = start_processes(&d);
    let c = client();
    for (amount, invoice) in [(250, Some("INV-1")), (250, None), (50_000, Some("INV-2"))] {
        let mut req = c
            .post(format!("http://{}/v1/payouts?note=ok", p.proxy))
            .header("content-type", "application/json")
            .header("authorization", "Bearer AUTH-CANARY-9d1e")
            .header("cookie", "session=COOKIE-CANARY-77ab")
            .header("x-internal-api-key", "HEADER-CANARY-3c0f")
            .header("x-agent-id", "ap-agent-7")
            .body(format!(r#"{{"amount": {amount}, "currency": "EUR"}}"#));
        if let Some(i) = invoice {
            req = req.header("x-evidence-invoice", i);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert!(
            [201, 202, 403].contains(&status),
            "{status}: {}",
            resp.text().await.unwrap()
        );
    }
    // SIGTERM: graceful shutdown commits every queued record and exits 0.
    unsafe_sigterm(p.countersign.id());
    let status = p.countersign.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    let mut log = String::new();
    while let Ok(line) = p.log.recv_timeout(std::time::Duration::from_secs(2)) {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(log.contains("decided"), "the log is captured: {log}");

    let recs = records(&d.db_path());
    assert_eq!(recs.iter().filter(|r| r.2 == "decided").count(), 3);
    let decided = &recs.iter().find(|r| r.2 == "decided").unwrap().3;
    assert_eq!(decided["request"]["headers"]["authorization"], "[redacted]");
    assert_eq!(decided["request"]["headers"]["cookie"], "[redacted]");
    assert_eq!(
        decided["request"]["headers"]["x-internal-api-key"],
        "[redacted]"
    );
    assert_eq!(
        decided["request"]["headers"]["content-type"],
        "application/json"
    );

    let mut files = vec![("log", log.into_bytes())];
    for f in std::fs::read_dir(d.dir.path()).unwrap() {
        let path = f.unwrap().path();
        if path.to_string_lossy().contains("audit.db") {
            files.push(("record", std::fs::read(&path).unwrap()));
        }
    }
    for canary in [
        "AUTH-CANARY",
        "COOKIE-CANARY",
        "HEADER-CANARY",
        "INJECTED-CANARY",
    ] {
        for (what, bytes) in &files {
            assert!(
                !contains(bytes, canary.as_bytes()),
                "{canary} leaked into the {what}"
            );
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn run_some_calls(d: &Deployment) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let upstream = Upstream::start().await;
        let yaml = std::fs::read_to_string(d.config_path())
            .unwrap()
            .replace("http://127.0.0.1:1", &upstream.url());
        std::fs::write(d.config_path(), yaml).unwrap();
        let cs = d.start().await;
        let c = client();
        for amount in [100, 200, 300] {
            c.post(format!("http://{}/v1/payouts", cs.proxy_addr))
                .header("x-evidence-invoice", "INV-1")
                .body(format!(r#"{{"amount": {amount}}}"#))
                .send()
                .await
                .unwrap();
        }
        cs.stop().await;
    });
}

fn verify(d: &Deployment) -> std::process::Output {
    countersign(&[
        "audit",
        "verify",
        "--config",
        d.config_path().to_str().unwrap(),
    ])
}

#[test]
fn audit_verify_finds_edits_deletions_and_swaps() {
    let d = Deployment::new("http://127.0.0.1:1", &payments_policy(), "");
    run_some_calls(&d);
    let out = verify(&d);
    assert!(out.status.success(), "{}", stderr(&out));
    // Three calls (decided, completed, answered each) and the policy's text.
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 records, chain intact"));
    // Fold the WAL into the file first (the stopped service's connections
    // may close a moment later), so the copy below is the whole record.
    {
        let conn = rusqlite::Connection::open(d.db_path()).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let pristine = std::fs::read(d.db_path()).unwrap();

    let tamper = |sql: &str| {
        for side in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{side}", d.db_path().display()));
        }
        std::fs::write(d.db_path(), &pristine).unwrap();
        let conn = rusqlite::Connection::open(d.db_path()).unwrap();
        // The stopped service's writer may still be closing its connection.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let out = verify(&d);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        stderr(&out)
    };
    let edited = tamper("UPDATE records SET payload = replace(payload, '\"amount\":200', '\"amount\":20') WHERE seq = 5");
    assert!(
        edited.contains("seq 5") && edited.contains("altered"),
        "{edited}"
    );
    let deleted = tamper("DELETE FROM records WHERE seq = 4");
    assert!(
        deleted.contains("seq 4") && deleted.contains("missing"),
        "{deleted}"
    );
    let swapped = tamper(
        "UPDATE records SET seq = -2 WHERE seq = 2; UPDATE records SET seq = 2 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = -2;",
    );
    assert!(swapped.contains("seq 2"), "{swapped}");
}

#[test]
fn audit_show_tells_the_story_and_list_filters() {
    let d = Deployment::new("http://127.0.0.1:1", &payments_policy(), "");
    run_some_calls(&d);
    let cfg = d.config_path();
    let cfg = cfg.to_str().unwrap();
    let out = countersign(&[
        "audit",
        "list",
        "--config",
        cfg,
        "--state",
        "completed",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let none = countersign(&[
        "audit", "list", "--config", cfg, "--risk", "critical", "--json",
    ]);
    assert!(none.stdout.is_empty());
    let future = countersign(&[
        "audit",
        "list",
        "--config",
        cfg,
        "--since",
        "2999-01-01T00:00:00Z",
        "--json",
    ]);
    assert!(future.stdout.is_empty());
    let id = rows[0]["action_id"].as_str().unwrap();
    let out = countersign(&["audit", "show", "--config", cfg, id]);
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "1. REQUEST",
        "2. EVIDENCE",
        "invoice: INV-1",
        "3. DECISION",
        "payments.payout.small",
        "policy revision: sha256:",
        "4. REVIEWS",
        "5. RESULT",
        "upstream answered 201",
    ] {
        assert!(text.contains(part), "missing {part}:\n{text}");
    }
    let out = countersign(&["audit", "show", "--config", cfg, id, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "completed");
    let out = countersign(&[
        "audit",
        "show",
        "--config",
        cfg,
        "ffffffffffffffffffffffffffffffff",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// A `countersign serve` process on ports 0, killed (like a crash) when dropped.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) proxy: String,
    pub(crate) admin: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no graceful shutdown, as in a crash
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn_serve(d: &Deployment) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config", d.config_path().to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut serve = Serve {
        child,
        proxy: String::new(),
        admin: String::new(),
    };
    let mut lines = BufReader::new(serve.child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("countersign serve started").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "countersign is serving" {
            std::thread::spawn(move || for _ in lines.by_ref() {});
            serve.proxy = v["proxy_addr"].as_str().unwrap().to_string();
            serve.admin = v["admin_addr"].as_str().unwrap().to_string();
            return serve;
        }
    }
}

pub(crate) const HOLD_FOR_ALICE_AND_BOB: &str = r#"package countersign
import rego.v1
decision := {"action": "hold", "risk": "high", "reasons": ["two approvers"], "rules": ["test.hold"],
  "approval": {"reviewers": ["alice", "bob"], "min": 2}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_actions_survive_a_crash_and_are_completed_after_restart() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_AND_BOB,
        "hold: { wait: 50ms }\nlog: { format: json }\n",
    );
    let cs = spawn_serve(&d);
    let (proxy, admin) = (cs.proxy.clone(), cs.admin.clone());
    let resp = client()
        .post(format!("http://{proxy}/v1/payouts"))
        .body(r#"{"amount": 9000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = action_id(&resp);
    let a = crate::holds::Admin {
        url: format!("http://{admin}"),
    };
    assert_eq!(a.review(&id, "alice", "approve").await.0, 200);
    drop(cs);

    let cs = spawn_serve(&d);
    let (proxy, admin) = (cs.proxy.clone(), cs.admin.clone());
    let a = crate::holds::Admin {
        url: format!("http://{admin}"),
    };
    assert_eq!(
        a.pending().await,
        std::slice::from_ref(&id),
        "still pending after the crash"
    );
    // Alice's approval survived; she cannot approve twice, bob completes the quorum.
    assert_eq!(a.review(&id, "alice", "approve").await.0, 409);
    let (s, v) = a.review(&id, "bob", "approve").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    let status_url = format!("http://{proxy}/.countersign/actions/{id}");
    let status = eventually(
        async || get_json(&status_url).await,
        |s| s["state"] == "completed",
    )
    .await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(upstream.seen()[0].body, r#"{"amount": 9000}"#.as_bytes());
    drop(cs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_forward_is_never_sent_twice() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        HOLD_FOR_ALICE_AND_BOB,
        "hold: { wait: 50ms }\nlog: { format: json }\n",
    );
    let yaml = std::fs::read_to_string(d.config_path())
        .unwrap()
        .replace("timeout: 1s", "timeout: 20s");
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = spawn_serve(&d);
    let (proxy, admin) = (cs.proxy.clone(), cs.admin.clone());
    // /slow: the upstream takes 3 s to answer, so the crash lands mid-forward.
    let resp = client()
        .post(format!("http://{proxy}/slow"))
        .body("pay once")
        .send()
        .await
        .unwrap();
    let id = action_id(&resp);
    let a = crate::holds::Admin {
        url: format!("http://{admin}"),
    };
    assert_eq!(a.review(&id, "alice", "approve").await.0, 200);
    assert_eq!(a.review(&id, "bob", "approve").await.0, 200);
    eventually(async || upstream.seen().len(), |n| *n > 0).await;
    assert_eq!(upstream.seen().len(), 1, "the forward started");
    drop(cs);

    let cs = spawn_serve(&d);
    let admin = cs.admin.clone();
    let a = crate::holds::Admin {
        url: format!("http://{admin}"),
    };
    let view = a.action(&id).await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(view["result"]["reason"], "forward_interrupted");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(upstream.seen().len(), 1, "not resent after the restart");
    drop(cs);
    assert_eq!(
        kinds_of(&d.db_path(), &id),
        [
            "decided",
            "reviewed",
            "reviewed",
            "approved",
            "forwarded",
            "failed"
        ]
    );
}

#[test]
fn shipped_policy_library_suite_is_green() {
    let out = countersign(&[
        "policy",
        "test",
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    for domain in ["finance", "access", "procurement", "customer"] {
        assert!(
            stdout.contains(&format!("data.library_test.{domain}.")),
            "{domain} has tests:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_forward_finish_then_exits_0() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "log: { format: json }\n");
    let yaml = std::fs::read_to_string(d.config_path())
        .unwrap()
        .replace("timeout: 1s", "timeout: 20s");
    std::fs::write(d.config_path(), yaml).unwrap();
    let mut cs = spawn_serve(&d);
    let proxy = cs.proxy.clone();
    // /slow: the upstream answers after 3 s.
    let in_flight =
        tokio::spawn(async move { client().get(format!("http://{proxy}/slow")).send().await });
    eventually(async || upstream.seen().len(), |n| *n > 0).await;
    assert_eq!(upstream.seen().len(), 1, "the forward is in flight");
    unsafe_sigterm(cs.child.id());
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight call is answered");
    assert_eq!(resp.status(), 201);
    let id = action_id(&resp);
    let status = tokio::task::spawn_blocking(move || cs.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert_eq!(
        kinds_of(&d.db_path(), &id),
        ["decided", "completed"],
        "its result was committed before exit"
    );
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `examples/payments/run.sh` on the test's binaries, ports and scratch dir.
fn run_story(proxy: u16, admin: u16, api: u16) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/payments/run.sh"
        ))
        .env("COUNTERSIGN_BIN", env!("CARGO_BIN_EXE_countersign"))
        .env("PAYMENTS_API_BIN", payments_api_binary())
        .env("PAYMENTS_DATA", dir.path().join("data"))
        .env("PROXY_PORT", proxy.to_string())
        .env("ADMIN_PORT", admin.to_string())
        .env("API_PORT", api.to_string())
        .output()
        .unwrap()
}

#[test]
fn the_payments_story_refuses_a_port_another_process_listens_on() {
    // Someone else's server on the port the payments API would use: the
    // script must not send payouts to it.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let out = run_story(free_port(), free_port(), taken);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "port {taken} (API_PORT) on 127.0.0.1 is already in use"
        )),
        "{err}"
    );
    assert!(
        err.contains("API_PORT="),
        "says how to choose another: {err}"
    );
    // Nothing was started, so nothing went through.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("==> 1."));
}

#[test]
fn the_payments_story_prints_the_logs_when_a_process_cannot_take_its_port() {
    // A socket bound to the admin port but not listening: invisible to a
    // connect probe, yet countersign cannot bind it. The script must fail
    // and show countersign's own log saying why.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    let rc = unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd,
            &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    let held = u16::from_be(addr.sin_port);
    let out = run_story(free_port(), held, free_port());
    unsafe { libc::close(fd) };
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("countersign serve exited before it was ready"),
        "{err}"
    );
    assert!(err.contains("the logs:"), "{err}");
    assert!(err.contains("countersign.log"), "{err}");
    assert!(
        err.contains("payments-api: listening on"),
        "the API's log too: {err}"
    );
    assert!(
        err.to_lowercase().contains("address already in use")
            || err.to_lowercase().contains("in use"),
        "countersign's own reason: {err}"
    );
}

#[test]
fn the_payments_story_runs_on_ports_from_the_environment() {
    let out = run_story(free_port(), free_port(), free_port());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    assert!(text.contains("the chain of records is intact"), "{text}");
    assert!(text.contains("\"state\":\"completed\""), "{text}");
}

#[test]
fn check_prints_a_rego_syntax_error_with_file_line_column_and_the_line() {
    let d = Deployment::new(
        "http://127.0.0.1:1",
        "package countersign\n\ndecision := {\"action\": \"allow\"} if {\n  input.x ==\n}\n",
        "",
    );
    let out = check(&d);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("policy.rego: line 5, column 1: expecting expression"),
        "{err}"
    );
    // The offending line and a caret under the column, each on its own line.
    let lines: Vec<&str> = err.lines().map(str::trim_end).collect();
    let at = lines.iter().position(|l| l.ends_with("5 | }")).expect(&err);
    assert!(lines[at + 1].trim_start().starts_with("| ^"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_commands_read_the_record_without_the_policies_or_from_a_copied_file() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    let c = client();
    for i in 0..3 {
        let resp = c
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .header("x-agent-id", "ap-agent-7")
            .body(format!("{{\"n\": {i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    cs.stop().await;
    // A clean stop folds the write-ahead log back in: the file alone is the
    // whole record, ready to copy.
    let wal = d.dir.path().join("audit.db-wal");
    assert!(!wal.exists(), "{} left behind after stop", wal.display());
    // The config's policy directory is gone (a copied config, say).
    std::fs::remove_dir_all(d.dir.path().join("policies")).unwrap();
    let config = d.config_path();
    assert_eq!(audit_list_ids(&config, &[]).len(), 3);
    assert_eq!(audit_list_ids(&config, &["--limit", "1"]).len(), 1);
    assert_eq!(audit_list_ids(&config, &["--limit", "0"]).len(), 3);
    let cfg = config.to_str().unwrap();
    let rows = |out: std::process::Output| {
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let out = countersign(&["audit", "verify", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The record file alone, copied elsewhere: no config at all.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("copy.db");
    std::fs::copy(d.db_path(), &copy).unwrap();
    let db = copy.to_str().unwrap();
    let out = countersign(&["audit", "list", "--db", db, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(rows(out), 3);
    let id = serde_json::from_str::<Value>(text.lines().next().unwrap()).unwrap()["action_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = countersign(&["audit", "show", "--db", db, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = countersign(&["audit", "verify", "--db", db]);
    assert!(out.status.success(), "{}", stderr(&out));
    // --db wins over a COUNTERSIGN_CONFIG left in the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["audit", "list", "--db", db, "--json"])
        .env("COUNTERSIGN_CONFIG", "/nonexistent/countersign.yaml")
        .output()
        .unwrap();
    assert_eq!(rows(out), 3);
    let out = countersign(&["audit", "replay", "--db", db, &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A wrong path is named, not created.
    let missing = elsewhere.path().join("nope.db");
    let out = countersign(&["audit", "list", "--db", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--db:"), "{}", stderr(&out));
    assert!(!missing.exists());
}
