//! `inbox match`: national IDs, one per line from a file or standard input (never from an
//! argument, so they stay out of shell history and process lists), streamed to `Inbox.Match`.
//! The answer names residents by input line number; no ID is ever printed or put in an error.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::Context as _;
use interflow_core::pb;
use serde::Serialize;

use super::args::MatchPurpose;
use super::item::ItemView;
use crate::conn::Connection;
use crate::{Outcome, Report, human};

/// IDs per `MatchRequest` message.
const CHUNK: usize = 1000;

/// An ID and the line it was read from (from 1). Blank lines are skipped but counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLine {
    pub line: u32,
    pub id: String,
}

/// Reads `--ids`: a file, or `-` for `stdin`.
pub fn read_ids(path: &Path, stdin: &mut dyn BufRead) -> anyhow::Result<Vec<IdLine>> {
    let lines = if path == Path::new("-") {
        parse_lines(stdin).context("reading national ids from standard input")?
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("opening the id file `{}`", path.display()))?;
        parse_lines(&mut std::io::BufReader::new(f))
            .with_context(|| format!("reading the id file `{}`", path.display()))?
    };
    anyhow::ensure!(
        !lines.is_empty(),
        "no national ids to match; give one per line, e.g. `interflowctl inbox match --ids ids.txt --purpose service-continuity`"
    );
    Ok(lines)
}

fn parse_lines(input: &mut dyn BufRead) -> std::io::Result<Vec<IdLine>> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut n = 0u32;
    loop {
        buf.clear();
        if input.read_line(&mut buf)? == 0 {
            return Ok(out);
        }
        n += 1;
        let id = buf.trim();
        if !id.is_empty() {
            out.push(IdLine {
                line: n,
                id: id.to_owned(),
            });
        }
    }
}

/// The answer of `inbox match`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatchReport {
    pub purpose: &'static str,
    /// Non-blank lines sent.
    pub ids_sent: u32,
    /// Line numbers of IDs that are not valid resident ID numbers.
    pub invalid_lines: Vec<u32>,
    /// Residents with inbound records, by line number.
    pub matches: Vec<MatchLine>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatchLine {
    pub line: u32,
    pub statuses: Vec<MatchStatus>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatchStatus {
    pub agreement_id: String,
    pub peer: String,
    pub kind: &'static str,
    pub current: Option<ItemView>,
}

fn purpose_name(p: MatchPurpose) -> &'static str {
    match p {
        MatchPurpose::ServiceContinuity => "service-continuity",
        MatchPurpose::OwnRequest => "own-request",
        MatchPurpose::Correction => "correction",
        MatchPurpose::Audit => "audit",
        MatchPurpose::LegalObligation => "legal-obligation",
    }
}

pub async fn run(
    conn: &Connection,
    ids: &[IdLine],
    purpose: MatchPurpose,
    case_ref: &str,
) -> anyhow::Result<MatchReport> {
    let requests: Vec<pb::MatchRequest> = ids
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| pb::MatchRequest {
            purpose: if i == 0 {
                pb::Purpose::from(purpose) as i32
            } else {
                0
            },
            national_ids: chunk.iter().map(|l| l.id.clone()).collect(),
            case_ref: if i == 0 {
                case_ref.to_owned()
            } else {
                String::new()
            },
        })
        .collect();
    let resp = conn
        .unary(
            "Inbox.Match",
            conn.inbox().r#match(futures::stream::iter(requests)),
        )
        .await?;
    Ok(build(resp, ids, purpose))
}

/// Turns stream indexes into line numbers.
pub fn build(resp: pb::MatchResponse, ids: &[IdLine], purpose: MatchPurpose) -> MatchReport {
    let line_of: HashMap<u32, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, l)| (u32::try_from(i).unwrap_or(u32::MAX), l.line))
        .collect();
    let line = |i: u32| line_of.get(&i).copied().unwrap_or(0);
    let mut invalid_lines: Vec<u32> = resp.invalid.iter().map(|i| line(*i)).collect();
    invalid_lines.sort_unstable();
    let mut matches: Vec<MatchLine> = resp
        .matches
        .iter()
        .map(|m| MatchLine {
            line: line(m.index),
            statuses: m
                .statuses
                .iter()
                .map(|s| MatchStatus {
                    agreement_id: s.agreement_id.clone(),
                    peer: s.peer.clone(),
                    kind: crate::names::kind_name(s.kind),
                    current: s.current.as_ref().map(ItemView::from_item),
                })
                .collect(),
        })
        .collect();
    matches.sort_by_key(|m| m.line);
    MatchReport {
        purpose: purpose_name(purpose),
        ids_sent: resp.ids_received,
        invalid_lines,
        matches,
    }
}

impl Report for MatchReport {
    fn human(&self) -> String {
        let mut s = String::new();
        if !self.matches.is_empty() {
            let mut t = human::table(&[
                "LINE",
                "AGREEMENT",
                "PEER",
                "KIND",
                "CURRENT STATUS",
                "OBSERVED",
                "RECORD",
            ]);
            for m in &self.matches {
                for st in &m.statuses {
                    let (status, observed, record) = match &st.current {
                        Some(c) => (
                            c.status.clone(),
                            c.observed_on.clone().unwrap_or_else(|| "-".into()),
                            c.short_id().to_owned(),
                        ),
                        None => ("-".into(), "-".into(), "-".into()),
                    };
                    t.add_row(vec![
                        m.line.to_string(),
                        st.agreement_id.clone(),
                        st.peer.clone(),
                        st.kind.to_owned(),
                        status,
                        observed,
                        record,
                    ]);
                }
            }
            s.push_str(&format!("{t}\n"));
        }
        s.push_str(&format!(
            "{} of {} have inbound records (purpose {})",
            human::count(self.matches.len() as u64, "resident"),
            human::count(self.ids_sent, "line"),
            self.purpose
        ));
        if self.invalid_lines.is_empty() {
            s.push_str("; no invalid lines\n");
        } else {
            let lines: Vec<String> = self.invalid_lines.iter().map(u32::to_string).collect();
            s.push_str(&format!(
                "; {} not valid resident ID numbers (lines {}): check them and run again\n",
                human::count(self.invalid_lines.len() as u64, "line"),
                lines.join(", ")
            ));
        }
        s
    }

    /// Invalid lines are a problem in the input: exit 1.
    fn outcome(&self) -> Outcome {
        Outcome::problem_if(!self.invalid_lines.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_become_line_numbers_and_blank_lines_count() {
        let mut input: &[u8] = b"A\n\n  B  \nC\n";
        let ids = parse_lines(&mut input).unwrap();
        assert_eq!(
            ids.iter()
                .map(|l| (l.line, l.id.as_str()))
                .collect::<Vec<_>>(),
            [(1, "A"), (3, "B"), (4, "C")]
        );
        let resp = pb::MatchResponse {
            ids_received: 3,
            invalid: vec![2],
            matches: vec![pb::MatchResult {
                index: 1,
                statuses: vec![],
            }],
        };
        let r = build(resp, &ids, MatchPurpose::Audit);
        assert_eq!(r.invalid_lines, [4]);
        assert_eq!(r.matches[0].line, 3);
        assert_eq!(r.outcome().exit_code(), 1);
        let text = r.human();
        assert!(
            text.contains("(lines 4)") && text.contains("purpose audit"),
            "{text}"
        );
    }
}
