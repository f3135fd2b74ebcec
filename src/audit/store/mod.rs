//! The record store: where the workflow log lives. One interface, two
//! backends ([`backend::Backend`]): SQLite, the embedded default (one file,
//! one process), and PostgreSQL (one database shared by a fleet).
//!
//! What the store offers is domain operations, not its connection:
//! - append with write-ahead semantics ([`Store::commit`]: durable when it
//!   returns) or after the fact ([`Store::enqueue`]: retried until it
//!   commits, never dropped);
//! - claim a transition ([`Store::commit_if`]: only if the action has not
//!   changed since it was read, so two processes never both approve,
//!   expire or forward the same action);
//! - read an action, verified against the chain ([`Store::action`]);
//! - list, verify the whole chain, remember signed message ids once;
//! - wake whoever waits on an action when it changes ([`Store::watch`]).
//!
//! One writer thread per process owns a write connection and commits what
//! has queued up in one transaction (group commit). Reads run on a small
//! pool of connections off the async workers.

pub mod backend;
pub mod owner;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use self::backend::{ActionSummary, Append, Appended, Backend, Due, IndexRow, ListFilter};
use super::lifecycle::{verify, Lifecycle};
use super::record::{Draft, Record};
use crate::config::{AuditConfig, StoreUrl};
use crate::metrics::Metrics;

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

/// RFC 3339 UTC with microseconds: sorts as text, which the index relies on.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// A time as the store writes it.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Opens one backend connection.
type Connect = Arc<dyn Fn() -> Result<Box<dyn Backend>, StoreError> + Send + Sync>;

/// Called with the ids of actions that changed (an empty id: "maybe any").
pub type OnChange = Arc<dyn Fn(&str) + Send + Sync>;

type Reply = oneshot::Sender<Result<Vec<Appended>, Arc<StoreError>>>;

struct Job {
    appends: Vec<Append>,
    reply: Option<Reply>,
    /// What the writer does after committing it.
    then: Then,
}

/// What the writer does after committing a job's appends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing more.
    Reply,
    /// Write the index rows kept back before answering (a read follows).
    WriteIndex,
    /// Write them, close the connection and exit: the last job.
    Close,
}

/// Why the store cannot commit, since when.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The last commit error.
    pub error: String,
    /// When commits started failing (RFC 3339).
    pub since: String,
}

/// The outcome of the writer's last commit attempt; `/readyz` reports it.
#[derive(Default)]
pub struct Health {
    failing: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

impl Health {
    fn record(&self, outcome: Result<(), &StoreError>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(()) => {
                if failure.take().is_some() {
                    tracing::info!("the record store commits again");
                }
                self.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                let since = failure
                    .as_ref()
                    .map_or_else(now_rfc3339, |f| f.since.clone());
                *failure = Some(Failure {
                    error: e.to_string(),
                    since,
                });
                self.failing.store(true, Ordering::Relaxed);
            }
        }
    }

    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Why commits fail, while they do.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    describe: Arc<String>,
    kind: &'static str,
    health: Arc<Health>,
    on_change: Arc<Mutex<Option<OnChange>>>,
    tampered: Arc<Mutex<BTreeSet<String>>>,
    /// Whether the writer keeps index rows back (SQLite, `audit.index_lag`
    /// above zero), so reads of the index first ask for them.
    defers_index: bool,
    /// A SQLite record's owner lock ([`owner`]), held until [`Store::close`].
    owner: Arc<Mutex<Option<owner::OwnerLock>>>,
}

/// A few read connections, opened lazily and replaced when they break.
struct Readers {
    idle: Mutex<Vec<Box<dyn Backend>>>,
    permits: tokio::sync::Semaphore,
    connect: Connect,
    /// Set by [`Store::close`]: no connection is opened or kept after it.
    closed: AtomicBool,
}

impl Readers {
    fn run<T>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match conn {
            Some(c) => c,
            None => (self.connect)()?,
        };
        let out = f(conn.as_mut());
        // A connection that failed may be broken: open a fresh one next
        // time. None is kept once the store is closed.
        if out.is_ok() && !self.closed.load(Ordering::Acquire) {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
        out
    }
}

/// A connection to the configured store for one-off use (the CLI).
pub fn connect(cfg: &AuditConfig) -> Result<Box<dyn Backend>, StoreError> {
    connector(cfg, false)()
}

