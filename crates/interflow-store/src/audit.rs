//! The hash-chained audit log: who read or changed what, and when. Each entry carries the
//! SHA-256 of the previous entry's bytes, so an edited or removed entry breaks the chain.
//!
//! Entries are stored in a store-owned encoding: new entries as `0x03` + postcard of
//! [`AuditEntry`] (with its [`AuditNote`]: purpose, case reference, counts or range, refusal
//! reason). Entries written before keep their bytes — rewriting them would break the very
//! chain that proves they were never rewritten — and are read through frozen copies of their
//! layouts: `0x02` + postcard without the note ([`EntryV2`]), and schema 1's protobuf bytes in
//! the layout of the wire's `AuditEntry` ([`LegacyEntry`]), which no edit to the wire contract
//! can change.

use interflow_core::time::UnixMillis;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Place, corrupt, undecodable};
use crate::state::decode_versioned;
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
    /// Why and with what result; empty in entries written before version 3.
    pub note: AuditNote,
}

/// What an entry says besides who touched what: all empty for calls that read no person's data
/// and were answered. Fields are short tokens and counts, never contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditNote {
    /// Why a person's data was read, from the node's closed list (e.g. `service-continuity`).
    pub purpose: String,
    /// The caller's case reference, a bounded token; empty when none was given.
    pub case_ref: String,
    /// Counts or a range, e.g. `items:3 stored:2 refused:1` or `seq:4..9`.
    pub detail: String,
    /// Why the call was refused; empty for a call that was answered.
    pub refused: String,
}

/// Version 2's entry layout, frozen: fields and their order must never change.
#[derive(Deserialize)]
struct EntryV2 {
    index: u64,
    at_ms: UnixMillis,
    actor: String,
    action: String,
    subjects: Vec<String>,
    prev_hash: [u8; 32],
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

/// A version-2 entry starts with `0x02`, a version-3 one with `0x03`; a protobuf message never
/// does (field 0 is invalid).
const V2: u8 = 2;
const V3: u8 = 3;

impl AuditEntry {
    /// Version 3: `0x03` + postcard of the whole entry. A change to [`AuditEntry`] or
    /// [`AuditNote`] needs a new version (and a frozen copy of this layout).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![V3];
        // Encoding plain structs into a growable Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub(crate) fn decode(index: u64, v: &[u8]) -> Result<Self> {
        let at = Place::Audit { index };
        match v.split_first() {
            Some((&V3, rest)) => {
                return postcard::from_bytes(rest)
                    .map_err(|e| undecodable(at, "does not decode", e));
            }
            Some((&V2, _)) => {
                let e: EntryV2 = decode_versioned(at, v)?;
                return Ok(AuditEntry {
                    index: e.index,
                    at_ms: e.at_ms,
                    actor: e.actor,
                    action: e.action,
                    subjects: e.subjects,
                    prev_hash: e.prev_hash,
                    note: AuditNote::default(),
                });
            }
            _ => {}
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
            note: AuditNote::default(),
        })
    }
}

