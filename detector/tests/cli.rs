//! The `detector` binary's commands that need no broker: `replay`, `--help`, `--check-config`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

fn ndjson_line(i: usize, minute: i64, status: &str) -> String {
    let t =
        chrono::DateTime::from_timestamp_millis(1_765_713_600_000 + minute * 60_000 + (i as i64 % 60) * 900).unwrap();
    format!(
        r#"{{"transaction_id":"00000000-0000-4000-8000-{i:012}","occurred_at":"{}","status":"{status}","auth_code":"{}","amount_minor":{},"currency":"EUR","category":"food","merchant_id":"m-{}"}}"#,
        t.to_rfc3339(),
        if status == "denied" { "05" } else { "00" },
        1000 + (i % 50) * 10,
        i % 5
    )
}

#[test]
fn replay_prints_every_minute_and_the_spike_it_finds_as_ndjson() {
    let mut lines = Vec::new();
    let mut i = 0;
    for minute in 0..40 {
        let denied = if (32..34).contains(&minute) { 60 } else { 8 + minute as usize % 3 };
        for k in 0..200 {
            i += 1;
            lines.push(ndjson_line(i, minute, if k < denied { "denied" } else { "approved" }));
        }
    }
    let mut child = detector()
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let values: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let minutes: Vec<&serde_json::Value> = values.iter().filter(|v| v["type"] == "minute_aggregate").collect();
    assert_eq!(minutes.len(), 40);
    assert!(minutes.iter().all(|m| m["value"]["total"] == 200));
    let firing: Vec<&serde_json::Value> = values
        .iter()
        .filter(|v| v["type"] == "anomaly" && v["value"]["rule"] == "denied_rate" && v["value"]["state"] == "firing")
        .collect();
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["value"]["window_start"], 1_765_713_600_000_i64 + 32 * 60_000);
    // Every merchant (40 a minute) is watched once its volume qualifies; its minutes are printed.
    let merchant: Vec<&serde_json::Value> = values.iter().filter(|v| v["type"] == "merchant_minute").collect();
    assert!(merchant.iter().all(|m| m["value"]["total"] == 40 && m["value"]["category"] == "food"), "{merchant:?}");
    let last = 1_765_713_600_000_i64 + 39 * 60_000;
    assert_eq!(merchant.iter().filter(|m| m["value"]["minute_start"] == last).count(), 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replayed 8000 events") && stderr.contains(&format!("{} merchant minutes", merchant.len())),
        "{stderr}"
    );
}

