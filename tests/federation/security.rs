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
