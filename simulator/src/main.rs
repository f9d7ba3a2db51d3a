use std::process::ExitCode;

use clap::Parser;
use vigil_simulator::config::{scenario_list, Cli, Command, RunConfig};
use vigil_simulator::{build_target, init_logging, run, Generator, Scenario};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scenarios => {
            print!("{}", scenario_list());
            ExitCode::SUCCESS
        }
        Command::Show { name } => match Scenario::load(&name) {
            Ok(s) => {
                print!("{}", s.source);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            init_logging();
            let config = match RunConfig::from_args(&args, chrono::Utc::now()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(2);
                }
            };
            match simulate(config).await {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!("The simulation failed: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

async fn simulate(config: RunConfig) -> anyhow::Result<ExitCode> {
    for w in &config.warnings {
        tracing::warn!("Careful: {w}.");
    }
    let target = build_target(&config).map_err(anyhow::Error::from)?;
    let to_stdout = target.name() == "stdout";
    let gen = Generator::new(config.scenario.clone(), config.seed, config.start).repeating(config.repeat);
    let stop = vigil_common::shutdown::on_signal();
    let out = run::run(gen, &target, &config.options, stop).await?;
    // With --target stdout, stdout carries the transactions: the summary goes to stderr.
    if to_stdout {
        eprint!("{}", out.report.human());
    } else {
        print!("{}", out.report.human());
    }
    Ok(if out.report.all_accepted() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
