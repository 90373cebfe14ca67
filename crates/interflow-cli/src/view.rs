//! Records as the CLI shows them, in JSON and in tables. A record body is decoded with the
//! domain's canonical decoder; the subject ref is shown only as the short digest the node's
//! audit log uses (`ref:` and the first 8 bytes in hex), never in full.

use interflow_core::pb;
use interflow_core::record::{DecodedRecord, RecordId};
use serde::Serialize;

use crate::human;

/// The short form of a subject ref: `ref:` and its first 8 bytes in hex, as in the audit log.
pub fn subject_digest(subject_ref: &[u8]) -> String {
    let n = subject_ref.len().min(8);
    format!("ref:{}", hex::encode(&subject_ref[..n]))
}

/// A decoded record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordView {
    pub id: String,
    pub origin: String,
    pub destination: String,
    pub seq: u64,
    pub prev_hash: String,
    pub agreement_id: String,
    /// Short digest of the subject ref, never the whole ref.
    pub subject: String,
    pub issued_at: String,
    pub issued_at_ms: i64,
    pub kind: &'static str,
    pub supersedes: Option<String>,
    pub payload: PayloadView,
}

/// A record's payload; `type` tells which.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PayloadView {
    Pregnancy {
        state: String,
        observed_on: Option<String>,
        expected_delivery: Option<String>,
        event_date: Option<String>,
        prenatal_visits: u32,
        service_point: String,
    },
    Contraception {
        method: String,
        since: Option<String>,
        observed_on: Option<String>,
        service_point: String,
    },
    Residence {
        /// `arrived` or `departed`.
        event: &'static str,
        month: Option<String>,
    },
    Retraction {
        retracted_kind: &'static str,
    },
}

impl PayloadView {
    /// The payload of an inbox item: the same messages as a record body's.
    pub fn from_inbox(p: Option<&pb::inbox_item::Payload>) -> Option<PayloadView> {
        use pb::inbox_item::Payload as I;
        use pb::record_body::Payload as P;
        let body = match p? {
            I::Pregnancy(p) => P::Pregnancy(p.clone()),
            I::Contraception(c) => P::Contraception(c.clone()),
            I::Residence(r) => P::Residence(*r),
            I::Retraction(r) => P::Retraction(*r),
        };
        Some(PayloadView::from_body(Some(&body)))
    }

    fn from_body(p: Option<&pb::record_body::Payload>) -> PayloadView {
        use pb::record_body::Payload as P;
        match p {
            Some(P::Pregnancy(p)) => PayloadView::Pregnancy {
                state: crate::names::state_name(p.state),
                observed_on: human::date(p.observed_on.as_ref()),
                expected_delivery: human::month(p.expected_delivery.as_ref()),
                event_date: human::date(p.event_date.as_ref()),
                prenatal_visits: p.prenatal_visits,
                service_point: p.service_point.clone(),
            },
            Some(P::Contraception(c)) => PayloadView::Contraception {
                method: crate::names::method_name(c.method),
                since: human::date(c.since.as_ref()),
                observed_on: human::date(c.observed_on.as_ref()),
                service_point: c.service_point.clone(),
            },
            Some(P::Residence(r)) => PayloadView::Residence {
                event: match pb::ResidenceEvent::try_from(r.event) {
                    Ok(pb::ResidenceEvent::Arrived) => "arrived",
                    Ok(pb::ResidenceEvent::Departed) => "departed",
                    _ => "unknown",
                },
                month: human::month(r.month.as_ref()),
            },
            Some(P::Retraction(r)) => PayloadView::Retraction {
                retracted_kind: crate::names::kind_name(r.kind),
            },
            // `DecodedRecord::decode` refuses a body without a payload.
            None => PayloadView::Retraction {
                retracted_kind: "unknown",
            },
        }
    }

