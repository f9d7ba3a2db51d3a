//! The loop both stages share: a consumer-group member that owns some input partitions, keeps
//! one state per partition, restores it from a checkpoint when a partition is assigned, and
//! commits an input offset only after every output derived from it is acknowledged.
//!
//! The loop runs on a thread of its own around a `BaseConsumer`; rebalance callbacks run inside
//! `poll` on that same thread, so they take the same lock as the loop without contention.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use vigil_common::kafka::KafkaConfig;

use super::checkpoint::{CheckpointState, CheckpointStore};
use super::metrics::{DetectorMetrics, PartitionLabels, StageLabels};
use super::outputs::{Origin, Outputs};
use crate::error::{Error, Result};

/// What differs between the stages.
pub trait Stage: Send + 'static {
    type State: CheckpointState + Send;
    const NAME: &'static str;

    fn new_state(&self, partition: i32, partition_count: i32) -> Self::State;

    /// Handles one input message, sending outputs through `out`. An input that cannot be
    /// handled is dead-lettered here, not returned as an error; errors are fatal.
    fn process(
        &self,
        state: &mut Self::State,
        msg: &Origin<'_>,
        timestamp: Option<i64>,
        out: &mut Outputs,
    ) -> Result<()>;

    /// Called when the partition had no record for the idle timeout; `now_ms` is the wall clock.
    fn on_idle(&self, _state: &mut Self::State, _now_ms: i64, _out: &mut Outputs) -> Result<()> {
        Ok(())
    }

    /// Refreshes state-size gauges.
    fn observe(&self, _states: &mut dyn Iterator<Item = &Self::State>) {}
}

/// How long the loop waits for a partition's high watermark (idle check, lag gauge).
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(1);

struct Slot<T> {
    state: T,
    next_offset: i64,
    last_record: Instant,
}

/// Settings of one stage loop.
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub input_topic: String,
    pub group: String,
    /// `group.instance.id` (static membership), if configured.
    pub instance_id: Option<String>,
    pub idle_timeout: Option<Duration>,
    pub commit_interval: Duration,
    pub checkpoint_interval: Duration,
}

struct Shared<S: Stage> {
    stage: S,
    settings: StageSettings,
    slots: BTreeMap<i32, Slot<S::State>>,
    out: Outputs,
    store: CheckpointStore,
    fatal: Option<Error>,
    metrics: DetectorMetrics,
    ready: Arc<AtomicBool>,
}

impl<S: Stage> Shared<S> {
    fn restore(&mut self, partition: i32, partition_count: i32) -> Result<i64> {
        let start = Instant::now();
        let restored = self.store.load(partition)?;
        let (state, offset) = match restored {
            Some(r) => match r.decode::<S::State>() {
                Ok(s) => (s, r.input_offset),
                Err(e) => {
                    tracing::warn!(stage = S::NAME, partition, version = r.version, error = %e, "The checkpoint does not decode; rebuilding the partition from the start of its input.");
                    (self.stage.new_state(partition, partition_count), 0)
                }
            },
            None => (self.stage.new_state(partition, partition_count), 0),
        };
        self.metrics
            .restore_duration
            .get_or_create(&StageLabels { stage: S::NAME })
            .observe(start.elapsed().as_secs_f64());
        tracing::info!(
            stage = S::NAME,
            partition,
            input_offset = offset,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "Partition state restored."
        );
        self.slots.insert(partition, Slot { state, next_offset: offset, last_record: Instant::now() });
        Ok(offset)
    }

    fn handle(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        let p = m.partition();
        let Some(slot) = self.slots.get_mut(&p) else { return Ok(()) };
        if m.offset() < slot.next_offset {
            return Ok(());
        }
        slot.last_record = Instant::now();
        let origin = Origin {
            stage: S::NAME,
            topic: m.topic(),
            partition: p,
            offset: m.offset(),
            key: m.key(),
            payload: m.payload().unwrap_or_default(),
            reply_to: reply_to(m),
        };
        let ts = m.timestamp().to_millis();
        self.stage.process(&mut slot.state, &origin, ts, &mut self.out)?;
        slot.next_offset = m.offset() + 1;
        Ok(())
    }

