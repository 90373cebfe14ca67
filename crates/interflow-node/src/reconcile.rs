//! Reconciliation: for each peer with an active agreement, `Heads` → compare with the local
//! view → `Fetch` every gap of the inbound channel → verify → durable append; then compare the
//! peer's view of our outbound channel and, when it holds more than we do, recover our own
//! records from it. Idempotent: a second run in sync costs one `Heads` call per peer.
//!
//! Fork-safe restore: every outbound channel starts held; a channel is released only after a
//! run compared our head with the peer's signed view (recovering first if the peer held
//! more), so a node restored from an old backup never reuses a sequence number.

use std::sync::Arc;
use std::time::Duration;

use interflow_core::RegionCode;
use interflow_core::pb;
use interflow_core::record::{ChannelId, RecordId};
use interflow_core::statement::verify_heads;
use interflow_store::{ApplyError, ApplyOutcome};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::node::Node;

type Progress = mpsc::Sender<Result<pb::ReconcileProgress, Status>>;

/// Whether new records on `channel` must wait for a head comparison with the peer.
pub fn is_held(node: &Node, channel: ChannelId) -> bool {
    node.held
        .lock()
        .map(|h| h.contains(&channel))
        .unwrap_or(true)
}

fn release(node: &Node, channel: ChannelId) {
    if let Ok(mut h) = node.held.lock()
        && h.remove(&channel)
    {
        tracing::info!(%channel, "outbound channel released after comparing heads with the peer");
    }
}

/// Starts a run now (waiting for one in progress to finish) and streams its progress.
pub async fn start_run(
    node: Arc<Node>,
    only: Option<RegionCode>,
    recover: bool,
) -> Result<mpsc::Receiver<Result<pb::ReconcileProgress, Status>>, Status> {
    if let Some(p) = only
        && !node.agreements.all_peers(node.region).contains(&p)
    {
        return Err(Status::invalid_argument(format!("no agreement with `{p}`")));
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let report = run(&node, only, recover, Some(&tx)).await;
        let _ = tx
            .send(Ok(pb::ReconcileProgress {
                event: Some(pb::reconcile_progress::Event::Report(report)),
            }))
            .await;
    });
    Ok(rx)
}

/// One run over every peer with an active agreement (or only `only`); writes its report.
#[tracing::instrument(name = "reconcile", skip_all, fields(region = %node.region))]
pub async fn run(
    node: &Arc<Node>,
    only: Option<RegionCode>,
    recover: bool,
    progress: Option<&Progress>,
) -> pb::ReconcileReport {
    let _one_at_a_time = node.reconcile_lock.lock().await;
    let started = node.now();
    let mut channels = Vec::new();
    for peer in node.agreements.active_peers(node.region, started) {
        if only.is_some_and(|o| o != peer) {
            continue;
        }
        let reports = reconcile_peer(node, peer, recover).await;
        if let Some(tx) = progress {
            let _ = tx
                .send(Ok(pb::ReconcileProgress {
                    event: Some(pb::reconcile_progress::Event::PeerDone(pb::PeerDone {
                        peer: peer.to_string(),
                        channels: reports.clone(),
                    })),
                }))
                .await;
        }
        channels.extend(reports);
    }
    let mut report = pb::ReconcileReport {
        run_id: 0,
        started_at_ms: started,
        finished_at_ms: node.now(),
        channels,
    };
    let to_save = report.clone();
    match node
        .blocking(move |n| n.store.save_report(to_save).map_err(crate::status::store))
        .await
    {
        Ok(id) => report.run_id = id,
        Err(e) => tracing::error!(error = %e.message(), "cannot save the reconciliation report"),
    }
    node.metrics.reconcile_runs.inc();
    let fetched: u64 = report.channels.iter().map(|c| c.records_fetched).sum();
    let anomalies: usize = report.channels.iter().map(|c| c.anomalies.len()).sum();
    tracing::info!(
        run = report.run_id,
        fetched,
        anomalies,
        "reconciliation run finished"
    );
    report
}

fn channel_report(node: &Node, c: ChannelId) -> pb::ChannelReport {
    pb::ChannelReport {
        origin: c.origin.to_string(),
        destination: c.destination.to_string(),
        local_head_before: node.store.head(c).0,
        ..Default::default()
    }
}

fn anomaly(r: &mut pb::ChannelReport, a: pb::Anomaly) {
    if !r.anomalies.contains(&(a as i32)) {
        r.anomalies.push(a as i32);
    }
}

