//! The benchmark's reference point: a bare hyper reverse proxy, about as
//! little as a Rust proxy can do per call (hyper server, hyper-util's
//! pooled client, no policy, no record). countersign's allow path is
//! measured against it in `bench/run.sh`.
//!
//! Run: `cargo run --release --example bare-proxy -- LISTEN UPSTREAM`
//! e.g. `bare-proxy 127.0.0.1:18085 127.0.0.1:18081`.

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;

async fn forward(
    client: Upstream,
    upstream: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = format!("http://{upstream}{path}")
        .parse()
        .expect("the upstream and the path make a URI");
    *req.uri_mut() = uri;
    req.headers_mut().remove(hyper::header::HOST);
    Ok(client.request(req).await.unwrap_or_else(|e| {
        panic!("the upstream failed: {e}");
    }))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: bare-proxy LISTEN UPSTREAM");
    let upstream: &'static str = args
        .next()
        .expect("usage: bare-proxy LISTEN UPSTREAM")
        .leak();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let listener = TcpListener::bind(&listen).await.expect("bind");
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| forward(client.clone(), upstream, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
