//! Prometheus and Alertmanager configuration, checked by their own tools (promtool, amtool;
//! missing tools fail these tests) and against each other.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;

use vigil_ops_tests::constants::{self, ALERTMANAGER_PORT, ALERTMANAGER_WEBHOOK_PATH, SERVICES};
use vigil_ops_tests::tools::{self, arg};
use vigil_ops_tests::{compose, repo};

const CONFIGS: [&str; 2] = ["deploy/prometheus/prometheus.yml", "deploy/prometheus/prometheus.local.yml"];
const ALERTMANAGER_CONFIGS: [&str; 2] =
    ["deploy/alertmanager/alertmanager.yml", "deploy/alertmanager/alertmanager.local.yml"];

#[test]
fn promtool_accepts_both_prometheus_configs_and_their_rule_files() {
    for c in CONFIGS {
        let out = tools::run_ok(Command::new(tools::promtool()).args(["check", "config", &arg(c)]));
        assert!(out.contains("SUCCESS"), "{out}");
        assert!(!out.contains("0 rule files found"), "{c} loads no rule file:\n{out}");
    }
}

#[test]
fn promtool_accepts_the_rule_files() {
    for f in repo::files("deploy/prometheus/rules", ".yml") {
        tools::run_ok(Command::new(tools::promtool()).args(["check", "rules", &arg(&f)]));
    }
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let tests: Vec<String> = repo::files("deploy/prometheus/tests", ".yml").iter().map(|f| arg(f)).collect();
    let out = tools::run_ok(Command::new(tools::promtool()).args(["test", "rules"]).args(&tests));
    assert!(out.contains("SUCCESS") && !out.contains("FAILED"), "{out}");
}

#[test]
fn every_alerting_rule_has_a_unit_test_and_a_known_severity() {
    let mut alerts = BTreeSet::new();
    for f in repo::files("deploy/prometheus/rules", ".yml") {
        for g in repo::yaml(&f)["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                if let Some(name) = r["alert"].as_str() {
                    let sev = repo::ystr(r, &["labels", "severity"]);
                    assert!(["medium", "high", "critical"].contains(&sev), "{name}: severity {sev:?}");
                    assert!(r["annotations"]["summary"].is_string(), "{name}: no summary");
                    alerts.insert(name.to_owned());
                }
            }
        }
    }
    for required in [
        "VigilIngestErrorRatioHigh",
        "VigilIngestLatencyHigh",
        "VigilConsumerLagGrowing",
        "VigilNoEventsIngested",
        "VigilCriticalAnomalyRate",
    ] {
        assert!(alerts.contains(required), "no alerting rule {required}");
    }
    let mut tested = BTreeSet::new();
    for f in repo::files("deploy/prometheus/tests", ".yml") {
        for t in repo::yaml(&f)["tests"].as_sequence().unwrap() {
            for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
                // A test that expects the alert to fire, not only to stay quiet.
                if a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()) {
                    tested.insert(repo::ystr(a, &["alertname"]).to_owned());
                }
            }
        }
    }
    let untested: Vec<_> = alerts.difference(&tested).collect();
    assert!(untested.is_empty(), "alerting rules without a firing unit test: {untested:?}");
}

#[test]
fn amtool_accepts_both_alertmanager_configs() {
    for c in ALERTMANAGER_CONFIGS {
        let out = tools::run_ok(Command::new(tools::amtool()).args(["check-config", &arg(c)]));
        assert!(out.contains("SUCCESS"), "{out}");
    }
}