async fn reconcile_peer(
    node: &Arc<Node>,
    peer: RegionCode,
    recover: bool,
) -> Vec<pb::ChannelReport> {
    let inbound = ChannelId::new(peer, node.region);
    let outbound = ChannelId::new(node.region, peer);
    let mut rin = channel_report(node, inbound);
    let mut rout = channel_report(node, outbound);
    compare(node, peer, recover, &mut rin, &mut rout).await;
    rin.local_head_after = node.store.head(inbound).0;
    rout.local_head_after = node.store.head(outbound).0;
    vec![rin, rout]
}

async fn compare(
    node: &Arc<Node>,
    peer: RegionCode,
    recover: bool,
    rin: &mut pb::ChannelReport,
    rout: &mut pb::ChannelReport,
) {
    let inbound = ChannelId::new(peer, node.region);
    let outbound = ChannelId::new(node.region, peer);
    let unreachable = |rin: &mut pb::ChannelReport, rout: &mut pb::ChannelReport, why: &str| {
        tracing::warn!(%peer, reason = why, "reconciliation: peer unreachable");
        anomaly(rin, pb::Anomaly::PeerUnreachable);
        anomaly(rout, pb::Anomaly::PeerUnreachable);
    };
    let mut client = match node.exchange_client(peer) {
        Ok(c) => c,
        Err(e) => return unreachable(rin, rout, &e),
    };
    let signed = match tokio::time::timeout(
        node.config.limits.request_timeout(),
        client.heads(pb::HeadsRequest {}),
    )
    .await
    {
        Ok(Ok(r)) => r.into_inner().heads,
        Ok(Err(s)) => return unreachable(rin, rout, s.message()),
        Err(_) => return unreachable(rin, rout, "heads timed out"),
    };
    let Some(key) = node.directory.signing_key(peer) else {
        return;
    };
    let heads = match signed.as_ref().map(|s| verify_heads(s, &key)) {
        Some(Ok(h)) if h.signer == peer && h.peer == node.region => h,
        _ => {
            tracing::warn!(%peer, "reconciliation: heads statement does not verify");
            anomaly(rin, pb::Anomaly::BadHeadsSignature);
            anomaly(rout, pb::Anomaly::BadHeadsSignature);
            return;
        }
    };
    let peer_in = heads
        .head(inbound)
        .map(|h| (h.seq, h.hash))
        .unwrap_or((0, RecordId::ZERO));
    let peer_out = heads
        .head(outbound)
        .map(|h| (h.seq, h.hash))
        .unwrap_or((0, RecordId::ZERO));
    rin.peer_head = peer_in.0;
    rout.peer_head = peer_out.0;

    // A peer whose signed view goes backwards, or contradicts what it signed before, is an
    // anomaly; the earlier statement is kept as evidence (not overwritten).
    let mut regressed = false;
    if let Ok(Some(prev)) = node.store.checkpoint(peer)
        && let Ok(prev) = verify_heads(&prev, &key)
    {
        for (c, now, r) in [
            (inbound, peer_in, &mut *rin),
            (outbound, peer_out, &mut *rout),
        ] {
            if let Some(before) = prev.head(c)
                && (now.0 < before.seq || (now.0 == before.seq && now.1 != before.hash))
            {
                tracing::warn!(%peer, channel = %c, before = before.seq, now = now.0, "peer's signed view went backwards or contradicts an earlier statement");
                anomaly(r, pb::Anomaly::HeadsRegressed);
                regressed = true;
            }
        }
    }
    if !regressed && let Some(s) = signed.clone() {
        let h = heads.clone();
        let _ = node
            .blocking(move |n| {
                n.store
                    .save_checkpoint(&h, &s)
                    .map_err(crate::status::store)
            })
            .await;
    }

    // Inbound: fetch every record the peer has and we lack.
    let stopped = |c| {
        node.store
            .channel_state(c)
            .map(|s| s.stopped.is_some())
            .unwrap_or(false)
    };
    let local_in = node.store.head(inbound);
    if stopped(inbound) {
        anomaly(rin, pb::Anomaly::ChannelStopped);
    } else if peer_in.0 > local_in.0 {
        fetch_range(node, &mut client, inbound, local_in.0 + 1, peer_in.0, rin).await;
    } else if peer_in.0 == local_in.0 && peer_in.0 > 0 && peer_in.1 != local_in.1 {
        // Same length, different head: fetch the peer's record to keep the proof.
        fetch_range(node, &mut client, inbound, peer_in.0, peer_in.0, rin).await;
    }

    // Outbound: does the peer hold more of our own feed than we do?
    let local_out = node.store.head(outbound);
    if peer_out.0 > local_out.0 {
        tracing::warn!(%peer, ours = local_out.0, theirs = peer_out.0, "the peer holds more of our own feed than we do");
        anomaly(rout, pb::Anomaly::OwnFeedBehind);
        // Before the first comparison after start, recovery always runs: issuing new records
        // would otherwise reuse sequence numbers.
        if recover || is_held(node, outbound) {
            fetch_range(
                node,
                &mut client,
                outbound,
                local_out.0 + 1,
                peer_out.0,
                rout,
            )
            .await;
        }
    }
    if node.store.head(outbound).0 >= peer_out.0 {
        release(node, outbound);
        node.wake_delivery(peer);
    }
}

