//! The whole pipeline as real processes: a broker, PostgreSQL, fresh topics, the four services
//! and a supervisor.
//!
//! Either everything is the harness's own (a nisshi broker it can kill and freeze, a PostgreSQL cluster
//! it can restart: the fault suite and the soak test), or the broker and server `make test`
//! started are shared, with fresh topics and a fresh database (poison messages, secrets).
//!
//! **The supervisor** plays the part a deployment's `restart: unless-stopped` plays: every
//! 250 ms it looks at each service (and the own broker); one that exited is started again at
//! once, and the timeline records why it exited (a fault the harness injected, or the service's
//! own exit status with the end of its log).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use vigil_common::kafka::KafkaConfig;
use vigil_testkit::{unique, OwnPostgres, TestDb};

use crate::broker::Broker;
use crate::receiver::Receiver;
use crate::services::{Kind, Service};

/// Topic names of one stack.
pub type Topics = vigil_testkit::PipelineTopics;

/// Partitions of the transactions topic (as `scripts/stack.sh` creates it).
pub const TRANSACTION_PARTITIONS: i32 = 6;

/// How to build a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Run directory name under `.vigil/chaos/`.
    pub name: String,
    /// A broker and a PostgreSQL cluster of the harness's own (else the `make test` stack).
    pub own_infrastructure: bool,
    pub rust_log: String,
    /// Start the webhook with an outbound receiver, so it consumes `anomalies` too.
    pub outbound: bool,
    /// Detector `IDLE_TIMEOUT`.
    pub idle_timeout: String,
    /// Detector `ALLOWED_LATENESS`.
    pub allowed_lateness: String,
    /// Variables for every service (override the defaults).
    pub common_env: Vec<(String, String)>,
    /// Variables for one kind of service (override everything else).
    pub env: Vec<(Kind, String, String)>,
    /// A password written into `DATABASE_URL` (the servers trust 127.0.0.1, so it is never
    /// checked; it is there to be looked for in logs).
    pub db_password: Option<String>,
    /// Write token of the webhook.
    pub webhook_token: String,
}

