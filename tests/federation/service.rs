//! What operators' tooling sees: health, metrics, and the per-identity rate limit.

use std::time::Duration;

use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_tests::{TestCluster, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_for_every_service() {
    let c = TestCluster::start(2).await;
    let mut health = HealthClient::new(c.admin_channel(0).await);
    for service in [
        "",
        "interflow.v1.Intake",
        "interflow.v1.Admin",
        "interflow.v1.Inbox",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service `{service}`"
        );
    }
    c.shutdown().await;
}

/// The serving status of `service` on a listener, or the gRPC code when it is not known there.
async fn health_of(ch: tonic::transport::Channel, service: &str) -> Result<i32, tonic::Code> {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// The peer listener of node `i`, as its neighbour `j`.
async fn peer_channel(c: &TestCluster, j: usize, i: usize) -> tonic::transport::Channel {
    let d = c.dir.path().join(&c.fed.nodes[j].region).join("tls");
    c.peer_channel_as(
        i,
        &d.join("federation-ca.pem"),
        &d.join("node.pem"),
        &d.join("node.key"),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_reports_health_of_its_own_services_only() {
    let c = TestCluster::start(2).await;
    let peer = peer_channel(&c, 1, 0).await;
    let local = c.admin_channel(0).await;
    let serving = Ok(ServingStatus::Serving as i32);
    assert_eq!(health_of(peer.clone(), "").await, serving);
    assert_eq!(
        health_of(peer.clone(), "interflow.v1.Exchange").await,
        serving
    );
    for s in [
        "interflow.v1.Admin",
        "interflow.v1.Intake",
        "interflow.v1.Inbox",
    ] {
        assert_eq!(
            health_of(peer.clone(), s).await,
            Err(tonic::Code::NotFound),
            "{s}"
        );
        assert_eq!(health_of(local.clone(), s).await, serving, "{s}");
    }
    assert_eq!(
        health_of(local, "interflow.v1.Exchange").await,
        Err(tonic::Code::NotFound)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_not_serving_while_the_store_refuses_writes() {
    let mut c = TestCluster::start(2).await;
    let b = c.region(1);
    c.intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(0, b.as_str())],
        })
        .await
        .unwrap();
    c.stop(0).await;
    // An anchor ahead of the data: records once durable are gone, so the store opens
    // read-only and refuses writes.
    let anchor = c.data_dir(0).join("heads.anchor");
    let text = std::fs::read_to_string(&anchor).unwrap();
    let mut heads: std::collections::BTreeMap<String, u64> = serde_json::from_str(&text).unwrap();
    assert!(!heads.is_empty(), "{text}");
    for seq in heads.values_mut() {
        *seq += 100;
    }
    std::fs::write(&anchor, serde_json::to_string(&heads).unwrap()).unwrap();
    c.restart(0).await;
    let not_serving = Ok(ServingStatus::NotServing as i32);
    let peer = peer_channel(&c, 1, 0).await;
    let local = c.admin_channel(0).await;
    for s in ["", "interflow.v1.Exchange"] {
        assert_eq!(health_of(peer.clone(), s).await, not_serving, "peer `{s}`");
    }
    for s in [
        "",
        "interflow.v1.Intake",
        "interflow.v1.Admin",
        "interflow.v1.Inbox",
    ] {
        assert_eq!(
            health_of(local.clone(), s).await,
            not_serving,
            "local `{s}`"
        );
    }
    c.shutdown().await;
}

/// The service names a v1alpha reflection client is given by a listener.
async fn v1alpha_services(ch: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("v1alpha reflection is served")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let mut names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1alpha_reflection_client_lists_each_listeners_own_services() {
    let c = TestCluster::start(2).await;
    let local = v1alpha_services(c.admin_channel(0).await).await;
    for s in [
        "interflow.v1.Intake",
        "interflow.v1.Admin",
        "interflow.v1.Inbox",
        "grpc.health.v1.Health",
    ] {
        assert!(local.contains(&s.to_owned()), "{s} not in {local:?}");
    }
    assert!(
        !local.contains(&"interflow.v1.Exchange".to_owned()),
        "{local:?}"
    );
    let peer = v1alpha_services(peer_channel(&c, 1, 0).await).await;
    assert!(
        peer.contains(&"interflow.v1.Exchange".to_owned()),
        "{peer:?}"
    );
    for s in [
        "interflow.v1.Admin",
        "interflow.v1.Intake",
        "interflow.v1.Inbox",
    ] {
        assert!(!peer.contains(&s.to_owned()), "{s} in {peer:?}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_submissions_and_deliveries_and_carry_no_personal_data() {
    let c = TestCluster::start(2).await;
    let b = c.region(1);
    let items: Vec<_> = (0..5).map(|n| sample_submission(n, b.as_str())).collect();
    c.intake(0)
        .await
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap();
    let a_node = c.node(0).clone();
    let ch = ChannelId::new(c.region(0), b);
    eventually(Duration::from_secs(10), "delivered", || {
        let n = a_node.clone();
        async move {
            let st = n.store.run(move |s| s.channel_state(ch)).await.ok()?;
            (st.acked_seq == 5).then_some(())
        }
    })
    .await;
    let text = scrape(c.metrics_addr(0)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("interflow_records_submitted_total{region=\"310115\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("interflow_records_delivered_total{region=\"310115\",peer=\"110105\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("interflow_store_writable{region=\"310115\"} 1"),
        "{text}"
    );
    let at_b = scrape(c.metrics_addr(1)).await;
    assert!(
        at_b.contains("interflow_records_received_total{region=\"110105\"} 5"),
        "{at_b}"
    );
    for n in 0..5 {
        assert!(!text.contains(&synthetic_id(n)) && !at_b.contains(&synthetic_id(n)));
    }
    drop(a_node);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_is_told_to_slow_down() {
    let c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            text.push_str("\n[limits]\npeer_requests_per_sec = 1\npeer_burst = 2\n");
        }
    })
    .await;
    let mut admin = c.admin(0).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(match admin.stats(pb::StatsRequest {}).await {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        });
    }
    assert_eq!(codes[0], tonic::Code::Ok);
    assert!(codes.contains(&tonic::Code::ResourceExhausted), "{codes:?}");
    c.shutdown().await;
}
