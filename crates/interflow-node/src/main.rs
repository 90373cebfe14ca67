//! `interflow`: the node daemon (`serve`), a starter config (`init`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use interflow_core::RegionCode;
use interflow_node::{Config, Listeners, start, system_clock};

#[derive(Parser, Debug)]
#[command(
    name = "interflow",
    version,
    about = "interflow node: federated exchange of reproductive-health service records"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "INTERFLOW_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node. SIGHUP reloads certificates and CRLs; SIGTERM or Ctrl-C stops cleanly.
    Serve {
        #[arg(long, env = "INTERFLOW_CONFIG", default_value = "interflow.toml")]
        config: PathBuf,
    },
    /// Write a commented starter config for a region.
    Init {
        #[arg(long)]
        region: RegionCode,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Init { region, out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("creating `{}`", out.display()))?;
            let path = out.join("interflow.toml");
            if path.exists() {
                anyhow::bail!(
                    "`{}` exists; remove it or choose another --out",
                    path.display()
                );
            }
            std::fs::write(&path, interflow_node::config::starter(region))
                .with_context(|| format!("writing `{}`", path.display()))?;
            println!(
                "wrote {}; edit the paths, then run `interflow serve --config {}`",
                path.display(),
                path.display()
            );
            Ok(())
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config =
        Config::load(&path).with_context(|| format!("loading config `{}`", path.display()))?;
    let listeners = Listeners::bind(&config).await?;
    let running = start(config, listeners, system_clock()).await?;
    wait_for_signals(&running).await?;
    running.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(running: &interflow_node::Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = running.reload_tls() {
                    tracing::error!(error = %format!("{e:#}"), "TLS reload failed; keeping the current certificates");
                }
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_running: &interflow_node::Running) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
