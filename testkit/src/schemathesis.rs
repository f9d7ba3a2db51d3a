//! Runs schemathesis (PyPI; `scripts/install-deps.sh --with-python` installs it into the venv
//! `VIGIL_TEST_PYTHON` names) against a service's `/openapi.json` through a real socket, and
//! reads back what it sent and got (its HAR and JSON reports), so a test can check what the
//! service stored or published against the requests that were answered 2xx.
//!
//! Size and seed come from the environment, so one test serves both forms: `make test` runs a
//! few hundred cases with a fixed seed (`VIGIL_SCHEMATHESIS_EXAMPLES`, default
//! [`DEFAULT_EXAMPLES`] per operation; `VIGIL_SCHEMATHESIS_SEED`, default [`DEFAULT_SEED`]), and
//! `scripts/fuzz.sh` thousands with a fresh seed. `VIGIL_SCHEMATHESIS_REPORT_DIR` keeps the
//! reports (else they go to a temporary directory that is removed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Examples per API operation and phase in `make test`.
pub const DEFAULT_EXAMPLES: u32 = 40;
/// The seed of `make test`'s runs, so a failure there reproduces.
pub const DEFAULT_SEED: u64 = 20_261_122;

/// The checks every run applies: no 5xx; status codes, content types, headers and bodies as
/// documented; data the schema calls invalid refused; an undocumented method answered 405 with
/// an `Allow` header; a missing required header refused. `positive_data_acceptance` is
/// left out: the services refuse some schema-valid data on purpose, by rules no JSON Schema
/// states (an event older than MAX_EVENT_AGE, an Idempotency-Key that disagrees with the body's
/// id, a cursor that no page returned).
pub const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                          response_headers_conformance,response_schema_conformance,negative_data_rejection,\
                          unsupported_method,allow_header_conformance,missing_required_header";

/// One schemathesis run to make.
#[derive(Debug, Clone)]
pub struct Run {
    /// Names the report directory when reports are kept.
    pub name: String,
    /// The service's base URL, e.g. `http://127.0.0.1:41234`; the spec is read from
    /// `<base>/openapi.json`.
    pub base_url: String,
    /// Sent with every request, e.g. `Authorization: Bearer ...`.
    pub headers: Vec<(String, String)>,
    /// Comma-separated checks (default [`CHECKS`]).
    pub checks: String,
    /// Extra arguments for `schemathesis run`.
    pub extra: Vec<String>,
    /// Examples per operation and phase; `None` takes `VIGIL_SCHEMATHESIS_EXAMPLES`.
    pub examples: Option<u32>,
    /// A `schemathesis.toml` for this run (e.g. per-operation check settings); empty for none.
    pub config: String,
}

impl Run {
    pub fn new(name: &str, base_url: &str) -> Run {
        Run {
            name: name.to_owned(),
            base_url: base_url.to_owned(),
            headers: Vec::new(),
            checks: CHECKS.to_owned(),
            extra: Vec::new(),
            examples: None,
            config: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Run {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Run {
        self.extra.push(arg.to_owned());
        self
    }

    /// Runs schemathesis to completion (in a blocking thread) and returns what it reported.
    pub async fn execute(self) -> Report {
        match tokio::task::spawn_blocking(move || self.execute_blocking()).await {
            Ok(r) => r,
            Err(e) => panic!("the schemathesis runner thread failed: {e}"),
        }
    }

    fn execute_blocking(&self) -> Report {
        let python = std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("VIGIL_TEST_PYTHON is not set: run the tests with `make test`, which installs schemathesis")
        });
        let examples = self.examples.unwrap_or_else(|| env_or("VIGIL_SCHEMATHESIS_EXAMPLES", DEFAULT_EXAMPLES));
        let seed = env_or("VIGIL_SCHEMATHESIS_SEED", DEFAULT_SEED);
        let (dir, keep) = match std::env::var_os("VIGIL_SCHEMATHESIS_REPORT_DIR") {
            Some(d) => (PathBuf::from(d).join(crate::unique(&self.name)), true),
            None => (std::env::temp_dir().join(crate::unique(&format!("vigil-schemathesis-{}", self.name))), false),
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let (har, json) = (dir.join("har.json"), dir.join("report.json"));

        let mut cmd = Command::new(&python);
        // The module has no __main__; this is what the `schemathesis` console script runs.
        cmd.args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]);
        if !self.config.is_empty() {
            let path = dir.join("schemathesis.toml");
            std::fs::write(&path, &self.config).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            cmd.arg("--config-file").arg(path);
        }
        cmd.arg("run")
            .arg(format!("{}/openapi.json", self.base_url))
            .args(["--checks", &self.checks])
            .args(["--max-examples", &examples.to_string()])
            .args(["--seed", &seed.to_string()])
            // One worker: CPython 3.11's ast.parse is not thread-safe, and hypothesis calls it while
            // describing strategies ("AST constructor recursion depth mismatch" with 2 workers).
            .args(["--workers", "1", "--request-timeout", "30", "--no-color"])
            .args(["--generation-database", "none", "--output-truncate", "false"])
            .args(["--report", "har,json"])
            .arg("--report-har-path")
            .arg(&har)
            .arg("--report-json-path")
            .arg(&json);
        for (k, v) in &self.headers {
            cmd.args(["--header", &format!("{k}: {v}")]);
        }
        cmd.args(&self.extra).current_dir(&dir).env("NO_COLOR", "1");
        let started = Instant::now();
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run schemathesis with {python}: {e}"));
        let duration = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary = read_json(&json).unwrap_or_else(|e| {
            panic!("schemathesis wrote no report ({e}); exit {:?}\n{stdout}\n{stderr}", out.status.code())
        });
        let exchanges = read_json(&har).map(|h| exchanges(&h)).unwrap_or_default();
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Report { success: out.status.success(), stdout, stderr, summary, exchanges, duration, seed, examples }
    }
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
        _ => default,
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// One request schemathesis sent and the answer it got.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub status: u16,
    pub response_body: String,
}

