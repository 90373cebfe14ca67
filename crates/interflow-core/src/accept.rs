//! The acceptance rule for a record arriving from a peer (DESIGN.md, Records): everything but
//! the chain link, which the store checks against what it holds.

use crate::agreement::{AgreementSet, CoverError};
use crate::directory::{Directory, SignatureAlgorithm};
use crate::payload::ValidationRules;
use crate::pb;
use crate::record::{ChannelId, DecodedRecord, RecordError, VerifiedRecord};

/// Why a received record is refused, with its wire reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("record of channel `{got}` arrived on channel `{expected}`")]
    WrongChannel { expected: ChannelId, got: ChannelId },
    #[error(transparent)]
    Agreement(#[from] CoverError),
    #[error(
        "agreement `{0}` asks for month precision, and `observed_on` or `since` is not the first day of its month"
    )]
    DatesTooFine(String),
    #[error("agreement `{id}` requires {required:?} signatures; the record is signed with {got:?}")]
    WrongSignatureAlgorithm {
        id: String,
        required: SignatureAlgorithm,
        got: Option<SignatureAlgorithm>,
    },
}

impl AcceptError {
    pub fn reject_reason(&self) -> pb::RejectReason {
        match self {
            AcceptError::Record(e) => e.reject_reason(),
            AcceptError::WrongChannel { expected, got } if expected.origin != got.origin => {
                pb::RejectReason::OriginNotSender
            }
            AcceptError::WrongChannel { .. } => pb::RejectReason::WrongDestination,
            AcceptError::Agreement(e) => e.reject_reason(),
            AcceptError::DatesTooFine(_) => pb::RejectReason::DatesTooFine,
            AcceptError::WrongSignatureAlgorithm { .. } => {
                pb::RejectReason::WrongSignatureAlgorithm
            }
        }
    }
}

/// What a node knows when it judges a received record.
#[derive(Debug, Clone, Copy)]
pub struct AcceptContext<'a> {
    pub directory: &'a Directory,
    pub agreements: &'a AgreementSet,
    pub rules: ValidationRules,
}

