//! The detector: a pure [`core`] (windows, baselines, rules, dedup) wrapped by a Kafka
//! [`service`] and a [`replay`] command. See `detector/README.md` for the dataflow.

pub mod config;
pub mod core;
pub mod error;
pub mod replay;
pub mod service;

pub use config::{Args, Command, Config};
pub use error::{Error, Result};
pub use service::Application;
