//! Test helpers: a recording upstream on a real port, a countersign started
//! from a real config file with a real SQLite record, and a real HTTP client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// A real HTTP upstream on 127.0.0.1:0 that records every request.
///
/// - `/slow...` waits 3 s before answering.
/// - `/stream?n=BYTES` answers BYTES bytes in chunks without a content-length.
/// - `/echo...` answers 200 with the request it got, as `httpbin`'s
///   `/anything` does: a JSON body with the method, path and query and every
///   header, and each header repeated as an `x-echo-<name>` response header.
///   `?chunk=K` sends the body in K-byte chunks without a content-length;
///   `?pad=N` adds N bytes of padding to the body.
/// - anything else answers 201 with `{"ok":true,"echo_size":N}` and a
///   `set-cookie` header (which the record must not keep).
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_with(None).await
    }

    /// The same upstream, behind TLS when an acceptor is given.
    pub async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(answer(req, log).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, log: Arc<Mutex<Vec<Seen>>>) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path.starts_with("/echo") {
        return echo(&parts, &body, query.as_deref().unwrap_or_default());
    }
    if path.starts_with("/stream") {
        let n: usize = query
            .as_deref()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        let chunks = (0..n)
            .step_by(4096)
            .map(|start| {
                Bytes::from(
                    (start..n.min(start + 4096))
                        .map(|i| b'a' + (i % 26) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        return Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(BodyExt::boxed(Chunked(chunks)))
            .unwrap();
    }
    let reply = serde_json::json!({"ok": true, "echo_size": body.len()}).to_string();
    Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("set-cookie", "upstream-session=UPSTREAM-COOKIE-CANARY")
        .body(BodyExt::boxed(Full::new(Bytes::from(reply))))
        .unwrap()
}

fn echo(parts: &hyper::http::request::Parts, body: &[u8], query: &str) -> Response<TestBody> {
    let option = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let reply = serde_json::json!({
        "method": parts.method.as_str(),
        "path_and_query": parts.uri.path_and_query().map(|p| p.as_str()),
        "headers": headers,
        "body": String::from_utf8_lossy(body),
        "pad": "p".repeat(option("pad").unwrap_or(0)),
    })
    .to_string()
    .into_bytes();
    let mut response = Response::builder()
        .status(200)
        .header("content-type", "application/json");
    for (n, v) in &parts.headers {
        response = response.header(format!("x-echo-{n}"), v.clone());
    }
    // `?gzip=1`: says the body is gzip-encoded, whatever was asked (as some
    // upstreams do); the body is left as it is.
    if option("gzip").is_some() {
        response = response.header("content-encoding", "gzip");
    }
    let body = match option("chunk") {
        Some(k) => BodyExt::boxed(Chunked(
            reply.chunks(k.max(1)).map(Bytes::copy_from_slice).collect(),
        )),
        None => BodyExt::boxed(Full::new(Bytes::from(reply))),
    };
    response.body(body).unwrap()
}

/// A body sent in chunks, without a content-length.
struct Chunked(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A policy that allows every call.
pub const ALLOW_ALL: &str =
    "package countersign\nimport rego.v1\ndecision := {\"action\": \"allow\", \"risk\": \"low\"}\n";

/// The example payments policy, shipped in the repository.
pub fn payments_policy() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/payments/policies/payments.rego"),
    )
    .unwrap()
}

/// Raises this process's soft limit on open files to its hard limit (once)
/// and returns the soft limit now in force.
///
/// Tests here open thousands of sockets in one process (and the `countersign`
/// processes they start inherit the limit); the common default soft limit of
/// 1,024 would make them fail for a reason that is not theirs.
pub fn raise_open_files_limit() -> u64 {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    });
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    // rlim_t is u64 on Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    let soft = lim.rlim_cur as u64;
    soft
}

/// Held by the tests that open many hundreds of sockets, so that two of
/// them never run at once and together pass the open-files limit.
pub static MANY_SOCKETS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A temporary deployment: config file, policies and record in one folder.
pub struct Deployment {
    pub dir: tempfile::TempDir,
}

