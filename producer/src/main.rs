use clap::Parser;
use vigil_producer::{Application, Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let check_only = args.check_config;
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            std::process::exit(2);
        }
    };
    if check_only {
        println!("configuration is valid");
        return Ok(());
    }
    vigil_common::telemetry::init("producer");
    let shutdown = vigil_common::shutdown::on_signal_within(config.shutdown_timeout);
    let app = Application::build(config).await?;
    app.run(shutdown).await
}
