//! Evidence a third party can verify: signed checkpoints of the record,
//! inclusion proofs, evidence bundles (checked by countersign and by the
//! independent Python verifier), replayed decisions, and every way of
//! tampering with the record caught, naming the seq.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use countersign::approval::keys::{ReviewerKey, SigningKey};
use countersign::audit::checkpoint::Checkpoint;
use countersign::audit::merkle;
use countersign::audit::note::{NoteSigner, Verifier};
use countersign::audit::record::chain_hash;

use crate::support::*;

fn out_text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A deployment of the payments policy whose record is checkpointed every
/// 100 ms with a key made by `countersign keygen`, published to a
/// directory (and to `witness`, when given), and whose reviewers alice and
/// bob hold Ed25519 keys made by `countersign keygen --reviewer`.
struct Evidence {
    d: Deployment,
}

impl Evidence {
    fn new(upstream: &str, witness: Option<&str>) -> Evidence {
        let d = Deployment::new(upstream, &payments_policy(), "hold: { wait: 100ms }\n");
        let dir = d.dir.path();
        let keygen = |args: &[&str]| {
            let out = countersign(args);
            assert!(out.status.success(), "{:?}", out_text(&out));
            out
        };
        let ckpt = dir.join("ckpt");
        let made = keygen(&[
            "keygen",
            "--out",
            ckpt.to_str().unwrap(),
            "--name",
            "countersign.test/audit",
        ]);
        assert!(out_text(&made).0.contains("whpk_"), "{:?}", out_text(&made));
        for who in ["alice", "bob"] {
            keygen(&[
                "keygen",
                "--reviewer",
                "--out",
                dir.join(who).to_str().unwrap(),
            ]);
        }
        let publish = match witness {
            Some(url) => format!("[\"dir://published\", \"{url}/witness\"]"),
            None => "[\"dir://published\"]".to_string(),
        };
        let yaml = std::fs::read_to_string(d.config_path())
            .unwrap()
            .replace(
                "audit: { store: \"sqlite://audit.db\", busy_timeout: 200ms }",
                &format!(
                    "audit:\n  store: \"sqlite://audit.db\"\n  busy_timeout: 200ms\n  checkpoint: {{ key_file: ckpt.key, interval: 100ms, publish: {publish} }}"
                ),
            )
            .replace(
                "alice: { key_env: CS_TEST_KEY_ALICE,",
                "alice: { key_file: alice.pub,",
            )
            .replace("bob: { key_env: CS_TEST_KEY_BOB,", "bob: { key_file: bob.pub,");
        assert!(yaml.contains("checkpoint:") && yaml.contains("alice.pub"));
        std::fs::write(d.config_path(), yaml).unwrap();
        Evidence { d }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.d.dir.path().join(name)
    }

    fn config(&self) -> String {
        self.d.config_path().to_str().unwrap().to_string()
    }

    fn public_key(&self) -> String {
        self.path("ckpt.pub").to_str().unwrap().to_string()
    }

    fn verifier(&self) -> Verifier {
        Verifier::parse(&std::fs::read_to_string(self.path("ckpt.pub")).unwrap()).unwrap()
    }

    fn signer_of(&self, reviewer: &str) -> SigningKey {
        SigningKey::parse(&std::fs::read_to_string(self.path(&format!("{reviewer}.key"))).unwrap())
            .unwrap()
    }

    /// Runs `countersign ARGS` with `--config` after the subcommand words.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        countersign(args)
    }

    /// The number of records and the largest stored checkpoint.
    fn sizes(&self) -> (i64, i64) {
        let conn = rusqlite::Connection::open(self.d.db_path()).unwrap();
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM records), (SELECT COALESCE(MAX(tree_size), 0) FROM checkpoints)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    /// Waits until a checkpoint covers every record.
    async fn wait_checkpointed(&self) -> i64 {
        let (records, signed) = eventually(async || self.sizes(), |(r, c)| r == c).await;
        assert_eq!(
            records, signed,
            "no checkpoint covers all {records} records"
        );
        signed
    }
}

