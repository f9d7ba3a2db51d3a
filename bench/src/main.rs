//! `vigil-bench`: figures, not assertions. Runs against the broker and PostgreSQL named by
//! `VIGIL_TEST_KAFKA_BROKERS` / `VIGIL_TEST_PG_ADMIN_URL` (`make bench` starts the test stack and
//! sets them), prints each result and appends it to `bench/results/<name>.txt`.
#![allow(clippy::unwrap_used)]

mod detector;
mod latency;
mod producer;
mod report;
mod sink;
mod verdict;
mod workload;

use clap::{Parser, Subcommand};

/// Vigil benchmarks. Build with --release for meaningful figures.
#[derive(Parser)]
#[command(name = "vigil-bench", version)]
struct Cli {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Raw rdkafka produce vs POST /ingest/transactions (batches of 500) vs POST /ingest/transaction (64 connections).
    Producer {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// Bare decoding consumer vs the detector on one topic; memory over 1M and 5M events; restart to ready.
    Detector {
        #[arg(long, default_value_t = 300_000)]
        events: usize,
        #[arg(long, default_value_t = 5_000_000)]
        memory_events: usize,
    },
    /// The sink's rows/s from a prepared topic vs a bare COPY of the same rows.
    Sink {
        #[arg(long, default_value_t = 20_000)]
        minutes: usize,
    },
    /// Latency under a steady real-time stream: producer 2xx -> amount anomaly row, window
    /// close -> rate anomaly row.
    Latency {
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Seconds of live traffic (the denied spike is in the second full minute).
        #[arg(long, default_value_t = 200)]
        seconds: u64,
    },
    /// Verdict on create: single requests asking for their verdict (Prefer: wait=5) at a steady
    /// rate; request -> verdict percentiles.
    Verdict {
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Everything above.
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().which {
        Which::Producer { events } => producer::run(events).await,
        Which::Detector { events, memory_events } => detector::run(events, memory_events).await,
        Which::Sink { minutes } => sink::run(minutes).await,
        Which::Latency { rate, seconds } => latency::run(rate, seconds).await,
        Which::Verdict { rate, seconds } => verdict::run(rate, seconds).await,
        Which::All => {
            producer::run(100_000).await?;
            detector::run(300_000, 5_000_000).await?;
            sink::run(20_000).await?;
            latency::run(5000, 200).await?;
            verdict::run(500, 60).await
        }
    }
}
