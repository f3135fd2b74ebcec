//! One suite, two backends: every case runs against a real SQLite file and a
//! real PostgreSQL database through the `Backend` trait, so both stores keep
//! the same contract (chain, conditional claims, replay memory, index).

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::Duration;

use countersign::audit::record::{
    canonical_json, chain_hash, new_action_id, Draft, Kind, Record, State, Summary, GENESIS,
};
use countersign::audit::store::backend::ActionSummary;
use countersign::audit::store::backend::{Append, Appended, Backend, IndexRow, ListFilter};
use countersign::audit::store::now_rfc3339;
use serde_json::json;

use crate::pg;

/// A store under test. Each `open` is a new connection to the same store,
/// as another thread or another process would have.
pub trait Target: Sync {
    fn open(&self) -> Box<dyn Backend>;
}

struct SqliteTarget {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Target for SqliteTarget {
    fn open(&self) -> Box<dyn Backend> {
        let b =
            countersign::audit::store::sqlite::Sqlite::open(&self.path, Duration::from_secs(10))
                .expect("open the SQLite store");
        Box::new(b)
    }
}

/// A PostgreSQL database of its own, migrated, with a password login.
pub struct PgTarget {
    pub dsn: String,
}

impl Target for PgTarget {
    fn open(&self) -> Box<dyn Backend> {
        let mut b =
            countersign::audit::store::postgres::connect(&self.dsn, Some(pg::password()), None)
                .unwrap_or_else(|e| panic!("connect to {}: {e}", self.dsn));
        b.migrate().expect("migrate");
        Box::new(b)
    }
}

fn sqlite_target() -> SqliteTarget {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.db");
    SqliteTarget { _dir: dir, path }
}

pub fn pg_target() -> PgTarget {
    PgTarget {
        dsn: pg::fresh_database(),
    }
}

/// Each case becomes `store_backends::sqlite::<case>` and
/// `store_backends::postgres::<case>`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { super::$case(&super::sqlite_target()) } )*
        }
        mod postgres {
            $( #[test] fn $case() { super::$case(&super::pg_target()) } )*
        }
    };
}

on_both_backends!(
    appends_chain_and_read_back,
    empty_and_conflicting_appends_write_nothing,
    same_expect_from_two_connections_exactly_one_wins,
    conditional_appends_race_without_gaps,
    replays_are_seen_once_across_connections,
    list_filters_and_orders_newest_first,
    index_follows_each_record,
    due_finds_expired_unclaimed_and_lapsed,
    heads_and_put_index,
    probe_writes_nothing_to_the_record,
    checkpoints_keep_the_first_of_a_size_and_leaves_follow_the_chain,
);

// --- helpers ---------------------------------------------------------------

fn summary() -> Summary {
    Summary {
        route: "payments".into(),
        method: "POST".into(),
        path: "/v1/payouts".into(),
        agent: Some("ap-agent-7".into()),
    }
}

/// The first record of an action: it creates the index row.
fn decided(id: &str, state: State, risk: &str) -> Draft {
    let mut d = Draft::new(
        id,
        Kind::Decided,
        json!({"decision": {"risk": risk, "rules": ["r.1"]}, "z": 1, "a": "ünïcode"}),
        Some(state),
    );
    d.index.risk = Some(risk.into());
    d.index.summary = Some(summary());
    d
}

fn event(id: &str, kind: Kind, state: Option<State>) -> Draft {
    Draft::new(id, kind, json!({"at": now_rfc3339()}), state)
}

fn plain(drafts: Vec<Draft>) -> Append {
    Append::records(drafts)
}

fn claim(id: &str, expect: i64, drafts: Vec<Draft>) -> Append {
    Append {
        drafts,
        expect: Some((id.to_string(), expect)),
        message_id: None,
    }
}

/// A review's records, carried by its signed message id.
fn signed(message_id: &str, expect: Option<(&str, i64)>, drafts: Vec<Draft>) -> Append {
    Append {
        drafts,
        expect: expect.map(|(id, seq)| (id.to_string(), seq)),
        message_id: Some(message_id.to_string()),
    }
}

