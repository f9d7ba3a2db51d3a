//! A run: pacing the generator against the clock, batching, sending with bounded concurrency,
//! counting, logging progress, and writing the ground truth and the report.
//!
//! **Pacing.** A simulated clock starts at the real time of launch and runs `speed` times as
//! fast as the wall clock; a transaction is due once the simulated clock has reached its
//! `occurred_at`, and due transactions are sent at once. So `--start now-30m --speed 1` sends
//! the 30 minutes of history immediately, then keeps up with real time; `--speed max` sends
//! everything as fast as the target takes it. (Above speed 1, event time runs ahead of the
//! real clock; the producer refuses events more than `MAX_FUTURE_SKEW`, 5 minutes by default,
//! in the future.)
//!
//! **Ordering.** The detector's watermark is the highest event time it has seen minus its
//! allowed lateness (30 s); an event older than its minute's closing is booked as late, not
//! counted. Batches in flight at once may reach the broker in any order, so a batch is only
//! sent while the event-time spread of everything in flight (its own included) stays within
//! `max_skew` (20 s by default): concurrency never makes an event late. At low event density
//! (a batch spanning minutes of event time) batches therefore go one at a time. The broker
//! target needs no such care: it enqueues every record in order on one idempotent producer,
//! which keeps that order per partition whatever is in flight.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::generator::{utc, Generator, SimTransaction};
use crate::report::{SendReport, STOPPED_BY_SIGNAL};
use crate::send::{Batch, BatchOutcome, Target};
use crate::truth::{write_atomically, GroundTruth};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the target takes it.
    Max,
    /// Event time runs this many times as fast as the wall clock (1 = real time).
    Factor(f64),
}

impl Speed {
    pub fn parse(raw: &str) -> std::result::Result<Speed, String> {
        let s = raw.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let s = s.strip_suffix(['x', 'X']).unwrap_or(s);
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!("{raw:?} is not max or a positive factor such as 1, 10 or 0.5")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(x) => write!(f, "{x}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub speed: Speed,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Largest event-time spread of the batches in flight at once.
    pub max_skew: Duration,
    /// With [`Speed::Factor`]: each transaction is sent this long after the simulated clock
    /// reaches its event time, so the stream trails the wall clock (a back-fill, a delayed feed).
    pub delay: Duration,
    pub progress_every: Duration,
    pub ground_truth: Option<PathBuf>,
    pub report: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            speed: Speed::Max,
            batch_size: 500,
            concurrency: 4,
            max_skew: Duration::from_secs(20),
            delay: Duration::ZERO,
            progress_every: Duration::from_secs(5),
            ground_truth: None,
            report: None,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub report: SendReport,
    pub truth: GroundTruth,
}

type InFlight = Pin<Box<dyn Future<Output = (u64, i64, BatchOutcome)> + Send>>;

struct Runner<'a> {
    target: &'a Target,
    opts: &'a RunOptions,
    in_flight: FuturesUnordered<InFlight>,
    /// (first event time, batch seq) of every batch in flight.
    spans: BTreeSet<(i64, u64)>,
    report: SendReport,
    next_seq: u64,
    fatal: Option<String>,
    last_log: Instant,
    sent_at_last_log: u64,
}

impl Runner<'_> {
    fn record(&mut self, (seq, first, outcome): (u64, i64, BatchOutcome)) {
        self.spans.remove(&(first, seq));
        self.report.add(&outcome);
        if let Some(f) = outcome.fatal {
            self.fatal.get_or_insert(f);
        }
    }

