//! `inbox pull`, `inbox ack` and `inbox consumers`: one page of items, moving a cursor, and
//! every consumer's lag with the `--max-age` decision that makes it a monitoring check. Ages
//! are measured against the node's clock (`now_ms` of the answer).

use std::time::Duration;

use interflow_core::pb;
use serde::Serialize;

use super::args::ReadArgs;
use super::item::ItemView;
use crate::conn::Connection;
use crate::{Outcome, Report, human};

/// The answer of `inbox pull`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PullReport {
    pub consumer: String,
    /// The newest position at the node.
    pub head: u64,
    /// The consumer's cursor (last acknowledged position) when it read.
    pub cursor: u64,
    /// Where the next read should start (`--after`), past records a filter skipped.
    pub next_after: u64,
    pub items: Vec<ItemView>,
}

/// Calls `Inbox.Pull` once.
pub async fn pull_page(
    conn: &Connection,
    read: &ReadArgs,
    after: Option<u64>,
    max: u32,
) -> anyhow::Result<pb::PullResponse> {
    let req = pb::PullRequest {
        consumer: read.consumer.clone(),
        after,
        max,
        filter: super::filter(read)?,
    };
    conn.unary("Inbox.Pull", conn.inbox().pull(req)).await
}

pub async fn pull(conn: &Connection, read: &ReadArgs, max: u32) -> anyhow::Result<PullReport> {
    let resp = pull_page(conn, read, read.after, max).await?;
    Ok(PullReport {
        consumer: read.consumer.clone(),
        head: resp.head,
        cursor: resp.cursor,
        next_after: resp.next_after,
        items: resp.items.iter().map(ItemView::from_item).collect(),
    })
}

impl Report for PullReport {
    fn human(&self) -> String {
        let mut s = String::new();
        if self.items.is_empty() {
            s.push_str(&format!(
                "nothing new for consumer `{}` after position {}\n",
                self.consumer, self.next_after
            ));
        } else {
            let mut t = human::table(&ItemView::HEADER);
            for i in &self.items {
                t.add_row(i.row());
            }
            s.push_str(&format!("{t}\n"));
        }
        let behind = self.head.saturating_sub(self.next_after);
        s.push_str(&format!(
            "{} shown; consumer `{}` cursor {}, node head {}; next read after {}{}\n",
            human::count(self.items.len() as u64, "item"),
            self.consumer,
            self.cursor,
            self.head,
            self.next_after,
            if behind > 0 {
                format!(" ({} more to read)", human::count(behind, "position"))
            } else {
                String::new()
            }
        ));
        s
    }
}

/// The answer of `inbox ack`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AckReport {
    pub consumer: String,
    pub position: u64,
    /// The cursor after the call (never moved back).
    pub cursor: u64,
}

pub async fn ack(conn: &Connection, consumer: &str, position: u64) -> anyhow::Result<AckReport> {
    let resp = conn
        .unary(
            "Inbox.Ack",
            conn.inbox().ack(pb::AckRequest {
                consumer: consumer.to_owned(),
                position,
            }),
        )
        .await?;
    Ok(AckReport {
        consumer: consumer.to_owned(),
        position,
        cursor: resp.cursor,
    })
}

impl Report for AckReport {
    fn human(&self) -> String {
        if self.cursor > self.position {
            format!(
                "consumer `{}` was already at position {} (cursors never move back)\n",
                self.consumer, self.cursor
            )
        } else {
            format!(
                "consumer `{}` acknowledged up to position {}\n",
                self.consumer, self.cursor
            )
        }
    }
}

/// The answer of `inbox consumers`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumersReport {
    pub now: String,
    pub now_ms: i64,
    pub head: u64,
    pub max_age_secs: u64,
    /// No consumer's oldest unacknowledged item is older than `max_age_secs`.
    pub ok: bool,
    pub late_consumers: usize,
    pub consumers: Vec<ConsumerRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumerRow {
    pub name: String,
    pub cursor: u64,
    pub lag_items: u64,
    pub oldest_unacked_arrived_at: Option<String>,
    pub oldest_unacked_age_secs: Option<u64>,
    pub acked_at: Option<String>,
    /// The oldest unacknowledged item is older than `max_age_secs`.
    pub late: bool,
}

