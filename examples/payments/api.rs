//! A small payments API for the countersign example and benchmarks: a real
//! HTTP server that sends (pretend) payouts and prints each call it gets, so
//! you can see exactly what reached it.
//!
//! Run: `cargo run --example payments-api -- 127.0.0.1:8081`
//!
//! - `POST /v1/payouts` with `{"amount": 250, "currency": "EUR", "to": "..."}`
//!   answers 201 with the payout.
//! - `GET /v1/payouts/<id>` answers the payout, `GET /v1/balance` a balance.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}

async fn handle(
    req: Request<Incoming>,
    next_id: Arc<AtomicU64>,
    quiet: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !quiet {
        // Not println!: a closed stdout must not take the API down.
        let _ = writeln!(
            std::io::stdout(),
            "payments-api: {} {} ({} bytes)",
            parts.method,
            parts.uri,
            body.len()
        );
    }
    let path = parts.uri.path();
    Ok(match (&parts.method, path) {
        (&Method::POST, "/v1/payouts") => {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(p) if p["amount"].is_number() => {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    reply(
                        StatusCode::CREATED,
                        serde_json::json!({"payout_id": format!("po_{id}"), "amount": p["amount"], "currency": p["currency"], "to": p["to"], "status": "sent"}),
                    )
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "send a JSON body with a numeric amount"}),
                ),
            }
        }
        (&Method::GET, "/v1/balance") => reply(
            StatusCode::OK,
            serde_json::json!({"currency": "EUR", "available": 1250000}),
        ),
        (&Method::GET, p) if p.starts_with("/v1/payouts/") => reply(
            StatusCode::OK,
            serde_json::json!({"payout_id": &p["/v1/payouts/".len()..], "status": "sent"}),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let quiet = std::env::var_os("PAYMENTS_QUIET").is_some();
    let listener = TcpListener::bind(&addr).await?;
    println!("payments-api: listening on {}", listener.local_addr()?);
    let next_id = Arc::new(AtomicU64::new(1000));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let next_id = next_id.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, next_id.clone(), quiet));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
