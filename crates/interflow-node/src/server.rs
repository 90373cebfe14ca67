//! Starting and stopping a node: the peer listener (`Exchange`) and the local listener
//! (`Intake`, `Admin`), each with its own CA, rustls through `serve_with_incoming`, health and
//! reflection, resource limits; the delivery workers, the reconciliation schedule and the
//! metrics endpoint. Shutdown lets in-flight requests (and their durable writes) finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_store::{Store, StoreOptions};
use interflow_tls::{ReloadableServerConfig, ServerTlsFiles, tls_incoming_with_limits};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::admin::AdminService;
use crate::config::{Config, Limits, TlsPaths};
use crate::exchange::ExchangeService;
use crate::guard::{Budgets, GuardLayer};
use crate::inbox::InboxService;
use crate::intake::IntakeService;
use crate::metrics::{CertificateLabel, Metrics};
use crate::node::{Clock, Node};
use crate::signer::NodeSigner;
use crate::store::StoreHandle;

/// How long a stop may take in all: open streams, workers, store release.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The sockets a node serves on, bound before start so tests can use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub peer: TcpListener,
    pub local: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses a config names.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |a: SocketAddr, what: &'static str| async move {
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the {what} listener on `{a}`"))
        };
        Ok(Listeners {
            peer: bind(config.peer_listen, "peer").await?,
            local: bind(config.local_listen, "local").await?,
            metrics: match config.metrics_listen {
                Some(a) => Some(bind(a, "metrics").await?),
                None => None,
            },
        })
    }
}

/// A running node.
#[derive(Debug)]
pub struct Running {
    pub node: Arc<Node>,
    pub peer_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The in-flight byte budgets of the peer and local listeners.
    pub peer_budgets: Arc<Budgets>,
    pub local_budgets: Arc<Budgets>,
    peer_tls: Arc<ReloadableServerConfig>,
    local_tls: Arc<ReloadableServerConfig>,
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

fn files(t: &TlsPaths) -> ServerTlsFiles {
    ServerTlsFiles {
        ca: t.ca.clone(),
        cert: t.cert.clone(),
        key: t.key.clone(),
        crls: t.crls.clone(),
    }
}

type Guarded = Server<tower::layer::util::Stack<GuardLayer, tower::layer::util::Identity>>;

fn server(l: &Limits, budgets: Arc<Budgets>) -> Guarded {
    Server::builder()
        .timeout(l.request_timeout())
        .concurrency_limit_per_connection(l.concurrency_per_connection)
        .load_shed(true)
        .max_concurrent_streams(l.max_concurrent_streams)
        // tonic passes "no limit" here unless told otherwise; hyper's default is 1024.
        .http2_max_local_error_reset_streams(Some(l.max_local_error_reset_streams))
        .http2_max_pending_accept_reset_streams(Some(l.max_local_error_reset_streams))
        .max_connection_age(Duration::from_secs(l.max_connection_age_secs))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Fixed windows: what a client may send before the server reads it stays bounded.
        .initial_stream_window_size(l.http2_stream_window_bytes)
        .initial_connection_window_size(l.http2_connection_window_bytes)
        .http2_adaptive_window(Some(false))
        // One span per RPC, named by method and caller identity (region or role:name).
        .trace_fn(|req| {
            let caller = req
                .extensions()
                .get::<interflow_tls::PeerConnectInfo>()
                .map(|i| i.identity.to_string())
                .unwrap_or_default();
            tracing::info_span!("rpc", method = %req.uri().path(), caller = %caller)
        })
        .layer(GuardLayer::new(budgets))
}

fn budgets(l: &Limits) -> Arc<Budgets> {
    Budgets::new(
        l.max_inflight_bytes_per_identity,
        l.max_inflight_bytes,
        l.max_message_bytes,
    )
}

/// The services of the peer listener, as health and reflection name them.
const PEER_SERVICES: &[&str] = &["interflow.v1.Exchange"];

/// The services of the local listener.
const LOCAL_SERVICES: &[&str] = &[
    "interflow.v1.Intake",
    "interflow.v1.Admin",
    "interflow.v1.Inbox",
];

/// Services every listener also serves and lists.
const COMMON_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection listing `services` and the common ones. Both protocol versions are served:
/// grpcurl speaks v1, while grpcio's client, Postman and older tools speak only v1alpha.
fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(interflow_core::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // Both versions' descriptors, so each listing names a service it can describe.
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false);
    for s in services.iter().chain(COMMON_SERVICES) {
        b = b.with_service_name(*s);
    }
    b
}

