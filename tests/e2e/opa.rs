//! What OPA and Envoy users bring: opa-envoy's object result, the headers
//! envoy-mode policies read, data documents, decision-log export.

use serde_json::Value;

use crate::support::*;

const ENVOY_OBJECT: &str = r#"package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 451,
	"body": "blocked: no invoice",
	"headers": {"x-deny-reason": "no-invoice"},
	"response_headers_to_add": {"x-policy": "envoy-v1"},
}

allow := {
	"allowed": true,
	"headers": {"x-on-behalf": headers["x-agent-on-behalf-of"]},
	"request_headers_to_remove": ["cookie"],
	"response_headers_to_add": {"x-policy": "envoy-v1"},
} if {
	headers["x-evidence-invoice"] == "INV-1"
	headers["x-agent-id"] == "ap-agent-7"
}

headers := input.attributes.request.http.headers
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opa_envoy_object_results_set_headers_and_shape_the_denial() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ENVOY_OBJECT,
        "policy: { entrypoint: data.envoy.authz.allow, input: envoy }\n",
    );
    let cs = d.start().await;
    let c = client();
    let call = |evidence: Option<&'static str>| {
        let mut r = c
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .header("content-type", "application/json")
            .header("x-agent-id", "ap-agent-7")
            .header("x-agent-on-behalf-of", "carol")
            .header("cookie", "session=agent-secret")
            .body(r#"{"amount": 5}"#);
        if let Some(e) = evidence {
            r = r.header("x-evidence-invoice", e);
        }
        r.send()
    };
    // Allowed: the policy read the agent and evidence headers among the
    // headers, added one upstream, removed another, and one comes back.
    let ok = call(Some("INV-1")).await.unwrap();
    assert_eq!(ok.status(), 201);
    assert_eq!(ok.headers()["x-policy"], "envoy-v1");
    let allowed_id = action_id(&ok);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-on-behalf"], "carol");
    assert!(seen[0].headers.get("cookie").is_none());
    assert!(
        seen[0].headers.get("x-agent-id").is_none(),
        "agent headers still stop here"
    );

    // Denied: the policy's status, body and headers, and nothing forwarded.
    let no = call(None).await.unwrap();
    assert_eq!(no.status(), 451);
    assert_eq!(no.headers()["x-deny-reason"], "no-invoice");
    assert_eq!(no.headers()["x-policy"], "envoy-v1");
    assert!(no.headers().get("x-countersign-action-id").is_some());
    let denied_id = action_id(&no);
    assert_eq!(no.text().await.unwrap(), "blocked: no invoice");
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;

    // The record: the decision with the header names the policy set (not
    // their values), the denial's status; and a replay reaches it again.
    let decided = payload_of(&d.db_path(), &allowed_id, "decided");
    assert_eq!(decided["decision"]["action"], "allow");
    assert_eq!(
        decided["decision"]["envoy"]["headers"],
        serde_json::json!(["x-on-behalf"])
    );
    assert_eq!(
        decided["input"]["attributes"]["request"]["http"]["headers"]["x-evidence-invoice"],
        "INV-1"
    );
    let denied = payload_of(&d.db_path(), &denied_id, "decided");
    assert_eq!(denied["decision"]["envoy"]["http_status"], 451);
    for id in [&allowed_id, &denied_id] {
        let out = countersign(&[
            "audit",
            "replay",
            "--config",
            d.config_path().to_str().unwrap(),
            id,
        ]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_result_that_is_not_valid_http_refuses_the_call() {
    let upstream = Upstream::start().await;
    let policy = "package envoy.authz\nimport rego.v1\nallow := {\"allowed\": false, \"http_status\": 200}\n";
    let d = Deployment::new(
        &upstream.url(),
        policy,
        "policy: { entrypoint: data.envoy.authz.allow, input: envoy }\n",
    );
    let cs = d.start().await;
    let resp = client()
        .post(format!("http://{}/v1/payouts", cs.proxy_addr))
        .body("{}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    // A "denial" answered 200 would read as success: the contract refuses it.
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("http_status"),
        "{body}"
    );
    assert!(upstream.seen().is_empty());
    cs.stop().await;
}

const VENDOR_POLICY: &str = r#"package countersign

import rego.v1

decision := {"action": "allow", "risk": "low", "rules": ["vendor.known"]} if {
	input.request.body.to in data.payments.vendors
	input.request.body.amount <= data.max_amount
}

default decision := {"action": "deny", "risk": "medium", "rules": ["vendor.unknown"]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_documents_decide_make_the_revision_reload_and_replay() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), VENDOR_POLICY, "");
    let policies = d.dir.path().join("policies");
    // OPA's layout: a root data.json merges at data; payments/data.yaml is
    // data.payments.
    std::fs::write(policies.join("data.json"), r#"{"max_amount": 1000}"#).unwrap();
    std::fs::create_dir(policies.join("payments")).unwrap();
    std::fs::write(
        policies.join("payments/data.yaml"),
        "vendors: [ACME GmbH]\n",
    )
    .unwrap();
    let cs = d.start().await;
    let c = client();
    let pay = |to: &'static str, amount: u32| {
        c.post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .header("content-type", "application/json")
            .body(format!(r#"{{"to": "{to}", "amount": {amount}}}"#))
            .send()
    };
    let first = readyz(cs.admin_addr).await["policy"].clone();
    assert!(
        first["files"].to_string().contains("payments/data.yaml"),
        "{first}"
    );
    assert_eq!(pay("ACME GmbH", 5).await.unwrap().status(), 201);
    assert_eq!(pay("ACME GmbH", 5000).await.unwrap().status(), 403);
    let refused = pay("Initech", 5).await.unwrap();
    assert_eq!(refused.status(), 403);
    let refused_id = action_id(&refused);

    // New data is a new revision, loaded like a policy change.
    std::fs::write(
        policies.join("payments/data.yaml"),
        "vendors: [ACME GmbH, Initech]\n",
    )
    .unwrap();
    let second = eventually(
        async || readyz(cs.admin_addr).await["policy"]["revision"].clone(),
        |r| *r != first["revision"],
    )
    .await;
    assert_ne!(
        second, first["revision"],
        "the data change made a new revision"
    );
    let now_allowed = pay("Initech", 5).await.unwrap();
    assert_eq!(now_allowed.status(), 201);
    let allowed_id = action_id(&now_allowed);
    cs.stop().await;

    // Each decision replays on its own revision, data included: the old
    // refusal stays a refusal, the new allow an allow.
    for id in [&refused_id, &allowed_id] {
        let out = countersign(&[
            "audit",
            "replay",
            "--config",
            d.config_path().to_str().unwrap(),
            id,
        ]);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The data file is among the recorded revision's files.
    let decided = payload_of(&d.db_path(), &refused_id, "decided");
    assert_eq!(decided["policy"]["revision"], first["revision"]);
}

#[test]
fn a_broken_data_document_is_named_by_check() {
    let d = Deployment::new("http://127.0.0.1:1", VENDOR_POLICY, "");
    std::fs::write(d.dir.path().join("policies/data.json"), "{\"max_amount\": ").unwrap();
    std::env::set_var("CS_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("data.json: not JSON"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_written_as_an_opa_decision_log_line_redacted_like_the_record() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.jsonl");
    let d = Deployment::new(
        &upstream.url(),
        &payments_policy(),
        &format!("decision_log: {{ path: {} }}\n", log.display()),
    );
    let cs = d.start().await;
    let c = client();
    let mut ids = Vec::new();
    // One allowed (with its invoice), one denied (without).
    for invoice in ["INV-1", ""] {
        let mut r = c
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .header("content-type", "application/json")
            .header("authorization", "Bearer SECRET-TOKEN-7f3a")
            .header("x-agent-id", "ap-agent-7")
            .body(r#"{"amount": 50, "currency": "EUR", "to": "ACME GmbH"}"#);
        if !invoice.is_empty() {
            r = r.header("x-evidence-invoice", invoice);
        }
        ids.push(action_id(&r.send().await.unwrap()));
    }
    let text = eventually(
        async || std::fs::read_to_string(&log).unwrap_or_default(),
        |t| t.lines().count() >= 2,
    )
    .await;
    cs.stop().await;
    assert!(
        !text.contains("SECRET-TOKEN-7f3a"),
        "the token leaked: {text}"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(line["decision_id"], id.as_str());
        assert_eq!(line["path"], "countersign/decision");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(line["labels"]["id"].is_string());
        assert!(line["metrics"]["timer_rego_query_eval_ns"]
            .as_u64()
            .is_some());
        assert!(line["result"]["action"].is_string(), "{line}");
        assert_eq!(
            line["input"]["request"]["headers"]["authorization"],
            "[redacted]"
        );
        // The same input the record keeps.
        let decided = payload_of(&d.db_path(), id, "decided");
        assert_eq!(line["input"], decided["input"]);
        assert_eq!(line["revision"], decided["policy"]["revision"]);
        assert_eq!(
            line["bundles"]["countersign"]["revision"],
            decided["policy"]["revision"]
        );
    }
    assert_eq!(lines[0]["input"]["evidence"]["invoice"], "INV-1");
    assert_eq!(lines[0]["result"]["action"], "allow");
    assert_eq!(lines[1]["result"]["action"], "deny");
}

/// Writes a gzipped tar file with these (name, text) entries.
fn write_bundle(path: &std::path::Path, entries: &[(&str, &str)]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, text) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw, so a hostile name reaches the reader as it is.
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_cksum();
        tar.append(&header, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

const BUNDLE_POLICY: &str = r#"package countersign
import rego.v1
default decision := {"action": "deny", "risk": "high", "reasons": ["over the bundle's limit"], "rules": ["bundle.limit"]}
decision := {"action": "allow", "risk": "low", "reasons": ["within the bundle's limit"], "rules": ["bundle.ok"]} if {
    input.request.body.amount <= data.limits.max
}
"#;

/// An OPA bundle (`.tar.gz` with `.manifest`) loads from a file path: its
/// policies and data documents decide, hidden entries are skipped as in a
/// directory, and the recorded revision is the same files' revision as a
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opa_bundle_file_is_the_policy() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        "policy: { dir: bundle.tar.gz }\n",
    );
    write_bundle(
        &d.dir.path().join("bundle.tar.gz"),
        &[
            (
                ".manifest",
                r#"{"revision": "v1", "roots": ["countersign", "limits"]}"#,
            ),
            ("countersign/policy.rego", BUNDLE_POLICY),
            // What macOS tar adds beside each file: not a policy.
            ("countersign/._policy.rego", "Mac OS X resource fork"),
            ("limits/data.json", r#"{"max": 100}"#),
        ],
    );
    let revision_checked = |config: &std::path::Path| {
        let out = countersign(&["check", "--config", config.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let at = stdout.find("policy revision ").expect(&stdout) + "policy revision ".len();
        stdout[at..]
            .split([' ', ',', ')'])
            .next()
            .unwrap()
            .to_string()
    };
    let bundle_revision = revision_checked(&d.config_path());
    // The same files as a directory.
    let dir = d.dir.path().join("as-dir");
    std::fs::create_dir_all(dir.join("countersign")).unwrap();
    std::fs::create_dir_all(dir.join("limits")).unwrap();
    std::fs::write(dir.join("countersign/policy.rego"), BUNDLE_POLICY).unwrap();
    std::fs::write(dir.join("limits/data.json"), r#"{"max": 100}"#).unwrap();
    let as_dir = d.dir.path().join("as-dir.yaml");
    let yaml = std::fs::read_to_string(d.config_path()).unwrap();
    assert!(yaml.contains("dir: bundle.tar.gz"), "{yaml}");
    std::fs::write(&as_dir, yaml.replace("dir: bundle.tar.gz", "dir: as-dir")).unwrap();
    assert_eq!(revision_checked(&as_dir), bundle_revision);
    let cs = d.start().await;
    let call = |amount: u64| {
        client()
            .post(format!("http://{}/v1/payouts", cs.proxy_addr))
            .header("content-type", "application/json")
            .body(format!(r#"{{"amount": {amount}}}"#))
            .send()
    };
    assert_eq!(
        call(50).await.unwrap().status(),
        201,
        "the bundle's data allows it"
    );
    let denied = call(500).await.unwrap();
    assert_eq!(denied.status(), 403);
    let id = action_id(&denied);
    wait_for_records(&d.db_path(), &id, 1).await;
    let decided = payload_of(&d.db_path(), &id, "decided");
    assert_eq!(
        decided["decision"]["rules"],
        serde_json::json!(["bundle.limit"])
    );
    assert_eq!(decided["policy"]["revision"], bundle_revision.as_str());
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;

    // An entry that climbs out of the bundle, or an absolute one, is
    // refused by name.
    for name in ["../evil.rego", "/etc/evil.rego"] {
        write_bundle(
            &d.dir.path().join("bundle.tar.gz"),
            &[(name, BUNDLE_POLICY)],
        );
        let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("absolute or climbs out of the bundle"),
            "{name}: {err}"
        );
        assert!(err.contains(name), "{name}: {err}");
    }
}