#[test]
fn replay_series_scores_each_value_between_0_and_1_and_flags_the_outlier() {
    let dir = std::env::temp_dir().join(vigil_testkit::unique("series"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("series.csv");
    // A latency in milliseconds around 0.05 s with a little deterministic jitter, and one spike.
    let mut csv = String::from("timestamp,value\n");
    for i in 0..400 {
        let v = if i == 300 { 0.40 } else { 0.05 + ((i * 7) % 5) as f64 * 0.002 + ((i * 3) % 7) as f64 * 0.001 };
        csv.push_str(&format!("2025-12-14T{:02}:{:02}:00Z,{v}\n", i / 60, i % 60));
    }
    std::fs::write(&path, csv).unwrap();
    let out = detector().args(["replay", "--series"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(text.lines().next(), Some("timestamp,value,score,is_anomaly"));
    assert_eq!(rows.len(), 400);
    for r in &rows {
        let s: f64 = r[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&s), "{r:?}");
        assert_eq!(r[3] == "1", s >= 0.5, "{r:?}");
    }
    let flagged: Vec<&str> = rows.iter().filter(|r| r[3] == "1").map(|r| r[0]).collect();
    assert_eq!(flagged, vec!["2025-12-14T05:00:00Z"]);

    std::fs::write(&path, "timestamp,value\n2025-12-14T00:00:00Z,1\n2025-12-14T00:01:00Z,high\n").unwrap();
    let out = detector().args(["replay", "--series"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn replay_help_describes_the_series_scoring() {
    let out = detector().args(["replay", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--series") && help.contains("timestamp,value,score,is_anomaly"), "{help}");
    assert!(help.contains("learns only from the rows before it"), "{help}");
}

#[test]
fn check_config_names_every_bad_value_and_help_lists_every_variable() {
    let out = detector()
        .arg("--check-config")
        .env("ALLOWED_LATENESS", "soon")
        .env("RATE_Z_THRESHOLD", "-1")
        .env("AMOUNT_MIN_SEVERITY", "urgent")
        .env("METRICS_MAX_CATEGORIES", "lots")
        .env("KAFKA_BROKERS", "nohost")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for var in
        ["ALLOWED_LATENESS", "RATE_Z_THRESHOLD", "AMOUNT_MIN_SEVERITY", "METRICS_MAX_CATEGORIES", "KAFKA_BROKERS"]
    {
        assert!(err.contains(var), "{var} not named in:\n{err}");
    }
    let ok = detector().arg("--check-config").env("KAFKA_BROKERS", "127.0.0.1:1").output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let help = String::from_utf8(detector().arg("--help").output().unwrap().stdout).unwrap();
    for var in [
        "ALLOWED_LATENESS",
        "DEDUP_HORIZON",
        "LATE_HORIZON",
        "IDLE_TIMEOUT",
        "CHECKPOINT_INTERVAL",
        "BASELINE_WINDOW_DAYS",
        "ANOMALY_STRICT_MODE",
        "CONSUMER_INSTANCE_ID",
        "KAFKA_SASL_PASSWORD",
        "METRICS_MAX_CATEGORIES",
    ] {
        assert!(help.contains(var), "--help does not mention {var}");
    }
}

/// Replays `lines` (with a settings file when given) and returns the amount anomalies' event
/// times.
fn amount_anomaly_times(lines: &[String], settings: Option<&std::path::Path>) -> Vec<String> {
    let mut cmd = detector();
    cmd.args(["replay", "-"]);
    if let Some(p) = settings {
        cmd.arg("--settings").arg(p);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "anomaly" && v["value"]["rule"] == "amount_zscore")
        .map(|v| v["value"]["transaction_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn replay_judges_each_minute_with_the_settings_records_in_force_then() {
    // 15 minutes of ordinary amounts, an outlier in minute 5 and one in minute 12.
    let mut lines = Vec::new();
    let mut outliers = Vec::new();
    let mut i = 0;
    for minute in 0..15 {
        for _ in 0..60 {
            i += 1;
            lines.push(ndjson_line(i, minute, "approved"));
        }
        if minute == 5 || minute == 12 {
            i += 1;
            let mut v: serde_json::Value = serde_json::from_str(&ndjson_line(i, minute, "approved")).unwrap();
            v["amount_minor"] = serde_json::json!(900_000);
            outliers.push(v["transaction_id"].as_str().unwrap().to_owned());
            lines.push(v.to_string());
        }
    }
    let all = amount_anomaly_times(&lines, None);
    for o in &outliers {
        assert!(all.contains(o), "{o} flagged without settings: {all:?}");
    }
    // From minute 10: the amount rule needs 10 000 000 samples, so it judges nothing.
    let dir = std::env::temp_dir().join(format!("vigil-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("settings.ndjson");
    let from = 1_765_713_600_000_i64 + 10 * 60_000;
    std::fs::write(
        &path,
        format!(r#"{{"scope":"global","effective_from":{from},"amount":{{"min_samples":10000000}},"actor":"test","comment":""}}"#),
    )
    .unwrap();
    let with = amount_anomaly_times(&lines, Some(&path));
    assert!(with.contains(&outliers[0]), "minute 5 is before the settings: {with:?}");
    assert!(!with.contains(&outliers[1]), "minute 12 is judged with them: {with:?}");
    // A bad record is refused naming its field.
    std::fs::write(&path, r#"{"scope":"shop","effective_from":0,"actor":"t"}"#).unwrap();
    let out = detector().args(["replay", "-", "--settings"]).arg(&path).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scope"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(dir).unwrap();
}
