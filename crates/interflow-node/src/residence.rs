//! Status follows residence: what a subject's residence notices say at a point in time, for
//! the home bureau's intake (`NOT_RESIDENT`), the residence bureau's inbox (status records
//! that arrived after it sent `DEPARTED`) and the coverage figures. Everything is derived from
//! the records the store already holds (a subject's records by its index), so nothing new is
//! stored and the store keeps schema 2.

use interflow_core::payload::{Kind, Payload, ResidenceEvent};
use interflow_core::record::{ChannelId, DecodedRecord, current_of};
use interflow_core::time::UnixMillis;

/// The latest residence event on `channel` among a subject's `records`, counting only notices
/// issued at or before `at_ms` when given; `None` when there is no notice (or every one was
/// retracted).
pub fn latest_event(
    records: &[DecodedRecord],
    channel: ChannelId,
    at_ms: Option<UnixMillis>,
) -> Option<ResidenceEvent> {
    let notices: Vec<_> = records
        .iter()
        .filter(|r| {
            r.channel() == channel
                && r.kind() == Kind::Residence
                && at_ms.is_none_or(|t| r.issued_at_ms() <= t)
        })
        .cloned()
        .collect();
    match current_of(notices)?.payload() {
        Payload::Residence(n) => Some(n.event()),
        _ => None,
    }
}

/// Whether the inbound status record `r`, stored by this node at `arrived_at_ms`, came after
/// this node had told its origin that the subject departed: it crossed the departure in
/// flight. Such a record is kept (the chain must not break) but is never current.
pub fn after_departure(
    records: &[DecodedRecord],
    r: &DecodedRecord,
    arrived_at_ms: UnixMillis,
) -> bool {
    let back = ChannelId::new(r.channel().destination, r.channel().origin);
    r.kind().is_status()
        && latest_event(records, back, Some(arrived_at_ms)) == Some(ResidenceEvent::Departed)
}

/// The current record of `kind` among a subject's `records`, leaving out inbound status
/// records after departure. Another record's arrival time is not at hand here, so its issue
/// time stands in for it (a record issued after the departure notice arrived after it too).
pub fn current_excluding_after_departure(
    records: &[DecodedRecord],
    kind: Kind,
) -> Option<DecodedRecord> {
    let candidates = records
        .iter()
        .filter(|r| r.kind() == kind && !after_departure(records, r, r.issued_at_ms()))
        .cloned()
        .collect();
    current_of(candidates)
}
