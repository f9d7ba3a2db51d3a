use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sqlx::postgres::PgPoolOptions;
use vigil_simulator::check::{anomalies_from_replay, check, classify, CheckOptions};
use vigil_simulator::config::CheckArgs;
use vigil_simulator::GroundTruth;

#[tokio::main]
async fn main() -> ExitCode {
    let args = CheckArgs::parse();
    match grade(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vigil-check: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn grade(args: &CheckArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.max_delay_windows >= 0, "--max-delay-windows must not be negative");
    let truth = GroundTruth::read(&args.ground_truth.to_string_lossy())?;
    let opts = CheckOptions { max_delay_windows: args.max_delay_windows };
    let report = match (&args.replay, &args.database_url) {
        (Some(path), _) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("Failed to read standard input")?
            } else {
                std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))?
            };
            let rows = anomalies_from_replay(&text).map_err(anyhow::Error::msg)?;
            classify(&truth, &rows, &opts)
        }
        (None, Some(url)) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await
                .context("Failed to connect to the database (--database-url / DATABASE_URL)")?;
            check(&truth, &pool, &opts).await.context("Failed to read the anomalies table")?
        }
        (None, None) => anyhow::bail!("give --database-url (or DATABASE_URL), or --replay FILE"),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    Ok(report.passed)
}
