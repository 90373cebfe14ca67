//! Key material files.
//!
//! Format (documented for operators): Ed25519 keys as PEM, the same files OpenSSL makes —
//! a private signing key is PKCS#8 (`-----BEGIN PRIVATE KEY-----`, e.g. from
//! `openssl genpkey -algorithm ed25519`), a public key is SubjectPublicKeyInfo
//! (`-----BEGIN PUBLIC KEY-----`, from `openssl pkey -pubout`). Agreement pseudonym keys are
//! 64 hex characters on one line. These file helpers are the only I/O this crate does.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::directory::PublicKey;
use crate::pseudonym::{KeyHexError, PseudonymKey};
use crate::record::SealKey;
use crate::sm2_suite::{Sm2KeyError, Sm2SigningKey, Sm2VerifyingKey};

/// Why PEM text is not the expected Ed25519 key.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error(transparent)]
    Pkcs8(#[from] ed25519_dalek::pkcs8::Error),
    #[error(transparent)]
    Spki(#[from] ed25519_dalek::pkcs8::spki::Error),
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file `{path}`: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file `{path}`: {source}")]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "`{path}` is not an Ed25519 private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`): {reason}; create one with `interflowctl keys gen` or `openssl genpkey -algorithm ed25519`"
    )]
    NotSigningKey { path: PathBuf, reason: PemError },
    #[error("`{path}` is not an Ed25519 public key in PEM (`BEGIN PUBLIC KEY`): {reason}")]
    NotPublicKey { path: PathBuf, reason: PemError },
    #[error("`{path}` is not a pseudonym key: {reason}")]
    NotPseudonymKey { path: PathBuf, reason: KeyHexError },
    #[error(
        "`{path}` is neither an Ed25519 nor an SM2 private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`): {sm2}; create one with `interflowctl keys gen [--alg sm2]`"
    )]
    NotRecordSigningKey { path: PathBuf, sm2: Sm2KeyError },
    #[error("`{path}`: {reason}")]
    Sm2 { path: PathBuf, reason: Sm2KeyError },
}

/// A record-signing secret key in its suite: what a node's `[keys] signing_key` file holds.
#[derive(Clone)]
pub enum RecordSigningKey {
    Ed25519(SigningKey),
    Sm2(Sm2SigningKey),
}

impl std::fmt::Debug for RecordSigningKey {
    // Never the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordSigningKey({:?})", self.seal_key().alg())
    }
}

impl RecordSigningKey {
    pub fn seal_key(&self) -> SealKey<'_> {
        match self {
            RecordSigningKey::Ed25519(k) => SealKey::Ed25519(k),
            RecordSigningKey::Sm2(k) => SealKey::Sm2(k),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.seal_key().public_key()
    }

    /// The secret scalar or seed, for keys derived from the signing key (never stored).
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        match self {
            RecordSigningKey::Ed25519(k) => zeroize::Zeroizing::new(k.to_bytes()),
            RecordSigningKey::Sm2(k) => k.secret_bytes(),
        }
    }
}

/// Reads a record-signing key file: Ed25519 or SM2, both PKCS#8 PEM (told apart by the
/// algorithm the file names).
pub fn load_record_signing_key(path: &Path) -> Result<RecordSigningKey, KeyError> {
    let pem = read(path)?;
    if let Ok(k) = signing_key_from_pem(&pem) {
        return Ok(RecordSigningKey::Ed25519(k));
    }
    Sm2SigningKey::from_pkcs8_pem(&pem)
        .map(RecordSigningKey::Sm2)
        .map_err(|sm2| KeyError::NotRecordSigningKey {
            path: path.to_owned(),
            sm2,
        })
}

/// Reads a public record-signing key file: Ed25519 or SM2 (`BEGIN PUBLIC KEY`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let pem = read(path)?;
    if let Ok(k) = verifying_key_from_pem(&pem) {
        return Ok(PublicKey::Ed25519(k));
    }
    Sm2VerifyingKey::from_public_key_pem(&pem)
        .map(PublicKey::Sm2)
        .map_err(|reason| KeyError::Sm2 {
            path: path.to_owned(),
            reason,
        })
}

/// Writes a public record-signing key file (PEM) in its suite.
pub fn save_public_key(path: &Path, key: &PublicKey) -> Result<(), KeyError> {
    let pem = match key {
        PublicKey::Ed25519(k) => {
            return save_verifying_key(path, k);
        }
        PublicKey::Sm2(k) => k.to_public_key_pem().map_err(|reason| KeyError::Sm2 {
            path: path.to_owned(),
            reason,
        })?,
    };
    std::fs::write(path, pem).map_err(|source| KeyError::Unwritable {
        path: path.to_owned(),
        source,
    })
}

