//! MCP through countersign, with real MCP software at both ends: the
//! official MCP Python SDK (`pip install mcp`) runs the server
//! (tests/mcp/server.py: a read-only tool, one that moves money, one
//! irreversible) and the client (tests/mcp/client.py), in both the
//! stateless 2026-07-28 flavour and the 2025-11-25 session flavour (SSE
//! answers). The shipped policy library (policies/) decides.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};

use crate::holds::Admin;
use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Python with the MCP SDK is required: a machine without it fails here,
/// saying what to install, rather than skipping.
fn require_sdk() {
    let out = std::process::Command::new("python3")
        .args(["-c", "import mcp, httpx2, uvicorn"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "these tests need the official MCP Python SDK: run `python3 -m pip install mcp` ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => {
            panic!("these tests need python3 with the MCP SDK (`python3 -m pip install mcp`): {e}")
        }
    }
}

/// The SDK's server, on a free port; killed when dropped.
struct McpServer {
    child: std::process::Child,
    port: u16,
    ledger: PathBuf,
}

impl McpServer {
    async fn start(dir: &Path) -> McpServer {
        require_sdk();
        let ledger = dir.join("ledger.jsonl");
        let mut child = std::process::Command::new("python3")
            .arg(repo().join("tests/mcp/server.py"))
            .arg(&ledger)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(30), first)
            .await
            .expect("the MCP server starts within 30s")
            .unwrap()
            .expect("the MCP server prints its port");
        let line = line.trim().to_string();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the MCP server: {line}"));
        McpServer {
            child,
            port,
            ledger,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The tool runs the server did, in order.
    fn runs(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.ledger)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn runs_of(&self, tool: &str) -> usize {
        self.runs().iter().filter(|r| r["tool"] == tool).count()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// countersign in front of the server, on a `protocol: mcp` route named
/// `mcp`, deciding with the shipped policy library.
fn deployment(upstream: &str, extra: &str) -> Deployment {
    let d = Deployment::new(upstream, ALLOW_ALL, extra);
    let policies = d.dir.path().join("policies");
    std::fs::remove_file(policies.join("policy.rego")).unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego") {
            std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
        }
    }
    let yaml = std::fs::read_to_string(d.config_path()).unwrap();
    let yaml = yaml
        .replace("  - name: payments\n", "  - name: mcp\n    protocol: mcp\n")
        .replace("    timeout: 1s\n", "    timeout: 10s\n")
        .replace("max_response_bytes: 1024", "max_response_bytes: 65536");
    std::fs::write(d.config_path(), yaml).unwrap();
    d
}

/// Runs the SDK's client through countersign: the tool listing, then one
/// JSON line per call.
async fn mcp_client(proxy: std::net::SocketAddr, mode: &str, calls: &[Value]) -> Vec<Value> {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo().join("tests/mcp/client.py"))
        .arg(format!("http://{proxy}/mcp"))
        .args(["--mode", mode, "--timeout", "60"])
        .args(["--header", "x-agent-id=ap-agent-7"])
        .args(calls.iter().map(Value::to_string));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the MCP client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["tools"],
        json!(["balance", "close_account", "transfer"]),
        "{stdout}"
    );
    lines[1..].to_vec()
}

