//! Checkpoints: the record's tree head in the C2SP `tlog-checkpoint`
//! format, signed as a C2SP signed note ([`super::note`]).
//!
//! A checkpoint's text is three lines: the log's origin, the tree size in
//! decimal (how many records, seq 1 to size), and the base64 of the 32-byte
//! tree head ([`super::merkle`]). Whoever holds the public key can check a
//! copy kept anywhere against the record: a shorter record (its tail
//! deleted) or another tree head (a record rewritten) is caught.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::merkle::Hash;
use super::note::{NoteError, NoteSigner, Verifier};
use super::store::backend::StoredCheckpoint;
use crate::config::CheckpointConfig;

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Records covered: seq 1 to `size`.
    pub size: u64,
    /// The tree head over those records.
    pub root: Hash,
}

/// Why a checkpoint could not be read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note is malformed or its signature does not verify.
    #[error("{0}")]
    Note(#[from] NoteError),
    /// The signed text is not a checkpoint.
    #[error("the signed text is not a checkpoint: {0}")]
    Body(String),
}

impl Checkpoint {
    /// The signed text: origin, size, base64 tree head, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        )
    }

    /// Reads the text of a checkpoint (extension lines after the third are
    /// allowed and ignored, as the format says).
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |why: &str| CheckpointError::Body(why.to_string());
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("it needs an origin, a tree size and a root hash line"));
        };
        if origin.is_empty() {
            return Err(bad("the origin line is empty"));
        }
        let canonical = size == "0" || (!size.starts_with('0') && !size.is_empty());
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| canonical && size.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("the tree size is not a decimal number"))?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the root hash is not base64 of 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }

    /// Checks the note's signature with `verifier` and reads the checkpoint.
    pub fn open(note: &str, verifier: &Verifier) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::parse(verifier.open(note)?)
    }

    /// Signs this checkpoint; the stored form carries the whole note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<StoredCheckpoint, CheckpointError> {
        Ok(StoredCheckpoint {
            tree_size: self.size as i64,
            root_hash: hex::encode(self.root),
            note: signer.sign(&self.body())?,
            time: super::store::now_rfc3339(),
        })
    }
}

/// Reads `audit.checkpoint.key_file`: the signed-note signer key.
pub fn load_signer(cfg: &CheckpointConfig) -> Result<NoteSigner, String> {
    let text = std::fs::read_to_string(&cfg.key_file)
        .map_err(|e| format!("cannot read {}: {e}", cfg.key_file.display()))?;
    NoteSigner::parse(&text).map_err(|e| format!("{}: {e}", cfg.key_file.display()))
}

/// The origin line of this log's checkpoints.
pub fn origin(cfg: &CheckpointConfig, signer: &NoteSigner) -> String {
    cfg.origin
        .clone()
        .unwrap_or_else(|| signer.name().to_string())
}

/// Reads a verifier key file (`countersign keygen`'s `.pub`).
pub fn load_verifier(path: &std::path::Path) -> Result<Verifier, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Verifier::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_is_strict() {
        let c = Checkpoint {
            origin: "example.com/audit".into(),
            size: 42,
            root: [7u8; 32],
        };
        let body = c.body();
        assert_eq!(
            body,
            "example.com/audit\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"
        );
        assert_eq!(Checkpoint::parse(&body).unwrap(), c);
        let with_extension = format!("{body}extension line\n");
        assert_eq!(Checkpoint::parse(&with_extension).unwrap(), c);
        for bad in [
            "\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n042\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n+42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n42\nBwcH\n",
            "o\n42\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        let signer = NoteSigner::generate("example.com/audit").unwrap();
        let stored = c.sign(&signer).unwrap();
        assert_eq!(stored.tree_size, 42);
        assert_eq!(
            Checkpoint::open(&stored.note, &signer.verifier()).unwrap(),
            c
        );
        let other = NoteSigner::generate("example.com/audit").unwrap();
        assert!(Checkpoint::open(&stored.note, &other.verifier()).is_err());
    }
}
