//! The install and start-up scripts' decisions, run for real on this machine:
//!
//! * scripts/install-deps.sh as a non-root user (`nobody`, through runuser, when the tests run as
//!   root; the user running them otherwise): nothing missing, it succeeds without sudo; a missing
//!   package goes through `sudo apt-get install` (a stand-in sudo that records its arguments), and
//!   it says so; without sudo it names what is missing; a too old Rust toolchain and a missing
//!   curl are named before anything is installed.
//! * scripts/observability.sh (make run's Prometheus and Alertmanager) with 9090/9093-like ports
//!   held by listeners of this test: it takes the next free ones, says so, writes them down, and
//!   the Prometheus it starts scrapes the services' ports and sends to its Alertmanager.
//! * scripts/deploy.sh (make deploy-up / deploy-down) without Docker and with a stand-in docker.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use vigil_ops_tests::repo;

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn is_root() -> bool {
    String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap().trim() == "0"
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A directory of links to exactly `tools` (from /usr/bin or /bin), for a PATH that lacks
/// everything else.
fn tool_dir(root: &Path, name: &str, tools: &[&str]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for t in tools {
        let src = ["/usr/bin", "/bin", "/usr/sbin"]
            .iter()
            .map(|d| Path::new(d).join(t))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{t} is not installed"));
        std::os::unix::fs::symlink(src, dir.join(t)).unwrap();
    }
    dir
}

/// What install-deps.sh and lib.sh call when nothing needs building.
const BASE_TOOLS: [&str; 19] = [
    "bash", "env", "id", "sed", "head", "sort", "awk", "dirname", "cat", "mkdir", "ls", "tail", "tr", "grep", "cksum",
    "cut", "python3", "apt-get", "psql",
];

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A world-readable directory with a cache holding a (stand-in) nisshi, so the broker build
    /// is not needed, and stand-ins for rustc (`rustc_version`) and cargo.
    fn new(rustc_version: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache = dir.path().join("cache");
        let nisshi = cache.join("nisshi-0.8.1/bin");
        std::fs::create_dir_all(&nisshi).unwrap();
        write_exe(&nisshi.join("nisshi"), "#!/bin/sh\nexit 0\n");
        for d in [cache.clone(), cache.join("nisshi-0.8.1"), nisshi] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let fake = dir.path().join("fake");
        std::fs::create_dir_all(&fake).unwrap();
        write_exe(&fake.join("rustc"), &format!("#!/bin/sh\necho 'rustc {rustc_version} (0000000 2026-01-01)'\n"));
        write_exe(&fake.join("cargo"), "#!/bin/sh\nexit 0\n");
        Sandbox { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A stand-in sudo that records its arguments (one line per call) and succeeds.
    fn with_sudo(&self) -> PathBuf {
        let log = self.path().join("sudo.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_exe(&self.path().join("fake/sudo"), &format!("#!/bin/sh\necho \"$*\" >> {}\nexit 0\n", log.display()));
        log
    }

    /// install-deps.sh as a non-root user with PATH = the stand-ins, then `tools`.
    fn install_deps(&self, tools: &[&str]) -> Output {
        let tools_dir = tool_dir(self.path(), &format!("tools-{}", tools.len()), tools);
        let path = format!("{}:{}", self.path().join("fake").display(), tools_dir.display());
        let script = repo::path("scripts/install-deps.sh");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", "/usr/bin/env", "-i"]);
            c
        } else {
            let mut c = Command::new("/usr/bin/env");
            c.arg("-i");
            c
        };
        cmd.arg(format!("PATH={path}"))
            .arg(format!("HOME={}", self.path().display()))
            .arg(format!("VIGIL_CACHE={}", self.path().join("cache").display()))
            .arg("/bin/bash")
            .arg(script);
        cmd.output().unwrap()
    }
}

fn with(tools: &[&str], extra: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BASE_TOOLS.to_vec();
    v.extend(extra);
    v.retain(|t| !tools.contains(t));
    v
}

/// The C toolchain (librdkafka's build), curl, and what the Kafka TLS tests use.
const BUILD_TOOLS: [&str; 6] = ["cc", "make", "pkg-config", "curl", "openssl", "stunnel4"];

#[test]
fn as_a_non_root_user_install_deps_needs_no_sudo_when_nothing_is_missing() {
    let sb = Sandbox::new("1.90.0");
    let sudo_log = sb.with_sudo();
    let out = sb.install_deps(&with(&[], &BUILD_TOOLS));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("Dependencies are in place."), "{t}");
    assert!(!t.contains("sudo"), "{t}");
    assert_eq!(std::fs::read_to_string(&sudo_log).unwrap(), "", "sudo was called");
}

#[test]
fn as_a_non_root_user_install_deps_installs_a_missing_package_with_sudo_apt_get_and_says_so() {
    let sb = Sandbox::new("1.90.0");
    let sudo_log = sb.with_sudo();
    // pkg-config is missing (and so OpenSSL's headers cannot be found through it).
    let out = sb.install_deps(&with(&["pkg-config"], &BUILD_TOOLS));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("Installing build-essential pkg-config with sudo apt-get (not root"), "{t}");
    let apt = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends";
    assert_eq!(
        std::fs::read_to_string(&sudo_log).unwrap(),
        format!("{apt} build-essential pkg-config\n{apt} libssl-dev\n")
    );

    // Without sudo: it stops and says what to do.
    let sb = Sandbox::new("1.90.0");
    let out = sb.install_deps(&with(&["pkg-config"], &BUILD_TOOLS));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("needs root and sudo is not installed"), "{t}");
}

