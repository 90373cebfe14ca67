//! Status follows residence: what a subject's residence notices say at a point in time, for
//! the home bureau's intake (`NOT_RESIDENT`), the residence bureau's inbox (status records
//! that arrived after it sent `DEPARTED`) and the coverage figures. Everything is derived from
//! the records the store already holds (a subject's records by its index), so nothing new is
//! stored and the store keeps schema 2.

use std::collections::BTreeMap;

use interflow_core::RegionCode;
use interflow_core::agreement::AgreementSet;
use interflow_core::payload::{Kind, Payload, ResidenceEvent, YearMonth};
use interflow_core::pb;
use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::{ChannelId, DecodedRecord, current_of};
use interflow_core::time::UnixMillis;
use interflow_store::{Store, StoreError};

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

/// The current record of `kind` among a subject's `records` (only those on `channel` when
/// given), leaving out inbound status records after departure. Another record's arrival time
/// is not at hand here, so its issue time stands in for it (a record issued after the
/// departure notice arrived after it too).
pub fn current_excluding_after_departure(
    records: &[DecodedRecord],
    kind: Kind,
    channel: Option<ChannelId>,
) -> Option<DecodedRecord> {
    let candidates = records
        .iter()
        .filter(|r| {
            r.kind() == kind
                && channel.is_none_or(|c| r.channel() == c)
                && !after_departure(records, r, r.issued_at_ms())
        })
        .cloned()
        .collect();
    current_of(candidates)
}

/// At the home bureau, whether the inbound ARRIVED `notice` is on the worklist: not corrected
/// or retracted, she still lives at its sender (the latest notice from there is ARRIVED), and
/// no status was sent back to the sender at or after the notice.
pub fn awaiting_answer(records: &[DecodedRecord], notice: &DecodedRecord) -> bool {
    if notice.kind() != Kind::Residence {
        return false;
    }
    let from = notice.channel();
    let back = ChannelId::new(from.destination, from.origin);
    arrivals_on(records, from)
        .iter()
        .any(|(n, _)| n.id() == notice.id())
        && latest_event(records, from, None) == Some(ResidenceEvent::Arrived)
        && !statuses_on(records, back)
            .iter()
            .any(|s| s.issued_at_ms() >= notice.issued_at_ms())
}

const DAY_MS: i64 = 86_400_000;

