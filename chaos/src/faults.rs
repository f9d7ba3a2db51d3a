//! The fault suite: while traffic streams through the whole stack, each fault in turn, then the
//! books.
//!
//! A run starts an own stack ([`crate::stack`]), sends a history at once (so the rate baselines
//! exist and a rate incident is open when the faults begin), then one phase per fault:
//!
//! 1. live traffic at a steady rate starts (the simulator at real time, retrying every item
//!    not yet accepted with its id);
//! 2. after a lead-in the fault is injected and healed (or, for a killed service, the
//!    supervisor restarts it);
//! 3. recovery is timed from the heal: every service answers `/ready`, and the producer accepts
//!    and the detector processes events again (their counters move);
//! 4. traffic stops a few seconds after recovery; the books must then balance exactly
//!    ([`crate::books`]) within a generous drain timeout, and the anomaly checks pass.
//!
//! Faults: the broker `kill -9` and restarted on its SQLite storage; the detector and the sink
//! `kill -9`; PostgreSQL stopped (`-m immediate`) and started; the broker unreachable (SIGSTOP
//! for the outage, then SIGCONT: connections hang as behind a partition, rather than being
//! refused, which the `kill -9` phase already covers); a second detector joins, takes
//! partitions, and leaves (SIGTERM).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vigil_simulator::report::SendReport;
use vigil_simulator::run::Speed;

use crate::books::{self, metric_sum, AnomalyAudit, Books};
use crate::services::Kind;
use crate::stack::{Event, Stack, StackOptions};
use crate::traffic::{self, Send};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the history, sent at once.
    None,
    BrokerKill,
    DetectorKill,
    SinkKill,
    PostgresRestart,
    BrokerUnreachable,
    DetectorRebalance,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::BrokerKill,
        Fault::DetectorKill,
        Fault::SinkKill,
        Fault::PostgresRestart,
        Fault::BrokerUnreachable,
        Fault::DetectorRebalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "history (no fault)",
            Fault::BrokerKill => "broker kill -9",
            Fault::DetectorKill => "detector kill -9",
            Fault::SinkKill => "sink kill -9",
            Fault::PostgresRestart => "PostgreSQL restart",
            Fault::BrokerUnreachable => "broker unreachable",
            Fault::DetectorRebalance => "detector rebalance",
        }
    }
}

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub name: String,
    pub form: &'static str,
    pub history_minutes: u32,
    pub history_per_minute: f64,
    pub live_per_second: f64,
    /// Traffic before the fault.
    pub lead_in: Duration,
    /// Traffic after recovery.
    pub tail: Duration,
    pub broker_down: Duration,
    pub postgres_down: Duration,
    pub unreachable_for: Duration,
    /// How long the second detector works before it leaves.
    pub rebalance_hold: Duration,
    pub rounds: u32,
    /// The detector's `IDLE_TIMEOUT`.
    pub idle_timeout: &'static str,
    /// The detector's `ALLOWED_LATENESS`.
    pub allowed_lateness: &'static str,
    /// How far behind the wall clock the live traffic is stamped, in minutes.
    pub live_behind_minutes: i64,
    /// Longest wait for recovery, and for the books to balance.
    pub recovery_timeout: Duration,
    pub drain_timeout: Duration,
}

impl SuiteOptions {
    /// The form `make test` runs: every fault once, short outages (about 3 minutes).
    pub fn short() -> SuiteOptions {
        SuiteOptions {
            name: "faults-short".into(),
            form: "short",
            history_minutes: 16,
            history_per_minute: 600.0,
            live_per_second: 50.0,
            lead_in: Duration::from_secs(4),
            tail: Duration::from_secs(4),
            broker_down: Duration::from_secs(3),
            postgres_down: Duration::from_secs(5),
            unreachable_for: Duration::from_secs(12),
            rebalance_hold: Duration::from_secs(4),
            rounds: 1,
            // Short, so quiet partitions are noticed at once.
            idle_timeout: "2s",
            // A live feed stamped as it happens, and a short lateness: each phase's last minute
            // is final 5 to 65 s after its traffic stops (a feed 3 minutes behind, as the long
            // form sends, waits for the learned delay: 80 to 110 s a phase, which took the short
            // form past nextest's 10 minutes). Out-of-order events beyond 5 s are booked as late,
            // which the books count.
            allowed_lateness: "5s",
            live_behind_minutes: 0,
            recovery_timeout: Duration::from_secs(150),
            drain_timeout: Duration::from_secs(240),
        }
    }

