//! The command line (docs/reference.md#command-line): parsed with clap, each subcommand a small
//! function. Errors reach `main` as `anyhow` errors and print as one sentence.
//! The evidence commands live in [`evidence`].

pub mod evidence;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::audit::record::State;
use crate::audit::store::backend::{Backend, ListFilter};
use crate::audit::store::{connect, connect_read_only};
use crate::audit::view::{self, action_json_in, action_text, printable};
use crate::config::StoreUrl;
use crate::config::{Config, RecordConfig};

/// countersign: a policy sidecar that decides every agent call with Rego,
/// holds risky calls for named reviewers, and keeps a tamper-evident record.
#[derive(Debug, Parser)]
#[command(name = "countersign", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE`, or `COUNTERSIGN_CONFIG`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The YAML config file.
    #[arg(long, env = "COUNTERSIGN_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

/// Where an `audit` command reads the record: the store of `--config FILE`
/// (only its `audit` and `reviewers` keys are read), or a SQLite file alone.
#[derive(Debug, Args)]
pub struct RecordArg {
    /// The YAML config file; only its `audit` and `reviewers` keys are used.
    #[arg(
        long,
        env = "COUNTERSIGN_CONFIG",
        value_name = "FILE",
        required_unless_present = "db"
    )]
    pub config: Option<PathBuf>,
    /// Read this SQLite record file alone (a copy is fine; it is opened
    /// read-only), without a config; it takes precedence over --config and
    /// COUNTERSIGN_CONFIG. Reviews are then reported as not checkable, as
    /// no reviewer keys are known.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy and admin listeners until SIGTERM or Ctrl-C.
    Serve(ConfigArg),
    /// Validate the config, read every secret, compile the policies and
    /// evaluate them once on a probe call; exit 1 on error.
    Check(ConfigArg),
    /// Evaluate or test policies without running the proxy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read and verify the record.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Review a held action: show what it is, then sign and send your verdict.
    Review(ReviewArgs),
    /// Create or upgrade the record store's schema (also done at `serve`);
    /// safe while other processes start or run.
    Migrate(ConfigArg),
    /// Make an Ed25519 key pair: the checkpoint signing key (PREFIX.key for
    /// audit.checkpoint.key_file, PREFIX.pub the signed-note verifier key
    /// for auditors), or with --reviewer a reviewer's pair (PREFIX.key holds
    /// the whsk_ secret for the reviewer, PREFIX.pub the whpk_ public key
    /// for the config).
    Keygen(KeygenArgs),
    /// Check an evidence bundle (from audit export) with the checkpoint
    /// public key alone, no database or config; print the action's story
    /// only if every check passes, else exit 1 naming the problem.
    VerifyBundle {
        /// The bundle file.
        file: PathBuf,
        /// The checkpoint public key (the .pub file of countersign keygen).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
}

/// `countersign keygen ...`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Make a reviewer's key pair instead of a checkpoint signing key.
    #[arg(long)]
    pub reviewer: bool,
    /// The checkpoint key's name (the log's name on its checkpoints, by
    /// default), e.g. countersign.example.com/audit. No spaces or `+`.
    #[arg(long, value_name = "NAME", conflicts_with = "reviewer")]
    pub name: Option<String>,
    /// Write PREFIX.key (the secret, mode 0600) and PREFIX.pub; neither may exist yet.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

