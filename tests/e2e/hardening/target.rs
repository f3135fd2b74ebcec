//! The request the policy judged is the request the upstream ran. An agent
//! writes raw bytes on a socket (HTTP clients normalise paths before they
//! send them); an upstream reads raw bytes off its socket (so nothing
//! normalises what it saw). For every spelling of a target, the record, the
//! policy input and the upstream's request line must carry the same
//! canonical target; targets, methods, bodies and agent headers that
//! servers read differently are refused with 400 or 405, recorded, and
//! never reach the upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One request as the upstream's socket delivered it.
#[derive(Debug, Clone)]
struct RawSeen {
    /// `METHOD target HTTP/1.1`, exactly.
    line: String,
    /// The header lines, lower-cased names.
    head: String,
    body: Vec<u8>,
}

/// An upstream that parses nothing it does not have to: it reads the head
/// up to the blank line and `content-length` body bytes, keeps them, and
/// answers 200 `ok`. Keep-alive connections are served request after request.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<RawSeen>>>,
}

impl RawUpstream {
    async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<RawSeen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_raw(stream, log.clone()));
            }
        });
        RawUpstream { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<RawSeen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_raw(mut stream: TcpStream, log: Arc<Mutex<Vec<RawSeen>>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let (line, fields) = head.split_once("\r\n").unwrap_or((&head, ""));
        let length: usize = fields
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        log.lock().unwrap().push(RawSeen {
            line: line.to_string(),
            head: fields.to_ascii_lowercase(),
            body,
        });
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// What the agent's socket read back.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }

    fn action_id(&self) -> String {
        self.header("x-countersign-action-id")
            .expect("every answer carries the action id")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Writes one request, byte for byte, and reads the answer to the end.
async fn send_raw(proxy: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the proxy answers within 10 s")
        .unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    RawAnswer {
        status,
        head,
        body: out[end + 4..].to_vec(),
    }
}

/// Extra header lines of a raw request.
type Headers<'a> = &'a [&'a [u8]];

/// A request as raw bytes: `Host: payments`, `Connection: close`, the
/// extra header lines as given, a content-length when there is a body.
fn raw(method: &str, target: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nhost: payments\r\nconnection: close\r\n");
    for h in headers {
        r.extend_from_slice(h);
        r.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// A policy that allows everything and says, in its one reason, what it
/// was shown: the record keeps the reason, so the test reads the input back.
const ECHO: &str = r#"package countersign
import rego.v1
decision := {"action": "allow", "risk": "low", "rules": ["echo"], "reasons": [json.marshal({
	"path": input.request.path, "target": input.request.target, "query": input.request.query,
	"body": input.request.body, "body_format": input.request.body_format,
	"headers": input.request.headers,
	"envoy_path": object.get(input, ["attributes", "request", "http", "path"], null),
	"parsed_path": object.get(input, "parsed_path", null),
})]}
"#;

/// What the policy was shown, read back from the decided record.
fn policy_saw(decided: &Value) -> Value {
    serde_json::from_str(decided["decision"]["reasons"][0].as_str().unwrap()).unwrap()
}

/// Checks one forwarded call: the upstream's request line, the record and
/// the policy input all carry `canonical` (after the upstream's base path).
async fn assert_one_target(
    d: &Deployment,
    upstream: &RawUpstream,
    base: &str,
    answer: &RawAnswer,
    sent: &[u8],
    canonical: &str,
) {
    let shown = String::from_utf8_lossy(sent);
    assert_eq!(
        answer.status,
        200,
        "{shown}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let id = answer.action_id();
    let seen = upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        last.line,
        format!("POST {base}{canonical} HTTP/1.1"),
        "{shown}"
    );
    assert_eq!(last.body, br#"{"n":1}"#, "{shown}");
    let decided = payload_of(&d.db_path(), &id, "decided");
    let (path, query) = canonical.split_once('?').unwrap_or((canonical, ""));
    assert_eq!(decided["request"]["path"], path, "{shown}");
    assert_eq!(decided["request"]["target"], canonical, "{shown}");
    assert_eq!(
        decided["request"]["url"],
        format!("{}{base}{canonical}", upstream.url()),
        "{shown}"
    );
    let saw = policy_saw(&decided);
    assert_eq!(saw["path"], path, "{shown}");
    assert_eq!(saw["target"], canonical, "{shown}");
    let fields: serde_json::Map<String, Value> =
        form_urlencoded::parse(query.as_bytes()).fold(serde_json::Map::new(), |mut m, (k, v)| {
            m.entry(k.into_owned())
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .unwrap()
                .push(json!(v));
            m
        });
    assert_eq!(saw["query"], Value::Object(fields), "{shown}");
    wait_for_records(&d.db_path(), &id, 2).await;
    assert_eq!(
        kinds_of(&d.db_path(), &id),
        ["decided", "completed"],
        "{shown}"
    );
}

/// Spellings of `/v1/payouts` (and friends) and the one target each becomes.
const SPELLINGS: &[(&[u8], &str)] = &[
    (b"/v1/payouts", "/v1/payouts"),
    (b"/v1/invoices/../payouts", "/v1/payouts"),
    (b"/v1/invoices/%2e%2e/payouts", "/v1/payouts"),
    (b"/v1/invoices/%2E%2E/payouts", "/v1/payouts"),
    (b"/v1/invoices/.%2E/payouts", "/v1/payouts"),
    (b"/v1/invoices/%2e./payouts", "/v1/payouts"),
    (b"/v1/./payouts", "/v1/payouts"),
    (b"/v1/%2e/payouts", "/v1/payouts"),
    (b"/v1//payouts", "/v1/payouts"),
    (b"//v1///payouts", "/v1/payouts"),
    (b"/%761/payouts", "/v1/payouts"),
    (b"/%76%31/pa%79ou%74s", "/v1/payouts"),
    (b"/v1/pa%79outs", "/v1/payouts"),
    (b"/v1/payouts?", "/v1/payouts"),
    (b"/v1/payouts#fragment", "/v1/payouts"),
    (b"/v1/payouts/.", "/v1/payouts/"),
    (b"/v1/payouts/7/..", "/v1/payouts/"),
    (b"/v1/payouts?a=%41", "/v1/payouts?a=A"),
    (
        b"/v1/payouts?a=%2b&b=%2B&c=a+b",
        "/v1/payouts?a=%2B&b=%2B&c=a+b",
    ),
    (b"/v1/payouts?a=%2f&b=%5c", "/v1/payouts?a=%2F&b=%5C"),
    (b"/v1/payouts?q='x'|y^", "/v1/payouts?q=%27x%27%7Cy%5E"),
    (b"/v1/payouts?q=a\\b", "/v1/payouts?q=a%5Cb"),
    (
        b"/v1/payouts?dry_run=false&dry_run=true",
        "/v1/payouts?dry_run=false&dry_run=true",
    ),
    (b"/v1/caf%c3%a9", "/v1/caf%C3%A9"),
    (b"/v1/caf\xc3\xa9", "/v1/caf%C3%A9"),
    (b"/v1/{id}", "/v1/%7Bid%7D"),
    (b"/v1/a%3bb/%25", "/v1/a%3Bb/%25"),
    (b"/v1/it's(1)!*$,=:@~", "/v1/it's(1)!*$,=:@~"),
    (
        b"http://payments/v1/invoices/../payouts?x=%31",
        "/v1/payouts?x=1",
    ),
    (b"http://PAYMENTS:80/v1/payouts", "/v1/payouts"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_target_is_judged_recorded_and_sent_as_one() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "");
    let cs = d.start().await;
    let ct: &[&[u8]] = &[b"content-type: application/json"];
    for (sent, canonical) in SPELLINGS {
        let answer = send_raw(cs.proxy_addr, &raw("POST", sent, ct, br#"{"n":1}"#)).await;
        assert_one_target(&d, &upstream, "", &answer, sent, canonical).await;
        let id = answer.action_id();
        let request = &payload_of(&d.db_path(), &id, "decided")["request"];
        let origin_form = sent.strip_prefix(b"http://").map_or(&sent[..], |rest| {
            &rest[rest.iter().position(|b| *b == b'/').unwrap()..]
        });
        // The record keeps what was sent when it differs, for whoever
        // investigates; the policy never reads it. (The fragment never
        // reaches countersign: the HTTP parser cuts it off.)
        if origin_form != canonical.as_bytes() && !sent.ends_with(b"#fragment") {
            assert_eq!(
                request["as_sent"].as_str().map(str::as_bytes),
                Some(std::str::from_utf8(origin_form).unwrap().as_bytes()),
                "{}",
                String::from_utf8_lossy(sent)
            );
        }
    }
    assert_eq!(
        upstream.seen().len(),
        SPELLINGS.len(),
        "one upstream request per call"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_base_path_precedes_the_canonical_target_unchanged() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&format!("{}/api/v2", upstream.url()), ECHO, "");
    let cs = d.start().await;
    let ct: &[&[u8]] = &[b"content-type: application/json"];
    for (sent, canonical) in [
        (&b"/v1/invoices/%2e%2e/payouts?a=%41"[..], "/v1/payouts?a=A"),
        (b"/v1//./pa%79outs", "/v1/payouts"),
    ] {
        let answer = send_raw(cs.proxy_addr, &raw("POST", sent, ct, br#"{"n":1}"#)).await;
        assert_one_target(&d, &upstream, "/api/v2", &answer, sent, canonical).await;
    }
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envoy_input_reads_the_same_canonical_target() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "policy: { input: envoy }\n");
    let cs = d.start().await;
    let sent = b"/v1/invoices/.%2e/pa%79outs/caf%c3%a9?a=%41";
    let ct: &[&[u8]] = &[b"content-type: application/json"];
    let answer = send_raw(cs.proxy_addr, &raw("POST", sent, ct, br#"{"n":1}"#)).await;
    let canonical = "/v1/payouts/caf%C3%A9?a=A";
    assert_one_target(&d, &upstream, "", &answer, sent, canonical).await;
    let saw = policy_saw(&payload_of(&d.db_path(), &answer.action_id(), "decided"));
    assert_eq!(saw["envoy_path"], canonical);
    assert_eq!(saw["parsed_path"], json!(["v1", "payouts", "café"]));
    cs.stop().await;
}

/// Targets servers read differently, and what the refusal is about.
const REFUSED: &[(&[u8], &str)] = &[
    (b"/v1/invoices%2F..%2Fpayouts", "encoded slash"),
    (b"/v1/invoices/..%2fpayouts", "encoded slash"),
    (b"/v1/invoices/..%5Cpayouts", "backslash"),
    (b"/v1/invoices/..%5cpayouts", "backslash"),
    (b"/v1/invoices\\..\\payouts", "backslash"),
    (b"/v1/payouts%00.json", "control byte %00"),
    (b"/v1/payouts%0d%0aX-Injected:%201", "control byte %0D"),
    (b"/v1/payouts%1F", "control byte %1F"),
    (b"/v1/payouts%7f", "control byte %7F"),
    (b"/v1/payouts?a=%00", "control byte %00"),
    (b"/..", "climbs out"),
    (b"/../..", "climbs out"),
    (b"/../v1/payouts", "climbs out"),
    (b"/v1/..", "climbs out"),
    (b"/v1/../admin", "climbs out"),
    (b"/v1/payouts/../../etc", "climbs out"),
    (b"/v1/%2e%2e/%2e%2e/etc/passwd", "climbs out"),
    (b"/v1/.%2e/.%2E/etc", "climbs out"),
    (b"/v1//../payouts", "`//`"),
    (b"/v1/payouts;x=1", "`;`"),
    (b"/v1/invoices/..;/payouts", "`;`"),
    (b"/v1/payouts?a=1;amount=2", "`;`"),
    (b"/v1/%zz", "`%zz`"),
    (b"/v1/payouts%2", "`%2`"),
    (b"/v1/payouts?a=%", "`%`"),
    (b"/v1/%252e%252e/payouts", "double-encoded"),
    (b"/v1/%c0%ae%c0%ae/payouts", "UTF-8"),
    (b"/v1/payouts?a=%ff", "UTF-8"),
    (b"http://elsewhere/v1/payouts", "Host header"),
    (b"http://payments:8080/v1/payouts", "Host header"),
    (b"https://payments/v1/payouts", "listener"),
    (b"http://user:pw@payments/v1/payouts", "user info"),
];

/// How the record keeps the refused targets that carry values: a refused
/// target's parts may be split differently by each reader, so every query
/// value, path parameter and user info is withheld (names are kept); the
/// others are kept exactly as sent.
const RECORDED_AS: &[(&[u8], &str)] = &[
    (b"/v1/payouts?a=%00", "/v1/payouts?a=[redacted]"),
    (b"/v1/payouts;x=1", "/v1/payouts;[redacted]"),
    (
        b"/v1/invoices/..;/payouts",
        "/v1/invoices/..;[redacted]/payouts",
    ),
    (
        b"/v1/payouts?a=1;amount=2",
        "/v1/payouts?a=[redacted];amount=[redacted]",
    ),
    (b"/v1/payouts?a=%", "/v1/payouts?a=[redacted]"),
    (b"/v1/payouts?a=%ff", "/v1/payouts?a=[redacted]"),
    (
        b"http://user:pw@payments/v1/payouts",
        "http://[redacted]@payments/v1/payouts",
    ),
];

/// Checks a refusal: the status, a JSON answer with the action id, a
/// `failed` record at stage `decide` with `reason`, nothing upstream.
async fn assert_refused(
    d: &Deployment,
    answer: &RawAnswer,
    status: u16,
    reason: &str,
    what: &str,
) -> Value {
    assert_eq!(
        answer.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let id = answer.action_id();
    let body = answer.json();
    assert_eq!(body["action_id"], id.as_str(), "{what}");
    assert_eq!(body["state"], "failed", "{what}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Nothing was forwarded"),
        "{what}: {body}"
    );
    // Refusals are recorded just after the answer.
    wait_for_records(&d.db_path(), &id, 1).await;
    assert_eq!(kinds_of(&d.db_path(), &id), ["failed"], "{what}");
    let failed = payload_of(&d.db_path(), &id, "failed");
    assert_eq!(failed["stage"], "decide", "{what}");
    assert_eq!(failed["reason"], reason, "{what}");
    assert_eq!(failed["status"], status, "{what}");
    assert_eq!(failed["error"], body["error"], "{what}");
    failed
}

async fn refused_total(cs: &countersign::app::Running, reason: &str) -> u64 {
    let series = format!("countersign_refused_total{{reason=\"{reason}\"}}");
    metric(&format!("http://{}", cs.admin_addr), &series).await as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_servers_read_differently_are_refused_recorded_and_never_sent() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    for (sent, why) in REFUSED {
        let shown = String::from_utf8_lossy(sent);
        let answer = send_raw(cs.proxy_addr, &raw("POST", sent, &[], b"{}")).await;
        let failed = assert_refused(&d, &answer, 400, "bad_target", &shown).await;
        let error = failed["error"].as_str().unwrap();
        assert!(error.contains(why), "{shown}: {error}");
        assert!(failed["route"].is_null(), "{shown}");
        let recorded = RECORDED_AS
            .iter()
            .find(|(s, _)| s == sent)
            .map_or(*sent, |(_, r)| r.as_bytes());
        assert_eq!(
            failed["request"]["as_sent"].as_str().map(str::as_bytes),
            Some(recorded),
            "the record keeps the target as sent, its values withheld: {shown}"
        );
    }
    // Server-wide and tunnel targets, and a second Host.
    let options = send_raw(cs.proxy_addr, &raw("OPTIONS", b"*", &[], b"")).await;
    assert_refused(&d, &options, 400, "bad_target", "OPTIONS *").await;
    let two_hosts = send_raw(
        cs.proxy_addr,
        &raw("GET", b"/v1/payouts", &[b"host: admin"], b""),
    )
    .await;
    assert_refused(&d, &two_hosts, 400, "bad_target", "two Host headers").await;
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    assert_eq!(
        refused_total(&cs, "bad_target").await,
        REFUSED.len() as u64 + 2
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_connect_and_unknown_methods_are_refused_unless_the_route_lists_them() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "");
    let cs = d.start().await;
    for (method, target) in [
        ("TRACE", &b"/v1/payouts"[..]),
        ("CONNECT", b"payments:443"),
        ("CONNECT", b"/v1/payouts"),
        ("PURGE", b"/v1/payouts"),
        ("get", b"/v1/payouts"),
        ("PROPFIND", b"/v1/payouts"),
    ] {
        let answer = send_raw(cs.proxy_addr, &raw(method, target, &[], b"")).await;
        assert_refused(&d, &answer, 405, "method_not_allowed", method).await;
        assert_eq!(
            answer.header("allow").as_deref(),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            "{method}"
        );
        assert!(answer.json()["error"].as_str().unwrap().contains("methods"));
    }
    assert!(upstream.seen().is_empty());
    assert_eq!(refused_total(&cs, "method_not_allowed").await, 6);
    cs.stop().await;

    // A route that lists its methods takes those and only those.
    let yaml = std::fs::read_to_string(d.config_path()).unwrap().replace(
        "    connect_timeout: 1s\n",
        "    connect_timeout: 1s\n    methods: [GET, TRACE, PURGE]\n",
    );
    std::fs::write(d.config_path(), yaml).unwrap();
    let cs = d.start().await;
    for method in ["TRACE", "PURGE", "GET"] {
        let answer = send_raw(cs.proxy_addr, &raw(method, b"/v1/./payouts", &[], b"")).await;
        assert_eq!(answer.status, 200, "{method}");
        assert_eq!(
            upstream.seen().last().unwrap().line,
            format!("{method} /v1/payouts HTTP/1.1")
        );
    }
    for method in ["POST", "DELETE", "CONNECT"] {
        let answer = send_raw(cs.proxy_addr, &raw(method, b"/v1/payouts", &[], b"")).await;
        assert_refused(&d, &answer, 405, "method_not_allowed", method).await;
        assert_eq!(
            answer.header("allow").as_deref(),
            Some("GET, TRACE, PURGE"),
            "{method}"
        );
    }
    assert_eq!(upstream.seen().len(), 3);
    cs.stop().await;
}

/// Every header line the upstream gets is one the policy judged, with the
/// same value: none is added on the way (the forwarding client's default
/// `accept` included) but countersign's own `x-countersign-action-id`, and
/// `host` names the upstream (the policy reads it as `route.upstream`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_the_headers_the_policy_judged_and_no_other() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "");
    let cs = d.start().await;
    for headers in [
        &[&b"content-type: application/json"[..]][..],
        &[b"accept: text/csv", b"x-trace: 1", b"x-trace: 2"],
        &[
            b"user-agent: agent/1",
            b"connection: x-dropped",
            b"x-dropped: yes",
        ],
    ] {
        let answer = send_raw(
            cs.proxy_addr,
            &raw("POST", b"/v1/payouts", headers, br#"{"amount": 5}"#),
        )
        .await;
        assert_eq!(answer.status, 200);
        let decided = payload_of(&d.db_path(), &answer.action_id(), "decided");
        let mut judged = policy_saw(&decided)["headers"].clone();
        assert_eq!(judged["host"], "payments");
        judged.as_object_mut().unwrap().remove("host");
        let got = upstream.seen().last().unwrap().head.clone();
        let mut received = serde_json::Map::new();
        for line in got.lines().filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap();
            if name == "x-countersign-action-id" {
                continue;
            }
            if name == "host" {
                assert_eq!(format!("http://{}", value.trim()), upstream.url());
                continue;
            }
            let value = value.trim().to_string();
            match received.get_mut(name) {
                // The policy reads a repeated header joined by ", ".
                Some(Value::String(v)) => *v = format!("{v}, {value}"),
                _ => {
                    received.insert(name.to_string(), Value::String(value));
                }
            }
        }
        let sent: Vec<_> = headers.iter().map(|h| String::from_utf8_lossy(h)).collect();
        assert_eq!(Value::Object(received), judged, "sent {sent:?}");
    }
    cs.stop().await;
}

/// What a refused target may carry that is secret (a token after `;`,
/// user info, a path parameter, a bare token) reaches neither the record
/// nor the admin API, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_targets_keep_their_secrets_out_of_the_record() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    let canary = |what: &str| {
        let id = countersign::audit::record::new_action_id();
        format!("{what}-CANARY-{}", &id[16..])
    };
    let (token, password, session, bare) = (
        canary("TOKEN"),
        canary("PASSWORD"),
        canary("SESSION"),
        canary("BARE"),
    );
    let sent = [
        (
            format!("/v1/accounts?x=1;token={token}"),
            "/v1/accounts?x=[redacted];token=[redacted]".to_string(),
        ),
        (
            format!("http://svc:{password}@payments/v1/accounts"),
            "http://[redacted]@payments/v1/accounts".to_string(),
        ),
        (
            format!("/v1/accounts;jsessionid={session}/list"),
            "/v1/accounts;[redacted]/list".to_string(),
        ),
        (
            format!("/v1/accounts?{bare};x=1"),
            "/v1/accounts?[redacted];x=[redacted]".to_string(),
        ),
        (
            format!("/v1/accounts?token={token}%zz"),
            "/v1/accounts?token=[redacted]".to_string(),
        ),
    ];
    let admin = crate::holds::Admin::of(&cs);
    let assert_kept_out = |shown: String| {
        for c in [&token, &password, &session, &bare] {
            assert!(!shown.contains(c.as_str()), "{c} in the admin API: {shown}");
            let lower = c.to_ascii_lowercase();
            assert!(!shown.contains(&lower), "{lower} in the admin API: {shown}");
        }
    };
    for (target, recorded) in &sent {
        let answer = send_raw(cs.proxy_addr, &raw("GET", target.as_bytes(), &[], b"")).await;
        let failed = assert_refused(&d, &answer, 400, "bad_target", target).await;
        assert_eq!(failed["request"]["as_sent"], recorded.as_str(), "{target}");
        assert_kept_out(admin.action(&answer.action_id()).await.to_string());
    }
    // A password in the Host header (a second Host line follows raw()'s).
    let mut request =
        format!("GET /v1/accounts HTTP/1.1\r\nhost: svc:{password}@payments:80\r\n").into_bytes();
    request.extend_from_slice(b"connection: close\r\n\r\n");
    let answer = send_raw(cs.proxy_addr, &request).await;
    let failed = assert_refused(&d, &answer, 400, "bad_target", "user info in Host").await;
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("Host header is not a host"));
    assert_eq!(failed["request"]["host"], "[redacted]");
    assert_kept_out(admin.action(&answer.action_id()).await.to_string());
    cs.stop().await;
    let record = record_bytes(&d);
    for c in [&token, &password, &session, &bare] {
        for form in [c.clone(), c.to_ascii_lowercase()] {
            assert!(
                !crate::proxy::contains(&record, form.as_bytes()),
                "{form} leaked into the record"
            );
        }
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_parse_strictly_or_are_refused() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "");
    let cs = d.start().await;
    let json_ct: &[u8] = b"content-type: application/json";
    let padded_utf16: Vec<u8> = " "
        .repeat(100)
        .bytes()
        .chain(*b"{}")
        .flat_map(|b| [b, 0])
        .collect();
    let refused: &[(Headers, &[u8], &str)] = &[
        (
            &[json_ct],
            b"\xEF\xBB\xBF{\"amount\": 5}",
            "byte order mark",
        ),
        (
            &[json_ct],
            br#"{"amount": 5, "amount": 50000}"#,
            "`amount` appears twice",
        ),
        (
            &[json_ct],
            br#"{"to": {"iban": "A", "iban": "B"}}"#,
            "`iban` appears twice",
        ),
        (
            &[json_ct],
            br#"[{"a": 1}, {"b": 1, "b": 2}]"#,
            "`b` appears twice",
        ),
        (
            &[json_ct],
            br#"{"amount": 5} {"amount": 50000}"#,
            "after the JSON value",
        ),
        (
            &[json_ct],
            br#"{"amount": 5}garbage"#,
            "after the JSON value",
        ),
        (
            &[json_ct],
            br#"{"amount": 100000000000000000000001}"#,
            "64-bit",
        ),
        (&[json_ct], br#"{"amount": -9223372036854775809}"#, "64-bit"),
        (&[json_ct], br#"{"amount": 1e400}"#, "strict JSON"),
        // A decimal reader upstream reads more than the policy's double.
        (
            &[json_ct],
            br#"{"amount": 1000.00000000000000001}"#,
            "not exactly a 64-bit double",
        ),
        (&[json_ct], br#"{"amount": 5,}"#, "strict JSON"),
        (&[json_ct], b"{\"to\": \"\xff\"}", "strict JSON"),
        (
            &[b"content-type: application/merge-patch+json"],
            br#"{"a":1,"a":2}"#,
            "appears twice",
        ),
        // No JSON content type, but a reader that ignores it would see JSON.
        (&[], br#"{"amount": 5, "amount": 50000}"#, "appears twice"),
        (
            &[b"content-type: text/plain"],
            b"\xEF\xBB\xBF{\"amount\": 5}",
            "byte order mark",
        ),
        (
            &[b"content-type: text/plain"],
            br#"{"amount": 5} trailing"#,
            "after the JSON value",
        ),
        // Keys a lenient reader takes for one: Go's encoding/json matches
        // fields by Unicode case folding (`ſ` is `s`; the last one wins).
        (
            &[json_ct],
            br#"{"amount": 5, "AMOUNT": 50000}"#,
            "without case",
        ),
        (
            &[json_ct],
            "{\"amount\": 5, \"destination\": \"A\", \"de\u{17F}tination\": \"B\"}".as_bytes(),
            "without case",
        ),
        (
            &[json_ct],
            br#"{"destination": "A", "de\u017Ftination": "B"}"#,
            "without case",
        ),
        (
            &[json_ct],
            br#"{"method": "tools/call", "params": {"name": "read"}, "param\u017f": {"name": "delete"}}"#,
            "without case",
        ),
        // What lenient readers (Gson's default, JSON.NET, JSON5) skip before
        // JSON: comments and the anti-script-inclusion prefix.
        (
            &[b"content-type: text/plain"],
            br#"/**/{"amount": 50000}"#,
            "strict JSON",
        ),
        (&[], b"// x\n{\"amount\": 50000}", "strict JSON"),
        (&[], b")]}'\n{\"amount\": 50000}", "strict JSON"),
        // Blanks JSON5 and JSON.NET skip beyond JSON's four.
        (
            &[b"content-type: text/plain"],
            b"\x0c{\"amount\": 50000}",
            "strict JSON",
        ),
        (&[], "\u{A0}\u{2028}{\"amount\": 50000}".as_bytes(), "strict JSON"),
        // NUL ends a string for readers in C.
        (&[json_ct], br#"{"to": "BLOCKED\u0000x"}"#, "U+0000"),
        (&[json_ct], br#"{"amount\u0000x": 50000, "amount": 5}"#, "U+0000"),
        // JSON in UTF-16 and UTF-32, which encoding-sniffing parsers read
        // (the RFC 4627 byte patterns, or a byte order mark).
        (
            &[b"content-type: text/plain"],
            b"\xFF\xFE{\x00\"\x00a\x00\"\x00:\x001\x00}\x00",
            "strict JSON",
        ),
        (&[], b"\x00{\x00\"\x00a\x00\"\x00:\x001\x00}", "strict JSON"),
        (
            &[b"content-type: application/octet-stream"],
            b"\xFF\xFE\x00\x00{\x00\x00\x00}\x00\x00\x00",
            "strict JSON",
        ),
        // Without a byte order mark, little-endian UTF-16 and big-endian UTF-32.
        (&[], b"{\x00\"\x00a\x00\"\x00:\x001\x00}\x00", "strict JSON"),
        (&[], b"\x00\x00\x00{\x00\x00\x00}", "strict JSON"),
        // After more blanks than a sniffer of a few bytes would look at.
        (&[], &padded_utf16, "strict JSON"),
    ];
    for (headers, body, why) in refused {
        let shown = String::from_utf8_lossy(body);
        let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, body)).await;
        let failed = assert_refused(&d, &answer, 400, "bad_json", &shown).await;
        assert!(
            failed["error"].as_str().unwrap().contains(why),
            "{shown}: {}",
            failed["error"]
        );
        assert_eq!(failed["route"]["name"], "payments");
        assert_eq!(failed["request"]["body_size"], body.len(), "{shown}");
    }
    let two_types = send_raw(
        cs.proxy_addr,
        &raw(
            "POST",
            b"/v1/payouts",
            &[b"content-type: text/plain", json_ct],
            b"{}",
        ),
    )
    .await;
    assert_refused(&d, &two_types, 400, "bad_content_type", "two content types").await;
    // A compressed body: an upstream that decodes requests would read JSON
    // the policy could not (the bytes: `{"amount":50000}` gzipped).
    let gzipped: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff\xabVJ\xcc\xcd/\xcd+Q\xb225\x00\x82Z\x00\xbf\xb4\xfe\xc1\x10\x00\x00\x00";
    for headers in [
        &[&b"content-type: text/plain"[..], b"content-encoding: gzip"][..],
        &[b"content-encoding: GZIP"],
        &[json_ct, b"content-encoding: identity, gzip"],
    ] {
        let answer = send_raw(
            cs.proxy_addr,
            &raw("POST", b"/v1/payouts", headers, gzipped),
        )
        .await;
        let failed =
            assert_refused(&d, &answer, 415, "bad_content_encoding", "a gzipped body").await;
        assert!(failed["error"]
            .as_str()
            .unwrap()
            .contains("send it uncompressed"));
    }
    // One header naming a list: PHP cuts at `,` or a space and parses a form.
    for listed in [
        &b"content-type: application/x-www-form-urlencoded, text/plain"[..],
        b"content-type: application/x-www-form-urlencoded x",
    ] {
        let answer = send_raw(
            cs.proxy_addr,
            &raw("POST", b"/v1/payouts", &[listed], b"amount=50000"),
        )
        .await;
        let failed = assert_refused(&d, &answer, 400, "bad_content_type", "a list").await;
        assert!(failed["error"]
            .as_str()
            .unwrap()
            .contains("not one media type"));
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    assert_eq!(refused_total(&cs, "bad_json").await, refused.len() as u64);

    // Strict JSON passes, as the policy saw it; so do bodies that are not JSON.
    for (headers, body, shown) in [
        (
            &[json_ct][..],
            &br#"{"amount": 18446744073709551615, "to": {"iban": "A"}}"#[..],
            json!({"amount": 18446744073709551615u64, "to": {"iban": "A"}}),
        ),
        (&[json_ct], b"", Value::Null),
        (&[], br#"{"amount": 5}"#, json!({"amount": 5})),
        (&[b"content-type: text/plain"], b"pay 5 to A", Value::Null),
        // Binary bodies with NULs near the start are not wide JSON.
        (
            &[b"content-type: application/octet-stream"],
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            Value::Null,
        ),
        (
            &[],
            b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
            Value::Null,
        ),
    ] {
        let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, body)).await;
        assert_eq!(answer.status, 200);
        assert_eq!(upstream.seen().last().unwrap().body, body);
        let decided = payload_of(&d.db_path(), &answer.action_id(), "decided");
        assert_eq!(policy_saw(&decided)["body"], shown);
    }
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_bodies_are_parsed_for_the_policy() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "");
    let cs = d.start().await;
    let form: &[&[u8]] = &[b"content-type: application/x-www-form-urlencoded; charset=utf-8"];
    let body = b"amount=25000&currency=EUR&note=rent+for+caf%C3%A9&amount=1&_method=DELETE";
    let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", form, body)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        upstream.seen().last().unwrap().body,
        body,
        "forwarded as sent"
    );
    let decided = payload_of(&d.db_path(), &answer.action_id(), "decided");
    let saw = policy_saw(&decided);
    assert_eq!(saw["body_format"], "form");
    assert_eq!(
        saw["body"],
        json!({"amount": ["25000", "1"], "currency": ["EUR"], "note": ["rent for café"], "_method": ["DELETE"]})
    );
    // The record keeps the body as the text it was.
    assert_eq!(
        decided["request"]["body"]["text"],
        std::str::from_utf8(body).unwrap()
    );

    for bad in [
        &b"amount=%zz"[..],
        b"amount=1;amount=2",
        b"amount=%ff",
        // Fields one framework reads as one: ASP.NET binds without case,
        // PHP reads `.` and space in a name as `_`.
        b"amount=5&AMOUNT=50000",
        b"dry_run=1&dry.run=0",
        b"destination=A&de%C5%BFtination=B",
        b"to=BLOCKED%00x",
        // PHP drops leading spaces and reads `destination[]` as the array
        // `destination`, overriding the plain one.
        b"destination=A&+destination=B",
        b"destination=A&destination[]=B",
    ] {
        let shown = String::from_utf8_lossy(bad);
        let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", form, bad)).await;
        assert_refused(&d, &answer, 400, "bad_form", &shown).await;
    }
    // The same holds for the query, which the policy reads the same way.
    for bad in [
        &b"/v1/payouts?amount=5&Amount=50000"[..],
        b"/v1/payouts?dry_run=1&dry.run=0",
    ] {
        let shown = String::from_utf8_lossy(bad);
        let answer = send_raw(cs.proxy_addr, &raw("GET", bad, &[], b"")).await;
        let failed = assert_refused(&d, &answer, 400, "bad_target", &shown).await;
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("one name to some frameworks"),
            "{shown}: {}",
            failed["error"]
        );
    }
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_headers_are_sent_once_named_and_small_or_refused() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), ECHO, "");
    let cs = d.start().await;
    let big = format!("x-agent-intent: {}", "i".repeat(4097));
    let at_limit = format!("x-evidence-doc: {}", "d".repeat(4096));
    let refused: Vec<(Vec<&[u8]>, &str)> = vec![
        (
            vec![&b"x-agent-id: ap-agent-7"[..], b"x-agent-id: admin-bot"],
            "`x-agent-id` is sent more than once",
        ),
        (
            vec![
                &b"x-agent-on-behalf-of: carol"[..],
                b"x-agent-on-behalf-of: ceo",
            ],
            "more than once",
        ),
        (
            vec![&b"x-agent-intent: a"[..], b"X-Agent-Intent: b"],
            "more than once",
        ),
        (
            vec![
                &b"x-evidence-invoice: INV-1"[..],
                b"x-evidence-invoice: INV-2",
            ],
            "`x-evidence-invoice` is sent more than once",
        ),
        (vec![&b"x-evidence-: INV-1"[..]], "names no evidence item"),
        (vec![big.as_bytes()], "4097 bytes, over the 4096-byte limit"),
        (vec![&b"x-evidence-invoice: INV-\xff"[..]], "not UTF-8"),
        // A name some servers read with a hyphen instead.
        (vec![&b"x_http_method_override: DELETE"[..]], "underscore"),
        // Any header: an upstream that drops undecodable bytes reads `admin`.
        (vec![&b"x-role: adm\xffin"[..]], "not UTF-8"),
    ];
    for (headers, why) in &refused {
        let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, b"{}")).await;
        let failed = assert_refused(&d, &answer, 400, "bad_agent_header", why).await;
        assert!(
            failed["error"].as_str().unwrap().contains(why),
            "{}",
            failed["error"]
        );
        assert_eq!(failed["agent"]["id"], Value::Null);
        assert_eq!(failed["evidence"], json!({}));
    }
    assert!(upstream.seen().is_empty());
    assert_eq!(
        refused_total(&cs, "bad_agent_header").await,
        refused.len() as u64
    );

    // One of each, a value at the limit: taken, and never forwarded.
    let headers: &[&[u8]] = &[
        b"x-agent-id: ap-agent-7",
        b"x-evidence-invoice: INV-1",
        at_limit.as_bytes(),
        b"connection: keep-alive",
    ];
    let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, b"{}")).await;
    assert_eq!(answer.status, 200);
    let decided = payload_of(&d.db_path(), &answer.action_id(), "decided");
    assert_eq!(decided["agent"]["id"], "ap-agent-7");
    assert_eq!(decided["evidence"]["doc"].as_str().unwrap().len(), 4096);
    let head = upstream.seen().last().unwrap().head.clone();
    assert!(
        !head.contains("x-agent") && !head.contains("x-evidence"),
        "{head}"
    );

    // A header named in `Connection` is not forwarded, so the policy and
    // the record do not see it either: what was judged is what ran. The
    // same headers, not named there, are judged, kept and forwarded.
    for named_in_connection in [true, false] {
        let mut headers: Vec<&[u8]> = vec![b"x-dry-run: true", b"idempotency-key: pay-42"];
        if named_in_connection {
            headers.push(b"connection: keep-alive, x-dry-run, idempotency-key");
        }
        let answer = send_raw(
            cs.proxy_addr,
            &raw("DELETE", b"/v1/accounts/7", &headers, b""),
        )
        .await;
        assert_eq!(answer.status, 200);
        let head = upstream.seen().last().unwrap().head.to_ascii_lowercase();
        let decided = payload_of(&d.db_path(), &answer.action_id(), "decided");
        let saw = policy_saw(&decided);
        let kept = !named_in_connection;
        if named_in_connection {
            assert!(
                !head.contains("x-dry-run") && !head.contains("idempotency-key"),
                "{head}"
            );
        }
        assert_eq!(head.contains("x-dry-run: true"), kept, "{head}");
        assert_eq!(head.contains("idempotency-key: pay-42"), kept, "{head}");
        let (dry_run, key) = if kept {
            (json!("true"), json!("pay-42"))
        } else {
            (Value::Null, Value::Null)
        };
        assert_eq!(saw["headers"]["x-dry-run"], dry_run, "{saw}");
        assert_eq!(saw["headers"]["idempotency-key"], key, "{saw}");
        assert_eq!(decided["request"]["headers"]["idempotency-key"], key);
    }
    cs.stop().await;
}

const HELD_BODY: &[u8] = br#"{"amount": 5000, "currency": "EUR"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_hold_forwards_the_canonical_target_it_was_judged_on() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), &payments_policy(), "hold: { wait: 20s }\n");
    let cs = d.start().await;
    let admin = crate::holds::Admin::of(&cs);
    let proxy = cs.proxy_addr;
    let agent = tokio::spawn(async move {
        let headers: &[&[u8]] = &[
            b"content-type: application/json",
            b"x-agent-id: ap-agent-7",
            b"x-evidence-invoice: INV-204",
            b"x-session: agent-cookie",
            b"x-countersign-action-id: forged",
        ];
        send_raw(
            proxy,
            &raw(
                "POST",
                b"/v1/invoices/%2E%2E/payouts?x=%41",
                headers,
                HELD_BODY,
            ),
        )
        .await
    });
    let id = admin.wait_pending(1).await.remove(0);
    let (status, _) = admin.review(&id, "alice", "approve").await;
    assert_eq!(status, 200);
    let answer = agent.await.unwrap();
    assert_eq!(answer.status, 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].line, "POST /v1/payouts?x=A HTTP/1.1");
    // The body byte for byte; the agent's own headers and anything off the
    // allowlist stay behind (a held call forwards what the record kept).
    assert_eq!(seen[0].body, HELD_BODY);
    let head = &seen[0].head;
    assert!(head.contains("content-type: application/json"), "{head}");
    for gone in ["x-agent-id", "x-evidence", "agent-cookie", "forged"] {
        assert!(!head.contains(gone), "{gone} reached the upstream: {head}");
    }
    assert!(
        head.contains(&format!("x-countersign-action-id: {id}")),
        "{head}"
    );
    let decided = payload_of(&d.db_path(), &id, "decided");
    assert_eq!(decided["request"]["target"], "/v1/payouts?x=A");
    assert_eq!(
        decided["hold"]["forward"]["path_and_query"],
        "/v1/payouts?x=A"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_library_denies_method_and_path_overrides() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(&upstream.url(), "package unused\n", "");
    let library = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(library).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".rego") && !name.ends_with("_test.rego") {
            std::fs::copy(&path, d.dir.path().join("policies").join(name)).unwrap();
        }
    }
    let cs = d.start().await;
    let json_ct: &[u8] = b"content-type: application/json";
    let agent: &[u8] = b"x-agent-id: ap-agent-7";
    let evidence: &[u8] = b"x-evidence-invoice: INV-1";
    let body = br#"{"amount": 10, "currency": "EUR"}"#;
    for (extra, rule) in [
        (
            &b"x-http-method-override: DELETE"[..],
            "library.method_override",
        ),
        (b"X-HTTP-Method: PUT", "library.method_override"),
        (b"x-original-url: /v1/admin", "library.path_override"),
    ] {
        let headers: &[&[u8]] = &[json_ct, agent, evidence, extra];
        let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, body)).await;
        assert_eq!(answer.status, 403, "{}", String::from_utf8_lossy(extra));
        assert_eq!(answer.json()["rules"], json!([rule]));
    }
    let form: &[&[u8]] = &[
        b"content-type: application/x-www-form-urlencoded",
        agent,
        evidence,
    ];
    let answer = send_raw(
        cs.proxy_addr,
        &raw("POST", b"/v1/payouts", form, b"amount=10&_method=DELETE"),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.json()["rules"], json!(["library.method_override"]));
    assert!(upstream.seen().is_empty());
    cs.stop().await;
}