impl AcceptContext<'_> {
    /// Accepts `signed` as a record of `expected`: on `Deliver` that is (TLS peer → this node);
    /// on `Fetch`, the channel the caller asked for. Checks structure and canonical encoding,
    /// the origin's directory key, the channel, the agreement at the issue time, the issue time
    /// against the clock skew, and the payload.
    pub fn accept(
        &self,
        signed: pb::SignedRecord,
        expected: ChannelId,
    ) -> Result<VerifiedRecord, AcceptError> {
        let decoded = DecodedRecord::decode(signed)?;
        let got = decoded.channel();
        if got != expected {
            return Err(AcceptError::WrongChannel { expected, got });
        }
        let verified = decoded.verify_in(self.directory)?;
        self.agreements.check(
            verified.agreement_id(),
            got.origin,
            got.destination,
            verified.kind(),
            verified.issued_at_ms(),
        )?;
        verified.validate(&self.rules)?;
        let agreement = self.agreements.get(verified.agreement_id());
        if let Some(required) = agreement.and_then(|a| a.required_alg) {
            let got = SignatureAlgorithm::from_pb(verified.signed().alg);
            if got != Some(required) {
                return Err(AcceptError::WrongSignatureAlgorithm {
                    id: verified.agreement_id().to_owned(),
                    required,
                    got,
                });
            }
        }
        if agreement.is_some_and(|a| a.month_dates) && !verified.payload().dates_in_months() {
            return Err(AcceptError::DatesTooFine(
                verified.agreement_id().to_owned(),
            ));
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agreement::{Agreement, tests as agr};
    use crate::record::RecordId;
    use crate::record::tests::{NOW, key, region, sample};

    fn directory() -> Directory {
        let m = |code: &str, seed| pb::Member {
            region_code: code.into(),
            name: code.into(),
            endpoint: "127.0.0.1:1".into(),
            signing_key: key(seed).verifying_key().to_bytes().to_vec(),
            tls_identity: format!("urn:interflow:region:{code}"),
            keys: vec![],
        };
        let body = pb::DirectoryBody {
            serial: 1,
            issued_at_ms: 0,
            members: vec![m("310115", 1), m("110105", 2)],
            ..Default::default()
        };
        let op = key(100);
        Directory::verify(&Directory::sign(&body, &op), &op.verifying_key()).unwrap()
    }

    fn check(signed: pb::SignedRecord, expected: ChannelId) -> Result<VerifiedRecord, AcceptError> {
        let dir = directory();
        let a = Agreement::verify(
            agr::signed(&agr::body("310115", "110105"), &key(1), &key(2)),
            &dir,
        )
        .unwrap();
        let set = AgreementSet::new([a]);
        AcceptContext {
            directory: &dir,
            agreements: &set,
            rules: ValidationRules {
                now_ms: NOW,
                max_future_skew_ms: 60_000,
            },
        }
        .accept(signed, expected)
    }

    fn channel() -> ChannelId {
        ChannelId::new(region("310115"), region("110105"))
    }

    #[test]
    fn under_month_precision_only_first_days_of_months_are_accepted() {
        let dir = directory();
        let mut body = agr::body("310115", "110105");
        body.date_precision = pb::DatePrecision::Month as i32;
        let a = Agreement::verify(agr::signed(&body, &key(1), &key(2)), &dir).unwrap();
        assert!(a.month_dates);
        let set = AgreementSet::new([a]);
        let ctx = AcceptContext {
            directory: &dir,
            agreements: &set,
            rules: ValidationRules {
                now_ms: NOW,
                max_future_skew_ms: 60_000,
            },
        };
        let mut fine = sample(0);
        assert!(!fine.payload.dates_in_months(), "the sample has a day");
        let rec = fine.clone().seal(1, RecordId::ZERO, &key(1)).unwrap();
        let e = ctx.accept(rec.signed().clone(), channel()).unwrap_err();
        assert_eq!(e.reject_reason(), pb::RejectReason::DatesTooFine);
        fine.payload.coarsen_dates();
        assert!(fine.payload.dates_in_months());
        let rec = fine.seal(1, RecordId::ZERO, &key(1)).unwrap();
        assert!(ctx.accept(rec.signed().clone(), channel()).is_ok());
        // Under day precision the same coarse record is fine too.
        assert!(check(rec.signed().clone(), channel()).is_ok());
    }

    #[test]
    fn an_agreement_that_requires_sm2_refuses_other_suites() {
        use crate::fixtures::{directory, member, sm2_key, sm2_member_key};
        use crate::record::Sealer;
        // 310115 has an Ed25519 key id 0 and an SM2 key id 1; the agreement requires SM2.
        let dir = directory(vec![
            member("310115", 1, vec![sm2_member_key(1, 5, 0)]),
            member("110105", 2, vec![]),
        ]);
        let mut body = agr::body("310115", "110105");
        body.required_signature_algorithm = pb::SignatureAlgorithm::Sm2Sm3 as i32;
        let a = Agreement::verify(agr::signed(&body, &key(1), &key(2)), &dir).unwrap();
        let set = AgreementSet::new([a]);
        let ctx = AcceptContext {
            directory: &dir,
            agreements: &set,
            rules: ValidationRules {
                now_ms: NOW,
                max_future_skew_ms: 60_000,
            },
        };
        let ed = sample(0).seal(1, RecordId::ZERO, &key(1)).unwrap();
        let e = ctx.accept(ed.signed().clone(), channel()).unwrap_err();
        assert_eq!(e.reject_reason(), pb::RejectReason::WrongSignatureAlgorithm);
        let k = sm2_key(5);
        let sm2 = sample(0)
            .seal(
                1,
                RecordId::ZERO,
                Sealer {
                    key: (&k).into(),
                    key_id: 1,
                },
            )
            .unwrap();
        assert!(ctx.accept(sm2.signed().clone(), channel()).is_ok());
        // A suite this build does not know is refused when the agreement is read.
        body.required_signature_algorithm = 9;
        assert!(Agreement::verify(agr::signed(&body, &key(1), &key(2)), &dir).is_err());
    }

    #[test]
    fn a_good_record_is_accepted() {
        let rec = sample(0).seal(1, RecordId::ZERO, &key(1)).unwrap();
        assert_eq!(
            check(rec.signed().clone(), channel()).unwrap().id(),
            rec.id()
        );
    }

    #[test]
    fn each_rule_has_its_reason() {
        let good = sample(0).seal(1, RecordId::ZERO, &key(1)).unwrap();
        let reason = |signed: pb::SignedRecord, ch| check(signed, ch).unwrap_err().reject_reason();
        // Sent by 110105 but claiming origin 310115.
        assert_eq!(
            reason(
                good.signed().clone(),
                ChannelId::new(region("110105"), region("310115"))
            ),
            pb::RejectReason::OriginNotSender
        );
        // Addressed to another node.
        assert_eq!(
            reason(
                good.signed().clone(),
                ChannelId::new(region("310115"), region("440305"))
            ),
            pb::RejectReason::WrongDestination
        );
        // Signed by a key other than the origin's directory key.
        let forged = sample(0).seal(1, RecordId::ZERO, &key(7)).unwrap();
        assert_eq!(
            reason(forged.signed().clone(), channel()),
            pb::RejectReason::BadSignature
        );
        // Agreement id unknown.
        let mut other = sample(0);
        other.agreement_id = "agr-unknown".into();
        let r = other.seal(1, RecordId::ZERO, &key(1)).unwrap();
        assert_eq!(
            reason(r.signed().clone(), channel()),
            pb::RejectReason::NoAgreement
        );
        // Issued after the agreement ended.
        let mut late = sample(0);
        late.issued_at_ms = NOW + 2 * 86_400_000;
        let r = late.seal(1, RecordId::ZERO, &key(1)).unwrap();
        assert_eq!(
            reason(r.signed().clone(), channel()),
            pb::RejectReason::AgreementNotValid
        );
        // Unknown origin.
        let mut stranger = sample(0);
        stranger.channel = ChannelId::new(region("440305"), region("110105"));
        let r = stranger.seal(1, RecordId::ZERO, &key(1)).unwrap();
        assert_eq!(
            reason(r.signed().clone(), stranger.channel),
            pb::RejectReason::UnknownOrigin
        );
    }
}
