//! `disclosure`: for one person, every exchange of their records through this node and every
//! audited read of them (`Admin.Disclosure`). The national ID is checked here and never printed.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DisclosureReport {
    pub masked_id: String,
    pub exchanges: Vec<ExchangeView>,
    pub reads: Vec<ReadView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExchangeView {
    pub record_id: String,
    pub direction: &'static str,
    pub origin: String,
    pub destination: String,
    pub seq: u64,
    pub kind: &'static str,
    pub issued_at: String,
    pub agreement_id: String,
    pub legal_basis: String,
    pub acknowledged: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReadView {
    pub audit_index: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    /// Why the person's data was read (empty in entries written before purposes).
    pub purpose: String,
    pub case_ref: String,
}

/// `national_id` was checked (and read from standard input for `--id -`) by the caller.
pub async fn disclosure(
    conn: &Connection,
    national_id: &str,
    why: &crate::commands::Why,
) -> anyhow::Result<DisclosureReport> {
    let r = conn
        .unary(
            "Admin.Disclosure",
            conn.admin().disclosure(pb::DisclosureRequest {
                national_id: national_id.trim().to_owned(),
                purpose: why.purpose as i32,
                case_ref: why.case_ref.clone(),
            }),
        )
        .await?;
    Ok(DisclosureReport {
        masked_id: r.masked_id,
        exchanges: r
            .exchanges
            .into_iter()
            .map(|e| {
                let outbound = e.direction == pb::Direction::Outbound as i32;
                ExchangeView {
                    record_id: hex::encode(&e.record_id),
                    direction: if outbound { "sent" } else { "received" },
                    origin: e.origin,
                    destination: e.destination,
                    seq: e.seq,
                    kind: crate::names::kind_name(e.kind),
                    issued_at: human::instant(e.issued_at_ms),
                    agreement_id: e.agreement_id,
                    legal_basis: match pb::LegalBasisKind::try_from(e.legal_basis) {
                        Ok(pb::LegalBasisKind::StatutoryDuty) => {
                            format!("statutory duty ({})", e.statute_reference)
                        }
                        Ok(pb::LegalBasisKind::Consent) => "consent".into(),
                        _ => "unknown".into(),
                    },
                    acknowledged: outbound.then_some(e.acknowledged),
                }
            })
            .collect(),
        reads: r
            .reads
            .into_iter()
            .map(|e| ReadView {
                audit_index: e.audit_index,
                at: human::instant(e.at_ms),
                actor: e.actor,
                action: e.action,
                purpose: e.purpose,
                case_ref: e.case_ref,
            })
            .collect(),
    })
}

impl Report for DisclosureReport {
    fn human(&self) -> String {
        let mut s = format!(
            "person {}: {}, {}\n",
            self.masked_id,
            human::count(self.exchanges.len() as u64, "exchange"),
            human::count(self.reads.len() as u64, "audited read")
        );
        if !self.exchanges.is_empty() {
            let mut t = human::table(&[
                "ISSUED",
                "DIRECTION",
                "CHANNEL",
                "SEQ",
                "KIND",
                "AGREEMENT",
                "LEGAL BASIS",
                "ACKED",
                "RECORD",
            ]);
            for e in &self.exchanges {
                t.add_row(vec![
                    e.issued_at.clone(),
                    e.direction.to_owned(),
                    format!("{}->{}", e.origin, e.destination),
                    e.seq.to_string(),
                    e.kind.to_owned(),
                    e.agreement_id.clone(),
                    e.legal_basis.clone(),
                    match e.acknowledged {
                        Some(true) => "yes".into(),
                        Some(false) => "no".into(),
                        None => "-".into(),
                    },
                    e.record_id.chars().take(12).collect(),
                ]);
            }
            s.push_str(&format!("{t}\n"));
        }
        if !self.reads.is_empty() {
            let mut t = human::table(&["AT", "WHO", "WHAT", "WHY", "CASE", "AUDIT #"]);
            for r in &self.reads {
                let or_dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                t.add_row(vec![
                    r.at.clone(),
                    r.actor.clone(),
                    r.action.clone(),
                    or_dash(&r.purpose),
                    or_dash(&r.case_ref),
                    r.audit_index.to_string(),
                ]);
            }
            s.push_str(&format!("{t}\n"));
        }
        s
    }
}
