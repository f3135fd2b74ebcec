//! One record of the workflow log and the chain hash that makes the log
//! tamper-evident. The encoding hashed here is the contract `audit verify`
//! checks against, so it is written out by hand rather than left to a
//! serializer's defaults.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::redact::Secrets;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The policy decided (write-ahead: committed before anything is forwarded).
    Decided,
    /// The upstream answered and the answer was captured.
    Completed,
    /// The action ended without an upstream answer (refused, upstream down, ...).
    Failed,
    /// A notification delivery attempt for a held action.
    Notified,
    /// A review was accepted.
    Reviewed,
    /// A review attempt was refused (bad signature, not allowed, replay, ...).
    ReviewRefused,
    /// Enough approvals: the held request will be forwarded.
    Approved,
    /// A reviewer rejected the held request.
    Rejected,
    /// Nobody decided before the expiry.
    Expired,
    /// The hold was cancelled (the agent stopped waiting under `cancel`).
    Cancelled,
    /// Forwarding of an approved request started (marked before sending, so
    /// a crash mid-forward is never silently resent).
    Forwarded,
    /// What the agent got from countersign: the status and body of a
    /// refusal, a 202 with its status URL, or the upstream's answer relayed.
    Answered,
    /// A policy revision's files, recorded once before the first decision
    /// that uses it (action id `policy:<revision>`, not an action).
    Policy,
}

impl Kind {
    /// The name stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Decided => "decided",
            Kind::Completed => "completed",
            Kind::Failed => "failed",
            Kind::Notified => "notified",
            Kind::Reviewed => "reviewed",
            Kind::ReviewRefused => "review_refused",
            Kind::Approved => "approved",
            Kind::Rejected => "rejected",
            Kind::Expired => "expired",
            Kind::Cancelled => "cancelled",
            Kind::Forwarded => "forwarded",
            Kind::Answered => "answered",
            Kind::Policy => "policy",
        }
    }

    /// Every kind, for parsing stored names.
    pub const ALL: [Kind; 13] = [
        Kind::Decided,
        Kind::Completed,
        Kind::Failed,
        Kind::Notified,
        Kind::Reviewed,
        Kind::ReviewRefused,
        Kind::Approved,
        Kind::Rejected,
        Kind::Expired,
        Kind::Cancelled,
        Kind::Forwarded,
        Kind::Answered,
        Kind::Policy,
    ];

    /// The kind a stored name stands for.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An action's state (docs/reference.md#actions-and-their-states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Allowed by policy; forwarding.
    Allowed,
    /// Denied by policy.
    Denied,
    /// Held for review.
    Pending,
    /// Approved by enough reviewers; being forwarded.
    Approved,
    /// Rejected by a reviewer.
    Rejected,
    /// Not decided before its expiry.
    Expired,
    /// Cancelled while pending.
    Cancelled,
    /// Forwarded and answered.
    Completed,
    /// Ended without an upstream answer.
    Failed,
}

impl State {
    /// The name used in the record, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Allowed => "allowed",
            State::Denied => "denied",
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
            State::Completed => "completed",
            State::Failed => "failed",
        }
    }

    /// Every state, for parsing and for validating filters.
    pub const ALL: [State; 9] = [
        State::Allowed,
        State::Denied,
        State::Pending,
        State::Approved,
        State::Rejected,
        State::Expired,
        State::Cancelled,
        State::Completed,
        State::Failed,
    ];

    /// The state a name stands for.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether nothing more will happen to the action.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Allowed | State::Pending | State::Approved)
    }
}

/// A record to append; the store gives it `seq`, time and hashes.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The action this record belongs to.
    pub action_id: String,
    /// Event kind.
    pub kind: Kind,
    /// Event payload. Drafts that carry request, policy or upstream text
    /// are built through [`Draft::redacted`] with the call's secrets.
    pub payload: Value,
    /// How the action's indexed summary changes.
    pub index: IndexUpdate,
}

impl Draft {
    /// A record that moves the action to `state` (or leaves it, with `None`).
    pub fn new(action_id: &str, kind: Kind, payload: Value, state: Option<State>) -> Draft {
        Draft {
            action_id: action_id.to_string(),
            kind,
            payload,
            index: IndexUpdate {
                state,
                ..Default::default()
            },
        }
    }

