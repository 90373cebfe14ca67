//! The federation directory: the members of the federation, signed by the federation operator
//! key (the trust anchor). Loading refuses a directory whose signature does not verify.

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;

use crate::canonical::{CanonicalError, decode_canonical};
use crate::pb;
use crate::region::RegionCode;
use crate::sign::{self, Domain, SignatureError};
use crate::sm2_suite::Sm2VerifyingKey;
use crate::time::UnixMillis;

/// One member bureau.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub region: RegionCode,
    pub name: String,
    /// `host:port` of the member's peer listener.
    pub endpoint: String,
    /// Record-signing key; separate from the TLS key.
    pub signing_key: VerifyingKey,
    /// URI SAN of its TLS certificate.
    pub tls_identity: String,
    /// Every record-signing key, key id 0 (`signing_key`, valid from the beginning of time
    /// unless the directory lists key id 0 with an end or a revocation) first, then the listed
    /// ones in directory order.
    pub keys: Vec<MemberKey>,
}

/// A signature algorithm of a member key. Adding a suite is adding a variant here and in
/// [`PublicKey`]; the key model stays as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    Ed25519,
    /// SM2 with SM3 ([`crate::sm2_suite`]).
    Sm2Sm3,
}

impl SignatureAlgorithm {
    /// The wire value, as envelopes and directory entries carry it.
    pub fn to_pb(self) -> i32 {
        match self {
            SignatureAlgorithm::Ed25519 => pb::SignatureAlgorithm::Ed25519 as i32,
            SignatureAlgorithm::Sm2Sm3 => pb::SignatureAlgorithm::Sm2Sm3 as i32,
        }
    }

    /// The suite a wire value names, if this build implements it.
    pub fn from_pb(alg: i32) -> Option<SignatureAlgorithm> {
        match pb::SignatureAlgorithm::try_from(alg).ok()? {
            pb::SignatureAlgorithm::Ed25519 => Some(SignatureAlgorithm::Ed25519),
            pb::SignatureAlgorithm::Sm2Sm3 => Some(SignatureAlgorithm::Sm2Sm3),
            pb::SignatureAlgorithm::Unspecified => None,
        }
    }
}

/// A member's public key in its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(VerifyingKey),
    Sm2(Sm2VerifyingKey),
}

impl PublicKey {
    pub fn alg(&self) -> SignatureAlgorithm {
        match self {
            PublicKey::Ed25519(_) => SignatureAlgorithm::Ed25519,
            PublicKey::Sm2(_) => SignatureAlgorithm::Sm2Sm3,
        }
    }

    /// The wire algorithm value, as signed envelopes carry it.
    pub fn alg_pb(&self) -> i32 {
        self.alg().to_pb()
    }

    /// Verifies a domain-separated signature under this key.
    pub fn verify(
        &self,
        domain: Domain,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        match self {
            PublicKey::Ed25519(k) => sign::verify(k, domain, body, signature),
            PublicKey::Sm2(k) => k.verify(domain, body, signature),
        }
    }

    /// The bytes a directory entry carries (32 for Ed25519, 65 uncompressed SEC1 for SM2).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Ed25519(k) => k.to_bytes().to_vec(),
            PublicKey::Sm2(k) => k.to_bytes().to_vec(),
        }
    }
}

/// One record-signing key of a member with its validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    pub key_id: u32,
    pub public_key: PublicKey,
    pub valid_from_ms: UnixMillis,
    /// 0: open.
    pub valid_until_ms: UnixMillis,
    /// 0: not revoked.
    pub revoked_at_ms: UnixMillis,
}

impl MemberKey {
    /// Key id 0: the legacy `signing_key`, valid from the beginning of time.
    pub fn legacy(key: VerifyingKey) -> Self {
        MemberKey {
            key_id: 0,
            public_key: PublicKey::Ed25519(key),
            valid_from_ms: i64::MIN,
            valid_until_ms: 0,
            revoked_at_ms: 0,
        }
    }

