//! Evidence bundles: one action's story in one JSON file that anyone with
//! the checkpoint public key can check, with no database and no config.
//!
//! A bundle holds the action's records (every field the chain hash covers,
//! the payload as the exact text that was hashed), an inclusion proof of
//! each in one signed checkpoint, the `policy` record of the revision that
//! decided (with its proof), and the public keys of the reviewers the
//! action names. docs/record.md specifies the format and the checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkpoint::Checkpoint;
use super::merkle::{self, Hash};
use super::note::Verifier;
use super::record::{is_action_id, Record};
use super::reviews::{self, Checked};
use super::revisions;
use super::store::backend::{Backend, StoredCheckpoint};
use super::tree::{self, ProvenRecord};
use crate::approval::keys::ReviewerKey;
use crate::policy::Source;

/// The `format` of the bundles this version writes and reads.
pub const FORMAT: &str = "countersign-evidence-bundle/v1";

/// An evidence bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`FORMAT`].
    pub format: String,
    /// The action.
    pub action_id: String,
    /// The signed checkpoint every proof leads to.
    pub checkpoint: String,
    /// The action's records, by seq.
    pub records: Vec<ProvenRecord>,
    /// The `policy` record of the revision that decided, if one did.
    pub policy: Option<ProvenRecord>,
    /// Public keys (`whpk_`) of the reviewers the action names, by name.
    /// Reviewers with a shared secret are absent: their key never leaves
    /// the config.
    pub reviewer_keys: BTreeMap<String, String>,
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed or its tree could not be read.
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    /// Anything else; the message says what to do.
    #[error("{0}")]
    Other(String),
}

impl From<super::store::StoreError> for ExportError {
    fn from(e: super::store::StoreError) -> Self {
        ExportError::Tree(e.into())
    }
}

