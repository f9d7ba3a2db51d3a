//! The request-reply path: a transaction whose record carries `vigil.reply-to` gets one verdict
//! on the verdicts topic, naming exactly the anomalies the detector wrote for it; the others get
//! none.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;
use vigil_schemas::{Anomaly, Codec, Transaction, TransactionVerdict, VerdictDecision};

/// 2025-12-14T12:00:00Z.
const T0: i64 = 1_765_713_600_000;
const MINUTES: i64 = 40;

/// Like `support::produce`, but every transaction for which `asks` is true carries the header.
async fn produce_asking(topic: &str, txs: &[Transaction], asks: impl Fn(usize, &Transaction) -> bool) {
    let producer: FutureProducer = vigil_testkit::kafka().producer_config(Duration::from_secs(30)).create().unwrap();
    let codec = Codec::single_object();
    let mut pending = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        let payload = codec.encode(tx).unwrap();
        let partition = CATEGORIES.iter().position(|c| *c == tx.category).unwrap_or(0) as i32 % 6;
        let mut record =
            FutureRecord::to(topic).key(&tx.category).partition(partition).payload(&payload).timestamp(tx.occurred_at);
        if asks(i, tx) {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "vigil.reply-to", value: Some("p-1") }));
        }
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for r in futures::future::join_all(pending).await {
        r.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_transactions_that_ask_get_a_verdict_and_it_names_exactly_their_stored_anomalies() {
    let topics = Topics::fresh(6).await;
    let txs = stream(11, MINUTES, 60, T0);
    let codec = Codec::single_object();
    // Every third transaction asks, and so does every amount outlier (so some verdicts are
    // anomalous); one asking transaction is sent again and must be answered as a duplicate.
    let outlier = |tx: &Transaction| tx.amount_minor > 20_000;
    let asks = |i: usize, tx: &Transaction| i % 3 == 0 || outlier(tx);
    let mut asking: BTreeSet<String> =
        txs.iter().enumerate().filter(|(i, tx)| asks(*i, tx)).map(|(_, t)| t.transaction_id.clone()).collect();
    let mut sent = txs.clone();
    asking.insert(txs[txs.len() - 5].transaction_id.clone());
    // The same record again, right behind the original (within the duplicate set's horizon).
    let repeated = txs[txs.len() - 5].clone();
    sent.push(repeated.clone());
    let last = sent.len() - 1;
    produce_asking(&topics.transactions, &sent, |i, tx| i == last || i == txs.len() - 5 || asks(i, tx)).await;

    let d = start_in_process(&topics, &vigil_testkit::unique("det"), "5s").await;
    let _ = outputs(&topics, MINUTES as usize - 1);
    let verdict_records = vigil_testkit::read_until_stable(
        &topics.verdicts,
        asking.len() + 1,
        Duration::from_secs(3),
        Duration::from_secs(60),
    );
    let anomaly_records =
        vigil_testkit::read_until_stable(&topics.anomalies, 0, Duration::from_secs(3), Duration::from_secs(30));
    d.stop().await;

    let mut stored: BTreeMap<String, Vec<Anomaly>> = BTreeMap::new();
    for r in &anomaly_records {
        let a: Anomaly = codec.decode(&r.payload).unwrap();
        if let Some(id) = a.transaction_id.clone() {
            stored.entry(id).or_default().push(a);
        }
    }
    assert!(!stored.is_empty(), "the stream's amount outliers raise anomalies naming their transactions");

    let mut first: BTreeMap<String, TransactionVerdict> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for r in &verdict_records {
        let v: TransactionVerdict = codec.decode(&r.payload).unwrap();
        assert_eq!(r.key.as_deref(), Some(v.transaction_id.as_bytes()), "keyed by transaction id");
        assert_eq!(v.reply_to, "p-1");
        if v.decision == VerdictDecision::Duplicate {
            duplicates.push(v);
        } else {
            if let Some(earlier) = first.insert(v.transaction_id.clone(), v.clone()) {
                assert_eq!(earlier, v, "a verdict delivered twice is the same verdict");
            }
        }
    }
    let answered: BTreeSet<String> = first.keys().cloned().collect();
    assert_eq!(answered, asking, "exactly the transactions that asked are answered");
    assert_eq!(duplicates.len(), 1, "the repeated record is answered as a duplicate");
    assert_eq!(duplicates[0].transaction_id, repeated.transaction_id);
    assert!(!duplicates[0].anomaly);

    let mut anomalous = 0;
    for (id, v) in &first {
        assert_eq!(v.decision, VerdictDecision::Counted, "{id}");
        let mut expected: Vec<String> =
            stored.get(id).map(|l| l.iter().map(|a| a.id.clone()).collect()).unwrap_or_default();
        expected.sort();
        expected.dedup();
        let mut got = v.anomaly_ids.clone();
        got.sort();
        assert_eq!(got, expected, "the verdict of {id} names exactly the anomalies stored for it");
        assert_eq!(v.anomaly, !expected.is_empty());
        let severity = stored.get(id).and_then(|l| l.iter().map(|a| a.severity).max()).map(|s| s.as_str().to_owned());
        assert_eq!(v.severity, severity, "{id}");
        anomalous += usize::from(v.anomaly);
    }
    let stored_asking = stored.keys().filter(|id| asking.contains(*id)).count();
    assert_eq!(anomalous, stored_asking, "every anomalous asking transaction says so");
    assert!(anomalous >= 1, "some verdicts are anomalous");
}
