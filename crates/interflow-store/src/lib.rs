//! interflow's embedded append-only log: everything a node keeps, in one sled 0.34 database.
//!
//! Owns durability and the chain rule: a record is stored only if it links to the channel's
//! head, a second different record at a stored position is kept as equivocation evidence, and
//! every call whose result a caller will acknowledge returns only after the data is on stable
//! storage (sled `flush`, then `fsync` of the data file — sled 0.34's flush alone ends in
//! `sync_file_range`, which survives a process kill but not a power loss). A failed flush or
//! fsync poisons the store: it refuses writes until reopened, never "retry, then ack" — a full
//! disk can be reopened in-process ([`Store::recover`]); an I/O error needs a restart.
//!
//! Does not check signatures of inbound records or agreements (the caller does, with
//! `interflow-core`), never reads the clock (callers pass times), does no networking, and knows
//! no wire (protobuf) type: what it stores is either signed bytes it keeps opaque (records,
//! receipts, head statements) or its own versioned encodings. Every call blocks; async callers
//! go through a handle that runs them in `spawn_blocking`.
//!
//! Layers, one file each: `engine` (open, migrate, durable commit, poison,
//! anchor), `outbound` (sealing and receipts), `inbound` (the chain rule and evidence), `inbox`
//! (arrival order and consumer cursors), `read`,
//! `reconcile` (checkpoints and run reports), `retention`, `audit`, and `verify`.
//!
//! # Key layout
//! One tree with one-byte prefixes keeps every batch atomic (`apply_batch` on one tree)
//! without multi-tree transactions. Schema version 3 (see `seal` for the encryption):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `r` | channel(12) seq(8, BE) | sealed record: `0x01`, id(32), link(32), seq(8), issue time(8), agreement id (len 2 + UTF-8) in the clear, then nonce(24) and the XChaCha20-Poly1305 ciphertext of the `SignedRecord` bytes under the data key of (agreement id, month of issue time); associated data: the sled key and the clear part. After retention an erased-record stub (first byte `0x00`: id, link, seq, issue time) |
//! | `i` | record id(32) | channel(12) seq(8) |
//! | `c` | channel(12) | durable channel state: `0x02` + postcard (head, integrity figures, acked, stop) |
//! | `d` | channel(12) | delivery advice: `0x02` + postcard (attempts, last error, next retry); not fsynced |
//! | `s` | HMAC-SHA256(index key derived from the master key, subject ref)(32) kind(1: `1` pregnancy, `2` contraception, `3` residence) observed day(4, BE, sign-flipped; a residence notice's is the first day of its month) id(32) | channel(12) seq(8) |
//! | `j` | idempotency digest(32) (never the key) | record id(32) content hash(32) |
//! | `e` | channel(12) seq(8) id(32) | an equivocating record, sealed as under `r` |
//! | `x` | channel(12) | latest verified `SignedReceipt` bytes for an outbound channel |
//! | `h` | channel(12) | the destination's verified `SignedHeads` bytes that last advanced an outbound channel's acked seq (reconciliation without delivery) |
//! | `v` | peer region(6) | the peer's latest verified `SignedHeads` bytes (cosigned checkpoint; carries the peer's audit head, answered back by `Exchange.AuditAnchor`) |
//! | `p` | run id(8, BE) | reconciliation report: `0x02` + postcard |
//! | `n` | first inbox position(8, BE) of a run | channel(12) seq(8) arrived-at ms(8) length(4): that many inbound records in arrival order, consecutive seqs of one channel (schema 3: no length, a run of one) |
//! | `u` | consumer name | cursor position(8, BE) acked-at ms(8) |
//! | `a` | index(8, BE) | audit entry: `0x03` + postcard (with purpose, case, detail, refusal); older entries keep their bytes (`0x02` + postcard without those) (protobuf layout, frozen in `audit`) so the hash chain over them still verifies |
//! | `g` | agreement id | an agreement installed at runtime: `0x02` + postcard (retention days, `SignedAgreement` bytes, path of its pseudonym key file) |
//! | `t` | agreement id, region(6) of the terminating party | `SignedTermination` bytes, kept as evidence |
//! | `m` | name | metadata: schema version, audit head, whether older records were indexed into the inbox |
//!
//! Outside sled, in the data directory: `keyring` (the data keys, one per agreement and
//! calendar month of issue time, UTC; the file is sealed whole under the master key and
//! rewritten whole, so a destroyed key survives in no file) and the heads anchor. A period's
//! key is destroyed once the whole period is past retention (period end + retention days);
//! records of a period erased earlier lose their body in `r` at once (stub), but sled's old
//! segments may keep their ciphertext, readable with the master key until the period's key
//! goes, at most one month later.
//!
//! Residence notices (a third record kind) are stored like the other records, under the
//! prefixes above with kind byte `3` in `s`; no new prefix and no new schema: a schema-2
//! store written before them holds none, so nothing needs migrating. What status follows
//! residence needs (the latest notice, whether a status arrived after a departure, the
//! coverage counts) the node derives from a subject's records (`s`) and the inbox's arrival
//! times (`n`); nothing of it is stored.

