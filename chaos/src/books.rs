//! The books: what "every accepted event counted exactly once" and "no anomaly twice" mean,
//! checked against PostgreSQL and the topics themselves.
//!
//! **Events.** An accepted event ends up either in a final minute (`v_tx_minute.total`) or, if
//! it arrived after its minute was final, in `transactions_late` (cumulative per minute and
//! source; the sink keeps the greatest). So `counted = Σ total + Σ late_count`. The producer's
//! log is the transactions topic: `published` is the number of distinct transaction ids on it.
//! Exactly once means `counted == published` (what the broker has is counted once: nothing
//! lost, no duplicate counted twice), and `accepted ≤ published ≤ accepted + unavailable`
//! (every 2xx is on the broker; an item the client gave up on may or may not be). With no item
//! given up on, that is `accepted == published == counted`.
//!
//! **Anomalies.** Ids are deterministic, the sink upserts by id, so "no anomaly id twice" must
//! be checked on what was delivered:
//! * the ids in the table are exactly the distinct ids on the anomalies topic, each with the
//!   newest state (highest sequence) the topic holds;
//! * every copy of one (id, sequence) on the topic is identical: a restarted detector re-sends
//!   what it sent before, never a different verdict under the same id (or a new id for the
//!   same incident);
//! * one watched rate never has two incidents open at once: for each (rule, dimension, value),
//!   every incident but the last resolved before the next one began. A detector that forgot an
//!   open incident across a restart would open a second id for it.
//! * the webhook forwarded each eligible anomaly (open, severity ≥ high) once per receiver and severity reached
//!   (one row in `outbound_deliveries`), and the receiver got it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use vigil_common::kafka::KafkaConfig;
use vigil_schemas::{Anomaly, AnomalyState, Codec, Severity, Transaction};
pub use vigil_testkit::metric_sum;

/// What PostgreSQL counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// `Σ v_tx_minute.total`.
    pub in_minutes: i64,
    /// `Σ transactions_late.late_count`.
    pub late: i64,
    /// Rows of `v_tx_minute`.
    pub minutes: i64,
}

impl Counted {
    pub fn total(&self) -> i64 {
        self.in_minutes + self.late
    }
}

pub async fn counted(pool: &PgPool) -> Result<Counted, sqlx::Error> {
    let (in_minutes, minutes): (i64, i64) =
        sqlx::query_as("SELECT coalesce(sum(total), 0)::bigint, count(*) FROM v_tx_minute").fetch_one(pool).await?;
    let (late,): (i64,) =
        sqlx::query_as("SELECT coalesce(sum(late_count), 0)::bigint FROM transactions_late").fetch_one(pool).await?;
    Ok(Counted { in_minutes, late, minutes })
}

