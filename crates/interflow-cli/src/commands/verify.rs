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
    /// With `--with-peers`: what each peer holds of this node's audit chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerAnchorView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerAnchorView {
    pub peer: String,
    /// `matches`, `mismatch`, `none`, `unreachable` or `bad-statement`.
    pub state: &'static str,
    /// The audit index the peer holds a head for (0 when none).
    pub audit_seq: u64,
    /// The hash the peer holds, hex.
    pub audit_hash: String,
    pub issued_at_ms: i64,
    pub problem: String,
}

fn anchor_state(s: i32) -> &'static str {
    match pb::AnchorState::try_from(s).unwrap_or_default() {
        pb::AnchorState::Matches => "matches",
        pb::AnchorState::Mismatch => "mismatch",
        pb::AnchorState::None => "none",
        pb::AnchorState::Unreachable => "unreachable",
        pb::AnchorState::BadStatement => "bad-statement",
        pb::AnchorState::Unspecified => "unknown",
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProblemView {
    pub origin: String,
    pub destination: String,
    pub seq: u64,
    pub problem: String,
}

pub async fn verify(conn: &Connection, with_peers: bool) -> anyhow::Result<VerifyReport> {
    let r = conn
        .unary(
            "Admin.VerifyLog",
            conn.admin().verify_log(pb::VerifyLogRequest { with_peers }),
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
        peers: r
            .peers
            .into_iter()
            .map(|a| PeerAnchorView {
                peer: a.peer,
                state: anchor_state(a.state),
                audit_seq: a.audit_seq,
                audit_hash: hex::encode(&a.audit_hash),
                issued_at_ms: a.issued_at_ms,
                problem: a.problem,
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
        if !self.peers.is_empty() {
            let mismatches = self
                .peers
                .iter()
                .filter(|p| matches!(p.state, "mismatch" | "bad-statement"))
                .count();
            s.push_str(&if mismatches == 0 {
                "peers: no peer holds an audit head that contradicts this node's audit log\n"
                    .to_owned()
            } else {
                format!(
                    "peers: AUDIT LOG MISMATCH with {}: the audit log on disk is not the one this node signed to them\n",
                    human::count(mismatches as u64, "peer")
                )
            });
            let mut t = human::table(&["PEER", "AUDIT HEAD", "STATE", "PROBLEM"]);
            for p in &self.peers {
                t.add_row(vec![
                    p.peer.clone(),
                    if p.audit_seq == 0 {
                        "-".to_owned()
                    } else {
                        format!(
                            "{} {}",
                            p.audit_seq,
                            &p.audit_hash[..p.audit_hash.len().min(12)]
                        )
                    },
                    p.state.to_owned(),
                    p.problem.clone(),
                ]);
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
            peers: vec![],
        };
        assert_eq!(r.outcome(), Outcome::Problem);
        assert!(r.human().contains("310115->110105"));
    }

    #[test]
    fn a_peer_holding_another_audit_head_fails_the_check_and_says_so() {
        let peer = |state: &'static str, problem: &str| PeerAnchorView {
            peer: "110105".into(),
            state,
            audit_seq: 7,
            audit_hash: "ab".repeat(32),
            issued_at_ms: 1,
            problem: problem.into(),
        };
        let r = VerifyReport {
            ok: false,
            records_checked: 10,
            audit_entries_checked: 9,
            problems: vec![],
            peers: vec![peer("mismatch", "the audit log was rewritten")],
        };
        assert_eq!(r.outcome(), Outcome::Problem);
        let text = r.human();
        assert!(text.contains("AUDIT LOG MISMATCH with 1 peer"), "{text}");
        assert!(text.contains("the audit log was rewritten"), "{text}");
        let fine = VerifyReport {
            ok: true,
            peers: vec![peer("matches", "")],
            ..r
        };
        assert_eq!(fine.outcome(), Outcome::Success);
        assert!(
            fine.human()
                .contains("no peer holds an audit head that contradicts")
        );
    }
}
