//! The webhook service: Vigil's alert hub.
//!
//! * `notifications`: `POST /grafana/webhook` and `POST /alertmanager/webhook`, each alert state
//!   change stored once, with the raw payload kept.
//! * `listing`: `GET /alerts` (detector anomalies) and `GET /grafana/alerts` (received alerts),
//!   keyset-paginated.
//! * `outbound`: critical firing anomalies from Kafka to external webhooks, signed and retried.
//! * `auth`: bearer tokens and Grafana's HMAC signature. `startup` wires it all into an
//!   [`Application`].

pub mod auth;
pub mod config;
pub mod error;
pub mod listing;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod outbound;
pub mod settings;
pub mod silences;
pub mod startup;
pub mod state;
pub mod triage;
pub mod validation;

pub use config::{Args, Config};
pub use error::{Error, Result};
pub use startup::Application;
