//! See the module list in `hardening/mod.rs`. Slow policies, slow or huge
//! bodies, idle or half-sent requests and connection floods: each is cut
//! off at its limit, refused with a clear answer and recorded, while health
//! checks and reviews keep working; a store that cannot commit makes the
//! process not ready until it can again.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::holds::Admin;
use crate::support::*;

/// Spins on `/v1/spin` until the time limit stops it; holds `/v1/hold` for
/// alice; allows `/v1/ok`.
const SPIN_HOLD_OR_ALLOW: &str = r#"package countersign
import rego.v1
spin := count([x | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000); x > y]) if input.request.path == "/v1/spin"
decision := {"action": "allow", "risk": "low", "reasons": [sprintf("%v", [spin])]} if input.request.path == "/v1/spin"
decision := {"action": "hold", "risk": "high", "approval": {"reviewers": ["alice"], "min": 1}} if input.request.path == "/v1/hold"
decision := {"action": "allow", "risk": "low"} if input.request.path == "/v1/ok"
"#;

async fn post(proxy: SocketAddr, path: &str) -> (u16, Duration, String, Value) {
    let started = Instant::now();
    let resp = client()
        .post(format!("http://{proxy}{path}"))
        .header("content-type", "application/json")
        .header("x-agent-id", "ap-agent-7")
        .body(r#"{"amount": 1}"#)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = action_id(&resp);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, started.elapsed(), id, body)
}

/// Prometheus value of one exact series, 0 when absent.
async fn metric(admin: SocketAddr, series: &str) -> f64 {
    crate::support::metric(&format!("http://{admin}"), series).await
}

/// The bytes of request bodies buffered now (a gauge, always exported).
async fn buffered_bytes(admin: SocketAddr) -> f64 {
    crate::support::gauge(
        &format!("http://{admin}"),
        "countersign_buffered_body_bytes",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_policy_is_cut_off_at_its_limit_and_never_stalls_health_or_reviews() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        SPIN_HOLD_OR_ALLOW,
        "policy: { timeout: 1s }\nhold: { wait: 100ms }\n",
    );
    let cs = d.start().await;
    let admin = Admin::of(&cs);
    let (status, _, held_id, _) = post(cs.proxy_addr, "/v1/hold").await;
    assert_eq!(status, 202, "held for alice, answered after hold.wait");

    // The storm: far more slow evaluations than there are policy threads.
    const STORM: usize = 20;
    let storm_started = Instant::now();
    let storm: Vec<_> = (0..STORM)
        .map(|_| tokio::spawn(post(cs.proxy_addr, "/v1/spin")))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Meanwhile the admin listener answers at once, and a review goes through.
    let review = {
        let admin = admin.clone();
        let id = held_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = admin.review(&id, "alice", "approve").await;
            (answer, started.elapsed())
        })
    };
    let mut slowest_health = Duration::ZERO;
    let mut probes = 0;
    while storm_started.elapsed() < Duration::from_millis(1100) {
        let started = Instant::now();
        let resp = client()
            .get(format!("http://{}/healthz", cs.admin_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        slowest_health = slowest_health.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest_health < Duration::from_millis(200),
        "/healthz took {slowest_health:?} at worst ({probes} probes) during the storm"
    );
    let ((status, body), took) = review.await.unwrap();
    assert_eq!(status, 200, "the review is taken during the storm: {body}");
    assert!(took < Duration::from_secs(1), "the review took {took:?}");

    // Every slow call is refused within the time limit and a small margin,
    // whether it was running (policy_timeout) or still waiting for a
    // policy thread (policy_overloaded); none is forwarded.
    let mut timed_out = 0;
    for call in storm {
        let (status, took, id, body) = call.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            took < Duration::from_millis(1400),
            "an agent waited {took:?} for a 1s policy limit"
        );
        wait_for_records(&d.db_path(), &id, 1).await;
        let failed = payload_of(&d.db_path(), &id, "failed");
        let reason = failed["reason"].as_str().unwrap().to_string();
        assert!(
            reason == "policy_timeout" || reason == "policy_overloaded",
            "{failed}"
        );
        timed_out += usize::from(reason == "policy_timeout");
    }
    assert!(timed_out >= 1, "the running evaluations hit the time limit");

    // Calls abandoned in the queue are skipped, not run: the threads are
    // free again as soon as the running evaluations stop.
    let (status, took, _, body) = post(cs.proxy_addr, "/v1/ok").await;
    assert_eq!(status, 201, "{body}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let seen: Vec<_> = upstream
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(
        seen,
        ["/v1/hold", "/v1/ok"],
        "only the approved and the allowed call went upstream"
    );
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_policy_queue_refuses_at_once() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        SPIN_HOLD_OR_ALLOW,
        "policy: { timeout: 1s, workers: 1, queue: 1 }\n",
    );
    let cs = d.start().await;
    // One running, one queued, the rest refused without waiting.
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(post(cs.proxy_addr, "/v1/spin")))
        .collect();
    let mut overloaded = 0;
    for call in calls {
        let (status, took, id, body) = call.await.unwrap();
        assert_eq!(status, 503, "{body}");
        if body["error"]
            .as_str()
            .unwrap()
            .contains("queue of 1 evaluations is full")
        {
            overloaded += 1;
            assert!(took < Duration::from_millis(500), "took {took:?}");
            wait_for_records(&d.db_path(), &id, 1).await;
            assert_eq!(
                payload_of(&d.db_path(), &id, "failed")["reason"],
                "policy_overloaded"
            );
        }
    }
    assert!(
        overloaded >= 3,
        "only {overloaded} refused for a full queue"
    );
    assert!(
        metric(
            cs.admin_addr,
            "countersign_refused_total{reason=\"policy_overloaded\"}"
        )
        .await
            >= overloaded as f64
    );
    assert!(upstream.seen().is_empty());
    cs.stop().await;
}

