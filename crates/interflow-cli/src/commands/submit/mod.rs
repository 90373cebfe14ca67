//! `submit`: status records from a CSV or JSONL file to `Intake.Submit`, in batches.
//!
//! Each row is parsed and checked here first (the same payload rules the node applies), so
//! most mistakes are reported with their row and column without a round trip. Valid rows are
//! sent in batches; the node stores each batch's valid items atomically and answers per item.
//! Every row carries an idempotency key, so rerunning the same file after an interruption is
//! safe: rows stored before come back as duplicates ("already stored"). Rows that fail, here
//! or at the node, go to a CSV error report (row, idempotency_key, field, code, reason).
//! Reasons never echo field values: national IDs and dates are personal data.

mod report;
mod row;
mod source;

pub use report::{ERROR_REPORT_HEADER, ErrorGroup, SubmitSummary, default_errors_path};
pub use row::{COLUMNS, Fields, RowError, column_of, parse_row};
pub use source::{CsvRows, JsonlRows, RawRow, RowSource, fields_from_json};

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable as _};
use indicatif::{ProgressBar, ProgressStyle};
use interflow_core::payload::ValidationRules;
use interflow_core::pb;

use crate::cli::InputFormat;
use crate::conn::Connection;
use crate::human;
use report::ErrorReport;
use row::{FUTURE_SKEW_MS, row_error};
use source::detect_format;

/// How often a batch is retried when the node is briefly unavailable or rate-limits it.
const RETRIES: usize = 5;

/// The wait before the first retry; it doubles for each further one.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// How often a batch is sent again while the node's intake is busy (`RESOURCE_EXHAUSTED` with
/// a `retry-after-ms` hint), and the shortest and longest wait before a try: never less than
/// the node's hint, doubling with jitter. About two and a half minutes in all, then it gives up.
const BUSY_RETRIES: usize = 20;
const BUSY_MIN_DELAY: Duration = Duration::from_millis(50);
const BUSY_MAX_DELAY: Duration = Duration::from_secs(10);

/// What `submit` needs besides the connection.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub format: Option<InputFormat>,
    pub batch: usize,
    pub errors: Option<PathBuf>,
    pub progress: bool,
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
    /// Calls sent again because the node's intake was busy.
    busy_retries: u64,
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
    let errors_path = match &opts.errors {
        Some(path) => path.clone(),
        None => default_errors_path(
            &opts.file,
            &std::env::current_dir().context("reading the working directory")?,
        ),
    };
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
    // Until the node has said its limit, no more than its default.
    let mut batch_size = opts.batch.clamp(1, NODE_DEFAULT_MAX_BATCH);
    let mut tally = Tally::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut items: Vec<pb::Submission> = Vec::with_capacity(batch_size);
    let mut queued: Vec<Queued> = Vec::with_capacity(batch_size);
    let mut held: Vec<row::RowError> = Vec::new();
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
                    // Held back while earlier rows wait for the node, so the report stays in
                    // input order.
                    if queued.is_empty() {
                        report.add(&e)?;
                    } else {
                        held.push(e);
                    }
                }
            }
        }
        if items.len() >= batch_size || (at_end && !items.is_empty()) {
            let batch = std::mem::take(&mut items);
            let rows = std::mem::take(&mut queued);
            let mut node_max = None;
            let mut busy = Busy {
                bar: &bar,
                retries: 0,
            };
            let sent = send(conn, batch, batch_size, &mut node_max, &mut busy).await;
            tally.busy_retries += busy.retries;
            if let Some(max) = node_max {
                batch_size = opts.batch.clamp(1, max.max(1));
            }
            let (results, calls) = sent.map_err(|e| {
                let first = rows.first().map_or(0, |q| q.row);
                let last = rows.last().map_or(0, |q| q.row);
                for e in held.drain(..) {
                    let _ = report.add(&e);
                }
                let _ = report.flush();
                let rerun = if crate::conn::rerun_cannot_help(&e) {
                    ""
                } else {
                    "; rerun the same command: stored rows are reported as already stored"
                };
                let context = format!(
                    "submitting rows {first} to {last} of `{}` ({} stored and {} already stored before){rerun}",
                    opts.file.display(),
                    tally.stored,
                    tally.duplicates
                );
                e.context(context)
            })?;
            tally.batches += calls;
            let mut failed = std::mem::take(&mut held);
            for (q, r) in rows.iter().zip(results) {
                match r.outcome {
                    Some(pb::submit_result::Outcome::RecordId(_)) if r.duplicate => {
                        tally.duplicates += 1;
                    }
                    Some(pb::submit_result::Outcome::RecordId(_)) => tally.stored += 1,
                    Some(pb::submit_result::Outcome::Error(e)) => {
                        tally.rejected += 1;
                        failed.push(row_error(
                            q.row,
                            &q.key,
                            &column_of(&e.field),
                            &crate::names::submit_error_name(e.code),
                            e.reason,
                        ));
                    }
                    None => {
                        tally.rejected += 1;
                        failed.push(row_error(
                            q.row,
                            &q.key,
                            "",
                            "unknown",
                            "the node answered without an outcome",
                        ));
                    }
                }
            }
            failed.sort_by_key(|e| e.row);
            for e in &failed {
                report.add(e)?;
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
        busy_retries: tally.busy_retries,
        errors_file: errors_file.map(|p| p.display().to_string()),
        error_summary,
    })
}

