//! What one minute holds: counts by status, auth code and category, amounts per category.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_schemas::{CategoryMinute, MinuteAggregate, MinutePartial, PartialKind, Transaction, TransactionStatus};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmountAgg {
    pub count: i64,
    pub sum: i64,
    pub min: i64,
    pub max: i64,
}

impl AmountAgg {
    fn add(&mut self, amount: i64) {
        if self.count == 0 {
            self.min = amount;
            self.max = amount;
        } else {
            self.min = self.min.min(amount);
            self.max = self.max.max(amount);
        }
        self.count += 1;
        self.sum = self.sum.saturating_add(amount);
    }

    fn merge(&mut self, o: &AmountAgg) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        self.count += o.count;
        self.sum = self.sum.saturating_add(o.sum);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// Counts of one minute. Merging is commutative and associative, so partials from any
/// number of partitions, in any order, give the same total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    pub approved: i64,
    pub denied: i64,
    pub failed: i64,
    pub reversed: i64,
    pub auth_codes: BTreeMap<String, i64>,
    /// (category, currency) -> amounts.
    pub categories: BTreeMap<(String, String), AmountAgg>,
}

impl MinuteCounts {
    pub fn total(&self) -> i64 {
        self.approved + self.denied + self.failed + self.reversed
    }

    pub fn count(&self, s: TransactionStatus) -> i64 {
        match s {
            TransactionStatus::Approved => self.approved,
            TransactionStatus::Denied => self.denied,
            TransactionStatus::Failed => self.failed,
            TransactionStatus::Reversed => self.reversed,
        }
    }

    pub fn add(&mut self, tx: &Transaction) {
        match tx.status {
            TransactionStatus::Approved => self.approved += 1,
            TransactionStatus::Denied => self.denied += 1,
            TransactionStatus::Failed => self.failed += 1,
            TransactionStatus::Reversed => self.reversed += 1,
        }
        // Look up before inserting: the key is allocated only the first time in a minute.
        match self.auth_codes.get_mut(tx.auth_code.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.auth_codes.insert(tx.auth_code.clone(), 1);
            }
        }
        let key = (tx.category.clone(), tx.currency.clone());
        self.categories.entry(key).or_default().add(tx.amount_minor);
    }

    pub fn merge(&mut self, o: &MinuteCounts) {
        self.approved += o.approved;
        self.denied += o.denied;
        self.failed += o.failed;
        self.reversed += o.reversed;
        for (k, v) in &o.auth_codes {
            *self.auth_codes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.categories {
            self.categories.entry(k.clone()).or_default().merge(v);
        }
    }

    fn category_rows(&self) -> Vec<CategoryMinute> {
        self.categories
            .iter()
            .map(|((category, currency), a)| CategoryMinute {
                category: category.clone(),
                currency: currency.clone(),
                count: a.count,
                amount_sum: a.sum,
                amount_min: a.min,
                amount_max: a.max,
            })
            .collect()
    }

    pub fn from_partial(p: &MinutePartial) -> Self {
        MinuteCounts {
            approved: p.approved,
            denied: p.denied,
            failed: p.failed,
            reversed: p.reversed,
            auth_codes: p.auth_codes.clone(),
            categories: p
                .categories
                .iter()
                .map(|c| {
                    (
                        (c.category.clone(), c.currency.clone()),
                        AmountAgg { count: c.count, sum: c.amount_sum, min: c.amount_min, max: c.amount_max },
                    )
                })
                .collect(),
        }
    }

    pub fn to_partial(
        &self,
        source_partition: i32,
        partition_count: i32,
        minute: i64,
        watermark: i64,
    ) -> MinutePartial {
        MinutePartial {
            source_partition,
            partition_count,
            kind: PartialKind::Window,
            watermark,
            minute_start: Some(minute),
            approved: self.approved,
            denied: self.denied,
            failed: self.failed,
            reversed: self.reversed,
            auth_codes: self.auth_codes.clone(),
            categories: self.category_rows(),
        }
    }

    pub fn to_aggregate(&self, minute: i64, source_partitions: i32) -> MinuteAggregate {
        MinuteAggregate {
            minute_start: minute,
            total: self.total(),
            approved: self.approved,
            denied: self.denied,
            failed: self.failed,
            reversed: self.reversed,
            auth_codes: self.auth_codes.clone(),
            categories: self.category_rows(),
            source_partitions,
            expected_total: None,
            expected_low: None,
            expected_high: None,
        }
    }
}

/// A progress or idle marker carrying no counts.
pub fn marker(kind: PartialKind, source_partition: i32, partition_count: i32, watermark: i64) -> MinutePartial {
    MinutePartial {
        source_partition,
        partition_count,
        kind,
        watermark,
        minute_start: None,
        approved: 0,
        denied: 0,
        failed: 0,
        reversed: 0,
        auth_codes: BTreeMap::new(),
        categories: Vec::new(),
    }
}
