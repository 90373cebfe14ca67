//! The command line of `interflowctl inbox`: clap definitions only, beside the commands they
//! run (as the offline commands are), so `cli.rs` stays one screen of top-level commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::human::parse_duration;

/// The inbox commands: read what arrived at this node, as the bureau's own systems do.
#[derive(Subcommand, Debug, Clone)]
pub enum InboxCommand {
    /// Up to `--max` inbound records after the consumer's cursor (or `--after`), in arrival
    /// order. `--ack` acknowledges the last position shown, after printing it.
    Pull {
        #[command(flatten)]
        read: ReadArgs,
        /// At most this many items (the node caps it; 0 takes the node's default of 100).
        #[arg(long, default_value_t = 100)]
        max: u32,
        /// Acknowledge the last position shown once it is printed.
        #[arg(long)]
        ack: bool,
    },
    /// A live tail: one line per item as it arrives, until Ctrl-C or the node closes the
    /// stream. With `--ack` each line is acknowledged once printed.
    Follow {
        #[command(flatten)]
        read: ReadArgs,
        /// Acknowledge each item once it is printed.
        #[arg(long)]
        ack: bool,
    },
    /// Moves a consumer's durable cursor forward to `--position` (never back).
    Ack {
        /// The consumer's name: 1 to 64 characters `[A-Za-z0-9._-]`.
        #[arg(long)]
        consumer: String,
        /// The last position the consumer has processed.
        #[arg(long)]
        position: u64,
    },
    /// Every named consumer: cursor, items not yet acknowledged, age of the oldest of them.
    /// Exits 1 when a consumer's oldest unacknowledged item is older than `--max-age`.
    Consumers {
        /// Oldest unacknowledged age that is still fine, e.g. `15m`, `1h`, `2d`.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        max_age: Duration,
    },
    /// Which residents (national IDs, one per line, from a file or `-` for standard input)
    /// have inbound records, and their current status per kind; answered by input line
    /// number, never by ID. Audited by the node with the purpose.
    Match {
        /// File of national IDs, one per line, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        ids: PathBuf,
        /// Why the residents' data is read.
        #[arg(long, value_enum)]
        purpose: MatchPurpose,
        /// The bureau's case reference: 1 to 32 characters of `[A-Za-z0-9._-]`.
        #[arg(long = "case", value_name = "REF")]
        case_ref: Option<String>,
    },
    /// Writes items (paging until caught up) as JSON Lines, CSV, or one FHIR R4 Bundle of
    /// Observations. The export carries the full subject ref (the pseudonym under the
    /// agreement): it is the data feed for the bureau's own systems. Acknowledges nothing.
    Export {
        #[command(flatten)]
        read: ReadArgs,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output file, written with mode 0600; standard output without it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Which consumer reads, from where, and which items.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ReadArgs {
    /// The consumer's name: 1 to 64 characters `[A-Za-z0-9._-]`.
    #[arg(long)]
    pub consumer: String,
    /// Read after this position instead of after the consumer's cursor.
    #[arg(long)]
    pub after: Option<u64>,
    /// Only this kind: `pregnancy` or `contraception` (retractions of it included).
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// Only records from this origin (region code); repeatable.
    #[arg(long, value_name = "CODE")]
    pub origin: Vec<String>,
    /// Only records under this agreement id; repeatable.
    #[arg(long, value_name = "ID")]
    pub agreement: Vec<String>,
}

/// The purposes of `inbox match`: the same closed list as every read of a person.
pub use crate::cli::Purpose as MatchPurpose;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    Fhir,
}
