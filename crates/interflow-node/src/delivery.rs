//! Delivery: one worker per peer streams the outbound channel from the last acknowledged seq
//! over `Deliver`, verifies each signed receipt and keeps the latest as proof of delivery.
//! New records wake the worker at once; failures back off exponentially with jitter, and the
//! retry state is what `Admin.ListPending` shows.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use interflow_core::RegionCode;
use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_core::statement::verify_receipt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::PeerLabel;
use crate::node::Node;

fn backoff(node: &Node) -> impl Iterator<Item = Duration> + use<> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(node.config.delivery.min_backoff_ms))
        .with_max_delay(Duration::from_millis(node.config.delivery.max_backoff_ms))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Describes a gRPC failure for operators, without anything from the payloads.
fn describe(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Runs until `shutdown`.
pub async fn run(node: Arc<Node>, peer: RegionCode, shutdown: CancellationToken) {
    let Some(wake) = node.wake.get(&peer).cloned() else {
        return;
    };
    let channel = ChannelId::new(node.region, peer);
    let mut delays = backoff(&node);
    let mut attempts = 0u32;
    loop {
        let pending = match node.store.channel_state(channel) {
            Ok(st) => node.store.head(channel).0 > st.acked_seq,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot read channel state");
                false
            }
        };
        if !pending || crate::reconcile::is_held(&node, channel) {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        let result = tokio::select! {
            r = deliver_once(&node, peer) => r,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => {
                if attempts > 0 {
                    attempts = 0;
                    delays = backoff(&node);
                    let _ = node.store.set_delivery_state(channel, 0, None, None);
                }
            }
            Err(e) => {
                attempts += 1;
                let delay = delays
                    .next()
                    .unwrap_or(Duration::from_millis(node.config.delivery.max_backoff_ms));
                let next = node.now() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                tracing::warn!(%peer, attempt = attempts, error = %e, retry_in_ms = delay.as_millis() as u64, "delivery failed");
                if let Err(se) =
                    node.store
                        .set_delivery_state(channel, attempts, Some(e), Some(next))
                {
                    tracing::error!(%peer, error = %se, "cannot record delivery state");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Streams everything pending to `peer` and waits for the receipts.
async fn deliver_once(node: &Arc<Node>, peer: RegionCode) -> Result<(), String> {
    let channel = ChannelId::new(node.region, peer);
    let peer_key = node
        .directory
        .signing_key(peer)
        .ok_or_else(|| format!("`{peer}` has no signing key in the directory"))?;
    let mut client = node.exchange_client(peer)?;
    let batch = node.config.delivery.batch;
    let timeout = node.config.limits.request_timeout();
    let (tx, rx) = mpsc::channel::<pb::SignedRecord>(batch);
    // A frozen peer accepts the connection and never answers: bound every wait.
    let mut acks = tokio::time::timeout(timeout, client.deliver(ReceiverStream::new(rx)))
        .await
        .map_err(|_| format!("the peer did not answer within {}s", timeout.as_secs()))?
        .map_err(|s| describe(&s))?
        .into_inner();
    let mut acked = node
        .store
        .channel_state(channel)
        .map_err(|e| e.to_string())?
        .acked_seq;
    loop {
        let (head, _) = node.store.head(channel);
        node.metrics
            .pending
            .get_or_create(&PeerLabel {
                peer: peer.to_string(),
            })
            .set(i64::try_from(head.saturating_sub(acked)).unwrap_or(i64::MAX));
        if acked >= head {
            return Ok(());
        }
        let from = acked + 1;
        let recs = node
            .blocking(move |n| {
                n.store
                    .records_from(channel, from, batch)
                    .map_err(crate::status::store)
            })
            .await
            .map_err(|s| describe(&s))?;
        let Some(last) = recs.last().map(|r| r.seq()) else {
            return Ok(());
        };
        for r in recs {
            tx.send(r.into_signed())
                .await
                .map_err(|_| "the peer closed the stream".to_owned())?;
        }
        while acked < last {
            let ack = tokio::time::timeout(timeout, acks.message())
                .await
                .map_err(|_| format!("no acknowledgement within {}s", timeout.as_secs()))?
                .map_err(|s| describe(&s))?
                .ok_or_else(|| "the peer closed the stream before acknowledging".to_owned())?;
            match ack.result {
                Some(pb::delivery_ack::Result::Receipt(signed)) => {
                    let r = verify_receipt(&signed, &peer_key)
                        .map_err(|e| format!("bad receipt: {e}"))?;
                    if r.channel != channel {
                        return Err(format!("receipt names channel `{}`", r.channel));
                    }
                    if r.acked_seq > acked {
                        let (rc, sc) = (r.clone(), signed.clone());
                        node.blocking(move |n| n.store.record_receipt(&rc, &sc).map_err(crate::status::store))
                            .await
                            .map_err(|_| {
                                format!(
                                    "the peer acknowledged seq {} which does not match this node's record there; run `interflowctl reconcile --recover`",
                                    r.acked_seq
                                )
                            })?;
                        node.metrics
                            .delivered
                            .get_or_create(&PeerLabel {
                                peer: peer.to_string(),
                            })
                            .inc_by(r.acked_seq - acked);
                        acked = r.acked_seq;
                    }
                }
                Some(pb::delivery_ack::Result::Rejection(rej)) => {
                    let reason = pb::RejectReason::try_from(rej.reason)
                        .map(|r| r.as_str_name())
                        .unwrap_or("UNKNOWN");
                    return Err(format!("the peer rejected seq {}: {reason}", rej.seq));
                }
                None => return Err("the peer sent an empty acknowledgement".into()),
            }
        }
    }
}
