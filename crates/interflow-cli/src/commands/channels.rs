//! `channels`: every channel of the node with its direction, head, acknowledged position and
//! whether it is stopped or held, from `Admin.ListChannels`.

use interflow_core::pb;
use serde::Serialize;

use crate::conn::Connection;
use crate::human;
use crate::{Outcome, Report};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelsReport {
    pub channels: Vec<ChannelRow>,
    /// Why the node's last reload kept its old state (`None`: it installed, or none happened).
    pub last_reload_error: Option<String>,
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
    /// The peer left the federation directory: nothing more is exchanged; records are kept.
    pub removed: bool,
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
                removed: c.removed,
                origin: c.origin,
                destination: c.destination,
            }
        })
        .collect();
    channels.sort_by(|a, b| {
        (a.direction, &a.origin, &a.destination).cmp(&(b.direction, &b.origin, &b.destination))
    });
    let last_reload_error = Some(resp.last_reload_error).filter(|e| !e.is_empty());
    Ok(ChannelsReport {
        channels,
        last_reload_error,
    })
}

impl Report for ChannelsReport {
    fn human(&self) -> String {
        let reload = self.last_reload_error.as_ref().map_or_else(String::new, |e| {
            format!("the last reload kept the old state: {e}\n(fix the file and reload again; `interflowctl federation` shows the installed state)\n")
        });
        if self.channels.is_empty() {
            return format!("no channels yet\n{reload}");
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
                if c.removed {
                    "removed (peer left the directory; records kept)".into()
                } else if c.stopped {
                    "STOPPED (equivocation)".into()
                } else if c.held {
                    "held (heads not yet compared)".into()
                } else {
                    "ok".into()
                },
            ]);
        }
        let mut s = format!("{t}\n");
        for c in self.channels.iter().filter(|c| c.stopped) {
            s.push_str(&format!(
                "{}->{} is stopped: once you have looked at the evidence, `interflowctl resume --channel {}` lets it accept records again\n",
                c.origin,
                c.destination,
                super::resume::channel_arg(&c.origin, &c.destination)
            ));
        }
        s.push_str(&reload);
        s
    }

    fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_channel_hints_at_resume_in_a_form_the_shell_leaves_alone() {
        let row = |stopped| ChannelRow {
            origin: "110105".into(),
            destination: "310115".into(),
            direction: "inbound",
            head_seq: 3,
            head_hash: "ab".repeat(32),
            acked_seq: None,
            pending: None,
            stopped,
            held: false,
            removed: false,
        };
        let text = ChannelsReport {
            channels: vec![row(true)],
            last_reload_error: None,
        }
        .human();
        assert!(
            text.contains("`interflowctl resume --channel 110105:310115`"),
            "{text}"
        );
        let text = ChannelsReport {
            channels: vec![row(false)],
            last_reload_error: None,
        }
        .human();
        assert!(!text.contains("resume"), "{text}");
        assert!(!text.contains("reload"), "{text}");
    }

    #[test]
    fn a_failed_reload_is_shown_under_the_channels() {
        let text = ChannelsReport {
            channels: vec![],
            last_reload_error: Some("directory: not a SignedDirectory".into()),
        }
        .human();
        assert!(
            text.contains("the last reload kept the old state: directory: not a SignedDirectory"),
            "{text}"
        );
    }
}
