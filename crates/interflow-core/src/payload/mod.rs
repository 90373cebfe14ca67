//! Record payloads as the domain sees them: the closed set of kinds, and the checked payload
//! that `RecordBody` and `Submission` carry. A payload is parsed once, where it enters (intake,
//! a received or stored record), by `TryFrom` of the wire type, which checks every field on its
//! own (enums known, dates real, fields present exactly when the state calls for them, ranges);
//! [`Payload::validate`] adds the checks against "now", which the caller supplies, and then how
//! the dates relate to `observed_on`: a date in the future is reported as in the future, not
//! as out of order, as it always was. Errors name the field at fault and never echo the values, which are
//! personal data. This module does not check agreements, chains or signatures.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::pb;
use crate::time::{self, UnixMillis};

/// `Display` and `FromStr` for an enum with `ALL` and `as_str`: one spelling of each name, for
/// the CLI, reports and messages alike. Defined before the modules below so they can use it.
macro_rules! enum_names {
    ($ty:ty, $what:literal) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = super::error::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        super::error::UnknownName::new($what, s, &Self::ALL.map(Self::as_str))
                    })
            }
        }
    };
}

mod contraception;
mod error;
mod fields;
mod pregnancy;
mod residence;
#[cfg(test)]
mod tests;

pub use contraception::{ContraceptionMethod, ContraceptionStatus};
pub use error::{PayloadError, PayloadReason, UnknownName};
pub use fields::{ServicePoint, YearMonth};
pub use pregnancy::{MAX_MONTHS_TO_DELIVERY, MAX_PRENATAL_VISITS, PregnancyState, PregnancyStatus};
pub use residence::{ResidenceEvent, ResidenceNotice};

use error::{known, unspecified};

/// The kinds of record an agreement can cover: two status kinds and residence notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pregnancy,
    Contraception,
    Residence,
}

/// Why a wire value or a name is not a record kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("record kind is unspecified")]
    Unspecified,
    #[error("record kind `{value}` is unknown")]
    Unknown { value: i32 },
    #[error(
        "record kind `{name}` is unknown, expected `pregnancy`, `contraception` or `residence`"
    )]
    UnknownName { name: String },
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pregnancy, Kind::Contraception, Kind::Residence];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pregnancy => "pregnancy",
            Kind::Contraception => "contraception",
            Kind::Residence => "residence",
        }
    }

    /// A status kind (pregnancy, contraception), as opposed to a residence notice.
    pub fn is_status(self) -> bool {
        !matches!(self, Kind::Residence)
    }
}

impl From<Kind> for pb::RecordKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Pregnancy => pb::RecordKind::PregnancyStatus,
            Kind::Contraception => pb::RecordKind::ContraceptionStatus,
            Kind::Residence => pb::RecordKind::Residence,
        }
    }
}

impl TryFrom<pb::RecordKind> for Kind {
    type Error = KindError;

    fn try_from(kind: pb::RecordKind) -> Result<Self, Self::Error> {
        match kind {
            pb::RecordKind::Unspecified => Err(KindError::Unspecified),
            pb::RecordKind::PregnancyStatus => Ok(Kind::Pregnancy),
            pb::RecordKind::ContraceptionStatus => Ok(Kind::Contraception),
            pb::RecordKind::Residence => Ok(Kind::Residence),
        }
    }
}

/// From the `i32` that prost stores for an enum field.
impl TryFrom<i32> for Kind {
    type Error = KindError;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        pb::RecordKind::try_from(value)
            .map_err(|_| KindError::Unknown { value })
            .and_then(Kind::try_from)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = KindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| KindError::UnknownName { name: s.to_owned() })
    }
}

/// The payload of a record or a submission, checked as far as it can be without the clock.
///
/// A retraction holds the kind of the record it withdraws, checked when it is read from the
/// wire, so every payload has a known kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Pregnancy(PregnancyStatus),
    Contraception(ContraceptionStatus),
    Residence(ResidenceNotice),
    Retraction(Kind),
}

/// What the validator needs to know about "now"; the caller reads the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationRules {
    pub now_ms: UnixMillis,
    /// How far a sender's clock may run ahead of ours.
    pub max_future_skew_ms: i64,
}

impl ValidationRules {
    /// The latest date a payload may carry.
    pub fn latest_date(&self) -> NaiveDate {
        time::latest_permitted_date(self.now_ms, self.max_future_skew_ms)
    }
}

impl Payload {
    /// From a `RecordBody`'s oneof. A missing payload is an error, as is anything
    /// [`TryFrom`] refuses.
    pub fn from_record(payload: Option<pb::record_body::Payload>) -> Result<Self, PayloadError> {
        payload.ok_or_else(missing).and_then(Payload::try_from)
    }