/// The `decided` records of `tools/call`s of `tool`, with their action ids.
fn decided_calls(db: &Path, tool: &str) -> Vec<(String, Value)> {
    records(db)
        .into_iter()
        .filter(|(_, _, kind, p)| kind == "decided" && p["input"]["mcp"]["tool"] == tool)
        .map(|(_, id, _, p)| (id, p))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tool_is_allowed_and_recorded_as_a_tool_call_in_both_flavours() {
    let tmp = tempfile::tempdir().unwrap();
    let server = McpServer::start(tmp.path()).await;
    let d = deployment(&server.url(), "");
    let cs = d.start().await;
    for (mode, account) in [("auto", "A1"), ("legacy", "B2")] {
        let call = json!({"tool": "balance", "args": {"account": account},
            "meta": {"countersign/evidence": {"ticket": "T-9"}}});
        let out = mcp_client(cs.proxy_addr, mode, &[call]).await;
        assert_eq!(out[0]["isError"], false, "{mode}: {out:?}");
        assert_eq!(
            out[0]["text"],
            format!("account {account} holds 1250.00 EUR")
        );
    }
    assert_eq!(server.runs_of("balance"), 2);
    cs.stop().await;

    let db = d.db_path();
    let calls = decided_calls(&db, "balance");
    assert_eq!(calls.len(), 2);
    for ((id, decided), (version, account)) in calls
        .iter()
        .zip([("2026-07-28", "A1"), ("2025-11-25", "B2")])
    {
        let mcp = &decided["input"]["mcp"];
        assert_eq!(mcp["method"], "tools/call");
        assert_eq!(mcp["arguments"], json!({"account": account}));
        assert_eq!(mcp["protocol_version"], version);
        assert_eq!(decided["evidence"]["ticket"], "T-9", "evidence from _meta");
        assert_eq!(decided["decision"]["rules"], json!(["mcp.tool.read_only"]));
        // The session flavour has a session; the stateless one has none.
        assert_eq!(mcp["session_id"].is_string(), version == "2025-11-25");
        let completed = payload_of(&db, id, "completed");
        let response = &completed["response"];
        // The answer, whether JSON or a stream of events, as the result.
        let text = &response["jsonrpc"]["result"]["content"][0]["text"];
        assert_eq!(*text, format!("account {account} holds 1250.00 EUR"));
        if version == "2025-11-25" {
            // The SSE stream is recorded whole: every byte, event framing included.
            assert_eq!(response["body"]["encoding"], "text");
            let body = response["body"]["text"].as_str().unwrap();
            assert!(body.contains("event: message"), "{body}");
            assert_eq!(response["body_size"], body.len());
        }
    }
    // The plumbing went through the policy too, and was recorded.
    let methods: Vec<Value> = records(&db)
        .into_iter()
        .filter(|(_, _, k, _)| k == "decided")
        .map(|(_, _, _, p)| p["input"]["mcp"]["method"].clone())
        .collect();
    for m in [
        "server/discover",
        "initialize",
        "tools/list",
        "notifications/initialized",
    ] {
        assert!(methods.contains(&json!(m)), "{m} not among {methods:?}");
    }

    // audit show prints the call as a tool call.
    let (id, _) = &calls[0];
    let out = countersign(&[
        "audit",
        "show",
        id,
        "--config",
        d.config_path().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("tool call:    balance"), "{text}");
    assert!(text.contains("\"account\": \"A1\""), "{text}");
    assert!(text.contains("account A1 holds 1250.00 EUR"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_reaches_the_model_as_a_tool_error_and_never_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let server = McpServer::start(tmp.path()).await;
    let d = deployment(&server.url(), "");
    let cs = d.start().await;
    for mode in ["auto", "legacy"] {
        let call =
            json!({"tool": "transfer", "args": {"source": "A1", "target": "B2", "amount": 90000}});
        let out = mcp_client(cs.proxy_addr, mode, &[call]).await;
        assert_eq!(out[0]["isError"], true, "{mode}: {out:?}");
        let text = out[0]["text"].as_str().unwrap();
        assert!(text.contains("90000 is above the 50000 limit"), "{text}");
        assert!(text.contains("(action "), "{text}");
    }
    assert_eq!(server.runs_of("transfer"), 0);
    cs.stop().await;
    let db = d.db_path();
    let calls = decided_calls(&db, "transfer");
    assert_eq!(calls.len(), 2);
    for (id, decided) in calls {
        assert_eq!(decided["state"], "denied");
        let answered = answered_of(&db, &id).await;
        assert_eq!(answered["source"], "countersign");
        assert_eq!(answered["body"]["result"]["isError"], true);
        assert!(kinds_of(&db, &id).iter().all(|k| k != "completed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_approved_by_two_reviewers_answers_the_waiting_client_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = McpServer::start(tmp.path()).await;
    let d = deployment(&server.url(), "hold: { wait: 30s }\n");
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    for (n, (mode, account)) in [("auto", "A1"), ("legacy", "B2")].into_iter().enumerate() {
        let proxy = cs.proxy_addr;
        let call = json!({"tool": "close_account", "args": {"account": account}});
        let waiting = tokio::spawn(async move { mcp_client(proxy, mode, &[call]).await });
        let pending = admin.wait_pending(1).await;
        let id = &pending[0];
        assert_eq!(
            server.runs_of("close_account"),
            n,
            "nothing runs while held"
        );
        assert_eq!(admin.review(id, "alice", "approve").await.0, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            server.runs_of("close_account"),
            n,
            "one approval is not enough"
        );
        assert_eq!(admin.review(id, "bob", "approve").await.0, 200);
        let out = waiting.await.unwrap();
        assert_eq!(out[0]["isError"], false, "{mode}: {out:?}");
        assert_eq!(out[0]["text"], format!("account {account} is closed"));
        assert_eq!(server.runs_of("close_account"), n + 1, "{mode}: ran once");
        let view = admin.action(id).await;
        assert_eq!(view["state"], "completed");
    }
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_hold_wait_answers_with_the_action_and_runs_once_when_approved() {
    let tmp = tempfile::tempdir().unwrap();
    let server = McpServer::start(tmp.path()).await;
    let d = deployment(&server.url(), "hold: { wait: 1s }\n");
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    let call = json!({"tool": "close_account", "args": {"account": "C3"}});
    let out = mcp_client(cs.proxy_addr, "auto", &[call]).await;
    assert_eq!(out[0]["isError"], true, "{out:?}");
    let text = out[0]["text"].as_str().unwrap();
    assert!(
        text.contains("holding this call for review as action"),
        "{text}"
    );
    assert!(text.contains("GET /.countersign/actions/"), "{text}");
    let id = admin.wait_pending(1).await[0].clone();
    assert!(text.contains(&id), "{text}");
    assert_eq!(server.runs_of("close_account"), 0);
    admin.review(&id, "alice", "approve").await;
    admin.review(&id, "bob", "approve").await;
    eventually(async || server.runs_of("close_account"), |n| *n == 1).await;
    let url = format!("http://{}/.countersign/actions/{id}", cs.proxy_addr);
    let status = eventually(async || get_json(&url).await, |s| s["state"] == "completed").await;
    assert_eq!(status["state"], "completed", "{status}");
    let text = &status["response"]["body"]["result"]["content"][0]["text"];
    assert_eq!(*text, "account C3 is closed", "{status}");
    // Nothing sends it again: not the sweep, not a second look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.runs_of("close_account"), 1);
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_disagree_with_the_body_are_refused_and_recorded_before_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let server = McpServer::start(tmp.path()).await;
    let d = deployment(&server.url(), "");
    let cs = d.start().await;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "close_account", "arguments": {"account": "A1"}}});
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers, i64, &str); 4] = [
        // Stateless flavour: the headers name a harmless call.
        (
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "balance"),
            ],
            -32020,
            "mcp_header_mismatch",
        ),
        (
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
            -32020,
            "mcp_header_mismatch",
        ),
        // Session flavour: the SDK server ignores these headers; countersign does not.
        (
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-session-id", "s-1"),
                ("mcp-name", "balance"),
            ],
            -32020,
            "mcp_header_mismatch",
        ),
        (
            &[("mcp-protocol-version", "2024-11-05")],
            -32022,
            "mcp_unsupported_version",
        ),
    ];
    for (headers, code, reason) in cases {
        let mut req = client()
            .post(format!("http://{}/mcp", cs.proxy_addr))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let id = action_id(&resp);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["error"]["code"], code, "{answer}");
        wait_for_records(&d.db_path(), &id, 1).await;
        let failed = payload_of(&d.db_path(), &id, "failed");
        assert_eq!(failed["reason"], reason);
        assert_eq!(failed["stage"], "decide");
        // Refused before the policy: no decision, and what the agent got is kept.
        assert_eq!(kinds_of(&d.db_path(), &id), ["failed"]);
        let answered = answered_of(&d.db_path(), &id).await;
        assert_eq!(answered["body"], answer);
    }
    // Members and methods spelled only loosely: a server that matches
    // names without case would run what the policy read as something else
    // (here, a tool call dressed as a response).
    for loose in [
        json!({"jsonrpc": "2.0", "id": 7, "result": {}, "Method": "tools/call",
            "Params": {"name": "close_account", "arguments": {"account": "A1"}}}),
        json!({"jsonrpc": "2.0", "id": 7, "method": "Tools/Call",
            "params": {"name": "close_account", "arguments": {"account": "A1"}}}),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"Name": "close_account", "arguments": {"account": "A1"}}}),
    ] {
        let resp = client()
            .post(format!("http://{}/mcp", cs.proxy_addr))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .body(loose.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{loose}");
        let id = action_id(&resp);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        wait_for_records(&d.db_path(), &id, 1).await;
        assert_eq!(
            payload_of(&d.db_path(), &id, "failed")["reason"],
            "mcp_invalid"
        );
    }
    assert!(server.runs().is_empty());
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_with_a_progress_token_hears_progress_until_its_real_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let server = McpServer::start(tmp.path()).await;
    let d = deployment(
        &server.url(),
        "hold: { wait: 30s, progress_interval: 200ms }\n",
    );
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    for (n, (mode, amount)) in [("auto", 5000), ("legacy", 6000)].into_iter().enumerate() {
        let proxy = cs.proxy_addr;
        let call = json!({"tool": "transfer", "progress": true,
            "args": {"source": "A1", "target": "B2", "amount": amount}});
        let waiting = tokio::spawn(async move { mcp_client(proxy, mode, &[call]).await });
        let id = admin.wait_pending(1).await[0].clone();
        // Long enough for several notifications.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(server.runs_of("transfer"), n);
        assert_eq!(admin.review(&id, "alice", "approve").await.0, 200);
        let out = waiting.await.unwrap();
        assert_eq!(out[0]["isError"], false, "{mode}: {out:?}");
        assert_eq!(
            out[0]["text"],
            format!("moved {amount}.00 EUR from A1 to B2")
        );
        assert!(out[0]["progress"].as_u64().unwrap() >= 3, "{mode}: {out:?}");
        assert_eq!(server.runs_of("transfer"), n + 1);
    }
    cs.stop().await;
}