impl Deployment {
    /// Writes `policy` and a config routing `/v1` and `/stream` and `/slow` to `upstream`;
    /// `extra` is appended to the YAML (top-level keys).
    pub fn new(upstream: &str, policy: &str, extra: &str) -> Deployment {
        set_test_keys();
        raise_open_files_limit();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/policy.rego"), policy).unwrap();
        let yaml = format!(
            "listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0, token_env: CS_TEST_ADMIN_TOKEN }}
routes:
  - name: payments
    match: {{ path_prefix: / }}
    upstream: {upstream}
    timeout: 1s
    connect_timeout: 1s
capture:
  headers_allow: [content-type, user-agent, idempotency-key]
  max_body_bytes: 4096
  max_response_bytes: 1024
reviewers:
  alice: {{ key_env: CS_TEST_KEY_ALICE, groups: [finance-approvers] }}
  bob: {{ key_env: CS_TEST_KEY_BOB, groups: [finance-approvers] }}
  carol: {{ key_env: CS_TEST_KEY_CAROL, groups: [finance-approvers] }}
  ap-agent-7: {{ key_env: CS_TEST_KEY_AGENT, groups: [finance-approvers] }}
  dave: {{ key_env: CS_TEST_KEY_DAVE, groups: [it-approvers] }}
audit: {{ store: \"sqlite://audit.db\", busy_timeout: 200ms }}
{extra}"
        );
        std::fs::write(dir.path().join("countersign.yaml"), yaml).unwrap();
        Deployment { dir }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("countersign.yaml")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("audit.db")
    }

    /// Replaces the first `from` in the config with `to`; `from` must be
    /// there (an edit that finds nothing would test the defaults).
    pub fn edit_config(&self, from: &str, to: &str) {
        let yaml = std::fs::read_to_string(self.config_path()).unwrap();
        assert!(
            yaml.contains(from),
            "`{from}` is not in the config:\n{yaml}"
        );
        std::fs::write(self.config_path(), yaml.replacen(from, to, 1)).unwrap();
    }

    pub async fn start(&self) -> countersign::app::Running {
        std::env::set_var("CS_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
        let config = countersign::config::Config::load(&self.config_path()).unwrap();
        countersign::app::start(config).await.unwrap()
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Reviewers' Standard Webhooks keys (whsec_ + base64 of the key bytes).
pub const KEYS: [(&str, &str, &str); 5] = [
    (
        "alice",
        "CS_TEST_KEY_ALICE",
        "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYWxpY2U=",
    ),
    (
        "bob",
        "CS_TEST_KEY_BOB",
        "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYm9i",
    ),
    (
        "carol",
        "CS_TEST_KEY_CAROL",
        "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktY2Fyb2w=",
    ),
    (
        "ap-agent-7",
        "CS_TEST_KEY_AGENT",
        "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYWdlbnQ=",
    ),
    (
        "dave",
        "CS_TEST_KEY_DAVE",
        "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktZGF2ZQ==",
    ),
];

/// The notify hook's secret.
pub const HOOK_SECRET: &str = "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktaG9vaw==";

pub fn key_of(reviewer: &str) -> &'static str {
    KEYS.iter()
        .find(|k| k.0 == reviewer)
        .map(|k| k.2)
        .unwrap_or("whsec_d3Jvbmcta2V5")
}

/// Every process and in-process server of a test finds the keys here.
pub fn set_test_keys() {
    std::env::set_var("CS_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
    std::env::set_var("CS_TEST_HOOK_SECRET", HOOK_SECRET);
    for (_, var, key) in KEYS {
        std::env::set_var(var, key);
    }
}

/// GET an admin URL with the admin token and parse the JSON answer.
pub async fn admin_json(url: &str) -> Value {
    json_of(client().get(url).bearer_auth(ADMIN_TOKEN)).await
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An agent on a raw socket that has sent `request` (the exact bytes) and
/// not read anything yet: dropping it hangs up.
pub async fn raw_agent(proxy: SocketAddr, request: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut agent = tokio::net::TcpStream::connect(proxy).await.unwrap();
    agent.write_all(request.as_bytes()).await.unwrap();
    agent
}

/// One record as the tests read it: (seq, action_id, kind, payload).
pub type Row = (i64, String, String, Value);

/// Every record in the SQLite file, in seq order.
pub fn records(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, action_id, kind, payload FROM records ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            let p: String = r.get(3)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                serde_json::from_str(&p).unwrap(),
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// The kinds of an action's steps, in order: every record of it but the
/// `answered` record (what the agent got, written as the answer leaves;
/// `answered_of` reads it).
pub fn kinds_of(db: &Path, action_id: &str) -> Vec<String> {
    records(db)
        .into_iter()
        .filter(|r| r.1 == action_id && r.2 != "answered")
        .map(|r| r.2)
        .collect()
}

/// The `answered` record of an action (what the agent got), once written.
pub async fn answered_of(db: &Path, action_id: &str) -> Value {
    let found = eventually(
        async || {
            records(db)
                .into_iter()
                .find(|r| r.1 == action_id && r.2 == "answered")
        },
        Option::is_some,
    )
    .await;
    found
        .unwrap_or_else(|| panic!("no answered record for {action_id}"))
        .3
}

/// The payload of an action's record of `kind`.
pub fn payload_of(db: &Path, action_id: &str, kind: &str) -> Value {
    records(db)
        .into_iter()
        .find(|r| r.1 == action_id && r.2 == kind)
        .map(|r| r.3)
        .unwrap_or_else(|| panic!("no {kind} record for {action_id}"))
}

/// Polls `probe` every 20 ms, for up to 10 s, until `done` holds, and
/// returns the last value seen, so the caller's assertion reports it.
pub async fn eventually<T>(mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = probe().await;
        if done(&seen) || std::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the action has `n` records (result records are written just
/// after the agent's answer).
pub async fn wait_for_records(db: &Path, action_id: &str, n: usize) {
    let kinds = eventually(async || kinds_of(db, action_id), |k| k.len() >= n).await;
    assert!(
        kinds.len() >= n,
        "action {action_id} never reached {n} records: {kinds:?}"
    );
}

/// GET a URL and parse the JSON answer.
pub async fn get_json(url: &str) -> Value {
    json_of(client().get(url)).await
}

/// The action ids `countersign audit list --json` prints for this config,
/// with `extra` options, in its order (newest first); the command must
/// succeed.
pub fn audit_list_ids(config: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "audit",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = countersign(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `GET /readyz` on an admin listener (`host:port`), as JSON.
pub async fn readyz(admin: impl std::fmt::Display) -> Value {
    get_json(&format!("http://{admin}/readyz")).await
}

async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub fn action_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-countersign-action-id")
        .expect("every answer carries the action id")
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs the countersign binary.
pub fn countersign(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .output()
        .unwrap()
}

/// Every byte of the record: the SQLite file, its WAL and shared memory.
/// Read again whole if a WAL or shared-memory file vanished midway (the last
/// connection closing folds it into the file), so nothing is missed.
pub fn record_bytes(d: &Deployment) -> Vec<u8> {
    'again: for _ in 0..20 {
        let mut all = Vec::new();
        for f in std::fs::read_dir(d.dir.path()).unwrap() {
            let path = f.unwrap().path();
            if path.to_string_lossy().contains("audit.db") {
                match std::fs::read(&path) {
                    Ok(bytes) => all.extend(bytes),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue 'again;
                    }
                }
            }
        }
        return all;
    }
    panic!("the record files kept changing while being read")
}

/// A `countersign serve` process whose whole system log (stderr) is kept.
pub struct LoggedServe {
    child: std::process::Child,
    /// Where its proxy listens.
    pub proxy: String,
    log: Arc<Mutex<String>>,
}

impl LoggedServe {
    /// Starts it with these extra environment variables.
    pub fn start(d: &Deployment, envs: &[(&str, &str)]) -> LoggedServe {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["serve", "--config", d.config_path().to_str().unwrap()])
            .envs(envs.iter().copied())
            .env_remove("COUNTERSIGN_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["message"] == "countersign is serving" {
                    let _ = tx.send(v["proxy_addr"].as_str().unwrap_or_default().to_string());
                }
                let mut log = keep.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let proxy = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("countersign serve started");
        LoggedServe { child, proxy, log }
    }

    /// SIGTERM, wait for the exit, and return the whole log.
    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, wait for the exit, and return the whole log.
    pub fn stop(mut self) -> String {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(self.child.wait().unwrap().success(), "serve exits 0");
        // The reader thread has seen the end of stderr once the child is gone.
        std::thread::sleep(Duration::from_millis(200));
        let log = self.log.lock().unwrap().clone();
        log
    }
}

impl Drop for LoggedServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin listener's Prometheus text (`admin` is `http://host:port`).
pub async fn metrics_text(admin: &str) -> String {
    client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one exact series, 0 when absent (a counter whose labels
/// have not been counted yet).
pub async fn metric(admin: &str, series: &str) -> f64 {
    series_value(&metrics_text(admin).await, series).unwrap_or(0.0)
}

/// The value of a series that is always exported (a gauge): a renamed or
/// missing one fails the test instead of reading as 0.
pub async fn gauge(admin: &str, series: &str) -> f64 {
    let text = metrics_text(admin).await;
    series_value(&text, series).unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
}

fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
