//! Record payloads as the domain sees them: the closed set of kinds, the payload oneof shared by
//! `RecordBody` and `Submission`, and the validation every payload passes before it is signed
//! or accepted (dates real and not in the future, enums known, fields present exactly when the
//! state calls for them). Errors name the field at fault and never echo the values, which are
//! personal data. This module does not check agreements, chains or signatures.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

use crate::pb;
use crate::region::{RegionCode, RegionCodeError};
use crate::time::{self, DateError, UnixMillis};

/// The most prenatal visits a record may report; more is a data-entry error.
pub const MAX_PRENATAL_VISITS: u32 = 50;

/// How far the expected delivery month may lie after the month of `observed_on`: a pregnancy
/// observed at its very start is due about nine and a half months later.
pub const MAX_MONTHS_TO_DELIVERY: i32 = 10;

const SERVICE_POINT_LEN: usize = 10;

/// The kinds of status record an agreement can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pregnancy,
    Contraception,
}

/// Why a wire value or a name is not a record kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("record kind is unspecified")]
    Unspecified,
    #[error("record kind `{value}` is unknown")]
    Unknown { value: i32 },
    #[error("record kind `{name}` is unknown, expected `pregnancy` or `contraception`")]
    UnknownName { name: String },
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Pregnancy, Kind::Contraception];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pregnancy => "pregnancy",
            Kind::Contraception => "contraception",
        }
    }
}

impl From<Kind> for pb::RecordKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Pregnancy => pb::RecordKind::PregnancyStatus,
            Kind::Contraception => pb::RecordKind::ContraceptionStatus,
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

/// The payload of a record or a submission.
///
/// A retraction holds the kind of the record it withdraws, checked when it is read from the
/// wire, so every payload has a known kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Pregnancy(pb::PregnancyStatus),
    Contraception(pb::ContraceptionStatus),
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

/// A payload that failed validation: the field at fault (e.g. `pregnancy.expected_delivery`)
/// and what is wrong with it, without its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct PayloadError {
    field: &'static str,
    reason: PayloadReason,
}