/// `countersign review ...`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("verdict").required(true).args(["approve", "reject", "show"])))]
pub struct ReviewArgs {
    /// The held action's id.
    pub id: String,
    /// The admin listener's URL, e.g. http://countersign:9901.
    #[arg(long, value_name = "URL")]
    pub admin: String,
    /// Your reviewer name, as configured.
    #[arg(long)]
    pub reviewer: String,
    /// File holding your key: an Ed25519 secret (whsk_..., from countersign
    /// keygen --reviewer) or a shared Standard Webhooks secret (whsec_...).
    #[arg(long, value_name = "F")]
    pub key_file: PathBuf,
    /// Approve the action.
    #[arg(long)]
    pub approve: bool,
    /// Reject the action.
    #[arg(long)]
    pub reject: bool,
    /// Only show the action (request, evidence, decision, reviews); send nothing.
    #[arg(long)]
    pub show: bool,
    /// Send the verdict without asking for confirmation. Without it the
    /// verdict is sent only after you answer `y` at the terminal; when
    /// stdin is not a terminal the command refuses.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// A comment for the record.
    #[arg(long, conflicts_with = "show")]
    pub comment: Option<String>,
}

/// `countersign policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the decision object the policies give for an input document.
    Eval {
        /// Directory of .rego files.
        #[arg(long, value_name = "DIR")]
        policies: PathBuf,
        /// The policy input document (JSON), as countersign builds it for each call.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Rule to evaluate.
        #[arg(long, default_value = "data.countersign.decision")]
        entrypoint: String,
        /// Evaluator: auto, vm or interpreter.
        #[arg(long, default_value = "auto", value_parser = ["auto", "vm", "interpreter"])]
        engine: String,
    },
    /// Run the test_* rules of every *_test.rego file in DIR, printed as
    /// `opa test -v` prints them; exit 1 if one fails.
    Test {
        /// Directory of .rego files (and data documents) and their tests.
        dir: PathBuf,
        /// Print the lines the tests evaluated, per file, as the JSON of
        /// `opa test --coverage` (instead of the test list).
        #[arg(long)]
        coverage: bool,
    },
}

