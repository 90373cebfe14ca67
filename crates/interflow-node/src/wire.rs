//! Mapping between the store's own types and the wire (`interflow.v1`): the store knows no
//! protobuf, so reports, audit entries, evidence and refusals become messages here, and only
//! here.

use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_store::{Anomaly, ApplyError, AuditEntry, ChannelRun, RunReport};
use prost::Message;

use crate::error::NodeError;

/// The wire reason code for an inbound record the chain rule refused.
pub fn apply_reject_reason(e: &ApplyError) -> pb::RejectReason {
    match e {
        ApplyError::Gap { .. } => pb::RejectReason::ChainGap,
        ApplyError::ChainBroken { .. } => pb::RejectReason::ChainBroken,
        ApplyError::Equivocation { .. } => pb::RejectReason::Equivocation,
        ApplyError::ChannelStopped(_) => pb::RejectReason::ChannelStopped,
    }
}

pub fn anomaly(a: Anomaly) -> pb::Anomaly {
    match a {
        Anomaly::Equivocation => pb::Anomaly::Equivocation,
        Anomaly::BadRecord => pb::Anomaly::BadRecord,
        Anomaly::PeerUnreachable => pb::Anomaly::PeerUnreachable,
        Anomaly::BadHeadsSignature => pb::Anomaly::BadHeadsSignature,
        Anomaly::HeadsRegressed => pb::Anomaly::HeadsRegressed,
        Anomaly::OwnFeedBehind => pb::Anomaly::OwnFeedBehind,
        Anomaly::ChannelStopped => pb::Anomaly::ChannelStopped,
    }
}

pub fn channel_report(c: &ChannelRun) -> pb::ChannelReport {
    pb::ChannelReport {
        origin: c.channel.origin.to_string(),
        destination: c.channel.destination.to_string(),
        local_head_before: c.local_head_before,
        local_head_after: c.local_head_after,
        peer_head: c.peer_head,
        records_fetched: c.records_fetched,
        anomalies: c.anomalies.iter().map(|a| anomaly(*a) as i32).collect(),
    }
}

pub fn report(r: &RunReport) -> pb::ReconcileReport {
    pb::ReconcileReport {
        run_id: r.run_id,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        channels: r.channels.iter().map(channel_report).collect(),
    }
}

pub fn audit_entry(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        index: e.index,
        at_ms: e.at_ms,
        actor: e.actor.clone(),
        action: e.action.clone(),
        subjects: e.subjects.clone(),
        prev_hash: e.prev_hash.to_vec(),
        purpose: e.note.purpose.clone(),
        case_ref: e.note.case_ref.clone(),
        detail: e.note.detail.clone(),
        refused: e.note.refused.clone(),
    }
}

/// A stored record's bytes as the wire message. They were checked when stored, so a failure
/// here means damaged data.
pub fn signed_record(
    channel: ChannelId,
    seq: u64,
    bytes: &[u8],
) -> Result<pb::SignedRecord, NodeError> {
    pb::SignedRecord::decode(bytes).map_err(|e| {
        NodeError::Store(interflow_store::StoreError::Corrupt {
            at: interflow_store::Place::Record { channel, seq },
            problem: "does not decode",
            source: Some(e.into()),
        })
    })
}

/// An agreement as `Admin.ListAgreements` shows it at `now`.
pub fn agreement_info(
    a: &interflow_core::agreement::Agreement,
    now: interflow_core::time::UnixMillis,
    grace_ms: i64,
) -> pb::AgreementInfo {
    let state = if a.terminated_at_ms.is_some_and(|t| t <= now) {
        pb::AgreementState::Terminated
    } else if now < a.valid_from_ms {
        pb::AgreementState::NotYetValid
    } else if now >= a.valid_until_ms {
        pb::AgreementState::Expired
    } else {
        pb::AgreementState::Active
    };
    pb::AgreementInfo {
        agreement_id: a.id.clone(),
        party_a: a.party_a.to_string(),
        party_b: a.party_b.to_string(),
        state: state as i32,
        valid_from_ms: a.valid_from_ms,
        valid_until_ms: a.valid_until_ms,
        terminated_at_ms: a.terminated_at_ms.unwrap_or(0),
        grace_end_ms: a.grace_end_ms(grace_ms).unwrap_or(0),
        retention_days: a.retention_days,
    }
}
