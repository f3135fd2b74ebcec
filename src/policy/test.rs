//! `countersign policy test DIR`: loads every `.rego` file in DIR (tests
//! included) and evaluates each `test_*` rule of the `*_test.rego` files, as
//! `opa test` does. A test passes when its rule is `true`.

use std::collections::BTreeSet;
use std::path::Path;

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
    let files = policy_files(dir, true)?;
    let (engine, _) = load_engine(&files, dir)?;
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
            let failure = match e.eval_rule(name.clone()) {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => {
                    Some("undefined (a condition did not hold)".to_string())
                }
                Ok(v) => Some(format!("evaluated to {v}, not true")),
                Err(err) => Some(format!("error: {}", super::one_line(&err.to_string()))),
            };
            outcomes.push(Outcome {
                name,
                file: file.display().to_string(),
                failure,
            });
        }
    }
    Ok(outcomes)
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
