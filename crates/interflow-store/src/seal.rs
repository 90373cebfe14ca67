//! Encryption at rest: record bodies and equivocation evidence are sealed with
//! XChaCha20-Poly1305 under a data key per period (agreement id, calendar month of the
//! record's issue time, UTC); the data keys live in the keyring file beside sled, sealed as a
//! whole under the node's master key, which is kept outside the data directory.
//!
//! Why the keyring is a file and not sled entries: sled is a log and keeps old segments, so a
//! data key deleted from sled could still be read from an old segment with the master key.
//! The keyring file is rewritten whole (new file, fsync, rename), so once a period's key is
//! destroyed no file under the data directory holds it in any form, and whatever sled still
//! keeps of that period is ciphertext nobody can open (crypto-shredding).
//!
//! A sealed value keeps the chain facts in the clear (id, link, seq, issue time, agreement id)
//! so the log verifies without keys and after erasure; the associated data binds the
//! ciphertext to its sled key and those facts, so a sealed body cannot be moved to another
//! position or record. The subject index is keyed by a keyed digest of the subject ref (a key
//! derived from the master key), so no subject ref lies on disk in the clear either.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{Datelike, TimeZone};
use hmac::{Hmac, Mac};
use interflow_core::record::{DecodedRecord, RecordId};
use interflow_core::time::UnixMillis;
use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::Result;
use crate::engine::id_at;
use crate::error::{Place, StoreError, corrupt};

/// First byte of a sealed record or evidence value (a plain `SignedRecord` starts with `0x08`,
/// an erased-record stub with `0x00`).
pub(crate) const SEALED: u8 = 0x01;
const NONCE: usize = 24;
/// Name of the keyring file in the data directory.
pub const KEYRING_FILE: &str = "keyring";
const KEYRING_MAGIC: &[u8] = b"interflow-keyring-v1\0";

