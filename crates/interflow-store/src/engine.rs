//! The engine layer: opening sled (schema check, migration, integrity figures, heads anchor),
//! the one durable commit (apply batch, flush, fsync), poisoning after a failed durable write,
//! in-process recovery after a full disk, and the durable heads that bound what is served.
//!
//! Every other layer writes through [`Store::commit`] while holding `Store::write`, and reads
//! through [`Store::db`]. Nothing here knows records beyond their channel heads.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use interflow_core::record::{ChannelId, RecordId};

use crate::error::{
    DurableStep, Place, ReadOnlyReason, StoreError, corrupt, io_disk_full, undecodable,
};
use crate::seal::Vault;
use crate::state::{ChannelState, DeliveryState};
use crate::{Result, SCHEMA_VERSION, Store, StoreOptions, anchor, keys, migrate, rewrite, verify};

/// Why writes stopped after a failed durable write.
#[derive(Debug, Clone)]
pub(crate) struct Poison {
    step: DurableStep,
    source: Arc<io::Error>,
    /// Out of space: the write was refused, not lost, so a reopen may resume writes.
    disk_full: bool,
}

impl Poison {
    fn error(&self) -> StoreError {
        if self.disk_full {
            StoreError::DiskFull {
                step: self.step,
                source: self.source.clone(),
            }
        } else {
            StoreError::Poisoned {
                step: self.step,
                source: self.source.clone(),
            }
        }
    }
}

/// Durable head `(seq, id)` per channel.
pub(crate) type DurableHeads = HashMap<ChannelId, (u64, RecordId)>;

/// Opens sled at `dir`, waiting a little while the directory's lock is still held: sled lets
/// go of it a moment after its last handle in this process was dropped (its background work
/// ends later), so a reopen right after a close can otherwise fail. A lock held by another
/// process is still reported, after about two seconds.
pub(crate) fn open_sled(config: &sled::Config, dir: &Path) -> Result<sled::Db> {
    use backon::{BlockingRetryable, ExponentialBuilder};
    let held = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
    (|| config.open())
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(10))
                .with_max_delay(std::time::Duration::from_millis(250))
                .with_max_times(12),
        )
        .when(held)
        .call()
        .map_err(|source| StoreError::Open {
            path: dir.to_owned(),
            source,
        })
}

/// The open database: what a reopen replaces.
pub(crate) struct Engine {
    pub(crate) db: sled::Db,
    /// Opened once; `fsync` goes through it after each sled flush.
    data_file: File,
    /// Set when the integrity figures or the anchor did not match on open.
    read_only: Option<Arc<ReadOnlyReason>>,
    /// The data keys and the subject index key.
    pub(crate) vault: Vault,
}

