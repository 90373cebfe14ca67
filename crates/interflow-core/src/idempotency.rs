//! Idempotency keys: the caller's name for one submission, which makes a rerun safe (the node
//! answers a key it has stored with the same record instead of storing it twice). This module
//! owns the syntax of a key only; remembering keys is the store's job.

use std::fmt;
use std::str::FromStr;

/// Longest key, in bytes (all of them ASCII).
pub const MAX_LEN: usize = 128;

/// 1 to [`MAX_LEN`] printable ASCII characters, no spaces.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

/// Why a string is not an idempotency key. Never carries the key itself: callers put it in
/// reports that must not echo what the caller typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    #[error("idempotency key is empty; it {}", IdempotencyKey::RULE)]
    Empty,
    #[error("idempotency key has {len} bytes; it {}", IdempotencyKey::RULE)]
    TooLong { len: usize },
    /// `position` counts bytes from 1.
    #[error(
        "idempotency key has a space, control or non-ASCII character at byte {position}; it {}",
        IdempotencyKey::RULE
    )]
    NotPrintable { position: usize },
}

impl IdempotencyKey {
    /// The rule as a reason to show next to the field name.
    pub const RULE: &'static str = "must be 1 to 128 printable ASCII characters without spaces";

    /// Checks `s` against the rule; no trimming.
    pub fn parse(s: &str) -> Result<Self, IdempotencyKeyError> {
        if s.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(IdempotencyKeyError::TooLong { len: s.len() });
        }
        if let Some(i) = s.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::NotPrintable { position: i + 1 });
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = IdempotencyKeyError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        IdempotencyKey::parse(s)
    }
}

impl FromStr for IdempotencyKey {
    type Err = IdempotencyKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::parse(s)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as the node and the CLI wrote it before this type existed.
    fn old_rule(k: &str) -> bool {
        !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn keys_of_printable_ascii_up_to_128_bytes_are_accepted() {
        for k in ["k", "row-1", "a/b:c#1", &"x".repeat(128), "~!{}"] {
            let key = IdempotencyKey::parse(k).unwrap();
            assert_eq!(key.as_str(), k);
            assert_eq!(k.parse::<IdempotencyKey>().unwrap(), key);
            assert_eq!(IdempotencyKey::try_from(k).unwrap().to_string(), k);
        }
    }

    #[test]
    fn each_broken_rule_has_its_error() {
        assert_eq!(IdempotencyKey::parse(""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(&"x".repeat(129)),
            Err(IdempotencyKeyError::TooLong { len: 129 })
        );
        assert_eq!(
            IdempotencyKey::parse("has space"),
            Err(IdempotencyKeyError::NotPrintable { position: 4 })
        );
        assert_eq!(
            IdempotencyKey::parse("tab\t"),
            Err(IdempotencyKeyError::NotPrintable { position: 4 })
        );
        assert_eq!(
            IdempotencyKey::parse("ключ"),
            Err(IdempotencyKeyError::NotPrintable { position: 1 })
        );
    }

    #[test]
    fn errors_name_the_rule_and_not_the_key() {
        let e = IdempotencyKey::parse("secret key").unwrap_err().to_string();
        assert!(e.contains(IdempotencyKey::RULE), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn the_rule_is_the_old_one(s in "\\PC{0,140}|[ -~]{0,140}") {
            proptest::prop_assert_eq!(IdempotencyKey::parse(&s).is_ok(), old_rule(&s));
        }
    }
}
