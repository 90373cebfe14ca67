//! The read layer: records by position or id (full, or light [`StoredRecord`]s for delivery and
//! `Fetch`), a subject's records and current status, and the counts behind `Admin.Stats`.
//! Reads take no lock: sled gives each a consistent view of one key, and only durable heads
//! bound what is served.

use interflow_core::RegionCode;
use interflow_core::payload::Kind;
use interflow_core::pseudonym::{Epoch, SubjectRef};
use interflow_core::record::{ChannelId, DecodedRecord, RecordId};
use interflow_core::time::UnixMillis;

use crate::engine::decode_record_key;
use crate::error::{Place, corrupt, undecodable};
use crate::retention::{self, Stored};
use crate::{Result, Store, keys};

/// A stored record as it is sent on: position, id and the signed bytes, not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub id: RecordId,
    /// `SignedRecord` bytes exactly as signed and stored.
    pub bytes: Vec<u8>,
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

impl Store {
    /// What is stored at `(channel, seq)` (the record or its erased stub), durable or not.
    pub fn entry_at(&self, c: ChannelId, seq: u64) -> Result<Option<Stored>> {
        let db = self.db()?;
        db.get(keys::record(c, seq))?
            .map(|v| retention::decode_entry(&db.vault, c, seq, &v))
            .transpose()
    }

    /// The record at `(channel, seq)`; `None` when absent or erased.
    pub fn record_at(&self, c: ChannelId, seq: u64) -> Result<Option<DecodedRecord>> {
        Ok(self.entry_at(c, seq)?.and_then(Stored::record))
    }

    /// The newest issue time among the records of `agreement` on `c` still readable (not
    /// erased by retention) whose subject ref was made under pseudonym `epoch`; `None` when
    /// there is none. Reads the whole channel: for the rare check before an epoch's key is
    /// dropped, not for a request path.
    pub fn newest_under_epoch(
        &self,
        c: ChannelId,
        agreement: &str,
        epoch: Epoch,
    ) -> Result<Option<UnixMillis>> {
        let (head, _) = self.head(c);
        let mut newest = None;
        for seq in 1..=head {
            if let Some(r) = self.record_at(c, seq)?
                && r.agreement_id() == agreement
                && r.pseudonym_epoch() == epoch
            {
                newest = newest.max(Some(r.issued_at_ms()));
            }
        }
        Ok(newest)
    }

    /// What is stored for a record id: the record or its erased stub.
    pub fn get_entry(&self, id: RecordId) -> Result<Option<Stored>> {
        let Some(loc) = self.db()?.get(keys::id(id))? else {
            return Ok(None);
        };
        let (c, seq) = keys::parse_location(&loc)
            .ok_or_else(|| corrupt(Place::IdIndex, "entry is not a channel position"))?;
        let entry = self
            .entry_at(c, seq)?
            .ok_or_else(|| corrupt(Place::IdIndex, "points at a missing record"))?;
        if entry.id() != id {
            return Err(corrupt(Place::IdIndex, "points at another record"));
        }
        Ok(Some(entry))
    }

    /// Ids of stored records that start with the bytes `prefix`, in id order, at most
    /// `limit`: the id index is keyed by id, so this is one prefix scan.
    pub fn ids_with_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<RecordId>> {
        let mut start = vec![keys::ID];
        start.extend_from_slice(prefix);
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix(start).take(limit) {
            let (k, _) = kv?;
            let id = k
                .get(1..)
                .and_then(|b| RecordId::try_from(b).ok())
                .ok_or_else(|| corrupt(Place::IdIndex, "key is not a record id"))?;
            out.push(id);
        }
        Ok(out)
    }

    /// A record by id; `None` when unknown or erased.
    pub fn get(&self, id: RecordId) -> Result<Option<DecodedRecord>> {
        Ok(self.get_entry(id)?.and_then(Stored::record))
    }

    /// Up to `limit` durable records of a channel from `from_seq` on, in order, stopping before
    /// the first erased one (an erased record cannot be re-sent). The bytes are not decoded:
    /// they were checked when stored and are sent on as they are.
    pub fn records_from(
        &self,
        c: ChannelId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        let (head, _) = self.head(c);
        let from = from_seq.max(1);
        if from > head || limit == 0 {
            return Ok(Vec::new());
        }
        let end = head.min(from.saturating_add(limit as u64).saturating_sub(1));
        let mut out = Vec::with_capacity((end - from + 1) as usize);
        let db = self.db()?;
        for kv in db.range(keys::record(c, from)..=keys::record(c, end)) {
            let (k, v) = kv?;
            let (_, seq) = decode_record_key(&k)?;
            if retention::is_stub(&v) {
                break;
            }
            let at = || Place::Record { channel: c, seq };
            // Decrypted on the way out: peers receive the signed bytes.
            let Some(bytes) = db.vault.unseal(at(), &k, &v)? else {
                break;
            };
            let id = RecordId::of_signed_bytes(&bytes)
                .map_err(|e| undecodable(at(), "does not decode", e))?;
            out.push(StoredRecord { seq, id, bytes });
        }
        Ok(out)
    }

    /// Every record of a subject (all kinds), ordered by kind then observed date.
    pub fn subject_records(&self, subject: &SubjectRef) -> Result<Vec<DecodedRecord>> {
        let mut out = Vec::new();
        let db = self.db()?;
        for kv in db.scan_prefix(keys::subject_prefix(
            &db.vault.blind_subject(subject.as_bytes()),
        )) {
            let (_, loc) = kv?;
            let (c, seq) = keys::parse_location(&loc)
                .ok_or_else(|| corrupt(Place::SubjectIndex, "entry is not a channel position"))?;
            let entry = self
                .entry_at(c, seq)?
                .ok_or_else(|| corrupt(Place::SubjectIndex, "points at a missing record"))?;
            // Erasure removes the index entry with the body; a leftover one finds nothing.
            out.extend(entry.record());
        }
        Ok(out)
    }

    /// The current record of `kind` for a subject (see [`interflow_core::record::current_of`]).
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
        let db = self.db()?;
        s.equivocations = db.scan_prefix([keys::EVIDENCE]).count() as u64;
        s.audit_entries = db.scan_prefix([keys::AUDIT]).count() as u64;
        s.reconcile_runs = db.scan_prefix([keys::RUN]).count() as u64;
        Ok(s)
    }
}
