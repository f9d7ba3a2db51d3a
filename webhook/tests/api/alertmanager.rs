//! A real Prometheus Alertmanager delivers to the service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};
use vigil_webhook::notifications::fingerprint::fingerprint;

use crate::helpers::{spawn_app, TOKEN};

/// The Alertmanager binary: `VIGIL_ALERTMANAGER_BIN`, else `alertmanager` or Debian's
/// `prometheus-alertmanager` on the PATH. Missing is a failure, never a skip.
fn alertmanager_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_ALERTMANAGER_BIN") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]) {
        for name in ["alertmanager", "prometheus-alertmanager"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Prometheus Alertmanager is not installed. Run `scripts/install-deps.sh --with-prometheus` \
         (or `apt-get install -y prometheus-alertmanager`), or set VIGIL_ALERTMANAGER_BIN."
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Alertmanager in its own directory, killed when dropped.
struct Alertmanager {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Alertmanager {
    async fn start(webhook_url: &str) -> Self {
        let dir = std::env::temp_dir().join(vigil_testkit::unique("vigil-alertmanager"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            r#"route:
  receiver: vigil
  group_by: ['alertname']
  group_wait: 200ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: vigil
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
"#
        );
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new(alertmanager_bin())
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No high-availability cluster: a single instance on free ports.
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let am = Alertmanager { child, dir, url: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        let ready = vigil_testkit::eventually(Duration::from_secs(20), || {
            let client = client.clone();
            let url = format!("{}/-/ready", am.url);
            async move { client.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        assert!(ready.is_some(), "Alertmanager did not become ready");
        am
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_real_alertmanager_delivers_an_alert_and_its_resolution_which_the_service_stores() {
    let app = spawn_app().await;
    let am = Alertmanager::start(&format!("{}/alertmanager/webhook", app.address)).await;
    let instance = vigil_testkit::unique("detector");
    let labels: BTreeMap<String, String> =
        [("alertname", "VigilAlertmanagerDelivery"), ("severity", "critical"), ("instance", instance.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let starts_at = chrono::Utc::now();
    let alert = json!([{
        "labels": labels,
        "annotations": {"summary": "Delivered by a real Alertmanager"},
        "startsAt": starts_at.to_rfc3339(),
        "generatorURL": "http://prometheus.vigil.example/graph"
    }]);
    let client = reqwest::Client::new();
    let resp = client.post(format!("{}/api/v2/alerts", am.url)).json(&alert).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    let pool = app.db.pool.clone();
    let stored = vigil_testkit::eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, String, Option<String>)>(
                "SELECT fingerprint, status, severity FROM received_alerts
                 WHERE source = 'alertmanager' AND alertname = 'VigilAlertmanagerDelivery'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    })
    .await
    .expect("Alertmanager's notification was not stored within 30 s");
    assert_eq!(stored.1, "firing");
    assert_eq!(stored.2.as_deref(), Some("critical"));
    // Our computation of a missing fingerprint agrees with Alertmanager's own.
    assert_eq!(stored.0, fingerprint(&labels));
    let receiver: String =
        sqlx::query_scalar("SELECT receiver FROM alert_notifications").fetch_one(&pool).await.unwrap();
    assert_eq!(receiver, "vigil");

    // Resolve it: Alertmanager sends the resolution at the next group interval.
    let mut resolved = alert.clone();
    resolved[0]["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    let resp = client.post(format!("{}/api/v2/alerts", am.url)).json(&resolved).send().await.unwrap();
    assert!(resp.status().is_success());
    let closed = vigil_testkit::eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT resolved_at FROM received_alerts
                 WHERE alertname = 'VigilAlertmanagerDelivery' AND status = 'firing' AND resolved_at IS NOT NULL",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    })
    .await;
    assert!(closed.is_some(), "the resolution was not recorded within 30 s");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM received_alerts").fetch_one(&pool).await.unwrap(),
        2,
        "one firing and one resolved state change"
    );
    am.stop().await;
    app.stop().await;
}
