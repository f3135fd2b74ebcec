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
use crate::policy::Source;

/// What the view can add from outside the action's own records: the
/// policy revision's text (to show the rules that fired) and the latest
/// signed checkpoint (to say whether the records are covered by it).
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The files of the revision that decided, from its `policy` record.
    pub policy: Option<Vec<Source>>,
    /// The latest signed checkpoint: (tree size, origin, signed at).
    pub checkpoint: Option<(i64, String, String)>,
    /// Whether checkpoints are made at all (`audit.checkpoint`); `None`
    /// when not known here (the actions API): the view then says nothing
    /// about checkpoints.
    pub checkpoints_configured: Option<bool>,
}

/// Builds the action view as JSON, from its records alone.
pub fn action_json(action_id: &str, records: &[Record]) -> Value {
    action_json_in(action_id, records, &Context::default())
}

/// Builds the action view as JSON, with what `ctx` adds: the source of the
/// rules that fired and whether the records are in the latest checkpoint.
pub fn action_json_in(action_id: &str, records: &[Record], ctx: &Context) -> Value {
    let mut view = base_view(action_id, records);
    view["timeline"] = Value::Array(records.iter().map(event).collect());
    if let Some(files) = &ctx.policy {
        let rules: Vec<String> = view["decision"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect();
        view["rule_sources"] = Value::Array(
            rules
                .iter()
                .filter_map(|rule| rule_source(rule, files))
                .collect(),
        );
    }
    let newest = records.iter().map(|r| r.seq).max().unwrap_or(0);
    view["checkpoint"] = match &ctx.checkpoint {
        Some((size, origin, time)) => json!({
            "tree_size": size, "origin": origin, "signed_at": time,
            "covers_all": newest <= *size,
        }),
        None => match ctx.checkpoints_configured {
            Some(configured) => {
                json!({"configured": configured, "tree_size": null, "covers_all": false})
            }
            None => Value::Null,
        },
    };
    view
}

/// Where a rule id appears in the policy's text: the first file and the
/// block of lines (up to blank lines) around its first quoted mention.
/// Best effort: a rule id built at evaluation time is not found.
fn rule_source(rule: &str, files: &[Source]) -> Option<Value> {
    let quoted = format!("\"{rule}\"");
    for f in files {
        let lines: Vec<&str> = f.text.lines().collect();
        let Some(at) = lines.iter().position(|l| l.contains(&quoted)) else {
            continue;
        };
        let blank = |i: usize| lines[i].trim().is_empty();
        let mut first = at;
        while first > 0 && !blank(first - 1) {
            first -= 1;
        }
        let mut last = at;
        while last + 1 < lines.len() && !blank(last + 1) {
            last += 1;
        }
        // A block longer than this is shown from the mention on.
        if last - first > 24 {
            first = at.saturating_sub(4);
            last = (first + 24).min(lines.len() - 1);
        }
        return Some(json!({
            "rule": rule, "file": f.path, "first_line": first + 1, "last_line": last + 1,
            "text": lines[first..=last].join("\n"),
        }));
    }
    None
}

/// One record as a line of the timeline.
fn event(r: &Record) -> Value {
    let p = &r.payload;
    let what = match r.kind.as_str() {
        "decided" => format!(
            "decided {} (risk {}; rules {})",
            p["decision"]["action"].as_str().unwrap_or("?"),
            p["decision"]["risk"].as_str().unwrap_or("?"),
            list(&p["decision"]["rules"])
        ),
        "notified" => format!(
            "notice to {} attempt {}: {}",
            p["hook"].as_str().unwrap_or("?"),
            p["attempt"],
            if p["delivered"] == json!(true) {
                "delivered".to_string()
            } else if p["error"].is_null() {
                format!("not delivered ({})", p["status"])
            } else {
                format!("not delivered ({})", p["error"].as_str().unwrap_or("?"))
            }
        ),
        "reviewed" => format!(
            "{} by {}{}{}",
            p["verdict"].as_str().unwrap_or("?"),
            p["reviewer"].as_str().unwrap_or("?"),
            p["comment"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default(),
            p["key"]
                .as_str()
                .map(|k| format!(" [signed with an {k} key]"))
                .unwrap_or_default()
        ),
        "review_refused" => refused_attempt(p),
        "approved" => format!("approved ({} of {})", list(&p["approvals"]), p["min"]),
        "rejected" => format!(
            "rejected by {}{}",
            p["reviewer"].as_str().unwrap_or("?"),
            p["comment"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        "expired" => "expired: nobody decided in time".to_string(),
        "cancelled" => format!(
            "cancelled{}",
            p["reason"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        "forwarded" => format!(
            "forward claimed by {}",
            p["owner"].as_str().unwrap_or("this process")
        ),
        "completed" => format!(
            "upstream answered {} in {:.1} ms",
            p["response"]["status"],
            p["upstream_ms"].as_f64().unwrap_or(0.0)
        ),
        "failed" => format!(
            "not completed ({} at {}): {}",
            p["reason"].as_str().unwrap_or("?"),
            p["stage"].as_str().unwrap_or("?"),
            p["error"].as_str().unwrap_or("?")
        ),
        "answered" => answered_text(p),
        other => other.to_string(),
    };
    json!({"seq": r.seq, "time": r.time, "kind": r.kind, "hash": r.hash, "what": what})
}

/// A refused review attempt: who it claimed to be, the verdict and digest
/// it carried, and which kind of key (if any) its signature verified with.
fn refused_attempt(p: &Value) -> String {
    let key = match p["key"].as_str() {
        Some(k) => format!("signature verified with an {k} key"),
        None => "signature not verified".to_string(),
    };
    format!(
        "refused review attempt as {}: verdict {}, digest {}, {key}; answered {}: {}",
        p["reviewer"].as_str().unwrap_or("?"),
        p["verdict"].as_str().unwrap_or("?"),
        p["request_digest"].as_str().unwrap_or("-"),
        p["status"],
        p["error"].as_str().unwrap_or("?")
    )
}

/// What the agent got, in a sentence.
fn answered_text(p: &Value) -> String {
    match p["source"].as_str() {
        Some("upstream") => format!(
            "the agent got {}: the upstream's answer, relayed",
            p["status"]
        ),
        _ => format!("the agent got {}: {}", p["status"], p["body"]),
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn base_view(action_id: &str, records: &[Record]) -> Value {
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
                json!({"time": r.time, "reviewer": p["reviewer"], "verdict": p["verdict"], "request_digest": p["request_digest"], "key": p["key"], "status": p["status"], "reason": p["reason"], "error": p["error"]}),
            ),
            "answered" => {
                view["answered"] = json!({"time": r.time, "source": p["source"], "status": p["status"], "headers": p["headers"], "body": p["body"]})
            }
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

/// An MCP call (a JSON-RPC request body) as what it is: for `tools/call`
/// the server, the tool and its arguments; otherwise the method.
fn mcp_call_lines(out: &mut String, body: &Value, route: &Value) {
    let msg = &body["json"];
    if body["encoding"] != json!("json") || msg["jsonrpc"] != json!("2.0") {
        return;
    }
    if msg["method"] == json!("tools/call") {
        let _ = writeln!(
            out,
            "   tool call:    {}  (MCP server {})",
            s(&msg["params"]["name"]),
            s(&route["upstream"])
        );
        let args = serde_json::to_string_pretty(&msg["params"]["arguments"]).unwrap_or_default();
        for (i, line) in args.lines().enumerate() {
            let label = if i == 0 { "arguments:" } else { "" };
            let _ = writeln!(out, "   {label:<13} {}", printable(line));
        }
    } else if msg["method"].is_string() {
        let _ = writeln!(out, "   MCP method:   {}", s(&msg["method"]));
    }
}

/// The JSON-RPC answer pulled out of an upstream response: a tool result's
/// text, or the error.
fn mcp_result_lines(out: &mut String, answer: &Value) {
    if answer.is_null() {
        return;
    }
    let result = &answer["result"];
    if let Some(content) = result["content"].as_array() {
        let label = if result["isError"] == json!(true) {
            "tool error:"
        } else {
            "tool result:"
        };
        for item in content {
            let text = match item["text"].as_str() {
                Some(t) => t.to_string(),
                None => item.to_string(),
            };
            let _ = writeln!(out, "   {label:<13} {}", printable(&text));
        }
    } else if !answer["error"].is_null() {
        let _ = writeln!(
            out,
            "   JSON-RPC error {}: {}",
            s(&answer["error"]["code"]),
            s(&answer["error"]["message"])
        );
    } else if !result.is_null() {
        let _ = writeln!(
            out,
            "   JSON-RPC result: {}",
            printable(&result.to_string())
        );
    }
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
    mcp_call_lines(&mut out, &r["body"], &view["route"]);
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
    for src in view["rule_sources"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "   rule {} is at {}:{}-{}:",
            s(&src["rule"]),
            s(&src["file"]),
            s(&src["first_line"]),
            s(&src["last_line"])
        );
        let first = src["first_line"].as_u64().unwrap_or(1);
        for (i, line) in src["text"].as_str().unwrap_or_default().lines().enumerate() {
            // Rego is indented with tabs; printable would show them as \t.
            let line = line.replace('\t', "    ");
            let _ = writeln!(out, "   {:>5} | {}", first + i as u64, printable(&line));
        }
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
        let key = match rf["key"].as_str() {
            Some(k) => format!("signature verified with an {} key", printable(k)),
            None => "signature not verified".into(),
        };
        let _ = writeln!(
            out,
            "   {} refused attempt as {}: verdict {}, digest {}, {key} ({}): {}",
            s(&rf["time"]),
            s(&rf["reviewer"]),
            s(&rf["verdict"]),
            s(&rf["request_digest"]),
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
            mcp_result_lines(&mut out, &resp["jsonrpc"]);
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

    let got = &view["answered"];
    if !got.is_null() {
        let what = match got["source"].as_str() {
            Some("upstream") => "the upstream's answer, relayed".to_string(),
            _ => s(&got["body"]),
        };
        let _ = writeln!(
            out,
            "   {}  the agent got {}: {what}",
            s(&got["time"]),
            s(&got["status"])
        );
    }

    let _ = writeln!(out, "\nTIMELINE");
    for e in view["timeline"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "   #{:<6} {}  {:<14} {}  [{}…]",
            s(&e["seq"]),
            s(&e["time"]),
            s(&e["kind"]),
            s(&e["what"]),
            s(&e["hash"]).chars().take(16).collect::<String>()
        );
    }
    let c = &view["checkpoint"];
    if c.is_null() {
        return out;
    }
    let newest = view["records"]
        .as_array()
        .and_then(|r| r.last())
        .map(|r| s(&r["seq"]))
        .unwrap_or_default();
    let closing = match (c["tree_size"].as_i64(), c["covers_all"] == json!(true)) {
        (Some(size), true) => format!(
            "CHECKPOINT: every record shown here is in the latest signed checkpoint ({}, {size} records, signed {}). (This proves these records; it does not prove no other record of the action exists: `audit verify` on the whole record does.)",
            s(&c["origin"]),
            s(&c["signed_at"])
        ),
        (Some(size), false) => format!(
            "CHECKPOINT: not yet: the latest signed checkpoint covers {size} records; this action's newest record is #{newest}."
        ),
        (None, _) if c["configured"] == json!(true) => {
            "CHECKPOINT: none signed yet.".to_string()
        }
        (None, _) => "CHECKPOINT: none (audit.checkpoint is not configured).".to_string(),
    };
    let _ = writeln!(out, "\n{closing}");
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
    fn the_rule_that_fired_is_found_in_its_file_with_its_block() {
        let files = vec![
            Source {
                path: "a.rego".into(),
                text: "package a\n".into(),
            },
            Source {
                path: "b.rego".into(),
                text: "package b\n\n# the small ones\ndecision := {\n\t\"rules\": [\"b.small\"],\n} if {\n\ttrue\n}\n\nother := 1\n".into(),
            },
        ];
        let found = rule_source("b.small", &files).unwrap();
        assert_eq!(found["file"], "b.rego");
        assert_eq!(
            (found["first_line"].as_u64(), found["last_line"].as_u64()),
            (Some(3), Some(8))
        );
        assert!(found["text"]
            .as_str()
            .unwrap()
            .starts_with("# the small ones"));
        assert!(
            rule_source("b.sma", &files).is_none(),
            "only the quoted id matches"
        );
        let records = [Record {
            seq: 4,
            time: "t".into(),
            action_id: "a".into(),
            kind: "answered".into(),
            payload: json!({"source": "countersign", "status": 403, "body": {"error": "no"}}),
            payload_text: None,
            prev_hash: "0".into(),
            hash: "h".repeat(64),
        }];
        let ctx = Context {
            policy: Some(files),
            checkpoint: Some((3, "log".into(), "t".into())),
            checkpoints_configured: Some(true),
        };
        let view = action_json_in("a", &records, &ctx);
        assert_eq!(view["timeline"][0]["hash"], "h".repeat(64));
        assert_eq!(view["answered"]["status"], 403);
        assert_eq!(view["checkpoint"]["covers_all"], false);
        let text = action_text(&view);
        assert!(text.contains("the agent got 403"), "{text}");
        assert!(text.contains("CHECKPOINT: not yet"), "{text}");
        assert!(!action_text(&action_json("a", &records)).contains("CHECKPOINT"));
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