    /// A partition is idle when it delivered nothing for the idle timeout **and** has nothing
    /// unread: a partition whose records are waiting behind others (a backlog, a slow start
    /// after assignment) is busy, not idle, and must not have its windows closed early.
    fn tick_idle(&mut self, watermarks: &BaseConsumer) -> Result<()> {
        let Some(idle) = self.settings.idle_timeout else { return Ok(()) };
        let mut went_idle = Vec::new();
        for (p, slot) in self.slots.iter_mut() {
            if slot.last_record.elapsed() < idle {
                continue;
            }
            slot.last_record = Instant::now();
            match watermarks.fetch_watermarks(&self.settings.input_topic, *p, WATERMARK_TIMEOUT) {
                Ok((_, high)) if high > slot.next_offset => continue,
                Ok(_) => {
                    let before = self.out.pending();
                    self.stage.on_idle(&mut slot.state, chrono::Utc::now().timestamp_millis(), &mut self.out)?;
                    if self.out.pending() > before {
                        went_idle.push(*p);
                    }
                }
                // Cannot tell (broker unreachable): better late windows than windows closed on
                // records still coming.
                Err(_) => continue,
            }
        }
        // Going idle is the one decision taken on the wall clock, which a replay does not see
        // again: a restart that replayed the records around it from an older checkpoint would
        // count the late events after it in the window instead (a window the merge stage
        // ignores as a re-send) and book later ones against a late counter started again from
        // zero, losing them. So the state right after it is checkpointed at once (its outputs
        // acknowledged first, as for every checkpoint), and no replay crosses it.
        if !went_idle.is_empty() {
            self.out.flush()?;
            self.checkpoint(&went_idle)?;
        }
        Ok(())
    }

