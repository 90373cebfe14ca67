//! `coverage`: the awareness figures from `Admin.Coverage`, per agreement with residence
//! notices and month of arrival. Counts only: the node never answers a list of people.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;

/// One agreement and month of arrival.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoverageRow {
    pub agreement_id: String,
    pub peer: String,
    /// `residence` (people live here, their home is `peer`) or `home`.
    pub role: &'static str,
    /// `YYYY-MM`.
    pub month: String,
    pub residents: u64,
    pub residents_with_status: u64,
    /// `residents_with_status / residents`, when there are residents.
    pub awareness: Option<f64>,
    pub median_days_to_first_status: Option<f64>,
    pub arrivals: u64,
    pub answered_within_7_days: u64,
    pub answered_within_30_days: u64,
    pub unanswered: u64,
    pub oldest_unanswered_days: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CoverageReport {
    pub rows: Vec<CoverageRow>,
    pub status_after_departure: u64,
}

pub async fn coverage(conn: &Connection) -> anyhow::Result<CoverageReport> {
    let c = conn
        .unary(
            "Admin.Coverage",
            conn.admin().coverage(pb::CoverageRequest {}),
        )
        .await?;
    Ok(CoverageReport {
        rows: c
            .rows
            .into_iter()
            .map(|r| CoverageRow {
                role: match pb::CoverageRole::try_from(r.role) {
                    Ok(pb::CoverageRole::Home) => "home",
                    _ => "residence",
                },
                month: human::month(r.month.as_ref()).unwrap_or_default(),
                awareness: (r.residents > 0)
                    .then(|| r.residents_with_status as f64 / r.residents as f64),
                agreement_id: r.agreement_id,
                peer: r.peer,
                residents: r.residents,
                residents_with_status: r.residents_with_status,
                median_days_to_first_status: r.median_days_to_first_status,
                arrivals: r.arrivals,
                answered_within_7_days: r.answered_within_7_days,
                answered_within_30_days: r.answered_within_30_days,
                unanswered: r.unanswered,
                oldest_unanswered_days: r.oldest_unanswered_days,
            })
            .collect(),
        status_after_departure: c.status_after_departure,
    })
}

impl Report for CoverageReport {
    fn human(&self) -> String {
        let mut t = human::table(&[
            "AGREEMENT",
            "PEER",
            "ROLE",
            "MONTH",
            "RESIDENTS",
            "WITH STATUS",
            "AWARENESS",
            "MEDIAN DAYS",
            "ARRIVALS",
            "≤7 DAYS",
            "≤30 DAYS",
            "UNANSWERED",
            "OLDEST (DAYS)",
        ]);
        for r in &self.rows {
            let home = r.role == "home";
            let n = |v: u64, here: bool| if here { v.to_string() } else { "-".into() };
            t.add_row(vec![
                r.agreement_id.clone(),
                r.peer.clone(),
                r.role.into(),
                r.month.clone(),
                n(r.residents, !home),
                n(r.residents_with_status, !home),
                r.awareness
                    .map(|a| format!("{:.1}%", a * 100.0))
                    .unwrap_or_else(|| "-".into()),
                r.median_days_to_first_status
                    .map(|d| format!("{d:.1}"))
                    .unwrap_or_else(|| "-".into()),
                n(r.arrivals, home),
                n(r.answered_within_7_days, home),
                n(r.answered_within_30_days, home),
                n(r.unanswered, home),
                n(r.oldest_unanswered_days, home),
            ]);
        }
        format!(
            "{t}\nstatus received after departure: {}\n",
            self.status_after_departure
        )
    }
}