    /// Whether a document issued at `at_ms` may be signed by this key: inside its window and
    /// before its revocation time.
    pub fn check_at(&self, at_ms: UnixMillis) -> Result<(), KeyNotValid> {
        if at_ms < self.valid_from_ms {
            return Err(KeyNotValid::NotYet(self.valid_from_ms));
        }
        if self.valid_until_ms != 0 && at_ms >= self.valid_until_ms {
            return Err(KeyNotValid::Expired(self.valid_until_ms));
        }
        if self.revoked_at_ms != 0 && at_ms >= self.revoked_at_ms {
            return Err(KeyNotValid::Revoked(self.revoked_at_ms));
        }
        Ok(())
    }
}

/// Why a key was not valid at an issue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyNotValid {
    #[error("its window starts at {0} ms")]
    NotYet(UnixMillis),
    #[error("its window ended at {0} ms")]
    Expired(UnixMillis),
    #[error("it was revoked at {0} ms")]
    Revoked(UnixMillis),
}

/// Why no key of the directory may verify a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    #[error("region `{0}` is not a member of the federation directory")]
    UnknownMember(RegionCode),
    #[error("region `{region}` has no key id {key_id} in the federation directory")]
    UnknownKey { region: RegionCode, key_id: u32 },
    #[error("key id {key_id} of region `{region}` was not valid at {at_ms} ms: {why}")]
    NotValid {
        region: RegionCode,
        key_id: u32,
        at_ms: UnixMillis,
        why: KeyNotValid,
    },
}

/// The verified directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Directory {
    pub serial: u64,
    pub issued_at_ms: i64,
    /// After this the directory is expired (`None`: no expiry, as older directories).
    pub expires_at_ms: Option<i64>,
    members: BTreeMap<RegionCode, Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory signature algorithm `{0}` is not supported")]
    UnsupportedAlgorithm(i32),
    #[error("directory is not signed by the federation operator key: {0}")]
    BadSignature(SignatureError),
    #[error(transparent)]
    Body(#[from] CanonicalError),
    #[error("directory member {index}: field `{field}` is invalid: {reason}")]
    BadMember {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("directory lists region `{0}` twice")]
    Duplicate(RegionCode),
}

/// The URI SAN a member's TLS certificate carries.
pub fn tls_identity_for(region: RegionCode) -> String {
    format!("urn:interflow:region:{region}")
}

