//! Termination of an agreement by one party: a signed notice (`SignedTermination`) naming the
//! agreement, the terminating party and the time it ends. Both parties keep it as evidence;
//! what a terminated agreement still permits is decided by [`crate::agreement::Agreement`]
//! (`covers`, `serves_partner_at`) with the time passed in.

use prost::Message;

use crate::agreement::{Agreement, AgreementSet, check_agreement_id};
use crate::canonical::{CanonicalError, decode_canonical};
use crate::directory::{KeyLookupError, KeySource, SignedBy, SignedByError};
use crate::pb;
use crate::record::Sealer;
use crate::region::RegionCode;
use crate::sign::Domain;
use crate::time::UnixMillis;

/// A verified termination.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub agreement_id: String,
    pub by: RegionCode,
    pub terminated_at_ms: UnixMillis,
    signed: pb::SignedTermination,
}

/// Why a termination notice is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminationError {
    #[error(transparent)]
    Body(#[from] CanonicalError),
    #[error("termination field `{field}` is invalid: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("termination names agreement `{got}`, expected `{expected}`")]
    WrongAgreement { got: String, expected: String },
    #[error("agreement `{id}` is not one this node has")]
    UnknownAgreement { id: String },
    #[error("`{by}` is not a party to agreement `{id}` and cannot terminate it")]
    NotAParty { id: String, by: RegionCode },
    #[error("`{by}` is not in the federation directory; its termination cannot be checked")]
    UnknownSigner { by: RegionCode },
    #[error("termination of `{id}` by `{by}`: {source}")]
    BadSignature {
        id: String,
        by: RegionCode,
        source: SignedByError,
    },
}

fn bad(field: &'static str, reason: impl Into<String>) -> TerminationError {
    TerminationError::BadField {
        field,
        reason: reason.into(),
    }
}

