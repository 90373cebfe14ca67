//! `verify`: the node re-checks its log (`Admin.VerifyLog`); any inconsistency is a problem
//! and exits 1.

use interflow_core::pb;
use serde::Serialize;

use crate::conn::Connection;
use crate::human;
use crate::{Outcome, Report};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    pub ok: bool,
    pub records_checked: u64,
    pub audit_entries_checked: u64,
    pub problems: Vec<ProblemView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProblemView {
    pub origin: String,
    pub destination: String,
    pub seq: u64,
    pub problem: String,
}

pub async fn verify(conn: &Connection) -> anyhow::Result<VerifyReport> {
    let r = conn
        .unary(
            "Admin.VerifyLog",
            conn.admin().verify_log(pb::VerifyLogRequest {}),
        )
        .await?;
    Ok(VerifyReport {
        ok: r.ok && r.problems.is_empty(),
        records_checked: r.records_checked,
        audit_entries_checked: r.audit_entries_checked,
        problems: r
            .problems
            .into_iter()
            .map(|p| ProblemView {
                origin: p.origin,
                destination: p.destination,
                seq: p.seq,
                problem: p.problem,
            })
            .collect(),
    })
}

impl Report for VerifyReport {
    fn human(&self) -> String {
        let mut s = format!(
            "checked {} records and {} audit entries: {}\n",
            self.records_checked,
            self.audit_entries_checked,
            if self.ok {
                "every signature, chain link, index entry and the audit chain are consistent"
                    .to_owned()
            } else {
                human::count(self.problems.len() as u64, "problem")
            }
        );
        if !self.problems.is_empty() {
            let mut t = human::table(&["CHANNEL", "SEQ", "PROBLEM"]);
            for p in &self.problems {
                let channel = if p.origin.is_empty() {
                    "audit log / index".to_owned()
                } else {
                    format!("{}->{}", p.origin, p.destination)
                };
                t.add_row(vec![channel, p.seq.to_string(), p.problem.clone()]);
            }
            s.push_str(&format!("{t}\n"));
        }
        s
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(!self.ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_problems_fail_the_check() {
        let r = VerifyReport {
            ok: false,
            records_checked: 10,
            audit_entries_checked: 3,
            problems: vec![ProblemView {
                origin: "310115".into(),
                destination: "110105".into(),
                seq: 4,
                problem: "chain link broken".into(),
            }],
        };
        assert_eq!(r.outcome(), Outcome::Problem);
        assert!(r.human().contains("310115->110105"));
    }
}
