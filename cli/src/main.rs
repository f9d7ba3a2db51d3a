use clap::Parser;
use vigil_cli::{find_run_env, run, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let run_env = std::env::current_dir().ok().and_then(|d| find_run_env(&d));
    let result = match cli.target(run_env.as_deref()) {
        Ok(target) => run(&cli, &target).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("vigil: {e}");
            std::process::exit(1);
        }
    }
}
