use clap::Parser;
use vigil_sink::{Application, Args, Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::from_args(&args).unwrap_or_else(|e| {
        eprint!("{e}");
        std::process::exit(2)
    });
    if args.check_config {
        println!("configuration is valid");
        return Ok(());
    }
    vigil_common::telemetry::init("sink");
    match args.command {
        Some(Command::Migrate) => vigil_sink::migrate_only(&config).await,
        Some(Command::Run) | None => {
            let shutdown = vigil_common::shutdown::on_signal_within(config.shutdown_timeout);
            Application::build(config).await?.run(shutdown).await
        }
    }
}
