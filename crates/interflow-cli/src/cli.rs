//! The command line: clap definitions only. Parsing values into domain types happens here
//! (durations, region codes); what a command does lives in its own module.
//!
//! [`Command`] is two nested enums flattened into one level, so the command line is flat while
//! one match decides online or offline: [`NodeCommand`] talks to a node's local listener,
//! [`OfflineCommand`] (defined beside the offline tools, in [`crate::offline`]) only touches
//! files.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use interflow_core::RegionCode;
use interflow_core::region::RegionCodeError;

use interflow_tls::Role;

use crate::commands::inbox::args::InboxCommand;
use crate::human::parse_duration;
use crate::offline::OfflineCommand;

const AFTER_HELP: &str = "\
Connection (commands that talk to a node; the flags go before or after the command): each
setting comes from the flag, else the environment variable, else the node config file
(`--config`) or the dev federation (`--dev-node`). Admin commands present
`[client] admin_cert/admin_key`, `submit` presents `[client] intake_cert/intake_key`, `inbox`
commands `[client] inbox_cert/inbox_key`.

Exit codes: 0 success; 1 the command ran and found a problem (`pending` older than
`--max-age`, `submit` rows that failed, `verify` inconsistencies, `reconcile` anomalies,
`inbox consumers` items unacknowledged longer than `--max-age`, `inbox match` invalid lines);
2 usage, configuration, connection or server errors.

`--json` prints one JSON document (`reconcile`: one JSON object per line); field names are
stable and listed in crates/interflow-cli/README.md.";

/// The operator's tool for an interflow node: what is stuck, since when, and why.
#[derive(Parser, Debug, Clone)]
#[command(name = "interflowctl", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    // The connection settings of the commands that talk to a node: global, so they may come
    // before or after the command.
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the node's local listener is and which certificates to present.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ConnArgs {
    /// Address of the node's local listener, `host:port` [env: INTERFLOW_ADDR].
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        value_name = "HOST:PORT"
    )]
    pub addr: Option<String>,
    /// The node's local CA certificate (PEM) [env: INTERFLOW_CA].
    #[arg(long, global = true, help_heading = "Connection", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) with the admin role, or intake for `submit` [env: INTERFLOW_CERT].
    #[arg(long, global = true, help_heading = "Connection", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Private key of the client certificate (PEM) [env: INTERFLOW_KEY].
    #[arg(long, global = true, help_heading = "Connection", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// The node's region code; the TLS server name is `<region>.local.interflow`
    /// [env: INTERFLOW_REGION].
    #[arg(long, global = true, help_heading = "Connection", value_name = "CODE")]
    pub region: Option<String>,
    /// Node config file: reads `region`, `local.listen`, `tls.local_ca` and `[client]`.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        value_name = "PATH",
        conflicts_with = "dev_node"
    )]
    pub config: Option<PathBuf>,
    /// A node of the dev federation written by `interflow dev`, by region code.
    #[arg(long, global = true, help_heading = "Connection", value_name = "CODE")]
    pub dev_node: Option<String>,
    /// Directory of the dev federation (`federation.json`).
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        value_name = "DIR",
        default_value = ".interflow-dev"
    )]
    pub dev_dir: PathBuf,
    /// How long to wait for TCP, TLS and HTTP/2 setup, e.g. `5s`.
    #[arg(long, global = true, help_heading = "Connection", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How long one request may take (a `submit` batch included; `reconcile` is not bounded).
    #[arg(long, global = true, help_heading = "Connection", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Cli {
    /// Checks what clap cannot see across the levels of the command line: global arguments
    /// that conflict when one is given before the command and the other after it.
    pub fn check(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory as _;
        if self.conn.config.is_some() && self.conn.dev_node.is_some() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "the argument '--config <PATH>' cannot be used with '--dev-node <CODE>'",
            ));
        }
        Ok(())
    }
}

/// The value parser of an offline command's `--region`. That flag is also the global
/// connection flag `--region`, and clap keeps one value type per argument across the levels of
/// a command line, so the code is checked here as a [`RegionCode`] but kept as text; [`region`]
/// reads it back.
pub(crate) fn region_code(s: &str) -> Result<String, RegionCodeError> {
    RegionCode::parse(s).map(|code| code.to_string())
}