/// A read-only connection when the store allows it (SQLite), for `audit`.
pub fn connect_read_only(cfg: &AuditConfig) -> Result<Box<dyn Backend>, StoreError> {
    match &cfg.store {
        StoreUrl::Sqlite(path) => Ok(Box::new(sqlite::Sqlite::open_read_only(path)?)),
        StoreUrl::Postgres { .. } => connect(cfg),
    }
}

/// Creates or upgrades the schema; returns the version now in force.
pub fn migrate(cfg: &AuditConfig) -> Result<i64, StoreError> {
    match &cfg.store {
        StoreUrl::Sqlite(path) => {
            sqlite::Sqlite::open(path, cfg.busy_timeout)?;
            Ok(sqlite::SCHEMA_VERSION)
        }
        StoreUrl::Postgres { dsn } => {
            postgres::connect_with(dsn, password_source(cfg), cfg.ca_file.as_deref())?.migrate()
        }
    }
}

/// The PostgreSQL password, read from its source at every connection (so a
/// rotated password file is picked up); `None` when none is configured.
fn password_source(cfg: &AuditConfig) -> postgres::PasswordSource {
    let secret = cfg.password.clone();
    Arc::new(move || match &secret {
        Some(s) => s
            .read()
            .map(Some)
            // The connection names the setting (`audit.password: …`).
            .map_err(|why| why.to_string()),
        None => Ok(None),
    })
}

fn connector(cfg: &AuditConfig, migrate: bool) -> Connect {
    match &cfg.store {
        StoreUrl::Sqlite(path) => {
            let (path, busy) = (path.clone(), cfg.busy_timeout);
            Arc::new(move || Ok(Box::new(sqlite::Sqlite::open(&path, busy)?) as Box<dyn Backend>))
        }
        StoreUrl::Postgres { dsn } => {
            let dsn = dsn.clone();
            let password = password_source(cfg);
            let ca = cfg.ca_file.clone();
            Arc::new(move || {
                let mut pg = postgres::connect_with(&dsn, password.clone(), ca.as_deref())?;
                if migrate {
                    pg.migrate()?;
                }
                Ok(Box::new(pg) as Box<dyn Backend>)
            })
        }
    }
}