/// `countersign audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List actions, newest first.
    List {
        #[command(flatten)]
        record: RecordArg,
        /// Only actions in this state (allowed, denied, pending, completed, failed, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only actions of this risk (low, medium, high, critical).
        #[arg(long)]
        risk: Option<String>,
        /// Only actions since this time (RFC 3339, e.g. 2026-11-27T00:00:00Z) or this long ago (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many; 0 lists them all.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one action as a timeline: request, evidence, decision, reviews, result.
    Show {
        #[command(flatten)]
        record: RecordArg,
        /// The action id.
        id: String,
        /// Print the same as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check the record: the hash chain, the stored checkpoints (signature
    /// and tree head), checkpoints kept elsewhere, and every signed review;
    /// exit 1 naming the first bad seq.
    Verify {
        #[command(flatten)]
        record: RecordArg,
        /// A signed checkpoint kept outside the store (a file, or a dir://
        /// publish directory); the record must not be shorter than it nor
        /// differ from it. May be repeated.
        #[arg(long, value_name = "FILE")]
        checkpoint: Vec<PathBuf>,
        /// The checkpoint public key (the .pub of countersign keygen); by
        /// default the public half of audit.checkpoint.key_file, if readable.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Print an inclusion proof (JSON) of record SEQ in the latest signed checkpoint.
    Prove {
        #[command(flatten)]
        record: RecordArg,
        /// The record's seq.
        seq: i64,
        /// Also prove that the latest checkpoint extends the tree of this
        /// many records (an earlier checkpoint's size).
        #[arg(long, value_name = "SIZE")]
        from_size: Option<u64>,
    },
    /// Write an action's evidence bundle: its records, their inclusion
    /// proofs, the checkpoint, the policy's text and the reviewers' public keys.
    Export {
        #[command(flatten)]
        record: RecordArg,
        /// The action id.
        id: String,
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        bundle: PathBuf,
    },
    /// Evaluate an action's recorded policy input again on the recorded
    /// policy revision; exit 1 if it does not reach the recorded decision.
    Replay {
        /// The YAML config file (not needed with --bundle or --db).
        #[arg(long, env = "COUNTERSIGN_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Read this SQLite record file alone, without a config (takes
        /// precedence over --config).
        #[arg(long, value_name = "FILE", conflicts_with = "bundle")]
        db: Option<PathBuf>,
        /// The action id.
        #[arg(required_unless_present = "bundle")]
        id: Option<String>,
        /// Replay the decision of an evidence bundle on the bundle's policy files.
        #[arg(long, value_name = "FILE", conflicts_with = "id")]
        bundle: Option<PathBuf>,
    },
}

fn load(config: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(config)?)
}

/// Runs a parsed command. `Serve` is handled by `main` (it needs the runtime and logging).
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve(_) => unreachable!("serve is dispatched by main"),
        Command::Check(c) => check(&c.config),
        Command::Policy(PolicyCommand::Eval {
            policies,
            input,
            entrypoint,
            engine,
        }) => policy_eval(&policies, &input, &entrypoint, &engine),
        Command::Policy(PolicyCommand::Test { dir, coverage }) => policy_test(&dir, coverage),
        Command::Audit(AuditCommand::List {
            record,
            state,
            risk,
            since,
            limit,
            json,
        }) => audit_list(&record, state, risk, since, limit, json),
        Command::Audit(AuditCommand::Show { record, id, json }) => audit_show(&record, &id, json),
        Command::Audit(AuditCommand::Verify {
            record,
            checkpoint,
            public_key,
        }) => {
            let (config, mut conn) = open_record(&record)?;
            evidence::audit_verify(&config, conn.as_mut(), &checkpoint, public_key.as_deref())
        }
        Command::Audit(AuditCommand::Prove {
            record,
            seq,
            from_size,
        }) => evidence::audit_prove(open_record(&record)?.1.as_mut(), seq, from_size),
        Command::Audit(AuditCommand::Export { record, id, bundle }) => {
            let (config, mut conn) = open_record(&record)?;
            evidence::audit_export(&config, conn.as_mut(), &id, &bundle)
        }
        Command::Audit(AuditCommand::Replay {
            config,
            db,
            id,
            bundle,
        }) => match (bundle, id) {
            (Some(b), _) => evidence::audit_replay_bundle(&b),
            (None, Some(id)) if config.is_some() || db.is_some() => {
                let record = RecordArg { config, db };
                evidence::audit_replay(open_record(&record)?.1.as_mut(), &id)
            }
            (None, Some(_)) => bail!("--config FILE (or COUNTERSIGN_CONFIG) or --db FILE is needed to replay from the record; or give --bundle FILE"),
            (None, None) => bail!("name the action to replay, or give --bundle FILE"),
        },
        Command::VerifyBundle { file, public_key } => evidence::verify_bundle(&file, &public_key),
        Command::Review(args) => crate::review_client::run(&args),
        Command::Keygen(args) => keygen(&args),
        Command::Migrate(c) => migrate(&c.config),
    }
}

