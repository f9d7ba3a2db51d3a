//! The local stack `make run` stands on: its broker (nisshi, started by scripts/stack.sh) and
//! scripts/run.sh itself.
//!
//! * A consumer that comes back to its group long after it left, on a broker restarted on the
//!   same storage, gets its partitions back: what a second `make run` meets hours after the
//!   first. (tansu 0.6.0, the broker before, never gave a returning static member its partitions
//!   back; the stack cleared its stored membership before each start. nisshi needs no such help.)
//! * `make run` stopped the way a terminal stops it (SIGINT to its whole process group) stops
//!   cleanly within its bound, and a second start becomes ready and resumes where the first
//!   stopped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use vigil_common::kafka::KafkaConfig;
use vigil_ops_tests::repo;
use vigil_testkit::{free_port, unique, OwnBroker};

const TOPIC: &str = "returning";
const GROUP: &str = "returning-group";
/// Short, so the test outlives it in seconds (a group keeps the timeout of its first join).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands partitions over the way the detector does: it takes a moment (outputs flushed, state
/// checkpointed), then commits. Heartbeats go on meanwhile.
struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            std::thread::sleep(Duration::from_secs(2));
            let _ = consumer.commit(&offset_3(), CommitMode::Sync);
        }
    }
}

type Member = BaseConsumer<CommitOnRevoke>;

fn offset_3() -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(3)).unwrap();
    tpl
}

/// A static member (`group.instance.id`), as the detector and the sink run in `make run`.
fn member(kafka: &KafkaConfig) -> Member {
    let mut cc = kafka.consumer_config(GROUP);
    cc.set("group.instance.id", "member-0").set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string());
    let c: Member = cc.create_with_context(CommitOnRevoke).unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    c
}

fn assigned(c: &Member) -> usize {
    c.assignment().map(|a| a.count()).unwrap_or(0)
}

/// Polls for `period`, committing offset 3 of partition 0 while it is assigned, as the
/// detector and the sink commit as they go; the number of partitions assigned at the end.
fn poll_for(c: &Member, period: Duration) -> usize {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let _ = c.poll(Duration::from_millis(100));
        if assigned(c) > 0 {
            let _ = c.commit(&offset_3(), CommitMode::Async);
        }
    }
    assigned(c)
}

/// Polls until both partitions are assigned, at most `within`; how long it took.
fn wait_assigned(c: &Member, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        let _ = c.poll(Duration::from_millis(100));
        if assigned(c) == 2 {
            return Some(t0.elapsed());
        }
    }
    None
}

