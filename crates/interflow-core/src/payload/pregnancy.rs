//! The pregnancy status as the domain sees it: a known state, a real observation date, a real
//! expected delivery month exactly when pregnant, a real event date exactly when the pregnancy
//! ended, a bounded visit count and a well-formed service point. Built only from the wire type,
//! which it converts back to without loss so that a sealed body encodes as it always did.
//! `validate` checks the dates against the clock and then against `observed_on`; nothing here
//! reads the clock.

use chrono::NaiveDate;

use super::error::{PayloadError, PayloadReason, date_error, known, unspecified};
use super::fields::{self, ServicePoint, YearMonth, present_when};
use crate::pb;
use crate::time::date_to_pb;

/// The most prenatal visits a record may report; more is a data-entry error.
pub const MAX_PRENATAL_VISITS: u32 = 50;

/// How far the expected delivery month may lie after the month of `observed_on`: a pregnancy
/// observed at its very start is due about nine and a half months later.
pub const MAX_MONTHS_TO_DELIVERY: i32 = 10;

const STATE: &str = "pregnancy.state";
const OBSERVED: &str = "pregnancy.observed_on";
const DELIVERY: &str = "pregnancy.expected_delivery";
const EVENT: &str = "pregnancy.event_date";
const VISITS: &str = "pregnancy.prenatal_visits";
const SERVICE_POINT: &str = "pregnancy.service_point";

/// Where a pregnancy stands. The names (`as_str`, `FromStr`, `Display`) are the ones the CLI
/// and reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PregnancyState {
    NotPregnant,
    Pregnant,
    Delivered,
    PregnancyEnded,
}

impl PregnancyState {
    pub const ALL: [PregnancyState; 4] = [
        PregnancyState::NotPregnant,
        PregnancyState::Pregnant,
        PregnancyState::Delivered,
        PregnancyState::PregnancyEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PregnancyState::NotPregnant => "not_pregnant",
            PregnancyState::Pregnant => "pregnant",
            PregnancyState::Delivered => "delivered",
            PregnancyState::PregnancyEnded => "pregnancy_ended",
        }
    }

    /// The rule an error cites, in the wire's spelling of the state.
    fn condition(self) -> &'static str {
        match self {
            PregnancyState::NotPregnant => "state is NOT_PREGNANT",
            PregnancyState::Pregnant => "state is PREGNANT",
            PregnancyState::Delivered => "state is DELIVERED",
            PregnancyState::PregnancyEnded => "state is PREGNANCY_ENDED",
        }
    }

    /// Whether the pregnancy ended, so the record carries the date it did.
    fn has_ended(self) -> bool {
        matches!(
            self,
            PregnancyState::Delivered | PregnancyState::PregnancyEnded
        )
    }
}

enum_names!(PregnancyState, "pregnancy state");

impl From<PregnancyState> for pb::PregnancyState {
    fn from(s: PregnancyState) -> Self {
        match s {
            PregnancyState::NotPregnant => pb::PregnancyState::NotPregnant,
            PregnancyState::Pregnant => pb::PregnancyState::Pregnant,
            PregnancyState::Delivered => pb::PregnancyState::Delivered,
            PregnancyState::PregnancyEnded => pb::PregnancyState::PregnancyEnded,
        }
    }
}

impl TryFrom<i32> for PregnancyState {
    type Error = PayloadError;

    /// From the `i32` that prost stores; unspecified and unknown values are refused.
    fn try_from(value: i32) -> Result<Self, PayloadError> {
        state(value)
    }
}

/// From the `i32` that prost stores, naming `pregnancy.state` when it is not a known state.
fn state(value: i32) -> Result<PregnancyState, PayloadError> {
    match known::<pb::PregnancyState>(STATE, value)? {
        pb::PregnancyState::Unspecified => Err(unspecified(STATE)),
        pb::PregnancyState::NotPregnant => Ok(PregnancyState::NotPregnant),
        pb::PregnancyState::Pregnant => Ok(PregnancyState::Pregnant),
        pb::PregnancyState::Delivered => Ok(PregnancyState::Delivered),
        pb::PregnancyState::PregnancyEnded => Ok(PregnancyState::PregnancyEnded),
    }
}