/// The node's master key: 32 bytes that wrap the keyring. Zeroized on drop.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why a master key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "cannot read the master key file `{path}`: {source}; create one with `(umask 077; openssl rand -hex 32 > {path})` outside the data directory, or configure `[keys] master_key`"
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the master key file `{path}` has mode {mode:04o}: it must be readable by its owner only; run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "the master key {from} is not 64 hexadecimal characters (32 bytes); generate one with `openssl rand -hex 32`"
    )]
    Malformed { from: String },
    #[error("cannot write the master key file `{path}`: {source}")]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's randomness.
    pub fn generate() -> MasterKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        MasterKey(k)
    }

    /// From 64 hex characters (surrounding whitespace ignored); `from` names the source in the
    /// error.
    pub fn from_hex(text: &str, from: &str) -> Result<MasterKey, MasterKeyError> {
        let malformed = || MasterKeyError::Malformed {
            from: from.to_owned(),
        };
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), k.as_mut()).map_err(|_| malformed())?;
        Ok(MasterKey(k))
    }

    /// Reads a key file, refusing one that anybody but its owner can read.
    pub fn load(path: &Path) -> Result<MasterKey, MasterKeyError> {
        let unreadable = |source| MasterKeyError::Unreadable {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(MasterKeyError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(unreadable)?);
        MasterKey::from_hex(&text, &format!("file `{}`", path.display()))
    }

    /// Writes a new key file readable by its owner only; refuses to replace an existing file
    /// (replacing a master key makes the store it opened unreadable).
    pub fn write_new(path: &Path) -> Result<MasterKey, MasterKeyError> {
        let unwritable = |source| MasterKeyError::Unwritable {
            path: path.to_owned(),
            source,
        };
        let key = MasterKey::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(unwritable)?;
        let text = Zeroizing::new(hex::encode(key.0.as_ref()));
        f.write_all(text.as_bytes()).map_err(unwritable)?;
        f.write_all(b"\n").map_err(unwritable)?;
        f.sync_all().map_err(unwritable)?;
        Ok(key)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// A subkey for `purpose`, so the master key itself seals nothing but the keyring.
    fn derive(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose);
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

/// A data key's period: the agreement and the month of the issue time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Period {
    pub agreement_id: String,
    /// Months since year 0 (year * 12 + month - 1), UTC.
    pub month: i32,
}

impl Period {
    pub(crate) fn of(agreement_id: &str, issued_at_ms: UnixMillis) -> Period {
        let d = chrono::Utc
            .timestamp_millis_opt(issued_at_ms)
            .single()
            .unwrap_or_default();
        Period {
            agreement_id: agreement_id.to_owned(),
            month: d.year() * 12 + d.month0() as i32,
        }
    }

    /// The first millisecond after the period: every record of it was issued before.
    pub(crate) fn end_ms(&self) -> UnixMillis {
        let next = self.month + 1;
        chrono::NaiveDate::from_ymd_opt(next.div_euclid(12), next.rem_euclid(12) as u32 + 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or(UnixMillis::MAX)
    }
}

#[derive(Serialize, Deserialize, Default)]
struct KeyringContents {
    keys: Vec<(Period, [u8; 32])>,
}

impl Drop for KeyringContents {
    fn drop(&mut self) {
        for (_, k) in &mut self.keys {
            k.zeroize();
        }
    }
}

/// The clear part of a sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub id: RecordId,
    pub prev_hash: RecordId,
    pub seq: u64,
    pub issued_at_ms: UnixMillis,
    pub agreement_id: String,
}

/// The master key's subkeys and the keyring of data keys, for one open store.
pub(crate) struct Vault {
    master: MasterKey,
    index_key: Zeroizing<[u8; 32]>,
    path: PathBuf,
    keys: RwLock<BTreeMap<Period, Zeroizing<[u8; 32]>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Keyring {
        path: path.to_owned(),
        source,
    }
}

impl Vault {
    /// Opens the keyring in `dir`: `Ok(None)` when there is none yet.
    pub(crate) fn open(dir: &Path, master: &MasterKey) -> Result<Option<Vault>> {
        let path = dir.join(KEYRING_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        let body = bytes
            .strip_prefix(KEYRING_MAGIC)
            .filter(|b| b.len() > NONCE)
            .ok_or_else(|| corrupt(Place::Data(path.clone()), "is not an interflow keyring"))?;
        let (nonce, ct) = body.split_at(NONCE);
        // Authenticated: a wrong master key fails here, before any record is read.
        let plain = Zeroizing::new(
            master
                .cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: KEYRING_MAGIC,
                    },
                )
                .map_err(|_| StoreError::WrongMasterKey { path: path.clone() })?,
        );
        let contents: KeyringContents = postcard::from_bytes(&plain).map_err(|e| {
            crate::error::undecodable(Place::Data(path.clone()), "keyring does not decode", e)
        })?;
        let keys = contents
            .keys
            .iter()
            .map(|(p, k)| (p.clone(), Zeroizing::new(*k)))
            .collect();
        Ok(Some(Vault::with_keys(path, master, keys)))
    }

    /// A new, empty keyring in `dir`, written durably.
    pub(crate) fn create(dir: &Path, master: &MasterKey) -> Result<Vault> {
        let v = Vault::with_keys(dir.join(KEYRING_FILE), master, BTreeMap::new());
        v.persist(&v.keys.read())?;
        Ok(v)
    }

    fn with_keys(
        path: PathBuf,
        master: &MasterKey,
        keys: BTreeMap<Period, Zeroizing<[u8; 32]>>,
    ) -> Vault {
        Vault {
            index_key: master.derive(b"interflow/store/subject-index/v1"),
            master: master.clone(),
            path,
            keys: RwLock::new(keys),
        }
    }

    /// Writes the keyring whole: temporary file, fsync, rename, fsync of the directory.
    fn persist(&self, keys: &BTreeMap<Period, Zeroizing<[u8; 32]>>) -> Result<()> {
        let contents = KeyringContents {
            keys: keys.iter().map(|(p, k)| (p.clone(), **k)).collect(),
        };
        let plain = Zeroizing::new(postcard::to_allocvec(&contents).map_err(|e| {
            crate::error::undecodable(Place::Data(self.path.clone()), "keyring does not encode", e)
        })?);
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .master
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: KEYRING_MAGIC,
                },
            )
            .map_err(|_| corrupt(Place::Data(self.path.clone()), "keyring cannot be sealed"))?;
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(KEYRING_MAGIC)?;
            f.write_all(&nonce)?;
            f.write_all(&ct)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| io_err(&self.path, e))
    }

    /// The data key of `period`, made (and the keyring made durable) if it does not exist yet.
    /// Callers hold the store's write lock, and commit what they seal only after this returns.
    fn key_for_write(&self, period: &Period) -> Result<XChaCha20Poly1305> {
        if let Some(k) = self.keys.read().get(period) {
            return Ok(XChaCha20Poly1305::new(k.as_ref().into()));
        }
        let mut keys = self.keys.write();
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        let cipher = XChaCha20Poly1305::new(k.as_ref().into());
        keys.insert(period.clone(), k);
        if let Err(e) = self.persist(&keys) {
            keys.remove(period);
            return Err(e);
        }
        Ok(cipher)
    }

    /// Destroys the data keys of every period for which `gone` says so, and makes that
    /// durable. Returns how many were destroyed.
    pub(crate) fn destroy(&self, gone: &dyn Fn(&Period) -> bool) -> Result<usize> {
        let mut keys = self.keys.write();
        let doomed: Vec<Period> = keys.keys().filter(|p| gone(p)).cloned().collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut kept = keys.clone();
        for p in &doomed {
            kept.remove(p);
        }
        self.persist(&kept)?;
        *keys = kept;
        Ok(doomed.len())
    }

    /// How many data keys the keyring holds.
    pub(crate) fn key_count(&self) -> usize {
        self.keys.read().len()
    }

    /// The subject index's stand-in for a subject ref: a keyed digest.
    pub(crate) fn blind_subject(&self, subject: &[u8; 32]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.index_key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(subject);
        mac.finalize().into_bytes().into()
    }

    /// Seals a record's `SignedRecord` bytes for the sled key `place`.
    pub(crate) fn seal(&self, place: &[u8], rec: &DecodedRecord) -> Result<Vec<u8>> {
        let h = Header {
            id: rec.id(),
            prev_hash: rec.prev_hash(),
            seq: rec.seq(),
            issued_at_ms: rec.issued_at_ms(),
            agreement_id: rec.agreement_id().to_owned(),
        };
        let cipher = self.key_for_write(&Period::of(&h.agreement_id, h.issued_at_ms))?;
        let mut out = encode_header(&h);
        let clear_len = out.len();
        // Random 24-byte nonces never repeat in practice; the thread's CSPRNG (seeded from the
        // OS) saves a system call per record on the append path.
        let mut nonce = [0u8; NONCE];
        rand::thread_rng().fill_bytes(&mut nonce);
        let plain = Zeroizing::new(rec.to_bytes());
        let aad = [place, &out[..]].concat();
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| corrupt(Place::Data(self.path.clone()), "a record cannot be sealed"))?;
        out.reserve(NONCE + ct.len());
        debug_assert_eq!(out.len(), clear_len);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a sealed value stored under sled key `place`: the `SignedRecord` bytes, or
    /// `Ok(None)` when the period's key was destroyed (the body is gone for good).
    pub(crate) fn unseal(&self, at: Place, place: &[u8], v: &[u8]) -> Result<Option<Vec<u8>>> {
        let (h, clear_len) = decode_header(at.clone(), v)?;
        let rest = &v[clear_len..];
        if rest.len() < NONCE {
            return Err(corrupt(at, "sealed value is too short"));
        }
        let (nonce, ct) = rest.split_at(NONCE);
        let keys = self.keys.read();
        let Some(k) = keys.get(&Period::of(&h.agreement_id, h.issued_at_ms)) else {
            return Ok(None);
        };
        let aad = [place, &v[..clear_len]].concat();
        XChaCha20Poly1305::new(k.as_ref().into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Some)
            .map_err(|_| {
                corrupt(
                    at,
                    "sealed body does not authenticate (changed on disk, or moved from another place)",
                )
            })
    }
}