fn migrate(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let version = crate::audit::store::migrate(&config.audit)
        .map_err(|e| anyhow::anyhow!("{}: audit.store: {e}", config.file.display()))?;
    println!(
        "{}: the record store's schema is at version {version}",
        config.file.display()
    );
    Ok(())
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let checkpoint_key = if args.reviewer {
        None
    } else {
        let name = args.name.as_deref().unwrap_or("countersign");
        Some(crate::audit::note::NoteSigner::generate(name)?)
    };
    let (secret, public) = match &checkpoint_key {
        Some(k) => (k.encode(), k.verifier().encode()),
        None => crate::approval::keys::generate()?,
    };
    let with_ext = |ext: &str| {
        let mut p = args.out.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with_ext(".key"), with_ext(".pub"));
    if pub_path.exists() {
        bail!(
            "{} already exists; choose another --out or remove it first",
            pub_path.display()
        );
    }
    write_new(&key_path, &format!("{secret}\n"), 0o600)?;
    if let Err(e) = write_new(&pub_path, &format!("{public}\n"), 0o644) {
        // Never leave half a pair behind.
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    match checkpoint_key {
        Some(k) => {
            println!(
                "wrote {} (the checkpoint signing key: audit.checkpoint.key_file; keep it secret)",
                key_path.display()
            );
            println!(
                "wrote {} (the signed-note verifier key: give it to auditors, for verify-bundle and audit verify --public-key)",
                pub_path.display()
            );
            println!(
                "webhook receivers of published checkpoints check their v1a signatures with {}",
                k.verifier().webhook_key()
            );
        }
        None => {
            println!(
                "wrote {} (the reviewer's secret: give it to them only, for countersign review --key-file)",
                key_path.display()
            );
            println!(
                "wrote {} (the public key: put it in the config, as reviewers.<name>.key_file or key_env)",
                pub_path.display()
            );
        }
    }
    Ok(())
}

/// Creates `path` with `mode` (on Unix) and writes `text`; refuses to
/// overwrite, so an existing key is never lost.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| {
        format!(
            "{}: cannot create it (it must not exist yet)",
            path.display()
        )
    })?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("{}: cannot write it", path.display()))
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    config.check_secrets()?;
    let policy = match crate::policy::Policy::load(&config.policy) {
        Ok(p) => p,
        Err(e @ crate::policy::PolicyError::UnknownEntrypoint { .. }) => {
            bail!("{}: {e}", path.display())
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: policy.dir: the policies could not be loaded",
                path.display()
            )))
        }
    };
    probe_policy(path, &config, &policy)?;
    if let Some(sink) = &config.decision_log {
        crate::policy::decision_log::DecisionLog::open(sink)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    for r in &config.routes {
        crate::proxy::forward::Upstream::new(r)?;
    }
    let record_at = match &config.audit.store {
        StoreUrl::Sqlite(p) => p.display().to_string(),
        StoreUrl::Postgres { dsn } => {
            // A fleet store must be reachable and of a schema this version knows.
            let mut db = connect(&config.audit)
                .map_err(|e| anyhow::anyhow!("{}: audit.store: {e}", config.file.display()))?;
            db.heads().map_err(|e| {
                anyhow::anyhow!(
                    "{}: audit.store: the database is reachable but not a countersign record (run `countersign serve` once to create the schema): {e}",
                    config.file.display()
                )
            })?;
            crate::audit::store::postgres::describe(dsn)
        }
    };
    println!(
        "{}: ok: {} route(s), policy revision {} ({} files, {} engine{}), record at {}",
        path.display(),
        config.routes.len(),
        policy.revision(),
        policy.files().len(),
        policy.engine_kind().as_str(),
        policy
            .vm_fallback_reason()
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
        record_at
    );
    Ok(())
}

/// Evaluates the policy once on a made-up call, as `serve` would on a real
/// one: a policy that errors (or overruns `policy.timeout`) there would
/// refuse every call like it, so `check` fails. An undefined decision or a
/// decision that breaks the contract for this made-up call is fine: the
/// probe is not a call any route would see.
fn probe_policy(
    path: &Path,
    config: &Config,
    policy: &crate::policy::Policy,
) -> anyhow::Result<()> {
    let mut result = policy.evaluate(crate::policy::input::probe());
    if matches!(result, Err(crate::policy::PolicyError::Timeout(_))) {
        // A loaded machine can stall one evaluation; a second overrun is the policy.
        result = policy.evaluate(crate::policy::input::probe());
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "{}: policy: {} (revision {}, in {}) fails when evaluated on a probe call, so it would refuse calls like it: {e}",
            path.display(),
            config.policy.entrypoint,
            policy.revision(),
            config.policy.dir.display()
        ),
    }
}

