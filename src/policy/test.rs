//! `countersign policy test DIR`: loads every `.rego` file in DIR (tests
//! included, and the data documents) and evaluates each `test_*` rule of
//! the `*_test.rego` files, as `opa test` does. A test passes when its rule
//! is `true`. With coverage, the lines the tests evaluated, per file, in
//! the JSON shape of `opa test --coverage`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{load_engine, policy_files, PolicyError};

/// One test's outcome.
#[derive(Debug)]
pub struct Outcome {
    /// `data.<package>.<rule>`.
    pub name: String,
    /// File it is in.
    pub file: String,
    /// `None` when it passed; why it failed otherwise.
    pub failure: Option<String>,
    /// The rule could not be evaluated (OPA's ERROR), rather than not true.
    pub error: bool,
    /// How long it took.
    pub duration: Duration,
}

/// Lines evaluated and not, by file, over all tests.
#[derive(Debug, Default)]
pub struct Coverage {
    files: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)>,
}

impl Coverage {
    fn add(&mut self, report: regorus::coverage::Report) {
        for f in report.files {
            let (covered, not_covered) = self.files.entry(f.path).or_default();
            covered.extend(f.covered);
            not_covered.extend(f.not_covered);
        }
    }

    /// The report as `opa test --coverage` prints it: per file the covered
    /// and not covered line ranges, the counts and the percentage, and the
    /// totals.
    pub fn to_json(&self) -> Value {
        fn ranges(lines: &BTreeSet<u32>) -> Vec<Value> {
            let mut out: Vec<(u32, u32)> = Vec::new();
            for &l in lines {
                match out.last_mut() {
                    Some((_, end)) if *end + 1 == l => *end = l,
                    _ => out.push((l, l)),
                }
            }
            out.into_iter()
                .map(|(s, e)| json!({"start": {"row": s}, "end": {"row": e}}))
                .collect()
        }
        fn percent(c: usize, n: usize) -> f64 {
            if c + n == 0 {
                100.0
            } else {
                (c as f64 * 10000.0 / (c + n) as f64).round() / 100.0
            }
        }
        let mut files = serde_json::Map::new();
        let (mut all_c, mut all_n) = (0, 0);
        for (path, (covered, not_covered)) in &self.files {
            // A line evaluated by any test is covered.
            let not: BTreeSet<u32> = not_covered.difference(covered).copied().collect();
            all_c += covered.len();
            all_n += not.len();
            files.insert(
                path.clone(),
                json!({
                    "covered": ranges(covered),
                    "not_covered": ranges(&not),
                    "covered_lines": covered.len(),
                    "not_covered_lines": not.len(),
                    "coverage": percent(covered.len(), not.len()),
                }),
            );
        }
        json!({
            "files": files,
            "covered_lines": all_c,
            "not_covered_lines": all_n,
            "coverage": percent(all_c, all_n),
        })
    }
}

/// Finds the tests of one `_test.rego` source: its package and `test_*` rules.
fn tests_in(src: &str) -> (Option<String>, BTreeSet<String>) {
    let mut package = None;
    let mut tests = BTreeSet::new();
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(p) = t.strip_prefix("package ") {
            package = Some(p.trim().to_string());
        } else if line.starts_with("test_") {
            let name: String = t
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            tests.insert(name);
        }
    }
    (package, tests)
}

/// Runs every test in `dir`.
pub fn run(dir: &Path) -> Result<Vec<Outcome>, PolicyError> {
    Ok(run_with(dir, false)?.0)
}

/// Runs every test in `dir`, and gathers coverage when asked.
pub fn run_with(
    dir: &Path,
    coverage: bool,
) -> Result<(Vec<Outcome>, Option<Coverage>), PolicyError> {
    let files = policy_files(dir, true)?;
    let (mut engine, _) = load_engine(&files, dir)?;
    engine.set_enable_coverage(coverage);
    let mut gathered = coverage.then(Coverage::default);
    let mut outcomes = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.to_string_lossy().ends_with("_test.rego"))
    {
        let src = std::fs::read_to_string(file).map_err(|e| PolicyError::Compile {
            file: file.display().to_string(),
            message: e.to_string(),
        })?;
        let (Some(package), tests) = tests_in(&src) else {
            continue;
        };
        for test in tests {
            let name = format!("data.{package}.{test}");
            let mut e = engine.clone();
            let started = Instant::now();
            let result = e.eval_rule(name.clone());
            let duration = started.elapsed();
            let error = result.is_err();
            let failure = match result {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => {
                    Some("undefined (a condition did not hold)".to_string())
                }
                Ok(v) => Some(format!("evaluated to {v}, not true")),
                Err(err) => Some(super::one_line(&err.to_string())),
            };
            if let Some(c) = gathered.as_mut() {
                if let Ok(report) = e.get_coverage_report() {
                    c.add(report);
                }
            }
            outcomes.push(Outcome {
                name,
                file: file.display().to_string(),
                failure,
                error,
                duration,
            });
        }
    }
    Ok((outcomes, gathered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_package_and_tests() {
        let (p, t) = tests_in(
            "package a.b_test\n\ntest_one if { true }\ntest_two if {\n}\nnot_a_test := 1\n",
        );
        assert_eq!(p.as_deref(), Some("a.b_test"));
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            vec!["test_one", "test_two"]
        );
    }
}
