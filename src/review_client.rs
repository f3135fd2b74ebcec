//! `countersign review`: the reviewer's tool. It fetches the held action
//! with a signed read (signed over the request path), shows the reviewer
//! what they are deciding (request, evidence, decision), asks them to
//! confirm (unless `--yes`; `--show` stops after showing), then signs and
//! sends the verdict with the action's id and `request_digest`, and prints
//! the result. The key file holds either kind of reviewer key: an Ed25519
//! `whsk_` secret or a shared `whsec_` secret.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::approval::keys::SigningKey;
use crate::audit::view::action_text;
use crate::cli::ReviewArgs;

fn signed_headers(key: &SigningKey, content: &[u8]) -> anyhow::Result<Vec<(&'static str, String)>> {
    key.headers(content)
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))
}

async fn answer(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let why = body["error"].as_str().unwrap_or("no explanation given");
        bail!("{what} was refused ({status}): {why}");
    }
    Ok(body)
}

/// Asks the reviewer at the terminal to confirm `verdict`; true on `y`/`yes`.
/// Refuses when stdin is not a terminal: a verdict is never sent because
/// a pipe happened to hold a `y`.
fn confirmed(verdict: &str, id: &str, reviewer: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("not sending the verdict: stdin is not a terminal, so it cannot be confirmed; pass --yes to send it without asking, or --show to only look");
    }
    print!("\n{verdict} action {id} as {reviewer}? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs the command.
pub fn run(args: &ReviewArgs) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("{}: cannot read the key file", args.key_file.display()))?;
    let key = SigningKey::parse(&secret)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.key_file.display()))?;
    if !crate::audit::record::is_action_id(&args.id) {
        bail!(
            "`{}` is not an action id (32 hexadecimal characters, as in x-countersign-action-id)",
            args.id
        );
    }
    let admin = args.admin.trim_end_matches('/');
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::proxy::forward::outbound_client("review")?;
        // The path as countersign sees it is what the read signs: the
        // signature then opens this action and no other.
        let path = format!("/v1/actions/{}", args.id);
        let mut get = client
            .get(format!("{admin}{path}"))
            .header("x-countersign-reviewer", &args.reviewer);
        for (name, value) in signed_headers(&key, path.as_bytes())? {
            get = get.header(name, value);
        }
        let resp = get
            .send()
            .await
            .with_context(|| format!("cannot reach the admin listener at {admin}"))?;
        let view = answer(resp, "reading the action").await?;
        print!("{}", action_text(&view));
        if args.show {
            return Ok(());
        }
        if view["state"] != "pending" {
            bail!(
                "action {} is {}, not pending: there is nothing to review",
                args.id,
                view["state"].as_str().unwrap_or("unknown")
            );
        }
        let verdict = if args.approve { "approve" } else { "reject" };
        if !args.yes && !confirmed(verdict, &args.id, &args.reviewer)? {
            bail!("not confirmed: nothing was sent");
        }
        let body = json!({
            "action_id": args.id,
            "reviewer": args.reviewer,
            "verdict": verdict,
            "comment": args.comment,
            "request_digest": view["request_digest"],
        })
        .to_string();
        let mut post = client
            .post(format!("{admin}/v1/actions/{}/reviews", args.id))
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in signed_headers(&key, body.as_bytes())? {
            post = post.header(name, value);
        }
        let resp = post
            .send()
            .await
            .with_context(|| format!("cannot reach the admin listener at {admin}"))?;
        let result = answer(resp, "the review").await?;
        println!(
            "\n{verdict} recorded by {}: action {} is now {} ({} of {} approvals)",
            args.reviewer,
            args.id,
            result["state"].as_str().unwrap_or("?"),
            result["approvals"],
            result["min"]
        );
        Ok(())
    })
}
