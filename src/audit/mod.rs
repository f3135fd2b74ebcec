//! The workflow log: append-only, hash-chained records of what each action
//! was, why it was decided, and what came of it. Kept apart from the system
//! log (`tracing`), which says what the process did.
//!
//! What makes it evidence for someone who trusts only a public key: the
//! record as an RFC 6962 Merkle tree ([`merkle`], [`tree`]), signed
//! checkpoints of it ([`checkpoint`], [`note`], made by [`checkpointer`]),
//! the policy's text in the record ([`revisions`]), recorded reviews
//! checked again ([`reviews`]), decisions replayed ([`replay`]), and
//! evidence bundles that carry all of it for one action ([`bundle`]).

pub mod bundle;
pub mod checkpoint;
pub mod checkpointer;
pub mod lifecycle;
pub mod merkle;
pub mod note;
pub mod record;
pub mod redact;
pub mod replay;
pub mod reviews;
pub mod revisions;
pub mod store;
pub mod tree;
pub mod verify;
pub mod view;