#[test]
fn install_deps_names_what_it_cannot_install_before_installing_anything() {
    let need = repo::read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \"").map(|v| v.trim_end_matches('"').to_owned()))
        .unwrap();
    let sb = Sandbox::new("1.70.0");
    let sudo_log = sb.with_sudo();
    // An old rustc, no curl, and pkg-config missing (which it could install).
    let out = sb.install_deps(&with(&["pkg-config", "curl"], &BUILD_TOOLS));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("Missing, and not installed by these scripts:"), "{t}");
    assert!(t.contains(&format!("a Rust toolchain >= {need} (rustc is 1.70.0")), "{t}");
    assert!(t.contains("curl (apt-get install curl)"), "{t}");
    assert_eq!(std::fs::read_to_string(&sudo_log).unwrap(), "", "nothing is installed first");
    // The toolchain of the workspace's own rust-version passes.
    let sb = Sandbox::new(&format!("{need}.0"));
    sb.with_sudo();
    let out = sb.install_deps(&with(&[], &BUILD_TOOLS));
    assert!(out.status.success(), "{}", text(&out));
}

fn env_file(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

#[test]
fn make_runs_prometheus_and_alertmanager_take_free_ports_when_theirs_are_held_and_scrape_the_services() {
    // Two listeners stand for Debian's prometheus and prometheus-alertmanager services.
    let held_prom = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_am = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pp, ap) = (held_prom.local_addr().unwrap().port(), held_am.local_addr().unwrap().port());
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("webhook.token"), "a-token-of-this-test-0123").unwrap();
    let base = 43000u16;
    let script = repo::path("scripts/observability.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", state.path().to_str().unwrap()])
        .env("VIGIL_PROMETHEUS_PORT", pp.to_string())
        .env("VIGIL_ALERTMANAGER_PORT", ap.to_string())
        .env("VIGIL_PORT_BASE", base.to_string())
        .output()
        .unwrap();
    let stop = || {
        Command::new("bash").arg(&script).args(["stop", state.path().to_str().unwrap()]).output().unwrap();
    };
    let t = text(&out);
    if !out.status.success() {
        stop();
        panic!("{t}");
    }
    let env = env_file(&state.path().join("observability.env"));
    let (prom, am) = (port_of(&env["PROMETHEUS_URL"]), port_of(&env["ALERTMANAGER_URL"]));
    assert!(prom != pp && am != ap && prom != am, "{env:?}");
    assert!(t.contains(&format!("Port {pp} is taken")) && t.contains(&format!("listens on {prom} instead")), "{t}");
    assert!(t.contains(&format!("Port {ap} is taken")) && t.contains(&format!("listens on {am} instead")), "{t}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let checked = rt.block_on(async {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{prom}");
        // Every target, once the scrape pools are loaded.
        let mut scraped: Vec<String> = Vec::new();
        for _ in 0..50 {
            let targets: serde_json::Value =
                http.get(format!("{url}/api/v1/targets")).send().await.unwrap().json().await.unwrap();
            scraped = targets["data"]["activeTargets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["scrapeUrl"].as_str().unwrap().to_owned())
                .collect();
            if scraped.len() >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        scraped.sort();
        let mut expected: Vec<String> =
            (1..=4).map(|i| format!("http://127.0.0.1:{}/metrics", base + i)).collect::<Vec<_>>();
        expected.push(format!("http://127.0.0.1:{prom}/metrics"));
        expected.sort();
        // Its Alertmanager is the one it started (discovered within a few seconds).
        let mut ams = serde_json::Value::Null;
        for _ in 0..50 {
            ams = http.get(format!("{url}/api/v1/alertmanagers")).send().await.unwrap().json().await.unwrap();
            if ams["data"]["activeAlertmanagers"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let am_ready = http.get(format!("http://127.0.0.1:{am}/-/ready")).send().await.map(|r| r.status().as_u16());
        (scraped, expected, ams, am_ready.ok())
    });
    stop();
    let (scraped, expected, ams, am_ready) = checked;
    assert_eq!(scraped, expected);
    assert_eq!(
        ams["data"]["activeAlertmanagers"][0]["url"].as_str(),
        Some(format!("http://127.0.0.1:{am}/api/v2/alerts").as_str()),
        "{ams}"
    );
    assert_eq!(am_ready, Some(200));
    drop((held_prom, held_am));
}

#[test]
fn run_sh_uses_observability_ports_as_written_and_never_skips_prometheus_because_9090_is_taken() {
    let run = repo::read("scripts/run.sh");
    assert!(!run.contains("port_open 9090"), "make run must not give up on Prometheus when 9090 is taken");
    assert!(run.contains("cat \"$STATE/observability.env\" >>\"$RUN_ENV\""), "the ports in use go to run.env");
}

#[test]
fn deploy_up_and_down_run_compose_and_say_clearly_when_docker_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bare = tool_dir(dir.path(), "bare", &["bash", "dirname"]);
    let script = repo::path("scripts/deploy.sh");
    let out = Command::new("/bin/bash").arg(&script).arg("up").env_clear().env("PATH", &bare).output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("Docker is not installed (no docker on PATH)"), "{t}");

    // A docker with the compose plugin and a daemon: records its arguments.
    let fake = dir.path().join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    let log = dir.path().join("docker.log");
    write_exe(&fake.join("docker"), &format!("#!/bin/bash\necho \"$*\" >> {}\nexit 0\n", log.display()));
    let path = format!("{}:{}", fake.display(), bare.display());
    let file = repo::path("deploy/docker-compose.yml");
    for (cmd, expected) in [("up", "up -d --build"), ("down", "down")] {
        let _ = std::fs::remove_file(&log);
        let out = Command::new("/bin/bash").arg(&script).arg(cmd).env_clear().env("PATH", &path).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(calls.lines().any(|l| l == format!("compose -f {} {expected}", file.display())), "{calls}");
    }
    // A docker without the compose plugin: named.
    write_exe(
        &fake.join("docker"),
        "#!/bin/bash\n[ \"$1\" = compose ] && { echo \"docker: unknown command: docker compose\" >&2; exit 1; }\nexit 0\n",
    );
    let out = Command::new("/bin/bash").arg(&script).arg("up").env_clear().env("PATH", &path).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("has no compose plugin"), "{}", text(&out));
    // The Makefile targets are these.
    let make = repo::read("Makefile");
    assert!(make.contains("deploy-up:") && make.contains("\tscripts/deploy.sh up $(ARGS)"), "{make}");
    assert!(make.contains("deploy-down:") && make.contains("\tscripts/deploy.sh down $(ARGS)"), "{make}");
}

#[test]
fn ci_checks_formatting_runs_the_tests_and_clippy_with_warnings_as_errors() {
    let ci = repo::read(".ci/run");
    let steps: Vec<&str> = ci.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let pos =
        |needle: &str| steps.iter().position(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle}: {ci}"));
    assert!(pos("cargo fmt --all --check") < pos("make test") && pos("make test") < pos("make lint"), "{ci}");
    assert!(ci.contains("set -euo pipefail"), "a failing step fails CI");
    let make = repo::read("Makefile");
    assert!(make.contains("\tcargo clippy --workspace --all-targets -- -D warnings"), "make lint: {make}");
}
