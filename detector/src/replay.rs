//! `detector replay`: the same core over a file, with event time only and no broker.

use std::io::{BufRead, Write};

use anyhow::Context;
use chrono::DateTime;
use serde::Deserialize;
use serde_json::json;
use vigil_schemas::{Transaction, TransactionStatus};

use crate::core::series::{SeriesScorer, DEFAULT_THRESHOLD};
use crate::core::{CoreConfig, Output, Pipeline};

/// A transaction in the producer's JSON form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTransaction {
    transaction_id: Option<String>,
    occurred_at: String,
    status: String,
    auth_code: String,
    amount_minor: i64,
    currency: String,
    category: String,
    merchant_id: String,
}

fn open(path: &str) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(if path == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("Failed to open {path}"))?))
    })
}

/// Rule settings records, one JSON object per line (what `detector-settings` holds).
pub fn settings(path: &str) -> anyhow::Result<crate::core::settings::Settings> {
    let mut records = Vec::new();
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: vigil_schemas::settings::RuleSettings =
            serde_json::from_str(&line).with_context(|| format!("{path} line {}: not a settings record", i + 1))?;
        if let Some((field, why)) = r.problems().into_iter().next() {
            anyhow::bail!("{path} line {}: {field}: {why}", i + 1);
        }
        records.push(r);
    }
    Ok(crate::core::settings::Settings::from_records(&records))
}

/// Replays NDJSON transactions and writes every output as one JSON line.
pub fn transactions(
    path: &str,
    partitions: i32,
    cfg: CoreConfig,
    out: &mut dyn Write,
) -> anyhow::Result<ReplaySummary> {
    let mut pipeline = Pipeline::new(cfg, partitions);
    let mut summary = ReplaySummary::default();
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let j: JsonTransaction =
            serde_json::from_str(&line).with_context(|| format!("line {}: not a transaction", i + 1))?;
        let occurred_at = DateTime::parse_from_rfc3339(&j.occurred_at)
            .with_context(|| format!("line {}: occurred_at is not RFC 3339", i + 1))?
            .timestamp_millis();
        let status = TransactionStatus::parse(&j.status)
            .with_context(|| format!("line {}: unknown status {:?}", i + 1, j.status))?;
        let tx = Transaction {
            // Lines without an id get one derived from their position: replays are deterministic.
            transaction_id: j
                .transaction_id
                .unwrap_or_else(|| uuid::Uuid::from_u64_pair(0x7265_706c_6179, i as u64).to_string()),
            occurred_at,
            status,
            auth_code: j.auth_code,
            amount_minor: j.amount_minor,
            currency: j.currency,
            category: j.category,
            merchant_id: j.merchant_id,
            received_at: occurred_at,
        };
        summary.events += 1;
        let (_, outs) = pipeline.push(&tx);
        write_outputs(&outs, out, &mut summary)?;
    }
    let outs = pipeline.finish();
    write_outputs(&outs, out, &mut summary)?;
    Ok(summary)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub events: u64,
    pub minutes: u64,
    pub anomalies: u64,
    pub late: u64,
    pub merchant_minutes: u64,
}

fn write_outputs(outs: &[Output], w: &mut dyn Write, s: &mut ReplaySummary) -> anyhow::Result<()> {
    for o in outs {
        let v = match o {
            Output::Aggregate(a) => {
                s.minutes += 1;
                json!({ "type": "minute_aggregate", "value": a })
            }
            Output::Late(l) => {
                s.late += 1;
                json!({ "type": "late_events", "value": l })
            }
            Output::Anomaly(a) => {
                s.anomalies += 1;
                json!({ "type": "anomaly", "value": a })
            }
            Output::MerchantMinute(m) => {
                s.merchant_minutes += 1;
                json!({ "type": "merchant_minute", "value": m })
            }
        };
        writeln!(w, "{v}")?;
    }
    Ok(())
}

/// Scores a `timestamp,value` series with the streaming series scorer ([`SeriesScorer`]) and
/// writes `timestamp,value,score,is_anomaly` (`is_anomaly` is 1 when the score is at least
/// [`DEFAULT_THRESHOLD`]). A first line whose value is not a number is a header; the timestamp is
/// echoed, never parsed: rows are scored in file order.
pub fn series(path: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut scorer = SeriesScorer::default();
    writeln!(out, "timestamp,value,score,is_anomaly")?;
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((ts, value)) = line.split_once(',') else {
            anyhow::bail!("line {}: expected timestamp,value", i + 1);
        };
        let value = match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            Ok(_) => anyhow::bail!("line {}: {value:?} is not a finite number", i + 1),
            Err(_) if i == 0 => continue, // a header
            Err(_) => anyhow::bail!("line {}: {value:?} is not a number", i + 1),
        };
        let s = scorer.push(value);
        writeln!(out, "{},{},{:.6},{}", ts.trim(), value, s, u8::from(s >= DEFAULT_THRESHOLD))?;
    }
    Ok(())
}
