//! An action reconstructed from its records alone: the five things the
//! record must answer (request, evidence, recommended action, reviewer decisions,
//! resulting change) plus the ordered records themselves. Used by
//! `audit show` and `GET /v1/actions/<id>`.
//!
//! The text form prints data an agent chose (bodies, headers, evidence,
//! policy reasons built from them) on a reviewer's terminal, so every
//! string in it goes through [`printable`]: no control character, escape
//! sequence or line break from the data reaches the screen, and a crafted
//! value cannot forge a line of the timeline.

use std::fmt::Write;

use serde_json::{json, Value};

use super::record::Record;

/// Builds the action view as JSON.
pub fn action_json(action_id: &str, records: &[Record]) -> Value {
    let mut view = json!({
        "action_id": action_id,
        "state": Value::Null,
        "request": Value::Null,
        "agent": Value::Null,
        "evidence": Value::Null,
        "route": Value::Null,
        "decision": Value::Null,
        "policy": Value::Null,
        "reviews": [],
        "refused_reviews": [],
        "notifications": [],
        "resolution": Value::Null,
        "result": Value::Null,
    });
    for r in records {
        let p = &r.payload;
        for key in [
            "request", "agent", "evidence", "route", "policy", "decision",
        ] {
            if view[key].is_null() && !p[key].is_null() {
                view[key] = p[key].clone();
            }
        }
        match r.kind.as_str() {
            "decided" => {
                view["state"] = p["state"].clone();
                view["request_digest"] = p["request_digest"].clone();
                if !p["hold"].is_null() {
                    view["hold"] = json!({"reviewers": p["hold"]["eligible"], "min": p["hold"]["min"], "expires_at": p["hold"]["expires_at"]});
                }
            }
            "completed" => {
                view["state"] = json!("completed");
                view["result"] = json!({"outcome": "completed", "time": r.time, "response": p["response"], "upstream_ms": p["upstream_ms"]});
            }
            "failed" => {
                view["state"] = json!("failed");
                view["result"] = json!({"outcome": "failed", "time": r.time, "stage": p["stage"], "reason": p["reason"], "error": p["error"], "status": p["status"]});
            }
            "reviewed" => push(
                &mut view,
                "reviews",
                json!({"time": r.time, "reviewer": p["reviewer"], "verdict": p["verdict"], "comment": p["comment"], "key": p["key"]}),
            ),
            "review_refused" => push(
                &mut view,
                "refused_reviews",
                json!({"time": r.time, "reviewer": p["reviewer"], "status": p["status"], "reason": p["reason"], "error": p["error"]}),
            ),
            "notified" => push(
                &mut view,
                "notifications",
                json!({"time": r.time, "hook": p["hook"], "attempt": p["attempt"], "delivered": p["delivered"], "status": p["status"], "error": p["error"]}),
            ),
            kind @ ("approved" | "rejected" | "expired" | "cancelled") => {
                view["state"] = json!(kind);
                view["resolution"] = json!({"outcome": kind, "time": r.time, "detail": p});
            }
            "forwarded" => view["forwarded_at"] = json!(r.time),
            _ => {}
        }
    }
    view["records"] = serde_json::to_value(records).unwrap_or(Value::Null);
    view
}

fn push(view: &mut Value, key: &str, item: Value) {
    match view.get_mut(key).and_then(Value::as_array_mut) {
        Some(list) => list.push(item),
        None => view[key] = json!([item]),
    }
}

/// `text` safe to print on a terminal, on one line: control characters
/// (C0, DEL, C1, so also ESC and every ANSI sequence), line and paragraph
/// separators and bidirectional-text controls are written as escapes
/// (`\n`, `\r`, `\t`, `\u{1b}`, `\u{202e}`, ...). Everything else,
/// backslashes included, is printed as it is.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unprintable(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that move the cursor, change the terminal's state or reorder
/// the text around them.
fn unprintable(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (ESC, CSI, NEL, ...)
        || matches!(c,
            '\u{2028}' | '\u{2029}'                 // line / paragraph separator
            | '\u{061c}' | '\u{200e}' | '\u{200f}'   // bidi marks
            | '\u{202a}'..='\u{202e}'               // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}'               // bidi isolates
            | '\u{feff}') // zero-width no-break space
}

