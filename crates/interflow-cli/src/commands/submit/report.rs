//! What `submit` reports: the CSV error report (one line per failed row, written as failures
//! happen so an interrupted run leaves what it saw), and the summary printed at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::row::RowError;
use crate::human;
use crate::{Outcome, Report};

/// The code of rows refused because the destination's channel is held: retry, do not fix.
const CHANNEL_HELD: &str = "channel_held";

/// The header of the error report.
pub const ERROR_REPORT_HEADER: [&str; 5] = ["row", "idempotency_key", "field", "code", "reason"];

/// The result of `submit`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubmitSummary {
    pub file: String,
    /// Data rows read (blank JSONL lines are not rows).
    pub rows: u64,
    /// Newly stored.
    pub stored: u64,
    /// Stored by an earlier run with the same key and content ("already stored").
    pub duplicates: u64,
    /// Not stored: failed_locally + rejected_by_node.
    pub failed: u64,
    pub failed_locally: u64,
    pub rejected_by_node: u64,
    pub batches: u64,
    /// Calls sent again, after the node's hint, because its intake was busy.
    pub busy_retries: u64,
    /// The error report, when a row failed.
    pub errors_file: Option<String>,
    /// Failures grouped by field and code, most frequent first.
    pub error_summary: Vec<ErrorGroup>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorGroup {
    pub field: String,
    pub code: String,
    pub count: u64,
    /// The reason of the first row in the group.
    pub example_reason: String,
    pub first_row: u64,
}

impl Report for SubmitSummary {
    fn human(&self) -> String {
        let mut s = format!(
            "{}: {}: {} stored, {} already stored, {} failed",
            self.file,
            human::count(self.rows, "row"),
            self.stored,
            self.duplicates,
            self.failed
        );
        if self.failed > 0 {
            s.push_str(&format!(
                " ({} invalid here, {} rejected by the node)",
                self.failed_locally, self.rejected_by_node
            ));
        }
        s.push_str(&format!(" in {}", human::count(self.batches, "batch")));
        if self.busy_retries > 0 {
            s.push_str(&format!(
                " ({} sent again: the node was busy)",
                human::count(self.busy_retries, "call")
            ));
        }
        s.push('\n');
        if !self.error_summary.is_empty() {
            let mut t = human::table(&["COUNT", "FIELD", "CODE", "REASON (FIRST)", "FIRST ROW"]);
            for g in &self.error_summary {
                t.add_row(vec![
                    g.count.to_string(),
                    if g.field.is_empty() {
                        "-".into()
                    } else {
                        g.field.clone()
                    },
                    g.code.clone(),
                    g.example_reason.clone(),
                    g.first_row.to_string(),
                ]);
            }
            s.push_str(&format!("{t}\n"));
        }
        if let Some(p) = &self.errors_file {
            // Rows refused with `channel_held` are not wrong: the node takes them once it has
            // compared heads with the destination, so they need a later rerun, not a fix.
            let held: u64 = self
                .error_summary
                .iter()
                .filter(|g| g.code == CHANNEL_HELD)
                .map(|g| g.count)
                .sum();
            let advice = if held == 0 {
                "fix those rows and rerun".to_owned()
            } else {
                let wait = "wait until `interflowctl pending` no longer shows their destination as held (the node has not yet compared heads with that peer since it started; is the peer up?)";
                if held == self.failed {
                    format!(
                        "none needs fixing: the node refused them with `{CHANNEL_HELD}`; {wait}, then rerun"
                    )
                } else {
                    format!(
                        "fix the rows that are not `{CHANNEL_HELD}`; the {} refused with `{CHANNEL_HELD}` need no fix: {wait}, then rerun",
                        human::count(held, "row")
                    )
                }
            };
            s.push_str(&format!(
                "every failed row is listed in `{p}`; {advice}: stored rows are skipped as already stored\n"
            ));
        }
        s
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(self.failed > 0)
    }
}

/// The default error report path: `<stem>.errors.csv` in `dir` (the working directory), not
/// beside the input, which may be a checkout or a read-only share.
pub fn default_errors_path(input: &Path, dir: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "submit".into());
    dir.join(format!("{stem}.errors.csv"))
}

/// Writes the error report lazily: the file is created at the first failure.
pub(super) struct ErrorReport {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
    groups: Vec<ErrorGroup>,
    index: HashMap<(String, String), usize>,
    count: u64,
}

impl ErrorReport {
    pub(super) fn new(path: PathBuf) -> Self {
        ErrorReport {
            path,
            writer: None,
            groups: Vec::new(),
            index: HashMap::new(),
            count: 0,
        }
    }

