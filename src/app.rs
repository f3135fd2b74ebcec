//! Wires a validated config into a running service: the record store and
//! its writer, the policy and its threads, the route clients, both
//! listeners (the admin one on its own thread), and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::approval::Reviewers;
use crate::audit::store::Store;
use crate::config::Config;
use crate::http::{Handler, ListenerLimits, TlsSource};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::proxy::forward::Upstream;
use crate::proxy::Route;

/// State shared by every request on both listeners.
pub struct Shared {
    /// The validated config.
    pub config: Config,
    /// The record store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// The admin bearer token, when configured.
    pub admin_token: Option<String>,
    /// Agents of this process waiting on held actions.
    pub waiters: crate::approval::Waiters,
    /// What this process's held actions keep out of the record.
    pub sealed: crate::approval::SealedParts,
    /// This process's id in the record (forward claims name their owner).
    pub instance: String,
    /// Notification hooks.
    pub hooks: Vec<crate::approval::notify::Hook>,
    /// HTTP client for notifications.
    pub notifier: reqwest::Client,
    /// The threads that evaluate the policy.
    pub policy_pool: crate::policy::pool::Pool,
    /// The budget for buffered request bodies.
    pub body_budget: crate::proxy::budget::Budget,
    /// Base of review URLs in notices (the admin listener as reviewers reach it).
    pub admin_url: String,
    /// The policy revisions known to be in the record.
    pub revisions: crate::audit::revisions::Revisions,
    /// The OPA decision-log export, when `decision_log` is configured.
    pub decision_log: Option<crate::policy::decision_log::DecisionLog>,
    policy: RwLock<Arc<Policy>>,
    reviewers: RwLock<Arc<Reviewers>>,
    /// The proxy listener's TLS (with the client-certificate check under
    /// `identity.mtls`), swapped when the certificate or client CA changes.
    pub tls: Option<TlsSource>,
    /// The admin listener's TLS: the same certificate, never asking
    /// reviewers or probes for a client certificate.
    pub admin_tls: Option<TlsSource>,
    /// How callers prove who they are.
    pub identity: crate::identity::Identity,
    /// Work that runs to its end even if the call that began it is
    /// dropped (the agent hung up): forwards, a hold's commit, the records
    /// of a hang-up. Shutdown waits for it before closing the store.
    pub detached: tokio_util::task::TaskTracker,
    /// Why the newest files on disk were refused, by what (policy,
    /// reviewers, tls), while they are.
    reload_errors: RwLock<BTreeMap<&'static str, String>>,
}

impl Shared {
    /// The policy revision in force. The lock is held only to clone an Arc.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configured reviewers in force.
    pub fn reviewers(&self) -> Arc<Reviewers> {
        self.reviewers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new policy revision in force.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Puts a new reviewer list in force.
    pub fn set_reviewers(&self, reviewers: Reviewers) {
        *self.reviewers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(reviewers);
    }

    /// Puts a new certificate (and client CA) in use for new connections
    /// on both listeners.
    pub fn set_tls(&self, proxy: crate::http::Tls, admin: crate::http::Tls) {
        for (source, tls) in [(&self.tls, proxy), (&self.admin_tls, admin)] {
            if let Some(source) = source {
                *source.write().unwrap_or_else(|p| p.into_inner()) = tls;
            }
        }
    }

    /// Clears a reload failure of `what`.
    pub fn reload_ok(&self, what: &'static str) {
        self.reload_errors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(what);
    }

    /// Records a refused reload of `what`: log, metric, `/readyz`.
    pub fn reload_failed(&self, what: &'static str, why: String) {
        tracing::error!(what, "{why}");
        self.metrics.reload_failed(what);
        self.reload_errors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(what, why);
    }

    /// Refused reloads still standing, by what.
    pub fn reload_errors(&self) -> BTreeMap<&'static str, String> {
        self.reload_errors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first route that takes this host and path.
    pub fn route_for(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path))
    }
}

/// A running service, as tests and `serve` hold it.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// How long in-flight calls may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

impl Running {
    /// Stops accepting, lets in-flight calls finish (up to the grace
    /// period), and commits every queued record before returning.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Forwards whose agents hung up, and the records of hang-ups, are
        // not connections: they are waited for here, within the same grace.
        self.shared.detached.close();
        if tokio::time::timeout(GRACE, self.shared.detached.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "calls still forwarding after the grace period; they will be marked forward_interrupted at the next start"
            );
        }
        if let Err(e) = self.shared.store.close().await {
            tracing::error!(error = %e, "some result records could not be committed before exit");
        }
    }
}

