//! `reload`: makes the node re-read its config file's certificates, CRLs, directory and
//! agreements and install them together (`Admin.Reload`, what SIGHUP does). A bad file keeps
//! the node's old state; the error says which file and why.

use interflow_core::pb;
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadReport {
    pub directory_serial: u64,
    pub members: u32,
    pub agreements: u32,
}

pub async fn reload(conn: &Connection) -> anyhow::Result<ReloadReport> {
    let r = conn
        .unary("Admin.Reload", conn.admin().reload(pb::ReloadRequest {}))
        .await?;
    Ok(ReloadReport {
        directory_serial: r.directory_serial,
        members: r.members,
        agreements: r.agreements,
    })
}

impl Report for ReloadReport {
    fn human(&self) -> String {
        format!(
            "reloaded: directory serial {} with {} members, {} agreements\n",
            self.directory_serial, self.members, self.agreements
        )
    }
}