pub fn build_consumers(resp: pb::ConsumersResponse, max_age: Duration) -> ConsumersReport {
    let now = resp.now_ms;
    let consumers: Vec<ConsumerRow> = resp
        .consumers
        .into_iter()
        .map(|c| {
            let waiting = c.oldest_unacked_arrived_at_ms != 0;
            let age = waiting.then(|| human::age(now, c.oldest_unacked_arrived_at_ms));
            ConsumerRow {
                name: c.name,
                cursor: c.cursor,
                lag_items: c.lag_items,
                oldest_unacked_arrived_at: human::opt_instant(c.oldest_unacked_arrived_at_ms),
                oldest_unacked_age_secs: age.map(|a| a.as_secs()),
                acked_at: human::opt_instant(c.acked_at_ms),
                late: age.is_some_and(|a| a > max_age),
            }
        })
        .collect();
    let late_consumers = consumers.iter().filter(|c| c.late).count();
    ConsumersReport {
        now: human::instant(now),
        now_ms: now,
        head: resp.head,
        max_age_secs: max_age.as_secs(),
        ok: late_consumers == 0,
        late_consumers,
        consumers,
    }
}

pub async fn consumers(conn: &Connection, max_age: Duration) -> anyhow::Result<ConsumersReport> {
    let resp = conn
        .unary(
            "Inbox.Consumers",
            conn.inbox().consumers(pb::ConsumersRequest {}),
        )
        .await?;
    Ok(build_consumers(resp, max_age))
}

impl Report for ConsumersReport {
    fn human(&self) -> String {
        let max = human::format_age(Duration::from_secs(self.max_age_secs));
        if self.consumers.is_empty() {
            return format!(
                "no consumers yet (node head {}); a consumer appears with its first `inbox ack`\n",
                self.head
            );
        }
        let mut t = human::table(&[
            "STATUS",
            "CONSUMER",
            "CURSOR",
            "LAG",
            "OLDEST UNACKED",
            "LAST ACK",
        ]);
        for c in &self.consumers {
            let status = if c.late {
                "LATE"
            } else if c.lag_items > 0 {
                "behind"
            } else {
                "ok"
            };
            t.add_row(vec![
                status.to_owned(),
                c.name.clone(),
                c.cursor.to_string(),
                c.lag_items.to_string(),
                c.oldest_unacked_age_secs
                    .map(|s| human::format_age(Duration::from_secs(s)))
                    .unwrap_or_else(|| "-".into()),
                c.acked_at.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let verdict = if self.ok {
            format!("no consumer has an item unacknowledged longer than {max}")
        } else {
            format!(
                "{} of {} unacknowledged longer than {max}",
                self.late_consumers,
                human::count(self.consumers.len() as u64, "consumer has items"),
            )
        };
        format!(
            "{t}\nnode head {}; {verdict} (node time {})\n",
            self.head, self.now
        )
    }

    fn outcome(&self) -> Outcome {
        Outcome::problem_if(!self.ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_272_000_000;

    fn info(name: &str, lag: u64, oldest_ago_secs: Option<i64>) -> pb::ConsumerInfo {
        pb::ConsumerInfo {
            name: name.into(),
            cursor: 10,
            lag_items: lag,
            oldest_unacked_arrived_at_ms: oldest_ago_secs.map_or(0, |s| NOW - s * 1000),
            acked_at_ms: NOW - 60_000,
        }
    }

    #[test]
    fn max_age_decides_the_exit_code() {
        let resp = |c| pb::ConsumersResponse {
            head: 12,
            now_ms: NOW,
            consumers: c,
        };
        let max = Duration::from_secs(3600);
        let fine = build_consumers(
            resp(vec![info("his", 2, Some(3600)), info("lab", 0, None)]),
            max,
        );
        assert!(fine.ok);
        assert_eq!(fine.outcome().exit_code(), 0);
        assert_eq!(fine.consumers[1].oldest_unacked_age_secs, None);
        let late = build_consumers(resp(vec![info("his", 2, Some(3601))]), max);
        assert!(!late.ok && late.consumers[0].late);
        assert_eq!(late.outcome().exit_code(), 1);
        let text = late.human();
        assert!(text.contains("LATE") && text.contains("1h00m"), "{text}");
        let json = serde_json::to_value(&late).unwrap();
        assert_eq!(json["consumers"][0]["oldest_unacked_age_secs"], 3601);
        assert_eq!(json["late_consumers"], 1);
    }
}
