//! Shared helpers for the payload tests (wire payloads built from a valid one) and the tests of
//! the payload as a whole; the per-field tables live beside each status type.

use super::*;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use prost::Message;

pub(super) use crate::region::RegionCodeError;
pub(super) use pb::record_body::Payload as W;
pub(super) use pb::{ContraceptiveMethod as M, PregnancyState as S};

/// 2026-06-01T00:00:00Z.
const NOW_MS: i64 = 1_780_272_000_000;

pub(super) const RULES: ValidationRules = ValidationRules {
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

pub(super) fn date(year: u32, month: u32, day: u32) -> Option<pb::Date> {
    Some(pb::Date { year, month, day })
}

pub(super) fn month(year: u32, month: u32) -> Option<pb::YearMonth> {
    Some(pb::YearMonth { year, month })
}

pub(super) fn pregnant() -> pb::PregnancyStatus {
    pb::PregnancyStatus {
        state: S::Pregnant.into(),
        observed_on: date(2026, 3, 10),
        expected_delivery: month(2026, 10),
        event_date: None,
        prenatal_visits: 2,
        service_point: "3101150042".into(),
    }
}

pub(super) fn in_state(state: S) -> pb::PregnancyStatus {
    let mut p = pregnant();
    p.state = state.into();
    p.expected_delivery = None;
    if matches!(state, S::Delivered | S::PregnancyEnded) {
        p.event_date = date(2026, 3, 1);
    }
    p
}

pub(super) fn using(method: M) -> pb::ContraceptionStatus {
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

pub(super) fn preg(f: impl FnOnce(&mut pb::PregnancyStatus)) -> W {
    let mut p = pregnant();
    f(&mut p);
    W::Pregnancy(p)
}

pub(super) fn contra(method: M, f: impl FnOnce(&mut pb::ContraceptionStatus)) -> W {
    let mut c = using(method);
    f(&mut c);
    W::Contraception(c)
}

pub(super) fn retract(kind: Kind) -> W {
    W::Retraction(retraction(kind))
}

/// What intake and acceptance do: parse the wire payload, then check it against the clock.
pub(super) fn check(payload: W, supersedes: bool) -> Result<(), PayloadError> {
    check_at(payload, &RULES, supersedes)
}

fn check_at(payload: W, rules: &ValidationRules, supersedes: bool) -> Result<(), PayloadError> {
    Payload::try_from(payload)?.validate(rules, supersedes)
}

fn parsed(payload: W) -> Payload {
    Payload::try_from(payload).expect("valid payload")
}

pub(super) fn fail(field: &'static str, reason: PayloadReason) -> Result<(), PayloadError> {
    Err(PayloadError::new(field, reason))
}

#[test]
fn valid_payloads_pass() {
    let mut cases: Vec<(&str, W, bool)> = vec![
        ("pregnant", W::Pregnancy(pregnant()), false),
        ("pregnant, correction", W::Pregnancy(pregnant()), true),
        (
            "not pregnant",
            W::Pregnancy(in_state(S::NotPregnant)),
            false,
        ),
        ("delivered", W::Pregnancy(in_state(S::Delivered)), false),
        ("ended", W::Pregnancy(in_state(S::PregnancyEnded)), false),
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
            W::Pregnancy(pb::PregnancyStatus {
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
        ("retraction", retract(Kind::Pregnancy), true),
        ("retraction", retract(Kind::Contraception), true),
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
        cases.push((method.as_str_name(), W::Contraception(using(method)), false));
    }
    for (name, payload, supersedes) in cases {
        assert_eq!(check(payload, supersedes), Ok(()), "{name}");
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
        (4, PayloadReason::UnknownValue { value: 4 }),
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
        assert_eq!(R::from(&from_record), record);
        assert_eq!(Sub::from(&from_record), Sub::from(&from_submission));
    }
}

#[test]
fn observed_on_is_the_status_date() {
    assert_eq!(
        parsed(W::Pregnancy(pregnant())).observed_on(),
        NaiveDate::from_ymd_opt(2026, 3, 10)
    );
    assert_eq!(
        parsed(W::Contraception(using(M::None))).observed_on(),
        NaiveDate::from_ymd_opt(2026, 5, 31)
    );
    // A status without a real `observed_on` is refused when it is parsed, so it never
    // reaches `observed_on()`.
    assert_eq!(
        Payload::try_from(preg(|p| p.observed_on = None)),
        Err(PayloadError::new(
            "pregnancy.observed_on",
            PayloadReason::Missing
        ))
    );
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
        let err = check(payload, false).expect_err("invalid");
        assert_eq!(err.to_string(), want);
        assert!(want.starts_with(&format!("`{}`", err.field())));
    }
    // No date values leak into messages.
    let err = check(preg(|p| p.observed_on = date(2026, 2, 30)), false).expect_err("invalid");
    assert!(!err.to_string().contains("2026"));
}

#[test]
fn skew_moves_the_latest_date() {
    let rules = ValidationRules {
        now_ms: NOW_MS,
        max_future_skew_ms: 86_400_000,
    };
    let p = preg(|p| p.observed_on = date(2026, 6, 2));
    assert_eq!(check_at(p.clone(), &rules, false), Ok(()));
    assert!(check(p, false).is_err());
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
        let p = W::Pregnancy(pb::PregnancyStatus {
            state,
            observed_on: observed,
            expected_delivery: due.map(|(year, month)| pb::YearMonth { year, month }),
            event_date: event,
            prenatal_visits: visits,
            service_point: service_point.clone(),
        });
        let c = W::Contraception(pb::ContraceptionStatus {
            method,
            since,
            observed_on: observed,
            service_point,
        });
        for (payload, kind) in [(p, Kind::Pregnancy), (c, Kind::Contraception)] {
            if let Err(e) = check_at(payload, &rules, false) {
                prop_assert!(e.field().starts_with(kind.as_str()));
            }
        }
    }
}

#[test]
fn enum_names_round_trip_and_match_the_wire() {
    for s in PregnancyState::ALL {
        assert_eq!(s.as_str().parse::<PregnancyState>(), Ok(s));
        assert_eq!(s.to_string(), s.as_str());
        let wire = pb::PregnancyState::from(s);
        assert_eq!(
            wire.as_str_name(),
            format!("PREGNANCY_STATE_{}", s.as_str().to_uppercase())
        );
    }
    for m in ContraceptionMethod::ALL {
        assert_eq!(m.as_str().parse::<ContraceptionMethod>(), Ok(m));
        assert_eq!(m.to_string(), m.as_str());
        let wire = pb::ContraceptiveMethod::from(m);
        assert_eq!(
            wire.as_str_name(),
            format!("CONTRACEPTIVE_METHOD_{}", m.as_str().to_uppercase())
        );
    }
    let err = "IUD".parse::<ContraceptionMethod>().expect_err("unknown");
    assert!(
        err.to_string()
            .starts_with("contraceptive method `IUD` is unknown")
    );
    assert!(err.to_string().contains("`oral_pill`"));
    assert!("pregnancy-ended".parse::<PregnancyState>().is_err());
}

#[test]
fn checked_fields_expose_typed_values() {
    let Payload::Pregnancy(p) = parsed(W::Pregnancy(pregnant())) else {
        panic!("not a pregnancy");
    };
    assert_eq!(p.state(), PregnancyState::Pregnant);
    assert_eq!(p.expected_delivery(), YearMonth::new(2026, 10));
    assert_eq!(
        p.expected_delivery().map(|m| m.to_string()).as_deref(),
        Some("2026-10")
    );
    assert_eq!(p.event_date(), None);
    assert_eq!(p.prenatal_visits(), 2);
    assert_eq!(p.service_point().as_str(), "3101150042");
    assert_eq!(p.service_point().region().as_str(), "310115");
    let Payload::Contraception(c) = parsed(W::Contraception(using(M::Iud))) else {
        panic!("not a contraception status");
    };
    assert_eq!(c.method(), ContraceptionMethod::Iud);
    assert_eq!(c.since(), NaiveDate::from_ymd_opt(2024, 5, 20));
    assert_eq!(
        ServicePoint::parse("4403050007").map(|s| s.region().as_str().to_owned()),
        Ok("440305".to_owned())
    );
}

fn any_wire() -> impl Strategy<Value = W> {
    let pregnancy = (
        0i32..6,
        any_date(),
        any_date(),
        proptest::option::of((2020u32..2030, 0u32..14)),
        0u32..60,
        prop_oneof![Just("3101150042".to_owned()), "[0-9a]{9,11}"],
    )
        .prop_map(
            |(state, observed_on, event_date, due, prenatal_visits, service_point)| {
                W::Pregnancy(pb::PregnancyStatus {
                    state,
                    observed_on,
                    expected_delivery: due.map(|(year, month)| pb::YearMonth { year, month }),
                    event_date,
                    prenatal_visits,
                    service_point,
                })
            },
        );
    let contraception =
        (0i32..10, any_date(), any_date()).prop_map(|(method, since, observed_on)| {
            W::Contraception(pb::ContraceptionStatus {
                method,
                since,
                observed_on,
                service_point: "4403050007".into(),
            })
        });
    let retraction = (-1i32..4).prop_map(|kind| W::Retraction(pb::Retraction { kind }));
    prop_oneof![pregnancy, contraception, retraction]
}

proptest! {
    /// Sealing encodes the checked payload: for anything the wire may carry and parsing
    /// accepts, that must be the very message, and so the very bytes, that came in.
    #[test]
    fn an_accepted_wire_payload_converts_back_to_the_same_bytes(wire in any_wire()) {
        if let Ok(payload) = Payload::try_from(wire.clone()) {
            let back = W::from(&payload);
            prop_assert_eq!(&back, &wire);
            let body = |p: W| pb::RecordBody { payload: Some(p), ..Default::default() };
            prop_assert_eq!(body(back).encode_to_vec(), body(wire).encode_to_vec());
        }
    }
}

/// The order of dates is checked after the clock: a date in the future is reported as such,
/// as intake and the CLI's report always did, not as out of order with `observed_on`.
#[test]
fn a_date_in_the_future_is_reported_before_its_order() {
    let cases = [
        (
            preg(|p| p.observed_on = date(2027, 1, 1)),
            fail("pregnancy.observed_on", PayloadReason::InFuture),
        ),
        (
            contra(M::Iud, |c| {
                c.observed_on = date(2026, 6, 1);
                c.since = date(2026, 7, 1);
            }),
            fail("contraception.since", PayloadReason::InFuture),
        ),
    ];
    for (payload, want) in cases {
        assert!(Payload::try_from(payload.clone()).is_ok());
        assert_eq!(check(payload, false), want);
    }
}

#[test]
fn coarse_dates_keep_the_month_and_the_order_of_the_dates() {
    let p = pb::ContraceptionStatus {
        method: pb::ContraceptiveMethod::Iud as i32,
        since: date(2026, 5, 20),
        observed_on: date(2026, 5, 28),
        service_point: "3101150001".into(),
    };
    let mut payload = Payload::try_from(pb::submission::Payload::Contraception(p)).unwrap();
    assert!(!payload.dates_in_months());
    payload.coarsen_dates();
    assert!(payload.dates_in_months());
    let Payload::Contraception(c) = &payload else {
        panic!("kind changed")
    };
    assert_eq!(c.observed_on().to_string(), "2026-05-01");
    assert_eq!(
        c.since().map(|d| d.to_string()).as_deref(),
        Some("2026-05-01")
    );
    assert_eq!(payload.validate(&RULES, false), Ok(()));
}

#[test]
fn residence_notices_are_an_event_and_a_month_not_in_the_future() {
    use pb::record_body::Payload as R;
    let month = |year, month| Some(pb::YearMonth { year, month });
    let notice = pb::ResidenceNotice {
        event: pb::ResidenceEvent::Arrived as i32,
        month: month(2026, 3),
    };
    let p = Payload::from_record(Some(R::Residence(notice))).unwrap();
    assert_eq!(p.kind(), Kind::Residence);
    assert_eq!(R::from(&p), R::Residence(notice));
    let rules = ValidationRules {
        now_ms: 1_775_000_000_000, // 2026-03-31
        max_future_skew_ms: 0,
    };
    assert_eq!(p.validate(&rules, false), Ok(()));
    let later = pb::ResidenceNotice {
        month: month(2026, 5),
        ..notice
    };
    let p = Payload::from_record(Some(R::Residence(later))).unwrap();
    assert_eq!(
        p.validate(&rules, false),
        Err(PayloadError::new(
            "residence.month",
            PayloadReason::InFuture
        ))
    );
    let unspecified = pb::ResidenceNotice { event: 0, ..notice };
    assert_eq!(
        Payload::from_record(Some(R::Residence(unspecified))),
        Err(PayloadError::new(
            "residence.event",
            PayloadReason::Unspecified
        ))
    );
    let bad_month = pb::ResidenceNotice {
        month: month(2026, 13),
        ..notice
    };
    assert_eq!(
        Payload::from_record(Some(R::Residence(bad_month))),
        Err(PayloadError::new(
            "residence.month",
            PayloadReason::NotRealMonth
        ))
    );
}