/// Starts everything the config describes and returns once both listeners
/// accept connections.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.check_secrets()?;
    let metrics = Arc::new(Metrics::default());
    let policy = Policy::load(&config.policy).with_context(|| {
        format!(
            "{}: policy.dir: the policies could not be loaded",
            config.file.display()
        )
    })?;
    if policy.engine_kind() == crate::policy::EngineKind::Vm {
        tracing::warn!(
            "policy.engine is vm: regorus's VM answers differently from the interpreter in ways that can allow what the interpreter refuses (docs/reference.md, Engine); use it to compare, not to serve"
        );
    } else if let Some(why) = policy.vm_fallback_reason() {
        tracing::debug!(reason = why, "policy runs on the interpreter, not the VM");
    }
    tracing::info!(
        revision = policy.revision(),
        engine = policy.engine_kind().as_str(),
        files = policy.files().len(),
        "policy loaded"
    );
    // Opening connects, migrates and may rebuild the index: blocking work
    // (the PostgreSQL client cannot even run on an async worker).
    let store = {
        let (audit, metrics) = (config.audit.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || Store::open(&audit, metrics))
            .await
            .context("the record store's opening task failed")??
    };
    let mut routes = Vec::new();
    for r in &config.routes {
        routes.push(Route {
            config: r.clone(),
            upstream: Upstream::new(r)?,
        });
    }
    let reviewers = Reviewers::from_config(&config).map_err(|e| anyhow::anyhow!(e))?;
    let admin_token = match &config.admin.token {
        Some(t) => Some(
            t.read()
                .map_err(|e| anyhow::anyhow!("{}: admin: {e}", config.file.display()))?,
        ),
        None => {
            tracing::warn!("admin.token_env is not set: the actions API is disabled (health, readiness and metrics stay open)");
            None
        }
    };
    let (tls, admin_tls) = match listener_tls(&config) {
        Ok(Some((proxy, admin))) => (
            Some(Arc::new(std::sync::RwLock::new(proxy))),
            Some(Arc::new(std::sync::RwLock::new(admin)) as TlsSource),
        ),
        Ok(None) => (None, None),
        Err(e) => anyhow::bail!("{}: {e}", config.file.display()),
    };
    let identity = crate::identity::Identity::from_config(&config.identity)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?;
    let file = config.file.display().to_string();
    let mut hooks = Vec::new();
    for (i, n) in config.notify.iter().enumerate() {
        let key = n.secret.read().and_then(|k| crate::config::webhook_key(&k));
        let key = key.map_err(|e| anyhow::anyhow!("{file}: notify[{i}]: {e}"))?;
        hooks.push(crate::approval::notify::Hook {
            url: n.url.clone(),
            key,
            attempts: n.attempts,
            backoff: n.backoff,
        });
    }
    let notifier = crate::proxy::forward::outbound_client("notify")?;
    let decision_log = match &config.decision_log {
        Some(sink) => Some(
            crate::policy::decision_log::DecisionLog::open(sink)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?,
        ),
        None => None,
    };
    let policy_pool =
        crate::policy::pool::Pool::start(config.policy_pool.workers, config.policy_pool.queue)
            .context("cannot start the policy threads")?;
    let body_budget = crate::proxy::budget::Budget::new(
        config.limits.max_buffered_body_bytes,
        metrics.buffered_body_bytes.clone(),
    );
    let proxy_listener = crate::http::bind(config.listen, "proxy").await?;
    let admin_listener = crate::http::bind(config.admin.listen, "admin listener").await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let admin_url = config.admin.public_url.clone().unwrap_or_else(|| {
        format!(
            "{}://{admin_addr}",
            if tls.is_some() { "https" } else { "http" }
        )
    });
    let shared = Arc::new(Shared {
        config,
        store,
        metrics,
        routes,
        admin_token,
        waiters: crate::approval::Waiters::default(),
        sealed: crate::approval::SealedParts::default(),
        instance: instance_id(),
        hooks,
        notifier,
        policy_pool,
        body_budget,
        admin_url,
        revisions: Default::default(),
        decision_log,
        policy: RwLock::new(Arc::new(policy)),
        reviewers: RwLock::new(Arc::new(reviewers)),
        tls: tls.clone(),
        admin_tls: admin_tls.clone(),
        identity,
        detached: tokio_util::task::TaskTracker::new(),
        reload_errors: RwLock::new(BTreeMap::new()),
    });
    // Changed actions (ours, or other processes' on a shared store) wake
    // the agents waiting on them here.
    // Weak: the store must not keep the service alive after it stops.
    let s = Arc::downgrade(&shared);
    shared.store.watch(Arc::new(move |id: &str| {
        if let Some(s) = s.upgrade() {
            s.waiters.poke(id)
        }
    }));
    let interrupted = crate::approval::sweep::on_start(&shared).await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "calls interrupted by the last stop were marked failed (forward_interrupted)"
        );
    }
    let checkpointer = match &shared.config.audit.checkpoint {
        Some(c) => Some(
            crate::audit::checkpointer::Checkpointer::start(
                shared.store.clone(),
                c,
                shared.notifier.clone(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!("{}: audit.checkpoint: {e}", shared.config.file.display())
            })?,
        ),
        None => None,
    };
    let (shutdown, rx) = watch::channel(false);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let s = shared.clone();
    let proxy: Handler =
        Arc::new(move |req| Box::pin(crate::proxy::pipeline::handle(s.clone(), req, scheme)));
    let admin = crate::admin::handler(shared.clone(), tokio::runtime::Handle::current());
    let limits = &shared.config.limits;
    let admin_limits = ListenerLimits::admin(limits, shared.metrics.admin_listener.clone());
    let admin_done = spawn_admin(admin_listener, admin_tls, admin, rx.clone(), admin_limits)?;
    let mut tasks = vec![
        tokio::spawn(crate::http::serve(
            proxy_listener,
            tls,
            proxy,
            rx.clone(),
            GRACE,
            "proxy",
            ListenerLimits::proxy(limits, shared.metrics.proxy_listener.clone()),
        )),
        tokio::spawn(async move {
            let _ = admin_done.await;
        }),
        tokio::spawn(crate::reload::watch(shared.clone(), rx.clone())),
        tokio::spawn(crate::identity::jwks::refresh(shared.clone(), rx.clone())),
        tokio::spawn(crate::approval::sweep::run(shared.clone(), rx.clone())),
    ];
    if let Some(c) = checkpointer {
        tasks.push(tokio::spawn(c.run(rx)));
    }
    tracing::info!(%proxy_addr, %admin_addr, store = shared.store.kind(), at = shared.store.describe(), "countersign is serving");
    Ok(Running {
        proxy_addr,
        admin_addr,
        shutdown,
        tasks,
        shared,
    })
}

