//! Test harness: `TestCluster::start(n)` runs n real nodes in this process on loopback
//! (ephemeral ports), with real mutual TLS from a generated dev PKI and real sled directories
//! in a temp dir. Nodes can be stopped and restarted on the same ports and data.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use interflow_core::payload::{Kind, Payload};
use interflow_core::pb::admin_client::AdminClient;
use interflow_core::pb::exchange_client::ExchangeClient;
use interflow_core::pb::inbox_client::InboxClient;
use interflow_core::pb::intake_client::IntakeClient;
use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::{ChannelId, NewRecord, RecordId, VerifiedRecord};
use interflow_core::{NationalId, RegionCode, pb};
use interflow_node::dev::{DevFederation, DevOptions, generate_with_options};
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_node::{Config, Listeners, Node, Running, start, system_clock};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug)]
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub fed: DevFederation,
    nodes: Vec<Option<Running>>,
    /// With `start_behind_proxies`: the proxy in front of each node's peer listener.
    pub proxies: Vec<Proxy>,
}

async fn bind(addr: SocketAddr) -> TcpListener {
    // A port just released by a stopped node may take a moment to be free again.
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr}: {last:?}");
}

impl TestCluster {
    /// Starts `n` nodes with agreements between neighbours, and waits until every node has
    /// compared its outbound heads with its peers (so intake is open).
    pub async fn start(n: usize) -> TestCluster {
        Self::start_edited(n, |_, _| {}).await
    }

    /// Like `start`, with each node's config text edited first (`edit(index, text)`).
    pub async fn start_edited(n: usize, edit: impl Fn(usize, &mut String)) -> TestCluster {
        Self::start_prepared(n, |i, _, text| edit(i, text)).await
    }

    /// Like `start_edited`, and `prepare` also gets each node's directory, to write files its
    /// edited config names before the node starts.
    pub async fn start_prepared(
        n: usize,
        prepare: impl Fn(usize, &std::path::Path, &mut String),
    ) -> TestCluster {
        Self::start_inner(n, n, prepare, false, DevOptions::default()).await
    }

    /// Like `start`, with residence notices and status follows residence in every agreement:
    /// odd-indexed nodes are the home bureaus of their neighbours (see [`DevOptions`]).
    pub async fn start_residence(n: usize) -> TestCluster {
        Self::start_inner(
            n,
            n,
            |_, _, _| {},
            false,
            DevOptions {
                residence: true,
                ..DevOptions::default()
            },
        )
        .await
    }

    /// Like `start`, with every node's published endpoint a [`Proxy`] in front of its peer
    /// listener, so a test can cut and heal the links to it: `proxies[i]` fronts node `i`.
    pub async fn start_behind_proxies(n: usize) -> TestCluster {
        Self::start_inner(n, n, |_, _, _| {}, true, DevOptions::default()).await
    }

    /// Generates `n` nodes and starts only the first `running` (the others with `restart`).
    async fn start_inner(
        n: usize,
        running: usize,
        prepare: impl Fn(usize, &std::path::Path, &mut String),
        behind_proxies: bool,
        options: DevOptions,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..n {
            let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let local = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.push((
                peer.local_addr().expect("addr"),
                local.local_addr().expect("addr"),
            ));
            listeners.push((peer, local));
        }
        let now = system_clock()();
        let mut proxies = Vec::new();
        if behind_proxies {
            for (peer, _) in &addrs {
                let l = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
                proxies.push(Proxy::start(l, *peer));
            }
        }
        let endpoints: Vec<SocketAddr> = if behind_proxies {
            proxies.iter().map(|p| p.addr).collect()
        } else {
            addrs.iter().map(|(peer, _)| *peer).collect()
        };
        let fed = generate_with_options(dir.path(), &addrs, &endpoints, now, options)
            .expect("generate dev federation");
        for (i, node) in fed.nodes.iter().enumerate() {
            let mut text = std::fs::read_to_string(&node.config).expect("read config");
            let node_dir = node.config.parent().expect("node dir");
            // Tests reload explicitly; a test that wants the file watch sets its interval.
            text = text.replace("watch_interval_ms = 2000", "watch_interval_ms = 0");
            prepare(i, node_dir, &mut text);
            std::fs::write(&node.config, text).expect("write config");
        }
        let mut cluster = TestCluster {
            dir,
            fed,
            nodes: Vec::new(),
            proxies,
        };
        for (i, (peer, local)) in listeners.into_iter().enumerate() {
            if i >= running {
                cluster.nodes.push(None);
                continue;
            }
            let r = cluster.start_with(i, peer, local).await;
            cluster.nodes.push(Some(r));
        }
        for i in 0..running {
            cluster.wait_released(i).await;
        }
        cluster
    }

