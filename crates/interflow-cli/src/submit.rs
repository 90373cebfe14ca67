//! `submit`: status records from a CSV or JSONL file to `Intake.Submit`, in batches.
//!
//! Each row is parsed and checked here first (the same payload rules the node applies), so
//! most mistakes are reported with their row and column without a round trip. Valid rows are
//! sent in batches; the node stores each batch's valid items atomically and answers per item.
//! Every row carries an idempotency key, so rerunning the same file after an interruption is
//! safe: rows stored before come back as duplicates ("already stored"). Rows that fail, here
//! or at the node, go to a CSV error report (row, idempotency_key, field, code, reason).
//! Reasons never echo field values: national IDs and dates are personal data.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use interflow_core::payload::{Payload, ValidationRules};
use interflow_core::record::RecordId;
use interflow_core::{NationalId, RegionCode, pb};
use serde::Serialize;

use crate::cli::InputFormat;
use crate::conn::Connection;
use crate::human;
use crate::{Outcome, Report};

/// Every column a submission file may have, in the documented order.
pub const COLUMNS: [&str; 14] = [
    "idempotency_key",
    "destination",
    "national_id",
    "kind",
    "state",
    "method",
    "observed_on",
    "expected_delivery",
    "event_date",
    "since",
    "prenatal_visits",
    "service_point",
    "supersedes",
    "retracted_kind",
];

/// Columns a CSV header must have.
const REQUIRED_COLUMNS: [&str; 4] = ["idempotency_key", "destination", "national_id", "kind"];

/// The header of the error report.
pub const ERROR_REPORT_HEADER: [&str; 5] = ["row", "idempotency_key", "field", "code", "reason"];

/// Clock skew allowed when checking that dates are not in the future, as the node's default.
const FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// How often a batch is retried when the node is briefly unavailable.
const RETRIES: u32 = 3;

/// The fields of one input row, by column name; absent columns read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(BTreeMap<String, String>);

impl Fields {
    pub fn get(&self, column: &str) -> &str {
        self.0.get(column).map_or("", |s| s.trim())
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Fields {
        Fields(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

/// Why a row was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Line number in the input file (the CSV header is line 1).
    pub row: u64,
    pub idempotency_key: String,
    /// The column at fault; empty when the row as a whole is unreadable.
    pub field: String,
    /// `invalid_national_id`, `invalid_payload`, ... as the node's codes, plus the local
    /// `unreadable_row` and `duplicate_key_in_file`.
    pub code: String,
    pub reason: String,
}

fn row_error(row: u64, key: &str, field: &str, code: &str, reason: impl Into<String>) -> RowError {
    RowError {
        row,
        idempotency_key: key.to_owned(),
        field: field.to_owned(),
        code: code.to_owned(),
        reason: reason.into(),
    }
}

/// The column a payload field path such as `pregnancy.expected_delivery` comes from.
pub fn column_of(field: &str) -> String {
    match field {
        "retraction.kind" => "retracted_kind".into(),
        "payload" => "kind".into(),
        f => f.rsplit('.').next().unwrap_or(f).to_owned(),
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic())
}

/// `YYYY-MM-DD`, exactly.
fn parse_date(s: &str) -> Result<pb::Date, &'static str> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err("must be a date as YYYY-MM-DD");
    }
    let (y, m, d) = (
        s[..4].parse::<u32>().unwrap_or(0),
        s[5..7].parse::<u32>().unwrap_or(0),
        s[8..].parse::<u32>().unwrap_or(0),
    );
    i32::try_from(y)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, m, d))
        .ok_or("is not a real date")?;
    Ok(pb::Date {
        year: y,
        month: m,
        day: d,
    })
}

/// `YYYY-MM`, exactly.
fn parse_month(s: &str) -> Result<pb::YearMonth, &'static str> {
    let b = s.as_bytes();
    let shape = b.len() == 7
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit());
    if !shape {
        return Err("must be a month as YYYY-MM");
    }
    let (y, m) = (
        s[..4].parse::<u32>().unwrap_or(0),
        s[5..].parse::<u32>().unwrap_or(0),
    );
    if !(1..=12).contains(&m) || y == 0 {
        return Err("is not a real month");
    }
    Ok(pb::YearMonth { year: y, month: m })
}

fn state_of(s: &str) -> Option<pb::PregnancyState> {
    use pb::PregnancyState as S;
    Some(match s {
        "not_pregnant" => S::NotPregnant,
        "pregnant" => S::Pregnant,
        "delivered" => S::Delivered,
        "pregnancy_ended" => S::PregnancyEnded,
        _ => return None,
    })
}

