//! Reconciliation state: each peer's latest verified head statement (a cosigned checkpoint,
//! kept as the signed bytes received) and the report of every reconciliation run, in a
//! store-owned versioned encoding (the node maps it to and from the wire).

use interflow_core::RegionCode;
use interflow_core::record::ChannelId;
use interflow_core::time::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::error::{Place, corrupt};
use crate::state::{decode_versioned, encode_versioned};
use crate::{Result, Store, keys};

/// What a reconciliation run found wrong on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anomaly {
    Equivocation,
    BadRecord,
    PeerUnreachable,
    BadHeadsSignature,
    /// The peer's signed view of a channel went backwards.
    HeadsRegressed,
    /// The peer holds more of our own outbound feed than we do.
    OwnFeedBehind,
    ChannelStopped,
}

/// One channel's part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRun {
    pub channel: ChannelId,
    pub local_head_before: u64,
    pub local_head_after: u64,
    pub peer_head: u64,
    pub records_fetched: u64,
    pub anomalies: Vec<Anomaly>,
}

impl ChannelRun {
    /// A channel about to be compared, with its local head before the run.
    pub fn new(channel: ChannelId, local_head_before: u64) -> Self {
        ChannelRun {
            channel,
            local_head_before,
            local_head_after: local_head_before,
            peer_head: 0,
            records_fetched: 0,
            anomalies: Vec::new(),
        }
    }

    /// Notes an anomaly once.
    pub fn flag(&mut self, a: Anomaly) {
        if !self.anomalies.contains(&a) {
            self.anomalies.push(a);
        }
    }
}

/// The report of one reconciliation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Assigned when stored: 1, 2, ...
    pub run_id: u64,
    pub started_at_ms: UnixMillis,
    pub finished_at_ms: UnixMillis,
    pub channels: Vec<ChannelRun>,
}

#[derive(Serialize, Deserialize)]
struct ChannelRunWire {
    origin: [u8; 6],
    destination: [u8; 6],
    local_head_before: u64,
    local_head_after: u64,
    peer_head: u64,
    records_fetched: u64,
    anomalies: Vec<Anomaly>,
}

#[derive(Serialize, Deserialize)]
struct RunReportWire {
    run_id: u64,
    started_at_ms: i64,
    finished_at_ms: i64,
    channels: Vec<ChannelRunWire>,
}

impl RunReport {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_versioned(&RunReportWire {
            run_id: self.run_id,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelRunWire {
                    origin: *c.channel.origin.as_bytes(),
                    destination: *c.channel.destination.as_bytes(),
                    local_head_before: c.local_head_before,
                    local_head_after: c.local_head_after,
                    peer_head: c.peer_head,
                    records_fetched: c.records_fetched,
                    anomalies: c.anomalies.clone(),
                })
                .collect(),
        })
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        let w: RunReportWire = decode_versioned(Place::Report, v)?;
        let channels = w
            .channels
            .into_iter()
            .map(|c| {
                stored_run(
                    &c.origin,
                    &c.destination,
                    [
                        c.local_head_before,
                        c.local_head_after,
                        c.peer_head,
                        c.records_fetched,
                    ],
                    c.anomalies,
                )
            })
            .collect::<Result<_>>()?;
        Ok(RunReport {
            run_id: w.run_id,
            started_at_ms: w.started_at_ms,
            finished_at_ms: w.finished_at_ms,
            channels,
        })
    }
}

/// A channel's part of a stored report, its regions checked: `figures` are the local head
/// before and after, the peer's head and the records fetched.
pub(crate) fn stored_run(
    origin: &[u8],
    destination: &[u8],
    figures: [u64; 4],
    anomalies: Vec<Anomaly>,
) -> Result<ChannelRun> {
    let region = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<RegionCode>().ok())
            .ok_or_else(|| corrupt(Place::Report, "names an invalid region"))
    };
    let [
        local_head_before,
        local_head_after,
        peer_head,
        records_fetched,
    ] = figures;
    Ok(ChannelRun {
        channel: ChannelId::new(region(origin)?, region(destination)?),
        local_head_before,
        local_head_after,
        peer_head,
        records_fetched,
        anomalies,
    })
}

/// How many reconciliation reports to keep, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRetention {
    /// At most this many (at least the newest one is always kept).
    pub max_count: u64,
    /// None older than this, counted back from the newest report's finish.
    pub max_age_ms: i64,
}

/// Reports removed per durable batch when a backlog is pruned.
pub const PRUNE_CHUNK: usize = 1000;

fn run_id(k: &[u8]) -> Result<u64> {
    let id: [u8; 8] = k
        .get(1..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(Place::Report, "key is not a run id"))?;
    Ok(u64::from_be_bytes(id))
}

impl Store {
    /// Keeps `peer`'s latest verified head statement, as the signed bytes received.
    pub fn save_checkpoint(&self, peer: RegionCode, signed: &[u8]) -> Result<()> {
        let _w = self.write.lock();
        self.check_writable()?;
        let mut batch = sled::Batch::default();
        batch.insert(keys::checkpoint(peer), signed);
        self.commit(batch)
    }

    /// A peer's latest head statement we kept, as signed.
    pub fn checkpoint(&self, peer: RegionCode) -> Result<Option<Vec<u8>>> {
        Ok(self.db()?.get(keys::checkpoint(peer))?.map(|v| v.to_vec()))
    }

    /// Stores a reconciliation report and returns its run id (1, 2, ...). Reports beyond
    /// `keep` (by count, or older than its age counted from this report's finish) are removed
    /// in the same durable batch; a long backlog (a store from before the bound) goes in
    /// chunks of [`PRUNE_CHUNK`], so one batch stays small.
    pub fn save_report(&self, mut report: RunReport, keep: ReportRetention) -> Result<u64> {
        let _w = self.write.lock();
        self.check_writable()?;
        let db = self.db()?;
        let next = match db.scan_prefix([keys::RUN]).next_back() {
            Some(kv) => run_id(&kv?.0)? + 1,
            None => 1,
        };
        report.run_id = next;
        // The new report counts: ids at or below this one are over the count.
        let over_count = next.saturating_sub(keep.max_count.max(1));
        let cutoff = report.finished_at_ms.saturating_sub(keep.max_age_ms);
        let mut batch = sled::Batch::default();
        batch.insert(keys::run(next), report.encode());
        let mut in_batch = 0;
        // Oldest first; run ids grow with time, so the first report kept ends the scan.
        for kv in db.scan_prefix([keys::RUN]) {
            let (k, v) = kv?;
            let id = run_id(&k)?;
            // An unreadable report is not judged by age: the count bound still removes it,
            // and `reports` names it as corrupt meanwhile.
            let expired =
                id <= over_count || RunReport::decode(&v).is_ok_and(|r| r.started_at_ms < cutoff);
            if id >= next || !expired {
                break;
            }
            batch.remove(k);
            in_batch += 1;
            if in_batch == PRUNE_CHUNK {
                self.commit(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        self.commit(batch)?;
        Ok(next)
    }

    /// The newest `limit` reports, newest first.
    pub fn reports(&self, limit: usize) -> Result<Vec<RunReport>> {
        let mut out = Vec::new();
        for kv in self.db()?.scan_prefix([keys::RUN]).rev().take(limit) {
            let (_, v) = kv?;
            out.push(RunReport::decode(&v)?);
        }
        Ok(out)
    }
}