    async fn start_with(&self, i: usize, peer: TcpListener, local: TcpListener) -> Running {
        let config = Config::load(&self.fed.nodes[i].config).expect("config");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        start(
            config,
            Listeners {
                peer,
                local,
                metrics: Some(metrics),
            },
            system_clock(),
        )
        .await
        .expect("start node")
    }

    /// Waits until node `i` may issue records to every peer.
    pub async fn wait_released(&self, i: usize) {
        let node = self.node(i).clone();
        eventually(
            Duration::from_secs(20),
            "outbound channels released",
            || {
                let node = node.clone();
                async move { (!node.holds.any()).then_some(()) }
            },
        )
        .await;
    }

    /// The running node `i`, for operations such as `reload_tls`.
    pub fn running(&self, i: usize) -> &Running {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Where node `i` serves `GET /metrics`.
    pub fn metrics_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i]
            .as_ref()
            .expect("node is running")
            .metrics_addr
            .expect("metrics listener")
    }

    /// The local listener's channel with the admin certificate, for other services on it.
    pub async fn admin_channel(&self, i: usize) -> Channel {
        let n = &self.fed.nodes[i];
        self.local_channel(i, &n.admin_cert, &n.admin_key).await
    }

    pub fn region(&self, i: usize) -> RegionCode {
        self.fed.nodes[i].region.parse().expect("region")
    }

    pub fn node(&self, i: usize) -> &Arc<Node> {
        &self.nodes[i].as_ref().expect("node is running").node
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.fed.nodes[i].region).join("data")
    }

    /// Stops node `i` (graceful).
    pub async fn stop(&mut self, i: usize) {
        if let Some(r) = self.nodes[i].take() {
            r.shutdown().await;
        }
    }

    /// Starts node `i` again on its ports and data.
    pub async fn restart(&mut self, i: usize) {
        let n = &self.fed.nodes[i];
        let (peer, local) = (bind(n.peer_addr).await, bind(n.local_addr).await);
        let r = self.start_with(i, peer, local).await;
        self.nodes[i] = Some(r);
    }

    /// Tries to start stopped node `i` again on its ports and data: the start error, if any.
    pub async fn try_restart(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.fed.nodes[i];
        let (peer, local) = (bind(n.peer_addr).await, bind(n.local_addr).await);
        let config = Config::load(&n.config)?;
        let metrics = TcpListener::bind("127.0.0.1:0").await?;
        let r = start(
            config,
            Listeners {
                peer,
                local,
                metrics: Some(metrics),
            },
            system_clock(),
        )
        .await?;
        self.nodes[i] = Some(r);
        Ok(())
    }

    /// Node `i`'s config file (written by `interflow dev`).
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.fed.nodes[i].config.clone()
    }

    /// Node `i`'s retention step, run as if `days` had passed: returns how many records (and
    /// evidence copies) it erased.
    pub async fn erase_as_if_after(&self, i: usize, days: i64) -> u64 {
        let node = self.node(i).clone();
        node.erase_expired(node.now() + days * 86_400_000)
            .await
            .expect("retention step")
    }

    /// The local listener of node `i`, presenting the given client certificate.
    pub async fn local_channel(
        &self,
        i: usize,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Channel {
        let n = &self.fed.nodes[i];
        let cfg = interflow_tls::client_config(&n.local_ca, cert, key).expect("client tls");
        interflow_tls::connect(
            &n.local_addr.to_string(),
            &interflow_tls::local_server_name(self.region(i)),
            cfg,
            Duration::from_secs(5),
        )
        .await
        .expect("connect to local listener")
    }

    pub async fn intake(&self, i: usize) -> IntakeClient<Channel> {
        let n = &self.fed.nodes[i];
        IntakeClient::new(self.local_channel(i, &n.intake_cert, &n.intake_key).await)
    }

    pub async fn inbox(&self, i: usize) -> InboxClient<Channel> {
        let n = &self.fed.nodes[i];
        InboxClient::new(self.local_channel(i, &n.inbox_cert, &n.inbox_key).await)
    }

    pub async fn admin(&self, i: usize) -> AdminClient<Channel> {
        let n = &self.fed.nodes[i];
        AdminClient::new(self.local_channel(i, &n.admin_cert, &n.admin_key).await)
    }

    /// An `Exchange` client to node `i` presenting the given certificate.
    pub async fn exchange_as(
        &self,
        i: usize,
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<ExchangeClient<Channel>, interflow_tls::TlsError> {
        Ok(ExchangeClient::new(
            self.peer_channel_as(i, ca, cert, key).await?,
        ))
    }

    /// The peer listener of node `i`, presenting the given certificate.
    pub async fn peer_channel_as(
        &self,
        i: usize,
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Channel, interflow_tls::TlsError> {
        let n = &self.fed.nodes[i];
        let cfg = interflow_tls::client_config(ca, cert, key)?;
        interflow_tls::connect(
            &n.peer_addr.to_string(),
            &interflow_tls::peer_server_name(self.region(i)),
            cfg,
            Duration::from_secs(5),
        )
        .await
    }

    /// A raw TLS connection to node `i`'s peer listener with node `j`'s certificate, from the
    /// local address `source` (e.g. 127.0.0.2, to look like another host on loopback).
    pub async fn raw_tls_from(
        &self,
        j: usize,
        i: usize,
        source: std::net::IpAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let d = self.dir.path().join(&self.fed.nodes[j].region).join("tls");
        let cfg = interflow_tls::client_config(
            &d.join("federation-ca.pem"),
            &d.join("node.pem"),
            &d.join("node.key"),
        )
        .map_err(std::io::Error::other)?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = socket.connect(self.fed.nodes[i].peer_addr).await?;
        let name =
            rustls_pki_types::ServerName::try_from(interflow_tls::peer_server_name(self.region(i)))
                .map_err(std::io::Error::other)?;
        tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
    }

    /// A raw HTTP/2 connection to node `i`'s peer listener with node `j`'s certificate; the
    /// task drives the connection.
    pub async fn raw_h2(
        &self,
        j: usize,
        i: usize,
    ) -> (
        h2::client::SendRequest<bytes::Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
    ) {
        let tls = self
            .raw_tls_from(j, i, std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .expect("tls connection");
        let (send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
        (send, tokio::spawn(conn))
    }

    /// Node `j`'s own peer credentials, to talk to node `i` as `j`.
    pub async fn exchange_from(&self, j: usize, i: usize) -> ExchangeClient<Channel> {
        let d = self.dir.path().join(&self.fed.nodes[j].region).join("tls");
        self.exchange_as(
            i,
            &d.join("federation-ca.pem"),
            &d.join("node.pem"),
            &d.join("node.key"),
        )
        .await
        .expect("exchange client")
    }

    /// A record on `origin → dest` at `seq` after `prev`, sealed with `key` — the origin's own
    /// key to build an equivocation, another key to build a forgery. `n` picks the synthetic
    /// person and payload.
    pub fn crafted_record<'k>(
        &self,
        origin: usize,
        dest: usize,
        seq: u64,
        prev: RecordId,
        key: impl Into<interflow_core::record::Sealer<'k>>,
        n: u64,
    ) -> VerifiedRecord {
        let node = self.node(origin);
        let (from, to) = (self.region(origin), self.region(dest));
        let agreement = node
            .fed()
            .agreements
            .find_covering(from, to, Kind::Contraception, node.now())
            .expect("an agreement between the two nodes")
            .id
            .clone();
        self.crafted_record_under(origin, dest, seq, prev, key, n, &agreement)
    }

    /// Like [`Self::crafted_record`], under the named agreement whether or not it covers the
    /// exchange now (issued now).
    #[allow(clippy::too_many_arguments)]
    pub fn crafted_record_under<'k>(
        &self,
        origin: usize,
        dest: usize,
        seq: u64,
        prev: RecordId,
        key: impl Into<interflow_core::record::Sealer<'k>>,
        n: u64,
        agreement: &str,
    ) -> VerifiedRecord {
        let node = self.node(origin);
        let (from, to) = (self.region(origin), self.region(dest));
        let agreement = agreement.to_owned();
        let today = interflow_core::time::latest_permitted_date(node.now(), 0);
        let id = NationalId::parse(&synthetic_id(n), today).expect("synthetic id");
        let Some(pb::submission::Payload::Contraception(p)) =
            sample_submission(n, to.as_str()).payload
        else {
            unreachable!("sample submissions are contraception statuses")
        };
        NewRecord {
            channel: ChannelId::new(from, to),
            subject: SubjectRef::derive(node.fed().pseudonym_keys[&agreement].newest().1, &id),
            pseudonym_epoch: node.fed().pseudonym_keys[&agreement].newest().0,
            agreement_id: agreement,
            issued_at_ms: node.now(),
            supersedes: None,
            idempotency: None,
            payload: Payload::Contraception(p.try_into().expect("sample payload")),
        }
        .seal(seq, prev, key)
        .expect("seal")
    }

    /// Node `i`'s record-signing key, to craft records as it would.
    pub fn signing_key(&self, i: usize) -> ed25519_dalek::SigningKey {
        let path = self
            .dir
            .path()
            .join(&self.fed.nodes[i].region)
            .join("keys/signing.pem");
        interflow_core::keys::load_signing_key(&path).expect("signing key")
    }

    /// Submits one item at node `i` and returns the id of the record it stored (panics, with
    /// the answer, when the item was refused).
    pub async fn submit_one(&self, i: usize, item: pb::Submission) -> Vec<u8> {
        let resp = self
            .intake(i)
            .await
            .submit(pb::SubmitRequest { items: vec![item] })
            .await
            .expect("submit")
            .into_inner();
        match resp.results.first().and_then(|r| r.outcome.clone()) {
            Some(pb::submit_result::Outcome::RecordId(rid)) => rid,
            _ => panic!("not stored: {resp:?}"),
        }
    }

    /// Submits one item at node `i` and answers the refusal it gets (panics if it is stored).
    pub async fn submit_refused(&self, i: usize, item: pb::Submission) -> pb::SubmitError {
        let resp = self
            .intake(i)
            .await
            .submit(pb::SubmitRequest { items: vec![item] })
            .await
            .expect("submit")
            .into_inner();
        match resp.results.first().and_then(|r| r.outcome.clone()) {
            Some(pb::submit_result::Outcome::Error(e)) => e,
            _ => panic!("expected a refusal: {resp:?}"),
        }
    }

    /// Waits until node `i` holds the record with id `id` (bytes as Intake returns them).
    pub async fn wait_for_record(
        &self,
        i: usize,
        id: &[u8],
    ) -> interflow_core::record::DecodedRecord {
        let node = self.node(i).clone();
        let id = RecordId::try_from(id).expect("record id");
        eventually(Duration::from_secs(10), "the record to arrive", || {
            let n = node.clone();
            async move { n.store.run(move |s| s.get(id)).await.ok().flatten() }
        })
        .await
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// A TCP proxy in front of a node's peer listener: passes bytes, or (after `cut`) drops every
/// open connection and refuses new ones until `heal`, or (after `freeze`) accepts connections
/// and never answers, like a SIGSTOPped peer.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    refuse: Arc<std::sync::atomic::AtomicBool>,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts forwarding connections accepted on `listener` to `target`. Runs on the test's
    /// runtime and ends with it.
    pub fn start(listener: TcpListener, target: SocketAddr) -> Proxy {
        let p = Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            refuse: Arc::default(),
            frozen: Arc::default(),
            open: Arc::default(),
        };
        let (refuse, frozen, open) = (p.refuse.clone(), p.frozen.clone(), p.open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close at once
                }
                let frozen = frozen.load(std::sync::atomic::Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if frozen {
                        // Reads whatever the client sends and answers nothing.
                        let _ = tokio::io::copy(&mut inbound, &mut tokio::io::sink()).await;
                    } else if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
                if let Ok(mut v) = open.lock() {
                    v.retain(|t| !t.is_finished());
                    v.push(task);
                }
            }
        });
        p
    }

    /// Partitions: drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut v) = self.open.lock() {
            for t in v.drain(..) {
                t.abort();
            }
        }
    }

    /// Freezes the peer behind: drops every open connection; new ones are accepted and never
    /// answered until `heal`.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut v) = self.open.lock() {
            for t in v.drain(..) {
                t.abort();
            }
        }
    }

    /// Heals the partition (or thaws the peer, for new connections).
    pub fn heal(&self) {
        self.refuse
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies a directory tree (a data directory backup, in tests).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    // `fs_extra` walks the tree; the store's tests use the same call.
    let options = fs_extra::dir::CopyOptions::new()
        .content_only(true)
        .overwrite(true);
    std::fs::create_dir_all(to).expect("create dir");
    fs_extra::dir::copy(from, to, &options).expect("copy dir");
}

