//! The embedded record store: one SQLite file in WAL mode with synchronous
//! commits. One writer thread owns the write connection and commits whatever
//! has queued up in one transaction (group commit), so concurrent calls share
//! an fsync instead of paying one each.
//!
//! Two ways to append: [`Store::commit`] waits until the records are durable
//! (the write-ahead `decided` record), [`Store::enqueue`] returns at once and
//! the writer keeps retrying until the record commits (results recorded after
//! the agent already has its answer). Neither ever drops a record silently.
//!
//! The writer keeps the outcome of its last commit in [`Health`], which
//! `/readyz` reports: from a failed commit until one succeeds again (while
//! idle, the writer probes with a throwaway write), the store is not ready.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use super::record::{canonical_json, chain_hash, Draft, Record, GENESIS};
use crate::metrics::Metrics;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (locked, disk full, corrupt, ...).
    #[error("the record store could not commit: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The writer thread could not be started.
    #[error("cannot start the record writer thread: {0}")]
    Writer(std::io::Error),
    /// Restoring held actions after a restart failed.
    #[error("cannot restore held actions: {0}")]
    Recovery(String),
    /// The writer thread is gone (shutting down).
    #[error("the record store is shut down")]
    Closed,
    /// Opening the file failed.
    #[error("cannot open the record store {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
}

type Reply = oneshot::Sender<Result<(), Arc<StoreError>>>;

struct Job {
    drafts: Vec<Draft>,
    reply: Option<Reply>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    health: Arc<Health>,
}

/// Why the store cannot commit, since when.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The last commit error.
    pub error: String,
    /// When commits started failing (RFC 3339).
    pub since: String,
}

/// The outcome of the writer's last commit attempt.
#[derive(Default)]
pub struct Health {
    failure: Mutex<Option<Failure>>,
}

