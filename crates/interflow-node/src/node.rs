//! The shared state of a running node: its identity and keys, the current federation snapshot
//! (directory, agreements, pseudonym keys), the store handle, the clock, the held channels, and
//! the delivery workers with their wake-ups, which follow the snapshot.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use interflow_core::RegionCode;
use interflow_core::payload::ValidationRules;
use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_core::time::UnixMillis;
use interflow_tls::{PeerIdentity, Role};
use std::sync::Mutex;
use std::time::Duration;

use interflow_core::pb::exchange_client::ExchangeClient;
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::config::{Config, Material};
use crate::delivery::DeliveryError;
use crate::error::NodeError;
use crate::federation::Federation;
use crate::holds::Holds;
use crate::metrics::Metrics;
use crate::rejects::RejectLog;
use crate::signer::NodeSigner;
use crate::store::StoreHandle;

/// Where the node reads the time. Tests inject a fixed or stepped clock.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// Everything request handlers and workers share.
pub struct Node {
    pub region: RegionCode,
    pub config: Config,
    pub store: StoreHandle,
    /// The directory, agreements and pseudonym keys; swapped whole at runtime.
    fed: ArcSwap<Federation>,
    /// The record-signing key and its key id; replaced by a reload that names a new key file.
    signer: ArcSwap<NodeSigner>,
    pub clock: Clock,
    pub metrics: Metrics,
    /// One entry per current peer: its delivery worker and the wake-up for new records.
    peers: Mutex<HashMap<RegionCode, PeerWorker>>,
    /// Client TLS config for dialling peers, and one lazily connected channel per peer.
    peer_tls: Arc<rustls::ClientConfig>,
    peer_channels: Mutex<HashMap<RegionCode, Channel>>,
    /// Outbound channels on which no new record may be issued until this node compared its
    /// head with the peer's signed view (fork-safe restore). All are held at start.
    pub holds: Holds,
    /// Cancelled when the node stops: long-lived streams (`Inbox.Follow`) end with it.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The newest inbox position; `Inbox.Follow` streams wait on it.
    pub inbox_head: tokio::sync::watch::Sender<u64>,
    /// Held by the reconciliation run in progress: at most one at a time.
    pub reconcile_lock: tokio::sync::Mutex<()>,
    rate: DefaultKeyedRateLimiter<String>,
    /// Per-peer record rate on `Deliver`: more records wait, they are not refused.
    record_rate: DefaultKeyedRateLimiter<RegionCode>,
    /// Rejected inbound records, logged per peer in summaries.
    pub reject_log: RejectLog,
    /// The listeners' TLS material, set once serving, so a reload re-reads it.
    server_tls:
        std::sync::OnceLock<Vec<(&'static str, Arc<interflow_tls::ReloadableServerConfig>)>>,
    last_reload: Mutex<Option<crate::reload::LastReload>>,
    /// The installed directory as signed, served to peers, and where it came from.
    directory_source: Mutex<(pb::SignedDirectory, crate::reload::DirectorySource)>,
}

/// A peer's delivery worker (if delivery is on) and what wakes it.
struct PeerWorker {
    wake: Arc<Notify>,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Node {
    // One call site (server start), each argument a distinct part of the node.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        material: Material,
        source: crate::reload::DirectorySource,
        signer: NodeSigner,
        store: StoreHandle,
        clock: Clock,
        peer_tls: Arc<rustls::ClientConfig>,
        metrics: Metrics,
    ) -> Arc<Node> {
        let region = config.region;
        let signed_directory = material.signed_directory;
        let fed = Federation {
            directory: material.directory,
            agreements: material.agreements,
            pseudonym_keys: material.pseudonym_keys,
        };
        let peers = fed
            .peers(region)
            .into_iter()
            .map(|p| {
                let worker = PeerWorker {
                    wake: Arc::new(Notify::new()),
                    stop: tokio_util::sync::CancellationToken::new(),
                    task: None,
                };
                (p, worker)
            })
            .collect();
        let holds = Holds::all(
            fed.peers(region)
                .into_iter()
                .map(|p| ChannelId::new(region, p)),
            clock(),
        );
        let per_sec =
            NonZeroU32::new(config.limits.peer_requests_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.limits.peer_burst).unwrap_or(NonZeroU32::MIN);
        let records_per_sec =
            NonZeroU32::new(config.limits.peer_records_per_sec).unwrap_or(NonZeroU32::MIN);
        let records_burst =
            NonZeroU32::new(config.limits.peer_records_burst).unwrap_or(NonZeroU32::MIN);
        let reject_log = RejectLog::new(Duration::from_secs(
            config.limits.reject_log_interval_secs.max(1),
        ));
        Arc::new(Node {
            region,
            store,
            fed: ArcSwap::from_pointee(fed),
            signer: ArcSwap::from_pointee(signer),
            clock,
            metrics,
            peers: Mutex::new(peers),
            peer_tls,
            peer_channels: Mutex::new(HashMap::new()),
            holds,
            inbox_head: tokio::sync::watch::Sender::new(0),
            stopping: tokio_util::sync::CancellationToken::new(),
            reconcile_lock: tokio::sync::Mutex::new(()),
            rate: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            record_rate: RateLimiter::keyed(
                Quota::per_second(records_per_sec).allow_burst(records_burst),
            ),
            reject_log,
            server_tls: std::sync::OnceLock::new(),
            last_reload: Mutex::new(None),
            directory_source: Mutex::new((signed_directory, source)),
            config,
        })
    }

