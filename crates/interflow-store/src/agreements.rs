//! Agreements installed at runtime and terminations, kept durably: the installed agreement as
//! its signed bytes with the retention it asks for (so records of an agreement no longer in
//! force are still erased on schedule), and each termination notice as signed bytes, kept as
//! evidence. Opaque here: the node verifies both before storing and again when it loads them.

use interflow_core::RegionCode;
use serde::{Deserialize, Serialize};

use crate::error::{Place, corrupt};
use crate::state::{decode_versioned, encode_versioned};
use crate::{Result, Store, keys};

/// An agreement installed through `Admin.InstallAgreement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledAgreement {
    pub id: String,
    pub retention_days: u32,
    /// The `SignedAgreement` bytes as installed.
    pub signed: Vec<u8>,
    /// Where the node reads the agreement's pseudonym key (the key itself is never stored).
    pub pseudonym_key_file: String,
}

/// A termination notice of an agreement by one of its parties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTermination {
    pub agreement_id: String,
    pub by: RegionCode,
    /// The `SignedTermination` bytes as signed.
    pub signed: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct AgreementWire {
    retention_days: u32,
    signed: Vec<u8>,
    pseudonym_key_file: String,
}

fn id_of(at: Place, key: &[u8], prefix_len: usize) -> Result<String> {
    key.get(1..key.len().saturating_sub(prefix_len))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_owned)
        .ok_or_else(|| corrupt(at, "key is not an agreement id"))
}

impl Store {
    /// Keeps an installed agreement durably (a later install of the same id replaces it).
    pub fn save_agreement(&self, a: &InstalledAgreement) -> Result<()> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        batch.insert(
            keys::agreement(&a.id),
            encode_versioned(&AgreementWire {
                retention_days: a.retention_days,
                signed: a.signed.clone(),
                pseudonym_key_file: a.pseudonym_key_file.clone(),
            }),
        );
        self.commit(batch)
    }

    /// Every installed agreement, by id.
    pub fn agreements(&self) -> Result<Vec<InstalledAgreement>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::AGREEMENT]) {
            let (k, v) = kv?;
            let id = id_of(Place::Agreements, &k, 0)?;
            let w: AgreementWire = decode_versioned(Place::Agreements, &v)?;
            out.push(InstalledAgreement {
                id,
                retention_days: w.retention_days,
                signed: w.signed,
                pseudonym_key_file: w.pseudonym_key_file,
            });
        }
        Ok(out)
    }

    /// Keeps a termination notice as evidence. Answers false when this party's notice for the
    /// agreement is already kept (the first one stands and is never overwritten).
    pub fn save_termination(&self, t: &StoredTermination) -> Result<bool> {
        let _w = self.write.lock();
        self.check_writable()?;
        let key = keys::termination(&t.agreement_id, t.by);
        if self.db()?.contains_key(&key)? {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.insert(key, t.signed.as_slice());
        self.commit(batch)?;
        Ok(true)
    }

    /// Every kept termination notice.
    pub fn terminations(&self) -> Result<Vec<StoredTermination>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::TERMINATION]) {
            let (k, v) = kv?;
            let by = k
                .get(k.len().saturating_sub(6)..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<RegionCode>().ok())
                .ok_or_else(|| corrupt(Place::Agreements, "termination key names no region"))?;
            out.push(StoredTermination {
                agreement_id: id_of(Place::Agreements, &k, 6)?,
                by,
                signed: v.to_vec(),
            });
        }
        Ok(out)
    }

    /// Retention of an installed agreement, for erasing records of one that is no longer in
    /// force or was removed from the config.
    pub fn installed_retention_days(&self) -> Result<std::collections::HashMap<String, u32>> {
        Ok(self
            .agreements()?
            .into_iter()
            .map(|a| (a.id, a.retention_days))
            .collect())
    }
}
