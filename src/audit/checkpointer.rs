//! The checkpointer: a task that, every `audit.checkpoint.interval` when
//! the record grew, signs a checkpoint of it, stores it, and publishes a
//! copy to each outside sink (a directory, or a URL as a signed Standard
//! Webhook), so a copy lives where the operator of the store cannot edit it.
//!
//! It keeps the tree's right edge in memory ([`Frontier`]): at start it is
//! rebuilt from the store's record hashes and checked against the newest
//! stored checkpoint; then each new record is checked against the chain
//! (its hash covers its content, its `prev_hash` is the record before it)
//! before it joins the tree. A record that fails either check stops
//! checkpointing, loudly: a signature over a tampered record would vouch
//! for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::checkpoint::{self, Checkpoint};
use super::merkle::{self, Frontier};
use super::note::NoteSigner;
use super::record::GENESIS;
use super::store::backend::StoredCheckpoint;
use super::store::{Store, StoreError};
use crate::config::{CheckpointConfig, CheckpointSink};

/// How many times a checkpoint is POSTed to a URL before giving up.
const ATTEMPTS: u32 = 5;

/// The first retry delay of a URL sink; doubles after each retry.
const BACKOFF: Duration = Duration::from_secs(1);

/// Records read per page when the tree grows.
const PAGE: usize = 1000;

/// The running checkpointer's state.
pub struct Checkpointer {
    store: Store,
    signer: Arc<NoteSigner>,
    origin: String,
    interval: Duration,
    sinks: Vec<CheckpointSink>,
    client: reqwest::Client,
    frontier: Frontier,
    last_hash: String,
    /// The largest tree size signed (or found signed) so far.
    signed: i64,
    /// Why checkpointing stopped, once it did.
    stopped: Option<String>,
}

/// What start-up found in the store.
struct Rebuilt {
    frontier: Frontier,
    last_hash: String,
    latest: Option<StoredCheckpoint>,
    root_at_latest: Option<String>,
}

fn rebuild(
    b: &mut dyn super::store::backend::Backend,
) -> Result<Result<Rebuilt, String>, StoreError> {
    let latest = b.latest_checkpoint()?;
    let mut frontier = Frontier::new();
    let mut last_hash = GENESIS.to_string();
    let mut root_at_latest = None;
    let mut after = 0i64;
    loop {
        let page = b.leaf_hashes(after, 10_000)?;
        if page.is_empty() {
            break;
        }
        for (seq, hash) in page {
            if seq != after + 1 {
                return Ok(Err(format!("record {} is missing", after + 1)));
            }
            let Some(leaf) = merkle::record_leaf(&hash) else {
                return Ok(Err(format!("record {seq}'s hash is not 64 hex digits")));
            };
            frontier.push(leaf);
            if latest.as_ref().is_some_and(|c| c.tree_size == seq) {
                root_at_latest = Some(hex::encode(frontier.root()));
            }
            last_hash = hash;
            after = seq;
        }
    }
    Ok(Ok(Rebuilt {
        frontier,
        last_hash,
        latest,
        root_at_latest,
    }))
}

impl Checkpointer {
    /// Loads the signing key and rebuilds the tree from the store.
    pub async fn start(
        store: Store,
        cfg: &CheckpointConfig,
        client: reqwest::Client,
    ) -> Result<Checkpointer, String> {
        let signer = checkpoint::load_signer(cfg)?;
        let origin = checkpoint::origin(cfg, &signer);
        let rebuilt = store
            .read(rebuild)
            .await
            .map_err(|e| format!("cannot read the record to rebuild its tree: {e}"))?;
        let mut me = Checkpointer {
            store,
            signer: Arc::new(signer),
            origin,
            interval: cfg.interval,
            sinks: cfg.publish.clone(),
            client,
            frontier: Frontier::new(),
            last_hash: GENESIS.to_string(),
            signed: 0,
            stopped: None,
        };
        match rebuilt {
            Err(why) => me.stop(why),
            Ok(r) => {
                let size = r.frontier.size() as i64;
                me.frontier = r.frontier;
                me.last_hash = r.last_hash;
                if let Some(latest) = r.latest {
                    me.signed = latest.tree_size;
                    if latest.tree_size > size {
                        me.stop(format!(
                            "the record has {size} records but its last checkpoint covers {}: records {} to {} were deleted",
                            latest.tree_size,
                            size + 1,
                            latest.tree_size
                        ));
                    } else if r.root_at_latest.as_deref() != Some(latest.root_hash.as_str()) {
                        me.stop(format!(
                            "the first {} records no longer hash to the tree head of their checkpoint: a record at or before seq {} was rewritten",
                            latest.tree_size, latest.tree_size
                        ));
                    }
                }
            }
        }
        tracing::info!(
            origin = %me.origin,
            key = %me.signer.verifier().encode(),
            records = me.frontier.size(),
            "checkpoints are signed every {:?} while the record grows",
            me.interval
        );
        Ok(me)
    }

    fn stop(&mut self, why: String) {
        tracing::error!(
            why,
            "the record does not verify; no more checkpoints are signed until it is repaired (run countersign audit verify)"
        );
        self.stopped = Some(why);
    }