impl Directory {
    /// Verifies the operator signature first, then decodes the members.
    pub fn verify(
        signed: &pb::SignedDirectory,
        operator_key: &VerifyingKey,
    ) -> Result<Directory, DirectoryError> {
        if signed.alg != pb::SignatureAlgorithm::Ed25519 as i32 {
            return Err(DirectoryError::UnsupportedAlgorithm(signed.alg));
        }
        sign::verify(
            operator_key,
            Domain::Directory,
            &signed.body,
            &signed.signature,
        )
        .map_err(DirectoryError::BadSignature)?;
        let body: pb::DirectoryBody = decode_canonical("DirectoryBody", &signed.body)?;
        let mut members = BTreeMap::new();
        for (index, m) in body.members.into_iter().enumerate() {
            let bad = |field, reason: String| DirectoryError::BadMember {
                index,
                field,
                reason,
            };
            let region: RegionCode = m
                .region_code
                .parse()
                .map_err(|e: crate::region::RegionCodeError| bad("region_code", e.to_string()))?;
            let signing_key = ed25519_key(&m.signing_key).map_err(|r| bad("signing_key", r))?;
            if m.endpoint.is_empty() {
                return Err(bad("endpoint", "is empty".into()));
            }
            if m.tls_identity != tls_identity_for(region) {
                return Err(bad(
                    "tls_identity",
                    format!("must be `{}`", tls_identity_for(region)),
                ));
            }
            let mut keys = vec![MemberKey::legacy(signing_key)];
            for (k, mk) in m.keys.iter().enumerate() {
                let key =
                    member_key(mk).map_err(|reason| bad("keys", format!("entry {k}: {reason}")))?;
                if key.key_id == 0 {
                    // Key id 0 listed: the window (end, revocation) of `signing_key` itself.
                    if key.public_key != PublicKey::Ed25519(signing_key) {
                        return Err(bad(
                            "keys",
                            format!("entry {k}: key id 0 must repeat `signing_key`"),
                        ));
                    }
                    if keys[0] != MemberKey::legacy(signing_key) {
                        return Err(bad("keys", "key id 0 is listed twice".into()));
                    }
                    keys[0] = key;
                    continue;
                }
                if keys.iter().any(|x| x.key_id == key.key_id) {
                    return Err(bad(
                        "keys",
                        format!("key id {} is listed twice", key.key_id),
                    ));
                }
                // One id per key: a node finds its key id by its public key.
                if let Some(x) = keys.iter().find(|x| x.public_key == key.public_key) {
                    return Err(bad(
                        "keys",
                        format!(
                            "key id {} repeats the public key of key id {}",
                            key.key_id, x.key_id
                        ),
                    ));
                }
                keys.push(key);
            }
            let member = Member {
                region,
                name: m.name,
                endpoint: m.endpoint,
                signing_key,
                tls_identity: m.tls_identity,
                keys,
            };
            if members.insert(region, member).is_some() {
                return Err(DirectoryError::Duplicate(region));
            }
        }
        Ok(Directory {
            serial: body.serial,
            issued_at_ms: body.issued_at_ms,
            expires_at_ms: (body.expires_at_ms != 0).then_some(body.expires_at_ms),
            members,
        })
    }

    /// Signs a directory body with the federation operator key.
    pub fn sign(body: &pb::DirectoryBody, operator: &SigningKey) -> pb::SignedDirectory {
        let bytes = body.encode_to_vec();
        pb::SignedDirectory {
            alg: pb::SignatureAlgorithm::Ed25519 as i32,
            signature: sign::sign(operator, Domain::Directory, &bytes).to_vec(),
            body: bytes,
        }
    }

    /// Whether the directory is past its expiry at `now_ms`.
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }

    pub fn member(&self, region: RegionCode) -> Option<&Member> {
        self.members.get(&region)
    }

    pub fn signing_key(&self, region: RegionCode) -> Option<VerifyingKey> {
        self.members.get(&region).map(|m| m.signing_key)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The key `region` names as `key_id`, if it was valid at `at_ms` (the issue time of the
    /// signed document). The one lookup every signature check of a member goes through.
    pub fn key_for(
        &self,
        region: RegionCode,
        key_id: u32,
        at_ms: UnixMillis,
    ) -> Result<&MemberKey, KeyLookupError> {
        let member = self
            .members
            .get(&region)
            .ok_or(KeyLookupError::UnknownMember(region))?;
        let key = member
            .keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or(KeyLookupError::UnknownKey { region, key_id })?;
        key.check_at(at_ms)
            .map_err(|why| KeyLookupError::NotValid {
                region,
                key_id,
                at_ms,
                why,
            })?;
        Ok(key)
    }

    /// The id of `region`'s key whose public half is `public`, valid at `at_ms`: how a node
    /// finds the key id to sign with from its own key file.
    pub fn key_id_of(
        &self,
        region: RegionCode,
        public: &PublicKey,
        at_ms: UnixMillis,
    ) -> Option<u32> {
        self.members.get(&region)?.keys.iter().find_map(|k| {
            (k.public_key == *public && k.check_at(at_ms).is_ok()).then_some(k.key_id)
        })
    }
}

/// Where a verifier finds a signer's key: the directory (by key id, valid at the issue time),
/// or one given key (the caller vouches for it; the key id is then not consulted).
pub trait KeySource {
    fn public_key(
        &self,
        signer: RegionCode,
        key_id: u32,
        at_ms: UnixMillis,
    ) -> Result<PublicKey, KeyLookupError>;

    /// Verifies `signature` over `body` for `domain` as made by `by` in envelope algorithm
    /// `alg`.
    fn verify_signed(
        &self,
        by: SignedBy,
        alg: i32,
        domain: Domain,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), SignedByError> {
        let key = self.public_key(by.signer, by.key_id, by.at_ms)?;
        if key.alg_pb() != alg {
            return Err(SignedByError::UnsupportedAlgorithm(alg));
        }
        Ok(key.verify(domain, body, signature)?)
    }
}

/// Who claims to have signed a document: a member, the key id its envelope names and the
/// document's issue time (at which that key must be valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedBy {
    pub signer: RegionCode,
    pub key_id: u32,
    pub at_ms: UnixMillis,
}