    /// `failed`: the action ended at `stage` without an upstream answer;
    /// `status` is what the agent got.
    pub fn failed(action_id: &str, stage: &str, reason: &str, error: &str, status: u16) -> Draft {
        let payload =
            serde_json::json!({"stage": stage, "reason": reason, "error": error, "status": status});
        Draft::new(action_id, Kind::Failed, payload, Some(State::Failed))
    }

    /// The draft with every secret of `secrets` scrubbed from its payload
    /// (see [`Secrets::scrub_payload`] for what is left as declared). Every
    /// record of a call that carries request, policy or upstream text is
    /// built through this.
    pub fn redacted(mut self, secrets: &Secrets) -> Draft {
        secrets.scrub_payload(&mut self.payload);
        self
    }

    /// `completed`: the upstream's answer as captured, and how long it took.
    pub fn completed(
        action_id: &str,
        mut response: Value,
        upstream_ms: f64,
        body_error: Option<String>,
    ) -> Draft {
        if let Some(e) = body_error {
            response["body_error"] = Value::String(e);
        }
        let status = response["status"].as_i64();
        let payload = serde_json::json!({"response": response, "upstream_ms": upstream_ms});
        let mut d = Draft::new(action_id, Kind::Completed, payload, Some(State::Completed));
        d.index.upstream_status = status;
        d
    }
}

/// How a record changes its action's row in the searchable index (the
/// `actions` table). The index is derived from the records and only finds
/// actions quickly (`audit list`, what is due); the records are the truth.
#[derive(Debug, Clone, Default)]
pub struct IndexUpdate {
    /// New state.
    pub state: Option<State>,
    /// Risk from the decision.
    pub risk: Option<String>,
    /// Route name, method, path and agent: set by the first record.
    pub summary: Option<Summary>,
    /// When a pending hold expires (RFC 3339).
    pub expires_at: Option<String>,
    /// Until when the process that allowed or forwards the action answers
    /// for its result (RFC 3339); past it another process may mark it
    /// interrupted.
    pub lease_until: Option<String>,
    /// A forward of the approved action was claimed.
    pub forward_claimed: bool,
    /// The upstream's status, once completed.
    pub upstream_status: Option<i64>,
}

impl IndexUpdate {
    /// Folds a later update of the same action into this one, so that the
    /// index row after the folded update is the row after each in turn:
    /// every field a later update sets replaces this one's, the first
    /// summary stays, and a claimed forward stays claimed. Both stores fold
    /// a batch's updates with it before writing a row once.
    pub fn absorb(&mut self, later: &IndexUpdate) {
        if self.summary.is_none() {
            self.summary.clone_from(&later.summary);
        }
        self.state = later.state.or(self.state);
        if later.risk.is_some() {
            self.risk.clone_from(&later.risk);
        }
        if later.expires_at.is_some() {
            self.expires_at.clone_from(&later.expires_at);
        }
        if later.lease_until.is_some() {
            self.lease_until.clone_from(&later.lease_until);
        }
        self.forward_claimed |= later.forward_claimed;
        self.upstream_status = later.upstream_status.or(self.upstream_status);
    }
}

/// First-record facts about an action.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Route name.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Agent id, if declared.
    pub agent: Option<String>,
}

/// A committed record.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Commit time, RFC 3339 UTC.
    pub time: String,
    /// The action.
    pub action_id: String,
    /// Event kind name.
    pub kind: String,
    /// Payload (parsed).
    pub payload: Value,
    /// The payload exactly as stored and hashed (absent for records built
    /// in memory). Verification hashes this text, not a re-encoding.
    #[serde(skip)]
    pub payload_text: Option<String>,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The chain hash: SHA-256 over a line-separated encoding. The fields before
/// the payload never contain a newline (ids are hex, kinds and times are
/// fixed formats), and the payload is last, so the encoding is unambiguous.
pub fn chain_hash(
    seq: i64,
    time: &str,
    action_id: &str,
    kind: &str,
    prev_hash: &str,
    payload: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"countersign-record-v1\n");
    for field in [seq.to_string().as_str(), time, action_id, kind, prev_hash] {
        h.update(field.as_bytes());
        h.update(b"\n");
    }
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

