//! `interflowctl`: parses the command line, installs logging (stderr, `RUST_LOG`, default
//! `warn`) and maps the result to an exit code: 0 success, 1 a problem was found, 2 the command
//! could not run. All logic lives in the library.

use std::process::ExitCode;

use clap::Parser as _;
use interflow_cli::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.check() {
        e.exit();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(interflow_cli::EXIT_ERROR);
        }
    };
    match runtime.block_on(interflow_cli::run(cli)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(interflow_cli::EXIT_ERROR)
        }
    }
}