/// Why a signature by a member did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedByError {
    #[error("signature algorithm `{0}` is not that of the signer's key")]
    UnsupportedAlgorithm(i32),
    #[error(transparent)]
    Key(#[from] KeyLookupError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

impl KeySource for Directory {
    fn public_key(
        &self,
        signer: RegionCode,
        key_id: u32,
        at_ms: UnixMillis,
    ) -> Result<PublicKey, KeyLookupError> {
        self.key_for(signer, key_id, at_ms)
            .map(|k| k.public_key.clone())
    }
}

impl KeySource for VerifyingKey {
    fn public_key(
        &self,
        _: RegionCode,
        _: u32,
        _: UnixMillis,
    ) -> Result<PublicKey, KeyLookupError> {
        Ok(PublicKey::Ed25519(*self))
    }
}

/// A lookup of one key per region (key id 0 semantics), as offline tools have it.
impl<F: Fn(RegionCode) -> Option<VerifyingKey>> KeySource for F {
    fn public_key(
        &self,
        signer: RegionCode,
        _: u32,
        _: UnixMillis,
    ) -> Result<PublicKey, KeyLookupError> {
        self(signer)
            .map(PublicKey::Ed25519)
            .ok_or(KeyLookupError::UnknownMember(signer))
    }
}

/// Decodes and checks one listed key: a supported algorithm, a strong public key and a window
/// that is not empty. Key id 0 may be listed only to end or revoke the legacy `signing_key`.
fn member_key(mk: &pb::MemberKey) -> Result<MemberKey, String> {
    let public_key = match SignatureAlgorithm::from_pb(mk.alg) {
        Some(SignatureAlgorithm::Ed25519) => PublicKey::Ed25519(ed25519_key(&mk.public_key)?),
        Some(SignatureAlgorithm::Sm2Sm3) => {
            PublicKey::Sm2(Sm2VerifyingKey::from_bytes(&mk.public_key).map_err(|e| e.to_string())?)
        }
        None => return Err(format!("signature algorithm `{}` is not supported", mk.alg)),
    };
    if mk.valid_until_ms != 0 && mk.valid_until_ms <= mk.valid_from_ms {
        return Err("`valid_until_ms` must be after `valid_from_ms` (or 0 for open)".into());
    }
    if mk.revoked_at_ms < 0 {
        return Err("`revoked_at_ms` must not be negative".into());
    }
    Ok(MemberKey {
        key_id: mk.key_id,
        public_key,
        valid_from_ms: mk.valid_from_ms,
        valid_until_ms: mk.valid_until_ms,
        revoked_at_ms: mk.revoked_at_ms,
    })
}

fn ed25519_key(bytes: &[u8]) -> Result<VerifyingKey, String> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("must be 32 bytes, got {}", bytes.len()))?;
    let key =
        VerifyingKey::from_bytes(&key).map_err(|_| "is not an Ed25519 public key".to_string())?;
    if key.is_weak() {
        return Err("is a weak (small-order) key".into());
    }
    Ok(key)
}

/// The wire form of a listed key (id ≥ 1).
pub fn member_key_to_pb(k: &MemberKey) -> pb::MemberKey {
    pb::MemberKey {
        key_id: k.key_id,
        alg: k.public_key.alg_pb(),
        public_key: k.public_key.to_bytes(),
        valid_from_ms: k.valid_from_ms,
        valid_until_ms: k.valid_until_ms,
        revoked_at_ms: k.revoked_at_ms,
    }
}