/// One record of a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Every record of `topic`, read up to the end each partition had when the read began.
pub fn read_all(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Vec<Record>, String> {
    let consumer: BaseConsumer = kafka
        .consumer_config(&vigil_testkit::unique("chaos-reader"))
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("no metadata for {topic}: {e}"))?;
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("no watermarks for {topic}/{p}: {e}"))?;
        if high > low {
            remaining.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| e.to_string())?;
        }
    }
    let mut out = Vec::new();
    if remaining.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    while !remaining.is_empty() {
        if Instant::now() >= deadline {
            return Err(format!("reading {topic} timed out with partitions {remaining:?} unfinished"));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|hd| {
                                (hd.key.to_owned(), String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let p = m.partition();
                out.push(Record {
                    partition: p,
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
                if remaining.get(&p).is_some_and(|high| m.offset() + 1 >= *high) {
                    remaining.remove(&p);
                }
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
    }
    Ok(out)
}

/// What the transactions topic holds.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub records: usize,
    pub distinct_ids: usize,
    pub undecodable: usize,
}

pub fn published(kafka: &KafkaConfig, topic: &str) -> Result<Published, String> {
    let codec = Codec::single_object();
    let records = read_all(kafka, topic, Duration::from_secs(120))?;
    let mut ids = HashSet::with_capacity(records.len());
    let mut undecodable = 0;
    for r in &records {
        match codec.decode::<Transaction>(&r.payload) {
            Ok(t) => {
                ids.insert(t.transaction_id);
            }
            Err(_) => undecodable += 1,
        }
    }
    Ok(Published { records: records.len(), distinct_ids: ids.len(), undecodable })
}

/// The event books at one moment.
#[derive(Debug, Clone, Default)]
pub struct Books {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub unavailable: u64,
    pub published: usize,
    pub counted: Counted,
}

impl Books {
    /// Every way the books can be wrong, one line each (empty when they balance).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.sent != self.accepted + self.refused + self.unavailable {
            p.push(format!(
                "sent {} != accepted {} + refused {} + unavailable {}",
                self.sent, self.accepted, self.refused, self.unavailable
            ));
        }
        let published = self.published as u64;
        if published < self.accepted {
            p.push(format!("{} accepted events are not on the broker", self.accepted - published));
        }
        if published > self.accepted + self.unavailable {
            p.push(format!(
                "the broker has {published} distinct events but only {} were accepted and {} left unresolved",
                self.accepted, self.unavailable
            ));
        }
        let counted = self.counted.total();
        if counted != self.published as i64 {
            p.push(format!(
                "counted {counted} ({} in minutes + {} late) != {} distinct events on the broker ({:+})",
                self.counted.in_minutes,
                self.counted.late,
                self.published,
                counted - self.published as i64
            ));
        }
        p
    }
}

/// The anomaly checks' findings.
#[derive(Debug, Clone, Default)]
pub struct AnomalyAudit {
    pub topic_records: usize,
    pub topic_ids: usize,
    pub table_ids: usize,
    pub rate_ids: usize,
    pub amount_ids: usize,
    /// Records repeating an (id, sequence) seen before: re-sends after restarts or rebalances.
    pub resent: usize,
    /// Eligible for the outbound webhook (open, firing or updated, severity ≥ high).
    pub eligible: BTreeSet<String>,
    pub problems: Vec<String>,
}

fn differences(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let first: Vec<&String> = a.difference(b).take(5).collect();
    format!("{} (e.g. {first:?})", a.difference(b).count())
}

pub async fn audit_anomalies(kafka: &KafkaConfig, topic: &str, pool: &PgPool) -> Result<AnomalyAudit, String> {
    let codec = Codec::single_object();
    let k = kafka.clone();
    let t = topic.to_owned();
    let records = tokio::task::spawn_blocking(move || read_all(&k, &t, Duration::from_secs(60)))
        .await
        .map_err(|e| e.to_string())??;
    let mut audit = AnomalyAudit { topic_records: records.len(), ..Default::default() };
    let mut by_key: BTreeMap<(String, i64), Anomaly> = BTreeMap::new();
    let mut newest: BTreeMap<String, Anomaly> = BTreeMap::new();
    for r in &records {
        let Ok(a) = codec.decode::<Anomaly>(&r.payload) else { continue };
        // The webhook pushes an anomaly at each severity ≥ its minimum it first reaches, firing or updated.
        if a.state != AnomalyState::Resolved && a.severity >= Severity::High {
            audit.eligible.insert(a.id.clone());
        }
        match by_key.get(&(a.id.clone(), a.sequence)) {
            Some(first) => {
                audit.resent += 1;
                if *first != a {
                    audit.problems.push(format!(
                        "anomaly {} sequence {} was sent twice with different content:\n  {first:?}\n  {a:?}",
                        a.id, a.sequence
                    ));
                }
            }
            None => {
                by_key.insert((a.id.clone(), a.sequence), a.clone());
            }
        }
        if newest.get(&a.id).is_none_or(|n| a.sequence > n.sequence) {
            newest.insert(a.id.clone(), a);
        }
    }
    audit.topic_ids = newest.len();
    audit.amount_ids = newest.values().filter(|a| a.transaction_id.is_some()).count();
    audit.rate_ids = audit.topic_ids - audit.amount_ids;

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, sequence FROM anomalies").fetch_all(pool).await.map_err(|e| e.to_string())?;
    audit.table_ids = rows.len();
    let table: BTreeMap<String, i64> = rows.into_iter().collect();
    let (in_table, on_topic): (BTreeSet<String>, BTreeSet<String>) =
        (table.keys().cloned().collect(), newest.keys().cloned().collect());
    if in_table != on_topic {
        audit.problems.push(format!(
            "anomaly ids differ: {} on the topic but not in the table, {} in the table but not on the topic",
            differences(&on_topic, &in_table),
            differences(&in_table, &on_topic)
        ));
    }
    for (id, a) in &newest {
        if let Some(seq) = table.get(id) {
            if *seq != a.sequence {
                audit.problems.push(format!("anomaly {id}: the table has sequence {seq}, the topic {}", a.sequence));
            }
        }
    }

    // One open incident per watched rate at a time.
    let mut series: BTreeMap<(String, String, String), Vec<&Anomaly>> = BTreeMap::new();
    for a in newest.values().filter(|a| a.transaction_id.is_none()) {
        let key = (a.rule.as_str().to_owned(), a.dimension.as_str().to_owned(), a.dimension_value.clone());
        series.entry(key).or_default().push(a);
    }
    for (key, mut list) in series {
        list.sort_by_key(|a| a.first_seen);
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let closed = a.state == AnomalyState::Resolved && a.resolved_at.is_some_and(|r| r <= b.first_seen);
            if !closed {
                audit.problems.push(format!(
                    "{key:?}: incident {} ({:?}) was still open when {} began: the same incident under two ids",
                    a.id, a.state, b.id
                ));
            }
        }
    }
    Ok(audit)
}

