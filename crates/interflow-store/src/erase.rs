//! Retention: when a record's agreement retention period has passed, its body (payload and
//! subject ref) is deleted and a stub keeps what the log needs to stay verifiable — the record
//! id, its chain link, its position and issue time. The subject index entry goes with the
//! body, so the person can no longer be found; ids, chain links and receipts stay.

use interflow_core::record::{ChannelId, DecodedRecord, RecordId};
use interflow_core::time::UnixMillis;

use crate::{Result, Store, corrupt, decode_stored, keys, observed_days};

/// First byte of a stub. A stored `SignedRecord` always starts with its `alg` field (`0x08`).
const STUB: u8 = 0x00;
const DAY_MS: i64 = 86_400_000;

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

fn decode_stub(c: ChannelId, v: &[u8]) -> Result<ErasedRecord> {
    if v.len() < 1 + 32 + 32 + 24 {
        return Err(corrupt("erased-record stub is too short"));
    }
    let id =
        |r: std::ops::Range<usize>| RecordId::try_from(&v[r]).map_err(|e| corrupt(e.to_string()));
    let int = |at: usize| {
        <[u8; 8]>::try_from(&v[at..at + 8]).map_err(|_| corrupt("erased-record stub field"))
    };
    Ok(ErasedRecord {
        channel: c,
        id: id(1..33)?,
        prev_hash: id(33..65)?,
        seq: u64::from_be_bytes(int(65)?),
        issued_at_ms: i64::from_be_bytes(int(73)?),
        erased_at_ms: i64::from_be_bytes(int(81)?),
        agreement_id: String::from_utf8(v[89..].to_vec())
            .map_err(|_| corrupt("erased-record stub agreement id"))?,
    })
}

/// Decodes a stored value of channel `c`: a record or a stub.
pub(crate) fn decode_entry(c: ChannelId, v: &[u8]) -> Result<Stored> {
    match v.first() {
        Some(&STUB) => decode_stub(c, v).map(Stored::Erased),
        _ => decode_stored(v).map(Stored::Record),
    }
}

impl Store {
    /// Erases the body of every record whose agreement's retention (`retention_days` of its
    /// agreement id; `None` keeps the record) has passed at `now`, counted from its issue time.
    /// Equivocation evidence past the same retention is removed too. One durable batch;
    /// returns how many records (and evidence copies) were erased.
    pub fn erase_expired(
        &self,
        now: UnixMillis,
        retention_days: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<u64> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let mut erased = 0u64;
        for kv in self.db()?.scan_prefix([keys::RECORD]) {
            let (k, v) = kv?;
            let (c, seq) =
                keys::parse_location(&k[1..]).ok_or_else(|| corrupt("bad record key"))?;
            let Stored::Record(r) = decode_entry(c, &v)? else {
                continue;
            };
            let Some(days) = retention_days(r.agreement_id()) else {
                continue;
            };
            let until = r
                .issued_at_ms()
                .saturating_add(i64::from(days).saturating_mul(DAY_MS));
            if now < until {
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
            batch.insert(k.to_vec(), encode_stub(&stub));
            batch.remove(keys::subject(
                r.subject().as_bytes(),
                r.kind(),
                observed_days(&r),
                r.id(),
            ));
            erased += 1;
        }
        // Equivocation evidence holds full bodies too; it goes with the same retention.
        for kv in self.db()?.scan_prefix([keys::EVIDENCE]) {
            let (k, v) = kv?;
            let Ok(r) = decode_stored(&v) else {
                continue;
            };
            let expired = retention_days(r.agreement_id()).is_some_and(|days| {
                now >= r
                    .issued_at_ms()
                    .saturating_add(i64::from(days).saturating_mul(DAY_MS))
            });
            if expired {
                batch.remove(k.to_vec());
                erased += 1;
            }
        }
        if erased > 0 {
            self.commit(batch)?;
            tracing::info!(
                erased,
                "record bodies erased at the end of their retention period"
            );
        }
        Ok(erased)
    }
}
