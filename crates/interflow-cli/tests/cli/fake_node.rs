//! The connected commands against a fake node, for states a real node shows only after a staged
//! failure: a channel stuck behind retry errors, a stopped channel, reconciliation anomalies.
//! Canned `Admin` answers are served behind `interflow_tls::tls_incoming` with a local PKI made
//! by `interflowctl certs`, reached through a node config file (`--config`); RPCs no test here
//! needs answer `unimplemented`. Everything a real node can show cheaply runs against real
//! nodes (`e2e.rs`, `connection.rs`).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use interflow_core::pb;
use interflow_core::pb::admin_server::{Admin, AdminServer};
use interflow_tls::{PeerIdentity, ReloadableServerConfig, Role, ServerTlsFiles};
use tempfile::TempDir;
use tonic::{Request, Response, Status};

use crate::{p, run};

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

fn require<T>(req: &Request<T>, role: Role) -> Result<(), Status> {
    match interflow_tls::peer_identity(req) {
        Some(PeerIdentity::Local { role: r, .. }) if r == role => Ok(()),
        Some(PeerIdentity::Local { role: r, .. }) => Err(Status::permission_denied(format!(
            "an `{r}` certificate cannot call this service; use an `{role}` certificate"
        ))),
        _ => Err(Status::unauthenticated("no client certificate identity")),
    }
}

struct FakeAdmin;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn channel_report(anomalies: Vec<pb::Anomaly>) -> pb::ChannelReport {
    pb::ChannelReport {
        origin: "110105".into(),
        destination: "310115".into(),
        local_head_before: 3,
        local_head_after: 5,
        peer_head: 5,
        records_fetched: 2,
        anomalies: anomalies.into_iter().map(|a| a as i32).collect(),
    }
}

#[tonic::async_trait]
impl Admin for FakeAdmin {
    type ReconcileStream = BoxStream<pb::ReconcileProgress>;

    async fn list_channels(
        &self,
        req: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        require(&req, Role::Admin)?;
        Ok(Response::new(pb::ListChannelsResponse {
            channels: vec![
                pb::ChannelInfo {
                    origin: "310115".into(),
                    destination: "110105".into(),
                    direction: pb::Direction::Outbound as i32,
                    head_seq: 12,
                    head_hash: vec![0xaa; 32],
                    acked_seq: 7,
                    stopped: false,
                    held: false,
                    removed: false,
                },
                pb::ChannelInfo {
                    origin: "110105".into(),
                    destination: "310115".into(),
                    direction: pb::Direction::Inbound as i32,
                    head_seq: 4,
                    head_hash: vec![0xbb; 32],
                    acked_seq: 0,
                    stopped: true,
                    held: false,
                    removed: false,
                },
            ],
            last_reload_error: String::new(),
        }))
    }

    async fn list_pending(
        &self,
        req: Request<pb::ListPendingRequest>,
    ) -> Result<Response<pb::ListPendingResponse>, Status> {
        require(&req, Role::Admin)?;
        let now = now_ms();
        Ok(Response::new(pb::ListPendingResponse {
            now_ms: now,
            channels: vec![
                pb::PendingChannel {
                    destination: "440305".into(),
                    head_seq: 9,
                    acked_seq: 9,
                    pending_count: 0,
                    oldest_pending_issued_at_ms: 0,
                    attempts: 0,
                    last_error: String::new(),
                    next_attempt_at_ms: 0,
                    held: false,
                    held_since_ms: 0,
                },
                pb::PendingChannel {
                    destination: "110105".into(),
                    head_seq: 12,
                    acked_seq: 7,
                    pending_count: 5,
                    oldest_pending_issued_at_ms: now - 2 * 3_600_000,
                    attempts: 7,
                    last_error: "peer `110105` unreachable: connection refused".into(),
                    next_attempt_at_ms: now + 30_000,
                    held: false,
                    held_since_ms: 0,
                },
            ],
        }))
    }