/// The wire form of a member, for building a directory.
pub fn member_to_pb(m: &Member) -> pb::Member {
    pb::Member {
        region_code: m.region.to_string(),
        name: m.name.clone(),
        endpoint: m.endpoint.clone(),
        signing_key: m.signing_key.to_bytes().to_vec(),
        tls_identity: m.tls_identity.clone(),
        keys: m
            .keys
            .iter()
            .filter(|k| k.key_id != 0 || **k != MemberKey::legacy(m.signing_key))
            .map(member_key_to_pb)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::{key, region};

    fn body() -> pb::DirectoryBody {
        let m = |code: &str, seed| pb::Member {
            region_code: code.into(),
            name: format!("bureau {code}"),
            endpoint: "127.0.0.1:7000".into(),
            signing_key: key(seed).verifying_key().to_bytes().to_vec(),
            tls_identity: format!("urn:interflow:region:{code}"),
            keys: vec![],
        };
        pb::DirectoryBody {
            serial: 1,
            issued_at_ms: 0,
            members: vec![m("310115", 1), m("110105", 2)],
            ..Default::default()
        }
    }

    #[test]
    fn a_directory_expires_at_its_expiry_and_an_older_one_never() {
        let operator = key(100);
        let load = |b: &pb::DirectoryBody| {
            Directory::verify(&Directory::sign(b, &operator), &operator.verifying_key()).unwrap()
        };
        let d = load(&body());
        assert_eq!(d.expires_at_ms, None);
        assert!(!d.expired_at(i64::MAX));
        let d = load(&pb::DirectoryBody {
            expires_at_ms: 1_000,
            ..body()
        });
        assert!(!d.expired_at(999) && d.expired_at(1_000));
    }

    #[test]
    fn signed_directory_loads_with_every_member() {
        let operator = key(100);
        let d = Directory::verify(
            &Directory::sign(&body(), &operator),
            &operator.verifying_key(),
        )
        .unwrap();
        assert_eq!(d.members().count(), 2);
        assert_eq!(
            d.signing_key(region("110105")),
            Some(key(2).verifying_key())
        );
    }

    #[test]
    fn directory_with_a_bad_operator_signature_is_refused() {
        let operator = key(100);
        let signed = Directory::sign(&body(), &key(101));
        assert!(matches!(
            Directory::verify(&signed, &operator.verifying_key()),
            Err(DirectoryError::BadSignature(_))
        ));
        let mut tampered = Directory::sign(&body(), &operator);
        let last = tampered.body.len() - 1;
        tampered.body[last] ^= 1;
        assert!(matches!(
            Directory::verify(&tampered, &operator.verifying_key()),
            Err(DirectoryError::BadSignature(_))
        ));
    }

    #[test]
    fn bad_members_are_named() {
        let operator = key(100);
        let mut b = body();
        b.members[1].tls_identity = "urn:interflow:region:310115".into();
        let e = Directory::verify(&Directory::sign(&b, &operator), &operator.verifying_key())
            .unwrap_err();
        assert!(matches!(
            e,
            DirectoryError::BadMember {
                index: 1,
                field: "tls_identity",
                ..
            }
        ));
        let mut b = body();
        b.members[1] = b.members[0].clone();
        let e = Directory::verify(&Directory::sign(&b, &operator), &operator.verifying_key())
            .unwrap_err();
        assert!(matches!(e, DirectoryError::Duplicate(_)));
    }

    #[test]
    fn a_key_is_valid_from_its_start_until_its_end_or_revocation() {
        use crate::fixtures::{directory, member, member_key};
        let a = region("310115");
        let d = directory(vec![member(
            "310115",
            1,
            vec![
                member_key(1, 3, 1_000, 5_000, 0),
                member_key(2, 4, 1_000, 0, 3_000),
            ],
        )]);
        let at = |id, t| d.key_for(a, id, t).map(|k| k.key_id);
        assert_eq!(at(0, i64::MIN), Ok(0));
        assert_eq!(at(1, 1_000), Ok(1));
        assert_eq!(at(1, 4_999), Ok(1));
        let not_valid = |id, t| match d.key_for(a, id, t) {
            Err(KeyLookupError::NotValid { why, .. }) => Some(why),
            _ => None,
        };
        assert_eq!(not_valid(1, 999), Some(KeyNotValid::NotYet(1_000)));
        assert_eq!(not_valid(1, 5_000), Some(KeyNotValid::Expired(5_000)));
        assert_eq!(at(2, 2_999), Ok(2));
        assert_eq!(not_valid(2, 3_000), Some(KeyNotValid::Revoked(3_000)));
        assert_eq!(
            at(7, 2_000),
            Err(KeyLookupError::UnknownKey {
                region: a,
                key_id: 7
            })
        );
        assert_eq!(
            at(1, 2_000).and(d.key_for(region("110105"), 0, 2_000).map(|k| k.key_id)),
            Err(KeyLookupError::UnknownMember(region("110105")))
        );
        assert_eq!(
            d.key_id_of(a, &PublicKey::Ed25519(key(4).verifying_key()), 2_000),
            Some(2)
        );
        assert_eq!(
            d.key_id_of(a, &PublicKey::Ed25519(key(4).verifying_key()), 3_000),
            None
        );
    }

    #[test]
    fn key_id_0_can_be_ended_or_revoked_by_repeating_it() {
        use crate::fixtures::{directory, member, member_key};
        let a = region("310115");
        let d = directory(vec![member(
            "310115",
            1,
            vec![member_key(0, 1, 0, 0, 2_000), member_key(1, 3, 1_000, 0, 0)],
        )]);
        assert!(d.key_for(a, 0, 1_999).is_ok());
        assert!(matches!(
            d.key_for(a, 0, 2_000),
            Err(KeyLookupError::NotValid { .. })
        ));
        // The wire form keeps the entry, so a re-signed directory says the same.
        let m = member_to_pb(d.member(a).unwrap());
        assert_eq!(m.keys.len(), 2);
    }

    #[test]
    fn bad_member_keys_are_refused_at_load() {
        use crate::fixtures::{member, member_key};
        let operator = key(100);
        let load = |keys: Vec<pb::MemberKey>| {
            let body = pb::DirectoryBody {
                serial: 1,
                members: vec![member("310115", 1, keys)],
                ..Default::default()
            };
            Directory::verify(
                &Directory::sign(&body, &operator),
                &operator.verifying_key(),
            )
        };
        let refused = |keys: Vec<pb::MemberKey>| {
            matches!(
                load(keys),
                Err(DirectoryError::BadMember { field: "keys", .. })
            )
        };
        assert!(load(vec![member_key(1, 3, 0, 0, 0)]).is_ok());
        assert!(refused(vec![
            member_key(1, 3, 0, 0, 0),
            member_key(1, 4, 0, 0, 0)
        ]));
        assert!(refused(vec![member_key(1, 3, 5_000, 5_000, 0)]));
        assert!(refused(vec![member_key(1, 3, 0, 0, -1)]));
        assert!(refused(vec![member_key(0, 3, 0, 0, 1)]));
        assert!(refused(vec![
            member_key(1, 3, 0, 0, 0),
            member_key(2, 3, 0, 0, 0)
        ]));
        assert!(refused(vec![member_key(1, 1, 0, 0, 0)]));
        let mut weak = member_key(1, 3, 0, 0, 0);
        weak.public_key = [0; 32].to_vec();
        weak.public_key[0] = 1; // the identity point: small order
        assert!(refused(vec![weak]));
        let mut other = member_key(1, 3, 0, 0, 0);
        other.alg = 99;
        assert!(refused(vec![other]));
    }
}
