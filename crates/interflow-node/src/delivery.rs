//! Delivery: one worker per peer streams the outbound channel from the last acknowledged seq
//! over `Deliver`, verifies each signed receipt and keeps the latest as proof of delivery.
//! New records wake the worker at once; failures back off exponentially with jitter, and the
//! retry state (with a [`DeliveryError`] that says what to do, or what an attempt still in
//! progress waits on, and since when) is what `Admin.ListPending` shows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use interflow_core::RegionCode;
use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_core::statement::{StatementError, verify_receipt};
use interflow_store::{DeliveryState, StoreError, StoredRecord};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::error::NodeError;
use crate::metrics::PeerLabel;
use crate::node::Node;
use crate::wire;

/// Why a delivery attempt failed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("`{0}` is not in the federation directory")]
    NotMember(RegionCode),
    #[error("`{0}` has no signing key in the directory")]
    NoKey(RegionCode),
    #[error("cannot set up a connection to `{endpoint}`: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("the peer did not answer {what} within {secs}s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("{code:?}: {message}")]
    Peer { code: tonic::Code, message: String },
    #[error("the peer closed the stream before acknowledging")]
    Closed,
    #[error("the peer sent an empty acknowledgement")]
    EmptyAck,
    #[error("bad receipt: {0}")]
    BadReceipt(#[from] StatementError),
    #[error("receipt names channel `{0}`")]
    WrongChannel(ChannelId),
    #[error("the peer rejected seq {seq}: {reason}")]
    Rejected { seq: u64, reason: &'static str },
    #[error(
        "the peer acknowledged seq {seq} which does not match this node's record there; run `interflowctl reconcile --recover`"
    )]
    ReceiptMismatch { seq: u64 },
    #[error("this node's store: {0}")]
    Store(NodeError),
}

impl From<tonic::Status> for DeliveryError {
    fn from(s: tonic::Status) -> Self {
        DeliveryError::Peer {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl From<NodeError> for DeliveryError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Store(StoreError::ReceiptMismatch { seq, .. }) => {
                DeliveryError::ReceiptMismatch { seq }
            }
            e => DeliveryError::Store(e),
        }
    }
}

/// How long an attempt may take before it is noted as waiting on the peer: longer than a
/// healthy batch, far shorter than the request timeout a frozen peer runs into.
const NOTE_WAITING_AFTER: Duration = Duration::from_secs(1);

fn backoff(node: &Node) -> impl Iterator<Item = Duration> + use<> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(node.config.delivery.min_backoff_ms))
        .with_max_delay(Duration::from_millis(node.config.delivery.max_backoff_ms))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Notes the retry state for operators; a failure to note it is logged, never fatal.
async fn note(node: &Node, channel: ChannelId, st: DeliveryState) {
    if let Err(e) = node
        .store
        .run(move |s| s.set_delivery_state(channel, &st))
        .await
    {
        tracing::error!(peer = %channel.destination, error = %e, "cannot record delivery state");
    }
}

