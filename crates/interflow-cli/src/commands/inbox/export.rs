//! `inbox export`: pulls every item after the consumer's cursor (or `--after`), page by page
//! with `next_after` until caught up with the node's head, and writes them as JSON Lines, CSV
//! or one FHIR R4 Bundle ([`super::fhir`]). The output carries the whole subject ref: it is the
//! data feed for the bureau's own systems. A file is created with mode 0600. Nothing is
//! acknowledged: the receiving system acknowledges once it has imported the file.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use interflow_core::pb;
use serde::Serialize;

use super::args::{ExportFormat, ReadArgs};
use super::item::ExportItem;
use crate::conn::Connection;
use crate::view::PayloadView;
use crate::{Ctx, Outcome, Report, emit, human};

/// Items per `Inbox.Pull` (the node's cap).
const PAGE: u32 = 1000;

/// Every item after `read.after` (or the cursor), and the position the next read starts at.
pub async fn fetch_all(
    conn: &Connection,
    read: &ReadArgs,
) -> anyhow::Result<(Vec<pb::InboxItem>, u64)> {
    let mut items = Vec::new();
    let mut after = read.after;
    loop {
        let resp = super::pull::pull_page(conn, read, after, PAGE).await?;
        let before = after;
        items.extend(resp.items);
        after = Some(resp.next_after);
        // Caught up, or no progress (nothing after the cursor).
        if resp.next_after >= resp.head || before == after {
            return Ok((items, resp.next_after));
        }
    }
}

/// Ids of records a retraction among `items` withdrew.
pub fn withdrawn(items: &[pb::InboxItem]) -> HashSet<Vec<u8>> {
    items
        .iter()
        .filter(|i| {
            matches!(i.payload, Some(pb::inbox_item::Payload::Retraction(_)))
                && !i.supersedes.is_empty()
        })
        .map(|i| i.supersedes.clone())
        .collect()
}

/// The summary `export --out FILE` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportReport {
    pub file: String,
    pub format: &'static str,
    pub items: usize,
    /// FHIR only: Observations in the Bundle.
    pub observations: Option<usize>,
    /// Position the next export should read after (`--after`), or acknowledge.
    pub next_after: u64,
}

impl Report for ExportReport {
    fn human(&self) -> String {
        let obs = self
            .observations
            .map(|n| format!(" ({})", human::count(n as u64, "Observation")))
            .unwrap_or_default();
        format!(
            "wrote {} as {}{obs} to `{}`; next export after position {}; acknowledge it with `inbox ack --position {}` once imported\n",
            human::count(self.items as u64, "item"),
            self.format,
            self.file,
            self.next_after,
            self.next_after
        )
    }
}

pub async fn run(
    conn: &Connection,
    read: &ReadArgs,
    format: ExportFormat,
    out: Option<&Path>,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    let (items, next_after) = fetch_all(conn, read).await?;
    let (bytes, observations) = render(&items, format, human::now_ms())?;
    let format_name = match format {
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Csv => "csv",
        ExportFormat::Fhir => "fhir",
    };
    match out {
        None => {
            ctx.out.write_all(&bytes).context("writing output")?;
            ctx.out.flush().context("writing output")?;
            Ok(Outcome::Success)
        }
        Some(path) => {
            write_private(path, &bytes)?;
            emit(
                ctx,
                &ExportReport {
                    file: path.display().to_string(),
                    format: format_name,
                    items: items.len(),
                    observations,
                    next_after,
                },
            )
        }
    }
}

