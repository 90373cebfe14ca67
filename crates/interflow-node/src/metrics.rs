//! Prometheus metrics of one node, in its own registry (no process-global recorder, so several
//! nodes in one process keep their figures apart), served as OpenMetrics text together with
//! the `process_*` metrics of the process. Labels carry region codes and reason names only,
//! never personal data. Every labelled family has its series from start (each agreement peer,
//! each reject reason), so a dashboard or alert sees 0 rather than no data.

use std::sync::Arc;

use interflow_core::RegionCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text the endpoint serves.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets from 1 ms to about 33 s (×2 each).
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Buckets for a reconciliation run: 10 ms to about 5.5 min.
fn run_time() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

type PeerHistograms = Family<PeerLabel, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    /// `peer` or `local`: which listener's own certificate.
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// One awareness figure of one agreement and month of arrival (counts only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CoverageLabel {
    pub agreement: String,
    /// `residence` or `home`.
    pub role: String,
    /// `YYYY-MM`, the month of arrival.
    pub month: String,
    /// e.g. `residents`, `residents_with_status`, `arrivals`, `unanswered`.
    pub figure: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    pub consumer: String,
}

/// Counters and gauges of one node.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// `process_*`, without the `interflow_` prefix and region label Prometheus tools expect.
    process: Arc<Registry>,
    pub submitted: Counter,
    /// Submit calls answered RESOURCE_EXHAUSTED because the intake queue was full.
    pub intake_busy: Counter,
    pub delivered: Family<PeerLabel, Counter>,
    pub received: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub pending: Family<PeerLabel, Gauge>,
    pub reconcile_runs: Counter,
    pub equivocations: Counter,
    /// Times a peer's records had to wait for its record rate.
    pub records_throttled: Counter,
    /// Reloads (SIGHUP, `Admin.Reload`) that kept the old state because a file was bad.
    pub reload_failures: Counter,
    /// Directories refused because their serial was lower than the installed one.
    pub directory_rollbacks: Counter,
    /// 1 while the installed directory is past its expiry.
    pub directory_expired: Gauge,
    /// The serial of the installed federation directory.
    pub directory_serial: Gauge,
    /// 1 while the store accepts writes; 0 after a failed durable write (disk full, I/O error)
    /// or when it opened read-only.
    pub store_writable: Gauge,
    /// Records stored for this node and put in its inbox.
    pub inbox_items: Counter,
    /// Per inbox consumer: items after its cursor, and the age of the oldest of them.
    pub consumer_lag_items: Family<ConsumerLabel, Gauge>,
    pub consumer_lag_seconds: Family<ConsumerLabel, Gauge>,
    /// Time to handle one `Intake.Submit` (validate, seal, durable append).
    pub submit_seconds: Histogram,
    /// From sending a batch to a peer until its receipt covers the batch.
    pub deliver_round_trip_seconds: PeerHistograms,
    /// One fsync of the store's data file (each durable commit has one).
    pub store_fsync_seconds: Histogram,
    /// One reconciliation run over its peers.
    pub reconcile_seconds: Histogram,
    /// Anomalies reconciliation found, by peer (see `interflowctl reconcile-report`).
    pub reconcile_anomalies: Family<PeerLabel, Counter>,
    /// 1 while the outbound channel to a peer is held until heads are compared.
    pub channel_held: Family<PeerLabel, Gauge>,
    /// Seconds until the node's own listener certificate expires (negative once expired).
    pub certificate_expiry_seconds: Family<CertificateLabel, Gauge>,
    /// The awareness figures, as of the last `Admin.Coverage` or the periodic refresh.
    pub coverage: Family<CoverageLabel, Gauge>,
    pub status_after_departure: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of the node `region`, with a series for each of `peers` from the start.
    pub fn new(region: RegionCode, peers: &[RegionCode]) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "interflow",
            [("region".into(), region.as_str().to_owned().into())].into_iter(),
        );
        let submitted = Counter::default();
        let intake_busy = Counter::default();
        let delivered = Family::<PeerLabel, Counter>::default();
        let received = Counter::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let pending = Family::<PeerLabel, Gauge>::default();
        let reconcile_runs = Counter::default();
        let equivocations = Counter::default();
        let records_throttled = Counter::default();
        let reload_failures = Counter::default();
        let directory_rollbacks = Counter::default();
        let directory_expired = Gauge::default();
        let directory_serial = Gauge::default();
        let store_writable = Gauge::default();
        store_writable.set(1);
        let inbox_items = Counter::default();
        let consumer_lag_items = Family::<ConsumerLabel, Gauge>::default();
        let consumer_lag_seconds = Family::<ConsumerLabel, Gauge>::default();
        let submit_seconds = latency();
        let deliver_round_trip_seconds: PeerHistograms = Family::new_with_constructor(latency);
        let store_fsync_seconds = latency();
        let reconcile_seconds = run_time();
        let reconcile_anomalies = Family::<PeerLabel, Counter>::default();
        let channel_held = Family::<PeerLabel, Gauge>::default();
        let certificate_expiry_seconds = Family::<CertificateLabel, Gauge>::default();
        let coverage = Family::<CoverageLabel, Gauge>::default();
        let status_after_departure = Gauge::default();
        registry.register(
            "coverage",
            "Awareness figures per agreement with residence notices, month of arrival and figure (counts only)",
            coverage.clone(),
        );
        registry.register(
            "status_after_departure",
            "Status records received after this node had sent the subject's departure to their origin",
            status_after_departure.clone(),
        );
        registry.register(
            "build",
            "The version of this node's build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_with_unit(
            "submit_duration",
            "Time to handle one Intake.Submit call",
            Unit::Seconds,
            submit_seconds.clone(),
        );
        registry.register_with_unit(
            "deliver_round_trip",
            "From sending a batch of records to a peer until its signed receipt covers them",
            Unit::Seconds,
            deliver_round_trip_seconds.clone(),
        );
        registry.register_with_unit(
            "store_fsync_duration",
            "One fsync of the store's data file, once per durable commit",
            Unit::Seconds,
            store_fsync_seconds.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "One reconciliation run over its peers",
            Unit::Seconds,
            reconcile_seconds.clone(),
        );
        registry.register(
            "reconcile_anomalies",
            "Anomalies found by reconciliation, by peer",
            reconcile_anomalies.clone(),
        );
        registry.register(
            "channel_held",
            "1 while the outbound channel to a peer is held until its head is compared with the peer's",
            channel_held.clone(),
        );
        registry.register_with_unit(
            "certificate_expiry",
            "Seconds until the node's own listener certificate expires",
            Unit::Seconds,
            certificate_expiry_seconds.clone(),
        );
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
            "intake_busy",
            "Submit calls refused with a retry hint because the intake queue was full ([intake])",
            intake_busy.clone(),
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
            "reload_failures",
            "Reloads of certificates, directory and agreements that kept the old state",
            reload_failures.clone(),
        );
        registry.register(
            "directory_rollbacks",
            "Directories refused because their serial was lower than the installed one",
            directory_rollbacks.clone(),
        );
        registry.register(
            "directory_expired",
            "1 while the installed federation directory is past its expiry",
            directory_expired.clone(),
        );
        registry.register(
            "directory_serial",
            "Serial of the installed federation directory",
            directory_serial.clone(),
        );
        registry.register(
            "store_writable",
            "1 while the store accepts writes, 0 while it refuses them",
            store_writable.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(crate::process::ProcessCollector));
        let m = Metrics {
            registry: Arc::new(registry),
            process: Arc::new(process),
            submitted,
            intake_busy,
            delivered,
            received,
            rejected,
            pending,
            reconcile_runs,
            equivocations,
            records_throttled,
            reload_failures,
            directory_rollbacks,
            directory_expired,
            directory_serial,
            store_writable,
            inbox_items,
            consumer_lag_items,
            consumer_lag_seconds,
            submit_seconds,
            deliver_round_trip_seconds,
            store_fsync_seconds,
            reconcile_seconds,
            reconcile_anomalies,
            channel_held,
            certificate_expiry_seconds,
            coverage,
            status_after_departure,
        };
        for p in peers {
            let peer = PeerLabel {
                peer: p.to_string(),
            };
            let _ = m.pending.get_or_create(&peer);
            let _ = m.delivered.get_or_create(&peer);
            let _ = m.deliver_round_trip_seconds.get_or_create(&peer);
            let _ = m.reconcile_anomalies.get_or_create(&peer);
            // Every outbound channel starts held (see `holds`).
            m.channel_held.get_or_create(&peer).set(1);
        }
        // The values have gaps (ranges kept for kinds of refusal added later), so look past them.
        for r in (1..=255).filter_map(|n| interflow_core::pb::RejectReason::try_from(n).ok()) {
            let _ = m.rejected.get_or_create(&reason_label(r));
        }
        m
    }

    pub fn reject(&self, reason: interflow_core::pb::RejectReason) {
        self.rejected.get_or_create(&reason_label(reason)).inc();
    }

    /// The OpenMetrics text exposition: this node's metrics, then the process's.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}

