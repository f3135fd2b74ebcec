//! Replaying a decision: the `decided` record's input evaluated again on
//! the policy revision the record names (its files from the `policy`
//! record), and the result compared with the decision that was recorded.
//!
//! The input is the one the record keeps: redacted like the request view
//! (header values off the allowlist and secret query values are
//! `[redacted]`). A policy that reads a redacted value may decide
//! differently on replay; the report says so when the decisions differ.

use std::time::Duration;

use serde_json::{json, Value};

use super::revisions;
use crate::config::{EngineChoice, InputShape, PolicyConfig};
use crate::policy::{decision, input, Policy, Source};

/// Why a decision could not be replayed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CannotReplay(pub String);

/// A replayed decision next to the recorded one.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The revision the record names.
    pub revision: String,
    /// The revision the files recompute to.
    pub files_revision: String,
    /// The engine used (the one recorded).
    pub engine: String,
    /// The decision as recorded.
    pub recorded: Value,
    /// The decision the replay reached, or why it reached none.
    pub replayed: Result<Value, String>,
}

impl Replayed {
    /// Whether the files are the recorded revision's and the replay
    /// reached the recorded decision.
    pub fn agrees(&self) -> bool {
        self.files_revision == self.revision
            && self.replayed.as_ref().is_ok_and(|d| *d == self.recorded)
    }

    /// What differs, one sentence each (empty when it agrees).
    pub fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.files_revision != self.revision {
            out.push(format!(
                "the policy files hash to revision {}, not to the recorded {}",
                self.files_revision, self.revision
            ));
        }
        match &self.replayed {
            Err(e) => out.push(format!("the replay reached no decision: {e}")),
            Ok(d) => {
                for field in ["action", "risk", "rules", "reasons", "approval"] {
                    if d[field] != self.recorded[field] {
                        out.push(format!(
                            "{field}: recorded {}, replayed {}",
                            self.recorded[field], d[field]
                        ));
                    }
                }
            }
        }
        out
    }
}

/// Replays the decision of a `decided` record payload on the files of a
/// `policy` record payload.
pub fn replay(decided: &Value, policy: &Value) -> Result<Replayed, CannotReplay> {
    let no = |why: &str| CannotReplay(why.to_string());
    let input = decided
        .get("input")
        .filter(|v| v.is_object())
        .ok_or_else(|| no("the decided record keeps no policy input (it was recorded by a countersign that did not keep inputs), so it cannot be replayed"))?;
    if decided["input_body_omitted"] == json!(true) {
        return Err(no("the request body was larger than capture.max_recorded_body_bytes, so the recorded input does not hold it and the decision cannot be replayed"));
    }
    let revision = decided["policy"]["revision"]
        .as_str()
        .ok_or_else(|| no("the decided record names no policy revision"))?
        .to_string();
    let sources: Vec<Source> =
        revisions::sources_of(policy).ok_or_else(|| no("the policy record holds no files"))?;
    let entrypoint = decided["policy"]["entrypoint"]
        .as_str()
        .unwrap_or("data.countersign.decision")
        .to_string();
    let engine = decided["policy"]["engine"]
        .as_str()
        .unwrap_or("interpreter")
        .to_string();
    let settings = PolicyConfig {
        dir: Default::default(),
        entrypoint,
        input: InputShape::Native,
        timeout: Duration::from_secs(5),
        engine: if engine == "vm" {
            EngineChoice::Vm
        } else {
            EngineChoice::Interpreter
        },
    };
    let files_revision = crate::policy::revision_of(&sources);
    let replayed = Policy::from_sources(sources, &settings)
        .map_err(|e| format!("the recorded policy does not load: {e}"))
        .and_then(|p| {
            p.evaluate(input::to_rego(input.clone()))
                .map_err(|e| e.to_string())
        })
        .and_then(|raw| {
            // The recorded decision kept the contract with the config of
            // its day; here only the decision itself is compared.
            decision::check(&raw, None, Duration::from_secs(10 * 365 * 86_400))
                .map_err(|e| format!("the decision breaks the contract: {e}"))
        })
        .map(|d| serde_json::to_value(&d).unwrap_or(Value::Null));
    Ok(Replayed {
        revision,
        files_revision,
        engine,
        recorded: decided["decision"].clone(),
        replayed,
    })
}

/// A replay as the CLI prints it.
pub fn describe(action_id: &str, r: &Replayed) -> String {
    let brief = |d: &Value| {
        format!(
            "{} (risk {}, rules {})",
            d["action"].as_str().unwrap_or("?"),
            d["risk"].as_str().unwrap_or("?"),
            d["rules"]
        )
    };
    if r.agrees() {
        format!(
            "action {action_id}: the replay on revision {} ({} engine) reaches the recorded decision: {}\n",
            r.revision,
            r.engine,
            brief(&r.recorded)
        )
    } else {
        let mut out = format!(
            "action {action_id}: the replay on revision {} ({} engine) does NOT reach the recorded decision\n   recorded: {}\n",
            r.revision,
            r.engine,
            brief(&r.recorded)
        );
        if let Ok(d) = &r.replayed {
            out.push_str(&format!("   replayed: {}\n", brief(d)));
        }
        for d in r.differences() {
            out.push_str(&format!("   - {}\n", super::view::printable(&d)));
        }
        out.push_str("   (the replay reads the input as recorded: redacted header and query values are [redacted])\n");
        out
    }
}