    /// `make chaos`: the 30 s outage, heavier traffic, every fault twice.
    pub fn long() -> SuiteOptions {
        SuiteOptions {
            name: "faults-long".into(),
            form: "long",
            history_minutes: 16,
            history_per_minute: 2000.0,
            live_per_second: 200.0,
            lead_in: Duration::from_secs(15),
            tail: Duration::from_secs(15),
            broker_down: Duration::from_secs(10),
            postgres_down: Duration::from_secs(20),
            unreachable_for: Duration::from_secs(30),
            rebalance_hold: Duration::from_secs(15),
            rounds: 2,
            // The deployment's defaults.
            idle_timeout: "10s",
            allowed_lateness: "30s",
            // A delayed feed: the detector learns the delay and keeps quiet partitions' minutes
            // open for it.
            live_behind_minutes: 3,
            recovery_timeout: Duration::from_secs(240),
            drain_timeout: Duration::from_secs(240),
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct Phase {
    pub fault: Fault,
    pub round: u32,
    pub injected: String,
    /// Seconds since the stack started.
    pub at: f64,
    /// From the heal until every service answers /ready.
    pub ready_after: Option<f64>,
    /// From the heal until the producer accepts and the detector processes events again.
    pub flowing_after: Option<f64>,
    /// From the end of traffic until the books balanced.
    pub drained_after: Option<f64>,
    pub traffic: SendReport,
    pub books: Books,
    pub anomalies: AnomalyAudit,
    pub restarts: Vec<Event>,
    pub problems: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    pub options: SuiteOptions,
    pub started: chrono::DateTime<Utc>,
    pub seconds: f64,
    pub phases: Vec<Phase>,
    pub timeline: Vec<Event>,
    pub dead_letters: usize,
    pub outbound_problems: Vec<String>,
    pub eligible_outbound: usize,
    pub received_outbound: usize,
}

impl SuiteReport {
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .phases
            .iter()
            .flat_map(|ph| ph.problems.iter().map(move |x| format!("{} (round {}): {x}", ph.fault.name(), ph.round)))
            .collect();
        p.extend(self.outbound_problems.iter().map(|x| format!("outbound webhook: {x}")));
        if self.dead_letters > 0 {
            p.push(format!("{} messages were dead-lettered during the run", self.dead_letters));
        }
        p
    }

    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// The report printed and written to `.vigil/chaos/report.txt`.
    pub fn text(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        let secs = |d: Option<f64>| d.map(|d| format!("{d:.1} s")).unwrap_or_else(|| "never".into());
        let _ = writeln!(
            s,
            "Vigil fault suite ({} form), {} — {}",
            o.form,
            self.started.format("%Y-%m-%d %H:%M UTC"),
            if self.passed() { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(
            s,
            "Whole run: {:.0} s on {} cores. Own nisshi 0.8.1 broker (SQLite) and PostgreSQL; the four service binaries as processes.",
            self.seconds,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        let _ = writeln!(
            s,
            "Traffic: {} minutes of history at {:.0}/min sent at once, then {:.0} events/s live through POST \
             /ingest/transactions, stamped {} minutes behind the clock (simulator, items retried up to 30 times with \
             the same id). Detector IDLE_TIMEOUT {}: a partition quiet for longer than that (between phases, \
             during a fault) has a minute closed only once the wall clock is past its end plus the feed's learned \
             delay plus ALLOWED_LATENESS; events of a minute already closed are booked as late, which the books \
             count.\n",
            o.history_minutes, o.history_per_minute, o.live_per_second, o.live_behind_minutes, o.idle_timeout
        );
        for ph in &self.phases {
            let t = &ph.traffic;
            let b = &ph.books;
            let _ = writeln!(s, "== {} (round {}) at {:.0} s: {}", ph.fault.name(), ph.round, ph.at, ph.injected);
            let _ = writeln!(
                s,
                "   recovery: ready after {}, events flowing after {}; books balanced {} after traffic stopped",
                secs(ph.ready_after),
                secs(ph.flowing_after),
                secs(ph.drained_after)
            );
            let _ = writeln!(
                s,
                "   this phase: sent {} = accepted {} + refused {} + unavailable {}; {} re-sends; non-2xx answers: {}",
                t.sent,
                t.accepted,
                t.refused,
                t.unavailable,
                t.retried,
                traffic::non_2xx(t)
            );
            let _ = writeln!(
                s,
                "   cumulative: accepted {}, distinct on the broker {}, counted {} ({} in minutes + {} late, {} minutes)",
                b.accepted,
                b.published,
                b.counted.total(),
                b.counted.in_minutes,
                b.counted.late,
                b.counted.minutes
            );
            let a = &ph.anomalies;
            let _ = writeln!(
                s,
                "   anomalies: {} ids ({} rate, {} amount) on the topic and {} in the table; {} re-sent states, all identical: {}",
                a.topic_ids,
                a.rate_ids,
                a.amount_ids,
                a.table_ids,
                a.resent,
                if a.problems.iter().any(|p| p.contains("different content")) { "no" } else { "yes" }
            );
            for r in &ph.restarts {
                let first = r.what.lines().next().unwrap_or("");
                let _ = writeln!(s, "   {}: {first}", if r.unexpected { "UNEXPECTED EXIT" } else { "restart" });
            }
            for p in &ph.problems {
                let _ = writeln!(s, "   PROBLEM: {p}");
            }
            let _ = writeln!(s, "   {}", if ph.problems.is_empty() { "ok" } else { "FAILED" });
        }
        let last = self.phases.last().map(|p| p.books.clone()).unwrap_or_default();
        let _ = writeln!(
            s,
            "\nTotals: sent {} = accepted {} + refused {} + unavailable {}; distinct events on the broker {}; counted {}.",
            last.sent,
            last.accepted,
            last.refused,
            last.unavailable,
            last.published,
            last.counted.total()
        );
        let _ = writeln!(
            s,
            "Outbound webhook: {} eligible anomalies, {} received by the test receiver.",
            self.eligible_outbound, self.received_outbound
        );
        let _ = writeln!(s, "Dead letters during the run: {}.", self.dead_letters);
        let unexpected: Vec<&Event> = self.timeline.iter().filter(|e| e.unexpected).collect();
        let _ = writeln!(s, "Restarts the supervisor made for exits nobody caused: {}.", unexpected.len());
        for e in unexpected {
            let _ = writeln!(s, "  [{:.1} s] {}", e.at, e.what);
        }
        let problems = self.problems();
        if !problems.is_empty() {
            let _ = writeln!(s, "\nProblems:");
            for p in problems {
                let _ = writeln!(s, "  - {p}");
            }
        }
        let _ = writeln!(s, "\nTimeline:");
        for e in &self.timeline {
            let first = e.what.lines().next().unwrap_or("");
            let _ = writeln!(s, "  [{:>6.1} s] {first}", e.at);
        }
        s
    }

    /// Prints the report and writes it to `.vigil/chaos/report.txt` (and `report-<form>.txt`).
    pub fn publish(&self) -> std::path::PathBuf {
        let text = self.text();
        println!("{text}");
        let dir = crate::workspace_root().join(".vigil").join("chaos");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("report.txt");
        let _ = std::fs::write(&path, &text);
        let _ = std::fs::write(dir.join(format!("report-{}.txt", self.options.form)), &text);
        path
    }
}

/// How long the books may stand still after traffic stopped before the wait ends. The live
/// traffic's last minutes close once the wall clock is past their end plus the feed's delay (3
/// minutes and up to ALLOWED_LATENESS more) plus ALLOWED_LATENESS: the first up to 90 s after the
/// traffic stopped, the next a minute later, and nothing moves in between.
const STABLE_FOR: Duration = Duration::from_secs(150);

/// The cumulative counts of every phase so far.
struct Ledger {
    total: SendReport,
}

/// Runs the suite and returns its report (it does not assert; see [`SuiteReport::passed`]).
pub async fn run(o: SuiteOptions) -> SuiteReport {
    let started = Utc::now();
    let t0 = Instant::now();
    let mut opts = StackOptions::new(&o.name);
    opts.rust_log = "info".into();
    opts.idle_timeout = o.idle_timeout.into();
    opts.allowed_lateness = o.allowed_lateness.into();
    let mut stack = Stack::start(opts).await;
    let producer = stack.url("producer");
    let send = Send::new(&producer);
    let mut ledger = Ledger { total: SendReport::default() };
    let mut phases = Vec::new();

    // The history, at once.
    let at = stack.timeline.elapsed();
    stack
        .timeline
        .note(format!("History: {} minutes at {}/min, sent at once.", o.history_minutes, o.history_per_minute));
    // Ending where the live traffic (stamped `live_behind_minutes` behind the clock) begins.
    let start = Utc::now() - chrono::Duration::minutes(i64::from(o.history_minutes) + o.live_behind_minutes);
    let report = send
        .run(traffic::history(o.history_minutes, o.history_per_minute), 1, start, Speed::Max, CancellationToken::new())
        .await;
    phases.push(settle(&stack, &o, &mut ledger, Fault::None, 0, "none".into(), at, None, None, report).await);

    let mut seed = 100;
    for round in 1..=o.rounds {
        for fault in Fault::ALL {
            seed += 1;
            phases.push(phase(&stack, &o, &send, &mut ledger, fault, round, seed).await);
        }
    }

    // The outbound webhook: each eligible anomaly forwarded once.
    let eligible = phases.last().map(|p| p.anomalies.eligible.clone()).unwrap_or_default();
    let received = stack.receiver.as_ref().map(|r| r.received.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let outbound_problems = loop {
        let got = received.as_ref().map(|r| r.snapshot()).unwrap_or_default();
        let problems = match books::audit_outbound(&stack.pool, &eligible, &got).await {
            Ok(p) => p,
            Err(e) => vec![e],
        };
        if problems.is_empty() || Instant::now() >= deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let received_outbound = received.map(|r| r.snapshot().len()).unwrap_or(0);
    let kafka = stack.kafka();
    let dl_topic = stack.topics.dead_letter.clone();
    let dead_letters = tokio::task::spawn_blocking(move || books::read_all(&kafka, &dl_topic, Duration::from_secs(30)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|r| r.len())
        .unwrap_or(0);
    stack.timeline.note("Stopping the stack.");
    stack.shutdown();
    SuiteReport {
        options: o,
        started,
        seconds: t0.elapsed().as_secs_f64(),
        phases,
        timeline: stack.timeline.events(),
        dead_letters,
        outbound_problems,
        eligible_outbound: eligible.len(),
        received_outbound,
    }
}

/// One fault: live traffic, the fault, recovery, then the books.
async fn phase(
    stack: &Stack,
    o: &SuiteOptions,
    send: &Send,
    ledger: &mut Ledger,
    fault: Fault,
    round: u32,
    seed: u64,
) -> Phase {
    let at = stack.timeline.elapsed();
    stack.timeline.note(format!("Phase: {} (round {round}); live traffic starts.", fault.name()));
    let stop = CancellationToken::new();
    let traffic = {
        let (send, stop) = (send.clone(), stop.clone());
        let scenario = traffic::live(o.live_per_second * 60.0);
        // Stamped `live_behind_minutes` behind the wall clock (the long form: three, as a
        // delayed feed is): the detector learns the delay and keeps a quiet partition's current
        // minute open until the wall clock is past its end plus the delay plus ALLOWED_LATENESS,
        // so pauses (a fault, the gap between phases) turn no punctual event late.
        let behind = Duration::from_secs(60 * o.live_behind_minutes.max(0) as u64);
        let start = Utc::now() - chrono::Duration::minutes(o.live_behind_minutes);
        tokio::spawn(async move { send.run_delayed(scenario, seed, start, Speed::Factor(1.0), behind, stop).await })
    };
    tokio::time::sleep(o.lead_in).await;

    let (injected, healed) = inject(stack, o, fault).await;
    let (ready_after, flowing_after) = recover(stack, o, fault, healed).await;
    tokio::time::sleep(o.tail).await;
    stop.cancel();
    let report = traffic.await.unwrap_or_default();
    settle(stack, o, ledger, fault, round, injected, at, ready_after, flowing_after, report).await
}

/// Injects `fault` and heals it; returns what was done and when it was healed.
async fn inject(stack: &Stack, o: &SuiteOptions, fault: Fault) -> (String, Instant) {
    match fault {
        Fault::None => ("none".into(), Instant::now()),
        Fault::BrokerKill => {
            stack.timeline.note("kill -9 the broker.");
            stack.with_broker(|b| b.kill());
            tokio::time::sleep(o.broker_down).await;
            stack.with_broker(|b| b.restart());
            stack.timeline.note("Broker restarted on its storage.");
            (
                format!("broker kill -9, down {} s, restarted on the same SQLite storage", o.broker_down.as_secs()),
                Instant::now(),
            )
        }
        Fault::DetectorKill => {
            stack.kill9("detector-1", "kill -9 by the fault suite");
            ("detector kill -9; the supervisor restarts it".into(), Instant::now())
        }
        Fault::SinkKill => {
            stack.kill9("sink", "kill -9 by the fault suite");
            ("sink kill -9; the supervisor restarts it".into(), Instant::now())
        }
        Fault::PostgresRestart => {
            stack.timeline.note("PostgreSQL: stop -m immediate.");
            tokio::task::block_in_place(|| stack.pg().stop_server());
            tokio::time::sleep(o.postgres_down).await;
            tokio::task::block_in_place(|| stack.pg().start_server());
            stack.timeline.note("PostgreSQL started.");
            (
                format!("PostgreSQL stopped (-m immediate), down {} s, started", o.postgres_down.as_secs()),
                Instant::now(),
            )
        }
        Fault::BrokerUnreachable => {
            stack.timeline.note("SIGSTOP the broker: its connections hang.");
            stack.with_broker(|b| b.pause());
            tokio::time::sleep(o.unreachable_for).await;
            stack.with_broker(|b| b.resume());
            stack.timeline.note("SIGCONT the broker.");
            (
                format!(
                    "broker frozen (SIGSTOP) for {} s while clients keep posting, then SIGCONT",
                    o.unreachable_for.as_secs()
                ),
                Instant::now(),
            )
        }
        Fault::DetectorRebalance => {
            // A dynamic member: it sends LeaveGroup when it stops, so its partitions go back at
            // once. (A static member sends no LeaveGroup: its partitions would stand still at least
            // until its session expired; tansu 0.6.0 kept them assigned to it even after.)
            stack.timeline.note("A second detector joins the group (dynamic membership).");
            stack.add(Kind::Detector, "detector-2", &[]);
            let joined = wait_until(o.recovery_timeout, || async {
                let m = stack.metrics("detector-2").await;
                (metric_sum(&m, "vigil_detector_assigned_partitions", &[("stage", "partition")]) > 0.0).then_some(())
            })
            .await;
            stack.timeline.note(match joined {
                Some(()) => "detector-2 has partitions.".to_string(),
                None => "detector-2 got no partitions in time.".to_string(),
            });
            tokio::time::sleep(o.rebalance_hold).await;
            stack.stop("detector-2");
            (
                format!(
                    "detector-2 joined ({}), worked {} s, left with SIGTERM",
                    if joined.is_some() { "took partitions" } else { "TOOK NO PARTITIONS" },
                    o.rebalance_hold.as_secs()
                ),
                Instant::now(),
            )
        }
    }
}

async fn wait_until<T, F, Fut>(timeout: Duration, f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    vigil_testkit::eventually(timeout, f).await
}

/// Times recovery from `healed`: every service ready; the producer accepting and the detector
/// processing again (their counters change); after a rebalance, detector-1 owning every
/// partition again.
async fn recover(stack: &Stack, o: &SuiteOptions, fault: Fault, healed: Instant) -> (Option<f64>, Option<f64>) {
    let mut ready_after = None;
    let mut flowing_after = None;
    let (mut accepted_seen, mut processed_seen) = (None::<f64>, None::<f64>);
    let (mut accepted_moved, mut processed_moved) = (false, false);
    let deadline = healed + o.recovery_timeout;
    while Instant::now() < deadline && (ready_after.is_none() || flowing_after.is_none()) {
        if ready_after.is_none() {
            let mut all = true;
            for n in stack.names() {
                all &= stack.is_ready(&n).await;
            }
            if fault == Fault::DetectorRebalance {
                let m = stack.metrics("detector-1").await;
                all &= metric_sum(&m, "vigil_detector_assigned_partitions", &[("stage", "partition")])
                    == f64::from(crate::stack::TRANSACTION_PARTITIONS)
                    && metric_sum(&m, "vigil_detector_assigned_partitions", &[("stage", "merge")]) == 1.0;
            }
            if all {
                ready_after = Some(healed.elapsed().as_secs_f64());
            }
        }
        if flowing_after.is_none() && fault == Fault::PostgresRestart {
            // Writes to PostgreSQL again: the webhook stores a notification.
            if stack.probe_webhook_write().await {
                flowing_after = Some(healed.elapsed().as_secs_f64());
            }
        } else if flowing_after.is_none() {
            let p = stack.metrics("producer").await;
            let d = stack.metrics("detector-1").await;
            let accepted = metric_sum(&p, "vigil_producer_events_total", &[("outcome", "accepted")]);
            let processed = metric_sum(&d, "vigil_detector_events_total", &[]);
            accepted_moved |= !p.is_empty() && accepted_seen.is_some_and(|a| a != accepted);
            processed_moved |= !d.is_empty() && processed_seen.is_some_and(|a| a != processed);
            if !p.is_empty() {
                accepted_seen = Some(accepted);
            }
            if !d.is_empty() {
                processed_seen = Some(processed);
            }
            if accepted_moved && processed_moved {
                flowing_after = Some(healed.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let note = format!(
        "Recovered: ready after {}, flowing after {}.",
        ready_after.map(|d| format!("{d:.1} s")).unwrap_or_else(|| "never".into()),
        flowing_after.map(|d| format!("{d:.1} s")).unwrap_or_else(|| "never".into())
    );
    stack.timeline.note(note);
    (ready_after, flowing_after)
}

/// Waits for the books to balance (or the drain timeout), then audits the anomalies.
#[allow(clippy::too_many_arguments)]
async fn settle(
    stack: &Stack,
    o: &SuiteOptions,
    ledger: &mut Ledger,
    fault: Fault,
    round: u32,
    injected: String,
    at: f64,
    ready_after: Option<f64>,
    flowing_after: Option<f64>,
    report: SendReport,
) -> Phase {
    traffic::add(&mut ledger.total, &report);
    let t = &ledger.total;
    stack.timeline.note(format!(
        "Traffic stopped: this phase sent {} (accepted {}, unavailable {}); waiting for the books.",
        report.sent, report.accepted, report.unavailable
    ));
    let ended = Instant::now();
    let mut problems = Vec::new();
    if report.stopped_early.as_deref().is_some_and(|w| w != vigil_simulator::report::STOPPED_BY_SIGNAL) {
        problems.push(format!("the simulator stopped early: {:?}", report.stopped_early));
    }
    let mut books = Books {
        sent: t.sent,
        accepted: t.accepted,
        refused: t.refused,
        unavailable: t.unavailable,
        ..Default::default()
    };
    let mut drained_after = None;
    let mut last_published_read = None::<Instant>;
    let mut last_seen = None;
    let mut stable_since = Instant::now();
    let deadline = ended + o.drain_timeout;
    loop {
        // The broker's log is re-read now and then: a produce request a frozen broker held
        // may land after the client gave up on it.
        if last_published_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            let (kafka, topic) = (stack.kafka(), stack.topics.transactions.clone());
            match tokio::task::spawn_blocking(move || books::published(&kafka, &topic)).await {
                Ok(Ok(p)) => books.published = p.distinct_ids,
                Ok(Err(e)) => stack.timeline.note(format!("Reading the transactions topic failed: {e}")),
                Err(e) => stack.timeline.note(format!("Reading the transactions topic panicked: {e}")),
            }
            last_published_read = Some(Instant::now());
        }
        if let Ok(c) = books::counted(&stack.pool).await {
            books.counted = c;
        }
        if books.problems().is_empty() {
            drained_after = Some(ended.elapsed().as_secs_f64());
            break;
        }
        let seen = (books.counted, books.published);
        if last_seen != Some(seen) {
            last_seen = Some(seen);
            stable_since = Instant::now();
        }
        // Nothing moved for this long after traffic stopped: nothing more is coming.
        if Instant::now() >= deadline || stable_since.elapsed() >= STABLE_FOR {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    problems.extend(books.problems());

    // Anomalies: the sink may still be writing the newest states; give it a moment.
    let mut anomalies = AnomalyAudit::default();
    let audit_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match books::audit_anomalies(&stack.kafka(), &stack.topics.anomalies, &stack.pool).await {
            Ok(a) => anomalies = a,
            Err(e) => anomalies.problems = vec![e],
        }
        if anomalies.problems.is_empty() || Instant::now() >= audit_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    problems.extend(anomalies.problems.iter().cloned());
    let restarts: Vec<Event> =
        stack.timeline.events().into_iter().filter(|e| e.at >= at && e.what.starts_with("Supervisor:")).collect();
    let books_line = format!(
        "Books: accepted {}, on the broker {}, counted {} ({}).",
        books.accepted,
        books.published,
        books.counted.total(),
        match drained_after {
            Some(d) => format!("balanced {d:.1} s after traffic stopped"),
            None => "NOT balanced".into(),
        }
    );
    stack.timeline.note(books_line);
    Phase {
        fault,
        round,
        injected,
        at,
        ready_after,
        flowing_after,
        drained_after,
        traffic: report,
        books,
        anomalies,
        restarts,
        problems,
    }
}
