//! One process owns a SQLite record. At start, `serve` takes everything
//! unfinished in the file for its own and marks it interrupted
//! (docs/operations.md, "Restarts"); a second process on the same file,
//! such as the new pod of a rolling update on a shared volume, would mark
//! the first one's running forwards `forward_interrupted` while they run,
//! and both would sweep the same holds. So `serve` holds an exclusive lock
//! on `<file>.lock` while it runs, and a second one stops with an error
//! that says who holds it. The lock is the kernel's (`flock`): it goes
//! with the process however it ends, so a crash leaves nothing to clean.
//! (`audit` commands only read, and take no lock.)

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The lock a serving process holds on its SQLite record; released when
/// dropped.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
}

/// Where the lock of the record at `db` lives.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl OwnerLock {
    /// Takes the lock of the record at `db`, or says which process has it.
    pub fn take(db: &Path) -> Result<OwnerLock, StoreError> {
        let path = lock_path(db);
        let refused = |why: String| StoreError::Open {
            what: db.display().to_string(),
            why,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| refused(format!("cannot open its lock file {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the next process's error message.
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = write!(file, "{}", std::process::id());
                Ok(OwnerLock { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another countersign process".to_string()
                } else {
                    format!("another countersign process (pid {holder})")
                };
                Err(refused(format!(
                    "{who} is serving it (it holds {}); a SQLite record has one owning process: stop that one first, or use PostgreSQL (audit.store: postgres://…) for several",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => {
                Err(refused(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let first = OwnerLock::take(&db).unwrap();
        let e = OwnerLock::take(&db).unwrap_err().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("audit.db.lock"),
            "{e}"
        );
        drop(first);
        OwnerLock::take(&db).unwrap();
    }
}
