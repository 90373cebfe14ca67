//! Time as the domain sees it: milliseconds since the Unix epoch, passed in by callers (this
//! crate never reads the clock), and calendar dates carried by payloads.

use chrono::{DateTime, NaiveDate};

use crate::pb;

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

/// The furthest time zone is UTC+14: a date counts as "not in the future" while it has begun
/// somewhere on Earth, so no bureau's local "today" is refused.
const LATEST_ZONE_OFFSET_MS: i64 = 14 * 3_600_000;

/// Why a `Date` or `YearMonth` is not a real calendar value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("date is missing")]
    Missing,
    #[error("`{year:04}-{month:02}-{day:02}` is not a real date")]
    NotReal { year: u32, month: u32, day: u32 },
    #[error("month `{year:04}-{month:02}` is not a real month")]
    NotRealMonth { year: u32, month: u32 },
}

/// Converts a wire date to a calendar date.
pub fn date_from_pb(d: Option<&pb::Date>) -> Result<NaiveDate, DateError> {
    let d = d.ok_or(DateError::Missing)?;
    i32::try_from(d.year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, d.month, d.day))
        .ok_or(DateError::NotReal {
            year: d.year,
            month: d.month,
            day: d.day,
        })
}

/// Converts a wire month to the first day of that month.
pub fn month_from_pb(m: Option<&pb::YearMonth>) -> Result<NaiveDate, DateError> {
    let m = m.ok_or(DateError::Missing)?;
    i32::try_from(m.year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, m.month, 1))
        .ok_or(DateError::NotRealMonth {
            year: m.year,
            month: m.month,
        })
}

/// The wire form of a calendar date.
pub fn date_to_pb(d: NaiveDate) -> pb::Date {
    use chrono::Datelike;
    pb::Date {
        year: u32::try_from(d.year()).unwrap_or(0),
        month: d.month(),
        day: d.day(),
    }
}

/// The latest calendar date a payload may carry at `now`, allowing `skew_ms` of clock skew.
pub fn latest_permitted_date(now: UnixMillis, skew_ms: i64) -> NaiveDate {
    let t = now
        .saturating_add(skew_ms)
        .saturating_add(LATEST_ZONE_OFFSET_MS);
    DateTime::from_timestamp_millis(t)
        .map(|dt| dt.date_naive())
        .unwrap_or(NaiveDate::MAX)
}

/// The UTC calendar date of an instant, for display and indexing.
pub fn utc_date(t: UnixMillis) -> Option<NaiveDate> {
    DateTime::from_timestamp_millis(t).map(|dt| dt.date_naive())
}

/// Formats an instant as RFC 3339 (UTC), or the raw number when it is out of range.
pub fn rfc3339(t: UnixMillis) -> String {
    DateTime::from_timestamp_millis(t)
        .map(|dt| dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_dates_convert_and_impossible_ones_are_refused() {
        let ok = pb::Date {
            year: 2024,
            month: 2,
            day: 29,
        };
        assert_eq!(
            date_from_pb(Some(&ok)),
            Ok(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
        );
        let bad = pb::Date {
            year: 2023,
            month: 2,
            day: 29,
        };
        assert!(matches!(
            date_from_pb(Some(&bad)),
            Err(DateError::NotReal { .. })
        ));
        assert_eq!(date_from_pb(None), Err(DateError::Missing));
        let m = pb::YearMonth {
            year: 2025,
            month: 13,
        };
        assert!(matches!(
            month_from_pb(Some(&m)),
            Err(DateError::NotRealMonth { .. })
        ));
    }

    #[test]
    fn latest_permitted_date_allows_the_earliest_time_zone_and_skew() {
        // 2026-01-01T12:00:00Z: already 2026-01-02 in UTC+14.
        let noon = 1_767_268_800_000;
        assert_eq!(
            latest_permitted_date(noon, 0),
            NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()
        );
        assert_eq!(
            latest_permitted_date(noon, 86_400_000),
            NaiveDate::from_ymd_opt(2026, 1, 3).unwrap()
        );
    }
}
