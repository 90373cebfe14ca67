// Over 600 lines on purpose: a canned answer for every `Admin` RPC (most of the file) and the
// tests that read them; split up, each test would have to look in two places.
//! The connected commands against a fake node: canned `Admin` answers (stuck channels, stopped
//! channels, reconciliation anomalies, a record to read) that a real node would only give
//! after a staged failure, served behind `interflow_tls::tls_incoming` with a local PKI made by
//! `interflowctl certs`, reached through a node config file (`--config`). What a real node
//! stores is not tested here (`submit` runs against real nodes in `e2e.rs`); the wire, TLS,
//! precedence, output and exit codes are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use interflow_core::NationalId;
use interflow_core::payload::Payload;
use interflow_core::pb::admin_server::{Admin, AdminServer};
use interflow_core::pseudonym::{PseudonymKey, SubjectRef};
use interflow_core::record::{ChannelId, NewRecord, RecordId, VerifiedRecord};
use interflow_core::{keys, pb};
use interflow_tls::{PeerIdentity, ReloadableServerConfig, Role, ServerTlsFiles};
use tempfile::TempDir;
use tonic::{Request, Response, Status};

use crate::{interflowctl, p, run};

const ID: &str = "11010519491231002X";

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
            "a `{r}` certificate cannot call this service; use a `{role}` certificate"
        ))),
        _ => Err(Status::unauthenticated("no client certificate identity")),
    }
}

fn sample_record(now: i64) -> VerifiedRecord {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let id = NationalId::parse(ID, today).unwrap();
    NewRecord {
        channel: ChannelId::new("310115".parse().unwrap(), "110105".parse().unwrap()),
        agreement_id: "agr-310115-110105".into(),
        subject: SubjectRef::derive(&PseudonymKey::from_bytes([7; 32]), &id),
        issued_at_ms: now - 60_000,
        supersedes: None,
        payload: Payload::Pregnancy(
            pb::PregnancyStatus {
                state: pb::PregnancyState::Pregnant as i32,
                observed_on: Some(pb::Date {
                    year: 2025,
                    month: 11,
                    day: 10,
                }),
                expected_delivery: Some(pb::YearMonth {
                    year: 2026,
                    month: 6,
                }),
                event_date: None,
                prenatal_visits: 3,
                service_point: "3101150042".into(),
            }
            .try_into()
            .unwrap(),
        ),
    }
    .seal(1, RecordId::ZERO, &keys::generate_signing_key())
    .unwrap()
}

