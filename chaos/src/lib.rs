//! Reliability tests of the whole pipeline, run as real processes.
//!
//! * [`broker`]: a nisshi broker of the harness's own, which it can `kill -9`, restart on the same
//!   port and storage, and freeze (`SIGSTOP`) to make it unreachable the way a partition does.
//! * [`services`]: the four service binaries as child processes with their environment, their
//!   logs, and the signals the faults need.
//! * [`stack`]: broker, PostgreSQL, topics, services and a supervisor that restarts whatever
//!   exits (as a deployment's `restart: unless-stopped` would) and records why.
//! * [`traffic`]: the simulator's scenarios sent through the producer, in-process.
//! * [`books`]: what "counted exactly once" means, checked against PostgreSQL and the topics.
//! * [`faults`]: the fault suite and its report.
//! * [`soak`]: resident memory and open descriptors sampled over time, and the growth verdict.
//!
//! The service binaries are the ones cargo built next to the running test or binary
//! (`target/<profile>/`), or those in `VIGIL_CHAOS_BIN_DIR`.
#![allow(clippy::unwrap_used)]

pub mod books;
pub mod broker;
pub mod faults;
pub mod proc;
pub mod receiver;
pub mod services;
pub mod soak;
pub mod stack;
pub mod traffic;

use std::path::PathBuf;

/// The workspace root (for `.vigil/chaos/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Where the service binaries are: `VIGIL_CHAOS_BIN_DIR`, else the directory cargo put the
/// running executable in (a test's `deps/` sits one level below it).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("VIGIL_CHAOS_BIN_DIR") {
        if !d.is_empty() {
            return PathBuf::from(d);
        }
    }
    let exe = std::env::current_exe().expect("the running executable has a path");
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A service binary, checked to exist.
pub fn service_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} does not exist: build the services first (`cargo build --bins`, which `make test` and \
         `make chaos` do), or point VIGIL_CHAOS_BIN_DIR at them",
        p.display()
    );
    p
}

/// The run directory `.vigil/chaos/<name>` (emptied first): logs and broker storage. Processes
/// an earlier run under the same name left behind (its harness was killed before it could stop
/// them) are stopped first.
pub fn run_dir(name: &str) -> PathBuf {
    let dir = workspace_root().join(".vigil").join("chaos").join(name);
    reap_orphans(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Records a child process in `<run dir>/pids` (`pid executable`), for [`reap_orphans`].
pub fn record_pid(run_dir: &std::path::Path, pid: u32, exe: &std::path::Path) {
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(run_dir.join("pids")) {
        let _ = writeln!(f, "{pid} {}", exe.display());
    }
}

/// Stops what an earlier run in `dir` left running: each recorded pid whose executable is still
/// the recorded one, and the PostgreSQL cluster on the recorded port.
fn reap_orphans(dir: &std::path::Path) {
    for line in std::fs::read_to_string(dir.join("pids")).unwrap_or_default().lines() {
        let Some((pid, exe)) = line.split_once(' ') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if running.is_some_and(|r| r.display().to_string().starts_with(exe)) {
            eprintln!("[chaos] stopping pid {pid} ({exe}) left by an earlier run");
            let _ = proc::signal(pid, "KILL");
        }
    }
    if let Ok(port) = std::fs::read_to_string(dir.join("postgres.port")) {
        stop_postgres_on_port(port.trim());
    }
}

/// Stops (immediately) and removes the harness-made PostgreSQL cluster listening on `port`.
fn stop_postgres_on_port(port: &str) {
    for parent in ["/var/lib/postgresql", "/tmp"] {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let data = e.path();
            if !e.file_name().to_string_lossy().starts_with("vigil-pg-") {
                continue;
            }
            let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pidfile.lines().nth(3).map(str::trim) != Some(port) {
                continue;
            }
            let Some(pid) = pidfile.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else { continue };
            eprintln!("[chaos] stopping the PostgreSQL cluster {} left by an earlier run", data.display());
            // SIGQUIT is PostgreSQL's immediate shutdown.
            let _ = proc::signal(pid, "QUIT");
            for _ in 0..100 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = std::fs::remove_dir_all(&data);
        }
    }
}
