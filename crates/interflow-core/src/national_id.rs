//! Resident identity numbers (GB 11643): the 18-character national ID that intake receives and
//! immediately pseudonymizes. This module owns their validation and normalization, and keeps
//! the number out of logs: it never prints more than the last four characters, its errors never
//! contain any of its digits, and the stored number is wiped from memory on drop. It must not
//! be stored or sent anywhere; only a `SubjectRef` derived from it leaves intake.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use zeroize::Zeroizing;

use crate::region::is_province_prefix;

const LEN: usize = 18;

/// ISO 7064 MOD 11-2 weights of the first 17 digits (2^(18-i) mod 11).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// The check character for each remainder of the weighted sum modulo 11.
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// A validated resident identity number.
///
/// `Debug` and `Display` show only the masked form, e.g. `**************002X`.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalId(Zeroizing<String>);

/// Why a string is not a valid resident identity number. No variant carries any part of the
/// number, so these errors may be logged and returned to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    #[error("national id must be 18 characters, got {len}")]
    WrongLength { len: usize },
    /// `position` counts characters from 1; position 18 may also be `X`.
    #[error("national id has an invalid character at position {position}")]
    NonDigit { position: usize },
    #[error("national id check character does not match")]
    BadCheckCharacter,
    #[error("national id address code does not start with a province code")]
    UnknownProvince,
    #[error("national id birth date is not a real date")]
    ImpossibleBirthDate,
    #[error("national id birth date is in the future")]
    BirthDateInFuture,
    #[error("national id birth date is before 1900-01-01")]
    BirthDateTooEarly,
}

/// The check character of 17 ASCII digits.
fn check_char(digits: &[u8; 17]) -> u8 {
    let sum: u32 = digits
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    // `sum % 11` is below 11, so the index is in range.
    CHECK_CHARS[(sum % 11) as usize]
}

/// The value of consecutive ASCII digits.
fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
}

impl NationalId {
    /// Validates `s` as of the calendar date `today` (the caller's clock; this crate reads
    /// none). Whitespace is not trimmed; a lower-case `x` check character is accepted and
    /// normalized to `X`.
    pub fn parse(s: &str, today: NaiveDate) -> Result<Self, NationalIdError> {
        let len = s.chars().count();
        if len != LEN {
            return Err(NationalIdError::WrongLength { len });
        }
        let mut digits = Zeroizing::new([0u8; 17]);
        let mut check = 0u8;
        for (i, c) in s.chars().enumerate() {
            match (i, c) {
                (0..17, '0'..='9') => digits[i] = c as u8,
                (17, '0'..='9') => check = c as u8,
                (17, 'X' | 'x') => check = b'X',
                _ => return Err(NationalIdError::NonDigit { position: i + 1 }),
            }
        }
        if check_char(&digits) != check {
            return Err(NationalIdError::BadCheckCharacter);
        }
        if !u8::try_from(number(&digits[..2])).is_ok_and(is_province_prefix) {
            return Err(NationalIdError::UnknownProvince);
        }
        let birth = i32::try_from(number(&digits[6..10]))
            .ok()
            .and_then(|y| {
                NaiveDate::from_ymd_opt(y, number(&digits[10..12]), number(&digits[12..14]))
            })
            .ok_or(NationalIdError::ImpossibleBirthDate)?;
        if birth.year() < 1900 {
            return Err(NationalIdError::BirthDateTooEarly);
        }
        if birth > today {
            return Err(NationalIdError::BirthDateInFuture);
        }
        let mut normalized = Zeroizing::new(String::with_capacity(LEN));
        normalized.extend(digits.iter().map(|&d| char::from(d)));
        normalized.push(char::from(check));
        Ok(Self(normalized))
    }

    /// The 18 characters with an upper-case `X`: the input to pseudonymization.
    pub fn normalized(&self) -> &str {
        &self.0
    }

    /// Only the last four characters, the rest as `*`, e.g. `**************002X`.
    pub fn masked(&self) -> String {
        let tail = self.0.get(LEN - 4..).unwrap_or_default();
        format!("{}{tail}", "*".repeat(LEN - 4))
    }
}

