//! Policies: a directory of `.rego` files compiled once per revision and
//! evaluated per call on regorus's tree-walking interpreter. Its bytecode
//! VM (`rvm`) runs only when `policy.engine: vm` asks for it, to compare
//! the two: it answers differently from the interpreter in ways that can
//! allow what the interpreter refuses ([`AUTO_STAYS_ON_THE_INTERPRETER`]).
//! Either way each evaluation runs on its own engine state (a clone of a
//! warmed-up engine, or a fresh VM over a shared program), so no lock sits
//! on the request path. The proxy runs evaluations on [`pool`]'s threads,
//! never on the async workers.

pub mod bundle;
pub mod decision;
pub mod decision_log;
pub mod input;
pub mod pool;
pub mod test;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, Engine, Value};
use sha2::{Digest, Sha256};

/// How many units of evaluation work regorus does between two reads of
/// the clock for `policy.timeout`. One (a clock read per expression) cost
/// about 2 % of a call's CPU; 64 units overshoot the limit by microseconds,
/// and the caller's own deadline bounds the wait whatever happens.
const TIMER_CHECK_UNITS: NonZeroU32 = NonZeroU32::new(64).unwrap();

use crate::config::{EngineChoice, PolicyConfig};

/// Why a policy could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The directory could not be read.
    #[error("cannot read policy directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// No policy files.
    #[error("policy directory {0} has no .rego files")]
    Empty(String),
    /// A file does not parse or compile.
    #[error("{file}: {message}")]
    Compile {
        /// The file (or directory when regorus does not say which file).
        file: String,
        /// regorus's message.
        message: String,
    },
    /// The policy calls a builtin regorus does not really implement.
    #[error("{file}: calls `{builtin}`, which countersign's Rego engine does not implement; a call to it would fail open, so the policy is refused")]
    Unsupported {
        /// The file.
        file: String,
        /// The builtin.
        builtin: String,
    },
    /// No policy file defines the entrypoint.
    #[error("policy.entrypoint: `{entrypoint}` is not defined by any policy file in {dir}; name a rule that one of them defines (the default is data.countersign.decision)")]
    UnknownEntrypoint {
        /// The entrypoint asked for.
        entrypoint: String,
        /// The policy directory.
        dir: String,
    },
    /// Evaluation failed.
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    /// Evaluation ran over the time limit.
    #[error("policy evaluation exceeded its {0:?} time limit")]
    Timeout(Duration),
    /// Every evaluation thread was busy and the queue was full.
    #[error("every policy worker is busy and the queue of {0} evaluations is full (policy.workers, policy.queue)")]
    Overloaded(usize),
    /// The evaluation waited in the queue for the whole time limit.
    #[error("no policy worker became free within the {0:?} time limit (policy.workers)")]
    NoWorkerInTime(Duration),
}

impl PolicyError {
    /// A short machine-readable reason, for metrics and the record.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Timeout(_) => "policy_timeout",
            PolicyError::Overloaded(_) | PolicyError::NoWorkerInTime(_) => "policy_overloaded",
            _ => "policy_error",
        }
    }
}

/// Which evaluator runs the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// regorus bytecode VM.
    Vm,
    /// regorus tree-walking interpreter.
    Interpreter,
}

impl EngineKind {
    /// Name shown in `/readyz`, metrics and the record.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Vm => "vm",
            EngineKind::Interpreter => "interpreter",
        }
    }
}

/// Builtins regorus leaves out or stubs: a policy relying on them would see
/// `undefined` where OPA would see a value, which can turn a deny into an
/// allow. They are refused at load instead.
const UNSUPPORTED_BUILTINS: &[&str] = &[
    "http.send",
    "io.jwt.",
    "net.lookup_ip_addr",
    "opa.runtime",
    "rego.parse_module",
    "crypto.x509.",
    "crypto.hmac.",
];

/// A compiled policy revision.
pub struct Policy {
    revision: String,
    entrypoint: String,
    kind: EngineKind,
    files: Vec<String>,
    sources: Vec<Source>,
    timer: ExecutionTimerConfig,
    timeout: Duration,
    vm: Option<(CompiledPolicy, Arc<Program>, Value)>,
    engine: Engine,
    loaded_at: String,
    vm_fallback_reason: Option<String>,
}

