//! How one append batch becomes rows: the chained records as columns for
//! one INSERT, and each touched action's index row, created and updated
//! with the same result as applying each record's update in turn.

use std::collections::HashSet;

use super::statements::Statements;
use crate::audit::record::IndexUpdate;

/// The chain-ordered records of a batch, as columns (one INSERT for all).
#[derive(Default)]
pub(super) struct RecordRows<'a> {
    pub(super) seq: Vec<i64>,
    pub(super) time: Vec<String>,
    pub(super) action_id: Vec<&'a str>,
    pub(super) kind: Vec<&'static str>,
    pub(super) payload: Vec<String>,
    pub(super) prev_hash: Vec<String>,
    pub(super) hash: Vec<String>,
}

impl<'a> RecordRows<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
        &mut self,
        seq: i64,
        time: String,
        action_id: &'a str,
        kind: &'static str,
        payload: String,
        prev_hash: String,
        hash: String,
    ) {
        self.seq.push(seq);
        self.time.push(time);
        self.action_id.push(action_id);
        self.kind.push(kind);
        self.payload.push(payload);
        self.prev_hash.push(prev_hash);
        self.hash.push(hash);
    }
}

/// One action's records in a batch, in order.
pub(super) struct Touched<'a> {
    pub(super) action_id: &'a str,
    pub(super) steps: Vec<Step<'a>>,
}

pub(super) struct Step<'a> {
    pub(super) seq: i64,
    pub(super) time: String,
    pub(super) index: &'a IndexUpdate,
}

/// Updates the index rows of the actions a batch touched, with the same
/// result as applying each record's update in turn: a record with a
/// summary creates the row if absent, then every record updates it.
pub(super) fn index(
    tx: &mut postgres::Transaction<'_>,
    st: &Statements,
    touched: &[Touched<'_>],
) -> Result<(), postgres::Error> {
    // Rows to create: at each action's first record with a summary.
    let mut new = NewRows::default();
    for t in touched {
        if let Some(k) = t.steps.iter().position(|s| s.index.summary.is_some()) {
            let s = &t.steps[k];
            let (u, sum) = (s.index, s.index.summary.as_ref());
            new.action_id.push(t.action_id);
            new.state.push(u.state.map_or("pending", |st| st.as_str()));
            new.risk.push(u.risk.as_deref());
            new.route.push(sum.map(|x| x.route.as_str()));
            new.method.push(sum.map(|x| x.method.as_str()));
            new.path.push(sum.map(|x| x.path.as_str()));
            new.agent.push(sum.and_then(|x| x.agent.as_deref()));
            new.created_at.push(&s.time);
            new.last_seq.push(s.seq);
            new.expires_at.push(u.expires_at.as_deref());
            new.lease_until.push(u.lease_until.as_deref());
        }
    }
    let mut created: HashSet<String> = HashSet::new();
    if !new.action_id.is_empty() {
        for row in tx.query(
            &st.insert_index,
            &[
                &new.action_id,
                &new.state,
                &new.risk,
                &new.route,
                &new.method,
                &new.path,
                &new.agent,
                &new.created_at,
                &new.last_seq,
                &new.expires_at,
                &new.lease_until,
            ],
        )? {
            created.insert(row.get(0));
        }
    }
    // Then the updates. A row created just now only sees the records from
    // its creating one on (before it, there was no row to update).
    let mut up = UpdateRows::default();
    for t in touched {
        let from = if created.contains(t.action_id) {
            t.steps
                .iter()
                .position(|s| s.index.summary.is_some())
                .unwrap_or(0)
        } else {
            0
        };
        // The net effect of those records' updates.
        let steps = &t.steps[from..];
        let mut n = IndexUpdate::default();
        for s in steps {
            n.absorb(s.index);
        }
        let (last_seq, updated_at) = steps.last().map_or((0, ""), |s| (s.seq, s.time.as_str()));
        up.action_id.push(t.action_id);
        up.state.push(n.state.map(|st| st.as_str()));
        up.risk.push(n.risk);
        up.expires_at.push(n.expires_at);
        up.lease_until.push(n.lease_until);
        up.forward_claimed.push(n.forward_claimed);
        up.upstream_status.push(n.upstream_status);
        up.last_seq.push(last_seq);
        up.updated_at.push(updated_at);
    }
    tx.execute(
        &st.update_index,
        &[
            &up.action_id,
            &up.state,
            &up.risk,
            &up.expires_at,
            &up.lease_until,
            &up.forward_claimed,
            &up.upstream_status,
            &up.last_seq,
            &up.updated_at,
        ],
    )?;
    Ok(())
}

#[derive(Default)]
struct NewRows<'a> {
    action_id: Vec<&'a str>,
    state: Vec<&'a str>,
    risk: Vec<Option<&'a str>>,
    route: Vec<Option<&'a str>>,
    method: Vec<Option<&'a str>>,
    path: Vec<Option<&'a str>>,
    agent: Vec<Option<&'a str>>,
    created_at: Vec<&'a str>,
    last_seq: Vec<i64>,
    expires_at: Vec<Option<&'a str>>,
    lease_until: Vec<Option<&'a str>>,
}

#[derive(Default)]
struct UpdateRows<'a> {
    action_id: Vec<&'a str>,
    state: Vec<Option<&'static str>>,
    risk: Vec<Option<String>>,
    expires_at: Vec<Option<String>>,
    lease_until: Vec<Option<String>>,
    forward_claimed: Vec<bool>,
    upstream_status: Vec<Option<i64>>,
    last_seq: Vec<i64>,
    updated_at: Vec<&'a str>,
}