// ---- Branch `fed-dir`: publishing directories and changing a running federation. ----

impl TestCluster {
    /// The federation directory as generated (serial 1, every node a member).
    pub fn generated_directory(&self) -> pb::DirectoryBody {
        use prost::Message as _;
        let bytes = std::fs::read(self.dir.path().join("federation/directory.pb"))
            .expect("read the generated directory");
        let signed = pb::SignedDirectory::decode(bytes.as_slice()).expect("decode directory");
        pb::DirectoryBody::decode(signed.body.as_slice()).expect("decode directory body")
    }

    /// Signs `body` with the federation operator's key and writes it as node `i`'s directory
    /// file (what its config names), as an operator publishing a new directory there would.
    pub fn publish_directory(&self, i: usize, body: &pb::DirectoryBody) {
        use prost::Message as _;
        let operator = interflow_core::keys::load_signing_key(
            &self.dir.path().join("federation/operator.pem"),
        )
        .expect("operator key");
        let signed = interflow_core::directory::Directory::sign(body, &operator);
        let path = self.node_dir(i).join("federation/directory.pb");
        std::fs::write(path, signed.encode_to_vec()).expect("write directory");
    }

    /// The generated directory with `serial`, listing only the nodes `keep` admits (by index).
    pub fn directory_with(&self, serial: u64, keep: impl Fn(usize) -> bool) -> pb::DirectoryBody {
        let mut body = self.generated_directory();
        body.serial = serial;
        body.members.retain(|m| {
            self.fed
                .nodes
                .iter()
                .position(|n| n.region == m.region_code)
                .is_some_and(&keep)
        });
        body
    }