/// The health reporters of both listeners.
#[derive(Clone)]
struct Health {
    peer: tonic_health::server::HealthReporter,
    local: tonic_health::server::HealthReporter,
}

impl Health {
    /// SERVING overall and per service while the store accepts writes; NOT_SERVING while it
    /// refuses them, so a load balancer or probe stops sending work that would fail.
    async fn set(&self, writable: bool) {
        let status = if writable {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for (reporter, services) in [(&self.peer, PEER_SERVICES), (&self.local, LOCAL_SERVICES)] {
            for s in services.iter().chain(std::iter::once(&"")) {
                reporter.set_service_status(*s, status).await;
            }
        }
    }
}

/// The store's master key: the file [`crate::config::MASTER_KEY_ENV`] names, else
/// `[keys] master_key`; none, an open file, or one inside the data directory refuses start.
fn master_key(config: &Config) -> anyhow::Result<interflow_store::MasterKey> {
    let path = match std::env::var_os(crate::config::MASTER_KEY_ENV) {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => config.master_key.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "no master key configured: record bodies are encrypted at rest under a master key kept outside the data directory; create one with `(umask 077; openssl rand -hex 32 > /etc/interflow/master.key)` and set `[keys] master_key` in `{}` or the environment variable {}",
                config.path.display(),
                crate::config::MASTER_KEY_ENV
            )
        })?,
    };
    let data = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
    let key_dir = path
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_default();
    if key_dir.starts_with(&data) {
        anyhow::bail!(
            "the master key file `{}` is inside the data directory `{}`: a copy of the directory would carry its own key; keep the key elsewhere",
            path.display(),
            config.data_dir.display()
        );
    }
    Ok(interflow_store::MasterKey::load(&path)?)
}