#[test]
fn alertmanager_sends_everything_to_the_webhook_service_with_the_bearer_token() {
    let compose = compose::load_defaults();
    let webhook = constants::service("webhook");
    for (file, host, token_file) in [
        (ALERTMANAGER_CONFIGS[0], "webhook", "/alertmanager/webhook-token".to_owned()),
        (ALERTMANAGER_CONFIGS[1], "127.0.0.1", "../../.vigil/run/webhook.token".to_owned()),
    ] {
        let am = repo::yaml(file);
        let receiver = repo::ystr(&am["route"], &["receiver"]);
        let receivers = am["receivers"].as_sequence().unwrap();
        assert_eq!(receivers.len(), 1, "{file}: one receiver, the webhook service");
        assert_eq!(repo::ystr(&receivers[0], &["name"]), receiver);
        for r in am["route"]["routes"].as_sequence().into_iter().flatten() {
            assert_eq!(repo::ystr(r, &["receiver"]), receiver, "{file}");
        }
        let hook = &receivers[0]["webhook_configs"][0];
        assert_eq!(
            repo::ystr(hook, &["url"]),
            format!("http://{host}:{}{ALERTMANAGER_WEBHOOK_PATH}", webhook.port),
            "{file}"
        );
        assert_eq!(hook["send_resolved"].as_bool(), Some(true), "{file}: resolutions close the stored alerts");
        let auth = &hook["http_config"]["authorization"];
        assert_eq!(repo::ystr(auth, &["type"]), "Bearer", "{file}");
        assert_eq!(repo::ystr(auth, &["credentials_file"]), token_file, "{file}");
    }
    // In compose, the token file is written from WEBHOOK_TOKEN before Alertmanager starts.
    let am = compose::service(&compose, "alertmanager");
    let command = am["command"][0].as_str().unwrap();
    assert!(command.contains("printf '%s' \"$WEBHOOK_TOKEN\" > /alertmanager/webhook-token"), "{command}");
    assert!(command.contains("--config.file=/etc/alertmanager/alertmanager.yml"), "{command}");
    assert_eq!(
        compose::environment(&compose, "alertmanager")["WEBHOOK_TOKEN"],
        compose::environment(&compose, "webhook")["WEBHOOK_TOKEN"]
    );
}

/// (job, target) pairs of a Prometheus config's static scrape configs.
fn scrape_targets(file: &str) -> Vec<(String, String)> {
    let cfg = repo::yaml(file);
    let mut out = Vec::new();
    for job in cfg["scrape_configs"].as_sequence().unwrap() {
        let name = repo::ystr(job, &["job_name"]).to_owned();
        for sc in job["static_configs"].as_sequence().unwrap() {
            for t in sc["targets"].as_sequence().unwrap() {
                out.push((name.clone(), t.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

#[test]
fn prometheus_scrapes_every_service_on_its_port_in_compose_and_locally() {
    let compose = compose::load_defaults();
    let docker = scrape_targets(CONFIGS[0]);
    let local = scrape_targets(CONFIGS[1]);
    for s in SERVICES {
        assert!(docker.contains(&(s.name.to_owned(), format!("{}:{}", s.name, s.port))), "{}: {docker:?}", s.name);
        assert!(local.contains(&(s.name.to_owned(), format!("127.0.0.1:{}", s.port))), "{}: {local:?}", s.name);
        // The service in compose listens where Prometheus looks.
        assert_eq!(compose::environment(&compose, s.name)[s.bind_var], format!("0.0.0.0:{}", s.port));
    }
    let jobs = |t: &[(String, String)]| t.iter().map(|(j, _)| j.clone()).collect::<BTreeSet<_>>();
    assert_eq!(jobs(&docker), jobs(&local), "both configs scrape the same jobs (dashboards select on job)");
    for (file, am) in [
        (CONFIGS[0], format!("alertmanager:{ALERTMANAGER_PORT}")),
        (CONFIGS[1], format!("127.0.0.1:{ALERTMANAGER_PORT}")),
    ] {
        let cfg = repo::yaml(file);
        let target = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].as_str().unwrap();
        assert_eq!(target, am, "{file}");
    }
    // Compose mounts the config and its rules where rule_files finds them.
    let volumes: Vec<&str> = compose::service(&compose, "prometheus")["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(volumes.contains(&"./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"), "{volumes:?}");
    assert!(volumes.contains(&"./prometheus/rules:/etc/prometheus/rules:ro"), "{volumes:?}");
    assert_eq!(repo::yaml(CONFIGS[0])["rule_files"][0].as_str(), Some("rules/*.yml"));
}
