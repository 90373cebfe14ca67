//! `interflow`: the node daemon (`serve`), a starter config (`init`), a local federation
//! (`dev`), a load test of the record path (`bench`). Exit codes: 0 a clean stop, 1 an error that kept the node from starting or
//! stopped it (printed as one line: `error: ` and the chain of causes), 2 a usage error.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Run a node. SIGHUP reloads certificates, CRLs, directory and agreements; SIGTERM or Ctrl-C stops cleanly.
    Serve {
        #[arg(long, env = "INTERFLOW_CONFIG", default_value = "interflow.toml")]
        config: PathBuf,
    },
    /// Run a whole local federation in this process: dev PKI, keys, signed directory and
    /// agreements, nodes on loopback, and sample records. Reuses DIR and its data on rerun.
    Dev {
        /// How many nodes (2 to 5, default 3), with agreements between neighbours. A DIR
        /// that holds a federation keeps its number of nodes.
        #[arg(long)]
        nodes: Option<usize>,
        #[arg(long, default_value = ".interflow-dev")]
        dir: PathBuf,
        /// Synthetic records each node submits per agreement.
        #[arg(long, default_value_t = 12)]
        samples: u64,
        /// Nodes sign with SM2 keys (key id 1 in the directory) instead of Ed25519; only when
        /// the federation is generated.
        #[arg(long)]
        sm2: bool,
    },
    /// Load-test the record path: start two `interflow serve` processes in a temp dir (or use
    /// a running dev federation), submit synthetic records at A for B, and print intake and
    /// end-to-end rates, Submit latency percentiles, CPU, RSS and store bytes per record, with
    /// this machine's Ed25519 ceilings measured in the same run.
    Bench {
        /// Stop submitting after this long, e.g. `30s`, `2m` (default 10s unless --records).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Stop submitting after this many records.
        #[arg(long)]
        records: Option<u64>,
        /// Offer this many records per second; flat out when not given.
        #[arg(long)]
        rate: Option<u64>,
        /// Items per Submit call.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Concurrent submitters, each on its own connection.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Use the first two nodes of the running dev federation in DIR instead of starting
        /// a federation (CPU and RSS are then not reported).
        #[arg(long)]
        dev_dir: Option<PathBuf>,
        /// After submitting stops, wait this long at most for everything to be receipted.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
        drain_timeout: std::time::Duration,
        /// `[limits] peer_records_per_sec` and `peer_records_burst` of the started
        /// federation (the default 2000/s bounds a flooding peer, not the record path).
        #[arg(long, default_value_t = 1_000_000)]
        peer_records_per_sec: u32,
        /// The started federation signs with SM2 keys (the national suite) instead of
        /// Ed25519.
        #[arg(long, conflicts_with = "dev_dir")]
        sm2: bool,
        /// Stop B before submitting, so A's intake is measured alone, then start B again and
        /// time the catch-up of the backlog (`--records 100000 --catch-up`: a 100k backlog).
        #[arg(long, conflicts_with = "dev_dir")]
        catch_up: bool,
        /// After the run, stop A cleanly (SIGTERM) and start it again on its data directory:
        /// the time from start to its first admin answer, and its RSS then.
        #[arg(long, conflicts_with = "dev_dir")]
        reopen: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also write an SVG chart of throughput over time and the latency distribution.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Write a commented starter config for a region.
    Init {
        #[arg(long)]
        region: RegionCode,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a shell completion script, e.g.
    /// `interflow completions bash > /etc/bash_completion.d/interflow`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `interflow man > /usr/local/share/man/man1/interflow.1`.
    Man,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a journal, a file or a log
    // collector are noise. `NO_COLOR` (no-color.org) turns it off there too.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The exit code of an error that kept the node from starting or stopped it.
const EXIT_ERROR: u8 = 1;

#[tokio::main]
async fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2.
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause, never anyhow's multi-line Debug form or a backtrace:
            // these are an operator's mistakes (a missing file, a port in use), not bugs.
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Dev {
            nodes,
            dir,
            samples,
            sm2,
        } => dev(nodes, dir, samples, sm2).await,
        Command::Bench {
            duration,
            records,
            rate,
            batch,
            concurrency,
            dev_dir,
            drain_timeout,
            peer_records_per_sec,
            sm2,
            catch_up,
            reopen,
            json,
            svg,
        } => {
            let opts = interflow_node::bench::BenchOptions {
                duration: duration.or(records
                    .is_none()
                    .then(|| std::time::Duration::from_secs(10))),
                records,
                rate,
                batch,
                concurrency,
                dev_dir,
                drain_timeout,
                peer_records_per_sec,
                sm2,
                catch_up,
                reopen,
                exe: std::env::current_exe().context("finding this `interflow` binary")?,
            };
            let report = interflow_node::bench::run(&opts).await?;
            if let Some(path) = &svg {
                interflow_node::bench::write_svg(&report, path)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", interflow_node::bench::human(&report));
                if let Some(path) = &svg {
                    println!("chart: {}", path.display());
                }
            }
            Ok(())
        }
        // Generated from the parser's own definition, so they list exactly its commands.
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "interflow", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .context("writing the man page"),
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
                // Certificates, CRLs, directory and agreements together; a failure is logged
                // and counted by the node, which keeps its state.
                let _ = running.node.reload().await;
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

async fn dev(nodes: Option<usize>, dir: PathBuf, samples: u64, sm2: bool) -> anyhow::Result<()> {
    use interflow_node::dev::{
        DevFederation, DevOptions, generate_with_options, residence_samples, sample_person,
        sample_submission,
    };
    use std::time::Duration;

    std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let mut prebound = Vec::new();
    let fed = if dir.join("federation.json").exists() {
        let fed = DevFederation::load(&dir)?;
        let held = fed.nodes.len();
        if let Some(asked) = nodes.filter(|n| *n != held) {
            anyhow::bail!(
                "the dev federation in `{}` holds {held} nodes, not {asked}; run without --nodes to start those {held} again, or remove `{}` (or choose another --dir) to start over with {asked}",
                dir.display(),
                dir.display()
            );
        }
        println!("reusing the dev federation in {}", dir.display());
        fed
    } else {
        let nodes = nodes.unwrap_or(3);
        let mut addrs = Vec::new();
        for _ in 0..nodes {
            let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let local = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push((peer.local_addr()?, local.local_addr()?));
            prebound.push((peer, local));
        }
        let endpoints: Vec<_> = addrs.iter().map(|(peer, _)| *peer).collect();
        // Residence notices and status follows residence, as the example config has them.
        let fed = generate_with_options(
            &dir,
            &addrs,
            &endpoints,
            system_clock()(),
            DevOptions {
                residence: true,
                sm2,
            },
        )
        .context("generating the dev federation")?;
        println!(
            "generated a dev federation of {nodes} nodes in {}",
            dir.display()
        );
        fed
    };
    let mut prebound = prebound.into_iter();
    let mut running = Vec::new();
    for n in &fed.nodes {
        let config =
            Config::load(&n.config).with_context(|| format!("loading `{}`", n.config.display()))?;
        let mut listeners = match prebound.next() {
            Some((peer, local)) => Listeners {
                peer,
                local,
                metrics: None,
            },
            None => Listeners::bind(&config).await?,
        };
        // `/metrics` on a loopback port of its own per node, so dashboards and alert rules
        // can be tried against the dev federation.
        if listeners.metrics.is_none() {
            listeners.metrics = Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("binding a metrics listener")?,
            );
        }
        running.push(start(config, listeners, system_clock()).await?);
    }
    // Intake opens once each node has compared its outbound heads with its peers.
    for r in &running {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while r.node.holds.any() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "node {} could not compare heads with its peers",
                r.node.region
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut stored = 0;
    let mut intakes = Vec::new();
    for n in &fed.nodes {
        let cfg = interflow_tls::client_config(&n.local_ca, &n.intake_cert, &n.intake_key)?;
        let region: RegionCode = n.region.parse()?;
        let ch = interflow_tls::connect(
            &n.local_addr.to_string(),
            &interflow_tls::local_server_name(region),
            cfg,
            Duration::from_secs(5),
        )
        .await?;
        intakes.push(interflow_core::pb::intake_client::IntakeClient::new(ch));
    }
    // First the arrivals (and a departure) the residence bureaus send to the home bureaus,
    // and until the homes hold them: status follows residence.
    let notices = residence_samples(&fed, samples);
    for (j, intake) in intakes.iter_mut().enumerate() {
        let items: Vec<_> = notices
            .iter()
            .filter(|(from, _)| *from == j)
            .map(|(_, s)| s.clone())
            .collect();
        if items.is_empty() {
            continue;
        }
        let resp = intake
            .submit(interflow_core::pb::SubmitRequest { items })
            .await?
            .into_inner();
        stored += resp.results.iter().filter(|r| !r.duplicate).count();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (j, r) in running.iter().enumerate() {
        for (i, home) in running.iter().enumerate() {
            let expected = notices
                .iter()
                .filter(|(from, s)| *from == j && s.destination == home.node.region.as_str())
                .count() as u64;
            if expected == 0 {
                continue;
            }
            let c = interflow_core::record::ChannelId::new(r.node.region, home.node.region);
            while home.node.store.head(c).0 < expected {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "node {} did not receive the residence notices of node {} (node {i})",
                    home.node.region,
                    r.node.region
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    for (i, n) in fed.nodes.iter().enumerate() {
        let intake = &mut intakes[i];
        for (a, b) in &fed.agreements {
            let peer = if *a == n.region {
                b
            } else if *b == n.region {
                a
            } else {
                continue;
            };
            let j = fed
                .nodes
                .iter()
                .position(|m| &m.region == peer)
                .unwrap_or(i);
            let items = (0..samples)
                .map(|k| sample_submission(sample_person(&fed, i, j, k), peer))
                .collect();
            let resp = intake
                .submit(interflow_core::pb::SubmitRequest { items })
                .await?
                .into_inner();
            stored += resp.results.iter().filter(|r| !r.duplicate).count();
        }
    }
    println!("submitted {stored} new synthetic records\n");
    for (n, r) in fed.nodes.iter().zip(&running) {
        let metrics = r
            .metrics_addr
            .map(|a| format!("  metrics http://{a}/metrics"))
            .unwrap_or_default();
        println!(
            "  {}  {:<18} peer {}  local {}{metrics}",
            n.region, n.name, n.peer_addr, n.local_addr
        );
    }
    println!("\nTry, in another terminal:");
    for hint in interflow_node::dev::hints(&fed, &dir) {
        println!("  {hint}");
    }
    println!(
        "\nready; Ctrl-C stops every node (the data stays in {})",
        dir.display()
    );
    tokio::signal::ctrl_c().await?;
    for r in running {
        r.shutdown().await;
    }
    Ok(())
}
