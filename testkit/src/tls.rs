//! TLS and SASL for tests: a throwaway certificate authority (the `openssl` command) and private
//! nisshi brokers that speak TLS, mutual TLS (behind stunnel, which verifies client
//! certificates) or SASL/SCRAM over TLS, each advertising the address clients must use.
//!
//! Missing tools are failures with the reason, never skips: `scripts/install-deps.sh` (run by
//! `make test`) installs `openssl` and Debian's `stunnel4`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_common::kafka::KafkaConfig;

use crate::{broker_bin, free_port, unique};

/// A certificate authority of a test's own, with a server certificate for `localhost` and
/// `127.0.0.1` and a client certificate, all PEM files in one directory (removed on drop).
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// A fresh CA and its two leaf certificates (RSA 2048, valid two days).
    pub fn generate() -> TestPki {
        let dir = std::env::temp_dir().join(unique("vigil-pki"));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |name: &str| dir.join(name);
        openssl(
            &dir,
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"],
            &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Vigil test CA"],
        );
        std::fs::write(p("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
            .unwrap();
        std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "localhost"), ("client", "vigil-test-client")] {
            openssl(
                &dir,
                &["req", "-newkey", "rsa:2048", "-nodes"],
                &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={cn}")],
            );
            openssl(
                &dir,
                &["x509", "-req", "-days", "2", "-CAcreateserial"],
                &[
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-out",
                    &format!("{name}.pem"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        TestPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            dir,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str], more: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .args(more)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): scripts/install-deps.sh installs it"));
    assert!(out.status.success(), "openssl {args:?} {more:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The stunnel binary (Debian's `stunnel4` package installs both names).
pub fn stunnel_bin() -> PathBuf {
    for name in ["stunnel4", "stunnel"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/sbin"]) {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "stunnel is not installed: the mutual-TLS tests put it in front of the broker. `make test` installs it \
         (scripts/install-deps.sh, Debian's stunnel4); or `apt-get install stunnel4`"
    )
}

/// How a [`TlsBroker`] takes its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// nisshi's own TLS listener (`--cert`/`--key`); clients verify it against the CA.
    Server,
    /// nisshi's own TLS listener with `--authentication`: SASL/SCRAM-SHA-256/512 over TLS.
    Scram,
    /// Plaintext nisshi behind stunnel, which presents the server certificate and requires a
    /// client certificate signed by the CA (nisshi cannot verify client certificates itself).
    Mutual,
}

/// A private nisshi broker on its own storage and port, reachable only over TLS.
pub struct TlsBroker {
    /// The port clients connect to and the broker advertises in metadata (stunnel's with
    /// [`TlsMode::Mutual`]).
    pub port: u16,
    pub mode: TlsMode,
    dir: PathBuf,
    children: Vec<Child>,
}

impl TlsBroker {
    /// Starts the broker; with [`TlsMode::Scram`] the `users` (name, password, `scram256` or
    /// `scram512`) exist before it starts requiring authentication.
    pub fn start(pki: &TestPki, mode: TlsMode, users: &[(&str, &str, &str)]) -> TlsBroker {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("vigil-tls-broker"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = TlsBroker { port, mode, dir, children: Vec::new() };
        let advertised = format!("tcp://127.0.0.1:{port}");
        match mode {
            TlsMode::Server | TlsMode::Scram => {
                if !users.is_empty() {
                    // `nisshi user` speaks plaintext without authentication: create the users on
                    // a plaintext start of the same storage, then restart with TLS.
                    let plain = b.nisshi(port, &advertised, &[]);
                    b.children.push(plain);
                    for (name, password, mechanism) in users {
                        let out = Command::new(broker_bin())
                            .current_dir(&b.dir)
                            .args(["user", "create", "--broker", &advertised, "--mechanism", mechanism, name, password])
                            .output()
                            .unwrap();
                        assert!(
                            out.status.success(),
                            "nisshi user create {name} failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    b.stop_children();
                }
                let cert = pki.server_cert.to_string_lossy().into_owned();
                let key = pki.server_key.to_string_lossy().into_owned();
                let mut tls = vec!["--cert", cert.as_str(), "--key", key.as_str()];
                if mode == TlsMode::Scram {
                    tls.push("--authentication");
                }
                let child = b.nisshi(port, &advertised, &tls);
                b.children.push(child);
            }
            TlsMode::Mutual => {
                // nisshi on a private plaintext port, advertising stunnel's: clients come back
                // through the terminator for every broker connection, not only the bootstrap.
                let inner = free_port();
                let child = b.nisshi(inner, &advertised, &[]);
                b.children.push(child);
                let child = stunnel(&b.dir, pki, port, inner, true);
                b.children.push(child);
            }
        }
        b
    }

    fn nisshi(&self, port: u16, advertised: &str, extra: &[&str]) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nisshi.log")).unwrap();
        let child = Command::new(broker_bin())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", advertised])
            .args(["--storage-engine", "sqlite://nisshi.db"])
            .args(extra)
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("CLUSTER_ID")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(port, &self.dir.join("nisshi.log"));
        child
    }

    fn stop_children(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's and stunnel's logs, for failure messages.
    pub fn logs(&self) -> String {
        ["nisshi.log", "stunnel.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok().map(|t| format!("--- {f}\n{t}")))
            .collect()
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.stop_children();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// stunnel on `accept`, presenting the PKI's server certificate and forwarding plaintext to
/// `connect`; with `require_client_cert`, only clients with a certificate signed by its CA get
/// through. Logs to `dir/stunnel.log`; ready when it accepts connections.
fn stunnel(dir: &Path, pki: &TestPki, accept: u16, connect: u16, require_client_cert: bool) -> Child {
    let conf = dir.join(format!("stunnel-{accept}.conf"));
    let verify = if require_client_cert {
        format!("CAfile = {}\nverifyChain = yes\nrequireCert = yes\n", pki.ca.display())
    } else {
        String::new()
    };
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\ndebug = 4\n[tls]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n\
             cert = {}\nkey = {}\n{verify}",
            pki.server_cert.display(),
            pki.server_key.display(),
        ),
    )
    .unwrap();
    let log_path = dir.join("stunnel.log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
    let child = Command::new(stunnel_bin())
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start stunnel: {e}"));
    wait_for_port(accept, &log_path);
    child
}

/// A TLS terminator (stunnel) in front of a local plaintext TCP service, e.g. an HTTP server:
/// `https://127.0.0.1:{port}` with the PKI's server certificate.
pub struct TlsTerminator {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl TlsTerminator {
    pub fn start(pki: &TestPki, connect: u16, require_client_cert: bool) -> TlsTerminator {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("vigil-stunnel"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = stunnel(&dir, pki, port, connect, require_client_cert);
        TlsTerminator { port, dir, child }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stunnel.log")).unwrap_or_default()
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_port(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 30 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The services' `KAFKA_*` settings (as `--flag=value`) for a client of `broker`: the CA always,
/// the client certificate with mutual TLS, SCRAM credentials when given as
/// (mechanism, user, password).
pub fn kafka_flags(broker: &TlsBroker, ca: &Path, pki: &TestPki, sasl: Option<(&str, &str, &str)>) -> Vec<String> {
    let mut flags =
        vec![format!("--kafka-brokers={}", broker.brokers()), format!("--kafka-ssl-ca-location={}", ca.display())];
    match sasl {
        Some((mechanism, user, password)) => flags.extend([
            "--kafka-security-protocol=sasl_ssl".to_owned(),
            format!("--kafka-sasl-mechanism={mechanism}"),
            format!("--kafka-sasl-username={user}"),
            format!("--kafka-sasl-password={password}"),
        ]),
        None => flags.push("--kafka-security-protocol=ssl".to_owned()),
    }
    if broker.mode == TlsMode::Mutual {
        flags.push(format!("--kafka-ssl-certificate-location={}", pki.client_cert.display()));
        flags.push(format!("--kafka-ssl-key-location={}", pki.client_key.display()));
    }
    flags
}

/// The same settings as a validated [`KafkaConfig`], for the test's own clients.
pub fn kafka_config(flags: &[String]) -> KafkaConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: vigil_common::kafka::KafkaArgs,
    }
    let cli = Cli::parse_from(std::iter::once("test".to_owned()).chain(flags.iter().cloned()));
    let mut v = vigil_common::config::Validator::new();
    let cfg = cli.kafka.validate(&mut v);
    v.finish().unwrap_or_else(|e| panic!("Kafka settings {flags:?}: {e}"));
    cfg
}
