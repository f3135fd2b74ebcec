//! `audit verify`: the whole record checked in one pass, against
//! everything that can vouch for it.
//!
//! - the hash chain: every seq present, each record's hash covering its
//!   content, each `prev_hash` the hash of the record before;
//! - the stored checkpoints: each signed by the checkpoint key (when the
//!   public key is known) and each tree head recomputed from the records
//!   at its size, which also checks that every checkpoint extends the ones
//!   before it;
//! - checkpoints kept elsewhere (`--checkpoint`): signed by the key, and
//!   the record neither shorter (tail deleted) nor different (rewritten);
//! - every signed review re-checked with the reviewer's configured key;
//! - every `approved` record backed by signed `approve` reviews from at
//!   least the hold's `min` distinct eligible reviewers (the chain cannot
//!   tell a forged approval: whoever can write the store can link one).
//!
//! The first problem found is reported with the seq it concerns.

use std::collections::BTreeMap;

use super::checkpoint::Checkpoint;
use super::merkle::{self, Frontier, Hash};
use super::note::Verifier;
use super::record::GENESIS;
use super::reviews::{self, Checked};
use super::store::backend::Backend;
use super::store::StoreError;
use crate::approval::keys::ReviewerKey;

/// What to check the record against.
#[derive(Default)]
pub struct Against {
    /// The checkpoint key's public half; without it stored checkpoints are
    /// compared with the record but their signatures are not checked.
    pub verifier: Option<Verifier>,
    /// Checkpoints kept elsewhere: (where it came from, the signed note).
    pub external: Vec<(String, String)>,
    /// The origin checkpoints must name, when known.
    pub origin: Option<String>,
    /// Reviewer keys by name (from the config).
    pub reviewer_keys: BTreeMap<String, ReviewerKey>,
}

/// A problem, with the seq it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first bad seq (or the first missing one).
    pub seq: i64,
    /// What is wrong, in a sentence.
    pub why: String,
}

/// What checked out.
#[derive(Debug, Default)]
pub struct Report {
    /// Records in the chain.
    pub records: i64,
    /// Stored checkpoints that agree with the record.
    pub stored_checkpoints: usize,
    /// The largest of them.
    pub latest_stored: Option<i64>,
    /// Whether their signatures were checked.
    pub stored_signatures_checked: bool,
    /// Outside checkpoints that agree: (where, tree size).
    pub external: Vec<(String, u64)>,
    /// Reviews whose signatures verified.
    pub reviews_verified: usize,
    /// Reviews that could not be checked here: (seq, why).
    pub reviews_unverifiable: Vec<(i64, String)>,
}

/// A tree size to compare with, and where it comes from.
struct Target {
    size: i64,
    root: Hash,
    label: String,
    stored: bool,
}

fn finding(seq: i64, why: impl Into<String>) -> Finding {
    Finding {
        seq,
        why: why.into(),
    }
}

/// Reads the signed text of a note without checking its signature.
fn unverified_text(note: &str) -> Option<&str> {
    note.rfind("\n\n").map(|at| &note[..at + 1])
}