/// Opens the store, loads the material, and starts serving on `listeners`.
pub async fn start(config: Config, listeners: Listeners, clock: Clock) -> anyhow::Result<Running> {
    let material = config
        .load_material()
        .context("loading keys, directory and agreements")?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory `{}`", data_dir.display()))?;
    // A directory installed at runtime is kept in the data directory: no rollback on restart.
    let (material, directory_source) = crate::reload::with_persisted_directory(&config, material)
        .map_err(anyhow::Error::msg)
        .context("reading the persisted directory")?;
    // The metrics exist before the store, so its fsyncs are timed from the first commit.
    let peers = material.agreements.all_peers(config.region);
    let metrics = Metrics::new(config.region, &peers);
    let fsync = metrics.store_fsync_seconds.clone();
    let options = StoreOptions {
        cache_capacity: config.store.cache_bytes,
        sync: Arc::new(move |f: &std::fs::File| {
            let t = std::time::Instant::now();
            let r = f.sync_all();
            fsync.observe(t.elapsed().as_secs_f64());
            r
        }),
        ..StoreOptions::new(master_key(&config)?)
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, options))
        .await
        .context("opening the store")??;
    if let Some(why) = store.write_refusal() {
        tracing::error!(reason = %why, "store opened read-only; writes are refused");
    }
    let peer_tls = Arc::new(
        ReloadableServerConfig::load(files(&config.peer_tls)).context("peer listener TLS")?,
    );
    let local_tls = Arc::new(
        ReloadableServerConfig::load(files(&config.local_tls)).context("local listener TLS")?,
    );
    let client_tls = interflow_tls::client_config_with_crls(
        &config.peer_tls.ca,
        &config.peer_tls.cert,
        &config.peer_tls.key,
        &config.peer_tls.crls,
    )
    .context("peer client TLS")?;
    let limits = config.limits.clone();
    let signer = NodeSigner::find(
        config.region,
        material.signing_key.clone(),
        &material.directory,
        clock(),
    )
    .context("finding this node's key id in the directory")?;
    let node = Node::new(
        config,
        material,
        directory_source,
        signer,
        StoreHandle::new(store),
        clock,
        client_tls,
        metrics,
    );
    // Idempotency keys an earlier build stored in the clear become digests, once.
    let n = node.clone();
    let digested = node
        .store
        .run(move |s| {
            s.digest_legacy_intake_keys(&|k| {
                interflow_core::idempotency::IdempotencyKey::parse(k)
                    .ok()
                    .map(|key| key.digest(n.signer().digest_key()))
            })
        })
        .await;
    match digested {
        Ok(n) if n > 0 => tracing::info!(
            keys = n,
            "stored idempotency keys replaced by their digests"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot digest stored idempotency keys; retried at the next start")
        }
    }
    // Records received before the inbox existed get their positions once; then the head.
    let region = node.region;
    let indexed = node.store.run(move |s| s.index_inbox(region)).await;
    match indexed {
        Ok(n) if n > 0 => tracing::info!(
            records = n,
            "earlier inbound records indexed into the inbox"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot index earlier records into the inbox; retried at the next start")
        }
    }
    // Pending per peer from the store, not 0, until a delivery worker (if any) takes over.
    for peer in node.current_peers() {
        let channel = ChannelId::new(node.region, peer);
        if let Ok(st) = node.store.run(move |s| s.channel_state(channel)).await {
            node.metrics
                .pending
                .get_or_create(&crate::metrics::PeerLabel {
                    peer: peer.to_string(),
                })
                .set(i64::try_from(st.head_seq.saturating_sub(st.acked_seq)).unwrap_or(i64::MAX));
        }
    }
    match node.store.run(|s| s.inbox_head()).await {
        Ok(h) => {
            node.inbox_head.send_replace(h);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the inbox head"),
    }

    let max = limits.max_message_bytes;
    let exchange = pb::exchange_server::ExchangeServer::new(ExchangeService { node: node.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let intake = pb::intake_server::IntakeServer::new(IntakeService::new(node.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = pb::admin_server::AdminServer::new(AdminService { node: node.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let inbox = pb::inbox_server::InboxServer::new(InboxService { node: node.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    // Each listener reports and lists only what it serves: a peer asking the peer port about
    // `Admin` is told it is unknown, not that it is serving.
    let (peer_health, peer_health_service) = tonic_health::server::health_reporter();
    let (local_health, local_health_service) = tonic_health::server::health_reporter();
    let health = Health {
        peer: peer_health,
        local: local_health,
    };
    health.set(node.store.write_refusal().is_none()).await;

    let shutdown = node.stopping.clone();
    let peer_addr = listeners.peer.local_addr()?;
    let local_addr = listeners.local.local_addr()?;
    let (peer_budgets, local_budgets) = (budgets(&limits), budgets(&limits));
    let mut servers = Vec::new();
    {
        let incoming =
            tls_incoming_with_limits(listeners.peer, peer_tls.clone(), limits.incoming());
        let router = server(&limits, peer_budgets.clone())
            .add_service(peer_health_service)
            .add_service(reflection(PEER_SERVICES).build_v1()?)
            .add_service(reflection(PEER_SERVICES).build_v1alpha()?)
            .add_service(exchange);
        let token = shutdown.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, token.cancelled())
                .await
            {
                tracing::error!(error = %e, "peer listener stopped");
            }
        }));
    }
    {
        let incoming =
            tls_incoming_with_limits(listeners.local, local_tls.clone(), limits.incoming());
        let router = server(&limits, local_budgets.clone())
            .add_service(local_health_service)
            .add_service(reflection(LOCAL_SERVICES).build_v1()?)
            .add_service(reflection(LOCAL_SERVICES).build_v1alpha()?)
            .add_service(intake)
            .add_service(admin)
            .add_service(inbox);
        let token = shutdown.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, token.cancelled())
                .await
            {
                tracing::error!(error = %e, "local listener stopped");
            }
        }));
    }
    let metrics_addr = match listeners.metrics {
        Some(l) => {
            let addr = l.local_addr()?;
            let (m, token) = (node.metrics.clone(), shutdown.clone());
            servers.push(tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(l, m, token).await {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            }));
            Some(addr)
        }
        None => None,
    };
    let workers_token = shutdown.child_token();
    let mut workers = Vec::new();
    // Agreements installed and terminated at runtime apply on top of the configured ones.
    let configured = crate::federation::Federation::clone(&node.fed());
    let full = node
        .with_kept_state(configured)
        .await
        .context("applying the installed agreements and kept terminations")?;
    node.replace_federation(full);
    // Delivery workers follow the federation snapshot: one per current peer from now on.
    node.follow_federation();
    node.set_server_tls(vec![
        ("peer", peer_tls.clone()),
        ("local", local_tls.clone()),
    ]);
    node.metrics
        .directory_serial
        .set(i64::try_from(node.fed().directory.serial).unwrap_or(i64::MAX));
    workers.push(tokio::spawn(watch_store(
        node.clone(),
        health,
        workers_token.clone(),
    )));
    workers.push(tokio::spawn(enforce_retention(
        node.clone(),
        workers_token.clone(),
    )));
    workers.push(tokio::spawn(summarize_rejections(
        node.clone(),
        workers_token.clone(),
    )));
    workers.push(tokio::spawn(refresh_coverage(
        node.clone(),
        workers_token.clone(),
    )));
    if let Some(interval) = node.config.watch_interval {
        workers.push(tokio::spawn(crate::reload::watch_files(
            node.clone(),
            interval,
            workers_token.clone(),
        )));
    }
    workers.push(tokio::spawn(crate::reconcile::schedule(
        node.clone(),
        workers_token,
    )));
    tracing::info!(region = %node.region, %peer_addr, %local_addr, "node started");
    Ok(Running {
        node,
        peer_addr,
        local_addr,
        metrics_addr,
        peer_budgets,
        local_budgets,
        peer_tls,
        local_tls,
        shutdown,
        servers,
        workers,
    })
}