/// The soft limit on open files of this process.
fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// A kilobyte figure from /proc/<pid>/status (`VmRSS`, `VmHWM`).
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// `countersign serve` as a real process, killed when dropped.
struct Serve {
    child: std::process::Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(d: &Deployment) -> Serve {
    use std::io::BufRead;
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config", d.config_path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let unset: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut serve = Serve {
        child,
        proxy: unset,
        admin: unset,
    };
    let mut lines = std::io::BufReader::new(serve.child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("countersign serve started").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "countersign is serving" {
            std::thread::spawn(move || for _ in lines.by_ref() {});
            serve.proxy = v["proxy_addr"].as_str().unwrap().parse().unwrap();
            serve.admin = v["admin_addr"].as_str().unwrap().parse().unwrap();
            return serve;
        }
    }
}

/// Reads one response's status line from a raw connection, if one comes.
fn status_line(stream: &mut std::net::TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

const PARTIAL: usize = 256 * 1024;
const DECLARED: usize = 1024 * 1024;

fn upload_head(declared: usize) -> String {
    format!(
        "POST /v1/upload HTTP/1.1\r\nHost: flood\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
}

#[test]
fn a_thousand_unfinished_uploads_stay_within_the_body_budget() {
    // Before `serve`: the countersign process inherits the raised limit.
    let _alone = MANY_SOCKETS.blocking_lock();
    let _ = raise_open_files_limit();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Upstream::start());
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        "limits: { max_buffered_body_bytes: 16777216 }\nlog: { format: json }\n",
    );
    d.edit_config(
        "max_body_bytes: 4096",
        &format!("max_body_bytes: {DECLARED}"),
    );
    let cs = serve(&d);
    let pid = cs.child.id();
    let before_kb = memory_kb(pid, "VmRSS");

    // Every connection costs a file in this process and in the server;
    // leave room under the soft limit for the other tests running beside.
    let flood = 1000.min(open_file_limit() / 2);
    let chunk = vec![b'x'; PARTIAL];
    let mut open = Vec::new();
    for _ in 0..flood {
        let mut s = std::net::TcpStream::connect(cs.proxy).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        // A refused upload is closed by the server mid-body: writing fails.
        let _ = s
            .write_all(upload_head(DECLARED).as_bytes())
            .and_then(|_| s.write_all(&chunk));
        open.push(s);
    }
    let during_kb = memory_kb(pid, "VmRSS");
    let buffered = rt.block_on(buffered_bytes(cs.admin));
    assert!(buffered <= 16777216.0, "buffered {buffered} bytes");
    // The server may still be reading what the kernel took from the
    // flood: give it the usual ten seconds to refuse one.
    let refused = rt.block_on(eventually(
        async || metric(cs.admin, "countersign_refused_total{reason=\"overloaded\"}").await,
        |n| *n >= 1.0,
    ));
    let sent_mb = flood * PARTIAL / (1024 * 1024);
    assert!(
        refused >= 1.0,
        "{flood} uploads of {sent_mb} MB in all and none refused"
    );

    // An extra call with a body of the allowed size is refused now.
    let mut extra = std::net::TcpStream::connect(cs.proxy).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    extra
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra
        .write_all(upload_head(DECLARED).as_bytes())
        .and_then(|_| extra.write_all(&vec![b'y'; DECLARED]));
    // The server answers before it closes, so the answer is readable even
    // when the rest of the upload is refused with a reset.
    let answer = status_line(&mut extra);
    assert!(
        answer.as_deref().is_some_and(|l| l.contains(" 503 ")),
        "the extra upload got {answer:?}"
    );

    let peak_kb = memory_kb(pid, "VmHWM");
    assert!(
        peak_kb < 200 * 1024,
        "{flood} unfinished uploads ({sent_mb} MB sent) took the server from {before_kb} kB to {during_kb} kB (peak {peak_kb} kB)"
    );
    assert!(
        upstream.seen().is_empty(),
        "no unfinished upload was forwarded"
    );

    // Once the uploads hang up, the budget is free and calls go through.
    drop(open);
    drop(extra);
    let freed = rt.block_on(eventually(
        async || buffered_bytes(cs.admin).await,
        |b| *b == 0.0,
    ));
    assert_eq!(freed, 0.0, "the budget is given back when uploads end");
    let resp = rt.block_on(
        client()
            .post(format!("http://{}/v1/upload", cs.proxy))
            .body(vec![b'z'; DECLARED])
            .send(),
    );
    assert_eq!(resp.unwrap().status(), 201);
    assert_eq!(upstream.seen().len(), 1);
}