/// The files a policy directory serves from: every `.rego` file but
/// `*_test.rego` (unless `include_tests`), and the data documents.
pub fn policy_files(dir: &Path, include_tests: bool) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    walk(dir, &mut out).map_err(|source| PolicyError::Dir {
        dir: dir.display().to_string(),
        source,
    })?;
    out.retain(|p| include_tests || !p.to_string_lossy().ends_with("_test.rego"));
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        // Kubernetes ConfigMap volumes keep real files under `..data` and
        // timestamped `..2026_...` folders; read only the visible names.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rego")
            || is_data_file(&path.to_string_lossy())
        {
            out.push(path);
        }
    }
    Ok(())
}

/// A data document: a file named `data.json`, `data.yaml` or `data.yml`,
/// as OPA loads them from a directory.
pub fn is_data_file(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    matches!(name, "data.json" | "data.yaml" | "data.yml")
}

/// A data document's value placed where OPA puts it: under `data` at the
/// path its directories spell (`a/b/data.json` is `data.a.b`; a
/// `data.json` beside the policies is merged at the root of `data`).
fn data_document(path: &str, text: &str) -> Result<regorus::Value, PolicyError> {
    let err = |message: String| PolicyError::Compile {
        file: path.to_string(),
        message,
    };
    let mut value: serde_json::Value = if path.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?
    } else {
        serde_yaml::from_str(text).map_err(|e| err(format!("not YAML: {e}")))?
    };
    let dirs: Vec<&str> = path.split(['/', '\\']).collect();
    let dirs = &dirs[..dirs.len().saturating_sub(1)];
    if dirs.is_empty() && !value.is_object() {
        return Err(err(
            "a data document beside the policies must be an object: its keys become data.<key>"
                .into(),
        ));
    }
    for dir in dirs.iter().rev() {
        value = serde_json::json!({ *dir: value });
    }
    Ok(regorus::Value::from(value))
}

/// Source text with comments and string literals blanked, so a scan for
/// builtin names sees only code.
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push(' ');
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        break;
                    }
                }
            }
            '`' => {
                out.push(' ');
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn check_builtins(file: &str, src: &str) -> Result<(), PolicyError> {
    let code = code_only(src);
    for b in UNSUPPORTED_BUILTINS {
        let mut from = 0;
        while let Some(pos) = code[from..].find(b) {
            let at = from + pos;
            let before_ok = at == 0
                || !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.');
            if before_ok {
                return Err(PolicyError::Unsupported {
                    file: file.to_string(),
                    builtin: b.trim_end_matches('.').to_string(),
                });
            }
            from = at + b.len();
        }
    }
    Ok(())
}

/// A policy file as a revision is made of it: its name relative to the
/// policy directory, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Name relative to the policy directory (`/`-separated below it).
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// Reads policy files, each with the name it is shown by (its path) and
/// its [`Source`] (the name relative to `dir`).
fn read_sources(files: &[PathBuf], dir: &Path) -> Result<Vec<(String, Source)>, PolicyError> {
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Compile {
                file: path.display().to_string(),
                message: format!("cannot read: {e}"),
            })?;
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(path)
                .to_string_lossy()
                .to_string();
            Ok((path.display().to_string(), Source { path: rel, text }))
        })
        .collect()
}

/// The revision of these files, in this order: `sha256:` and the first 16
/// hex digits of SHA-256 over, for each file, its relative name, a zero
/// byte, and the SHA-256 of its text. docs/record.md spells it out for
/// independent verifiers.
pub fn revision_of(sources: &[Source]) -> String {
    let mut digest = Sha256::new();
    for s in sources {
        digest.update(s.path.as_bytes());
        digest.update([0]);
        digest.update(Sha256::digest(s.text.as_bytes()));
    }
    format!("sha256:{}", &hex::encode(digest.finalize())[..16])
}

fn sources_only(read: &[(String, Source)]) -> Vec<Source> {
    read.iter().map(|(_, s)| s.clone()).collect()
}

/// The revision the files in `dir` have now, without compiling them (the
/// reloader's cheap change check).
pub fn revision_on_disk(dir: &Path) -> Result<String, PolicyError> {
    Ok(revision_of(&sources_only(&read_policy(dir)?)))
}

/// The policy files and data documents of `dir` (a directory or a
/// bundle), tests left out. (Without a `.rego` file among them this still
/// has a revision, so the reloader tries it and reports it refused.)
fn read_policy(dir: &Path) -> Result<Vec<(String, Source)>, PolicyError> {
    if bundle::is_bundle(dir) {
        bundle::read(dir)
    } else {
        read_sources(&policy_files(dir, false)?, dir)
    }
}

/// Reads the files, computes the revision and adds them to a fresh engine.
pub fn load_engine(files: &[PathBuf], dir: &Path) -> Result<(Engine, String), PolicyError> {
    let read = read_sources(files, dir)?;
    Ok((engine_of(&read)?, revision_of(&sources_only(&read))))
}

