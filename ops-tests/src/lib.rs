//! Helpers of the ops tests: the repository's operations files (grafana/, deploy/,
//! redpanda.yml) read as data, Grafana's query pipeline reproduced (macro expansion, frames,
//! alert expressions), a seeded database, and the external tools (promtool, amtool,
//! prometheus) located or reported missing.
//!
//! The tests never read /work/shared or anything outside the repository: what they need from
//! elsewhere (the dashboard JSON schema) is copied into `ops-tests/schema/` with its source.
#![allow(clippy::unwrap_used)]

pub mod compose;
pub mod constants;
pub mod frames;
pub mod grafana;
pub mod repo;
pub mod seed;
pub mod tools;