/// Signs a review with `signer` and posts it.
async fn review(
    admin: &str,
    id: &str,
    reviewer: &str,
    signer: &SigningKey,
    verdict: &str,
) -> (u16, Value) {
    let view = admin_json(&format!("{admin}/v1/actions/{id}")).await;
    let body = json!({"action_id": id, "reviewer": reviewer, "verdict": verdict,
        "comment": format!("{verdict} by {reviewer}"), "request_digest": view["request_digest"]})
    .to_string();
    let mut req = client()
        .post(format!("{admin}/v1/actions/{id}/reviews"))
        .body(body.clone());
    for (n, v) in signer.headers(body.as_bytes()).unwrap() {
        req = req.header(n, v);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn payout(
    proxy: std::net::SocketAddr,
    amount: u64,
    invoice: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(format!("http://{proxy}/v1/payouts"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer AGENT-TOKEN-NOT-STORED")
        .header("x-agent-id", "ap-agent-7")
        .header("x-agent-on-behalf-of", "carol")
        .body(format!(
            r#"{{"amount": {amount}, "currency": "EUR", "to": "Globex"}}"#
        ));
    if let Some(i) = invoice {
        req = req.header("x-evidence-invoice", i);
    }
    req.send().await.unwrap()
}

/// The payments story: a read, a small payout, a payout without its
/// invoice, a payout alice approves (after which bob's late review is
/// refused) and one bob rejects. Returns the action ids by name.
async fn payments_story(
    e: &Evidence,
    cs: &countersign::app::Running,
) -> Vec<(&'static str, String)> {
    let admin = format!("http://{}", cs.admin_addr);
    let proxy = cs.proxy_addr;
    let read = client()
        .get(format!("http://{proxy}/v1/balance"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 201);
    let small = payout(proxy, 200, Some("INV-1")).await;
    assert_eq!(small.status(), 201);
    let denied = payout(proxy, 200, None).await;
    assert_eq!(denied.status(), 403);
    let approved = payout(proxy, 5_000, Some("INV-2")).await;
    assert_eq!(approved.status(), 202);
    let approved = action_id(&approved);
    let (s, v) = review(&admin, &approved, "alice", &e.signer_of("alice"), "approve").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("approved")), "{v}");
    wait_for_records(&e.d.db_path(), &approved, 5).await;
    let (s, _) = review(&admin, &approved, "bob", &e.signer_of("bob"), "approve").await;
    assert_eq!(s, 409, "a late review is refused (and recorded)");
    let rejected = payout(proxy, 6_000, Some("INV-3")).await;
    assert_eq!(rejected.status(), 202);
    let rejected = action_id(&rejected);
    let (s, v) = review(&admin, &rejected, "bob", &e.signer_of("bob"), "reject").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("rejected")), "{v}");
    let ids = vec![
        ("read", action_id(&read)),
        ("small", action_id(&small)),
        ("denied", action_id(&denied)),
        ("approved", approved),
        ("rejected", rejected),
    ];
    for (_, id) in &ids {
        answered_of(&e.d.db_path(), id).await;
    }
    ids
}

/// A change to an evidence bundle.
type Tamper<'a> = Box<dyn Fn(&mut Value) + 'a>;

fn run_python(bundle: &Path, public_key: &str) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/verify_bundle.py"))
        .arg(bundle)
        .args(["--public-key", public_key])
        .output()
        .expect("python3 runs (CI installs it with the cryptography package)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payments_story_is_evidence_a_third_party_can_check() {
    let upstream = Upstream::start().await;
    let witness = Upstream::start().await;
    let e = Evidence::new(&upstream.url(), Some(&witness.url()));
    let cs = e.d.start().await;
    let ids = payments_story(&e, &cs).await;
    let signed = e.wait_checkpointed().await;
    cs.stop().await;
    let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let cfg = e.config();
    let vkey = e.public_key();

    // The published copies: a file per checkpoint, and signed webhooks the
    // witness can check with the checkpoint key's whpk_ form.
    let published = e.path("published");
    let latest_file = published.join(countersign::audit::checkpointer::file_name(signed));
    let note = std::fs::read_to_string(&latest_file).unwrap();
    let cp = Checkpoint::open(&note, &e.verifier()).unwrap();
    assert_eq!(
        (cp.size as i64, cp.origin.as_str()),
        (signed, "countersign.test/audit")
    );
    let posted = eventually(async || witness.seen(), |s| !s.is_empty()).await;
    let hook = &posted[0];
    assert_eq!(hook.path_and_query, "/witness");
    let header = |n: &str| hook.headers.get(n).unwrap().to_str().unwrap().to_string();
    let key = ReviewerKey::parse(&e.verifier().webhook_key()).unwrap();
    key.verify_recorded(
        &header("webhook-id"),
        header("webhook-timestamp").parse().unwrap(),
        &header("webhook-signature"),
        &hook.body,
    )
    .expect("the webhook is signed with the checkpoint key");
    assert!(Checkpoint::open(std::str::from_utf8(&hook.body).unwrap(), &e.verifier()).is_ok());

    // audit verify: the chain, the stored checkpoints and the published
    // ones, and the Ed25519 reviews.
    let out = e.cli(&["audit", "verify", "--config", &cfg]);
    let (stdout, stderr) = out_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("{signed} records, chain intact")),
        "{stdout}"
    );
    assert!(
        stdout.contains("each signed by the checkpoint key"),
        "{stdout}"
    );
    assert!(stdout.contains("3 signed review(s) verify"), "{stdout}");
    let out = e.cli(&[
        "audit",
        "verify",
        "--config",
        &cfg,
        "--checkpoint",
        published.to_str().unwrap(),
        "--public-key",
        &vkey,
    ]);
    let (stdout, stderr) = out_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("(seq 1 to {signed}) agrees with the record")),
        "{stdout}"
    );

    // audit show: one timeline, the rule's source, what the agent got,
    // and the closing checkpoint line.
    let out = e.cli(&["audit", "show", "--config", &cfg, &id("approved")]);
    let (text, stderr) = out_text(&out);
    assert!(out.status.success(), "{stderr}");
    for part in [
        "TIMELINE",
        "rule payments.payout.over_auto_limit is at policy.rego:",
        "|     \"rules\": [\"payments.payout.over_auto_limit\"],",
        "approve by alice",
        "refused review attempt as bob: verdict approve, digest sha256:",
        "signature verified with an ed25519 key",
        "the agent got 202",
        "status_url",
        "upstream answered 201",
        "CHECKPOINT: every record shown here is in the latest signed checkpoint",
    ] {
        assert!(text.contains(part), "missing {part}:\n{text}");
    }
    let timeline: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "TIMELINE")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let kinds: Vec<&str> = timeline
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "decided",
            "answered",
            "reviewed",
            "approved",
            "forwarded",
            "completed",
            "review_refused"
        ],
        "{text}"
    );
    let out = e.cli(&["audit", "show", "--config", &cfg, &id("denied"), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answered"]["status"], 403);
    assert_eq!(
        v["answered"]["body"]["rules"],
        json!(["payments.payout.missing_invoice"])
    );
    assert_eq!(v["checkpoint"]["covers_all"], true);
    for r in v["timeline"].as_array().unwrap() {
        assert_eq!(
            r["hash"].as_str().unwrap().len(),
            64,
            "full hashes in --json"
        );
    }

    // audit replay reaches the recorded decision for every action.
    for (name, action) in &ids {
        let out = e.cli(&["audit", "replay", "--config", &cfg, action]);
        let (stdout, stderr) = out_text(&out);
        assert!(out.status.success(), "{name}: {stdout}{stderr}");
        assert!(
            stdout.contains("reaches the recorded decision"),
            "{name}: {stdout}"
        );
    }

    // audit prove: an inclusion proof anyone can check against the checkpoint.
    let decided_seq = v["records"][0]["seq"].as_i64().unwrap();
    let out = e.cli(&[
        "audit",
        "prove",
        "--config",
        &cfg,
        &decided_seq.to_string(),
        "--from-size",
        "1",
    ]);
    let (stdout, stderr) = out_text(&out);
    assert!(out.status.success(), "{stderr}");
    let proof: Value = serde_json::from_str(&stdout).unwrap();
    let cp = Checkpoint::open(proof["checkpoint"].as_str().unwrap(), &e.verifier()).unwrap();
    let hashes: Vec<merkle::Hash> = proof["inclusion_proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let leaf = merkle::record_leaf(proof["record_hash"].as_str().unwrap()).unwrap();
    merkle::verify_inclusion(decided_seq as u64 - 1, cp.size, &leaf, &hashes, &cp.root).unwrap();
    assert_eq!(proof["record"]["kind"], "decided");
    let consistency: Vec<merkle::Hash> = proof["consistency"]["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let first: merkle::Hash = hex::decode(proof["consistency"]["from_root_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    merkle::verify_consistency(1, cp.size, &consistency, &first, &cp.root).unwrap();
    let out = e.cli(&[
        "audit",
        "prove",
        "--config",
        &cfg,
        &(signed + 1).to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));

    // An evidence bundle verifies offline, with countersign and with the
    // independent Python verifier, and tells the story.
    let bundle = e.path("approved.bundle.json");
    let out = e.cli(&[
        "audit",
        "export",
        "--config",
        &cfg,
        &id("approved"),
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", out_text(&out));
    std::fs::remove_file(e.d.db_path()).unwrap(); // no database from here on
    let out = e.cli(&[
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--public-key",
        &vkey,
    ]);
    let (stdout, stderr) = out_text(&out);
    assert!(out.status.success(), "{stderr}");
    for part in [
        "VERIFIED: the 7 records of action",
        "VERIFIED: policy revision sha256:",
        "signed by alice's ed25519 key",
        "signed by bob's ed25519 key",
        "VERIFIED: replaying the recorded input on revision",
        "1. REQUEST",
        "2. EVIDENCE",
        "invoice: INV-2",
        "3. DECISION",
        "4. REVIEWS",
        "5. RESULT",
        "the agent got 202",
    ] {
        assert!(stdout.contains(part), "missing {part}:\n{stdout}");
    }
    let out = run_python(&bundle, &vkey);
    let (stdout, stderr) = out_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("VERIFIED: policy revision"), "{stdout}");
    assert!(stdout.contains("signed by alice's ed25519 key"), "{stdout}");

    // One byte changed anywhere that matters: a record, a proof, the
    // policy's text, a review, a reviewer's key, the checkpoint.
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let reviewed = original["records"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["kind"] == "reviewed")
        .unwrap();
    let flip = |s: &str, needle: &str| -> String {
        let at = s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let tampered: Vec<(&str, Tamper)> = vec![
        (
            "a record's payload",
            Box::new(|b: &mut Value| {
                let p = b["records"][0]["payload"]
                    .as_str()
                    .unwrap()
                    .replace("5000", "5001");
                b["records"][0]["payload"] = json!(p);
            }),
        ),
        (
            "a record's time",
            Box::new(|b: &mut Value| {
                let t = b["records"][1]["time"].as_str().unwrap();
                b["records"][1]["time"] = json!(flip(t, "2"));
            }),
        ),
        (
            "a record's seq",
            Box::new(|b: &mut Value| {
                let s = b["records"][2]["seq"].as_i64().unwrap();
                b["records"][2]["seq"] = json!(s + 1);
            }),
        ),
        (
            "a proof",
            Box::new(|b: &mut Value| {
                let h = b["records"][0]["inclusion_proof"][0]
                    .as_str()
                    .unwrap()
                    .to_string();
                b["records"][0]["inclusion_proof"][0] = json!(flip(&h, &h[..1]));
            }),
        ),
        (
            "the policy's text",
            Box::new(|b: &mut Value| {
                let p = b["policy"]["payload"].as_str().unwrap().replacen(
                    "auto_approve_limit := 1000",
                    "auto_approve_limit := 9000",
                    1,
                );
                b["policy"]["payload"] = json!(p);
            }),
        ),
        (
            "a review's signature",
            Box::new(move |b: &mut Value| {
                let p = b["records"][reviewed]["payload"].as_str().unwrap();
                let at = p.find("v1a,").unwrap() + 6;
                let mut bytes = p.as_bytes().to_vec();
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                b["records"][reviewed]["payload"] = json!(String::from_utf8(bytes).unwrap());
            }),
        ),
        (
            "a reviewer's key",
            Box::new(|b: &mut Value| {
                let k = b["reviewer_keys"]["alice"].as_str().unwrap();
                let mut bytes = k.as_bytes().to_vec();
                bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
                b["reviewer_keys"]["alice"] = json!(String::from_utf8(bytes).unwrap());
            }),
        ),
        (
            "the checkpoint",
            Box::new(|b: &mut Value| {
                let n = b["checkpoint"].as_str().unwrap();
                let size_line = n.lines().nth(1).unwrap().to_string();
                b["checkpoint"] = json!(n.replacen(
                    &format!("\n{size_line}\n"),
                    &format!("\n{}\n", size_line.parse::<u64>().unwrap() + 1),
                    1
                ));
            }),
        ),
        (
            "a record's hash",
            Box::new(|b: &mut Value| {
                let h = b["records"][3]["hash"].as_str().unwrap().to_string();
                b["records"][3]["hash"] = json!(flip(&h, &h[..1]));
            }),
        ),
        // Every record left proves its inclusion; the approval no longer
        // has the signed reviews it rests on.
        (
            "the reviews left out",
            Box::new(|b: &mut Value| {
                let records = b["records"].as_array_mut().unwrap();
                records.retain(|r| r["kind"] != "reviewed");
            }),
        ),
    ];
    let bad = e.path("tampered.json");
    for (what, change) in &tampered {
        let mut b = original.clone();
        change(&mut b);
        assert_ne!(b, original, "{what} changed");
        std::fs::write(&bad, serde_json::to_string_pretty(&b).unwrap()).unwrap();
        let out = e.cli(&[
            "verify-bundle",
            bad.to_str().unwrap(),
            "--public-key",
            &vkey,
        ]);
        let (stdout, stderr) = out_text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {stdout}");
        assert!(stderr.contains("does not verify"), "{what}: {stderr}");
        assert!(
            !stdout.contains("1. REQUEST"),
            "{what}: no story for a bad bundle"
        );
        let out = run_python(&bad, &vkey);
        assert_eq!(
            out.status.code(),
            Some(1),
            "python, {what}: {:?}",
            out_text(&out)
        );
    }

    // A changed policy file: the replay of the bundle's decision disagrees.
    let mut b = original.clone();
    let p = b["policy"]["payload"].as_str().unwrap().replacen(
        "auto_approve_limit := 1000",
        "auto_approve_limit := 9000",
        1,
    );
    b["policy"]["payload"] = json!(p);
    std::fs::write(&bad, serde_json::to_string(&b).unwrap()).unwrap();
    let out = e.cli(&["audit", "replay", "--bundle", bad.to_str().unwrap()]);
    let (stdout, stderr) = out_text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("does NOT reach the recorded decision"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action: recorded \"hold\", replayed \"allow\""),
        "{stdout}"
    );
    assert!(
        stderr.contains("does not reach the recorded decision"),
        "{stderr}"
    );
    let out = e.cli(&["audit", "replay", "--bundle", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", out_text(&out));
}

/// Runs a few calls with checkpoints, stops, and returns the deployment
/// with a copy of the published checkpoints kept out of the operator's reach.
async fn checkpointed_record() -> (Evidence, PathBuf) {
    let upstream = Upstream::start().await;
    let e = Evidence::new(&upstream.url(), None);
    let cs = e.d.start().await;
    let admin = format!("http://{}", cs.admin_addr);
    for amount in [100, 200] {
        assert_eq!(
            payout(cs.proxy_addr, amount, Some("INV-1")).await.status(),
            201
        );
    }
    let held = action_id(&payout(cs.proxy_addr, 5_000, Some("INV-9")).await);
    let (s, _) = review(&admin, &held, "alice", &e.signer_of("alice"), "approve").await;
    assert_eq!(s, 200);
    answered_of(&e.d.db_path(), &held).await;
    wait_for_records(&e.d.db_path(), &held, 5).await;
    e.wait_checkpointed().await;
    cs.stop().await;
    // A restart rebuilds the tree from the store and goes on from there.
    let cs = e.d.start().await;
    assert_eq!(
        payout(cs.proxy_addr, 300, Some("INV-1")).await.status(),
        201
    );
    e.wait_checkpointed().await;
    cs.stop().await;
    // Everything in the main file, so a copy of it is the whole record.
    rusqlite::Connection::open(e.d.db_path())
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let kept = e.path("witness-copy");
    std::fs::create_dir(&kept).unwrap();
    for f in std::fs::read_dir(e.path("published")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, kept.join(f.file_name().unwrap())).unwrap();
    }
    (e, kept)
}

/// Puts a copy of the record file back, without the write-ahead log of
/// the tampering before it.
fn restore(db: &Path, bytes: &[u8]) {
    for ext in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(p);
    }
    std::fs::write(db, bytes).unwrap();
}

/// Every record: (seq, time, action_id, kind, payload text, prev_hash, hash).
type Row = (i64, String, String, String, String, String, String);

fn rows(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT seq, time, action_id, kind, payload, prev_hash, hash FROM records ORDER BY seq",
        )
        .unwrap();
    let out = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    out
}

/// Rewrites the record from `rows`, re-chaining every hash: what someone
/// with the file and the code would do to hide an edit.
fn rewrite(db: &Path, rows: &[Row]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute("DELETE FROM records", []).unwrap();
    let mut prev = countersign::audit::record::GENESIS.to_string();
    for (seq, time, action, kind, payload, _, _) in rows {
        let hash = chain_hash(*seq, time, action, kind, &prev, payload);
        conn.execute(
            "INSERT INTO records (seq, time, action_id, kind, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![seq, time, action, kind, payload, prev, hash],
        )
        .unwrap();
        prev = hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_naming_the_seq() {
    let (e, kept) = checkpointed_record().await;
    let cfg = e.config();
    let vkey = e.public_key();
    let kept = kept.to_str().unwrap().to_string();
    let db = e.d.db_path();
    let pristine = std::fs::read(&db).unwrap();
    let all = rows(&db);
    let n = all.len() as i64;
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--config", cfg.as_str()];
        args.extend_from_slice(extra);
        let out = e.cli(&args);
        (out.status.code(), out_text(&out).1)
    };
    let with_witness = ["--checkpoint", kept.as_str(), "--public-key", vkey.as_str()];
    assert_eq!(
        verify(&with_witness).0,
        Some(0),
        "{}",
        verify(&with_witness).1
    );
    let tamper = |sql: &str| {
        restore(&db, &pristine);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(sql).unwrap();
    };

    // The tail deleted: the stored checkpoints say the record was longer;
    // with those deleted too, the witness's copies do.
    tamper(&format!("DELETE FROM records WHERE seq > {}", n - 2));
    let (code, err) = verify(&[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("at seq {}", n - 1)) && err.contains("were deleted"),
        "{err}"
    );
    tamper(&format!(
        "DELETE FROM records WHERE seq > {}; DELETE FROM checkpoints;",
        n - 2
    ));
    assert_eq!(
        verify(&[]).0,
        Some(0),
        "without checkpoints a shorter record looks whole"
    );
    let (code, err) = verify(&with_witness);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("at seq {}", n - 1))
            && err.contains(&format!("the record ends at seq {}", n - 2))
            && err.contains("were deleted")
            && err.contains("witness-copy"),
        "{err}"
    );

    // The whole file rewritten with a fresh chain, an edited payout in it,
    // and new checkpoints signed by a key of the operator's own.
    restore(&db, &pristine);
    let edited_seq = all
        .iter()
        .find(|r| r.3 == "decided" && r.4.contains("\"amount\":200"))
        .unwrap()
        .0;
    let mut doctored = all.clone();
    let row = &mut doctored[edited_seq as usize - 1];
    row.4 = row.4.replace("\"amount\":200", "\"amount\":2");
    rewrite(&db, &doctored);
    let forger = NoteSigner::generate("countersign.test/audit").unwrap();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("DELETE FROM checkpoints", []).unwrap();
        let leaves: Vec<merkle::Hash> = rows(&db)
            .iter()
            .map(|r| merkle::record_leaf(&r.6).unwrap())
            .collect();
        let forged = Checkpoint {
            origin: "countersign.test/audit".into(),
            size: n as u64,
            root: merkle::root(&leaves),
        }
        .sign(&forger)
        .unwrap();
        conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, note, time) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![forged.tree_size, forged.root_hash, forged.note, forged.time],
        )
        .unwrap();
    }
    let (code, err) = verify(&["--public-key", vkey.as_str()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("at seq {n}")) && err.contains("forged checkpoint"),
        "{err}"
    );
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("DELETE FROM checkpoints", []).unwrap();
    }
    assert_eq!(
        verify(&[]).0,
        Some(0),
        "a re-chained file passes the chain walk alone"
    );
    let (code, err) = verify(&with_witness);
    assert_eq!(code, Some(1));
    // The witness's copies bracket the edit: the last one that agrees ends
    // before the edited seq, and the first that disagrees covers it.
    let sizes: Vec<i64> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|f| {
            f.unwrap().file_name().to_string_lossy()["checkpoint-".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    let before = sizes
        .iter()
        .filter(|s| **s < edited_seq)
        .max()
        .copied()
        .unwrap_or(0);
    let covering = sizes
        .iter()
        .filter(|s| **s >= edited_seq)
        .min()
        .copied()
        .unwrap();
    assert!(
        err.contains(&format!("at seq {}", before + 1))
            && err.contains(&format!(
                "from seq {} to seq {covering} was rewritten",
                before + 1
            )),
        "edited seq {edited_seq}, checkpoints {sizes:?}: {err}"
    );

    // Two records swapped: the chain names the first.
    tamper("UPDATE records SET seq = -3 WHERE seq = 3; UPDATE records SET seq = 3 WHERE seq = 6; UPDATE records SET seq = 6 WHERE seq = -3;");
    let (code, err) = verify(&[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at seq 3"), "{err}");

    // A forged checkpoint handed to the verifier: signed by another key,
    // or a real one with its size edited.
    restore(&db, &pristine);
    let leaves: Vec<merkle::Hash> = all
        .iter()
        .map(|r| merkle::record_leaf(&r.6).unwrap())
        .collect();
    let forged = Checkpoint {
        origin: "countersign.test/audit".into(),
        size: n as u64,
        root: merkle::root(&leaves),
    }
    .sign(&forger)
    .unwrap();
    let forged_file = e.path("forged-checkpoint");
    std::fs::write(&forged_file, &forged.note).unwrap();
    let (code, err) = verify(&[
        "--checkpoint",
        forged_file.to_str().unwrap(),
        "--public-key",
        vkey.as_str(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("at seq {n}"))
            && err.contains("forged-checkpoint")
            && err.contains("is not a valid checkpoint signed by"),
        "{err}"
    );
    let real = std::fs::read_to_string(
        e.path("published")
            .join(countersign::audit::checkpointer::file_name(n)),
    )
    .unwrap();
    std::fs::write(
        &forged_file,
        real.replacen(&format!("\n{n}\n"), &format!("\n{}\n", n + 5), 1),
    )
    .unwrap();
    let (code, err) = verify(&[
        "--checkpoint",
        forged_file.to_str().unwrap(),
        "--public-key",
        vkey.as_str(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("does not verify"), "{err}");

    // A review forged with a wrong key (the chain re-made around it and
    // the stored checkpoints removed, so only the review can give it away).
    let reviewed = all.iter().find(|r| r.3 == "reviewed").unwrap().clone();
    let mut payload: Value = serde_json::from_str(&reviewed.4).unwrap();
    let (other, _) = countersign::approval::keys::generate().unwrap();
    let forged_sig = SigningKey::parse(&other)
        .unwrap()
        .sign(
            payload["webhook_id"].as_str().unwrap(),
            payload["webhook_timestamp"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            payload["signed_body"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
    payload["webhook_signature"] = json!(forged_sig);
    let mut doctored = all.clone();
    doctored[reviewed.0 as usize - 1].4 = countersign::audit::record::canonical_json(&payload);
    restore(&db, &pristine);
    rewrite(&db, &doctored);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM checkpoints", [])
        .unwrap();
    let (code, err) = verify(&[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("at seq {}", reviewed.0))
            && err.contains("does not verify with `alice`'s key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_is_never_signed() {
    let (e, _) = checkpointed_record().await;
    let db = e.d.db_path();
    let (records, signed) = e.sizes();
    assert_eq!(records, signed);
    // An edit while countersign is down: at start the record no longer
    // hashes to its last checkpoint, so no checkpoint is signed again.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("UPDATE records SET hash = prev_hash WHERE seq = 2", [])
            .unwrap();
    }
    let cs = e.d.start().await;
    let resp = payout(cs.proxy_addr, 100, Some("INV-1")).await;
    assert_eq!(resp.status(), 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cs.stop().await;
    let (records_now, signed_now) = e.sizes();
    assert!(records_now > records);
    assert_eq!(
        signed_now, signed,
        "nothing was signed over the tampered record"
    );
}