/// Canonical JSON: object keys sorted, no insignificant white space. The
/// stored payload text is exactly this, and the hash covers that text.
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::with_capacity(512);
    write_canonical(v, &mut out);
    // Only serde_json's own output (UTF-8) and ASCII punctuation were
    // written; were that ever not so, the text would still say what it is.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes `v` with its keys in byte order. Every record's payload passes
/// through here on the writer thread, so it allocates nothing per value:
/// strings and scalars are written by serde_json itself (its escaping is
/// the canonical one), and keys are sorted only when the map does not
/// already iterate in order (it does unless serde_json's `preserve_order`
/// is switched on by some dependency).
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            out.push(b'{');
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| a.as_bytes() <= b.as_bytes());
            let write_entry = |i: usize, k: &String, v: &Value, out: &mut Vec<u8>| {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write_canonical(v, out);
            };
            if sorted {
                for (i, (k, v)) in map.iter().enumerate() {
                    write_entry(i, k, v, out);
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    write_entry(i, k, v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

impl Record {
    /// Whether this record's hash covers exactly its stored content.
    pub fn hash_matches(&self) -> bool {
        let text = match &self.payload_text {
            Some(t) => t.clone(),
            None => canonical_json(&self.payload),
        };
        chain_hash(
            self.seq,
            &self.time,
            &self.action_id,
            &self.kind,
            &self.prev_hash,
            &text,
        ) == self.hash
    }
}

/// A fresh action id: 128 bits as 32 lower-case hex characters, the first
/// 48 the creation time in milliseconds since the Unix epoch, the other 80
/// random.
///
/// Why not 128 random bits: the id keys the record's indexes (an action's
/// records, the action list), and random keys scatter every insert over the
/// whole b-tree, so each commit rewrote one 4 KiB page per action and the
/// pages touched grew with the file. Ids that start with the time land
/// together at the end of each index. 80 random bits per millisecond are
/// still far beyond guessing (the id is the capability for the status URL);
/// what the prefix tells is when the action began, which its records say
/// anyway. Measured in docs/benchmarks.md.
pub fn new_action_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    // The OS generator failing means the machine cannot make secrets at all;
    // nothing sensible can continue.
    getrandom::getrandom(&mut bytes[6..]).expect("the operating system's random generator failed");
    hex::encode(bytes)
}

/// Whether `s` looks like an action id (so it is safe to use in queries and paths).
pub fn is_action_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_escapes_as_serde_json_does() {
        // The stored text of every record ever written depends on this.
        let v = json!({"t": true, "é\u{1}": "a\n\"q\" \u{7f}", "n": [-0.0, 1.5e300, 12, -3]});
        assert_eq!(
            canonical_json(&v),
            "{\"n\":[-0.0,1.5e+300,12,-3],\"t\":true,\"é\\u0001\":\"a\\n\\\"q\\\" \u{7f}\"}"
        );
    }

    #[test]
    fn hash_changes_with_every_field() {
        let base = chain_hash(1, "t", "a", "decided", GENESIS, "{}");
        assert_ne!(base, chain_hash(2, "t", "a", "decided", GENESIS, "{}"));
        assert_ne!(base, chain_hash(1, "t", "a", "decided", GENESIS, "{ }"));
        assert_ne!(base, chain_hash(1, "t", "b", "decided", GENESIS, "{}"));
    }

    #[test]
    fn action_ids_are_distinct_and_well_formed() {
        let (a, b) = (new_action_id(), new_action_id());
        assert!(is_action_id(&a) && is_action_id(&b));
        assert_ne!(a, b);
        // The random part differs even within one millisecond.
        assert_ne!(a[12..], b[12..]);
    }

    #[test]
    fn action_ids_start_with_their_time_so_later_ones_sort_later() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let first = new_action_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_action_id();
        let millis = u64::from_str_radix(&first[..12], 16).unwrap();
        assert!(millis >= before && millis < before + 1000, "{first}");
        assert!(second > first, "{second} should sort after {first}");
    }
}