    /// From a `Submission`'s oneof, with the same rules as [`Payload::from_record`].
    pub fn from_submission(payload: Option<pb::submission::Payload>) -> Result<Self, PayloadError> {
        payload.ok_or_else(missing).and_then(Payload::try_from)
    }

    /// The kind of the status, or of the record a retraction withdraws.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Pregnancy(_) => Kind::Pregnancy,
            Payload::Contraception(_) => Kind::Contraception,
            Payload::Residence(_) => Kind::Residence,
            Payload::Retraction(kind) => *kind,
        }
    }

    /// Under an agreement with month precision: `observed_on` and a contraception `since` as
    /// the first day of their month. The order of the dates is kept (both move to the start
    /// of their month), so a valid payload stays valid.
    pub fn coarsen_dates(&mut self) {
        match self {
            Payload::Pregnancy(p) => p.coarsen_to_months(),
            Payload::Contraception(c) => c.coarsen_to_months(),
            Payload::Residence(_) | Payload::Retraction(_) => {}
        }
    }

    /// Whether `observed_on` and `since` are first days of their month, as an agreement with
    /// month precision requires.
    pub fn dates_in_months(&self) -> bool {
        match self {
            Payload::Pregnancy(p) => p.in_months(),
            Payload::Contraception(c) => c.in_months(),
            Payload::Residence(_) | Payload::Retraction(_) => true,
        }
    }

    /// The date the status was observed (for a residence notice, the first day of its month);
    /// `None` for a retraction.
    pub fn observed_on(&self) -> Option<NaiveDate> {
        match self {
            Payload::Pregnancy(p) => Some(p.observed_on()),
            Payload::Contraception(c) => Some(c.observed_on()),
            Payload::Residence(r) => Some(r.month().first_day()),
            Payload::Retraction(_) => None,
        }
    }

    pub fn is_retraction(&self) -> bool {
        matches!(self, Payload::Retraction(_))
    }

    /// The checks that need the clock, as of `rules.now_ms`: no date in the future beyond the
    /// skew; after that, the dates against `observed_on` (an event or `since` not after it, the
    /// delivery month within range of it). `supersedes_present` says
    /// whether the record or submission names a record it replaces, which a retraction needs.
    pub fn validate(
        &self,
        rules: &ValidationRules,
        supersedes_present: bool,
    ) -> Result<(), PayloadError> {
        let latest = rules.latest_date();
        match self {
            Payload::Pregnancy(p) => p.validate(latest),
            Payload::Contraception(c) => c.validate(latest),
            Payload::Residence(r) => r.validate(latest),
            Payload::Retraction(_) if !supersedes_present => Err(PayloadError::new(
                "supersedes",
                PayloadReason::RequiredWhen {
                    condition: "payload is a retraction",
                },
            )),
            Payload::Retraction(_) => Ok(()),
        }
    }
}

fn missing() -> PayloadError {
    PayloadError::new("payload", PayloadReason::Missing)
}

fn retraction_kind(r: pb::Retraction) -> Result<Kind, PayloadError> {
    known::<pb::RecordKind>("retraction.kind", r.kind)
        .and_then(|k| Kind::try_from(k).map_err(|_| unspecified("retraction.kind")))
}

fn retraction(kind: Kind) -> pb::Retraction {
    pb::Retraction {
        kind: pb::RecordKind::from(kind).into(),
    }
}

/// Both oneofs have the same four arms; one macro keeps their conversions from drifting apart.
macro_rules! oneof_conversions {
    ($oneof:ty) => {
        impl TryFrom<$oneof> for Payload {
            type Error = PayloadError;

            fn try_from(payload: $oneof) -> Result<Self, Self::Error> {
                type P = $oneof;
                match payload {
                    P::Pregnancy(p) => PregnancyStatus::try_from(p).map(Payload::Pregnancy),
                    P::Contraception(c) => {
                        ContraceptionStatus::try_from(c).map(Payload::Contraception)
                    }
                    P::Residence(r) => ResidenceNotice::try_from(r).map(Payload::Residence),
                    P::Retraction(r) => retraction_kind(r).map(Payload::Retraction),
                }
            }
        }

        /// The wire form sealing signs: for a payload read from the wire, the same message, so
        /// the same bytes.
        impl From<&Payload> for $oneof {
            fn from(payload: &Payload) -> Self {
                type P = $oneof;
                match payload {
                    Payload::Pregnancy(p) => P::Pregnancy(p.into()),
                    Payload::Contraception(c) => P::Contraception(c.into()),
                    Payload::Residence(r) => P::Residence(r.into()),
                    Payload::Retraction(kind) => P::Retraction(retraction(*kind)),
                }
            }
        }
    };
}

oneof_conversions!(pb::record_body::Payload);
oneof_conversions!(pb::submission::Payload);
