//! What only the PostgreSQL store does: connection strings without secrets,
//! TLS per `sslmode`, migrations shared by processes starting together,
//! an append-only table, notifications across processes, surviving a
//! database restart and a commit whose answer was lost, and what an append
//! costs.

use std::sync::mpsc;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use countersign::audit::record::{new_action_id, Draft, Kind, State, Summary, GENESIS};
use countersign::audit::store::backend::{Append, Appended, Backend};
use countersign::audit::store::postgres::{self, Postgres, SCHEMA_VERSION};
use countersign::audit::store::StoreError;
use serde_json::json;

use crate::pg;
use crate::store_backends::walk_chain;
use crate::support::*;

fn open(dsn: &str, password: &str) -> Postgres {
    let mut b = postgres::connect(dsn, Some(password), None)
        .unwrap_or_else(|e| panic!("connect to {dsn}: {e}"));
    b.migrate().expect("migrate");
    b
}

fn decided(id: &str) -> Draft {
    let mut d = Draft::new(
        id,
        Kind::Decided,
        json!({"decision": {"action": "hold", "risk": "high"}}),
        Some(State::Pending),
    );
    d.index.summary = Some(Summary {
        route: "payments".into(),
        method: "POST".into(),
        path: "/v1/payouts".into(),
        agent: Some("ap-agent-7".into()),
    });
    d
}

fn one(drafts: Vec<Draft>) -> Vec<Append> {
    vec![Append::records(drafts)]
}

fn db_name(dsn: &str) -> String {
    let path = dsn.rsplit('/').next().expect("a database in the DSN");
    path.split('?').next().expect("name").to_string()
}

