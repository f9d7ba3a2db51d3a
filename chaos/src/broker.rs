//! A nisshi broker of the harness's own: free port, SQLite storage in the run directory.
//!
//! Like `vigil_testkit::OwnBroker`, plus what the faults need: its pid, `SIGSTOP`/`SIGCONT`
//! (the process keeps its sockets but answers nothing, so clients hang as behind a network
//! partition), and a check whether it exited by itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use vigil_common::kafka::KafkaConfig;

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Starts so far (1 after [`Broker::start`]).
    pub starts: u32,
}

/// The broker binary: `VIGIL_TEST_BROKER_BIN` (set by `make test` and `make chaos`).
pub fn broker_bin() -> PathBuf {
    vigil_testkit::broker_bin()
}

impl Broker {
    /// Starts a broker storing in `dir/nisshi.db`, logging to `dir/nisshi.log`.
    pub fn start(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let mut b =
            Broker { port: vigil_testkit::free_port(), dir: dir.to_path_buf(), child: None, paused: false, starts: 0 };
        b.restart();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig::plaintext(self.brokers())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts (again) on the same port and storage and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nisshi.log")).unwrap();
        // nisshi reads .env from its working directory (this one has none); its SQLite URL is
        // relative to it.
        let child = Command::new(broker_bin())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://nisshi.db"])
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("CLUSTER_ID")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nisshi: {e}"));
        if let Some(run_dir) = self.dir.parent() {
            crate::record_pid(run_dir, child.id(), &broker_bin());
        }
        self.child = Some(child);
        self.paused = false;
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nisshi did not start on port {} (see {})", self.port, self.log_path());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// `SIGSTOP`: the broker stops answering; its connections stay open and hang.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            crate::proc::signal(pid, "STOP").unwrap();
            self.paused = true;
        }
    }

    /// `SIGCONT`.
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            crate::proc::signal(pid, "CONT").unwrap();
            self.paused = false;
        }
    }

    /// `Some(status)` when the broker exited without being told to (it is then reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn log_path(&self) -> String {
        self.dir.join("nisshi.log").display().to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill();
    }
}