/// What is wrong with a payload field. Displays as a predicate of the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadReason {
    #[error("is required")]
    Missing,
    #[error("must be specified")]
    Unspecified,
    #[error("has unknown value `{value}`")]
    UnknownValue { value: i32 },
    #[error("is required when {condition}")]
    RequiredWhen { condition: &'static str },
    #[error("is required unless {condition}")]
    RequiredUnless { condition: &'static str },
    #[error("must be absent when {condition}")]
    ForbiddenWhen { condition: &'static str },
    #[error("is not a real date")]
    NotRealDate,
    #[error("is not a real month")]
    NotRealMonth,
    #[error("is in the future")]
    InFuture,
    #[error("is after `observed_on`")]
    AfterObservedOn,
    #[error("is before the month of `observed_on`")]
    BeforeObservedMonth,
    #[error("is more than {max} months after `observed_on`")]
    TooLongAfterObservedOn { max: i32 },
    #[error("must be at most `{max}`")]
    TooLarge { max: u32 },
    #[error("must be 10 digits, got {len} characters")]
    WrongLength { len: usize },
    /// `position` counts characters from 1.
    #[error("must be 10 digits, found a non-digit at position {position}")]
    NonDigit { position: usize },
    #[error("must start with a valid region code: {0}")]
    BadRegion(RegionCodeError),
}

impl PayloadError {
    fn new(field: &'static str, reason: PayloadReason) -> Self {
        Self { field, reason }
    }

    /// The path of the field at fault, e.g. `contraception.since`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    pub fn reason(&self) -> &PayloadReason {
        &self.reason
    }
}

impl Payload {
    /// From a `RecordBody`'s oneof. A missing payload or a retraction of an unknown kind is an
    /// error.
    pub fn from_record(payload: Option<pb::record_body::Payload>) -> Result<Self, PayloadError> {
        use pb::record_body::Payload as P;
        match payload {
            Some(P::Pregnancy(p)) => Ok(Payload::Pregnancy(p)),
            Some(P::Contraception(c)) => Ok(Payload::Contraception(c)),
            Some(P::Retraction(r)) => retraction_kind(r).map(Payload::Retraction),
            None => Err(PayloadError::new("payload", PayloadReason::Missing)),
        }
    }

    /// From a `Submission`'s oneof, with the same rules as [`Payload::from_record`].
    pub fn from_submission(payload: Option<pb::submission::Payload>) -> Result<Self, PayloadError> {
        use pb::submission::Payload as P;
        match payload {
            Some(P::Pregnancy(p)) => Ok(Payload::Pregnancy(p)),
            Some(P::Contraception(c)) => Ok(Payload::Contraception(c)),
            Some(P::Retraction(r)) => retraction_kind(r).map(Payload::Retraction),
            None => Err(PayloadError::new("payload", PayloadReason::Missing)),
        }
    }

    /// The `RecordBody` oneof.
    pub fn into_record(self) -> pb::record_body::Payload {
        use pb::record_body::Payload as P;
        match self {
            Payload::Pregnancy(p) => P::Pregnancy(p),
            Payload::Contraception(c) => P::Contraception(c),
            Payload::Retraction(kind) => P::Retraction(pb::Retraction {
                kind: pb::RecordKind::from(kind).into(),
            }),
        }
    }

    /// The kind of the status, or of the record a retraction withdraws.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Pregnancy(_) => Kind::Pregnancy,
            Payload::Contraception(_) => Kind::Contraception,
            Payload::Retraction(kind) => *kind,
        }
    }

    /// The date the status was observed, if the payload is a status with a real date.
    pub fn observed_on(&self) -> Option<NaiveDate> {
        let date = match self {
            Payload::Pregnancy(p) => p.observed_on.as_ref(),
            Payload::Contraception(c) => c.observed_on.as_ref(),
            Payload::Retraction(_) => return None,
        };
        time::date_from_pb(date).ok()
    }

    pub fn is_retraction(&self) -> bool {
        matches!(self, Payload::Retraction(_))
    }

    /// Checks every rule of the payload's kind as of `rules.now_ms`. `supersedes_present` says
    /// whether the record or submission names a record it replaces, which a retraction needs.
    pub fn validate(
        &self,
        rules: &ValidationRules,
        supersedes_present: bool,
    ) -> Result<(), PayloadError> {
        let latest = rules.latest_date();
        match self {
            Payload::Pregnancy(p) => validate_pregnancy(p, latest),
            Payload::Contraception(c) => validate_contraception(c, latest),
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

fn retraction_kind(r: pb::Retraction) -> Result<Kind, PayloadError> {
    known::<pb::RecordKind>("retraction.kind", r.kind)
        .and_then(|k| Kind::try_from(k).map_err(|_| unspecified("retraction.kind")))
}

fn validate_pregnancy(p: &pb::PregnancyStatus, latest: NaiveDate) -> Result<(), PayloadError> {
    use pb::PregnancyState as S;
    let state = known::<S>("pregnancy.state", p.state)?;
    if state == S::Unspecified {
        return Err(unspecified("pregnancy.state"));
    }
    let condition = state_condition(state);
    let observed = past_date("pregnancy.observed_on", p.observed_on.as_ref(), latest)?;

    const DELIVERY: &str = "pregnancy.expected_delivery";
    match (state, p.expected_delivery.as_ref()) {
        (S::Pregnant, None) => return Err(required_when(DELIVERY, condition)),
        (S::Pregnant, Some(m)) => {
            let month = time::month_from_pb(Some(m)).map_err(|e| date_error(DELIVERY, e))?;
            let ahead = month_index(month) - month_index(observed);
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
        }
        (_, Some(_)) => return Err(forbidden_when(DELIVERY, condition)),
        (_, None) => {}
    }

    const EVENT: &str = "pregnancy.event_date";
    let needs_event = matches!(state, S::Delivered | S::PregnancyEnded);
    match (needs_event, p.event_date.as_ref()) {
        (true, None) => return Err(required_when(EVENT, condition)),
        (true, Some(d)) => {
            let event = past_date(EVENT, Some(d), latest)?;
            if event > observed {
                return Err(PayloadError::new(EVENT, PayloadReason::AfterObservedOn));
            }
        }
        (false, Some(_)) => return Err(forbidden_when(EVENT, condition)),
        (false, None) => {}
    }

    if p.prenatal_visits > MAX_PRENATAL_VISITS {
        return Err(PayloadError::new(
            "pregnancy.prenatal_visits",
            PayloadReason::TooLarge {
                max: MAX_PRENATAL_VISITS,
            },
        ));
    }
    service_point("pregnancy.service_point", &p.service_point)
}

fn validate_contraception(
    c: &pb::ContraceptionStatus,
    latest: NaiveDate,
) -> Result<(), PayloadError> {
    use pb::ContraceptiveMethod as M;
    let method = known::<M>("contraception.method", c.method)?;
    if method == M::Unspecified {
        return Err(unspecified("contraception.method"));
    }
    let observed = past_date("contraception.observed_on", c.observed_on.as_ref(), latest)?;

    const SINCE: &str = "contraception.since";
    const NONE: &str = "method is NONE";
    match (method, c.since.as_ref()) {
        (M::None, Some(_)) => return Err(forbidden_when(SINCE, NONE)),
        (M::None, None) => {}
        (_, None) => {
            return Err(PayloadError::new(
                SINCE,
                PayloadReason::RequiredUnless { condition: NONE },
            ));
        }
        (_, Some(d)) => {
            let since = past_date(SINCE, Some(d), latest)?;
            if since > observed {
                return Err(PayloadError::new(SINCE, PayloadReason::AfterObservedOn));
            }
        }
    }
    service_point("contraception.service_point", &c.service_point)
}

/// Decodes a prost enum field. Value 0 is `UNSPECIFIED` in every interflow enum, so it is
/// refused here; values this build does not know are refused rather than carried along.
fn known<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<E, PayloadError> {
    if value == 0 {
        return Err(unspecified(field));
    }
    E::try_from(value).map_err(|_| PayloadError::new(field, PayloadReason::UnknownValue { value }))
}

/// A real date that is not after `latest`.
fn past_date(
    field: &'static str,
    date: Option<&pb::Date>,
    latest: NaiveDate,
) -> Result<NaiveDate, PayloadError> {
    let date = time::date_from_pb(date).map_err(|e| date_error(field, e))?;
    if date > latest {
        return Err(PayloadError::new(field, PayloadReason::InFuture));
    }
    Ok(date)
}

/// Drops the offending value: dates in a payload are personal data.
fn date_error(field: &'static str, e: DateError) -> PayloadError {
    let reason = match e {
        DateError::Missing => PayloadReason::Missing,
        DateError::NotReal { .. } => PayloadReason::NotRealDate,
        DateError::NotRealMonth { .. } => PayloadReason::NotRealMonth,
    };
    PayloadError::new(field, reason)
}

/// Months since year 0, for whole-month differences.
fn month_index(d: NaiveDate) -> i32 {
    d.year() * 12 + d.month0() as i32
}

/// Exactly ten ASCII digits: a region code and a four-digit facility number.
fn service_point(field: &'static str, s: &str) -> Result<(), PayloadError> {
    let len = s.chars().count();
    if len != SERVICE_POINT_LEN {
        return Err(PayloadError::new(field, PayloadReason::WrongLength { len }));
    }
    if let Some(i) = s.chars().position(|c| !c.is_ascii_digit()) {
        return Err(PayloadError::new(
            field,
            PayloadReason::NonDigit { position: i + 1 },
        ));
    }
    // All ten characters are ASCII, so byte 6 is a character boundary.
    let region = s.get(..6).unwrap_or_default();
    RegionCode::parse(region)
        .map(|_| ())
        .map_err(|e| PayloadError::new(field, PayloadReason::BadRegion(e)))
}

fn state_condition(state: pb::PregnancyState) -> &'static str {
    use pb::PregnancyState as S;
    match state {
        S::Unspecified => "state is UNSPECIFIED",
        S::NotPregnant => "state is NOT_PREGNANT",
        S::Pregnant => "state is PREGNANT",
        S::Delivered => "state is DELIVERED",
        S::PregnancyEnded => "state is PREGNANCY_ENDED",
    }
}

fn unspecified(field: &'static str) -> PayloadError {
    PayloadError::new(field, PayloadReason::Unspecified)
}

fn required_when(field: &'static str, condition: &'static str) -> PayloadError {
    PayloadError::new(field, PayloadReason::RequiredWhen { condition })
}

fn forbidden_when(field: &'static str, condition: &'static str) -> PayloadError {
    PayloadError::new(field, PayloadReason::ForbiddenWhen { condition })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use pb::{ContraceptiveMethod as M, PregnancyState as S};
    use proptest::prelude::*;

    /// 2026-06-01T00:00:00Z.
    const NOW_MS: i64 = 1_780_272_000_000;

    const RULES: ValidationRules = ValidationRules {
        now_ms: NOW_MS,
        max_future_skew_ms: 5 * 60 * 1000,
    };

    #[test]
    fn now_constant_is_the_first_of_june_2026() {
        let want = Utc
            .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
            .single()
            .expect("unambiguous");
        assert_eq!(DateTime::from_timestamp_millis(NOW_MS), Some(want));
        assert_eq!(
            RULES.latest_date(),
            NaiveDate::from_ymd_opt(2026, 6, 1).expect("real date")
        );
    }

    fn date(year: u32, month: u32, day: u32) -> Option<pb::Date> {
        Some(pb::Date { year, month, day })
    }

    fn month(year: u32, month: u32) -> Option<pb::YearMonth> {
        Some(pb::YearMonth { year, month })
    }

    fn pregnant() -> pb::PregnancyStatus {
        pb::PregnancyStatus {
            state: S::Pregnant.into(),
            observed_on: date(2026, 3, 10),
            expected_delivery: month(2026, 10),
            event_date: None,
            prenatal_visits: 2,
            service_point: "3101150042".into(),
        }
    }

    fn in_state(state: S) -> pb::PregnancyStatus {
        let mut p = pregnant();
        p.state = state.into();
        p.expected_delivery = None;
        if matches!(state, S::Delivered | S::PregnancyEnded) {
            p.event_date = date(2026, 3, 1);
        }
        p
    }

    fn using(method: M) -> pb::ContraceptionStatus {
        pb::ContraceptionStatus {
            method: method.into(),
            since: if method == M::None {
                None
            } else {
                date(2024, 5, 20)
            },
            observed_on: date(2026, 5, 31),
            service_point: "4403050007".into(),
        }
    }

    fn preg(f: impl FnOnce(&mut pb::PregnancyStatus)) -> Payload {
        let mut p = pregnant();
        f(&mut p);
        Payload::Pregnancy(p)
    }

    fn contra(method: M, f: impl FnOnce(&mut pb::ContraceptionStatus)) -> Payload {
        let mut c = using(method);
        f(&mut c);
        Payload::Contraception(c)
    }

    fn fail(field: &'static str, reason: PayloadReason) -> Result<(), PayloadError> {
        Err(PayloadError::new(field, reason))
    }

    #[test]
    fn valid_payloads_pass() {
        let mut cases: Vec<(&str, Payload, bool)> = vec![
            ("pregnant", Payload::Pregnancy(pregnant()), false),
            ("pregnant, correction", Payload::Pregnancy(pregnant()), true),
            (
                "not pregnant",
                Payload::Pregnancy(in_state(S::NotPregnant)),
                false,
            ),
            (
                "delivered",
                Payload::Pregnancy(in_state(S::Delivered)),
                false,
            ),
            (
                "ended",
                Payload::Pregnancy(in_state(S::PregnancyEnded)),
                false,
            ),
            (
                "due in the observed month",
                preg(|p| p.expected_delivery = month(2026, 3)),
                false,
            ),
            (
                "due ten months after the observed month",
                preg(|p| p.expected_delivery = month(2027, 1)),
                false,
            ),
            (
                "observed today in the earliest time zone",
                preg(|p| p.observed_on = date(2026, 6, 1)),
                false,
            ),
            (
                "delivered on the observed day",
                Payload::Pregnancy(pb::PregnancyStatus {
                    event_date: date(2026, 3, 10),
                    ..in_state(S::Delivered)
                }),
                false,
            ),
            (
                "fifty visits",
                preg(|p| p.prenatal_visits = MAX_PRENATAL_VISITS),
                false,
            ),
            (
                "since the observed day",
                contra(M::Iud, |c| c.since = c.observed_on),
                false,
            ),
            (
                "leap day",
                contra(M::Condom, |c| c.since = date(2024, 2, 29)),
                false,
            ),
            ("retraction", Payload::Retraction(Kind::Pregnancy), true),
            ("retraction", Payload::Retraction(Kind::Contraception), true),
        ];
        for method in [
            M::None,
            M::Iud,
            M::Implant,
            M::Injectable,
            M::OralPill,
            M::Condom,
            M::Sterilization,
            M::Other,
        ] {
            cases.push((
                method.as_str_name(),
                Payload::Contraception(using(method)),
                false,
            ));
        }
        for (name, payload, supersedes) in cases {
            assert_eq!(payload.validate(&RULES, supersedes), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_pregnancy_payloads_name_the_field() {
        use PayloadReason as R;
        let cases: Vec<(&str, Payload, Result<(), PayloadError>)> = vec![
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
                Payload::Pregnancy(pb::PregnancyStatus {
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
                Payload::Pregnancy(pb::PregnancyStatus {
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
                Payload::Pregnancy(pb::PregnancyStatus {
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
                Payload::Pregnancy(pb::PregnancyStatus {
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
                Payload::Pregnancy(pb::PregnancyStatus {
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
                Payload::Pregnancy(pb::PregnancyStatus {
                    event_date: date(2026, 4, 31),
                    ..in_state(S::Delivered)
                }),
                fail("pregnancy.event_date", R::NotRealDate),
            ),
            (
                "event in the future",
                Payload::Pregnancy(pb::PregnancyStatus {
                    observed_on: date(2026, 6, 1),
                    event_date: date(2026, 6, 2),
                    ..in_state(S::PregnancyEnded)
                }),
                fail("pregnancy.event_date", R::InFuture),
            ),
            (
                "event after observation",
                Payload::Pregnancy(pb::PregnancyStatus {
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
            assert_eq!(payload.validate(&RULES, false), want, "{name}");
        }
    }

    #[test]
    fn invalid_contraception_payloads_name_the_field() {
        use PayloadReason as R;
        let cases: Vec<(&str, Payload, Result<(), PayloadError>)> = vec![
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
            assert_eq!(payload.validate(&RULES, false), want, "{name}");
        }
    }

    #[test]
    fn a_retraction_needs_supersedes() {
        assert_eq!(
            Payload::Retraction(Kind::Contraception).validate(&RULES, false),
            fail(
                "supersedes",
                PayloadReason::RequiredWhen {
                    condition: "payload is a retraction"
                }
            )
        );
    }

    #[test]
    fn retractions_of_unknown_kinds_and_missing_payloads_are_refused() {
        use pb::record_body::Payload as R;
        use pb::submission::Payload as Sub;
        let cases: &[(i32, PayloadReason)] = &[
            (0, PayloadReason::Unspecified),
            (3, PayloadReason::UnknownValue { value: 3 }),
            (-7, PayloadReason::UnknownValue { value: -7 }),
        ];
        for (kind, reason) in cases {
            let want = Err(PayloadError::new("retraction.kind", reason.clone()));
            let r = pb::Retraction { kind: *kind };
            assert_eq!(Payload::from_record(Some(R::Retraction(r))), want);
            assert_eq!(Payload::from_submission(Some(Sub::Retraction(r))), want);
        }
        let missing = Err(PayloadError::new("payload", PayloadReason::Missing));
        assert_eq!(Payload::from_record(None), missing);
        assert_eq!(Payload::from_submission(None), missing);
    }

    #[test]
    fn conversions_keep_the_payload_and_its_kind() {
        use pb::record_body::Payload as R;
        use pb::submission::Payload as Sub;
        let p = pregnant();
        let c = using(M::Iud);
        let cases = [
            (
                R::Pregnancy(p.clone()),
                Sub::Pregnancy(p),
                Kind::Pregnancy,
                false,
            ),
            (
                R::Contraception(c.clone()),
                Sub::Contraception(c),
                Kind::Contraception,
                false,
            ),
            (
                R::Retraction(pb::Retraction { kind: 2 }),
                Sub::Retraction(pb::Retraction { kind: 2 }),
                Kind::Contraception,
                true,
            ),
        ];
        for (record, submission, kind, retraction) in cases {
            let from_record = Payload::from_record(Some(record.clone())).expect("valid");
            let from_submission = Payload::from_submission(Some(submission)).expect("valid");
            assert_eq!(from_record, from_submission);
            assert_eq!(from_record.kind(), kind);
            assert_eq!(from_record.is_retraction(), retraction);
            assert_eq!(from_record.into_record(), record);
        }
    }

    #[test]
    fn observed_on_is_the_status_date() {
        assert_eq!(
            Payload::Pregnancy(pregnant()).observed_on(),
            NaiveDate::from_ymd_opt(2026, 3, 10)
        );
        assert_eq!(
            Payload::Contraception(using(M::None)).observed_on(),
            NaiveDate::from_ymd_opt(2026, 5, 31)
        );
        assert_eq!(preg(|p| p.observed_on = None).observed_on(), None);
        assert_eq!(Payload::Retraction(Kind::Pregnancy).observed_on(), None);
    }

    #[test]
    fn kinds_convert_to_and_from_the_wire() {
        for kind in Kind::ALL {
            let wire = pb::RecordKind::from(kind);
            assert_eq!(Kind::try_from(wire), Ok(kind));
            assert_eq!(Kind::try_from(i32::from(wire)), Ok(kind));
            assert_eq!(kind.to_string().parse::<Kind>(), Ok(kind));
        }
        assert_eq!(Kind::Pregnancy.to_string(), "pregnancy");
        assert_eq!(Kind::Contraception.to_string(), "contraception");
        assert_eq!(
            Kind::try_from(pb::RecordKind::Unspecified),
            Err(KindError::Unspecified)
        );
        assert_eq!(Kind::try_from(0), Err(KindError::Unspecified));
        assert_eq!(Kind::try_from(5), Err(KindError::Unknown { value: 5 }));
        assert_eq!(
            "Pregnancy".parse::<Kind>(),
            Err(KindError::UnknownName {
                name: "Pregnancy".into()
            })
        );
    }

    #[test]
    fn messages_name_the_field_and_follow_the_style() {
        let cases = [
            (
                preg(|p| p.expected_delivery = None),
                "`pregnancy.expected_delivery` is required when state is PREGNANT",
            ),
            (
                contra(M::Iud, |c| c.since = None),
                "`contraception.since` is required unless method is NONE",
            ),
            (
                preg(|p| p.service_point = "9901150042".into()),
                "`pregnancy.service_point` must start with a valid region code: region code \
                 starts with `99`, which is not a province code",
            ),
            (
                preg(|p| p.observed_on = date(2026, 2, 30)),
                "`pregnancy.observed_on` is not a real date",
            ),
        ];
        for (payload, want) in cases {
            let err = payload.validate(&RULES, false).expect_err("invalid");
            assert_eq!(err.to_string(), want);
            assert!(want.starts_with(&format!("`{}`", err.field())));
        }
        // No date values leak into messages.
        let err = preg(|p| p.observed_on = date(2026, 2, 30))
            .validate(&RULES, false)
            .expect_err("invalid");
        assert!(!err.to_string().contains("2026"));
    }

    #[test]
    fn skew_moves_the_latest_date() {
        let rules = ValidationRules {
            now_ms: NOW_MS,
            max_future_skew_ms: 86_400_000,
        };
        let p = preg(|p| p.observed_on = date(2026, 6, 2));
        assert_eq!(p.validate(&rules, false), Ok(()));
        assert!(p.validate(&RULES, false).is_err());
    }

    fn any_date() -> impl Strategy<Value = Option<pb::Date>> {
        proptest::option::of(
            (1990u32..2030, 0u32..14, 0u32..33).prop_map(|(year, month, day)| pb::Date {
                year,
                month,
                day,
            }),
        )
    }

    proptest! {
        #[test]
        fn validate_never_panics(
            state in -1i32..6,
            observed in any_date(),
            event in any_date(),
            due in proptest::option::of((0u32..3000, 0u32..14)),
            visits in 0u32..100,
            service_point in "[0-9a]{0,11}",
            method in -1i32..10,
            since in any_date(),
            skew in proptest::num::i64::ANY,
        ) {
            let rules = ValidationRules { now_ms: NOW_MS, max_future_skew_ms: skew };
            let p = Payload::Pregnancy(pb::PregnancyStatus {
                state,
                observed_on: observed,
                expected_delivery: due.map(|(year, month)| pb::YearMonth { year, month }),
                event_date: event,
                prenatal_visits: visits,
                service_point: service_point.clone(),
            });
            let c = Payload::Contraception(pb::ContraceptionStatus {
                method,
                since,
                observed_on: observed,
                service_point,
            });
            for payload in [p, c] {
                if let Err(e) = payload.validate(&rules, false) {
                    prop_assert!(e.field().starts_with(payload.kind().as_str()));
                }
            }
        }
    }
}