/// Raw connection helper for the async tests.
async fn connect(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads until the peer closes (or `limit` passes); returns what came and when.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_requests_are_closed_at_the_header_read_timeout() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        "limits: { header_read_timeout: 400ms }\n",
    );
    let cs = d.start().await;
    let mut half = connect(cs.proxy_addr).await;
    half.write_all(b"POST /v1/payouts HTTP/1.1\r\nHost: a\r\nContent-Le")
        .await
        .unwrap();
    let mut idle = connect(cs.proxy_addr).await;
    let (got, closed) = read_until_closed(&mut half, Duration::from_secs(5)).await;
    let closed = closed.expect("a half-sent request head is not kept open");
    assert!(
        closed >= Duration::from_millis(300) && closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
    let answer = String::from_utf8_lossy(&got);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "an idle connection is not kept open");

    // A request sent in time is served on the same limits.
    let resp = client()
        .post(format!("http://{}/v1/payouts", cs.proxy_addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_431() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        "limits: { max_header_bytes: 8192, max_headers: 20 }\n",
    );
    let cs = d.start().await;
    let big = "a".repeat(10_000);
    let resp = client()
        .post(format!("http://{}/v1/payouts", cs.proxy_addr))
        .header("x-big", big)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let mut many = client().post(format!("http://{}/v1/payouts", cs.proxy_addr));
    for i in 0..30 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_eq!(many.body("{}").send().await.unwrap().status(), 431);
    assert!(upstream.seen().is_empty());
    cs.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_new_connections_wait_and_admin_stays_open() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(
        &upstream.url(),
        ALLOW_ALL,
        "limits: { max_connections: 4 }\n",
    );
    let cs = d.start().await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(cs.proxy_addr).await);
    }
    let open = eventually(
        async || {
            metric(
                cs.admin_addr,
                "countersign_open_connections{listener=\"proxy\"}",
            )
            .await
        },
        |n| *n == 4.0,
    )
    .await;
    assert_eq!(open, 4.0);

    // The fifth waits in the backlog: connected, but not served.
    let mut fifth = connect(cs.proxy_addr).await;
    fifth
        .write_all(b"POST /v1/payouts HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut fifth, Duration::from_millis(500)).await;
    assert!(
        got.is_empty(),
        "served over the limit: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(upstream.seen().is_empty());
    // The admin listener has its own limit: health and metrics still answer.
    let health = client()
        .get(format!("http://{}/healthz", cs.admin_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        metric(
            cs.admin_addr,
            "countersign_connection_limit_reached_total{listener=\"proxy\"}"
        )
        .await
            >= 1.0
    );

    // One idle connection leaves; the waiting call is served.
    drop(idle.pop());
    let (got, closed) = read_until_closed(&mut fifth, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(closed.is_some());
    assert_eq!(upstream.seen().len(), 1);
    cs.stop().await;
}

async fn readyz(admin: SocketAddr) -> (u16, Value) {
    let resp = client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_store_that_cannot_commit_until_it_can_again() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let cs = d.start().await;
    let (status, body) = readyz(cs.admin_addr).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );

    // Another process holds the write lock past busy_timeout: commits fail.
    let locker = rusqlite::Connection::open(d.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, _, _, body) = post(cs.proxy_addr, "/v1/payouts").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = readyz(cs.admin_addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "store_failing");
    assert!(
        body["store"]["error"].as_str().unwrap().contains("locked"),
        "{body}"
    );
    assert!(body["store"]["failing_since"].is_string(), "{body}");

    // The lock goes; with no call arriving, readiness comes back by itself.
    locker.execute_batch("ROLLBACK").unwrap();
    let (status, body) = eventually(async || readyz(cs.admin_addr).await, |r| r.0 == 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"]["error"], Value::Null);
    let (status, _, _, body) = post(cs.proxy_addr, "/v1/payouts").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        upstream.seen().len(),
        1,
        "nothing was forwarded while failing"
    );
    cs.stop().await;
}

/// A small tmpfs at `dir`, unmounted when dropped; `None` where mounting
/// is not permitted (it needs CAP_SYS_ADMIN).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_full_disk_until_space_is_freed() {
    let upstream = Upstream::start().await;
    let d = Deployment::new(&upstream.url(), ALLOW_ALL, "");
    let Some(disk) = SmallDisk::mount(d.dir.path().join("disk"), "2m") else {
        eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN; the lock-based readiness test covers the mechanism");
        return;
    };
    d.edit_config("sqlite://audit.db", "sqlite://disk/audit.db");
    let cs = d.start().await;
    let (status, _, _, body) = post(cs.proxy_addr, "/v1/payouts").await;
    assert_eq!(status, 201, "{body}");

    // Fill the disk.
    let filler = disk.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.flush();
    let mut refused = None;
    for _ in 0..50 {
        let (status, _, _, body) = post(cs.proxy_addr, "/v1/payouts").await;
        if status == 503 {
            refused = Some(body);
            break;
        }
    }
    let refused = refused.expect("a call is refused once the disk is full");
    assert!(
        refused["error"].as_str().unwrap().contains("full"),
        "{refused}"
    );
    let (status, body) = readyz(cs.admin_addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["store"]["error"].as_str().unwrap().contains("full"),
        "{body}"
    );

    // Space comes back; so does readiness, without waiting for a call.
    drop(f);
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = eventually(async || readyz(cs.admin_addr).await, |r| r.0 == 200).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _, body) = post(cs.proxy_addr, "/v1/payouts").await;
    assert_eq!(status, 201, "{body}");
    cs.stop().await;
    drop(disk);
}
