//! Registry subjects: under which subject each schema is registered, and with which
//! compatibility mode.
//!
//! Subjects follow Confluent's default, **TopicNameStrategy** (`<topic>-value`), which Kafka
//! Connect, ksqlDB and Confluent's serializers expect when nothing else is configured, for
//! every topic that carries one record type. A TopicNameStrategy subject holds the versions of
//! one evolving schema, so a topic that carries several record types (`tx-minute`:
//! `MinuteAggregate`, `LateEvents` and `MerchantMinute`, which are not versions of each other
//! and would be refused as incompatible) uses **TopicRecordNameStrategy** instead
//! (`<topic>-<record full name>`, e.g. `tx-minute-io.vigil.v1.MinuteAggregate`); a consumer
//! of that topic configured with `value.subject.name.strategy=TopicRecordNameStrategy` finds
//! them. Every subject is set to [`COMPATIBILITY`] before the schema is registered.

use std::collections::BTreeMap;

use crate::events::{
    Anomaly, LateEvents, MerchantMinute, MinuteAggregate, MinutePartial, Transaction, TransactionVerdict,
};
use crate::framing::WireEvent;
use crate::topics;

/// The compatibility mode set on every subject Vigil registers: a consumer on the new schema
/// reads data written with the previous one (fields are added with defaults, never removed
/// without one). Confluent's and Redpanda's registry default, set explicitly per subject so a
/// registry with another global default still checks Vigil's schemas this way.
pub const COMPATIBILITY: &str = "BACKWARD";

/// Which record types go to which topic, for the subjects they are registered under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicBindings {
    /// (topic, record full name), in the order bound, without duplicates.
    bindings: Vec<(String, &'static str)>,
}

impl TopicBindings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record type on its default topic ([`crate::topics`]), as the compose stack
    /// configures them.
    pub fn defaults() -> Self {
        Self::new()
            .bind::<Transaction>(topics::TRANSACTIONS)
            .bind::<MinutePartial>(topics::PARTIALS)
            .bind::<MinuteAggregate>(topics::MINUTES)
            .bind::<LateEvents>(topics::MINUTES)
            .bind::<MerchantMinute>(topics::MINUTES)
            .bind::<Anomaly>(topics::ANOMALIES)
            .bind::<TransactionVerdict>(topics::VERDICTS)
    }

    /// Says that `T` is written to `topic`.
    pub fn bind<T: WireEvent>(mut self, topic: &str) -> Self {
        if !self.bindings.iter().any(|(t, r)| t == topic && *r == T::NAME) {
            self.bindings.push((topic.to_owned(), T::NAME));
        }
        self
    }

    /// (subject, record full name) of every binding: `<topic>-value` where the topic carries
    /// one record type, `<topic>-<record full name>` where it carries several.
    pub fn subjects(&self) -> Vec<(String, &'static str)> {
        let mut per_topic: BTreeMap<&str, usize> = BTreeMap::new();
        for (topic, _) in &self.bindings {
            *per_topic.entry(topic.as_str()).or_default() += 1;
        }
        self.bindings
            .iter()
            .map(|(topic, record)| {
                let subject = if per_topic[topic.as_str()] == 1 {
                    topic_name_subject(topic)
                } else {
                    topic_record_name_subject(topic, record)
                };
                (subject, *record)
            })
            .collect()
    }
}

/// Confluent's TopicNameStrategy for a record value.
pub fn topic_name_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Confluent's TopicRecordNameStrategy.
pub fn topic_record_name_subject(topic: &str, record_full_name: &str) -> String {
    format!("{topic}-{record_full_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_type_topics_use_the_topic_name_and_tx_minute_the_topic_and_record_name() {
        let s: BTreeMap<String, &str> = TopicBindings::defaults().subjects().into_iter().collect();
        let expected: BTreeMap<String, &str> = [
            ("transactions-value", "io.vigil.v1.Transaction"),
            ("tx-partials-value", "io.vigil.v1.MinutePartial"),
            ("tx-minute-io.vigil.v1.MinuteAggregate", "io.vigil.v1.MinuteAggregate"),
            ("tx-minute-io.vigil.v1.LateEvents", "io.vigil.v1.LateEvents"),
            ("tx-minute-io.vigil.v1.MerchantMinute", "io.vigil.v1.MerchantMinute"),
            ("anomalies-value", "io.vigil.v1.Anomaly"),
            ("transaction-verdicts-value", "io.vigil.v1.TransactionVerdict"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b))
        .collect();
        assert_eq!(s, expected);
    }

    #[test]
    fn configured_topic_names_name_the_subjects_and_a_binding_counts_once() {
        let b =
            TopicBindings::new().bind::<Transaction>("tx-in").bind::<Transaction>("tx-in").bind::<Anomaly>("alerts");
        assert_eq!(
            b.subjects(),
            vec![
                ("tx-in-value".to_owned(), "io.vigil.v1.Transaction"),
                ("alerts-value".to_owned(), "io.vigil.v1.Anomaly")
            ]
        );
        // The same record on two topics: a subject per topic.
        let b = TopicBindings::new().bind::<Anomaly>("a").bind::<Anomaly>("b");
        assert_eq!(b.subjects().len(), 2);
    }
}
