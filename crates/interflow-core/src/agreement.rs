//! Bilateral two-way agreements: who may exchange which kinds of record, when, and on which
//! legal basis. Both parties sign the body bytes as stored; they are never re-encoded.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;

use crate::canonical::{CanonicalError, decode_canonical};
use crate::payload::Kind;
use crate::pb;
use crate::region::RegionCode;
use crate::sign::{self, Domain, SignatureError};
use crate::time::{UnixMillis, rfc3339};

/// The legal ground an agreement rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegalBasis {
    StatutoryDuty { statute: String },
    Consent,
}

impl fmt::Display for LegalBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LegalBasis::StatutoryDuty { statute } => write!(f, "statutory duty ({statute})"),
            LegalBasis::Consent => f.write_str("consent"),
        }
    }
}

/// A verified agreement.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub id: String,
    pub party_a: RegionCode,
    pub party_b: RegionCode,
    pub kinds: Vec<Kind>,
    pub valid_from_ms: UnixMillis,
    pub valid_until_ms: UnixMillis,
    pub legal_basis: LegalBasis,
    pub retention_days: u32,
    /// Month precision for `observed_on` and `since` under this agreement (coarse dates).
    pub month_dates: bool,
    signed: pb::SignedAgreement,
}

/// Why an agreement document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreementError {
    #[error(transparent)]
    Body(#[from] CanonicalError),
    #[error("agreement field `{field}` is invalid: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("agreement `{id}` lacks the signature of party `{party}`")]
    MissingSignature { id: String, party: RegionCode },
    #[error("agreement `{id}`: signature of party `{party}` is invalid: {source}")]
    BadSignature {
        id: String,
        party: RegionCode,
        source: SignatureError,
    },
    #[error("agreement `{id}` is signed by `{region}`, which is not a party")]
    StrangerSignature { id: String, region: String },
    #[error("agreement `{id}` names party `{party}`, which is not in the federation directory")]
    UnknownParty { id: String, party: RegionCode },
}

/// Why an agreement does not allow an exchange. Each maps to a wire `RejectReason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverError {
    #[error("no agreement between `{origin}` and `{destination}`")]
    NoAgreement {
        origin: RegionCode,
        destination: RegionCode,
    },
    #[error("agreement `{id}` is not valid until {from}")]
    NotYetValid { id: String, from: String },
    #[error("agreement `{id}` expired at {until}")]
    Expired { id: String, until: String },
    #[error("agreement `{id}` does not cover {kind} records")]
    KindNotCovered { id: String, kind: Kind },
}

impl CoverError {
    pub fn reject_reason(&self) -> pb::RejectReason {
        match self {
            CoverError::NoAgreement { .. } => pb::RejectReason::NoAgreement,
            CoverError::NotYetValid { .. } | CoverError::Expired { .. } => {
                pb::RejectReason::AgreementNotValid
            }
            CoverError::KindNotCovered { .. } => pb::RejectReason::KindNotCovered,
        }
    }
}

/// Agreement ids are short ASCII tokens so that they can sit in keys, paths and logs.
pub(crate) fn check_agreement_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("must be 1 to 64 characters, got {}", id.len()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("may hold only ASCII letters, digits, `-`, `_` and `.`".into());
    }
    Ok(())
}

fn bad(field: &'static str, reason: impl Into<String>) -> AgreementError {
    AgreementError::BadField {
        field,
        reason: reason.into(),
    }
}