fn policy_eval(dir: &Path, input: &Path, entrypoint: &str, engine: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("{}: cannot read the input", input.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: the input is not JSON", input.display()))?;
    let settings = crate::config::PolicyConfig {
        dir: dir.to_path_buf(),
        entrypoint: entrypoint.to_string(),
        input: crate::config::InputShape::Native,
        timeout: std::time::Duration::from_secs(5),
        engine: match engine {
            "vm" => crate::config::EngineChoice::Vm,
            "interpreter" => crate::config::EngineChoice::Interpreter,
            _ => crate::config::EngineChoice::Auto,
        },
    };
    let policy = crate::policy::Policy::load(&settings)?;
    eprintln!(
        "policy revision {} on the {} engine",
        policy.revision(),
        policy.engine_kind().as_str()
    );
    let raw = policy.evaluate(crate::policy::input::to_rego(doc))?;
    println!("{}", serde_json::to_string_pretty(&raw)?);
    if let Err(e) = crate::policy::decision::check(&raw, None, crate::config::DEFAULT_MAX_EXPIRY) {
        bail!("the decision breaks the contract: {e}");
    }
    Ok(())
}

/// `opa test`'s layout: failures first with why, then every test by file
/// as `data.pkg.test_x: PASS (1.2ms)`, then `PASS: n/m` (and `FAIL:`,
/// `ERROR:` counts). With `--coverage`, the coverage JSON instead.
fn policy_test(dir: &Path, coverage: bool) -> anyhow::Result<()> {
    let (outcomes, report) = crate::policy::test::run_with(dir, coverage)?;
    if outcomes.is_empty() {
        bail!(
            "{}: no test_* rules found in *_test.rego files",
            dir.display()
        );
    }
    let rule = "-".repeat(80);
    let verdict = |o: &crate::policy::test::Outcome| match (&o.failure, o.error) {
        (None, _) => "PASS",
        (Some(_), false) => "FAIL",
        (Some(_), true) => "ERROR",
    };
    let took = |o: &crate::policy::test::Outcome| format!("{:.1?}", o.duration);
    let failed: Vec<_> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    if let Some(report) = report {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        if !failed.is_empty() {
            println!("FAILURES\n{rule}");
            for o in &failed {
                println!("{}: {} ({})\n", o.name, verdict(o), took(o));
                println!("  {}\n", o.failure.as_deref().unwrap_or_default());
            }
            println!("SUMMARY\n{rule}");
        }
        let mut file = None;
        for o in &outcomes {
            if file != Some(&o.file) {
                if file.is_some() {
                    println!();
                }
                println!("{}:", o.file);
                file = Some(&o.file);
            }
            println!("{}: {} ({})", o.name, verdict(o), took(o));
        }
        println!("{rule}");
    }
    let total = outcomes.len();
    let errors = failed.iter().filter(|o| o.error).count();
    let fails = failed.len() - errors;
    let counts = counts(total - failed.len(), fails, errors, total);
    // With --coverage stdout is the JSON alone; the counts go to stderr.
    if coverage {
        eprint!("{counts}");
    } else {
        print!("{counts}");
    }
    if !failed.is_empty() {
        bail!(
            "{} policy test(s) failed, first: {}",
            failed.len(),
            failed[0].name
        );
    }
    Ok(())
}

fn counts(pass: usize, fail: usize, error: usize, total: usize) -> String {
    let mut out = String::new();
    if pass > 0 {
        out.push_str(&format!("PASS: {pass}/{total}\n"));
    }
    if fail > 0 {
        out.push_str(&format!("FAIL: {fail}/{total}\n"));
    }
    if error > 0 {
        out.push_str(&format!("ERROR: {error}/{total}\n"));
    }
    out
}

/// The record an `audit` command reads, read-only, and the settings it needs.
fn open_record(record: &RecordArg) -> anyhow::Result<(RecordConfig, Box<dyn Backend>)> {
    let config = match (&record.db, &record.config) {
        (Some(db), _) => {
            if !db.is_file() {
                bail!("--db: {}: no such file", db.display());
            }
            RecordConfig::sqlite_file(db)
        }
        (None, Some(c)) => RecordConfig::load(c)?,
        (None, None) => bail!("give --config FILE (or COUNTERSIGN_CONFIG) or --db FILE"),
    };
    let field = if record.db.is_some() {
        "--db"
    } else {
        "audit.store"
    };
    let conn = connect_read_only(&config.audit)
        .map_err(|e| anyhow::anyhow!("{}: {field}: {e}", config.file.display()))?;
    Ok((config, conn))
}

fn audit_list(
    record: &RecordArg,
    state: Option<String>,
    risk: Option<String>,
    since: Option<String>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let since = match since {
        None => None,
        Some(s) => {
            let t = humantime::parse_rfc3339_weak(&s)
                .ok()
                .or_else(|| humantime::parse_duration(&s).ok().and_then(|d| std::time::SystemTime::now().checked_sub(d)))
                .ok_or_else(|| anyhow::anyhow!("--since: `{s}` is neither an RFC 3339 time (2026-11-27T00:00:00Z) nor a duration (2h) since 1970"))?;
            Some(humantime::format_rfc3339_micros(t).to_string())
        }
    };
    if let Some(s) = &state {
        if State::parse(s).is_none() {
            bail!("--state: `{s}` is not a state; use one of allowed, denied, pending, approved, rejected, expired, cancelled, completed, failed");
        }
    }
    if let Some(r) = &risk {
        if !["low", "medium", "high", "critical"].contains(&r.as_str()) {
            bail!("--risk: `{r}` is not a risk; use one of low, medium, high, critical");
        }
    }
    let mut conn = open_record(record)?.1;
    // A running server keeps index rows back for a moment (and a crashed
    // one may have lost some): the newest actions are read from the records.
    let filter = ListFilter {
        state,
        risk,
        since,
        limit, // 0: no limit
    };
    let rows = crate::audit::store::list_caught_up(conn.as_mut(), &filter)?;
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    println!(
        "{:<32}  {:<27}  {:<9}  {:<6}  {:<8}  {:<12}  {:<14}  CALL",
        "ACTION", "CREATED", "STATE", "STATUS", "RISK", "ROUTE", "AGENT"
    );
    for r in rows {
        // The agent chose some of these (its id, the path): escaped like
        // `audit show`, so a row is one line and cannot forge another.
        let p = |s: String| printable(&s);
        println!(
            "{:<32}  {:<27}  {:<9}  {:<6}  {:<8}  {:<12}  {:<14}  {} {}",
            p(r.action_id),
            p(r.created_at),
            p(r.state),
            r.upstream_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            p(r.risk.unwrap_or_else(|| "-".into())),
            p(r.route.unwrap_or_default()),
            p(r.agent.unwrap_or_else(|| "-".into())),
            p(r.method.unwrap_or_default()),
            p(r.path.unwrap_or_default())
        );
    }
    Ok(())
}

fn audit_show(record: &RecordArg, id: &str, json: bool) -> anyhow::Result<()> {
    let (config, mut conn) = open_record(record)?;
    let records = if crate::audit::record::is_action_id(id) {
        conn.records_of(id)?
    } else {
        Vec::new()
    };
    if records.is_empty() {
        bail!("no action {id} in the record");
    }
    let policy = records
        .iter()
        .find_map(|r| r.payload["policy"]["revision"].as_str())
        .map(crate::audit::revisions::record_id)
        .map(|pid| conn.records_of(&pid))
        .transpose()?
        .and_then(|p| p.into_iter().next())
        .and_then(|p| crate::audit::revisions::sources_of(&p.payload));
    let checkpoint = conn.latest_checkpoint()?.map(|c| {
        let origin = c.note.lines().next().unwrap_or_default().to_string();
        (c.tree_size, origin, c.time)
    });
    let ctx = view::Context {
        policy,
        checkpoint,
        checkpoints_configured: Some(config.audit.checkpoint.is_some()),
    };
    let view = action_json_in(id, &records, &ctx);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", action_text(&view));
    }
    Ok(())
}
