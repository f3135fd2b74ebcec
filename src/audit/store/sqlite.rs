//! The embedded store: one SQLite file in WAL mode with synchronous (FULL)
//! commits. One process writes it; `audit` commands may read it meanwhile.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::backend::{
    ActionSummary, Append, Appended, Backend, Due, IndexRow, Links, ListFilter, StoredCheckpoint,
};
use super::{now_rfc3339, StoreError};
use crate::audit::record::{canonical_json, chain_hash, IndexUpdate, Record, GENESIS};

/// Schema versions, applied in order; `PRAGMA user_version` says how many ran.
/// Version 1 is the first release's schema (created with IF NOT EXISTS, so
/// its files migrate in place); version 2 widens the derived index, which
/// is dropped and rebuilt from the records; version 3 adds the signed
/// checkpoints.
const MIGRATIONS: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS records (
        seq INTEGER PRIMARY KEY, time TEXT NOT NULL, action_id TEXT NOT NULL,
        kind TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS records_action ON records(action_id, seq);",
    "DROP TABLE IF EXISTS actions;
     CREATE TABLE actions (
        action_id TEXT PRIMARY KEY, state TEXT NOT NULL, risk TEXT, route TEXT, method TEXT,
        path TEXT, agent TEXT, upstream_status INTEGER, created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0, expires_at TEXT,
        lease_until TEXT, forward_claimed INTEGER NOT NULL DEFAULT 0);
     CREATE INDEX actions_state ON actions(state, created_at);
     CREATE INDEX actions_created ON actions(created_at);
     CREATE TABLE IF NOT EXISTS seen_messages (message_id TEXT PRIMARY KEY, seen_at TEXT NOT NULL);",
    "CREATE TABLE IF NOT EXISTS checkpoints (
        tree_size INTEGER PRIMARY KEY, root_hash TEXT NOT NULL, note TEXT NOT NULL, time TEXT NOT NULL);",
];

/// The schema version this build creates.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One connection to the SQLite file.
pub struct Sqlite {
    conn: Connection,
    /// Index rows kept back (the writer's connection only).
    deferred: Option<Deferred>,
}

fn open_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Open {
        what: path.display().to_string(),
        why: e.to_string(),
    }
}