impl Metrics {
    /// Replaces the coverage gauges with `c`'s figures.
    pub fn set_coverage(&self, c: &interflow_core::pb::CoverageResponse) {
        self.coverage.clear();
        for r in &c.rows {
            let role = match interflow_core::pb::CoverageRole::try_from(r.role) {
                Ok(interflow_core::pb::CoverageRole::Home) => "home",
                _ => "residence",
            };
            let month = r
                .month
                .map(|m| format!("{:04}-{:02}", m.year, m.month))
                .unwrap_or_default();
            let figures: &[(&str, u64)] = if role == "home" {
                &[
                    ("arrivals", r.arrivals),
                    ("answered_within_7_days", r.answered_within_7_days),
                    ("answered_within_30_days", r.answered_within_30_days),
                    ("unanswered", r.unanswered),
                    ("oldest_unanswered_days", r.oldest_unanswered_days),
                ]
            } else {
                &[
                    ("residents", r.residents),
                    ("residents_with_status", r.residents_with_status),
                ]
            };
            for (figure, v) in figures {
                self.coverage
                    .get_or_create(&CoverageLabel {
                        agreement: r.agreement_id.clone(),
                        role: role.into(),
                        month: month.clone(),
                        figure: (*figure).into(),
                    })
                    .set(i64::try_from(*v).unwrap_or(i64::MAX));
            }
        }
        self.status_after_departure
            .set(i64::try_from(c.status_after_departure).unwrap_or(i64::MAX));
    }
}

fn reason_label(reason: interflow_core::pb::RejectReason) -> ReasonLabel {
    ReasonLabel {
        reason: reason.as_str_name().to_ascii_lowercase(),
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
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alerting rules can name any refusal from the start: every reason is exposed at zero,
    /// including those past a gap in the enum's values.
    #[test]
    fn every_reject_reason_is_exposed_from_the_start() {
        let region: RegionCode = "310115".parse().unwrap();
        let text = Metrics::new(region, &[]).render();
        for name in ["bad_signature", "wrong_direction", "dates_too_fine"] {
            let line = format!("reason=\"reject_reason_{name}\"}} 0");
            assert!(text.contains(&line), "missing `{line}` in:\n{text}");
        }
    }
}