fn method_of(s: &str) -> Option<pb::ContraceptiveMethod> {
    use pb::ContraceptiveMethod as M;
    Some(match s {
        "none" => M::None,
        "iud" => M::Iud,
        "implant" => M::Implant,
        "injectable" => M::Injectable,
        "oral_pill" => M::OralPill,
        "condom" => M::Condom,
        "sterilization" => M::Sterilization,
        "other" => M::Other,
        _ => return None,
    })
}

/// Columns used by each kind; any other payload column must be empty.
const PREGNANCY_COLUMNS: [&str; 6] = [
    "state",
    "observed_on",
    "expected_delivery",
    "event_date",
    "prenatal_visits",
    "service_point",
];
const CONTRACEPTION_COLUMNS: [&str; 4] = ["method", "since", "observed_on", "service_point"];
const RETRACTION_COLUMNS: [&str; 1] = ["retracted_kind"];
const PAYLOAD_COLUMNS: [&str; 9] = [
    "state",
    "method",
    "observed_on",
    "expected_delivery",
    "event_date",
    "since",
    "prenatal_visits",
    "service_point",
    "retracted_kind",
];

/// Parses and checks one row into a submission. `rules.now_ms` is this machine's clock.
pub fn parse_row(
    row: u64,
    f: &Fields,
    rules: &ValidationRules,
) -> Result<pb::Submission, RowError> {
    let key = f.get("idempotency_key");
    let err = |field: &str, code: &str, reason: &str| row_error(row, key, field, code, reason);
    if key.is_empty() {
        return Err(err(
            "idempotency_key",
            "invalid_idempotency_key",
            "is missing: every row needs its own key, which is what makes a rerun safe",
        ));
    }
    if !valid_key(key) {
        return Err(err(
            "idempotency_key",
            "invalid_idempotency_key",
            "must be 1 to 128 printable ASCII characters without spaces",
        ));
    }

    let destination = f.get("destination");
    if destination.is_empty() {
        return Err(err("destination", "invalid_destination", "is missing"));
    }
    let destination: RegionCode =
        destination
            .parse()
            .map_err(|e: interflow_core::region::RegionCodeError| {
                err("destination", "invalid_destination", &e.to_string())
            })?;

    let national_id = f.get("national_id");
    if national_id.is_empty() {
        return Err(err("national_id", "invalid_national_id", "is missing"));
    }
    let today = interflow_core::time::latest_permitted_date(rules.now_ms, 0);
    let id = NationalId::parse(national_id, today)
        .map_err(|e| err("national_id", "invalid_national_id", &e.to_string()))?;

    let supersedes = match f.get("supersedes") {
        "" => None,
        s => Some(RecordId::from_hex(s).map_err(|e| {
            err(
                "supersedes",
                "invalid_supersedes",
                &format!("{e}; give the record id as 64 hex digits, or leave it empty"),
            )
        })?),
    };

    let kind = f.get("kind");
    let allowed: &[&str] = match kind {
        "pregnancy" => &PREGNANCY_COLUMNS,
        "contraception" => &CONTRACEPTION_COLUMNS,
        "retraction" => &RETRACTION_COLUMNS,
        "" => return Err(err("kind", "invalid_payload", "is missing")),
        _ => {
            return Err(err(
                "kind",
                "invalid_payload",
                "must be pregnancy, contraception or retraction",
            ));
        }
    };
    for column in PAYLOAD_COLUMNS {
        if !allowed.contains(&column) && !f.get(column).is_empty() {
            return Err(err(
                column,
                "invalid_payload",
                &format!("does not apply to kind `{kind}`; leave it empty"),
            ));
        }
    }
    let date = |column: &str| -> Result<Option<pb::Date>, RowError> {
        match f.get(column) {
            "" => Ok(None),
            s => parse_date(s)
                .map(Some)
                .map_err(|r| err(column, "invalid_payload", r)),
        }
    };
    let text_or_missing = |column: &str| -> Result<String, RowError> {
        match f.get(column) {
            "" => Err(err(column, "invalid_payload", "is missing")),
            s => Ok(s.to_owned()),
        }
    };
    use pb::submission::Payload as P;
    let payload = match kind {
        "pregnancy" => {
            let state = match f.get("state") {
                "" => return Err(err("state", "invalid_payload", "is missing")),
                s => state_of(s).ok_or_else(|| {
                    err(
                        "state",
                        "invalid_payload",
                        "must be not_pregnant, pregnant, delivered or pregnancy_ended",
                    )
                })?,
            };
            let expected_delivery = match f.get("expected_delivery") {
                "" => None,
                s => Some(
                    parse_month(s).map_err(|r| err("expected_delivery", "invalid_payload", r))?,
                ),
            };
            let prenatal_visits = match f.get("prenatal_visits") {
                "" => 0,
                s => s.parse::<u32>().map_err(|_| {
                    err(
                        "prenatal_visits",
                        "invalid_payload",
                        "must be a whole number of visits",
                    )
                })?,
            };
            P::Pregnancy(pb::PregnancyStatus {
                state: state as i32,
                observed_on: date("observed_on")?,
                expected_delivery,
                event_date: date("event_date")?,
                prenatal_visits,
                service_point: text_or_missing("service_point")?,
            })
        }
        "contraception" => {
            let method = match f.get("method") {
                "" => return Err(err("method", "invalid_payload", "is missing")),
                s => method_of(s).ok_or_else(|| {
                    err(
                        "method",
                        "invalid_payload",
                        "must be none, iud, implant, injectable, oral_pill, condom, sterilization or other",
                    )
                })?,
            };
            P::Contraception(pb::ContraceptionStatus {
                method: method as i32,
                since: date("since")?,
                observed_on: date("observed_on")?,
                service_point: text_or_missing("service_point")?,
            })
        }
        _ => {
            let retracted = match f.get("retracted_kind") {
                "pregnancy" => pb::RecordKind::PregnancyStatus,
                "contraception" => pb::RecordKind::ContraceptionStatus,
                "" => {
                    return Err(err(
                        "retracted_kind",
                        "invalid_payload",
                        "is required for a retraction: the kind of the record it withdraws (pregnancy or contraception)",
                    ));
                }
                _ => {
                    return Err(err(
                        "retracted_kind",
                        "invalid_payload",
                        "must be pregnancy or contraception",
                    ));
                }
            };
            if supersedes.is_none() {
                return Err(err(
                    "supersedes",
                    "invalid_payload",
                    "is required for a retraction: the id of the record it withdraws",
                ));
            }
            P::Retraction(pb::Retraction {
                kind: retracted as i32,
            })
        }
    };
    // The node's own payload rules, so the report names the same field and reason.
    Payload::from_submission(Some(payload.clone()))
        .and_then(|p| p.validate(rules, supersedes.is_some()))
        .map_err(|e| {
            err(
                &column_of(e.field()),
                "invalid_payload",
                &e.reason().to_string(),
            )
        })?;
    Ok(pb::Submission {
        idempotency_key: key.to_owned(),
        destination: destination.to_string(),
        national_id: id.normalized().to_owned(),
        supersedes: supersedes.map(|r| r.0.to_vec()).unwrap_or_default(),
        payload: Some(payload),
    })
}