/// An opa-envoy allow that sets one header upstream and removes another.
const ENVOY_SETS_A_HEADER: &str = r#"package envoy.authz
import rego.v1
allow := {
	"allowed": true,
	"headers": {"x-on-behalf": "carol-as-verified"},
	"request_headers_to_remove": ["cookie"],
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_an_envoy_policy_sets_reach_the_upstream_whatever_the_agent_names_in_connection() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ENVOY_SETS_A_HEADER,
        "policy: { entrypoint: data.envoy.authz.allow, input: envoy }\n",
    );
    let cs = d.start().await;
    // The agent sends its own value for the header the policy sets, and
    // names it (and the removed one) in `Connection`, hoping the proxy drops
    // them as hop-by-hop after the policy's value went in.
    let headers: &[&[u8]] = &[
        b"x-on-behalf: agent-forged",
        b"cookie: session=agent",
        b"connection: keep-alive, x-on-behalf, cookie",
    ];
    let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, b"{}")).await;
    assert_eq!(answer.status, 200);
    let head = upstream.seen().last().unwrap().head.clone();
    assert_eq!(
        head.matches("x-on-behalf:").count(),
        1,
        "exactly the policy's value: {head}"
    );
    assert!(head.contains("x-on-behalf: carol-as-verified"), "{head}");
    assert!(
        !head.contains("agent-forged") && !head.contains("cookie"),
        "{head}"
    );
    // Without `Connection` games: the same.
    let headers: &[&[u8]] = &[b"x-on-behalf: agent-forged", b"cookie: session=agent"];
    let answer = send_raw(cs.proxy_addr, &raw("POST", b"/v1/payouts", headers, b"{}")).await;
    assert_eq!(answer.status, 200);
    let head = upstream.seen().last().unwrap().head.clone();
    assert_eq!(head.matches("x-on-behalf:").count(), 1, "{head}");
    assert!(head.contains("x-on-behalf: carol-as-verified"), "{head}");
    assert!(!head.contains("cookie"), "{head}");
    cs.stop().await;
}

