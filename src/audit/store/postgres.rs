//! The fleet record store: one PostgreSQL database shared by every
//! countersign process, so a fleet keeps ONE record, one hash chain and one
//! review queue. Appenders in all processes serialise on one locked row
//! (the chain head); each append notifies the other processes, which wake
//! their waiting agents (see [`listen`]).
//!
//! Layout: `dsn` takes the connection string apart, `tls` builds the
//! rustls connector per `sslmode`, `schema` migrates, `statements` holds
//! the SQL, `batch` turns a batch into rows, `listen` carries
//! notifications; this file connects and implements [`Backend`].

mod batch;
mod dsn;
mod listen;
mod schema;
mod statements;
mod tls;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::backend::{ActionSummary, Append, Appended, Backend};
use super::backend::{Due, IndexRow, Links, ListFilter, StoredCheckpoint};
use super::StoreError;
use crate::audit::record::{canonical_json, chain_hash, Record};
use batch::{index, RecordRows, Step, Touched};
use statements::{Statements, SUMMARY_COLUMNS};

pub use listen::{listen, listen_with};
pub use schema::VERSION as SCHEMA_VERSION;

/// The channel every append notifies with the action id.
pub const CHANNEL: &str = "countersign_actions";

/// How long one statement may run before the server cancels it.
const STATEMENT_TIMEOUT: &str = "30s";
/// A session idle inside a transaction this long has lost its client; the
/// server ends it so it stops holding the chain head from the whole fleet.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "15s";

/// Checks an `audit.store` PostgreSQL connection string: it must parse,
/// name a host and a user, carry a known `sslmode`, and hold no password
/// (that comes from `audit.password_env` / `audit.password_file`). The
/// error says what is wrong without repeating the string.
pub fn check_dsn(dsn: &str) -> Result<(), String> {
    dsn::parse(dsn).map(|_| ())
}

/// Where a connection's password comes from. It is asked at every
/// connection, so a rotated secret (a re-written password file) is used by
/// the next reconnection without a restart.
pub type PasswordSource = Arc<dyn Fn() -> Result<Option<String>, String> + Send + Sync>;

/// A fixed password (or none), as a [`PasswordSource`].
pub fn fixed_password(password: Option<&str>) -> PasswordSource {
    let password = password.map(str::to_string);
    Arc::new(move || Ok(password.clone()))
}

/// Where and how to connect, kept to reconnect. The password is asked for
/// at each connection and never printed.
struct Target {
    config: postgres::Config,
    tls: MakeRustlsConnect,
    password: PasswordSource,
    /// The database as it may be logged: user, hosts, port, name.
    what: String,
}

impl Target {
    fn new(
        dsn: &str,
        password: PasswordSource,
        ca_file: Option<&Path>,
    ) -> Result<Target, StoreError> {
        let parsed = dsn::parse(dsn).map_err(|why| StoreError::Open {
            what: "the PostgreSQL database in audit.store".into(),
            why,
        })?;
        let mut config = parsed.config;
        let what = describe_target(&config);
        let (mut mode, tls) =
            tls::connector(parsed.ssl_mode, ca_file).map_err(|why| StoreError::Open {
                what: what.clone(),
                why,
            })?;
        // PostgreSQL has no TLS over Unix sockets; libpq ignores sslmode there.
        let local_only = config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, postgres::config::Host::Tcp(_)));
        if local_only {
            mode = postgres::config::SslMode::Disable;
        }
        config.ssl_mode(mode);
        config.application_name("countersign");
        // Client-side limits the server cannot enforce: a dead host or a cut
        // network must end in an error, not a writer blocked forever.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(15));
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(5));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        Ok(Target {
            config,
            tls,
            password,
            what,
        })
    }

    /// A new session with the settings every store session needs.
    fn connect(&self) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        match (self.password)() {
            Ok(Some(p)) => {
                config.password(p);
            }
            Ok(None) => {}
            Err(why) => {
                return Err(StoreError::Open {
                    what: self.what.clone(),
                    why: format!("audit.password: {why}"),
                })
            }
        }
        let mut client = config
            .connect(self.tls.clone())
            .map_err(|e| StoreError::Open {
                what: self.what.clone(),
                why: explain(&e),
            })?;
        client.batch_execute(&format!(
            "SET synchronous_commit = on; \
             SET application_name = 'countersign'; \
             SET default_transaction_isolation = 'read committed'; \
             SET statement_timeout = '{STATEMENT_TIMEOUT}'; \
             SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'"
        ))?;
        Ok(client)
    }
}