impl Exchange {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The response body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.response_body).unwrap_or(Value::Null)
    }
}

fn exchanges(har: &Value) -> Vec<Exchange> {
    let entries = har["log"]["entries"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let path = url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
            Exchange {
                method: e["request"]["method"].as_str().unwrap_or_default().to_owned(),
                path: path.split('?').next().unwrap_or(path).to_owned(),
                status: e["response"]["status"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0),
                response_body: e["response"]["content"]["text"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// What one run did.
#[derive(Debug)]
pub struct Report {
    /// schemathesis exited 0: every check passed on every case.
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// Its JSON report.
    pub summary: Value,
    /// Every request it sent, in order.
    pub exchanges: Vec<Exchange>,
    pub duration: Duration,
    pub seed: u64,
    pub examples: u32,
}

impl Report {
    /// Test cases generated, over all operations and phases.
    pub fn cases(&self) -> u64 {
        self.summary["test_cases"]["generated"].as_u64().unwrap_or(0)
    }

    /// Operations tested (of those the document lists).
    pub fn operations_tested(&self) -> u64 {
        self.summary["operations"]["tested"].as_u64().unwrap_or(0)
    }

    /// The requests to `method path` answered 2xx.
    pub fn successes<'a>(&'a self, method: &'a str, path: &'a str) -> impl Iterator<Item = &'a Exchange> + 'a {
        self.exchanges.iter().filter(move |e| e.method == method && e.path == path && e.is_success())
    }

    /// How many answers had each status, e.g. `{200: 12, 422: 310}`.
    pub fn statuses(&self) -> std::collections::BTreeMap<u16, usize> {
        let mut m = std::collections::BTreeMap::new();
        for e in &self.exchanges {
            *m.entry(e.status).or_insert(0) += 1;
        }
        m
    }

    /// One line for the test log: cases, requests, statuses, time, seed.
    pub fn figures(&self) -> String {
        format!(
            "schemathesis: {} cases over {} operations, {} requests, statuses {:?}, {:.1} s, {} examples per operation, seed {}",
            self.cases(),
            self.operations_tested(),
            self.exchanges.len(),
            self.statuses(),
            self.duration.as_secs_f64(),
            self.examples,
            self.seed
        )
    }

    /// Panics with schemathesis' own account of every failure unless the run passed, tested
    /// every operation and generated at least `min_cases` cases.
    pub fn assert_passed(&self, min_cases: u64) {
        assert!(self.success, "schemathesis found failures ({}):\n{}\n{}", self.figures(), self.stdout, self.stderr);
        let total = self.summary["operations"]["selected"].as_u64().unwrap_or(0);
        assert_eq!(self.operations_tested(), total, "not every operation was tested:\n{}", self.stdout);
        assert!(
            self.cases() >= min_cases,
            "only {} cases (expected at least {min_cases}):\n{}",
            self.cases(),
            self.stdout
        );
    }
}