/// An opa-envoy allow that sets upstream whichever header the agent names
/// in `x-which`.
const ENVOY_SETS_THE_NAMED_HEADER: &str = r#"package envoy.authz
import rego.v1
allow := {
	"allowed": true,
	"headers": {input.attributes.request.http.headers["x-which"]: "evil.example"},
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_policy_cannot_set_the_headers_that_route_and_frame_the_call() {
    let upstream = RawUpstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ENVOY_SETS_THE_NAMED_HEADER,
        "policy: { entrypoint: data.envoy.authz.allow, input: envoy }\n",
    );
    let cs = d.start().await;
    // Set after the agent's headers are filtered, these would switch the
    // upstream's virtual host or reframe the body: the result breaks the
    // contract, and nothing goes upstream.
    for name in [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
    ] {
        let which = format!("x-which: {name}");
        let answer = send_raw(
            cs.proxy_addr,
            &raw("POST", b"/v1/payouts", &[which.as_bytes()], b"{}"),
        )
        .await;
        assert_eq!(answer.status, 503, "{name}");
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(&format!("sets `{name}`")), "{name}: {error}");
        assert!(upstream.seen().is_empty(), "{name} reached the upstream");
    }
    // Any other header is the policy's to set.
    let answer = send_raw(
        cs.proxy_addr,
        &raw("POST", b"/v1/payouts", &[b"x-which: x-tenant"], b"{}"),
    )
    .await;
    assert_eq!(answer.status, 200);
    let head = upstream.seen().last().unwrap().head.clone();
    assert!(head.contains("x-tenant: evil.example"), "{head}");
    assert!(!head.contains("host: evil.example"), "{head}");
    cs.stop().await;
}

