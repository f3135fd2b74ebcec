//! The record's Merkle tree as the store holds it: its leaves (one per
//! record, in seq order, from each record's chain hash) and inclusion
//! proofs of records in a checkpoint's tree. Blocking: runs on a store
//! connection, as the CLI and the store's read pool do.

use serde::Serialize;

use super::merkle::{self, Hash};
use super::record::Record;
use super::store::backend::Backend;
use super::store::StoreError;

/// Why the tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record has fewer records than asked for.
    #[error("the record has {have} records, fewer than the {want} asked for")]
    Short {
        /// Records there.
        have: i64,
        /// Records wanted.
        want: i64,
    },
    /// A seq is missing.
    #[error("record {0} is missing from the record")]
    Gap(i64),
    /// A stored hash is not 32 bytes of hex.
    #[error("record {0}'s hash is not 64 hex digits")]
    BadHash(i64),
}

/// The leaf hashes of records 1 to `size`, read page by page.
pub fn leaves(b: &mut dyn Backend, size: i64) -> Result<Vec<Hash>, TreeError> {
    let mut out = Vec::with_capacity(size.max(0) as usize);
    let mut after = 0;
    while after < size {
        let page = b.leaf_hashes(after, 10_000.min((size - after) as usize))?;
        if page.is_empty() {
            return Err(TreeError::Short {
                have: after,
                want: size,
            });
        }
        for (seq, hash) in page {
            if seq != after + 1 {
                return Err(TreeError::Gap(after + 1));
            }
            out.push(merkle::record_leaf(&hash).ok_or(TreeError::BadHash(seq))?);
            after = seq;
        }
    }
    Ok(out)
}

/// A record as an evidence bundle or a proof carries it: every field the
/// chain hash covers, the payload exactly as stored and hashed.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ProvenRecord {
    /// Position in the chain (leaf index + 1).
    pub seq: i64,
    /// Commit time.
    pub time: String,
    /// The action (or `policy:<revision>`).
    pub action_id: String,
    /// Record kind.
    pub kind: String,
    /// Hash of the record before it.
    pub prev_hash: String,
    /// This record's chain hash: the leaf's data.
    pub hash: String,
    /// The payload text exactly as hashed.
    pub payload: String,
    /// The inclusion proof of leaf `seq - 1` in the checkpoint's tree, hex.
    pub inclusion_proof: Vec<String>,
}

impl ProvenRecord {
    /// The record with its proof in the tree of `leaves`.
    pub fn of(r: &Record, leaves: &[Hash]) -> Option<ProvenRecord> {
        let proof = merkle::inclusion_proof(leaves, (r.seq - 1).try_into().ok()?)?;
        Some(ProvenRecord {
            seq: r.seq,
            time: r.time.clone(),
            action_id: r.action_id.clone(),
            kind: r.kind.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
            payload: r
                .payload_text
                .clone()
                .unwrap_or_else(|| super::record::canonical_json(&r.payload)),
            inclusion_proof: proof.iter().map(hex::encode).collect(),
        })
    }

    /// The chain hash recomputed from the fields.
    pub fn computed_hash(&self) -> String {
        super::record::chain_hash(
            self.seq,
            &self.time,
            &self.action_id,
            &self.kind,
            &self.prev_hash,
            &self.payload,
        )
    }

    /// Checks the record's hash against its fields and its proof against a
    /// tree of `size` leaves with head `root`. Says what is wrong.
    pub fn verify(&self, size: u64, root: &Hash) -> Result<(), String> {
        if self.computed_hash() != self.hash {
            return Err("its content does not match its hash (the record was altered)".into());
        }
        let leaf = merkle::record_leaf(&self.hash).ok_or("its hash is not 64 hex digits")?;
        if self.seq < 1 || self.seq as u64 > size {
            return Err(format!(
                "it is not in the checkpoint's tree of {size} records"
            ));
        }
        let proof: Vec<Hash> = self
            .inclusion_proof
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
            .collect::<Option<_>>()
            .ok_or("its inclusion proof is not a list of 64-hex-digit hashes")?;
        merkle::verify_inclusion(self.seq as u64 - 1, size, &leaf, &proof, root).map_err(|e| {
            format!("its inclusion proof does not lead to the checkpoint's tree head ({e})")
        })
    }

    /// The payload, parsed.
    pub fn payload_json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.payload).map_err(|_| "its payload is not JSON".to_string())
    }

    /// Back to a record (with the payload parsed), for the view and the
    /// review checks.
    pub fn to_record(&self) -> Record {
        Record {
            seq: self.seq,
            time: self.time.clone(),
            action_id: self.action_id.clone(),
            kind: self.kind.clone(),
            payload: self.payload_json().unwrap_or(serde_json::Value::Null),
            payload_text: Some(self.payload.clone()),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }
}
