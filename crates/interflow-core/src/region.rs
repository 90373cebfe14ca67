//! Region codes: the 6-digit administrative division codes of GB/T 2260 (e.g. `310115`) that
//! name every bureau, node and service point. This module owns their syntax and the list of
//! province prefixes; it does not know which regions are federation members (that is the
//! directory's job).

use std::fmt;
use std::str::FromStr;

/// A 6-digit administrative division code whose first two digits are a real province code.
///
/// Stored as its six ASCII digits, so it is `Copy` and orders numerically.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionCode([u8; 6]);

/// Why a string is not a region code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegionCodeError {
    #[error("region code must be 6 digits, got {len} characters")]
    WrongLength { len: usize },
    /// `position` counts characters from 1.
    #[error("region code must be 6 digits, found a non-digit at position {position}")]
    NonDigit { position: usize },
    #[error("region code starts with `{prefix:02}`, which is not a province code")]
    UnknownProvince { prefix: u8 },
}

/// Whether `prefix` (the first two digits of a division code, 0–99) is a province-level code
/// of GB/T 2260, including Taiwan (71), Hong Kong (81) and Macao (82).
pub(crate) const fn is_province_prefix(prefix: u8) -> bool {
    matches!(
        prefix,
        11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81 | 82
    )
}

impl RegionCode {
    /// Parses a region code; no whitespace or other characters are tolerated.
    pub fn parse(s: &str) -> Result<Self, RegionCodeError> {
        let len = s.chars().count();
        if len != 6 {
            return Err(RegionCodeError::WrongLength { len });
        }
        let mut digits = [0u8; 6];
        for (i, c) in s.chars().enumerate() {
            if !c.is_ascii_digit() {
                return Err(RegionCodeError::NonDigit { position: i + 1 });
            }
            // An ASCII digit fits in one byte.
            digits[i] = c as u8;
        }
        let code = Self(digits);
        let prefix = code.province();
        if is_province_prefix(prefix) {
            Ok(code)
        } else {
            Err(RegionCodeError::UnknownProvince { prefix })
        }
    }

    /// The six digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored, so this cannot fail; the fallback keeps the
        // function total without `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The six digits as ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// The two-digit province prefix, e.g. `31` for `310115`.
    pub fn province(&self) -> u8 {
        (self.0[0] - b'0') * 10 + (self.0[1] - b'0')
    }
}

impl FromStr for RegionCode {
    type Err = RegionCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for RegionCode {
    type Error = RegionCodeError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_parse_and_display_their_digits() {
        for s in [
            "110105", "310115", "440305", "650102", "710000", "810000", "820000",
        ] {
            let code = RegionCode::parse(s).expect("valid code");
            assert_eq!(code.as_str(), s);
            assert_eq!(code.to_string(), s);
            assert_eq!(format!("{code:?}"), format!("RegionCode({s})"));
            assert_eq!(s.parse::<RegionCode>(), Ok(code));
            assert_eq!(RegionCode::try_from(s), Ok(code));
        }
        assert_eq!(RegionCode::parse("310115").map(|c| c.province()), Ok(31));
    }

    #[test]
    fn every_province_prefix_boundary_is_right() {
        let provinces: Vec<u8> = (0..=99).filter(|&p| is_province_prefix(p)).collect();
        let expected: Vec<u8> = [
            11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50,
            51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
        ]
        .to_vec();
        assert_eq!(provinces, expected);
    }

    #[test]
    fn invalid_codes_get_precise_errors() {
        let cases: &[(&str, RegionCodeError)] = &[
            ("", RegionCodeError::WrongLength { len: 0 }),
            ("31011", RegionCodeError::WrongLength { len: 5 }),
            ("3101150", RegionCodeError::WrongLength { len: 7 }),
            // Six characters but seven bytes: the length counts characters.
            ("31011é", RegionCodeError::NonDigit { position: 6 }),
            (" 31011", RegionCodeError::NonDigit { position: 1 }),
            ("3101a5", RegionCodeError::NonDigit { position: 5 }),
            ("31011５", RegionCodeError::NonDigit { position: 6 }),
            ("000000", RegionCodeError::UnknownProvince { prefix: 0 }),
            ("100000", RegionCodeError::UnknownProvince { prefix: 10 }),
            ("160000", RegionCodeError::UnknownProvince { prefix: 16 }),
            ("380000", RegionCodeError::UnknownProvince { prefix: 38 }),
            ("720000", RegionCodeError::UnknownProvince { prefix: 72 }),
            ("990000", RegionCodeError::UnknownProvince { prefix: 99 }),
        ];
        for (input, want) in cases {
            assert_eq!(
                RegionCode::parse(input).as_ref(),
                Err(want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn error_messages_follow_the_style() {
        assert_eq!(
            RegionCodeError::WrongLength { len: 5 }.to_string(),
            "region code must be 6 digits, got 5 characters"
        );
        assert_eq!(
            RegionCodeError::NonDigit { position: 3 }.to_string(),
            "region code must be 6 digits, found a non-digit at position 3"
        );
        assert_eq!(
            RegionCodeError::UnknownProvince { prefix: 9 }.to_string(),
            "region code starts with `09`, which is not a province code"
        );
    }

    #[test]
    fn codes_order_numerically() {
        let a = RegionCode::parse("110105").expect("valid");
        let b = RegionCode::parse("310115").expect("valid");
        let c = RegionCode::parse("310116").expect("valid");
        assert!(a < b && b < c);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,8}") {
            if let Ok(code) = RegionCode::parse(&s) {
                proptest::prop_assert_eq!(code.as_str(), s.as_str());
            }
        }

        #[test]
        fn six_digit_strings_parse_iff_the_prefix_is_a_province(s in "[0-9]{6}") {
            let prefix = s[..2].parse::<u8>().unwrap_or(0);
            proptest::prop_assert_eq!(RegionCode::parse(&s).is_ok(), is_province_prefix(prefix));
        }
    }
}
