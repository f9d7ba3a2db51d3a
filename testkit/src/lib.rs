//! Isolated real resources for integration tests, on the stack `make test` starts
//! (`scripts/stack.sh` with `VIGIL_PROFILE=test`).
//!
//! Each test gets its own database (migrated), its own topics and its own consumer groups, so
//! tests run in parallel without seeing each other. Missing infrastructure is a failure, never
//! a skip: a test that cannot reach the broker or the database panics with the reason.
#![allow(clippy::unwrap_used)]

pub mod schemathesis;
pub mod tls;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection, PgPool};
use vigil_common::kafka::KafkaConfig;

/// Environment variable naming the PostgreSQL server for tests (a superuser URL).
pub const PG_ENV: &str = "VIGIL_TEST_PG_ADMIN_URL";
/// Environment variable naming the Kafka-compatible broker for tests.
pub const KAFKA_ENV: &str = "VIGIL_TEST_KAFKA_BROKERS";

fn required_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set. Integration tests need the real broker and PostgreSQL: run them with \
             `make test` (which starts both), or `scripts/stack.sh up` with VIGIL_PROFILE=test and export \
             the variables from .vigil/test/stack.env."
        ),
    }
}

/// A short unique suffix for resource names.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

pub fn brokers() -> String {
    required_env(KAFKA_ENV)
}

pub fn kafka() -> KafkaConfig {
    KafkaConfig::plaintext(brokers())
}

pub fn admin_url() -> String {
    required_env(PG_ENV)
}

/// A database of its own, migrated, for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

/// Creates a fresh database with every migration applied.
pub async fn fresh_database() -> TestDb {
    let admin = admin_url();
    let name = unique("vigil_test").replace('-', "_");
    let mut conn =
        PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let url = replace_db(&admin, &name);
    let pool = PgPool::connect(&url).await.unwrap();
    vigil_common::db::migrate(&pool).await.unwrap();
    TestDb { pool, url, name }
}

/// The same server URL with another database name.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Fresh topics named `<base>-<unique>`, created with the given partition counts.
pub async fn fresh_topics(topics: &[(&str, i32)]) -> Vec<String> {
    let suffix = unique("t");
    let names: Vec<String> = topics.iter().map(|(base, _)| format!("{base}-{suffix}")).collect();
    let specs: Vec<(&str, i32)> = names.iter().map(String::as_str).zip(topics.iter().map(|t| t.1)).collect();
    kafka().ensure_topics(&specs).await.unwrap_or_else(|e| panic!("cannot create topics on {}: {e:#}", brokers()));
    names
}

/// One message as read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads every message of `topic` from the beginning until `expected` are in hand or
/// `timeout` passes (then returns what it has). Uses no consumer group.
pub fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    read_topic_with(&kafka(), topic, expected, timeout)
}

fn read_topic_with(kafka: &KafkaConfig, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = kafka.consumer_config(&unique("reader")).create().unwrap();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter().map(|hd| (hd.key.to_owned(), hd.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
                })
                .unwrap_or_default();
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers,
            });
        }
    }
    out
}

