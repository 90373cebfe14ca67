//! End-to-end tests: a real tonic server (the standard health service) behind `tls_incoming` on
//! 127.0.0.1, and real clients through `connect`, with certificates generated per test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use interflow_core::RegionCode;

use crate::error::ErrorChain;
use crate::pki::{Ca, Issued, Serial, Validity};
use crate::{
    IncomingLimits, PeerIdentity, ReloadableServerConfig, Role, ServerTlsFiles, TlsError,
    client_config, connect, connect_lazy, local_server_name, peer_identity, peer_server_name,
    tls_incoming_with_limits,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on any single client attempt: a refusal must be prompt, never a hang.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(10);

fn region(code: &str) -> RegionCode {
    code.parse().unwrap()
}

/// Certificates written to a temp dir.
struct Pki {
    dir: TempDir,
    fed: Ca,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            fed: Ca::generate("interflow test federation ca").unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_ca(&self, name: &str, ca: &Ca) -> PathBuf {
        let path = self.path(&format!("{name}.pem"));
        crate::pki::write_cert_file(&path, &ca.cert_pem()).unwrap();
        path
    }

    fn write(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = self.path(&format!("{name}.pem"));
        let key = self.path(&format!("{name}.key"));
        issued.write_pem_files(&cert, &key).unwrap();
        (cert, key)
    }

    fn peer(&self, name: &str, code: &str, validity: Validity) -> (Issued, PathBuf, PathBuf) {
        let issued = self
            .fed
            .issue_peer_cert(region(code), &[], &[], validity)
            .unwrap();
        let (cert, key) = self.write(name, &issued);
        (issued, cert, key)
    }

    /// Server files for node 310115 of the federation, with the given CRL files.
    fn server_files(&self, crls: Vec<PathBuf>) -> ServerTlsFiles {
        let ca = self.write_ca("fed-ca", &self.fed);
        let (_, cert, key) = self.peer("server", "310115", Validity::days(1));
        ServerTlsFiles {
            ca,
            cert,
            key,
            crls,
        }
    }

    /// A client config trusting the federation CA and presenting a new peer cert for `code`.
    fn client(&self, name: &str, code: &str, validity: Validity) -> (Issued, Arc<ClientConfig>) {
        let ca = self.write_ca("fed-ca", &self.fed);
        let (issued, cert, key) = self.peer(name, code, validity);
        (issued, client_config(&ca, &cert, &key).unwrap())
    }
}

/// A running tonic server; it records the identity `peer_identity` gives each request.
struct TestServer {
    addr: SocketAddr,
    config: Arc<ReloadableServerConfig>,
    seen: Arc<Mutex<Vec<PeerIdentity>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(files: ServerTlsFiles, handshake_timeout: Duration) -> Self {
        Self::start_with_limits(
            files,
            IncomingLimits {
                handshake_timeout,
                max_pending_handshakes: 8,
                ..IncomingLimits::default()
            },
        )
        .await
    }

    async fn start_with_limits(files: ServerTlsFiles, limits: IncomingLimits) -> Self {
        let config = Arc::new(ReloadableServerConfig::load(files).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        // Refuses requests without an identity, so a passing health check proves that
        // `peer_identity` found one.
        let health = InterceptedService::new(health, move |req: tonic::Request<()>| {
            let identity = peer_identity(&req)
                .ok_or_else(|| tonic::Status::permission_denied("no peer identity"))?;
            recorder.lock().unwrap().push(identity);
            Ok(req)
        });
        let incoming = tls_incoming_with_limits(listener, config.clone(), limits);
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        Self {
            addr,
            config,
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<PeerIdentity> {
        self.seen.lock().unwrap().clone()
    }

    /// Connects and runs one health check; `Err` carries the whole error chain.
    async fn check(&self, server_name: &str, config: Arc<ClientConfig>) -> Result<(), String> {
        let attempt = async {
            let channel = connect(&self.addr.to_string(), server_name, config, CONNECT_TIMEOUT)
                .await
                .map_err(|e| ErrorChain(&e).to_string())?;
            let response = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|status| ErrorChain(&status).to_string())?;
            assert_eq!(response.into_inner().status, 1, "SERVING");
            Ok(())
        };
        tokio::time::timeout(ATTEMPT_DEADLINE, attempt)
            .await
            .expect("a tls attempt must succeed or fail promptly, not hang")
    }

    async fn check_peer(&self, config: Arc<ClientConfig>) -> Result<(), String> {
        self.check(&peer_server_name(region("310115")), config)
            .await
    }
}

#[tokio::test]
async fn valid_peer_connects_and_the_server_sees_its_region() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_files(vec![]), Duration::from_secs(5)).await;
    let (_, client) = pki.client("client", "110101", Validity::days(1));

    server.check_peer(client.clone()).await.unwrap();
    assert_eq!(server.seen(), vec![PeerIdentity::Region(region("110101"))]);

    // The lazy channel connects on first use.
    let channel = connect_lazy(
        &server.addr.to_string(),
        &peer_server_name(region("310115")),
        client,
        CONNECT_TIMEOUT,
    )
    .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn local_listener_sees_role_and_holder_name() {
    let pki = Pki::new();
    let local = Ca::generate("node 310115 local ca").unwrap();
    let ca = pki.write_ca("local-ca", &local);
    let server_cert = local
        .issue_local_server_cert(region("310115"), Validity::days(1))
        .unwrap();
    let (cert, key) = pki.write("local-server", &server_cert);
    let server = TestServer::start(
        ServerTlsFiles {
            ca: ca.clone(),
            cert,
            key,
            crls: vec![],
        },
        Duration::from_secs(5),
    )
    .await;

    for (role, name) in [(Role::Admin, "Wang Fang"), (Role::Intake, "clinic-system")] {
        let issued = local
            .issue_role_cert(role, name, Validity::days(1))
            .unwrap();
        let (cert, key) = pki.write(&format!("{role}"), &issued);
        let client = client_config(&ca, &cert, &key).unwrap();
        // Both names the local server certificate carries are accepted.
        server
            .check(&local_server_name(region("310115")), client.clone())
            .await
            .unwrap();
        server.check("localhost", client).await.unwrap();
    }
    let expected = |role, name: &str| PeerIdentity::Local {
        role,
        name: name.to_owned(),
    };
    assert_eq!(
        server.seen(),
        vec![
            expected(Role::Admin, "Wang Fang"),
            expected(Role::Admin, "Wang Fang"),
            expected(Role::Intake, "clinic-system"),
            expected(Role::Intake, "clinic-system"),
        ]
    );
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let pki = Pki::new();
    let files = pki.server_files(vec![]);
    let server = TestServer::start(files.clone(), Duration::from_secs(5)).await;

    let no_cert = ClientConfig::builder_with_provider(crate::server::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(crate::server::root_store(&files.ca).unwrap())
        .with_no_client_auth();
    let err = server.check_peer(Arc::new(no_cert)).await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn client_with_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_files(vec![]), Duration::from_secs(5)).await;

    let rogue = Ca::generate("rogue ca").unwrap();
    let issued = rogue
        .issue_peer_cert(region("110101"), &[], &[], Validity::days(1))
        .unwrap();
    let (cert, key) = pki.write("rogue-client", &issued);
    // Trusts the real federation CA, so only the client side is wrong.
    let client = client_config(&pki.write_ca("fed-ca", &pki.fed), &cert, &key).unwrap();
    let err = server.check_peer(client).await.unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn expired_and_not_yet_valid_client_certificates_are_refused() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_files(vec![]), Duration::from_secs(5)).await;
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);

    // TLS has one alert for both: "certificate_expired" means "not currently valid".
    let (_, expired) = pki.client("expired", "110101", Validity::new(now - 2 * day, now - day));
    let err = server.check_peer(expired).await.unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");

    let (_, early) = pki.client("early", "110101", Validity::new(now + day, now + 2 * day));
    let err = server.check_peer(early).await.unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");

    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn certificate_from_the_right_ca_without_identity_is_refused() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_files(vec![]), Duration::from_secs(5)).await;

    let mut params =
        rcgen::CertificateParams::new(vec!["110101.region.interflow".to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    let issued = pki.fed.issue_with_params("no identity", params).unwrap();
    let (cert, key) = pki.write("no-identity", &issued);
    let client = client_config(&pki.write_ca("fed-ca", &pki.fed), &cert, &key).unwrap();

    // Refused inside the handshake, with an alert rather than a bare close.
    let err = server.check_peer(client).await.unwrap_err();
    assert!(err.contains("CertificateUnknown"), "{err}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn revocation_and_crl_rotation_apply_on_reload_without_restart() {
    let pki = Pki::new();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let crl_path = pki.path("fed.crl");
    let write_crl = |revoked: &[Serial], this_update: SystemTime, next_update: SystemTime| {
        let crl = pki.fed.crl(revoked, this_update, next_update).unwrap();
        crate::pki::write_cert_file(&crl_path, &crl).unwrap();
    };
    write_crl(&[], now - hour, now + hour);
    let server = TestServer::start(
        pki.server_files(vec![crl_path.clone()]),
        Duration::from_secs(5),
    )
    .await;

    let (revoked, revoked_client) = pki.client("revoked", "110101", Validity::days(1));
    let (_, good_client) = pki.client("good", "120101", Validity::days(1));
    server.check_peer(revoked_client.clone()).await.unwrap();
    server.check_peer(good_client.clone()).await.unwrap();

    // Revoke one client: new connections with it fail, the other client is unaffected.
    write_crl(std::slice::from_ref(&revoked.serial), now, now + hour);
    server.config.reload().unwrap();
    let err = server.check_peer(revoked_client.clone()).await.unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    server.check_peer(good_client.clone()).await.unwrap();

    // A bad CRL file is refused and the previous configuration stays in force.
    std::fs::write(&crl_path, "not a crl").unwrap();
    let err = server.config.reload().unwrap_err();
    assert!(
        matches!(&err, TlsError::NoPemBlock { path, .. } if *path == crl_path),
        "{err:?}"
    );
    server.check_peer(good_client.clone()).await.unwrap();
    server.check_peer(revoked_client.clone()).await.unwrap_err();

    // A stale CRL (past nextUpdate) cannot vouch for anyone: every client is refused (rustls,
    // like OpenSSL, says "unknown ca" when revocation status cannot be determined)...
    write_crl(&[], now - 2 * hour, now - hour);
    server.config.reload().unwrap();
    let err = server.check_peer(good_client.clone()).await.unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");

    // ...until a fresh one is loaded.
    write_crl(std::slice::from_ref(&revoked.serial), now, now + hour);
    server.config.reload().unwrap();
    server.check_peer(good_client).await.unwrap();
    server.check_peer(revoked_client).await.unwrap_err();

    let regions: Vec<_> = server
        .seen()
        .iter()
        .filter_map(PeerIdentity::region)
        .collect();
    assert_eq!(
        regions,
        [
            region("110101"),
            region("120101"),
            region("120101"),
            region("120101"),
            region("120101"),
        ]
    );
}

#[tokio::test]
async fn stalled_clients_do_not_block_other_handshakes() {
    let pki = Pki::new();
    let handshake_timeout = Duration::from_secs(2);
    let server = TestServer::start(pki.server_files(vec![]), handshake_timeout).await;
    let (_, client) = pki.client("client", "110101", Validity::days(1));

    // Open TCP connections that never send a byte.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(TcpStream::connect(server.addr).await.unwrap());
    }

    server.check_peer(client).await.unwrap();
    // The good client was served while the stalled ones are still open (not yet timed out).
    let mut buf = [0u8; 1];
    for conn in &stalled {
        let err = conn.try_read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    // And the server drops them once the handshake timeout passes.
    for conn in &mut stalled {
        let closed = tokio::time::timeout(handshake_timeout * 4, async {
            use tokio::io::AsyncReadExt;
            conn.read(&mut buf).await
        })
        .await
        .expect("the server closes a stalled handshake after its timeout");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}

#[tokio::test]
async fn client_refuses_a_server_certified_for_another_region() {
    let pki = Pki::new();
    let server = TestServer::start(pki.server_files(vec![]), Duration::from_secs(5)).await;
    let (_, client) = pki.client("client", "110101", Validity::days(1));

    // The server is 310115; the client expects 320102.
    let err = connect(
        &server.addr.to_string(),
        &peer_server_name(region("320102")),
        client,
        CONNECT_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TlsError::Connect { .. }), "{err:?}");
    let chain = ErrorChain(&err).to_string();
    assert!(chain.contains("320102.region.interflow"), "{chain}");
    assert!(server.seen().is_empty());
}

#[test]
fn issued_files_are_private_and_round_trip() {
    let pki = Pki::new();
    let (issued, cert, key) = pki.peer("node", "310115", Validity::days(1));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
    }
    let certs = crate::load_certs(&cert).unwrap();
    assert_eq!(certs, vec![issued.cert_der.clone()]);
    assert_eq!(Serial::of_cert(&certs[0]).unwrap(), issued.serial);
    crate::load_key(&key).unwrap();
}

/// A raw TLS connection to `server` from `source` (an address on this host), that sends nothing
/// after the handshake.
async fn raw_tls(
    server: SocketAddr,
    source: std::net::IpAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(server).await?;
    let name = rustls_pki_types::ServerName::try_from(peer_server_name(region("310115")))
        .map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Reads until the server closes `conn`, or `deadline` passes: true if it closed.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(conn: &mut S, deadline: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn connections_that_never_start_http2_are_closed_after_the_preface_timeout() {
    let pki = Pki::new();
    let server = TestServer::start_with_limits(
        pki.server_files(vec![]),
        IncomingLimits {
            preface_timeout: Duration::from_millis(300),
            max_connections_per_identity: 100,
            ..IncomingLimits::default()
        },
    )
    .await;
    let (_, client) = pki.client("client", "110101", Validity::days(1));
    let localhost = "127.0.0.1".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            raw_tls(server.addr, localhost, client.clone())
                .await
                .unwrap(),
        );
    }
    for conn in &mut idle {
        assert!(
            closed_within(conn, Duration::from_secs(10)).await,
            "a connection that completed TLS but never sent the HTTP/2 preface stayed open"
        );
    }
    // A real client is served as before.
    server.check_peer(client).await.unwrap();
}

#[tokio::test]
async fn connections_over_the_per_identity_cap_are_refused_and_others_are_served() {
    let pki = Pki::new();
    let server = TestServer::start_with_limits(
        pki.server_files(vec![]),
        IncomingLimits {
            max_connections_per_identity: 2,
            ..IncomingLimits::default()
        },
    )
    .await;
    let (_, greedy) = pki.client("greedy", "110101", Validity::days(1));
    let (_, other) = pki.client("other", "110102", Validity::days(1));
    let name = peer_server_name(region("310115"));
    let health = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
            .map_err(|s| ErrorChain(&s).to_string())
    };
    let open = || async {
        connect(
            &server.addr.to_string(),
            &name,
            greedy.clone(),
            CONNECT_TIMEOUT,
        )
        .await
    };
    // Two connections of one identity are served and kept open.
    let first = open().await.unwrap();
    health(first.clone()).await.unwrap();
    let second = open().await.unwrap();
    health(second.clone()).await.unwrap();
    // A third is refused: the connection, not just a request.
    for _ in 0..3 {
        let third = match open().await {
            Ok(channel) => tokio::time::timeout(ATTEMPT_DEADLINE, health(channel))
                .await
                .expect("refused promptly"),
            Err(e) => Err(e.to_string()),
        };
        assert!(
            third.is_err(),
            "a third connection of one identity was served"
        );
    }
    // Another identity is not affected.
    server.check_peer(other).await.unwrap();
    // Once one of the two closes, the identity may connect again.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(channel) = open().await
            && health(channel).await.is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the identity could not connect again after closing a connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
}

