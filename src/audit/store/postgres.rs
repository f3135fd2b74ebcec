//! PLACEHOLDER until the PostgreSQL backend lands (branch h/postgres).

use std::path::Path;

use super::backend::{
    ActionSummary, Append, Appended, Backend, Due, IndexRow, Links, ListFilter, StoredCheckpoint,
};
use super::StoreError;
use crate::audit::record::Record;

/// Checks a DSN.
pub fn check_dsn(_dsn: &str) -> Result<(), String> {
    Ok(())
}

/// The DSN without secrets, for logs.
pub fn describe(dsn: &str) -> String {
    dsn.to_string()
}

/// One connection.
pub struct Postgres;

/// Connects.
pub fn connect(
    dsn: &str,
    _password: Option<&str>,
    _ca: Option<&Path>,
) -> Result<Postgres, StoreError> {
    Err(StoreError::Open {
        what: describe(dsn),
        why: "not built yet".into(),
    })
}

/// Listens.
pub fn listen(
    _dsn: &str,
    _password: Option<&str>,
    _ca: Option<&Path>,
    _on_action: impl Fn(String) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    Ok(std::thread::spawn(|| {}))
}

impl Postgres {
    /// Migrates.
    pub fn migrate(&mut self) -> Result<i64, StoreError> {
        Ok(0)
    }
}

impl Backend for Postgres {
    fn append(&mut self, _: &[Append]) -> Result<Vec<Appended>, StoreError> {
        unreachable!()
    }
    fn records_of(&mut self, _: &str) -> Result<Vec<Record>, StoreError> {
        unreachable!()
    }
    fn links_of(&mut self, _: &str) -> Result<Vec<Links>, StoreError> {
        unreachable!()
    }
    fn scan(&mut self, _: i64, _: usize) -> Result<Vec<Record>, StoreError> {
        unreachable!()
    }
    fn list(&mut self, _: &ListFilter) -> Result<Vec<ActionSummary>, StoreError> {
        unreachable!()
    }
    fn due(&mut self, _: &str, _: &str) -> Result<Due, StoreError> {
        unreachable!()
    }
    fn heads(&mut self) -> Result<(i64, i64), StoreError> {
        unreachable!()
    }
    fn probe(&mut self) -> Result<(), StoreError> {
        unreachable!()
    }
    fn put_index(&mut self, _: &[IndexRow]) -> Result<(), StoreError> {
        unreachable!()
    }
    fn leaf_hashes(&mut self, _: i64, _: usize) -> Result<Vec<(i64, String)>, StoreError> {
        Err(StoreError::Postgres("leaf_hashes: not built yet".into()))
    }
    fn put_checkpoint(&mut self, _: &StoredCheckpoint) -> Result<(), StoreError> {
        Err(StoreError::Postgres("put_checkpoint: not built yet".into()))
    }
    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Err(StoreError::Postgres(
            "latest_checkpoint: not built yet".into(),
        ))
    }
    fn checkpoints(&mut self, _: i64, _: usize) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Err(StoreError::Postgres("checkpoints: not built yet".into()))
    }
}
