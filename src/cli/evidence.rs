//! The evidence commands: `audit verify` (chain, checkpoints, reviews),
//! `audit prove`, `audit export --bundle`, `audit replay`, and
//! `verify-bundle`, which needs no database and no config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::approval::keys::ReviewerKey;
use crate::audit::checkpoint::{self, Checkpoint};
use crate::audit::note::Verifier;
use crate::audit::store::backend::Backend;
use crate::audit::{bundle, merkle, replay, revisions, tree, verify};
use crate::config::RecordConfig;

/// The configured reviewers' keys that can be read here; the others are
/// left out (their reviews are reported as not checkable).
pub fn reviewer_keys(config: &RecordConfig) -> BTreeMap<String, ReviewerKey> {
    config
        .reviewers
        .iter()
        .filter_map(|(name, r)| {
            let key = ReviewerKey::parse(&r.key.read().ok()?).ok()?;
            Some((name.clone(), key))
        })
        .collect()
}

/// The checkpoint public key: `--public-key FILE`, else the public half of
/// `audit.checkpoint.key_file` when it can be read here.
fn verifier(config: &RecordConfig, public_key: Option<&Path>) -> anyhow::Result<Option<Verifier>> {
    if let Some(p) = public_key {
        return Ok(Some(
            checkpoint::load_verifier(p).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?,
        ));
    }
    Ok(config
        .audit
        .checkpoint
        .as_ref()
        .and_then(|c| checkpoint::load_signer(c).ok())
        .map(|s| s.verifier()))
}

/// Every checkpoint named: a file, or every `checkpoint-*` file of a
/// directory (a `dir://` publish sink).
fn read_checkpoints(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| {
                    format!("--checkpoint: cannot read the directory {}", p.display())
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-"))
                })
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("--checkpoint: cannot read {}", f.display()))?;
                out.push((f.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--checkpoint: cannot read {}", p.display()))?;
            out.push((p.display().to_string(), text));
        }
    }
    Ok(out)
}

/// `countersign audit verify`.
pub fn audit_verify(
    config: &RecordConfig,
    conn: &mut dyn Backend,
    checkpoints: &[PathBuf],
    public_key: Option<&Path>,
) -> anyhow::Result<()> {
    let verifier = verifier(config, public_key)?;
    let external = read_checkpoints(checkpoints)?;
    if !external.is_empty() && verifier.is_none() {
        bail!("--checkpoint needs the checkpoint public key: pass --public-key FILE (the .pub file of countersign keygen)");
    }
    let origin = match (&config.audit.checkpoint, &verifier) {
        (Some(c), _) if c.origin.is_some() => c.origin.clone(),
        (_, Some(v)) => Some(v.name().to_string()),
        _ => None,
    };
    let against = verify::Against {
        verifier,
        external,
        origin,
        reviewer_keys: reviewer_keys(config),
    };
    let report = match verify::verify(conn, &against)? {
        Ok(r) => r,
        Err(f) => bail!("the record does not verify at seq {}: {}", f.seq, f.why),
    };
    println!("ok: {} records, chain intact", report.records);
    match report.latest_stored {
        Some(latest) => println!(
            "ok: {} stored checkpoint(s) agree with the record (the latest covers seq 1 to {latest}){}",
            report.stored_checkpoints,
            if report.stored_signatures_checked {
                ", each signed by the checkpoint key"
            } else {
                "; their signatures were not checked (pass --public-key)"
            }
        ),
        None => println!("note: no stored checkpoint"),
    }
    for (label, size) in &report.external {
        println!("ok: {label} (seq 1 to {size}) agrees with the record");
    }
    println!(
        "ok: {} signed review(s) verify with the reviewers' keys",
        report.reviews_verified
    );
    for (seq, why) in &report.reviews_unverifiable {
        println!("note: the review at seq {seq} was not checked: {why}");
    }
    Ok(())
}

