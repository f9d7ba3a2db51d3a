//! The producer: Vigil's front door.
//!
//! `routes` validates and answers, `validation` holds every rule an event must pass,
//! `publisher` owns the durable Kafka producer, `idempotency` remembers Idempotency-Keys in
//! PostgreSQL, `startup` wires them into an [`Application`].

pub mod config;
pub mod error;
pub mod idempotency;
pub mod lookup;
pub mod metrics;
pub mod openapi;
pub mod publisher;
pub mod reversal;
pub mod routes;
pub mod startup;
pub mod validation;
pub mod verdicts;

pub use config::{Args, Config};
pub use error::{Error, Result};
pub use startup::Application;
