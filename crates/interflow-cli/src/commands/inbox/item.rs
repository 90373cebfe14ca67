//! Inbox items as the CLI shows them: [`ItemView`] for tables, lines and `--json` (the subject
//! only as its short digest), and [`ExportItem`] for `export` (the whole subject ref, for the
//! bureau's own systems).

use interflow_core::pb;
use serde::Serialize;

use crate::human;
use crate::view::{PayloadView, subject_digest};

/// One inbound record for people and scripts; never the whole subject ref.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ItemView {
    pub position: u64,
    pub record_id: String,
    pub origin: String,
    pub seq: u64,
    pub agreement_id: String,
    pub kind: &'static str,
    /// `ref:` and the first 8 bytes of the subject ref in hex; `null` when erased.
    pub subject: Option<String>,
    /// One line: `iud since 2024-01-01`, `pregnant, due 2026-09`, `retracts a ... record`.
    pub status: String,
    pub observed_on: Option<String>,
    pub issued_at: Option<String>,
    pub issued_at_ms: i64,
    pub supersedes: Option<String>,
    pub current: bool,
    pub erased: bool,
    /// A status that arrived after this node had sent the person's departure to its origin:
    /// kept, never current.
    pub after_departure: bool,
    /// At the home bureau, an arrival no status has been sent back for yet (the worklist).
    pub awaiting_answer: bool,
    pub arrived_at: String,
    pub arrived_at_ms: i64,
    /// `null` when erased.
    pub payload: Option<PayloadView>,
}

impl ItemView {
    pub fn from_item(it: &pb::InboxItem) -> ItemView {
        let payload = PayloadView::from_inbox(it.payload.as_ref());
        ItemView {
            position: it.position,
            record_id: hex::encode(&it.record_id),
            origin: it.origin.clone(),
            seq: it.seq,
            agreement_id: it.agreement_id.clone(),
            kind: crate::names::kind_name(it.kind),
            subject: (!it.subject_ref.is_empty()).then(|| subject_digest(&it.subject_ref)),
            status: match status(it.erased, payload.as_ref()) {
                // The worklist shows in the table too, not only in `--json`.
                s if it.awaiting_answer => format!("{s}, awaiting a status"),
                s => s,
            },
            observed_on: human::date(it.observed_on.as_ref()),
            issued_at: human::opt_instant(it.issued_at_ms),
            issued_at_ms: it.issued_at_ms,
            supersedes: (!it.supersedes.is_empty()).then(|| hex::encode(&it.supersedes)),
            current: it.current,
            erased: it.erased,
            after_departure: it.after_departure,
            awaiting_answer: it.awaiting_answer,
            arrived_at: human::instant(it.arrived_at_ms),
            arrived_at_ms: it.arrived_at_ms,
            payload,
        }
    }

    /// The first 12 hex digits of the record id.
    pub fn short_id(&self) -> &str {
        self.record_id.get(..12).unwrap_or(&self.record_id)
    }

    /// A table row: position, arrived, origin, kind, status, observed, current, erased,
    /// record, subject.
    pub fn row(&self) -> Vec<String> {
        vec![
            self.position.to_string(),
            self.arrived_at.clone(),
            self.origin.clone(),
            self.kind.to_owned(),
            self.status.clone(),
            self.observed_on.clone().unwrap_or_else(|| "-".into()),
            yes_no(self.current),
            yes_no(self.erased),
            self.short_id().to_owned(),
            self.subject.clone().unwrap_or_else(|| "-".into()),
        ]
    }

    pub const HEADER: [&'static str; 10] = [
        "POS", "ARRIVED", "ORIGIN", "KIND", "STATUS", "OBSERVED", "CURRENT", "ERASED", "RECORD",
        "SUBJECT",
    ];

    /// One line for `follow`.
    pub fn line(&self) -> String {
        let mut flags = Vec::new();
        if self.after_departure {
            flags.push("after departure");
        }
        if self.awaiting_answer {
            flags.push("awaiting a status");
        }
        if !self.current && !self.erased {
            flags.push("not current");
        }
        if self.erased {
            flags.push("erased");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(", "))
        };
        format!(
            "#{} {} from {} {}: {}{} observed {} record {} {}{flags}",
            self.position,
            self.arrived_at,
            self.origin,
            self.kind,
            self.status,
            if self.supersedes.is_some() {
                " (replaces an earlier record)"
            } else {
                ""
            },
            self.observed_on.as_deref().unwrap_or("-"),
            self.short_id(),
            self.subject.as_deref().unwrap_or("-"),
        )
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn status(erased: bool, payload: Option<&PayloadView>) -> String {
    match payload {
        Some(p) => p.summary(),
        None if erased => "erased at the end of its retention".into(),
        None => "-".into(),
    }
}

/// One item as `export` writes it (JSON Lines, and the CSV columns flattened from it). It
/// carries the whole subject ref in hex: the export is the feed for the bureau's own systems,
/// which key residents by that pseudonym.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportItem {
    pub position: u64,
    pub record_id: String,
    pub origin: String,
    pub seq: u64,
    pub agreement_id: String,
    pub kind: &'static str,
    /// The whole subject ref (32 bytes) in hex; `null` when erased.
    pub subject_ref: Option<String>,
    pub observed_on: Option<String>,
    pub issued_at: Option<String>,
    pub issued_at_ms: i64,
    pub supersedes: Option<String>,
    pub current: bool,
    pub erased: bool,
    /// A later retraction in this export withdrew this record (entered in error).
    pub withdrawn: bool,
    pub arrived_at: String,
    pub arrived_at_ms: i64,
    pub payload: Option<PayloadView>,
}

impl ExportItem {
    pub fn from_item(it: &pb::InboxItem, withdrawn: bool) -> ExportItem {
        ExportItem {
            position: it.position,
            record_id: hex::encode(&it.record_id),
            origin: it.origin.clone(),
            seq: it.seq,
            agreement_id: it.agreement_id.clone(),
            kind: crate::names::kind_name(it.kind),
            subject_ref: (!it.subject_ref.is_empty()).then(|| hex::encode(&it.subject_ref)),
            observed_on: human::date(it.observed_on.as_ref()),
            issued_at: human::opt_instant(it.issued_at_ms),
            issued_at_ms: it.issued_at_ms,
            supersedes: (!it.supersedes.is_empty()).then(|| hex::encode(&it.supersedes)),
            current: it.current,
            erased: it.erased,
            withdrawn,
            arrived_at: human::instant(it.arrived_at_ms),
            arrived_at_ms: it.arrived_at_ms,
            payload: PayloadView::from_inbox(it.payload.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arrival on the home bureau's worklist says so in the table, the follow line and JSON.
    #[test]
    fn an_arrival_awaiting_a_status_says_so() {
        let mut it = pb::InboxItem {
            position: 7,
            payload: Some(pb::inbox_item::Payload::Residence(pb::ResidenceNotice {
                event: pb::ResidenceEvent::Arrived as i32,
                month: Some(pb::YearMonth {
                    year: 2025,
                    month: 5,
                }),
            })),
            kind: pb::RecordKind::Residence as i32,
            current: true,
            ..Default::default()
        };
        let answered = ItemView::from_item(&it);
        assert!(!answered.status.contains("awaiting"), "{}", answered.status);
        it.awaiting_answer = true;
        let waiting = ItemView::from_item(&it);
        assert!(
            waiting.status.ends_with(", awaiting a status"),
            "{}",
            waiting.status
        );
        assert!(waiting.line().contains("awaiting a status"));
        let json = serde_json::to_value(&waiting).unwrap();
        assert_eq!(json["awaiting_answer"], true);
    }
}