/// The file's bytes, and for FHIR the number of Observations.
pub fn render(
    items: &[pb::InboxItem],
    format: ExportFormat,
    now_ms: i64,
) -> anyhow::Result<(Vec<u8>, Option<usize>)> {
    let withdrawn = withdrawn(items);
    let mut buf = Vec::new();
    match format {
        ExportFormat::Jsonl => {
            for it in items {
                let e = ExportItem::from_item(it, withdrawn.contains(&it.record_id));
                serde_json::to_writer(&mut buf, &e).context("encoding json")?;
                buf.push(b'\n');
            }
            Ok((buf, None))
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut buf);
            w.write_record(CSV_HEADER).context("encoding csv")?;
            for it in items {
                let e = ExportItem::from_item(it, withdrawn.contains(&it.record_id));
                w.write_record(csv_row(&e)).context("encoding csv")?;
            }
            w.flush().context("encoding csv")?;
            drop(w);
            Ok((buf, None))
        }
        ExportFormat::Fhir => {
            let bundle = super::fhir::bundle(items, &withdrawn, now_ms);
            let n = bundle["entry"].as_array().map_or(0, Vec::len);
            serde_json::to_writer_pretty(&mut buf, &bundle).context("encoding json")?;
            buf.push(b'\n');
            Ok((buf, Some(n)))
        }
    }
}

pub const CSV_HEADER: [&str; 25] = [
    "position",
    "record_id",
    "origin",
    "seq",
    "agreement_id",
    "kind",
    "type",
    "subject_ref",
    "state",
    "method",
    "observed_on",
    "expected_delivery",
    "event_date",
    "since",
    "prenatal_visits",
    "service_point",
    "retracted_kind",
    "issued_at",
    "supersedes",
    "current",
    "erased",
    "withdrawn",
    "arrived_at",
    "issued_at_ms",
    "arrived_at_ms",
];

/// The payload's CSV columns; those a kind does not have stay empty.
#[derive(Default)]
struct PayloadCols {
    state: String,
    method: String,
    expected: String,
    event: String,
    since: String,
    visits: String,
    point: String,
    retracted: String,
}

fn csv_row(e: &ExportItem) -> Vec<String> {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let (ty, p) = match &e.payload {
        Some(PayloadView::Pregnancy {
            state,
            expected_delivery,
            event_date,
            prenatal_visits,
            service_point,
            ..
        }) => (
            "pregnancy",
            PayloadCols {
                state: state.clone(),
                expected: o(expected_delivery),
                event: o(event_date),
                visits: prenatal_visits.to_string(),
                point: service_point.clone(),
                ..PayloadCols::default()
            },
        ),
        Some(PayloadView::Contraception {
            method,
            since,
            service_point,
            ..
        }) => (
            "contraception",
            PayloadCols {
                method: method.clone(),
                since: o(since),
                point: service_point.clone(),
                ..PayloadCols::default()
            },
        ),
        // A residence notice: its event (`arrived`/`departed`) in `state`, its month in `event`.
        Some(PayloadView::Residence { event, month }) => (
            "residence",
            PayloadCols {
                state: (*event).to_owned(),
                event: o(month),
                ..PayloadCols::default()
            },
        ),
        Some(PayloadView::Retraction { retracted_kind }) => (
            "retraction",
            PayloadCols {
                retracted: (*retracted_kind).to_owned(),
                ..PayloadCols::default()
            },
        ),
        None => ("erased", PayloadCols::default()),
    };
    vec![
        e.position.to_string(),
        e.record_id.clone(),
        e.origin.clone(),
        e.seq.to_string(),
        e.agreement_id.clone(),
        e.kind.to_owned(),
        ty.to_owned(),
        o(&e.subject_ref),
        p.state,
        p.method,
        o(&e.observed_on),
        p.expected,
        p.event,
        p.since,
        p.visits,
        p.point,
        p.retracted,
        o(&e.issued_at),
        o(&e.supersedes),
        e.current.to_string(),
        e.erased.to_string(),
        e.withdrawn.to_string(),
        e.arrived_at.clone(),
        e.issued_at_ms.to_string(),
        e.arrived_at_ms.to_string(),
    ]
}

/// Writes `bytes` to `path` readable by its owner only (0600), replacing an older file.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let ctx = || format!("writing the export to `{}`", path.display());
    let mut f = opts.open(path).with_context(ctx)?;
    // An existing file keeps its mode on open: narrow it too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(ctx)?;
    }
    f.write_all(bytes).with_context(ctx)?;
    f.sync_all().with_context(ctx)?;
    Ok(())
}