pub(crate) fn entry_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The local audit chain recomputed up to an index ([`Store::audit_chain_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditChainAt {
    /// Every entry up to the index links; the hash of the entry at the index.
    Hash([u8; 32]),
    /// The entry at `index` is not there.
    Missing { index: u64 },
    /// The entry at `index` does not decode or does not link to the one before.
    Broken { index: u64 },
}

/// A page of the audit log and the number of entries in the range it was cut from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Entries in the range, however many the page holds.
    pub total: u64,
}

/// The audit head: index of the last entry and the hash of its bytes.
/// Puts the audit entry after `head` (`None`: the first) and the new head into `batch`;
/// returns the new head. The caller holds the write lock and commits the batch.
pub(crate) fn stage_audit(
    batch: &mut sled::Batch,
    head: Option<(u64, [u8; 32])>,
    at_ms: UnixMillis,
    actor: &str,
    action: &str,
    subjects: Vec<String>,
    note: AuditNote,
) -> (u64, [u8; 32]) {
    let (index, prev_hash) = head.map_or((1, [0u8; 32]), |(i, h)| (i + 1, h));
    let entry = AuditEntry {
        index,
        at_ms,
        actor: actor.to_owned(),
        action: action.to_owned(),
        subjects,
        prev_hash,
        note,
    };
    let bytes = entry.encode();
    let hash = entry_hash(&bytes);
    let mut stored_head = index.to_be_bytes().to_vec();
    stored_head.extend_from_slice(&hash);
    batch.insert(keys::audit(index), bytes);
    batch.insert(keys::META_AUDIT_HEAD, stored_head);
    (index, hash)
}

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
        self.audit_noted(at_ms, actor, action, subjects, AuditNote::default())
    }

    /// Like [`Store::audit`], with the purpose, case, counts or refusal reason of the call.
    pub fn audit_noted(
        &self,
        at_ms: UnixMillis,
        actor: &str,
        action: &str,
        subjects: Vec<String>,
        note: AuditNote,
    ) -> Result<u64> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        let head = self.stored_audit_head()?;
        let (index, hash) = stage_audit(&mut batch, head, at_ms, actor, action, subjects, note);
        self.commit(batch)?;
        // Only a durable head is ever signed to a peer.
        *self.audit_head.write() = Some((index, hash));
        Ok(index)
    }

    /// The audit head as stored (callers hold the write lock, so it is also the durable one).
    pub(crate) fn stored_audit_head(&self) -> Result<Option<(u64, [u8; 32])>> {
        self.db()?
            .get(keys::META_AUDIT_HEAD)?
            .map(|v| decode_head(&v))
            .transpose()
    }

    /// The durable audit head: index of the last entry and the SHA-256 of its stored bytes;
    /// `None` before the first entry. Kept in memory (no I/O): head statements to peers carry
    /// it, so a rewritten log shows.
    pub fn audit_head(&self) -> Option<(u64, [u8; 32])> {
        *self.audit_head.read()
    }

    /// The audit chain recomputed from its first entry up to `index`: the hash of entry
    /// `index`'s stored bytes when every entry up to it is there and links to the one before,
    /// otherwise where it breaks. What a peer kept of an earlier head is compared with this.
    pub fn audit_chain_at(&self, index: u64) -> Result<AuditChainAt> {
        let mut prev = [0u8; 32];
        for expected in 1..=index {
            let Some(v) = self.db()?.get(keys::audit(expected))? else {
                return Ok(AuditChainAt::Missing { index: expected });
            };
            let e = match AuditEntry::decode(expected, &v) {
                Ok(e) => e,
                Err(_) => return Ok(AuditChainAt::Broken { index: expected }),
            };
            if e.index != expected || e.prev_hash != prev {
                return Ok(AuditChainAt::Broken { index: expected });
            }
            prev = entry_hash(&v);
        }
        Ok(AuditChainAt::Hash(prev))
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
    use super::{AuditChainAt, AuditEntry, AuditNote, entry_hash};
    use crate::{Store, StoreOptions, keys};

    #[test]
    fn version_2_entries_keep_their_bytes_and_the_chain_runs_on_into_version_3() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions::new(crate::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        // An entry as version 2 wrote it: 0x02 + postcard without the note.
        #[derive(serde::Serialize)]
        struct V2<'a>(u64, i64, &'a str, &'a str, Vec<String>, [u8; 32]);
        let mut old = vec![2u8];
        old.extend(
            postcard::to_allocvec(&V2(
                1,
                5,
                "admin:ops",
                "Admin.Lookup",
                vec!["ref:ab".into()],
                [0; 32],
            ))
            .unwrap(),
        );
        let mut head = 1u64.to_be_bytes().to_vec();
        head.extend_from_slice(&entry_hash(&old));
        let db = s.db().unwrap();
        db.insert(keys::audit(1), old.clone()).unwrap();
        db.insert(keys::META_AUDIT_HEAD, head).unwrap();
        let note = AuditNote {
            purpose: "correction".into(),
            case_ref: "C-7".into(),
            ..AuditNote::default()
        };
        assert_eq!(
            s.audit_noted(9, "admin:ops", "Admin.Lookup", vec![], note.clone())
                .unwrap(),
            2
        );
        let got = s.audit_entries(0, 10).unwrap();
        assert_eq!(got[0].note, AuditNote::default());
        assert_eq!(got[0].actor, "admin:ops");
        assert_eq!(got[1].note, note);
        assert_eq!(got[1].prev_hash, entry_hash(&old));
        // The old entry's bytes are untouched and the whole chain verifies.
        assert_eq!(db.get(keys::audit(1)).unwrap().unwrap().to_vec(), old);
        assert!(s.verify_log(&|_| None).unwrap().ok());
        let new = db.get(keys::audit(2)).unwrap().unwrap();
        assert_eq!(new[0], 3, "new entries are version 3");
        assert_eq!(
            s.audit_chain_at(2).unwrap(),
            AuditChainAt::Hash(entry_hash(&new))
        );
        assert_eq!(s.audit_head(), Some((2, entry_hash(&new))));
        drop(db);
        drop(s);
        let s = Store::open(
            dir.path(),
            StoreOptions::new(crate::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        assert_eq!(
            s.audit_head(),
            Some((2, entry_hash(&new))),
            "read again on open"
        );
    }

    #[test]
    fn the_chain_recomputed_at_an_index_names_where_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions::new(crate::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        for i in 0..4 {
            s.audit(i, "admin:ops", "Admin.Stats", vec![]).unwrap();
        }
        let AuditChainAt::Hash(before) = s.audit_chain_at(2).unwrap() else {
            panic!("chain broken before tampering")
        };
        let db = s.db().unwrap();
        let mut e = AuditEntry::decode(2, &db.get(keys::audit(2)).unwrap().unwrap()).unwrap();
        e.actor = "admin:someone-else".into();
        db.insert(keys::audit(2), e.encode()).unwrap();
        assert_eq!(
            s.audit_chain_at(3).unwrap(),
            AuditChainAt::Broken { index: 3 }
        );
        assert_ne!(s.audit_chain_at(2).unwrap(), AuditChainAt::Hash(before));
        assert_eq!(
            s.audit_chain_at(2).unwrap(),
            AuditChainAt::Hash(entry_hash(&e.encode()))
        );
        db.remove(keys::audit(3)).unwrap();
        assert_eq!(
            s.audit_chain_at(4).unwrap(),
            AuditChainAt::Missing { index: 3 }
        );
    }

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