/// A fresh engine holding these files, each under the name it is shown by.
fn engine_of(read: &[(String, Source)]) -> Result<Engine, PolicyError> {
    let mut engine = Engine::new();
    for (shown, source) in read {
        if is_data_file(&source.path) {
            let doc = data_document(&source.path, &source.text)?;
            engine.add_data(doc).map_err(|e| PolicyError::Compile {
                file: shown.clone(),
                message: format!(
                    "cannot be added to data (does it clash with another data document?): {}",
                    one_line(&e.to_string())
                ),
            })?;
            continue;
        }
        check_builtins(shown, &source.text)?;
        engine
            .add_policy(shown.clone(), source.text.clone())
            .map_err(|e| PolicyError::Compile {
                file: shown.clone(),
                message: readable(&e.to_string()),
            })?;
    }
    Ok(engine)
}

/// A regorus parse error as a person reads it: `line L, column C: message`
/// and then the offending line with a caret under the column, indented.
/// regorus writes `--> FILE:L:C`, the source line framed in `|`, and
/// `error: message`; text in another shape is returned as one line.
fn readable(s: &str) -> String {
    let mut at = None;
    let mut snippet = Vec::new();
    let mut message = None;
    for line in s.lines() {
        let trimmed = line.trim_start();
        if let Some(loc) = trimmed.strip_prefix("--> ") {
            // FILE:L:C, where FILE may itself contain colons.
            let mut parts = loc.rsplitn(3, ':');
            let col = parts.next().and_then(|c| c.trim().parse::<u32>().ok());
            let row = parts.next().and_then(|l| l.trim().parse::<u32>().ok());
            if let (Some(row), Some(col)) = (row, col) {
                at = Some((row, col));
            }
        } else if let Some(m) = trimmed.strip_prefix("error: ") {
            message = Some(m.trim().to_string());
        } else if at.is_some() && message.is_none() && trimmed.contains('|') {
            // The framed source: keep the numbered line and the caret line.
            let (gutter, rest) = trimmed.split_once('|').unwrap_or(("", ""));
            if !gutter.trim().is_empty() || rest.trim() == "^" || rest.trim_start().starts_with('^')
            {
                snippet.push(format!("    {:>5} |{}", gutter.trim(), rest.trim_end()));
            }
        }
    }
    match (at, message) {
        (Some((row, col)), Some(m)) => {
            let mut out = format!("line {row}, column {col}: {m}");
            for l in snippet {
                out.push('\n');
                out.push_str(&l);
            }
            out
        }
        _ => one_line(s),
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Policy {
    /// Loads every non-test `.rego` file in `dir` and compiles `entrypoint`.
    pub fn load(settings: &PolicyConfig) -> Result<Policy, PolicyError> {
        let dir = settings.dir.as_path();
        let read = read_policy(dir)?;
        if !read.iter().any(|(_, s)| s.path.ends_with(".rego")) {
            return Err(PolicyError::Empty(dir.display().to_string()));
        }
        Policy::compile(read, &dir.display().to_string(), settings)
    }

    /// Compiles a revision from its files as the record keeps them (for
    /// `audit replay`); `settings.dir` is not read.
    pub fn from_sources(
        sources: Vec<Source>,
        settings: &PolicyConfig,
    ) -> Result<Policy, PolicyError> {
        if sources.is_empty() {
            return Err(PolicyError::Empty("the recorded revision".into()));
        }
        let read = sources.into_iter().map(|s| (s.path.clone(), s)).collect();
        Policy::compile(read, "the recorded revision", settings)
    }

    fn compile(
        read: Vec<(String, Source)>,
        dir: &str,
        settings: &PolicyConfig,
    ) -> Result<Policy, PolicyError> {
        let (entrypoint, timeout) = (settings.entrypoint.as_str(), settings.timeout);
        let mut engine = engine_of(&read)?;
        let sources = sources_only(&read);
        let revision = revision_of(&sources);
        let timer = ExecutionTimerConfig {
            limit: timeout,
            check_interval: TIMER_CHECK_UNITS,
        };
        engine.set_execution_timer_config(timer);
        let compile_err = |e: anyhow::Error| PolicyError::Compile {
            file: dir.to_string(),
            message: one_line(&e.to_string()),
        };
        let entry: regorus::Rc<str> = entrypoint.into();
        let compiled = engine.compile_with_entrypoint(&entry).map_err(|e| {
            if declares(&engine, entrypoint) {
                compile_err(e)
            } else {
                PolicyError::UnknownEntrypoint {
                    entrypoint: entrypoint.to_string(),
                    dir: dir.to_string(),
                }
            }
        })?;

        // Warm the interpreter engine: its first evaluation prepares shared
        // state that every clone then reuses. A policy may legitimately fail
        // on the probe (it is not a real call).
        engine.set_input(input::probe());
        let _ = engine.eval_rule(entrypoint.to_string());

        let mut vm_fallback_reason = None;
        let vm = match settings.engine {
            EngineChoice::Interpreter => {
                vm_fallback_reason = Some("policy.engine is interpreter".to_string());
                None
            }
            EngineChoice::Auto => {
                vm_fallback_reason = Some(AUTO_STAYS_ON_THE_INTERPRETER.to_string());
                None
            }
            EngineChoice::Vm => {
                let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
                    &compiled,
                    &[entrypoint],
                )
                .map_err(|e| PolicyError::Compile {
                    file: dir.to_string(),
                    message: format!(
                        "policy.engine is vm, but the policy does not compile to the VM: {}",
                        one_line(&e.to_string())
                    ),
                })?;
                // The VM does not see the engine's data documents unless
                // given them: without, `data.limits.max` is undefined.
                Some((compiled, program, engine.get_data()))
            }
        };
        let kind = if vm.is_some() {
            EngineKind::Vm
        } else {
            EngineKind::Interpreter
        };
        Ok(Policy {
            revision,
            entrypoint: entrypoint.to_string(),
            kind,
            files: read.into_iter().map(|(shown, _)| shown).collect(),
            sources,
            timer,
            timeout,
            vm,
            engine,
            loaded_at: crate::audit::store::now_rfc3339(),
            vm_fallback_reason,
        })
    }

    /// The revision: a digest of the policy files' names and contents.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Which evaluator runs it.
    pub fn engine_kind(&self) -> EngineKind {
        self.kind
    }

    /// Why the VM is not used, when it is not.
    pub fn vm_fallback_reason(&self) -> Option<&str> {
        self.vm_fallback_reason.as_deref()
    }

    /// The files of this revision.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The files of this revision as the revision is computed over them,
    /// in that order (what the record keeps of it).
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// When this revision was loaded.
    pub fn loaded_at(&self) -> &str {
        &self.loaded_at
    }

    /// The entrypoint evaluated.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// The evaluation time limit (`policy.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Evaluates the entrypoint for one input and returns its raw value as
    /// JSON (`null` when the rule is undefined).
    pub fn evaluate(&self, input: Value) -> Result<serde_json::Value, PolicyError> {
        self.evaluate_within(input, self.timeout)
    }

    /// [`Policy::evaluate`] with regorus's timer set to `limit` (at most
    /// `policy.timeout`): what is left of a caller's deadline after the
    /// evaluation waited for a thread, so no thread works for a caller that
    /// has already given up.
    pub fn evaluate_within(
        &self,
        input: Value,
        limit: Duration,
    ) -> Result<serde_json::Value, PolicyError> {
        let timer = ExecutionTimerConfig {
            limit: limit.min(self.timeout),
            ..self.timer
        };
        let result = match &self.vm {
            Some(vm) => run_vm(vm, input, timer),
            None => {
                let mut engine = self.engine.clone();
                engine.set_execution_timer_config(timer);
                engine.set_input(input);
                engine.eval_rule(self.entrypoint.clone())
            }
        };
        let value = result.map_err(|e| {
            if is_time_limit(&e) {
                PolicyError::Timeout(self.timeout)
            } else {
                PolicyError::Eval(one_line(&e.to_string()))
            }
        })?;
        if value == Value::Undefined {
            return Ok(serde_json::Value::Null);
        }
        serde_json::to_value(&value)
            .map_err(|e| PolicyError::Eval(format!("the result is not JSON: {e}")))
    }
}

/// Whether some loaded module defines a rule at `entrypoint` (or below it),
/// or is the package `entrypoint` names. Asked only after the entrypoint
/// failed to compile, to tell a misspelt name from a broken policy; when
/// regorus cannot say, the answer is yes (the compile error then stands).
fn declares(engine: &Engine, entrypoint: &str) -> bool {
    let Ok(packages) = engine.get_policy_package_components() else {
        return true;
    };
    packages.iter().any(|p| {
        let package = format!("data.{}", p.components.join("."));
        if entrypoint == package {
            return true;
        }
        match entrypoint.strip_prefix(&format!("{package}.")) {
            Some(rule) => engine
                .has_declared_rule_rooted_at(&p.source_file, rule)
                .unwrap_or(true),
            None => false,
        }
    })
}

/// Whether regorus stopped the evaluation at its execution timer (the
/// interpreter reports a `LimitError`, the VM a `VmError`).
fn is_time_limit(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<regorus::LimitError>(),
            Some(regorus::LimitError::TimeLimitExceeded { .. })
        ) || matches!(
            cause.downcast_ref::<regorus::rvm::vm::VmError>(),
            Some(regorus::rvm::vm::VmError::TimeLimitExceeded { .. })
        )
    })
}

