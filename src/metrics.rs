//! Prometheus metrics, kept by hand: a few counters and histograms do not
//! justify a metrics framework, and the text format is simple.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections, buffered bytes).
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Takes `n` away (never below zero).
    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    /// Adds `n` unless the result would exceed `limit`; says whether it did.
    /// One atomic step, so concurrent callers can never overshoot together.
    pub fn try_add(&self, n: u64, limit: u64) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                v.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok()
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What one listener reports: its open connections and how often it was full.
#[derive(Default)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Times the listener reached its connection limit and stopped accepting.
    pub limit_reached: Counter,
}

/// Bucket upper bounds in seconds, from 50 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// A latency histogram in seconds.
pub struct Histogram {
    buckets: [AtomicU64; 16],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric the process exports.
#[derive(Default)]
pub struct Metrics {
    /// Decisions by (action, risk).
    decisions: Mutex<BTreeMap<(String, String), u64>>,
    /// Calls refused before or instead of forwarding, by reason.
    refusals: Mutex<BTreeMap<String, u64>>,
    /// Upstream responses by status class.
    upstream_responses: Mutex<BTreeMap<String, u64>>,
    /// Policy decision latency, waiting for a policy thread included.
    pub policy_eval_seconds: Histogram,
    /// Upstream latency until response headers.
    pub upstream_seconds: Histogram,
    /// Record batch commit latency.
    pub record_commit_seconds: Histogram,
    /// Record commits that failed.
    pub record_commit_failures: Counter,
    /// Reloads refused (the last good state stayed in force), by what.
    reload_failures: Mutex<BTreeMap<String, u64>>,
    /// Accepted reviews by the state they left the action in.
    reviews: Mutex<BTreeMap<String, u64>>,
    /// Refused review attempts by reason.
    review_refusals: Mutex<BTreeMap<String, u64>>,
    /// Notification attempts by outcome.
    notifications: Mutex<BTreeMap<String, u64>>,
    /// Time from hold to resolution (approved, rejected, expired, cancelled).
    pub hold_resolution_seconds: Histogram,
    /// The proxy listener's connections.
    pub proxy_listener: Arc<ListenerMetrics>,
    /// The admin listener's connections.
    pub admin_listener: Arc<ListenerMetrics>,
    /// Request body bytes buffered now, against `limits.max_buffered_body_bytes`.
    pub buffered_body_bytes: Arc<Gauge>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_insert(0) += 1;
}

impl Metrics {
    /// Counts a policy decision.
    pub fn decision(&self, action: &str, risk: &str) {
        bump(&self.decisions, (action.to_string(), risk.to_string()));
    }

    /// Counts a refused call (`no_route`, `body_too_large`, `policy_error`, ...).
    pub fn refused(&self, reason: &str) {
        bump(&self.refusals, reason.to_string());
    }

    /// Counts an upstream answer (`2xx`, ..., or `error`/`timeout`).
    pub fn upstream(&self, class: &str) {
        bump(&self.upstream_responses, class.to_string());
    }

    /// Counts a refused reload of `what` (policy, reviewers, tls).
    pub fn reload_failed(&self, what: &str) {
        bump(&self.reload_failures, what.to_string());
    }

    /// Counts an accepted review by the state it left the action in.
    pub fn review(&self, state: &str) {
        bump(&self.reviews, state.to_string());
    }

    /// Counts a refused review attempt.
    pub fn review_refused(&self, reason: &str) {
        bump(&self.review_refusals, reason.to_string());
    }

    /// Counts a notification attempt.
    pub fn notification(&self, delivered: bool) {
        bump(
            &self.notifications,
            if delivered { "delivered" } else { "failed" }.to_string(),
        );
    }