/// The database a connection string names, as it may be logged: user,
/// hosts, port and database, never a password (nor the string itself, when
/// it does not parse).
pub fn describe(dsn: &str) -> String {
    match dsn::parse(dsn) {
        Ok(parsed) => describe_target(&parsed.config),
        Err(_) => "the PostgreSQL database in audit.store".into(),
    }
}

fn describe_target(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or_default();
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{}:{port}/{db}", hosts.join(","))
}

/// What went wrong, with the server's SQLSTATE code and message when it
/// answered, and the causes when it did not.
pub(crate) fn explain(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::Postgres(explain(&e))
    }
}

fn now() -> String {
    super::now_rfc3339()
}

/// One connection to the fleet store. Reconnects by itself when the
/// connection is lost; statements are prepared once per connection.
pub struct Postgres {
    client: Session,
    target: Target,
    /// This session's backend (pid, start), to end it if it outlives a
    /// lost connection and still holds locks.
    session: Option<(i32, String)>,
    statements: Option<Statements>,
    lists: HashMap<u8, Statement>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("database", &self.target.what)
            .finish_non_exhaustive()
    }
}

/// Connects to the store named by `dsn` (which holds no password; it comes
/// from `password`), trusting `ca_file` for TLS when given. Does not
/// migrate: call [`Postgres::migrate`].
pub fn connect(
    dsn: &str,
    password: Option<&str>,
    ca_file: Option<&Path>,
) -> Result<Postgres, StoreError> {
    connect_with(dsn, fixed_password(password), ca_file)
}

/// [`connect`], asking `password` at this and every later reconnection (so
/// a rotated password file is picked up).
pub fn connect_with(
    dsn: &str,
    password: PasswordSource,
    ca_file: Option<&Path>,
) -> Result<Postgres, StoreError> {
    let target = Target::new(dsn, password, ca_file)?;
    let mut client = target.connect()?;
    let session = session_of(&mut client)?;
    Ok(Postgres {
        client: Session(Some(client)),
        target,
        session: Some(session),
        statements: None,
        lists: HashMap::new(),
    })
}

fn session_of(client: &mut Client) -> Result<(i32, String), StoreError> {
    let row = client.query_one(
        "SELECT pg_backend_pid(), backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        &[],
    )?;
    Ok((row.get(0), row.get(1)))
}

/// A client that may be dropped anywhere. The synchronous client runs its
/// own small runtime to close the connection, which panics on a thread
/// that drives async tasks; there it is closed on a thread of its own.
struct Session(Option<Client>);

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a session holds its client until dropped")
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a session holds its client until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("countersign-pg-close".into())
                    .spawn(move || drop(client));
            }
        }
    }
}

/// Why one attempt at an append ended.
enum Attempt {
    /// The transaction could not even begin: nothing was sent.
    NotBegun(postgres::Error),
    /// It failed before the commit: the server rolls it back.
    Failed(StoreError),
    /// The connection broke during COMMIT: it may or may not have landed.
    CommitLost {
        error: postgres::Error,
        /// The last record's seq and hash, to look for after reconnecting.
        last: (i64, String),
        outcomes: Vec<Appended>,
    },
}

impl From<postgres::Error> for Attempt {
    fn from(e: postgres::Error) -> Attempt {
        Attempt::Failed(e.into())
    }
}

impl Postgres {
    /// Brings the schema up to date (safe when several processes start at
    /// once) and returns its version; refuses a schema newer than this
    /// build with [`StoreError::SchemaTooNew`].
    pub fn migrate(&mut self) -> Result<i64, StoreError> {
        self.ensure_open()?;
        let version = schema::migrate(&mut self.client)?;
        self.statements = None;
        Ok(version)
    }

    /// The database as it may be logged (no password).
    pub fn describe(&self) -> &str {
        &self.target.what
    }