/// The region code of an offline command's `--region` (checked when parsing).
pub fn region(code: &str) -> anyhow::Result<RegionCode> {
    RegionCode::parse(code).map_err(|e| anyhow::anyhow!("invalid region code `{code}`: {e}"))
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    #[command(flatten)]
    Node(NodeCommand),
    #[command(flatten)]
    Offline(OfflineCommand),
    #[command(flatten)]
    Docs(crate::docs::DocsCommand),
}

/// The commands that talk to a node's local listener.
#[derive(Subcommand, Debug, Clone)]
pub enum NodeCommand {
    /// Records the destinations have not acknowledged yet, per outbound channel, worst first.
    ///
    /// Shows head, acked, pending count, the age of the oldest pending record, delivery
    /// attempts, the last delivery error and the next retry. Exits 1 when a pending record is
    /// older than `--max-age`, so it serves as a monitoring check.
    Pending {
        /// Oldest pending age that is still fine, e.g. `15m`, `1h`, `2d`.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        max_age: Duration,
    },
    /// Every channel of the node: direction, head, acknowledged position, stopped.
    Channels,
    /// One record by id: channel position, issue time, agreement, payload, signature status.
    ///
    /// The subject is shown only as the short digest the audit log uses (`ref:` and 16 hex
    /// digits), never in full.
    Record {
        /// Record id: the 64 hex digits, or a unique start of at least 8 (tables show 12).
        id: String,
        #[command(flatten)]
        why: ReadWhy,
    },
    /// Counts: records out and in, pending, equivocations, audit entries, reconcile runs.
    Stats,
    /// The awareness figures per agreement with residence notices and month of arrival: where
    /// people live, residents and how many have a current status from home; at home, arrivals
    /// answered within 7/30 days and the unanswered worklist. Counts only.
    Coverage,
    /// A person's current pregnancy and contraception status per agreement, and the timeline.
    ///
    /// The lookup is audited by the node. Only the masked ID is printed. Pass `--id -` to read
    /// the ID from standard input, which keeps it out of the shell history.
    Lookup {
        /// `-` to read the 18-character resident ID from standard input (an ID given here
        /// stays in the shell history and shows in `ps`; the CLI warns).
        #[arg(long, value_name = "NATIONAL_ID|-")]
        id: String,
        #[command(flatten)]
        why: ReadWhy,
    },
    /// Disclosure report for one person: every exchange of their records through this node
    /// (sent or received, when, under which agreement and legal basis) and every audited read
    /// of them. Audited by the node.
    Disclosure {
        /// `-` to read the 18-character resident ID from standard input (an ID given here
        /// stays in the shell history and shows in `ps`; the CLI warns).
        #[arg(long, value_name = "NATIONAL_ID|-")]
        id: String,
        #[command(flatten)]
        why: ReadWhy,
    },
    /// Submits status records from a CSV or JSONL file through `Intake.Submit`.
    ///
    /// Columns (CSV header or JSONL keys): idempotency_key, destination, national_id, kind,
    /// state, method, observed_on, expected_delivery, event_date, since, prenatal_visits,
    /// service_point, supersedes, retracted_kind. kind = pregnancy | contraception |
    /// retraction; state = not_pregnant | pregnant | delivered | pregnancy_ended; method = none
    /// | iud | implant | injectable | oral_pill | condom | sterilization | other; dates
    /// YYYY-MM-DD, expected_delivery YYYY-MM; supersedes = record id (64 hex) or empty;
    /// retracted_kind = pregnancy | contraception, required for a retraction. Every row needs
    /// its own idempotency_key: rerunning after an interruption is then safe, and rows stored
    /// before are reported as already stored. Rows are sent in batches; the node stores the
    /// valid rows of a batch atomically. Rows that fail (locally or at the node) are written
    /// to the error report with row (line number in the file), field and reason. Exits 1 if
    /// any row failed.
    Submit {
        /// Input file.
        #[arg(long)]
        file: PathBuf,
        /// Input format; by default from the file extension (`.jsonl`/`.ndjson` or CSV).
        #[arg(long, value_enum)]
        format: Option<InputFormat>,
        /// Rows per `Intake.Submit` call; capped at 1000 until the node names its
        /// `limits.max_submit_batch` (on every answer), then at that.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
        /// Error report (CSV); by default `<file stem>.errors.csv` in the working directory.
        /// Written only when a row fails; the summary says where.
        #[arg(long = "report", alias = "errors", value_name = "PATH")]
        errors: Option<PathBuf>,
    },
    /// Runs reconciliation now and prints each peer's result as it arrives, then the report.
    ///
    /// Exits 1 when the run found anomalies (unreachable peer, equivocation, bad records...).
    #[command(args_conflicts_with_subcommands = true)]
    Reconcile {
        #[command(subcommand)]
        sub: Option<ReconcileCommand>,
        /// Only this peer (region code); every peer with an active agreement by default.
        #[arg(long, value_name = "CODE")]
        peer: Option<RegionCode>,
        /// Also recover this node's own outbound feed from peers that hold more of it.
        #[arg(long)]
        recover: bool,
    },
    /// Re-checks every signature, chain link, index entry and the audit chain; exits 1 on any
    /// inconsistency.
    ///
    /// With `--with-peers`, also asks every peer for the audit head this node last signed to
    /// it (in a head statement) and compares it with the local audit chain recomputed there:
    /// a rewritten audit log shows as a mismatch (exit 1).
    Verify {
        #[arg(long)]
        with_peers: bool,
    },
    /// Lets a channel stopped after equivocation accept records again, once you have looked at
    /// the evidence (`channels` shows stopped channels; the evidence is kept). Audited.
    Resume {
        /// The channel, `ORIGIN:DESTINATION` or `ORIGIN-DESTINATION`, e.g. `110105:310115`
        /// (`110105->310115` works too, quoted: unquoted, the shell reads `>` as a redirection).
        #[arg(long, value_name = "ORIGIN:DESTINATION")]
        channel: String,
    },
    /// Re-reads the node's certificates, CRLs, directory and agreements from its config file
    /// and installs them together, as SIGHUP does. A bad file, or a directory with a lower
    /// serial than the installed one, keeps the old state and says why (exit 1). Audited.
    Reload,
    /// The federation as the node installed it: directory serial, issue and expiry times,
    /// source (file, a peer, or the data directory), members and agreements, and the last
    /// reload's outcome. Exits 1 while the directory is expired or the last reload failed.
    Federation,
    /// The inbox: records that arrived here, read by named consumers with durable cursors
    /// (presents the `inbox` client certificate, `[client] inbox_cert/inbox_key`).
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// The node's audit log: who read or changed what, and when.
    Audit {
        /// Only entries since this time: RFC 3339 (`2026-06-01T00:00:00Z`) or a duration ago
        /// (`24h`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries: the newest, newest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The oldest entries of the range instead, oldest first.
        #[arg(long)]
        oldest_first: bool,
    },
}

