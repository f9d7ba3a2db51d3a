//! Plumbing shared by every Vigil service. Nothing here knows about transactions or anomalies.

pub mod body;
pub mod config;
pub mod db;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigErrors, Secret, Validator};
