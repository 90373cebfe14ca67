//! `pending`: per outbound channel, what the destination has not acknowledged, since when and
//! why, worst first; and the `--max-age` decision that makes it a monitoring check: a record
//! pending longer, or a channel held longer (intake for that peer refused), is a failure. Ages
//! are measured against the node's clock (`now_ms` of the response), not this machine's.

use std::time::Duration;

use interflow_core::pb;
use serde::Serialize;

use crate::conn::Connection;
use crate::human;
use crate::{Outcome, Report};

/// The answer of `pending`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingReport {
    /// The node's clock when it answered.
    pub now: String,
    pub now_ms: i64,
    pub max_age_secs: u64,
    /// True when no pending record is older than `max_age_secs` and no channel has been held
    /// longer than that.
    pub ok: bool,
    /// Channels whose oldest pending record is older than `max_age_secs`.
    pub stuck_channels: usize,
    /// Channels held (new records refused) longer than `max_age_secs`.
    pub held_too_long_channels: usize,
    /// Worst first: oldest pending record first, then larger backlog; idle channels last.
    pub channels: Vec<PendingRow>,
    /// The home bureau's worklist: per agreement, arrivals registered by the peer (where the
    /// people now live) that no status has answered yet. Counts only.
    pub worklist: Vec<WorklistRow>,
    /// Worklist rows whose oldest unanswered arrival is older than `max_age_secs`.
    pub late_worklists: usize,
    /// Set when the node's federation directory is expired (a failure, whatever the ages).
    pub directory_alarm: Option<String>,
}

/// Unanswered arrivals from one peer under one agreement.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorklistRow {
    pub agreement_id: String,
    pub peer: String,
    pub unanswered: u64,
    pub oldest_age_secs: u64,
    /// The oldest is older than `max_age_secs`.
    pub late: bool,
}

/// One outbound channel.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingRow {
    pub destination: String,
    pub head_seq: u64,
    pub acked_seq: u64,
    pub pending_count: u64,
    pub oldest_pending_issued_at: Option<String>,
    pub oldest_pending_age_secs: Option<u64>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    /// The oldest pending record is older than `max_age_secs`.
    pub stuck: bool,
    /// New records for this destination are refused until this node has compared heads with
    /// it after start (the peer may be unreachable).
    pub held: bool,
    /// When held: since when, and for how long.
    pub held_since: Option<String>,
    pub held_age_secs: Option<u64>,
    /// Held longer than `max_age_secs`: submissions for this destination have been refused
    /// with `channel_held` all that time.
    pub held_too_long: bool,
    #[serde(skip)]
    oldest_ms: i64,
    #[serde(skip)]
    next_ms: i64,
}

/// Sorts and judges a `ListPending` answer.
pub fn build(resp: pb::ListPendingResponse, max_age: Duration) -> PendingReport {
    let now = resp.now_ms;
    let mut channels: Vec<PendingRow> = resp
        .channels
        .into_iter()
        .map(|c| {
            let pending = c.oldest_pending_issued_at_ms != 0;
            let age = pending.then(|| human::age(now, c.oldest_pending_issued_at_ms));
            let held_age =
                (c.held && c.held_since_ms != 0).then(|| human::age(now, c.held_since_ms));
            PendingRow {
                destination: c.destination,
                head_seq: c.head_seq,
                acked_seq: c.acked_seq,
                pending_count: c.pending_count,
                oldest_pending_issued_at: human::opt_instant(c.oldest_pending_issued_at_ms),
                oldest_pending_age_secs: age.map(|a| a.as_secs()),
                attempts: c.attempts,
                last_error: Some(c.last_error).filter(|e| !e.is_empty()),
                next_attempt_at: human::opt_instant(c.next_attempt_at_ms),
                stuck: age.is_some_and(|a| a > max_age),
                held: c.held,
                held_since: human::opt_instant(if c.held { c.held_since_ms } else { 0 }),
                held_age_secs: held_age.map(|a| a.as_secs()),
                held_too_long: held_age.is_some_and(|a| a > max_age),
                oldest_ms: c.oldest_pending_issued_at_ms,
                next_ms: c.next_attempt_at_ms,
            }
        })
        .collect();
    channels.sort_by(|a, b| {
        // Channels held too long come first, then those with something pending, oldest
        // first; 0 means "nothing".
        let key = |r: &PendingRow| (!r.held_too_long, r.oldest_ms == 0, r.oldest_ms);
        key(a)
            .cmp(&key(b))
            .then(b.pending_count.cmp(&a.pending_count))
            .then_with(|| a.destination.cmp(&b.destination))
    });
    let stuck_channels = channels.iter().filter(|c| c.stuck).count();
    let held_too_long_channels = channels.iter().filter(|c| c.held_too_long).count();
    PendingReport {
        now: human::instant(now),
        now_ms: now,
        max_age_secs: max_age.as_secs(),
        ok: stuck_channels == 0 && held_too_long_channels == 0,
        stuck_channels,
        held_too_long_channels,
        channels,
        worklist: Vec::new(),
        late_worklists: 0,
        directory_alarm: None,
    }
}