// ---------------------------------------------------------------------------------------------
// reading rows

/// A row as read, before parsing: its line number and fields, or why it cannot be read.
pub type RawRow = Result<(u64, Fields), RowError>;

/// Reads rows from a file, one at a time.
pub trait RowSource {
    /// The next row; `Ok(None)` at the end. Errors are fatal (I/O, a bad header).
    fn next_row(&mut self) -> anyhow::Result<Option<RawRow>>;
    /// Bytes consumed so far, for the progress bar.
    fn bytes_read(&self) -> u64;
}

/// CSV with a header row naming the columns.
pub struct CsvRows<R: Read> {
    reader: csv::Reader<R>,
    header: Vec<String>,
    record: csv::StringRecord,
}

impl<R: Read> std::fmt::Debug for CsvRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvRows")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CsvRows<R> {
    pub fn new(input: R) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .trim(csv::Trim::All)
            .from_reader(input);
        let header: Vec<String> = reader
            .headers()
            .context("reading the CSV header")?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        for h in &header {
            if !COLUMNS.contains(&h.as_str()) {
                bail!(
                    "the CSV header has an unknown column `{h}`; the columns are {}",
                    COLUMNS.join(",")
                );
            }
        }
        for (i, h) in header.iter().enumerate() {
            if header[..i].contains(h) {
                bail!("the CSV header names column `{h}` twice");
            }
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !header.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            bail!(
                "the CSV header lacks the column(s) {}; the first line must name the columns, e.g. {}",
                missing.join(", "),
                COLUMNS.join(",")
            );
        }
        Ok(CsvRows {
            reader,
            header,
            record: csv::StringRecord::new(),
        })
    }
}

impl<R: Read> RowSource for CsvRows<R> {
    fn next_row(&mut self) -> anyhow::Result<Option<RawRow>> {
        let next_line = self.reader.position().line();
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let row = self
                    .record
                    .position()
                    .map_or(next_line, csv::Position::line);
                let fields = Fields(
                    self.header
                        .iter()
                        .zip(self.record.iter())
                        .map(|(h, v)| (h.clone(), v.to_owned()))
                        .collect(),
                );
                Ok(Some(Ok((row, fields))))
            }
            Err(e) => {
                let row = e.position().map_or(next_line, csv::Position::line);
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => format!(
                        "has {len} fields but the header has {}; check for a missing or extra comma",
                        self.header.len()
                    ),
                    csv::ErrorKind::Utf8 { .. } => {
                        "is not valid UTF-8; save the file as UTF-8".into()
                    }
                    csv::ErrorKind::Io(_) => {
                        return Err(anyhow::Error::new(e).context("reading the CSV file"));
                    }
                    _ => "cannot be read as CSV".into(),
                };
                Ok(Some(Err(row_error(row, "", "", "unreadable_row", reason))))
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}

