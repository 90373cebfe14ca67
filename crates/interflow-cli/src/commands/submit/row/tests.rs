//! Unit tests of row parsing: every kind of bad row names its column, code and reason.

use super::*;

const NOW: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z
pub(crate) const RULES: ValidationRules = ValidationRules {
    now_ms: NOW,
    max_future_skew_ms: FUTURE_SKEW_MS,
};
/// The published GB 11643 sample number (synthetic).
const ID: &str = "11010519491231002X";

fn preg(extra: &[(&'static str, &'static str)]) -> Fields {
    let mut f = Fields::from_pairs([
        ("idempotency_key", "k-1"),
        ("destination", "110105"),
        ("national_id", ID),
        ("kind", "pregnancy"),
        ("state", "pregnant"),
        ("observed_on", "2026-03-10"),
        ("expected_delivery", "2026-10"),
        ("prenatal_visits", "2"),
        ("service_point", "3101150042"),
    ]);
    for (k, v) in extra {
        f.0.insert((*k).to_owned(), (*v).to_owned());
    }
    f
}

fn contra(extra: &[(&'static str, &'static str)]) -> Fields {
    let mut f = Fields::from_pairs([
        ("idempotency_key", "k-2"),
        ("destination", "110105"),
        ("national_id", "11010519491231002x"),
        ("kind", "contraception"),
        ("method", "iud"),
        ("since", "2024-05-20"),
        ("observed_on", "2026-05-31"),
        ("service_point", "3101150042"),
    ]);
    for (k, v) in extra {
        f.0.insert((*k).to_owned(), (*v).to_owned());
    }
    f
}

fn fails(f: &Fields) -> (String, String, String) {
    let e = parse_row(7, f, &RULES).unwrap_err();
    assert_eq!(e.row, 7);
    (e.field, e.code, e.reason)
}

