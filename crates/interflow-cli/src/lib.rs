//! `interflowctl`, the operator's CLI: it answers "what is stuck, since when, and why" for one
//! node, submits status records from files, and makes keys, certificates and agreements
//! offline.
//!
//! It talks to a node only through the node's local listener (`Admin` and `Intake` over mutual
//! TLS), built on `interflow-proto`, `interflow-core` and `interflow-tls`. It must never depend
//! on `interflow-store` or `interflow-node` and never opens a node's sled directory. It never
//! prints a full national ID or subject ref.
//!
//! The logic lives here so that tests can drive it with an explicit connection
//! ([`run_connected`] with a [`conn::Connection`]); `main.rs` only parses arguments, sets up
//! logging and maps the [`Outcome`] to an exit code.

pub mod admin;
pub mod agreement;
pub mod cli;
pub mod conn;
pub mod directory;
pub mod human;
pub mod offline;
pub mod pending;
pub mod submit;
pub mod view;

use std::io::{BufRead, IsTerminal as _, Write};

use anyhow::Context as _;
use interflow_tls::Role;
use serde::Serialize;

use crate::cli::{Cli, Command, ConnArgs, ReconcileCommand};
use crate::conn::Connection;

/// What a command found, as the exit code tells it: 0 for success, 1 when the command ran but
/// found a problem (records stuck beyond `--max-age`, rows that failed, an inconsistent log,
/// reconciliation anomalies). Errors that keep a command from running exit 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Problem,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Problem => 1,
        }
    }

    /// `Problem` when `bad` holds.
    pub fn problem_if(bad: bool) -> Outcome {
        if bad {
            Outcome::Problem
        } else {
            Outcome::Success
        }
    }
}

/// The exit code for errors that kept a command from running.
pub const EXIT_ERROR: u8 = 2;

/// Where a command writes, and how.
pub struct Ctx<'a> {
    pub out: &'a mut dyn Write,
    /// JSON instead of tables.
    pub json: bool,
    /// Whether to draw progress bars (a terminal on stdout and no `--json`).
    pub progress: bool,
    /// Read by `lookup --id -`.
    pub stdin: &'a mut dyn BufRead,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("json", &self.json)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// A command's result: JSON for scripts, text for people, and what the exit code says.
pub trait Report: Serialize {
    fn human(&self) -> String;
    fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

/// Prints a report in the requested form and returns its outcome.
pub fn emit<R: Report>(ctx: &mut Ctx<'_>, report: &R) -> anyhow::Result<Outcome> {
    if ctx.json {
        serde_json::to_writer_pretty(&mut *ctx.out, report).context("writing json")?;
        writeln!(ctx.out).context("writing output")?;
    } else {
        let text = report.human();
        ctx.out
            .write_all(text.as_bytes())
            .context("writing output")?;
        if !text.ends_with('\n') {
            writeln!(ctx.out).context("writing output")?;
        }
    }
    ctx.out.flush().context("writing output")?;
    Ok(report.outcome())
}

/// The role a command that talks to a node presents, or `None` for an offline command.
pub fn connection_of(command: &Command) -> Option<Role> {
    match command {
        Command::Pending { .. }
        | Command::Channels
        | Command::Record { .. }
        | Command::Stats
        | Command::Lookup { .. }
        | Command::Disclosure { .. }
        | Command::Reconcile { .. }
        | Command::Verify
        | Command::Resume { .. }
        | Command::Audit { .. } => Some(Role::Admin),
        Command::Submit { .. } => Some(Role::Intake),
        Command::Keys(_) | Command::Certs(_) | Command::Agreement(_) | Command::Directory(_) => {
            None
        }
    }
}

/// Runs a parsed command line against the process environment, stdout and stdin.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let stdout = std::io::stdout();
    let progress = !cli.json && stdout.is_terminal();
    let mut out = stdout.lock();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut ctx = Ctx {
        out: &mut out,
        json: cli.json,
        progress,
        stdin: &mut input,
    };
    let env = |k: &str| std::env::var(k).ok();
    run_with(&cli.command, &cli.conn, &env, &mut ctx).await
}