/// `countersign audit prove SEQ`.
pub fn audit_prove(conn: &mut dyn Backend, seq: i64, from_size: Option<u64>) -> anyhow::Result<()> {
    let latest = conn.latest_checkpoint()?.ok_or_else(|| {
        anyhow::anyhow!("no checkpoint has been signed yet: configure audit.checkpoint and let countersign serve sign one")
    })?;
    if seq < 1 || seq > latest.tree_size {
        bail!(
            "seq {seq} is not in the latest checkpoint, which covers seq 1 to {}{}",
            latest.tree_size,
            if seq > latest.tree_size {
                "; prove it after the next checkpoint"
            } else {
                ""
            }
        );
    }
    let leaves = tree::leaves(conn, latest.tree_size)?;
    if hex::encode(merkle::root(&leaves)) != latest.root_hash {
        bail!(
            "the record no longer hashes to its latest checkpoint (size {}); run countersign audit verify",
            latest.tree_size
        );
    }
    let record = conn
        .scan(seq - 1, 1)?
        .into_iter()
        .next()
        .filter(|r| r.seq == seq)
        .ok_or_else(|| anyhow::anyhow!("record {seq} is missing"))?;
    let proven = tree::ProvenRecord::of(&record, &leaves)
        .ok_or_else(|| anyhow::anyhow!("record {seq} is not in the tree"))?;
    let mut out = json!({
        "seq": seq,
        "leaf_index": seq - 1,
        "record_hash": record.hash,
        "leaf_hash": merkle::record_leaf(&record.hash).map(hex::encode),
        "tree_size": latest.tree_size,
        "root_hash": latest.root_hash,
        "inclusion_proof": proven.inclusion_proof,
        "record": proven,
        "checkpoint": latest.note,
    });
    if let Some(m) = from_size {
        let proof = merkle::consistency_proof(&leaves, m as usize).ok_or_else(|| {
            anyhow::anyhow!(
                "--from-size {m} is larger than the latest checkpoint ({})",
                latest.tree_size
            )
        })?;
        out["consistency"] = json!({
            "from_size": m,
            "from_root_hash": hex::encode(merkle::root(&leaves[..m as usize])),
            "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        });
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `countersign audit export ID --bundle FILE`.
pub fn audit_export(
    config: &RecordConfig,
    conn: &mut dyn Backend,
    id: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let b = bundle::export(conn, id, &reviewer_keys(config))?;
    let text = serde_json::to_string_pretty(&b)? + "\n";
    std::fs::write(file, text)
        .with_context(|| format!("--bundle: cannot write {}", file.display()))?;
    println!(
        "wrote {}: {} record(s) of action {id}, proven in the checkpoint of {} records",
        file.display(),
        b.records.len(),
        Checkpoint::parse(
            b.checkpoint
                .rfind("\n\n")
                .map_or("", |at| &b.checkpoint[..at + 1])
        )
        .map(|c| c.size)
        .unwrap_or_default()
    );
    Ok(())
}

/// `countersign audit replay ID` on the configured store.
pub fn audit_replay(conn: &mut dyn Backend, id: &str) -> anyhow::Result<()> {
    let records = if crate::audit::record::is_action_id(id) {
        conn.records_of(id)?
    } else {
        Vec::new()
    };
    let decided = records
        .iter()
        .find(|r| r.kind == "decided")
        .ok_or_else(|| anyhow::anyhow!("no decided record for action {id}: it was refused before a decision, or is unknown"))?;
    let revision = decided.payload["policy"]["revision"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the decided record of {id} names no policy revision"))?;
    let policy = conn
        .records_of(&revisions::record_id(revision))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the record holds no text for policy revision {revision} (it was decided by a countersign that did not record policies)"))?;
    report_replay(id, &decided.payload, &policy.payload)
}

/// `countersign audit replay --bundle FILE`: the bundle's decision on the
/// bundle's policy files, as they are (run `verify-bundle` to check them).
pub fn audit_replay_bundle(file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let b: bundle::Bundle = serde_json::from_str(&text)
        .with_context(|| format!("{}: not an evidence bundle", file.display()))?;
    let decided = b
        .records
        .iter()
        .find(|r| r.kind == "decided")
        .ok_or_else(|| anyhow::anyhow!("{}: the bundle has no decided record", file.display()))?;
    let policy = b
        .policy
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: the bundle has no policy record", file.display()))?;
    let decided = decided.payload_json().map_err(anyhow::Error::msg)?;
    let policy = policy.payload_json().map_err(anyhow::Error::msg)?;
    report_replay(&b.action_id, &decided, &policy)
}

fn report_replay(
    id: &str,
    decided: &serde_json::Value,
    policy: &serde_json::Value,
) -> anyhow::Result<()> {
    let r = replay::replay(decided, policy).map_err(|e| anyhow::anyhow!("action {id}: {e}"))?;
    print!("{}", replay::describe(id, &r));
    if !r.agrees() {
        bail!("action {id}: the replay does not reach the recorded decision");
    }
    Ok(())
}

/// `countersign verify-bundle FILE --public-key FILE`.
pub fn verify_bundle(file: &Path, public_key: &Path) -> anyhow::Result<()> {
    let verifier =
        checkpoint::load_verifier(public_key).map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let verified = bundle::verify(&text, &verifier)
        .map_err(|e| anyhow::anyhow!("{}: does not verify: {e}", file.display()))?;
    // The decision, replayed on the verified text of its policy.
    let decided = verified.records.iter().find(|r| r.kind == "decided");
    let replayed = match (decided, &verified.policy) {
        (Some(d), Some((_, files))) => {
            let files: Vec<_> = files
                .iter()
                .map(|f| json!({"path": f.path, "text": f.text}))
                .collect();
            Some(replay::replay(&d.payload, &json!({ "files": files })))
        }
        _ => None,
    };
    if let Some(Ok(r)) = &replayed {
        if !r.agrees() {
            eprint!("{}", replay::describe(&d_id(&verified), r));
            bail!(
                "{}: the records verify, but replaying the recorded input on the recorded policy does not reach the recorded decision",
                file.display()
            );
        }
    }
    let mut story = bundle::story(&verified);
    let line = match &replayed {
        Some(Ok(r)) => format!(
            "VERIFIED: replaying the recorded input on revision {} reaches the recorded decision\n",
            r.revision
        ),
        Some(Err(why)) => format!("NOT REPLAYED: {why}\n"),
        None => "NOT REPLAYED: the action was not decided by a policy\n".to_string(),
    };
    let at = story.find("\n\n").map_or(0, |i| i + 1);
    story.insert_str(at, &line);
    print!("{story}");
    Ok(())
}

fn d_id(v: &bundle::Verified) -> String {
    v.records[0].action_id.clone()
}
