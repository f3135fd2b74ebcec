//! The fleet store's tables and their versioned migrations. Every process
//! migrates at start; an advisory lock held for the migrating transaction
//! makes simultaneous starts safe, and a schema newer than this build is
//! refused rather than written with old assumptions.

use postgres::Client;

use crate::audit::record::GENESIS;
use crate::audit::store::StoreError;

/// The advisory lock key migrations hold ("csschema" in ASCII).
const MIGRATION_LOCK: i64 = 0x6373_7363_6865_6d61;

/// Migration `n` (from 1) is `MIGRATIONS[n - 1]`; never edit a released one,
/// add the next.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The newest schema version this build knows.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Text columns sort bytewise (`COLLATE "C"`), as in SQLite: RFC 3339 times
/// then order by text exactly as in time, whatever the database's locale.
const V1: &str = r#"
CREATE TABLE records (
    seq BIGINT PRIMARY KEY,
    time TEXT COLLATE "C" NOT NULL,
    action_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT COLLATE "C" NOT NULL,
    hash TEXT COLLATE "C" NOT NULL
);
CREATE INDEX records_action ON records (action_id, seq);

-- The chain's newest record. Every appender, in every process, locks this
-- one row first: that is what keeps one chain without forks or gaps.
CREATE TABLE chain_head (
    id INT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT COLLATE "C" NOT NULL
);
INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, '{GENESIS}');

-- Derived from the records, to find actions quickly; the records are the truth.
CREATE TABLE actions (
    action_id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT COLLATE "C" NOT NULL,
    risk TEXT COLLATE "C",
    route TEXT,
    method TEXT,
    path TEXT,
    agent TEXT,
    upstream_status BIGINT,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL,
    last_seq BIGINT NOT NULL,
    expires_at TEXT COLLATE "C",
    lease_until TEXT COLLATE "C",
    forward_claimed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX actions_created ON actions (created_at);
CREATE INDEX actions_state_created ON actions (state, created_at);
CREATE INDEX actions_risk_created ON actions (risk, created_at);
CREATE INDEX actions_last_seq ON actions (last_seq);
CREATE INDEX actions_due_expiry ON actions (expires_at) WHERE state = 'pending';
CREATE INDEX actions_due_unclaimed ON actions (updated_at)
    WHERE state = 'approved' AND NOT forward_claimed;
CREATE INDEX actions_due_lease ON actions (lease_until)
    WHERE state IN ('allowed', 'approved') AND lease_until IS NOT NULL;

-- Signed message ids already accepted (replay protection for the fleet).
CREATE TABLE seen_messages (
    message_id TEXT COLLATE "C" PRIMARY KEY,
    seen_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX seen_messages_age ON seen_messages (seen_at);

-- One row a failing process writes to learn that commits work again,
-- without touching the record.
CREATE TABLE countersign_probe (
    id INT PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);

-- The record is append-only: the database itself refuses to change or
-- remove a record (an owner can still drop this trigger; `audit verify`
-- and signed checkpoints catch what it does not stop).
CREATE FUNCTION countersign_records_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'countersign records are append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION countersign_records_append_only();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON records
    FOR EACH STATEMENT EXECUTE FUNCTION countersign_records_append_only();
"#;

/// Signed checkpoints of the record (one per tree size; every process of a
/// fleet may sign the same size, the first stored is kept).
const V2: &str = r#"
CREATE TABLE checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash TEXT COLLATE "C" NOT NULL,
    note TEXT NOT NULL,
    time TEXT COLLATE "C" NOT NULL
);
"#;

/// Brings the schema to [`VERSION`]; returns the version now in place.
pub fn migrate(client: &mut Client) -> Result<i64, StoreError> {
    let mut tx = client.transaction()?;
    // Held until commit: a second process starting now waits here, then
    // finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        r#"CREATE TABLE IF NOT EXISTS countersign_schema (
               version BIGINT PRIMARY KEY,
               applied_at TEXT COLLATE "C" NOT NULL
           )"#,
    )?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM countersign_schema",
            &[],
        )?
        .get(0);
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(&sql.replace("{GENESIS}", GENESIS))?;
        tx.execute(
            "INSERT INTO countersign_schema (version, applied_at) VALUES ($1, $2)",
            &[&version, &super::now()],
        )?;
        tracing::info!(version, "migrated the PostgreSQL record store");
    }
    tx.commit()?;
    Ok(VERSION)
}
