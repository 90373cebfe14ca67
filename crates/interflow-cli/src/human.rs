//! Formatting for people and parsing of what people type: durations (`1h30m`), ages (`3m12s`),
//! instants (RFC 3339, UTC) and tables. No I/O. The names of wire enums are in
//! [`crate::names`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use interflow_core::pb;
use interflow_core::time::UnixMillis;

/// Parses a duration such as `90s`, `15m`, `1h30m`, `2d` or `500ms` with `humantime`: one or
/// more `<number><unit>` parts (it also takes longer unit names such as `min` or `hours`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration: {e}; write e.g. `90s`, `15m`, `1h30m` or `2d`")
    })
}

/// A compact age such as `3m12s`, `5h02m`, `2d03h`, `45s`: the two most significant units.
pub fn format_age(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, mins, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{mins:02}m")
    } else if mins > 0 {
        format!("{mins}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The age of `then` at `now`, both in Unix milliseconds; zero when `then` is in the future.
pub fn age(now: UnixMillis, then: UnixMillis) -> Duration {
    Duration::from_millis(u64::try_from(now.saturating_sub(then)).unwrap_or(0))
}

/// An instant as RFC 3339 in UTC, to the second.
pub fn instant(t: UnixMillis) -> String {
    interflow_core::time::rfc3339(t)
}

/// An instant as RFC 3339, or `None` for the wire's "unset" value 0.
pub fn opt_instant(t: UnixMillis) -> Option<String> {
    (t != 0).then(|| instant(t))
}

/// When something happens relative to `now`: `in 12s`, `3m ago`, `now`.
pub fn relative(now: UnixMillis, t: UnixMillis) -> String {
    match t.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", format_age(age(t, now))),
        std::cmp::Ordering::Less => format!("{} ago", format_age(age(now, t))),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// The current time in Unix milliseconds, from the system clock.
pub fn now_ms() -> UnixMillis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Parses `--since`: RFC 3339, or a duration meaning that long before `now`.
pub fn parse_since(s: &str, now: UnixMillis) -> Result<UnixMillis, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc).timestamp_millis());
    }
    match parse_duration(s) {
        Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "`{s}` is neither an RFC 3339 time (`2026-06-01T00:00:00Z`) nor a duration (`24h`)"
        )),
    }
}

/// `1 record`, `2 records`: a count with its noun, plural when not 1.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else if noun.ends_with("ch") || noun.ends_with('s') || noun.ends_with('x') {
        format!("{n} {noun}es")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// A table in the house style: condensed borders, wrapping to the terminal width.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// The first 12 hex digits of an id, enough to tell records apart in a table.
pub fn short_hex(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    h.get(..12).unwrap_or(&h).to_owned()
}

pub fn date(d: Option<&pb::Date>) -> Option<String> {
    d.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

pub fn month(m: Option<&pb::YearMonth>) -> Option<String> {
    m.map(|m| format!("{:04}-{:02}", m.year, m.month))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_combination() {
        let cases = [
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("1d2h3m4s", 93_784),
            (" 24h ", 86_400),
            ("0s", 0),
        ];
        for (s, secs) in cases {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)), "{s}");
        }
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        // humantime's words; every message also shows how to write one.
        for (s, want) in [
            ("", "empty"),
            ("h", "expected number"),
            ("10", "unit needed"),
            ("10q", "unknown time unit \"q\""),
            ("1h-5m", "invalid character"),
            ("99999999999999999999s", "too large"),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
            assert!(e.contains("write e.g. `90s`"), "{s}: {e}");
        }
    }

    #[test]
    fn ages_show_the_two_most_significant_units() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (60, "1m00s"),
            (192, "3m12s"),
            (3600, "1h00m"),
            (5 * 3600 + 2 * 60 + 59, "5h02m"),
            (86_400, "1d00h"),
            (2 * 86_400 + 3 * 3600 + 59, "2d03h"),
            (400 * 86_400, "400d00h"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_age(Duration::from_secs(secs)), want);
        }
        assert_eq!(format_age(Duration::from_millis(1999)), "1s");
    }

    #[test]
    fn ages_and_relative_times_use_the_given_now() {
        assert_eq!(age(10_000, 4_000), Duration::from_secs(6));
        assert_eq!(age(4_000, 10_000), Duration::ZERO);
        assert_eq!(relative(10_000, 22_000), "in 12s");
        assert_eq!(relative(200_000, 20_000), "3m00s ago");
        assert_eq!(relative(5, 5), "now");
    }

    #[test]
    fn since_takes_rfc3339_or_a_duration_ago() {
        let now = 1_780_272_000_000; // 2026-06-01T00:00:00Z
        assert_eq!(parse_since("2026-06-01T00:00:00Z", 0), Ok(now));
        assert_eq!(parse_since("2026-06-01T08:00:00+08:00", 0), Ok(now));
        assert_eq!(parse_since("24h", now), Ok(now - 86_400_000));
        let e = parse_since("yesterday", now).unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("duration"), "{e}");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1u64, "record"), "1 record");
        assert_eq!(count(0u64, "record"), "0 records");
        assert_eq!(count(2u32, "entry"), "2 entries");
        assert_eq!(count(1u32, "anomaly"), "1 anomaly");
        assert_eq!(count(3u64, "batch"), "3 batches");
    }

    #[test]
    fn instants_print_as_utc_rfc3339() {
        assert_eq!(instant(1_780_272_000_000), "2026-06-01T00:00:00Z");
        assert_eq!(opt_instant(0), None);
    }
}
