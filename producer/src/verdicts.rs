//! Verdict on create: request and reply over the broker.
//!
//! A request that asks for its verdict (`Prefer: wait=N` on `POST /ingest/transaction`; always
//! on the older clients' `POST /transactions`) is published with the record header
//! `vigil.reply-to: <this instance's id>`. The detector's stage 1 answers such records, and only
//! those, on the verdicts topic (`TransactionVerdict`, keyed by transaction id): what it did with
//! the transaction and the ids of the anomalies naming it, exactly as it sends them to the sink.
//!
//! Every producer instance reads every partition of the verdicts topic, from the end it found at
//! start-up, with no consumer group (nothing to rebalance, nothing to commit), and keeps the
//! verdicts addressed to it: each goes to the requests waiting for it, and the last
//! `VERDICT_CACHE` are kept for polls after a 202 (`GET /transactions/{id}`). A verdict that
//! arrives for nobody (the request gave up and no poll came, or another instance restarted) is
//! dropped; the sink stores every verdict, so a lookup on any instance still finds it.
//!
//! Ids are client-supplied: the maps use std's randomly seeded hasher, so crafted ids cannot make
//! them slow, and both are bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::{Codec, TransactionVerdict};

/// The record header by which the producer asks for a verdict (the detector's
/// `REPLY_TO_HEADER`).
pub const REPLY_TO_HEADER: &str = "vigil.reply-to";

/// What is known here about one transaction's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Known(Arc<TransactionVerdict>),
    /// Asked for and answered 202 here; the detector has not answered yet.
    Pending,
    Unknown,
}

/// The waiting requests and recent verdicts of this instance.
pub struct Verdicts {
    instance: String,
    capacity: usize,
    inner: Mutex<Inner>,
    positioned: AtomicBool,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<String, Vec<oneshot::Sender<Arc<TransactionVerdict>>>>,
    /// Ids answered 202 and not yet decided, oldest first.
    pending: HashMap<String, ()>,
    pending_order: VecDeque<String>,
    recent: HashMap<String, Arc<TransactionVerdict>>,
    recent_order: VecDeque<String>,
}

impl Verdicts {
    /// `instance` must be unique among the producers sharing the verdicts topic.
    pub fn new(instance: impl Into<String>, capacity: usize) -> Arc<Self> {
        Arc::new(Verdicts {
            instance: instance.into(),
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            positioned: AtomicBool::new(false),
        })
    }

    /// The value of the `vigil.reply-to` header this instance sends.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// True once the consumer is positioned: a verdict sent from now on reaches this instance.
    pub fn is_ready(&self) -> bool {
        self.positioned.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a request for `id`'s verdict; call before publishing, so the answer cannot
    /// arrive before anyone waits for it.
    pub fn subscribe(&self, id: &str) -> oneshot::Receiver<Arc<TransactionVerdict>> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.waiting.entry(id.to_owned()).or_default().push(tx);
        rx
    }

