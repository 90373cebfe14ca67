//! Idempotency keys: the caller's name for one submission, which makes a rerun safe (the node
//! answers a key it has stored with the same record instead of storing it twice). This module
//! owns the syntax of a key and its keyed digest; remembering digests is the store's job.
//!
//! A key is never stored or sent: a record carries `HMAC-SHA256(digest key, key)` inside its
//! signed body, so a node that lost its disk and recovered its records from a peer still
//! recognises a resubmission, and a clerk who typed something personal into a key leaves no
//! trace of it. The digest key is derived from the node's record-signing key (kept outside the
//! data directory), so it survives a disk loss; a new signing key starts a new digest space.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// `HMAC-SHA256(digest key, idempotency key)`: what records carry and stores keep.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyDigest(pub [u8; 32]);

impl fmt::Debug for IdempotencyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyDigest({})", hex::encode(&self.0[..6]))
    }
}

/// The node's secret for idempotency digests.
pub struct DigestKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

/// Domain label of the digest key derivation.
const DIGEST_KEY_LABEL: &[u8] = b"interflow/idempotency-digest/v1";

impl DigestKey {
    /// Derived from the node's record-signing key: `HMAC-SHA256(signing key, label)`.
    pub fn derive(signing: &SigningKey) -> Self {
        Self::derive_from_secret(&Zeroizing::new(signing.to_bytes()))
    }

    /// Derived from a record-signing key's secret bytes (Ed25519 seed or SM2 scalar).
    pub fn derive_from_secret(secret: &[u8; 32]) -> Self {
        DigestKey(Zeroizing::new(hmac(secret, DIGEST_KEY_LABEL)))
    }
}

/// HMAC-SHA256 with a 32-byte key. Padding the key to the block size ourselves is what HMAC
/// does for a short key anyway, and keeps this infallible (as in `pseudonym`).
fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new((&*block).into());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Longest key, in bytes (all of them ASCII).
pub const MAX_LEN: usize = 128;

/// 1 to [`MAX_LEN`] printable ASCII characters, no spaces.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

/// Why a string is not an idempotency key. Never carries the key itself: callers put it in
/// reports that must not echo what the caller typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    #[error("idempotency key is empty; it {}", IdempotencyKey::RULE)]
    Empty,
    #[error("idempotency key has {len} bytes; it {}", IdempotencyKey::RULE)]
    TooLong { len: usize },
    /// `position` counts bytes from 1.
    #[error(
        "idempotency key has a space, control or non-ASCII character at byte {position}; it {}",
        IdempotencyKey::RULE
    )]
    NotPrintable { position: usize },
}

impl IdempotencyKey {
    /// The rule as a reason to show next to the field name.
    pub const RULE: &'static str = "must be 1 to 128 printable ASCII characters without spaces";

    /// Checks `s` against the rule; no trimming.
    pub fn parse(s: &str) -> Result<Self, IdempotencyKeyError> {
        if s.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(IdempotencyKeyError::TooLong { len: s.len() });
        }
        if let Some(i) = s.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::NotPrintable { position: i + 1 });
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The keyed digest that records carry instead of the key.
    pub fn digest(&self, key: &DigestKey) -> IdempotencyDigest {
        IdempotencyDigest(hmac(&key.0, self.0.as_bytes()))
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = IdempotencyKeyError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        IdempotencyKey::parse(s)
    }
}

impl FromStr for IdempotencyKey {
    type Err = IdempotencyKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::parse(s)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_standard_hmac_and_never_show_the_key() {
        let k = DigestKey::derive(&SigningKey::from_bytes(&[1; 32]));
        let other = DigestKey::derive(&SigningKey::from_bytes(&[2; 32]));
        let key = IdempotencyKey::parse("row-42").unwrap();
        let d = key.digest(&k);
        assert_eq!(d, key.digest(&k), "deterministic");
        assert_ne!(d, key.digest(&other), "keyed by the node's signing key");
        assert_ne!(d, IdempotencyKey::parse("row-43").unwrap().digest(&k));
        // Standard HMAC-SHA256: the same as the hmac crate with the key as given.
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&*k.0).unwrap();
        mac.update(b"row-42");
        assert_eq!(d.0, <[u8; 32]>::from(mac.finalize().into_bytes()));
        assert!(!format!("{d:?} {k:?}").contains("row-42"));
    }

    /// The rule as the node and the CLI wrote it before this type existed.
    fn old_rule(k: &str) -> bool {
        !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn keys_of_printable_ascii_up_to_128_bytes_are_accepted() {
        for k in ["k", "row-1", "a/b:c#1", &"x".repeat(128), "~!{}"] {
            let key = IdempotencyKey::parse(k).unwrap();
            assert_eq!(key.as_str(), k);
            assert_eq!(k.parse::<IdempotencyKey>().unwrap(), key);
            assert_eq!(IdempotencyKey::try_from(k).unwrap().to_string(), k);
        }
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        assert_eq!(IdempotencyKey::parse(""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(&"x".repeat(129)),
            Err(IdempotencyKeyError::TooLong { len: 129 })
        );
        assert_eq!(
            IdempotencyKey::parse("has space"),
            Err(IdempotencyKeyError::NotPrintable { position: 4 })
        );
        assert_eq!(
            IdempotencyKey::parse("tab\t"),
            Err(IdempotencyKeyError::NotPrintable { position: 4 })
        );
        assert_eq!(
            IdempotencyKey::parse("ключ"),
            Err(IdempotencyKeyError::NotPrintable { position: 1 })
        );
    }

    #[test]
    fn errors_name_the_rule_and_not_the_key() {
        let e = IdempotencyKey::parse("secret key").unwrap_err().to_string();
        assert!(e.contains(IdempotencyKey::RULE), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn the_rule_is_the_old_one(s in "\\PC{0,140}|[ -~]{0,140}") {
            proptest::prop_assert_eq!(IdempotencyKey::parse(&s).is_ok(), old_rule(&s));
        }
    }
}
