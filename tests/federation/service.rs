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
        "interflow.v1.Exchange",
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