impl crate::Store {
    /// How many data keys (periods) the keyring holds: one per agreement and month with a
    /// record still readable.
    pub fn data_key_count(&self) -> Result<usize> {
        Ok(self.db()?.vault.key_count())
    }
}

fn encode_header(h: &Header) -> Vec<u8> {
    let a = h.agreement_id.as_bytes();
    let mut v = Vec::with_capacity(1 + 32 + 32 + 16 + 2 + a.len() + NONCE + 200);
    v.push(SEALED);
    v.extend_from_slice(h.id.as_bytes());
    v.extend_from_slice(h.prev_hash.as_bytes());
    v.extend_from_slice(&h.seq.to_be_bytes());
    v.extend_from_slice(&h.issued_at_ms.to_be_bytes());
    v.extend_from_slice(&(a.len() as u16).to_be_bytes());
    v.extend_from_slice(a);
    v
}

/// The clear header of a sealed value and where its nonce starts.
pub(crate) fn decode_header(at: Place, v: &[u8]) -> Result<(Header, usize)> {
    const FIXED: usize = 1 + 32 + 32 + 8 + 8 + 2;
    if v.first() != Some(&SEALED) || v.len() < FIXED {
        return Err(corrupt(at, "is not a sealed value"));
    }
    let int = |from: usize| {
        <[u8; 8]>::try_from(&v[from..from + 8])
            .map_err(|_| corrupt(at.clone(), "sealed header field is short"))
    };
    let alen = u16::from_be_bytes([v[81], v[82]]) as usize;
    let end = FIXED + alen;
    let agreement_id = v
        .get(FIXED..end)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| corrupt(at.clone(), "sealed header agreement id is not UTF-8"))?
        .to_owned();
    Ok((
        Header {
            id: id_at(at.clone(), &v[1..33])?,
            prev_hash: id_at(at.clone(), &v[33..65])?,
            seq: u64::from_be_bytes(int(65)?),
            issued_at_ms: i64::from_be_bytes(int(73)?),
            agreement_id,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months_and_end_at_the_next_month() {
        // 2026-03-31T23:59:59.999Z and 2026-04-01T00:00:00Z
        let march_end = 1_775_001_599_999;
        let p = Period::of("agr", march_end);
        assert_eq!(p.month, 2026 * 12 + 2);
        assert_eq!(p.end_ms(), march_end + 1);
        assert_eq!(Period::of("agr", march_end + 1).month, 2026 * 12 + 3);
        let dec = Period {
            agreement_id: "agr".into(),
            month: 2025 * 12 + 11,
        };
        assert_eq!(Period::of("agr", dec.end_ms()).month, 2026 * 12);
    }

    #[test]
    fn a_master_key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let written = MasterKey::write_new(&path).unwrap();
        assert_eq!(MasterKey::load(&path).unwrap().0, written.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = MasterKey::load(&path).unwrap_err();
            assert!(matches!(err, MasterKeyError::TooOpen { mode: 0o640, .. }));
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        // Never replaced: a new key would make the store it opened unreadable.
        assert!(matches!(
            MasterKey::write_new(&path),
            Err(MasterKeyError::Unwritable { .. })
        ));
    }

    #[test]
    fn a_master_key_that_is_not_64_hex_characters_is_refused() {
        assert!(MasterKey::from_hex(&"ab".repeat(32), "test").is_ok());
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(matches!(
                MasterKey::from_hex(bad, "test"),
                Err(MasterKeyError::Malformed { .. })
            ));
        }
    }
}
