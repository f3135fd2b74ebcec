//! HTTP plumbing shared by both listeners: the response body type, JSON
//! answers, and the accept loop with TLS and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Error type of streamed bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response countersign gives.
pub type Body = BoxBody<Bytes, BodyError>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain-text response.
pub fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// A body fed chunk by chunk from a task (the streamed upstream response).
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BodyError>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it; dropping the sender ends it.
    pub fn new(depth: usize) -> (mpsc::Sender<Result<Bytes, BodyError>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, ChannelBody { rx })
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// The listeners' TLS acceptor; the reloader swaps it when the certificate
/// changes, and each new connection takes the one in force.
pub type TlsSource = Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>;

/// A request handler: the proxy pipeline or the admin router.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Accepts connections until `shutdown` turns true, then waits up to
/// `grace` for in-flight exchanges to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsSource>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    what: &'static str,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(source) => {
                let acceptor = source.read().unwrap_or_else(|p| p.into_inner()).clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn =
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!(listener = what, "all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(listener = what, ?grace, "shutdown grace period over; closing remaining connections"),
    }
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for the {what}: {e}"),
        )
    })
}

/// Builds a rustls acceptor from PEM files.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs: Vec<_> = rustls_pemfile::certs(
        &mut std::fs::read(cert)
            .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?
            .as_slice(),
    )
    .collect::<Result<_, _>>()
    .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert {}: no PEM certificates found",
            cert.display()
        ));
    }
    let key = rustls_pemfile::private_key(
        &mut std::fs::read(key)
            .map_err(|e| format!("tls.key {}: {e}", key.display()))?
            .as_slice(),
    )
    .map_err(|e| format!("tls.key {}: {e}", key.display()))?
    .ok_or_else(|| format!("tls.key {}: no PEM private key found", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("tls: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
