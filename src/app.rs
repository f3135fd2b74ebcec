//! Wires a validated config into a running service: the record store and
//! its writer, the policy, the route clients, both listeners, and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::audit::store::Store;
use crate::config::Config;
use crate::http::Handler;
use crate::metrics::Metrics;
use crate::policy::decision::Directory;
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
    /// Reviewer names and groups, for the decision contract.
    pub directory: Directory,
    /// The admin bearer token, when configured.
    pub admin_token: Option<String>,
    /// Held actions, pending or being forwarded.
    pub holds: crate::approval::Holds,
    /// Reviewers' signing keys.
    pub reviewer_keys: BTreeMap<String, standardwebhooks::Webhook>,
    /// Notification hooks.
    pub hooks: Vec<crate::approval::notify::Hook>,
    /// HTTP client for notifications.
    pub notifier: reqwest::Client,
    /// Base of review URLs in notices (the admin listener as reviewers reach it).
    pub admin_url: String,
    policy: RwLock<Arc<Policy>>,
    /// Why the newest policy files on disk were refused, while they are.
    reload_error: RwLock<Option<String>>,
}

impl Shared {
    /// The policy revision in force. The lock is held only to clone an Arc.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the policy files on disk are not in force, if they are not.
    pub fn reload_error(&self) -> Option<String> {
        self.reload_error
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
    /// The shared state (for tests and the admin API).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, lets in-flight calls finish (up to the grace
    /// period), and commits every queued record before returning.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.shared.store.flush().await {
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
    if let Some(why) = policy.vm_fallback_reason() {
        tracing::warn!(reason = why, "policy runs on the interpreter, not the VM");
    }
    tracing::info!(
        revision = policy.revision(),
        engine = policy.engine_kind().as_str(),
        files = policy.files().len(),
        "policy loaded"
    );
    let store = Store::open(
        &config.audit.sqlite_path,
        config.audit.busy_timeout,
        metrics.clone(),
    )?;
    let mut routes = Vec::new();
    for r in &config.routes {
        routes.push(Route {
            config: r.clone(),
            upstream: Upstream::new(r)?,
        });
    }
    let directory: Directory = config
        .reviewers
        .iter()
        .map(|(n, r)| (n.clone(), r.groups.clone()))
        .collect();
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
    let tls = match &config.tls {
        Some(t) => Some(
            crate::http::tls_acceptor(&t.cert, &t.key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?,
        ),
        None => None,
    };
    let file = config.file.display().to_string();
    let mut reviewer_keys = BTreeMap::new();
    for (name, r) in &config.reviewers {
        let key = r.key.read().and_then(|k| crate::config::webhook_key(&k));
        reviewer_keys.insert(
            name.clone(),
            key.map_err(|e| anyhow::anyhow!("{file}: reviewers.{name}: {e}"))?,
        );
    }
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
    let notifier = crate::proxy::forward::notify_client()?;
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
        directory,
        admin_token,
        holds: crate::approval::Holds::default(),
        reviewer_keys,
        hooks,
        notifier,
        admin_url,
        policy: RwLock::new(Arc::new(policy)),
        reload_error: RwLock::new(None),
    });
    let restored = crate::approval::recover::recover(&shared).await?;
    if restored > 0 {
        tracing::info!(restored, "held actions restored from the record");
    }
    let (shutdown, rx) = watch::channel(false);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let s = shared.clone();
    let proxy: Handler =
        Arc::new(move |req| Box::pin(crate::proxy::pipeline::handle(s.clone(), req, scheme)));
    let s = shared.clone();
    let admin: Handler = Arc::new(move |req| Box::pin(crate::admin::handle(s.clone(), req)));
    let tasks = vec![
        tokio::spawn(crate::http::serve(
            proxy_listener,
            tls.clone(),
            proxy,
            rx.clone(),
            GRACE,
            "proxy",
        )),
        tokio::spawn(crate::http::serve(
            admin_listener,
            tls,
            admin,
            rx.clone(),
            GRACE,
            "admin",
        )),
        tokio::spawn(watch_policies(shared.clone(), rx)),
    ];
    tracing::info!(%proxy_addr, %admin_addr, store = %shared.store.path().display(), "countersign is serving");
    Ok(Running {
        proxy_addr,
        admin_addr,
        shutdown,
        tasks,
        shared,
    })
}

/// How often the policy directory is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(1);

/// Reloads the policies when their files change. A change is loaded once
/// the files have stayed the same for one poll (an editor saving several
/// files, or a ConfigMap update, settles first); a revision that fails to
/// load is refused, the last good one stays in force, and the failure shows
/// in the log, `/readyz` and `countersign_policy_reload_failures_total`.
async fn watch_policies(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut settled: Option<String> = None;
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_POLL) => {}
            _ = shutdown.changed() => return,
        }
        let dir = shared.config.policy.dir.clone();
        let on_disk = match tokio::task::spawn_blocking(move || {
            crate::policy::revision_on_disk(&dir)
        })
        .await
        {
            Ok(Ok(rev)) => rev,
            Ok(Err(e)) => {
                // Unreadable mid-swap: try again next poll.
                tracing::debug!(error = %e, "policy directory not readable right now");
                continue;
            }
            Err(_) => continue,
        };
        if on_disk == shared.policy().revision() || refused.as_deref() == Some(on_disk.as_str()) {
            settled = None;
            continue;
        }
        if settled.as_deref() != Some(on_disk.as_str()) {
            settled = Some(on_disk);
            continue;
        }
        let settings = shared.config.policy.clone();
        match tokio::task::spawn_blocking(move || Policy::load(&settings)).await {
            Ok(Ok(policy)) => {
                tracing::info!(
                    from = shared.policy().revision(),
                    to = policy.revision(),
                    engine = policy.engine_kind().as_str(),
                    "policy reloaded"
                );
                *shared.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
                *shared
                    .reload_error
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                refused = None;
            }
            Ok(Err(e)) => {
                let why = format!(
                    "policy revision {on_disk} refused; {} stays in force: {e}",
                    shared.policy().revision()
                );
                tracing::error!("{why}");
                shared.metrics.policy_reload_failures.inc();
                *shared
                    .reload_error
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Some(why);
                refused = settled.take();
            }
            Err(_) => {}
        }
    }
}

/// `countersign serve`: runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; finishing in-flight calls");
    running.stop().await;
    tracing::info!("stopped; every queued record is committed");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
