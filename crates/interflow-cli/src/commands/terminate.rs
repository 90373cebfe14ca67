//! `agreement install FILE` and `agreement terminate ID`: agreements at runtime
//! (`Admin.InstallAgreement`, `Admin.TerminateAgreement`); for a termination the node signs,
//! keeps and sends the notice.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TerminateReport {
    pub agreement_id: String,
    pub terminated_at_ms: i64,
    pub partner_has_it: bool,
}

pub async fn terminate(conn: &Connection, agreement_id: &str) -> anyhow::Result<TerminateReport> {
    let r = conn
        .unary(
            "Admin.TerminateAgreement",
            conn.admin()
                .terminate_agreement(pb::TerminateAgreementRequest {
                    agreement_id: agreement_id.to_owned(),
                }),
        )
        .await?;
    Ok(TerminateReport {
        agreement_id: agreement_id.to_owned(),
        terminated_at_ms: r.terminated_at_ms,
        partner_has_it: r.partner_has_it,
    })
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstallReport {
    pub agreement_id: String,
    pub peer: String,
    pub installed_now: bool,
}

pub async fn install(
    conn: &Connection,
    agreement: pb::SignedAgreement,
    pseudonym_key: &std::path::Path,
) -> anyhow::Result<InstallReport> {
    let r = conn
        .unary(
            "Admin.InstallAgreement",
            conn.admin().install_agreement(pb::InstallAgreementRequest {
                agreement: Some(agreement),
                pseudonym_key_file: pseudonym_key.to_string_lossy().into_owned(),
            }),
        )
        .await?;
    Ok(InstallReport {
        agreement_id: r.agreement_id,
        peer: r.peer,
        installed_now: r.installed_now,
    })
}

impl Report for InstallReport {
    fn human(&self) -> String {
        if self.installed_now {
            format!(
                "agreement {} with {} installed and in force; install it at {} too\n",
                self.agreement_id, self.peer, self.peer
            )
        } else {
            format!(
                "agreement {} with {} was installed already; nothing changed\n",
                self.agreement_id, self.peer
            )
        }
    }
}

impl Report for TerminateReport {
    fn human(&self) -> String {
        let partner = if self.partner_has_it {
            "the partner has the notice".to_owned()
        } else {
            format!(
                "the partner could not be reached: run `interflowctl agreement terminate {}` again",
                self.agreement_id
            )
        };
        format!(
            "agreement {} terminated at {}; {partner}\n",
            self.agreement_id,
            human::instant(self.terminated_at_ms)
        )
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgreementRow {
    pub agreement_id: String,
    pub party_a: String,
    pub party_b: String,
    /// `active`, `terminated`, `expired` or `not_yet_valid`.
    pub state: &'static str,
    pub valid_from: String,
    pub valid_until: String,
    pub terminated_at: Option<String>,
    pub grace_end: Option<String>,
    pub retention_days: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListReport {
    pub agreements: Vec<AgreementRow>,
}

fn state_name(s: pb::AgreementState) -> &'static str {
    match s {
        pb::AgreementState::Active => "active",
        pb::AgreementState::Terminated => "terminated",
        pb::AgreementState::Expired => "expired",
        pb::AgreementState::NotYetValid => "not_yet_valid",
        pb::AgreementState::Unspecified => "unknown",
    }
}

pub async fn list(conn: &Connection) -> anyhow::Result<ListReport> {
    let r = conn
        .unary(
            "Admin.ListAgreements",
            conn.admin().list_agreements(pb::ListAgreementsRequest {}),
        )
        .await?;
    let agreements = r
        .agreements
        .into_iter()
        .map(|a| AgreementRow {
            state: state_name(a.state()),
            agreement_id: a.agreement_id,
            party_a: a.party_a,
            party_b: a.party_b,
            valid_from: human::instant(a.valid_from_ms),
            valid_until: human::instant(a.valid_until_ms),
            terminated_at: human::opt_instant(a.terminated_at_ms),
            grace_end: human::opt_instant(a.grace_end_ms),
            retention_days: a.retention_days,
        })
        .collect();
    Ok(ListReport { agreements })
}

impl Report for ListReport {
    fn human(&self) -> String {
        let mut t = human::table(&[
            "AGREEMENT",
            "PARTIES",
            "STATE",
            "VALID UNTIL",
            "TERMINATED",
            "GRACE ENDS",
            "RETENTION",
        ]);
        for a in &self.agreements {
            t.add_row(vec![
                a.agreement_id.clone(),
                format!("{} {}", a.party_a, a.party_b),
                a.state.to_owned(),
                a.valid_until.clone(),
                a.terminated_at.clone().unwrap_or_else(|| "-".into()),
                a.grace_end.clone().unwrap_or_else(|| "-".into()),
                format!("{} days", a.retention_days),
            ]);
        }
        format!("{t}\n")
    }
}