/// A checked pregnancy status. Only [`TryFrom<pb::PregnancyStatus>`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PregnancyStatus {
    state: PregnancyState,
    observed_on: NaiveDate,
    expected_delivery: Option<YearMonth>,
    event_date: Option<NaiveDate>,
    prenatal_visits: u32,
    service_point: ServicePoint,
}

impl PregnancyStatus {
    pub fn state(&self) -> PregnancyState {
        self.state
    }
    pub fn observed_on(&self) -> NaiveDate {
        self.observed_on
    }
    /// `observed_on` as the first day of its month (coarse dates).
    pub(super) fn coarsen_to_months(&mut self) {
        self.observed_on = super::fields::first_of_month(self.observed_on);
    }
    pub(super) fn in_months(&self) -> bool {
        super::fields::is_first_of_month(self.observed_on)
    }
    /// Present exactly when the state is [`PregnancyState::Pregnant`].
    pub fn expected_delivery(&self) -> Option<YearMonth> {
        self.expected_delivery
    }
    /// Present exactly when the pregnancy ended (delivered or otherwise).
    pub fn event_date(&self) -> Option<NaiveDate> {
        self.event_date
    }
    pub fn prenatal_visits(&self) -> u32 {
        self.prenatal_visits
    }
    pub fn service_point(&self) -> &ServicePoint {
        &self.service_point
    }

    /// The checks that need the clock: no date after `latest`. The dates are compared with
    /// `observed_on` here too, each after the clock check it follows on the wire, so that a
    /// date in the future is reported as in the future rather than as out of order (the
    /// order intake and the CLI's report have always given).
    pub(super) fn validate(&self, latest: NaiveDate) -> Result<(), PayloadError> {
        fields::not_after(OBSERVED, self.observed_on, latest, None)?;
        if let Some(due) = self.expected_delivery {
            delivery_in_range(due, self.observed_on)?;
        }
        match self.event_date {
            Some(event) => fields::not_after(EVENT, event, latest, Some(self.observed_on)),
            None => Ok(()),
        }
    }
}

/// Checks each field on its own, in the order they are listed: known, real, present exactly
/// when the state calls for it, in range; names the first field at fault. How the dates relate
/// to `observed_on` is `PregnancyStatus::validate`'s, after the clock.
impl TryFrom<pb::PregnancyStatus> for PregnancyStatus {
    type Error = PayloadError;

    fn try_from(p: pb::PregnancyStatus) -> Result<Self, Self::Error> {
        let state = state(p.state)?;
        let condition = state.condition();
        let observed_on = fields::date(OBSERVED, p.observed_on.as_ref())?;

        let pregnant = state == PregnancyState::Pregnant;
        let due = present_when(
            DELIVERY,
            p.expected_delivery.as_ref(),
            pregnant,
            PayloadReason::RequiredWhen { condition },
            PayloadReason::ForbiddenWhen { condition },
        )?;
        let expected_delivery = match due {
            Some(m) => Some(YearMonth::try_from(m).map_err(|e| date_error(DELIVERY, e))?),
            None => None,
        };

        let event = present_when(
            EVENT,
            p.event_date.as_ref(),
            state.has_ended(),
            PayloadReason::RequiredWhen { condition },
            PayloadReason::ForbiddenWhen { condition },
        )?;
        let event_date = match event {
            Some(d) => Some(fields::date(EVENT, Some(d))?),
            None => None,
        };

        if p.prenatal_visits > MAX_PRENATAL_VISITS {
            return Err(PayloadError::new(
                VISITS,
                PayloadReason::TooLarge {
                    max: MAX_PRENATAL_VISITS,
                },
            ));
        }
        let service_point = ServicePoint::field(SERVICE_POINT, p.service_point)?;
        Ok(PregnancyStatus {
            state,
            observed_on,
            expected_delivery,
            event_date,
            prenatal_visits: p.prenatal_visits,
            service_point,
        })
    }
}

