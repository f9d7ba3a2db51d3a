//! Running traffic through the rules: the simulator's generator feeds the detector core
//! in-process (both stages, as `detector replay` does), once per detector rule, and the SQL
//! rule reads the final minute aggregates.

use std::collections::BTreeMap;

use serde::Serialize;
use vigil_detector::core::{CoreConfig, Output, Pipeline, RateConfig, RateMethod};
use vigil_schemas::MinuteAggregate;
use vigil_simulator::{Generator, GroundTruth, Scenario};

use crate::score::Emission;
use crate::sql_rule;

/// Input partitions of the `transactions` topic in production (deploy/ and scripts/stack.sh).
/// The detector's outputs do not depend on it; it is set as in production all the same.
pub const PARTITIONS: i32 = 6;

/// A rule scored side by side with the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The detector's default: evidence accumulated over minutes (`RateMethod::Sequential`).
    Sequential,
    /// The detector's rule before it, each minute on its own (`RateMethod::MinuteTest`).
    Minute,
    /// The older design's SQL view `v_tx_anomaly`, see [`crate::sql_rule`].
    Sql,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Sequential, Rule::Minute, Rule::Sql];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Sequential => "sequential",
            Rule::Minute => "minute",
            Rule::Sql => "sql",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Rule::Sequential => "sequential (new default)",
            Rule::Minute => "per-minute (before)",
            Rule::Sql => "SQL view (older design)",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the rule set has a volume rule (issue 17): the detector's defaults do; the
    /// per-minute rule and the SQL view came before it and are not run on volume incidents.
    pub fn has_volume_rule(self) -> bool {
        self == Rule::Sequential
    }
}

/// The detector's configuration for a rule set: its defaults (the sequential rate rule and the
/// volume rules), or for the per-minute rule the detector's own `RateConfig::minute_test()`
/// (that rule exactly as its defaults were: a 30-minute baseline, global and auth-code series
/// only) without the volume rules, which came after it.
pub fn core_config(method: RateMethod) -> CoreConfig {
    match method {
        RateMethod::MinuteTest => CoreConfig { rate: RateConfig::minute_test(), ..Default::default() },
        _ => CoreConfig { rate: RateConfig { method, ..Default::default() }, ..Default::default() },
    }
}

/// What one run produced: its ground truth and every rule's rate and volume anomaly states.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub truth: GroundTruth,
    pub emissions: BTreeMap<Rule, Vec<Emission>>,
    pub transactions: u64,
}

/// Generates one run of `scenario` and judges it with each of `rules`.
pub fn run(scenario: Scenario, seed: u64, start_ms: i64, rules: &[Rule]) -> RunOutput {
    let start = chrono::DateTime::from_timestamp_millis(start_ms).unwrap_or_default();
    let mut generator = Generator::new(scenario, seed, start);
    let mut pipelines: Vec<(Rule, Pipeline, Vec<Output>)> = Vec::new();
    for rule in rules {
        let method = match rule {
            Rule::Sequential => RateMethod::Sequential,
            Rule::Minute => RateMethod::MinuteTest,
            Rule::Sql => continue,
        };
        pipelines.push((*rule, Pipeline::new(core_config(method), PARTITIONS), Vec::new()));
    }
    // The SQL rule reads the final minutes, which every method produces alike; without a
    // detector rule to run, the per-minute one supplies them.
    let sql = rules.contains(&Rule::Sql);
    if sql && pipelines.is_empty() {
        pipelines.push((Rule::Minute, Pipeline::new(core_config(RateMethod::MinuteTest), PARTITIONS), Vec::new()));
    }
    let mut transactions = 0;
    for tx in generator.by_ref() {
        let tx = tx.to_transaction(tx.occurred_at);
        transactions += 1;
        for (_, p, outs) in &mut pipelines {
            outs.extend(p.push(&tx).1.into_iter().filter(keep));
        }
    }
    for (_, p, outs) in &mut pipelines {
        outs.extend(p.finish().into_iter().filter(keep));
    }
    let mut emissions = BTreeMap::new();
    if sql {
        let aggregates: Vec<MinuteAggregate> = pipelines[0]
            .2
            .iter()
            .filter_map(|o| match o {
                Output::Aggregate(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        emissions.insert(Rule::Sql, sql_rule::emissions(&aggregates));
    }
    for (rule, _, outs) in pipelines {
        if rules.contains(&rule) {
            let e = outs
                .iter()
                .filter_map(|o| match o {
                    Output::Anomaly(a) => Emission::from_anomaly(a),
                    _ => None,
                })
                .collect();
            emissions.insert(rule, e);
        }
    }
    RunOutput { truth: generator.truth().clone(), emissions, transactions }
}

/// Anomalies and final minutes; late bookings cannot happen on in-order traffic.
fn keep(o: &Output) -> bool {
    matches!(o, Output::Aggregate(_) | Output::Anomaly(_))
}

/// The final minute aggregates of one run of `scenario` (for the SQL rule's database test).
pub fn aggregates(scenario: Scenario, seed: u64, start_ms: i64) -> Vec<MinuteAggregate> {
    let start = chrono::DateTime::from_timestamp_millis(start_ms).unwrap_or_default();
    let mut p = Pipeline::new(core_config(RateMethod::MinuteTest), PARTITIONS);
    let mut out = Vec::new();
    for tx in Generator::new(scenario, seed, start) {
        out.extend(p.push(&tx.to_transaction(tx.occurred_at)).1);
    }
    out.extend(p.finish());
    out.into_iter()
        .filter_map(|o| match o {
            Output::Aggregate(a) => Some(a),
            _ => None,
        })
        .collect()
}