/// Runs until `shutdown` (the node stops, or `peer` leaves the federation).
pub async fn run(
    node: Arc<Node>,
    peer: RegionCode,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let channel = ChannelId::new(node.region, peer);
    let mut delays = backoff(&node);
    let mut attempts = 0u32;
    loop {
        let pending = match node.store.run(move |s| s.channel_state(channel)).await {
            Ok(st) => node.store.head(channel).0 > st.acked_seq,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot read channel state");
                false
            }
        };
        // Everything was acknowledged by other means (the peer's signed heads after it pulled
        // the records): the retry state of earlier failures no longer applies.
        if !pending && attempts > 0 {
            attempts = 0;
            delays = backoff(&node);
            note(&node, channel, DeliveryState::default()).await;
        }
        if !pending || node.holds.is_held(channel) {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        // An attempt that waits (a frozen peer answers nothing until the request timeout)
        // is noted as such, so operators see what delivery waits on, and since when.
        let started = node.now();
        let attempt = deliver_once(&node, peer);
        tokio::pin!(attempt);
        let mut noted_waiting = false;
        let result = loop {
            tokio::select! {
                r = &mut attempt => break r,
                _ = tokio::time::sleep(NOTE_WAITING_AFTER), if !noted_waiting => {
                    noted_waiting = true;
                    let st = DeliveryState {
                        attempts: attempts + 1,
                        last_error: Some(format!(
                            "waiting for `{peer}` since {}",
                            interflow_core::time::rfc3339(started)
                        )),
                        next_attempt_ms: None,
                    };
                    note(&node, channel, st).await;
                }
                _ = shutdown.cancelled() => return,
            }
        };
        match result {
            Ok(()) => {
                if attempts > 0 || noted_waiting {
                    attempts = 0;
                    delays = backoff(&node);
                    note(&node, channel, DeliveryState::default()).await;
                }
            }
            Err(e) => {
                attempts += 1;
                let delay = delays
                    .next()
                    .unwrap_or(Duration::from_millis(node.config.delivery.max_backoff_ms));
                let next = node.now() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                tracing::warn!(%peer, attempt = attempts, error = %e, retry_in_ms = delay.as_millis() as u64, "delivery failed");
                let st = DeliveryState {
                    attempts,
                    last_error: Some(e.to_string()),
                    next_attempt_ms: Some(next),
                };
                note(&node, channel, st).await;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// What is sent and not yet covered by a receipt: bounded by `[delivery] window_records` and
/// `window_bytes`, so records keep flowing while receipts come back without the sender (or the
/// receiver's stream buffers) holding more than the window.
#[derive(Debug, Default)]
struct Window {
    /// `(seq, bytes)` of each record in flight, in seq order.
    sent: VecDeque<(u64, usize)>,
    bytes: usize,
}

impl Window {
    fn has_room(&self, records: usize, bytes: usize) -> bool {
        // One record always fits, so a record larger than `window_bytes` still goes out.
        self.sent.is_empty() || (self.sent.len() < records && self.bytes < bytes)
    }

    fn push(&mut self, seq: u64, len: usize) {
        self.sent.push_back((seq, len));
        self.bytes += len;
    }

    /// Forgets every record a cumulative receipt up to `acked` covers.
    fn ack(&mut self, acked: u64) {
        while let Some(&(seq, len)) = self.sent.front() {
            if seq > acked {
                break;
            }
            self.sent.pop_front();
            self.bytes -= len;
        }
    }
}

/// Streams everything pending to `peer` within the window and returns once receipts cover
/// the head it last saw.
async fn deliver_once(node: &Arc<Node>, peer: RegionCode) -> Result<(), DeliveryError> {
    let channel = ChannelId::new(node.region, peer);
    let peer_key = node
        .fed()
        .directory
        .signing_key(peer)
        .ok_or(DeliveryError::NoKey(peer))?;
    let mut client = node.exchange_client(peer)?;
    let cfg = &node.config.delivery;
    let (batch, window_records, window_bytes) = (cfg.batch, cfg.window_records, cfg.window_bytes);
    let timeout = node.config.limits.request_timeout();
    let secs = timeout.as_secs();
    let (tx, rx) = mpsc::channel::<pb::SignedRecord>(batch);
    // A frozen peer accepts the connection and never answers: bound every wait.
    let mut acks = tokio::time::timeout(timeout, client.deliver(ReceiverStream::new(rx)))
        .await
        .map_err(|_| DeliveryError::Timeout {
            what: "the delivery call",
            secs,
        })??
        .into_inner();
    let mut acked = node
        .store
        .run(move |s| s.channel_state(channel))
        .await?
        .acked_seq;
    let label = PeerLabel {
        peer: peer.to_string(),
    };
    let mut window = Window::default();
    // Read from the store `batch` at a time, sent one by one as the window allows.
    let mut queue: VecDeque<StoredRecord> = VecDeque::new();
    let mut next = acked + 1;
    // When the oldest record in flight was sent, for the round-trip figure.
    let mut sent_at: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        let (head, _) = node.store.head(channel);
        node.metrics
            .pending
            .get_or_create(&label)
            .set(i64::try_from(head.saturating_sub(acked)).unwrap_or(i64::MAX));
        if queue.is_empty() && next <= head && window.has_room(window_records, window_bytes) {
            let from = next;
            queue = node
                .store
                .run(move |s| s.records_from(channel, from, batch))
                .await?
                .into();
        }
        if queue.is_empty() && window.sent.is_empty() {
            return Ok(());
        }
        let can_send = !queue.is_empty() && window.has_room(window_records, window_bytes);
        tokio::select! {
            // Receipts first: they free the window.
            biased;
            ack = tokio::time::timeout(timeout, acks.message()), if !window.sent.is_empty() => {
                let ack = ack
                    .map_err(|_| DeliveryError::Timeout {
                        what: "with an acknowledgement",
                        secs,
                    })??
                    .ok_or(DeliveryError::Closed)?;
                let Some(now_acked) = take_ack(node, &peer_key, channel, acked, ack).await? else {
                    continue;
                };
                node.metrics
                    .delivered
                    .get_or_create(&label)
                    .inc_by(now_acked - acked);
                acked = now_acked;
                window.ack(acked);
                while let Some(&(seq, at)) = sent_at.front() {
                    if seq > acked {
                        break;
                    }
                    sent_at.pop_front();
                    node.metrics
                        .deliver_round_trip_seconds
                        .get_or_create(&label)
                        .observe(at.elapsed().as_secs_f64());
                }
            }
            permit = tx.reserve(), if can_send => {
                let permit = permit.map_err(|_| DeliveryError::Closed)?;
                let Some(r) = queue.pop_front() else { continue };
                permit.send(wire::signed_record(channel, r.seq, &r.bytes)?);
                // One sample per `batch` records keeps the figure comparable with earlier
                // (stop-and-wait) releases and the bookkeeping small.
                if sent_at.back().is_none_or(|&(s, _)| s + batch as u64 <= r.seq) {
                    sent_at.push_back((r.seq, Instant::now()));
                }
                window.push(r.seq, r.bytes.len());
                next = r.seq + 1;
            }
        }
    }
}

/// Checks one acknowledgement and keeps a receipt that acknowledges more than `acked` as the
/// proof; returns the new acknowledged seq, or `None` if it acknowledges nothing new.
async fn take_ack(
    node: &Arc<Node>,
    peer_key: &ed25519_dalek::VerifyingKey,
    channel: ChannelId,
    acked: u64,
    ack: pb::DeliveryAck,
) -> Result<Option<u64>, DeliveryError> {
    match ack.result {
        Some(pb::delivery_ack::Result::Receipt(signed)) => {
            let r = verify_receipt(&signed, peer_key)?;
            if r.channel != channel {
                return Err(DeliveryError::WrongChannel(r.channel));
            }
            if r.acked_seq <= acked {
                return Ok(None);
            }
            let seq = r.acked_seq;
            let bytes = signed.encode_to_vec();
            node.store
                .run(move |s| s.record_receipt(&r, &bytes))
                .await?;
            Ok(Some(seq))
        }
        Some(pb::delivery_ack::Result::Rejection(rej)) => {
            let reason = pb::RejectReason::try_from(rej.reason)
                .map(|r| r.as_str_name())
                .unwrap_or("UNKNOWN");
            Err(DeliveryError::Rejected {
                seq: rej.seq,
                reason,
            })
        }
        None => Err(DeliveryError::EmptyAck),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mismatching_receipt_advises_recovery() {
        let c = ChannelId::new("310115".parse().unwrap(), "110105".parse().unwrap());
        let mismatch: DeliveryError =
            NodeError::Store(StoreError::ReceiptMismatch { channel: c, seq: 7 }).into();
        assert!(mismatch.to_string().contains("reconcile --recover"));
        let full: DeliveryError = NodeError::Store(StoreError::DiskFull {
            step: interflow_store::DurableStep::Fsync,
            source: Arc::new(std::io::Error::from_raw_os_error(28)),
        })
        .into();
        let text = full.to_string();
        assert!(!text.contains("reconcile"), "{text}");
        assert!(text.contains("disk is full"), "{text}");
        let closed: DeliveryError = NodeError::Store(StoreError::Closed).into();
        assert!(!closed.to_string().contains("recover"));
    }
}
