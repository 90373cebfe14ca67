//! Prometheus metrics of one node, in its own registry (no process-global recorder, so several
//! nodes in one process keep their figures apart). Labels carry region codes and reason names
//! only, never personal data.

use std::sync::Arc;

use interflow_core::RegionCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    pub consumer: String,
}

/// Counters and gauges of one node.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub submitted: Counter,
    pub delivered: Family<PeerLabel, Counter>,
    pub received: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub pending: Family<PeerLabel, Gauge>,
    pub reconcile_runs: Counter,
    pub equivocations: Counter,
    /// Times a peer's records had to wait for its record rate.
    pub records_throttled: Counter,
    /// 1 while the store accepts writes; 0 after a failed durable write (disk full, I/O error)
    /// or when it opened read-only.
    pub store_writable: Gauge,
    /// Records stored for this node and put in its inbox.
    pub inbox_items: Counter,
    /// Per inbox consumer: items after its cursor, and the age of the oldest of them.
    pub consumer_lag_items: Family<ConsumerLabel, Gauge>,
    pub consumer_lag_seconds: Family<ConsumerLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(region: RegionCode) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "interflow",
            [("region".into(), region.as_str().to_owned().into())].into_iter(),
        );
        let submitted = Counter::default();
        let delivered = Family::<PeerLabel, Counter>::default();
        let received = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let pending = Family::<PeerLabel, Gauge>::default();
        let reconcile_runs = Counter::default();
        let equivocations = Counter::default();
        let records_throttled = Counter::default();
        let store_writable = Gauge::default();
        store_writable.set(1);
        let inbox_items = Counter::default();
        let consumer_lag_items = Family::<ConsumerLabel, Gauge>::default();
        let consumer_lag_seconds = Family::<ConsumerLabel, Gauge>::default();
        registry.register(
            "inbox_items",
            "Inbound records put in this node's inbox",
            inbox_items.clone(),
        );
        registry.register(
            "inbox_consumer_lag_items",
            "Inbox items after each consumer's cursor",
            consumer_lag_items.clone(),
        );
        registry.register(
            "inbox_consumer_lag_seconds",
            "Age of the oldest inbox item each consumer has not acknowledged",
            consumer_lag_seconds.clone(),
        );
        registry.register(
            "records_submitted",
            "Records accepted at intake",
            submitted.clone(),
        );
        registry.register(
            "records_delivered",
            "Records acknowledged by a peer",
            delivered.clone(),
        );
        registry.register(
            "records_received",
            "Records received and stored from peers",
            received.clone(),
        );
        registry.register(
            "records_rejected",
            "Records refused, by reason",
            rejected.clone(),
        );
        registry.register(
            "pending_records",
            "Unacknowledged records per outbound channel",
            pending.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Reconciliation runs finished",
            reconcile_runs.clone(),
        );
        registry.register(
            "equivocations",
            "Equivocations detected",
            equivocations.clone(),
        );
        registry.register(
            "records_throttled",
            "Times a peer's deliveries waited for its record rate limit",
            records_throttled.clone(),
        );
        registry.register(
            "store_writable",
            "1 while the store accepts writes, 0 while it refuses them",
            store_writable.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            submitted,
            delivered,
            received,
            rejected,
            pending,
            reconcile_runs,
            equivocations,
            records_throttled,
            store_writable,
            inbox_items,
            consumer_lag_items,
            consumer_lag_seconds,
        }
    }

    pub fn reject(&self, reason: interflow_core::pb::RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str_name().to_ascii_lowercase(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { m.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
