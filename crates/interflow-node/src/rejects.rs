//! Logging of rejected inbound records without letting a peer flood the log: the first
//! rejection from a peer is logged at once, the ones after it are counted by reason and logged
//! as one summary line per peer per interval ([`RejectLog::flush`], run by the node on a
//! timer). The `records_rejected` metric still counts each one.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use interflow_core::RegionCode;

#[derive(Debug)]
struct Window {
    /// Rejections since the last line about this peer, by reason.
    counts: BTreeMap<&'static str, u64>,
    since: Instant,
}

/// Rejections per peer, between log lines.
#[derive(Debug)]
pub struct RejectLog {
    interval: Duration,
    peers: Mutex<HashMap<RegionCode, Window>>,
    lines: AtomicU64,
}

/// One summary: a peer and its rejections by reason since the last line about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub peer: RegionCode,
    pub counts: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// `reason=count` pairs, e.g. `REJECT_REASON_BAD_SIGNATURE=19999 REJECT_REASON_CHAIN_GAP=1`.
    pub fn reasons(&self) -> String {
        self.counts
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl RejectLog {
    pub fn new(interval: Duration) -> Self {
        RejectLog {
            interval,
            peers: Mutex::new(HashMap::new()),
            lines: AtomicU64::new(0),
        }
    }

    /// Notes one rejected record from `peer`: logged at once if it is the first since the
    /// peer's last quiet interval, else counted for the next summary. `reason` is the wire
    /// reason's name (`REJECT_REASON_...`).
    pub fn note(&self, peer: RegionCode, seq: u64, reason: &'static str) {
        let first = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            match peers.entry(peer) {
                Entry::Vacant(v) => {
                    v.insert(Window {
                        counts: BTreeMap::new(),
                        since: Instant::now(),
                    });
                    true
                }
                Entry::Occupied(mut o) => {
                    *o.get_mut().counts.entry(reason).or_default() += 1;
                    false
                }
            }
        };
        if first {
            self.lines.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %peer,
                seq,
                reason,
                summary_every_secs = self.interval.as_secs(),
                "record rejected; further rejections from this peer are summed up per interval"
            );
        }
    }

    /// Logs one summary line per peer with rejections since its last line, and forgets peers
    /// quiet for a whole interval (their next rejection is logged at once again). Returns the
    /// summaries logged.
    pub fn flush(&self) -> Vec<Summary> {
        let now = Instant::now();
        let mut out = Vec::new();
        {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            peers.retain(|peer, w| {
                if w.counts.is_empty() {
                    return now.duration_since(w.since) < self.interval;
                }
                out.push(Summary {
                    peer: *peer,
                    counts: std::mem::take(&mut w.counts),
                });
                w.since = now;
                true
            });
        }
        for s in &out {
            self.lines.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %s.peer,
                rejected = s.total(),
                reasons = %s.reasons(),
                interval_secs = self.interval.as_secs(),
                "records rejected from this peer since the last line"
            );
        }
        out
    }

    /// Rejections from `peer` counted and not yet logged.
    pub fn pending(&self, peer: RegionCode) -> u64 {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .map_or(0, |w| w.counts.values().sum())
    }

    /// Log lines written so far (both kinds).
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_from_one_peer_is_one_line_then_one_summary_per_interval() {
        let log = RejectLog::new(Duration::from_millis(50));
        let a: RegionCode = "110105".parse().unwrap();
        let b: RegionCode = "440305".parse().unwrap();
        for seq in 0..20_000 {
            log.note(
                a,
                seq,
                if seq % 2 == 0 {
                    "bad_signature"
                } else {
                    "chain_gap"
                },
            );
        }
        log.note(b, 1, "malformed");
        assert_eq!(log.lines(), 2, "one line per peer so far");
        assert_eq!(log.pending(a), 19_999);
        let summaries = log.flush();
        assert_eq!(summaries.len(), 1, "b has nothing more to say");
        assert_eq!(summaries[0].peer, a);
        assert_eq!(summaries[0].total(), 19_999);
        assert_eq!(summaries[0].reasons(), "bad_signature=9999 chain_gap=10000");
        assert_eq!(log.lines(), 3);
        assert_eq!(log.pending(a), 0);
        // Quiet for an interval: forgotten, so the next rejection is logged at once.
        std::thread::sleep(Duration::from_millis(60));
        assert!(log.flush().is_empty());
        log.note(a, 1, "bad_signature");
        assert_eq!(log.lines(), 4);
        assert_eq!(log.pending(a), 0);
    }
}