impl Health {
    fn record(&self, outcome: &Result<(), StoreError>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(()) => {
                if failure.take().is_some() {
                    tracing::info!("the record store commits again");
                }
            }
            Err(e) => {
                let since = failure
                    .as_ref()
                    .map_or_else(now_rfc3339, |f| f.since.clone());
                *failure = Some(Failure {
                    error: e.to_string(),
                    since,
                });
            }
        }
    }

    fn is_failing(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Why commits fail, while they do.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    action_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_action ON records(action_id, seq);
CREATE TABLE IF NOT EXISTS actions (
    action_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    risk TEXT,
    route TEXT,
    method TEXT,
    path TEXT,
    agent TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_state ON actions(state, created_at);
";

/// Opens the file read-write with the durability settings the record needs.
fn open_rw(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(busy).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    // FULL: a commit is on disk when it returns, even across power loss.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    // No temp files: the container's root filesystem is read-only.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(open_err)?;
    conn.execute_batch(SCHEMA).map_err(open_err)?;
    Ok(conn)
}

/// Opens an existing store read-only (the `audit` commands).
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    Ok(conn)
}

/// RFC 3339 UTC with microseconds: sorts as text, which `--since` relies on.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

impl Store {
    /// Opens (creating if needed) the store and starts its writer thread.
    pub fn open(path: &Path, busy: Duration, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let conn = open_rw(path, busy)?;
        let head: (i64, String) = conn
            .query_row(
                "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, GENESIS.to_string()));
        let reader = open_rw(path, busy)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let health = Arc::new(Health::default());
        let writer_health = health.clone();
        std::thread::Builder::new()
            .name("countersign-record-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    head,
                    metrics,
                    retry: Vec::new(),
                    health: writer_health,
                }
                .run(rx)
            })
            .map_err(StoreError::Writer)?;
        Ok(Store {
            tx,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            health,
        })
    }

    /// Why commits fail, while they do (`None` when the last one succeeded).
    pub fn failure(&self) -> Option<Failure> {
        self.health.failure()
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends records and waits until they are durable.
    pub async fn commit(&self, drafts: Vec<Draft>) -> Result<(), Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                drafts,
                reply: Some(reply),
            })
            .map_err(|_| Arc::new(StoreError::Closed))?;
        rx.await.map_err(|_| Arc::new(StoreError::Closed))?
    }

    /// Appends records and waits until they are durable, retrying (with
    /// backoff up to 5 s) while the store cannot commit: for records of
    /// something that already happened, which must not be lost, and that
    /// the caller must know are written before it goes on.
    pub async fn commit_until_durable(&self, drafts: Vec<Draft>) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.commit(drafts.clone()).await {
            let action_id = drafts
                .first()
                .map(|d| d.action_id.as_str())
                .unwrap_or_default();
            tracing::error!(action_id, error = %e, "cannot record this yet; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Appends records without waiting; the writer retries until they commit.
    pub fn enqueue(&self, drafts: Vec<Draft>) {
        if self
            .tx
            .send(Job {
                drafts,
                reply: None,
            })
            .is_err()
        {
            tracing::error!("record store is shut down; a result record could not be queued");
        }
    }

    /// Runs a read on the shared read connection, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Every record of one action, in order; empty for an unknown or
    /// malformed id (so callers never pass user input to a query unchecked).
    pub async fn action_records(&self, action_id: &str) -> Result<Vec<Record>, StoreError> {
        if !super::record::is_action_id(action_id) {
            return Ok(Vec::new());
        }
        let id = action_id.to_string();
        self.read(move |c| records_of(c, &id)).await
    }

    /// Waits until every record queued before this call has been committed
    /// (or, for enqueued ones the store refused, handed to the retry queue).
    pub async fn flush(&self) -> Result<(), Arc<StoreError>> {
        self.commit(Vec::new()).await
    }
}

struct Writer {
    conn: Connection,
    head: (i64, String),
    metrics: Arc<Metrics>,
    /// Enqueued records that failed to commit; retried first, in order.
    retry: Vec<Draft>,
    /// The last commit's outcome, for `/readyz`.
    health: Arc<Health>,
}

const MAX_BATCH: usize = 1024;

/// Takes whatever is queued, up to a batch.
fn drain(rx: &mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// How long enqueued result records wait for a write-ahead commit to share.
const LINGER: Duration = Duration::from_millis(2);

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            // While failing, wake up on the backoff even with nothing queued,
            // to find out (by retrying or probing) when commits work again.
            let first = if self.retry.is_empty() && !self.health.is_failing() {
                match rx.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(backoff) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // Last attempt for what is left before exiting.
                        if let Err(e) = self.write(&self.retry.clone(), &[]) {
                            tracing::error!(error = %e, lost = self.retry.len(), "record store closed with uncommitted result records");
                        }
                        return;
                    }
                }
            };
            let mut jobs: Vec<Job> = first.into_iter().collect();
            drain(&rx, &mut jobs);
            // Result records alone need not pay an fsync of their own: give
            // a waiting caller's write-ahead record a moment to join them.
            if !jobs.is_empty() && jobs.iter().all(|j| j.reply.is_none()) {
                if let Ok(job) = rx.recv_timeout(LINGER) {
                    jobs.push(job);
                    drain(&rx, &mut jobs);
                }
            }
            let retry = std::mem::take(&mut self.retry);
            let has_records = !retry.is_empty() || jobs.iter().any(|j| !j.drafts.is_empty());
            let result = self.write(&retry, &jobs);
            if has_records {
                self.health.record(&result);
            } else if self.health.is_failing() {
                // Nothing to write (an idle wake-up or a flush), and an empty
                // transaction always commits: ask the disk with a probe.
                let probe = self.probe();
                self.health.record(&probe);
                if let Err(e) = probe {
                    tracing::debug!(error = %e, "the record store still cannot commit");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // Only flushes can be waiting here, and they had nothing to commit.
                    for job in jobs {
                        if let Some(reply) = job.reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    continue;
                }
            }
            match result {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    for job in jobs {
                        if let Some(reply) = job.reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "record store commit failed");
                    self.metrics.record_commit_failures.inc();
                    let e = Arc::new(e);
                    self.retry = retry;
                    for job in jobs {
                        match job.reply {
                            // The caller refuses its request: nothing was forwarded.
                            Some(reply) => {
                                let _ = reply.send(Err(e.clone()));
                            }
                            None => self.retry.extend(job.drafts),
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A write that allocates pages and commits, touching no record: can the
    /// store commit again (space freed, lock released)?
    fn probe(&mut self) -> Result<(), StoreError> {
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

    /// One transaction for the whole batch. The chain head only advances
    /// when the commit succeeds.
    fn write(&mut self, retry: &[Draft], jobs: &[Job]) -> Result<(), StoreError> {
        let started = Instant::now();
        let tx = self.conn.transaction()?;
        let (mut seq, mut prev) = self.head.clone();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO records (seq, time, action_id, kind, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut index_new = tx.prepare_cached(
                "INSERT OR IGNORE INTO actions (action_id, state, risk, route, method, path, agent, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )?;
            let mut index_update = tx.prepare_cached(
                "UPDATE actions SET state = COALESCE(?2, state), risk = COALESCE(?3, risk), updated_at = ?4 WHERE action_id = ?1",
            )?;
            let drafts = retry
                .iter()
                .chain(jobs.iter().flat_map(|j| j.drafts.iter()));
            for d in drafts {
                seq += 1;
                let time = now_rfc3339();
                let payload = canonical_json(&d.payload);
                let kind = d.kind.as_str();
                let hash = chain_hash(seq, &time, &d.action_id, kind, &prev, &payload);
                insert.execute(params![seq, time, d.action_id, kind, payload, prev, hash])?;
                let state = d.index.state.map(|s| s.as_str());
                if let Some(s) = &d.index.summary {
                    index_new.execute(params![
                        d.action_id,
                        state.unwrap_or("pending"),
                        d.index.risk,
                        s.route,
                        s.method,
                        s.path,
                        s.agent,
                        time
                    ])?;
                }
                index_update.execute(params![d.action_id, state, d.index.risk, time])?;
                prev = hash;
            }
        }
        tx.commit()?;
        self.head = (seq, prev);
        self.metrics
            .record_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Reads every record of one action, in order.
pub fn records_of(conn: &Connection, action_id: &str) -> Result<Vec<Record>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, time, action_id, kind, payload, prev_hash, hash FROM records WHERE action_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([action_id], row_to_record)?;
    rows.collect()
}

fn row_to_record(r: &rusqlite::Row<'_>) -> Result<Record, rusqlite::Error> {
    let payload: String = r.get(4)?;
    Ok(Record {
        seq: r.get(0)?,
        time: r.get(1)?,
        action_id: r.get(2)?,
        kind: r.get(3)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        prev_hash: r.get(5)?,
        hash: r.get(6)?,
    })
}

/// A row of `audit list` / `GET /v1/actions`.
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
    /// At most this many, newest first.
    pub limit: usize,
}

/// Lists actions, newest first.
pub fn list_actions(
    conn: &Connection,
    f: &ListFilter,
) -> Result<Vec<ActionSummary>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT action_id, state, risk, route, method, path, agent, created_at, updated_at FROM actions
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR risk = ?2) AND (?3 IS NULL OR created_at >= ?3)
         ORDER BY created_at DESC LIMIT ?4",
    )?;
    let limit = if f.limit == 0 { 100 } else { f.limit } as i64;
    let rows = stmt.query_map(params![f.state, f.risk, f.since, limit], |r| {
        Ok(ActionSummary {
            action_id: r.get(0)?,
            state: r.get(1)?,
            risk: r.get(2)?,
            route: r.get(3)?,
            method: r.get(4)?,
            path: r.get(5)?,
            agent: r.get(6)?,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// The result of walking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks out.
    Intact {
        /// How many records.
        records: i64,
    },
    /// The first record that does not.
    Broken {
        /// Its seq (or the seq that should have come next).
        seq: i64,
        /// What is wrong.
        why: String,
    },
}

/// Walks the whole chain in seq order and recomputes every hash.
pub fn verify_chain(conn: &Connection) -> Result<Verdict, rusqlite::Error> {
    let mut stmt = conn.prepare(
        "SELECT seq, time, action_id, kind, payload, prev_hash, hash FROM records ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_string();
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let time: String = r.get(1)?;
        let action_id: String = r.get(2)?;
        let kind: String = r.get(3)?;
        let payload: String = r.get(4)?;
        let prev_hash: String = r.get(5)?;
        let hash: String = r.get(6)?;
        if seq != expected_seq {
            return Ok(Verdict::Broken {
                seq: expected_seq,
                why: format!("record {expected_seq} is missing (the next record is {seq})"),
            });
        }
        if prev_hash != prev {
            return Ok(Verdict::Broken {
                seq,
                why: "its prev_hash does not match the previous record's hash (records removed or reordered)".into(),
            });
        }
        if chain_hash(seq, &time, &action_id, &kind, &prev_hash, &payload) != hash {
            return Ok(Verdict::Broken {
                seq,
                why: "its content does not match its hash (the record was altered)".into(),
            });
        }
        prev = hash;
        expected_seq += 1;
    }
    Ok(Verdict::Intact {
        records: expected_seq - 1,
    })
}
