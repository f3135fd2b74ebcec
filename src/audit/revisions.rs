//! Policy revisions in the record. Each revision's files are appended
//! once, as a `policy` record, in the same transaction as (just before)
//! the first `decided` record that names the revision: the text that decided is then covered by the chain
//! and the checkpoints like everything else, and `audit replay` can run it
//! again.
//!
//! A `policy` record is not an action: its action id is
//! `policy:<revision>` (content-addressed: the revision is a digest of the
//! files), so it is found by revision and never listed as an action.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::record::{Draft, Kind};
use super::store::{Store, StoreError};
use crate::policy::{Policy, Source};

/// What the action id of a `policy` record starts with.
pub const PREFIX: &str = "policy:";

/// The action id of a revision's `policy` record.
pub fn record_id(revision: &str) -> String {
    format!("{PREFIX}{revision}")
}

/// The `policy` record of a revision: its files in the order the revision
/// digest covers them.
pub fn draft(revision: &str, sources: &[Source]) -> Draft {
    let files: Vec<Value> = sources
        .iter()
        .map(|s| json!({"path": s.path, "text": s.text}))
        .collect();
    Draft::new(
        &record_id(revision),
        Kind::Policy,
        json!({"revision": revision, "files": files}),
        None,
    )
}

/// The files a `policy` record payload holds; `None` when it holds none in
/// the expected shape.
pub fn sources_of(payload: &Value) -> Option<Vec<Source>> {
    payload["files"]
        .as_array()?
        .iter()
        .map(|f| {
            Some(Source {
                path: f["path"].as_str()?.to_string(),
                text: f["text"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// The revisions this process knows to be in the record.
#[derive(Default)]
pub struct Revisions {
    known: Mutex<HashSet<String>>,
    /// Held while one caller records a new revision, so concurrent first
    /// calls of it record it once.
    writing: tokio::sync::Mutex<()>,
}

impl Revisions {
    /// Commits the `decided` record of a call decided by `policy`, durably
    /// (write-ahead). The first time a revision is used, its `policy`
    /// record goes in the same transaction, just before: the record never
    /// names a revision whose text it does not hold. After that, this is a
    /// set lookup and one commit.
    pub async fn commit_decided(
        &self,
        store: &Store,
        policy: &Policy,
        decided: Draft,
    ) -> Result<(), Arc<StoreError>> {
        let revision = policy.revision();
        if self.is_known(revision) {
            return store.commit(vec![decided]).await;
        }
        let _one = self.writing.lock().await;
        if self.is_known(revision) {
            return store.commit(vec![decided]).await;
        }
        let id = record_id(revision);
        let recorded = store
            .read(move |b| Ok(!b.records_of(&id)?.is_empty()))
            .await
            .map_err(Arc::new)?;
        let mut drafts = Vec::with_capacity(2);
        if !recorded {
            drafts.push(draft(revision, policy.sources()));
        }
        drafts.push(decided);
        store.commit(drafts).await?;
        if !recorded {
            tracing::info!(revision, "policy revision recorded");
        }
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(revision.to_string());
        Ok(())
    }

    /// Whether this process knows `revision` to be in the record: then a
    /// call's `decided` record needs only its own commit, which is all
    /// [`Revisions::commit_decided`] would do.
    pub fn is_known(&self, revision: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_record_keeps_the_files_that_make_its_revision() {
        let sources = vec![
            Source {
                path: "b.rego".into(),
                text: "package b\n".into(),
            },
            Source {
                path: "a/x.rego".into(),
                text: "package a\n".into(),
            },
        ];
        let revision = crate::policy::revision_of(&sources);
        let d = draft(&revision, &sources);
        assert_eq!(d.action_id, format!("policy:{revision}"));
        assert_eq!(d.kind, Kind::Policy);
        let back = sources_of(&d.payload).unwrap();
        assert_eq!(back, sources);
        assert_eq!(crate::policy::revision_of(&back), revision);
    }
}