    fn flush_and_commit(
        &mut self,
        consumer: &BaseConsumer<StageContext<S>>,
        mode: CommitMode,
        only: Option<&[i32]>,
    ) -> Result<()> {
        self.out.flush()?;
        let mut tpl = TopicPartitionList::new();
        for (p, slot) in &self.slots {
            if only.is_none_or(|o| o.contains(p)) {
                tpl.add_partition_offset(&self.settings.input_topic, *p, Offset::Offset(slot.next_offset))?;
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, mode) {
                // Not fatal: the checkpoint, not the committed offset, decides where a restart
                // resumes. The committed offset is for lag monitoring and the group's bookkeeping.
                tracing::warn!(stage = S::NAME, error = %e, "Offset commit failed; will retry.");
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, partitions: &[i32]) -> Result<()> {
        for p in partitions {
            let Some(slot) = self.slots.get(p) else { continue };
            let start = Instant::now();
            let n = self.store.save_state(*p, slot.next_offset, &slot.state)?;
            let labels = StageLabels { stage: S::NAME };
            self.metrics.checkpoint_duration.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
            self.metrics.checkpoint_bytes.get_or_create(&labels).set(n as i64);
        }
        Ok(())
    }

    fn update_lag(&self, watermarks: &BaseConsumer) {
        for (p, slot) in &self.slots {
            if let Ok((_, high)) = watermarks.fetch_watermarks(&self.settings.input_topic, *p, WATERMARK_TIMEOUT) {
                self.metrics
                    .consumer_lag
                    .get_or_create(&PartitionLabels { stage: S::NAME, partition: *p })
                    .set((high - slot.next_offset).max(0));
            }
        }
        let mut it = self.slots.values().map(|s| &s.state);
        self.stage.observe(&mut it);
        self.metrics.assigned_partitions.get_or_create(&StageLabels { stage: S::NAME }).set(self.slots.len() as i64);
    }
}

/// The consumer context: rebalance callbacks restore and checkpoint partition state.
pub struct StageContext<S: Stage> {
    shared: Arc<Mutex<Shared<S>>>,
}

impl<S: Stage> StageContext<S> {
    fn lock(&self) -> MutexGuard<'_, Shared<S>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: Stage> ClientContext for StageContext<S> {}

impl<S: Stage> ConsumerContext for StageContext<S> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let mut sh = self.lock();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let topic = sh.settings.input_topic.clone();
                let count = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .ok()
                    .and_then(|md| md.topics().first().map(|t| t.partitions().len() as i32))
                    .unwrap_or(0);
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in &parts {
                    match sh.restore(*p, count) {
                        Ok(offset) => {
                            if let Err(e) = tpl.set_partition_offset(&topic, *p, Offset::Offset(offset)) {
                                sh.fatal.get_or_insert(e.into());
                            }
                        }
                        Err(e) => {
                            tracing::error!(stage = S::NAME, partition = p, error = %e, "Failed to restore partition state.");
                            sh.fatal.get_or_insert(e);
                        }
                    }
                }
                if let Err(e) = consumer.assign(tpl) {
                    sh.fatal.get_or_insert(e.into());
                }
                tracing::info!(stage = S::NAME, partitions = ?parts, "Partitions assigned.");
                sh.ready.store(sh.fatal.is_none(), Ordering::SeqCst);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Not ready until the group hands out partitions again (an empty assignment
                // counts: an instance the group has nothing for is still in order). A member the
                // group never reassigns therefore shows as not ready instead of standing still.
                sh.ready.store(false, Ordering::SeqCst);
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                // Hand over cleanly: outputs acknowledged, state checkpointed, offsets committed.
                let result =
                    sh.flush_and_commit(consumer, CommitMode::Sync, Some(&parts)).and_then(|()| sh.checkpoint(&parts));
                if let Err(e) = result {
                    tracing::error!(stage = S::NAME, error = %e, "Failed to hand over revoked partitions.");
                    sh.fatal.get_or_insert(e);
                }
                for p in &parts {
                    sh.slots.remove(p);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(stage = S::NAME, error = %e, "Unassign failed.");
                }
                tracing::info!(stage = S::NAME, partitions = ?parts, "Partitions revoked.");
            }
            other => {
                tracing::error!(stage = S::NAME, error = ?other, "Rebalance error.");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Builds and runs one stage until `shutdown` (or a fatal error).
#[allow(clippy::too_many_arguments)]
pub fn run<S: Stage>(
    stage: S,
    settings: StageSettings,
    kafka: &KafkaConfig,
    out: Outputs,
    store: CheckpointStore,
    metrics: DetectorMetrics,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<()> {
    let shared = Arc::new(Mutex::new(Shared {
        stage,
        settings: settings.clone(),
        slots: BTreeMap::new(),
        out,
        store,
        fatal: None,
        metrics,
        ready,
    }));
    let ctx = StageContext { shared: shared.clone() };
    let mut cc = kafka.consumer_config(&settings.group);
    if let Some(id) = &settings.instance_id {
        cc.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<StageContext<S>> = cc.create_with_context(ctx)?;
    consumer.subscribe(&[&settings.input_topic])?;
    // Never the consumer's own connection for these queries: see `watermark_client`.
    let watermarks = kafka.watermark_client()?;
    tracing::info!(stage = S::NAME, topic = %settings.input_topic, group = %settings.group, "Stage started.");

    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut last_commit = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut last_lag = Instant::now();
    let mut last_idle_check = Instant::now();
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        let msg = consumer.poll(Timeout::After(Duration::from_millis(100)));
        let mut sh = lock();
        if let Some(e) = sh.fatal.take() {
            break Err(e);
        }
        match msg {
            Some(Ok(m)) => {
                if let Err(e) = sh.handle(&m) {
                    break Err(e);
                }
            }
            Some(Err(e)) => tracing::warn!(stage = S::NAME, error = %e, "Consumer error."),
            None => {}
        }
        if last_idle_check.elapsed() >= Duration::from_millis(100) {
            if let Err(e) = sh.tick_idle(&watermarks) {
                break Err(e);
            }
            last_idle_check = Instant::now();
        }
        if last_commit.elapsed() >= settings.commit_interval || sh.out.pending() >= 100_000 {
            if let Err(e) = sh.flush_and_commit(&consumer, CommitMode::Async, None) {
                break Err(e);
            }
            last_commit = Instant::now();
        }
        if last_checkpoint.elapsed() >= settings.checkpoint_interval {
            let parts: Vec<i32> = sh.slots.keys().copied().collect();
            if let Err(e) = sh.flush_and_commit(&consumer, CommitMode::Async, None).and_then(|()| sh.checkpoint(&parts))
            {
                break Err(e);
            }
            last_checkpoint = Instant::now();
        }
        if last_lag.elapsed() >= Duration::from_secs(5) {
            sh.update_lag(&watermarks);
            last_lag = Instant::now();
        }
    };
    // Graceful: flush what we hold, checkpoint, commit. On a fatal error, do not checkpoint
    // state that may be inconsistent with the broker; a restart resumes from the last one.
    if result.is_ok() {
        let mut sh = lock();
        let parts: Vec<i32> = sh.slots.keys().copied().collect();
        // Named for the shutdown watchdog, which reports it if the broker is gone meanwhile.
        let held = format!("detector {} stage", S::NAME);
        vigil_common::shutdown::holding(
            &held,
            format!(
                "{} outputs awaiting the broker's acknowledgement, then the checkpoint and offset commit of \
                 partitions {parts:?} of {}",
                sh.out.pending(),
                settings.input_topic
            ),
        );
        sh.flush_and_commit(&consumer, CommitMode::Sync, None)?;
        sh.checkpoint(&parts)?;
        vigil_common::shutdown::released(&held);
        tracing::info!(stage = S::NAME, "Stage stopped after flushing and checkpointing.");
    }
    result
}

/// The `vigil.reply-to` header's value, when the record has one that is UTF-8 and not empty.
fn reply_to<'a>(m: &'a BorrowedMessage<'_>) -> Option<&'a str> {
    let headers = m.headers()?;
    let h = headers.iter().find(|h| h.key == super::outputs::REPLY_TO_HEADER)?;
    std::str::from_utf8(h.value?).ok().filter(|s| !s.is_empty())
}
