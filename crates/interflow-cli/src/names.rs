//! The lowercase names people read and type for wire enum values (`pregnant`, `oral_pill`,
//! `peer_unreachable`), all in this one place.
//!
//! Record kinds come from core ([`Kind`]'s `as_str`/`FromStr`). The other names are the proto's
//! own value names without their type prefix (`PREGNANCY_STATE_NOT_PREGNANT` is
//! `not_pregnant`), read through prost's `as_str_name`/`from_str_name`, so no table here can
//! drift from the schema. When core gains `as_str`/`FromStr` for pregnancy states and
//! contraceptive methods, [`state_name`], [`state_of`], [`method_name`] and [`method_of`] are
//! the only functions to switch over.

use interflow_core::payload::Kind;
use interflow_core::pb;

/// Shown for a value this build does not know or the wire's "unspecified".
const UNKNOWN: &str = "unknown";

/// `PREFIX_SOME_VALUE` → `some_value`; `unknown` for `PREFIX_UNSPECIFIED`.
fn short_name(full: &str, prefix: &str) -> String {
    match full.strip_prefix(prefix) {
        Some("UNSPECIFIED") | None => UNKNOWN.to_owned(),
        Some(rest) => rest.to_ascii_lowercase(),
    }
}

/// `some_value` → the value named `PREFIX_SOME_VALUE`; only lowercase names, never
/// `unspecified`.
fn from_short_name<E>(name: &str, prefix: &str, from_str_name: fn(&str) -> Option<E>) -> Option<E> {
    let lowercase = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !lowercase || name == "unspecified" {
        return None;
    }
    from_str_name(&format!("{prefix}{}", name.to_ascii_uppercase()))
}

/// `pregnancy`, `contraception` or `unknown`.
pub fn kind_name(k: i32) -> &'static str {
    Kind::try_from(k).map_or(UNKNOWN, Kind::as_str)
}

/// The record kind named `pregnancy` or `contraception`.
pub fn kind_of(name: &str) -> Option<pb::RecordKind> {
    name.parse::<Kind>().ok().map(pb::RecordKind::from)
}

const STATE: &str = "PREGNANCY_STATE_";
const METHOD: &str = "CONTRACEPTIVE_METHOD_";
const ANOMALY: &str = "ANOMALY_";
const SUBMIT_ERROR: &str = "SUBMIT_ERROR_CODE_";

pub fn state_name(s: i32) -> String {
    pb::PregnancyState::try_from(s).map_or_else(
        |_| UNKNOWN.to_owned(),
        |s| short_name(s.as_str_name(), STATE),
    )
}

pub fn state_of(name: &str) -> Option<pb::PregnancyState> {
    from_short_name(name, STATE, pb::PregnancyState::from_str_name)
}

pub fn method_name(m: i32) -> String {
    pb::ContraceptiveMethod::try_from(m).map_or_else(
        |_| UNKNOWN.to_owned(),
        |m| short_name(m.as_str_name(), METHOD),
    )
}

pub fn method_of(name: &str) -> Option<pb::ContraceptiveMethod> {
    from_short_name(name, METHOD, pb::ContraceptiveMethod::from_str_name)
}

pub fn anomaly_name(a: i32) -> String {
    pb::Anomaly::try_from(a).map_or_else(
        |_| UNKNOWN.to_owned(),
        |a| short_name(a.as_str_name(), ANOMALY),
    )
}

pub fn submit_error_name(c: i32) -> String {
    pb::SubmitErrorCode::try_from(c).map_or_else(
        |_| UNKNOWN.to_owned(),
        |c| short_name(c.as_str_name(), SUBMIT_ERROR),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones() {
        let states: Vec<String> = (0..=5).map(state_name).collect();
        assert_eq!(
            states,
            [
                "unknown",
                "not_pregnant",
                "pregnant",
                "delivered",
                "pregnancy_ended",
                "unknown"
            ]
        );
        let methods: Vec<String> = (1..=8).map(method_name).collect();
        assert_eq!(
            methods,
            [
                "none",
                "iud",
                "implant",
                "injectable",
                "oral_pill",
                "condom",
                "sterilization",
                "other"
            ]
        );
        assert_eq!(
            anomaly_name(pb::Anomaly::PeerUnreachable as i32),
            "peer_unreachable"
        );
        assert_eq!(anomaly_name(0), "unknown");
        assert_eq!(
            submit_error_name(pb::SubmitErrorCode::InvalidNationalId as i32),
            "invalid_national_id"
        );
        assert_eq!(submit_error_name(99), "unknown");
        assert_eq!(kind_name(1), "pregnancy");
        assert_eq!(kind_name(0), "unknown");
    }

    #[test]
    fn names_parse_back_and_nothing_else_does() {
        for v in 1..=4 {
            assert_eq!(state_of(&state_name(v)).map(|s| s as i32), Some(v));
        }
        for v in 1..=8 {
            assert_eq!(method_of(&method_name(v)).map(|m| m as i32), Some(v));
        }
        for bad in [
            "",
            "unspecified",
            "Pregnant",
            "PREGNANT",
            "pregnant ",
            "expecting",
        ] {
            assert_eq!(state_of(bad), None, "{bad:?}");
        }
        assert_eq!(method_of("pill"), None);
        assert_eq!(
            kind_of("contraception"),
            Some(pb::RecordKind::ContraceptionStatus)
        );
        assert_eq!(kind_of("retraction"), None);
    }
}