    async fn reconcile(
        &self,
        req: Request<pb::ReconcileRequest>,
    ) -> Result<Response<Self::ReconcileStream>, Status> {
        require(&req, Role::Admin)?;
        let anomalies = if req.get_ref().peer == "110105" {
            vec![]
        } else {
            vec![pb::Anomaly::PeerUnreachable]
        };
        let now = now_ms();
        let events = vec![
            Ok(pb::ReconcileProgress {
                event: Some(pb::reconcile_progress::Event::PeerDone(pb::PeerDone {
                    peer: "110105".into(),
                    channels: vec![channel_report(anomalies.clone())],
                })),
            }),
            Ok(pb::ReconcileProgress {
                event: Some(pb::reconcile_progress::Event::Report(pb::ReconcileReport {
                    run_id: 1,
                    started_at_ms: now - 250,
                    finished_at_ms: now,
                    channels: vec![channel_report(anomalies)],
                })),
            }),
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(events))))
    }

    async fn list_reconcile_reports(
        &self,
        req: Request<pb::ListReconcileReportsRequest>,
    ) -> Result<Response<pb::ListReconcileReportsResponse>, Status> {
        require(&req, Role::Admin)?;
        Ok(Response::new(pb::ListReconcileReportsResponse {
            reports: vec![pb::ReconcileReport {
                run_id: 4,
                started_at_ms: 1_000,
                finished_at_ms: 1_300,
                channels: vec![channel_report(vec![pb::Anomaly::HeadsRegressed])],
            }],
        }))
    }

    async fn get_record(
        &self,
        _: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        Err(unused("GetRecord"))
    }

    async fn lookup(
        &self,
        _: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        Err(unused("Lookup"))
    }

    async fn verify_log(
        &self,
        _: Request<pb::VerifyLogRequest>,
    ) -> Result<Response<pb::VerifyLogResponse>, Status> {
        Err(unused("VerifyLog"))
    }

    async fn audit_log(
        &self,
        _: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        Err(unused("AuditLog"))
    }

    async fn stats(
        &self,
        _: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Err(unused("Stats"))
    }

    /// No agreement with residence notices: an empty worklist for `pending`.
    async fn coverage(
        &self,
        _: Request<pb::CoverageRequest>,
    ) -> Result<Response<pb::CoverageResponse>, Status> {
        Ok(Response::new(pb::CoverageResponse::default()))
    }

    async fn list_agreements(
        &self,
        _: Request<pb::ListAgreementsRequest>,
    ) -> Result<Response<pb::ListAgreementsResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn install_agreement(
        &self,
        _: Request<pb::InstallAgreementRequest>,
    ) -> Result<Response<pb::InstallAgreementResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn terminate_agreement(
        &self,
        _: Request<pb::TerminateAgreementRequest>,
    ) -> Result<Response<pb::TerminateAgreementResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn disclosure(
        &self,
        _: Request<pb::DisclosureRequest>,
    ) -> Result<Response<pb::DisclosureResponse>, Status> {
        Err(unused("Disclosure"))
    }

    async fn resume_channel(
        &self,
        _: Request<pb::ResumeChannelRequest>,
    ) -> Result<Response<pb::ResumeChannelResponse>, Status> {
        Err(unused("ResumeChannel"))
    }

    async fn reload(
        &self,
        _: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        Err(unused("Reload"))
    }

    /// A directory without expiry: `pending` raises no directory alarm.
    async fn federation(
        &self,
        _: Request<pb::FederationRequest>,
    ) -> Result<Response<pb::FederationResponse>, Status> {
        Ok(Response::new(pb::FederationResponse {
            directory_serial: 1,
            directory_source: "file".into(),
            ..Default::default()
        }))
    }
}

/// The answer of an RPC that real nodes cover (`e2e.rs`, `connection.rs`).
fn unused(rpc: &str) -> Status {
    Status::unimplemented(format!("the fake node has no canned `Admin.{rpc}`"))
}

