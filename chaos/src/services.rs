//! The service binaries as child processes: environment, log file, signals.
//!
//! Each child gets only the environment the harness gives it (plus `PATH` and `HOME`), so a
//! variable in the caller's shell can never change what is tested. Output goes to
//! `<run dir>/logs/<name>.log`, appended across restarts with a marker line per start.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Producer,
    Detector,
    Sink,
    Webhook,
}

impl Kind {
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Producer => "producer",
            Kind::Detector => "detector",
            Kind::Sink => "sink",
            Kind::Webhook => "webhook",
        }
    }

    /// The variable naming the address it listens on.
    pub fn bind_var(self) -> &'static str {
        match self {
            Kind::Producer => "PRODUCER_BIND",
            Kind::Detector => "DETECTOR_BIND",
            Kind::Sink => "SINK_BIND",
            Kind::Webhook => "WEBHOOK_BIND",
        }
    }
}

/// One service instance (a name such as `detector-2`, a binary, its environment and port).
pub struct Service {
    pub name: String,
    pub kind: Kind,
    pub port: u16,
    pub env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Starts so far.
    pub starts: u32,
    /// Restart it when it exits (false once the harness stops it for good).
    pub supervised: bool,
    /// Why the harness is about to make it exit (so the supervisor can say so).
    pub pending_cause: Option<String>,
    pub started_at: Option<Instant>,
}

impl Service {
    pub fn new(name: &str, kind: Kind, env: Vec<(String, String)>, log_dir: &Path) -> Service {
        let port = vigil_testkit::free_port();
        Service {
            name: name.to_owned(),
            kind,
            port,
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
            supervised: true,
            pending_cause: None,
            started_at: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (it must not be running).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let bin = crate::service_bin(self.kind.binary());
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.starts += 1;
        let _ = writeln!(log, "===== vigil-chaos: start {} of {} =====", self.starts, self.name);
        let mut cmd = Command::new(bin);
        cmd.env_clear();
        for var in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        cmd.env(self.kind.bind_var(), format!("127.0.0.1:{}", self.port))
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        if let Some(run_dir) = self.log.parent().and_then(Path::parent) {
            crate::record_pid(run_dir, child.id(), &crate::service_bin(self.kind.binary()));
        }
        self.child = Some(child);
        self.started_at = Some(Instant::now());
    }

    /// `kill -9` (the supervisor, if any, restarts it and records `cause`).
    pub fn kill9(&mut self, cause: &str) {
        self.pending_cause = Some(cause.to_owned());
        if let Some(pid) = self.pid() {
            let _ = crate::proc::signal(pid, "KILL");
        }
    }

    /// SIGTERM, then waits up to `grace` for it to exit (then `kill -9`). Not restarted.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.supervised = false;
        let mut child = self.child.take()?;
        let _ = crate::proc::signal(child.id(), "TERM");
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Some(status)` once the process has exited (it is then reaped and no longer running).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_sequences_are_stripped() {
        assert_eq!(super::strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ok"), "2026  INFO ok");
    }
}
