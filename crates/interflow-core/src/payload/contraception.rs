//! The contraception status as the domain sees it: a known method, a real observation date,
//! the date the method started unless the method is none, and a well-formed service point.
//! Built only from the wire type, which it converts back to without loss so that a sealed body
//! encodes as it always did. `validate` checks the dates against the clock and then against
//! `observed_on`; nothing here reads the clock.

use chrono::NaiveDate;

use super::error::{PayloadError, PayloadReason, known, unspecified};
use super::fields::{self, ServicePoint, present_when};
use crate::pb;
use crate::time::date_to_pb;

const METHOD: &str = "contraception.method";
const SINCE: &str = "contraception.since";
const OBSERVED: &str = "contraception.observed_on";
const SERVICE_POINT: &str = "contraception.service_point";

/// A contraceptive method, or none. The names (`as_str`, `FromStr`, `Display`) are the ones
/// the CLI and reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContraceptionMethod {
    None,
    Iud,
    Implant,
    Injectable,
    OralPill,
    Condom,
    Sterilization,
    Other,
}

impl ContraceptionMethod {
    pub const ALL: [ContraceptionMethod; 8] = [
        ContraceptionMethod::None,
        ContraceptionMethod::Iud,
        ContraceptionMethod::Implant,
        ContraceptionMethod::Injectable,
        ContraceptionMethod::OralPill,
        ContraceptionMethod::Condom,
        ContraceptionMethod::Sterilization,
        ContraceptionMethod::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContraceptionMethod::None => "none",
            ContraceptionMethod::Iud => "iud",
            ContraceptionMethod::Implant => "implant",
            ContraceptionMethod::Injectable => "injectable",
            ContraceptionMethod::OralPill => "oral_pill",
            ContraceptionMethod::Condom => "condom",
            ContraceptionMethod::Sterilization => "sterilization",
            ContraceptionMethod::Other => "other",
        }
    }
}

enum_names!(ContraceptionMethod, "contraceptive method");

impl From<ContraceptionMethod> for pb::ContraceptiveMethod {
    fn from(m: ContraceptionMethod) -> Self {
        use pb::ContraceptiveMethod as M;
        match m {
            ContraceptionMethod::None => M::None,
            ContraceptionMethod::Iud => M::Iud,
            ContraceptionMethod::Implant => M::Implant,
            ContraceptionMethod::Injectable => M::Injectable,
            ContraceptionMethod::OralPill => M::OralPill,
            ContraceptionMethod::Condom => M::Condom,
            ContraceptionMethod::Sterilization => M::Sterilization,
            ContraceptionMethod::Other => M::Other,
        }
    }
}

/// From the `i32` that prost stores, naming `contraception.method` when it is not a known
/// method.
impl TryFrom<i32> for ContraceptionMethod {
    type Error = PayloadError;

    /// From the `i32` that prost stores; unspecified and unknown values are refused.
    fn try_from(value: i32) -> Result<Self, PayloadError> {
        method(value)
    }
}

fn method(value: i32) -> Result<ContraceptionMethod, PayloadError> {
    use pb::ContraceptiveMethod as M;
    Ok(match known::<M>(METHOD, value)? {
        M::Unspecified => return Err(unspecified(METHOD)),
        M::None => ContraceptionMethod::None,
        M::Iud => ContraceptionMethod::Iud,
        M::Implant => ContraceptionMethod::Implant,
        M::Injectable => ContraceptionMethod::Injectable,
        M::OralPill => ContraceptionMethod::OralPill,
        M::Condom => ContraceptionMethod::Condom,
        M::Sterilization => ContraceptionMethod::Sterilization,
        M::Other => ContraceptionMethod::Other,
    })
}

/// A checked contraception status. Only [`TryFrom<pb::ContraceptionStatus>`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContraceptionStatus {
    method: ContraceptionMethod,
    since: Option<NaiveDate>,
    observed_on: NaiveDate,
    service_point: ServicePoint,
}

impl ContraceptionStatus {
    pub fn method(&self) -> ContraceptionMethod {
        self.method
    }
    /// Present exactly when the method is not [`ContraceptionMethod::None`].
    pub fn since(&self) -> Option<NaiveDate> {
        self.since
    }
    pub fn observed_on(&self) -> NaiveDate {
        self.observed_on
    }
    pub fn service_point(&self) -> &ServicePoint {
        &self.service_point
    }
    /// `observed_on` and `since` as the first day of their month (coarse dates).
    pub(super) fn coarsen_to_months(&mut self) {
        self.observed_on = fields::first_of_month(self.observed_on);
        self.since = self.since.map(fields::first_of_month);
    }
    pub(super) fn in_months(&self) -> bool {
        fields::is_first_of_month(self.observed_on)
            && self.since.is_none_or(fields::is_first_of_month)
    }

