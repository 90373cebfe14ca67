//! `federation`: the federation as the node has installed it (`Admin.Federation`): the
//! directory's serial, issue and expiry times and where it came from, the counts, and the
//! last reload's outcome. Exits 1 while the directory is expired or the last reload failed.

use interflow_core::pb;
use serde::Serialize;

use crate::conn::Connection;
use crate::human;
use crate::{Outcome, Report};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FederationReport {
    pub directory_serial: u64,
    pub directory_issued_at: String,
    /// `None`: the directory does not expire.
    pub directory_expires_at: Option<String>,
    pub directory_expired: bool,
    pub directory_source: String,
    pub members: u32,
    pub agreements: u32,
    /// `None`: no reload since start.
    pub last_reload_at: Option<String>,
    /// Why the last reload kept the old state; `None` when it installed.
    pub last_reload_error: Option<String>,
    pub rollbacks_refused: u64,
}

pub async fn federation(conn: &Connection) -> anyhow::Result<FederationReport> {
    let r = conn
        .unary(
            "Admin.Federation",
            conn.admin().federation(pb::FederationRequest {}),
        )
        .await?;
    Ok(report(r))
}

pub fn report(r: pb::FederationResponse) -> FederationReport {
    let at = |ms: i64| (ms != 0).then(|| human::instant(ms));
    FederationReport {
        directory_serial: r.directory_serial,
        directory_issued_at: human::instant(r.directory_issued_at_ms),
        directory_expires_at: at(r.directory_expires_at_ms),
        directory_expired: r.directory_expired,
        directory_source: r.directory_source,
        members: r.members,
        agreements: r.agreements,
        last_reload_at: at(r.last_reload_at_ms),
        last_reload_error: (!r.last_reload_error.is_empty()).then_some(r.last_reload_error),
        rollbacks_refused: r.rollbacks_refused,
    }
}

impl Report for FederationReport {
    fn human(&self) -> String {
        let expiry = match (&self.directory_expires_at, self.directory_expired) {
            (Some(t), true) => format!("EXPIRED at {t}: publish a fresh directory"),
            (Some(t), false) => format!("expires {t}"),
            (None, _) => "does not expire".into(),
        };
        let reload = match (&self.last_reload_at, &self.last_reload_error) {
            (None, _) => "none since start".to_owned(),
            (Some(t), None) => format!("installed at {t}"),
            (Some(t), Some(e)) => format!("FAILED at {t}, old state kept: {e}"),
        };
        format!(
            "directory: serial {} issued {} ({}), {expiry}\nmembers: {}\nagreements: {}\nrollbacks refused: {}\nlast reload: {reload}\n",
            self.directory_serial,
            self.directory_issued_at,
            self.directory_source,
            self.members,
            self.agreements,
            self.rollbacks_refused,
        )
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(self.directory_expired || self.last_reload_error.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_directory_or_a_failed_reload_is_a_problem() {
        let ok = report(pb::FederationResponse {
            directory_serial: 3,
            directory_source: "peer 110105".into(),
            members: 4,
            ..Default::default()
        });
        assert_eq!(ok.outcome().exit_code(), 0);
        assert!(ok.human().contains("serial 3"), "{}", ok.human());
        assert!(ok.human().contains("does not expire"));
        let expired = report(pb::FederationResponse {
            directory_expires_at_ms: 1_780_272_000_000,
            directory_expired: true,
            ..Default::default()
        });
        assert_eq!(expired.outcome().exit_code(), 1);
        assert!(expired.human().contains("EXPIRED"));
        let failed = report(pb::FederationResponse {
            last_reload_at_ms: 1_780_272_000_000,
            last_reload_error: "rollback".into(),
            ..Default::default()
        });
        assert_eq!(failed.outcome().exit_code(), 1);
        assert!(failed.human().contains("old state kept: rollback"));
    }
}