    /// Removes node `i`'s agreements with node `peer` from its config file (the files stay).
    pub fn drop_agreements_with(&self, i: usize, peer: usize) {
        let (a, b) = (&self.fed.nodes[i].region, &self.fed.nodes[peer].region);
        let path = self.config_path(i);
        let mut text = std::fs::read_to_string(&path).expect("read config");
        for id in [format!("agr-{a}-{b}"), format!("agr-{b}-{a}")] {
            let file = format!("\"agreements/{id}.pb\"");
            for pattern in [format!("{file}, "), format!(", {file}"), file] {
                text = text.replace(&pattern, "");
            }
        }
        std::fs::write(&path, text).expect("write config");
    }

    /// Asks node `i` to reload its config files (`Admin.Reload`).
    pub async fn reload(&self, i: usize) -> Result<pb::ReloadResponse, tonic::Status> {
        self.admin(i)
            .await
            .reload(pb::ReloadRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.config_path(i)
            .parent()
            .expect("node directory")
            .to_owned()
    }
}

impl TestCluster {
    /// Runs `Admin.Reconcile` at node `i` with every peer and waits for its report.
    pub async fn reconcile_now(&self, i: usize) -> pb::ReconcileReport {
        let mut stream = self
            .admin(i)
            .await
            .reconcile(pb::ReconcileRequest {
                peer: String::new(),
                recover: false,
            })
            .await
            .expect("reconcile")
            .into_inner();
        while let Some(p) = stream.message().await.expect("reconcile progress") {
            if let Some(pb::reconcile_progress::Event::Report(r)) = p.event {
                return r;
            }
        }
        panic!("the reconcile stream ended without a report");
    }
}

impl TestCluster {
    /// Generates `n` nodes but runs the first `n - 1` as a federation without the last one:
    /// their directory (serial 1) lists only them and node `n - 2` has no agreement with node
    /// `n - 1` in its config. Node `n - 1` is the newcomer, started later with `restart`.
    pub async fn start_without_newcomer(n: usize) -> TestCluster {
        use prost::Message as _;
        let newcomer = n - 1;
        Self::start_inner(
            n,
            newcomer,
            |i, node_dir, text| {
                let fed_dir = node_dir.parent().expect("cluster dir").join("federation");
                let read = std::fs::read(fed_dir.join("directory.pb")).expect("directory");
                let signed = pb::SignedDirectory::decode(read.as_slice()).expect("decode");
                let mut body =
                    pb::DirectoryBody::decode(signed.body.as_slice()).expect("decode body");
                let newcomer_region = body.members[newcomer].region_code.clone();
                body.members.retain(|m| m.region_code != newcomer_region);
                let operator =
                    interflow_core::keys::load_signing_key(&fed_dir.join("operator.pem"))
                        .expect("operator key");
                let signed = interflow_core::directory::Directory::sign(&body, &operator);
                std::fs::write(
                    node_dir.join("federation/directory.pb"),
                    signed.encode_to_vec(),
                )
                .expect("write directory");
                if i + 1 == newcomer {
                    let mine = node_dir.file_name().expect("region").to_string_lossy();
                    let file = format!("\"agreements/agr-{mine}-{newcomer_region}.pb\"");
                    *text = text.replace(&format!(", {file}"), "");
                }
            },
            false,
            DevOptions::default(),
        )
        .await
    }