impl Agreement {
    /// Decodes and checks an agreement: canonical body, sane fields, and a valid signature by
    /// each party under the key `key_of` returns for it (the directory's signing key).
    pub fn verify(
        signed: pb::SignedAgreement,
        key_of: impl Fn(RegionCode) -> Option<VerifyingKey>,
    ) -> Result<Agreement, AgreementError> {
        let body: pb::AgreementBody = decode_canonical("AgreementBody", &signed.body)?;
        check_agreement_id(&body.agreement_id).map_err(|r| bad("agreement_id", r))?;
        let id = body.agreement_id.clone();
        let party_a: RegionCode = body
            .party_a
            .parse()
            .map_err(|e: crate::region::RegionCodeError| bad("party_a", e.to_string()))?;
        let party_b: RegionCode = body
            .party_b
            .parse()
            .map_err(|e: crate::region::RegionCodeError| bad("party_b", e.to_string()))?;
        if party_a == party_b {
            return Err(bad("party_b", "must differ from party_a"));
        }
        let mut kinds = Vec::new();
        for k in &body.kinds {
            let kind = pb::RecordKind::try_from(*k)
                .ok()
                .and_then(|k| Kind::try_from(k).ok())
                .ok_or_else(|| bad("kinds", format!("`{k}` is not a known record kind")))?;
            if kinds.contains(&kind) {
                return Err(bad("kinds", format!("{kind} is listed twice")));
            }
            kinds.push(kind);
        }
        if kinds.is_empty() {
            return Err(bad("kinds", "must cover at least one record kind"));
        }
        if body.valid_until_ms <= body.valid_from_ms {
            return Err(bad("valid_until_ms", "must be after valid_from_ms"));
        }
        let legal_basis = match pb::LegalBasisKind::try_from(body.legal_basis) {
            Ok(pb::LegalBasisKind::StatutoryDuty) if !body.statute_reference.trim().is_empty() => {
                LegalBasis::StatutoryDuty {
                    statute: body.statute_reference.clone(),
                }
            }
            Ok(pb::LegalBasisKind::StatutoryDuty) => {
                return Err(bad(
                    "statute_reference",
                    "is required when the legal basis is a statutory duty",
                ));
            }
            Ok(pb::LegalBasisKind::Consent) if body.statute_reference.is_empty() => {
                LegalBasis::Consent
            }
            Ok(pb::LegalBasisKind::Consent) => {
                return Err(bad("statute_reference", "must be empty for consent"));
            }
            _ => return Err(bad("legal_basis", "must be STATUTORY_DUTY or CONSENT")),
        };
        if body.retention_days == 0 {
            return Err(bad("retention_days", "must be at least 1"));
        }
        let month_dates = match pb::DatePrecision::try_from(body.date_precision) {
            Ok(pb::DatePrecision::Day) => false,
            Ok(pb::DatePrecision::Month) => true,
            Err(_) => return Err(bad("date_precision", "must be DAY or MONTH")),
        };
        for s in &signed.signatures {
            if s.region != body.party_a && s.region != body.party_b {
                return Err(AgreementError::StrangerSignature {
                    id,
                    region: s.region.clone(),
                });
            }
        }
        for party in [party_a, party_b] {
            let sig = signed
                .signatures
                .iter()
                .find(|s| s.region == party.to_string())
                .ok_or_else(|| AgreementError::MissingSignature {
                    id: id.clone(),
                    party,
                })?;
            let key = key_of(party).ok_or_else(|| AgreementError::UnknownParty {
                id: id.clone(),
                party,
            })?;
            if sig.alg != pb::SignatureAlgorithm::Ed25519 as i32 {
                return Err(AgreementError::BadSignature {
                    id,
                    party,
                    source: SignatureError::Invalid,
                });
            }
            sign::verify(&key, Domain::Agreement, &signed.body, &sig.signature).map_err(
                |source| AgreementError::BadSignature {
                    id: id.clone(),
                    party,
                    source,
                },
            )?;
        }
        Ok(Agreement {
            id,
            party_a,
            party_b,
            kinds,
            valid_from_ms: body.valid_from_ms,
            valid_until_ms: body.valid_until_ms,
            legal_basis,
            retention_days: body.retention_days,
            month_dates,
            signed,
        })
    }

    /// Whether this agreement lets `origin` send a `kind` record to `destination` at `at`.
    pub fn covers(
        &self,
        origin: RegionCode,
        destination: RegionCode,
        kind: Kind,
        at: UnixMillis,
    ) -> Result<(), CoverError> {
        let parties = (origin == self.party_a && destination == self.party_b)
            || (origin == self.party_b && destination == self.party_a);
        if !parties {
            return Err(CoverError::NoAgreement {
                origin,
                destination,
            });
        }
        if at < self.valid_from_ms {
            return Err(CoverError::NotYetValid {
                id: self.id.clone(),
                from: rfc3339(self.valid_from_ms),
            });
        }
        if at >= self.valid_until_ms {
            return Err(CoverError::Expired {
                id: self.id.clone(),
                until: rfc3339(self.valid_until_ms),
            });
        }
        if !self.kinds.contains(&kind) {
            return Err(CoverError::KindNotCovered {
                id: self.id.clone(),
                kind,
            });
        }
        Ok(())
    }

