//! The node's record-signing key and the key id its directory entry lists it under: what
//! records, receipts, head statements and terminations are signed with. Found at start and
//! again at every reload (the config may name a new key file: that is how a rotation switches
//! the key), by matching the key's public half against this region's keys in the directory.

use interflow_core::RegionCode;
use interflow_core::directory::{Directory, PublicKey, SignatureAlgorithm};
use interflow_core::idempotency::DigestKey;
use interflow_core::keys::RecordSigningKey;
use interflow_core::record::Sealer;
use interflow_core::time::UnixMillis;

/// Why the node cannot sign with the key file it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the signing key file's public key is not a key of region `{region}` valid now in the directory (serial {serial}); have the federation operator add it (`interflowctl keys rotate` prints the entry) or point `[keys] signing_key` at a listed key"
)]
pub struct NotListed {
    pub region: RegionCode,
    pub serial: u64,
}

/// The key this node signs with now, in its suite (Ed25519 or SM2).
pub struct NodeSigner {
    key: RecordSigningKey,
    key_id: u32,
    digest_key: DigestKey,
}

impl std::fmt::Debug for NodeSigner {
    // Never the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("key_id", &self.key_id)
            .field("alg", &self.key.seal_key().alg())
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// The signer for `key`: the id of `region`'s directory key with the same public half,
    /// valid at `now_ms`.
    pub fn find(
        region: RegionCode,
        key: RecordSigningKey,
        directory: &Directory,
        now_ms: UnixMillis,
    ) -> Result<NodeSigner, NotListed> {
        let key_id = directory
            .key_id_of(region, &key.public_key(), now_ms)
            .ok_or(NotListed {
                region,
                serial: directory.serial,
            })?;
        Ok(NodeSigner {
            digest_key: DigestKey::derive_from_secret(&key.secret_bytes()),
            key,
            key_id,
        })
    }

    /// The key with its id, for sealing and signing.
    pub fn sealer(&self) -> Sealer<'_> {
        Sealer {
            key: self.key.seal_key(),
            key_id: self.key_id,
        }
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The suite this node signs in.
    pub fn alg(&self) -> SignatureAlgorithm {
        self.key.seal_key().alg()
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Keys the digests of intake idempotency keys (derived from the signing key, so a node
    /// that recovered its own feed from a peer still recognises resubmissions).
    pub fn digest_key(&self) -> &DigestKey {
        &self.digest_key
    }
}
