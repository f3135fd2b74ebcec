//! Every SQL statement the backend runs on its hot paths, prepared once per
//! connection. Batches travel as arrays (`unnest`), so a batch of any size
//! costs the same number of round trips.

use postgres::{Client, Statement};

use super::CHANNEL;

/// The statements every operation uses, prepared once per connection.
#[derive(Clone)]
pub(super) struct Statements {
    pub(super) lock_head: Statement,
    pub(super) newest_seqs: Statement,
    pub(super) insert_records: Statement,
    pub(super) insert_index: Statement,
    pub(super) update_index: Statement,
    pub(super) set_head: Statement,
    pub(super) notify: Statement,
    pub(super) records_of: Statement,
    pub(super) links_of: Statement,
    pub(super) scan: Statement,
    pub(super) remember_message: Statement,
    pub(super) forget_messages: Statement,
    pub(super) due: Statement,
    pub(super) heads: Statement,
    pub(super) probe: Statement,
    pub(super) put_index: Statement,
}

pub(super) const RECORD_COLUMNS: &str = "seq, time, action_id, kind, payload, prev_hash, hash";
pub(super) const SUMMARY_COLUMNS: &str =
    "action_id, state, risk, route, method, path, agent, upstream_status, created_at, updated_at";

impl Statements {
    pub(super) fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            lock_head: c.prepare("SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE")?,
            newest_seqs: c.prepare(
                "SELECT action_id, MAX(seq) FROM records WHERE action_id = ANY($1::text[]) GROUP BY action_id",
            )?,
            insert_records: c.prepare(&format!(
                "INSERT INTO records ({RECORD_COLUMNS})
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])"
            ))?,
            insert_index: c.prepare(
                "INSERT INTO actions (action_id, state, risk, route, method, path, agent,
                                      created_at, updated_at, last_seq, expires_at, lease_until, forward_claimed)
                 SELECT u.action_id, u.state, u.risk, u.route, u.method, u.path, u.agent,
                        u.created_at, u.created_at, u.last_seq, u.expires_at, u.lease_until, FALSE
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::bigint[], $10::text[], $11::text[])
                      AS u(action_id, state, risk, route, method, path, agent, created_at, last_seq, expires_at, lease_until)
                 ON CONFLICT (action_id) DO NOTHING
                 RETURNING action_id",
            )?,
            update_index: c.prepare(
                "UPDATE actions AS a SET
                     state = COALESCE(u.state, a.state),
                     risk = COALESCE(u.risk, a.risk),
                     expires_at = COALESCE(u.expires_at, a.expires_at),
                     lease_until = COALESCE(u.lease_until, a.lease_until),
                     forward_claimed = a.forward_claimed OR u.forward_claimed,
                     upstream_status = COALESCE(u.upstream_status, a.upstream_status),
                     last_seq = u.last_seq,
                     updated_at = u.updated_at
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::bigint[],
                             $8::bigint[], $9::text[])
                      AS u(action_id, state, risk, expires_at, lease_until, forward_claimed, upstream_status, last_seq, updated_at)
                 WHERE a.action_id = u.action_id",
            )?,
            set_head: c.prepare("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1")?,
            notify: c.prepare(&format!(
                "SELECT pg_notify('{CHANNEL}', a) FROM unnest($1::text[]) AS a"
            ))?,
            records_of: c.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE action_id = $1 ORDER BY seq"
            ))?,
            links_of: c.prepare(
                "SELECT r.seq, b.hash, n.prev_hash FROM records r
                 LEFT JOIN records b ON b.seq = r.seq - 1
                 LEFT JOIN records n ON n.seq = r.seq + 1
                 WHERE r.action_id = $1 ORDER BY r.seq",
            )?,
            scan: c.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))?,
            remember_message: c.prepare(
                "INSERT INTO seen_messages (message_id, seen_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )?,
            forget_messages: c.prepare("DELETE FROM seen_messages WHERE seen_at < $1")?,
            due: c.prepare(
                "SELECT 'expired', action_id FROM actions WHERE state = 'pending' AND expires_at <= $1
                 UNION ALL
                 SELECT 'unclaimed', action_id FROM actions
                   WHERE state = 'approved' AND NOT forward_claimed AND updated_at <= $2
                 UNION ALL
                 SELECT 'lapsed', action_id FROM actions
                   WHERE state IN ('allowed', 'approved') AND lease_until IS NOT NULL AND lease_until <= $1",
            )?,
            heads: c.prepare(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM records)::BIGINT,
                        (SELECT COALESCE(MAX(last_seq), 0) FROM actions)::BIGINT",
            )?,
            probe: c.prepare(
                "INSERT INTO countersign_probe (id, at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
            )?,
            put_index: c.prepare(
                "INSERT INTO actions (action_id, state, risk, route, method, path, agent, upstream_status,
                                      created_at, updated_at, last_seq, expires_at, lease_until, forward_claimed)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::bigint[], $9::text[], $10::text[], $11::bigint[],
                                      $12::text[], $13::text[], $14::bool[])
                 ON CONFLICT (action_id) DO UPDATE SET
                     state = EXCLUDED.state, risk = EXCLUDED.risk, route = EXCLUDED.route,
                     method = EXCLUDED.method, path = EXCLUDED.path, agent = EXCLUDED.agent,
                     upstream_status = EXCLUDED.upstream_status, created_at = EXCLUDED.created_at,
                     updated_at = EXCLUDED.updated_at, last_seq = EXCLUDED.last_seq,
                     expires_at = EXCLUDED.expires_at, lease_until = EXCLUDED.lease_until,
                     forward_claimed = EXCLUDED.forward_claimed",
            )?,
        })
    }
}