impl Store {
    /// Opens the configured store (running migrations), rebuilds the index
    /// if it is behind the records, and starts the writer thread.
    pub fn open(cfg: &AuditConfig, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let (describe, kind) = match &cfg.store {
            StoreUrl::Sqlite(p) => (p.display().to_string(), "sqlite"),
            StoreUrl::Postgres { dsn } => (postgres::describe(dsn), "postgres"),
        };
        let owner = match &cfg.store {
            StoreUrl::Sqlite(path) => Some(owner::OwnerLock::take(path)?),
            StoreUrl::Postgres { .. } => None,
        };
        let connect = connector(cfg, false);
        let writer = open_writer(&connector(cfg, true), cfg.index_lag)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let health = Arc::new(Health::default());
        let on_change: Arc<Mutex<Option<OnChange>>> = Arc::default();
        let w = Writer {
            conn: Some(writer),
            connect: connect.clone(),
            index_lag: cfg.index_lag,
            metrics,
            retry: Vec::new(),
            health: health.clone(),
            on_change: on_change.clone(),
        };
        std::thread::Builder::new()
            .name("countersign-record-writer".into())
            .spawn(move || w.run(rx))
            .map_err(StoreError::Writer)?;
        if let StoreUrl::Postgres { dsn } = &cfg.store {
            let hook = on_change.clone();
            let password = password_source(cfg);
            postgres::listen_with(dsn, password, cfg.ca_file.as_deref(), move |id| {
                if let Some(f) = hook.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    f(&id)
                }
            })?;
        }
        Ok(Store {
            tx,
            readers: Arc::new(Readers {
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(4),
                connect,
                closed: AtomicBool::new(false),
            }),
            owner: Arc::new(Mutex::new(owner)),
            describe: Arc::new(describe),
            kind,
            health,
            on_change,
            tampered: Arc::default(),
            defers_index: kind == "sqlite" && !cfg.index_lag.is_zero(),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether other processes may share this store (so actions this
    /// process did not start may need its help, and leases matter).
    pub fn is_shared(&self) -> bool {
        self.kind == "postgres"
    }

    /// The file or database, for logs and `/readyz` (never a password).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Why commits fail, while they do (`None` when the last one succeeded).
    pub fn failure(&self) -> Option<Failure> {
        self.health.failure()
    }

    /// Remembers an action as tampered (`/readyz` lists it): its records do
    /// not verify, or its approval is not backed by signed reviews.
    pub fn mark_tampered(&self, action_id: &str) {
        self.tampered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(action_id.to_string());
    }

    /// Whether an action is remembered as tampered.
    pub fn is_tampered(&self, action_id: &str) -> bool {
        self.tampered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(action_id)
    }

    /// Actions whose records failed verification (never forwarded).
    pub fn tampered(&self) -> Vec<String> {
        self.tampered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Sets who hears about changed actions: local commits and, with
    /// PostgreSQL, other processes' commits.
    pub fn watch(&self, f: OnChange) {
        *self.on_change.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    async fn send(&self, appends: Vec<Append>) -> Result<Vec<Appended>, Arc<StoreError>> {
        self.send_then(appends, Then::Reply).await
    }

    async fn send_then(
        &self,
        appends: Vec<Append>,
        then: Then,
    ) -> Result<Vec<Appended>, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                appends,
                reply: Some(reply),
                then,
            })
            .map_err(|_| Arc::new(StoreError::Closed))?;
        rx.await.map_err(|_| Arc::new(StoreError::Closed))?
    }

    /// Appends records and waits until they are durable (write-ahead).
    pub async fn commit(&self, drafts: Vec<Draft>) -> Result<(), Arc<StoreError>> {
        self.send(vec![Append::records(drafts)]).await.map(|_| ())
    }

    /// Appends records only if the action's newest record is still
    /// `last_seq` (what the caller read); waits until durable. `Ok(false)`:
    /// the action changed meanwhile and nothing was written.
    pub async fn commit_if(
        &self,
        action_id: &str,
        last_seq: i64,
        drafts: Vec<Draft>,
    ) -> Result<bool, Arc<StoreError>> {
        let out = self
            .send(vec![Append {
                drafts,
                expect: Some((action_id.to_string(), last_seq)),
                message_id: None,
            }])
            .await?;
        Ok(matches!(out.first(), Some(Appended::Committed(_))))
    }

    /// Appends records and waits until they are durable, retrying (with
    /// backoff up to 5 s) while the store cannot commit: for records of
    /// something that already happened, which must not be lost, and that
    /// the caller must know are written before it goes on.
    pub async fn commit_until_durable(&self, drafts: Vec<Draft>) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.commit(drafts.clone()).await {
            if matches!(*e, StoreError::Closed) {
                tracing::error!("record store is shut down; a record could not be committed");
                return;
            }
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
        let job = Job {
            appends: vec![Append::records(drafts)],
            reply: None,
            then: Then::Reply,
        };
        if self.tx.send(job).is_err() {
            tracing::error!("record store is shut down; a result record could not be queued");
        }
    }

    /// Waits until every record queued before this call has been committed
    /// (or, for enqueued ones the store refused, handed to the retry queue).
    pub async fn flush(&self) -> Result<(), Arc<StoreError>> {
        self.send(Vec::new()).await.map(|_| ())
    }

    /// Has the writer write the index rows it keeps back, so a read of the
    /// index that follows sees every action committed before this call. A
    /// store that cannot commit is read as it is.
    async fn catch_up_reads(&self) {
        // Nothing is kept back on PostgreSQL or with `index_lag: 0`, and a
        // store that cannot commit is read as it is: no hand-off then.
        if !self.defers_index || self.health.is_failing() {
            return;
        }
        if let Err(e) = self.send_then(Vec::new(), Then::WriteIndex).await {
            tracing::debug!(error = %e, "index rows kept back could not be written before a read");
        }
    }

    /// Commits everything queued, then closes every connection and stops
    /// the writer; later commits fail with `Closed`. When it returns, a
    /// SQLite file is complete on its own (its write-ahead log folded back
    /// in), so it can be copied or read by another process at once.
    pub async fn close(&self) -> Result<(), Arc<StoreError>> {
        self.readers.closed.store(true, Ordering::Release);
        self.readers
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let closed = self.send_then(Vec::new(), Then::Close).await.map(|_| ());
        // The writer has let go of the file: another process may own it.
        self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
        closed
    }

    /// Runs a read on a pooled connection, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.run(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Every record of one action, in order, as stored (unverified: for
    /// showing); empty for an unknown or malformed id.
    pub async fn action_records(&self, action_id: &str) -> Result<Vec<Record>, StoreError> {
        if !super::record::is_action_id(action_id) {
            return Ok(Vec::new());
        }
        let id = action_id.to_string();
        self.read(move |b| b.records_of(&id)).await
    }

    /// One action's life, from records verified against the chain; `None`
    /// for an unknown id. Records that do not verify are an error, and the
    /// action is remembered as tampered (`/readyz` lists it).
    pub async fn action(&self, action_id: &str) -> Result<Option<Lifecycle>, StoreError> {
        if !super::record::is_action_id(action_id) {
            return Ok(None);
        }
        let id = action_id.to_string();
        let (records, links) = self
            .read(move |b| Ok((b.records_of(&id)?, b.links_of(&id)?)))
            .await?;
        if records.is_empty() {
            return Ok(None);
        }
        if let Err((seq, why)) = verify(&records, &links) {
            tracing::error!(
                action_id,
                seq,
                why,
                "an action's records do not verify; it will not be acted on"
            );
            self.mark_tampered(action_id);
            return Err(StoreError::Tampered {
                action_id: action_id.to_string(),
                seq,
                why,
            });
        }
        Lifecycle::fold(&records)
            .map(Some)
            .map_err(|why| StoreError::Tampered {
                action_id: action_id.to_string(),
                seq: records[0].seq,
                why,
            })
    }

    /// Rebuilds the index rows of these actions from their records (the
    /// index is derived: an edited row must not decide what happens next).
    /// Returns how many rows had to change.
    pub async fn reindex(&self, ids: Vec<String>) -> Result<usize, StoreError> {
        self.catch_up_reads().await;
        self.read(move |b| {
            let mut rows = Vec::new();
            let mut changed = 0;
            for id in &ids {
                let records = b.records_of(id)?;
                if records.is_empty() {
                    continue;
                }
                let row = index_row(&records);
                let listed = b.list(&ListFilter {
                    state: Some(row.summary.state.clone()),
                    ..Default::default()
                })?;
                if !listed.iter().any(|a| a.action_id == *id) {
                    changed += 1;
                }
                rows.push(row);
            }
            b.put_index(&rows)?;
            Ok(changed)
        })
        .await
    }

    /// Lists actions from the index.
    pub async fn list(&self, filter: ListFilter) -> Result<Vec<ActionSummary>, StoreError> {
        self.catch_up_reads().await;
        self.read(move |b| b.list(&filter)).await
    }

    /// Remembers a signed message id for the whole fleet; false for a replay.
    /// (It goes through the writer: one transaction for many, no lock
    /// contention with the chain's appends.)
    pub async fn first_sight(&self, message_id: &str) -> Result<bool, Arc<StoreError>> {
        let out = self
            .send(vec![Append {
                drafts: Vec::new(),
                expect: None,
                message_id: Some(message_id.to_string()),
            }])
            .await?;
        Ok(matches!(out.first(), Some(Appended::Committed(_))))
    }

    /// What needs attention now; approved actions count as unclaimed once
    /// nobody claimed their forward for `grace`.
    pub async fn due(&self, grace: Duration) -> Result<Due, StoreError> {
        self.catch_up_reads().await;
        let now = SystemTime::now();
        let (n, g) = (rfc3339(now), rfc3339(now - grace));
        self.read(move |b| b.due(&n, &g)).await
    }
}

/// How long a signed message id is remembered: longer than the 5-minute
/// timestamp tolerance on either side, so a replay is caught whenever its
/// signature would still verify.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(11 * 60);

/// A connection for the writer: its index caught up with the records (rows
/// a crash or a broken connection lost are rebuilt), then allowed to keep
/// index rows back for `index_lag` (`audit.index_lag`).
fn open_writer(connect: &Connect, index_lag: Duration) -> Result<Box<dyn Backend>, StoreError> {
    let mut conn = connect()?;
    catch_up_index(conn.as_mut())?;
    if !index_lag.is_zero() {
        conn.defer_index(index_lag);
    }
    Ok(conn)
}

/// The index is derived: when it is behind the records (rows kept back
/// when the process died, a restored file), this rebuilds, from their
/// records, the rows of every action with a record newer than the index.
/// It relies on the index being written in record order (only the writer
/// writes it while serving), so that every record up to its newest
/// `last_seq` is reflected in it. A row edited by hand is not found here;
/// the rows of unfinished actions are rebuilt at start instead
/// (`approval::sweep::on_start` → [`Store::reindex`]).
fn catch_up_index(b: &mut dyn Backend) -> Result<(), StoreError> {
    let rows = rows_behind(b)?;
    if !rows.is_empty() {
        tracing::info!(
            actions = rows.len(),
            "catching the action index up with the records"
        );
        b.put_index(&rows)?;
    }
    Ok(())
}

/// The index rows of the actions with records newer than the index.
fn rows_behind(b: &mut dyn Backend) -> Result<Vec<IndexRow>, StoreError> {
    let (records, indexed) = b.heads()?;
    if records <= indexed {
        return Ok(Vec::new());
    }
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut after = indexed;
    loop {
        let page = b.scan(after, 5000)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        // Policy records (`policy:<revision>`) are in the chain, not actions.
        ids.extend(
            page.into_iter()
                .map(|r| r.action_id)
                .filter(|id| super::record::is_action_id(id)),
        );
    }
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let records = b.records_of(&id)?;
        if !records.is_empty() {
            rows.push(index_row(&records));
        }
    }
    Ok(rows)
}

/// `list` on a connection of its own (the `audit` commands): the actions a
/// running or crashed server committed but had not yet indexed are
/// included, their rows computed from their records.
pub fn list_caught_up(
    b: &mut dyn Backend,
    filter: &ListFilter,
) -> Result<Vec<ActionSummary>, StoreError> {
    let behind = rows_behind(b)?;
    if behind.is_empty() {
        return b.list(filter);
    }
    let mut wider = filter.clone();
    if wider.limit > 0 {
        wider.limit += behind.len();
    }
    let mut rows = b.list(&wider)?;
    rows.retain(|r| !behind.iter().any(|n| n.summary.action_id == r.action_id));
    rows.extend(
        behind
            .into_iter()
            .map(|n| n.summary)
            .filter(|s| filter.admits(s)),
    );
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    if filter.limit > 0 {
        rows.truncate(filter.limit);
    }
    Ok(rows)
}

/// An action's index row, from its records.
pub fn index_row(records: &[Record]) -> IndexRow {
    let first = &records[0];
    let last = &records[records.len() - 1];
    let life = Lifecycle::fold(records).ok();
    let request = records
        .iter()
        .map(|r| &r.payload["request"])
        .find(|v| !v.is_null())
        .cloned()
        .unwrap_or_default();
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let (mut risk, mut lease_until, mut expires_at) = (None, None, None);
    for r in records {
        if let Some(x) = s(&r.payload["decision"]["risk"]) {
            risk = Some(x);
        }
        if let Some(x) = s(&r.payload["lease_until"]) {
            lease_until = Some(x);
        }
        if let Some(x) = s(&r.payload["hold"]["expires_at"]) {
            expires_at = Some(x);
        }
    }
    let upstream_status = match life.as_ref().and_then(|l| l.ending.as_ref()) {
        Some(super::lifecycle::Ending::Completed { response }) => response["status"].as_i64(),
        _ => None,
    };
    IndexRow {
        summary: ActionSummary {
            action_id: first.action_id.clone(),
            state: life
                .as_ref()
                .map_or("failed", |l| l.state.as_str())
                .to_string(),
            risk,
            route: s(&first.payload["route"]["name"]),
            method: s(&request["method"]),
            path: s(&request["path"]),
            agent: s(&first.payload["agent"]["id"]),
            upstream_status,
            created_at: first.time.clone(),
            updated_at: last.time.clone(),
        },
        last_seq: last.seq,
        expires_at,
        lease_until,
        forward_claimed: life.as_ref().is_some_and(|l| l.claim.is_some()),
    }
}

struct Writer {
    conn: Option<Box<dyn Backend>>,
    connect: Connect,
    /// `audit.index_lag`.
    index_lag: Duration,
    metrics: Arc<Metrics>,
    /// Enqueued records that failed to commit; retried first, in order.
    retry: Vec<Draft>,
    health: Arc<Health>,
    on_change: Arc<Mutex<Option<OnChange>>>,
}

const MAX_BATCH: usize = 1024;

/// How long enqueued result records wait for a write-ahead commit to share.
const LINGER: Duration = Duration::from_millis(2);

/// Takes whatever is queued, up to a batch.
fn drain(rx: &mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            // While failing, wake up on the backoff even with nothing queued,
            // to find out (by retrying or probing) when commits work again.
            let healthy = self.retry.is_empty() && !self.health.is_failing();
            let index_due_in = self.conn.as_ref().and_then(|c| c.index_due_in());
            let first = if let (true, None) = (healthy, index_due_in) {
                match rx.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            } else if let (true, Some(wait)) = (healthy, index_due_in) {
                // Idle with index rows kept back: write them when due.
                match rx.recv_timeout(wait) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.flush_index();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.flush_index();
                        return;
                    }
                }
            } else {
                match rx.recv_timeout(backoff) {
                    Ok(job) => Some(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // Last attempt for what is left before exiting.
                        let left = vec![Append::records(std::mem::take(&mut self.retry))];
                        if let Err(e) = self.write(&left) {
                            tracing::error!(error = %e, lost = left[0].drafts.len(), "record store closed with uncommitted result records");
                        }
                        return;
                    }
                }
            };
            let mut jobs: Vec<Job> = first.into_iter().collect();
            drain(&rx, &mut jobs);
            // Result records alone need not pay a commit of their own: give
            // a waiting caller's write-ahead record a moment to join them.
            if !jobs.is_empty() && jobs.iter().all(|j| j.reply.is_none()) {
                if let Ok(job) = rx.recv_timeout(LINGER) {
                    jobs.push(job);
                    drain(&rx, &mut jobs);
                }
            }
            // Answered last, once the connection is closed.
            let close = jobs
                .iter_mut()
                .find(|j| j.then == Then::Close)
                .map(|j| j.reply.take());
            let flush_index = jobs.iter().any(|j| j.then != Then::Reply);
            // The batch owns the records (moved, not copied: this runs for
            // every commit); each job remembers how many appends were its.
            let retrying = !self.retry.is_empty();
            let mut batch = Vec::with_capacity(jobs.len() + 1);
            if retrying {
                batch.push(Append::records(std::mem::take(&mut self.retry)));
            }
            let offset = batch.len();
            let mut counts = Vec::with_capacity(jobs.len());
            for job in &mut jobs {
                counts.push(job.appends.len());
                batch.append(&mut job.appends);
            }
            let writes = batch
                .iter()
                .any(|a| !a.drafts.is_empty() || a.message_id.is_some());
            if !writes && self.health.is_failing() {
                // Nothing to write (an idle wake-up or a flush): ask the
                // store with a probe whether commits work again.
                let probe = self.probe();
                self.health.record(probe.as_ref().map(|_| ()));
                if probe.is_err() {
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            match self.write(&batch) {
                Ok(outcomes) => {
                    // A read waits for the rows kept back. Failing to write
                    // them fails nothing: the batch is committed, and the
                    // read sees the index as it is.
                    if flush_index {
                        self.flush_index();
                    }
                    backoff = Duration::from_millis(50);
                    if writes {
                        self.health.record(Ok(()));
                    }
                    let mut at = offset;
                    for (job, n) in jobs.into_iter().zip(counts) {
                        if let Some(reply) = job.reply {
                            let _ = reply.send(Ok(outcomes[at..at + n].to_vec()));
                        }
                        at += n;
                    }
                    self.announce(&batch, &outcomes);
                    // The callers have their answers: now the index rows
                    // kept back, if their time has come.
                    let due = self.conn.as_ref().and_then(|c| c.index_due_in());
                    if due == Some(Duration::ZERO) {
                        self.flush_index();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "record store commit failed");
                    self.metrics.record_commit_failures.inc();
                    self.health.record(Err(&e));
                    let e = Arc::new(e);
                    let mut appends = batch.into_iter();
                    if retrying {
                        self.retry = appends.next().map(|a| a.drafts).unwrap_or_default();
                    }
                    for (job, n) in jobs.into_iter().zip(counts) {
                        let mine = appends.by_ref().take(n);
                        match job.reply {
                            // The caller refuses its request: nothing was forwarded.
                            Some(reply) => {
                                mine.for_each(drop);
                                let _ = reply.send(Err(e.clone()));
                            }
                            None => self.retry.extend(mine.flat_map(|a| a.drafts)),
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            if let Some(reply) = close {
                // Jobs sent after the close was taken find no writer: each
                // caller is told, and records enqueued without one count
                // as lost.
                let mut lost = self.retry.len();
                while let Ok(late) = rx.try_recv() {
                    match late.reply {
                        Some(r) => {
                            let _ = r.send(Err(Arc::new(StoreError::Closed)));
                        }
                        None => lost += late.appends.iter().map(|a| a.drafts.len()).sum::<usize>(),
                    }
                }
                let out = if lost == 0 {
                    Ok(Vec::new())
                } else {
                    tracing::error!(lost, "record store closed with uncommitted result records");
                    Err(Arc::new(StoreError::Closed))
                };
                self.flush_index();
                self.conn = None;
                if let Some(reply) = reply {
                    let _ = reply.send(out);
                }
                return;
            }
        }
    }

    /// Writes the index rows kept back: when idle, when their time has
    /// come, before a read, and when closing. On a failure the connection
    /// is replaced at once: opening one rebuilds the rows from the records,
    /// so the reads that follow do not see a stale index until some later
    /// commit reconnects.
    fn flush_index(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.flush_index() {
            tracing::warn!(error = %e, "index rows kept back could not be written yet");
            self.conn = None;
            match open_writer(&self.connect, self.index_lag) {
                Ok(fresh) => self.conn = Some(fresh),
                Err(e) => {
                    tracing::warn!(error = %e, "the record store could not be reopened to catch its index up")
                }
            }
        }
    }

    /// One transaction for the whole batch, reconnecting if the last
    /// connection broke.
    fn write(&mut self, batch: &[Append]) -> Result<Vec<Appended>, StoreError> {
        if batch
            .iter()
            .all(|a| a.drafts.is_empty() && a.message_id.is_none())
        {
            return Ok(batch.iter().map(|_| Appended::Committed(0)).collect());
        }
        let started = Instant::now();
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self
                .conn
                .insert(open_writer(&self.connect, self.index_lag)?),
        };
        let out = conn.append(batch);
        if out.is_err() {
            // It may be the connection: use a fresh one next time.
            self.conn = None;
        } else {
            self.metrics
                .record_commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        out
    }

    /// A scratch write on the write connection.
    fn probe(&mut self) -> Result<(), StoreError> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self
                .conn
                .insert(open_writer(&self.connect, self.index_lag)?),
        };
        let out = conn.probe();
        if out.is_err() {
            self.conn = None;
        }
        out
    }

    /// Tells the waiting side which actions changed.
    fn announce(&self, batch: &[Append], outcomes: &[Appended]) {
        let hook = self
            .on_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(hook) = hook else { return };
        let mut seen = BTreeSet::new();
        for (a, o) in batch.iter().zip(outcomes) {
            if matches!(o, Appended::Committed(_)) {
                for d in &a.drafts {
                    if seen.insert(d.action_id.as_str()) {
                        hook(&d.action_id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{new_action_id, Kind};
    use crate::config::{ResultDurability, StoreUrl};

    fn sqlite(dir: &std::path::Path) -> AuditConfig {
        AuditConfig {
            store: StoreUrl::Sqlite(dir.join("audit.db")),
            busy_timeout: Duration::from_secs(1),
            password: None,
            ca_file: None,
            result_durability: ResultDurability::AfterResponse,
            lease: Duration::from_secs(30),
            index_lag: Duration::from_millis(100),
            checkpoint: None,
        }
    }

    #[tokio::test]
    async fn a_closed_store_commits_and_reads_nothing_more_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&sqlite(dir.path()), Arc::default()).unwrap();
        let id = new_action_id();
        let draft = || Draft::new(&id, Kind::Decided, serde_json::json!({}), None);
        store.commit(vec![draft()]).await.unwrap();
        assert_eq!(store.action_records(&id).await.unwrap().len(), 1);
        store.close().await.unwrap();
        assert!(!dir.path().join("audit.db-wal").exists());

        assert!(matches!(
            store.commit(vec![draft()]).await.unwrap_err().as_ref(),
            StoreError::Closed
        ));
        // A read neither opens a connection on the closed file nor answers.
        assert!(matches!(
            store.action_records(&id).await,
            Err(StoreError::Closed)
        ));
        assert!(!dir.path().join("audit.db-wal").exists());
    }
}
