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

/// The metric names a scrape offers: every sample's name, and for a family without samples
/// yet (an inbox consumer gauge before any consumer exists) the names its samples will have.
fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let body = text.split_once("\r\n\r\n").map_or(text, |(_, b)| b);
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

/// `interflow_*` and `process_*` names in a file of alert rules or a dashboard.
fn names_used(text: &str) -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    for prefix in ["interflow_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            // A whole identifier only: not `xinterflow_`.
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_dashboards_name_is_exported() {
    let c = TestCluster::start(2).await;
    // The consumer lag gauges have a series per consumer, so as in any deployment with a
    // receiving system there is one.
    let a = c.region(0);
    c.intake(1)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(0, a.as_str())],
        })
        .await
        .unwrap();
    let inbox = c.inbox(0).await;
    eventually(
        Duration::from_secs(10),
        "a consumer acknowledged an arrival",
        || {
            let mut inbox = inbox.clone();
            async move {
                let ack = pb::AckRequest {
                    consumer: "clinic".into(),
                    position: 1,
                };
                inbox.ack(ack).await.ok()?;
                let list = inbox.consumers(pb::ConsumersRequest {}).await.ok()?;
                (!list.into_inner().consumers.is_empty()).then_some(())
            }
        },
    )
    .await;
    let exported = exported_names(&scrape(c.metrics_addr(0)).await);
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = vec![deploy.join("prometheus/alerts.yaml")];
    for e in std::fs::read_dir(deploy.join("grafana")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            files.push(p);
        }
    }
    assert!(files.len() >= 2, "no dashboard in deploy/grafana");
    for f in files {
        let used = names_used(&std::fs::read_to_string(&f).unwrap());
        assert!(!used.is_empty(), "{} names no metric", f.display());
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{} names metrics the node does not export: {missing:?}\nexported: {exported:?}",
            f.display()
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_with_latencies_process_build_and_every_peer_from_start() {
    let c = TestCluster::start(3).await;
    // Node 1 has two agreement peers; before anything was sent both show 0 pending.
    let fresh = scrape(c.metrics_addr(1)).await;
    for i in [0, 2] {
        let peer = c.region(i);
        let line = format!(
            "interflow_pending_records{{region=\"{}\",peer=\"{peer}\"}} 0",
            c.region(1)
        );
        assert!(fresh.contains(&line), "no `{line}` in {fresh}");
    }
    let b = c.region(1);
    c.intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(0, b.as_str())],
        })
        .await
        .unwrap();
    let a = c.region(0);
    let text = eventually(Duration::from_secs(10), "a delivery round trip", || {
        let addr = c.metrics_addr(0);
        async move {
            let t = scrape(addr).await;
            let rt = format!(
                "interflow_deliver_round_trip_seconds_count{{region=\"{a}\",peer=\"{b}\"}} 1"
            );
            t.contains(&rt).then_some(t)
        }
    })
    .await;
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    for needle in [
        format!(
            "interflow_build_info{{region=\"{a}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        format!("interflow_submit_duration_seconds_count{{region=\"{a}\"}} 1"),
        "interflow_store_fsync_duration_seconds_count".to_owned(),
        format!("interflow_channel_held{{region=\"{a}\",peer=\"{b}\"}} 0"),
        format!("interflow_certificate_expiry_seconds{{region=\"{a}\",listener=\"peer\"}} "),
        "process_resident_memory_bytes ".to_owned(),
        "process_cpu_seconds_total ".to_owned(),
        "process_open_fds ".to_owned(),
        "process_start_time_seconds ".to_owned(),
    ] {
        assert!(text.contains(&needle), "no `{needle}` in {text}");
    }
    // The dev certificates are valid for a while yet: a positive number of seconds.
    let expiry = text
        .lines()
        .find(|l| l.starts_with("interflow_certificate_expiry_seconds{") && l.contains("\"local\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<i64>().ok())
        .expect("local certificate expiry");
    assert!(expiry > 86_400, "{expiry}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_records_are_counted_from_the_store_at_start_even_without_delivery() {
    let mut c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            *text = text.replace("[delivery]\n", "[delivery]\nenabled = false\n");
        }
    })
    .await;
    let b = c.region(1);
    let items: Vec<_> = (0..3).map(|n| sample_submission(n, b.as_str())).collect();
    c.intake(0)
        .await
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap();
    c.stop(0).await;
    c.restart(0).await;
    let text = scrape(c.metrics_addr(0)).await;
    let line = format!(
        "interflow_pending_records{{region=\"{}\",peer=\"{b}\"}} 3",
        c.region(0)
    );
    assert!(text.contains(&line), "no `{line}` in {text}");
    c.shutdown().await;
}
