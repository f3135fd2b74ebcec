//! Hot reload of what may change under a running proxy: the policy files,
//! the reviewer list (the config file and reviewer key files), the
//! listener certificates with the client CA, and a JWKS file. Everything is polled: a change is applied once it
//! has stayed the same for one poll, which rides out an editor saving
//! several files and the Kubernetes ConfigMap symlink swap alike. A change
//! that fails to load is refused, the last good state stays in force, and
//! the failure shows in the log, `/readyz` and
//! `countersign_reload_failures_total{what}`.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::app::Shared;
use crate::approval::Reviewers;
use crate::config::Config;
use crate::policy::Policy;

/// How often files are checked.
const POLL: Duration = Duration::from_secs(1);

/// One watched thing's change detector.
#[derive(Default)]
struct Watched {
    /// The fingerprint in force.
    current: String,
    /// A new fingerprint seen once; loaded if it is still there next poll.
    settling: Option<String>,
    /// A fingerprint that failed to load; not retried until it changes.
    refused: Option<String>,
}

impl Watched {
    fn new(current: String) -> Watched {
        Watched {
            current,
            ..Default::default()
        }
    }

    /// Whether `on_disk` should be loaded now.
    fn ready(&mut self, on_disk: &str) -> bool {
        if on_disk == self.current || self.refused.as_deref() == Some(on_disk) {
            self.settling = None;
            return false;
        }
        if self.settling.as_deref() != Some(on_disk) {
            self.settling = Some(on_disk.to_string());
            return false;
        }
        true
    }

    fn loaded(&mut self, on_disk: String) {
        self.current = on_disk;
        self.settling = None;
        self.refused = None;
    }

    fn refused(&mut self, on_disk: String) {
        self.settling = None;
        self.refused = Some(on_disk);
    }
}

fn fingerprint(parts: &[Vec<u8>]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(Sha256::digest(p));
    }
    hex::encode(h.finalize())
}

/// The config file and every reviewer key file it names.
fn config_fingerprint(config: &Config) -> String {
    let mut parts = vec![std::fs::read(&config.file).unwrap_or_default()];
    for r in config.reviewers.values() {
        if let crate::config::SecretSource::File(p) = &r.key {
            parts.push(std::fs::read(p).unwrap_or_default());
        }
    }
    fingerprint(&parts)
}

/// The listener certificate and key, and the client CA.
fn tls_fingerprint(config: &Config) -> Option<String> {
    let t = config.tls.as_ref()?;
    let mut parts = vec![
        std::fs::read(&t.cert).unwrap_or_default(),
        std::fs::read(&t.key).unwrap_or_default(),
    ];
    if let Some(m) = &config.identity.mtls {
        parts.push(std::fs::read(&m.client_ca).unwrap_or_default());
    }
    Some(fingerprint(&parts))
}

/// The JWKS file, when tokens are checked against one.
fn jwks_file(config: &Config) -> Option<std::path::PathBuf> {
    match &config.identity.jwt.as_ref()?.jwks {
        crate::config::JwksSource::File(path) => Some(path.clone()),
        crate::config::JwksSource::Url { .. } => None,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Watched {
    /// One poll: once `on_disk` has settled, load it off the async threads
    /// and install it, or refuse it and keep the last good state.
    async fn poll<T: Send + 'static>(
        &mut self,
        shared: &Shared,
        what: &'static str,
        on_disk: Option<String>,
        load: impl FnOnce() -> Result<T, String> + Send + 'static,
        install: impl FnOnce(T),
    ) {
        let Some(on_disk) = on_disk else { return };
        if !self.ready(&on_disk) {
            return;
        }
        match blocking(load).await {
            Some(Ok(loaded)) => {
                install(loaded);
                shared.reload_ok(what);
                self.loaded(on_disk);
            }
            Some(Err(e)) => {
                let shown = &on_disk[..on_disk.len().min(23)];
                let why = format!(
                    "the new {what} ({shown}) was refused; the last good one stays in force: {e}"
                );
                shared.reload_failed(what, why);
                self.refused(on_disk);
            }
            None => {}
        }
    }
}

/// Runs until shutdown.
pub async fn watch(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let config = Arc::new(shared.config.clone());
    let c = config.clone();
    let reviewers_now = blocking(move || config_fingerprint(&c))
        .await
        .unwrap_or_default();
    let c = config.clone();
    let tls_now = blocking(move || tls_fingerprint(&c))
        .await
        .flatten()
        .unwrap_or_default();
    let mut policy = Watched::new(shared.policy().revision().to_string());
    let mut reviewers = Watched::new(reviewers_now);
    let mut tls = Watched::new(tls_now);
    let jwks_now = shared
        .identity
        .jwt()
        .map(|j| j.keys().current().fingerprint.clone())
        .unwrap_or_default();
    let mut jwks = Watched::new(jwks_now);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        let c = config.clone();
        let on_disk = blocking(move || crate::policy::revision_on_disk(&c.policy.dir).ok())
            .await
            .flatten();
        let c = config.clone();
        let load = move || Policy::load(&c.policy).map_err(|e| e.to_string());
        policy
            .poll(&shared, "policy", on_disk, load, |p| {
                tracing::info!(
                    from = shared.policy().revision(),
                    to = p.revision(),
                    engine = p.engine_kind().as_str(),
                    "policy reloaded"
                );
                shared.set_policy(p);
            })
            .await;

        let c = config.clone();
        let on_disk = blocking(move || config_fingerprint(&c)).await;
        let file = config.file.clone();
        let load = move || Reviewers::from_config(&Config::load(&file).map_err(|e| e.to_string())?);
        reviewers
            .poll(&shared, "reviewers", on_disk, load, |r| {
                tracing::info!(
                    reviewers = r.directory.len(),
                    "reviewer list reloaded (other config changes need a restart)"
                );
                shared.set_reviewers(r);
            })
            .await;

        if let (Some(path), Some(jwt)) = (jwks_file(&config), shared.identity.jwt()) {
            let p = path.clone();
            let on_disk = blocking(move || {
                std::fs::read(&p)
                    .ok()
                    .map(|b| hex::encode(Sha256::digest(b)))
            })
            .await
            .flatten();
            let load = move || crate::identity::jwks::read_file(&path).map_err(|e| e.to_string());
            jwks.poll(&shared, "jwks", on_disk, load, |set| {
                tracing::info!(keys = set.keys.len(), "JWKS file reloaded");
                jwt.keys().install(set);
            })
            .await;
        }

        if config.tls.is_none() {
            continue;
        }
        let c = config.clone();
        let on_disk = blocking(move || tls_fingerprint(&c)).await.flatten();
        let c = config.clone();
        let load = move || {
            crate::app::listener_tls(&c)?.ok_or_else(|| "tls is not configured".to_string())
        };
        tls.poll(&shared, "tls", on_disk, load, |(proxy, admin)| {
            tracing::info!("listener certificate (and client CA) reloaded");
            shared.set_tls(proxy, admin);
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_loads_after_it_settles_and_a_refused_one_is_not_retried() {
        let mut w = Watched::new("a".into());
        assert!(!w.ready("a"));
        assert!(!w.ready("b"), "first sight only starts settling");
        assert!(w.ready("b"), "unchanged for one poll: load it");
        w.refused("b".into());
        assert!(!w.ready("b"), "a refused state is not retried");
        assert!(!w.ready("c"));
        assert!(w.ready("c"));
        w.loaded("c".into());
        assert!(!w.ready("c"));
    }
}