    /// Sends a batch once concurrency and the event-time spread allow it.
    async fn dispatch(&mut self, items: Vec<SimTransaction>) {
        if items.is_empty() {
            return;
        }
        let batch = Batch { seq: self.next_seq, items };
        self.next_seq += 1;
        let (first, last) = (batch.first_ms(), batch.last_ms());
        let skew = self.opts.max_skew.as_millis() as i64;
        let ordered = self.target.preserves_order();
        loop {
            let oldest = self.spans.first().map(|(t, _)| *t);
            let fits = self.in_flight.len() < self.opts.concurrency.max(1)
                && (ordered || oldest.is_none_or(|o| last - o.min(first) <= skew));
            if fits {
                break;
            }
            match self.in_flight.next().await {
                Some(done) => self.record(done),
                None => break,
            }
        }
        // A batch that answered "stop" (a refused key) stops the run: send nothing more.
        if self.fatal.is_some() {
            return;
        }
        self.spans.insert((first, batch.seq));
        let seq = batch.seq;
        let sending = self.target.start(batch);
        self.in_flight.push(Box::pin(async move { (seq, first, sending.await) }));
        self.report.event_time_reached = Some(utc(last));
    }

    fn progress(&mut self, force: bool) {
        let since = self.last_log.elapsed();
        if !force && since < self.opts.progress_every {
            return;
        }
        let rate = (self.report.sent - self.sent_at_last_log) as f64 / since.as_secs_f64().max(1e-3);
        tracing::info!(
            "Sent {} transactions ({} accepted, {} refused, {} unavailable); event time reached {}; {:.0}/s.",
            self.report.sent,
            self.report.accepted,
            self.report.refused,
            self.report.unavailable,
            self.report.event_time_reached.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default(),
            rate
        );
        self.last_log = Instant::now();
        self.sent_at_last_log = self.report.sent;
    }
}

fn write_truth(path: &Option<PathBuf>, truth: &GroundTruth) -> Result<()> {
    match path {
        Some(p) => truth.write(&p.to_string_lossy()),
        None => Ok(()),
    }
}

/// When a transaction at event time `t` (ms) is due, counted from the run's start at wall-clock
/// `real0` (ms): the simulated clock starts at `real0` and runs `speed` times as fast; what it
/// has already passed is due at once; `delay` is added to every send.
fn due_after(t: i64, real0: i64, speed: Speed, delay: Duration) -> Duration {
    match speed {
        Speed::Max => Duration::ZERO,
        Speed::Factor(f) => {
            let at_s = (t - real0) as f64 / 1000.0 / f + delay.as_secs_f64();
            Duration::from_secs_f64(at_s.max(0.0))
        }
    }
}