fn committed_offset(c: &Member) -> Offset {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.find_partition(TOPIC, 0).unwrap().offset()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_returning_after_its_session_expired_gets_its_partitions_back() {
    let mut broker = OwnBroker::start();
    let kafka = broker.kafka();
    kafka.ensure_topics(&[(TOPIC, 2)]).await.unwrap();
    let producer: BaseProducer = kafka.producer_config(Duration::from_secs(30)).create().unwrap();
    for i in 0..3 {
        producer.send(BaseRecord::to(TOPIC).partition(0).key("k").payload(&format!("r{i}"))).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    drop(producer);

    // First run: the member joins, reads, commits, and goes away (static members send no
    // LeaveGroup); then the broker stops too, killed, as on a crash.
    let first = member(&kafka);
    assert!(wait_assigned(&first, Duration::from_secs(60)).is_some(), "the member never got its partitions");
    first.commit(&offset_3(), CommitMode::Sync).unwrap();
    assert_eq!(poll_for(&first, Duration::from_secs(2)), 2, "the member lost its partitions");
    drop(first);
    broker.kill();
    std::thread::sleep(SESSION_TIMEOUT + Duration::from_secs(3));

    // The broker comes back on the same storage with the membership it stored; nothing is
    // cleared. The returning member must get its partitions back and keep them.
    broker.restart();
    let back = member(&kafka);
    let took = wait_assigned(&back, Duration::from_secs(60));
    assert!(took.is_some(), "the returning static member got no partitions within 60 s");
    // Past its first heartbeats (where tansu 0.6.0 expelled it), it keeps them.
    assert_eq!(poll_for(&back, Duration::from_secs(5)), 2, "the member lost its partitions again");
    assert_eq!(committed_offset(&back), Offset::Offset(3), "the group's committed offset was not kept");
    eprintln!("the returning member had its partitions {:.1} s after joining", took.unwrap().as_secs_f64());
}

// ---- make run ----

/// Four consecutive free ports after the returned base (webhook, producer, detector, sink).
fn free_port_base() -> u16 {
    for _ in 0..100 {
        let base = free_port().saturating_sub(1);
        if base > 1024 && (1..=4).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no four consecutive free ports")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// `make run`'s script with a state directory and ports of its own, so it runs beside the test
/// stack and a real `make run` without touching either.
struct RunScript {
    state: PathBuf,
    pg_port: u16,
    kafka_port: u16,
    base: u16,
}

impl RunScript {
    fn new() -> RunScript {
        let state = std::env::temp_dir().join(unique("vigil-make-run"));
        std::fs::create_dir_all(&state).unwrap();
        // Distinct ports: a port freed by one probe may come back from the next (seen once: the
        // broker's port was also the sink's, and `make run` refused to start).
        let base = free_port_base();
        let services = base + 1..=base + 4;
        let pick = |taken: &[u16]| loop {
            let p = free_port();
            if !services.contains(&p) && !taken.contains(&p) {
                break p;
            }
        };
        let pg_port = pick(&[]);
        let kafka_port = pick(&[pg_port]);
        RunScript { state, pg_port, kafka_port, base }
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(repo::root())
            .env("VIGIL_STATE", &self.state)
            .env("VIGIL_PG_PORT", self.pg_port.to_string())
            .env("VIGIL_KAFKA_PORT", self.kafka_port.to_string())
            .env("VIGIL_PORT_BASE", self.base.to_string())
            .env("VIGIL_OBSERVABILITY", "0")
            .env("VIGIL_BUILD", "0") // make test built the binaries
            .env("SHUTDOWN_TIMEOUT", "10s")
            .env_remove("VIGIL_PROFILE")
            .env_remove("KAFKA_BROKERS")
            .env_remove("DATABASE_URL");
        c
    }

    /// Starts scripts/run.sh as a terminal starts a foreground command: in a process group of
    /// its own, which is what Ctrl-C signals.
    fn start(&self, log: &Path) -> Child {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).unwrap();
        self.command(&repo::path("scripts/run.sh"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    }

    fn url(&self, offset: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + offset)
    }

    fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/vigil", self.pg_port)
    }

    /// The detector's log without terminal colours.
    fn detector_log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(self.state.join("logs/detector.log")).unwrap_or_default())
    }
}

impl Drop for RunScript {
    fn drop(&mut self) {
        // Whatever a failed assertion left running, then the cluster and the storage.
        let _ = self.command(&repo::path("scripts/stack.sh")).arg("down").env("VIGIL_PROFILE", "run").output();
        let datadir = self
            .command(Path::new("bash"))
            .args(["-c", "source scripts/lib.sh && pg_datadir"])
            .env("VIGIL_PROFILE", "run")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if !datadir.is_empty() && !self.state.join("pgdata").starts_with(&datadir) {
            let _ = std::fs::remove_dir_all(&datadir);
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The sum of a counter's samples whose label set contains `filter`.
async fn counter(url: &str, name: &str, filter: &str) -> f64 {
    let Ok(r) = reqwest::get(format!("{url}/metrics")).await else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the producer has accepted events and the detector has processed events in this
/// start (the counters begin at zero with each process).
async fn wait_for_traffic(run: &RunScript, child: &mut Child, log: &Path, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("make run exited ({status}) before traffic flowed:\n{}", std::fs::read_to_string(log).unwrap());
        }
        let accepted = counter(&run.url(2), "vigil_producer_events_total", "outcome=\"accepted\"").await;
        let processed = counter(&run.url(3), "vigil_detector_events_total", "").await;
        if accepted > 0.0 && processed > 0.0 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "no traffic through make run within {within:?} (accepted {accepted}, processed {processed}):\n{}",
            std::fs::read_to_string(log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGINT to the whole process group, as a terminal's Ctrl-C; waits for the script to exit.
fn ctrl_c(child: &mut Child, within: Duration) -> (ExitStatus, Duration) {
    let pgid = child.id();
    let t0 = Instant::now();
    let sent = Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]).status().unwrap();
    assert!(sent.success(), "kill -INT -{pgid} failed");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, t0.elapsed());
        }
        if t0.elapsed() > within {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            panic!("make run did not stop within {within:?} of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn minutes_stored(run: &RunScript) -> i64 {
    let pool = sqlx::PgPool::connect(&run.database_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM v_tx_minute").fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

/// The bound make run's stop must keep: each of the five processes gets SHUTDOWN_TIMEOUT (10 s)
/// plus a margin in the worst case; a clean stop with the broker up takes a few seconds.
const STOP_BOUND: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread")]
async fn make_run_stops_cleanly_on_ctrl_c_and_a_second_start_resumes() {
    let run = RunScript::new();
    let log1 = run.state.join("first.log");

    // First start: the script starts PostgreSQL and the broker itself.
    let mut first = run.start(&log1);
    let took = wait_for_traffic(&run, &mut first, &log1, Duration::from_secs(300)).await;
    // Let the history land, so there are minutes to resume from.
    let t0 = Instant::now();
    while minutes_stored(&run).await < 20 && t0.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stored = minutes_stored(&run).await;
    assert!(stored >= 20, "only {stored} minutes stored two minutes after traffic began");

    let (status, stop_took) = ctrl_c(&mut first, STOP_BOUND);
    let out1 = std::fs::read_to_string(&log1).unwrap();
    assert!(status.success(), "make run ended with {status} on Ctrl-C:\n{out1}");
    assert!(out1.contains("Stopped. Logs are in"), "no normal stop reported:\n{out1}");
    assert!(!out1.contains("exited with status") && !out1.contains("not cleanly"), "a service failed to stop:\n{out1}");
    let detector = run.detector_log();
    assert_eq!(
        detector.matches("Stage stopped after flushing and checkpointing.").count(),
        2,
        "both detector stages should have flushed and checkpointed:\n{detector}"
    );
    // It started the stack, so it stopped it; nothing of its own is left listening.
    for port in [run.pg_port, run.kafka_port, run.base + 1, run.base + 2, run.base + 3, run.base + 4] {
        assert!(!port_open(port), "port {port} is still open after make run stopped:\n{out1}");
    }
    eprintln!("first start: traffic after {took:?}, {stored} minutes stored, stopped {stop_took:?} after Ctrl-C");

    // Second start on the same broker storage and database.
    let log2 = run.state.join("second.log");
    let restored_before = detector.matches("Partition state restored.").count();
    let mut second = run.start(&log2);
    let took = wait_for_traffic(&run, &mut second, &log2, Duration::from_secs(180)).await;
    let again = minutes_stored(&run).await;
    assert!(again >= stored, "the database lost minutes: {stored} before, {again} after the second start");
    // The detector resumed from its checkpoints: a partition restored at a non-zero input offset.
    let detector = run.detector_log();
    let resumed = detector
        .lines()
        .filter(|l| l.contains("Partition state restored."))
        .skip(restored_before)
        .any(|l| l.split_whitespace().any(|f| f.strip_prefix("input_offset=").is_some_and(|o| o != "0")));
    assert!(resumed, "the second start restored no partition past offset 0 (it did not resume):\n{detector}");

    let (status, stop_took2) = ctrl_c(&mut second, STOP_BOUND);
    let out2 = std::fs::read_to_string(&log2).unwrap();
    assert!(status.success(), "the second make run ended with {status} on Ctrl-C:\n{out2}");
    assert!(out2.contains("Stopped. Logs are in"), "no normal stop reported:\n{out2}");
    eprintln!("second start: traffic after {took:?}, {again} minutes stored, stopped {stop_took2:?} after Ctrl-C");
}