/// The expected delivery month lies from the month of `observed_on` to
/// [`MAX_MONTHS_TO_DELIVERY`] after it.
fn delivery_in_range(month: YearMonth, observed_on: NaiveDate) -> Result<(), PayloadError> {
    let ahead = month.months_since(YearMonth::of(observed_on));
    if ahead < 0 {
        return Err(PayloadError::new(
            DELIVERY,
            PayloadReason::BeforeObservedMonth,
        ));
    }
    if ahead > MAX_MONTHS_TO_DELIVERY {
        return Err(PayloadError::new(
            DELIVERY,
            PayloadReason::TooLongAfterObservedOn {
                max: MAX_MONTHS_TO_DELIVERY,
            },
        ));
    }
    Ok(())
}

/// The wire form, field for field as it was received or submitted: a status converted from
/// the wire converts back to an equal message, so it encodes to the same bytes.
impl From<&PregnancyStatus> for pb::PregnancyStatus {
    fn from(p: &PregnancyStatus) -> Self {
        pb::PregnancyStatus {
            state: pb::PregnancyState::from(p.state).into(),
            observed_on: Some(date_to_pb(p.observed_on)),
            expected_delivery: p.expected_delivery.map(pb::YearMonth::from),
            event_date: p.event_date.map(date_to_pb),
            prenatal_visits: p.prenatal_visits,
            service_point: p.service_point.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{PayloadError, PayloadReason};
    use crate::pb;

    #[test]
    fn invalid_pregnancy_payloads_name_the_field() {
        use PayloadReason as R;
        let cases: Vec<(&str, W, Result<(), PayloadError>)> = vec![
            (
                "unspecified state",
                preg(|p| p.state = 0),
                fail("pregnancy.state", R::Unspecified),
            ),
            (
                "unknown state",
                preg(|p| p.state = 9),
                fail("pregnancy.state", R::UnknownValue { value: 9 }),
            ),
            (
                "negative state",
                preg(|p| p.state = -1),
                fail("pregnancy.state", R::UnknownValue { value: -1 }),
            ),
            (
                "no observed_on",
                preg(|p| p.observed_on = None),
                fail("pregnancy.observed_on", R::Missing),
            ),
            (
                "impossible observed_on",
                preg(|p| p.observed_on = date(2026, 2, 29)),
                fail("pregnancy.observed_on", R::NotRealDate),
            ),
            (
                "zero observed_on",
                preg(|p| p.observed_on = date(0, 0, 0)),
                fail("pregnancy.observed_on", R::NotRealDate),
            ),
            (
                "huge year",
                preg(|p| p.observed_on = date(u32::MAX, 1, 1)),
                fail("pregnancy.observed_on", R::NotRealDate),
            ),
            (
                "observed tomorrow",
                preg(|p| p.observed_on = date(2026, 6, 2)),
                fail("pregnancy.observed_on", R::InFuture),
            ),
            (
                "pregnant without expected delivery",
                preg(|p| p.expected_delivery = None),
                fail(
                    "pregnancy.expected_delivery",
                    R::RequiredWhen {
                        condition: "state is PREGNANT",
                    },
                ),
            ),
            (
                "month 13",
                preg(|p| p.expected_delivery = month(2026, 13)),
                fail("pregnancy.expected_delivery", R::NotRealMonth),
            ),
            (
                "month 0",
                preg(|p| p.expected_delivery = month(2026, 0)),
                fail("pregnancy.expected_delivery", R::NotRealMonth),
            ),
            (
                "due before the observed month",
                preg(|p| p.expected_delivery = month(2026, 2)),
                fail("pregnancy.expected_delivery", R::BeforeObservedMonth),
            ),
            (
                "due eleven months after",
                preg(|p| p.expected_delivery = month(2027, 2)),
                fail(
                    "pregnancy.expected_delivery",
                    R::TooLongAfterObservedOn { max: 10 },
                ),
            ),
            (
                "pregnant with an event date",
                preg(|p| p.event_date = date(2026, 3, 1)),
                fail(
                    "pregnancy.event_date",
                    R::ForbiddenWhen {
                        condition: "state is PREGNANT",
                    },
                ),
            ),
            (
                "not pregnant with expected delivery",
                W::Pregnancy(pb::PregnancyStatus {
                    expected_delivery: month(2026, 10),
                    ..in_state(S::NotPregnant)
                }),
                fail(
                    "pregnancy.expected_delivery",
                    R::ForbiddenWhen {
                        condition: "state is NOT_PREGNANT",
                    },
                ),
            ),
            (
                "delivered with expected delivery",
                W::Pregnancy(pb::PregnancyStatus {
                    expected_delivery: month(2026, 3),
                    ..in_state(S::Delivered)
                }),
                fail(
                    "pregnancy.expected_delivery",
                    R::ForbiddenWhen {
                        condition: "state is DELIVERED",
                    },
                ),
            ),
            (
                "not pregnant with event date",
                W::Pregnancy(pb::PregnancyStatus {
                    event_date: date(2026, 3, 1),
                    ..in_state(S::NotPregnant)
                }),
                fail(
                    "pregnancy.event_date",
                    R::ForbiddenWhen {
                        condition: "state is NOT_PREGNANT",
                    },
                ),
            ),
            (
                "delivered without event date",
                W::Pregnancy(pb::PregnancyStatus {
                    event_date: None,
                    ..in_state(S::Delivered)
                }),
                fail(
                    "pregnancy.event_date",
                    R::RequiredWhen {
                        condition: "state is DELIVERED",
                    },
                ),
            ),
            (
                "ended without event date",
                W::Pregnancy(pb::PregnancyStatus {
                    event_date: None,
                    ..in_state(S::PregnancyEnded)
                }),
                fail(
                    "pregnancy.event_date",
                    R::RequiredWhen {
                        condition: "state is PREGNANCY_ENDED",
                    },
                ),
            ),
            (
                "impossible event date",
                W::Pregnancy(pb::PregnancyStatus {
                    event_date: date(2026, 4, 31),
                    ..in_state(S::Delivered)
                }),
                fail("pregnancy.event_date", R::NotRealDate),
            ),
            (
                "event in the future",
                W::Pregnancy(pb::PregnancyStatus {
                    observed_on: date(2026, 6, 1),
                    event_date: date(2026, 6, 2),
                    ..in_state(S::PregnancyEnded)
                }),
                fail("pregnancy.event_date", R::InFuture),
            ),
            (
                "event after observation",
                W::Pregnancy(pb::PregnancyStatus {
                    event_date: date(2026, 3, 11),
                    ..in_state(S::Delivered)
                }),
                fail("pregnancy.event_date", R::AfterObservedOn),
            ),
            (
                "51 visits",
                preg(|p| p.prenatal_visits = 51),
                fail("pregnancy.prenatal_visits", R::TooLarge { max: 50 }),
            ),
            (
                "empty service point",
                preg(|p| p.service_point = String::new()),
                fail("pregnancy.service_point", R::WrongLength { len: 0 }),
            ),
            (
                "short service point",
                preg(|p| p.service_point = "310115004".into()),
                fail("pregnancy.service_point", R::WrongLength { len: 9 }),
            ),
            (
                "long service point",
                preg(|p| p.service_point = "31011500420".into()),
                fail("pregnancy.service_point", R::WrongLength { len: 11 }),
            ),
            (
                "service point with a letter",
                preg(|p| p.service_point = "310115004A".into()),
                fail("pregnancy.service_point", R::NonDigit { position: 10 }),
            ),
            (
                "service point with a full-width digit",
                preg(|p| p.service_point = "31011５0042".into()),
                fail("pregnancy.service_point", R::NonDigit { position: 6 }),
            ),
            (
                "service point with padding",
                preg(|p| p.service_point = " 310115004".into()),
                fail("pregnancy.service_point", R::NonDigit { position: 1 }),
            ),
            (
                "service point outside any province",
                preg(|p| p.service_point = "9901150042".into()),
                fail(
                    "pregnancy.service_point",
                    R::BadRegion(RegionCodeError::UnknownProvince { prefix: 99 }),
                ),
            ),
        ];
        for (name, payload, want) in cases {
            assert_eq!(check(payload, false), want, "{name}");
        }
    }
}
