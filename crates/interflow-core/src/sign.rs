//! Domain-separated Ed25519 signatures over exact bytes.
//!
//! Every signed document type has its own prefix, so a signature made for one kind of document
//! (or with no prefix at all) never verifies as another. Verification uses `verify_strict`,
//! which refuses small-order keys and non-canonical signatures (malleability).

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// What a signature is for; each domain has a distinct prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Record,
    Receipt,
    Heads,
    Agreement,
    Directory,
    Termination,
}

impl Domain {
    /// The bytes signed before the document body.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Domain::Record => b"interflow/record/v1\0",
            Domain::Receipt => b"interflow/receipt/v1\0",
            Domain::Heads => b"interflow/heads/v1\0",
            Domain::Agreement => b"interflow/agreement/v1\0",
            Domain::Directory => b"interflow/directory/v1\0",
            Domain::Termination => b"interflow/termination/v1\0",
        }
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature must be 64 bytes, got {0}")]
    WrongLength(usize),
    #[error("signature does not verify under the signer's key")]
    Invalid,
}

fn message(domain: Domain, body: &[u8]) -> Vec<u8> {
    let prefix = domain.prefix();
    let mut m = Vec::with_capacity(prefix.len() + body.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(body);
    m
}

/// Signs `body` for `domain`.
pub fn sign(key: &SigningKey, domain: Domain, body: &[u8]) -> [u8; 64] {
    key.sign(&message(domain, body)).to_bytes()
}

/// Verifies a signature over `body` for `domain` with strict Ed25519 rules.
pub fn verify(
    key: &VerifyingKey,
    domain: Domain,
    body: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let sig: [u8; 64] = signature
        .try_into()
        .map_err(|_| SignatureError::WrongLength(signature.len()))?;
    key.verify_strict(&message(domain, body), &Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn round_trip_verifies() {
        let k = key(1);
        let sig = sign(&k, Domain::Record, b"body");
        assert_eq!(
            verify(&k.verifying_key(), Domain::Record, b"body", &sig),
            Ok(())
        );
    }

    #[test]
    fn other_domain_wrong_key_and_one_bit_flip_are_refused() {
        let k = key(1);
        let sig = sign(&k, Domain::Record, b"body");
        let vk = k.verifying_key();
        assert_eq!(
            verify(&vk, Domain::Receipt, b"body", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&key(2).verifying_key(), Domain::Record, b"body", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&vk, Domain::Record, b"bodz", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&vk, Domain::Record, b"body", &sig[..63]),
            Err(SignatureError::WrongLength(63))
        );
    }

    #[test]
    fn signature_without_the_domain_prefix_is_refused() {
        let k = key(3);
        let bare = k.sign(b"body").to_bytes();
        assert_eq!(
            verify(&k.verifying_key(), Domain::Record, b"body", &bare),
            Err(SignatureError::Invalid)
        );
    }
}