/// Adds the worklist from an `Admin.Coverage` answer (its home rows, summed per agreement) and
/// judges it against `max_age`.
pub fn with_worklist(
    mut report: PendingReport,
    coverage: pb::CoverageResponse,
    max_age: Duration,
) -> PendingReport {
    let mut rows: Vec<WorklistRow> = Vec::new();
    for r in coverage.rows {
        if r.role != pb::CoverageRole::Home as i32 || r.unanswered == 0 {
            continue;
        }
        match rows.iter_mut().find(|w| w.agreement_id == r.agreement_id) {
            Some(w) => {
                w.unanswered += r.unanswered;
                w.oldest_age_secs = w.oldest_age_secs.max(r.oldest_unanswered_age_secs);
            }
            None => rows.push(WorklistRow {
                agreement_id: r.agreement_id,
                peer: r.peer,
                unanswered: r.unanswered,
                oldest_age_secs: r.oldest_unanswered_age_secs,
                late: false,
            }),
        }
    }
    for w in &mut rows {
        w.late = Duration::from_secs(w.oldest_age_secs) > max_age;
    }
    rows.sort_by_key(|w| std::cmp::Reverse(w.oldest_age_secs));
    report.late_worklists = rows.iter().filter(|w| w.late).count();
    report.ok = report.ok && report.late_worklists == 0;
    report.worklist = rows;
    report
}

/// Calls `Admin.ListPending` and judges the answer against `max_age`.
pub async fn fetch(conn: &Connection, max_age: Duration) -> anyhow::Result<PendingReport> {
    let resp = conn
        .unary(
            "Admin.ListPending",
            conn.admin().list_pending(pb::ListPendingRequest {}),
        )
        .await?;
    let coverage = conn
        .unary(
            "Admin.Coverage",
            conn.admin().coverage(pb::CoverageRequest {}),
        )
        .await?;
    let fed = conn
        .unary(
            "Admin.Federation",
            conn.admin().federation(pb::FederationRequest {}),
        )
        .await?;
    Ok(with_directory(
        with_worklist(build(resp, max_age), coverage, max_age),
        &fed,
    ))
}

/// An expired federation directory fails the check, with a line saying why.
pub fn with_directory(mut report: PendingReport, fed: &pb::FederationResponse) -> PendingReport {
    if fed.directory_expired {
        report.directory_alarm = Some(format!(
            "ALARM: the federation directory (serial {}) expired at {}; no new member is admitted until the operator publishes a fresh one (`interflowctl federation`)",
            fed.directory_serial,
            human::instant(fed.directory_expires_at_ms)
        ));
        report.ok = false;
    }
    report
}

impl Report for PendingReport {
    fn human(&self) -> String {
        match &self.directory_alarm {
            Some(alarm) => format!("{alarm}\n{}", self.human_channels()),
            None => self.human_channels(),
        }
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(!self.ok)
    }
}

