//! The `Admin` commands other than `pending`: channels, one record, stats, lookup by national
//! ID, reconciliation (streamed), verification and the audit log. Each returns a serializable
//! report; nothing here prints a national ID or a whole subject ref.

use anyhow::Context as _;
use futures::StreamExt as _;
use interflow_core::record::{DecodedRecord, RecordId};
use interflow_core::{RegionCode, pb};
use serde::Serialize;

use crate::conn::Connection;
use crate::human;
use crate::view::{PayloadView, RecordEntry, RecordView};
use crate::{Ctx, Outcome, Report};

// ---------------------------------------------------------------------------------------------
// channels

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelsReport {
    pub channels: Vec<ChannelRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelRow {
    pub origin: String,
    pub destination: String,
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    pub head_seq: u64,
    pub head_hash: String,
    /// Outbound only: highest seq the destination acknowledged with a verified receipt.
    pub acked_seq: Option<u64>,
    /// Outbound only: `head_seq - acked_seq`.
    pub pending: Option<u64>,
    /// Stopped after equivocation until an operator clears it.
    pub stopped: bool,
    /// Outbound: new records wait until heads were compared with the peer after start.
    pub held: bool,
}

pub async fn channels(conn: &Connection) -> anyhow::Result<ChannelsReport> {
    let resp = conn
        .unary(
            "Admin.ListChannels",
            conn.admin().list_channels(pb::ListChannelsRequest {}),
        )
        .await?;
    let mut channels: Vec<ChannelRow> = resp
        .channels
        .into_iter()
        .map(|c| {
            let outbound = c.direction == pb::Direction::Outbound as i32;
            ChannelRow {
                direction: if outbound { "outbound" } else { "inbound" },
                head_seq: c.head_seq,
                head_hash: hex::encode(&c.head_hash),
                acked_seq: outbound.then_some(c.acked_seq),
                pending: outbound.then(|| c.head_seq.saturating_sub(c.acked_seq)),
                stopped: c.stopped,
                held: c.held,
                origin: c.origin,
                destination: c.destination,
            }
        })
        .collect();
    channels.sort_by(|a, b| {
        (a.direction, &a.origin, &a.destination).cmp(&(b.direction, &b.origin, &b.destination))
    });
    Ok(ChannelsReport { channels })
}

impl Report for ChannelsReport {
    fn human(&self) -> String {
        if self.channels.is_empty() {
            return "no channels yet\n".into();
        }
        let mut t = human::table(&[
            "CHANNEL",
            "DIRECTION",
            "HEAD",
            "ACKED",
            "PENDING",
            "HEAD HASH",
            "STATE",
        ]);
        for c in &self.channels {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
            t.add_row(vec![
                format!("{}->{}", c.origin, c.destination),
                c.direction.to_owned(),
                c.head_seq.to_string(),
                opt(c.acked_seq),
                opt(c.pending),
                c.head_hash.get(..12).unwrap_or("").to_owned(),
                if c.stopped {
                    "STOPPED (equivocation)".into()
                } else if c.held {
                    "held (heads not yet compared)".into()
                } else {
                    "ok".into()
                },
            ]);
        }
        format!("{t}\n")
    }

    fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

// ---------------------------------------------------------------------------------------------
// record

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordReport {
    pub id: String,
    /// Whether the signature verifies under the origin's directory key now.
    pub signature_valid: bool,
    /// The payload was erased at the end of the agreement's retention period.
    pub erased: bool,
    /// The decoded record; absent when the body is erased or does not decode.
    pub record: Option<RecordView>,
    pub decode_error: Option<String>,
}

pub async fn record(conn: &Connection, id: &str) -> anyhow::Result<RecordReport> {
    let rid = RecordId::from_hex(id.trim())
        .with_context(|| format!("`{id}` is not a record id; pass the 64 hex digits"))?;
    let resp = conn
        .unary(
            "Admin.GetRecord",
            conn.admin().get_record(pb::GetRecordRequest {
                record_id: rid.0.to_vec(),
            }),
        )
        .await?;
    let (record, decode_error) = match resp.record {
        Some(signed) if !signed.body.is_empty() => match DecodedRecord::decode(signed) {
            Ok(d) => (Some(RecordView::from_decoded(&d)), None),
            Err(e) => (None, Some(e.to_string())),
        },
        _ => (None, None),
    };
    Ok(RecordReport {
        id: rid.to_hex(),
        signature_valid: resp.signature_valid,
        erased: resp.erased,
        record,
        decode_error,
    })
}

impl Report for RecordReport {
    fn human(&self) -> String {
        let mut t = human::table(&["FIELD", "VALUE"]);
        let mut row = |k: &str, v: String| {
            t.add_row(vec![k.to_owned(), v]);
        };
        row("id", self.id.clone());
        row(
            "signature",
            if self.signature_valid {
                "valid under the origin's directory key".into()
            } else {
                "NOT VALID under the origin's directory key".into()
            },
        );
        if self.erased {
            row(
                "erased",
                "payload erased at the end of the retention period".into(),
            );
        }
        if let Some(e) = &self.decode_error {
            row("body", format!("does not decode: {e}"));
        }
        if let Some(r) = &self.record {
            row("channel", format!("{}->{}", r.origin, r.destination));
            row("seq", r.seq.to_string());
            row("prev hash", r.prev_hash.clone());
            row("issued at", r.issued_at.clone());
            row("agreement", r.agreement_id.clone());
            row("subject", r.subject.clone());
            row("kind", r.kind.to_owned());
            row(
                "supersedes",
                r.supersedes.clone().unwrap_or_else(|| "-".into()),
            );
            payload_rows(&r.payload, &mut row);
        }
        format!("{t}\n")
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(!self.signature_valid || self.decode_error.is_some())
    }
}

fn payload_rows(p: &PayloadView, row: &mut dyn FnMut(&str, String)) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    match p {
        PayloadView::Pregnancy {
            state,
            observed_on,
            expected_delivery,
            event_date,
            prenatal_visits,
            service_point,
        } => {
            row("state", (*state).to_owned());
            row("observed on", opt(observed_on));
            row("expected delivery", opt(expected_delivery));
            row("event date", opt(event_date));
            row("prenatal visits", prenatal_visits.to_string());
            row("service point", service_point.clone());
        }
        PayloadView::Contraception {
            method,
            since,
            observed_on,
            service_point,
        } => {
            row("method", (*method).to_owned());
            row("since", opt(since));
            row("observed on", opt(observed_on));
            row("service point", service_point.clone());
        }
        PayloadView::Retraction { retracted_kind } => {
            row("retracts", format!("a {retracted_kind} record"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stats

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsReport {
    pub region_code: String,
    pub records_outbound: u64,
    pub records_inbound: u64,
    pub pending: u64,
    pub equivocations: u64,
    pub audit_entries: u64,
    pub reconcile_runs: u64,
}

pub async fn stats(conn: &Connection) -> anyhow::Result<StatsReport> {
    let s = conn
        .unary("Admin.Stats", conn.admin().stats(pb::StatsRequest {}))
        .await?;
    Ok(StatsReport {
        region_code: s.region_code,
        records_outbound: s.records_outbound,
        records_inbound: s.records_inbound,
        pending: s.pending,
        equivocations: s.equivocations,
        audit_entries: s.audit_entries,
        reconcile_runs: s.reconcile_runs,
    })
}

impl Report for StatsReport {
    fn human(&self) -> String {
        let mut t = human::table(&[
            "NODE",
            "OUTBOUND",
            "INBOUND",
            "PENDING",
            "EQUIVOCATIONS",
            "AUDIT ENTRIES",
            "RECONCILE RUNS",
        ]);
        t.add_row(vec![
            self.region_code.clone(),
            self.records_outbound.to_string(),
            self.records_inbound.to_string(),
            self.pending.to_string(),
            self.equivocations.to_string(),
            self.audit_entries.to_string(),
            self.reconcile_runs.to_string(),
        ]);
        format!("{t}\n")
    }
}

// ---------------------------------------------------------------------------------------------
// lookup

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookupReport {
    /// The ID masked to its last four characters.
    pub masked_id: String,
    /// The current record per agreement and kind, after corrections and retractions.
    pub current: Vec<CurrentStatus>,
    /// Every record of the person, oldest first by observed date.
    pub timeline: Vec<RecordEntry>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CurrentStatus {
    pub agreement_id: String,
    pub peer: String,
    pub kind: &'static str,
    pub record: Option<RecordEntry>,
}

pub async fn lookup(conn: &Connection, national_id: &str) -> anyhow::Result<LookupReport> {
    // Checked here first, so a typo is reported without a round trip and an audit entry.
    let today = interflow_core::time::latest_permitted_date(human::now_ms(), 0);
    interflow_core::NationalId::parse(national_id.trim(), today)
        .context("the national id is invalid; check it and try again")?;
    let resp = conn
        .unary(
            "Admin.Lookup",
            conn.admin().lookup(pb::LookupRequest {
                national_id: national_id.trim().to_owned(),
            }),
        )
        .await?;
    Ok(LookupReport {
        masked_id: resp.masked_id,
        current: resp
            .current
            .into_iter()
            .map(|c| CurrentStatus {
                agreement_id: c.agreement_id,
                peer: c.peer,
                kind: human::kind_name(c.kind),
                record: c.current.map(RecordEntry::from_signed),
            })
            .collect(),
        timeline: resp
            .timeline
            .into_iter()
            .map(RecordEntry::from_signed)
            .collect(),
    })
}

impl Report for LookupReport {
    fn human(&self) -> String {
        let mut s = format!("person {}\n", self.masked_id);
        if self.current.is_empty() && self.timeline.is_empty() {
            s.push_str("no records of this person under any agreement of this node\n");
            return s;
        }
        let mut cur = human::table(&[
            "AGREEMENT",
            "PEER",
            "KIND",
            "CURRENT STATUS",
            "OBSERVED",
            "SERVICE POINT",
            "RECORD",
        ]);
        for c in &self.current {
            let (status, observed, point, id) = match &c.record {
                Some(RecordEntry::Record(r)) => (
                    r.payload.summary(),
                    r.payload.observed_on().unwrap_or("-").to_owned(),
                    r.payload.service_point().unwrap_or("-").to_owned(),
                    r.id.get(..12).unwrap_or("").to_owned(),
                ),
                Some(RecordEntry::Undecodable { id, decode_error }) => (
                    format!("undecodable: {decode_error}"),
                    "-".into(),
                    "-".into(),
                    id.get(..12).unwrap_or("").to_owned(),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            cur.add_row(vec![
                c.agreement_id.clone(),
                c.peer.clone(),
                c.kind.to_owned(),
                status,
                observed,
                point,
                id,
            ]);
        }
        s.push_str(&format!("current status\n{cur}\n"));
        let mut tl = human::table(&[
            "OBSERVED",
            "CHANNEL",
            "SEQ",
            "KIND",
            "STATUS",
            "ISSUED",
            "RECORD",
            "SUPERSEDES",
        ]);
        for e in &self.timeline {
            match e {
                RecordEntry::Record(r) => tl.add_row(vec![
                    r.payload.observed_on().unwrap_or("-").to_owned(),
                    format!("{}->{}", r.origin, r.destination),
                    r.seq.to_string(),
                    r.kind.to_owned(),
                    r.payload.summary(),
                    r.issued_at.clone(),
                    r.id.get(..12).unwrap_or("").to_owned(),
                    r.supersedes
                        .as_deref()
                        .and_then(|s| s.get(..12))
                        .unwrap_or("-")
                        .to_owned(),
                ]),
                RecordEntry::Undecodable { id, decode_error } => tl.add_row(vec![
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    format!("undecodable: {decode_error}"),
                    "-".to_owned(),
                    id.get(..12).unwrap_or("").to_owned(),
                    "-".to_owned(),
                ]),
            };
        }
        s.push_str(&format!(
            "timeline ({})\n{tl}\n",
            human::count(self.timeline.len() as u64, "record")
        ));
        s
    }
}

// ---------------------------------------------------------------------------------------------
// reconcile

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelReportView {
    pub origin: String,
    pub destination: String,
    pub local_head_before: u64,
    pub local_head_after: u64,
    pub peer_head: u64,
    pub records_fetched: u64,
    pub anomalies: Vec<&'static str>,
}

impl From<pb::ChannelReport> for ChannelReportView {
    fn from(c: pb::ChannelReport) -> Self {
        ChannelReportView {
            anomalies: c
                .anomalies
                .iter()
                .map(|a| human::anomaly_name(*a))
                .collect(),
            origin: c.origin,
            destination: c.destination,
            local_head_before: c.local_head_before,
            local_head_after: c.local_head_after,
            peer_head: c.peer_head,
            records_fetched: c.records_fetched,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReconcileReportView {
    pub run_id: u64,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: i64,
    pub records_fetched: u64,
    pub anomalies: usize,
    pub channels: Vec<ChannelReportView>,
}

impl From<pb::ReconcileReport> for ReconcileReportView {
    fn from(r: pb::ReconcileReport) -> Self {
        let channels: Vec<ChannelReportView> = r.channels.into_iter().map(Into::into).collect();
        ReconcileReportView {
            run_id: r.run_id,
            started_at: human::instant(r.started_at_ms),
            finished_at: human::instant(r.finished_at_ms),
            duration_ms: r.finished_at_ms.saturating_sub(r.started_at_ms),
            records_fetched: channels.iter().map(|c| c.records_fetched).sum(),
            anomalies: channels.iter().map(|c| c.anomalies.len()).sum(),
            channels,
        }
    }
}

/// One line of `reconcile --json`: `{"event":"peer_done",...}` or `{"event":"report",...}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReconcileEvent {
    PeerDone {
        peer: String,
        channels: Vec<ChannelReportView>,
    },
    Report(ReconcileReportView),
}

fn channel_table(channels: &[ChannelReportView]) -> comfy_table::Table {
    let mut t = human::table(&[
        "CHANNEL",
        "LOCAL BEFORE",
        "LOCAL AFTER",
        "PEER HEAD",
        "FETCHED",
        "ANOMALIES",
    ]);
    for c in channels {
        t.add_row(vec![
            format!("{}->{}", c.origin, c.destination),
            c.local_head_before.to_string(),
            c.local_head_after.to_string(),
            c.peer_head.to_string(),
            c.records_fetched.to_string(),
            if c.anomalies.is_empty() {
                "-".into()
            } else {
                c.anomalies.join(", ")
            },
        ]);
    }
    t
}

impl ReconcileEvent {
    pub fn from_progress(p: pb::ReconcileProgress) -> Option<ReconcileEvent> {
        use pb::reconcile_progress::Event;
        match p.event? {
            Event::PeerDone(d) => Some(ReconcileEvent::PeerDone {
                peer: d.peer,
                channels: d.channels.into_iter().map(Into::into).collect(),
            }),
            Event::Report(r) => Some(ReconcileEvent::Report(r.into())),
        }
    }

    pub fn human(&self) -> String {
        match self {
            ReconcileEvent::PeerDone { peer, channels } => {
                let fetched: u64 = channels.iter().map(|c| c.records_fetched).sum();
                let anomalies: usize = channels.iter().map(|c| c.anomalies.len()).sum();
                let mut s = format!(
                    "peer {peer}: {}, {} fetched, {}\n",
                    human::count(channels.len() as u64, "channel"),
                    human::count(fetched, "record"),
                    human::count(anomalies as u64, "anomaly")
                );
                if !channels.is_empty() {
                    s.push_str(&format!("{}\n", channel_table(channels)));
                }
                s
            }
            ReconcileEvent::Report(r) => r.human(),
        }
    }

    fn anomalies(&self) -> usize {
        match self {
            ReconcileEvent::PeerDone { channels, .. } => {
                channels.iter().map(|c| c.anomalies.len()).sum()
            }
            ReconcileEvent::Report(r) => r.anomalies,
        }
    }
}

impl ReconcileReportView {
    fn human(&self) -> String {
        format!(
            "run {} from {} to {} ({} ms): {}, {} fetched, {}\n",
            self.run_id,
            self.started_at,
            self.finished_at,
            self.duration_ms,
            human::count(self.channels.len() as u64, "channel"),
            human::count(self.records_fetched, "record"),
            human::count(self.anomalies as u64, "anomaly")
        )
    }
}

/// Runs `Admin.Reconcile`, printing each event as it arrives. `Problem` when any anomaly was
/// reported.
pub async fn reconcile(
    conn: &Connection,
    peer: Option<RegionCode>,
    recover: bool,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    let mut stream = conn
        .unary(
            "Admin.Reconcile",
            conn.admin().reconcile(pb::ReconcileRequest {
                peer: peer.map(|p| p.to_string()).unwrap_or_default(),
                recover,
            }),
        )
        .await?;
    let mut anomalies = 0usize;
    let mut saw_report = false;
    while let Some(item) = stream.next().await {
        let progress = item.map_err(|s| conn.call_error("Admin.Reconcile", s))?;
        let Some(event) = ReconcileEvent::from_progress(progress) else {
            continue;
        };
        if let ReconcileEvent::Report(_) = &event {
            saw_report = true;
            anomalies = event.anomalies();
        } else if !saw_report {
            anomalies += event.anomalies();
        }
        if ctx.json {
            serde_json::to_writer(&mut *ctx.out, &event).context("writing json")?;
            writeln!(ctx.out).context("writing output")?;
        } else {
            ctx.out
                .write_all(event.human().as_bytes())
                .context("writing output")?;
        }
        ctx.out.flush().context("writing output")?;
    }
    anyhow::ensure!(
        saw_report,
        "the node ended the reconciliation stream without a report; see the node's log, then rerun `interflowctl reconcile` (runs are idempotent)"
    );
    Ok(Outcome::problem_if(anomalies > 0))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReconcileReports {
    pub reports: Vec<ReconcileReportView>,
}

pub async fn reconcile_reports(conn: &Connection, limit: u32) -> anyhow::Result<ReconcileReports> {
    let resp = conn
        .unary(
            "Admin.ListReconcileReports",
            conn.admin()
                .list_reconcile_reports(pb::ListReconcileReportsRequest { limit }),
        )
        .await?;
    Ok(ReconcileReports {
        reports: resp.reports.into_iter().map(Into::into).collect(),
    })
}

impl Report for ReconcileReports {
    fn human(&self) -> String {
        if self.reports.is_empty() {
            return "no reconciliation runs yet\n".into();
        }
        let mut t = human::table(&[
            "RUN",
            "STARTED",
            "DURATION",
            "CHANNELS",
            "FETCHED",
            "ANOMALIES",
        ]);
        for r in &self.reports {
            let names: Vec<String> = r
                .channels
                .iter()
                .flat_map(|c| {
                    c.anomalies
                        .iter()
                        .map(move |a| format!("{a} ({}->{})", c.origin, c.destination))
                })
                .collect();
            t.add_row(vec![
                r.run_id.to_string(),
                r.started_at.clone(),
                format!("{} ms", r.duration_ms),
                r.channels.len().to_string(),
                r.records_fetched.to_string(),
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(", ")
                },
            ]);
        }
        format!("{t}\n")
    }
}

// ---------------------------------------------------------------------------------------------
// verify

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

// ---------------------------------------------------------------------------------------------
// disclosure

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DisclosureReport {
    pub masked_id: String,
    pub exchanges: Vec<ExchangeView>,
    pub reads: Vec<ReadView>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExchangeView {
    pub record_id: String,
    pub direction: &'static str,
    pub origin: String,
    pub destination: String,
    pub seq: u64,
    pub kind: &'static str,
    pub issued_at: String,
    pub agreement_id: String,
    pub legal_basis: String,
    pub acknowledged: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReadView {
    pub audit_index: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
}

pub async fn disclosure(conn: &Connection, national_id: &str) -> anyhow::Result<DisclosureReport> {
    let today = interflow_core::time::latest_permitted_date(human::now_ms(), 0);
    interflow_core::NationalId::parse(national_id.trim(), today)
        .context("the national id is invalid; check it and try again")?;
    let r = conn
        .unary(
            "Admin.Disclosure",
            conn.admin().disclosure(pb::DisclosureRequest {
                national_id: national_id.trim().to_owned(),
            }),
        )
        .await?;
    Ok(DisclosureReport {
        masked_id: r.masked_id,
        exchanges: r
            .exchanges
            .into_iter()
            .map(|e| {
                let outbound = e.direction == pb::Direction::Outbound as i32;
                ExchangeView {
                    record_id: hex::encode(&e.record_id),
                    direction: if outbound { "sent" } else { "received" },
                    origin: e.origin,
                    destination: e.destination,
                    seq: e.seq,
                    kind: human::kind_name(e.kind),
                    issued_at: human::instant(e.issued_at_ms),
                    agreement_id: e.agreement_id,
                    legal_basis: match pb::LegalBasisKind::try_from(e.legal_basis) {
                        Ok(pb::LegalBasisKind::StatutoryDuty) => {
                            format!("statutory duty ({})", e.statute_reference)
                        }
                        Ok(pb::LegalBasisKind::Consent) => "consent".into(),
                        _ => "unknown".into(),
                    },
                    acknowledged: outbound.then_some(e.acknowledged),
                }
            })
            .collect(),
        reads: r
            .reads
            .into_iter()
            .map(|e| ReadView {
                audit_index: e.audit_index,
                at: human::instant(e.at_ms),
                actor: e.actor,
                action: e.action,
            })
            .collect(),
    })
}

impl Report for DisclosureReport {
    fn human(&self) -> String {
        let mut s = format!(
            "person {}: {}, {}\n",
            self.masked_id,
            human::count(self.exchanges.len() as u64, "exchange"),
            human::count(self.reads.len() as u64, "audited read")
        );
        if !self.exchanges.is_empty() {
            let mut t = human::table(&[
                "ISSUED",
                "DIRECTION",
                "CHANNEL",
                "SEQ",
                "KIND",
                "AGREEMENT",
                "LEGAL BASIS",
                "ACKED",
                "RECORD",
            ]);
            for e in &self.exchanges {
                t.add_row(vec![
                    e.issued_at.clone(),
                    e.direction.to_owned(),
                    format!("{}->{}", e.origin, e.destination),
                    e.seq.to_string(),
                    e.kind.to_owned(),
                    e.agreement_id.clone(),
                    e.legal_basis.clone(),
                    match e.acknowledged {
                        Some(true) => "yes".into(),
                        Some(false) => "no".into(),
                        None => "-".into(),
                    },
                    e.record_id.chars().take(12).collect(),
                ]);
            }
            s.push_str(&format!("{t}\n"));
        }
        if !self.reads.is_empty() {
            let mut t = human::table(&["AT", "WHO", "WHAT", "AUDIT #"]);
            for r in &self.reads {
                t.add_row(vec![
                    r.at.clone(),
                    r.actor.clone(),
                    r.action.clone(),
                    r.audit_index.to_string(),
                ]);
            }
            s.push_str(&format!("{t}\n"));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// resume

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResumeReport {
    pub channel: String,
    pub was_stopped: bool,
    pub evidence: u32,
}

/// Parses `ORIGIN->DESTINATION`.
pub fn parse_channel(s: &str) -> anyhow::Result<(RegionCode, RegionCode)> {
    let (o, d) = s
        .split_once("->")
        .with_context(|| format!("channel `{s}` must look like `110105->310115`"))?;
    let origin: RegionCode = o
        .trim()
        .parse()
        .with_context(|| format!("origin of `{s}`"))?;
    let destination: RegionCode = d
        .trim()
        .parse()
        .with_context(|| format!("destination of `{s}`"))?;
    Ok((origin, destination))
}

pub async fn resume(conn: &Connection, channel: &str) -> anyhow::Result<ResumeReport> {
    let (origin, destination) = parse_channel(channel)?;
    let r = conn
        .unary(
            "Admin.ResumeChannel",
            conn.admin().resume_channel(pb::ResumeChannelRequest {
                origin: origin.to_string(),
                destination: destination.to_string(),
            }),
        )
        .await?;
    Ok(ResumeReport {
        channel: format!("{origin}->{destination}"),
        was_stopped: r.was_stopped,
        evidence: r.evidence,
    })
}

impl Report for ResumeReport {
    fn human(&self) -> String {
        if self.was_stopped {
            format!(
                "channel {} resumed; {} kept as evidence\n",
                self.channel,
                human::count(u64::from(self.evidence), "equivocation proof")
            )
        } else {
            format!(
                "channel {} was not stopped; nothing changed\n",
                self.channel
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// audit

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditReport {
    pub entries: Vec<AuditEntryView>,
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
}

pub async fn audit(conn: &Connection, since_ms: i64, limit: u32) -> anyhow::Result<AuditReport> {
    let r = conn
        .unary(
            "Admin.AuditLog",
            conn.admin()
                .audit_log(pb::AuditLogRequest { since_ms, limit }),
        )
        .await?;
    Ok(AuditReport {
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
            })
            .collect(),
    })
}

impl Report for AuditReport {
    fn human(&self) -> String {
        if self.entries.is_empty() {
            return "no audit entries in that range\n".into();
        }
        let mut t = human::table(&["#", "AT", "ACTOR", "ACTION", "SUBJECTS"]);
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
            ]);
        }
        format!(
            "{t}\n{}\n",
            human::count(self.entries.len() as u64, "entry")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_as_origin_arrow_destination() {
        let (o, d) = parse_channel("110105->310115").unwrap();
        assert_eq!((o.as_str(), d.as_str()), ("110105", "310115"));
        assert!(
            parse_channel("110105-310115")
                .unwrap_err()
                .to_string()
                .contains("must look like")
        );
        assert!(parse_channel("110105->99").is_err());
    }

    #[test]
    fn reconcile_events_serialize_with_an_event_tag() {
        let p = pb::ReconcileProgress {
            event: Some(pb::reconcile_progress::Event::PeerDone(pb::PeerDone {
                peer: "110105".into(),
                channels: vec![pb::ChannelReport {
                    origin: "110105".into(),
                    destination: "310115".into(),
                    local_head_before: 3,
                    local_head_after: 5,
                    peer_head: 5,
                    records_fetched: 2,
                    anomalies: vec![pb::Anomaly::PeerUnreachable as i32],
                }],
            })),
        };
        let e = ReconcileEvent::from_progress(p).unwrap();
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "peer_done");
        assert_eq!(j["channels"][0]["anomalies"][0], "peer_unreachable");
        assert_eq!(e.anomalies(), 1);
        assert!(
            e.human().contains("2 records fetched, 1 anomaly"),
            "{}",
            e.human()
        );

        let r = ReconcileEvent::from_progress(pb::ReconcileProgress {
            event: Some(pb::reconcile_progress::Event::Report(pb::ReconcileReport {
                run_id: 7,
                started_at_ms: 1_000,
                finished_at_ms: 1_250,
                channels: vec![],
            })),
        })
        .unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["event"], "report");
        assert_eq!(j["run_id"], 7);
        assert_eq!(j["duration_ms"], 250);
    }

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