    /// Waits up to `wait` for `rx`; on a timeout the id is remembered as pending, so a poll
    /// here is answered 202 until the verdict arrives, and then with it.
    pub async fn wait(
        &self,
        id: &str,
        rx: oneshot::Receiver<Arc<TransactionVerdict>>,
        wait: Duration,
    ) -> Option<Arc<TransactionVerdict>> {
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(v)) => Some(v),
            _ => {
                let mut inner = self.lock();
                if let Some(v) = inner.recent.get(id) {
                    return Some(v.clone());
                }
                if let Some(list) = inner.waiting.get_mut(id) {
                    list.retain(|s| !s.is_closed());
                    if list.is_empty() {
                        inner.waiting.remove(id);
                    }
                }
                if inner.pending.insert(id.to_owned(), ()).is_none() {
                    inner.pending_order.push_back(id.to_owned());
                    while inner.pending_order.len() > self.capacity {
                        if let Some(old) = inner.pending_order.pop_front() {
                            inner.pending.remove(&old);
                        }
                    }
                }
                None
            }
        }
    }

    /// Forgets a request that will not be published (the broker refused it).
    pub fn unsubscribe(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(list) = inner.waiting.get_mut(id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                inner.waiting.remove(id);
            }
        }
    }

    pub fn lookup(&self, id: &str) -> Lookup {
        let inner = self.lock();
        if let Some(v) = inner.recent.get(id) {
            Lookup::Known(v.clone())
        } else if inner.pending.contains_key(id) {
            Lookup::Pending
        } else {
            Lookup::Unknown
        }
    }

    /// Hands a verdict to its waiters and keeps it for polls. A duplicate's verdict does not
    /// replace the first one's.
    pub fn deliver(&self, v: TransactionVerdict) {
        if v.reply_to != self.instance {
            return;
        }
        let v = Arc::new(v);
        let mut inner = self.lock();
        let id = v.transaction_id.clone();
        let first = inner.recent.get(&id).cloned().filter(|k| k.decision != vigil_schemas::VerdictDecision::Duplicate);
        let answer = first.unwrap_or_else(|| v.clone());
        if let Some(list) = inner.waiting.remove(&id) {
            for s in list {
                let _ = s.send(answer.clone());
            }
        }
        inner.pending.remove(&id);
        if inner.recent.insert(id.clone(), answer).is_none() {
            inner.recent_order.push_back(id);
            while inner.recent_order.len() > self.capacity {
                if let Some(old) = inner.recent_order.pop_front() {
                    inner.recent.remove(&old);
                }
            }
        }
    }

    /// Reads the verdicts topic until `shutdown`: every partition, from its end at start-up.
    pub async fn run(
        self: Arc<Self>,
        kafka: KafkaConfig,
        topic: String,
        codec: Arc<Codec>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let consumer: StreamConsumer = kafka
            .consumer_config(&format!("vigil-producer-verdicts-{}", self.instance))
            .create()
            .context("Failed to create the verdicts consumer")?;
        // Position at the current end of each partition, retrying while the broker is away
        // (blocking metadata and watermark requests: off the runtime's workers).
        let consumer = Arc::new(consumer);
        let mut attempt = 0u32;
        loop {
            let (c, t) = (consumer.clone(), topic.clone());
            let positioned = tokio::task::spawn_blocking(move || position(&c, &t))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the positioning task failed: {e}")));
            match positioned {
                Ok(tpl) => {
                    consumer.assign(&tpl).context("Failed to assign the verdicts topic")?;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), topic, "Verdicts topic not readable yet; retrying.");
                    attempt += 1;
                    let wait = Duration::from_secs(1 << attempt.min(5));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.positioned.store(true, Ordering::Release);
        tracing::info!(topic, instance = %self.instance, "Reading verdicts addressed to this instance.");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = consumer.recv() => match m {
                    Ok(m) => match codec.decode::<TransactionVerdict>(m.payload().unwrap_or_default()) {
                        Ok(v) => self.deliver(v),
                        Err(e) => tracing::warn!(error = %e, offset = m.offset(), "Undecodable verdict skipped."),
                    },
                    Err(e) => tracing::warn!(error = %e, "Verdicts consumer error."),
                }
            }
        }
    }
}

/// Every partition of `topic` at its current high watermark.
fn position(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<TopicPartitionList> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let t = md
        .topics()
        .first()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .with_context(|| format!("Topic {topic} does not exist"))?;
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
    }
    Ok(tpl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_schemas::VerdictDecision;

    fn verdict(id: &str, to: &str, decision: VerdictDecision) -> TransactionVerdict {
        TransactionVerdict {
            transaction_id: id.into(),
            reply_to: to.into(),
            occurred_at: 0,
            decision,
            anomaly: decision == VerdictDecision::Counted,
            severity: None,
            anomaly_ids: vec![],
        }
    }

    #[tokio::test]
    async fn a_waiting_request_gets_its_verdict_and_a_late_one_is_kept_for_the_poll() {
        let v = Verdicts::new("me", 10);
        let rx = v.subscribe("a");
        v.deliver(verdict("a", "other", VerdictDecision::Counted));
        assert_eq!(v.lookup("a"), Lookup::Unknown, "another instance's verdict is not ours");
        v.deliver(verdict("a", "me", VerdictDecision::Counted));
        assert_eq!(v.wait("a", rx, Duration::from_millis(10)).await.unwrap().transaction_id, "a");

        let rx = v.subscribe("b");
        assert!(v.wait("b", rx, Duration::from_millis(10)).await.is_none());
        assert_eq!(v.lookup("b"), Lookup::Pending);
        v.deliver(verdict("b", "me", VerdictDecision::Counted));
        assert!(matches!(v.lookup("b"), Lookup::Known(_)));
        // A duplicate's answer does not replace the first verdict.
        v.deliver(verdict("b", "me", VerdictDecision::Duplicate));
        match v.lookup("b") {
            Lookup::Known(k) => assert_eq!(k.decision, VerdictDecision::Counted),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_maps_stay_bounded() {
        let v = Verdicts::new("me", 3);
        for i in 0..10 {
            v.deliver(verdict(&i.to_string(), "me", VerdictDecision::Counted));
            let rx = v.subscribe(&format!("p{i}"));
            let _ = v.wait(&format!("p{i}"), rx, Duration::ZERO).await;
        }
        let inner = v.lock();
        assert_eq!(inner.recent.len(), 3);
        assert_eq!(inner.pending.len(), 3);
        assert!(inner.waiting.is_empty());
    }
}