    /// The other party, when `me` is one.
    pub fn peer_of(&self, me: RegionCode) -> Option<RegionCode> {
        if me == self.party_a {
            Some(self.party_b)
        } else if me == self.party_b {
            Some(self.party_a)
        } else {
            None
        }
    }

    /// Whether the agreement is in force at `at`.
    pub fn active_at(&self, at: UnixMillis) -> bool {
        self.valid_from_ms <= at && at < self.valid_until_ms
    }

    /// The signed document exactly as loaded.
    pub fn signed(&self) -> &pb::SignedAgreement {
        &self.signed
    }
}

/// Encodes an agreement body for signing.
pub fn encode_body(body: &pb::AgreementBody) -> Vec<u8> {
    body.encode_to_vec()
}

/// A party's signature over agreement body bytes.
pub fn party_signature(key: &SigningKey, region: RegionCode, body: &[u8]) -> pb::PartySignature {
    pb::PartySignature {
        region: region.to_string(),
        alg: pb::SignatureAlgorithm::Ed25519 as i32,
        signature: sign::sign(key, Domain::Agreement, body).to_vec(),
    }
}

/// The agreements this node is a party to, by id.
#[derive(Debug, Clone, Default)]
pub struct AgreementSet {
    by_id: BTreeMap<String, Agreement>,
}