fn committed(out: &[Appended]) -> Vec<i64> {
    out.iter()
        .map(|o| match o {
            Appended::Committed(seq) => *seq,
            other => panic!("unexpected {other:?} in {out:?}"),
        })
        .collect()
}

fn newest_seq(b: &mut dyn Backend, id: &str) -> i64 {
    b.records_of(id)
        .expect("records_of")
        .last()
        .map_or(0, |r| r.seq)
}

fn row(b: &mut dyn Backend, id: &str) -> ActionSummary {
    b.list(&ListFilter::default())
        .expect("list")
        .into_iter()
        .find(|s| s.action_id == id)
        .unwrap_or_else(|| panic!("{id} is not in the index"))
}

/// Walks the whole chain independently of the product's verifier: seq from
/// 1 without gaps, each `prev_hash` the hash before it, each hash
/// recomputed. Returns the number of records.
pub fn walk_chain(b: &mut dyn Backend) -> i64 {
    let mut prev = GENESIS.to_string();
    let mut seq = 0;
    loop {
        let page = b.scan(seq, 97).expect("scan");
        if page.is_empty() {
            return seq;
        }
        for r in page {
            assert_eq!(r.seq, seq + 1, "the chain has a gap before seq {}", r.seq);
            assert_eq!(
                r.prev_hash, prev,
                "seq {} does not link to its predecessor",
                r.seq
            );
            let text = r
                .payload_text
                .clone()
                .unwrap_or_else(|| canonical_json(&r.payload));
            assert_eq!(
                text,
                canonical_json(&r.payload),
                "seq {} payload is not canonical",
                r.seq
            );
            assert_eq!(
                chain_hash(r.seq, &r.time, &r.action_id, &r.kind, &r.prev_hash, &text),
                r.hash,
                "seq {} does not match its hash",
                r.seq
            );
            prev = r.hash;
            seq = r.seq;
        }
    }
}

const PAST: &str = "2001-01-01T00:00:00.000000Z";
const BEFORE_PAST: &str = "2000-01-01T00:00:00.000000Z";
const FUTURE: &str = "2999-01-01T00:00:00.000000Z";

// --- cases -----------------------------------------------------------------

