//! OPA decision-log export: every decision as one JSON line in the shape
//! OPA's decision logs have (`decision_id`, `path`, `input`, `result`,
//! `timestamp`, `labels`, `bundles`, `metrics`), so pipelines built for OPA
//! ingest countersign's decisions unchanged. The input is the one the
//! record keeps (redacted the same way), and the call's secrets are
//! scrubbed from the whole line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use serde_json::{json, Value};

use crate::config::DecisionLogSink;

/// Lines waiting for the writer thread; past this a line is dropped and
/// counted (the record, not this export, is what must never lose one).
const QUEUE: usize = 65_536;

/// Why the decision log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("decision_log.path: cannot open {path} for appending: {source}")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

/// The writer of decision-log lines; writing never blocks a call.
pub struct DecisionLog {
    lines: SyncSender<String>,
    dropped: AtomicU64,
}

/// One decision, as the pipeline knows it.
pub struct Entry<'a> {
    /// The action id (OPA's `decision_id`).
    pub decision_id: &'a str,
    /// The entrypoint, e.g. `data.countersign.decision`.
    pub entrypoint: &'a str,
    /// The policy input as recorded (redacted).
    pub input: &'a Value,
    /// What the policy returned, or `None` when it failed.
    pub result: Option<&'a Value>,
    /// Why the policy failed, when it did.
    pub error: Option<&'a str>,
    /// The policy revision.
    pub revision: &'a str,
    /// RFC 3339 time of the decision.
    pub timestamp: &'a str,
    /// Evaluation time.
    pub eval_ns: u128,
    /// This process's id.
    pub instance: &'a str,
}

impl Entry<'_> {
    /// The OPA decision-log object.
    pub fn to_json(&self) -> Value {
        let path = self
            .entrypoint
            .strip_prefix("data.")
            .unwrap_or(self.entrypoint)
            .replace('.', "/");
        let mut line = json!({
            "decision_id": self.decision_id,
            "labels": {"id": self.instance, "app": "countersign", "version": env!("CARGO_PKG_VERSION")},
            "path": path,
            "input": self.input,
            "timestamp": self.timestamp,
            "revision": self.revision,
            "bundles": {"countersign": {"revision": self.revision}},
            "metrics": {"timer_rego_query_eval_ns": self.eval_ns as u64},
        });
        match (self.result, self.error) {
            (Some(r), _) => line["result"] = r.clone(),
            (None, Some(e)) => line["error"] = json!({"code": "eval_error", "message": e}),
            (None, None) => {}
        }
        line
    }
}

impl DecisionLog {
    /// Opens the sink (a file is created if need be and appended to) and
    /// starts the thread that writes to it.
    pub fn open(sink: &DecisionLogSink) -> Result<DecisionLog, OpenError> {
        let mut out: Box<dyn Write + Send> = match sink {
            DecisionLogSink::Stdout => Box::new(std::io::stdout()),
            DecisionLogSink::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| OpenError {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let (lines, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                for line in rx {
                    // One write per line: appends from several processes
                    // to one file do not interleave within a line.
                    if let Err(e) = out.write_all(line.as_bytes()).and_then(|_| out.flush()) {
                        tracing::warn!(error = %e, "cannot write the decision log");
                    }
                }
            })
            .map_err(|source| OpenError {
                path: "the writer thread".into(),
                source,
            })?;
        Ok(DecisionLog {
            lines,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues one line; never blocks.
    pub fn write(&self, line: &Value) {
        let text = line.to_string() + "\n";
        match self.lines.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped = n, "the decision log is behind; a line was dropped (the record keeps the decision)");
            }
        }
    }
}
