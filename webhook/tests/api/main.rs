//! Integration tests of the webhook service: each test runs the real application on port 0
//! against its own fresh PostgreSQL database (and, for the forwarder, its own topic and consumer
//! group on the real broker), and talks to it through a real socket.
#![allow(clippy::unwrap_used)]

mod alertmanager;
mod auth;
mod bad_input;
mod cli;
mod helpers;
mod inbound;
mod listing;
mod ops;
mod outbound;
mod schemathesis;
mod settings;
mod silences;
mod triage;