/// Runs a command, resolving its connection from the connection flags `args`, `env` and files.
pub async fn run_with(
    command: &Command,
    args: &ConnArgs,
    env: &dyn Fn(&str) -> Option<String>,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    match connection_of(command) {
        None => run_offline(command, ctx),
        Some(role) => {
            let target = conn::resolve(args, role, env)?;
            tracing::debug!(addr = %target.addr.value, region = %target.region.value, "connecting");
            let conn = Connection::open(&target, args.connect_timeout)
                .await?
                .with_request_timeout(args.timeout);
            run_connected(command, &conn, ctx).await
        }
    }
}

/// Runs a command that talks to a node over an open connection. End-to-end tests call this
/// with a [`Connection`] of their own.
pub async fn run_connected(
    command: &Command,
    conn: &Connection,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    match command {
        Command::Pending { max_age, .. } => {
            let report = pending::fetch(conn, *max_age).await?;
            emit(ctx, &report)
        }
        Command::Channels => emit(ctx, &admin::channels(conn).await?),
        Command::Record { id, .. } => emit(ctx, &admin::record(conn, id).await?),
        Command::Stats => emit(ctx, &admin::stats(conn).await?),
        Command::Lookup { id, .. } => {
            let report = if id == "-" {
                let id = read_secret_line(ctx.stdin)?;
                admin::lookup(conn, &id).await?
            } else {
                admin::lookup(conn, id).await?
            };
            emit(ctx, &report)
        }
        Command::Disclosure { id } => {
            let report = if id == "-" {
                let id = read_secret_line(ctx.stdin)?;
                admin::disclosure(conn, &id).await?
            } else {
                admin::disclosure(conn, id).await?
            };
            emit(ctx, &report)
        }
        Command::Submit {
            file,
            format,
            batch,
            errors,
            ..
        } => {
            let opts = submit::Options {
                file: file.clone(),
                format: *format,
                batch: usize::try_from(*batch).unwrap_or(200),
                errors: errors.clone(),
                progress: ctx.progress,
            };
            let summary = submit::run(conn, &opts).await?;
            emit(ctx, &summary)
        }
        Command::Reconcile {
            sub: Some(ReconcileCommand::Reports { limit, .. }),
            ..
        } => emit(ctx, &admin::reconcile_reports(conn, *limit).await?),
        Command::Reconcile { peer, recover, .. } => {
            admin::reconcile(conn, *peer, *recover, ctx).await
        }
        Command::Verify => emit(ctx, &admin::verify(conn).await?),
        Command::Resume { channel } => emit(ctx, &admin::resume(conn, channel).await?),
        Command::Audit { since, limit, .. } => {
            let since_ms = match since {
                Some(s) => human::parse_since(s, human::now_ms())
                    .map_err(anyhow::Error::msg)
                    .context("reading --since")?,
                None => 0,
            };
            emit(ctx, &admin::audit(conn, since_ms, *limit).await?)
        }
        Command::Keys(_) | Command::Certs(_) | Command::Agreement(_) | Command::Directory(_) => {
            run_offline(command, ctx)
        }
    }
}

/// Runs a command that needs no node.
pub fn run_offline(command: &Command, ctx: &mut Ctx<'_>) -> anyhow::Result<Outcome> {
    match command {
        Command::Keys(k) => emit(ctx, &offline::keys(k)?),
        Command::Certs(c) => emit(ctx, &offline::certs(c)?),
        Command::Agreement(a) => agreement::run(a, ctx),
        Command::Directory(d) => directory::run(d, ctx),
        other => anyhow::bail!("`{other:?}` needs a connection to a node"),
    }
}

/// Reads one line (a national ID) from `input`, without echoing it anywhere.
fn read_secret_line(input: &mut dyn BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("reading the national id from standard input")?;
    let id = line.trim().to_owned();
    anyhow::ensure!(
        !id.is_empty(),
        "no national id on standard input; pipe it in, e.g. `interflowctl lookup --id - < id.txt`"
    );
    Ok(id)
}