    fn ensure_open(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.reconnect()?;
        }
        Ok(())
    }

    /// Replaces a lost connection. The old session may live on at the
    /// server (a cut network) holding the chain head; it is ended first.
    fn reconnect(&mut self) -> Result<(), StoreError> {
        let mut client = self.target.connect()?;
        if let Some((pid, start)) = self.session.take() {
            let gone = |c: &mut Client| -> Result<bool, postgres::Error> {
                Ok(c.query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
                    &[&pid, &start],
                )?
                .is_none())
            };
            if !gone(&mut client)? {
                client.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
                    &[&pid, &start],
                )?;
                let deadline = Instant::now() + Duration::from_secs(5);
                while !gone(&mut client)? && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.session = Some(session_of(&mut client)?);
        self.client = Session(Some(client));
        self.statements = None;
        self.lists.clear();
        tracing::info!(store = %self.target.what, "reconnected to the PostgreSQL record store");
        Ok(())
    }

    fn statements(&mut self) -> Result<Statements, StoreError> {
        if let Some(s) = &self.statements {
            return Ok(s.clone());
        }
        let s = Statements::prepare(&mut self.client)?;
        self.statements = Some(s.clone());
        Ok(s)
    }

    /// Runs a read (or an idempotent write); once more on a new connection
    /// when the connection turns out to be lost.
    fn idempotent<T>(
        &mut self,
        f: impl Fn(&mut Client, &Statements) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.ensure_open()?;
        let first = match self.statements() {
            Ok(st) => f(&mut self.client, &st).map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match first {
            Err(e) if self.client.is_closed() => {
                tracing::warn!(error = %e, "lost the PostgreSQL connection; retrying on a new one");
                self.reconnect()?;
                let st = self.statements()?;
                Ok(f(&mut self.client, &st)?)
            }
            other => other,
        }
    }

    fn try_append(&mut self, st: &Statements, batch: &[Append]) -> Result<Vec<Appended>, Attempt> {
        let mut tx = self.client.transaction().map_err(Attempt::NotBegun)?;
        // The fleet-wide lock: held to commit, so the head read here stays
        // the head while this batch is chained after it.
        let head = tx.query_one(&st.lock_head, &[])?;
        let (mut seq, mut prev): (i64, String) = (head.get(0), head.get(1));

        let conditional: Vec<&str> = batch
            .iter()
            .filter_map(|a| a.expect.as_ref().map(|(id, _)| id.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Each action's newest seq, from the records (the truth, even when
        // the index lags); then kept current through the batch.
        let mut newest: HashMap<String, i64> = HashMap::new();
        if !conditional.is_empty() {
            for row in tx.query(&st.newest_seqs, &[&conditional])? {
                newest.insert(row.get(0), row.get(1));
            }
        }

        let mut rows = RecordRows::default();
        let mut touched: Vec<Touched<'_>> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut remembered = false;
        for append in batch {
            // A signed message counts once, fleet-wide: its id is taken
            // first, even when the append then loses its claim.
            if let Some(message_id) = &append.message_id {
                if tx.execute(&st.remember_message, &[message_id, &now()])? == 0 {
                    outcomes.push(Appended::Replayed);
                    continue;
                }
                remembered = true;
            }
            if let Some((id, want)) = &append.expect {
                if newest.get(id).copied().unwrap_or(0) != *want {
                    outcomes.push(Appended::Conflict);
                    continue;
                }
            }
            if append.drafts.is_empty() {
                outcomes.push(Appended::Committed(0));
                continue;
            }
            for d in &append.drafts {
                seq += 1;
                let time = now();
                let kind = d.kind.as_str();
                let payload = canonical_json(&d.payload);
                let hash = chain_hash(seq, &time, &d.action_id, kind, &prev, &payload);
                let i = *position.entry(d.action_id.as_str()).or_insert_with(|| {
                    touched.push(Touched {
                        action_id: &d.action_id,
                        steps: Vec::new(),
                    });
                    touched.len() - 1
                });
                touched[i].steps.push(Step {
                    seq,
                    time: time.clone(),
                    index: &d.index,
                });
                newest.insert(d.action_id.clone(), seq);
                rows.push(seq, time, &d.action_id, kind, payload, prev, hash.clone());
                prev = hash;
            }
            outcomes.push(Appended::Committed(seq));
        }
        if remembered {
            // Forget ids whose signatures can no longer verify anyway.
            let horizon = super::rfc3339(std::time::SystemTime::now() - super::REPLAY_WINDOW);
            tx.execute(&st.forget_messages, &[&horizon])?;
        }
        if rows.seq.is_empty() && !remembered {
            // Nothing to write (conflicts, replays, empty): nothing to commit.
            drop(tx);
            return Ok(outcomes);
        }
        if rows.seq.is_empty() {
            return match tx.commit() {
                Ok(()) => Ok(outcomes),
                Err(e) => Err(Attempt::Failed(e.into())),
            };
        }

        tx.execute(
            &st.insert_records,
            &[
                &rows.seq,
                &rows.time,
                &rows.action_id,
                &rows.kind,
                &rows.payload,
                &rows.prev_hash,
                &rows.hash,
            ],
        )?;
        index(&mut tx, st, &touched)?;
        tx.execute(&st.set_head, &[&seq, &prev])?;
        let ids: Vec<&str> = touched.iter().map(|t| t.action_id).collect();
        // Delivered by the server at commit, to every listening process.
        tx.execute(&st.notify, &[&ids])?;
        match tx.commit() {
            Ok(()) => Ok(outcomes),
            Err(error) if self.outcome_unknown(&error) => Err(Attempt::CommitLost {
                error,
                last: (seq, prev),
                outcomes,
            }),
            Err(e) => Err(Attempt::Failed(e.into())),
        }
    }

    /// Whether a failed COMMIT may have committed all the same: only a
    /// plain ERROR answer proves the rollback. A lost connection, or a
    /// FATAL (a session ended by the server, perhaps right after the commit
    /// became durable), leaves it open.
    fn outcome_unknown(&self, e: &postgres::Error) -> bool {
        self.client.is_closed()
            || e.as_db_error().and_then(|db| db.parsed_severity())
                != Some(postgres::error::Severity::Error)
    }

    /// After the connection broke during COMMIT: reconnect (ending the old
    /// session, so its transaction is settled either way) and look for the
    /// batch's last record. Found with the same hash: it committed.
    fn settle_lost_commit(
        &mut self,
        error: postgres::Error,
        (seq, hash): (i64, String),
    ) -> Result<(), StoreError> {
        let mut reached = Err(StoreError::Closed);
        for wait in [0, 200, 1000, 3000] {
            std::thread::sleep(Duration::from_millis(wait));
            reached = self.reconnect();
            if reached.is_ok() {
                break;
            }
        }
        if let Err(e) = reached {
            return Err(StoreError::Postgres(format!(
                "the connection was lost while committing ({}) and the database cannot be reached \
                 to tell whether the records were written ({e})",
                explain(&error)
            )));
        }
        let found: Option<String> = self
            .client
            .query_opt("SELECT hash FROM records WHERE seq = $1", &[&seq])?
            .map(|r| r.get(0));
        if found.as_deref() == Some(hash.as_str()) {
            tracing::warn!(
                seq,
                "the connection was lost while committing; the records were written"
            );
            Ok(())
        } else {
            Err(error.into())
        }
    }
}

fn to_record(r: &postgres::Row) -> Record {
    let payload: String = r.get(4);
    Record {
        seq: r.get(0),
        time: r.get(1),
        action_id: r.get(2),
        kind: r.get(3),
        // A payload that is not JSON was not written by countersign; keep
        // it as text so verification reports the record, not a crash.
        payload: serde_json::from_str(&payload)
            .unwrap_or(serde_json::Value::String(payload.clone())),
        payload_text: Some(payload),
        prev_hash: r.get(5),
        hash: r.get(6),
    }
}

/// Rows per statement when rewriting the index.
const PUT_CHUNK: usize = 1000;

fn to_checkpoint(r: &postgres::Row) -> StoredCheckpoint {
    StoredCheckpoint {
        tree_size: r.get(0),
        root_hash: r.get(1),
        note: r.get(2),
        time: r.get(3),
    }
}

impl Backend for Postgres {
    fn append(&mut self, batch: &[Append]) -> Result<Vec<Appended>, StoreError> {
        self.ensure_open()?;
        let mut retried = false;
        loop {
            let st = match self.statements() {
                Ok(st) => st,
                Err(e) if !retried && self.client.is_closed() => {
                    tracing::warn!(error = %e, "lost the PostgreSQL connection; appending on a new one");
                    self.reconnect()?;
                    retried = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            return match self.try_append(&st, batch) {
                Ok(outcomes) => Ok(outcomes),
                // Nothing was sent: safe to try once more on a new connection.
                Err(Attempt::NotBegun(e)) if !retried && self.client.is_closed() => {
                    tracing::warn!(error = %explain(&e), "lost the PostgreSQL connection; appending on a new one");
                    self.reconnect()?;
                    retried = true;
                    continue;
                }
                Err(Attempt::NotBegun(e)) => Err(e.into()),
                Err(Attempt::Failed(e)) => Err(e),
                Err(Attempt::CommitLost {
                    error,
                    last,
                    outcomes,
                }) => self.settle_lost_commit(error, last).map(|()| outcomes),
            };
        }
    }

    fn records_of(&mut self, action_id: &str) -> Result<Vec<Record>, StoreError> {
        self.idempotent(|c, st| {
            Ok(c.query(&st.records_of, &[&action_id])?
                .iter()
                .map(to_record)
                .collect())
        })
    }

    fn links_of(&mut self, action_id: &str) -> Result<Vec<Links>, StoreError> {
        self.idempotent(|c, st| {
            Ok(c.query(&st.links_of, &[&action_id])?
                .iter()
                .map(|r| Links {
                    seq: r.get(0),
                    before_hash: r.get(1),
                    after_prev_hash: r.get(2),
                })
                .collect())
        })
    }

    fn scan(&mut self, after: i64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.idempotent(|c, st| {
            Ok(c.query(&st.scan, &[&after, &limit])?
                .iter()
                .map(to_record)
                .collect())
        })
    }

    fn list(&mut self, filter: &ListFilter) -> Result<Vec<ActionSummary>, StoreError> {
        // Only the filters given are in the statement, so each shape gets a
        // plan that uses its index.
        let shape = u8::from(filter.state.is_some())
            | u8::from(filter.risk.is_some()) << 1
            | u8::from(filter.since.is_some()) << 2
            | u8::from(filter.limit > 0) << 3;
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        self.ensure_open()?;
        let run = |this: &mut Postgres| -> Result<Vec<ActionSummary>, StoreError> {
            let stmt = match this.lists.get(&shape) {
                Some(s) => s.clone(),
                None => {
                    let s = this.client.prepare(&list_sql(shape))?;
                    this.lists.insert(shape, s.clone());
                    s
                }
            };
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
            for p in [&filter.state, &filter.risk, &filter.since]
                .into_iter()
                .flatten()
            {
                params.push(p);
            }
            if filter.limit > 0 {
                params.push(&limit);
            }
            Ok(this
                .client
                .query(&stmt, &params)?
                .iter()
                .map(|r| ActionSummary {
                    action_id: r.get(0),
                    state: r.get(1),
                    risk: r.get(2),
                    route: r.get(3),
                    method: r.get(4),
                    path: r.get(5),
                    agent: r.get(6),
                    upstream_status: r.get(7),
                    created_at: r.get(8),
                    updated_at: r.get(9),
                })
                .collect())
        };
        match run(self) {
            Err(e) if self.client.is_closed() => {
                tracing::warn!(error = %e, "lost the PostgreSQL connection; retrying on a new one");
                self.reconnect()?;
                run(self)
            }
            other => other,
        }
    }

    fn due(&mut self, now: &str, grace_before: &str) -> Result<Due, StoreError> {
        self.idempotent(|c, st| {
            let mut due = Due::default();
            for r in c.query(&st.due, &[&now, &grace_before])? {
                let (which, id): (&str, String) = (r.get(0), r.get(1));
                match which {
                    "expired" => due.expired.push(id),
                    "unclaimed" => due.unclaimed.push(id),
                    _ => due.lapsed.push(id),
                }
            }
            Ok(due)
        })
    }

    fn heads(&mut self) -> Result<(i64, i64), StoreError> {
        self.idempotent(|c, st| {
            let r = c.query_one(&st.heads, &[])?;
            Ok((r.get(0), r.get(1)))
        })
    }

    fn leaf_hashes(&mut self, after: i64, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.idempotent(|c, _| {
            Ok(c.query(
                "SELECT seq, hash FROM records WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.idempotent(|c, _| {
            c.execute(
                "INSERT INTO checkpoints (tree_size, root_hash, note, time) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tree_size) DO NOTHING",
                &[&cp.tree_size, &cp.root_hash, &cp.note, &cp.time],
            )
            .map(|_| ())
        })
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.idempotent(|c, _| {
            Ok(c.query_opt(
                "SELECT tree_size, root_hash, note, time FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                &[],
            )?
            .map(|r| to_checkpoint(&r)))
        })
    }

    fn checkpoints(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.idempotent(|c, _| {
            Ok(c.query(
                "SELECT tree_size, root_hash, note, time FROM checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2",
                &[&after, &limit],
            )?
            .iter()
            .map(to_checkpoint)
            .collect())
        })
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        // A real committed write (WAL flushed, refused by a read-only
        // standby or a full disk), on a table of its own and outside the
        // chain-head lock, so it never delays an append.
        let at = now();
        self.idempotent(|c, st| c.execute(&st.probe, &[&at]).map(|_| ()))
    }

    fn put_index(&mut self, rows: &[IndexRow]) -> Result<(), StoreError> {
        // One row per action (the last given wins): a statement may not
        // update the same row twice.
        let mut last: HashMap<&str, &IndexRow> = HashMap::new();
        for r in rows {
            last.insert(&r.summary.action_id, r);
        }
        let rows: Vec<&IndexRow> = last.into_values().collect();
        self.idempotent(|c, st| {
            let mut tx = c.transaction()?;
            for chunk in rows.chunks(PUT_CHUNK) {
                let col = |f: fn(&IndexRow) -> Option<&str>| -> Vec<Option<&str>> {
                    chunk.iter().map(|r| f(r)).collect()
                };
                let ids: Vec<&str> = chunk.iter().map(|r| r.summary.action_id.as_str()).collect();
                let states: Vec<&str> = chunk.iter().map(|r| r.summary.state.as_str()).collect();
                let created: Vec<&str> = chunk
                    .iter()
                    .map(|r| r.summary.created_at.as_str())
                    .collect();
                let updated: Vec<&str> = chunk
                    .iter()
                    .map(|r| r.summary.updated_at.as_str())
                    .collect();
                let status: Vec<Option<i64>> =
                    chunk.iter().map(|r| r.summary.upstream_status).collect();
                let last_seq: Vec<i64> = chunk.iter().map(|r| r.last_seq).collect();
                let claimed: Vec<bool> = chunk.iter().map(|r| r.forward_claimed).collect();
                tx.execute(
                    &st.put_index,
                    &[
                        &ids,
                        &states,
                        &col(|r| r.summary.risk.as_deref()),
                        &col(|r| r.summary.route.as_deref()),
                        &col(|r| r.summary.method.as_deref()),
                        &col(|r| r.summary.path.as_deref()),
                        &col(|r| r.summary.agent.as_deref()),
                        &status,
                        &created,
                        &updated,
                        &last_seq,
                        &col(|r| r.expires_at.as_deref()),
                        &col(|r| r.lease_until.as_deref()),
                        &claimed,
                    ],
                )?;
            }
            tx.commit()
        })
    }
}

/// The listing statement for one combination of filters (bit 0: state,
/// 1: risk, 2: since, 3: limit), with its parameters numbered in that order.
fn list_sql(shape: u8) -> String {
    let mut conditions = Vec::new();
    let mut n = 0;
    for (bit, cond) in [(0, "state = "), (1, "risk = "), (2, "created_at >= ")] {
        if shape & (1 << bit) != 0 {
            n += 1;
            conditions.push(format!("{cond}${n}"));
        }
    }
    let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM actions");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY created_at DESC");
    if shape & (1 << 3) != 0 {
        sql.push_str(&format!(" LIMIT ${}", n + 1));
    }
    sql
}
