//! The residence notice: the bureau where the person now lives tells her home bureau that she
//! arrived or departed, and in which month. Closed schema: the event and the month, nothing
//! else. Built only from the wire type, which it converts back to without loss.

use chrono::NaiveDate;

use super::error::{PayloadError, PayloadReason, date_error, known};
use super::fields::YearMonth;
use crate::pb;
use crate::time;

const EVENT: &str = "residence.event";
const MONTH: &str = "residence.month";

/// What happened to the person's residence at the sending bureau.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResidenceEvent {
    Arrived,
    Departed,
}

impl ResidenceEvent {
    pub const ALL: [ResidenceEvent; 2] = [ResidenceEvent::Arrived, ResidenceEvent::Departed];

    pub fn as_str(self) -> &'static str {
        match self {
            ResidenceEvent::Arrived => "arrived",
            ResidenceEvent::Departed => "departed",
        }
    }
}

enum_names!(ResidenceEvent, "residence event");

impl From<ResidenceEvent> for pb::ResidenceEvent {
    fn from(e: ResidenceEvent) -> Self {
        match e {
            ResidenceEvent::Arrived => pb::ResidenceEvent::Arrived,
            ResidenceEvent::Departed => pb::ResidenceEvent::Departed,
        }
    }
}

/// A checked residence notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidenceNotice {
    event: ResidenceEvent,
    month: YearMonth,
}

impl ResidenceNotice {
    pub fn new(event: ResidenceEvent, month: YearMonth) -> Self {
        ResidenceNotice { event, month }
    }

    pub fn event(&self) -> ResidenceEvent {
        self.event
    }

    pub fn month(&self) -> YearMonth {
        self.month
    }

    /// The month must not start after `latest`.
    pub fn validate(&self, latest: NaiveDate) -> Result<(), PayloadError> {
        if self.month.first_day() > latest {
            return Err(PayloadError::new(MONTH, PayloadReason::InFuture));
        }
        Ok(())
    }
}

impl TryFrom<pb::ResidenceNotice> for ResidenceNotice {
    type Error = PayloadError;

    fn try_from(r: pb::ResidenceNotice) -> Result<Self, Self::Error> {
        let event = match known::<pb::ResidenceEvent>(EVENT, r.event)? {
            pb::ResidenceEvent::Arrived => ResidenceEvent::Arrived,
            pb::ResidenceEvent::Departed => ResidenceEvent::Departed,
            pb::ResidenceEvent::Unspecified => {
                return Err(PayloadError::new(EVENT, PayloadReason::Unspecified));
            }
        };
        let month = time::month_from_pb(r.month.as_ref())
            .map(YearMonth::of)
            .map_err(|e| date_error(MONTH, e))?;
        Ok(ResidenceNotice { event, month })
    }
}

impl From<&ResidenceNotice> for pb::ResidenceNotice {
    fn from(r: &ResidenceNotice) -> Self {
        pb::ResidenceNotice {
            event: pb::ResidenceEvent::from(r.event).into(),
            month: Some(r.month.into()),
        }
    }
}
