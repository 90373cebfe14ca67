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
//! `interflow-core`), never reads the clock (callers pass times), and does no networking.
//! Every call blocks; async callers use `spawn_blocking`.

mod anchor;
mod audit;
mod erase;
mod keys;
mod state;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use interflow_core::RegionCode;
use interflow_core::payload::Kind;
use interflow_core::pb;
use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::{
    ChannelId, DecodedRecord, NewRecord, RecordError, RecordId, VerifiedRecord,
};
use interflow_core::statement::{Heads, Receipt};
use interflow_core::time::UnixMillis;
use parking_lot::{Mutex, RwLock};
use prost::Message;

pub use audit::AuditEntry;
pub use erase::{ErasedRecord, Stored};
pub use state::{ChannelState, PendingChannel};
pub use verify::{Problem, VerifyReport};

/// Schema version this build writes. Opening a newer one is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// Default page cache: sled's own default (1 GiB) is far too large for a node.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The durability step after sled's flush. Tests replace it to observe or fail it.
pub type SyncFn = Arc<dyn Fn(&File) -> io::Result<()> + Send + Sync>;

/// How to open a store.
#[derive(Clone)]
pub struct StoreOptions {
    pub cache_capacity: u64,
    pub sync: SyncFn,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("cache_capacity", &self.cache_capacity)
            .finish_non_exhaustive()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: DEFAULT_CACHE_BYTES,
            sync: Arc::new(|f: &File| f.sync_all()),
        }
    }
}

/// Store failures, kept apart by who must act: misuse, corruption, I/O.
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
    #[error("a durable write failed ({0}); the store refuses writes until the node is restarted")]
    Poisoned(String),
    #[error("the disk is full ({0}); writes are refused until space is freed")]
    DiskFull(String),
    #[error("the store is closed after a failed reopen: {0}")]
    Closed(String),
    #[error("the store is read-only: {0}")]
    ReadOnly(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("receipt for `{channel}` up to seq `{seq}` does not match the stored record there")]
    ReceiptMismatch { channel: ChannelId, seq: u64 },
}

impl StoreError {
    /// Whether the failure is the disk being full, so callers can answer RESOURCE_EXHAUSTED.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Engine(sled::Error::Io(e)) => io_disk_full(e),
            StoreError::DiskFull(_) => true,
            _ => false,
        }
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

fn sled_disk_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io_disk_full(io))
}

/// Why writes stopped after a failed durable write.
#[derive(Debug, Clone)]
struct Poison {
    what: String,
    /// Out of space: the write was refused, not lost, so a reopen may resume writes.
    disk_full: bool,
}

/// Durable head `(seq, id)` per channel.
pub(crate) type DurableHeads = HashMap<ChannelId, (u64, RecordId)>;

/// The open database: what a reopen replaces.
struct Engine {
    db: sled::Db,
    /// Opened once; `fsync` goes through it after each sled flush.
    data_file: File,
    /// Set when the integrity figures did not match on open.
    read_only: Option<String>,
}