/// Reads a topic for `quiet` and returns everything there is (to prove something is absent).
pub fn read_topic_all(topic: &str, quiet: Duration) -> Vec<Record> {
    read_topic(topic, usize::MAX, quiet)
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The local broker's binary (nisshi): `VIGIL_TEST_BROKER_BIN`, set by `make test`, `make chaos`
/// and `make fuzz` (scripts/lib.sh `export_test_env`).
pub fn broker_bin() -> std::path::PathBuf {
    match std::env::var("VIGIL_TEST_BROKER_BIN") {
        Ok(b) if !b.is_empty() => std::path::PathBuf::from(b),
        _ => panic!(
            "VIGIL_TEST_BROKER_BIN is not set: run the tests with `make test` or `make chaos`, which install nisshi \
             and set it"
        ),
    }
}

/// A nisshi broker of a test's own (free port, own SQLite storage), for tests that stop and
/// restart the broker. The binary is [`broker_bin`].
pub struct OwnBroker {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("vigil-broker"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = OwnBroker { port, dir, child: None };
        b.restart();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig::plaintext(self.brokers())
    }

    /// Its working directory (holds `nisshi.db` and `nisshi.log`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts (again) on the same port and storage, and waits until it accepts connections.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nisshi.log")).unwrap();
        // nisshi reads .env from its working directory (this one has none); its SQLite URL is
        // relative to it.
        let child = std::process::Command::new(broker_bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://nisshi.db",
            ])
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("CLUSTER_ID")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nisshi did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads a topic on a given broker (see [`read_topic`]).
pub fn read_topic_on(kafka: &KafkaConfig, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    read_topic_with(kafka, topic, expected, timeout)
}

/// Reads a whole topic repeatedly until at least `min` messages are there and the count has not
/// changed for `quiet`, or `max` passes. For outputs whose final count is not known up front.
pub fn read_until_stable(topic: &str, min: usize, quiet: Duration, max: Duration) -> Vec<Record> {
    let deadline = Instant::now() + max;
    let mut last = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let now = read_topic(topic, usize::MAX, Duration::from_millis(1500));
        if now.len() != last.len() {
            stable_since = Instant::now();
        }
        last = now;
        if (last.len() >= min && stable_since.elapsed() >= quiet) || Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A PostgreSQL server of a test's own (fresh cluster, free port), for tests that restart the
/// database. Uses Debian's binaries; as root the cluster runs as the `postgres` user.
pub struct OwnPostgres {
    pub port: u16,
    dir: std::path::PathBuf,
    bindir: std::path::PathBuf,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (make test installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("no PostgreSQL binaries under /usr/lib/postgresql");
        let port = free_port();
        let dir =
            std::path::PathBuf::from(if is_root() { "/var/lib/postgresql" } else { "/tmp" }).join(unique("vigil-pg"));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run(std::process::Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        }
        let pg = OwnPostgres { port, dir, bindir };
        run(pg.as_pg(pg.bindir.join("initdb")).arg("-D").arg(&pg.dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]));
        let conf =
            format!("listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nfsync = off\n");
        std::fs::write(pg.dir.join("postgresql.auto.conf"), conf).unwrap();
        if is_root() {
            run(std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(pg.dir.join("postgresql.auto.conf")));
        }
        pg.start_server();
        pg
    }

    fn as_pg(&self, program: std::path::PathBuf) -> std::process::Command {
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn start_server(&self) {
        run(self
            .as_pg(self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start"]));
    }

    /// `pg_ctl stop -m immediate`: the server goes away without a clean shutdown.
    pub fn stop_server(&self) {
        run(self.as_pg(self.bindir.join("pg_ctl")).arg("-D").arg(&self.dir).args(["-m", "immediate", "-w", "stop"]));
    }

    /// A fresh database on this server, migrated.
    pub async fn database(&self, name: &str) -> PgPool {
        let mut conn = PgConnection::connect(&self.url("postgres")).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let pool = PgPool::connect(&self.url(name)).await.unwrap();
        vigil_common::db::migrate(&pool).await.unwrap();
        pool
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ =
            self.as_pg(self.bindir.join("pg_ctl")).arg("-D").arg(&self.dir).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The topics of one whole pipeline, created fresh (`<name>-<unique>`), with the partition
/// counts the stack uses (transactions and checkpoints: `partitions`).
#[derive(Debug, Clone)]
pub struct PipelineTopics {
    pub transactions: String,
    pub partials: String,
    pub minutes: String,
    pub anomalies: String,
    pub checkpoints: String,
    pub merge_checkpoints: String,
    pub dead_letter: String,
    /// The detector's verdicts on transactions whose producer asked for one.
    pub verdicts: String,
    /// The detector's rule settings changed at run time.
    pub settings: String,
}

impl PipelineTopics {
    /// Fresh topics on the test broker.
    pub async fn fresh(partitions: i32) -> PipelineTopics {
        let topics = PipelineTopics::named(&unique("t"));
        kafka()
            .ensure_topics(&topics.specs(partitions))
            .await
            .unwrap_or_else(|e| panic!("cannot create topics on {}: {e:#}", brokers()));
        topics
    }

    /// The names, each the stack's topic name with `-<suffix>`; nothing is created.
    pub fn named(suffix: &str) -> PipelineTopics {
        PipelineTopics {
            transactions: format!("transactions-{suffix}"),
            partials: format!("tx-partials-{suffix}"),
            minutes: format!("tx-minute-{suffix}"),
            anomalies: format!("anomalies-{suffix}"),
            checkpoints: format!("detector-checkpoints-{suffix}"),
            merge_checkpoints: format!("detector-merge-checkpoints-{suffix}"),
            dead_letter: format!("vigil-dead-letter-{suffix}"),
            verdicts: format!("transaction-verdicts-{suffix}"),
            settings: format!("detector-settings-{suffix}"),
        }
    }

    /// Every topic with its partition count, as `scripts/stack.sh` creates them (the
    /// transactions topic and the checkpoints: `partitions`).
    pub fn specs(&self, partitions: i32) -> Vec<(&str, i32)> {
        vec![
            (self.transactions.as_str(), partitions),
            (self.partials.as_str(), 1),
            (self.minutes.as_str(), 3),
            (self.anomalies.as_str(), 3),
            (self.checkpoints.as_str(), partitions),
            (self.merge_checkpoints.as_str(), 1),
            (self.dead_letter.as_str(), 1),
            (self.verdicts.as_str(), 3),
            (self.settings.as_str(), 1),
        ]
    }

    /// The detector's broker and topic flags for these topics.
    pub fn detector_flags(&self) -> Vec<String> {
        vec![
            format!("--kafka-brokers={}", brokers()),
            format!("--transactions-topic={}", self.transactions),
            format!("--partials-topic={}", self.partials),
            format!("--minutes-topic={}", self.minutes),
            format!("--anomalies-topic={}", self.anomalies),
            format!("--checkpoint-topic={}", self.checkpoints),
            format!("--merge-checkpoint-topic={}", self.merge_checkpoints),
            format!("--dead-letter-topic={}", self.dead_letter),
            format!("--verdicts-topic={}", self.verdicts),
            format!("--settings-topic={}", self.settings),
        ]
    }

    /// The sink's broker and topic flags for these topics.
    pub fn sink_flags(&self) -> Vec<String> {
        vec![
            format!("--kafka-brokers={}", brokers()),
            format!("--minutes-topic={}", self.minutes),
            format!("--anomalies-topic={}", self.anomalies),
            format!("--dead-letter-topic={}", self.dead_letter),
            format!("--transactions-topic={}", self.transactions),
            format!("--verdicts-topic={}", self.verdicts),
        ]
    }
}

/// Sums the samples of a Prometheus/OpenMetrics `name` whose labels contain every `labels` pair.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if ok {
                value.parse::<f64>().ok()
            } else {
                None
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_samples_are_summed_by_label() {
        let text = "# TYPE vigil_sink_dead_letters counter\n\
                    vigil_sink_dead_letters_total{kind=\"undecodable\"} 3\n\
                    vigil_sink_dead_letters_total{kind=\"wrong_type\"} 2\n\
                    vigil_sink_messages_total{kind=\"anomaly\"} 7\n";
        assert_eq!(metric_sum(text, "vigil_sink_dead_letters_total", &[]), 5.0);
        assert_eq!(metric_sum(text, "vigil_sink_dead_letters_total", &[("kind", "wrong_type")]), 2.0);
        assert_eq!(metric_sum(text, "vigil_sink_messages_total", &[("kind", "late_events")]), 0.0);
    }
}