    pub fn now(&self) -> UnixMillis {
        (self.clock)()
    }

    /// Erases record bodies past their retention at `now` and answers how many. An agreement
    /// in force keeps its own retention; one installed at runtime and no longer in force (or
    /// removed) the retention it was installed with; one known nowhere any more
    /// `[retention] unknown_agreement_days` — records are never kept forever.
    pub async fn erase_expired(&self, now: UnixMillis) -> Result<u64, NodeError> {
        let fed = self.fed();
        let unknown = self.config.retention.unknown_agreement_days;
        self.store
            .run(move |s| {
                let installed = s.installed_retention_days()?;
                s.erase_expired(now, &|id| {
                    let days = fed.agreements.get(id).map(|a| a.retention_days);
                    Some(days.or(installed.get(id).copied()).unwrap_or(unknown))
                })
            })
            .await
    }

    pub fn rules(&self) -> ValidationRules {
        ValidationRules {
            now_ms: self.now(),
            max_future_skew_ms: i64::try_from(self.config.limits.max_future_skew_secs)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
        }
    }

    /// A consistent snapshot; cheap (arc-swap). Never hold it across a long await.
    pub fn fed(&self) -> Arc<Federation> {
        self.fed.load_full()
    }

    /// The key this node signs with now, and its key id.
    pub fn signer(&self) -> Arc<NodeSigner> {
        self.signer.load_full()
    }

    /// Switches the signing key (a reload that names a new key file).
    pub fn set_signer(&self, signer: NodeSigner) {
        self.signer.store(Arc::new(signer));
    }

    /// Installs a new snapshot atomically: starts delivery workers, holds and wake-ups for new
    /// peers, stops workers and closes connections of peers no longer covered / removed.
    pub fn replace_federation(self: &Arc<Self>, new: Federation) {
        self.metrics
            .directory_serial
            .set(i64::try_from(new.directory.serial).unwrap_or(i64::MAX));
        self.fed.store(Arc::new(new));
        self.follow_federation();
    }