/// The reviewers an action's records name: those asked, and those who
/// reviewed or tried to.
fn named_reviewers(records: &[Record]) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for r in records {
        for name in r.payload["hold"]["eligible"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(n) = name.as_str() {
                out.insert(n.to_string());
            }
        }
        if let Some(n) = r.payload["reviewer"].as_str() {
            if r.kind == "reviewed" || r.kind == "review_refused" {
                out.insert(n.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// Makes the bundle of one action against the latest stored checkpoint.
/// `reviewer_keys` are the configured reviewer keys.
pub fn export(
    b: &mut dyn Backend,
    action_id: &str,
    reviewer_keys: &BTreeMap<String, ReviewerKey>,
) -> Result<Bundle, ExportError> {
    let records = if is_action_id(action_id) {
        b.records_of(action_id)?
    } else {
        Vec::new()
    };
    if records.is_empty() {
        return Err(ExportError::Other(format!(
            "no action {action_id} in the record"
        )));
    }
    let latest: StoredCheckpoint = b.latest_checkpoint()?.ok_or_else(|| {
        ExportError::Other("no checkpoint has been signed yet: configure audit.checkpoint and let countersign serve sign one".into())
    })?;
    let newest = records.last().map_or(0, |r| r.seq);
    if newest > latest.tree_size {
        return Err(ExportError::Other(format!(
            "the action's newest record (seq {newest}) is not in a signed checkpoint yet (the latest covers {} records); export again after the next checkpoint (audit.checkpoint.interval)",
            latest.tree_size
        )));
    }
    let leaves: Vec<Hash> = tree::leaves(b, latest.tree_size)?;
    if hex::encode(merkle::root(&leaves)) != latest.root_hash {
        return Err(ExportError::Other(format!(
            "the record no longer hashes to its latest checkpoint (size {}); run countersign audit verify",
            latest.tree_size
        )));
    }
    let prove = |r: &Record| {
        ProvenRecord::of(r, &leaves)
            .ok_or_else(|| ExportError::Other(format!("record {} is not in the tree", r.seq)))
    };
    let proven = records.iter().map(prove).collect::<Result<Vec<_>, _>>()?;
    let revision = records
        .iter()
        .find_map(|r| r.payload["policy"]["revision"].as_str())
        .map(str::to_string);
    let policy = match revision {
        Some(rev) => b
            .records_of(&revisions::record_id(&rev))?
            .first()
            .filter(|r| r.seq <= latest.tree_size)
            .map(prove)
            .transpose()?,
        None => None,
    };
    let keys = named_reviewers(&records)
        .into_iter()
        .filter_map(|name| {
            let key = reviewer_keys.get(&name)?.public_text()?;
            Some((name, key))
        })
        .collect();
    Ok(Bundle {
        format: FORMAT.into(),
        action_id: action_id.to_string(),
        checkpoint: latest.note,
        records: proven,
        policy,
        reviewer_keys: keys,
    })
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The checkpoint the records are proven in.
    pub checkpoint: Checkpoint,
    /// The key that signed it.
    pub signed_by: String,
    /// The action's records.
    pub records: Vec<Record>,
    /// The policy revision and its files.
    pub policy: Option<(String, Vec<Source>)>,
    /// Each signed review: (seq, reviewer, outcome).
    pub reviews: Vec<(i64, String, Checked)>,
}

/// Checks a bundle (its text) with the checkpoint public key: the
/// checkpoint's signature, every record's hash and inclusion proof, the
/// policy record (its revision recomputed from its files) and every signed
/// review. Says what is wrong, naming the seq.
pub fn verify(text: &str, verifier: &Verifier) -> Result<Verified, String> {
    let bundle: Bundle = serde_json::from_str(text)
        .map_err(|e| format!("the bundle is not a {FORMAT} file: {e}"))?;
    if bundle.format != FORMAT {
        return Err(format!(
            "the bundle's format is `{}`, not {FORMAT}",
            bundle.format
        ));
    }
    let cp = Checkpoint::open(&bundle.checkpoint, verifier)
        .map_err(|e| format!("the bundle's checkpoint: {e}"))?;
    if bundle.records.is_empty() {
        return Err("the bundle holds no records".into());
    }
    let mut records = Vec::new();
    let mut last = 0;
    for r in &bundle.records {
        let bad = |why: String| format!("record seq {}: {why}", r.seq);
        if r.action_id != bundle.action_id {
            return Err(bad(format!(
                "it belongs to action {}, not {}",
                r.action_id, bundle.action_id
            )));
        }
        if r.seq <= last {
            return Err(bad("the records are not in seq order".into()));
        }
        last = r.seq;
        r.verify(cp.size, &cp.root).map_err(bad)?;
        r.payload_json().map_err(bad)?;
        records.push(r.to_record());
    }
    let first = &records[0];
    if first.kind != "decided" && first.kind != "failed" {
        return Err(format!(
            "record seq {}: an action starts with a decided or failed record, not {}",
            first.seq, first.kind
        ));
    }
    let revision = records
        .iter()
        .find_map(|r| r.payload["policy"]["revision"].as_str())
        .map(str::to_string);
    let decided = records.iter().any(|r| r.kind == "decided");
    let policy = match (&bundle.policy, revision) {
        (Some(p), Some(rev)) => {
            let bad = |why: String| format!("policy record seq {}: {why}", p.seq);
            p.verify(cp.size, &cp.root).map_err(bad)?;
            if p.kind != "policy" || p.action_id != revisions::record_id(&rev) {
                return Err(bad(format!(
                    "it is not the policy record of revision {rev}"
                )));
            }
            let payload = p.payload_json().map_err(bad)?;
            let files =
                revisions::sources_of(&payload).ok_or_else(|| bad("it holds no files".into()))?;
            let computed = crate::policy::revision_of(&files);
            if computed != rev || payload["revision"] != rev.as_str() {
                return Err(bad(format!(
                    "its files hash to revision {computed}, not to {rev}"
                )));
            }
            Some((rev, files))
        }
        (None, Some(rev)) if decided => {
            return Err(format!(
                "the bundle lacks the policy record of revision {rev}"
            ))
        }
        (Some(p), None) => {
            return Err(format!(
                "policy record seq {}: the action names no policy revision",
                p.seq
            ))
        }
        _ => None,
    };
    let mut checked = Vec::new();
    for r in records.iter().filter(|r| reviews::is_signed_review(r)) {
        let name = r.payload["reviewer"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = match bundle.reviewer_keys.get(&name) {
            Some(k) => {
                Some(ReviewerKey::parse(k).map_err(|e| format!("reviewer_keys.{name}: {e}"))?)
            }
            None => None,
        };
        let outcome = reviews::check(r, key.as_ref())
            .map_err(|why| format!("record seq {}: {why}", r.seq))?;
        if r.payload["key"] == "ed25519" && matches!(outcome, Checked::Unverifiable(_)) {
            return Err(format!(
                "record seq {}: the review by {name} was signed with an Ed25519 key, but the bundle has no public key for {name}",
                r.seq
            ));
        }
        checked.push((r.seq, name, outcome));
    }
    // Every signed review here verified or is not checkable (a shared
    // secret); either backs an approval.
    let mut approvals = reviews::Approvals::default();
    for r in &records {
        approvals
            .follow(r, reviews::is_signed_review(r))
            .map_err(|why| format!("record seq {}: {why}", r.seq))?;
    }
    Ok(Verified {
        checkpoint: cp,
        signed_by: verifier.encode(),
        records,
        policy,
        reviews: checked,
    })
}

/// The story of a verified bundle: what was checked, then the action as
/// `audit show` tells it.
pub fn story(v: &Verified) -> String {
    use super::view::{action_json_in, action_text, printable, Context};
    let action_id = v.records[0].action_id.clone();
    let mut out = String::new();
    out.push_str(&format!(
        "VERIFIED: the {} records of action {} are in checkpoint {} of {} records, signed by {}\n",
        v.records.len(),
        action_id,
        printable(&v.checkpoint.origin),
        v.checkpoint.size,
        printable(&v.signed_by)
    ));
    if let Some((rev, files)) = &v.policy {
        out.push_str(&format!(
            "VERIFIED: policy revision {rev}: its {} file(s) hash to it\n",
            files.len()
        ));
    }
    for (seq, name, outcome) in &v.reviews {
        let line = match outcome {
            Checked::Verified(kind) => format!(
                "VERIFIED: the review at seq {seq} was signed by {}'s {} key",
                printable(name),
                kind.as_str()
            ),
            Checked::Unverifiable(why) => format!(
                "NOT CHECKABLE: the review at seq {seq} by {}: {} (a shared secret proves nothing to a third party)",
                printable(name),
                printable(why)
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    let ctx = Context {
        policy: v.policy.as_ref().map(|(_, f)| f.clone()),
        checkpoint: Some((
            v.checkpoint.size as i64,
            v.checkpoint.origin.clone(),
            "(time not part of the checkpoint)".into(),
        )),
        checkpoints_configured: Some(true),
    };
    let view: Value = action_json_in(&action_id, &v.records, &ctx);
    out.push_str(&action_text(&view));
    out
}