    pub(super) fn add(&mut self, e: &RowError) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(&self.path).with_context(|| {
                format!(
                    "creating the error report `{}`; choose another path with --report",
                    self.path.display()
                )
            })?;
            w.write_record(ERROR_REPORT_HEADER)
                .context("writing the error report")?;
            self.writer = Some(w);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_record([
                e.row.to_string().as_str(),
                &e.idempotency_key,
                &e.field,
                &e.code,
                &e.reason,
            ])
            .with_context(|| format!("writing the error report `{}`", self.path.display()))?;
        }
        self.count += 1;
        let k = (e.field.clone(), e.code.clone());
        match self.index.get(&k) {
            Some(&i) => self.groups[i].count += 1,
            None => {
                self.index.insert(k, self.groups.len());
                self.groups.push(ErrorGroup {
                    field: e.field.clone(),
                    code: e.code.clone(),
                    count: 1,
                    example_reason: e.reason.clone(),
                    first_row: e.row,
                });
            }
        }
        Ok(())
    }

    /// Flushes, so an interrupted run leaves a complete report of what it saw.
    pub(super) fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()
                .with_context(|| format!("writing the error report `{}`", self.path.display()))?;
        }
        Ok(())
    }

    /// Finishes the report. With no failures, a report left by an earlier run at the same path
    /// is removed (only if it is one: its first line is our header), so it cannot mislead.
    pub(super) fn finish(mut self) -> anyhow::Result<(Option<PathBuf>, Vec<ErrorGroup>)> {
        self.flush()?;
        if self.writer.is_some() {
            let mut groups = self.groups;
            groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_row.cmp(&b.first_row)));
            return Ok((Some(self.path), groups));
        }
        if let Ok(f) = File::open(&self.path) {
            let mut first = String::new();
            let _ = BufReader::new(f).read_line(&mut first);
            if first.trim_end() == ERROR_REPORT_HEADER.join(",") {
                std::fs::remove_file(&self.path).with_context(|| {
                    format!("removing the stale error report `{}`", self.path.display())
                })?;
            }
        }
        Ok((None, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::submit::row::row_error;

    #[test]
    fn error_report_is_written_grouped_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.errors.csv");
        let mut r = ErrorReport::new(path.clone());
        let e1 = row_error(2, "k", "national_id", "invalid_national_id", "bad");
        let e2 = row_error(5, "k5", "", "unreadable_row", "bad row");
        r.add(&e1).unwrap();
        r.add(&e2).unwrap();
        r.add(&row_error(
            9,
            "k9",
            "national_id",
            "invalid_national_id",
            "bad",
        ))
        .unwrap();
        let (file, groups) = r.finish().unwrap();
        assert_eq!(file.as_deref(), Some(path.as_path()));
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[0].first_row, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("row,idempotency_key,field,code,reason\n2,k,national_id"));
        // A clean rerun removes the old report.
        let (file, _) = ErrorReport::new(path.clone()).finish().unwrap();
        assert!(file.is_none());
        assert!(!path.exists());
        // But never a file that is not one.
        std::fs::write(&path, "precious\n").unwrap();
        ErrorReport::new(path.clone()).finish().unwrap();
        assert!(path.exists());
        assert_eq!(
            default_errors_path(Path::new("/data/batch-7.csv"), Path::new("/home/op")),
            PathBuf::from("/home/op/batch-7.errors.csv")
        );
    }

    fn summary(groups: &[(&str, u64)]) -> SubmitSummary {
        let failed = groups.iter().map(|(_, n)| n).sum();
        SubmitSummary {
            file: "in.csv".into(),
            rows: 10,
            stored: 10 - failed,
            duplicates: 0,
            failed,
            failed_locally: 0,
            rejected_by_node: failed,
            batches: 1,
            busy_retries: 0,
            errors_file: Some("in.errors.csv".into()),
            error_summary: groups
                .iter()
                .map(|(code, count)| ErrorGroup {
                    field: "destination".into(),
                    code: (*code).into(),
                    count: *count,
                    example_reason: "reason".into(),
                    first_row: 2,
                })
                .collect(),
        }
    }

    #[test]
    fn rows_refused_as_held_are_to_be_retried_not_fixed() {
        let held = summary(&[("channel_held", 3)]).human();
        assert!(!held.contains("fix those rows"), "{held}");
        assert!(held.contains("none needs fixing"), "{held}");
        assert!(held.contains("interflowctl pending"), "{held}");
        assert!(held.contains("then rerun"), "{held}");

        let mixed = summary(&[("channel_held", 3), ("no_agreement", 1)]).human();
        assert!(
            mixed.contains("the 3 rows refused with `channel_held` need no fix"),
            "{mixed}"
        );
        assert!(
            mixed.contains("fix the rows that are not `channel_held`"),
            "{mixed}"
        );

        let bad = summary(&[("no_agreement", 1)]).human();
        assert!(bad.contains("fix those rows and rerun"), "{bad}");
    }
}
