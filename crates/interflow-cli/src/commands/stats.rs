//! `stats`: the node's counts from `Admin.Stats`.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;

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
