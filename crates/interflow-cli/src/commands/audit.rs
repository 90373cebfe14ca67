//! `audit`: the node's audit log from `Admin.AuditLog`, optionally since a time: the newest
//! entries first (`--oldest-first` for the other end), and how many there are in all.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditReport {
    pub entries: Vec<AuditEntryView>,
    /// Entries in the range in all; `entries` holds at most `--limit` of them.
    pub total: u64,
    /// Whether `entries` are newest first.
    pub newest_first: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntryView {
    pub index: u64,
    pub at: String,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub subjects: Vec<String>,
    pub prev_hash: String,
    /// Why a person's data was read (empty for other calls and older entries).
    pub purpose: String,
    /// The caller's case reference; empty when none.
    pub case_ref: String,
    /// Counts or a range, e.g. `items:3 stored:2 duplicate:0 refused:1`.
    pub detail: String,
    /// Why the call was refused; empty when it was answered.
    pub refused: String,
}

pub async fn audit(
    conn: &Connection,
    since_ms: i64,
    limit: u32,
    newest_first: bool,
) -> anyhow::Result<AuditReport> {
    let r = conn
        .unary(
            "Admin.AuditLog",
            conn.admin().audit_log(pb::AuditLogRequest {
                since_ms,
                limit,
                newest_first,
            }),
        )
        .await?;
    Ok(AuditReport {
        total: r.total.max(r.entries.len() as u64),
        newest_first,
        entries: r
            .entries
            .into_iter()
            .map(|e| AuditEntryView {
                index: e.index,
                at: human::instant(e.at_ms),
                at_ms: e.at_ms,
                actor: e.actor,
                action: e.action,
                subjects: e.subjects,
                prev_hash: hex::encode(e.prev_hash),
                purpose: e.purpose,
                case_ref: e.case_ref,
                detail: e.detail,
                refused: e.refused,
            })
            .collect(),
    })
}

/// Purpose and case, counts, or the refusal, in one cell; `-` when there is none.
fn why(e: &AuditEntryView) -> String {
    let mut parts = Vec::new();
    if !e.refused.is_empty() {
        parts.push(format!("refused: {}", e.refused));
    }
    if !e.purpose.is_empty() {
        parts.push(e.purpose.clone());
    }
    if !e.case_ref.is_empty() {
        parts.push(format!("case {}", e.case_ref));
    }
    if !e.detail.is_empty() {
        parts.push(e.detail.clone());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

impl Report for AuditReport {
    fn human(&self) -> String {
        if self.entries.is_empty() {
            return "no audit entries in that range\n".into();
        }
        let mut t = human::table(&["#", "AT", "ACTOR", "ACTION", "SUBJECTS", "WHY / RESULT"]);
        for e in &self.entries {
            let subjects = match e.subjects.len() {
                0 => "-".to_owned(),
                1..=3 => e.subjects.join(", "),
                n => format!("{}, ... ({n} in all)", e.subjects[..3].join(", ")),
            };
            t.add_row(vec![
                e.index.to_string(),
                e.at.clone(),
                e.actor.clone(),
                e.action.clone(),
                subjects,
                why(e),
            ]);
        }
        let shown = self.entries.len() as u64;
        if shown < self.total {
            format!(
                "{t}\n{shown} of {} entries, {}; raise --limit or narrow --since for more\n",
                self.total,
                if self.newest_first {
                    "newest first"
                } else {
                    "oldest first"
                }
            )
        } else {
            format!("{t}\n{}\n", human::count(shown, "entry"))
        }
    }
}
