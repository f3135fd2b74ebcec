//! HTTP plumbing shared by both listeners: the response body type, JSON
//! answers, and the accept loop with its connection limit, header limits,
//! TLS and graceful shutdown.

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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::identity::mtls::{ClientCerts, Presented};
use crate::metrics::ListenerMetrics;

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

/// How a listener serves TLS: the acceptor and, on a proxy listener that
/// takes client certificates, the check each certificate gets right after
/// the handshake ([`crate::identity::mtls`]).
#[derive(Clone)]
pub struct Tls {
    /// The acceptor.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The client-certificate check, when the listener asks for certificates.
    pub clients: Option<Arc<ClientCerts>>,
}

impl From<tokio_rustls::TlsAcceptor> for Tls {
    fn from(acceptor: tokio_rustls::TlsAcceptor) -> Tls {
        Tls {
            acceptor,
            clients: None,
        }
    }
}

/// A listener's TLS; the reloader swaps it when the certificate or the
/// client CA changes, and each new connection takes the one in force.
pub type TlsSource = Arc<std::sync::RwLock<Tls>>;

/// What the client of a TLS connection presented, attached to each of its
/// requests (`Request::extensions`) when the listener asks for client
/// certificates. Absent: the listener does not ask, or nothing was presented.
#[derive(Clone)]
pub struct PeerCertificate(pub Arc<Presented>);

/// A request handler: the proxy pipeline or the admin router.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// How one listener bounds what its clients can hold.
#[derive(Clone)]
pub struct ListenerLimits {
    /// Connections open at once; at the limit the listener stops accepting
    /// and new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time to send a request head (and to finish a TLS handshake); an idle
    /// keep-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (431 beyond); bounds the read buffer.
    pub max_header_bytes: usize,
    /// Most header lines in a request (431 beyond).
    pub max_headers: usize,
    /// Where the open connections and limit hits are counted.
    pub metrics: Arc<ListenerMetrics>,
}

impl ListenerLimits {
    /// The proxy listener's limits.
    pub fn proxy(limits: &LimitsConfig, metrics: Arc<ListenerMetrics>) -> ListenerLimits {
        ListenerLimits::with(limits, limits.max_connections, metrics)
    }

    /// The admin listener's limits: its own, smaller, connection count.
    pub fn admin(limits: &LimitsConfig, metrics: Arc<ListenerMetrics>) -> ListenerLimits {
        ListenerLimits::with(limits, limits.admin_max_connections, metrics)
    }

    fn with(
        limits: &LimitsConfig,
        max_connections: usize,
        metrics: Arc<ListenerMetrics>,
    ) -> ListenerLimits {
        ListenerLimits {
            max_connections,
            header_read_timeout: limits.header_read_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            metrics,
        }
    }

    fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(self.max_header_bytes)
            // The read buffer holds at most one request head; without this
            // hyper lets each connection grow it to ~400 KB.
            .max_buf_size(self.max_header_bytes.max(MIN_BUF_SIZE))
            .keep_alive(true);
        // hyper keeps up to 100 header slots on the stack; asking for any
        // other number moves them to the heap on every request.
        if self.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            builder.max_headers(self.max_headers);
        }
        builder
    }
}

/// hyper's smallest allowed read buffer.
const MIN_BUF_SIZE: usize = 8192;
/// hyper's own header count limit.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// How often "connection limit reached" is logged at most.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One connection's place under the listener's limit, held for the
/// connection's life and counted in the open-connections gauge. Each
/// request carries it ([`ConnectionSlot`]), so work that outlives its
/// connection (a forward whose agent hung up) keeps the place until it
/// ends: hanging up cannot put more calls upstream than the limit.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<ListenerMetrics>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<ListenerMetrics>) -> Slot {
        metrics.open.add(1);
        Slot {
            _permit: permit,
            metrics,
        }
    }
}

/// A request's share of its connection's [`Slot`] (a request extension).
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Slot>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.open.sub(1);
    }
}

/// Accepts connections until `shutdown` turns true, then waits up to
/// `grace` for in-flight exchanges to finish.
///
/// At most `limits.max_connections` connections are open at once. At the
/// limit the loop stops calling `accept`: new connections wait in the
/// kernel's backlog (and are served, in order, as slots free up) instead of
/// costing a task, buffers and a file handle here. Accepting and closing
/// them at once would tell the client sooner, but it turns a flood into a
/// busy loop of accepts and closes, and drops calls that could have waited.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsSource>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    what: &'static str,
    limits: ListenerLimits,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = limits.http1();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                limits.metrics.limit_reached.inc();
                if last_warned.is_none_or(|t| t.elapsed() >= LIMIT_LOG_INTERVAL) {
                    last_warned = Some(std::time::Instant::now());
                    tracing::warn!(
                        listener = what,
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = shutdown.changed() => break,
                }
            }
        };
        let Some((stream, peer)) = accept(&listener, &mut shutdown, what).await else {
            break;
        };
        let slot = ConnectionSlot(Arc::new(Slot::new(permit, limits.metrics.clone())));
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service(&handler, None, slot.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(source) => {
                let tls = source.read().unwrap_or_else(|p| p.into_inner()).clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let handshake_timeout = limits.header_read_timeout;
                let handler = handler.clone();
                tokio::spawn(async move {
                    let _slot = slot.clone();
                    let stream =
                        match tokio::time::timeout(handshake_timeout, tls.acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                    // Judged once, with the client CA this connection was
                    // accepted under; every request of it carries the verdict.
                    let presented = tls.clients.as_ref().and_then(|c| {
                        c.check(stream.get_ref().1.peer_certificates())
                            .map(|p| PeerCertificate(Arc::new(p)))
                    });
                    let conn = watcher.watch(builder.serve_connection(
                        TokioIo::new(stream),
                        service(&handler, presented, slot),
                    ));
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

/// The per-connection service: the handler, with what the client presented
/// attached to each request.
fn service(
    handler: &Handler,
    presented: Option<PeerCertificate>,
    slot: ConnectionSlot,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    let handler = handler.clone();
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(p) = &presented {
            req.extensions_mut().insert(p.clone());
        }
        req.extensions_mut().insert(slot.clone());
        let answer = handler(req);
        async move { Ok::<_, Infallible>(answer.await) }
    })
}

/// The next connection, or `None` once shutdown is signalled.
async fn accept(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    what: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// How many completed connections the kernel keeps waiting for `accept`:
/// the waiting room while a listener is at its connection limit (the
/// kernel caps it at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 1024;

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std and tokio do: a restart can bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    };
    listen().map_err(|e| {
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
    server_tls(cert, key, None).map(|t| t.acceptor)
}

/// The TLS of a listener: its certificate and key (PEM files) and, when
/// `clients` is given, client certificates asked for and checked.
pub fn server_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    clients: Option<ClientCerts>,
) -> Result<Tls, String> {
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
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?;
    let builder = match &clients {
        None => builder.with_no_client_auth(),
        Some(c) => builder.with_client_cert_verifier(c.handshake_verifier()),
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        clients: clients.map(Arc::new),
    })
}
