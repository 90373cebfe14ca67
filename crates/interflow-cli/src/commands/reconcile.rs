//! `reconcile` and `reconcile reports`: runs `Admin.Reconcile` and prints each peer's result
//! as it streams in, then the run's report; or lists past reports. Nothing here decides what
//! an anomaly means: the node names them, the exit code only counts them.

use anyhow::Context as _;
use futures::StreamExt as _;
use interflow_core::{RegionCode, pb};
use serde::Serialize;

use crate::conn::Connection;
use crate::human;
use crate::{Ctx, Outcome, Report};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelReportView {
    pub origin: String,
    pub destination: String,
    pub local_head_before: u64,
    pub local_head_after: u64,
    pub peer_head: u64,
    pub records_fetched: u64,
    pub anomalies: Vec<String>,
}

impl From<pb::ChannelReport> for ChannelReportView {
    fn from(c: pb::ChannelReport) -> Self {
        ChannelReportView {
            anomalies: c
                .anomalies
                .iter()
                .map(|a| crate::names::anomaly_name(*a))
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

/// One line of `reconcile --json`: `{"event":"peer_started",...}`,
/// `{"event":"peer_done",...}` or `{"event":"report",...}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ReconcileEvent {
    /// The node starts comparing heads with `peer`: a hung peer shows as the one it waits on.
    PeerStarted {
        peer: String,
    },
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
            Event::PeerStarted(s) => Some(ReconcileEvent::PeerStarted { peer: s.peer }),
            Event::PeerDone(d) => Some(ReconcileEvent::PeerDone {
                peer: d.peer,
                channels: d.channels.into_iter().map(Into::into).collect(),
            }),
            Event::Report(r) => Some(ReconcileEvent::Report(r.into())),
        }
    }

    pub fn human(&self) -> String {
        match self {
            ReconcileEvent::PeerStarted { peer } => format!("comparing heads with {peer}…\n"),
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
            ReconcileEvent::PeerStarted { .. } => 0,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_peer_being_compared_is_named_before_it_answers() {
        let e = ReconcileEvent::from_progress(pb::ReconcileProgress {
            event: Some(pb::reconcile_progress::Event::PeerStarted(
                pb::PeerStarted {
                    peer: "110105".into(),
                },
            )),
        })
        .unwrap();
        assert_eq!(e.human(), "comparing heads with 110105…\n");
        assert_eq!(e.anomalies(), 0);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "peer_started");
        assert_eq!(j["peer"], "110105");
    }
}
