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
//! logging and maps the [`Outcome`] to an exit code. The commands that talk to a node live in
//! [`commands`], one module each; the offline tools in [`offline`].

pub mod cli;
pub mod commands;
pub mod conn;
pub mod docs;
pub mod human;
pub mod names;
pub mod offline;
pub mod view;

use std::io::{BufRead, IsTerminal as _, Write};

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{Cli, Command, ConnArgs, NodeCommand};
use crate::conn::Connection;
use crate::offline::OfflineCommand;
use crate::offline::agreement::AgreementCommand;

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
    match command {
        Command::Offline(OfflineCommand::Agreement(AgreementCommand::Terminate {
            agreement_id,
        })) => {
            let conn = open(args, interflow_tls::Role::Admin, env).await?;
            emit(
                ctx,
                &commands::terminate::terminate(&conn, agreement_id).await?,
            )
        }
        Command::Offline(OfflineCommand::Agreement(AgreementCommand::Install {
            file,
            pseudonym_key,
        })) => {
            let (signed, _) = offline::agreement::read_signed(file)?;
            let key = std::path::absolute(pseudonym_key)
                .with_context(|| format!("resolving `{}`", pseudonym_key.display()))?;
            let conn = open(args, interflow_tls::Role::Admin, env).await?;
            emit(
                ctx,
                &commands::terminate::install(&conn, signed, &key).await?,
            )
        }
        Command::Offline(OfflineCommand::Agreement(AgreementCommand::List)) => {
            let conn = open(args, interflow_tls::Role::Admin, env).await?;
            emit(ctx, &commands::terminate::list(&conn).await?)
        }
        Command::Offline(c) => offline::run(c, ctx),
        Command::Docs(c) => docs::run(c, ctx),
        Command::Node(c) => {
            let conn = open(args, c.role(), env).await?;
            run_connected(c, &conn, ctx).await
        }
    }
}

/// Opens the connection a node command uses, presenting the certificate of `role`.
async fn open(
    args: &ConnArgs,
    role: interflow_tls::Role,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Connection> {
    let target = conn::resolve(args, role, env)?;
    tracing::debug!(addr = %target.addr.value, region = %target.region.value, "connecting");
    Ok(Connection::open(&target, args.connect_timeout)
        .await?
        .with_request_timeout(args.timeout))
}

/// Runs a command that talks to a node over an open connection. End-to-end tests call this
/// with a [`Connection`] of their own.
pub async fn run_connected(
    command: &NodeCommand,
    conn: &Connection,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    commands::run(command, conn, ctx).await
}
