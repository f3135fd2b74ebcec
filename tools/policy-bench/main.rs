//! What one policy evaluation costs, alone: the floor under countersign's
//! CPU per call (docs/benchmarks.md). Loads a policy directory the way
//! `countersign serve` does, converts one recorded input the way the
//! request path does, and evaluates it in a loop on each engine, timing
//! the thread's CPU (not the wall clock, so a busy machine inflates it
//! less).
//!
//!   cargo run --release --example policy-bench -- [POLICY_DIR] [INPUT_JSON] [N]
//!
//! Defaults: the shipped payments policy, the input of the benchmark's
//! 250 EUR payout as the record keeps it, 20,000 evaluations.

use std::path::PathBuf;
use std::time::Duration;

use countersign::config::{EngineChoice, InputShape, PolicyConfig};
use countersign::policy::{input, Policy};

// The allocator `countersign serve` runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU µs per run of `f`, after a warm-up of a tenth as many.
fn per_run(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = thread_cpu();
    for _ in 0..n {
        f();
    }
    (thread_cpu() - start).as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("examples/payments/policies"));
    let input_file = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("tools/policy-bench/payout-input.json"));
    let n: usize = args
        .next()
        .map_or(20_000, |s| s.parse().expect("N: a count"));

    let text = std::fs::read_to_string(&input_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", input_file.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("the input is JSON");

    println!(
        "policy {}, input {}, {n} evaluations",
        dir.display(),
        input_file.display()
    );
    let convert = per_run(n, || {
        std::hint::black_box(input::to_rego(json.clone()));
    });
    println!("{:<28} {convert:>7.1} µs", "input JSON -> regorus value");
    for engine in [EngineChoice::Interpreter, EngineChoice::Vm] {
        let settings = PolicyConfig {
            dir: dir.clone(),
            entrypoint: "data.countersign.decision".into(),
            input: InputShape::Native,
            timeout: Duration::from_secs(1),
            engine,
        };
        let policy = Policy::load(&settings).unwrap_or_else(|e| panic!("{e}"));
        let doc = input::to_rego(json.clone());
        let first = policy
            .evaluate(doc.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let action = first["action"].as_str().unwrap_or("?").to_string();
        let cost = per_run(n, || {
            std::hint::black_box(policy.evaluate(doc.clone()).expect("evaluates"));
        });
        println!(
            "{:<28} {cost:>7.1} µs  ({action})",
            format!("evaluation, {}", policy.engine_kind().as_str())
        );
    }
}