#[test]
fn config_refuses_a_password_in_the_store_url() {
    for (store, complaint) in [
        (
            "postgres://countersign:s3cr3t-pw@db.internal:5432/audit",
            "password",
        ),
        (
            "postgres://countersign@db.internal/audit?password=s3cr3t-pw",
            "password",
        ),
        (
            "postgres://countersign@db.internal/audit?sslmode=s3cr3t-pw",
            "sslmode",
        ),
    ] {
        let d = Deployment::new("http://127.0.0.1:9", ALLOW_ALL, "");
        let yaml = std::fs::read_to_string(d.config_path())
            .expect("config")
            .replace(
                "audit: { store: \"sqlite://audit.db\", busy_timeout: 200ms }",
                &format!("audit: {{ store: \"{store}\", password_env: CS_TEST_PG_PASSWORD }}"),
            );
        std::fs::write(d.config_path(), yaml).expect("write config");
        let out = countersign(&[
            "check",
            "--config",
            d.config_path().to_str().expect("utf-8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{store} was accepted: {stderr}");
        assert!(stderr.contains("audit.store"), "{stderr}");
        assert!(stderr.contains(complaint), "{stderr}");
        if complaint == "password" {
            assert!(
                !stderr.contains("s3cr3t-pw"),
                "the password was repeated: {stderr}"
            );
        }
    }
}

#[test]
fn a_wrong_password_is_refused_and_never_repeated() {
    let dsn = pg::database_url();
    let err = postgres::connect(&dsn, Some("wrong-pass-8d1f"), None)
        .expect_err("a wrong password was accepted");
    let msg = err.to_string();
    assert!(
        msg.contains("28P01"),
        "the server's reason is missing: {msg}"
    );
    assert!(
        !msg.contains("wrong-pass-8d1f"),
        "the password was repeated: {msg}"
    );
    // A DSN with a password is refused before any connection is tried.
    let err = postgres::connect(
        &dsn.replace("@", ":inline-pass-3c@"),
        Some(pg::password()),
        None,
    )
    .expect_err("an inline password was accepted");
    assert!(!err.to_string().contains("inline-pass-3c"), "{err}");
}

#[test]
fn migrations_run_once_when_many_processes_start_together() {
    let dsn = pg::fresh_database();
    let barrier = Barrier::new(6);
    let versions: Vec<i64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                let (dsn, barrier) = (&dsn, &barrier);
                s.spawn(move || {
                    let mut b =
                        postgres::connect(dsn, Some(pg::password()), None).expect("connect");
                    barrier.wait();
                    b.migrate().expect("migrate")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(
        versions.iter().all(|v| *v == SCHEMA_VERSION),
        "{versions:?}"
    );
    let mut admin = pg::shared().admin_client(&db_name(&dsn));
    let applied: i64 = admin
        .query_one("SELECT count(*) FROM countersign_schema", &[])
        .expect("schema table")
        .get(0);
    assert_eq!(applied, SCHEMA_VERSION);
    let head = admin
        .query_one("SELECT seq, hash FROM chain_head", &[])
        .expect("chain head");
    assert_eq!(
        (head.get::<_, i64>(0), head.get::<_, String>(1)),
        (0, GENESIS.to_string())
    );
}

#[test]
fn a_schema_newer_than_this_build_is_refused() {
    let dsn = pg::fresh_database();
    open(&dsn, pg::password());
    pg::shared()
        .admin_client(&db_name(&dsn))
        .batch_execute("INSERT INTO countersign_schema VALUES (999, 'the future')")
        .expect("insert");
    let mut b = postgres::connect(&dsn, Some(pg::password()), None).expect("connect");
    match b.migrate() {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (999, SCHEMA_VERSION))
        }
        other => panic!("a newer schema was not refused: {other:?}"),
    }
}

#[test]
fn records_cannot_be_changed_or_removed_in_place() {
    let dsn = pg::fresh_database();
    let mut b = open(&dsn, pg::password());
    let id = new_action_id();
    b.append(&one(vec![decided(&id)])).expect("append");
    // Even the owner of the tables, connected directly.
    let mut owner = pg::shared().admin_client(&db_name(&dsn));
    for sql in [
        "UPDATE records SET payload = '{}'",
        "DELETE FROM records",
        "TRUNCATE records",
    ] {
        let err = owner
            .batch_execute(sql)
            .err()
            .unwrap_or_else(|| panic!("{sql} was allowed"));
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }
    assert_eq!(walk_chain(&mut b), 1);
}

/// The sessions the store opened on `db`, and whether each is encrypted.
fn tls_of_sessions(server: &pg::Server, db: &str) -> Vec<bool> {
    server
        .admin_client("postgres")
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.application_name = 'countersign'",
            &[&db],
        )
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn sslmode_is_enforced_as_libpq_defines_it() {
    let server = pg::local();
    let dsn = server.fresh_database();
    let db = db_name(&dsn);
    let (ca, other) = (server.ca_file(), server.other_ca_file());
    let url = |host: &str, query: &str| {
        format!(
            "postgres://{}@{host}:{}/{db}?{query}",
            server.user, server.port
        )
    };
    let try_connect = |dsn: &str, ca: Option<&std::path::Path>| -> Result<Postgres, String> {
        postgres::connect(dsn, Some(&server.password), ca).map_err(|e| e.to_string())
    };
    // A name the certificate does not list, reaching the same server.
    let wrong_name = |mode: &str| url("db.invalid", &format!("hostaddr=127.0.0.1&sslmode={mode}"));

    // verify-full: chain and name.
    for host in ["localhost", "127.0.0.1"] {
        let mut b = try_connect(&url(host, "sslmode=verify-full"), Some(&ca))
            .unwrap_or_else(|e| panic!("verify-full to {host}: {e}"));
        b.migrate().expect("migrate over TLS");
        assert_eq!(tls_of_sessions(server, &db), vec![true]);
        drop(b);
    }
    let err = try_connect(&wrong_name("verify-full"), Some(&ca)).expect_err("wrong name accepted");
    assert!(err.contains("not valid for name"), "{err}");
    let err = try_connect(&url("localhost", "sslmode=verify-full"), Some(&other))
        .expect_err("unknown CA accepted");
    assert!(err.to_lowercase().contains("unknownissuer"), "{err}");
    // System roots do not know a private CA.
    try_connect(&url("localhost", "sslmode=verify-full"), None)
        .expect_err("a private CA was trusted through the system roots");

    // verify-ca: chain only.
    drop(try_connect(&wrong_name("verify-ca"), Some(&ca)).expect("verify-ca ignores the name"));
    try_connect(&wrong_name("verify-ca"), Some(&other))
        .expect_err("verify-ca accepted an unknown CA");
    let err = try_connect(&url("localhost", "sslmode=verify-ca"), None)
        .expect_err("verify-ca without a CA file");
    assert!(err.contains("audit.ca_file"), "{err}");

    // require: encrypted, not verified (verified against a CA file if given, as libpq does).
    let b = try_connect(&wrong_name("require"), None).expect("require connects");
    assert_eq!(tls_of_sessions(server, &db), vec![true]);
    drop(b);
    try_connect(&wrong_name("require"), Some(&other))
        .expect_err("require with a CA file checks the chain");

    // disable: plain.
    let b = try_connect(&url("localhost", "sslmode=disable"), None).expect("plain");
    assert_eq!(tls_of_sessions(server, &db), vec![false]);
    drop(b);
}

#[test]
fn other_connections_hear_of_every_committed_append() {
    let dsn = pg::fresh_database();
    let mut writer = open(&dsn, pg::password());
    let (tx, rx) = mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    postgres::listen(&dsn, Some(pg::password()), None, move |id| {
        let _ = tx.lock().expect("sender").send(id);
    })
    .expect("listen");

    let (a, c) = (new_action_id(), new_action_id());
    writer
        .append(&one(vec![decided(&a), decided(&c)]))
        .expect("append");
    let mut heard = vec![
        rx.recv_timeout(Duration::from_secs(5))
            .expect("first notification"),
        rx.recv_timeout(Duration::from_secs(5))
            .expect("second notification"),
    ];
    heard.sort();
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(heard, want);

    // A claim that loses writes nothing, and nobody is woken for it.
    let out = writer
        .append(&[Append {
            drafts: vec![Draft::new(
                &a,
                Kind::Approved,
                json!({}),
                Some(State::Approved),
            )],
            expect: Some((a.clone(), 0)),
            message_id: None,
        }])
        .expect("append");
    assert_eq!(out, vec![Appended::Conflict]);
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn a_database_restart_loses_nothing() {
    let server = pg::Server::local();
    let dsn = server.fresh_database();
    let mut b = open(&dsn, &server.password);
    let (tx, rx) = mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    postgres::listen(&dsn, Some(&server.password), None, move |id| {
        let _ = tx.lock().expect("sender").send(id);
    })
    .expect("listen");
    let id = new_action_id();
    b.append(&one(vec![decided(&id)])).expect("append");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("heard"), id);

    server.stop();
    let during = b
        .append(&one(vec![Draft::new(&id, Kind::Notified, json!({}), None)]))
        .expect_err("an append succeeded with the database down");
    assert!(
        matches!(during, StoreError::Postgres(_) | StoreError::Open { .. }),
        "{during:?}"
    );
    b.probe()
        .expect_err("the probe passed with the database down");

    server.start();
    b.probe()
        .expect("the probe reconnects once the database is back");
    // The same backend reconnects by itself.
    let out = b
        .append(&one(vec![Draft::new(
            &id,
            Kind::Notified,
            json!({"again": true}),
            None,
        )]))
        .expect("append after the restart");
    assert_eq!(out, vec![Appended::Committed(2)]);
    // The listener reconnects and says it may have missed something.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got_recheck = false;
    while Instant::now() < deadline && !got_recheck {
        if let Ok(heard) = rx.recv_timeout(Duration::from_millis(200)) {
            got_recheck = heard.is_empty();
        }
    }
    assert!(got_recheck, "the listener did not report its reconnection");
    let next = new_action_id();
    b.append(&one(vec![decided(&next)])).expect("append");
    let heard: Vec<String> = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
        .take_while(|h| h != &next)
        .collect();
    assert!(heard.iter().all(|h| h.is_empty() || h == &id), "{heard:?}");
    assert_eq!(walk_chain(&mut b), 3);
}

#[test]
fn a_commit_whose_answer_is_lost_is_settled_before_returning() {
    let dsn = pg::fresh_database();
    let db = db_name(&dsn);
    let mut b = open(&dsn, pg::password());
    let first = new_action_id();
    b.append(&one(vec![decided(&first)])).expect("append");
    // Make COMMIT slow (a deferred trigger sleeps), then end the session
    // mid-commit, as a crash or a cut network would.
    let mut admin = pg::shared().admin_client(&db);
    admin
        .batch_execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON records
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .expect("install the slow trigger");
    let killer = std::thread::spawn(move || {
        let found = pg::wait_until(Duration::from_secs(5), || {
            admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = $1 AND application_name = 'countersign' AND wait_event = 'PgSleep'",
                    &[&db],
                )
                .map(|rows| !rows.is_empty())
                .unwrap_or(false)
        });
        assert!(found, "the append never reached its commit");
        admin
            .batch_execute("DROP TRIGGER slow_commit ON records")
            .expect("drop the trigger");
    });
    let second = new_action_id();
    let started = Instant::now();
    let out = b.append(&one(vec![decided(&second)]));
    killer.join().expect("killer");
    // The server ended the session before the commit: the store reconnects,
    // finds the record absent, and reports the failure (nothing written).
    let err = out.expect_err("an aborted commit was reported as written");
    // The server's FATAL 57P01, or the closed connection it left behind.
    assert!(matches!(err, StoreError::Postgres(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(b.records_of(&second).expect("records").is_empty());
    // The chain goes on from where it was, on the reconnected backend.
    let out = b.append(&one(vec![decided(&second)])).expect("append");
    assert_eq!(out, vec![Appended::Committed(2)]);
    assert_eq!(walk_chain(&mut b), 2);
}

/// Not a pass/fail benchmark: prints what one commit costs on this
/// machine's cluster (fsync on), for the docs and the report.
#[test]
fn append_latency_on_the_local_cluster() {
    let dsn = pg::fresh_database();
    let mut b = open(&dsn, pg::password());
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut single = Vec::new();
    for _ in 0..100 {
        let id = new_action_id();
        let t = Instant::now();
        b.append(&one(vec![decided(&id)])).expect("append");
        single.push(t.elapsed());
    }
    let mut batches = Vec::new();
    for _ in 0..10 {
        let batch: Vec<Append> = (0..100)
            .map(|_| {
                let id = new_action_id();
                Append {
                    drafts: vec![decided(&id)],
                    expect: Some((id, 0)),
                    message_id: None,
                }
            })
            .collect();
        let t = Instant::now();
        let out = b.append(&batch).expect("batch");
        batches.push(t.elapsed());
        assert!(out.iter().all(|o| matches!(o, Appended::Committed(_))));
    }
    eprintln!(
        "postgres append: single record {:?} (median of 100), batch of 100 conditional appends {:?} (median of 10)",
        median(single),
        median(batches)
    );
    assert_eq!(walk_chain(&mut b), 1100);
}

#[test]
fn a_listener_reconnects_with_a_rotated_password() {
    let server = pg::local();
    let role = format!("rot_{}", &new_action_id()[..12]);
    server.admin_exec(&format!("CREATE ROLE {role} LOGIN PASSWORD 'first-pw'"));
    let dsn = server.fresh_database();
    let role_dsn = dsn.replacen(&server.user, &role, 1);
    let current = std::sync::Arc::new(std::sync::Mutex::new("first-pw".to_string()));
    let source = current.clone();
    let (tx, rx) = mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    postgres::listen_with(
        &role_dsn,
        std::sync::Arc::new(move || Ok(Some(source.lock().expect("pw").clone()))),
        None,
        move |id| {
            let _ = tx.lock().expect("sender").send(id);
        },
    )
    .expect("listen");

    // The secret is rotated (the password file re-written), and the
    // listener's connection is cut.
    server.admin_exec(&format!("ALTER ROLE {role} PASSWORD 'second-pw'"));
    *current.lock().expect("pw") = "second-pw".into();
    server.admin_exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the listener came back"),
        ""
    );
    let mut writer = open(&dsn, &server.password);
    let id = new_action_id();
    writer.append(&one(vec![decided(&id)])).expect("append");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).expect("heard"), id);
}