    /// Adds back to node `i`'s config its agreement with node `peer` (as generated).
    pub fn restore_agreement_with(&self, i: usize, peer: usize) {
        let (a, b) = (&self.fed.nodes[i].region, &self.fed.nodes[peer].region);
        let path = self.config_path(i);
        let text = std::fs::read_to_string(&path).expect("read config");
        let id = if i < peer {
            format!("agr-{a}-{b}")
        } else {
            format!("agr-{b}-{a}")
        };
        let text = text.replacen(
            "agreements = [",
            &format!("agreements = [\"agreements/{id}.pb\", "),
            1,
        );
        std::fs::write(&path, text).expect("write config");
    }
}

// ---- Branch `fed-agree`: agreements installed and terminated at runtime. ----

impl TestCluster {
    /// A new agreement between nodes `i` and `j` (pregnancy and contraception both ways,
    /// valid from yesterday for a year), signed by both, and a pseudonym key file for it.
    pub fn new_agreement(&self, i: usize, j: usize) -> (pb::SignedAgreement, PathBuf) {
        use interflow_core::agreement::{encode_body, party_signature};
        let now = self.node(i).now();
        let body = pb::AgreementBody {
            agreement_id: format!("agr-new-{}-{}", self.region(i), self.region(j)),
            party_a: self.region(i).to_string(),
            party_b: self.region(j).to_string(),
            kinds: vec![
                pb::RecordKind::PregnancyStatus as i32,
                pb::RecordKind::ContraceptionStatus as i32,
            ],
            valid_from_ms: now - 86_400_000,
            valid_until_ms: now + 365 * 86_400_000,
            legal_basis: pb::LegalBasisKind::StatutoryDuty as i32,
            statute_reference: "PFPL-2021-art-19".into(),
            retention_days: 3650,
            date_precision: pb::DatePrecision::Day as i32,
            ..Default::default()
        };
        let bytes = encode_body(&body);
        let signed = pb::SignedAgreement {
            signatures: vec![
                party_signature(&self.signing_key(i), self.region(i), &bytes),
                party_signature(&self.signing_key(j), self.region(j), &bytes),
            ],
            body: bytes,
        };
        let key = self.dir.path().join(format!("{}.key", body.agreement_id));
        std::fs::write(&key, "5a".repeat(32)).expect("write pseudonym key");
        (signed, key)
    }
}

// Branch `keys`: record-signing key rotation.
impl TestCluster {
    /// Writes a new record-signing key for node `i` as `keys/signing-{key_id}.pem` in its
    /// directory (as `interflowctl keys rotate` would) and returns it with its directory entry,
    /// valid from `valid_from_ms`.
    pub fn new_signing_key(
        &self,
        i: usize,
        key_id: u32,
        valid_from_ms: i64,
    ) -> (ed25519_dalek::SigningKey, pb::MemberKey) {
        let key = interflow_core::keys::generate_signing_key();
        let path = self.node_dir(i).join(format!("keys/signing-{key_id}.pem"));
        interflow_core::keys::save_signing_key(&path, &key).expect("write signing key");
        let public = key.verifying_key().to_bytes().to_vec();
        let entry = open_member_key(
            key_id,
            pb::SignatureAlgorithm::Ed25519,
            public,
            valid_from_ms,
        );
        (key, entry)
    }