    /// One line for a table: `pregnant, due 2026-10, 2 prenatal visits`, `iud since 2024-05-20`.
    pub fn summary(&self) -> String {
        match self {
            PayloadView::Pregnancy {
                state,
                expected_delivery,
                event_date,
                prenatal_visits,
                ..
            } => {
                let mut s = state.replace('_', " ");
                if let Some(m) = expected_delivery {
                    s.push_str(&format!(", due {m}"));
                }
                if let Some(d) = event_date {
                    s.push_str(&format!(" on {d}"));
                }
                if *prenatal_visits > 0 {
                    s.push_str(&format!(", {prenatal_visits} prenatal visits"));
                }
                s
            }
            PayloadView::Contraception { method, since, .. } => match since {
                Some(d) => format!("{} since {d}", method.replace('_', " ")),
                None => method.replace('_', " "),
            },
            PayloadView::Residence { event, month } => match month {
                Some(m) => format!("{event} {m}"),
                None => (*event).to_owned(),
            },
            PayloadView::Retraction { retracted_kind } => {
                format!("retracts a {retracted_kind} record")
            }
        }
    }

    pub fn observed_on(&self) -> Option<&str> {
        match self {
            PayloadView::Pregnancy { observed_on, .. }
            | PayloadView::Contraception { observed_on, .. } => observed_on.as_deref(),
            PayloadView::Residence { .. } | PayloadView::Retraction { .. } => None,
        }
    }

    pub fn service_point(&self) -> Option<&str> {
        match self {
            PayloadView::Pregnancy { service_point, .. }
            | PayloadView::Contraception { service_point, .. } => Some(service_point),
            PayloadView::Residence { .. } | PayloadView::Retraction { .. } => None,
        }
    }
}

impl RecordView {
    pub fn from_decoded(d: &DecodedRecord) -> RecordView {
        let body = d.body();
        RecordView {
            id: d.id().to_hex(),
            origin: body.origin.clone(),
            destination: body.destination.clone(),
            seq: body.seq,
            prev_hash: hex::encode(&body.prev_hash),
            agreement_id: body.agreement_id.clone(),
            subject: subject_digest(&body.subject_ref),
            issued_at: human::instant(body.issued_at_ms),
            issued_at_ms: body.issued_at_ms,
            kind: d.kind().as_str(),
            supersedes: d.supersedes().map(|r| r.to_hex()),
            payload: PayloadView::from_body(body.payload.as_ref()),
        }
    }
}

/// A record, or why its body could not be decoded.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RecordEntry {
    Record(Box<RecordView>),
    Undecodable { id: String, decode_error: String },
}

impl RecordEntry {
    pub fn from_signed(signed: pb::SignedRecord) -> RecordEntry {
        let id = RecordId::of_body(&signed.body).to_hex();
        match DecodedRecord::decode(signed) {
            Ok(d) => RecordEntry::Record(Box::new(RecordView::from_decoded(&d))),
            Err(e) => RecordEntry::Undecodable {
                id,
                decode_error: e.to_string(),
            },
        }
    }

    pub fn id(&self) -> &str {
        match self {
            RecordEntry::Record(r) => &r.id,
            RecordEntry::Undecodable { id, .. } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_digest_shows_only_eight_bytes() {
        let r = [0xab; 32];
        let d = subject_digest(&r);
        assert_eq!(d, "ref:abababababababab");
        assert!(!d.contains(&hex::encode(r)));
        assert_eq!(subject_digest(&[1, 2]), "ref:0102");
    }

    #[test]
    fn summaries_read_as_sentences() {
        let p = PayloadView::Pregnancy {
            state: "pregnant".into(),
            observed_on: Some("2026-03-10".into()),
            expected_delivery: Some("2026-10".into()),
            event_date: None,
            prenatal_visits: 2,
            service_point: "3101150042".into(),
        };
        assert_eq!(p.summary(), "pregnant, due 2026-10, 2 prenatal visits");
        let c = PayloadView::Contraception {
            method: "oral_pill".into(),
            since: Some("2024-05-20".into()),
            observed_on: None,
            service_point: "3101150042".into(),
        };
        assert_eq!(c.summary(), "oral pill since 2024-05-20");
        let r = PayloadView::Retraction {
            retracted_kind: "pregnancy",
        };
        assert_eq!(r.summary(), "retracts a pregnancy record");
    }
}
