//! Bilateral two-way agreements: who may exchange which kinds of record, when, and on which
//! legal basis. Both parties sign the body bytes as stored; they are never re-encoded.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;

use crate::canonical::{CanonicalError, decode_canonical};
use crate::directory::{KeyLookupError, KeySource, SignatureAlgorithm, SignedBy, SignedByError};
use crate::payload::Kind;
use crate::pb;
use crate::record::Sealer;
use crate::region::RegionCode;
use crate::sign::Domain;
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
    /// Kinds covered both ways.
    pub kinds: Vec<Kind>,
    /// Kinds `party_a` may send to `party_b` in addition to `kinds`.
    pub kinds_a_to_b: Vec<Kind>,
    /// Kinds `party_b` may send to `party_a` in addition to `kinds`.
    pub kinds_b_to_a: Vec<Kind>,
    /// Status follows residence: status records go to the residence bureau only while its
    /// latest notice for the subject is `ARRIVED`.
    pub status_follows_residence: bool,
    pub valid_from_ms: UnixMillis,
    pub valid_until_ms: UnixMillis,
    pub legal_basis: LegalBasis,
    pub retention_days: u32,
    /// Month precision for `observed_on` and `since` under this agreement (coarse dates).
    pub month_dates: bool,
    /// The suite both parties' records under it must be signed with; `None`: any.
    pub required_alg: Option<SignatureAlgorithm>,
    /// When a party terminated it ([`Agreement::terminate`]); `None` while not terminated.
    pub terminated_at_ms: Option<UnixMillis>,
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
        source: SignedByError,
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
    #[error("agreement `{id}` was terminated at {at}")]
    Terminated { id: String, at: String },
    #[error("agreement `{id}` does not cover {kind} records")]
    KindNotCovered { id: String, kind: Kind },
    #[error(
        "agreement `{id}` covers {kind} records only from `{destination}` to `{origin}`, not from `{origin}` to `{destination}`"
    )]
    WrongDirection {
        id: String,
        kind: Kind,
        origin: RegionCode,
        destination: RegionCode,
    },
}

impl CoverError {
    pub fn reject_reason(&self) -> pb::RejectReason {
        match self {
            CoverError::NoAgreement { .. } => pb::RejectReason::NoAgreement,
            CoverError::NotYetValid { .. } | CoverError::Expired { .. } => {
                pb::RejectReason::AgreementNotValid
            }
            CoverError::Terminated { .. } => pb::RejectReason::AgreementTerminated,
            CoverError::KindNotCovered { .. } => pb::RejectReason::KindNotCovered,
            CoverError::WrongDirection { .. } => pb::RejectReason::WrongDirection,
        }
    }
}