fn s(v: &Value) -> String {
    printable(&match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn body_summary(body: &Value) -> String {
    printable(&match body["encoding"].as_str() {
        Some("json") => body["json"].to_string(),
        Some("text") => {
            let t = body["text"].as_str().unwrap_or_default();
            let cut: String = t.chars().take(200).collect();
            if body["truncated"] == json!(true) || cut.len() < t.len() {
                format!("{cut}… (cut)")
            } else {
                cut
            }
        }
        Some("base64") => "(binary)".into(),
        _ => "(empty)".into(),
    })
}

/// How the caller's identity was established, in one line.
fn identity_line(v: &Value) -> String {
    let acting_for = match v["on_behalf_of"].as_str() {
        Some(_) => format!(", acting for {}", s(&v["on_behalf_of"])),
        None => String::new(),
    };
    match v["method"].as_str() {
        Some("jwt") => format!(
            "verified by JWT (issuer {}, key {}, jti {}, expires {}) as {}{acting_for}",
            s(&v["issuer"]),
            s(&v["proof"]["kid"]),
            s(&v["proof"]["jti"]),
            s(&v["proof"]["expires_at"]),
            s(&v["agent"]),
        ),
        Some("mtls") => format!(
            "verified by mTLS as {} (certificate sha256 {})",
            s(&v["subject"]),
            s(&v["proof"]["sha256"]),
        ),
        Some("pod") => format!(
            "verified as pod {} (sidecar, {})",
            s(&v["subject"]),
            s(&v["proof"]["source"]),
        ),
        _ => "declared, not verified".into(),
    }
}

/// The action as a timeline a reviewer who was not there can follow.
pub fn action_text(view: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "action {}  state: {}",
        s(&view["action_id"]),
        s(&view["state"])
    );
    let time = view["records"][0]["time"].clone();
    let _ = writeln!(out, "\n1. REQUEST  ({})", s(&time));
    let a = &view["agent"];
    let _ = writeln!(out, "   agent:        {}", s(&a["id"]));
    let _ = writeln!(out, "   on behalf of: {}", s(&a["on_behalf_of"]));
    let _ = writeln!(out, "   intent:       {}", s(&a["intent"]));
    let _ = writeln!(out, "   identity:     {}", identity_line(&a["verified"]));
    for field in a["verified"]["mismatch"].as_array().into_iter().flatten() {
        let (declared, proven) = match field.as_str() {
            Some("id") => (&a["id"], &a["verified"]["agent"]),
            _ => (&a["on_behalf_of"], &a["verified"]["on_behalf_of"]),
        };
        let _ = writeln!(
            out,
            "   MISMATCH:     declared {} `{}` is not the verified `{}`",
            s(field),
            s(declared),
            s(proven)
        );
    }
    let r = &view["request"];
    let _ = writeln!(out, "   call:         {} {}", s(&r["method"]), s(&r["url"]));
    let _ = writeln!(out, "   route:        {}", s(&view["route"]["name"]));
    if !view["request_digest"].is_null() {
        let _ = writeln!(out, "   digest:       {}", s(&view["request_digest"]));
    }
    let _ = writeln!(
        out,
        "   body:         {} ({} bytes, sha256 {})",
        body_summary(&r["body"]),
        s(&r["body_size"]),
        s(&r["body_sha256"])
    );

    let _ = writeln!(out, "\n2. EVIDENCE");
    match view["evidence"].as_object() {
        Some(e) if !e.is_empty() => {
            for (k, v) in e {
                let _ = writeln!(out, "   {}: {}", printable(k), s(v));
            }
        }
        _ => {
            let _ = writeln!(out, "   (none declared)");
        }
    }

    let _ = writeln!(out, "\n3. DECISION");
    let d = &view["decision"];
    if d.is_null() {
        let _ = writeln!(out, "   (no decision was made)");
    } else {
        let _ = writeln!(
            out,
            "   action: {}   risk: {}",
            s(&d["action"]),
            s(&d["risk"])
        );
        for rule in d["rules"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "   rule:   {}", s(rule));
        }
        for reason in d["reasons"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "   reason: {}", s(reason));
        }
        if !d["approval"].is_null() {
            let ap = &d["approval"];
            let names = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "   approval: {} of {} (asked: reviewers [{}] groups [{}]); expires {}",
                s(&ap["min"]),
                names(&view["hold"]["reviewers"]),
                names(&ap["reviewers"]),
                names(&ap["groups"]),
                s(&view["hold"]["expires_at"])
            );
        }
    }
    let p = &view["policy"];
    if !p.is_null() {
        let _ = writeln!(
            out,
            "   policy revision: {} ({} engine, {})",
            s(&p["revision"]),
            s(&p["engine"]),
            s(&p["entrypoint"])
        );
    }

    let _ = writeln!(out, "\n4. REVIEWS");
    match view["reviews"].as_array() {
        Some(rs) if !rs.is_empty() => {
            for rv in rs {
                let key = match rv["key"].as_str() {
                    Some(k) => format!("  [signed: {k} key]"),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "   {} {} by {}: {}{key}",
                    s(&rv["time"]),
                    s(&rv["verdict"]),
                    s(&rv["reviewer"]),
                    s(&rv["comment"])
                );
            }
        }
        _ => {
            let none = if view["state"] == json!("pending") {
                "   (none yet)"
            } else {
                "   (none)"
            };
            let _ = writeln!(out, "{none}");
        }
    }
    for rf in view["refused_reviews"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "   {} refused attempt as {} ({}): {}",
            s(&rf["time"]),
            s(&rf["reviewer"]),
            s(&rf["status"]),
            s(&rf["error"])
        );
    }
    for n in view["notifications"].as_array().into_iter().flatten() {
        let outcome = if n["delivered"] == json!(true) {
            "delivered".to_string()
        } else {
            format!(
                "not delivered ({})",
                if n["error"].is_null() {
                    s(&n["status"])
                } else {
                    s(&n["error"])
                }
            )
        };
        let _ = writeln!(
            out,
            "   {} notice to {} attempt {}: {outcome}",
            s(&n["time"]),
            s(&n["hook"]),
            s(&n["attempt"])
        );
    }
    let res = &view["resolution"];
    if !res.is_null() {
        let _ = writeln!(
            out,
            "   {}  resolution: {}",
            s(&res["time"]),
            s(&res["outcome"]).to_uppercase()
        );
    }

    let _ = writeln!(out, "\n5. RESULT");
    let res = &view["result"];
    match res["outcome"].as_str() {
        Some("completed") => {
            let resp = &res["response"];
            let _ = writeln!(
                out,
                "   {}  upstream answered {} in {:.1} ms",
                s(&res["time"]),
                s(&resp["status"]),
                res["upstream_ms"].as_f64().unwrap_or(0.0)
            );
            let _ = writeln!(
                out,
                "   body: {} ({} bytes, sha256 {})",
                body_summary(&resp["body"]),
                s(&resp["body_size"]),
                s(&resp["body_sha256"])
            );
        }
        Some("failed") => {
            let _ = writeln!(
                out,
                "   {}  not completed ({} at {}, answered {}): {}",
                s(&res["time"]),
                s(&res["reason"]),
                s(&res["stage"]),
                s(&res["status"]),
                s(&res["error"])
            );
        }
        _ => {
            let state = s(&view["state"]);
            let what = if ["denied", "rejected", "expired", "cancelled"].contains(&state.as_str()) {
                format!("   nothing was forwarded ({state})")
            } else {
                "   (no result yet)".to_string()
            };
            let _ = writeln!(out, "{what}");
        }
    }

    let _ = writeln!(out, "\nRECORDS");
    for rec in view["records"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "   #{:<6} {}  {:<10} hash {}",
            s(&rec["seq"]),
            s(&rec["time"]),
            s(&rec["kind"]),
            s(&rec["hash"]).chars().take(16).collect::<String>()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_moves_the_cursor_or_reorders_text() {
        assert_eq!(
            printable("a\n  reviewed by alice: approve\u{1b}[31m\r\t\u{7f}\u{85}"),
            "a\\n  reviewed by alice: approve\\u{1b}[31m\\r\\t\\u{7f}\\u{85}"
        );
        assert_eq!(
            printable("x\u{2028}y\u{202e}z\u{2066}"),
            "x\\u{2028}y\\u{202e}z\\u{2066}"
        );
        assert_eq!(printable("plain é 漢字 C:\\dir"), "plain é 漢字 C:\\dir");
    }

    #[test]
    fn the_text_view_has_no_line_from_the_data() {
        let view = action_json(
            "a",
            &[Record {
                seq: 1,
                time: "t".into(),
                action_id: "a".into(),
                kind: "decided".into(),
                payload: json!({
                    "state": "denied",
                    "request": {"method": "POST", "url": "http://x/\nforged",
                        "body": {"encoding": "text", "text": "\n4. REVIEWS\n   reviewed by alice", "truncated": false}},
                    "evidence": {"k\nforged": "v\u{1b}[2J"},
                    "decision": {"action": "deny", "risk": "low", "reasons": ["r\u{2028}forged"], "rules": []},
                }),
                payload_text: None,
                prev_hash: "0".into(),
                hash: "\u{1b}".repeat(20),
            }],
        );
        let text = action_text(&view);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{2028}'),
            "{text}"
        );
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with("forged")),
            "{text}"
        );
        // The real heading, and the body's copy escaped on the body's line.
        let headings: Vec<&str> = text.lines().filter(|l| l.contains("4. REVIEWS")).collect();
        assert_eq!(headings.len(), 2, "{text}");
        assert!(headings[0].starts_with("   body:"), "{text}");
    }
}