    /// Like [`Self::new_signing_key`], an SM2 key (PKCS#8 PEM, as `keys rotate --alg sm2`).
    pub fn new_sm2_signing_key(
        &self,
        i: usize,
        key_id: u32,
        valid_from_ms: i64,
    ) -> (interflow_core::sm2_suite::Sm2SigningKey, pb::MemberKey) {
        let key = interflow_core::sm2_suite::Sm2SigningKey::generate();
        let path = self.node_dir(i).join(format!("keys/signing-{key_id}.pem"));
        interflow_core::keys::save_sm2_signing_key(&path, &key).expect("write SM2 key");
        let public = key.verifying_key().to_bytes().to_vec();
        let entry = open_member_key(
            key_id,
            pb::SignatureAlgorithm::Sm2Sm3,
            public,
            valid_from_ms,
        );
        (key, entry)
    }

    /// `n` nodes generated with SM2 record-signing keys (key id 1; `interflow dev --sm2`).
    pub async fn start_sm2(n: usize) -> TestCluster {
        let options = DevOptions {
            sm2: true,
            ..DevOptions::default()
        };
        Self::start_inner(n, n, |_, _, _| {}, false, options).await
    }

    /// Makes node `i` sign with a new SM2 key (key id 1): the directory with `serial` lists it
    /// at every node (each reloads), then node `i` switches to it by a reload. No restart.
    pub async fn switch_to_sm2(
        &self,
        i: usize,
        serial: u64,
    ) -> interflow_core::sm2_suite::Sm2SigningKey {
        let (key, entry) = self.new_sm2_signing_key(i, 1, self.node(i).now() - 1_000);
        let dir = self.with_member_key(self.directory_with(serial, |_| true), i, entry);
        for j in 0..self.nodes.len() {
            self.publish_directory(j, &dir);
            self.reload(j).await.expect("reload with the new directory");
        }
        self.use_signing_key(i, 1);
        self.reload(i).await.expect("reload with the SM2 key");
        key
    }