/// Sends everything `gen` yields to `target`, paced by `opts.speed`, until the generator ends
/// or `stop` is cancelled. Writes the ground truth when each scenario iteration begins and at
/// the end, and the report at the end.
pub async fn run(mut gen: Generator, target: &Target, opts: &RunOptions, stop: CancellationToken) -> Result<RunResult> {
    let wall0 = Instant::now();
    let real0 = Utc::now().timestamp_millis();
    let mut runner = Runner {
        target,
        opts,
        in_flight: FuturesUnordered::new(),
        spans: BTreeSet::new(),
        report: SendReport {
            scenario: gen.scenario().name.clone(),
            seed: gen.truth().seed,
            target: target.name().into(),
            speed: opts.speed.to_string(),
            started_at: Some(Utc::now()),
            event_time_start: Some(utc(gen.start_ms())),
            ..Default::default()
        },
        next_seq: 0,
        fatal: None,
        last_log: Instant::now(),
        sent_at_last_log: 0,
    };
    write_truth(&opts.ground_truth, gen.truth())?;
    let mut iterations = gen.truth().iterations;
    tracing::info!(
        "Simulating {} from {} at speed {} to {}.",
        gen.scenario().name,
        utc(gen.start_ms()).to_rfc3339(),
        opts.speed,
        target.name()
    );

    // How long until a transaction at event time `t` is due (zero when it is).
    let due_in = |t: i64| -> Duration { due_after(t, real0, opts.speed, opts.delay).saturating_sub(wall0.elapsed()) };

    let mut lookahead = gen.next();
    let mut items: Vec<SimTransaction> = Vec::with_capacity(opts.batch_size);
    let stopped = loop {
        if let Some(f) = &runner.fatal {
            break Some(f.clone());
        }
        if stop.is_cancelled() {
            break Some(STOPPED_BY_SIGNAL.to_string());
        }
        let Some(tx) = lookahead.take() else {
            runner.dispatch(std::mem::take(&mut items)).await;
            break None;
        };
        let wait = due_in(tx.occurred_at);
        if !wait.is_zero() {
            lookahead = Some(tx);
            if !items.is_empty() {
                runner.dispatch(std::mem::take(&mut items)).await;
                continue;
            }
            let nap = wait.min(opts.progress_every);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                Some(done) = runner.in_flight.next(), if !runner.in_flight.is_empty() => runner.record(done),
                _ = stop.cancelled() => {}
            }
            runner.progress(false);
            continue;
        }
        items.push(tx);
        lookahead = gen.next();
        if items.len() >= opts.batch_size.max(1) {
            runner.dispatch(std::mem::take(&mut items)).await;
            runner.progress(false);
        }
        if gen.truth().iterations != iterations {
            iterations = gen.truth().iterations;
            write_truth(&opts.ground_truth, gen.truth())?;
        }
    };
    while let Some(done) = runner.in_flight.next().await {
        runner.record(done);
    }
    target.flush().await;
    let stopped = stopped.or_else(|| runner.fatal.clone());

    runner.progress(true);
    let mut report = runner.report.clone();
    let finished = Utc::now();
    report.finished_at = Some(finished);
    report.wall_seconds = wall0.elapsed().as_secs_f64();
    report.events_per_second = report.sent as f64 / report.wall_seconds.max(1e-6);
    report.withheld_by_volume_drops = gen.counts().1;
    report.stopped_early = stopped;
    let truth = gen.truth().clone();
    write_truth(&opts.ground_truth, &truth)?;
    if let Some(p) = &opts.report {
        write_atomically(&p.to_string_lossy(), &report.to_json())?;
    }
    Ok(RunResult { report, truth })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse_as_max_or_a_positive_factor() {
        assert_eq!(Speed::parse("max"), Ok(Speed::Max));
        assert_eq!(Speed::parse("1"), Ok(Speed::Factor(1.0)));
        assert_eq!(Speed::parse("60x"), Ok(Speed::Factor(60.0)));
        assert_eq!(Speed::parse("0.5"), Ok(Speed::Factor(0.5)));
        assert!(Speed::parse("0").is_err());
        assert!(Speed::parse("fast").is_err());
    }

    #[test]
    fn pacing_sends_what_the_clock_passed_at_once_and_a_delay_makes_the_stream_trail_it() {
        let (real0, min) = (1_000_000_000_000i64, 60_000i64);
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(due_after(real0 + min, real0, Speed::Max, Duration::ZERO), Duration::ZERO);
        // Real time: history at once, the rest as the wall clock reaches it.
        assert_eq!(due_after(real0 - 3 * min, real0, Speed::Factor(1.0), Duration::ZERO), Duration::ZERO);
        assert_eq!(due_after(real0 + min, real0, Speed::Factor(1.0), Duration::ZERO), secs(60));
        // 60x: a minute of event time a second.
        assert_eq!(due_after(real0 + min, real0, Speed::Factor(60.0), Duration::ZERO), secs(1));
        // Three minutes behind the clock: the stream starting three minutes ago is due from now
        // on, each event three minutes after its time.
        assert_eq!(due_after(real0 - 3 * min, real0, Speed::Factor(1.0), secs(180)), Duration::ZERO);
        assert_eq!(due_after(real0 - 2 * min, real0, Speed::Factor(1.0), secs(180)), secs(60));
        assert_eq!(due_after(real0, real0, Speed::Factor(1.0), secs(180)), secs(180));
    }
}