/// How often a store that refuses writes is checked, and reopened once the disk has room.
const STORE_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// How often record bodies past their agreement's retention period are erased.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Erases record bodies whose agreement retention has passed (see [`Node::erase_expired`]):
/// at start, then every hour.
async fn enforce_retention(node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        let result = node.erase_expired(node.now()).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "retention erasure failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How often the coverage gauges on `/metrics` are recomputed.
const COVERAGE_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps the coverage gauges fresh: at start, then every minute (each `Admin.Coverage` also
/// refreshes them).
async fn refresh_coverage(node: Arc<Node>, shutdown: CancellationToken) {
    loop {
        if let Err(e) = node.coverage().await {
            tracing::warn!(error = %e, "computing coverage failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(COVERAGE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Logs the summaries of rejected records, one line per peer per interval.
async fn summarize_rejections(node: Arc<Node>, shutdown: CancellationToken) {
    let interval = node.reject_log.interval();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => {
                node.reject_log.flush();
                return;
            }
        }
        node.reject_log.flush();
    }
}

/// Keeps `store_writable` and the health reports true to the store, and reopens it once a
/// full disk has room again.
async fn watch_store(node: Arc<Node>, health: Health, shutdown: CancellationToken) {
    loop {
        if node.store.write_refusal().is_some() {
            match node.store.run(|s| s.recover()).await {
                Ok(true) => tracing::info!("writes resumed"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "reopening the store failed"),
            }
        }
        let writable = node.store.write_refusal().is_none();
        node.metrics.store_writable.set(i64::from(writable));
        health.set(writable).await;
        for peer in node.current_peers() {
            let held = node.holds.is_held(ChannelId::new(node.region, peer));
            node.metrics
                .channel_held
                .get_or_create(&crate::metrics::PeerLabel {
                    peer: peer.to_string(),
                })
                .set(i64::from(held));
        }
        refresh_certificate_expiry(&node).await;
        let expired = node.fed().directory.expired_at(node.now());
        node.metrics.directory_expired.set(i64::from(expired));
        // Inbox consumer lag gauges stay fresh for alerting even when nobody asks.
        if let Err(e) = crate::inbox::consumers(&node).await {
            tracing::debug!(error = %e, "cannot refresh inbox consumer lag");
        }
        tokio::select! {
            _ = tokio::time::sleep(STORE_WATCH_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Sets the seconds until each listener's own certificate expires, read from its file so a
/// reload (SIGHUP) with a renewed certificate shows at once.
async fn refresh_certificate_expiry(node: &Node) {
    let now_secs = node.now() / 1000;
    for (listener, path) in [
        ("peer", node.config.peer_tls.cert.clone()),
        ("local", node.config.local_tls.cert.clone()),
    ] {
        let not_after = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
            let certs = interflow_tls::load_certs(&path)?;
            let leaf = certs.first().context("no certificate in the file")?;
            Ok(interflow_tls::cert_not_after(leaf)?)
        })
        .await;
        match not_after {
            Ok(Ok(t)) => {
                node.metrics
                    .certificate_expiry_seconds
                    .get_or_create(&CertificateLabel {
                        listener: listener.into(),
                    })
                    .set(t - now_secs);
            }
            Ok(Err(e)) => {
                tracing::debug!(listener, error = %format!("{e:#}"), "cannot read the certificate's expiry")
            }
            Err(e) => tracing::debug!(listener, error = %e, "cannot read the certificate's expiry"),
        }
    }
}

impl Running {
    /// Re-reads certificates, keys and CRLs of both listeners; a bad file keeps the old ones.
    pub fn reload_tls(&self) -> anyhow::Result<()> {
        self.peer_tls
            .reload()
            .context("reloading peer listener TLS")?;
        self.local_tls
            .reload()
            .context("reloading local listener TLS")?;
        tracing::info!("TLS material reloaded");
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops the workers, and
    /// closes the store.
    pub async fn shutdown(self) {
        // One deadline for the whole stop, so it fits a supervisor's grace period.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        self.shutdown.cancel();
        for s in self.servers {
            let abort = s.abort_handle();
            if tokio::time::timeout_at(deadline, s).await.is_err() {
                tracing::warn!("open streams did not finish in time; closing them");
                abort.abort();
            }
        }
        for w in self
            .workers
            .into_iter()
            .chain(self.node.take_delivery_workers())
        {
            let _ = w.await;
        }
        // Blocking store calls hold the node a moment longer; the store (and its file lock)
        // closes only when the last holder is done.
        let region = self.node.region;
        while Arc::strong_count(&self.node) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.node) > 1 {
            tracing::warn!(%region, "the node is still referenced after shutdown; the store stays open until it is released");
        }
        // A store call already on the blocking pool holds the store, not the node: wait for
        // it too, so the data directory's lock is free when this returns.
        let store = self.node.store.clone();
        drop(self.node);
        while !store.is_last_holder() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !store.is_last_holder() {
            tracing::warn!(%region, "a store call is still running after shutdown; the store closes when it ends");
        }
        drop(store);
        tracing::info!(%region, "node stopped");
    }
}