/// One list of kinds, each known and listed once.
fn kind_list(field: &'static str, raw: &[i32]) -> Result<Vec<Kind>, AgreementError> {
    let mut kinds = Vec::new();
    for k in raw {
        let kind = pb::RecordKind::try_from(*k)
            .ok()
            .and_then(|k| Kind::try_from(k).ok())
            .ok_or_else(|| bad(field, format!("`{k}` is not a known record kind")))?;
        if kinds.contains(&kind) {
            return Err(bad(field, format!("{kind} is listed twice")));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// Agreement ids are short ASCII tokens so that they can sit in keys, paths and logs.
pub fn check_agreement_id(id: &str) -> Result<(), String> {
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
    /// each party under the key `keys` has for it (the directory: the key id its signature
    /// names, valid at `valid_from_ms`).
    pub fn verify(
        signed: pb::SignedAgreement,
        keys: &impl KeySource,
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
        let kinds = kind_list("kinds", &body.kinds)?;
        let kinds_a_to_b = kind_list("kinds_a_to_b", &body.kinds_a_to_b)?;
        let kinds_b_to_a = kind_list("kinds_b_to_a", &body.kinds_b_to_a)?;
        if kinds.is_empty() && kinds_a_to_b.is_empty() && kinds_b_to_a.is_empty() {
            return Err(bad("kinds", "must cover at least one record kind"));
        }
        if kinds.contains(&Kind::Residence) {
            return Err(bad(
                "kinds",
                "residence may not go both ways: name it in `kinds_a_to_b` or `kinds_b_to_a` (from the residence bureau to the home bureau)",
            ));
        }
        if kinds_a_to_b.contains(&Kind::Residence) && kinds_b_to_a.contains(&Kind::Residence) {
            return Err(bad(
                "kinds_b_to_a",
                "residence may go one way only (from the residence bureau to the home bureau)",
            ));
        }
        for k in kinds_a_to_b.iter().chain(&kinds_b_to_a) {
            if kinds.contains(k) {
                return Err(bad(
                    "kinds",
                    format!("{k} is listed both ways and for one direction"),
                ));
            }
        }
        if body.status_follows_residence
            && !kinds_a_to_b.contains(&Kind::Residence)
            && !kinds_b_to_a.contains(&Kind::Residence)
        {
            return Err(bad(
                "status_follows_residence",
                "needs residence in `kinds_a_to_b` or `kinds_b_to_a`",
            ));
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
        let required_alg = match body.required_signature_algorithm {
            0 => None,
            alg => Some(SignatureAlgorithm::from_pb(alg).ok_or_else(|| {
                bad(
                    "required_signature_algorithm",
                    format!("`{alg}` is not a signature suite this build implements"),
                )
            })?),
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
            // A party signs once, at the start of validity: its key must be valid then.
            keys.verify_signed(
                SignedBy {
                    signer: party,
                    key_id: sig.key_id,
                    at_ms: body.valid_from_ms,
                },
                sig.alg,
                Domain::Agreement,
                &signed.body,
                &sig.signature,
            )
            .map_err(|source| match source {
                SignedByError::Key(KeyLookupError::UnknownMember(_)) => {
                    AgreementError::UnknownParty {
                        id: id.clone(),
                        party,
                    }
                }
                source => AgreementError::BadSignature {
                    id: id.clone(),
                    party,
                    source,
                },
            })?;
        }
        Ok(Agreement {
            id,
            party_a,
            party_b,
            kinds,
            kinds_a_to_b,
            kinds_b_to_a,
            status_follows_residence: body.status_follows_residence,
            valid_from_ms: body.valid_from_ms,
            valid_until_ms: body.valid_until_ms,
            legal_basis,
            retention_days: body.retention_days,
            month_dates,
            required_alg,
            terminated_at_ms: None,
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
        if let Some(t) = self.terminated_at_ms
            && at >= t
        {
            return Err(CoverError::Terminated {
                id: self.id.clone(),
                at: rfc3339(t),
            });
        }
        if at >= self.valid_until_ms {
            return Err(CoverError::Expired {
                id: self.id.clone(),
                until: rfc3339(self.valid_until_ms),
            });
        }
        if !self.kinds_from(origin).contains(&kind) {
            if self.kinds_from(destination).contains(&kind) {
                return Err(CoverError::WrongDirection {
                    id: self.id.clone(),
                    kind,
                    origin,
                    destination,
                });
            }
            return Err(CoverError::KindNotCovered {
                id: self.id.clone(),
                kind,
            });
        }
        Ok(())
    }

    /// The kinds `origin` (a party) may send to the other party: the both-ways kinds and its
    /// direction's own.
    pub fn kinds_from(&self, origin: RegionCode) -> Vec<Kind> {
        let own: &[Kind] = if origin == self.party_a {
            &self.kinds_a_to_b
        } else if origin == self.party_b {
            &self.kinds_b_to_a
        } else {
            &[]
        };
        let mut all = self.kinds.clone();
        all.extend_from_slice(own);
        all
    }

    /// The home (outflow) bureau for residence notices under this agreement: the destination
    /// of the direction that carries them; `None` when the agreement covers none.
    pub fn residence_home(&self) -> Option<RegionCode> {
        if self.kinds_a_to_b.contains(&Kind::Residence) {
            Some(self.party_b)
        } else if self.kinds_b_to_a.contains(&Kind::Residence) {
            Some(self.party_a)
        } else {
            None
        }
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

    /// Whether the agreement is in force at `at` (valid and not terminated by then).
    pub fn active_at(&self, at: UnixMillis) -> bool {
        self.valid_from_ms <= at
            && at < self.valid_until_ms
            && self.terminated_at_ms.is_none_or(|t| at < t)
    }

    /// Records a verified termination; an earlier one already recorded stands (the agreement
    /// ends at the first notice either party gave).
    pub fn terminate(&mut self, t: &crate::termination::Termination) {
        if t.agreement_id == self.id {
            let at = self
                .terminated_at_ms
                .map_or(t.terminated_at_ms, |old| old.min(t.terminated_at_ms));
            self.terminated_at_ms = Some(at);
        }
    }

    /// When `Heads` and `Fetch` stop serving the partner this agreement's channels: the end of
    /// the grace period after termination (`None` while not terminated).
    pub fn grace_end_ms(&self, grace_ms: i64) -> Option<UnixMillis> {
        self.terminated_at_ms.map(|t| t.saturating_add(grace_ms))
    }

    /// Whether the partner may still recover this agreement's records at `now`: always while
    /// not terminated, then until the grace period ends. Only records issued while active exist
    /// on either side, since [`Agreement::covers`] refuses later ones.
    pub fn serves_partner_at(&self, now: UnixMillis, grace_ms: i64) -> bool {
        self.grace_end_ms(grace_ms).is_none_or(|end| now < end)
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

/// A party's signature over agreement body bytes, naming its key id.
pub fn party_signature<'a>(
    key: impl Into<Sealer<'a>>,
    region: RegionCode,
    body: &[u8],
) -> pb::PartySignature {
    let key = key.into();
    pb::PartySignature {
        region: region.to_string(),
        alg: key.alg(),
        signature: key.sign(Domain::Agreement, body),
        key_id: key.key_id,
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

    /// Applies a verified termination to its agreement; false when this set does not have it.
    pub fn terminate(&mut self, t: &crate::termination::Termination) -> bool {
        match self.by_id.get_mut(&t.agreement_id) {
            Some(a) => {
                a.terminate(t);
                true
            }
            None => false,
        }
    }

    /// Whether `peer` may still recover its records from `me` at `now`: some agreement between
    /// them is not terminated, or still inside its grace period.
    pub fn serves_partner_at(
        &self,
        me: RegionCode,
        peer: RegionCode,
        now: UnixMillis,
        grace_ms: i64,
    ) -> bool {
        self.by_id
            .values()
            .filter(|a| a.peer_of(me) == Some(peer))
            .any(|a| a.serves_partner_at(now, grace_ms))
    }

    /// Peers to reconcile with at `now`: those with an agreement in force, and those whose
    /// agreement was terminated but is still inside its grace period (so either side can
    /// recover what was issued while it was active).
    pub fn reconcile_peers(
        &self,
        me: RegionCode,
        now: UnixMillis,
        grace_ms: i64,
    ) -> Vec<RegionCode> {
        let mut peers: Vec<_> = self
            .by_id
            .values()
            .filter(|a| a.valid_from_ms <= now && now < a.valid_until_ms)
            .filter(|a| a.serves_partner_at(now, grace_ms))
            .filter_map(|a| a.peer_of(me))
            .collect();
        peers.sort();
        peers.dedup();
        peers
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
    use ed25519_dalek::{SigningKey, VerifyingKey};

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
            ..Default::default()
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

    pub(crate) fn agreement() -> Agreement {
        Agreement::verify(signed(&body("310115", "110105"), &key(1), &key(2)), &keys).unwrap()
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
    fn residence_goes_one_way_and_old_agreements_keep_their_meaning() {
        let (x, y) = (region("310115"), region("110105"));
        // No per-direction lists: `kinds` both ways, as before.
        let old = agreement();
        assert_eq!(old.residence_home(), None);
        assert_eq!(old.kinds_from(x), vec![Kind::Contraception]);
        assert_eq!(old.kinds_from(y), vec![Kind::Contraception]);
        // x is the residence bureau, y the home bureau.
        let mut b = body("310115", "110105");
        b.kinds_a_to_b = vec![pb::RecordKind::Residence as i32];
        b.status_follows_residence = true;
        let a = Agreement::verify(signed(&b, &key(1), &key(2)), &keys).unwrap();
        assert_eq!(a.residence_home(), Some(y));
        assert!(a.status_follows_residence);
        assert_eq!(a.covers(x, y, Kind::Residence, NOW), Ok(()));
        let e = a.covers(y, x, Kind::Residence, NOW).unwrap_err();
        assert!(matches!(e, CoverError::WrongDirection { .. }), "{e}");
        assert_eq!(e.reject_reason(), pb::RejectReason::WrongDirection);
        assert_eq!(a.covers(y, x, Kind::Contraception, NOW), Ok(()));
        // Residence both ways, or in both directions, is refused.
        let mut both = body("310115", "110105");
        both.kinds.push(pb::RecordKind::Residence as i32);
        let e = Agreement::verify(signed(&both, &key(1), &key(2)), &keys).unwrap_err();
        assert!(e.to_string().contains("kinds"), "{e}");
        let mut twice = b.clone();
        twice.kinds_b_to_a = vec![pb::RecordKind::Residence as i32];
        assert!(Agreement::verify(signed(&twice, &key(1), &key(2)), &keys).is_err());
        // The option needs residence somewhere.
        let mut option = body("310115", "110105");
        option.status_follows_residence = true;
        let e = Agreement::verify(signed(&option, &key(1), &key(2)), &keys).unwrap_err();
        assert!(e.to_string().contains("status_follows_residence"), "{e}");
    }

    #[test]
    fn missing_forged_or_stranger_signatures_are_refused() {
        let b = body("310115", "110105");
        let mut s = signed(&b, &key(1), &key(2));
        s.signatures.pop();
        assert!(matches!(
            Agreement::verify(s, &keys),
            Err(AgreementError::MissingSignature { .. })
        ));
        // Party B's signature made with another key.
        let s = signed(&b, &key(1), &key(3));
        assert!(matches!(
            Agreement::verify(s, &keys),
            Err(AgreementError::BadSignature { .. })
        ));
        let mut s = signed(&b, &key(1), &key(2));
        s.signatures
            .push(party_signature(&key(3), region("440305"), &s.body));
        assert!(matches!(
            Agreement::verify(s, &keys),
            Err(AgreementError::StrangerSignature { .. })
        ));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut b = body("310115", "110105");
        b.legal_basis = pb::LegalBasisKind::StatutoryDuty as i32;
        b.statute_reference.clear();
        let e = Agreement::verify(signed(&b, &key(1), &key(2)), &keys).unwrap_err();
        assert!(e.to_string().contains("statute_reference"), "{e}");
        let mut b = body("310115", "110105");
        b.kinds = vec![0];
        let e = Agreement::verify(signed(&b, &key(1), &key(2)), &keys).unwrap_err();
        assert!(e.to_string().contains("kinds"), "{e}");
        let mut b = body("310115", "110105");
        b.valid_until_ms = b.valid_from_ms;
        assert!(Agreement::verify(signed(&b, &key(1), &key(2)), &keys).is_err());
    }
}