/// The node's `limits.max_submit_batch` unless it says otherwise.
const NODE_DEFAULT_MAX_BATCH: usize = 1000;

/// Sends `items` in `Intake.Submit` calls of at most `limit` items, answers in item order, and
/// how many calls it took. The node names its batch limit on every answer (`node_max`); a batch
/// it refuses as too large is split to that limit and sent again.
async fn send(
    conn: &Connection,
    items: Vec<pb::Submission>,
    mut limit: usize,
    node_max: &mut Option<usize>,
    busy: &mut Busy<'_>,
) -> anyhow::Result<(Vec<pb::SubmitResult>, u64)> {
    let mut results = Vec::with_capacity(items.len());
    let mut calls = 0;
    let mut rest = items;
    while !rest.is_empty() {
        let chunk: Vec<pb::Submission> = rest.drain(..rest.len().min(limit.max(1))).collect();
        calls += 1;
        match send_once(conn, &chunk, busy).await? {
            Sent::Answered(r, max) => {
                *node_max = max.or(*node_max);
                results.extend(r);
            }
            Sent::TooLarge(max) => {
                *node_max = Some(max);
                limit = max.max(1);
                rest.splice(0..0, chunk);
            }
        }
    }
    Ok((results, calls))
}

/// What one call brought back.
enum Sent {
    /// The results, and the node's batch limit if it named it.
    Answered(Vec<pb::SubmitResult>, Option<usize>),
    /// Refused: the node takes at most this many items per call.
    TooLarge(usize),
}

/// The batch limit a node names in `md`.
fn max_batch(md: &tonic::metadata::MetadataMap) -> Option<usize> {
    md.get(interflow_core::MAX_SUBMIT_BATCH_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Where retries after a busy answer are shown and counted.
struct Busy<'a> {
    bar: &'a ProgressBar,
    retries: u64,
}

/// Whether `s` is the node's rate limit: slow down and try again.
fn rate_limited(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::ResourceExhausted && s.message().contains("rate limit")
}

/// One `Intake.Submit` call, retried while the node is briefly unavailable or asks to slow down,
/// and sent again after the node's hint while its intake is busy (safe: items are idempotent
/// by key, and a busy node stored nothing of the call).
async fn send_once(
    conn: &Connection,
    items: &[pb::Submission],
    busy: &mut Busy<'_>,
) -> anyhow::Result<Sent> {
    let n = items.len();
    let request = pb::SubmitRequest {
        items: items.to_vec(),
    };
    let call = || async {
        tokio::time::timeout(
            conn.request_timeout(),
            conn.intake().submit(request.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {}",
                human::format_age(conn.request_timeout())
            )))
        })
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY_DELAY)
        .with_jitter()
        .with_max_times(RETRIES);
    let transient = || {
        call.retry(backoff)
            .when(|s| {
                rate_limited(s)
                    || matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    )
            })
            .notify(|s, wait| {
                tracing::warn!(code = ?s.code(), retry_in = ?wait, "submit failed; retrying");
            })
    };
    let busy_backoff = ExponentialBuilder::default()
        .with_min_delay(BUSY_MIN_DELAY)
        .with_max_delay(BUSY_MAX_DELAY)
        .with_jitter()
        .with_max_times(BUSY_RETRIES);
    let started = std::time::Instant::now();
    let mut tries = 0;
    let answer = transient
        .retry(busy_backoff)
        .when(|s| interflow_core::retry_after(s).is_some())
        // Never sooner than the node asked; `None` (tries used up) still gives up.
        .adjust(|s, wait| {
            wait.map(|w| interflow_core::retry_after(s).map_or(w, |hint| hint.max(w)))
        })
        .notify(|_, wait| {
            busy.retries += 1;
            tries += 1;
            busy.bar.set_message(format!(
                "node busy: sending this batch again in {} ms (retry {tries} of {BUSY_RETRIES})",
                wait.as_millis()
            ));
            tracing::info!(retry_in = ?wait, "node intake busy; sending the batch again");
        })
        .await;
    let resp = match answer {
        Ok(resp) => resp,
        Err(s) if interflow_core::retry_after(&s).is_some() => {
            let tries = format!(
                "the node's intake stayed busy through {} tries over {}",
                BUSY_RETRIES + 1,
                human::format_age(started.elapsed())
            );
            return Err(conn.call_error("Intake.Submit", s).context(tries));
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => match max_batch(s.metadata()) {
            Some(max) if max < n => return Ok(Sent::TooLarge(max)),
            _ => return Err(conn.call_error("Intake.Submit", s)),
        },
        Err(s) => return Err(conn.call_error("Intake.Submit", s)),
    };
    let max = max_batch(resp.metadata());
    let results = resp.into_inner().results;
    anyhow::ensure!(
        results.len() == n,
        "the node answered {} results for {n} items; this is a node bug, report it",
        results.len()
    );
    Ok(Sent::Answered(results, max))
}