impl AgreementSet {
    pub fn new(agreements: impl IntoIterator<Item = Agreement>) -> Self {
        AgreementSet {
            by_id: agreements.into_iter().map(|a| (a.id.clone(), a)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Agreement> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Agreement> {
        self.by_id.values()
    }

    /// The agreement a record names, checked to cover its exchange.
    pub fn check(
        &self,
        id: &str,
        origin: RegionCode,
        destination: RegionCode,
        kind: Kind,
        at: UnixMillis,
    ) -> Result<&Agreement, CoverError> {
        let a = self.get(id).ok_or(CoverError::NoAgreement {
            origin,
            destination,
        })?;
        a.covers(origin, destination, kind, at)?;
        Ok(a)
    }

    /// An agreement that covers the exchange, or the most telling reason why none does
    /// (kind not covered or expired beats "no agreement").
    pub fn find_covering(
        &self,
        origin: RegionCode,
        destination: RegionCode,
        kind: Kind,
        at: UnixMillis,
    ) -> Result<&Agreement, CoverError> {
        let mut best = CoverError::NoAgreement {
            origin,
            destination,
        };
        for a in self.by_id.values() {
            match a.covers(origin, destination, kind, at) {
                Ok(()) => return Ok(a),
                Err(CoverError::NoAgreement { .. }) => {}
                Err(e) => best = e,
            }
        }
        Err(best)
    }

    /// Peers with an agreement in force at `at`.
    pub fn active_peers(&self, me: RegionCode, at: UnixMillis) -> Vec<RegionCode> {
        let mut peers: Vec<_> = self
            .by_id
            .values()
            .filter(|a| a.active_at(at))
            .filter_map(|a| a.peer_of(me))
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Every peer named by any agreement, in force or not.
    pub fn all_peers(&self, me: RegionCode) -> Vec<RegionCode> {
        let mut peers: Vec<_> = self.by_id.values().filter_map(|a| a.peer_of(me)).collect();
        peers.sort();
        peers.dedup();
        peers
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::tests::{NOW, key, region};

    pub(crate) fn body(a: &str, b: &str) -> pb::AgreementBody {
        pb::AgreementBody {
            agreement_id: format!("agr-{a}-{b}"),
            party_a: a.into(),
            party_b: b.into(),
            kinds: vec![pb::RecordKind::ContraceptionStatus as i32],
            valid_from_ms: NOW - 86_400_000,
            valid_until_ms: NOW + 86_400_000,
            legal_basis: pb::LegalBasisKind::StatutoryDuty as i32,
            statute_reference: "PFPL-2021-art-19".into(),
            retention_days: 365,
            date_precision: pb::DatePrecision::Day as i32,
        }
    }

    pub(crate) fn signed(
        body: &pb::AgreementBody,
        ka: &SigningKey,
        kb: &SigningKey,
    ) -> pb::SignedAgreement {
        let bytes = encode_body(body);
        pb::SignedAgreement {
            signatures: vec![
                party_signature(ka, body.party_a.parse().unwrap(), &bytes),
                party_signature(kb, body.party_b.parse().unwrap(), &bytes),
            ],
            body: bytes,
        }
    }

    fn keys(r: RegionCode) -> Option<VerifyingKey> {
        match r.to_string().as_str() {
            "310115" => Some(key(1).verifying_key()),
            "110105" => Some(key(2).verifying_key()),
            _ => None,
        }
    }

    fn agreement() -> Agreement {
        Agreement::verify(signed(&body("310115", "110105"), &key(1), &key(2)), keys).unwrap()
    }

    #[test]
    fn covers_both_directions_within_validity_and_kinds() {
        let a = agreement();
        let (x, y) = (region("310115"), region("110105"));
        assert_eq!(a.covers(x, y, Kind::Contraception, NOW), Ok(()));
        assert_eq!(a.covers(y, x, Kind::Contraception, NOW), Ok(()));
        assert!(matches!(
            a.covers(x, region("440305"), Kind::Contraception, NOW),
            Err(CoverError::NoAgreement { .. })
        ));
    }

    #[test]
    fn expired_not_yet_valid_and_kind_not_covered_are_told_apart() {
        let a = agreement();
        let (x, y) = (region("310115"), region("110105"));
        let e = a
            .covers(x, y, Kind::Contraception, NOW + 86_400_000)
            .unwrap_err();
        assert!(matches!(e, CoverError::Expired { .. }));
        assert_eq!(e.reject_reason(), pb::RejectReason::AgreementNotValid);
        let e = a
            .covers(x, y, Kind::Contraception, NOW - 86_400_001)
            .unwrap_err();
        assert!(matches!(e, CoverError::NotYetValid { .. }));
        let e = a.covers(x, y, Kind::Pregnancy, NOW).unwrap_err();
        assert_eq!(e.reject_reason(), pb::RejectReason::KindNotCovered);
        let set = AgreementSet::new([a]);
        assert!(matches!(
            set.find_covering(x, y, Kind::Pregnancy, NOW),
            Err(CoverError::KindNotCovered { .. })
        ));
        assert_eq!(set.active_peers(x, NOW), vec![y]);
    }

    #[test]
    fn missing_forged_or_stranger_signatures_are_refused() {
        let b = body("310115", "110105");
        let mut s = signed(&b, &key(1), &key(2));
        s.signatures.pop();
        assert!(matches!(
            Agreement::verify(s, keys),
            Err(AgreementError::MissingSignature { .. })
        ));
        // Party B's signature made with another key.
        let s = signed(&b, &key(1), &key(3));
        assert!(matches!(
            Agreement::verify(s, keys),
            Err(AgreementError::BadSignature { .. })
        ));
        let mut s = signed(&b, &key(1), &key(2));
        s.signatures
            .push(party_signature(&key(3), region("440305"), &s.body));
        assert!(matches!(
            Agreement::verify(s, keys),
            Err(AgreementError::StrangerSignature { .. })
        ));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut b = body("310115", "110105");
        b.legal_basis = pb::LegalBasisKind::StatutoryDuty as i32;
        b.statute_reference.clear();
        let e = Agreement::verify(signed(&b, &key(1), &key(2)), keys).unwrap_err();
        assert!(e.to_string().contains("statute_reference"), "{e}");
        let mut b = body("310115", "110105");
        b.kinds = vec![0];
        let e = Agreement::verify(signed(&b, &key(1), &key(2)), keys).unwrap_err();
        assert!(e.to_string().contains("kinds"), "{e}");
        let mut b = body("310115", "110105");
        b.valid_until_ms = b.valid_from_ms;
        assert!(Agreement::verify(signed(&b, &key(1), &key(2)), keys).is_err());
    }
}
