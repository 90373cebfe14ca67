//! The field types payloads share: the service point code, the expected delivery month, and
//! the wire-date conversions with their field-precise errors. Each is checked when it is built,
//! so holding one means it is well formed; none of them knows the clock.

use std::fmt;

use chrono::{Datelike, NaiveDate};

use super::error::{PayloadError, PayloadReason, date_error};
use crate::pb;
use crate::region::RegionCode;
use crate::time::{self, DateError};

const SERVICE_POINT_LEN: usize = 10;

/// A facility's service point code: its 6-digit region code followed by a 4-digit facility
/// number, e.g. `3101150042`. `Debug` shows it: it names a facility, not a person, but like
/// every payload field it stays out of logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePoint {
    code: String,
    region: RegionCode,
}

impl ServicePoint {
    /// Exactly ten ASCII digits whose first six are a region code. The reason never holds the
    /// text itself.
    pub fn parse(s: &str) -> Result<Self, PayloadReason> {
        let region = Self::region_of(s)?;
        Ok(ServicePoint {
            code: s.to_owned(),
            region,
        })
    }

    fn region_of(s: &str) -> Result<RegionCode, PayloadReason> {
        let len = s.chars().count();
        if len != SERVICE_POINT_LEN {
            return Err(PayloadReason::WrongLength { len });
        }
        if let Some(i) = s.chars().position(|c| !c.is_ascii_digit()) {
            return Err(PayloadReason::NonDigit { position: i + 1 });
        }
        // All ten characters are ASCII, so byte 6 is a character boundary.
        RegionCode::parse(s.get(..6).unwrap_or_default()).map_err(PayloadReason::BadRegion)
    }

    pub fn as_str(&self) -> &str {
        &self.code
    }

    /// The region the facility is in.
    pub fn region(&self) -> RegionCode {
        self.region
    }

    /// As [`ServicePoint::parse`], with the error naming `field`.
    pub(super) fn field(field: &'static str, code: String) -> Result<Self, PayloadError> {
        match Self::region_of(&code) {
            Ok(region) => Ok(ServicePoint { code, region }),
            Err(reason) => Err(PayloadError::new(field, reason)),
        }
    }
}

/// A calendar month, e.g. the expected delivery month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth(
    /// The first day of the month.
    NaiveDate,
);

impl YearMonth {
    pub fn new(year: i32, month: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, 1).map(YearMonth)
    }

    /// The month `date` falls in.
    pub fn of(date: NaiveDate) -> Self {
        YearMonth(date.with_day(1).unwrap_or(date))
    }

    pub fn year(self) -> i32 {
        self.0.year()
    }

    /// 1 to 12.
    pub fn month(self) -> u32 {
        self.0.month()
    }

    pub fn first_day(self) -> NaiveDate {
        self.0
    }

    /// Whole months from `earlier` to `self`; negative when `self` is before it.
    pub fn months_since(self, earlier: YearMonth) -> i32 {
        index(self.0) - index(earlier.0)
    }
}

/// Months since year 0, for whole-month differences.
fn index(d: NaiveDate) -> i32 {
    d.year() * 12 + d.month0() as i32
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

impl TryFrom<&pb::YearMonth> for YearMonth {
    type Error = DateError;

    fn try_from(m: &pb::YearMonth) -> Result<Self, Self::Error> {
        time::month_from_pb(Some(m)).map(YearMonth)
    }
}

impl From<YearMonth> for pb::YearMonth {
    fn from(m: YearMonth) -> Self {
        // Every `YearMonth` came from a `u32` year, so the year is never negative.
        pb::YearMonth {
            year: u32::try_from(m.year()).unwrap_or(0),
            month: m.month(),
        }
    }
}

/// A required real date.
pub(super) fn date(field: &'static str, d: Option<&pb::Date>) -> Result<NaiveDate, PayloadError> {
    time::date_from_pb(d).map_err(|e| date_error(field, e))
}

/// `value` must be present exactly when `required`: `missing` says why when it is absent,
/// `forbidden` when it is there.
pub(super) fn present_when<T>(
    field: &'static str,
    value: Option<T>,
    required: bool,
    missing: PayloadReason,
    forbidden: PayloadReason,
) -> Result<Option<T>, PayloadError> {
    match (required, value) {
        (true, None) => Err(PayloadError::new(field, missing)),
        (false, Some(_)) => Err(PayloadError::new(field, forbidden)),
        (_, value) => Ok(value),
    }
}

/// Refuses a date after `latest` (the clock check) and, when given, after `observed` (checked
/// here, after the clock, so that a date in the future is reported as such).
/// The first day of `d`'s month.
pub(super) fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

pub(super) fn is_first_of_month(d: NaiveDate) -> bool {
    d.day() == 1
}

pub(super) fn not_after(
    field: &'static str,
    date: NaiveDate,
    latest: NaiveDate,
    observed: Option<NaiveDate>,
) -> Result<(), PayloadError> {
    if date > latest {
        return Err(PayloadError::new(field, PayloadReason::InFuture));
    }
    match observed {
        Some(observed) if date > observed => {
            Err(PayloadError::new(field, PayloadReason::AfterObservedOn))
        }
        _ => Ok(()),
    }
}
