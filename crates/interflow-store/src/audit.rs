//! The hash-chained audit log: who read or changed what, and when. Each entry carries the
//! SHA-256 of the previous entry's bytes, so an edited or removed entry breaks the chain.
//!
//! Entries are stored in a store-owned encoding (`0x02` + postcard). Entries written by
//! schema 1 were protobuf bytes in the layout of the wire's `AuditEntry`; they keep those
//! bytes — rewriting them would break the very chain that proves they were never rewritten —
//! and are read through [`LegacyEntry`], a frozen copy of that layout that no edit to the
//! wire contract can change.

use interflow_core::time::UnixMillis;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Place, corrupt, undecodable};
use crate::state::{decode_versioned, encode_versioned};
use crate::{Result, Store, keys};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub index: u64,
    pub at_ms: UnixMillis,
    /// Certificate identity of the caller, or the job name.
    pub actor: String,
    /// e.g. `Admin.Lookup`.
    pub action: String,
    /// Record ids or subject-ref digests; never a national ID.
    pub subjects: Vec<String>,
    pub prev_hash: [u8; 32],
}

/// Schema 1's entry layout, frozen: tags and types must never change.
#[derive(Clone, PartialEq, prost::Message)]
struct LegacyEntry {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(int64, tag = "2")]
    at_ms: i64,
    #[prost(string, tag = "3")]
    actor: String,
    #[prost(string, tag = "4")]
    action: String,
    #[prost(string, repeated, tag = "5")]
    subjects: Vec<String>,
    #[prost(bytes = "vec", tag = "6")]
    prev_hash: Vec<u8>,
}

/// A version-2 entry starts with `0x02`; a protobuf message never does (field 0 is invalid).
const V2: u8 = 2;

impl AuditEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    pub(crate) fn decode(index: u64, v: &[u8]) -> Result<Self> {
        let at = Place::Audit { index };
        if v.first() == Some(&V2) {
            return decode_versioned(at, v);
        }
        let p =
            LegacyEntry::decode(v).map_err(|e| undecodable(at.clone(), "does not decode", e))?;
        Ok(AuditEntry {
            index: p.index,
            at_ms: p.at_ms,
            actor: p.actor,
            action: p.action,
            subjects: p.subjects,
            prev_hash: p
                .prev_hash
                .try_into()
                .map_err(|_| corrupt(at, "prev_hash is not 32 bytes"))?,
        })
    }
}

pub(crate) fn entry_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A page of the audit log and the number of entries in the range it was cut from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Entries in the range, however many the page holds.
    pub total: u64,
}

/// The audit head: index of the last entry and the hash of its bytes.
pub(crate) fn decode_head(v: &[u8]) -> Result<(u64, [u8; 32])> {
    let (idx, hash) = v
        .split_first_chunk::<8>()
        .filter(|(_, h)| h.len() == 32)
        .ok_or_else(|| corrupt(Place::AuditHead, "is not 40 bytes"))?;
    let mut h = [0u8; 32];
    h.copy_from_slice(hash);
    Ok((u64::from_be_bytes(*idx), h))
}

impl Store {
    /// Appends an audit entry durably and returns its index. Reads that must be audited call
    /// this before they answer.
    pub fn audit(
        &self,
        at_ms: UnixMillis,
        actor: &str,
        action: &str,
        subjects: Vec<String>,
    ) -> Result<u64> {
        let _w = self.write.lock();
        self.check_writable()?;
        let (index, prev_hash) = match self.db()?.get(keys::META_AUDIT_HEAD)? {
            Some(v) => {
                let (idx, h) = decode_head(&v)?;
                (idx + 1, h)
            }
            None => (1, [0u8; 32]),
        };
        let entry = AuditEntry {
            index,
            at_ms,
            actor: actor.to_owned(),
            action: action.to_owned(),
            subjects,
            prev_hash,
        };
        let bytes = entry.encode();
        let mut head = index.to_be_bytes().to_vec();
        head.extend_from_slice(&entry_hash(&bytes));
        let mut batch = sled::Batch::default();
        batch.insert(keys::audit(index), bytes);
        batch.insert(keys::META_AUDIT_HEAD, head);
        self.commit(batch)?;
        Ok(index)
    }

    /// A page of the audit entries at or after `since_ms`: at most `limit` of them, newest
    /// first when `newest_first` (the ones an operator looks for), and how many there are in
    /// all.
    pub fn audit_page(
        &self,
        since_ms: UnixMillis,
        limit: usize,
        newest_first: bool,
    ) -> Result<AuditPage> {
        let scan = self.db()?.scan_prefix([keys::AUDIT]);
        let scan: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if newest_first
        {
            Box::new(scan.rev())
        } else {
            Box::new(scan)
        };
        let mut page = AuditPage::default();
        for kv in scan {
            let (k, v) = kv?;
            let index = k
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(Place::Audit { index: 0 }, "audit key without an index"))?;
            let e = AuditEntry::decode(index, &v)?;
            if e.at_ms >= since_ms {
                page.total += 1;
                if page.entries.len() < limit {
                    page.entries.push(e);
                }
            }
        }
        Ok(page)
    }

    /// Audit entries at or after `since_ms`, oldest first, at most `limit`.
    pub fn audit_entries(&self, since_ms: UnixMillis, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for (index, kv) in (1u64..).zip(self.db()?.scan_prefix([keys::AUDIT])) {
            let (_, v) = kv?;
            let e = AuditEntry::decode(index, &v)?;
            if e.at_ms >= since_ms {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreOptions};

    #[test]
    fn a_page_is_newest_first_on_request_and_counts_the_whole_range() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions::new(crate::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        for i in 0..5 {
            s.audit(1_000 + i, "admin:ops", "Admin.Stats", vec![])
                .unwrap();
        }
        let newest = s.audit_page(1_001, 2, true).unwrap();
        assert_eq!(newest.total, 4);
        let got: Vec<u64> = newest.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, [5, 4]);
        assert_eq!(newest.entries[0].at_ms, 1_004);
        let oldest = s.audit_page(1_001, 2, false).unwrap();
        assert_eq!(oldest.total, 4);
        let got: Vec<u64> = oldest.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, [2, 3]);
    }
}