/// JSON Lines: one object per line with the same keys as the CSV columns. Blank lines are
/// skipped; numbers are accepted where text is expected (e.g. `prenatal_visits`).
pub struct JsonlRows<R: BufRead> {
    input: R,
    line_no: u64,
    bytes: u64,
    buf: String,
}

impl<R: BufRead> std::fmt::Debug for JsonlRows<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlRows")
            .field("line_no", &self.line_no)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> JsonlRows<R> {
    pub fn new(input: R) -> Self {
        JsonlRows {
            input,
            line_no: 0,
            bytes: 0,
            buf: String::new(),
        }
    }
}

/// The fields of one JSON object, or why it is not a row.
pub fn fields_from_json(row: u64, line: &str) -> RawRow {
    let bad =
        |field: &str, code: &str, reason: String| Err(row_error(row, "", field, code, reason));
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return bad(
                "",
                "unreadable_row",
                format!(
                    "is not valid JSON (column {}); each line must be one object",
                    e.column()
                ),
            );
        }
    };
    let serde_json::Value::Object(map) = value else {
        return bad("", "unreadable_row", "is not a JSON object".into());
    };
    let mut fields = BTreeMap::new();
    for (k, v) in map {
        if !COLUMNS.contains(&k.as_str()) {
            return bad(
                &k,
                "unreadable_row",
                format!("is not a known column; the keys are {}", COLUMNS.join(",")),
            );
        }
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Null => String::new(),
            _ => {
                return bad(&k, "unreadable_row", "must be a string or a number".into());
            }
        };
        fields.insert(k, text);
    }
    Ok((row, Fields(fields)))
}

impl<R: BufRead> RowSource for JsonlRows<R> {
    fn next_row(&mut self) -> anyhow::Result<Option<RawRow>> {
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_line(&mut self.buf)
                .context("reading the JSONL file")?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            let line = self.buf.trim();
            if line.is_empty() {
                continue;
            }
            return Ok(Some(fields_from_json(self.line_no, line)));
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

// ---------------------------------------------------------------------------------------------
// running

/// What `submit` needs besides the connection.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub format: Option<InputFormat>,
    pub batch: usize,
    pub errors: Option<PathBuf>,
    pub progress: bool,
}

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
        s.push_str(&format!(" in {}\n", human::count(self.batches, "batch")));
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
            s.push_str(&format!(
                "every failed row is listed in `{p}`; fix those rows and rerun: stored rows are skipped as already stored\n"
            ));
        }
        s
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(self.failed > 0)
    }
}

/// The default error report path: `<stem>.errors.csv` beside the input.
pub fn default_errors_path(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "submit".into());
    input.with_file_name(format!("{stem}.errors.csv"))
}

fn detect_format(path: &Path) -> InputFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jsonl" | "ndjson" | "json") => InputFormat::Jsonl,
        _ => InputFormat::Csv,
    }
}

/// Writes the error report lazily: the file is created at the first failure.
struct ErrorReport {
    path: PathBuf,
    writer: Option<csv::Writer<File>>,
    groups: Vec<ErrorGroup>,
    index: HashMap<(String, String), usize>,
    count: u64,
}

impl ErrorReport {
    fn new(path: PathBuf) -> Self {
        ErrorReport {
            path,
            writer: None,
            groups: Vec::new(),
            index: HashMap::new(),
            count: 0,
        }
    }

