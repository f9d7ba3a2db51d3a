//! An outbound-webhook receiver: records the `X-Vigil-Anomaly-Id` of every delivery it gets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// Deliveries received, by anomaly id (a count: delivery is at least once).
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<BTreeMap<String, u32>>>);

impl Received {
    pub fn snapshot(&self) -> BTreeMap<String, u32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Counts one delivery.
    fn record(&self, id: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default() += 1;
    }
}

pub struct Receiver {
    pub url: String,
    pub received: Received,
    stop: CancellationToken,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1, answering 200 to every POST.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        let received = Received::default();
        let r = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap| {
                let r = r.clone();
                async move {
                    let id = headers.get("x-vigil-anomaly-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    r.record(id);
                    StatusCode::OK
                }
            }),
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await;
        });
        Receiver { url, received, stop }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