    /// Prometheus text exposition.
    pub fn render(&self, policy_revision: &str, policy_engine: &str, pending: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP countersign_pending_actions Held actions waiting for reviews or being forwarded.\n# TYPE countersign_pending_actions gauge\ncountersign_pending_actions {pending}"
        );
        for (name, help, map, label) in [
            (
                "countersign_reviews_total",
                "Accepted reviews by the state they left the action in.",
                &self.reviews,
                "state",
            ),
            (
                "countersign_review_refusals_total",
                "Refused review attempts by reason.",
                &self.review_refusals,
                "reason",
            ),
            (
                "countersign_notifications_total",
                "Notification delivery attempts by outcome.",
                &self.notifications,
                "outcome",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, n) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {n}");
            }
        }
        self.hold_resolution_seconds.render(
            "countersign_hold_resolution_seconds",
            "Time from hold to resolution (approved, rejected, expired or cancelled).",
            &mut out,
        );
        out.push_str("# HELP countersign_decisions_total Policy decisions by action and risk.\n# TYPE countersign_decisions_total counter\n");
        for ((action, risk), n) in self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "countersign_decisions_total{{action=\"{action}\",risk=\"{risk}\"}} {n}"
            );
        }
        out.push_str("# HELP countersign_refused_total Calls answered without forwarding for a reason other than the policy's deny.\n# TYPE countersign_refused_total counter\n");
        for (reason, n) in self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "countersign_refused_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP countersign_upstream_responses_total Upstream outcomes by status class.\n# TYPE countersign_upstream_responses_total counter\n");
        for (class, n) in self
            .upstream_responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "countersign_upstream_responses_total{{class=\"{class}\"}} {n}"
            );
        }
        self.policy_eval_seconds.render(
            "countersign_policy_eval_seconds",
            "Time from asking for a decision to getting it (waiting for a policy thread included).",
            &mut out,
        );
        self.upstream_seconds.render(
            "countersign_upstream_seconds",
            "Time from forwarding to the upstream's response headers.",
            &mut out,
        );
        self.record_commit_seconds.render(
            "countersign_record_commit_seconds",
            "Time to commit one batch of records (one fsync).",
            &mut out,
        );
        let _ = writeln!(
            out,
            "# HELP countersign_record_commit_failures_total Record batches that failed to commit.\n# TYPE countersign_record_commit_failures_total counter\ncountersign_record_commit_failures_total {}",
            self.record_commit_failures.get()
        );
        let _ = writeln!(
            out,
            "# HELP countersign_reload_failures_total Reloads refused (the last good state stayed in force), by what.\n# TYPE countersign_reload_failures_total counter"
        );
        for (what, n) in self
            .reload_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "countersign_reload_failures_total{{what=\"{what}\"}} {n}"
            );
        }
        out.push_str("# HELP countersign_open_connections Connections open now, by listener (with forwards that outlive their connection).\n# TYPE countersign_open_connections gauge\n");
        for (listener, m) in [
            ("proxy", &self.proxy_listener),
            ("admin", &self.admin_listener),
        ] {
            let _ = writeln!(
                out,
                "countersign_open_connections{{listener=\"{listener}\"}} {}",
                m.open.get()
            );
        }
        out.push_str("# HELP countersign_connection_limit_reached_total Times a listener reached its connection limit and stopped accepting, by listener.\n# TYPE countersign_connection_limit_reached_total counter\n");
        for (listener, m) in [
            ("proxy", &self.proxy_listener),
            ("admin", &self.admin_listener),
        ] {
            let _ = writeln!(
                out,
                "countersign_connection_limit_reached_total{{listener=\"{listener}\"}} {}",
                m.limit_reached.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP countersign_buffered_body_bytes Request body bytes buffered now (limits.max_buffered_body_bytes bounds it).\n# TYPE countersign_buffered_body_bytes gauge\ncountersign_buffered_body_bytes {}",
            self.buffered_body_bytes.get()
        );
        let _ = writeln!(
            out,
            "# HELP countersign_policy_info The policy revision in force.\n# TYPE countersign_policy_info gauge\ncountersign_policy_info{{revision=\"{policy_revision}\",engine=\"{policy_engine}\"}} 1"
        );
        out
    }
}