    /// Names the listeners' TLS material a reload re-reads (once, at start).
    pub fn set_server_tls(
        &self,
        tls: Vec<(&'static str, Arc<interflow_tls::ReloadableServerConfig>)>,
    ) {
        let _ = self.server_tls.set(tls);
    }

    pub(crate) fn server_tls(
        &self,
    ) -> &[(&'static str, Arc<interflow_tls::ReloadableServerConfig>)] {
        self.server_tls.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// The installed directory as the operator signed it, and where it came from.
    pub fn directory_source(&self) -> (pb::SignedDirectory, crate::reload::DirectorySource) {
        self.directory_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_directory_source(
        &self,
        signed: pb::SignedDirectory,
        source: crate::reload::DirectorySource,
    ) {
        *self
            .directory_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (signed, source);
    }

    /// The outcome of the latest reload since start, if any.
    pub fn last_reload(&self) -> Option<crate::reload::LastReload> {
        self.last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_last_reload(&self, r: crate::reload::LastReload) {
        *self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
    }

    /// Brings the per-peer workers, wake-ups and holds in line with the current snapshot.
    /// Called at start (once serving) and after every replacement.
    pub fn follow_federation(self: &Arc<Self>) {
        let wanted = self.fed().peers(self.region);
        let mut peers = self.peers_map();
        let gone: Vec<RegionCode> = peers
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(w) = peers.remove(&p) {
                w.stop.cancel();
            }
            self.holds.remove(ChannelId::new(self.region, p));
            self.drop_peer_channel(p);
            tracing::info!(peer = %p, "peer no longer in the federation; its delivery worker stopped");
        }
        for p in wanted {
            let is_new = !peers.contains_key(&p);
            let w = peers.entry(p).or_insert_with(|| PeerWorker {
                wake: Arc::new(Notify::new()),
                stop: tokio_util::sync::CancellationToken::new(),
                task: None,
            });
            if is_new {
                // A new partner's channel is held until its head was compared, like any other.
                self.holds.hold(ChannelId::new(self.region, p), self.now());
                tracing::info!(peer = %p, "new peer in the federation");
            }
            if w.task.is_none() && self.config.delivery.enabled && !self.stopping.is_cancelled() {
                // A child of `stopping`, so the node's stop ends every worker.
                w.stop = self.stopping.child_token();
                w.task = Some(tokio::spawn(crate::delivery::run(
                    self.clone(),
                    p,
                    w.wake.clone(),
                    w.stop.clone(),
                )));
            }
        }
    }

    /// The current peers (those with a wake-up), sorted.
    pub fn current_peers(&self) -> Vec<RegionCode> {
        let mut v: Vec<_> = self.peers_map().keys().copied().collect();
        v.sort();
        v
    }

    /// The running delivery workers, taken for the node's stop to wait on.
    pub fn take_delivery_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.peers_map()
            .values_mut()
            .filter_map(|w| w.task.take())
            .collect()
    }

    fn peers_map(&self) -> std::sync::MutexGuard<'_, HashMap<RegionCode, PeerWorker>> {
        // Every change to the map is one call, so it stays consistent after a panic.
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the client channel to `peer`, closing its connection once no call uses it.
    fn drop_peer_channel(&self, peer: RegionCode) {
        self.peer_channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&peer);
    }

    /// Per-identity rate limit; excess is answered RESOURCE_EXHAUSTED.
    fn admit(&self, who: &str) -> Result<(), NodeError> {
        self.rate
            .check_key(&who.to_owned())
            .map_err(|_| NodeError::RateLimited)
    }

    /// Waits until `peer` may deliver `n` more records under its record rate. Returns early
    /// when the node stops.
    pub async fn throttle_records(&self, peer: RegionCode, n: usize) {
        use governor::clock::Clock as _;
        let burst = self.config.limits.peer_records_burst.max(1);
        let mut left = u32::try_from(n).unwrap_or(u32::MAX);
        let clock = governor::clock::DefaultClock::default();
        while let Some(take) = NonZeroU32::new(left.min(burst)) {
            match self.record_rate.check_key_n(&peer, take) {
                Ok(Ok(())) | Err(_) => left -= take.get(),
                Ok(Err(not_until)) => {
                    self.metrics.records_throttled.inc();
                    tokio::select! {
                        () = tokio::time::sleep(not_until.wait_time_from(clock.now())) => {}
                        () = self.stopping.cancelled() => return,
                    }
                }
            }
        }
    }

    /// The calling peer's region, from its certificate; it must be a directory member.
    pub fn peer_of<T>(&self, req: &tonic::Request<T>) -> Result<RegionCode, NodeError> {
        match interflow_tls::peer_identity(req) {
            Some(PeerIdentity::Region(r)) => {
                if self.fed().directory.member(r).is_none() {
                    return Err(NodeError::PermissionDenied(format!(
                        "region `{r}` is not a member of the federation directory"
                    )));
                }
                self.admit(r.as_str())?;
                Ok(r)
            }
            Some(_) => Err(NodeError::PermissionDenied(
                "a role certificate cannot call the peer service".into(),
            )),
            None => Err(NodeError::Unauthenticated),
        }
    }

    /// The local caller's name, if its certificate carries one of `roles`.
    pub fn local_caller_in<T>(
        &self,
        req: &tonic::Request<T>,
        roles: &[Role],
    ) -> Result<String, NodeError> {
        match interflow_tls::peer_identity(req) {
            Some(PeerIdentity::Local { role, .. }) if roles.contains(&role) => {
                self.local_caller(req, role)
            }
            Some(PeerIdentity::Local { role, .. }) => Err(NodeError::PermissionDenied(format!(
                "{} certificate cannot call this service; use one of: {}",
                with_article(role),
                roles
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Some(_) => Err(NodeError::PermissionDenied(
                "a peer certificate cannot call local services".into(),
            )),
            None => Err(NodeError::Unauthenticated),
        }
    }

    /// The local caller's name, if its certificate carries `role`.
    pub fn local_caller<T>(
        &self,
        req: &tonic::Request<T>,
        role: Role,
    ) -> Result<String, NodeError> {
        match interflow_tls::peer_identity(req) {
            Some(PeerIdentity::Local { role: r, name }) if r == role => {
                let actor = format!("{}:{}", role.as_str(), name);
                self.admit(&actor)?;
                Ok(actor)
            }
            Some(PeerIdentity::Local { role: r, .. }) => Err(NodeError::PermissionDenied(format!(
                "{} certificate cannot call this service; use {} certificate",
                with_article(r),
                with_article(role)
            ))),
            Some(_) => Err(NodeError::PermissionDenied(
                "a peer certificate cannot call local services".into(),
            )),
            None => Err(NodeError::Unauthenticated),
        }
    }

    /// A client of `peer`'s `Exchange` service over mutual TLS, connecting on first use.
    pub fn exchange_client(
        &self,
        peer: RegionCode,
    ) -> Result<ExchangeClient<Channel>, DeliveryError> {
        // A poisoned cache is still a valid map of lazily connecting channels.
        let mut channels = self
            .peer_channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let channel = match channels.get(&peer) {
            Some(c) => c.clone(),
            None => {
                let member = self
                    .fed()
                    .directory
                    .member(peer)
                    .cloned()
                    .ok_or(DeliveryError::NotMember(peer))?;
                let name = interflow_tls::peer_server_name(peer);
                let c = interflow_tls::connect_lazy(
                    &member.endpoint,
                    &name,
                    self.peer_tls.clone(),
                    Duration::from_secs(5),
                )
                .map_err(|e| DeliveryError::Connect {
                    endpoint: member.endpoint.clone(),
                    reason: e.to_string(),
                })?;
                channels.insert(peer, c.clone());
                c
            }
        };
        let max = self.config.limits.max_message_bytes;
        Ok(ExchangeClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max))
    }

    /// Wakes the delivery worker of `peer`.
    pub fn wake_delivery(&self, peer: RegionCode) {
        if let Some(w) = self.peers_map().get(&peer) {
            w.wake.notify_one();
        }
    }

    /// Stores verified records received from a peer (delivered or fetched), giving those
    /// destined to this node their inbox positions, and wakes inbox followers.
    pub async fn receive(
        &self,
        recs: Vec<interflow_core::record::VerifiedRecord>,
    ) -> Result<
        (
            Vec<interflow_core::record::VerifiedRecord>,
            Vec<Result<interflow_store::ApplyOutcome, interflow_store::ApplyError>>,
        ),
        NodeError,
    > {
        let arrival = interflow_store::Arrival {
            me: self.region,
            at_ms: self.now(),
        };
        let before = *self.inbox_head.borrow();
        let (recs, outcomes, head) = self
            .store
            .run(move |s| {
                let o = s.receive(&recs, arrival)?;
                Ok((recs, o, s.inbox_head()?))
            })
            .await?;
        if head > before {
            self.metrics.inbox_items.inc_by(head - before);
            self.inbox_head.send_replace(head);
        }
        Ok((recs, outcomes))
    }

    /// Runs CPU-heavy work (verifying a batch of signatures) off the async threads.
    pub async fn cpu<T, F>(self: &Arc<Self>, f: F) -> Result<T, NodeError>
    where
        F: FnOnce(&Node) -> T + Send + 'static,
        T: Send + 'static,
    {
        let node = self.clone();
        Ok(tokio::task::spawn_blocking(move || f(&node)).await?)
    }
}

/// "an `admin`", "an `intake`": the role in backticks with its article.
fn with_article(role: Role) -> String {
    let name = role.as_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} `{name}`")
}