struct FakeNode {
    dir: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNode {
    /// Makes the local PKI with `interflowctl certs`, writes a node config and serves.
    async fn start() -> FakeNode {
        let dir = tempfile::tempdir().unwrap();
        let d = |s: &str| dir.path().join(s);
        let (ca, tls, clients) = (d("local-ca"), d("tls"), d("clients"));
        let (ca, tls, clients) = (p(&ca), p(&tls), p(&clients));
        let steps: Vec<Vec<&str>> = vec![
            vec!["certs", "ca", "--name", "local", "--out", ca],
            vec![
                "certs",
                "local-server",
                "--ca-dir",
                ca,
                "--region",
                "310115",
                "--out",
                tls,
            ],
            vec![
                "certs", "client", "--ca-dir", ca, "--role", "admin", "--name", "ops", "--out",
                clients,
            ],
        ];
        for step in steps {
            let (code, _, stderr) = run(&step);
            assert_eq!(code, 0, "{step:?}: {stderr}");
        }
        let config = Arc::new(
            ReloadableServerConfig::load(ServerTlsFiles {
                ca: d("local-ca/ca.pem"),
                cert: d("tls/local-server.pem"),
                key: d("tls/local-server.key"),
                crls: vec![],
            })
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = interflow_tls::tls_incoming(listener, config, Duration::from_secs(5), 8);
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AdminServer::new(FakeAdmin))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        // Only what interflowctl reads matters; the rest shows that other keys are ignored.
        std::fs::write(
            d("interflow.toml"),
            format!(
                r#"version = 1
region = "310115"
name = "fake"
data_dir = "data"
[peer]
listen = "0.0.0.0:7443"
[local]
listen = "{addr}"
[tls]
federation_ca = "tls/federation-ca.pem"
local_ca = "local-ca/ca.pem"
local_cert = "tls/local-server.pem"
local_key = "tls/local-server.key"
[limits]
max_submit_batch = 1000
[client]
admin_cert = "clients/admin.pem"
admin_key = "clients/admin.key"
"#
            ),
        )
        .unwrap();
        FakeNode { dir, task }
    }

    /// Runs `interflowctl <args> --config <this node>`.
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let config: PathBuf = self.dir.path().join("interflow.toml");
        let mut all = args.to_vec();
        all.extend(["--config", p(&config)]);
        run(&all)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_names_what_is_stuck_and_serves_as_a_check() {
    let node = FakeNode::start().await;
    let (code, stdout, stderr) = node.ctl(&["pending"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("STUCK"), "{stdout}");
    assert!(stdout.contains("connection refused"), "{stdout}");
    assert!(
        stdout.contains("2h00m") || stdout.contains("1h59m"),
        "{stdout}"
    );
    let stuck_line = stdout.lines().position(|l| l.contains("110105")).unwrap();
    let idle_line = stdout.lines().position(|l| l.contains("440305")).unwrap();
    assert!(stuck_line < idle_line, "worst first: {stdout}");

    let (code, _, _) = node.ctl(&["pending", "--max-age", "3h"]);
    assert_eq!(code, 0);

    let (code, stdout, _) = node.ctl(&["--json", "pending"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["channels"][0]["destination"], "110105");
    let age = v["channels"][0]["oldest_pending_age_secs"]
        .as_u64()
        .unwrap();
    assert!((7190..=7300).contains(&age), "{age}");
    assert_eq!(
        v["channels"][1]["oldest_pending_age_secs"],
        serde_json::Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_show_a_stopped_channel_and_reconcile_its_anomalies() {
    let node = FakeNode::start().await;
    let (code, stdout, stderr) = node.ctl(&["channels"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("310115->110105") && stdout.contains("STOPPED"),
        "{stdout}"
    );
    let (code, stdout, _) = node.ctl(&["--json", "channels"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let out = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["direction"] == "outbound")
        .unwrap();
    assert_eq!(out["pending"], 5);

    let (code, stdout, _) = node.ctl(&["reconcile", "--peer", "110105"]);
    assert_eq!(code, 0, "{stdout}");
    let peer = stdout.find("peer 110105").unwrap();
    let report = stdout.find("run 1 ").unwrap();
    assert!(peer < report, "{stdout}");

    let (code, stdout, _) = node.ctl(&["--json", "reconcile"]);
    assert_eq!(code, 1, "an anomaly fails the check");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "peer_done");
    assert_eq!(events[0]["channels"][0]["anomalies"][0], "peer_unreachable");
    assert_eq!(events[1]["event"], "report");
    assert_eq!(events[1]["anomalies"], 1);

    let (code, stdout, _) = node.ctl(&["reconcile", "reports", "--limit", "3"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("heads_regressed"), "{stdout}");
}
