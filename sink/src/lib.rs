//! The sink: Kafka in, PostgreSQL out. `consumer` batches messages, `writer` upserts a batch
//! in one transaction keyed by the detector's deterministic keys, `retry` decides what is worth
//! retrying, `retention` trims old rows, `transactions` stores every transaction and verdict.

pub mod config;
pub mod consumer;
pub mod error;
pub mod metrics;
pub mod retention;
pub mod retry;
pub mod startup;
pub mod transactions;
pub mod writer;

pub use config::{Args, Command, Config};
pub use error::{Error, Result};
pub use startup::{migrate_only, Application};
