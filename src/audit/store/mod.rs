//! The record store: where the workflow log lives. One interface, two
//! backends: SQLite (the embedded default: one file, one process) and
//! PostgreSQL (one database shared by a fleet of processes).
//!
//! STUB being written by the lead: see backend.rs for the contract.

pub mod backend;
pub mod postgres;
pub mod sqlite;

/// Why the store could not do what was asked. The message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (locked, disk full, corrupt, ...).
    #[error("the record store could not commit: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or is unreachable.
    #[error("the PostgreSQL record store failed: {0}")]
    Postgres(String),
    /// The writer thread could not be started.
    #[error("cannot start the record writer thread: {0}")]
    Writer(std::io::Error),
    /// The writer thread is gone (shutting down).
    #[error("the record store is shut down")]
    Closed,
    /// Opening or connecting failed.
    #[error("cannot open the record store {what}: {why}")]
    Open {
        /// The file or database (never with a password).
        what: String,
        /// Why.
        why: String,
    },
    /// The database holds a schema this version does not know.
    #[error("the record store's schema is version {found}, newer than this countersign knows ({known}); upgrade countersign")]
    SchemaTooNew {
        /// Version found.
        found: i64,
        /// Newest version known here.
        known: i64,
    },
    /// An action's records do not verify against the chain.
    #[error("the records of action {action_id} do not verify at seq {seq}: {why}")]
    Tampered {
        /// The action.
        action_id: String,
        /// First bad record.
        seq: i64,
        /// What is wrong.
        why: String,
    },
}