impl fmt::Display for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NationalId({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "11010519491231002X";

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 6, 1).expect("real date")
    }

    /// ISO 7064 MOD 11-2 written independently of the code under test: the check value is the
    /// one that makes the weighted sum of all 18 values (X = 10) congruent to 1 modulo 11, with
    /// weights 2^(17-i) mod 11.
    fn reference_check(first17: &str) -> char {
        let sum: u64 = first17
            .chars()
            .enumerate()
            .map(|(i, c)| u64::from(c.to_digit(10).expect("digit")) * (1u64 << (17 - i)) % 11)
            .sum();
        let value = (0..11u64)
            .find(|v| (sum + v) % 11 == 1)
            .expect("one value fits");
        if value == 10 {
            'X'
        } else {
            char::from_digit(value as u32, 10).expect("single digit")
        }
    }

    fn with_check(first17: &str) -> String {
        format!("{first17}{}", reference_check(first17))
    }

    #[test]
    fn reference_check_agrees_with_the_published_sample() {
        assert_eq!(with_check("11010519491231002"), SAMPLE);
    }

    #[test]
    fn valid_numbers_parse() {
        let mut cases = vec![SAMPLE.to_owned()];
        for first17 in [
            "31011519900307123",
            "44030520000229456",
            "65010219000101001",
            "82000020260601999",
            "71000019851010000",
            "51010719721120763",
        ] {
            cases.push(with_check(first17));
        }
        for s in &cases {
            let id = NationalId::parse(s, today()).expect("valid id");
            assert_eq!(id.normalized(), s.as_str());
        }
    }

    #[test]
    fn lower_case_x_is_accepted_and_normalized() {
        let id = NationalId::parse("11010519491231002x", today()).expect("valid id");
        assert_eq!(id.normalized(), SAMPLE);
        assert_eq!(id, NationalId::parse(SAMPLE, today()).expect("valid id"));
    }

    #[test]
    fn invalid_numbers_get_precise_errors() {
        use NationalIdError::*;
        let cases: Vec<(String, NationalIdError)> = vec![
            (String::new(), WrongLength { len: 0 }),
            ("11010519491231002".into(), WrongLength { len: 17 }),
            ("11010519491231002X0".into(), WrongLength { len: 19 }),
            (" 11010519491231002X".into(), WrongLength { len: 19 }),
            ("11010519491231002X ".into(), WrongLength { len: 19 }),
            (" 1010519491231002X".into(), NonDigit { position: 1 }),
            ("1101051949123100 X".into(), NonDigit { position: 17 }),
            ("110105194912310X2X".into(), NonDigit { position: 16 }),
            ("11010519491231002Y".into(), NonDigit { position: 18 }),
            ("11010519491231002é".into(), NonDigit { position: 18 }),
            ("11010519491231002０".into(), NonDigit { position: 18 }),
            ("110105194912310020".into(), BadCheckCharacter),
            ("110105194912310021".into(), BadCheckCharacter),
            // Two transposed digits change the weighted sum.
            ("11010519491213002X".into(), BadCheckCharacter),
            (with_check("99010519491231002"), UnknownProvince),
            (with_check("00010519491231002"), UnknownProvince),
            (with_check("11010519490230002"), ImpossibleBirthDate),
            (with_check("11010519491301002"), ImpossibleBirthDate),
            (with_check("11010519490100002"), ImpossibleBirthDate),
            (with_check("11010520230229002"), ImpossibleBirthDate),
            (with_check("11010500000101002"), BirthDateTooEarly),
            (with_check("11010518991231002"), BirthDateTooEarly),
            (with_check("11010520260602002"), BirthDateInFuture),
            (with_check("11010530000101002"), BirthDateInFuture),
        ];
        for (input, want) in cases {
            assert_eq!(
                NationalId::parse(&input, today()),
                Err(want),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn boundary_birth_dates_are_accepted() {
        for first17 in ["11010519000101002", "11010520260601002"] {
            assert!(NationalId::parse(&with_check(first17), today()).is_ok());
        }
    }

    #[test]
    fn only_the_masked_form_is_printed() {
        let id = NationalId::parse(SAMPLE, today()).expect("valid id");
        assert_eq!(id.masked(), "**************002X");
        assert_eq!(id.to_string(), "**************002X");
        assert_eq!(format!("{id:?}"), "NationalId(**************002X)");
        assert!(!format!("{id:?} {id} {id:#?}").contains("110105"));
    }

    #[test]
    fn errors_never_contain_digits_of_the_number() {
        use NationalIdError::*;
        for e in [
            NonDigit { position: 18 },
            BadCheckCharacter,
            UnknownProvince,
            ImpossibleBirthDate,
            BirthDateInFuture,
        ] {
            let msg = e.to_string();
            assert!(!msg.contains("1101") && !msg.contains("1949"), "{msg}");
            assert_eq!(msg, msg.to_lowercase());
        }
    }

    fn valid_first17() -> impl Strategy<Value = String> {
        let provinces: Vec<u8> = (0..=99).filter(|&p| is_province_prefix(p)).collect();
        let first = NaiveDate::from_ymd_opt(1900, 1, 1).expect("real date");
        let days = (today() - first).num_days();
        (
            proptest::sample::select(provinces),
            "[0-9]{4}",
            0..=days,
            "[0-9]{3}",
        )
            .prop_map(move |(province, area, offset, serial)| {
                let birth = first + chrono::Days::new(offset.unsigned_abs());
                format!("{province:02}{area}{}{serial}", birth.format("%Y%m%d"))
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = NationalId::parse(&s, today());
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[0-9]{17}[0-9Xx]") {
            if let Ok(id) = NationalId::parse(&s, today()) {
                prop_assert_eq!(id.normalized(), s.to_uppercase());
            }
        }

        #[test]
        fn valid_numbers_parse_and_round_trip(first17 in valid_first17()) {
            let s = with_check(&first17);
            let id = NationalId::parse(&s, today());
            prop_assert!(id.is_ok(), "{:?}", id);
            if let Ok(id) = id {
                prop_assert_eq!(id.normalized(), s.as_str());
                let lower = NationalId::parse(&s.to_lowercase(), today());
                prop_assert_eq!(lower.as_ref().map(NationalId::normalized), Ok(s.as_str()));
            }
        }
    }
}