/// Every decoded record on this node's channels, grouped by subject (refs differ between
/// agreements, so a subject is one person under one agreement).
fn records_by_subject(
    store: &Store,
    me: RegionCode,
) -> Result<BTreeMap<SubjectRef, Vec<DecodedRecord>>, StoreError> {
    let mut by: BTreeMap<SubjectRef, Vec<DecodedRecord>> = BTreeMap::new();
    for (c, _) in store.channels()? {
        if c.origin != me && c.destination != me {
            continue;
        }
        let (head, _) = store.head(c);
        for seq in 1..=head {
            if let Some(r) = store.record_at(c, seq)? {
                by.entry(*r.subject()).or_default().push(r);
            }
        }
    }
    Ok(by)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Status records (not retractions) on `channel`, by issue time.
fn statuses_on(records: &[DecodedRecord], channel: ChannelId) -> Vec<&DecodedRecord> {
    let mut v: Vec<_> = records
        .iter()
        .filter(|r| r.channel() == channel && r.kind().is_status() && !r.payload().is_retraction())
        .collect();
    v.sort_by_key(|r| r.issued_at_ms());
    v
}

/// ARRIVED notices on `channel` that no later record corrected or retracted.
fn arrivals_on(records: &[DecodedRecord], channel: ChannelId) -> Vec<(&DecodedRecord, YearMonth)> {
    let superseded: std::collections::HashSet<_> =
        records.iter().filter_map(|r| r.supersedes()).collect();
    records
        .iter()
        .filter(|r| r.channel() == channel && !superseded.contains(&r.id()))
        .filter_map(|r| match r.payload() {
            Payload::Residence(n) if n.event() == ResidenceEvent::Arrived => Some((r, n.month())),
            _ => None,
        })
        .collect()
}

/// The awareness figures (`Admin.Coverage`, `interflowctl coverage`, the `/metrics` gauges):
/// per agreement with residence notices and month of arrival, counts only.
pub fn coverage(
    store: &Store,
    me: RegionCode,
    agreements: &AgreementSet,
    now_ms: UnixMillis,
) -> Result<pb::CoverageResponse, StoreError> {
    let by_subject = records_by_subject(store, me)?;
    type Key = (String, YearMonth);
    let mut rows: BTreeMap<Key, pb::CoverageRow> = BTreeMap::new();
    let mut days_to_status: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    for records in by_subject.values() {
        let Some(agreement) = records
            .first()
            .and_then(|r| agreements.get(r.agreement_id()))
        else {
            continue;
        };
        let Some(home) = agreement.residence_home() else {
            continue;
        };
        let Some(peer) = agreement.peer_of(me) else {
            continue;
        };
        let row = |rows: &mut BTreeMap<Key, pb::CoverageRow>, month: YearMonth, role| {
            rows.entry((agreement.id.clone(), month))
                .or_insert_with(|| pb::CoverageRow {
                    agreement_id: agreement.id.clone(),
                    peer: peer.to_string(),
                    role: role as i32,
                    month: Some(month.into()),
                    ..Default::default()
                })
                .clone()
        };
        if home == me {
            // Home side: each arrival, answered or not.
            let from = ChannelId::new(peer, me);
            let sent = statuses_on(records, ChannelId::new(me, peer));
            let still_here = latest_event(records, from, None) == Some(ResidenceEvent::Arrived);
            for (notice, month) in arrivals_on(records, from) {
                let mut r = row(&mut rows, month, pb::CoverageRole::Home);
                r.arrivals += 1;
                let answer = sent
                    .iter()
                    .find(|s| s.issued_at_ms() >= notice.issued_at_ms())
                    .map(|s| s.issued_at_ms() - notice.issued_at_ms());
                match answer {
                    Some(ms) => {
                        r.answered_within_7_days += u64::from(ms <= 7 * DAY_MS);
                        r.answered_within_30_days += u64::from(ms <= 30 * DAY_MS);
                    }
                    None if still_here => {
                        r.unanswered += 1;
                        let age_ms = u64::try_from(now_ms - notice.issued_at_ms()).unwrap_or(0);
                        r.oldest_unanswered_days =
                            r.oldest_unanswered_days.max(age_ms / DAY_MS as u64);
                        r.oldest_unanswered_age_secs =
                            r.oldest_unanswered_age_secs.max(age_ms / 1000);
                    }
                    None => {}
                }
                rows.insert((agreement.id.clone(), month), r);
            }
        } else {
            // Residence side: registered residents and whether home told us their status.
            let to_home = ChannelId::new(me, peer);
            if latest_event(records, to_home, None) != Some(ResidenceEvent::Arrived) {
                continue;
            }
            let Some((notice, month)) = arrivals_on(records, to_home)
                .into_iter()
                .max_by_key(|(n, _)| n.issued_at_ms())
            else {
                continue;
            };
            let mut r = row(&mut rows, month, pb::CoverageRole::Residence);
            r.residents += 1;
            let known = Kind::ALL.into_iter().filter(|k| k.is_status()).any(|k| {
                current_excluding_after_departure(records, k, None)
                    .is_some_and(|c| c.channel() == ChannelId::new(peer, me))
            });
            if known {
                r.residents_with_status += 1;
                if let Some(first) = statuses_on(records, ChannelId::new(peer, me))
                    .into_iter()
                    .find(|s| s.issued_at_ms() >= notice.issued_at_ms())
                {
                    days_to_status
                        .entry((agreement.id.clone(), month))
                        .or_default()
                        .push(
                            (first.issued_at_ms() - notice.issued_at_ms()) as f64 / DAY_MS as f64,
                        );
                }
            }
            rows.insert((agreement.id.clone(), month), r);
        }
    }
    for (key, days) in days_to_status {
        if let Some(r) = rows.get_mut(&key) {
            r.median_days_to_first_status = median(days);
        }
    }
    // Status that crossed a departure: inbound, so found through the inbox with its arrival time.
    let mut status_after_departure = 0;
    let mut after = 0;
    let head = store.inbox_head()?;
    while after < head {
        let page = store.inbox_after(after, 1000, 10_000, &|_| true)?;
        for e in &page.entries {
            if let interflow_store::Stored::Record(r) = &e.stored
                && let Some(records) = by_subject.get(r.subject())
            {
                status_after_departure += u64::from(after_departure(records, r, e.arrived_at_ms));
            }
        }
        if page.scanned_to <= after {
            break;
        }
        after = page.scanned_to;
    }
    Ok(pb::CoverageResponse {
        rows: rows.into_values().collect(),
        status_after_departure,
    })
}

impl crate::node::Node {
    /// [`coverage`] on the blocking pool, as of now.
    pub async fn coverage(
        self: &std::sync::Arc<Self>,
    ) -> Result<pb::CoverageResponse, crate::error::NodeError> {
        let node = self.clone();
        let now = self.now();
        let c = self
            .store
            .run(move |s| coverage(s, node.region, &node.fed().agreements, now))
            .await?;
        self.metrics.set_coverage(&c);
        Ok(c)
    }
}