impl Engine {
    /// Opens sled, the sync handle and checks schema and integrity; returns the durable heads.
    fn open(dir: &Path, opts: &StoreOptions) -> Result<(Engine, DurableHeads)> {
        let created = !dir.join("db").exists();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_capacity)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.to_owned(),
                source,
            })?;
        let data_path = dir.join("db");
        let data_file = File::open(&data_path).map_err(|source| StoreError::SyncHandle {
            path: data_path.clone(),
            source,
        })?;
        if created {
            // The new files' directory entries must survive a power loss too.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::SyncHandle {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let mut engine = Engine {
            db,
            data_file,
            read_only: None,
        };
        match engine.db.get(keys::META_SCHEMA)? {
            None => {
                if engine.db.iter().next().is_some() {
                    return Err(corrupt("data without a schema version"));
                }
                // Every store writes its schema version first, so an existing data file that
                // reads back empty lost its contents (sled drops a log from a damaged entry
                // on): refuse rather than start over as if new.
                if !created {
                    return Err(StoreError::Corrupt(format!(
                        "`{}` exists but reads back empty: the data files are damaged; restore a backup, or move the directory away to start empty and let peers re-supply the records",
                        dir.display()
                    )));
                }
                engine
                    .db
                    .insert(keys::META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                engine.db.flush()?;
                (opts.sync)(&engine.data_file)
                    .map_err(|e| StoreError::Engine(sled::Error::Io(e)))?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("schema version is not 4 bytes"))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: dir.to_owned(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        let mut durable = HashMap::new();
        for kv in engine.db.scan_prefix([keys::CHANNEL]) {
            let (k, v) = kv?;
            let c = keys::parse_channel(&k[1..]).ok_or_else(|| corrupt("bad channel key"))?;
            let st = ChannelState::decode(&v)?;
            durable.insert(c, (st.head_seq, st.head_hash()?));
            if let Err(reason) = verify::check_channel_integrity(&engine.db, c, &st) {
                tracing::error!(channel = %c, %reason, "store integrity check failed; opening read-only");
                engine.read_only = Some(format!(
                    "channel `{c}`: {reason}; restore from a backup or re-fetch from peers"
                ));
            }
        }
        Ok((engine, durable))
    }
}

impl std::ops::Deref for Engine {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

/// A submission for an outbound channel.
#[derive(Debug, Clone)]
pub struct Submission {
    pub record: NewRecord,
    pub idempotency_key: String,
}

/// What happened to one submission.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    Stored(RecordId),
    /// The key was seen before with the same content; nothing new was stored.
    Duplicate(RecordId),
    /// The key was seen before with different content.
    Conflict,
    /// The record could not be sealed (a bug in the caller's validation).
    Invalid(RecordError),
}

/// What happened to one inbound record that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Stored,
    /// The identical record was already stored.
    Duplicate,
}

/// Why an inbound record was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("seq `{seq}` leaves a gap after head `{head}`")]
    Gap { head: u64, seq: u64 },
    #[error("seq `{seq}` does not link to the record at seq `{}`", seq - 1)]
    ChainBroken { seq: u64 },
    #[error("a different record is already stored at seq `{seq}` (equivocation)")]
    Equivocation {
        seq: u64,
        stored: RecordId,
        received: RecordId,
    },
    #[error("channel is stopped: {0}")]
    ChannelStopped(String),
}

impl ApplyError {
    pub fn reject_reason(&self) -> pb::RejectReason {
        match self {
            ApplyError::Gap { .. } => pb::RejectReason::ChainGap,
            ApplyError::ChainBroken { .. } => pb::RejectReason::ChainBroken,
            ApplyError::Equivocation { .. } => pb::RejectReason::Equivocation,
            ApplyError::ChannelStopped(_) => pb::RejectReason::ChannelStopped,
        }
    }
}

/// An equivocation proof: two different records signed for one channel position.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub channel: ChannelId,
    pub seq: u64,
    pub stored: pb::SignedRecord,
    pub received: pb::SignedRecord,
}

/// The node's database. Cheap to share behind an `Arc`; all methods block.
pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    /// `None` only after a reopen failed; every call then answers `Closed`.
    engine: RwLock<Option<Arc<Engine>>>,
    /// One writer at a time: read state, build one batch, apply, make durable.
    write: Mutex<()>,
    poisoned: RwLock<Option<Poison>>,
    /// Heads that are on stable storage. Nothing beyond them is served to peers, so a record
    /// that a crash could still take away never leaves the node.
    durable: RwLock<DurableHeads>,
    /// When the heads anchor was last written (at most once a second).
    anchored: Mutex<Option<std::time::Instant>>,
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

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn decode_stored(bytes: &[u8]) -> Result<DecodedRecord> {
    let signed = pb::SignedRecord::decode(bytes)
        .map_err(|e| corrupt(format!("stored record does not decode: {e}")))?;
    DecodedRecord::decode(signed).map_err(|e| corrupt(format!("stored record is invalid: {e}")))
}

