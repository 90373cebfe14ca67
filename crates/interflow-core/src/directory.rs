//! The federation directory: the members of the federation, signed by the federation operator
//! key (the trust anchor). Loading refuses a directory whose signature does not verify.

use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;

use crate::canonical::{CanonicalError, decode_canonical};
use crate::pb;
use crate::region::RegionCode;
use crate::sign::{self, Domain, SignatureError};

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
            let key: [u8; 32] = m.signing_key.as_slice().try_into().map_err(|_| {
                bad(
                    "signing_key",
                    format!("must be 32 bytes, got {}", m.signing_key.len()),
                )
            })?;
            let signing_key = VerifyingKey::from_bytes(&key)
                .map_err(|_| bad("signing_key", "is not an Ed25519 public key".into()))?;
            if signing_key.is_weak() {
                return Err(bad("signing_key", "is a weak (small-order) key".into()));
            }
            if m.endpoint.is_empty() {
                return Err(bad("endpoint", "is empty".into()));
            }
            if m.tls_identity != tls_identity_for(region) {
                return Err(bad(
                    "tls_identity",
                    format!("must be `{}`", tls_identity_for(region)),
                ));
            }
            let member = Member {
                region,
                name: m.name,
                endpoint: m.endpoint,
                signing_key,
                tls_identity: m.tls_identity,
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
}

/// The wire form of a member, for building a directory.
pub fn member_to_pb(m: &Member) -> pb::Member {
    pb::Member {
        region_code: m.region.to_string(),
        name: m.name.clone(),
        endpoint: m.endpoint.clone(),
        signing_key: m.signing_key.to_bytes().to_vec(),
        tls_identity: m.tls_identity.clone(),
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
}
