use clap::Parser;
use vigil_detector::{replay, Application, Args, Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Replay(r)) = &args.command {
        let mut core = Config::rules_from_args(&args).unwrap_or_else(|e| {
            eprint!("{e}");
            std::process::exit(2)
        });
        if let Some(path) = &r.settings {
            core.settings = replay::settings(path)?;
        }
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        return match (&r.series, &r.file) {
            (Some(series), _) => replay::series(series, &mut out),
            (None, Some(file)) => {
                let s = replay::transactions(file, r.partitions, core, &mut out)?;
                eprintln!(
                    "replayed {} events: {} minutes, {} anomaly states, {} late bookings, {} merchant minutes",
                    s.events, s.minutes, s.anomalies, s.late, s.merchant_minutes
                );
                Ok(())
            }
            (None, None) => replay::transactions("-", r.partitions, core, &mut out).map(|_| ()),
        };
    }
    let config = Config::from_args(&args).unwrap_or_else(|e| {
        eprint!("{e}");
        std::process::exit(2)
    });
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    vigil_common::telemetry::init("detector");
    let shutdown = vigil_common::shutdown::on_signal_within(config.service.shutdown_timeout);
    Application::build(config).await?.run(shutdown).await
}
