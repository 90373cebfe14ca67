//! `record`: one record by id from `Admin.GetRecord`, decoded with the domain's canonical
//! decoder, with its signature status. The subject is shown only as its short digest.

use anyhow::Context as _;
use interflow_core::pb;
use interflow_core::record::{DecodedRecord, RecordId};
use serde::Serialize;

use crate::commands::Why;
use crate::conn::Connection;
use crate::human;
use crate::view::{PayloadView, RecordView};
use crate::{Outcome, Report};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordReport {
    pub id: String,
    /// Whether the signature verifies under the origin's directory key now.
    pub signature_valid: bool,
    /// The payload was erased at the end of the agreement's retention period.
    pub erased: bool,
    /// The decoded record; absent when the body is erased or does not decode.
    pub record: Option<RecordView>,
    pub decode_error: Option<String>,
}

/// The fewest hex digits of a record id `record` accepts (tables show 12).
pub const MIN_ID_PREFIX: usize = 8;

/// What `record` was given: a whole id, or the start of one for the node to look up.
fn request(id: &str, why: &Why) -> anyhow::Result<pb::GetRecordRequest> {
    let id = id.trim();
    if let Ok(rid) = RecordId::from_hex(id) {
        return Ok(pb::GetRecordRequest {
            record_id: rid.0.to_vec(),
            record_id_prefix: String::new(),
            purpose: why.purpose as i32,
            case_ref: why.case_ref.clone(),
        });
    }
    anyhow::ensure!(
        (MIN_ID_PREFIX..64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "`{id}` is not a record id; pass the 64 hex digits, or the first {MIN_ID_PREFIX} or more as tables show them"
    );
    Ok(pb::GetRecordRequest {
        record_id: Vec::new(),
        record_id_prefix: id.to_ascii_lowercase(),
        purpose: why.purpose as i32,
        case_ref: why.case_ref.clone(),
    })
}

pub async fn record(conn: &Connection, id: &str, why: &Why) -> anyhow::Result<RecordReport> {
    let request = request(id, why)?;
    let resp = conn
        .unary("Admin.GetRecord", conn.admin().get_record(request.clone()))
        .await?;
    let rid = RecordId::try_from(resp.record_id.as_slice())
        .or_else(|_| RecordId::try_from(request.record_id.as_slice()))
        .context("the node answered without the record's id; this is a node bug, report it")?;
    let (record, decode_error) = match resp.record {
        Some(signed) if !signed.body.is_empty() => match DecodedRecord::decode(signed) {
            Ok(d) => (Some(RecordView::from_decoded(&d)), None),
            Err(e) => (None, Some(e.to_string())),
        },
        _ => (None, None),
    };
    Ok(RecordReport {
        id: rid.to_hex(),
        signature_valid: resp.signature_valid,
        erased: resp.erased,
        record,
        decode_error,
    })
}

impl Report for RecordReport {
    fn human(&self) -> String {
        let mut t = human::table(&["FIELD", "VALUE"]);
        let mut row = |k: &str, v: String| {
            t.add_row(vec![k.to_owned(), v]);
        };
        row("id", self.id.clone());
        row(
            "signature",
            if self.signature_valid {
                "valid under the origin's directory key".into()
            } else {
                "NOT VALID under the origin's directory key".into()
            },
        );
        if self.erased {
            row(
                "erased",
                "payload erased at the end of the retention period".into(),
            );
        }
        if let Some(e) = &self.decode_error {
            row("body", format!("does not decode: {e}"));
        }
        if let Some(r) = &self.record {
            row("channel", format!("{}->{}", r.origin, r.destination));
            row("seq", r.seq.to_string());
            row("prev hash", r.prev_hash.clone());
            row("issued at", r.issued_at.clone());
            row("agreement", r.agreement_id.clone());
            row("subject", r.subject.clone());
            row("kind", r.kind.to_owned());
            row(
                "supersedes",
                r.supersedes.clone().unwrap_or_else(|| "-".into()),
            );
            payload_rows(&r.payload, &mut row);
        }
        format!("{t}\n")
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(!self.signature_valid || self.decode_error.is_some())
    }
}

fn payload_rows(p: &PayloadView, row: &mut dyn FnMut(&str, String)) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match p {
        PayloadView::Pregnancy {
            state,
            observed_on,
            expected_delivery,
            event_date,
            prenatal_visits,
            service_point,
        } => {
            row("state", (*state).to_owned());
            row("observed on", opt(observed_on));
            row("expected delivery", opt(expected_delivery));
            row("event date", opt(event_date));
            row("prenatal visits", prenatal_visits.to_string());
            row("service point", service_point.clone());
        }
        PayloadView::Contraception {
            method,
            since,
            observed_on,
            service_point,
        } => {
            row("method", (*method).to_owned());
            row("since", opt(since));
            row("observed on", opt(observed_on));
            row("service point", service_point.clone());
        }
        PayloadView::Residence { event, month } => {
            row("residence", (*event).to_owned());
            row("month", opt(month));
        }
        PayloadView::Retraction { retracted_kind } => {
            row("retracts", format!("a {retracted_kind} record"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why() -> Why {
        Why {
            purpose: pb::Purpose::Correction,
            case_ref: "C-1".into(),
        }
    }

    #[test]
    fn a_record_is_asked_for_by_id_or_by_a_prefix_of_eight_or_more_digits() {
        let id = "ab".repeat(32);
        let r = request(&id, &why()).unwrap();
        assert_eq!((r.record_id.len(), r.record_id_prefix.as_str()), (32, ""));
        let r = request(" 0123456789AB ", &why()).unwrap();
        assert!(r.record_id.is_empty());
        assert_eq!(r.record_id_prefix, "0123456789ab");
        assert_eq!(
            request("012345678", &why()).unwrap().record_id_prefix,
            "012345678"
        );
        for bad in ["0123456", "0123456g", "", &"a".repeat(65)] {
            let e = request(bad, &why()).unwrap_err().to_string();
            assert!(
                e.contains("64 hex digits") && e.contains("8 or more"),
                "{e}"
            );
        }
    }
}