impl Termination {
    /// Signs a termination of `agreement_id` by `by` at `at` with `by`'s record-signing key,
    /// naming its key id.
    pub fn sign<'a>(
        key: impl Into<Sealer<'a>>,
        agreement_id: &str,
        by: RegionCode,
        at: UnixMillis,
    ) -> pb::SignedTermination {
        let body = pb::TerminationBody {
            agreement_id: agreement_id.to_owned(),
            by: by.to_string(),
            terminated_at_ms: at,
        }
        .encode_to_vec();
        let key = key.into();
        pb::SignedTermination {
            alg: key.alg(),
            signature: key.sign(Domain::Termination, &body),
            body,
            key_id: key.key_id,
        }
    }

    /// Checks a termination of `agreement`: canonical body, signed by a party of it under the
    /// key its envelope names in `keys` (the directory), valid at `terminated_at_ms`.
    pub fn verify(
        signed: pb::SignedTermination,
        agreement: &Agreement,
        keys: &impl KeySource,
    ) -> Result<Termination, TerminationError> {
        let body: pb::TerminationBody = decode_canonical("TerminationBody", &signed.body)?;
        check_agreement_id(&body.agreement_id).map_err(|r| bad("agreement_id", r))?;
        if body.agreement_id != agreement.id {
            return Err(TerminationError::WrongAgreement {
                got: body.agreement_id,
                expected: agreement.id.clone(),
            });
        }
        let by: RegionCode = body
            .by
            .parse()
            .map_err(|e: crate::region::RegionCodeError| bad("by", e.to_string()))?;
        if agreement.peer_of(by).is_none() {
            return Err(TerminationError::NotAParty {
                id: body.agreement_id,
                by,
            });
        }
        if body.terminated_at_ms <= 0 {
            return Err(bad("terminated_at_ms", "must be a positive Unix time"));
        }
        keys.verify_signed(
            SignedBy {
                signer: by,
                key_id: signed.key_id,
                at_ms: body.terminated_at_ms,
            },
            signed.alg,
            Domain::Termination,
            &signed.body,
            &signed.signature,
        )
        .map_err(|source| match source {
            SignedByError::Key(KeyLookupError::UnknownMember(_)) => {
                TerminationError::UnknownSigner { by }
            }
            source => TerminationError::BadSignature {
                id: body.agreement_id.clone(),
                by,
                source,
            },
        })?;
        Ok(Termination {
            agreement_id: body.agreement_id,
            by,
            terminated_at_ms: body.terminated_at_ms,
            signed,
        })
    }

    /// Checks a termination of an agreement in `set`, found by the id the notice names.
    pub fn verify_in(
        signed: pb::SignedTermination,
        set: &AgreementSet,
        keys: &impl KeySource,
    ) -> Result<Termination, TerminationError> {
        let body: pb::TerminationBody = decode_canonical("TerminationBody", &signed.body)?;
        let agreement = set
            .get(&body.agreement_id)
            .ok_or(TerminationError::UnknownAgreement {
                id: body.agreement_id,
            })?;
        Self::verify(signed, agreement, keys)
    }

    /// The signed notice exactly as received or made.
    pub fn signed(&self) -> &pb::SignedTermination {
        &self.signed
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::VerifyingKey;

    use super::*;
    use crate::agreement::tests::agreement as verified;
    use crate::record::tests::{NOW, key, region};

    fn keys(r: RegionCode) -> Option<VerifyingKey> {
        match r.to_string().as_str() {
            "310115" => Some(key(1).verifying_key()),
            "110105" => Some(key(2).verifying_key()),
            _ => None,
        }
    }

    #[test]
    fn a_party_signs_and_the_other_verifies() {
        let a = verified();
        let t = Termination::verify(
            Termination::sign(&key(2), &a.id, region("110105"), NOW),
            &a,
            &keys,
        )
        .unwrap();
        assert_eq!(t.by, region("110105"));
        assert_eq!(t.terminated_at_ms, NOW);
        assert_eq!(t.agreement_id, a.id);
    }

    #[test]
    fn strangers_wrong_keys_and_other_agreements_are_refused() {
        let a = verified();
        let stranger = Termination::sign(&key(3), &a.id, region("440305"), NOW);
        assert!(matches!(
            Termination::verify(stranger, &a, &keys),
            Err(TerminationError::NotAParty { .. })
        ));
        let forged = Termination::sign(&key(1), &a.id, region("110105"), NOW);
        assert!(matches!(
            Termination::verify(forged, &a, &keys),
            Err(TerminationError::BadSignature { .. })
        ));
        let other = Termination::sign(&key(1), "agr-other", region("310115"), NOW);
        assert!(matches!(
            Termination::verify(other, &a, &keys),
            Err(TerminationError::WrongAgreement { .. })
        ));
        // An agreement signature is not a termination signature (domain separation).
        let mut cross = Termination::sign(&key(1), &a.id, region("310115"), NOW);
        cross.signature = crate::sign::sign(&key(1), Domain::Agreement, &cross.body).to_vec();
        assert!(matches!(
            Termination::verify(cross, &a, &keys),
            Err(TerminationError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_terminated_agreement_refuses_later_records_and_serves_the_partner_for_the_grace_period() {
        use crate::payload::Kind;
        let mut a = verified();
        let (x, y) = (region("310115"), region("110105"));
        let at = NOW - 1000;
        let t = Termination::verify(Termination::sign(&key(1), &a.id, x, at), &a, &keys).unwrap();
        a.terminate(&t);
        // Issued while active: still covered (so the partner can recover and verify it).
        assert!(a.covers(x, y, Kind::Contraception, at - 1).is_ok());
        // Issued at or after termination, either way: refused with its own reason.
        for (o, d, when) in [(x, y, at), (y, x, NOW)] {
            let e = a.covers(o, d, Kind::Contraception, when).unwrap_err();
            assert_eq!(e.reject_reason(), pb::RejectReason::AgreementTerminated);
        }
        assert!(a.active_at(at - 1) && !a.active_at(at));
        let grace = 7 * 86_400_000;
        assert_eq!(a.grace_end_ms(grace), Some(at + grace));
        assert!(a.serves_partner_at(at + grace - 1, grace));
        assert!(!a.serves_partner_at(at + grace, grace));
        // A later notice by the other party does not move the end.
        let later =
            Termination::verify(Termination::sign(&key(2), &a.id, y, NOW), &a, &keys).unwrap();
        a.terminate(&later);
        assert_eq!(a.terminated_at_ms, Some(at));
        assert!(verified().serves_partner_at(i64::MAX, grace));
    }
}
