//! Verified identity: bearer tokens (JWT) checked against a JWKS file or a
//! JWKS URL served on port 0, client certificates on a TLS proxy listener,
//! and the sidecar's pod. Keys and certificates are made at test time
//! (ring, rcgen); tokens are signed here with ring, independently of the
//! code under test. Each test checks what reached the policy (a policy
//! that echoes `input.agent` into its reasons), the record, and what was
//! refused with 401.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{json, Value};

use crate::holds::Admin;
use crate::proxy::contains;
use crate::support::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "countersign";

/// Echoes what the policy saw of the agent: `/echo...` is allowed, `/held...`
/// held for a finance approver, anything else denied with `input.agent` as
/// its reason.
const ECHO_AGENT: &str = r#"package countersign
import rego.v1
decision := {"action": "allow", "risk": "low"} if startswith(input.request.path, "/echo")
decision := {"action": "deny", "risk": "low", "reasons": [json.marshal(input.agent)], "rules": ["echo.agent"]} if {
  not startswith(input.request.path, "/echo")
  not startswith(input.request.path, "/held")
}
decision := {"action": "hold", "risk": "high", "reasons": [json.marshal(input.agent)],
  "approval": {"groups": ["finance-approvers"], "min": 1}} if startswith(input.request.path, "/held")
"#;

// ---------------------------------------------------------------------------
// Tokens, signed with ring.

enum Signer {
    Es256(sig::EcdsaKeyPair),
    EdDsa(sig::Ed25519KeyPair),
}

/// A signing key and its public JWK.
struct SigningKey {
    kid: String,
    signer: Signer,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    fn es256(kid: &str) -> SigningKey {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        SigningKey {
            kid: kid.into(),
            signer: Signer::Es256(pair),
        }
    }

    fn eddsa(kid: &str) -> SigningKey {
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        SigningKey {
            kid: kid.into(),
            signer: Signer::EdDsa(pair),
        }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Es256(_) => "ES256",
            Signer::EdDsa(_) => "EdDSA",
        }
    }

    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Es256(p) => {
                let point = p.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
            Signer::EdDsa(p) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(p.public_key().as_ref())})
            }
        }
    }

    fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Es256(p) => p
                .sign(&SystemRandom::new(), message)
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::EdDsa(p) => p.sign(message).as_ref().to_vec(),
        }
    }

    /// A token with this key's `alg` and `kid`.
    fn token(&self, claims: &Value) -> String {
        self.token_with(
            &json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    fn token_with(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = self.sign_raw(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(signature))
    }
}

fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims for `sub`, acting through `actor` when given.
fn claims(sub: &str, actor: Option<&str>) -> Value {
    let mut c = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "iat": now(), "nbf": now() - 5, "exp": now() + 300,
        "jti": format!("jti-{}", &countersign::audit::record::new_action_id()[..12]),
    });
    if let Some(a) = actor {
        c["act"] = json!({"sub": a});
    }
    c
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// A deployment checking tokens against `jwks.json` in its folder.
fn jwt_deployment(upstream: &str, keys: &[&SigningKey], extra: &str) -> Deployment {
    let d = Deployment::new(
        upstream,
        ECHO_AGENT,
        &format!(
            "identity:\n  jwt: {{ jwks_file: jwks.json, issuer: \"{ISSUER}\", audience: {AUDIENCE}, leeway: 5s }}\n{extra}"
        ),
    );
    std::fs::write(d.dir.path().join("jwks.json"), jwks(keys)).unwrap();
    d
}

async fn call(
    proxy: SocketAddr,
    path: &str,
    token: Option<&str>,
    declared: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(format!("http://{proxy}{path}"))
        .header("content-type", "application/json")
        .body(r#"{"amount": 10}"#);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (n, v) in declared {
        req = req.header(*n, *v);
    }
    req.send().await.unwrap()
}

/// The agent block the echo policy put in its first reason.
async fn echoed_agent(resp: reqwest::Response) -> Value {
    let body: Value = resp.json().await.unwrap();
    serde_json::from_str(body["reasons"][0].as_str().unwrap()).unwrap()
}

/// The refusal record of a call answered 401.
async fn refused(d: &Deployment, resp: reqwest::Response, reason: &str) -> Value {
    assert_eq!(resp.status(), 401, "{reason}");
    let id = action_id(&resp);
    let body: Value = resp.json().await.unwrap();
    wait_for_records(&d.db_path(), &id, 1).await;
    let failed = payload_of(&d.db_path(), &id, "failed");
    assert_eq!(failed["reason"], reason, "{failed}");
    assert_eq!(failed["status"], 401);
    assert_eq!(
        failed["error"], body["error"],
        "the record says what the agent was told"
    );
    assert!(failed["agent"]["verified"].is_null(), "{failed}");
    failed
}