mod agreements;
mod anchor;
mod audit;
mod engine;
mod error;
mod inbound;
mod inbox;
mod keys;
mod migrate;
mod outbound;
mod read;
mod reconcile;
mod retention;
mod rewrite;
mod seal;
mod state;
mod verify;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use engine::{DurableHeads, Engine, Poison};

pub use agreements::{InstalledAgreement, StoredTermination};
pub use audit::{AuditChainAt, AuditEntry, AuditNote, AuditPage};
pub use error::{DecodeError, DurableStep, IntegrityProblem, Place, ReadOnlyReason, StoreError};
pub use inbound::{ApplyError, ApplyOutcome, Evidence};
pub use inbox::{Arrival, CONSUMER_RULE, Cursor, InboxEntry, InboxPage, valid_consumer};
pub use outbound::{AppendOutcome, GroupAudit, HeadsAck, OutboundGroup};
pub use read::{Stats, StoredRecord};
pub use reconcile::{Anomaly, ChannelRun, PRUNE_CHUNK, ReportRetention, RunReport};
pub use retention::{ErasedRecord, Stored};
pub use seal::{KEYRING_FILE, MasterKey, MasterKeyError};
pub use state::{ChannelState, DeliveryState, PendingChannel};
pub use verify::{Problem, VerifyReport};

/// Schema version this build writes. Opening a newer one is refused; an older one is migrated.
pub const SCHEMA_VERSION: u32 = 4;

/// Default page cache: sled's own default (1 GiB) is far too large for a node.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The durability step after sled's flush. Tests replace it to observe or fail it.
pub type SyncFn = Arc<dyn Fn(&File) -> io::Result<()> + Send + Sync>;

/// How to open a store.
#[derive(Clone)]
pub struct StoreOptions {
    pub cache_capacity: u64,
    pub sync: SyncFn,
    /// Wraps the keyring of data keys that seal record bodies; kept outside the data directory.
    pub master_key: MasterKey,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl StoreOptions {
    /// The defaults (64 MiB cache, `fsync` of the data file) with the node's master key.
    pub fn new(master_key: MasterKey) -> Self {
        StoreOptions {
            cache_capacity: DEFAULT_CACHE_BYTES,
            sync: Arc::new(|f: &File| f.sync_all()),
            master_key,
        }
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The node's database. Cheap to share behind an `Arc`; all methods block.
pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    /// `None` only after a reopen failed; every call then answers `Closed`.
    engine: RwLock<Option<Arc<Engine>>>,
    /// One writer at a time: read state, build one batch, apply, make durable.
    write: Mutex<()>,
    /// One outbound append at a time (taken before `write`): records are placed and signed
    /// without the writer lock, and must not be placed twice at the same seq.
    sequencer: Mutex<()>,
    poisoned: RwLock<Option<Poison>>,
    /// Heads that are on stable storage. Nothing beyond them is served to peers, so a record
    /// that a crash could still take away never leaves the node.
    durable: RwLock<DurableHeads>,
    /// When the heads anchor was last written (at most once a second).
    anchored: Mutex<Option<std::time::Instant>>,
    /// The durable audit head, kept in memory so head statements read no disk.
    audit_head: RwLock<Option<(u64, [u8; 32])>>,
}

impl Store {
    fn from_engine(dir: &Path, opts: StoreOptions, engine: Engine, durable: DurableHeads) -> Store {
        // A head that does not decode shows in `verify_log`; statements then carry none.
        let audit_head = engine
            .db
            .get(keys::META_AUDIT_HEAD)
            .ok()
            .flatten()
            .and_then(|v| audit::decode_head(&v).ok());
        Store {
            dir: dir.to_owned(),
            opts,
            engine: RwLock::new(Some(Arc::new(engine))),
            write: Mutex::new(()),
            sequencer: Mutex::new(()),
            poisoned: RwLock::new(None),
            durable: RwLock::new(durable),
            anchored: Mutex::new(None),
            audit_head: RwLock::new(audit_head),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A clean close leaves an exact anchor.
        self.write_anchor();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
