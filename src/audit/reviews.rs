//! Recorded reviews checked again from the record alone: the signature
//! over the exact bytes the reviewer signed (`signed_body`, kept with the
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` header), and
//! the signed body agreeing with what the record says was reviewed (the
//! action, the reviewer, the verdict, the request digest). With an Ed25519
//! reviewer key anybody holding the public key can do this; a shared-secret
//! (HMAC) review can only be checked by a holder of the secret.

use base64::Engine as _;
use serde_json::Value;

use super::record::Record;
use crate::approval::keys::{KeyKind, ReviewerKey};

/// The outcome of checking one recorded review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The signature verifies and the signed body matches the record.
    Verified(KeyKind),
    /// It cannot be checked here (no key, or a key of another kind); why.
    Unverifiable(String),
}

/// Whether a record carries a signature to check: an accepted review, or
/// a refused attempt whose signature verified when it was made.
pub fn is_signed_review(r: &Record) -> bool {
    (r.kind == "reviewed" || r.kind == "review_refused") && r.payload["key"].is_string()
}

fn text<'a>(p: &'a Value, field: &str) -> Result<&'a str, String> {
    p[field]
        .as_str()
        .ok_or_else(|| format!("the record has no `{field}`"))
}

/// Checks one signed review record with the reviewer's key (`None`: no
/// key is known for that reviewer). `Err` says what is wrong: a signature
/// that does not verify, or a signed body that says something else than
/// the record.
pub fn check(r: &Record, key: Option<&ReviewerKey>) -> Result<Checked, String> {
    let p = &r.payload;
    let reviewer = p["reviewer"].as_str().unwrap_or("?");
    let Some(key) = key else {
        return Ok(Checked::Unverifiable(format!(
            "no key is known for reviewer `{reviewer}`"
        )));
    };
    let recorded_kind = p["key"].as_str().unwrap_or_default();
    if recorded_kind != key.kind().as_str() {
        return Ok(Checked::Unverifiable(format!(
            "the review was proved with a {recorded_kind} key; `{reviewer}`'s key here is {}",
            key.kind().as_str()
        )));
    }
    let body: Vec<u8> = match (p["signed_body"].as_str(), p["signed_body_base64"].as_str()) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| "signed_body_base64 is not base64".to_string())?,
        (None, None) => return Err("the record keeps no signed body".into()),
    };
    let msg_id = text(p, "webhook_id")?;
    let timestamp: i64 = text(p, "webhook_timestamp")?
        .trim()
        .parse()
        .map_err(|_| "webhook_timestamp is not a number".to_string())?;
    let signature = text(p, "webhook_signature")?;
    let kind = key
        .verify_recorded(msg_id, timestamp, signature, &body)
        .map_err(|e| {
            format!(
                "the review signed as `{reviewer}` does not verify with `{reviewer}`'s key: {e}"
            )
        })?;
    if r.kind == "reviewed" {
        let signed: Value =
            serde_json::from_slice(&body).map_err(|_| "the signed body is not JSON".to_string())?;
        if signed["action_id"].as_str() != Some(r.action_id.as_str()) {
            return Err("the signed review names another action".into());
        }
        for field in ["reviewer", "verdict", "request_digest"] {
            if signed[field] != p[field] {
                return Err(format!(
                    "the record's `{field}` ({}) is not what the reviewer signed ({})",
                    p[field], signed[field]
                ));
            }
        }
    } else if p["reviewer"].is_string() {
        let signed: Value = serde_json::from_slice(&body).unwrap_or_default();
        if signed["reviewer"] != p["reviewer"] {
            return Err("the record's `reviewer` is not the one who signed".into());
        }
    }
    Ok(Checked::Verified(kind))
}

/// Holds followed through an action's records in order, so that each
/// `approved` record is checked against the signed approvals before it:
/// at least `max(min, 1)` distinct eligible reviewers, for the digest the
/// hold recorded. The chain cannot tell a forged approval (whoever can
/// write the store can link one, and a later checkpoint signs it); the
/// reviewers' signatures can. The proxy checks this before it forwards an
/// approved call, `audit verify` and bundle verification over the record.
#[derive(Default)]
pub struct Approvals {
    waiting: std::collections::BTreeMap<String, Waiting>,
}

/// A hold waiting for its verdict: what it needs, who has approved it.
struct Waiting {
    min: usize,
    digest: Option<String>,
    eligible: std::collections::BTreeSet<String>,
    approvers: std::collections::BTreeSet<String>,
}

impl Approvals {
    /// Takes the next record. `signature_counts`: `r` is a signed review
    /// whose signature the caller accepts (checked with [`check`]). `Err`
    /// says why an approval is not backed, or a review is for another
    /// request than the hold's.
    pub fn follow(&mut self, r: &Record, signature_counts: bool) -> Result<(), String> {
        let p = &r.payload;
        match r.kind.as_str() {
            "decided" if p["state"] == "pending" => {
                let eligible = p["hold"]["eligible"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                let waiting = Waiting {
                    min: p["hold"]["min"].as_u64().unwrap_or(1) as usize,
                    digest: p["request_digest"].as_str().map(str::to_string),
                    eligible,
                    approvers: Default::default(),
                };
                self.waiting.insert(r.action_id.clone(), waiting);
            }
            "reviewed" if p["verdict"] == "approve" && signature_counts => {
                let (Some(w), Some(name)) =
                    (self.waiting.get_mut(&r.action_id), p["reviewer"].as_str())
                else {
                    return Ok(());
                };
                if p["request_digest"].as_str() != w.digest.as_deref() {
                    return Err(format!(
                        "the approval by `{name}` is for another request digest than the hold's"
                    ));
                }
                if w.eligible.contains(name) {
                    w.approvers.insert(name.to_string());
                }
            }
            "approved" => {
                let Some(w) = self.waiting.remove(&r.action_id) else {
                    return Ok(());
                };
                let needed = w.min.max(1);
                if w.approvers.len() < needed {
                    return Err(format!(
                        "the action is recorded approved with {} signed approval(s) from eligible reviewers before it, {needed} needed (a forged approval)",
                        w.approvers.len()
                    ));
                }
            }
            "rejected" | "expired" | "cancelled" | "failed" | "completed" => {
                self.waiting.remove(&r.action_id);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::keys::{generate, SigningKey};
    use serde_json::json;

    fn review(signer: &SigningKey, verdict: &str) -> Record {
        let body = json!({"action_id": "a1", "reviewer": "alice", "verdict": verdict, "request_digest": "sha256:d"}).to_string();
        let signature = signer.sign("msg_1", 1700000000, body.as_bytes()).unwrap();
        Record {
            seq: 9,
            time: "t".into(),
            action_id: "a1".into(),
            kind: "reviewed".into(),
            payload: json!({
                "reviewer": "alice", "verdict": verdict, "request_digest": "sha256:d",
                "key": "ed25519", "webhook_id": "msg_1", "webhook_timestamp": "1700000000",
                "webhook_signature": signature, "signed_body": body,
            }),
            payload_text: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_recorded_review_verifies_and_a_changed_one_does_not() {
        let (secret, public) = generate().unwrap();
        let signer = SigningKey::parse(&secret).unwrap();
        let key = ReviewerKey::parse(&public).unwrap();
        let r = review(&signer, "approve");
        assert!(is_signed_review(&r));
        assert_eq!(
            check(&r, Some(&key)),
            Ok(Checked::Verified(KeyKind::Ed25519))
        );
        assert!(matches!(check(&r, None), Ok(Checked::Unverifiable(_))));

        // The record says approve; the reviewer signed reject.
        let mut changed = review(&signer, "reject");
        changed.payload["verdict"] = json!("approve");
        assert!(check(&changed, Some(&key)).unwrap_err().contains("verdict"));

        // Signed by another key.
        let (other, _) = generate().unwrap();
        let forged = review(&SigningKey::parse(&other).unwrap(), "approve");
        assert!(check(&forged, Some(&key))
            .unwrap_err()
            .contains("does not verify"));
    }
}