impl NodeCommand {
    /// The role of the client certificate the command presents.
    pub fn role(&self) -> Role {
        match self {
            NodeCommand::Submit { .. } => Role::Intake,
            NodeCommand::Inbox(_) => Role::Inbox,
            _ => Role::Admin,
        }
    }
}

#[derive(Subcommand, Debug, Clone)]
pub enum ReconcileCommand {
    /// Reports of past reconciliation runs, newest first.
    Reports {
        /// At most this many reports.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Jsonl,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use std::path::Path;

    use crate::offline::agreement::AgreementCommand;
    use crate::offline::certs::CertsCommand;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reconcile_takes_flags_or_the_reports_subcommand() {
        let cli =
            Cli::try_parse_from(["interflowctl", "reconcile", "--peer", "110105", "--recover"])
                .unwrap();
        assert!(matches!(
            cli.command,
            Command::Node(NodeCommand::Reconcile {
                sub: None,
                peer: Some(_),
                recover: true,
            })
        ));
        let cli = Cli::try_parse_from([
            "interflowctl",
            "reconcile",
            "reports",
            "--limit",
            "3",
            "--dev-node",
            "310115",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Node(NodeCommand::Reconcile {
                sub: Some(ReconcileCommand::Reports { limit: 3 }),
                ..
            })
        ));
        assert_eq!(cli.conn.dev_node.as_deref(), Some("310115"));
        assert!(Cli::try_parse_from(["interflowctl", "reconcile", "--peer", "12"]).is_err());
        assert!(
            Cli::try_parse_from([
                "interflowctl",
                "pending",
                "--config",
                "a.toml",
                "--dev-node",
                "310115"
            ])
            .is_err()
        );
        let cli =
            Cli::try_parse_from(["interflowctl", "--json", "pending", "--max-age", "15m"]).unwrap();
        assert!(cli.json);
        assert!(
            matches!(cli.command, Command::Node(NodeCommand::Pending { max_age }) if max_age == Duration::from_secs(900))
        );
    }

    #[test]
    fn connection_flags_go_before_or_after_the_command() {
        let after = Cli::try_parse_from([
            "interflowctl",
            "pending",
            "--dev-node",
            "310115",
            "--dev-dir",
            "fed",
            "--timeout",
            "5s",
        ])
        .unwrap();
        let before = Cli::try_parse_from([
            "interflowctl",
            "--dev-node",
            "310115",
            "--dev-dir",
            "fed",
            "--timeout",
            "5s",
            "pending",
        ])
        .unwrap();
        let mixed = Cli::try_parse_from([
            "interflowctl",
            "--dev-node",
            "310115",
            "pending",
            "--dev-dir",
            "fed",
            "--timeout",
            "5s",
        ])
        .unwrap();
        for cli in [&after, &before, &mixed] {
            assert_eq!(cli.conn, after.conn);
            assert_eq!(cli.conn.dev_node.as_deref(), Some("310115"));
            assert_eq!(cli.conn.dev_dir, PathBuf::from("fed"));
            assert_eq!(cli.conn.timeout, Duration::from_secs(5));
            assert_eq!(cli.conn.connect_timeout, Duration::from_secs(5));
            assert!(cli.check().is_ok());
        }
        let cli = Cli::try_parse_from([
            "interflowctl",
            "--addr",
            "127.0.0.1:7444",
            "reconcile",
            "reports",
            "--region",
            "310115",
        ])
        .unwrap();
        assert_eq!(cli.conn.addr.as_deref(), Some("127.0.0.1:7444"));
        assert_eq!(cli.conn.region.as_deref(), Some("310115"));
        // Defaults apply wherever no flag was given.
        let cli = Cli::try_parse_from(["interflowctl", "stats"]).unwrap();
        assert_eq!(cli.conn.dev_dir, PathBuf::from(".interflow-dev"));
        assert_eq!(cli.conn.timeout, Duration::from_secs(30));
    }

    #[test]
    fn config_and_dev_node_conflict_on_either_side_of_the_command() {
        assert!(
            Cli::try_parse_from([
                "interflowctl",
                "--config",
                "a.toml",
                "--dev-node",
                "310115",
                "pending"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from([
            "interflowctl",
            "--config",
            "a.toml",
            "pending",
            "--dev-node",
            "310115",
        ])
        .unwrap();
        let err = cli.check().unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(
            err.to_string()
                .contains("'--config <PATH>' cannot be used with '--dev-node <CODE>'"),
            "{err}"
        );
    }

    #[test]
    fn offline_region_and_key_flags_are_their_own() {
        // `--region` and `--key` of offline commands share their names with the global
        // connection flags; the command's own value wins and is checked as a region code.
        let cli = Cli::try_parse_from([
            "interflowctl",
            "--region",
            "440305",
            "certs",
            "node",
            "--ca-dir",
            "ca",
            "--region",
            "110105",
            "--out",
            "out",
        ])
        .unwrap();
        let Command::Offline(OfflineCommand::Certs(CertsCommand::Node { region, .. })) =
            &cli.command
        else {
            panic!("{cli:?}");
        };
        assert_eq!(region, "110105");
        let cli = Cli::try_parse_from([
            "interflowctl",
            "agreement",
            "sign",
            "--body",
            "a.toml",
            "--key",
            "a.pem",
            "--region",
            "310115",
            "--out",
            "a.pb",
        ])
        .unwrap();
        let Command::Offline(OfflineCommand::Agreement(AgreementCommand::Sign {
            key, region, ..
        })) = &cli.command
        else {
            panic!("{cli:?}");
        };
        assert_eq!(
            (key.as_path(), region.as_str()),
            (Path::new("a.pem"), "310115")
        );
        let err = Cli::try_parse_from([
            "interflowctl",
            "certs",
            "local-server",
            "--ca-dir",
            "ca",
            "--region",
            "12",
            "--out",
            "out",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            err.to_string()
                .contains("invalid value '12' for '--region <REGION>'"),
            "{err}"
        );
    }
}

/// Why a person's data is read: the node refuses reads without a purpose and writes both to
/// the audit log.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ReadWhy {
    /// Why the data is read (required).
    #[arg(long, value_enum)]
    pub purpose: Option<Purpose>,
    /// The bureau's case reference: 1 to 32 characters of `[A-Za-z0-9._-]`, never a
    /// resident ID.
    #[arg(long = "case", value_name = "REF")]
    pub case_ref: Option<String>,
}

/// `pb::Purpose` without its "unspecified".
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ServiceContinuity,
    OwnRequest,
    Correction,
    Audit,
    LegalObligation,
}