    /// `body` with `key` listed (or replaced, by key id) in node `i`'s entry.
    pub fn with_member_key(
        &self,
        mut body: pb::DirectoryBody,
        i: usize,
        key: pb::MemberKey,
    ) -> pb::DirectoryBody {
        let region = self.region(i).to_string();
        let m = body
            .members
            .iter_mut()
            .find(|m| m.region_code == region)
            .expect("node in the directory");
        m.keys.retain(|k| k.key_id != key.key_id);
        m.keys.push(key);
        body
    }

    /// Points node `i`'s config at `keys/signing-{key_id}.pem` (a reload switches to it).
    pub fn use_signing_key(&self, i: usize, key_id: u32) {
        let path = self.config_path(i);
        let text = std::fs::read_to_string(&path).expect("read config");
        let line = config_with_signing_key(&text, &format!("keys/signing-{key_id}.pem"));
        std::fs::write(&path, line).expect("write config");
    }
}

/// The config text with its `signing_key = "..."` line naming `file`.
fn config_with_signing_key(text: &str, file: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("signing_key") {
                format!("signing_key = \"{file}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A directory key entry valid from `valid_from_ms` on, without end or revocation.
fn open_member_key(
    key_id: u32,
    alg: pb::SignatureAlgorithm,
    public_key: Vec<u8>,
    valid_from_ms: i64,
) -> pb::MemberKey {
    pb::MemberKey {
        key_id,
        alg: alg as i32,
        public_key,
        valid_from_ms,
        valid_until_ms: 0,
        revoked_at_ms: 0,
    }
}
