//! What a record store backend must do. Two implementations: [`super::sqlite`]
//! (one file, one process) and [`super::postgres`] (one database, a fleet).
//! Everything above this trait (group commit, retries, the action
//! lifecycle, verification) is shared, so both stores behave the same.
//!
//! Every method is blocking: the store calls them on its writer thread or
//! from `spawn_blocking`, never on the async workers.

use super::StoreError;
use crate::audit::record::{Draft, Record};

/// One caller's records within a batch: appended all together or not at all.
#[derive(Debug, Clone)]
pub struct Append {
    /// The records, in order.
    pub drafts: Vec<Draft>,
    /// Optimistic concurrency: append only if this action's newest record
    /// still has this `seq` (0: the action has no record yet). `None`
    /// appends unconditionally.
    pub expect: Option<(String, i64)>,
    /// A signed message's id (a review's `webhook-id`) to remember
    /// fleet-wide: if it was seen before, nothing of this append is written
    /// and it reports [`Appended::Replayed`].
    pub message_id: Option<String>,
}

impl Append {
    /// Records appended unconditionally.
    pub fn records(drafts: Vec<Draft>) -> Append {
        Append {
            drafts,
            expect: None,
            message_id: None,
        }
    }
}

/// What became of one [`Append`] in a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Committed; the seq of its last record (0 for an empty append).
    Committed(i64),
    /// Its `expect` did not hold; nothing of it was written.
    Conflict,
    /// Its `message_id` was seen before; nothing of it was written.
    Replayed,
}

/// A record's chain neighbours, to verify one action without reading the
/// whole chain: the hash of the record just before it and the `prev_hash`
/// of the record just after it.
#[derive(Debug, Clone)]
pub struct Links {
    /// The record's seq.
    pub seq: i64,
    /// `hash` of record `seq - 1` (None for seq 1 or when it is missing).
    pub before_hash: Option<String>,
    /// `prev_hash` of record `seq + 1` (None when it is the newest).
    pub after_prev_hash: Option<String>,
}

/// A row of the searchable action index (`audit list`, `GET /v1/actions`).
/// Derived from the records; the records are the truth.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionSummary {
    /// Action id.
    pub action_id: String,
    /// Current state.
    pub state: String,
    /// Decided risk.
    pub risk: Option<String>,
    /// Route.
    pub route: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// Path.
    pub path: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Upstream status, once completed.
    pub upstream_status: Option<i64>,
    /// First record's time.
    pub created_at: String,
    /// Last record's time.
    pub updated_at: String,
}

/// Filters for listing actions.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Only this risk.
    pub risk: Option<String>,
    /// Only actions created at or after this RFC 3339 time.
    pub since: Option<String>,
    /// At most this many, newest first (0: no limit).
    pub limit: usize,
}

impl ListFilter {
    /// Whether an action passes the filter (as `list` applies it).
    pub fn admits(&self, a: &ActionSummary) -> bool {
        self.state.as_ref().is_none_or(|s| *s == a.state)
            && self
                .risk
                .as_ref()
                .is_none_or(|r| a.risk.as_ref() == Some(r))
            && self.since.as_ref().is_none_or(|t| a.created_at >= *t)
    }
}

/// Actions that need someone to act on them, found through the index.
/// Each is re-read and re-checked from its records before anything happens.
#[derive(Debug, Clone, Default)]
pub struct Due {
    /// Pending, with `expires_at` at or before now.
    pub expired: Vec<String>,
    /// Approved, no forward claimed yet, last changed before `grace_before`.
    pub unclaimed: Vec<String>,
    /// Allowed or approved-and-forwarding whose lease ran out without a result.
    pub lapsed: Vec<String>,
}