/// Outbound deliveries: one row per eligible anomaly (one receiver), and the receiver got each.
pub async fn audit_outbound(
    pool: &PgPool,
    eligible: &BTreeSet<String>,
    received: &BTreeMap<String, u32>,
) -> Result<Vec<String>, String> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT anomaly_id, count(*), count(*) FILTER (WHERE status = 'delivered') FROM outbound_deliveries GROUP BY anomaly_id, severity",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let queued: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    if &queued != eligible {
        problems.push(format!(
            "outbound rows differ from the eligible anomalies: {} eligible but not queued, {} queued but not eligible",
            differences(eligible, &queued),
            differences(&queued, eligible)
        ));
    }
    for (id, n, delivered) in &rows {
        if *n != 1 {
            problems.push(format!("anomaly {id} has {n} outbound rows for one receiver and severity"));
        }
        if *delivered != *n {
            problems.push(format!("anomaly {id} is not delivered yet"));
        }
    }
    for id in eligible {
        if !received.contains_key(id) {
            problems.push(format!("the receiver never got anomaly {id}"));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_balance_only_when_every_accepted_event_is_counted_once() {
        let mut b = Books {
            sent: 100,
            accepted: 98,
            refused: 2,
            unavailable: 0,
            published: 98,
            counted: Counted { in_minutes: 90, late: 8, minutes: 3 },
        };
        assert!(b.problems().is_empty(), "{:?}", b.problems());
        b.counted.late = 9;
        assert!(b.problems()[0].contains("+1"), "{:?}", b.problems());
        b.counted.late = 8;
        b.published = 97;
        assert!(b.problems().iter().any(|p| p.contains("1 accepted events are not on the broker")));
        // An item given up on may or may not have reached the broker.
        let b = Books {
            sent: 10,
            accepted: 8,
            refused: 0,
            unavailable: 2,
            published: 9,
            counted: Counted { in_minutes: 9, late: 0, minutes: 1 },
        };
        assert!(b.problems().is_empty(), "{:?}", b.problems());
    }
}
