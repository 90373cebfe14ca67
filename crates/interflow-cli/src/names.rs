//! The lowercase names people read and type for wire enum values (`pregnant`, `oral_pill`,
//! `peer_unreachable`), all in this one place.
//!
//! Record kinds, pregnancy states and contraceptive methods come from core (`as_str`/`FromStr`
//! of [`Kind`], [`PregnancyState`], [`ContraceptionMethod`]). Anomalies and submit error codes,
//! which core does not model, are the proto's own value names without their type prefix
//! (`ANOMALY_PEER_UNREACHABLE` is `peer_unreachable`), read through prost's
//! `as_str_name`/`from_str_name`, so no table here can drift from the schema.

use interflow_core::payload::{ContraceptionMethod, Kind, PregnancyState};
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

/// `pregnancy`, `contraception` or `unknown`.
pub fn kind_name(k: i32) -> &'static str {
    Kind::try_from(k).map_or(UNKNOWN, Kind::as_str)
}

/// The record kind named `pregnancy` or `contraception`.
pub fn kind_of(name: &str) -> Option<pb::RecordKind> {
    name.parse::<Kind>().ok().map(pb::RecordKind::from)
}

const ANOMALY: &str = "ANOMALY_";
const SUBMIT_ERROR: &str = "SUBMIT_ERROR_CODE_";

pub fn state_name(s: i32) -> String {
    PregnancyState::try_from(s)
        .map_or(UNKNOWN, PregnancyState::as_str)
        .to_owned()
}

pub fn state_of(name: &str) -> Option<pb::PregnancyState> {
    name.parse::<PregnancyState>().ok().map(Into::into)
}

pub fn method_name(m: i32) -> String {
    ContraceptionMethod::try_from(m)
        .map_or(UNKNOWN, ContraceptionMethod::as_str)
        .to_owned()
}

pub fn method_of(name: &str) -> Option<pb::ContraceptiveMethod> {
    name.parse::<ContraceptionMethod>().ok().map(Into::into)
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