/// The blocking operations of one backend connection.
pub trait Backend: Send + 'static {
    /// Appends a batch in ONE transaction, chained after the current head of
    /// the chain, which is read inside the transaction under a lock that
    /// serialises every appender (all processes). Each [`Append`] is checked
    /// against its `expect` inside that transaction, considering the appends
    /// before it in the same batch; a failing one is skipped. An append with
    /// a `message_id` first inserts it into the seen-message table (keyed by
    /// id, with the record time); an id already there makes it `Replayed`
    /// and skips it. Seen ids older than [`super::REPLAY_WINDOW`] may be
    /// purged now and then. Each record
    /// gets `seq = head + 1`, `time = now`, `prev_hash = head hash`,
    /// `hash = chain_hash(...)` over `canonical_json(payload)`, and its
    /// action's index row is updated from `draft.index` (and `last_seq`).
    /// When the commit returns, the batch is durable. Returns one outcome
    /// per append, in order; on Err nothing was written.
    fn append(&mut self, batch: &[Append]) -> Result<Vec<Appended>, StoreError>;

    /// Every record of one action, by seq.
    fn records_of(&mut self, action_id: &str) -> Result<Vec<Record>, StoreError>;

    /// The chain neighbours of every record of one action, by seq.
    fn links_of(&mut self, action_id: &str) -> Result<Vec<Links>, StoreError>;

    /// Up to `limit` records with seq > `after`, by seq (the whole-chain walk).
    fn scan(&mut self, after: i64, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// The index, newest first.
    fn list(&mut self, filter: &ListFilter) -> Result<Vec<ActionSummary>, StoreError>;

    /// Actions needing attention at `now` (RFC 3339), see [`Due`].
    fn due(&mut self, now: &str, grace_before: &str) -> Result<Due, StoreError>;

    /// The newest seq in the records (0 when empty) and the newest
    /// `last_seq` in the index: different means the index is behind.
    fn heads(&mut self) -> Result<(i64, i64), StoreError>;

    /// Checks that a write would commit now, without touching the record
    /// (a scratch write rolled back or dropped): how a failing store finds
    /// out it works again while nothing else is being written.
    fn probe(&mut self) -> Result<(), StoreError>;

    /// Replaces the index rows of these actions (rebuilding a derived index).
    fn put_index(&mut self, rows: &[IndexRow]) -> Result<(), StoreError>;

    /// Lets this connection keep index rows back for up to `lag` and write
    /// them together later ([`Backend::flush_index`]), so record commits
    /// touch fewer pages (SQLite's writer). PostgreSQL ignores it: the
    /// other processes of a fleet read its index at once.
    fn defer_index(&mut self, _lag: std::time::Duration) {}

    /// How long until the index rows kept back are due to be written
    /// (zero: now); `None` when none are kept back.
    fn index_due_in(&self) -> Option<std::time::Duration> {
        None
    }

    /// Writes the index rows kept back, now. On `Err` the connection may be
    /// left in any state: drop it (a new one catches the index up).
    fn flush_index(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Up to `limit` (seq, hash) pairs with seq > `after`, by seq: the
    /// leaves of the record's Merkle tree, without the payloads.
    fn leaf_hashes(&mut self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError>;

    /// Stores a signed checkpoint. A checkpoint of the same tree size
    /// already stored (by another process of a fleet) is kept and this one
    /// dropped: both sign the same tree head.
    fn put_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError>;

    /// The stored checkpoint of the largest tree, if any.
    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Up to `limit` stored checkpoints with tree size > `after`, by size.
    fn checkpoints(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError>;
}

/// A signed checkpoint as the store keeps it (table `checkpoints`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredCheckpoint {
    /// How many records it covers (seq 1 to `tree_size`).
    pub tree_size: i64,
    /// The tree head, lower-case hex.
    pub root_hash: String,
    /// The whole signed note, exactly as signed.
    pub note: String,
    /// When it was signed (RFC 3339).
    pub time: String,
}

/// A whole index row, as rebuilt from an action's records.
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// The summary shown by `list`.
    pub summary: ActionSummary,
    /// Seq of the action's newest record.
    pub last_seq: i64,
    /// Expiry of a pending hold (RFC 3339).
    pub expires_at: Option<String>,
    /// Until when the process that allowed or forwards it answers for it.
    pub lease_until: Option<String>,
    /// Whether a forward of an approved action was claimed.
    pub forward_claimed: bool,
}