/// Fetches `from..=to` of `channel` from the peer, verifies and appends it, page by page.
async fn fetch_range(
    node: &Arc<Node>,
    client: &mut pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
    channel: ChannelId,
    from: u64,
    to: u64,
    report: &mut pb::ChannelReport,
) {
    let mut next = from;
    while next <= to {
        let req = pb::FetchRequest {
            origin: channel.origin.to_string(),
            destination: channel.destination.to_string(),
            from_seq: next,
            limit: 0,
        };
        // A frozen peer accepts the connection and never answers: bound every wait.
        let timeout = node.config.limits.request_timeout();
        let mut stream = match tokio::time::timeout(timeout, client.fetch(req)).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => {
                tracing::warn!(%channel, error = %s.message(), "fetch failed");
                anomaly(report, pb::Anomaly::PeerUnreachable);
                return;
            }
            Err(_) => {
                tracing::warn!(%channel, "fetch timed out");
                anomaly(report, pb::Anomaly::PeerUnreachable);
                return;
            }
        };
        let mut page = Vec::new();
        loop {
            match tokio::time::timeout(timeout, stream.message()).await {
                Ok(Ok(Some(r))) => page.push(r),
                Ok(Ok(None)) => break,
                Ok(Err(s)) => {
                    tracing::warn!(%channel, error = %s.message(), "fetch stream failed");
                    anomaly(report, pb::Anomaly::PeerUnreachable);
                    break;
                }
                Err(_) => {
                    tracing::warn!(%channel, "fetch stream timed out");
                    anomaly(report, pb::Anomaly::PeerUnreachable);
                    break;
                }
            }
        }
        if page.is_empty() {
            return;
        }
        let result = node
            .blocking(move |n| {
                let ctx = n.accept_context();
                let mut verified = Vec::with_capacity(page.len());
                let mut bad = false;
                for s in page {
                    match ctx.accept(s, channel) {
                        Ok(v) => verified.push(v),
                        Err(e) => {
                            tracing::warn!(%channel, reason = e.reject_reason().as_str_name(), "fetched record refused");
                            n.metrics.reject(e.reject_reason());
                            bad = true;
                            break;
                        }
                    }
                }
                let outcomes = n.store.apply(&verified).map_err(crate::status::store)?;
                Ok((bad, outcomes))
            })
            .await;
        let (bad, outcomes) = match result {
            Ok(x) => x,
            Err(s) => {
                tracing::error!(%channel, error = %s.message(), "cannot store fetched records");
                return;
            }
        };
        if bad {
            anomaly(report, pb::Anomaly::BadRecord);
        }
        for o in &outcomes {
            match o {
                Ok(ApplyOutcome::Stored) => report.records_fetched += 1,
                Ok(ApplyOutcome::Duplicate) => {}
                Err(ApplyError::Equivocation { seq, .. }) => {
                    tracing::warn!(%channel, seq, "equivocation found during reconciliation; channel stopped");
                    node.metrics.equivocations.inc();
                    anomaly(report, pb::Anomaly::Equivocation);
                }
                Err(ApplyError::ChannelStopped(_)) => anomaly(report, pb::Anomaly::ChannelStopped),
                Err(_) => anomaly(report, pb::Anomaly::BadRecord),
            }
        }
        let head = node.store.head(channel).0;
        if bad || head < next || outcomes.iter().any(|o| o.is_err()) {
            return;
        }
        next = head + 1;
    }
}

/// Runs reconciliation every `interval` plus jitter until `shutdown`; the first run starts at
/// once, and runs come every second while an outbound channel is still held.
pub async fn schedule(node: Arc<Node>, shutdown: CancellationToken) {
    let interval = Duration::from_secs(node.config.reconcile.interval_secs);
    let jitter = node.config.reconcile.jitter_secs;
    loop {
        tokio::select! {
            _ = run(&node, None, node.config.reconcile.recover, None) => {}
            _ = shutdown.cancelled() => return,
        }
        let any_held = node.held.lock().map(|h| !h.is_empty()).unwrap_or(true);
        let delay = if any_held {
            interval.min(Duration::from_secs(1))
        } else {
            interval
                + Duration::from_millis(
                    rand::thread_rng().gen_range(0..=jitter.saturating_mul(1000)),
                )
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
