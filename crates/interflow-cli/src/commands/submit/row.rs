//! One row of a submission file: its fields by column, and the checks that turn it into a
//! `Submission` or a [`RowError`] naming the row, the column and the reason.
//!
//! The checks are the node's own (core's payload rules, [`IdempotencyKey`], [`NationalId`],
//! [`RegionCode`]), run here first so most mistakes are reported without a round trip.
//! Reasons never echo field values: national IDs and dates are personal data. Nothing here
//! reads files or talks to a node.

use std::collections::BTreeMap;

use chrono::format::ParseErrorKind;
use chrono::{Datelike as _, NaiveDate};
use interflow_core::idempotency::{IdempotencyKey, IdempotencyKeyError};
use interflow_core::payload::{ContraceptionMethod, Payload, PregnancyState, ValidationRules};
use interflow_core::record::RecordId;
use interflow_core::{NationalId, RegionCode, pb};
use serde::Serialize;

use crate::names;

/// Every column a submission file may have, in the documented order.
pub const COLUMNS: [&str; 16] = [
    "idempotency_key",
    "destination",
    "national_id",
    "kind",
    "state",
    "method",
    "observed_on",
    "expected_delivery",
    "event_date",
    "since",
    "prenatal_visits",
    "service_point",
    "supersedes",
    "retracted_kind",
    "event",
    "month",
];

/// Columns a CSV header must have.
pub const REQUIRED_COLUMNS: [&str; 4] = ["idempotency_key", "destination", "national_id", "kind"];

/// The fields of one input row, by column name; absent columns read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub(super) BTreeMap<String, String>);

impl Fields {
    pub fn get(&self, column: &str) -> &str {
        self.0.get(column).map_or("", |s| s.trim())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fields {
        Fields(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

/// Why a row was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Line number in the input file (the CSV header is line 1).
    pub row: u64,
    pub idempotency_key: String,
    /// The column at fault; empty when the row as a whole is unreadable.
    pub field: String,
    /// `invalid_national_id`, `invalid_payload`, ... as the node's codes, plus the local
    /// `unreadable_row` and `duplicate_key_in_file`.
    pub code: String,
    pub reason: String,
}

pub(super) fn row_error(
    row: u64,
    key: &str,
    field: &str,
    code: &str,
    reason: impl Into<String>,
) -> RowError {
    RowError {
        row,
        idempotency_key: key.to_owned(),
        field: field.to_owned(),
        code: code.to_owned(),
        reason: reason.into(),
    }
}

/// The column a payload field path such as `pregnancy.expected_delivery` comes from.
pub fn column_of(field: &str) -> String {
    match field {
        "retraction.kind" => "retracted_kind".into(),
        "payload" => "kind".into(),
        f => f.rsplit('.').next().unwrap_or(f).to_owned(),
    }
}

/// Clock skew allowed when checking that dates are not in the future, as the node's default.
pub const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// `YYYY-MM-DD`, exactly. chrono reads it; the length check refuses the shorter forms it would
/// also take (`2026-3-1`).
fn parse_date(s: &str) -> Result<pb::Date, &'static str> {
    const SHAPE: &str = "must be a date as YYYY-MM-DD";
    if s.len() != 10 {
        return Err(SHAPE);
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| match e.kind() {
        ParseErrorKind::OutOfRange => "is not a real date",
        _ => SHAPE,
    })?;
    Ok(pb::Date {
        year: u32::try_from(d.year()).map_err(|_| SHAPE)?,
        month: d.month(),
        day: d.day(),
    })
}

/// `YYYY-MM`, exactly: read as the first day of that month.
fn parse_month(s: &str) -> Result<pb::YearMonth, &'static str> {
    const SHAPE: &str = "must be a month as YYYY-MM";
    if s.len() != 7 {
        return Err(SHAPE);
    }
    let d =
        NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").map_err(|e| match e.kind() {
            ParseErrorKind::OutOfRange => "is not a real month",
            _ => SHAPE,
        })?;
    match u32::try_from(d.year()) {
        Ok(0) => Err("is not a real month"),
        Ok(year) => Ok(pb::YearMonth {
            year,
            month: d.month(),
        }),
        Err(_) => Err(SHAPE),
    }
}

