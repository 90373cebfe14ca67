//! Reconciliation: for each peer with an active agreement, `Heads` → compare with the local
//! view → `Fetch` every gap of the inbound channel → verify → durable append; then compare the
//! peer's view of our outbound channel and, when it holds more than we do, recover our own
//! records from it. Idempotent: a second run in sync costs one `Heads` call per peer.
//!
//! Fork-safe restore: every outbound channel starts held; a channel is released only after a
//! run compared our head with the peer's signed view (recovering first if the peer held
//! more), so a node restored from an old backup never reuses a sequence number.
//!
//! The peer's signed view of our outbound channel also acknowledges it, as far as it names
//! our own record: with delivery off, records pulled by the peer count as delivered.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use interflow_core::RegionCode;
use interflow_core::pb;
use interflow_core::record::{ChannelId, RecordId};
use interflow_core::statement::verify_heads;
use interflow_store::{Anomaly, ApplyError, ApplyOutcome, ChannelRun, HeadsAck, RunReport};
use prost::Message;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::error::NodeError;
use crate::node::Node;
use crate::wire;

type Progress = mpsc::Sender<Result<pb::ReconcileProgress, Status>>;

/// Starts a run now (waiting for one in progress to finish) and streams its progress.
pub async fn start_run(
    node: Arc<Node>,
    only: Option<RegionCode>,
    recover: bool,
) -> Result<mpsc::Receiver<Result<pb::ReconcileProgress, Status>>, Status> {
    if let Some(p) = only
        && !node.fed().agreements.all_peers(node.region).contains(&p)
    {
        return Err(NodeError::bad_field("peer", format!("no agreement with `{p}`")).into());
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let report = run(&node, only, recover, Some(&tx)).await;
        let _ = tx
            .send(Ok(pb::ReconcileProgress {
                event: Some(pb::reconcile_progress::Event::Report(wire::report(&report))),
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
) -> RunReport {
    let _one_at_a_time = node.reconcile_lock.lock().await;
    let timer = std::time::Instant::now();
    let started = node.now();
    let mut channels = Vec::new();
    let peers =
        node.fed()
            .agreements
            .reconcile_peers(node.region, started, node.termination_grace_ms());
    for peer in peers {
        if only.is_some_and(|o| o != peer) {
            continue;
        }
        // A termination the partner could not be given yet is retried with every run.
        node.resend_terminations(peer).await;
        if let Some(tx) = progress {
            let _ = tx
                .send(Ok(pb::ReconcileProgress {
                    event: Some(pb::reconcile_progress::Event::PeerStarted(
                        pb::PeerStarted {
                            peer: peer.to_string(),
                        },
                    )),
                }))
                .await;
        }
        let reports = reconcile_peer(node, peer, recover).await;
        if let Some(tx) = progress {
            let _ = tx
                .send(Ok(pb::ReconcileProgress {
                    event: Some(pb::reconcile_progress::Event::PeerDone(pb::PeerDone {
                        peer: peer.to_string(),
                        channels: reports.iter().map(wire::channel_report).collect(),
                    })),
                }))
                .await;
        }
        channels.extend(reports);
    }
    let mut report = RunReport {
        run_id: 0,
        started_at_ms: started,
        finished_at_ms: node.now(),
        channels,
    };
    let to_save = report.clone();
    let keep = node.config.reconcile.report_retention();
    match node.store.run(move |s| s.save_report(to_save, keep)).await {
        Ok(id) => report.run_id = id,
        Err(e) => tracing::error!(error = %e, "cannot save the reconciliation report"),
    }
    node.metrics.reconcile_runs.inc();
    node.metrics
        .reconcile_seconds
        .observe(timer.elapsed().as_secs_f64());
    for c in &report.channels {
        if !c.anomalies.is_empty() {
            let peer = if c.channel.origin == node.region {
                c.channel.destination
            } else {
                c.channel.origin
            };
            node.metrics
                .reconcile_anomalies
                .get_or_create(&crate::metrics::PeerLabel {
                    peer: peer.to_string(),
                })
                .inc_by(c.anomalies.len() as u64);
        }
    }
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

async fn reconcile_peer(node: &Arc<Node>, peer: RegionCode, recover: bool) -> Vec<ChannelRun> {
    let inbound = ChannelId::new(peer, node.region);
    let outbound = ChannelId::new(node.region, peer);
    let mut rin = ChannelRun::new(inbound, node.store.head(inbound).0);
    let mut rout = ChannelRun::new(outbound, node.store.head(outbound).0);
    compare(node, peer, recover, &mut rin, &mut rout).await;
    rin.local_head_after = node.store.head(inbound).0;
    rout.local_head_after = node.store.head(outbound).0;
    vec![rin, rout]
}

async fn compare(
    node: &Arc<Node>,
    peer: RegionCode,
    recover: bool,
    rin: &mut ChannelRun,
    rout: &mut ChannelRun,
) {
    let inbound = ChannelId::new(peer, node.region);
    let outbound = ChannelId::new(node.region, peer);
    let unreachable = |rin: &mut ChannelRun, rout: &mut ChannelRun, why: &str| {
        tracing::warn!(%peer, reason = why, "reconciliation: peer unreachable");
        rin.flag(Anomaly::PeerUnreachable);
        rout.flag(Anomaly::PeerUnreachable);
    };
    let mut client = match node.exchange_client(peer) {
        Ok(c) => c,
        Err(e) => return unreachable(rin, rout, &e.to_string()),
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
    if node.fed().directory.member(peer).is_none() {
        return;
    }
    // Under the peer's key the statement names, valid at its issue time.
    let heads = match signed
        .as_ref()
        .map(|s| verify_heads(s, &node.fed().directory))
    {
        Some(Ok(h)) if h.signer == peer && h.peer == node.region => h,
        _ => {
            tracing::warn!(%peer, "reconciliation: heads statement does not verify");
            rin.flag(Anomaly::BadHeadsSignature);
            rout.flag(Anomaly::BadHeadsSignature);
            return;
        }
    };
    // The peer runs a newer directory: fetch it from the peer and install it (the operator's
    // signature is what counts, not the peer's word).
    if heads.directory_serial > node.fed().directory.serial
        && let Err(e) = node.learn_directory(peer).await
    {
        tracing::warn!(%peer, error = %e, "cannot install the peer's newer directory");
    }
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
    let kept = node.store.run(move |s| s.checkpoint(peer)).await;
    if let Ok(Some(prev)) = kept
        && let Ok(prev) = pb::SignedHeads::decode(prev.as_slice())
        && let Ok(prev) = verify_heads(&prev, &node.fed().directory)
    {
        for (c, now, r) in [
            (inbound, peer_in, &mut *rin),
            (outbound, peer_out, &mut *rout),
        ] {
            if let Some(before) = prev.head(c)
                && (now.0 < before.seq || (now.0 == before.seq && now.1 != before.hash))
            {
                tracing::warn!(%peer, channel = %c, before = before.seq, now = now.0, "peer's signed view went backwards or contradicts an earlier statement");
                r.flag(Anomaly::HeadsRegressed);
                regressed = true;
            }
        }
    }
    if !regressed && let Some(s) = &signed {
        let bytes = s.encode_to_vec();
        if let Err(e) = node
            .store
            .run(move |st| st.save_checkpoint(peer, &bytes))
            .await
        {
            tracing::warn!(%peer, error = %e, "cannot keep the peer's head statement");
        }
    }

    // Inbound: fetch every record the peer has and we lack.
    let stopped = node
        .store
        .run(move |s| s.channel_state(inbound))
        .await
        .map(|s| s.stopped.is_some())
        .unwrap_or(false);
    let local_in = node.store.head(inbound);
    if stopped {
        rin.flag(Anomaly::ChannelStopped);
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
        rout.flag(Anomaly::OwnFeedBehind);
        // Before the first comparison after start, recovery always runs: issuing new records
        // would otherwise reuse sequence numbers.
        if recover || node.holds.is_held(outbound) {
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
        node.holds.release(outbound);
        node.metrics
            .channel_held
            .get_or_create(&crate::metrics::PeerLabel {
                peer: peer.to_string(),
            })
            .set(0);
        node.wake_delivery(peer);
    }

    // The peer's signed view proves what it holds of our feed: it acknowledges as a receipt
    // does (with delivery off it is the only acknowledgement), kept as the proof. Forward
    // only, and only for the record we hold at that seq; a regressed view proves nothing new.
    if !regressed
        && peer_out.0 > 0
        && let Some(s) = &signed
    {
        let bytes = s.encode_to_vec();
        let (seq, hash) = peer_out;
        match node
            .store
            .run(move |st| st.ack_by_heads(outbound, seq, hash, &bytes))
            .await
        {
            Ok(HeadsAck::Advanced) => {
                tracing::info!(%peer, acked = seq, "outbound records acknowledged by the peer's signed heads");
            }
            Ok(HeadsAck::Mismatch) if seq <= node.store.head(outbound).0 => {
                tracing::warn!(%peer, seq, "the peer's signed head of our feed names another record than ours at that seq: this node's feed forked (restored from an old backup?); keep both data directories and investigate");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot record the acknowledgement by the peer's signed heads");
            }
        }
    }
}

/// Fetches `from..=to` of `channel` from the peer, verifies and appends it, page by page.
async fn fetch_range(
    node: &Arc<Node>,
    client: &mut pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
    channel: ChannelId,
    from: u64,
    to: u64,
    report: &mut ChannelRun,
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
                report.flag(Anomaly::PeerUnreachable);
                return;
            }
            Err(_) => {
                tracing::warn!(%channel, "fetch timed out");
                report.flag(Anomaly::PeerUnreachable);
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
                    report.flag(Anomaly::PeerUnreachable);
                    break;
                }
                Err(_) => {
                    tracing::warn!(%channel, "fetch stream timed out");
                    report.flag(Anomaly::PeerUnreachable);
                    break;
                }
            }
        }
        if page.is_empty() {
            return;
        }
        // Verify on the blocking pool (CPU), then apply through the store handle.
        let (verified, bad) = match node
            .cpu(move |n| {
                let fed = n.fed();
                let ctx = fed.accept_context(n.rules());
                let mut verified = Vec::with_capacity(page.len());
                for s in page {
                    match ctx.accept(s, channel) {
                        Ok(v) => verified.push(v),
                        Err(e) => {
                            tracing::warn!(%channel, reason = e.reject_reason().as_str_name(), "fetched record refused");
                            n.metrics.reject(e.reject_reason());
                            return (verified, true);
                        }
                    }
                }
                (verified, false)
            })
            .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(%channel, error = %e, "cannot verify fetched records");
                return;
            }
        };
        let outcomes = match node.receive(verified).await {
            Ok((_, o)) => o,
            Err(e) => {
                tracing::error!(%channel, error = %e, "cannot store fetched records");
                return;
            }
        };
        if bad {
            report.flag(Anomaly::BadRecord);
        }
        for o in &outcomes {
            match o {
                Ok(ApplyOutcome::Stored) => report.records_fetched += 1,
                Ok(ApplyOutcome::Duplicate) => {}
                Err(ApplyError::Equivocation { seq, .. }) => {
                    tracing::warn!(%channel, seq, "equivocation found during reconciliation; channel stopped");
                    node.metrics.equivocations.inc();
                    report.flag(Anomaly::Equivocation);
                }
                Err(ApplyError::ChannelStopped(_)) => report.flag(Anomaly::ChannelStopped),
                Err(_) => report.flag(Anomaly::BadRecord),
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
/// once. While an outbound channel is still held, runs come sooner, backing off exponentially
/// with jitter (a peer down for a day costs a few runs an hour, not one a second).
pub async fn schedule(node: Arc<Node>, shutdown: CancellationToken) {
    let cfg = &node.config.reconcile;
    let interval = Duration::from_secs(cfg.interval_secs);
    let jitter = cfg.jitter_secs;
    let held_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(cfg.min_backoff_ms))
            .with_max_delay(Duration::from_millis(cfg.max_backoff_ms).min(interval))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut held_delays = held_backoff();
    loop {
        tokio::select! {
            _ = run(&node, None, cfg.recover, None) => {}
            _ = shutdown.cancelled() => return,
        }
        let delay = match node.holds.any().then(|| held_delays.next()).flatten() {
            Some(d) => d.min(interval),
            None => {
                held_delays = held_backoff();
                interval
                    + Duration::from_millis(
                        rand::thread_rng().gen_range(0..=jitter.saturating_mul(1000)),
                    )
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