/// Writes an SM2 signing key file (PKCS#8 PEM, as OpenSSL writes it) readable by its owner only.
pub fn save_sm2_signing_key(path: &Path, key: &Sm2SigningKey) -> Result<(), KeyError> {
    let pem = key.to_pkcs8_pem().map_err(|reason| KeyError::Sm2 {
        path: path.to_owned(),
        reason,
    })?;
    write_private(path, &pem)
}

/// Parses a PKCS#8 PEM Ed25519 private key.
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, PemError> {
    Ok(SigningKey::from_pkcs8_pem(pem)?)
}

/// Encodes a private key as PKCS#8 PEM.
pub fn signing_key_to_pem(key: &SigningKey) -> Result<String, PemError> {
    Ok(key.to_pkcs8_pem(LineEnding::LF).map(|z| z.to_string())?)
}

/// Parses an SPKI PEM Ed25519 public key.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, PemError> {
    Ok(VerifyingKey::from_public_key_pem(pem)?)
}

/// Encodes a public key as SPKI PEM.
pub fn verifying_key_to_pem(key: &VerifyingKey) -> Result<String, PemError> {
    Ok(key.to_public_key_pem(LineEnding::LF)?)
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), KeyError> {
    write_private_parts(path, &[contents])
}

/// Writes `parts` to a new owner-only file, without first joining them into another copy
/// (a secret's copies are what zeroizing cannot reach).
fn write_private_parts(path: &Path, parts: &[&str]) -> Result<(), KeyError> {
    use std::io::Write;
    let unwritable = |source| KeyError::Unwritable {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(unwritable)?;
    for p in parts {
        f.write_all(p.as_bytes()).map_err(unwritable)?;
    }
    f.sync_all().map_err(unwritable)
}

/// Reads a signing key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    signing_key_from_pem(&read(path)?).map_err(|reason| KeyError::NotSigningKey {
        path: path.to_owned(),
        reason,
    })
}

/// Writes a signing key file readable by its owner only.
pub fn save_signing_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let pem = signing_key_to_pem(key).map_err(|reason| KeyError::NotSigningKey {
        path: path.to_owned(),
        reason,
    })?;
    write_private(path, &pem)
}

/// Reads a public key file.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    verifying_key_from_pem(&read(path)?).map_err(|reason| KeyError::NotPublicKey {
        path: path.to_owned(),
        reason,
    })
}

/// Writes a public key file.
pub fn save_verifying_key(path: &Path, key: &VerifyingKey) -> Result<(), KeyError> {
    let pem = verifying_key_to_pem(key).map_err(|reason| KeyError::NotPublicKey {
        path: path.to_owned(),
        reason,
    })?;
    std::fs::write(path, pem).map_err(|source| KeyError::Unwritable {
        path: path.to_owned(),
        source,
    })
}

/// Reads a pseudonym key file (64 hex characters).
pub fn load_pseudonym_key(path: &Path) -> Result<PseudonymKey, KeyError> {
    PseudonymKey::from_hex(read(path)?.trim()).map_err(|reason| KeyError::NotPseudonymKey {
        path: path.to_owned(),
        reason,
    })
}

/// Writes a pseudonym key file readable by its owner only.
pub fn save_pseudonym_key(path: &Path, key: &PseudonymKey) -> Result<(), KeyError> {
    write_private_parts(path, &[key.to_hex().as_str(), "\n"])
}

/// A fresh signing key from the operating system's randomness.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let key = generate_signing_key();
        save_signing_key(&path, &key).unwrap();
        assert_eq!(load_signing_key(&path).unwrap().to_bytes(), key.to_bytes());
        let pub_path = dir.path().join("signing.pub.pem");
        save_verifying_key(&pub_path, &key.verifying_key()).unwrap();
        assert_eq!(load_verifying_key(&pub_path).unwrap(), key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn wrong_type_unreadable_and_garbage_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = load_signing_key(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Unreadable { .. }));
        assert!(err.to_string().contains("nope.pem"));

        // A public key where a private key is expected.
        let pub_path = dir.path().join("pub.pem");
        save_verifying_key(&pub_path, &generate_signing_key().verifying_key()).unwrap();
        assert!(matches!(
            load_signing_key(&pub_path).unwrap_err(),
            KeyError::NotSigningKey { .. }
        ));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        assert!(matches!(
            load_verifying_key(&garbage).unwrap_err(),
            KeyError::NotPublicKey { .. }
        ));
    }

    #[test]
    fn pseudonym_key_file_rejects_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psk.hex");
        std::fs::write(&path, "abcd\n").unwrap();
        assert!(matches!(
            load_pseudonym_key(&path).unwrap_err(),
            KeyError::NotPseudonymKey { .. }
        ));
        let key = PseudonymKey::from_bytes([7; 32]);
        save_pseudonym_key(&path, &key).unwrap();
        assert_eq!(*load_pseudonym_key(&path).unwrap().to_hex(), *key.to_hex());
    }
}