/// Columns used by each kind; any other payload column must be empty.
const PREGNANCY_COLUMNS: [&str; 6] = [
    "state",
    "observed_on",
    "expected_delivery",
    "event_date",
    "prenatal_visits",
    "service_point",
];
const CONTRACEPTION_COLUMNS: [&str; 4] = ["method", "since", "observed_on", "service_point"];
const RETRACTION_COLUMNS: [&str; 1] = ["retracted_kind"];
const RESIDENCE_COLUMNS: [&str; 2] = ["event", "month"];
/// The payload columns: every column but the envelope (the required ones and `supersedes`).
fn payload_columns() -> impl Iterator<Item = &'static str> {
    COLUMNS
        .into_iter()
        .filter(|c| !REQUIRED_COLUMNS.contains(c) && *c != "supersedes")
}

/// Parses and checks one row into a submission. `rules.now_ms` is this machine's clock.
pub fn parse_row(
    row: u64,
    f: &Fields,
    rules: &ValidationRules,
) -> Result<pb::Submission, RowError> {
    let key = f.get("idempotency_key");
    let err = |field: &str, code: &str, reason: &str| row_error(row, key, field, code, reason);
    let idempotency_key = IdempotencyKey::parse(key).map_err(|e| {
        let reason = match e {
            IdempotencyKeyError::Empty => {
                "is missing: every row needs its own key, which is what makes a rerun safe"
            }
            _ => IdempotencyKey::RULE,
        };
        err("idempotency_key", "invalid_idempotency_key", reason)
    })?;

    let destination = f.get("destination");
    if destination.is_empty() {
        return Err(err("destination", "invalid_destination", "is missing"));
    }
    let destination: RegionCode =
        destination
            .parse()
            .map_err(|e: interflow_core::region::RegionCodeError| {
                err("destination", "invalid_destination", &e.to_string())
            })?;

    let national_id = f.get("national_id");
    if national_id.is_empty() {
        return Err(err("national_id", "invalid_national_id", "is missing"));
    }
    let today = interflow_core::time::latest_permitted_date(rules.now_ms, 0);
    let id = NationalId::parse(national_id, today)
        .map_err(|e| err("national_id", "invalid_national_id", &e.to_string()))?;

    let supersedes = match f.get("supersedes") {
        "" => None,
        s => Some(RecordId::from_hex(s).map_err(|e| {
            err(
                "supersedes",
                "invalid_supersedes",
                &format!("{e}; give the record id as 64 hex digits, or leave it empty"),
            )
        })?),
    };

    let kind = f.get("kind");
    let allowed: &[&str] = match kind {
        "pregnancy" => &PREGNANCY_COLUMNS,
        "contraception" => &CONTRACEPTION_COLUMNS,
        "retraction" => &RETRACTION_COLUMNS,
        "residence" => &RESIDENCE_COLUMNS,
        "" => return Err(err("kind", "invalid_payload", "is missing")),
        _ => {
            return Err(err(
                "kind",
                "invalid_payload",
                "must be pregnancy, contraception, residence or retraction",
            ));
        }
    };
    for column in payload_columns() {
        if !allowed.contains(&column) && !f.get(column).is_empty() {
            return Err(err(
                column,
                "invalid_payload",
                &format!("does not apply to kind `{kind}`; leave it empty"),
            ));
        }
    }
    let date = |column: &str| -> Result<Option<pb::Date>, RowError> {
        match f.get(column) {
            "" => Ok(None),
            s => parse_date(s)
                .map(Some)
                .map_err(|r| err(column, "invalid_payload", r)),
        }
    };
    let text_or_missing = |column: &str| -> Result<String, RowError> {
        match f.get(column) {
            "" => Err(err(column, "invalid_payload", "is missing")),
            s => Ok(s.to_owned()),
        }
    };
    use pb::submission::Payload as P;
    let payload = match kind {
        "pregnancy" => {
            let state = match f.get("state") {
                "" => return Err(err("state", "invalid_payload", "is missing")),
                s => names::state_of(s).ok_or_else(|| {
                    err(
                        "state",
                        "invalid_payload",
                        &must_be(&PregnancyState::ALL.map(PregnancyState::as_str)),
                    )
                })?,
            };
            let expected_delivery = match f.get("expected_delivery") {
                "" => None,
                s => Some(
                    parse_month(s).map_err(|r| err("expected_delivery", "invalid_payload", r))?,
                ),
            };
            let prenatal_visits = match f.get("prenatal_visits") {
                "" => 0,
                s => s.parse::<u32>().map_err(|_| {
                    err(
                        "prenatal_visits",
                        "invalid_payload",
                        "must be a whole number of visits",
                    )
                })?,
            };
            P::Pregnancy(pb::PregnancyStatus {
                state: state as i32,
                observed_on: date("observed_on")?,
                expected_delivery,
                event_date: date("event_date")?,
                prenatal_visits,
                service_point: text_or_missing("service_point")?,
            })
        }
        "contraception" => {
            let method = match f.get("method") {
                "" => return Err(err("method", "invalid_payload", "is missing")),
                s => names::method_of(s).ok_or_else(|| {
                    err(
                        "method",
                        "invalid_payload",
                        &must_be(&ContraceptionMethod::ALL.map(ContraceptionMethod::as_str)),
                    )
                })?,
            };
            P::Contraception(pb::ContraceptionStatus {
                method: method as i32,
                since: date("since")?,
                observed_on: date("observed_on")?,
                service_point: text_or_missing("service_point")?,
            })
        }
        "residence" => {
            let event = match f.get("event") {
                "arrived" => pb::ResidenceEvent::Arrived,
                "departed" => pb::ResidenceEvent::Departed,
                "" => return Err(err("event", "invalid_payload", "is missing")),
                _ => {
                    return Err(err(
                        "event",
                        "invalid_payload",
                        "must be arrived or departed",
                    ));
                }
            };
            let month = match f.get("month") {
                "" => return Err(err("month", "invalid_payload", "is missing")),
                s => parse_month(s).map_err(|r| err("month", "invalid_payload", r))?,
            };
            P::Residence(pb::ResidenceNotice {
                event: event as i32,
                month: Some(month),
            })
        }
        _ => {
            let retracted = match f.get("retracted_kind") {
                "" => {
                    return Err(err(
                        "retracted_kind",
                        "invalid_payload",
                        "is required for a retraction: the kind of the record it withdraws (pregnancy, contraception or residence)",
                    ));
                }
                s => names::kind_of(s).ok_or_else(|| {
                    err(
                        "retracted_kind",
                        "invalid_payload",
                        "must be pregnancy, contraception or residence",
                    )
                })?,
            };
            if supersedes.is_none() {
                return Err(err(
                    "supersedes",
                    "invalid_payload",
                    "is required for a retraction: the id of the record it withdraws",
                ));
            }
            P::Retraction(pb::Retraction {
                kind: retracted as i32,
            })
        }
    };
    // The node's own payload rules, so the report names the same field and reason.
    Payload::from_submission(Some(payload.clone()))
        .and_then(|p| p.validate(rules, supersedes.is_some()))
        .map_err(|e| {
            err(
                &column_of(e.field()),
                "invalid_payload",
                &e.reason().to_string(),
            )
        })?;
    Ok(pb::Submission {
        idempotency_key: idempotency_key.into_string(),
        destination: destination.to_string(),
        national_id: id.normalized().to_owned(),
        supersedes: supersedes.map(|r| r.0.to_vec()).unwrap_or_default(),
        payload: Some(payload),
    })
}

/// "must be a, b or c", from core's names.
fn must_be(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => format!("must be {last}"),
        Some((last, rest)) => format!("must be {} or {last}", rest.join(", ")),
        None => "must be empty".to_owned(),
    }
}

#[cfg(test)]
pub(super) mod tests;
