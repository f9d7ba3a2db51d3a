//! The `vigil` binary against a real webhook service on a fresh database: list, triage, show
//! with the audit trail, silence and expire, tables and `--json`, and a refusal that names the
//! field.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use clap::Parser;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ALICE: &str = "alice-cli-token-0000001";
const READ: &str = "cli-read-token-00000001";

struct Service {
    url: String,
    db: vigil_testkit::TestDb,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Service {
    let db = vigil_testkit::fresh_database().await;
    let settings_topic = vigil_testkit::fresh_topics(&[("detector-settings", 1)]).await.remove(0);
    let args = vigil_webhook::Args::parse_from([
        "webhook".to_owned(),
        "--bind=127.0.0.1:0".to_owned(),
        format!("--database-url={}", db.url),
        "--tokens=cli-write-token-0000001".to_owned(),
        format!("--read-tokens={READ}"),
        format!("--triage-users=alice:{ALICE}"),
        format!("--kafka-brokers={}", vigil_testkit::brokers()),
        format!("--settings-topic={}", settings_topic),
    ]);
    let app = vigil_webhook::Application::build(vigil_webhook::Config::from_args(args).unwrap()).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    Service { url, db, stop, task }
}

/// Runs `vigil` with `args` against the service (token from the environment, as a user would);
/// returns (exit code, stdout, stderr).
fn vigil(s: &Service, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_clear()
        .env("VIGIL_WEBHOOK_URL", &s.url)
        .env("VIGIL_TOKEN", token)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &Service, token: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = vigil(s, token, &all);
    assert_eq!(code, 0, "vigil {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_lists_triages_and_silences_from_the_command_line() {
    let s = start().await;
    sqlx::query(
        "INSERT INTO anomalies (id, sequence, rule, dimension, dimension_value, merchant_id, observed, observed_count,
             observed_total, baseline_mean, baseline_stddev, baseline_n, scored_on, score, threshold, severity,
             state, message, first_seen, last_updated)
         VALUES ('denied_rate:merchant:m-1:1', 0, 'denied_rate', 'merchant', 'm-1', 'm-1', 0.5, 50, 100, 0.1, 0.01, 60,
             'rate', 9.5, 4, 'critical', 'firing', 'Merchant m-1 denied 50%', now(), now())",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let id = "denied_rate:merchant:m-1:1";

    // A table for people.
    let (code, table, _) = vigil(&s, READ, &["alerts", "--severity=critical"]);
    assert_eq!(code, 0);
    assert!(table.contains(id) && table.contains("critical") && table.contains("open"), "{table}");

    assert_eq!(json(&s, ALICE, &["ack", id, "--note", "looking"])["state"], "acknowledged");
    assert_eq!(json(&s, ALICE, &["assign", id, "bob"])["assignee"], "bob");
    let closed = json(&s, ALICE, &["close", id, "--disposition", "true_positive", "--note", "issuer outage"]);
    assert_eq!((closed["state"].as_str(), closed["version"].as_i64()), (Some("closed"), Some(3)));
    let shown = json(&s, READ, &["show", id]);
    let actions: Vec<&str> = shown["audit"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["acknowledge", "assign", "close"]);
    assert!(shown["audit"].as_array().unwrap().iter().all(|e| e["actor"] == "alice"));
    assert_eq!(json(&s, READ, &["alerts", "--triage-state=closed"])["items"][0]["id"], id);

    // A refusal names the field and exits 1.
    let (code, _, err) = vigil(&s, ALICE, &["reopen", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = vigil(&s, ALICE, &["close", id, "--disposition", "maybe"]);
    assert_eq!(code, 1);
    assert!(err.contains("disposition"), "{err}");
    let (code, _, err) = vigil(&s, READ, &["ack", id]);
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    // Silence m-1 for two hours, list it, expire it.
    let silence = json(
        &s,
        ALICE,
        &[
            "silence",
            "create",
            "--merchant",
            "m-1",
            "--severity",
            "high,critical",
            "--for",
            "2h",
            "--comment",
            "gateway move",
        ],
    );
    assert_eq!((silence["state"].as_str(), silence["created_by"].as_str()), (Some("active"), Some("alice")));
    let sid = silence["id"].as_str().unwrap().to_owned();
    let (code, table, _) = vigil(&s, READ, &["silence", "list", "--state", "active"]);
    assert_eq!(code, 0);
    assert!(table.contains(&sid) && table.contains("merchant_id=m-1"), "{table}");
    assert_eq!(json(&s, ALICE, &["silence", "expire", &sid])["state"], "expired");

    // The detector's settings: a noisier merchant gets a higher bar, listed with who set it.
    let set =
        json(&s, ALICE, &["settings", "set", "--scope", "merchant:m-1", "--z-critical", "6", "--comment", "noisy"]);
    assert_eq!(set["items"][0]["record"]["amount"]["z_critical"], 6.0);
    let (code, table, _) = vigil(&s, READ, &["settings", "list"]);
    assert_eq!(code, 0);
    assert!(table.contains("merchant:m-1") && table.contains("z_critical=6") && table.contains("alice"), "{table}");

    // Without a URL anywhere it says where to put one.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("alerts")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VIGIL_WEBHOOK_URL"));
    s.stop.cancel();
    s.task.await.unwrap().unwrap();
}