struct FakeAdmin {
    record: VerifiedRecord,
}

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
                },
            ],
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
                },
            ],
        }))
    }

    async fn get_record(
        &self,
        req: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        require(&req, Role::Admin)?;
        if req.get_ref().record_id != self.record.id().0 {
            return Err(Status::not_found("no such record"));
        }
        Ok(Response::new(pb::GetRecordResponse {
            record: Some(self.record.signed().clone()),
            signature_valid: true,
            erased: false,
        }))
    }

    async fn lookup(
        &self,
        req: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        require(&req, Role::Admin)?;
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let id = NationalId::parse(&req.get_ref().national_id, today)
            .map_err(|e| Status::invalid_argument(format!("`national_id`: {e}")))?;
        Ok(Response::new(pb::LookupResponse {
            masked_id: id.masked(),
            current: vec![pb::SubjectStatus {
                agreement_id: "agr-310115-110105".into(),
                peer: "110105".into(),
                kind: pb::RecordKind::PregnancyStatus as i32,
                current: Some(self.record.signed().clone()),
            }],
            timeline: vec![self.record.signed().clone()],
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

    async fn verify_log(
        &self,
        req: Request<pb::VerifyLogRequest>,
    ) -> Result<Response<pb::VerifyLogResponse>, Status> {
        require(&req, Role::Admin)?;
        Ok(Response::new(pb::VerifyLogResponse {
            ok: true,
            records_checked: 12,
            audit_entries_checked: 30,
            problems: vec![],
        }))
    }

    async fn audit_log(
        &self,
        req: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        require(&req, Role::Admin)?;
        let since = req.get_ref().since_ms;
        assert!(since > 0, "--since 24h must become a time");
        Ok(Response::new(pb::AuditLogResponse {
            entries: vec![pb::AuditEntry {
                index: 1,
                at_ms: since + 1,
                actor: "admin:ops".into(),
                action: "Admin.Lookup".into(),
                subjects: vec!["ref:0011223344556677".into()],
                prev_hash: vec![0; 32],
            }],
        }))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        require(&req, Role::Admin)?;
        Ok(Response::new(pb::StatsResponse {
            region_code: "310115".into(),
            records_outbound: 12,
            records_inbound: 4,
            pending: 5,
            equivocations: 0,
            audit_entries: 30,
            reconcile_runs: 4,
        }))
    }

    async fn disclosure(
        &self,
        req: Request<pb::DisclosureRequest>,
    ) -> Result<Response<pb::DisclosureResponse>, Status> {
        require(&req, Role::Admin)?;
        Ok(Response::new(pb::DisclosureResponse {
            masked_id: "**************002X".into(),
            exchanges: vec![],
            reads: vec![],
        }))
    }

    async fn resume_channel(
        &self,
        req: Request<pb::ResumeChannelRequest>,
    ) -> Result<Response<pb::ResumeChannelResponse>, Status> {
        require(&req, Role::Admin)?;
        Ok(Response::new(pb::ResumeChannelResponse {
            was_stopped: req.get_ref().origin == "110105",
            evidence: 1,
        }))
    }
}

struct FakeNode {
    dir: TempDir,
    addr: SocketAddr,
    record: VerifiedRecord,
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
            vec![
                "certs", "client", "--ca-dir", ca, "--role", "intake", "--name", "his", "--out",
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
        let record = sample_record(now_ms());
        let admin = FakeAdmin {
            record: record.clone(),
        };
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AdminServer::new(admin))
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
intake_cert = "clients/intake.pem"
intake_key = "clients/intake.key"
"#
            ),
        )
        .unwrap();
        FakeNode {
            dir,
            addr,
            record,
            task,
        }
    }

    fn path(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }

    fn config(&self) -> PathBuf {
        self.path("interflow.toml")
    }

    /// Runs `interflowctl <args> --config <this node>`.
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.config();
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
async fn connection_flags_work_before_and_after_the_command() {
    let node = FakeNode::start().await;
    let config = node.config();
    // Before the command, as `interflow dev` prints them.
    let (code, stdout, stderr) = run(&["--config", p(&config), "pending", "--max-age", "3h"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("110105"), "{stdout}");
    let (code, stdout, stderr) = run(&["--config", p(&config), "--json", "stats"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["records_outbound"], 12);
    // Some before, some after: a flag after the command still beats the config file.
    let cert = node.path("clients/intake.pem");
    let key = node.path("clients/intake.key");
    let (code, _, stderr) = run(&[
        "--config",
        p(&config),
        "--cert",
        p(&cert),
        "stats",
        "--key",
        p(&key),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("admin role"), "{stderr}");
    // `--config` and `--dev-node` exclude each other on either side of the command.
    for args in [
        ["--config", p(&config), "pending", "--dev-node", "310115"],
        ["--dev-node", "310115", "pending", "--config", p(&config)],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(stderr.contains("cannot be used with"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_problems_name_the_address_certificate_and_what_to_check() {
    let node = FakeNode::start().await;
    // Nothing listens on a port we just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = node.ctl(&["pending", "--addr", &closed.to_string()]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&closed.to_string()), "{stderr}");
    assert!(stderr.contains("clients/admin.pem"), "{stderr}");
    assert!(stderr.contains("--addr"), "{stderr}");

    // The wrong region: the server name does not match the node's certificate.
    let (code, _, stderr) = node.ctl(&["stats", "--region", "110105"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("110105.local.interflow"), "{stderr}");

    // An intake certificate cannot call Admin; the flag overrides the config file.
    let cert = node.path("clients/intake.pem");
    let key = node.path("clients/intake.key");
    let (code, _, stderr) = node.ctl(&["stats", "--cert", p(&cert), "--key", p(&key)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("admin role"), "{stderr}");

    // Environment variables apply when no flag is given.
    let out = interflowctl()
        .args(["--json", "stats"])
        .env("INTERFLOW_ADDR", node.addr.to_string())
        .env("INTERFLOW_CA", node.path("local-ca/ca.pem"))
        .env("INTERFLOW_CERT", node.path("clients/admin.pem"))
        .env("INTERFLOW_KEY", node.path("clients/admin.key"))
        .env("INTERFLOW_REGION", "310115")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records_outbound"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_print_a_national_id_or_a_whole_subject_ref() {
    let node = FakeNode::start().await;
    let full_ref = hex::encode(node.record.subject().as_bytes());
    let id = node.record.id().to_hex();

    let (code, stdout, stderr) = node.ctl(&["record", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("ref:{}", &full_ref[..16])),
        "{stdout}"
    );
    assert!(
        stdout.contains("3101150042") && stdout.contains("2026-06"),
        "{stdout}"
    );
    assert!(!stdout.contains(&full_ref));

    let (code, stdout, _) = node.ctl(&["--json", "record", &id]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["record"]["seq"], 1);
    assert_eq!(v["record"]["payload"]["type"], "pregnancy");
    assert_eq!(v["record"]["payload"]["expected_delivery"], "2026-06");
    assert!(!stdout.contains(&full_ref));

    let (code, _, stderr) = node.ctl(&["record", "abc"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("64 hex"), "{stderr}");

    // `--id -` reads the ID from stdin; only the masked form comes back.
    let config = node.config();
    let out = interflowctl()
        .args(["lookup", "--id", "-", "--config", p(&config)])
        .write_stdin(format!("{ID}\n"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("**************002X"), "{stdout}");
    assert!(stdout.contains("pregnant, due 2026-06"), "{stdout}");
    assert!(
        !stdout.contains(ID) && !stdout.contains(&full_ref),
        "{stdout}"
    );

    // A mistyped ID is refused before it reaches the node, and is not echoed.
    let (code, _, stderr) = node.ctl(&["lookup", "--id", "110105194912310021"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("check character"), "{stderr}");
    assert!(!stderr.contains("110105194912310021"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_stats_verify_audit_and_reconcile() {
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

    let (code, stdout, _) = node.ctl(&["verify"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("checked 12 records"), "{stdout}");

    let (code, stdout, stderr) = node.ctl(&["audit", "--since", "24h"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("Admin.Lookup") && stdout.contains("admin:ops"),
        "{stdout}"
    );

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