impl std::ops::Deref for Engine {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

fn sled_io(e: sled::Error) -> io::Error {
    io::Error::from(e)
}

impl Engine {
    /// Opens sled and the sync handle, checks the schema (migrating an older one) and the
    /// integrity figures; returns the durable heads.
    fn open(dir: &Path, opts: &StoreOptions) -> Result<(Engine, DurableHeads)> {
        rewrite::finish_interrupted(dir)?;
        let created = !dir.join("db").exists();
        let db = open_sled(
            &sled::Config::new()
                .path(dir)
                .cache_capacity(opts.cache_capacity)
                .mode(sled::Mode::HighThroughput),
            dir,
        )?;
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
        let schema = match db.get(keys::META_SCHEMA)? {
            None => None,
            Some(v) => Some(u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| corrupt(Place::Schema, "is not 4 bytes"))?,
            )),
        };
        if let Some(found) = schema
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::NewerSchema {
                path: dir.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // The keyring is opened (and the master key checked) before any record is read.
        let vault = match crate::seal::Vault::open(dir, &opts.master_key)? {
            Some(v) => v,
            None if schema.is_none_or(|f| f < 3) => Vault::create(dir, &opts.master_key)?,
            None => {
                return Err(StoreError::KeyringMissing {
                    path: dir.join(crate::seal::KEYRING_FILE),
                });
            }
        };
        let mut engine = Engine {
            db,
            data_file,
            read_only: None,
            vault,
        };
        match schema {
            None => {
                if engine.db.iter().next().is_some() {
                    return Err(corrupt(Place::Schema, "data without a schema version"));
                }
                // Every store writes its schema version first, so an existing data file that
                // reads back empty lost its contents (sled drops a log from a damaged entry
                // on): refuse rather than start over as if new.
                if !created {
                    return Err(corrupt(
                        Place::Data(dir.to_owned()),
                        "exists but reads back empty: the data files are damaged; restore a backup, or move the directory away to start empty and let peers re-supply the records",
                    ));
                }
                engine
                    .db
                    .insert(keys::META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                engine.sync(opts)?;
            }
            Some(found) => {
                if found < SCHEMA_VERSION {
                    migrate::run(&engine.db, &engine.vault, found)?;
                    engine.sync(opts)?;
                    tracing::info!(
                        from = found,
                        to = SCHEMA_VERSION,
                        "store migrated to the current schema"
                    );
                    if found < 3 {
                        // Plain bodies are still in sled's old segments: copy the live data
                        // into fresh files and delete the old ones, then open those.
                        drop(engine);
                        rewrite::rewrite(dir)?;
                        tracing::info!("store files rewritten: no plain body is left on disk");
                        return Engine::open(dir, opts);
                    }
                }
            }
        }
        let mut durable = HashMap::new();
        for kv in engine.db.scan_prefix([keys::CHANNEL]) {
            let (k, v) = kv?;
            let c = keys::parse_channel(&k[1..])
                .ok_or_else(|| corrupt(Place::ChannelKey, "is not a channel"))?;
            let st = ChannelState::decode(c, &v)?;
            durable.insert(c, (st.head_seq, st.head));
            if let Err(problem) = verify::check_channel_head(&engine.db, c, &st) {
                tracing::error!(channel = %c, %problem, "store integrity check failed; opening read-only");
                engine.read_only = Some(Arc::new(ReadOnlyReason::Integrity {
                    channel: c,
                    problem,
                }));
            }
        }
        Ok((engine, durable))
    }

    fn sync(&self, opts: &StoreOptions) -> Result<()> {
        self.db.flush()?;
        (opts.sync)(&self.data_file).map_err(|e| StoreError::Engine(sled::Error::Io(e)))
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, checks the schema version (migrating an older
    /// one in place) and that each channel's last record is the head its durable figures name
    /// (the full walk is `verify_log`), then the heads anchor. A mismatch opens the store
    /// read-only, with the reason.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        let (mut engine, durable) = Engine::open(dir, &opts)?;
        if let Some(lost) = anchor::check(dir, &durable)? {
            tracing::error!(reason = %lost, "the store holds less than it had made durable; opening read-only");
            engine.read_only.get_or_insert(Arc::new(lost));
        }
        Ok(Store::from_engine(dir, opts, engine, durable))
    }

    /// The open engine, shared for the length of one call.
    pub(crate) fn db(&self) -> Result<Arc<Engine>> {
        self.engine.read().clone().ok_or(StoreError::Closed)
    }

    /// After the disk filled up, closes and reopens the database from what is on disk, so
    /// that writes can resume once space is free. Returns `Ok(false)` when there is nothing to
    /// recover, the disk is still full, or another call still uses the engine (try later).
    /// Other failed durable writes (an I/O error) are not recovered in-process: after a failed
    /// fsync the page cache cannot be trusted, so those need a restart.
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
        engine.sync(&self.opts)?;
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
    pub fn write_refusal(&self) -> Option<StoreError> {
        if let Some(p) = &*self.poisoned.read() {
            return Some(p.error());
        }
        match self.db() {
            Ok(e) => e.read_only.clone().map(StoreError::ReadOnly),
            Err(e) => Some(e),
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        match self.write_refusal() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn poison(&self, step: DurableStep, source: io::Error) -> StoreError {
        let disk_full = io_disk_full(&source);
        if disk_full {
            tracing::error!(%step, error = %source, "disk full; refusing writes until space is freed");
        } else {
            tracing::error!(%step, error = %source, "durable write failed; refusing writes until restart");
        }
        let p = Poison {
            step,
            source: Arc::new(source),
            disk_full,
        };
        let err = p.error();
        *self.poisoned.write() = Some(p);
        err
    }

    /// Applies one batch atomically, then sled flush and fsync of the data file. Any failure
    /// poisons the store. Callers hold the write lock.
    pub(crate) fn commit(&self, batch: sled::Batch) -> Result<()> {
        let e = self.db()?;
        if let Err(err) = e.apply_batch(batch) {
            return Err(self.poison(DurableStep::Write, sled_io(err)));
        }
        if let Err(err) = e.db.flush() {
            return Err(self.poison(DurableStep::Flush, sled_io(err)));
        }
        if let Err(err) = (self.opts.sync)(&e.data_file) {
            return Err(self.poison(DurableStep::Fsync, err));
        }
        Ok(())
    }

    /// Makes committed heads visible to readers, and anchors them at most once a second.
    pub(crate) fn publish_heads<'a>(
        &self,
        states: impl IntoIterator<Item = (&'a ChannelId, &'a ChannelState)>,
    ) {
        {
            let mut d = self.durable.write();
            for (c, st) in states {
                d.insert(*c, (st.head_seq, st.head));
            }
        }
        let mut last = self.anchored.lock();
        if last.is_none_or(|t| t.elapsed() >= anchor::INTERVAL) {
            *last = Some(std::time::Instant::now());
            self.write_anchor();
        }
    }

    /// Records the durable heads outside sled (best effort; see `anchor`).
    pub(crate) fn write_anchor(&self) {
        let heads = self.durable.read().clone();
        if let Err(e) = anchor::write(&self.dir, &heads) {
            tracing::warn!(error = %e, "cannot write the heads anchor");
        }
    }

    /// The durable state of a channel (default when it holds nothing yet).
    pub fn channel_state(&self, c: ChannelId) -> Result<ChannelState> {
        match self.db()?.get(keys::channel(c))? {
            Some(v) => ChannelState::decode(c, &v),
            None => Ok(ChannelState::default()),
        }
    }

    /// Every channel this store knows, with its durable state.
    pub fn channels(&self) -> Result<Vec<(ChannelId, ChannelState)>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::CHANNEL]) {
            let (k, v) = kv?;
            let c = keys::parse_channel(&k[1..])
                .ok_or_else(|| corrupt(Place::ChannelKey, "is not a channel"))?;
            out.push((c, ChannelState::decode(c, &v)?));
        }
        Ok(out)
    }

    /// The delivery advice of an outbound channel (default when none was noted).
    pub fn delivery_state(&self, c: ChannelId) -> Result<DeliveryState> {
        match self.db()?.get(keys::delivery(c))? {
            Some(v) => DeliveryState::decode(c, &v),
            None => Ok(DeliveryState::default()),
        }
    }

    /// The durable head `(seq, id)` of a channel; `(0, zero)` when empty. In memory: never
    /// touches the disk.
    pub fn head(&self, c: ChannelId) -> (u64, RecordId) {
        self.durable
            .read()
            .get(&c)
            .copied()
            .unwrap_or((0, RecordId::ZERO))
    }
}

pub(crate) fn decode_record_key(k: &[u8]) -> Result<(ChannelId, u64)> {
    keys::parse_location(k.get(1..).unwrap_or_default())
        .ok_or_else(|| corrupt(Place::RecordKey, "is not a channel position"))
}

/// Reads a 32-byte id out of stored bytes.
pub(crate) fn id_at(at: Place, b: &[u8]) -> Result<RecordId> {
    RecordId::try_from(b).map_err(|e| undecodable(at, "holds no record id", e))
}
