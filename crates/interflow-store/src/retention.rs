//! Retention: when a record's agreement retention period has passed, its body (payload and
//! subject ref) is deleted and a stub keeps what the log needs to stay verifiable — the record
//! id, its chain link, its position and issue time. The subject index entry goes with the
//! body, so the person can no longer be found; ids, chain links and receipts stay.
//!
//! Erasure walks the log in bounded chunks, each one durable batch under the writer lock,
//! releasing the lock between chunks so intake and delivery go on during a long pass.

use interflow_core::record::{ChannelId, DecodedRecord, RecordId};
use interflow_core::time::UnixMillis;

use crate::engine::{decode_record_key, id_at};
use crate::error::{Place, corrupt, undecodable};
use crate::seal::{self, Period, Vault};
use crate::{Result, Store, keys};

/// First byte of a stub. A stored `SignedRecord` always starts with its `alg` field (`0x08`).
const STUB: u8 = 0x00;
const DAY_MS: i64 = 86_400_000;
/// Stored entries looked at per chunk of an erasure pass.
pub(crate) const CHUNK: usize = 512;

/// What stays of a record after its body was erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedRecord {
    pub channel: ChannelId,
    pub seq: u64,
    pub id: RecordId,
    pub prev_hash: RecordId,
    pub issued_at_ms: UnixMillis,
    pub erased_at_ms: UnixMillis,
    pub agreement_id: String,
}

/// A stored channel position.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // read one at a time; boxing would only add an allocation
pub enum Stored {
    Record(DecodedRecord),
    Erased(ErasedRecord),
}

impl Stored {
    pub fn id(&self) -> RecordId {
        match self {
            Stored::Record(r) => r.id(),
            Stored::Erased(e) => e.id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Stored::Record(r) => r.seq(),
            Stored::Erased(e) => e.seq,
        }
    }

    pub fn prev_hash(&self) -> RecordId {
        match self {
            Stored::Record(r) => r.prev_hash(),
            Stored::Erased(e) => e.prev_hash,
        }
    }

    pub fn issued_at_ms(&self) -> UnixMillis {
        match self {
            Stored::Record(r) => r.issued_at_ms(),
            Stored::Erased(e) => e.issued_at_ms,
        }
    }

    /// The full record, unless it was erased.
    pub fn record(self) -> Option<DecodedRecord> {
        match self {
            Stored::Record(r) => Some(r),
            Stored::Erased(_) => None,
        }
    }
}

pub(crate) fn is_stub(v: &[u8]) -> bool {
    v.first() == Some(&STUB)
}

fn encode_stub(e: &ErasedRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 32 + 32 + 24 + e.agreement_id.len());
    v.push(STUB);
    v.extend_from_slice(e.id.as_bytes());
    v.extend_from_slice(e.prev_hash.as_bytes());
    v.extend_from_slice(&e.seq.to_be_bytes());
    v.extend_from_slice(&e.issued_at_ms.to_be_bytes());
    v.extend_from_slice(&e.erased_at_ms.to_be_bytes());
    v.extend_from_slice(e.agreement_id.as_bytes());
    v
}

fn decode_stub(c: ChannelId, seq: u64, v: &[u8]) -> Result<ErasedRecord> {
    let at = || Place::Record { channel: c, seq };
    if v.len() < 1 + 32 + 32 + 24 {
        return Err(corrupt(at(), "erased-record stub is too short"));
    }
    let int = |from: usize| {
        <[u8; 8]>::try_from(&v[from..from + 8])
            .map_err(|_| corrupt(at(), "erased-record stub field is short"))
    };
    Ok(ErasedRecord {
        channel: c,
        id: id_at(at(), &v[1..33])?,
        prev_hash: id_at(at(), &v[33..65])?,
        seq: u64::from_be_bytes(int(65)?),
        issued_at_ms: i64::from_be_bytes(int(73)?),
        erased_at_ms: i64::from_be_bytes(int(81)?),
        agreement_id: String::from_utf8(v[89..].to_vec())
            .map_err(|_| corrupt(at(), "erased-record stub agreement id is not UTF-8"))?,
    })
}

