//! `agreement terminate ID`: ends an agreement at the node (`Admin.TerminateAgreement`); the
//! node signs, keeps and sends the termination notice.

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