/// Checks the whole record. `Ok(Err(..))` is a finding; `Err` means the
/// store could not be read.
pub fn verify(
    b: &mut dyn Backend,
    against: &Against,
) -> Result<Result<Report, Finding>, StoreError> {
    let mut report = Report {
        stored_signatures_checked: against.verifier.is_some(),
        ..Default::default()
    };
    let mut targets = Vec::new();

    for (label, note) in &against.external {
        let Some(verifier) = &against.verifier else {
            return Ok(Err(finding(
                0,
                "a checkpoint can only be checked with the public key (--public-key)",
            )));
        };
        let c = match Checkpoint::open(note, verifier) {
            Ok(c) => c,
            Err(e) => {
                let size = unverified_text(note)
                    .and_then(|t| Checkpoint::parse(t).ok())
                    .map_or(0, |c| c.size as i64);
                return Ok(Err(finding(
                    size,
                    format!(
                        "the checkpoint {label} is not a valid checkpoint signed by {}: {e}",
                        verifier.name()
                    ),
                )));
            }
        };
        if let Some(origin) = against.origin.as_deref().filter(|o| *o != c.origin) {
            return Ok(Err(finding(
                c.size as i64,
                format!(
                    "the checkpoint {label} is for the log `{}`, not this one (`{origin}`)",
                    c.origin
                ),
            )));
        }
        targets.push(Target {
            size: c.size as i64,
            root: c.root,
            label: format!("the checkpoint {label}"),
            stored: false,
        });
    }

    let mut after = 0;
    loop {
        let page = b.checkpoints(after, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.tree_size;
        for s in page {
            let label = format!("the stored checkpoint of size {}", s.tree_size);
            let c = match &against.verifier {
                Some(v) => Checkpoint::open(&s.note, v).map_err(|e| {
                    format!(
                        "{label} is not signed by {}: {e} (a forged checkpoint)",
                        v.name()
                    )
                }),
                None => unverified_text(&s.note)
                    .ok_or_else(|| "no signature".to_string())
                    .and_then(|t| Checkpoint::parse(t).map_err(|e| e.to_string()))
                    .map_err(|e| format!("{label} is not a checkpoint: {e}")),
            };
            let c = match c {
                Ok(c) => c,
                Err(why) => return Ok(Err(finding(s.tree_size, why))),
            };
            if c.size as i64 != s.tree_size || hex::encode(c.root) != s.root_hash {
                return Ok(Err(finding(
                    s.tree_size,
                    format!(
                        "{label}: its signed note says size {} and another tree head than its row",
                        c.size
                    ),
                )));
            }
            targets.push(Target {
                size: s.tree_size,
                root: c.root,
                label,
                stored: true,
            });
        }
    }
    targets.sort_by_key(|t| t.size);

    let mut frontier = Frontier::new();
    let mut prev = GENESIS.to_string();
    let mut next = 0usize;
    // The largest size known to agree: a rewrite lies after it.
    let mut agreed = 0i64;
    let compare = |frontier: &Frontier,
                   next: &mut usize,
                   agreed: &mut i64,
                   report: &mut Report|
     -> Option<Finding> {
        let size = frontier.size() as i64;
        while *next < targets.len() && targets[*next].size <= size {
            let t = &targets[*next];
            *next += 1;
            if t.size == 0 {
                continue;
            }
            if frontier.root() != t.root {
                let since = if *agreed == 0 {
                    "no earlier checkpoint narrows it down".to_string()
                } else {
                    format!(
                        "the first {} records agree with an earlier checkpoint",
                        *agreed
                    )
                };
                return Some(finding(
                    *agreed + 1,
                    format!(
                        "the first {} records do not hash to the tree head of {}: a record from seq {} to seq {} was rewritten or replaced ({since})",
                        t.size, t.label, *agreed + 1, t.size
                    ),
                ));
            }
            *agreed = t.size;
            if t.stored {
                report.stored_checkpoints += 1;
                report.latest_stored = Some(t.size);
            } else {
                report.external.push((t.label.clone(), t.size as u64));
            }
        }
        None
    };
    if let Some(f) = compare(&frontier, &mut next, &mut agreed, &mut report) {
        return Ok(Err(f));
    }
    let mut expected = 1i64;
    let mut approvals = reviews::Approvals::default();
    loop {
        let page = b.scan(expected - 1, 2000)?;
        if page.is_empty() {
            break;
        }
        for r in page {
            if r.seq != expected {
                return Ok(Err(finding(
                    expected,
                    format!(
                        "record {expected} is missing (the next record is {})",
                        r.seq
                    ),
                )));
            }
            if r.prev_hash != prev {
                return Ok(Err(finding(r.seq, "its prev_hash does not match the previous record's hash (records removed, reordered or swapped)")));
            }
            if !r.hash_matches() {
                return Ok(Err(finding(
                    r.seq,
                    "its content does not match its hash (the record was altered)",
                )));
            }
            let Some(leaf) = merkle::record_leaf(&r.hash) else {
                return Ok(Err(finding(r.seq, "its hash is not 64 hex digits")));
            };
            frontier.push(leaf);
            if let Some(f) = compare(&frontier, &mut next, &mut agreed, &mut report) {
                return Ok(Err(f));
            }
            let checked = reviews::is_signed_review(&r).then(|| {
                let name = r.payload["reviewer"].as_str().unwrap_or_default();
                reviews::check(&r, against.reviewer_keys.get(name))
            });
            match &checked {
                Some(Ok(Checked::Verified(_))) => report.reviews_verified += 1,
                Some(Ok(Checked::Unverifiable(why))) => {
                    report.reviews_unverifiable.push((r.seq, why.clone()))
                }
                Some(Err(why)) => return Ok(Err(finding(r.seq, why.clone()))),
                None => {}
            }
            // A review that verified, or could not be checked here (the
            // report says so), backs an approval.
            if let Err(why) = approvals.follow(&r, checked.is_some()) {
                return Ok(Err(finding(r.seq, why)));
            }
            prev = r.hash.clone();
            expected += 1;
        }
    }
    report.records = expected - 1;
    if let Some(t) = targets.get(next) {
        return Ok(Err(finding(
            report.records + 1,
            format!(
                "the record ends at seq {} but {} covers {} records: records {} to {} were deleted",
                report.records,
                t.label,
                t.size,
                report.records + 1,
                t.size
            ),
        )));
    }
    Ok(Ok(report))
}