#[tokio::test]
async fn one_address_at_its_handshake_cap_does_not_stall_clients_from_another() {
    let pki = Pki::new();
    // A long handshake timeout: without the per-address cap, the stalled connections would
    // hold every slot for all of it.
    let server = TestServer::start_with_limits(
        pki.server_files(vec![]),
        IncomingLimits {
            handshake_timeout: Duration::from_secs(60),
            max_pending_handshakes: 4,
            max_handshakes_per_address: 2,
            ..IncomingLimits::default()
        },
    )
    .await;
    let (_, client) = pki.client("client", "110101", Validity::days(1));
    // 127.0.0.1 opens many TCP connections and never sends a ClientHello.
    let attacker: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(attacker, 0)).unwrap();
        stalled.push(socket.connect(server.addr).await.unwrap());
    }
    // A well-behaved client from 127.0.0.2 completes its handshake promptly.
    let other = "127.0.0.2".parse().unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(5),
        raw_tls(server.addr, other, client.clone()),
    )
    .await;
    assert!(
        matches!(done, Ok(Ok(_))),
        "a client from another address could not complete its handshake: {done:?}"
    );
    // The stalled address keeps at most its cap: the rest of its connections were closed.
    let mut closed = 0;
    for conn in &mut stalled {
        if closed_within(conn, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 8,
        "all but the address's 2 handshakes are closed at once"
    );
}
