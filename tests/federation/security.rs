//! Who may talk to a node, and what it refuses.

use std::time::Duration;

use interflow_core::pb;
use interflow_core::record::{ChannelId, RecordId};
use interflow_tests::TestCluster;
use interflow_tls::pki::{Ca, Serial, Validity};
use tokio_stream::StreamExt;

fn issue(dir: &std::path::Path, ca: &Ca, region: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = ca
        .issue_peer_cert(region.parse().unwrap(), &[], &[], Validity::days(1))
        .unwrap();
    let (c, k) = (
        dir.join(format!("{region}.pem")),
        dir.join(format!("{region}.key")),
    );
    cert.write_pem_files(&c, &k).unwrap();
    (c, k)
}

async fn heads_ok(
    client: Result<
        pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
        interflow_tls::TlsError,
    >,
) -> Result<(), String> {
    let mut client = client.map_err(|e| e.to_string())?;
    client
        .heads(pb::HeadsRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_right_certificate_are_refused() {
    let c = TestCluster::start(2).await;
    let fed = c.dir.path().join("federation");
    let scratch = tempfile::tempdir().unwrap();

    // The real peer works.
    assert_eq!(heads_ok(Ok(c.exchange_from(1, 0).await)).await, Ok(()));

    // No client certificate at all: a raw TLS client that presents none.
    let ca_pem = std::fs::read(fed.join("ca.pem")).unwrap();
    let mut roots = interflow_tls::rustls::RootCertStore::empty();
    for cert in interflow_tls::load_certs(&fed.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    assert!(!ca_pem.is_empty());
    let provider = std::sync::Arc::new(interflow_tls::rustls::crypto::ring::default_provider());
    let mut cfg = interflow_tls::rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&interflow_tls::rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let ch = interflow_tls::connect(
        &c.fed.nodes[0].peer_addr.to_string(),
        &interflow_tls::peer_server_name(c.region(0)),
        std::sync::Arc::new(cfg),
        Duration::from_secs(5),
    )
    .await;
    let r = match ch {
        Ok(ch) => heads_ok(Ok(pb::exchange_client::ExchangeClient::new(ch))).await,
        Err(e) => Err(e.to_string()),
    };
    assert!(r.is_err(), "no client certificate was accepted");

    // A certificate from another CA, for a real member's region.
    let other = Ca::generate("some other CA").unwrap();
    let (cert, key) = issue(scratch.path(), &other, c.region(1).as_str());
    let r = heads_ok(c.exchange_as(0, &fed.join("ca.pem"), &cert, &key).await).await;
    assert!(r.is_err(), "a certificate from another CA was accepted");

    // The right CA, but a region that is not a member of the directory.
    let fed_ca = Ca::load(&fed.join("ca.pem"), &fed.join("ca.key")).unwrap();
    let (cert, key) = issue(scratch.path(), &fed_ca, "650102");
    let r = heads_ok(c.exchange_as(0, &fed.join("ca.pem"), &cert, &key).await).await;
    let err = r.expect_err("a non-member region was accepted");
    assert!(err.contains("PermissionDenied"), "{err}");
    c.shutdown().await;
}

async fn deliver_one(
    mut client: pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
    rec: pb::SignedRecord,
) -> pb::DeliveryAck {
    let mut acks = client
        .deliver(tokio_stream::iter(vec![rec]))
        .await
        .unwrap()
        .into_inner();
    acks.next().await.expect("an answer").expect("not a status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_from_the_wrong_sender_or_with_forged_signatures_are_rejected() {
    let c = TestCluster::start(3).await;
    let b_to_a = ChannelId::new(c.region(1), c.region(0));
    // A record by B (origin B) sent over C's connection: origin is not the TLS peer.
    let b_key = c.signing_key(1);
    let rec = c
        .crafted_record(1, 0, 1, RecordId::ZERO, &b_key, 7)
        .into_decoded()
        .into_signed();
    let ack = deliver_one(c.exchange_from(2, 0).await, rec).await;
    match ack.result {
        Some(pb::delivery_ack::Result::Rejection(r)) => {
            assert_eq!(r.reason, pb::RejectReason::OriginNotSender as i32)
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // B's own connection, but signed with a key that is not B's directory key.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let rec = c
        .crafted_record(1, 0, 1, RecordId::ZERO, &forger, 7)
        .into_decoded()
        .into_signed();
    let ack = deliver_one(c.exchange_from(1, 0).await, rec).await;
    match ack.result {
        Some(pb::delivery_ack::Result::Rejection(r)) => {
            assert_eq!(r.reason, pb::RejectReason::BadSignature as i32);
            assert_eq!(r.seq, 1);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(c.node(0).store.head(b_to_a).0, 0, "nothing stored");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_inside_a_long_stream_are_named_in_order_and_what_precedes_them_is_stored() {
    // A batch's records are judged one by one: each forged one is named, in stream order, and
    // the chain is applied up to the first forged record only.
    let c = TestCluster::start(2).await;
    let b_to_a = ChannelId::new(c.region(1), c.region(0));
    let (b_key, forger) = (
        c.signing_key(1),
        ed25519_dalek::SigningKey::from_bytes(&[42; 32]),
    );
    let mut prev = RecordId::ZERO;
    let mut stream = Vec::new();
    for seq in 1..=120 {
        let key = if seq == 40 || seq == 100 {
            &forger
        } else {
            &b_key
        };
        let rec = c.crafted_record(1, 0, seq, prev, key, seq);
        prev = rec.id();
        stream.push(rec.into_decoded().into_signed());
    }
    let mut client = c.exchange_from(1, 0).await;
    let mut acks = client
        .deliver(tokio_stream::iter(stream))
        .await
        .unwrap()
        .into_inner();
    let mut forged = Vec::new();
    while let Some(ack) = acks.next().await {
        if let Some(pb::delivery_ack::Result::Rejection(r)) = ack.unwrap().result
            && r.reason == pb::RejectReason::BadSignature as i32
        {
            forged.push(r.seq);
        }
    }
    assert_eq!(
        forged,
        vec![40, 100],
        "only the forged records are refused as forged"
    );
    assert_eq!(c.node(0).store.head(b_to_a).0, 39);
    c.shutdown().await;
}

/// Writes a CRL of `ca` listing `revoked` to `path`, replacing it atomically.
fn write_crl(ca: &Ca, path: &std::path::Path, revoked: &[Serial]) {
    let now = std::time::SystemTime::now();
    let pem = ca
        .crl(
            revoked,
            now - Duration::from_secs(60),
            now + Duration::from_secs(86_400),
        )
        .unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_peer_is_refused_after_a_reload_without_restart() {
    // B (the middle node, with agreements with A and C) starts with an empty CRL.
    let c = TestCluster::start_prepared(3, |i, node_dir, text| {
        if i == 1 {
            let fed = node_dir.parent().unwrap().join("federation");
            let ca = Ca::load(&fed.join("ca.pem"), &fed.join("ca.key")).unwrap();
            write_crl(&ca, &node_dir.join("tls/federation.crl"), &[]);
            *text = text.replace(
                "key = \"tls/node.key\"\n",
                "key = \"tls/node.key\"\ncrls = [\"tls/federation.crl\"]\n",
            );
        }
    })
    .await;
    let node_tls = |i: usize| c.dir.path().join(c.region(i).as_str()).join("tls");
    let a_to_b = || async {
        let d = node_tls(0);
        heads_ok(
            c.exchange_as(
                1,
                &d.join("federation-ca.pem"),
                &d.join("node.pem"),
                &d.join("node.key"),
            )
            .await,
        )
        .await
    };
    assert_eq!(a_to_b().await, Ok(()));

    // The federation operator revokes A's peer certificate; B reloads (what SIGHUP does).
    let fed = c.dir.path().join("federation");
    let ca = Ca::load(&fed.join("ca.pem"), &fed.join("ca.key")).unwrap();
    let a_cert = interflow_tls::load_certs(&node_tls(0).join("node.pem")).unwrap();
    let serial = Serial::of_cert(&a_cert[0]).unwrap();
    write_crl(&ca, &node_tls(1).join("federation.crl"), &[serial]);
    c.running(1).reload_tls().unwrap();

    let refused = a_to_b().await;
    assert!(
        refused.is_err(),
        "a revoked certificate was accepted after the reload"
    );
    // C, not revoked, is still served, and B never restarted.
    assert_eq!(heads_ok(Ok(c.exchange_from(2, 1).await)).await, Ok(()));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_the_local_listener_are_kept_apart() {
    let c = TestCluster::start(2).await;
    let n = &c.fed.nodes[0];
    let b = c.region(1).to_string();
    let connect = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        let ca = n.local_ca.clone();
        let addr = n.local_addr.to_string();
        let name = interflow_tls::local_server_name(c.region(0));
        async move {
            let cfg = interflow_tls::client_config(&ca, &cert, &key).unwrap();
            interflow_tls::connect(&addr, &name, cfg, Duration::from_secs(5)).await
        }
    };
    // An intake certificate cannot read through Admin.
    let ch = connect(n.intake_cert.clone(), n.intake_key.clone())
        .await
        .unwrap();
    let err = pb::admin_client::AdminClient::new(ch)
        .stats(pb::StatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    // An admin certificate cannot submit.
    let ch = connect(n.admin_cert.clone(), n.admin_key.clone())
        .await
        .unwrap();
    let err = pb::intake_client::IntakeClient::new(ch)
        .submit(pb::SubmitRequest {
            items: vec![interflow_node::dev::sample_submission(1, &b)],
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    // A peer certificate (federation CA) is not accepted by the local listener's CA.
    let tls = c.dir.path().join(c.region(1).as_str()).join("tls");
    let refused = match connect(tls.join("node.pem"), tls.join("node.key")).await {
        Err(_) => true,
        Ok(ch) => pb::admin_client::AdminClient::new(ch)
            .stats(pb::StatsRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a peer certificate was accepted on the local listener"
    );
    assert_eq!(
        c.node(0)
            .store
            .head(ChannelId::new(c.region(0), c.region(1)))
            .0,
        0
    );
    c.shutdown().await;
}

/// Appends a `[limits]` section to a node's config text.
fn with_limits(text: &mut String, lines: &str) {
    text.push_str("\n[limits]\n");
    text.push_str(lines);
    text.push('\n');
}

/// Reads from `conn` until the server closes it or `deadline` passes: true if it closed.
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

/// A health check over a channel: `Ok` if the listener served it.
async fn health(ch: tonic::transport::Channel) -> Result<(), tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_starts_http2_is_cut_off_and_one_over_its_connection_cap_is_refused() {
    // Node 2 has no agreement with node 0, so node 0's peer listener sees no connection of
    // node 2's identity but the test's own.
    let c = TestCluster::start_edited(3, |i, text| {
        if i == 0 {
            with_limits(
                text,
                "http2_preface_timeout_ms = 300\nmax_connections_per_identity = 3",
            );
        }
    })
    .await;
    let localhost = std::net::Ipv4Addr::LOCALHOST.into();

    // Connections that complete TLS and then say nothing are closed after the preface timeout.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(c.raw_tls_from(2, 0, localhost).await.unwrap());
    }
    for conn in &mut idle {
        assert!(
            closed_within(conn, Duration::from_secs(10)).await,
            "an idle TLS connection that never started HTTP/2 stayed open"
        );
    }

    // Three connections of one identity are served and kept; a fourth is refused.
    let d = c.dir.path().join(c.region(2).as_str()).join("tls");
    let (ca, cert, key) = (
        d.join("federation-ca.pem"),
        d.join("node.pem"),
        d.join("node.key"),
    );
    let open = || c.peer_channel_as(0, &ca, &cert, &key);
    let mut kept = Vec::new();
    for _ in 0..3 {
        let ch = open().await.unwrap();
        health(ch.clone()).await.unwrap();
        kept.push(ch);
    }
    for _ in 0..3 {
        let refused = match open().await {
            Ok(ch) => health(ch)
                .await
                .expect_err("a fourth connection was served"),
            Err(e) => panic!("the TLS handshake itself should complete: {e}"),
        };
        // The client sees the GOAWAY's reason if its request was out when it came, or a
        // closed connection if not.
        assert!(
            matches!(
                refused.code(),
                tonic::Code::ResourceExhausted | tonic::Code::Cancelled | tonic::Code::Unavailable
            ),
            "{refused:?}"
        );
    }
    // On the wire: a GOAWAY with ENHANCE_YOUR_CALM and the reason.
    let tls = c.raw_tls_from(2, 0, localhost).await.unwrap();
    let (_send, conn) = h2::client::handshake(tls).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the refused connection is closed");
    let err = ended.expect_err("closed with an error");
    assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err}");
    assert!(err.is_go_away() && err.is_remote(), "{err}");
    // Another identity is served meanwhile.
    assert_eq!(heads_ok(Ok(c.exchange_from(1, 0).await)).await, Ok(()));
    // When one of the three closes, the identity may connect again.
    kept.pop();
    interflow_tests::eventually(Duration::from_secs(10), "a new connection", || async {
        match open().await {
            Ok(ch) => health(ch).await.ok(),
            Err(_) => None,
        }
    })
    .await;
    drop(kept);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_its_handshakes_does_not_stall_a_peer_from_another_address() {
    // Few slots and a long handshake timeout: without a per-address cap, stalled connections
    // from one address would hold every slot for a minute.
    let c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            with_limits(
                text,
                "max_pending_handshakes = 4\nmax_handshakes_per_address = 2\ntls_handshake_timeout_ms = 60000",
            );
        }
    })
    .await;
    let peer_addr = c.fed.nodes[0].peer_addr;
    let mut stalled = Vec::new();
    for _ in 0..10 {
        // TCP only: no ClientHello ever.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::new(
                std::net::Ipv4Addr::LOCALHOST.into(),
                0,
            ))
            .unwrap();
        stalled.push(socket.connect(peer_addr).await.unwrap());
    }
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2).into();
    let done = tokio::time::timeout(Duration::from_secs(5), c.raw_tls_from(1, 0, other)).await;
    assert!(
        matches!(done, Ok(Ok(_))),
        "a peer from 127.0.0.2 could not complete its handshake while 127.0.0.1 stalled: {done:?}"
    );
    // What 127.0.0.1 opened beyond its cap was closed at once.
    let mut closed = 0;
    for conn in &mut stalled {
        if closed_within(conn, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 8);
    drop(stalled);
    c.shutdown().await;
}

/// A gRPC length prefix announcing a message of `len` bytes.
fn grpc_prefix(len: u32) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

fn deliver_request() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("/interflow.v1.Exchange/Deliver")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The gRPC status a raw HTTP/2 response ends with: from its headers (trailers-only) or its
/// trailers.
async fn raw_status(resp: h2::client::ResponseFuture) -> tonic::Status {
    let resp = resp.await.expect("response headers");
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    while let Some(d) = body.data().await {
        let d = d.expect("body");
        let _ = body.flow_control().release_capacity(d.len());
    }
    let trailers = body
        .trailers()
        .await
        .expect("trailers")
        .expect("some trailers");
    tonic::Status::from_header_map(&trailers).expect("a grpc-status trailer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_one_peer_can_pin_are_bounded_by_its_budget() {
    // Room for exactly two messages of 4,000,000 bytes (plus their 5-byte prefixes).
    const ANNOUNCED: u32 = 4_000_000;
    let budget = 2 * (ANNOUNCED as usize + 5);
    let c = TestCluster::start_edited(3, |i, text| {
        if i == 0 {
            with_limits(text, &format!("max_inflight_bytes_per_identity = {budget}"));
        }
    })
    .await;
    let attacker = interflow_tls::PeerIdentity::Region(c.region(2));
    let budgets = c.running(0).peer_budgets.clone();
    let (mut send, _conn) = c.raw_h2(2, 0).await;
    // Two streams announce 4 MB messages and send 1 MiB of each, then stall.
    let mut pinned = Vec::new();
    for _ in 0..2 {
        send = send.ready().await.unwrap();
        let (resp, mut stream) = send.send_request(deliver_request(), false).unwrap();
        let mut data = grpc_prefix(ANNOUNCED);
        data.extend(vec![0u8; 1024 * 1024]);
        stream.send_data(data.into(), false).unwrap();
        pinned.push((resp, stream));
    }
    interflow_tests::eventually(Duration::from_secs(10), "both streams charged", || {
        let (b, a) = (budgets.clone(), attacker.clone());
        async move { (b.used_by(&a) == budget).then_some(()) }
    })
    .await;
    // A third is refused before its bytes are buffered, and says why.
    send = send.ready().await.unwrap();
    let (resp, mut stream) = send.send_request(deliver_request(), false).unwrap();
    let mut data = grpc_prefix(ANNOUNCED);
    data.extend(vec![0u8; 64 * 1024]);
    stream.send_data(data.into(), false).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), raw_status(resp))
        .await
        .expect("the third stream is answered");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(budgets.used_by(&attacker), budget, "never over the budget");
    // So is a small honest-looking delivery from the same identity, over a new connection.
    let rec = c
        .crafted_record(1, 0, 1, RecordId::ZERO, &c.signing_key(1), 3)
        .into_decoded()
        .into_signed();
    let small = |rec: pb::SignedRecord| async {
        let mut client = c.exchange_from(2, 0).await;
        let mut acks = client
            .deliver(tokio_stream::iter(vec![rec]))
            .await?
            .into_inner();
        acks.next()
            .await
            .unwrap_or(Err(tonic::Status::unknown("no answer")))
    };
    let refused = small(rec.clone())
        .await
        .expect_err("a delivery over the budget");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // Another peer is not affected.
    assert_eq!(heads_ok(Ok(c.exchange_from(1, 0).await)).await, Ok(()));
    // Once the pinning streams go away, their bytes are released and the peer is served.
    for (_, mut stream) in pinned {
        stream.send_reset(h2::Reason::CANCEL);
    }
    interflow_tests::eventually(Duration::from_secs(10), "the budget released", || {
        let (b, a) = (budgets.clone(), attacker.clone());
        async move { (b.used_by(&a) == 0).then_some(()) }
    })
    .await;
    // Node 2 has no agreement with node 0 and the record is node 1's: an answer, not a status.
    let ack = small(rec).await.expect("served again");
    assert!(
        matches!(ack.result, Some(pb::delivery_ack::Result::Rejection(_))),
        "{ack:?}"
    );
    // The answer can come before the server drops the finished request body (receiving is
    // pipelined), so its bytes are released just after.
    interflow_tests::eventually(
        Duration::from_secs(10),
        "the listener budget released",
        || {
            let b = budgets.clone();
            async move { (b.listener().used() == 0).then_some(()) }
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_records_is_slowed_and_logged_as_summaries() {
    const N: usize = 3000;
    let c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            with_limits(
                text,
                "peer_records_per_sec = 1000\npeer_records_burst = 1000\nreject_log_interval_secs = 3600",
            );
        }
    })
    .await;
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let rec = c
        .crafted_record(1, 0, 1, RecordId::ZERO, &forger, 7)
        .into_decoded()
        .into_signed();
    let node = c.node(0).clone();
    let lines_before = node.reject_log.lines();
    let started = std::time::Instant::now();
    let mut acks = c
        .exchange_from(1, 0)
        .await
        .deliver(tokio_stream::iter(vec![rec; N]))
        .await
        .unwrap()
        .into_inner();
    let mut rejected = 0;
    while let Some(a) = acks.next().await {
        match a.unwrap().result {
            Some(pb::delivery_ack::Result::Rejection(r)) => {
                assert_eq!(r.reason, pb::RejectReason::BadSignature as i32);
                rejected += 1;
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    // Every record is answered, but no faster than the record rate: the first 1000 at once,
    // the other 2000 at 1000 a second.
    assert_eq!(rejected, N);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{N} records went through in {:?}",
        started.elapsed()
    );
    assert!(
        node.metrics
            .render()
            .contains("interflow_records_throttled_total")
    );
    // One log line for the whole flood so far; the rest wait for the summary, which the
    // metric does not: it counts every record.
    assert_eq!(node.reject_log.lines() - lines_before, 1);
    assert_eq!(node.reject_log.pending(c.region(1)), N as u64 - 1);
    let metrics = node.metrics.render();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("interflow_records_rejected_total") && l.contains("bad_signature"))
        .expect("a rejection metric");
    assert!(line.ends_with(&format!(" {N}")), "{line}");
    let summaries = node.reject_log.flush();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].total(), N as u64 - 1);
    assert_eq!(node.reject_log.lines() - lines_before, 2);
    drop(node);
    c.shutdown().await;
}

/// The master key that seals the store: without it the node does not start, with another key
/// it refuses to open the store (authenticated), and a key file others can read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_master_key_refuses_to_start_and_serves_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = TestCluster::start(2).await;
    let b = c.region(1);
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![interflow_node::dev::sample_submission(7, b.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.results[0].outcome.is_some());
    c.stop(0).await;
    let config = c.config_path(0);
    let key = config.parent().unwrap().join("keys/master.key");
    let text = std::fs::read_to_string(&config).unwrap();
    let original = std::fs::read(&key).unwrap();

    // No master key configured.
    std::fs::write(
        &config,
        text.replace("master_key = \"keys/master.key\"\n", ""),
    )
    .unwrap();
    let err = format!("{:#}", c.try_restart(0).await.unwrap_err());
    assert!(err.contains("no master key configured"), "{err}");
    std::fs::write(&config, &text).unwrap();

    // The configured file is gone.
    std::fs::remove_file(&key).unwrap();
    let err = format!("{:#}", c.try_restart(0).await.unwrap_err());
    assert!(err.contains("cannot read the master key file"), "{err}");

    // Another key: the keyring does not authenticate, nothing is served.
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = format!("{:#}", c.try_restart(0).await.unwrap_err());
    assert!(
        err.contains("authenticated check failed") && err.contains("not the key"),
        "{err}"
    );

    // The right key in a file others can read.
    std::fs::write(&key, &original).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = format!("{:#}", c.try_restart(0).await.unwrap_err());
    assert!(err.contains("chmod 600"), "{err}");

    // Put right, it starts and serves what it stored.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    c.try_restart(0).await.unwrap();
    let out = c.node(0).clone();
    let ch = ChannelId::new(c.region(0), b);
    assert_eq!(out.store.head(ch).0, 1);
    assert!(
        out.store
            .run(move |s| s.record_at(ch, 1))
            .await
            .unwrap()
            .is_some()
    );
    c.shutdown().await;
}