#[test]
fn good_rows_become_submissions() {
    let s = parse_row(2, &preg(&[]), &RULES).unwrap();
    assert_eq!(s.idempotency_key, "k-1");
    assert_eq!(s.destination, "110105");
    assert_eq!(s.national_id, ID);
    assert!(s.supersedes.is_empty());
    let Some(pb::submission::Payload::Pregnancy(p)) = s.payload else {
        panic!("not a pregnancy payload");
    };
    assert_eq!(p.state, pb::PregnancyState::Pregnant as i32);
    assert_eq!(
        p.expected_delivery,
        Some(pb::YearMonth {
            year: 2026,
            month: 10
        })
    );
    assert_eq!(p.prenatal_visits, 2);

    // Lower-case check character is normalized.
    let s = parse_row(3, &contra(&[]), &RULES).unwrap();
    assert_eq!(s.national_id, ID);
    let Some(pb::submission::Payload::Contraception(c)) = s.payload else {
        panic!("not a contraception payload");
    };
    assert_eq!(c.method, pb::ContraceptiveMethod::Iud as i32);
    assert_eq!(
        c.since,
        Some(pb::Date {
            year: 2024,
            month: 5,
            day: 20
        })
    );

    let none = contra(&[("method", "none"), ("since", "")]);
    assert!(parse_row(4, &none, &RULES).is_ok());

    let delivered = preg(&[
        ("state", "delivered"),
        ("expected_delivery", ""),
        ("event_date", "2026-03-01"),
    ]);
    assert!(parse_row(5, &delivered, &RULES).is_ok());

    let id = "ab".repeat(32);
    let retraction = Fields(
        [
            ("idempotency_key", "k-3"),
            ("destination", "110105"),
            ("national_id", ID),
            ("kind", "retraction"),
            ("retracted_kind", "pregnancy"),
            ("supersedes", id.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let s = parse_row(6, &retraction, &RULES).unwrap();
    assert_eq!(s.supersedes, vec![0xab; 32]);
    assert_eq!(
        s.payload,
        Some(pb::submission::Payload::Retraction(pb::Retraction {
            kind: pb::RecordKind::PregnancyStatus as i32
        }))
    );
}

#[test]
fn each_kind_of_bad_row_names_its_field() {
    let cases: Vec<(Fields, &str, &str, &str)> = vec![
        (
            preg(&[("idempotency_key", "")]),
            "idempotency_key",
            "invalid_idempotency_key",
            "is missing",
        ),
        (
            preg(&[("idempotency_key", "has space")]),
            "idempotency_key",
            "invalid_idempotency_key",
            "printable ASCII",
        ),
        (
            preg(&[("destination", "")]),
            "destination",
            "invalid_destination",
            "is missing",
        ),
        (
            preg(&[("destination", "990000")]),
            "destination",
            "invalid_destination",
            "province",
        ),
        (
            preg(&[("national_id", "110105194912310021")]),
            "national_id",
            "invalid_national_id",
            "check character",
        ),
        (
            preg(&[("national_id", "1101051949")]),
            "national_id",
            "invalid_national_id",
            "18 characters",
        ),
        (
            preg(&[("kind", "")]),
            "kind",
            "invalid_payload",
            "is missing",
        ),
        (
            preg(&[("kind", "birth")]),
            "kind",
            "invalid_payload",
            "pregnancy, contraception, residence or retraction",
        ),
        (
            preg(&[("state", "expecting")]),
            "state",
            "invalid_payload",
            "must be not_pregnant",
        ),
        (
            preg(&[("method", "iud")]),
            "method",
            "invalid_payload",
            "does not apply to kind `pregnancy`",
        ),
        (
            preg(&[("observed_on", "10/03/2026")]),
            "observed_on",
            "invalid_payload",
            "YYYY-MM-DD",
        ),
        (
            preg(&[("observed_on", "2026-02-30")]),
            "observed_on",
            "invalid_payload",
            "not a real date",
        ),
        (
            preg(&[("observed_on", "2027-01-01")]),
            "observed_on",
            "invalid_payload",
            "in the future",
        ),
        (
            preg(&[("observed_on", "")]),
            "observed_on",
            "invalid_payload",
            "is required",
        ),
        (
            preg(&[("expected_delivery", "2026-13")]),
            "expected_delivery",
            "invalid_payload",
            "not a real month",
        ),
        (
            preg(&[("expected_delivery", "")]),
            "expected_delivery",
            "invalid_payload",
            "required when state is PREGNANT",
        ),
        (
            preg(&[("prenatal_visits", "two")]),
            "prenatal_visits",
            "invalid_payload",
            "whole number",
        ),
        (
            preg(&[("prenatal_visits", "51")]),
            "prenatal_visits",
            "invalid_payload",
            "at most",
        ),
        (
            preg(&[("service_point", "31011500")]),
            "service_point",
            "invalid_payload",
            "10 digits",
        ),
        (
            preg(&[("service_point", "")]),
            "service_point",
            "invalid_payload",
            "is missing",
        ),
        (
            preg(&[("supersedes", "abc")]),
            "supersedes",
            "invalid_supersedes",
            "64 hex digits",
        ),
        (
            contra(&[("method", "")]),
            "method",
            "invalid_payload",
            "is missing",
        ),
        (
            contra(&[("method", "pill")]),
            "method",
            "invalid_payload",
            "oral_pill",
        ),
        (
            contra(&[("since", "")]),
            "since",
            "invalid_payload",
            "required unless method is NONE",
        ),
        (
            contra(&[("since", "2026-06-01"), ("observed_on", "2026-05-01")]),
            "since",
            "invalid_payload",
            "after `observed_on`",
        ),
        (
            contra(&[("state", "pregnant")]),
            "state",
            "invalid_payload",
            "does not apply to kind `contraception`",
        ),
        (
            contra(&[
                ("kind", "retraction"),
                ("method", ""),
                ("since", ""),
                ("observed_on", ""),
                ("service_point", ""),
            ]),
            "retracted_kind",
            "invalid_payload",
            "is required for a retraction",
        ),
        (
            contra(&[
                ("kind", "retraction"),
                ("method", ""),
                ("since", ""),
                ("observed_on", ""),
                ("service_point", ""),
                ("retracted_kind", "contraception"),
            ]),
            "supersedes",
            "invalid_payload",
            "id of the record it withdraws",
        ),
    ];
    for (f, field, code, reason) in cases {
        let (got_field, got_code, got_reason) = fails(&f);
        assert_eq!(
            (got_field.as_str(), got_code.as_str()),
            (field, code),
            "{f:?}: {got_reason}"
        );
        assert!(got_reason.contains(reason), "{field}: {got_reason}");
    }
}

#[test]
fn reasons_never_echo_the_national_id_or_dates() {
    for f in [
        preg(&[("national_id", "110105194912310021")]),
        preg(&[("observed_on", "2027-01-01")]),
        preg(&[("observed_on", "2026-02-30")]),
    ] {
        let (_, _, reason) = fails(&f);
        assert!(
            !reason.contains("1101051949") && !reason.contains("2027") && !reason.contains("02-30"),
            "{reason}"
        );
    }
}

#[test]
fn node_field_paths_map_to_columns() {
    assert_eq!(
        column_of("pregnancy.expected_delivery"),
        "expected_delivery"
    );
    assert_eq!(column_of("retraction.kind"), "retracted_kind");
    assert_eq!(column_of("destination"), "destination");
    assert_eq!(column_of("payload"), "kind");
}

#[test]
fn residence_rows_are_an_event_and_a_month() {
    let row = |extra: &[(&'static str, &'static str)]| {
        let mut f = Fields::from_pairs([
            ("idempotency_key", "k-3"),
            ("destination", "110105"),
            ("national_id", ID),
            ("kind", "residence"),
            ("event", "arrived"),
            ("month", "2026-05"),
        ]);
        for (k, v) in extra {
            f.0.insert((*k).to_owned(), (*v).to_owned());
        }
        f
    };
    let s = parse_row(2, &row(&[]), &RULES).unwrap();
    let Some(pb::submission::Payload::Residence(r)) = s.payload else {
        panic!("not a residence notice: {:?}", s.payload)
    };
    assert_eq!(r.event, pb::ResidenceEvent::Arrived as i32);
    assert_eq!(
        r.month,
        Some(pb::YearMonth {
            year: 2026,
            month: 5
        })
    );
    type Extra = &'static [(&'static str, &'static str)];
    let cases: &[(Extra, &str, &str)] = &[
        (&[("event", "")], "event", "is missing"),
        (
            &[("event", "moved")],
            "event",
            "must be arrived or departed",
        ),
        (
            &[("month", "2026-5")],
            "month",
            "must be a month as YYYY-MM",
        ),
        (&[("month", "2026-08")], "month", "is in the future"),
        (
            &[("method", "iud")],
            "method",
            "does not apply to kind `residence`; leave it empty",
        ),
    ];
    for (extra, field, reason) in cases {
        let (f, code, r) = fails(&row(extra));
        assert_eq!(
            (f.as_str(), code.as_str(), r.as_str()),
            (*field, "invalid_payload", *reason)
        );
    }
}
