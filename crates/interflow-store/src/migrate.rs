//! Migrations of older schemas, run on open before anything else reads the store. Each step is
//! one atomic batch, so a crash leaves the old schema whole and the next open runs it again.
//!
//! Schema 1 → 2: channel state moves from JSON to the store's binary encoding and splits into
//! the durable chain figures (`c`) and the delivery advice (`d`); reconciliation reports move
//! from protobuf bytes (read through a frozen copy of that layout) to the store's own encoding.
//! Audit entries keep their bytes (see `audit`).
//!
//! Schema 2 → 3: bodies sealed, subject index blinded (see [`v2_to_v3`]). What sled kept of the
//! plain bytes in old segments is removed afterwards by rewriting the files (`rewrite.rs`).
//!
//! Schema 3 → 4: inbox positions are stored in runs (see `inbox`); a schema-3 entry reads as a
//! run of one, so only the version changes.

use interflow_core::record::{ChannelId, DecodedRecord, RecordId};
use interflow_core::time::UnixMillis;
use prost::Message;
use serde::Deserialize;

use crate::engine::decode_record_key;
use crate::error::{Place, corrupt, undecodable};
use crate::reconcile::{Anomaly, RunReport, stored_run};
use crate::seal::Vault;
use crate::state::{ChannelState, DeliveryState};
use crate::{Result, keys};

/// Runs every step from `found` to the current schema.
pub(crate) fn run(db: &sled::Db, vault: &Vault, found: u32) -> Result<()> {
    if found == 1 {
        v1_to_v2(db)?;
    }
    if found <= 2 {
        v2_to_v3(db, vault)?;
    }
    if found <= 3 {
        db.insert(keys::META_SCHEMA, &4u32.to_be_bytes())?;
    }
    Ok(())
}

/// Schema 2 → 3: record bodies and evidence are sealed (see `seal`), and the subject index is
/// re-keyed by the blinded subject ref. The keyring was written before this batch; a crash
/// leaves schema 2 whole and a keyring the next attempt reuses.
fn v2_to_v3(db: &sled::Db, vault: &Vault) -> Result<()> {
    let mut batch = sled::Batch::default();
    for kv in db.scan_prefix([keys::SUBJECT]) {
        let (k, _) = kv?;
        batch.remove(k);
    }
    for prefix in [keys::RECORD, keys::EVIDENCE] {
        for kv in db.scan_prefix([prefix]) {
            let (k, v) = kv?;
            if crate::retention::is_stub(&v) || v.first() == Some(&crate::seal::SEALED) {
                continue;
            }
            let (c, seq) = decode_record_key(k.get(..21).unwrap_or_default())?;
            let at = || Place::Record { channel: c, seq };
            let rec = DecodedRecord::from_bytes(&v)
                .map_err(|e| undecodable(at(), "schema-2 record does not decode", e))?;
            batch.insert(k.clone(), vault.seal(&k, &rec)?);
            if prefix == keys::RECORD {
                batch.insert(
                    keys::subject_of(vault, &rec),
                    keys::location(c, seq).to_vec(),
                );
            }
        }
    }
    batch.insert(keys::META_SCHEMA, &3u32.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(())
}

/// Schema 1's channel state (JSON), frozen.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelStateV1 {
    head_seq: u64,
    #[serde(default)]
    head: String,
    count: u64,
    #[serde(default)]
    rolling: String,
    acked_seq: u64,
    attempts: u32,
    last_error: Option<String>,
    next_attempt_ms: Option<UnixMillis>,
    stopped: Option<String>,
}

/// Schema 1's report layout, frozen: tags and types must never change.
#[derive(Clone, PartialEq, prost::Message)]
struct ReportV1 {
    #[prost(uint64, tag = "1")]
    run_id: u64,
    #[prost(int64, tag = "2")]
    started_at_ms: i64,
    #[prost(int64, tag = "3")]
    finished_at_ms: i64,
    #[prost(message, repeated, tag = "4")]
    channels: Vec<ChannelReportV1>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ChannelReportV1 {
    #[prost(string, tag = "1")]
    origin: String,
    #[prost(string, tag = "2")]
    destination: String,
    #[prost(uint64, tag = "3")]
    local_head_before: u64,
    #[prost(uint64, tag = "4")]
    local_head_after: u64,
    #[prost(uint64, tag = "5")]
    peer_head: u64,
    #[prost(uint64, tag = "6")]
    records_fetched: u64,
    #[prost(int32, repeated, tag = "7")]
    anomalies: Vec<i32>,
}

/// Schema 1's anomaly numbers, frozen.
fn anomaly_v1(n: i32) -> Option<Anomaly> {
    Some(match n {
        1 => Anomaly::Equivocation,
        2 => Anomaly::BadRecord,
        3 => Anomaly::PeerUnreachable,
        4 => Anomaly::BadHeadsSignature,
        5 => Anomaly::HeadsRegressed,
        6 => Anomaly::OwnFeedBehind,
        7 => Anomaly::ChannelStopped,
        _ => return None,
    })
}

fn hex32(c: ChannelId, s: &str) -> Result<[u8; 32]> {
    if s.is_empty() {
        return Ok([0; 32]);
    }
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| corrupt(Place::Channel(c), "schema-1 hash is not 32 bytes of hex"))
}

fn v1_to_v2(db: &sled::Db) -> Result<()> {
    let mut batch = sled::Batch::default();
    for kv in db.scan_prefix([keys::CHANNEL]) {
        let (k, v) = kv?;
        let c = keys::parse_channel(&k[1..])
            .ok_or_else(|| corrupt(Place::ChannelKey, "is not a channel"))?;
        let old: ChannelStateV1 = serde_json::from_slice(&v)
            .map_err(|e| undecodable(Place::Channel(c), "schema-1 state does not decode", e))?;
        let st = ChannelState {
            head_seq: old.head_seq,
            head: RecordId(hex32(c, &old.head)?),
            count: old.count,
            rolling: hex32(c, &old.rolling)?,
            acked_seq: old.acked_seq,
            stopped: old.stopped,
        };
        batch.insert(k.clone(), st.encode());
        let advice = DeliveryState {
            attempts: old.attempts,
            last_error: old.last_error,
            next_attempt_ms: old.next_attempt_ms,
        };
        if advice != DeliveryState::default() {
            batch.insert(keys::delivery(c), advice.encode());
        }
    }
    for kv in db.scan_prefix([keys::RUN]) {
        let (k, v) = kv?;
        let old = ReportV1::decode(v.as_ref())
            .map_err(|e| undecodable(Place::Report, "schema-1 report does not decode", e))?;
        let channels = old
            .channels
            .iter()
            .map(|c| {
                stored_run(
                    c.origin.as_bytes(),
                    c.destination.as_bytes(),
                    [
                        c.local_head_before,
                        c.local_head_after,
                        c.peer_head,
                        c.records_fetched,
                    ],
                    c.anomalies.iter().filter_map(|a| anomaly_v1(*a)).collect(),
                )
            })
            .collect::<Result<_>>()?;
        let report = RunReport {
            run_id: old.run_id,
            started_at_ms: old.started_at_ms,
            finished_at_ms: old.finished_at_ms,
            channels,
        };
        batch.insert(k, report.encode());
    }
    batch.insert(keys::META_SCHEMA, &2u32.to_be_bytes());
    db.apply_batch(batch)?;
    Ok(())
}