/// Decodes the stored value at `(c, seq)`: a record (opened with its data key) or a stub. A
/// sealed record whose period key was destroyed reads as erased.
pub(crate) fn decode_entry(vault: &Vault, c: ChannelId, seq: u64, v: &[u8]) -> Result<Stored> {
    if is_stub(v) {
        return decode_stub(c, seq, v).map(Stored::Erased);
    }
    let at = || Place::Record { channel: c, seq };
    let Some(plain) = vault.unseal(at(), &keys::record(c, seq), v)? else {
        let (h, _) = seal::decode_header(at(), v)?;
        return Ok(Stored::Erased(ErasedRecord {
            channel: c,
            seq,
            id: h.id,
            prev_hash: h.prev_hash,
            issued_at_ms: h.issued_at_ms,
            erased_at_ms: 0,
            agreement_id: h.agreement_id,
        }));
    };
    DecodedRecord::from_bytes(&plain)
        .map(Stored::Record)
        .map_err(|e| undecodable(at(), "does not decode", e))
}

/// The id and issue time of the stored value at `(c, seq)` from its clear part, without keys.
pub(crate) fn entry_facts(c: ChannelId, seq: u64, v: &[u8]) -> Result<(RecordId, UnixMillis)> {
    if is_stub(v) {
        let e = decode_stub(c, seq, v)?;
        return Ok((e.id, e.issued_at_ms));
    }
    let (h, _) = seal::decode_header(Place::Record { channel: c, seq }, v)?;
    Ok((h.id, h.issued_at_ms))
}

fn expired(
    agreement_id: &str,
    issued_at_ms: UnixMillis,
    now: UnixMillis,
    retention_days: &dyn Fn(&str) -> Option<u32>,
) -> bool {
    retention_days(agreement_id).is_some_and(|days| {
        now >= issued_at_ms.saturating_add(i64::from(days).saturating_mul(DAY_MS))
    })
}

impl Store {
    /// Erases the body of every record whose agreement's retention (`retention_days` of its
    /// agreement id; `None` keeps the record) has passed at `now`, counted from its issue time.
    /// Equivocation evidence past the same retention is removed too. Works in chunks of
    /// durable batches; returns how many records (and evidence copies) were erased.
    pub fn erase_expired(
        &self,
        now: UnixMillis,
        retention_days: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<u64> {
        let mut erased = 0u64;
        for prefix in [keys::RECORD, keys::EVIDENCE] {
            let mut from = vec![prefix];
            loop {
                let (n, next) = self.erase_chunk(prefix, &from, now, retention_days)?;
                erased += n;
                match next {
                    Some(k) => from = k,
                    None => break,
                }
            }
        }
        if erased > 0 {
            tracing::info!(
                erased,
                "record bodies erased at the end of their retention period"
            );
        }
        // Every record of a period whose end is past retention was stubbed above, so its data
        // key can go: what sled's old segments keep of those records is then unreadable.
        let shredded = {
            let _w = self.write.lock();
            self.check_writable()?;
            self.db()?
                .vault
                .destroy(&|p: &Period| expired(&p.agreement_id, p.end_ms(), now, retention_days))?
        };
        if shredded > 0 {
            tracing::info!(
                shredded,
                "data keys destroyed: every record of their period is past retention"
            );
        }
        Ok(erased)
    }

    /// One chunk from key `from` on: erases what expired and returns the key to go on from.
    fn erase_chunk(
        &self,
        prefix: u8,
        from: &[u8],
        now: UnixMillis,
        retention_days: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<(u64, Option<Vec<u8>>)> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut erased = 0u64;
        let mut next = None;
        let db = self.db()?;
        for (seen, kv) in db.range(from.to_vec()..).enumerate() {
            let (k, v) = kv?;
            if k.first() != Some(&prefix) {
                break;
            }
            if seen == CHUNK {
                next = Some(k.to_vec());
                break;
            }
            if prefix == keys::EVIDENCE {
                // Evidence holds full bodies too; it goes with the same retention.
                // The clear header says the period; the body is not opened to decide.
                if let Ok((h, _)) = seal::decode_header(Place::RecordKey, &v)
                    && expired(&h.agreement_id, h.issued_at_ms, now, retention_days)
                {
                    batch.remove(k);
                    erased += 1;
                }
                continue;
            }
            let (c, seq) = decode_record_key(&k)?;
            let Stored::Record(r) = decode_entry(&db.vault, c, seq, &v)? else {
                continue;
            };
            if !expired(r.agreement_id(), r.issued_at_ms(), now, retention_days) {
                continue;
            }
            let stub = ErasedRecord {
                channel: c,
                seq,
                id: r.id(),
                prev_hash: r.prev_hash(),
                issued_at_ms: r.issued_at_ms(),
                erased_at_ms: now,
                agreement_id: r.agreement_id().to_owned(),
            };
            batch.insert(k, encode_stub(&stub));
            batch.remove(keys::subject_of(&db.vault, &r));
            erased += 1;
        }
        if erased > 0 {
            self.commit(batch)?;
        }
        Ok((erased, next))
    }
}