/// The route's own credential replaces whatever the agent sent in its
/// place, and nothing that describes the agent's connection, or claims to
/// be countersign's, reaches the upstream, however the agent spells it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_the_routes_credential_and_none_of_the_agents_connection_headers() {
    let upstream = RawUpstream::start().await;
    std::env::set_var("TARGET_TEST_CREDENTIAL", "Bearer route-secret");
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    d.edit_config(
        "    timeout: 1s\n",
        "    timeout: 1s\n    upstream_auth: { header: authorization, value_env: TARGET_TEST_CREDENTIAL }\n",
    );
    let cs = d.start().await;
    let headers: &[&[u8]] = &[
        b"authorization: Bearer agent-one",
        b"Authorization: Bearer agent-two",
        b"proxy-authorization: Basic YWdlbnQ6cHc=",
        b"te: trailers",
        b"upgrade: h2c",
        b"connection: keep-alive, upgrade, te, x-hop",
        b"x-hop: dropped-as-named",
        b"keep-alive: timeout=5",
        b"x-countersign-action-id: forged",
        b"x-kept: yes",
    ];
    let answer = send_raw(
        cs.proxy_addr,
        &raw("POST", b"/v1/payouts", headers, b"{\"a\":1}"),
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let head = &seen[0].head;
    assert_eq!(head.matches("authorization:").count(), 1, "{head}");
    assert!(
        head.contains("authorization: bearer route-secret"),
        "{head}"
    );
    for gone in [
        "agent-one",
        "agent-two",
        "proxy-authorization",
        "te:",
        "upgrade",
        "x-hop",
        "keep-alive: timeout",
        "forged",
    ] {
        assert!(!head.contains(gone), "{gone} reached the upstream: {head}");
    }
    assert_eq!(
        head.matches("x-countersign-action-id:").count(),
        1,
        "{head}"
    );
    assert!(
        head.contains(&format!("x-countersign-action-id: {}", answer.action_id())),
        "{head}"
    );
    assert!(head.contains("x-kept: yes"), "{head}");
    assert_eq!(seen[0].body, b"{\"a\":1}");
    cs.stop().await;
}