fn observed_days(r: &DecodedRecord) -> i32 {
    r.payload()
        .observed_on()
        .map(|d| (d - chrono_epoch()).num_days() as i32)
        .unwrap_or(i32::MIN)
}

fn chrono_epoch() -> chrono::NaiveDate {
    chrono::NaiveDate::default()
}

impl Store {
    /// Opens (or creates) the store in `dir`, checks the schema version and the integrity
    /// figures of every channel. A mismatch opens the store read-only, with the reason.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let (mut engine, durable) = Engine::open(dir, &opts)?;
        if let Some(lost) = anchor::check(dir, &durable)? {
            tracing::error!(reason = %lost, "the store holds less than it had made durable; opening read-only");
            engine.read_only.get_or_insert(lost);
        }
        Ok(Store {
            dir: dir.to_owned(),
            opts,
            engine: RwLock::new(Some(Arc::new(engine))),
            write: Mutex::new(()),
            poisoned: RwLock::new(None),
            durable: RwLock::new(durable),
            anchored: Mutex::new(None),
        })
    }

    /// The open engine, shared for the length of one call.
    fn db(&self) -> Result<Arc<Engine>> {
        self.engine
            .read()
            .clone()
            .ok_or_else(|| StoreError::Closed("restart the node".into()))
    }

    /// After the disk filled up, closes and reopens the database from what is on disk, so
    /// that writes can resume once space is free. Returns `Ok(false)` when there is nothing to
    /// recover, the disk is still full, or another call still uses the engine (try later). Other failed
    /// durable writes (an I/O error) are not recovered in-process: after a failed fsync the
    /// page cache cannot be trusted, so those need a restart.
    pub fn recover(&self) -> Result<bool> {
        let _w = self.write.lock();
        match &*self.poisoned.read() {
            Some(p) if p.disk_full => {}
            _ => return Ok(false),
        }
        let mut slot = self.engine.write();
        if let Some(e) = slot.as_ref() {
            if Arc::strong_count(e) > 1 {
                return Ok(false);
            }
            // Only once a flush and a sync go through again is there space to resume; until
            // then the old engine keeps serving reads.
            if e.db.flush().is_err() || (self.opts.sync)(&e.data_file).is_err() {
                return Ok(false);
            }
        }
        // Closing releases sled's file lock, so the same directory can be opened again.
        drop(slot.take());
        let (engine, durable) = Engine::open(&self.dir, &self.opts)?;
        // Whatever the failed batch left is either durable now or gone: sync before serving.
        engine.db.flush()?;
        (self.opts.sync)(&engine.data_file).map_err(|e| StoreError::Engine(sled::Error::Io(e)))?;
        *slot = Some(Arc::new(engine));
        *self.durable.write() = durable;
        *self.poisoned.write() = None;
        tracing::info!(dir = %self.dir.display(), "store reopened after the disk filled up; writes resume");
        Ok(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the store refuses writes, if it does.
    pub fn write_refusal(&self) -> Option<String> {
        if let Some(p) = self.poisoned.read().clone() {
            return Some(p.what);
        }
        match self.db() {
            Ok(e) => e.read_only.clone(),
            Err(e) => Some(e.to_string()),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(p) = self.poisoned.read().clone() {
            return Err(if p.disk_full {
                StoreError::DiskFull(p.what)
            } else {
                StoreError::Poisoned(p.what)
            });
        }
        if let Some(r) = &self.db()?.read_only {
            return Err(StoreError::ReadOnly(r.clone()));
        }
        Ok(())
    }

    fn poison(&self, what: String, disk_full: bool) -> StoreError {
        if disk_full {
            tracing::error!(error = %what, "disk full; refusing writes until space is freed");
        } else {
            tracing::error!(error = %what, "durable write failed; refusing writes until restart");
        }
        *self.poisoned.write() = Some(Poison {
            what: what.clone(),
            disk_full,
        });
        if disk_full {
            StoreError::DiskFull(what)
        } else {
            StoreError::Poisoned(what)
        }
    }

    /// sled flush, then fsync of the data file. Any failure poisons the store.
    fn make_durable(&self) -> Result<()> {
        let e = self.db()?;
        if let Err(err) = e.db.flush() {
            return Err(self.poison(format!("flush: {err}"), sled_disk_full(&err)));
        }
        if let Err(err) = (self.opts.sync)(&e.data_file) {
            return Err(self.poison(format!("fsync: {err}"), io_disk_full(&err)));
        }
        Ok(())
    }

    /// Applies one batch atomically and makes it durable. Caller holds the write lock.
    fn commit(&self, batch: sled::Batch) -> Result<()> {
        if let Err(err) = self.db()?.apply_batch(batch) {
            return Err(self.poison(format!("write: {err}"), sled_disk_full(&err)));
        }
        self.make_durable()
    }

    fn publish_heads(&self, heads: impl IntoIterator<Item = (ChannelId, u64, RecordId)>) {
        {
            let mut d = self.durable.write();
            for (c, seq, hash) in heads {
                d.insert(c, (seq, hash));
            }
        }
        let mut last = self.anchored.lock();
        if last.is_none_or(|t| t.elapsed() >= anchor::INTERVAL) {
            *last = Some(std::time::Instant::now());
            self.write_anchor();
        }
    }

    /// Records the durable heads outside sled (best effort; see `anchor`).
    fn write_anchor(&self) {
        let heads = self.durable.read().clone();
        if let Err(e) = anchor::write(&self.dir, &heads) {
            tracing::warn!(error = %e, "cannot write the heads anchor");
        }
    }

    // ---- channel state -------------------------------------------------------------------

    /// The stored state of a channel (default when it holds nothing yet).
    pub fn channel_state(&self, c: ChannelId) -> Result<ChannelState> {
        match self.db()?.get(keys::channel(c))? {
            Some(v) => ChannelState::decode(&v),
            None => Ok(ChannelState::default()),
        }
    }

    /// Every channel this store knows, with its state.
    pub fn channels(&self) -> Result<Vec<(ChannelId, ChannelState)>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::CHANNEL]) {
            let (k, v) = kv?;
            let c = keys::parse_channel(&k[1..]).ok_or_else(|| corrupt("bad channel key"))?;
            out.push((c, ChannelState::decode(&v)?));
        }
        Ok(out)
    }

    /// The durable head `(seq, id)` of a channel; `(0, zero)` when empty.
    pub fn head(&self, c: ChannelId) -> (u64, RecordId) {
        self.durable
            .read()
            .get(&c)
            .copied()
            .unwrap_or((0, RecordId::ZERO))
    }

    // ---- outbound ----------------------------------------------------------------------

    /// Seals and appends a batch of submissions in one durable write: each new record gets the
    /// next seq of its channel and links to the previous one. Idempotency keys make a
    /// resubmission return the first record's id; a key reused with other content conflicts.
    pub fn append_outbound(
        &self,
        key: &SigningKey,
        items: &[Submission],
    ) -> Result<Vec<AppendOutcome>> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut states: BTreeMap<ChannelId, ChannelState> = BTreeMap::new();
        let mut seen: HashMap<&str, (RecordId, [u8; 32])> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let hash = item.record.content_hash();
            let prior = match seen.get(item.idempotency_key.as_str()) {
                Some(p) => Some(*p),
                None => self.intake_entry(&item.idempotency_key)?,
            };
            if let Some((rid, h)) = prior {
                out.push(if h == hash {
                    AppendOutcome::Duplicate(rid)
                } else {
                    AppendOutcome::Conflict
                });
                continue;
            }
            let c = item.record.channel;
            let st = match states.entry(c) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.channel_state(c)?),
            };
            let seq = st.head_seq + 1;
            let rec = match item.record.seal(seq, st.head_hash()?, key) {
                Ok(r) => r,
                Err(e) => {
                    out.push(AppendOutcome::Invalid(e));
                    continue;
                }
            };
            self.stage_record(&mut batch, &rec, st)?;
            let mut v = Vec::with_capacity(64);
            v.extend_from_slice(rec.id().as_bytes());
            v.extend_from_slice(&hash);
            batch.insert(keys::intake(&item.idempotency_key), v);
            seen.insert(&item.idempotency_key, (rec.id(), hash));
            out.push(AppendOutcome::Stored(rec.id()));
        }
        if states.is_empty() {
            return Ok(out);
        }
        for (c, st) in &states {
            batch.insert(keys::channel(*c), st.encode());
        }
        self.commit(batch)?;
        let heads: Vec<_> = states
            .iter()
            .map(|(c, st)| Ok((*c, st.head_seq, st.head_hash()?)))
            .collect::<Result<_>>()?;
        self.publish_heads(heads);
        Ok(out)
    }

    fn intake_entry(&self, key: &str) -> Result<Option<(RecordId, [u8; 32])>> {
        let Some(v) = self.db()?.get(keys::intake(key))? else {
            return Ok(None);
        };
        if v.len() != 64 {
            return Err(corrupt("intake entry is not 64 bytes"));
        }
        let rid = RecordId::try_from(&v[..32]).map_err(|e| corrupt(e.to_string()))?;
        let mut h = [0u8; 32];
        h.copy_from_slice(&v[32..]);
        Ok(Some((rid, h)))
    }

    /// Puts a record, its indexes and the advanced state into `batch`.
    fn stage_record(
        &self,
        batch: &mut sled::Batch,
        rec: &DecodedRecord,
        st: &mut ChannelState,
    ) -> Result<()> {
        let c = rec.channel();
        batch.insert(keys::record(c, rec.seq()), rec.signed().encode_to_vec());
        batch.insert(keys::id(rec.id()), keys::location(c, rec.seq()).to_vec());
        batch.insert(
            keys::subject(
                rec.subject().as_bytes(),
                rec.kind(),
                observed_days(rec),
                rec.id(),
            ),
            keys::location(c, rec.seq()).to_vec(),
        );
        st.advance(rec.seq(), rec.id())
    }

    /// Records a verified delivery receipt for an outbound channel: the acked seq only moves
    /// forward, and the latest receipt is kept as proof of delivery.
    pub fn record_receipt(&self, receipt: &Receipt, signed: &pb::SignedReceipt) -> Result<bool> {
        let _w = self.write.lock();
        self.check_writable()?;
        let c = receipt.channel;
        let mut st = self.channel_state(c)?;
        if receipt.acked_seq <= st.acked_seq {
            return Ok(false);
        }
        let stored = self.entry_at(c, receipt.acked_seq)?;
        if stored.map(|r| r.id()) != Some(receipt.head_hash) {
            return Err(StoreError::ReceiptMismatch {
                channel: c,
                seq: receipt.acked_seq,
            });
        }
        st.acked_seq = receipt.acked_seq;
        st.attempts = 0;
        st.last_error = None;
        st.next_attempt_ms = None;
        let mut batch = sled::Batch::default();
        batch.insert(keys::channel(c), st.encode());
        batch.insert(keys::receipt(c), signed.encode_to_vec());
        self.commit(batch)?;
        Ok(true)
    }

    /// The latest receipt for an outbound channel.
    pub fn receipt(&self, c: ChannelId) -> Result<Option<pb::SignedReceipt>> {
        self.db()?
            .get(keys::receipt(c))?
            .map(|v| pb::SignedReceipt::decode(v.as_ref()).map_err(|e| corrupt(e.to_string())))
            .transpose()
    }

    /// Notes a failed or successful delivery attempt. Not forced to disk: it is advice for
    /// operators and the scheduler, rebuilt by the next attempt after a crash.
    pub fn set_delivery_state(
        &self,
        c: ChannelId,
        attempts: u32,
        last_error: Option<String>,
        next_attempt_ms: Option<UnixMillis>,
    ) -> Result<()> {
        let _w = self.write.lock();
        let mut st = self.channel_state(c)?;
        st.attempts = attempts;
        st.last_error = last_error;
        st.next_attempt_ms = next_attempt_ms;
        self.db()?.insert(keys::channel(c), st.encode())?;
        Ok(())
    }

    /// Per outbound channel of `me`: what the destination has not acknowledged yet.
    pub fn pending(&self, me: RegionCode) -> Result<Vec<PendingChannel>> {
        let mut out = Vec::new();
        for (c, st) in self.channels()? {
            if c.origin != me {
                continue;
            }
            let (head, _) = self.head(c);
            let pending_count = head.saturating_sub(st.acked_seq);
            let oldest = if pending_count > 0 {
                self.entry_at(c, st.acked_seq + 1)?
                    .map(|r| r.issued_at_ms())
            } else {
                None
            };
            out.push(PendingChannel {
                channel: c,
                head_seq: head,
                acked_seq: st.acked_seq,
                pending_count,
                oldest_pending_issued_at_ms: oldest,
                attempts: st.attempts,
                last_error: st.last_error.clone(),
                next_attempt_ms: st.next_attempt_ms,
            });
        }
        Ok(out)
    }

    // ---- inbound -----------------------------------------------------------------------

    /// Applies verified records in order, in one durable write. Each gets its own outcome:
    /// an identical stored record is a duplicate; a different one at a stored seq is
    /// equivocation (kept as evidence, and the channel stops); a seq past head + 1 is a gap;
    /// a record that does not link to the head is refused.
    pub fn apply(&self, recs: &[VerifiedRecord]) -> Result<Vec<Result<ApplyOutcome, ApplyError>>> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut states: BTreeMap<ChannelId, ChannelState> = BTreeMap::new();
        let mut staged: HashMap<(ChannelId, u64), RecordId> = HashMap::new();
        let mut dirty = false;
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let c = rec.channel();
            let st = match states.entry(c) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.channel_state(c)?),
            };
            if let Some(reason) = &st.stopped {
                out.push(Err(ApplyError::ChannelStopped(reason.clone())));
                continue;
            }
            let seq = rec.seq();
            if seq <= st.head_seq {
                let stored = match staged.get(&(c, seq)) {
                    Some(id) => *id,
                    None => self
                        .entry_at(c, seq)?
                        .ok_or_else(|| {
                            corrupt(format!(
                                "channel `{c}` has no record at seq `{seq}` below its head"
                            ))
                        })?
                        .id(),
                };
                if stored == rec.id() {
                    out.push(Ok(ApplyOutcome::Duplicate));
                } else {
                    batch.insert(
                        keys::evidence(c, seq, rec.id()),
                        rec.signed().encode_to_vec(),
                    );
                    let reason = format!(
                        "equivocation at seq {seq}: record {} differs from stored {}",
                        rec.id(),
                        stored
                    );
                    tracing::warn!(channel = %c, seq, "equivocation: a second record for a stored seq; channel stopped");
                    st.stopped = Some(reason);
                    dirty = true;
                    out.push(Err(ApplyError::Equivocation {
                        seq,
                        stored,
                        received: rec.id(),
                    }));
                }
                continue;
            }
            if seq > st.head_seq + 1 {
                out.push(Err(ApplyError::Gap {
                    head: st.head_seq,
                    seq,
                }));
                continue;
            }
            if rec.prev_hash() != st.head_hash()? {
                out.push(Err(ApplyError::ChainBroken { seq }));
                continue;
            }
            self.stage_record(&mut batch, rec, st)?;
            staged.insert((c, seq), rec.id());
            dirty = true;
            out.push(Ok(ApplyOutcome::Stored));
        }
        if dirty {
            for (c, st) in &states {
                batch.insert(keys::channel(*c), st.encode());
            }
            self.commit(batch)?;
            let heads: Vec<_> = states
                .iter()
                .map(|(c, st)| Ok((*c, st.head_seq, st.head_hash()?)))
                .collect::<Result<_>>()?;
            self.publish_heads(heads);
        }
        Ok(out)
    }

    /// Equivocation evidence kept for a channel.
    pub fn evidence(&self, c: ChannelId) -> Result<Vec<Evidence>> {
        let mut out = Vec::new();
        let mut prefix = vec![keys::EVIDENCE];
        prefix.extend_from_slice(&keys::channel_bytes(c));
        for kv in self.db()?.scan_prefix(prefix) {
            let (k, v) = kv?;
            let (_, seq) =
                keys::parse_location(&k[1..21]).ok_or_else(|| corrupt("bad evidence key"))?;
            let received =
                pb::SignedRecord::decode(v.as_ref()).map_err(|e| corrupt(e.to_string()))?;
            // A stored record erased at the end of its retention takes that half of the proof.
            let Some(stored) = self
                .entry_at(c, seq)?
                .ok_or_else(|| corrupt("evidence without the stored record"))?
                .record()
            else {
                continue;
            };
            let stored = stored.into_signed();
            out.push(Evidence {
                channel: c,
                seq,
                stored,
                received,
            });
        }
        Ok(out)
    }

    /// Lets a channel stopped by equivocation accept records again (an operator's decision).
    pub fn clear_stop(&self, c: ChannelId) -> Result<()> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut st = self.channel_state(c)?;
        st.stopped = None;
        let mut batch = sled::Batch::default();
        batch.insert(keys::channel(c), st.encode());
        self.commit(batch)
    }

    // ---- reads -------------------------------------------------------------------------

    /// What is stored at `(channel, seq)` (the record or its erased stub), durable or not.
    pub fn entry_at(&self, c: ChannelId, seq: u64) -> Result<Option<Stored>> {
        self.db()?
            .get(keys::record(c, seq))?
            .map(|v| erase::decode_entry(c, &v))
            .transpose()
    }

    /// The record at `(channel, seq)`; `None` when absent or erased.
    pub fn record_at(&self, c: ChannelId, seq: u64) -> Result<Option<DecodedRecord>> {
        Ok(self.entry_at(c, seq)?.and_then(Stored::record))
    }

    /// What is stored for a record id: the record or its erased stub.
    pub fn get_entry(&self, id: RecordId) -> Result<Option<Stored>> {
        let Some(loc) = self.db()?.get(keys::id(id))? else {
            return Ok(None);
        };
        let (c, seq) = keys::parse_location(&loc).ok_or_else(|| corrupt("bad id index entry"))?;
        let entry = self
            .entry_at(c, seq)?
            .ok_or_else(|| corrupt(format!("id index points at missing `{c}` seq `{seq}`")))?;
        if entry.id() != id {
            return Err(corrupt(format!(
                "id index for `{id}` points at another record"
            )));
        }
        Ok(Some(entry))
    }

    /// A record by id; `None` when unknown or erased.
    pub fn get(&self, id: RecordId) -> Result<Option<DecodedRecord>> {
        Ok(self.get_entry(id)?.and_then(Stored::record))
    }

    /// Up to `limit` durable records of a channel from `from_seq` on, in order, stopping before
    /// the first erased one (an erased record cannot be re-sent).
    pub fn records_from(
        &self,
        c: ChannelId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<DecodedRecord>> {
        let (head, _) = self.head(c);
        let from = from_seq.max(1);
        if from > head {
            return Ok(Vec::new());
        }
        let end = head.min(from.saturating_add(limit as u64).saturating_sub(1));
        let mut out = Vec::with_capacity((end - from + 1) as usize);
        for kv in self
            .db()?
            .range(keys::record(c, from)..=keys::record(c, end))
        {
            let (_, v) = kv?;
            match erase::decode_entry(c, &v)? {
                Stored::Record(r) => out.push(r),
                Stored::Erased(_) => break,
            }
        }
        Ok(out)
    }

    /// Every record of a subject (all kinds), ordered by kind then observed date.
    pub fn subject_records(&self, subject: &SubjectRef) -> Result<Vec<DecodedRecord>> {
        let mut out = Vec::new();
        for kv in self
            .db()?
            .scan_prefix(keys::subject_prefix(subject.as_bytes()))
        {
            let (_, loc) = kv?;
            let (c, seq) =
                keys::parse_location(&loc).ok_or_else(|| corrupt("bad subject index entry"))?;
            let entry = self.entry_at(c, seq)?.ok_or_else(|| {
                corrupt(format!("subject index points at missing `{c}` seq `{seq}`"))
            })?;
            // Erasure removes the index entry with the body; a leftover one finds nothing.
            out.extend(entry.record());
        }
        Ok(out)
    }

    /// The current record of `kind` for a subject: the latest by observed date (then issue
    /// time) among records that no later record corrects or retracts.
    pub fn current_status(
        &self,
        subject: &SubjectRef,
        kind: Kind,
    ) -> Result<Option<DecodedRecord>> {
        let all: Vec<_> = self
            .subject_records(subject)?
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect();
        Ok(interflow_core::record::current_of(all))
    }

    // ---- reconciliation state ----------------------------------------------------------

    /// Keeps a peer's latest verified head statement (our cosigned checkpoint of its view).
    pub fn save_checkpoint(&self, heads: &Heads, signed: &pb::SignedHeads) -> Result<()> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        batch.insert(keys::checkpoint(heads.signer), signed.encode_to_vec());
        self.commit(batch)
    }

    /// A peer's latest head statement we kept, as signed.
    pub fn checkpoint(&self, peer: RegionCode) -> Result<Option<pb::SignedHeads>> {
        self.db()?
            .get(keys::checkpoint(peer))?
            .map(|v| pb::SignedHeads::decode(v.as_ref()).map_err(|e| corrupt(e.to_string())))
            .transpose()
    }

    /// Stores a reconciliation report and returns its run id (1, 2, ...).
    pub fn save_report(&self, mut report: pb::ReconcileReport) -> Result<u64> {
        let _w = self.write.lock();
        self.check_writable()?;
        let next = match self.db()?.scan_prefix([keys::RUN]).next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                u64::from_be_bytes(k[1..].try_into().map_err(|_| corrupt("bad run key"))?) + 1
            }
            None => 1,
        };
        report.run_id = next;
        let mut batch = sled::Batch::default();
        batch.insert(keys::run(next), report.encode_to_vec());
        self.commit(batch)?;
        Ok(next)
    }

    /// The newest `limit` reports, newest first.
    pub fn reports(&self, limit: usize) -> Result<Vec<pb::ReconcileReport>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::RUN]).rev().take(limit) {
            let (_, v) = kv?;
            out.push(pb::ReconcileReport::decode(v.as_ref()).map_err(|e| corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// Counts for `Admin.Stats`.
    pub fn stats(&self, me: RegionCode) -> Result<Stats> {
        let mut s = Stats::default();
        for (c, st) in self.channels()? {
            if c.origin == me {
                s.records_outbound += st.count;
                s.pending += st.head_seq.saturating_sub(st.acked_seq);
            } else {
                s.records_inbound += st.count;
            }
        }
        s.equivocations = self.db()?.scan_prefix([keys::EVIDENCE]).count() as u64;
        s.audit_entries = self.db()?.scan_prefix([keys::AUDIT]).count() as u64;
        s.reconcile_runs = self.db()?.scan_prefix([keys::RUN]).count() as u64;
        Ok(s)
    }
}

/// Figures for `Admin.Stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub records_outbound: u64,
    pub records_inbound: u64,
    pub pending: u64,
    pub equivocations: u64,
    pub audit_entries: u64,
    pub reconcile_runs: u64,
}

#[cfg(test)]
mod tests;
