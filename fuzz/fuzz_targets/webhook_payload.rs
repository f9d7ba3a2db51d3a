//! Any bytes as the body of `POST /grafana/webhook` and `POST /alertmanager/webhook`, through
//! the same steps as the route up to storage: JSON syntax, the object check, the shape of each
//! source, normalisation, and what `store` derives from an accepted notification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vigil_webhook::notifications::{parse, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if !value.is_object() {
        return;
    }
    for source in [Source::Grafana, Source::Alertmanager] {
        let Ok(n) = parse(source, &value) else { continue };
        // Everything accepted is stored whole; PostgreSQL's text and jsonb cannot hold U+0000.
        assert!(!vigil_fuzz::holds_nul(&value), "a {} body with U+0000 was accepted", source.as_str());
        for a in &n.alerts {
            assert!(!a.fingerprint.is_empty(), "an alert without a fingerprint");
            let key = a.dedup_key(source);
            assert!(key.starts_with(source.as_str()));
            let _ = (a.alertname(), a.severity());
            let _ = serde_json::to_value(&a.labels).map_err(|e| panic!("labels do not serialise: {e}"));
        }
    }
});