impl PendingReport {
    fn human_channels(&self) -> String {
        let max = human::format_age(Duration::from_secs(self.max_age_secs));
        let worklist: String = self
            .worklist
            .iter()
            .map(|w| {
                format!(
                    "{}worklist: {} from {} ({}) unanswered, oldest {}\n",
                    if w.late { "LATE " } else { "" },
                    human::count(w.unanswered, "arrival"),
                    w.peer,
                    w.agreement_id,
                    human::format_age(Duration::from_secs(w.oldest_age_secs)),
                )
            })
            .collect();
        if self.channels.is_empty() {
            return format!("no outbound channels yet: nothing pending\n{worklist}");
        }
        let mut t = human::table(&[
            "STATUS",
            "DESTINATION",
            "HEAD",
            "ACKED",
            "PENDING",
            "OLDEST",
            "ATTEMPTS",
            "NEXT RETRY",
            "LAST ERROR",
        ]);
        for c in &self.channels {
            let status = if c.held_too_long {
                "HELD"
            } else if c.stuck {
                "STUCK"
            } else if c.held {
                "held"
            } else if c.pending_count > 0 {
                "pending"
            } else {
                "ok"
            };
            t.add_row(vec![
                status.to_owned(),
                c.destination.clone(),
                c.head_seq.to_string(),
                c.acked_seq.to_string(),
                c.pending_count.to_string(),
                c.oldest_pending_age_secs
                    .map(|s| human::format_age(Duration::from_secs(s)))
                    .unwrap_or_else(|| "-".into()),
                c.attempts.to_string(),
                if c.next_ms == 0 {
                    "-".into()
                } else {
                    human::relative(self.now_ms, c.next_ms)
                },
                match (&c.last_error, &c.held_since) {
                    (Some(e), _) => e.clone(),
                    (None, Some(since)) => {
                        format!("held since {since}: heads not yet compared with the peer")
                    }
                    (None, None) => "-".into(),
                },
            ]);
        }
        let pending: u64 = self.channels.iter().map(|c| c.pending_count).sum();
        let verdict = if self.ok {
            format!("nothing pending or held longer than {max}")
        } else if self.stuck_channels == 0 {
            String::new()
        } else {
            format!(
                "{} of {} {} records pending longer than {max}",
                self.stuck_channels,
                human::count(self.channels.len() as u64, "channel"),
                if self.stuck_channels == 1 {
                    "has"
                } else {
                    "have"
                }
            )
        };
        let held = if self.held_too_long_channels == 0 {
            String::new()
        } else {
            format!(
                "{} held longer than {max}: the node refuses new records for {} with `channel_held` until it can compare heads with {}; check that the peer is up and reachable, then run `interflowctl reconcile`\n",
                human::count(self.held_too_long_channels as u64, "channel"),
                if self.held_too_long_channels == 1 {
                    "it"
                } else {
                    "them"
                },
                if self.held_too_long_channels == 1 {
                    "that peer"
                } else {
                    "those peers"
                },
            )
        };
        let verdict = if verdict.is_empty() {
            String::new()
        } else {
            format!("; {verdict}")
        };
        format!(
            "{t}\n{} pending{verdict} (node time {})\n{held}{worklist}",
            human::count(pending, "record"),
            self.now
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_272_000_000;

    #[test]
    fn an_expired_directory_fails_the_check_and_says_why() {
        let empty = || build(pb::ListPendingResponse::default(), Duration::from_secs(60));
        let fine = with_directory(empty(), &pb::FederationResponse::default());
        assert_eq!(fine.outcome().exit_code(), 0);
        assert!(!fine.human().contains("ALARM"));
        let expired = with_directory(
            empty(),
            &pb::FederationResponse {
                directory_serial: 7,
                directory_expired: true,
                directory_expires_at_ms: NOW,
                ..Default::default()
            },
        );
        assert_eq!(expired.outcome().exit_code(), 1);
        assert!(
            expired
                .human()
                .starts_with("ALARM: the federation directory (serial 7) expired"),
            "{}",
            expired.human()
        );
    }

    fn chan(dest: &str, count: u64, oldest_ago_secs: Option<i64>) -> pb::PendingChannel {
        pb::PendingChannel {
            destination: dest.into(),
            head_seq: 100,
            acked_seq: 100 - count,
            pending_count: count,
            oldest_pending_issued_at_ms: oldest_ago_secs.map_or(0, |s| NOW - s * 1000),
            attempts: 3,
            last_error: if count > 0 {
                "peer `110105` unreachable: connection refused".into()
            } else {
                String::new()
            },
            next_attempt_at_ms: if count > 0 { NOW + 12_000 } else { 0 },
            held: false,
            held_since_ms: 0,
        }
    }

    fn resp(channels: Vec<pb::PendingChannel>) -> pb::ListPendingResponse {
        pb::ListPendingResponse {
            channels,
            now_ms: NOW,
        }
    }

    #[test]
    fn worst_first_then_backlog_then_idle() {
        let r = build(
            resp(vec![
                chan("440305", 0, None),
                chan("110105", 5, Some(60)),
                chan("510104", 2, Some(7200)),
                chan("330106", 9, Some(60)),
                chan("120101", 0, None),
            ]),
            Duration::from_secs(3600),
        );
        let order: Vec<&str> = r.channels.iter().map(|c| c.destination.as_str()).collect();
        assert_eq!(order, ["510104", "330106", "110105", "120101", "440305"]);
        assert_eq!(r.channels[0].oldest_pending_age_secs, Some(7200));
        assert_eq!(r.channels[3].oldest_pending_age_secs, None);
        assert_eq!(r.channels[3].last_error, None);
    }

    #[test]
    fn max_age_decides_the_exit_code() {
        let max = Duration::from_secs(3600);
        let fine = build(
            resp(vec![chan("110105", 5, Some(3600)), chan("440305", 0, None)]),
            max,
        );
        assert!(fine.ok);
        assert_eq!(fine.outcome(), Outcome::Success);
        assert_eq!(fine.outcome().exit_code(), 0);

        let stuck = build(
            resp(vec![
                chan("110105", 5, Some(3601)),
                chan("440305", 1, Some(10)),
            ]),
            max,
        );
        assert!(!stuck.ok);
        assert_eq!(stuck.stuck_channels, 1);
        assert!(stuck.channels[0].stuck && !stuck.channels[1].stuck);
        assert_eq!(stuck.outcome().exit_code(), 1);

        let empty = build(resp(vec![]), max);
        assert_eq!(empty.outcome(), Outcome::Success);
    }

    #[test]
    fn a_clock_ahead_of_the_node_does_not_matter() {
        // Ages come from the node's `now_ms`; a record "issued in the future" has age 0.
        let mut c = chan("110105", 1, None);
        c.oldest_pending_issued_at_ms = NOW + 5_000;
        let r = build(resp(vec![c]), Duration::ZERO);
        assert_eq!(r.channels[0].oldest_pending_age_secs, Some(0));
        assert!(r.ok);
    }

    #[test]
    fn human_table_names_what_is_stuck_since_when_and_why() {
        let r = build(
            resp(vec![chan("110105", 5, Some(192)), chan("440305", 0, None)]),
            Duration::from_secs(60),
        );
        let text = r.human();
        assert!(text.contains("STUCK"), "{text}");
        assert!(text.contains("3m12s"), "{text}");
        assert!(text.contains("in 12s"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(
            text.contains("1 of 2 channels has records pending longer than 1m00s"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["channels"][0]["oldest_pending_age_secs"], 192);
        assert_eq!(json["channels"][0]["stuck"], true);
        assert_eq!(json["ok"], false);
        assert!(json["channels"][0].get("oldest_ms").is_none());
    }

    #[test]
    fn a_channel_held_longer_than_max_age_fails_the_check() {
        let max = Duration::from_secs(3600);
        let mut held = chan("110105", 0, None);
        held.held = true;
        held.held_since_ms = NOW - 7_200_000;
        let r = build(resp(vec![chan("440305", 0, None), held.clone()]), max);
        assert!(!r.ok);
        assert_eq!(r.held_too_long_channels, 1);
        assert_eq!(r.outcome().exit_code(), 1);
        assert_eq!(r.channels[0].destination, "110105", "worst first");
        assert_eq!(r.channels[0].held_age_secs, Some(7200));
        let text = r.human();
        assert!(text.contains("HELD"), "{text}");
        assert!(text.contains("held since"), "{text}");
        assert!(text.contains("1 channel held longer than 1h00m"), "{text}");
        assert!(text.contains("channel_held"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["channels"][0]["held_too_long"], true);

        // A hold younger than max age is shown, and is fine.
        held.held_since_ms = NOW - 60_000;
        let r = build(resp(vec![held]), max);
        assert!(r.ok && r.channels[0].held && !r.channels[0].held_too_long);
        assert_eq!(r.outcome().exit_code(), 0);
        assert!(r.human().contains("held"), "{}", r.human());
    }

    #[test]
    fn unanswered_arrivals_older_than_max_age_fail_the_check() {
        let row = |agreement: &str, role: pb::CoverageRole, unanswered, age| pb::CoverageRow {
            agreement_id: agreement.into(),
            peer: "440305".into(),
            role: role as i32,
            unanswered,
            oldest_unanswered_age_secs: age,
            ..Default::default()
        };
        let coverage = pb::CoverageResponse {
            rows: vec![
                row("agr-1", pb::CoverageRole::Home, 2, 600),
                row("agr-1", pb::CoverageRole::Home, 1, 7_200),
                row("agr-2", pb::CoverageRole::Home, 0, 0),
                // Residence rows are not the home bureau's worklist.
                row("agr-3", pb::CoverageRole::Residence, 5, 90_000),
            ],
            status_after_departure: 0,
        };
        let hour = Duration::from_secs(3600);
        let r = with_worklist(build(resp(vec![]), hour), coverage.clone(), hour);
        assert_eq!(r.worklist.len(), 1, "{r:?}");
        assert_eq!(
            (r.worklist[0].unanswered, r.worklist[0].oldest_age_secs),
            (3, 7_200)
        );
        assert!(r.worklist[0].late && !r.ok && r.late_worklists == 1);
        assert!(
            r.human()
                .contains("LATE worklist: 3 arrivals from 440305 (agr-1)"),
            "{}",
            r.human()
        );
        let r = with_worklist(build(resp(vec![]), 3 * hour), coverage, 3 * hour);
        assert!(r.ok && r.late_worklists == 0 && !r.worklist[0].late);
    }
}