/// Why `policy.engine: auto` runs the interpreter (shown by `/readyz`,
/// `countersign check` and the log).
const AUTO_STAYS_ON_THE_INTERPRETER: &str =
    "regorus 0.14's VM answers differently from the interpreter \
in ways that can allow what the interpreter refuses (docs/reference.md, Engine); \
policy.engine: vm is for comparing the two, not for serving";

fn run_vm(
    (compiled, program, data): &(CompiledPolicy, Arc<Program>, Value),
    input: Value,
    timer: ExecutionTimerConfig,
) -> anyhow::Result<Value> {
    let mut vm = RegoVM::new_with_policy(compiled.clone());
    vm.load_program(program.clone());
    // The wall-clock timer is the real bound; the instruction cap only stops
    // a runaway loop between timer checks.
    vm.set_max_instructions(50_000_000);
    // Like the interpreter: a builtin error is an error, not `undefined`.
    // Undefined could let a `default` rule decide and fail open.
    vm.set_strict_builtin_errors(true);
    vm.set_execution_timer_config(Some(timer));
    vm.set_data(data.clone())?;
    vm.set_input(input);
    // Only the entrypoint was compiled, so it is entry point 0.
    Ok(vm.execute_entry_point_by_index(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads the policy in `dir` with the default entrypoint and input.
    fn load(dir: &Path, engine: EngineChoice, timeout: Duration) -> Policy {
        let settings = PolicyConfig {
            dir: dir.to_path_buf(),
            entrypoint: "data.countersign.decision".into(),
            input: crate::config::InputShape::Native,
            timeout,
            engine,
        };
        Policy::load(&settings).unwrap()
    }

    #[test]
    fn both_engines_report_a_runaway_evaluation_as_a_timeout() {
        let dir = std::env::temp_dir().join(format!("countersign-timeout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spin = "package countersign\nimport rego.v1\n\
            spin := count([x | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000); x > y]) if input.request.method == \"POST\"\n\
            decision := {\"action\": \"allow\", \"risk\": \"low\", \"reasons\": [sprintf(\"%v\", [spin])]}\n";
        std::fs::write(dir.join("spin.rego"), spin).unwrap();
        for engine in [EngineChoice::Vm, EngineChoice::Interpreter] {
            let policy = load(&dir, engine, Duration::from_millis(20));
            let input = Value::from(serde_json::json!({"request": {"method": "POST"}}));
            let result = policy.evaluate(input);
            assert!(
                matches!(result, Err(PolicyError::Timeout(_))),
                "{engine:?}: {result:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The VM is given the data documents (it ran with empty data, so
    /// `data.limits.max` was undefined there and the two engines differed).
    #[test]
    fn both_engines_read_the_data_documents() {
        let dir = std::env::temp_dir().join(format!("countersign-data-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("limits")).unwrap();
        std::fs::write(dir.join("limits/data.json"), r#"{"max": 100}"#).unwrap();
        let rego = "package countersign\nimport rego.v1\n\
            default decision := {\"action\": \"deny\", \"risk\": \"high\"}\n\
            decision := {\"action\": \"allow\", \"risk\": \"low\"} if input.amount <= data.limits.max\n";
        std::fs::write(dir.join("p.rego"), rego).unwrap();
        for engine in [EngineChoice::Vm, EngineChoice::Interpreter] {
            let policy = load(&dir, engine, Duration::from_secs(1));
            let input = Value::from(serde_json::json!({"amount": 50}));
            let decided = policy.evaluate(input).unwrap();
            assert_eq!(decided["action"], "allow", "{engine:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn builtin_scan_ignores_comments_and_strings() {
        assert!(check_builtins("a.rego", "# http.send is not used\nx := \"http.send\"").is_ok());
        assert!(check_builtins("a.rego", "x := http.send({})").is_err());
        assert!(check_builtins("a.rego", "x := io.jwt.decode(t)").is_err());
        assert!(check_builtins("a.rego", "x := myhttp.send(1)").is_ok());
    }
}