impl StackOptions {
    pub fn new(name: &str) -> StackOptions {
        StackOptions {
            name: name.to_owned(),
            own_infrastructure: true,
            rust_log: "info".into(),
            outbound: true,
            idle_timeout: "2s".into(),
            allowed_lateness: "30s".into(),
            common_env: Vec::new(),
            env: Vec::new(),
            db_password: None,
            webhook_token: format!("tok-{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// One line of the timeline: what the harness did, or what the supervisor saw.
#[derive(Debug, Clone)]
pub struct Event {
    /// Seconds since the stack started.
    pub at: f64,
    pub what: String,
    /// A restart the supervisor made for an exit the harness did not cause.
    pub unexpected: bool,
}

#[derive(Clone)]
pub struct Timeline {
    t0: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Timeline {
    pub fn note(&self, what: impl Into<String>) {
        self.push(what.into(), false);
    }

    fn push(&self, what: String, unexpected: bool) {
        let e = Event { at: self.t0.elapsed().as_secs_f64(), what, unexpected };
        eprintln!("[chaos {:>7.1}s] {}", e.at, e.what);
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

pub struct Stack {
    pub dir: PathBuf,
    pub logs: PathBuf,
    pub broker: Option<Arc<Mutex<Broker>>>,
    pub brokers: String,
    pub pg: Option<OwnPostgres>,
    _shared_db: Option<TestDb>,
    pub db_url: String,
    pub pool: PgPool,
    pub topics: Topics,
    pub detector_group: String,
    pub services: Arc<Mutex<BTreeMap<String, Service>>>,
    pub timeline: Timeline,
    pub receiver: Option<Receiver>,
    pub http: reqwest::Client,
    pub opts: StackOptions,
    supervisor_stop: Arc<std::sync::atomic::AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: impl Into<String>) {
    let v = v.into();
    match env.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v,
        None => env.push((k.to_owned(), v)),
    }
}

impl Stack {
    /// Starts infrastructure, topics and the four services (one detector), and the supervisor.
    pub async fn start(opts: StackOptions) -> Stack {
        let t0 = Instant::now();
        let dir = crate::run_dir(&opts.name);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let timeline = Timeline { t0, events: Arc::new(Mutex::new(Vec::new())) };

        let (broker, brokers) = if opts.own_infrastructure {
            let b = tokio::task::block_in_place(|| Broker::start(&dir.join("nisshi")));
            let addr = b.brokers();
            (Some(Arc::new(Mutex::new(b))), addr)
        } else {
            (None, vigil_testkit::brokers())
        };
        let topics = Topics::named(&unique("c"));
        KafkaConfig::plaintext(&brokers)
            .ensure_topics(&topics.specs(TRANSACTION_PARTITIONS))
            .await
            .unwrap_or_else(|e| panic!("cannot create topics on {brokers}: {e:#}"));

        let with_password = |url: String| match &opts.db_password {
            Some(pw) => url.replacen("postgres://postgres@", &format!("postgres://postgres:{pw}@"), 1),
            None => url,
        };
        let (pg, shared_db, pool, db_url) = if opts.own_infrastructure {
            let pg = tokio::task::block_in_place(OwnPostgres::start);
            let _ = std::fs::write(dir.join("postgres.port"), pg.port.to_string());
            let pool = pg.database("vigil").await;
            let url = with_password(pg.url("vigil"));
            (Some(pg), None, pool, url)
        } else {
            let db = vigil_testkit::fresh_database().await;
            let (pool, url) = (db.pool.clone(), with_password(db.url.clone()));
            (None, Some(db), pool, url)
        };

        let receiver = if opts.outbound { Some(Receiver::start().await) } else { None };
        let mut stack = Stack {
            dir,
            logs,
            broker,
            brokers,
            pg,
            _shared_db: shared_db,
            db_url,
            pool,
            topics,
            detector_group: unique("vigil-detector"),
            services: Arc::new(Mutex::new(BTreeMap::new())),
            timeline,
            receiver,
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
            opts,
            supervisor_stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            supervisor: None,
        };
        let sink_group = unique("vigil-sink");
        let webhook_group = unique("vigil-webhook");
        stack.add(Kind::Webhook, "webhook", &[("WEBHOOK_CONSUMER_GROUP", &webhook_group)]);
        let sink_instance = stack.instance_id("sink");
        stack.add(Kind::Sink, "sink", &[("CONSUMER_GROUP", &sink_group), ("CONSUMER_INSTANCE_ID", &sink_instance)]);
        stack.add_detector("detector-1");
        stack.add(Kind::Producer, "producer", &[]);
        stack.start_supervisor();
        stack.wait_ready(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}"));
        stack.timeline.note(format!("Stack ready: broker {}, database {}.", stack.brokers, stack.db_name()));
        stack
    }

    fn db_name(&self) -> &str {
        self.db_url.rsplit('/').next().unwrap_or("")
    }

    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig::plaintext(&self.brokers)
    }

    /// The environment of a service of `kind` (defaults, then the options' overrides).
    pub fn env_for(&self, kind: Kind, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let t = &self.topics;
        let mut env = Vec::new();
        set(&mut env, "KAFKA_BROKERS", &self.brokers);
        set(&mut env, "RUST_LOG", &self.opts.rust_log);
        match kind {
            Kind::Producer => {
                set(&mut env, "TRANSACTIONS_TOPIC", &t.transactions);
                set(&mut env, "VERDICTS_TOPIC", &t.verdicts);
                set(&mut env, "DATABASE_URL", &self.db_url);
            }
            Kind::Detector => {
                set(&mut env, "TRANSACTIONS_TOPIC", &t.transactions);
                set(&mut env, "PARTIALS_TOPIC", &t.partials);
                set(&mut env, "MINUTES_TOPIC", &t.minutes);
                set(&mut env, "ANOMALIES_TOPIC", &t.anomalies);
                set(&mut env, "CHECKPOINT_TOPIC", &t.checkpoints);
                set(&mut env, "MERGE_CHECKPOINT_TOPIC", &t.merge_checkpoints);
                set(&mut env, "DEAD_LETTER_TOPIC", &t.dead_letter);
                set(&mut env, "VERDICTS_TOPIC", &t.verdicts);
                set(&mut env, "SETTINGS_TOPIC", &t.settings);
                set(&mut env, "CONSUMER_GROUP", &self.detector_group);
                set(&mut env, "IDLE_TIMEOUT", &self.opts.idle_timeout);
                set(&mut env, "ALLOWED_LATENESS", &self.opts.allowed_lateness);
            }
            Kind::Sink => {
                set(&mut env, "DATABASE_URL", &self.db_url);
                set(&mut env, "MINUTES_TOPIC", &t.minutes);
                set(&mut env, "ANOMALIES_TOPIC", &t.anomalies);
                set(&mut env, "DEAD_LETTER_TOPIC", &t.dead_letter);
                set(&mut env, "TRANSACTIONS_TOPIC", &t.transactions);
                set(&mut env, "VERDICTS_TOPIC", &t.verdicts);
            }
            Kind::Webhook => {
                set(&mut env, "DATABASE_URL", &self.db_url);
                set(&mut env, "WEBHOOK_TOKENS", &self.opts.webhook_token);
                set(&mut env, "ANOMALIES_TOPIC", &t.anomalies);
                if let Some(r) = &self.receiver {
                    set(&mut env, "OUTBOUND_WEBHOOK_URLS", &r.url);
                    set(&mut env, "OUTBOUND_HMAC_SECRET", format!("hmac-{}", uuid::Uuid::new_v4().simple()));
                    set(&mut env, "OUTBOUND_MIN_SEVERITY", "high");
                    set(&mut env, "OUTBOUND_RETRY_INITIAL", "200ms");
                    set(&mut env, "OUTBOUND_RETRY_MAX", "5s");
                }
            }
        }
        for (k, v) in extra {
            set(&mut env, k, *v);
        }
        for (k, v) in &self.opts.common_env {
            set(&mut env, k, v);
        }
        for (_, k, v) in self.opts.env.iter().filter(|(k, _, _)| *k == kind) {
            set(&mut env, k, v);
        }
        env
    }

    /// Adds and starts a service instance.
    pub fn add(&self, kind: Kind, name: &str, extra: &[(&str, &str)]) {
        let mut svc = Service::new(name, kind, self.env_for(kind, extra), &self.logs);
        svc.spawn();
        self.lock().insert(name.to_owned(), svc);
    }

    /// Adds and starts a detector with static membership under `name`.
    pub fn add_detector(&self, name: &str) {
        self.add(Kind::Detector, name, &[("CONSUMER_INSTANCE_ID", &self.instance_id(name))]);
    }

    /// A `group.instance.id` for `name`, unique to this stack: on a shared broker another
    /// stack's (or an orphaned process's) member of the same id must not meet this one.
    pub fn instance_id(&self, name: &str) -> String {
        format!("{name}-{}", self.detector_group.rsplit('-').next().unwrap_or(""))
    }

    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Service>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self, name: &str) -> String {
        self.lock().get(name).map(Service::url).unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.lock().get(name).and_then(Service::pid)
    }

    /// Names of the services currently supervised.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, s)| s.supervised).map(|(n, _)| n.clone()).collect()
    }

    /// `kill -9` of one service; the supervisor restarts it.
    pub fn kill9(&self, name: &str, cause: &str) {
        self.timeline.note(format!("kill -9 {name}."));
        self.lock().get_mut(name).unwrap_or_else(|| panic!("no service {name}")).kill9(cause);
    }

    /// SIGTERM and wait: the service leaves for good (not restarted).
    pub fn stop(&self, name: &str) -> Option<std::process::ExitStatus> {
        self.timeline.note(format!("SIGTERM {name} (it leaves for good)."));
        let svc = self.lock().remove(name);
        let mut svc = svc?;
        let status = tokio::task::block_in_place(|| svc.stop(Duration::from_secs(60)));
        self.timeline.note(format!("{name} exited: {}.", status.map(|s| s.to_string()).unwrap_or_default()));
        status
    }

    fn start_supervisor(&mut self) {
        let services = self.services.clone();
        let broker = self.broker.clone();
        let timeline = self.timeline.clone();
        let stop = self.supervisor_stop.clone();
        self.supervisor = Some(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(b) = &broker {
                    let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(status) = b.exited() {
                        timeline
                            .push(format!("Supervisor: the broker exited by itself ({status}); restarting it."), true);
                        b.restart();
                    }
                }
                let mut svcs = services.lock().unwrap_or_else(|e| e.into_inner());
                for svc in svcs.values_mut().filter(|s| s.supervised) {
                    if let Some(status) = svc.exited() {
                        let lived = svc.started_at.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                        match svc.pending_cause.take() {
                            Some(cause) => timeline.push(
                                format!("Supervisor: {} exited ({status}, {cause}); restarting it.", svc.name),
                                false,
                            ),
                            None => timeline.push(
                                format!(
                                    "Supervisor: {} exited by itself ({status}) after {lived:.1} s; restarting it. \
                                     End of its log:\n{}",
                                    svc.name,
                                    svc.log_tail(8)
                                ),
                                true,
                            ),
                        }
                        svc.spawn();
                    }
                }
                drop(svcs);
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
    }

    /// Whether `name` answers `/ready` with 200.
    pub async fn is_ready(&self, name: &str) -> bool {
        let Some(url) = self.lock().get(name).map(|s| format!("{}/ready", s.url())) else { return false };
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }

    /// Waits until every supervised service answers `/ready`; returns how long it took.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            let mut missing = Vec::new();
            for name in self.names() {
                if !self.is_ready(&name).await {
                    missing.push(name);
                }
            }
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                let tails: Vec<String> = missing
                    .iter()
                    .map(|n| format!("--- {n}:\n{}", self.lock().get(n).map(|s| s.log_tail(15)).unwrap_or_default()))
                    .collect();
                return Err(format!(
                    "not ready after {:.0} s: {}\n{}",
                    timeout.as_secs_f64(),
                    missing.join(", "),
                    tails.join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `/metrics` text of a service ("" when it does not answer).
    pub async fn metrics(&self, name: &str) -> String {
        let Some(url) = self.lock().get(name).map(|s| format!("{}/metrics", s.url())) else { return String::new() };
        match self.http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Whether the webhook stores an Alertmanager notification now (a write to PostgreSQL).
    pub async fn probe_webhook_write(&self) -> bool {
        let url = format!("{}/alertmanager/webhook", self.url("webhook"));
        let r = self
            .http
            .post(&url)
            .bearer_auth(&self.opts.webhook_token)
            .json(&alertmanager_notification(&uuid::Uuid::new_v4().simple().to_string()[..16]))
            .send()
            .await;
        matches!(r, Ok(r) if r.status().is_success())
    }

    /// Runs `f` on the own broker.
    pub fn with_broker<T>(&self, f: impl FnOnce(&mut Broker) -> T) -> T {
        let b = self.broker.as_ref().expect("this stack has no broker of its own");
        let mut guard = b.lock().unwrap_or_else(|e| e.into_inner());
        tokio::task::block_in_place(|| f(&mut guard))
    }

    pub fn pg(&self) -> &OwnPostgres {
        self.pg.as_ref().expect("this stack has no PostgreSQL of its own")
    }

    /// Every log file of the run (services and broker).
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Unexpected exits the supervisor restarted.
    pub fn unexpected_restarts(&self) -> Vec<Event> {
        self.timeline.events().into_iter().filter(|e| e.unexpected).collect()
    }

    /// Stops the supervisor, then every service with SIGTERM (so each flushes what it holds).
    pub fn shutdown(&mut self) {
        self.supervisor_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
        let names: Vec<String> = self.lock().keys().cloned().collect();
        // Producer first (no new events), webhook last.
        let mut order: Vec<(Kind, String)> =
            names.into_iter().filter_map(|n| self.lock().get(&n).map(|s| (s.kind, n.clone()))).collect();
        order.sort();
        for (_, name) in order {
            let svc = self.lock().remove(&name);
            if let Some(mut svc) = svc {
                tokio::task::block_in_place(|| svc.stop(Duration::from_secs(30)));
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.supervisor_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
        // Services are killed by their own Drop; the broker and PostgreSQL by theirs.
    }
}

/// A minimal Alertmanager (version 4) notification with one firing alert.
pub fn alertmanager_notification(fingerprint: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"VigilChaosProbe\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "vigil-webhook",
        "groupLabels": {"alertname": "VigilChaosProbe"},
        "commonLabels": {"alertname": "VigilChaosProbe"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "VigilChaosProbe"},
            "annotations": {},
            "startsAt": chrono::Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph",
            "fingerprint": fingerprint
        }]
    })
}