    /// Runs until shutdown; one last checkpoint on the way out.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => {
                    // What was queued before the stop goes into the last checkpoint.
                    let _ = self.store.flush().await;
                    self.tick_and_log().await;
                    return;
                }
            }
            self.tick_and_log().await;
        }
    }

    async fn tick_and_log(&mut self) {
        if let Err(e) = self.tick().await {
            tracing::warn!(error = %e, "no checkpoint this time; trying again");
        }
    }

    /// Takes in the records committed since the last look and, when the
    /// tree grew past the last signed size, signs, stores and publishes a
    /// checkpoint. Returns it.
    pub async fn tick(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        if self.stopped.is_some() {
            return Ok(None);
        }
        loop {
            let after = self.frontier.size() as i64;
            let page = self.store.read(move |b| b.scan(after, PAGE)).await?;
            let n = page.len();
            for r in page {
                let why = if r.seq != self.frontier.size() as i64 + 1 {
                    Some(format!("record {} is missing", self.frontier.size() + 1))
                } else if r.prev_hash != self.last_hash {
                    Some(format!(
                        "record {}'s prev_hash does not match the record before it",
                        r.seq
                    ))
                } else if !r.hash_matches() {
                    Some(format!(
                        "record {}'s content does not match its hash",
                        r.seq
                    ))
                } else {
                    None
                };
                let leaf = merkle::record_leaf(&r.hash);
                match (why, leaf) {
                    (None, Some(leaf)) => {
                        self.frontier.push(leaf);
                        self.last_hash = r.hash;
                    }
                    (why, _) => {
                        self.stop(why.unwrap_or_else(|| {
                            format!("record {}'s hash is not 64 hex digits", r.seq)
                        }));
                        return Ok(None);
                    }
                }
            }
            if n < PAGE {
                break;
            }
        }
        let size = self.frontier.size() as i64;
        if size <= self.signed {
            return Ok(None);
        }
        let signed = Checkpoint {
            origin: self.origin.clone(),
            size: size as u64,
            root: self.frontier.root(),
        }
        .sign(&self.signer)
        .map_err(|e| StoreError::Open {
            what: "the checkpoint".into(),
            why: e.to_string(),
        })?;
        let stored = signed.clone();
        self.store.read(move |b| b.put_checkpoint(&stored)).await?;
        self.signed = size;
        tracing::debug!(size, root = %signed.root_hash, "checkpoint signed");
        self.publish(&signed).await;
        Ok(Some(signed))
    }

    /// Writes the checkpoint to every directory sink now, and starts its
    /// delivery to every URL sink.
    async fn publish(&self, c: &StoredCheckpoint) {
        for sink in &self.sinks {
            match sink {
                CheckpointSink::Dir(dir) => {
                    let (dir, c) = (dir.clone(), c.clone());
                    let written = tokio::task::spawn_blocking(move || write_file(&dir, &c)).await;
                    match written {
                        Ok(Ok(path)) => {
                            tracing::debug!(path = %path.display(), "checkpoint published")
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot publish a checkpoint to its directory")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot publish a checkpoint to its directory")
                        }
                    }
                }
                CheckpointSink::Url(url) => {
                    let (client, signer, url, c) = (
                        self.client.clone(),
                        self.signer.clone(),
                        url.clone(),
                        c.clone(),
                    );
                    tokio::spawn(async move { post(&client, &signer, &url, &c).await });
                }
            }
        }
    }
}

/// The file a directory sink keeps a checkpoint in: zero-padded, so the
/// names sort by tree size.
pub fn file_name(tree_size: i64) -> String {
    format!("checkpoint-{tree_size:012}")
}

/// Writes the note to `dir` (created if needed) through a temporary file
/// and a rename, so a reader never sees half a checkpoint.
fn write_file(dir: &Path, c: &StoredCheckpoint) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name(c.tree_size));
    let tmp = dir.join(format!(".{}.tmp", file_name(c.tree_size)));
    std::fs::write(&tmp, &c.note)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// POSTs the note as a Standard Webhook signed `v1a` with the checkpoint
/// key itself (receivers check it with the key's `whpk_` form), retried
/// with backoff. One message id for every attempt.
async fn post(client: &reqwest::Client, signer: &NoteSigner, url: &str, c: &StoredCheckpoint) {
    let shown = url.split('?').next().unwrap_or(url);
    let msg_id = format!(
        "ckpt_{}_{}",
        c.tree_size,
        &c.root_hash[..16.min(c.root_hash.len())]
    );
    let webhook = signer.webhook_signer();
    let mut delay = Duration::ZERO;
    for attempt in 1..=ATTEMPTS {
        tokio::time::sleep(delay).await;
        delay = if delay.is_zero() { BACKOFF } else { delay * 2 };
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let Ok(signature) = webhook.sign(&msg_id, timestamp, c.note.as_bytes()) else {
            tracing::error!(url = shown, "cannot sign the checkpoint webhook");
            return;
        };
        let sent = client
            .post(url)
            .header("content-type", "text/plain; charset=utf-8")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(c.note.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(url = shown, size = c.tree_size, "checkpoint published");
                return;
            }
            Ok(r) => tracing::warn!(
                url = shown,
                attempt,
                status = r.status().as_u16(),
                "checkpoint not accepted"
            ),
            Err(e) => {
                tracing::warn!(url = shown, attempt, error = %e.without_url(), "checkpoint not delivered")
            }
        }
    }
    tracing::error!(
        url = shown,
        size = c.tree_size,
        "gave up publishing a checkpoint; later ones cover it"
    );
}
