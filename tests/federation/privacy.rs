//! Health data never leaves through logs, metrics or error messages: national IDs and subject
//! refs used in a busy scenario never appear in anything the nodes log (at every level, from
//! every test running in this process) or answer.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use interflow_core::pb;
use interflow_core::pseudonym::SubjectRef;
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_tests::TestCluster;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this test process from the moment of the first call.
fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Capture::default();
        let w = c.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,h2=info,hyper=info,rustls=info,tower=info,sled=info",
            ))
            .with_writer(move || w.clone())
            // Log every span as it opens, so span fields are checked too.
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
            .with_ansi(false)
            .try_init();
        c
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn national_ids_and_subject_refs_never_reach_logs_or_errors() {
    let capture = logs();
    let mut c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    let ids: Vec<String> = (500..510).map(synthetic_id).collect();
    let mut items: Vec<_> = (500..510)
        .map(|n| sample_submission(n, b.as_str()))
        .collect();
    // A bad check character, a bad payload and no agreement: each error must not echo the ID.
    let mut bad_id = items[0].clone();
    bad_id.idempotency_key = "bad-id".into();
    let sentinel = format!("{}0", &ids[0][..17]);
    bad_id.national_id = sentinel.clone();
    let mut bad_payload = items[1].clone();
    bad_payload.idempotency_key = "bad-payload".into();
    if let Some(pb::submission::Payload::Contraception(p)) = &mut bad_payload.payload {
        p.observed_on = Some(pb::Date {
            year: 2025,
            month: 2,
            day: 30,
        });
    }
    let mut no_agreement = items[2].clone();
    no_agreement.idempotency_key = "no-agreement".into();
    no_agreement.destination = "440305".into();
    items.extend([bad_id, bad_payload, no_agreement]);

    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap()
        .into_inner();
    let mut answers = format!("{resp:?}");
    let mut admin = c.admin(1).await;
    for id in &ids {
        // Lookups at the receiver, while B is up; then with B down, deliveries fail and retry.
        answers.push_str(&format!(
            "{:?}",
            admin
                .lookup(pb::LookupRequest {
                    purpose: pb::Purpose::ServiceContinuity as i32,
                    case_ref: String::new(),
                    national_id: id.clone()
                })
                .await
        ));
    }
    answers.push_str(&format!(
        "{:?}",
        admin
            .lookup(pb::LookupRequest {
                purpose: pb::Purpose::ServiceContinuity as i32,
                case_ref: String::new(),
                national_id: sentinel.clone()
            })
            .await
    ));
    // The receiving bureau's reads: the inbox and a resident match over the same IDs.
    let mut inbox = c.inbox(1).await;
    answers.push_str(&format!(
        "{:?}",
        inbox
            .pull(pb::PullRequest {
                consumer: "privacy".into(),
                after: Some(0),
                max: 0,
                filter: None,
            })
            .await
    ));
    let mut to_match = ids.clone();
    to_match.push(sentinel.clone());
    answers.push_str(&format!(
        "{:?}",
        inbox
            .r#match(tokio_stream::iter(vec![pb::MatchRequest {
                case_ref: String::new(),
                purpose: pb::Purpose::ServiceContinuity as i32,
                national_ids: to_match,
            }]))
            .await
    ));
    // A clerk who types an ID as the case reference is refused, and the ID is not written.
    answers.push_str(&format!(
        "{:?}",
        admin
            .lookup(pb::LookupRequest {
                national_id: ids[0].clone(),
                purpose: pb::Purpose::Correction as i32,
                case_ref: ids[1].clone(),
            })
            .await
    ));
    drop(inbox);
    c.stop(1).await;
    let more: Vec<_> = (510..515)
        .map(|n| sample_submission(n, b.as_str()))
        .collect();
    c.intake(0)
        .await
        .submit(pb::SubmitRequest { items: more })
        .await
        .unwrap();
    c.restart(1).await;
    // Both audit logs, with the new entries: submits (counts), reads (purposes), refusals
    // (reasons) and fetches (ranges).
    let mut audit_log = String::new();
    for i in 0..2 {
        audit_log.push_str(&format!(
            "{:?}",
            c.admin(i)
                .await
                .audit_log(pb::AuditLogRequest {
                    since_ms: 0,
                    limit: 10_000,
                    newest_first: false,
                })
                .await
                .unwrap()
                .into_inner()
        ));
    }
    for covered in [
        "Intake.Submit",
        "Inbox.Match",
        "refused: \"`case_ref`",
        "purpose: \"service-continuity\"",
    ] {
        assert!(audit_log.contains(covered), "no `{covered}` in {audit_log}");
    }

    let node = c.node(0).clone();
    let fed = node.fed();
    let key = fed.pseudonym_keys[&fed.agreements.iter().next().unwrap().id]
        .newest()
        .1;
    let today = interflow_core::time::latest_permitted_date(node.now(), 0);
    let mut secrets = vec![sentinel.clone()];
    for id in &ids {
        let r = SubjectRef::derive(key, &interflow_core::NationalId::parse(id, today).unwrap());
        secrets.push(hex::encode(r.as_bytes()));
        secrets.push(hex::encode(&r.as_bytes()[..8]));
    }
    // Answers to an operator may carry signed records (with refs), never a national ID.
    let national_ids: Vec<&String> = ids.iter().chain([&sentinel]).collect();
    drop(node);
    c.shutdown().await;
    let logged = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    // Every RPC runs in a span naming the method and the caller's certificate identity.
    assert!(
        logged.contains("method=/interflow.v1.Intake/Submit caller=intake `dev-intake`"),
        "no RPC span in the logs: {}",
        logged
            .lines()
            .filter(|l| l.contains("rpc"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        logged.contains(a.as_str()),
        "the capture saw nothing; is the subscriber installed?"
    );
    for s in secrets.iter().chain(ids.iter()) {
        assert!(!logged.contains(s.as_str()), "`{s}` appeared in the logs");
    }
    for s in secrets
        .iter()
        .filter(|s| s.len() == 64)
        .chain(ids.iter())
        .chain([&sentinel])
    {
        assert!(
            !audit_log.contains(s.as_str()),
            "`{s}` appeared in the audit log"
        );
    }
    for id in national_ids {
        assert!(
            !answers.contains(id.as_str()),
            "`{id}` appeared in an answer: {answers}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disclosure_report_lists_exchanges_and_every_read_of_the_person() {
    let c = TestCluster::start(2).await;
    let b = c.region(1);
    let id = synthetic_id(700);
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(700, b.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::submit_result::Outcome::RecordId(rid)) = resp.results[0].outcome.clone() else {
        panic!("not stored: {resp:?}")
    };
    c.wait_for_record(1, &rid).await;
    let mut admin = c.admin(1).await;
    // Reads at B: the record by id, then a lookup of the person.
    admin
        .get_record(pb::GetRecordRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
            record_id: rid.clone(),
            record_id_prefix: String::new(),
        })
        .await
        .unwrap();
    admin
        .lookup(pb::LookupRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
            national_id: id.clone(),
        })
        .await
        .unwrap();
    let report = admin
        .disclosure(pb::DisclosureRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
            national_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.exchanges.len(), 1);
    let e = &report.exchanges[0];
    assert_eq!(e.direction, pb::Direction::Inbound as i32);
    assert_eq!(e.record_id, rid);
    assert_eq!(e.legal_basis, pb::LegalBasisKind::StatutoryDuty as i32);
    let actions: Vec<&str> = report.reads.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["Admin.GetRecord", "Admin.Lookup", "Admin.Disclosure"]
    );
    assert!(report.reads.iter().all(|r| r.actor == "admin:dev-operator"));
    // Another person's report is empty: reads are attributed by person, not by time.
    let other = admin
        .disclosure(pb::DisclosureRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
            national_id: synthetic_id(701),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.exchanges.is_empty());
    assert_eq!(other.reads.len(), 1, "only its own disclosure request");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_retention_a_record_is_erased_but_the_log_still_verifies() {
    let c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    let id = synthetic_id(800);
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(800, b.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::submit_result::Outcome::RecordId(rid)) = resp.results[0].outcome.clone() else {
        panic!("not stored: {resp:?}")
    };
    c.wait_for_record(1, &rid).await;
    // The retention job's step, run as if the agreement's 3650 days had passed.
    assert_eq!(c.erase_as_if_after(1, 3651).await, 1);
    let mut admin = c.admin(1).await;
    let got = admin
        .get_record(pb::GetRecordRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
            record_id: rid.clone(),
            record_id_prefix: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.erased && got.record.is_none());
    let lookup = admin
        .lookup(pb::LookupRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
            national_id: id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lookup.current.is_empty() && lookup.timeline.is_empty());
    let verify = admin
        .verify_log(pb::VerifyLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{:?}", verify.problems);
    // The channel heads still agree, so reconciliation has nothing to fetch.
    let ch = interflow_core::record::ChannelId::new(a, b);
    assert_eq!(c.node(1).store.head(ch), c.node(0).store.head(ch));
    c.shutdown().await;
}

/// Re-signs every agreement file in `node_dir` with month precision (both parties' keys are in
/// the dev federation next to it; Ed25519 is deterministic, so both nodes get the same bytes).
fn with_month_precision(node_dir: &std::path::Path) {
    use prost::Message as _;
    let fed = node_dir.parent().expect("federation dir");
    for entry in std::fs::read_dir(node_dir.join("agreements")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension() != Some("pb".as_ref()) {
            continue;
        }
        let signed = pb::SignedAgreement::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        let mut body = pb::AgreementBody::decode(signed.body.as_slice()).unwrap();
        body.date_precision = pb::DatePrecision::Month as i32;
        let bytes = interflow_core::agreement::encode_body(&body);
        let signatures = [&body.party_a, &body.party_b]
            .into_iter()
            .map(|r| {
                let key =
                    interflow_core::keys::load_signing_key(&fed.join(r).join("keys/signing.pem"))
                        .unwrap();
                interflow_core::agreement::party_signature(&key, r.parse().unwrap(), &bytes)
            })
            .collect();
        let out = pb::SignedAgreement {
            body: bytes,
            signatures,
        };
        std::fs::write(&path, out.encode_to_vec()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_agreement_with_month_precision_records_carry_months_only() {
    let c = TestCluster::start_prepared(2, |_, dir, _| with_month_precision(dir)).await;
    let b = c.region(1);
    assert!(c.node(0).fed().agreements.iter().all(|a| a.month_dates));
    let item = sample_submission(960, b.as_str());
    let submitted_day = match &item.payload {
        Some(pb::submission::Payload::Contraception(p)) => p.observed_on.unwrap().day,
        Some(pb::submission::Payload::Pregnancy(p)) => p.observed_on.unwrap().day,
        other => panic!("unexpected payload {other:?}"),
    };
    assert_ne!(submitted_day, 1, "the sample must carry a day to drop");
    let rid = c.submit_one(0, item).await;
    // The receiver accepted it (its acceptance rule refuses finer dates under the agreement).
    c.wait_for_record(1, &rid).await;
    let got = c
        .admin(1)
        .await
        .get_record(pb::GetRecordRequest {
            record_id: rid,
            record_id_prefix: String::new(),
            purpose: pb::Purpose::Audit as i32,
            case_ref: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let body =
        <pb::RecordBody as prost::Message>::decode(got.record.unwrap().body.as_slice()).unwrap();
    let (observed, since) = match body.payload.unwrap() {
        pb::record_body::Payload::Contraception(p) => (p.observed_on, p.since),
        pb::record_body::Payload::Pregnancy(p) => (p.observed_on, None),
        other => panic!("unexpected payload {other:?}"),
    };
    let observed = observed.unwrap();
    assert_eq!(observed.day, 1, "the day was dropped: {observed:?}");
    assert!(since.is_none_or(|s| s.day == 1), "{since:?}");
    c.shutdown().await;
}

/// The files under `dir` (recursively) that contain `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_holding(&p, needle));
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_marker_is_in_no_file_of_either_node_before_or_after_erasure() {
    const MARKER: &str = "1101057319";
    let c = TestCluster::start(2).await;
    let b = c.region(1);
    let mut item = sample_submission(801, b.as_str());
    if let Some(pb::submission::Payload::Contraception(s)) = item.payload.as_mut() {
        s.service_point = MARKER.into();
    }
    let rid = c.submit_one(0, item).await;
    c.wait_for_record(1, &rid).await;
    let get = |i: usize| {
        let rid = rid.clone();
        let c = &c;
        async move {
            c.admin(i)
                .await
                .get_record(pb::GetRecordRequest {
                    record_id: rid,
                    record_id_prefix: String::new(),
                    purpose: pb::Purpose::Audit as i32,
                    case_ref: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    // Decrypted on the way out: the reader sees the marker, the disk does not.
    let got = get(1).await;
    let body = got.record.expect("record").body;
    assert!(body.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    for i in 0..2 {
        assert_eq!(
            files_holding(&c.data_dir(i), MARKER.as_bytes()),
            Vec::<std::path::PathBuf>::new(),
            "node {i} before erasure"
        );
        assert!(files_holding(&c.data_dir(i), synthetic_id(801).as_bytes()).is_empty());
    }
    for i in 0..2 {
        assert_eq!(c.erase_as_if_after(i, 3651).await, 1);
        let got = get(i).await;
        assert!(got.erased && got.record.is_none(), "node {i}: {got:?}");
        assert_eq!(
            files_holding(&c.data_dir(i), MARKER.as_bytes()),
            Vec::<std::path::PathBuf>::new(),
            "node {i} after erasure"
        );
        let verify = c
            .admin(i)
            .await
            .verify_log(pb::VerifyLogRequest { with_peers: false })
            .await
            .unwrap()
            .into_inner();
        assert!(verify.ok, "{:?}", verify.problems);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_answers_and_gauges_carry_counts_only() {
    let capture = logs();
    let c = TestCluster::start_residence(3).await;
    let ids = crate::residence::scripted(&c).await;
    let mut secrets: Vec<String> = ids.iter().map(|n| synthetic_id(*n)).collect();
    let today = interflow_core::time::latest_permitted_date(c.node(1).now(), 0);
    for i in 0..3 {
        let fed = c.node(i).fed();
        for a in fed.agreements.iter() {
            let Some(keys) = fed.pseudonym_keys.get(&a.id) else {
                continue;
            };
            for n in &ids {
                let id = interflow_core::NationalId::parse(&synthetic_id(*n), today).unwrap();
                for (_, r) in keys.refs(&id) {
                    secrets.push(hex::encode(r.as_bytes()));
                    secrets.push(hex::encode(&r.as_bytes()[..8]));
                }
            }
        }
    }
    let mut outputs = String::new();
    for i in 0..3 {
        let cov = c
            .admin(i)
            .await
            .coverage(pb::CoverageRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(!cov.rows.is_empty(), "node {i} has coverage rows");
        outputs.push_str(&format!("{cov:?}\n"));
        outputs.push_str(&crate::residence::scrape(c.metrics_addr(i)).await);
    }
    c.shutdown().await;
    let logged = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    for s in &secrets {
        assert!(
            !outputs.contains(s.as_str()),
            "`{s}` appeared in coverage or metrics"
        );
        assert!(!logged.contains(s.as_str()), "`{s}` appeared in the logs");
    }
}
