//! `lookup`: a person's current status per agreement and timeline from `Admin.Lookup`. The
//! national ID is checked here, sent once and never printed: only the masked form comes back.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;
use crate::view::RecordEntry;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookupReport {
    /// The ID masked to its last four characters.
    pub masked_id: String,
    /// The current record per agreement and kind, after corrections and retractions.
    pub current: Vec<CurrentStatus>,
    /// Every record of the person, oldest first by observed date.
    pub timeline: Vec<RecordEntry>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CurrentStatus {
    pub agreement_id: String,
    pub peer: String,
    pub kind: &'static str,
    pub record: Option<RecordEntry>,
}

/// `national_id` was checked (and read from standard input for `--id -`) by the caller.
pub async fn lookup(
    conn: &Connection,
    national_id: &str,
    why: &crate::commands::Why,
) -> anyhow::Result<LookupReport> {
    let resp = conn
        .unary(
            "Admin.Lookup",
            conn.admin().lookup(pb::LookupRequest {
                national_id: national_id.trim().to_owned(),
                purpose: why.purpose as i32,
                case_ref: why.case_ref.clone(),
            }),
        )
        .await?;
    Ok(LookupReport {
        masked_id: resp.masked_id,
        current: resp
            .current
            .into_iter()
            .map(|c| CurrentStatus {
                agreement_id: c.agreement_id,
                peer: c.peer,
                kind: crate::names::kind_name(c.kind),
                record: c.current.map(RecordEntry::from_signed),
            })
            .collect(),
        timeline: resp
            .timeline
            .into_iter()
            .map(RecordEntry::from_signed)
            .collect(),
    })
}

impl Report for LookupReport {
    fn human(&self) -> String {
        let mut s = format!("person {}\n", self.masked_id);
        if self.current.is_empty() && self.timeline.is_empty() {
            s.push_str("no records of this person under any agreement of this node\n");
            return s;
        }
        let mut cur = human::table(&[
            "AGREEMENT",
            "PEER",
            "KIND",
            "CURRENT STATUS",
            "OBSERVED",
            "SERVICE POINT",
            "RECORD",
        ]);
        for c in &self.current {
            let (status, observed, point, id) = match &c.record {
                Some(RecordEntry::Record(r)) => (
                    r.payload.summary(),
                    r.payload.observed_on().unwrap_or("-").to_owned(),
                    r.payload.service_point().unwrap_or("-").to_owned(),
                    r.id.get(..12).unwrap_or("").to_owned(),
                ),
                Some(RecordEntry::Undecodable { id, decode_error }) => (
                    format!("undecodable: {decode_error}"),
                    "-".into(),
                    "-".into(),
                    id.get(..12).unwrap_or("").to_owned(),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            cur.add_row(vec![
                c.agreement_id.clone(),
                c.peer.clone(),
                c.kind.to_owned(),
                status,
                observed,
                point,
                id,
            ]);
        }
        s.push_str(&format!("current status\n{cur}\n"));
        let mut tl = human::table(&[
            "OBSERVED",
            "CHANNEL",
            "SEQ",
            "KIND",
            "STATUS",
            "ISSUED",
            "RECORD",
            "SUPERSEDES",
        ]);
        for e in &self.timeline {
            match e {
                RecordEntry::Record(r) => tl.add_row(vec![
                    r.payload.observed_on().unwrap_or("-").to_owned(),
                    format!("{}->{}", r.origin, r.destination),
                    r.seq.to_string(),
                    r.kind.to_owned(),
                    r.payload.summary(),
                    r.issued_at.clone(),
                    r.id.get(..12).unwrap_or("").to_owned(),
                    r.supersedes
                        .as_deref()
                        .and_then(|s| s.get(..12))
                        .unwrap_or("-")
                        .to_owned(),
                ]),
                RecordEntry::Undecodable { id, decode_error } => tl.add_row(vec![
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    format!("undecodable: {decode_error}"),
                    "-".to_owned(),
                    id.get(..12).unwrap_or("").to_owned(),
                    "-".to_owned(),
                ]),
            };
        }
        s.push_str(&format!(
            "timeline ({})\n{tl}\n",
            human::count(self.timeline.len() as u64, "record")
        ));
        s
    }
}
