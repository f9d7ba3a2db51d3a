//! The detector: a pure [`core`] wrapped by a Kafka [`service`] and a [`replay`] command.

pub mod core;
