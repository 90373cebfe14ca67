//! The store's errors, kept apart by who must act: misuse or an operator's restore (`NewerSchema`,
//! `ReadOnly`), the disk (`Poisoned`, `DiskFull`), damaged data (`Corrupt`), and the engine
//! itself. Each carries its typed source and where it happened; none carries personal data.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use interflow_core::RegionCode;
use interflow_core::record::{ChannelId, RecordError, RecordIdError};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at `{path}`: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("cannot open `{path}` for syncing: {source}")]
    SyncHandle { path: PathBuf, source: io::Error },
    #[error(
        "the store at `{path}` has schema version `{found}`, newer than this binary's `{supported}`; run a newer interflow or restore a backup made by this version"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
    #[error(
        "a durable write failed ({step}: {source}); the store refuses writes until the node is restarted"
    )]
    Poisoned {
        step: DurableStep,
        source: Arc<io::Error>,
    },
    #[error("the disk is full ({step}: {source}); writes are refused until space is freed")]
    DiskFull {
        step: DurableStep,
        source: Arc<io::Error>,
    },
    #[error("the store is closed after a failed reopen; restart the node")]
    Closed,
    #[error("the store is read-only: {0}")]
    ReadOnly(Arc<ReadOnlyReason>),
    #[error(
        "stored data is corrupt at {at}: {problem}{}",
        source.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    Corrupt {
        at: Place,
        problem: &'static str,
        #[source]
        source: Option<DecodeError>,
    },
    #[error(
        "the master key does not open the keyring `{path}` (authenticated check failed): this is not the key this data directory was created with; configure the right master key file"
    )]
    WrongMasterKey { path: PathBuf },
    #[error(
        "the data directory holds sealed records but its keyring `{path}` is missing: restore it from the backup of this directory; without it the records cannot be read"
    )]
    KeyringMissing { path: PathBuf },
    #[error("cannot read or write the keyring `{path}`: {source}")]
    Keyring { path: PathBuf, source: io::Error },
    #[error(
        "cannot rewrite the store files after sealing them (`{path}`): {source}; make room for a second copy of the store (or fix the permissions) and start again: the rewrite is finished or undone on the next start"
    )]
    Rewrite { path: PathBuf, source: io::Error },
    #[error("receipt for `{channel}` up to seq `{seq}` does not match the stored record there")]
    ReceiptMismatch { channel: ChannelId, seq: u64 },
}

impl StoreError {
    /// Whether the failure is the disk being full, so callers can answer RESOURCE_EXHAUSTED.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Engine(sled::Error::Io(e)) => io_disk_full(e),
            StoreError::DiskFull { .. } => true,
            _ => false,
        }
    }

    /// Whether the store refuses writes as a whole (an operator must act or wait for space),
    /// as opposed to one call failing.
    pub fn refuses_writes(&self) -> bool {
        matches!(
            self,
            StoreError::Poisoned { .. }
                | StoreError::DiskFull { .. }
                | StoreError::ReadOnly(_)
                | StoreError::Closed
        )
    }
}

pub(crate) fn io_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

/// The step of a durable write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableStep {
    /// sled's `apply_batch`.
    Write,
    /// sled's `flush`.
    Flush,
    /// `fsync` of the data file.
    Fsync,
}

impl fmt::Display for DurableStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurableStep::Write => "write",
            DurableStep::Flush => "flush",
            DurableStep::Fsync => "fsync",
        })
    }
}

/// Why a store opened read-only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadOnlyReason {
    #[error("channel `{channel}`: {problem}; restore from a backup or re-fetch from peers")]
    Integrity {
        channel: ChannelId,
        problem: IntegrityProblem,
    },
    #[error(
        "channel `{channel}` holds {held} records but {anchored} were durable before: the data files lost records; restore a backup, or remove `{}` to accept this state and let peers re-supply the rest",
        anchor.display()
    )]
    LostRecords {
        channel: ChannelId,
        held: u64,
        anchored: u64,
        anchor: PathBuf,
    },
}

/// How a channel's records disagree with its integrity figures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityProblem {
    #[error("seq `{found}` found where `{expected}` was expected")]
    SeqGap { found: u64, expected: u64 },
    #[error(
        "holds {count} records but its integrity figures say {recorded} (rolling hash {})",
        if *rolling_matches { "matches" } else { "differs" }
    )]
    Figures {
        count: u64,
        recorded: u64,
        rolling_matches: bool,
    },
    #[error("head is seq `{found}` but the state says `{recorded}`")]
    Head { found: u64, recorded: u64 },
    #[error("the record at head seq `{seq}` is not the one the state names")]
    HeadRecord { seq: u64 },
    #[error("a stored record cannot be read: {0}")]
    Unreadable(String),
}

/// Where in the store damaged data was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Schema,
    Record { channel: ChannelId, seq: u64 },
    RecordKey,
    IdIndex,
    SubjectIndex,
    Channel(ChannelId),
    ChannelKey,
    Intake,
    Evidence { channel: ChannelId, seq: u64 },
    Checkpoint(RegionCode),
    Report,
    Agreements,
    Audit { index: u64 },
    AuditHead,
    Inbox,
    Anchor(PathBuf),
    Data(PathBuf),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Schema => f.write_str("the schema version"),
            Place::Record { channel, seq } => write!(f, "record `{channel}` seq `{seq}`"),
            Place::RecordKey => f.write_str("a record key"),
            Place::IdIndex => f.write_str("the record id index"),
            Place::SubjectIndex => f.write_str("the subject index"),
            Place::Channel(c) => write!(f, "the state of channel `{c}`"),
            Place::ChannelKey => f.write_str("a channel key"),
            Place::Intake => f.write_str("the intake idempotency keys"),
            Place::Evidence { channel, seq } => {
                write!(f, "equivocation evidence `{channel}` seq `{seq}`")
            }
            Place::Checkpoint(peer) => write!(f, "the checkpoint of `{peer}`"),
            Place::Report => f.write_str("the reconciliation reports"),
            Place::Agreements => f.write_str("the installed agreements and terminations"),
            Place::Audit { index } => write!(f, "audit entry `{index}`"),
            Place::AuditHead => f.write_str("the audit head"),
            Place::Inbox => f.write_str("the inbox"),
            Place::Anchor(p) => write!(f, "`{}`", p.display()),
            Place::Data(p) => write!(f, "`{}`", p.display()),
        }
    }
}

/// Why stored bytes did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    RecordId(#[from] RecordIdError),
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    #[error(transparent)]
    Protobuf(#[from] prost::DecodeError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A corruption error without a decoding source.
pub(crate) fn corrupt(at: Place, problem: &'static str) -> StoreError {
    StoreError::Corrupt {
        at,
        problem,
        source: None,
    }
}

/// A corruption error caused by bytes that did not decode.
pub(crate) fn undecodable(
    at: Place,
    problem: &'static str,
    e: impl Into<DecodeError>,
) -> StoreError {
    StoreError::Corrupt {
        at,
        problem,
        source: Some(e.into()),
    }
}
