//! External programs the tests run: Prometheus's tools (Debian packages `prometheus` and
//! `prometheus-alertmanager`, installed by `scripts/install-deps.sh --with-prometheus`) and the
//! services' own binaries. A missing tool fails the test with the way to install it; nothing
//! is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::repo;

/// The first of `names` found on PATH or in /usr/bin.
pub fn find(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/bin"));
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "none of {names:?} is installed. Install the Debian package {package} \
         (`scripts/install-deps.sh --with-prometheus`, or `apt-get install {package}`); `make test` does it."
    )
}

pub fn promtool() -> PathBuf {
    find(&["promtool"], "prometheus")
}

pub fn prometheus() -> PathBuf {
    find(&["prometheus"], "prometheus")
}

pub fn amtool() -> PathBuf {
    find(&["amtool"], "prometheus-alertmanager")
}

/// Runs a command to completion and returns its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                repo::root().join(d)
            }
        }
        None => repo::root().join("target"),
    }
}

/// A service binary of the workspace (`target/debug/<name>`), built first if missing.
/// (`env!("CARGO_BIN_EXE_...")` only exists for binaries of the crate under test.)
pub fn service_binary(name: &str) -> PathBuf {
    let bin = target_dir().join("debug").join(name);
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run_ok(Command::new(cargo).current_dir(repo::root()).args(["build", "--bin", name]));
    }
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// A path relative to the repository root, as a string (for tool arguments).
pub fn arg(rel: &str) -> String {
    repo::path(rel).to_string_lossy().into_owned()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