// ---------------------------------------------------------------------------
// Bearer tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_token_reaches_the_policy_and_the_record_and_never_the_upstream() {
    let upstream = Upstream::start().await;
    let key = SigningKey::es256("k1");
    let ed = SigningKey::eddsa("ed1");
    let d = jwt_deployment(&upstream.url(), &[&key, &ed], "");
    let cs = d.start().await;
    let token_claims = with(claims("carol", Some("ap-agent-7")), "groups", json!(["ap"]));
    let token = key.token(&token_claims);

    // Denied with the agent block as its reason: what the policy saw.
    let resp = call(
        cs.proxy_addr,
        "/v1/payouts",
        Some(&token),
        &[
            ("x-agent-id", "ap-agent-7"),
            ("x-agent-on-behalf-of", "carol"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 403);
    let id = action_id(&resp);
    let seen = echoed_agent(resp).await;
    assert_eq!(
        seen["id"], "ap-agent-7",
        "the declared id stays as declared"
    );
    let v = &seen["verified"];
    assert_eq!(v["method"], "jwt");
    assert_eq!(v["subject"], "carol");
    assert_eq!(v["actor"], "ap-agent-7");
    assert_eq!(v["agent"], "ap-agent-7");
    assert_eq!(v["on_behalf_of"], "carol");
    assert_eq!(v["issuer"], ISSUER);
    assert_eq!(v["claims"]["groups"], json!(["ap"]));
    assert_eq!(v["mismatch"], json!([]));

    // The record keeps the proof: key id, jti, expiry; never the token.
    let decided = payload_of(&d.db_path(), &id, "decided");
    let proof = &decided["agent"]["verified"]["proof"];
    assert_eq!(proof["kid"], "k1");
    assert_eq!(proof["alg"], "ES256");
    assert_eq!(proof["jti"], token_claims["jti"]);
    assert!(
        proof["expires_at"].as_str().unwrap().ends_with('Z'),
        "{proof}"
    );
    assert_eq!(decided["agent"]["verified"]["subject"], "carol");

    // An EdDSA token, allowed: the upstream never gets countersign's token.
    let ed_token = ed.token(&claims("system:serviceaccount:ap:agent", None));
    let resp = call(cs.proxy_addr, "/echo", Some(&ed_token), &[]).await;
    assert_eq!(resp.status(), 200);
    let id = action_id(&resp);
    let echoed: Value = resp.json().await.unwrap();
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    assert!(upstream.seen()[0].headers.get("authorization").is_none());
    wait_for_records(&d.db_path(), &id, 2).await;
    let decided = payload_of(&d.db_path(), &id, "decided");
    assert_eq!(
        decided["agent"]["verified"]["subject"],
        "system:serviceaccount:ap:agent"
    );
    assert_eq!(decided["agent"]["verified"]["proof"]["alg"], "EdDSA");
    assert_eq!(decided["request"]["headers"]["authorization"], "[redacted]");

    // A Basic credential is not a token for countersign: left alone.
    let resp = client()
        .post(format!("http://{}/echo", cs.proxy_addr))
        .basic_auth("upstream-user", Some("upstream-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(upstream.seen()[1].headers.get("authorization").is_some());
    cs.stop().await;

    let record = record_bytes(&d);
    for t in [&token, &ed_token] {
        assert!(
            !contains(&record, t.as_bytes()),
            "the token is in the record"
        );
        let signature = t.rsplit('.').next().unwrap();
        assert!(!contains(&record, signature.as_bytes()));
    }

    // audit show says how the identity was established.
    let out = countersign(&[
        "audit",
        "show",
        "--config",
        d.config_path().to_str().unwrap(),
        &id,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("identity:     verified by JWT (issuer https://issuer.test, key ed1"),
        "{text}"
    );
    assert!(text.contains("as system:serviceaccount:ap:agent"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_do_not_verify_are_refused_with_401_and_recorded() {
    let upstream = Upstream::start().await;
    let key = SigningKey::es256("k1");
    let ed = SigningKey::eddsa("ed1");
    let impostor = SigningKey::es256("k1");
    let d = jwt_deployment(&upstream.url(), &[&key, &ed], "");
    let cs = d.start().await;
    let good = claims("carol", Some("ap-agent-7"));
    let header = |alg: &str, kid: &str| json!({"alg": alg, "kid": kid, "typ": "JWT"});
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string()),
        b64(good.to_string())
    );
    // HS256 "signed" with the public key's JWK text: algorithm confusion.
    let hs256 = {
        let input = format!(
            "{}.{}",
            b64(header("HS256", "k1").to_string()),
            b64(good.to_string())
        );
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.jwk().to_string().as_bytes());
        format!("{input}.{}", b64(ring::hmac::sign(&k, input.as_bytes())))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            key.token(&with(good.clone(), "exp", json!(now() - 120))),
            "expired",
        ),
        (
            "not yet valid",
            key.token(&with(good.clone(), "nbf", json!(now() + 600))),
            "not valid yet",
        ),
        (
            "exp as a string",
            key.token(&with(good.clone(), "exp", json!("never"))),
            "`exp`",
        ),
        (
            "wrong audience",
            key.token(&with(good.clone(), "aud", json!("payments"))),
            "audience",
        ),
        (
            "wrong issuer",
            key.token(&with(good.clone(), "iss", json!("https://evil.test"))),
            "issued",
        ),
        (
            "issuer in an array",
            key.token(&with(
                good.clone(),
                "iss",
                json!(["https://evil.test", ISSUER]),
            )),
            "`iss`",
        ),
        (
            "no subject",
            key.token(&with(good.clone(), "sub", json!(""))),
            "`sub`",
        ),
        (
            "bad signature",
            impostor.token(&good),
            "signature does not verify",
        ),
        (
            "unknown key id",
            key.token_with(&header("ES256", "k9"), &good),
            "no key with id `k9`",
        ),
        ("alg none", unsigned, "`none`"),
        ("alg confusion", hs256, "`HS256`"),
        (
            "key of another type",
            key.token_with(&header("ES256", "ed1"), &good),
            "key `ed1` is not for ES256",
        ),
        (
            "critical extension",
            key.token_with(
                &json!({"alg": "ES256", "kid": "k1", "crit": ["b64"]}),
                &good,
            ),
            "critical",
        ),
        ("not a JWT", "not-a-token".to_string(), "not a JWT"),
    ];
    for (what, token, says) in cases {
        // A token is checked on every route, whatever the policy would say.
        let resp = call(cs.proxy_addr, "/echo", Some(&token), &[]).await;
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"countersign\", error=\"invalid_token\"",
            "{what}"
        );
        let failed = refused(&d, resp, "identity_invalid").await;
        let error = failed["error"].as_str().unwrap();
        assert!(error.contains(says), "{what}: {error}");
        if token.len() > 20 {
            assert!(
                !error.contains(&token[..20]),
                "{what}: the message quotes the token"
            );
        }
    }
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_requires_identity_refuses_calls_that_prove_none() {
    let upstream = Upstream::start().await;
    let key = SigningKey::es256("k1");
    let d = jwt_deployment(&upstream.url(), &[&key], "");
    d.edit_config(
        "    timeout: 1s\n",
        "    timeout: 1s\n    identity: { required: true }\n",
    );
    let cs = d.start().await;
    let resp = call(
        cs.proxy_addr,
        "/echo",
        None,
        &[("x-agent-id", "ap-agent-7")],
    )
    .await;
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"countersign\""
    );
    let failed = refused(&d, resp, "identity_required").await;
    assert_eq!(
        failed["agent"]["id"], "ap-agent-7",
        "the declared agent is kept"
    );
    let resp = client()
        .post(format!("http://{}/echo", cs.proxy_addr))
        .basic_auth("someone", Some("pw"))
        .send()
        .await
        .unwrap();
    refused(&d, resp, "identity_required").await;
    let token = key.token(&claims("ap-agent-7", None));
    assert_eq!(
        call(cs.proxy_addr, "/echo", Some(&token), &[])
            .await
            .status(),
        200
    );
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;
}

// ---------------------------------------------------------------------------
// A JWKS URL.

/// Serves a JWKS at `/jwks` on port 0; `None` answers 503 (the issuer is down).
struct JwksServer {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some(body)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (s, f) = (served.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, f) = (s.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let answer = match s.lock().unwrap().clone() {
                            Some(b) => Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(b))),
                            None => Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::new())),
                        };
                        async move { Ok::<_, Infallible>(answer.unwrap()) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        JwksServer {
            url: format!("http://{addr}/jwks"),
            body: served,
            fetches,
        }
    }

    fn serve(&self, body: Option<String>) {
        *self.body.lock().unwrap() = body;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_rotation_is_picked_up_and_an_outage_keeps_the_last_good_keys() {
    let upstream = Upstream::start().await;
    let (k1, k2) = (SigningKey::es256("k1"), SigningKey::eddsa("k2"));
    let issuer = JwksServer::start(jwks(&[&k1])).await;
    let d = Deployment::new(
        &upstream.url(),
        ECHO_AGENT,
        &format!(
            "identity:\n  jwt: {{ jwks_url: \"{}\", issuer: \"{ISSUER}\", audience: {AUDIENCE}, refresh: 1s }}\n",
            issuer.url
        ),
    );
    let cs = d.start().await;
    let proxy = cs.proxy_addr;
    let status = async |key: &SigningKey| {
        let t = key.token(&claims("ap-agent-7", None));
        call(proxy, "/echo", Some(&t), &[]).await.status().as_u16()
    };
    // The first fetch happens in the background right after start.
    assert_eq!(
        eventually(async || status(&k1).await, |s| *s == 200).await,
        200
    );
    assert_eq!(status(&k2).await, 401, "k2 is not published yet");

    // The issuer rotates: k2 in, k1 out.
    issuer.serve(Some(jwks(&[&k2])));
    assert_eq!(
        eventually(async || status(&k2).await, |s| *s == 200).await,
        200
    );
    assert_eq!(
        eventually(async || status(&k1).await, |s| *s == 401).await,
        401
    );

    // The issuer goes down: the last good keys (k2) stay in force.
    issuer.serve(None);
    let before = issuer.fetches.load(Ordering::SeqCst);
    let failed_fetches = eventually(
        async || issuer.fetches.load(Ordering::SeqCst),
        |n| *n >= before + 2,
    )
    .await;
    assert!(failed_fetches >= before + 2, "countersign kept asking");
    assert_eq!(status(&k2).await, 200);
    let ready = readyz(cs.admin_addr).await;
    assert!(
        ready.to_string().contains("jwks"),
        "the failing refresh shows: {ready}"
    );
    cs.stop().await;
}

// ---------------------------------------------------------------------------
// Separation of duties against the verified subject.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_principal_cannot_hide_the_token_subject_from_separation_of_duties() {
    let upstream = Upstream::start().await;
    let key = SigningKey::es256("k1");
    let d = jwt_deployment(&upstream.url(), &[&key], "hold: { wait: 10s }\n");
    let cs = d.start().await;
    let proxy = cs.proxy_addr;
    // The token proves the agent acts for alice; the header claims bob's
    // assistant dave asked.
    let token = key.token(&claims("alice", Some("ap-agent-9")));
    let held = tokio::spawn(async move {
        call(
            proxy,
            "/held/payout",
            Some(&token),
            &[
                ("x-agent-id", "ap-agent-9"),
                ("x-agent-on-behalf-of", "dave"),
            ],
        )
        .await
    });
    let admin = Admin::of(&cs);
    let id = admin.wait_pending(1).await.remove(0);
    let decided = payload_of(&d.db_path(), &id, "decided");
    assert_eq!(
        decided["agent"]["verified"]["mismatch"],
        json!(["on_behalf_of"]),
        "the record shows the declared principal is not the proven one"
    );
    let (status, body) = admin.review(&id, "alice", "approve").await;
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("verified subject"), "{error}");
    let (status, body) = admin.review(&id, "bob", "approve").await;
    assert_eq!(status, 200, "{body}");
    let resp = held.await.unwrap();
    assert_eq!(
        resp.status(),
        201,
        "approved by someone who is no party, forwarded"
    );
    cs.stop().await;

    let out = countersign(&[
        "audit",
        "show",
        "--config",
        d.config_path().to_str().unwrap(),
        &id,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("as ap-agent-9, acting for alice"), "{text}");
    assert!(
        text.contains("MISMATCH:     declared on_behalf_of `dave` is not the verified `alice`"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The token stays out of the record, the log and the admin API.

/// A policy that tries to put the token into its reasons and rules.
const LEAKY_POLICY: &str = r#"package countersign
import rego.v1
auth := object.get(input.request.headers, "authorization", "none")
decision := {"action": "allow", "risk": "low"} if startswith(input.request.path, "/echo")
decision := {"action": "deny", "risk": "high",
  "reasons": [sprintf("auth was %s", [auth]), sprintf("token %s", [trim_prefix(auth, "Bearer ")])],
  "rules": [sprintf("rule.%s", [trim_prefix(auth, "Bearer ")])]} if not startswith(input.request.path, "/echo")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_the_record_the_log_or_the_admin_api() {
    let upstream = Upstream::start().await;
    let key = SigningKey::es256("k1");
    let d = Deployment::new(
        &upstream.url(),
        LEAKY_POLICY,
        &format!(
            "identity:\n  jwt: {{ jwks_file: jwks.json, issuer: \"{ISSUER}\", audience: {AUDIENCE} }}\nlog: {{ format: json, level: debug }}\n"
        ),
    );
    std::fs::write(d.dir.path().join("jwks.json"), jwks(&[&key])).unwrap();
    let serve = LoggedServe::start(&d, &[]);
    let proxy = serve.proxy.clone();
    // A canary in the claims makes this token unlike any other.
    let canary = format!(
        "CANARY-{}",
        &countersign::audit::record::new_action_id()[..16]
    );
    let token = key.token(&with(claims("carol", None), "canary", json!(canary)));
    let expired = key.token(&with(claims("carol", None), "exp", json!(now() - 600)));
    let c = client();
    let mut ids = Vec::new();
    for (path, t, want) in [
        ("/v1/payouts", &token, 403),
        ("/echo", &token, 200),
        ("/echo", &expired, 401),
    ] {
        let resp = c
            .post(format!("http://{proxy}{path}"))
            .bearer_auth(t)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{path}");
        ids.push(action_id(&resp));
        // (The agent's own answer may quote its own token back to it.)
        let _ = resp.text().await.unwrap();
    }
    let mut admin = Vec::new();
    for id in &ids {
        wait_for_records(&d.db_path(), id, 1).await;
        admin.push(
            admin_json(&format!("http://{}/v1/actions/{id}", admin_addr(&serve)))
                .await
                .to_string(),
        );
    }
    admin.push(
        admin_json(&format!(
            "http://{}/v1/actions?limit=100",
            admin_addr(&serve)
        ))
        .await
        .to_string(),
    );
    let log = serve.stop();
    let record = record_bytes(&d);
    let admin = admin.join("\n");
    let decided = payload_of(&d.db_path(), &ids[0], "decided");
    assert_eq!(
        decided["agent"]["verified"]["claims"]["canary"], canary,
        "the claims are recorded (the proof), the token is not"
    );
    assert!(
        decided["decision"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("[redacted]"),
        "{decided}"
    );
    for t in [&token, &expired] {
        let signature = t.rsplit('.').next().unwrap();
        let places: [(&str, &[u8]); 3] = [
            ("the record", &record),
            ("the log", log.as_bytes()),
            ("the admin API", admin.as_bytes()),
        ];
        for (what, bytes) in places {
            assert!(
                !contains(bytes, t.as_bytes()),
                "the token leaked into {what}"
            );
            assert!(
                !contains(bytes, signature.as_bytes()),
                "its signature leaked into {what}"
            );
        }
    }
}

/// The admin address of a served process (from its readiness: the config
/// says port 0, so the log line is the only place it is).
fn admin_addr(serve: &LoggedServe) -> String {
    let log = serve.log();
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "countersign is serving")
        .and_then(|v| v["admin_addr"].as_str().map(str::to_string))
        .unwrap()
}

// ---------------------------------------------------------------------------
// Client certificates.

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A client certificate `ca` signed: its DER and a rustls client trusting `server_ca`.
fn client_with_cert(ca: &Ca, uri: &str, cn: &str, server_ca: &str) -> (Vec<u8>, reqwest::Client) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let der = cert.der().to_vec();
    let client = tls_client(
        server_ca,
        Some((
            rustls::pki_types::CertificateDer::from(der.clone()),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )),
    );
    (der, client)
}

fn tls_client(
    server_ca: &str,
    identity: Option<(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_proves_the_workload_and_one_that_does_not_verify_is_refused() {
    let upstream = Upstream::start().await;
    let server_ca = ca("server ca");
    let agents_ca = ca("agents ca");
    let other_ca = ca("someone else's ca");
    let files = d_files(&server_ca, &agents_ca);
    let d = Deployment::new(
        &upstream.url(),
        ECHO_AGENT,
        &format!(
            "tls: {{ cert: {}, key: {} }}\nidentity:\n  mtls: {{ client_ca: {} }}\n",
            files.0.display(),
            files.1.display(),
            files.2.display()
        ),
    );
    let cs = d.start().await;
    let port = cs.proxy_addr.port();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let spiffe = "spiffe://corp.test/ns/ap/sa/payments-agent";
    let (der, agent) = client_with_cert(&agents_ca, spiffe, "payments-agent", &server_ca.pem);

    let resp = agent
        .post(url("/v1/payouts"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let id = action_id(&resp);
    let seen = echoed_agent(resp).await;
    assert_eq!(seen["verified"]["method"], "mtls");
    assert_eq!(seen["verified"]["subject"], spiffe);
    assert_eq!(seen["verified"]["claims"]["cn"], "payments-agent");
    let decided = payload_of(&d.db_path(), &id, "decided");
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));
    assert_eq!(decided["agent"]["verified"]["proof"]["sha256"], fingerprint);
    assert_eq!(
        decided["agent"]["verified"]["proof"]["san"],
        json!([spiffe])
    );

    // A certificate from another CA: the handshake completes, the call is
    // refused and recorded.
    let (_, stranger) = client_with_cert(&other_ca, "spiffe://evil/agent", "x", &server_ca.pem);
    let resp = stranger.post(url("/echo")).body("{}").send().await.unwrap();
    let failed = refused(&d, resp, "identity_invalid").await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{failed}"
    );
    // No certificate at all: refused (mtls.required defaults to true).
    let anonymous = tls_client(&server_ca.pem, None);
    let resp = anonymous
        .post(url("/echo"))
        .body("{}")
        .send()
        .await
        .unwrap();
    refused(&d, resp, "identity_required").await;
    assert!(upstream.seen().is_empty());
    // The admin listener never asks for a certificate.
    let health = anonymous
        .get(format!(
            "https://localhost:{}/healthz",
            cs.admin_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // The client CA is reloaded like the certificate: trust the other CA
    // instead, and the agent's certificate stops verifying.
    std::fs::write(&files.2, &other_ca.pem).unwrap();
    let status = eventually(
        async || {
            agent
                .post(url("/echo"))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        },
        |s| *s == 401,
    )
    .await;
    assert_eq!(status, 401, "the new client CA is in force");
    assert_eq!(
        stranger
            .post(url("/echo"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    cs.stop().await;

    let out = countersign(&[
        "audit",
        "show",
        "--config",
        d.config_path().to_str().unwrap(),
        &id,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("verified by mTLS as {spiffe}")),
        "{text}"
    );
}

/// The server certificate and key and the client CA, as files in a
/// directory kept for the test's life.
fn d_files(
    server_ca: &Ca,
    agents_ca: &Ca,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap().keep();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &server_ca.issuer)
        .unwrap();
    let paths = (
        dir.join("tls.crt"),
        dir.join("tls.key"),
        dir.join("agents-ca.pem"),
    );
    std::fs::write(&paths.0, cert.pem()).unwrap();
    std::fs::write(&paths.1, key.serialize_pem()).unwrap();
    std::fs::write(&paths.2, &agents_ca.pem).unwrap();
    paths
}

// ---------------------------------------------------------------------------
// Sidecar mode.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_sidecar_asserts_its_pod_and_a_token_still_takes_precedence() {
    let upstream = Upstream::start().await;
    std::env::set_var(
        "CS_TEST_POD_IDENTITY",
        "ap/payments-agent/payments-agent-7d9f",
    );
    let key = SigningKey::es256("k1");
    let d = jwt_deployment(&upstream.url(), &[&key], "");
    d.edit_config(
        "leeway: 5s }\n",
        "leeway: 5s }\n  pod: { subject_env: CS_TEST_POD_IDENTITY }\n",
    );
    let cs = d.start().await;
    let seen = echoed_agent(call(cs.proxy_addr, "/v1/payouts", None, &[]).await).await;
    assert_eq!(seen["verified"]["method"], "pod");
    assert_eq!(
        seen["verified"]["subject"],
        "ap/payments-agent/payments-agent-7d9f"
    );
    let token = key.token(&claims("carol", Some("ap-agent-7")));
    let seen = echoed_agent(call(cs.proxy_addr, "/v1/payouts", Some(&token), &[]).await).await;
    assert_eq!(seen["verified"]["method"], "jwt");
    cs.stop().await;

    // Not on a loopback listener: refused at load.
    d.edit_config("listen: 127.0.0.1:0", "listen: 0.0.0.0:0");
    let out = countersign(&["check", "--config", d.config_path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity.pod"), "{err}");
}