    fn add(&mut self, e: &RowError) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(&self.path).with_context(|| {
                format!(
                    "creating the error report `{}`; choose another path with --errors",
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
    fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()
                .with_context(|| format!("writing the error report `{}`", self.path.display()))?;
        }
        Ok(())
    }

    /// Finishes the report. With no failures, a report left by an earlier run at the same path
    /// is removed (only if it is one: its first line is our header), so it cannot mislead.
    fn finish(mut self) -> anyhow::Result<(Option<PathBuf>, Vec<ErrorGroup>)> {
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

/// A valid row waiting in the current batch.
struct Queued {
    row: u64,
    key: String,
}

/// Counts shared by the run and its progress bar.
#[derive(Default)]
struct Tally {
    rows: u64,
    stored: u64,
    duplicates: u64,
    failed_locally: u64,
    rejected: u64,
    batches: u64,
}

impl Tally {
    fn message(&self) -> String {
        format!(
            "{} rows: {} stored, {} already stored, {} failed",
            self.rows,
            self.stored,
            self.duplicates,
            self.failed_locally + self.rejected
        )
    }
}

/// Reads `opts.file`, submits its rows in batches and writes the error report.
pub async fn run(conn: &Connection, opts: &Options) -> anyhow::Result<SubmitSummary> {
    let file = File::open(&opts.file)
        .with_context(|| format!("opening the input file `{}`", opts.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let format = opts.format.unwrap_or_else(|| detect_format(&opts.file));
    let mut source: Box<dyn RowSource> = match format {
        InputFormat::Csv => Box::new(
            CsvRows::new(BufReader::new(file))
                .with_context(|| format!("reading `{}`", opts.file.display()))?,
        ),
        InputFormat::Jsonl => Box::new(JsonlRows::new(BufReader::new(file))),
    };
    let errors_path = opts
        .errors
        .clone()
        .unwrap_or_else(|| default_errors_path(&opts.file));
    let mut report = ErrorReport::new(errors_path);
    let bar = if opts.progress {
        let b = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
        ) {
            b.set_style(style);
        }
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        ProgressBar::hidden()
    };
    let batch_size = opts.batch.max(1);
    let mut tally = Tally::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut items: Vec<pb::Submission> = Vec::with_capacity(batch_size);
    let mut queued: Vec<Queued> = Vec::with_capacity(batch_size);
    let rules_now = human::now_ms();
    let rules = ValidationRules {
        now_ms: rules_now,
        max_future_skew_ms: FUTURE_SKEW_MS,
    };

    loop {
        let next = source
            .next_row()
            .with_context(|| format!("reading `{}`", opts.file.display()))?;
        let at_end = next.is_none();
        if let Some(raw) = next {
            tally.rows += 1;
            let parsed = raw.and_then(|(row, fields)| {
                let sub = parse_row(row, &fields, &rules)?;
                if let Some(first) = seen.get(&sub.idempotency_key) {
                    return Err(row_error(
                        row,
                        &sub.idempotency_key,
                        "idempotency_key",
                        "duplicate_key_in_file",
                        format!("repeats the key of row {first}; every row needs its own key"),
                    ));
                }
                seen.insert(sub.idempotency_key.clone(), row);
                Ok((row, sub))
            });
            match parsed {
                Ok((row, sub)) => {
                    queued.push(Queued {
                        row,
                        key: sub.idempotency_key.clone(),
                    });
                    items.push(sub);
                }
                Err(e) => {
                    tally.failed_locally += 1;
                    report.add(&e)?;
                }
            }
        }
        if items.len() >= batch_size || (at_end && !items.is_empty()) {
            let batch = std::mem::take(&mut items);
            let rows = std::mem::take(&mut queued);
            let results = send(conn, batch).await.with_context(|| {
                let first = rows.first().map_or(0, |q| q.row);
                let last = rows.last().map_or(0, |q| q.row);
                let _ = report.flush();
                format!(
                    "submitting rows {first} to {last} of `{}` ({} stored and {} already stored before); rerun the same command: stored rows are reported as already stored",
                    opts.file.display(),
                    tally.stored,
                    tally.duplicates
                )
            })?;
            tally.batches += 1;
            for (q, r) in rows.iter().zip(results) {
                match r.outcome {
                    Some(pb::submit_result::Outcome::RecordId(_)) if r.duplicate => {
                        tally.duplicates += 1;
                    }
                    Some(pb::submit_result::Outcome::RecordId(_)) => tally.stored += 1,
                    Some(pb::submit_result::Outcome::Error(e)) => {
                        tally.rejected += 1;
                        report.add(&row_error(
                            q.row,
                            &q.key,
                            &column_of(&e.field),
                            human::submit_error_name(e.code),
                            e.reason,
                        ))?;
                    }
                    None => {
                        tally.rejected += 1;
                        report.add(&row_error(
                            q.row,
                            &q.key,
                            "",
                            "unknown",
                            "the node answered without an outcome",
                        ))?;
                    }
                }
            }
            report.flush()?;
        }
        bar.set_position(source.bytes_read().min(total.max(1)));
        bar.set_message(tally.message());
        if at_end {
            break;
        }
    }
    bar.finish_and_clear();
    let (errors_file, error_summary) = report.finish()?;
    Ok(SubmitSummary {
        file: opts.file.display().to_string(),
        rows: tally.rows,
        stored: tally.stored,
        duplicates: tally.duplicates,
        failed: tally.failed_locally + tally.rejected,
        failed_locally: tally.failed_locally,
        rejected_by_node: tally.rejected,
        batches: tally.batches,
        errors_file: errors_file.map(|p| p.display().to_string()),
        error_summary,
    })
}

/// One `Intake.Submit` call, retried while the node is briefly unavailable (safe: items are
/// idempotent by key).
async fn send(
    conn: &Connection,
    items: Vec<pb::Submission>,
) -> anyhow::Result<Vec<pb::SubmitResult>> {
    let n = items.len();
    let request = pb::SubmitRequest { items };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let answer = tokio::time::timeout(
            conn.request_timeout(),
            conn.intake().submit(request.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {}",
                human::format_age(conn.request_timeout())
            )))
        });
        match answer {
            Ok(resp) => {
                let results = resp.into_inner().results;
                anyhow::ensure!(
                    results.len() == n,
                    "the node answered {} results for {n} items; this is a node bug, report it",
                    results.len()
                );
                return Ok(results);
            }
            Err(s)
                if attempt <= RETRIES
                    && matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ) =>
            {
                tracing::warn!(attempt, code = ?s.code(), "submit failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(s) => return Err(conn.call_error("Intake.Submit", s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_272_000_000; // 2026-06-01T00:00:00Z
    const RULES: ValidationRules = ValidationRules {
        now_ms: NOW,
        max_future_skew_ms: FUTURE_SKEW_MS,
    };
    /// The published GB 11643 sample number (synthetic).
    const ID: &str = "11010519491231002X";

    fn preg(extra: &[(&'static str, &'static str)]) -> Fields {
        let mut f = Fields::from_pairs([
            ("idempotency_key", "k-1"),
            ("destination", "110105"),
            ("national_id", ID),
            ("kind", "pregnancy"),
            ("state", "pregnant"),
            ("observed_on", "2026-03-10"),
            ("expected_delivery", "2026-10"),
            ("prenatal_visits", "2"),
            ("service_point", "3101150042"),
        ]);
        for (k, v) in extra {
            f.0.insert((*k).to_owned(), (*v).to_owned());
        }
        f
    }

    fn contra(extra: &[(&'static str, &'static str)]) -> Fields {
        let mut f = Fields::from_pairs([
            ("idempotency_key", "k-2"),
            ("destination", "110105"),
            ("national_id", "11010519491231002x"),
            ("kind", "contraception"),
            ("method", "iud"),
            ("since", "2024-05-20"),
            ("observed_on", "2026-05-31"),
            ("service_point", "3101150042"),
        ]);
        for (k, v) in extra {
            f.0.insert((*k).to_owned(), (*v).to_owned());
        }
        f
    }

    fn fails(f: &Fields) -> (String, String, String) {
        let e = parse_row(7, f, &RULES).unwrap_err();
        assert_eq!(e.row, 7);
        (e.field, e.code, e.reason)
    }

    #[test]
    fn good_rows_become_submissions() {
        let s = parse_row(2, &preg(&[]), &RULES).unwrap();
        assert_eq!(s.idempotency_key, "k-1");
        assert_eq!(s.destination, "110105");
        assert_eq!(s.national_id, ID);
        assert!(s.supersedes.is_empty());
        let Some(pb::submission::Payload::Pregnancy(p)) = s.payload else {
            panic!("not a pregnancy payload");
        };
        assert_eq!(p.state, pb::PregnancyState::Pregnant as i32);
        assert_eq!(
            p.expected_delivery,
            Some(pb::YearMonth {
                year: 2026,
                month: 10
            })
        );
        assert_eq!(p.prenatal_visits, 2);

        // Lower-case check character is normalized.
        let s = parse_row(3, &contra(&[]), &RULES).unwrap();
        assert_eq!(s.national_id, ID);
        let Some(pb::submission::Payload::Contraception(c)) = s.payload else {
            panic!("not a contraception payload");
        };
        assert_eq!(c.method, pb::ContraceptiveMethod::Iud as i32);
        assert_eq!(
            c.since,
            Some(pb::Date {
                year: 2024,
                month: 5,
                day: 20
            })
        );

        let none = contra(&[("method", "none"), ("since", "")]);
        assert!(parse_row(4, &none, &RULES).is_ok());

        let delivered = preg(&[
            ("state", "delivered"),
            ("expected_delivery", ""),
            ("event_date", "2026-03-01"),
        ]);
        assert!(parse_row(5, &delivered, &RULES).is_ok());

        let id = "ab".repeat(32);
        let retraction = Fields(
            [
                ("idempotency_key", "k-3"),
                ("destination", "110105"),
                ("national_id", ID),
                ("kind", "retraction"),
                ("retracted_kind", "pregnancy"),
                ("supersedes", id.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let s = parse_row(6, &retraction, &RULES).unwrap();
        assert_eq!(s.supersedes, vec![0xab; 32]);
        assert_eq!(
            s.payload,
            Some(pb::submission::Payload::Retraction(pb::Retraction {
                kind: pb::RecordKind::PregnancyStatus as i32
            }))
        );
    }

    #[test]
    fn each_kind_of_bad_row_names_its_field() {
        let cases: Vec<(Fields, &str, &str, &str)> = vec![
            (
                preg(&[("idempotency_key", "")]),
                "idempotency_key",
                "invalid_idempotency_key",
                "is missing",
            ),
            (
                preg(&[("idempotency_key", "has space")]),
                "idempotency_key",
                "invalid_idempotency_key",
                "printable ASCII",
            ),
            (
                preg(&[("destination", "")]),
                "destination",
                "invalid_destination",
                "is missing",
            ),
            (
                preg(&[("destination", "990000")]),
                "destination",
                "invalid_destination",
                "province",
            ),
            (
                preg(&[("national_id", "110105194912310021")]),
                "national_id",
                "invalid_national_id",
                "check character",
            ),
            (
                preg(&[("national_id", "1101051949")]),
                "national_id",
                "invalid_national_id",
                "18 characters",
            ),
            (
                preg(&[("kind", "")]),
                "kind",
                "invalid_payload",
                "is missing",
            ),
            (
                preg(&[("kind", "birth")]),
                "kind",
                "invalid_payload",
                "pregnancy, contraception or retraction",
            ),
            (
                preg(&[("state", "expecting")]),
                "state",
                "invalid_payload",
                "must be not_pregnant",
            ),
            (
                preg(&[("method", "iud")]),
                "method",
                "invalid_payload",
                "does not apply to kind `pregnancy`",
            ),
            (
                preg(&[("observed_on", "10/03/2026")]),
                "observed_on",
                "invalid_payload",
                "YYYY-MM-DD",
            ),
            (
                preg(&[("observed_on", "2026-02-30")]),
                "observed_on",
                "invalid_payload",
                "not a real date",
            ),
            (
                preg(&[("observed_on", "2027-01-01")]),
                "observed_on",
                "invalid_payload",
                "in the future",
            ),
            (
                preg(&[("observed_on", "")]),
                "observed_on",
                "invalid_payload",
                "is required",
            ),
            (
                preg(&[("expected_delivery", "2026-13")]),
                "expected_delivery",
                "invalid_payload",
                "not a real month",
            ),
            (
                preg(&[("expected_delivery", "")]),
                "expected_delivery",
                "invalid_payload",
                "required when state is PREGNANT",
            ),
            (
                preg(&[("prenatal_visits", "two")]),
                "prenatal_visits",
                "invalid_payload",
                "whole number",
            ),
            (
                preg(&[("prenatal_visits", "51")]),
                "prenatal_visits",
                "invalid_payload",
                "at most",
            ),
            (
                preg(&[("service_point", "31011500")]),
                "service_point",
                "invalid_payload",
                "10 digits",
            ),
            (
                preg(&[("service_point", "")]),
                "service_point",
                "invalid_payload",
                "is missing",
            ),
            (
                preg(&[("supersedes", "abc")]),
                "supersedes",
                "invalid_supersedes",
                "64 hex digits",
            ),
            (
                contra(&[("method", "")]),
                "method",
                "invalid_payload",
                "is missing",
            ),
            (
                contra(&[("method", "pill")]),
                "method",
                "invalid_payload",
                "oral_pill",
            ),
            (
                contra(&[("since", "")]),
                "since",
                "invalid_payload",
                "required unless method is NONE",
            ),
            (
                contra(&[("since", "2026-06-01"), ("observed_on", "2026-05-01")]),
                "since",
                "invalid_payload",
                "after `observed_on`",
            ),
            (
                contra(&[("state", "pregnant")]),
                "state",
                "invalid_payload",
                "does not apply to kind `contraception`",
            ),
            (
                contra(&[
                    ("kind", "retraction"),
                    ("method", ""),
                    ("since", ""),
                    ("observed_on", ""),
                    ("service_point", ""),
                ]),
                "retracted_kind",
                "invalid_payload",
                "is required for a retraction",
            ),
            (
                contra(&[
                    ("kind", "retraction"),
                    ("method", ""),
                    ("since", ""),
                    ("observed_on", ""),
                    ("service_point", ""),
                    ("retracted_kind", "contraception"),
                ]),
                "supersedes",
                "invalid_payload",
                "id of the record it withdraws",
            ),
        ];
        for (f, field, code, reason) in cases {
            let (got_field, got_code, got_reason) = fails(&f);
            assert_eq!(
                (got_field.as_str(), got_code.as_str()),
                (field, code),
                "{f:?}: {got_reason}"
            );
            assert!(got_reason.contains(reason), "{field}: {got_reason}");
        }
    }

    #[test]
    fn reasons_never_echo_the_national_id_or_dates() {
        for f in [
            preg(&[("national_id", "110105194912310021")]),
            preg(&[("observed_on", "2027-01-01")]),
            preg(&[("observed_on", "2026-02-30")]),
        ] {
            let (_, _, reason) = fails(&f);
            assert!(
                !reason.contains("1101051949")
                    && !reason.contains("2027")
                    && !reason.contains("02-30"),
                "{reason}"
            );
        }
    }

    #[test]
    fn csv_rows_carry_line_numbers_and_bad_rows_do_not_stop_the_file() {
        let text = "\u{feff}idempotency_key,destination,national_id,kind,state,observed_on,expected_delivery,prenatal_visits,service_point\n\
                    k1,110105,11010519491231002X,pregnancy,pregnant,2026-03-10,2026-10,2,3101150042\n\
                    k2,110105,11010519491231002X,pregnancy\n\
                    ,110105,11010519491231002X,pregnancy,pregnant,2026-03-10,2026-10,2,3101150042\n";
        let mut src = CsvRows::new(text.as_bytes()).unwrap();
        let (row, f) = src.next_row().unwrap().unwrap().unwrap();
        assert_eq!(row, 2);
        assert!(parse_row(row, &f, &RULES).is_ok());
        let bad = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((bad.row, bad.code.as_str()), (3, "unreadable_row"));
        assert!(
            bad.reason.contains("has 4 fields but the header has 9"),
            "{}",
            bad.reason
        );
        let (row, f) = src.next_row().unwrap().unwrap().unwrap();
        assert_eq!(row, 4);
        let e = parse_row(row, &f, &RULES).unwrap_err();
        assert_eq!((e.row, e.field.as_str()), (4, "idempotency_key"));
        assert!(src.next_row().unwrap().is_none());
        assert_eq!(src.bytes_read(), text.len() as u64);
    }

    #[test]
    fn csv_header_must_name_known_and_required_columns() {
        let e = CsvRows::new("idempotency_key,destination,national_id,kind,colour\n".as_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("unknown column `colour`"), "{e}");
        let e = CsvRows::new("idempotency_key,destination,kind\n".as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("lacks the column(s) national_id"),
            "{e}"
        );
        let e = CsvRows::new("idempotency_key,destination,national_id,kind,kind\n".as_bytes())
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn jsonl_rows_accept_numbers_and_report_bad_lines() {
        let text = concat!(
            r#"{"idempotency_key":"j1","destination":"110105","national_id":"11010519491231002X","kind":"pregnancy","state":"pregnant","observed_on":"2026-03-10","expected_delivery":"2026-10","prenatal_visits":3,"service_point":"3101150042","supersedes":null}"#,
            "\n\n",
            "not json\n",
            r#"{"idempotency_key":"j3","colour":"red"}"#,
            "\n",
            "[1,2]\n",
        );
        let mut src = JsonlRows::new(text.as_bytes());
        let (row, f) = src.next_row().unwrap().unwrap().unwrap();
        assert_eq!(row, 1);
        let s = parse_row(row, &f, &RULES).unwrap();
        let Some(pb::submission::Payload::Pregnancy(p)) = s.payload else {
            panic!("not a pregnancy payload");
        };
        assert_eq!(p.prenatal_visits, 3);
        let e = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((e.row, e.code.as_str()), (3, "unreadable_row"));
        let e = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((e.row, e.field.as_str()), (4, "colour"));
        let e = src.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!(e.row, 5);
        assert!(e.reason.contains("not a JSON object"));
        assert!(src.next_row().unwrap().is_none());
    }

    #[test]
    fn the_sample_file_parses_completely() {
        let text = include_str!("../../../deploy/examples/submit-sample.csv");
        let mut src = CsvRows::new(text.as_bytes()).unwrap();
        let mut n = 0;
        while let Some(raw) = src.next_row().unwrap() {
            let (row, f) = raw.unwrap();
            let s = parse_row(row, &f, &RULES).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(s.destination, "110105");
            n += 1;
        }
        assert!(n >= 8, "{n}");
    }

    #[test]
    fn node_field_paths_map_to_columns() {
        assert_eq!(
            column_of("pregnancy.expected_delivery"),
            "expected_delivery"
        );
        assert_eq!(column_of("retraction.kind"), "retracted_kind");
        assert_eq!(column_of("destination"), "destination");
        assert_eq!(column_of("payload"), "kind");
    }

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
            default_errors_path(Path::new("/data/batch-7.csv")),
            PathBuf::from("/data/batch-7.errors.csv")
        );
    }
}
