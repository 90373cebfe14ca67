//! The one error every payload check returns: the path of the field at fault (as the wire
//! names it, e.g. `pregnancy.expected_delivery`) and what is wrong with it. It must never carry
//! a field's value: dates, service points and states are personal data. Mapping it to a wire
//! code or a `Status` is the caller's job.

use crate::region::RegionCodeError;
use crate::time::DateError;

/// A payload that failed a check: the field at fault and what is wrong with it, without its
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct PayloadError {
    field: &'static str,
    reason: PayloadReason,
}

/// What is wrong with a payload field. Displays as a predicate of the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadReason {
    #[error("is required")]
    Missing,
    #[error("must be specified")]
    Unspecified,
    #[error("has unknown value `{value}`")]
    UnknownValue { value: i32 },
    #[error("is required when {condition}")]
    RequiredWhen { condition: &'static str },
    #[error("is required unless {condition}")]
    RequiredUnless { condition: &'static str },
    #[error("must be absent when {condition}")]
    ForbiddenWhen { condition: &'static str },
    #[error("is not a real date")]
    NotRealDate,
    #[error("is not a real month")]
    NotRealMonth,
    #[error("is in the future")]
    InFuture,
    #[error("is after `observed_on`")]
    AfterObservedOn,
    #[error("is before the month of `observed_on`")]
    BeforeObservedMonth,
    #[error("is more than {max} months after `observed_on`")]
    TooLongAfterObservedOn { max: i32 },
    #[error("must be at most `{max}`")]
    TooLarge { max: u32 },
    #[error("must be 10 digits, got {len} characters")]
    WrongLength { len: usize },
    /// `position` counts characters from 1.
    #[error("must be 10 digits, found a non-digit at position {position}")]
    NonDigit { position: usize },
    #[error("must start with a valid region code: {0}")]
    BadRegion(RegionCodeError),
}

impl PayloadError {
    pub(crate) fn new(field: &'static str, reason: PayloadReason) -> Self {
        Self { field, reason }
    }

    /// The path of the field at fault, e.g. `contraception.since`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    pub fn reason(&self) -> &PayloadReason {
        &self.reason
    }
}

pub(super) fn unspecified(field: &'static str) -> PayloadError {
    PayloadError::new(field, PayloadReason::Unspecified)
}

/// Drops the offending value: dates in a payload are personal data.
pub(super) fn date_error(field: &'static str, e: DateError) -> PayloadError {
    let reason = match e {
        DateError::Missing => PayloadReason::Missing,
        DateError::NotReal { .. } => PayloadReason::NotRealDate,
        DateError::NotRealMonth { .. } => PayloadReason::NotRealMonth,
    };
    PayloadError::new(field, reason)
}

/// Decodes a prost enum field. Value 0 is `UNSPECIFIED` in every interflow enum, so it is
/// refused here; values this build does not know are refused rather than carried along.
pub(super) fn known<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<E, PayloadError> {
    if value == 0 {
        return Err(unspecified(field));
    }
    E::try_from(value).map_err(|_| PayloadError::new(field, PayloadReason::UnknownValue { value }))
}

/// Why a name is not one of an enum's names (as the CLI and reports spell them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{name}` is unknown, expected one of {expected}")]
pub struct UnknownName {
    what: &'static str,
    name: String,
    expected: String,
}

impl UnknownName {
    pub(super) fn new(what: &'static str, name: &str, names: &[&str]) -> Self {
        let expected = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        UnknownName {
            what,
            name: name.to_owned(),
            expected,
        }
    }
}