/// Both listeners' TLS from the config's files, when TLS is configured:
/// the proxy's asks for client certificates under `identity.mtls`, the
/// admin listener's never does. The error names the file.
pub fn listener_tls(
    config: &Config,
) -> Result<Option<(crate::http::Tls, crate::http::Tls)>, String> {
    let Some(t) = &config.tls else {
        return Ok(None);
    };
    let clients = match &config.identity.mtls {
        Some(m) => Some(crate::identity::mtls::ClientCerts::load(&m.client_ca)?),
        None => None,
    };
    let proxy = crate::http::server_tls(&t.cert, &t.key, clients)?;
    let admin = crate::http::server_tls(&t.cert, &t.key, None)?;
    Ok(Some((proxy, admin)))
}

/// A random id for this process, as forward claims record it.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let id = crate::audit::record::new_action_id();
    // The id's last 12 characters are random (its first 12 are the time).
    let random = &id[id.len() - 12..];
    if host.is_empty() {
        random.to_string()
    } else {
        format!("{host}/{random}")
    }
}

/// Serves the admin listener on a thread of its own with a one-thread
/// runtime, so no load on the proxy (connections, bodies, policy
/// evaluations) can keep a health check, a readiness probe or a review
/// waiting for a worker. The returned receiver completes when it has shut
/// down.
fn spawn_admin(
    listener: tokio::net::TcpListener,
    tls: Option<TlsSource>,
    handler: Handler,
    shutdown: watch::Receiver<bool>,
    limits: ListenerLimits,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    // Moved between runtimes as a std listener: a tokio one belongs to the
    // runtime that registered it.
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the admin listener's runtime")?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("countersign-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        crate::http::serve(listener, tls, handler, shutdown, GRACE, "admin", limits)
                            .await
                    }
                    Err(e) => tracing::error!(error = %e, "the admin listener could not start"),
                }
            });
            let _ = done.send(());
        })
        .context("cannot start the admin listener's thread")?;
    Ok(finished)
}

/// `countersign serve`: runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // The handlers are in place before the process says it is serving, so
    // a SIGTERM right after that line still shuts down gracefully.
    let signal = shutdown_signal()?;
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down: no new connections; finishing in-flight calls");
    running.stop().await;
    tracing::info!("stopped; every queued record is committed");
    Ok(())
}

/// Registers SIGTERM and Ctrl-C now; the future completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    Ok(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    })
}
