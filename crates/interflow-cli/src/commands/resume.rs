//! `resume`: lets a channel stopped after equivocation accept records again
//! (`Admin.ResumeChannel`). It parses `ORIGIN:DESTINATION` (or `ORIGIN-DESTINATION`, or
//! `ORIGIN->DESTINATION` quoted); the node keeps the evidence.

use anyhow::Context as _;
use interflow_core::{RegionCode, pb};
use serde::Serialize;

use crate::Report;
use crate::conn::Connection;
use crate::human;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResumeReport {
    pub channel: String,
    pub was_stopped: bool,
    pub evidence: u32,
}

/// How a channel is written in hints: no shell metacharacter, unlike `->` (a redirection).
pub fn channel_arg(origin: impl std::fmt::Display, destination: impl std::fmt::Display) -> String {
    format!("{origin}:{destination}")
}

/// Parses `ORIGIN:DESTINATION`, `ORIGIN-DESTINATION` or `ORIGIN->DESTINATION`.
pub fn parse_channel(s: &str) -> anyhow::Result<(RegionCode, RegionCode)> {
    let (o, d) = s
        .split_once("->")
        .or_else(|| s.split_once(':'))
        .or_else(|| s.split_once('-'))
        .with_context(|| {
            format!("channel `{s}` must look like `110105:310115` (origin, then destination)")
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_with_or_without_shell_metacharacters() {
        for s in [
            "110105->310115",
            "110105:310115",
            "110105-310115",
            " 110105 : 310115 ",
        ] {
            let (o, d) = parse_channel(s).unwrap();
            assert_eq!((o.as_str(), d.as_str()), ("110105", "310115"), "{s}");
        }
        assert!(
            parse_channel("110105/310115")
                .unwrap_err()
                .to_string()
                .contains("must look like `110105:310115`")
        );
        assert!(parse_channel("110105->99").is_err());
        assert!(parse_channel("110105:99").is_err());
        assert_eq!(channel_arg("110105", "310115"), "110105:310115");
    }
}