fn appends_chain_and_read_back(t: &dyn Target) {
    let mut b = t.open();
    let (a, c) = (new_action_id(), new_action_id());
    let out = b
        .append(&[
            plain(vec![
                decided(&a, State::Pending, "high"),
                event(&a, Kind::Notified, None),
            ]),
            plain(vec![decided(&c, State::Allowed, "low")]),
        ])
        .expect("append");
    assert_eq!(out, vec![Appended::Committed(2), Appended::Committed(3)]);

    let ra: Vec<Record> = b.records_of(&a).expect("records_of");
    assert_eq!(ra.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(ra[0].kind, "decided");
    assert_eq!(ra[1].kind, "notified");
    assert_eq!(ra[0].payload["a"], "ünïcode");
    assert_eq!(ra[0].prev_hash, GENESIS);
    assert_eq!(ra[1].prev_hash, ra[0].hash);
    assert!(ra.iter().all(|r| r.hash_matches()));
    // Times as the store writes them: RFC 3339 UTC with microseconds.
    for r in &ra {
        assert!(humantime::parse_rfc3339(&r.time).is_ok(), "{}", r.time);
        assert_eq!(
            r.time.len(),
            "2026-01-01T00:00:00.000000Z".len(),
            "{}",
            r.time
        );
    }
    let rc = b.records_of(&c).expect("records_of");
    assert_eq!(rc.len(), 1);
    assert_eq!(rc[0].prev_hash, ra[1].hash);
    assert!(b.records_of(&new_action_id()).expect("unknown").is_empty());

    // Neighbours, for verifying one action alone.
    let links = b.links_of(&a).expect("links_of");
    assert_eq!(links.len(), 2);
    assert_eq!((links[0].seq, links[0].before_hash.as_deref()), (1, None));
    assert_eq!(
        links[0].after_prev_hash.as_deref(),
        Some(ra[0].hash.as_str())
    );
    assert_eq!(links[1].before_hash.as_deref(), Some(ra[0].hash.as_str()));
    assert_eq!(
        links[1].after_prev_hash.as_deref(),
        Some(ra[1].hash.as_str())
    );
    let links = b.links_of(&c).expect("links_of");
    assert_eq!(links[0].before_hash.as_deref(), Some(ra[1].hash.as_str()));
    assert_eq!(links[0].after_prev_hash, None);

    // Paged walk.
    assert_eq!(
        b.scan(0, 2)
            .expect("scan")
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        b.scan(2, 10)
            .expect("scan")
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert!(b.scan(3, 10).expect("scan").is_empty());

    // Another connection appends after what this one wrote, on one chain.
    let mut other = t.open();
    let out = other
        .append(&[plain(vec![event(&a, Kind::Reviewed, None)])])
        .expect("append");
    assert_eq!(out, vec![Appended::Committed(4)]);
    assert_eq!(walk_chain(b.as_mut()), 4);
}

fn empty_and_conflicting_appends_write_nothing(t: &dyn Target) {
    let mut b = t.open();
    let x = new_action_id();
    let first = committed(
        &b.append(&[claim(&x, 0, vec![decided(&x, State::Pending, "high")])])
            .expect("append"),
    )[0];
    assert_eq!(first, 1);

    // Stale expectation: nothing written.
    let out = b
        .append(&[claim(
            &x,
            0,
            vec![event(&x, Kind::Approved, Some(State::Approved))],
        )])
        .expect("append");
    assert_eq!(out, vec![Appended::Conflict]);
    assert_eq!(b.records_of(&x).expect("records").len(), 1);
    assert_eq!(row(b.as_mut(), &x).state, "pending");
    assert_eq!(b.heads().expect("heads").0, 1);

    // An empty append writes nothing and reports 0.
    let out = b.append(&[plain(vec![])]).expect("empty append");
    assert_eq!(out, vec![Appended::Committed(0)]);
    assert_eq!(b.heads().expect("heads").0, 1);

    // Current expectation: written.
    let out = b
        .append(&[claim(
            &x,
            1,
            vec![event(&x, Kind::Approved, Some(State::Approved))],
        )])
        .expect("append");
    assert_eq!(out, vec![Appended::Committed(2)]);
    assert_eq!(row(b.as_mut(), &x).state, "approved");

    // Within one batch, each claim sees the appends before it.
    let y = new_action_id();
    let (w, z) = (new_action_id(), new_action_id());
    let out = b
        .append(&[
            claim(&y, 0, vec![decided(&y, State::Pending, "low")]),
            claim(&y, 0, vec![decided(&y, State::Allowed, "low")]),
            claim(&y, 3, vec![event(&y, Kind::Expired, Some(State::Expired))]),
            claim(&z, 7, vec![decided(&z, State::Allowed, "low")]),
            plain(vec![decided(&w, State::Allowed, "low")]),
        ])
        .expect("append");
    assert_eq!(
        out,
        vec![
            Appended::Committed(3),
            Appended::Conflict,
            Appended::Committed(4),
            Appended::Conflict,
            Appended::Committed(5),
        ]
    );
    assert_eq!(row(b.as_mut(), &y).state, "expired");
    assert!(b.records_of(&z).expect("records").is_empty());
    assert_eq!(walk_chain(b.as_mut()), 5);
}

fn same_expect_from_two_connections_exactly_one_wins(t: &dyn Target) {
    let mut setup = t.open();
    let id = new_action_id();
    setup
        .append(&[plain(vec![decided(&id, State::Pending, "high")])])
        .expect("append");
    let mut conns = [t.open(), t.open()];
    for round in 0..25 {
        let expect = newest_seq(setup.as_mut(), &id);
        let barrier = Barrier::new(2);
        let outcomes: Vec<Appended> = std::thread::scope(|s| {
            let handles: Vec<_> = conns
                .iter_mut()
                .map(|conn| {
                    let (id, barrier) = (&id, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        conn.append(&[claim(id, expect, vec![event(id, Kind::Reviewed, None)])])
                            .expect("append")[0]
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, Appended::Committed(_)))
            .count();
        assert_eq!(wins, 1, "round {round}: {outcomes:?}");
        assert_eq!(newest_seq(setup.as_mut(), &id), expect + 1);
    }
    assert_eq!(walk_chain(setup.as_mut()), 26);
}

fn conditional_appends_race_without_gaps(t: &dyn Target) {
    const ATTEMPTS: usize = 200;
    let mut setup = t.open();
    let id = new_action_id();
    setup
        .append(&[plain(vec![decided(&id, State::Pending, "high")])])
        .expect("append");
    let barrier = Barrier::new(2);
    let results: Vec<(Vec<i64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut conn = t.open();
                let (id, barrier) = (&id, &barrier);
                s.spawn(move || {
                    let (mut won, mut lost) = (Vec::new(), 0);
                    barrier.wait();
                    for _ in 0..ATTEMPTS {
                        let expect = newest_seq(conn.as_mut(), id);
                        match conn
                            .append(&[claim(id, expect, vec![event(id, Kind::Reviewed, None)])])
                            .expect("append")[0]
                        {
                            Appended::Committed(seq) => {
                                assert_eq!(seq, expect + 1, "a claim landed out of place");
                                won.push(seq);
                            }
                            Appended::Conflict => lost += 1,
                            Appended::Replayed => panic!("no message id was given"),
                        }
                    }
                    (won, lost)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut all: Vec<i64> = results.iter().flat_map(|(w, _)| w.clone()).collect();
    let won = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        won,
        "two connections were told they wrote the same seq"
    );
    assert_eq!(
        won + results.iter().map(|(_, l)| l).sum::<usize>(),
        2 * ATTEMPTS
    );
    let records = setup.records_of(&id).expect("records");
    assert_eq!(records.len(), won + 1);
    assert_eq!(walk_chain(setup.as_mut()), won as i64 + 1);
    assert_eq!(row(setup.as_mut(), &id).state, "pending");
    eprintln!(
        "race: {won} claims won, {} lost to the other connection",
        2 * ATTEMPTS - won
    );
}

fn replays_are_seen_once_across_connections(t: &dyn Target) {
    let mut b = t.open();
    let id = new_action_id();
    b.append(&[plain(vec![decided(&id, State::Pending, "high")])])
        .expect("append");

    // The same signed message, from four connections at once: one counts.
    let message = format!("msg_{}", new_action_id());
    let barrier = Barrier::new(4);
    let outcomes: Vec<Appended> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let mut conn = t.open();
                let (message, id, barrier) = (&message, &id, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    conn.append(&[signed(message, None, vec![event(id, Kind::Reviewed, None)])])
                        .expect("append")[0]
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let counted = outcomes
        .iter()
        .filter(|o| matches!(o, Appended::Committed(_)))
        .count();
    let replays = outcomes
        .iter()
        .filter(|o| **o == Appended::Replayed)
        .count();
    assert_eq!((counted, replays), (1, 3), "{outcomes:?}");
    assert_eq!(b.records_of(&id).expect("records").len(), 2);

    // Within one batch too; and a replay does not stop the appends after it.
    let (m1, m2) = (
        format!("msg_{}", new_action_id()),
        format!("msg_{}", new_action_id()),
    );
    let out = b
        .append(&[
            signed(&m1, None, vec![event(&id, Kind::Reviewed, None)]),
            signed(&m1, None, vec![event(&id, Kind::Reviewed, None)]),
            signed(&message, None, vec![event(&id, Kind::Reviewed, None)]),
            plain(vec![event(&id, Kind::Notified, None)]),
        ])
        .expect("append");
    assert_eq!(
        out,
        vec![
            Appended::Committed(3),
            Appended::Replayed,
            Appended::Replayed,
            Appended::Committed(4),
        ]
    );

    // A message whose claim lost is spent all the same: it was signed for
    // that moment, and replaying it later must not succeed.
    let out = b
        .append(&[signed(
            &m2,
            Some((&id, 1)),
            vec![event(&id, Kind::Approved, Some(State::Approved))],
        )])
        .expect("append");
    assert_eq!(out, vec![Appended::Conflict]);
    let out = b
        .append(&[signed(
            &m2,
            Some((&id, 4)),
            vec![event(&id, Kind::Approved, Some(State::Approved))],
        )])
        .expect("append");
    assert_eq!(out, vec![Appended::Replayed]);
    assert_eq!(row(b.as_mut(), &id).state, "pending");
    assert_eq!(walk_chain(b.as_mut()), 4);
}

fn list_filters_and_orders_newest_first(t: &dyn Target) {
    let mut b = t.open();
    let specs = [
        (State::Pending, "high"),
        (State::Allowed, "low"),
        (State::Pending, "low"),
        (State::Denied, "critical"),
        (State::Pending, "high"),
    ];
    let mut ids = Vec::new();
    for (state, risk) in specs {
        let id = new_action_id();
        b.append(&[plain(vec![decided(&id, state, risk)])])
            .expect("append");
        ids.push(id);
        // Distinct creation times, whatever the clock's resolution.
        std::thread::sleep(Duration::from_millis(2));
    }
    let list = |b: &mut Box<dyn Backend>, f: ListFilter| -> Vec<String> {
        b.list(&f)
            .expect("list")
            .into_iter()
            .map(|s| s.action_id)
            .collect()
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list(&mut b, ListFilter::default()), newest_first);
    assert_eq!(
        list(
            &mut b,
            ListFilter {
                state: Some("pending".into()),
                ..Default::default()
            }
        ),
        vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(
        list(
            &mut b,
            ListFilter {
                state: Some("pending".into()),
                risk: Some("high".into()),
                ..Default::default()
            }
        ),
        vec![ids[4].clone(), ids[0].clone()]
    );
    assert_eq!(
        list(
            &mut b,
            ListFilter {
                risk: Some("critical".into()),
                ..Default::default()
            }
        ),
        vec![ids[3].clone()]
    );
    let third = row(b.as_mut(), &ids[2]).created_at;
    assert_eq!(
        list(
            &mut b,
            ListFilter {
                since: Some(third),
                ..Default::default()
            }
        ),
        newest_first[..3].to_vec()
    );
    assert_eq!(
        list(
            &mut b,
            ListFilter {
                limit: 2,
                ..Default::default()
            }
        ),
        newest_first[..2].to_vec()
    );
    assert!(list(
        &mut b,
        ListFilter {
            state: Some("expired".into()),
            ..Default::default()
        }
    )
    .is_empty());

    let r = row(b.as_mut(), &ids[0]);
    assert_eq!(
        (r.route.as_deref(), r.method.as_deref(), r.path.as_deref()),
        (Some("payments"), Some("POST"), Some("/v1/payouts"))
    );
    assert_eq!(r.agent.as_deref(), Some("ap-agent-7"));
    assert_eq!(r.created_at, r.updated_at);
    assert_eq!(r.upstream_status, None);
}

fn index_follows_each_record(t: &dyn Target) {
    let mut b = t.open();
    let id = new_action_id();
    let mut d = decided(&id, State::Pending, "high");
    d.index.expires_at = Some(FUTURE.into());
    b.append(&[plain(vec![d])]).expect("append");
    let created = row(b.as_mut(), &id);
    assert_eq!(
        (created.state.as_str(), created.risk.as_deref()),
        ("pending", Some("high"))
    );

    // A record that sets nothing keeps the state; updated_at moves.
    std::thread::sleep(Duration::from_millis(2));
    b.append(&[plain(vec![event(&id, Kind::Reviewed, None)])])
        .expect("append");
    let r = row(b.as_mut(), &id);
    assert_eq!(r.state, "pending");
    assert_eq!(r.created_at, created.created_at);
    assert!(r.updated_at > created.updated_at);

    // A later record with a summary does not re-create the row.
    let mut again = decided(&id, State::Approved, "low");
    again.index.summary = Some(Summary {
        route: "other".into(),
        ..summary()
    });
    let mut claimed = event(&id, Kind::Forwarded, None);
    claimed.index.forward_claimed = true;
    claimed.index.lease_until = Some(FUTURE.into());
    b.append(&[plain(vec![again, claimed])]).expect("append");
    let r = row(b.as_mut(), &id);
    assert_eq!(
        (r.state.as_str(), r.risk.as_deref()),
        ("approved", Some("low"))
    );
    assert_eq!(r.route.as_deref(), Some("payments"));
    assert_eq!(r.created_at, created.created_at);

    // The forward claim sticks (a later record cannot un-claim it): the
    // action is never "approved and unclaimed".
    b.append(&[plain(vec![event(
        &id,
        Kind::Notified,
        Some(State::Approved),
    )])])
    .expect("append");
    let due = b.due(&now_rfc3339(), FUTURE).expect("due");
    assert!(!due.unclaimed.contains(&id), "{due:?}");

    // Completion carries the upstream status.
    let mut done = event(&id, Kind::Completed, Some(State::Completed));
    done.index.upstream_status = Some(201);
    b.append(&[plain(vec![done])]).expect("append");
    let r = row(b.as_mut(), &id);
    assert_eq!(
        (r.state.as_str(), r.upstream_status),
        ("completed", Some(201))
    );
    let last = b
        .records_of(&id)
        .expect("records")
        .last()
        .cloned()
        .expect("some");
    assert_eq!(r.updated_at, last.time);
    assert_eq!(b.heads().expect("heads"), (last.seq, last.seq));
}

fn due_finds_expired_unclaimed_and_lapsed(t: &dyn Target) {
    let mut b = t.open();
    let make = |b: &mut Box<dyn Backend>,
                state: State,
                expires: Option<&str>,
                lease: Option<&str>,
                claimed: bool| {
        let id = new_action_id();
        let mut d = decided(&id, state, "high");
        d.index.expires_at = expires.map(str::to_string);
        d.index.lease_until = lease.map(str::to_string);
        d.index.forward_claimed = claimed;
        b.append(&[plain(vec![d])]).expect("append");
        id
    };
    let expired = make(&mut b, State::Pending, Some(PAST), None, false);
    let waiting = make(&mut b, State::Pending, Some(FUTURE), None, false);
    let unclaimed = make(&mut b, State::Approved, None, None, false);
    let claimed_live = make(&mut b, State::Approved, None, Some(FUTURE), true);
    let claimed_lapsed = make(&mut b, State::Approved, None, Some(PAST), true);
    let allowed_lapsed = make(&mut b, State::Allowed, None, Some(PAST), false);
    let allowed_live = make(&mut b, State::Allowed, None, Some(FUTURE), false);
    let completed = make(&mut b, State::Completed, Some(PAST), Some(PAST), false);

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let now = now_rfc3339();
    let due = b.due(&now, FUTURE).expect("due");
    assert_eq!(due.expired, vec![expired.clone()]);
    assert_eq!(due.unclaimed, vec![unclaimed.clone()]);
    assert_eq!(
        sorted(due.lapsed),
        sorted(vec![claimed_lapsed.clone(), allowed_lapsed.clone()])
    );
    // Within the grace period an approved action is not yet anyone's job.
    let due = b.due(&now, PAST).expect("due");
    assert!(due.unclaimed.is_empty(), "{due:?}");
    // At a time before every deadline, nothing is due.
    let due = b.due(BEFORE_PAST, BEFORE_PAST).expect("due");
    assert!(due.expired.is_empty() && due.lapsed.is_empty(), "{due:?}");
    for quiet in [&waiting, &claimed_live, &allowed_live, &completed] {
        let due = b.due(&now, FUTURE).expect("due");
        assert!(
            !due.expired.contains(quiet)
                && !due.unclaimed.contains(quiet)
                && !due.lapsed.contains(quiet),
            "{quiet} is not due: {due:?}"
        );
    }
}

fn heads_and_put_index(t: &dyn Target) {
    let mut b = t.open();
    assert_eq!(b.heads().expect("heads"), (0, 0));
    let (a, c) = (new_action_id(), new_action_id());
    b.append(&[plain(vec![
        decided(&a, State::Pending, "high"),
        decided(&c, State::Allowed, "low"),
    ])])
    .expect("append");
    assert_eq!(b.heads().expect("heads"), (2, 2));

    let rebuilt = |id: &str, state: &str, last_seq: i64| IndexRow {
        summary: ActionSummary {
            action_id: id.to_string(),
            state: state.to_string(),
            risk: Some("medium".into()),
            route: Some("payments".into()),
            method: Some("PUT".into()),
            path: Some("/v1/x".into()),
            agent: None,
            upstream_status: Some(204),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            updated_at: "2026-01-01T00:00:01.000000Z".into(),
        },
        last_seq,
        expires_at: Some(PAST.into()),
        lease_until: None,
        forward_claimed: false,
    };
    // Replaces whole rows; the last row given for an action wins.
    b.put_index(&[
        rebuilt(&a, "approved", 1),
        rebuilt(&a, "rejected", 1),
        rebuilt(&c, "completed", 2),
    ])
    .expect("put_index");
    let r = row(b.as_mut(), &a);
    assert_eq!(r.state, "rejected");
    assert_eq!(
        (r.risk.as_deref(), r.method.as_deref(), r.agent.as_deref()),
        (Some("medium"), Some("PUT"), None)
    );
    assert_eq!(r.upstream_status, Some(204));
    assert_eq!(r.created_at, "2026-01-01T00:00:00.000000Z");
    assert_eq!(row(b.as_mut(), &c).state, "completed");
    assert_eq!(b.heads().expect("heads"), (2, 2));

    // An index row behind the records shows in `heads`.
    b.put_index(&[rebuilt(&c, "completed", 1)])
        .expect("put_index");
    assert_eq!(b.heads().expect("heads"), (2, 1));
    // Rows given to put_index are what the due queries see.
    let mut pending = rebuilt(&a, "pending", 1);
    pending.expires_at = Some(PAST.into());
    b.put_index(&[pending]).expect("put_index");
    assert_eq!(
        b.due(&now_rfc3339(), PAST).expect("due").expired,
        vec![a.clone()]
    );
    assert_eq!(walk_chain(b.as_mut()), 2);
}

fn probe_writes_nothing_to_the_record(t: &dyn Target) {
    let mut b = t.open();
    b.probe().expect("probe an empty store");
    let id = new_action_id();
    b.append(&[plain(vec![decided(&id, State::Pending, "high")])])
        .expect("append");
    for _ in 0..3 {
        b.probe().expect("probe");
    }
    assert_eq!(b.heads().expect("heads"), (1, 1));
    assert_eq!(walk_chain(b.as_mut()), 1);
}

fn checkpoints_keep_the_first_of_a_size_and_leaves_follow_the_chain(t: &dyn Target) {
    use countersign::audit::store::backend::StoredCheckpoint;
    let mut b = t.open();
    let id = new_action_id();
    b.append(&[plain(vec![
        decided(&id, State::Allowed, "low"),
        event(&id, Kind::Completed, Some(State::Completed)),
    ])])
    .unwrap();
    let leaves = b.leaf_hashes(0, 10).unwrap();
    let records = b.scan(0, 10).unwrap();
    assert_eq!(
        leaves,
        records
            .iter()
            .map(|r| (r.seq, r.hash.clone()))
            .collect::<Vec<_>>(),
        "the leaves are the records' hashes, in seq order"
    );
    assert_eq!(b.leaf_hashes(1, 10).unwrap(), leaves[1..].to_vec());
    assert_eq!(b.latest_checkpoint().unwrap(), None);
    let cp = |size: i64, note: &str| StoredCheckpoint {
        tree_size: size,
        root_hash: format!("{size:064x}"),
        note: note.into(),
        time: now_rfc3339(),
    };
    b.put_checkpoint(&cp(1, "first of size 1")).unwrap();
    // Another process signing the same size: the first one stays.
    t.open().put_checkpoint(&cp(1, "second of size 1")).unwrap();
    b.put_checkpoint(&cp(2, "size 2")).unwrap();
    assert_eq!(b.latest_checkpoint().unwrap().unwrap().note, "size 2");
    let all = b.checkpoints(0, 10).unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.tree_size, c.note.as_str()))
            .collect::<Vec<_>>(),
        [(1, "first of size 1"), (2, "size 2")]
    );
    assert_eq!(b.checkpoints(1, 10).unwrap().len(), 1);
}