impl Sqlite {
    /// Opens (creating if needed) the file read-write, with the durability
    /// the record needs, and brings its schema up to date.
    pub fn open(path: &Path, busy: Duration) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let err = open_err(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(busy).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        // FULL: a commit is on disk when it returns, even across power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(&err)?;
        // No temp files: the container's root filesystem is read-only.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(&err)?;
        let mut db = Sqlite {
            conn,
            deferred: None,
        };
        db.migrate().map_err(|e| StoreError::Open {
            what: path.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(db)
    }

    /// Opens an existing file read-only (the `audit` commands).
    pub fn open_read_only(path: &Path) -> Result<Sqlite, StoreError> {
        let err = open_err(path);
        if !path.exists() {
            return Err(StoreError::Open {
                what: path.display().to_string(),
                why: "the file does not exist (no call has been recorded yet)".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(&err)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        Ok(Sqlite {
            conn,
            deferred: None,
        })
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known,
            });
        }
        for sql in &MIGRATIONS[version as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    /// The raw connection, for tests that tamper with the file on purpose.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> Result<Record, rusqlite::Error> {
    let payload: String = r.get(4)?;
    Ok(Record {
        seq: r.get(0)?,
        time: r.get(1)?,
        action_id: r.get(2)?,
        kind: r.get(3)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        payload_text: Some(r.get(4)?),
        prev_hash: r.get(5)?,
        hash: r.get(6)?,
    })
}

const SUMMARY_COLUMNS: &str =
    "action_id, state, risk, route, method, path, agent, upstream_status, created_at, updated_at";

fn row_to_summary(r: &rusqlite::Row<'_>) -> Result<ActionSummary, rusqlite::Error> {
    Ok(ActionSummary {
        action_id: r.get(0)?,
        state: r.get(1)?,
        risk: r.get(2)?,
        route: r.get(3)?,
        method: r.get(4)?,
        path: r.get(5)?,
        agent: r.get(6)?,
        upstream_status: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn ids(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One action's index changes over a batch, folded in order
/// ([`IndexUpdate::absorb`]): the action's row is then written once per
/// batch, not once per record.
struct IndexChange {
    action_id: String,
    update: IndexUpdate,
    /// The time of the record that brought the summary (the row's
    /// `created_at`), when the action starts here.
    created_at: Option<String>,
    last_seq: i64,
    updated_at: String,
}

impl IndexChange {
    fn new(action_id: &str) -> IndexChange {
        IndexChange {
            action_id: action_id.to_string(),
            update: IndexUpdate::default(),
            created_at: None,
            last_seq: 0,
            updated_at: String::new(),
        }
    }

    /// Applies one record's change.
    fn apply(&mut self, ix: &IndexUpdate, seq: i64, time: &str) {
        if self.created_at.is_none() && ix.summary.is_some() {
            self.created_at = Some(time.to_string());
        }
        self.update.absorb(ix);
        self.last_seq = seq;
        self.updated_at = time.to_string();
    }

    /// Folds a later change of the same action into this one.
    fn merge(&mut self, later: IndexChange) {
        if self.created_at.is_none() {
            self.created_at = later.created_at;
        }
        self.update.absorb(&later.update);
        self.last_seq = later.last_seq;
        self.updated_at = later.updated_at;
    }
}

/// Index rows the writer keeps back and writes together once `lag` has
/// passed, in a transaction of their own: the `actions` rows (four
/// b-trees) then cost pages once per `lag`, not once per commit, and no
/// caller waits for them. The records are the truth and committed at once;
/// a crash loses only rows that [`super::catch_up_index`] rebuilds from them.
struct Deferred {
    lag: std::time::Duration,
    /// One folded change per action, in the order the actions were seen.
    pending: Vec<IndexChange>,
    /// Where each action's change is in `pending`.
    position: std::collections::HashMap<String, usize>,
    /// When the oldest pending change was kept back.
    since: Option<std::time::Instant>,
}

impl Deferred {
    fn keep(&mut self, changes: Vec<IndexChange>) {
        for change in changes {
            match self.position.get(&change.action_id) {
                Some(&at) => self.pending[at].merge(change),
                None => {
                    self.position
                        .insert(change.action_id.clone(), self.pending.len());
                    self.pending.push(change);
                }
            }
        }
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    fn clear(&mut self) {
        self.pending.clear();
        self.position.clear();
        self.since = None;
    }
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction (the write lock taken
/// before anything is read), committing if it succeeds. The statements are
/// cached: this runs for every commit of the record.
fn immediate<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let out = f(conn).and_then(|out| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(out)
    });
    if out.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}

/// Writes index changes, in order.
fn write_index(conn: &Connection, changes: &[IndexChange]) -> Result<(), StoreError> {
    let mut index_new = conn.prepare_cached(
        "INSERT OR IGNORE INTO actions (action_id, state, risk, route, method, path, agent, upstream_status,
            created_at, updated_at, last_seq, expires_at, lease_until, forward_claimed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let mut index_update = conn.prepare_cached(
        "UPDATE actions SET state = COALESCE(?2, state), risk = COALESCE(?3, risk),
            expires_at = COALESCE(?4, expires_at), lease_until = COALESCE(?5, lease_until),
            forward_claimed = forward_claimed OR ?6, upstream_status = COALESCE(?7, upstream_status),
            last_seq = ?8, updated_at = ?9
         WHERE action_id = ?1",
    )?;
    for c in changes {
        let u = &c.update;
        let state = u.state.map(|s| s.as_str());
        if let (Some(s), Some(created_at)) = (&u.summary, &c.created_at) {
            let inserted = index_new.execute(params![
                c.action_id,
                state.unwrap_or("pending"),
                u.risk,
                s.route,
                s.method,
                s.path,
                s.agent,
                u.upstream_status,
                created_at,
                c.updated_at,
                c.last_seq,
                u.expires_at,
                u.lease_until,
                u.forward_claimed,
            ])?;
            if inserted == 1 {
                continue;
            }
        }
        // Policy records (`policy:<revision>`) have no row: this updates
        // nothing for them.
        index_update.execute(params![
            c.action_id,
            state,
            u.risk,
            u.expires_at,
            u.lease_until,
            u.forward_claimed,
            u.upstream_status,
            c.last_seq,
            c.updated_at
        ])?;
    }
    Ok(())
}

impl Backend for Sqlite {
    fn append(&mut self, batch: &[Append]) -> Result<Vec<Appended>, StoreError> {
        let deferred = &self.deferred;
        let (out, changes, wrote) = immediate(&self.conn, |tx| {
            let (mut seq, mut prev): (i64, String) = tx
                .prepare_cached("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, GENESIS.to_string()));
            let mut out = Vec::with_capacity(batch.len());
            // The action's newest record, from the records themselves (the
            // index is derived and must not decide a claim).
            let mut last_seq = tx
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM records WHERE action_id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO records (seq, time, action_id, kind, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut seen = tx.prepare_cached(
                "INSERT OR IGNORE INTO seen_messages (message_id, seen_at) VALUES (?1, ?2)",
            )?;
            let mut changes: Vec<IndexChange> = Vec::new();
            let mut position: std::collections::HashMap<&str, usize> = Default::default();
            for append in batch {
                if let Some(m) = &append.message_id {
                    if seen.execute(params![m, now_rfc3339()])? == 0 {
                        out.push(Appended::Replayed);
                        continue;
                    }
                }
                if let Some((id, expected)) = &append.expect {
                    let current: i64 = last_seq
                        .query_row([id], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0);
                    if current != *expected {
                        out.push(Appended::Conflict);
                        continue;
                    }
                }
                for d in &append.drafts {
                    seq += 1;
                    let time = now_rfc3339();
                    let payload = canonical_json(&d.payload);
                    let kind = d.kind.as_str();
                    let hash = chain_hash(seq, &time, &d.action_id, kind, &prev, &payload);
                    insert.execute(params![seq, time, d.action_id, kind, payload, prev, hash])?;
                    let at = *position.entry(&d.action_id).or_insert_with(|| {
                        changes.push(IndexChange::new(&d.action_id));
                        changes.len() - 1
                    });
                    changes[at].apply(&d.index, seq, &time);
                    prev = hash;
                }
                // The contract: 0 for an empty append, not the chain's head.
                let last = if append.drafts.is_empty() { 0 } else { seq };
                out.push(Appended::Committed(last));
            }
            let wrote = deferred.is_none();
            if wrote {
                write_index(tx, &changes)?;
            }
            if batch.iter().any(|a| a.message_id.is_some()) {
                // Forget ids whose signatures can no longer verify.
                let horizon = super::rfc3339(std::time::SystemTime::now() - super::REPLAY_WINDOW);
                tx.prepare_cached("DELETE FROM seen_messages WHERE seen_at < ?1")?
                    .execute([horizon])?;
            }
            Ok((out, changes, wrote))
        })?;
        if let (Some(d), false) = (&mut self.deferred, wrote) {
            if !changes.is_empty() {
                d.keep(changes);
            }
        }
        Ok(out)
    }

    fn defer_index(&mut self, lag: std::time::Duration) {
        if self.deferred.is_none() {
            self.deferred = Some(Deferred {
                lag,
                pending: Vec::new(),
                position: Default::default(),
                since: None,
            });
        }
    }

    fn index_due_in(&self) -> Option<std::time::Duration> {
        let d = self.deferred.as_ref()?;
        Some(d.lag.saturating_sub(d.since?.elapsed()))
    }

    fn flush_index(&mut self) -> Result<(), StoreError> {
        let Some(d) = &mut self.deferred else {
            return Ok(());
        };
        if d.pending.is_empty() {
            return Ok(());
        }
        // Without an fsync of its own: the rows are derived, a crash that
        // loses them loses nothing (they are rebuilt from the records), and
        // the next record commit's fsync makes them durable anyway.
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = immediate(&self.conn, |tx| write_index(tx, &d.pending));
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        out?;
        d.clear();
        Ok(())
    }

    fn records_of(&mut self, action_id: &str) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time, action_id, kind, payload, prev_hash, hash FROM records WHERE action_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([action_id], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn links_of(&mut self, action_id: &str) -> Result<Vec<Links>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.seq, b.hash, a.prev_hash FROM records r
             LEFT JOIN records b ON b.seq = r.seq - 1
             LEFT JOIN records a ON a.seq = r.seq + 1
             WHERE r.action_id = ?1 ORDER BY r.seq",
        )?;
        let rows = stmt.query_map([action_id], |r| {
            Ok(Links {
                seq: r.get(0)?,
                before_hash: r.get(1)?,
                after_prev_hash: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn scan(&mut self, after: i64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time, action_id, kind, payload, prev_hash, hash FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn list(&mut self, f: &ListFilter) -> Result<Vec<ActionSummary>, StoreError> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM actions
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR risk = ?2) AND (?3 IS NULL OR created_at >= ?3)
             ORDER BY created_at DESC LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = if f.limit == 0 { -1 } else { f.limit as i64 };
        let rows = stmt.query_map(params![f.state, f.risk, f.since, limit], row_to_summary)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn due(&mut self, now: &str, grace_before: &str) -> Result<Due, StoreError> {
        Ok(Due {
            expired: ids(
                &self.conn,
                "SELECT action_id FROM actions WHERE state = 'pending' AND expires_at <= ?1",
                &[&now],
            )?,
            unclaimed: ids(
                &self.conn,
                "SELECT action_id FROM actions WHERE state = 'approved' AND NOT forward_claimed AND updated_at <= ?1",
                &[&grace_before],
            )?,
            lapsed: ids(
                &self.conn,
                "SELECT action_id FROM actions WHERE state IN ('allowed', 'approved') AND lease_until IS NOT NULL AND lease_until <= ?1",
                &[&now],
            )?,
        })
    }

    fn heads(&mut self) -> Result<(i64, i64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM records), (SELECT COALESCE(MAX(last_seq), 0) FROM actions)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        // A real page write: an empty transaction would commit even on a full disk.
        let tx = self.conn.transaction()?;
        tx.execute_batch(
            "DROP TABLE IF EXISTS countersign_probe;
             CREATE TABLE countersign_probe (x BLOB);
             INSERT INTO countersign_probe VALUES (zeroblob(8192));
             DROP TABLE countersign_probe;",
        )?;
        tx.commit()?;
        Ok(())
    }

    fn put_index(&mut self, rows: &[IndexRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO actions (action_id, state, risk, route, method, path, agent, upstream_status,
                    created_at, updated_at, last_seq, expires_at, lease_until, forward_claimed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for row in rows {
                let s = &row.summary;
                put.execute(params![
                    s.action_id,
                    s.state,
                    s.risk,
                    s.route,
                    s.method,
                    s.path,
                    s.agent,
                    s.upstream_status,
                    s.created_at,
                    s.updated_at,
                    row.last_seq,
                    row.expires_at,
                    row.lease_until,
                    row.forward_claimed
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn leaf_hashes(&mut self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, hash FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_checkpoint(&mut self, c: &StoredCheckpoint) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO checkpoints (tree_size, root_hash, note, time) VALUES (?1, ?2, ?3, ?4)",
            params![c.tree_size, c.root_hash, c.note, c.time],
        )?;
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT tree_size, root_hash, note, time FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                [],
                row_to_checkpoint,
            )
            .optional()?)
    }

    fn checkpoints(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tree_size, root_hash, note, time FROM checkpoints WHERE tree_size > ?1 ORDER BY tree_size LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], row_to_checkpoint)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn row_to_checkpoint(r: &rusqlite::Row<'_>) -> Result<StoredCheckpoint, rusqlite::Error> {
    Ok(StoredCheckpoint {
        tree_size: r.get(0)?,
        root_hash: r.get(1)?,
        note: r.get(2)?,
        time: r.get(3)?,
    })
}
