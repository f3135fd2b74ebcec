//! Runs Rego policies on both of regorus's engines, the tree-walking
//! interpreter countersign serves with and the bytecode VM, and prints
//! every case where the VM answers while the interpreter answers
//! differently or fails. Such a case is why `policy.engine: auto` does not
//! run the VM (docs/reference.md, "Engine"): a VM answer that differs can
//! allow what the interpreter refuses. Rerun it after upgrading regorus:
//!
//!   cargo run --release --example vm-diff -- tools/vm-diff/cases/*.txt
//!
//! A case file holds cases, each starting with a line `=== name`: the
//! policy (without a `package` line, `package canary` and `import rego.v1`
//! are put in front; the entrypoint is `data.canary.d`), then a line
//! `--- input` and the input as JSON, then optionally `--- data` and a
//! data document. `V=1` prints every case, not only the divergences.

use regorus::rvm::vm::RegoVM;
use regorus::{Engine, Rc, Value};

const ENTRYPOINT: &str = "data.canary.d";

/// What one engine made of a case.
fn shown(result: &anyhow::Result<Value>) -> String {
    match result {
        Ok(v) => format!("{v}"),
        Err(e) => {
            let last = e.to_string();
            let last = last.lines().last().unwrap_or("").trim();
            format!("fails ({})", last.trim_start_matches("error: "))
        }
    }
}

/// Runs one case; returns whether the engines diverge.
fn run(name: &str, body: &str, input_and_data: &str, verbose: bool) -> bool {
    let (input, data) = input_and_data
        .split_once("--- data\n")
        .unwrap_or((input_and_data, ""));
    let policy = if body.starts_with("package") {
        body.to_string()
    } else {
        format!("package canary\nimport rego.v1\n{body}")
    };
    let input: serde_json::Value = match serde_json::from_str(input.trim()) {
        Ok(v) => v,
        Err(e) => {
            println!("[{name}] bad input: {e}");
            return false;
        }
    };
    let mut engine = Engine::new();
    if !data.trim().is_empty() {
        match Value::from_json_str(data.trim()).and_then(|d| engine.add_data(d)) {
            Ok(()) => {}
            Err(e) => {
                println!("[{name}] bad data: {e}");
                return false;
            }
        }
    }
    if let Err(e) = engine.add_policy("p.rego".into(), policy) {
        println!(
            "[{name}] does not parse: {}",
            e.to_string().lines().last().unwrap_or("")
        );
        return false;
    }
    let compiled = match engine.compile_with_entrypoint(&Rc::from(ENTRYPOINT)) {
        Ok(c) => c,
        Err(e) => {
            println!("[{name}] does not compile: {e}");
            return false;
        }
    };
    let program = match regorus::languages::rego::compiler::Compiler::compile_from_policy(
        &compiled,
        &[ENTRYPOINT],
    ) {
        Ok(p) => p,
        Err(_) if !verbose => return false,
        Err(e) => {
            println!(
                "[{name}] not compiled to the VM: {}",
                e.to_string().lines().next().unwrap_or("")
            );
            return false;
        }
    };
    // As countersign runs it (src/policy/mod.rs, run_vm).
    let mut vm = RegoVM::new_with_policy(compiled);
    vm.load_program(program);
    vm.set_strict_builtin_errors(true);
    let on_vm = vm
        .set_data(engine.get_data())
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            vm.set_input(Value::from(input.clone()));
            vm.execute_entry_point_by_index(0)
                .map_err(anyhow::Error::from)
        });
    engine.set_input(Value::from(input));
    let interpreted = engine.eval_rule(ENTRYPOINT.to_string());
    let diverges = match (&on_vm, &interpreted) {
        (Ok(a), Ok(b)) => a != b,
        (Ok(_), Err(_)) => true,
        (Err(_), _) => false,
    };
    if diverges || verbose {
        let mark = if diverges { "DIVERGES" } else { "same" };
        println!(
            "[{name}] {mark}: vm {} | interpreter {}",
            shown(&on_vm),
            shown(&interpreted)
        );
    }
    diverges
}

fn main() {
    let verbose = std::env::var_os("V").is_some();
    let (mut cases, mut diverging) = (0, 0);
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        for case in text.split("\n=== ").skip(1) {
            let (name, rest) = case.split_once('\n').unwrap_or((case, ""));
            let (body, input) = rest.split_once("--- input\n").unwrap_or((rest, "{}"));
            cases += 1;
            if run(name.trim(), body, input, verbose) {
                diverging += 1;
            }
        }
    }
    println!("{cases} cases, {diverging} where the VM answers differently from the interpreter");
}