    /// The checks that need the clock: no date after `latest`, and `since` not after the
    /// observation (checked after the clock, so a date in the future is reported as such).
    pub(super) fn validate(&self, latest: NaiveDate) -> Result<(), PayloadError> {
        fields::not_after(OBSERVED, self.observed_on, latest, None)?;
        match self.since {
            Some(since) => fields::not_after(SINCE, since, latest, Some(self.observed_on)),
            None => Ok(()),
        }
    }
}

/// Checks each field on its own: known, real, present exactly when the method calls for it;
/// names the first field at fault. Whether `since` follows `observed_on` is
/// `ContraceptionStatus::validate`'s, after the clock.
impl TryFrom<pb::ContraceptionStatus> for ContraceptionStatus {
    type Error = PayloadError;

    fn try_from(c: pb::ContraceptionStatus) -> Result<Self, Self::Error> {
        let method = method(c.method)?;
        let observed_on = fields::date(OBSERVED, c.observed_on.as_ref())?;
        const NONE: &str = "method is NONE";
        let since = present_when(
            SINCE,
            c.since.as_ref(),
            method != ContraceptionMethod::None,
            PayloadReason::RequiredUnless { condition: NONE },
            PayloadReason::ForbiddenWhen { condition: NONE },
        )?;
        let since = match since {
            Some(d) => Some(fields::date(SINCE, Some(d))?),
            None => None,
        };
        let service_point = ServicePoint::field(SERVICE_POINT, c.service_point)?;
        Ok(ContraceptionStatus {
            method,
            since,
            observed_on,
            service_point,
        })
    }
}

/// The wire form, field for field as it was received or submitted: a status converted from
/// the wire converts back to an equal message, so it encodes to the same bytes.
impl From<&ContraceptionStatus> for pb::ContraceptionStatus {
    fn from(c: &ContraceptionStatus) -> Self {
        pb::ContraceptionStatus {
            method: pb::ContraceptiveMethod::from(c.method).into(),
            since: c.since.map(date_to_pb),
            observed_on: Some(date_to_pb(c.observed_on)),
            service_point: c.service_point.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{PayloadError, PayloadReason};

    #[test]
    fn invalid_contraception_payloads_name_the_field() {
        use PayloadReason as R;
        let cases: Vec<(&str, W, Result<(), PayloadError>)> = vec![
            (
                "unspecified method",
                contra(M::Iud, |c| c.method = 0),
                fail("contraception.method", R::Unspecified),
            ),
            (
                "unknown method",
                contra(M::Iud, |c| c.method = 42),
                fail("contraception.method", R::UnknownValue { value: 42 }),
            ),
            (
                "no observed_on",
                contra(M::Iud, |c| c.observed_on = None),
                fail("contraception.observed_on", R::Missing),
            ),
            (
                "impossible observed_on",
                contra(M::Iud, |c| c.observed_on = date(2025, 9, 31)),
                fail("contraception.observed_on", R::NotRealDate),
            ),
            (
                "observed next year",
                contra(M::Iud, |c| c.observed_on = date(2027, 1, 1)),
                fail("contraception.observed_on", R::InFuture),
            ),
            (
                "no since",
                contra(M::Implant, |c| c.since = None),
                fail(
                    "contraception.since",
                    R::RequiredUnless {
                        condition: "method is NONE",
                    },
                ),
            ),
            (
                "since with method none",
                contra(M::None, |c| c.since = date(2024, 1, 1)),
                fail(
                    "contraception.since",
                    R::ForbiddenWhen {
                        condition: "method is NONE",
                    },
                ),
            ),
            (
                "impossible since",
                contra(M::OralPill, |c| c.since = date(2025, 2, 29)),
                fail("contraception.since", R::NotRealDate),
            ),
            (
                "since in the future",
                contra(M::Injectable, |c| {
                    c.observed_on = date(2026, 6, 1);
                    c.since = date(2026, 6, 2);
                }),
                fail("contraception.since", R::InFuture),
            ),
            (
                "since after observation",
                contra(M::Sterilization, |c| c.since = date(2026, 6, 1)),
                fail("contraception.since", R::AfterObservedOn),
            ),
            (
                "bad service point",
                contra(M::Other, |c| c.service_point = "44030500x7".into()),
                fail("contraception.service_point", R::NonDigit { position: 9 }),
            ),
            (
                "service point in no province",
                contra(M::Other, |c| c.service_point = "1001010001".into()),
                fail(
                    "contraception.service_point",
                    R::BadRegion(RegionCodeError::UnknownProvince { prefix: 10 }),
                ),
            ),
        ];
        for (name, payload, want) in cases {
            assert_eq!(check(payload, false), want, "{name}");
        }
    }
}
