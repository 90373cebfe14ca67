//! The hash-chained audit log: who read or changed what, and when. Each entry carries the
//! SHA-256 of the previous entry's bytes, so an edited or removed entry breaks the chain.

use interflow_core::pb;
use interflow_core::time::UnixMillis;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::{Result, Store, StoreError, keys};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl AuditEntry {
    pub fn to_pb(&self) -> pb::AuditEntry {
        pb::AuditEntry {
            index: self.index,
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            action: self.action.clone(),
            subjects: self.subjects.clone(),
            prev_hash: self.prev_hash.to_vec(),
        }
    }

    pub(crate) fn from_bytes(v: &[u8]) -> Result<Self> {
        let p = pb::AuditEntry::decode(v)
            .map_err(|e| StoreError::Corrupt(format!("audit entry: {e}")))?;
        Ok(AuditEntry {
            index: p.index,
            at_ms: p.at_ms,
            actor: p.actor,
            action: p.action,
            subjects: p.subjects,
            prev_hash: p
                .prev_hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit prev_hash is not 32 bytes".into()))?,
        })
    }
}

pub(crate) fn entry_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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
            Some(v) if v.len() == 40 => {
                let idx = u64::from_be_bytes(
                    v[..8]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("audit head".into()))?,
                );
                let mut h = [0u8; 32];
                h.copy_from_slice(&v[8..]);
                (idx + 1, h)
            }
            Some(_) => return Err(StoreError::Corrupt("audit head is not 40 bytes".into())),
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
        let bytes = entry.to_pb().encode_to_vec();
        let mut head = index.to_be_bytes().to_vec();
        head.extend_from_slice(&entry_hash(&bytes));
        let mut batch = sled::Batch::default();
        batch.insert(keys::audit(index), bytes);
        batch.insert(keys::META_AUDIT_HEAD, head);
        self.commit(batch)?;
        Ok(index)
    }

    /// Audit entries at or after `since_ms`, oldest first, at most `limit`.
    pub fn audit_entries(&self, since_ms: UnixMillis, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::AUDIT]) {
            let (_, v) = kv?;
            let e = AuditEntry::from_bytes(&v)?;
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
