//! The inbox: what arrives reaches the receiving bureau's systems, in arrival order, through
//! named consumers with durable cursors; residents are matched by national ID without the ID
//! being kept; every read is audited; only inbox (and admin) certificates read it.

use std::time::Duration;

use futures::StreamExt;
use interflow_core::pb;
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_tests::TestCluster;

fn record_id(r: &pb::SubmitResult) -> Vec<u8> {
    match &r.outcome {
        Some(pb::submit_result::Outcome::RecordId(id)) => id.clone(),
        other => panic!("not stored: {other:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn submit(c: &TestCluster, from: usize, items: Vec<pb::Submission>) -> Vec<Vec<u8>> {
    let resp = c
        .intake(from)
        .await
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap()
        .into_inner();
    resp.results.iter().map(record_id).collect()
}

fn pull(consumer: &str, after: Option<u64>) -> pb::PullRequest {
    pb::PullRequest {
        consumer: consumer.into(),
        after,
        max: 0,
        filter: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_reach_follow_at_once_and_pull_resumes_from_the_acknowledged_position() {
    let mut c = TestCluster::start(2).await;
    let b = c.region(1);
    let mut follow = c
        .inbox(1)
        .await
        .follow(pb::FollowRequest {
            consumer: "clinic".into(),
            after: None,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids = submit(
        &c,
        0,
        (1..=3).map(|n| sample_submission(n, b.as_str())).collect(),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let item = tokio::time::timeout(Duration::from_secs(20), follow.next())
            .await
            .expect("an item on the live stream")
            .expect("stream open")
            .expect("an item");
        // Live: the stream sends an item as soon as it is durably stored.
        let latency = now_ms() - item.arrived_at_ms;
        assert!(latency < 1000, "item arrived {latency} ms after its append");
        got.push(item);
    }
    assert_eq!(
        got.iter().map(|i| i.position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        got.iter().map(|i| i.record_id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert!(got.iter().all(|i| i.current && !i.erased));
    assert_eq!(got[0].origin, c.region(0).as_str());
    assert!(matches!(
        got[0].payload,
        Some(pb::inbox_item::Payload::Contraception(_))
    ));
    drop(follow);

    let mut inbox = c.inbox(1).await;
    inbox
        .ack(pb::AckRequest {
            consumer: "clinic".into(),
            position: 2,
        })
        .await
        .unwrap();
    // Past the newest position is refused.
    let err = inbox
        .ack(pb::AckRequest {
            consumer: "clinic".into(),
            position: 99,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    drop(inbox);
    c.stop(1).await;
    c.restart(1).await;

    // After the restart the consumer resumes after its acknowledged position: nothing lost,
    // repeats only of what came after the last Ack.
    let resp = c
        .inbox(1)
        .await
        .pull(pull("clinic", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.cursor, 2);
    assert_eq!(resp.head, 3);
    assert_eq!(
        resp.items.iter().map(|i| i.position).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(resp.items[0].record_id, ids[2]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_independently_and_corrections_retractions_and_erasure_show_as_such() {
    let c = TestCluster::start(2).await;
    let b = c.region(1);
    let first = sample_submission(40, b.as_str());
    let r1 = submit(&c, 0, vec![first.clone()]).await.remove(0);
    // A correction of r1, then a retraction of the correction.
    let mut correction = sample_submission(41, b.as_str());
    correction.national_id = first.national_id.clone();
    correction.supersedes = r1.clone();
    let r2 = submit(&c, 0, vec![correction]).await.remove(0);
    let mut retraction = sample_submission(42, b.as_str());
    retraction.national_id = first.national_id.clone();
    retraction.supersedes = r2.clone();
    retraction.payload = Some(pb::submission::Payload::Retraction(pb::Retraction {
        kind: pb::RecordKind::ContraceptionStatus as i32,
    }));
    let r3 = submit(&c, 0, vec![retraction]).await.remove(0);
    c.wait_for_record(1, &r3).await;

    let mut inbox = c.inbox(1).await;
    let items = inbox
        .pull(pull("clinic", None))
        .await
        .unwrap()
        .into_inner()
        .items;
    let view: Vec<_> = items
        .iter()
        .map(|i| (i.record_id.clone(), i.supersedes.clone(), i.current))
        .collect();
    // The retraction withdrew the correction, which had replaced the first record: nothing
    // of this person is current any more, and each item says what it replaces.
    assert_eq!(
        view,
        vec![
            (r1.clone(), vec![], false),
            (r2.clone(), r1.clone(), false),
            (r3.clone(), r2.clone(), false),
        ]
    );
    assert!(matches!(
        items[2].payload,
        Some(pb::inbox_item::Payload::Retraction(_))
    ));

    // The read is in the audit log: who, through which consumer, which records.
    let audit = audit_entries(&c, 1).await;
    let read = audit
        .iter()
        .rfind(|e| e.action == "Inbox.Pull")
        .expect("the pull is audited");
    assert_eq!(read.actor, "inbox:dev-clinic");
    assert_eq!(read.subjects[0], "consumer:clinic");
    assert!(read.subjects.contains(&hex::encode(&r1)));

    // Two consumers, each at its own place.
    inbox
        .ack(pb::AckRequest {
            consumer: "his".into(),
            position: 3,
        })
        .await
        .unwrap();
    inbox
        .ack(pb::AckRequest {
            consumer: "clinic".into(),
            position: 1,
        })
        .await
        .unwrap();
    let his = inbox.pull(pull("his", None)).await.unwrap().into_inner();
    assert!(his.items.is_empty());
    let clinic = inbox.pull(pull("clinic", None)).await.unwrap().into_inner();
    assert_eq!(clinic.items.len(), 2);
    let consumers = inbox
        .consumers(pb::ConsumersRequest {})
        .await
        .unwrap()
        .into_inner();
    let lag: Vec<_> = consumers
        .consumers
        .iter()
        .map(|c| (c.name.as_str(), c.cursor, c.lag_items))
        .collect();
    assert_eq!(lag, vec![("clinic", 1, 2), ("his", 3, 0)]);

    // A filter on another origin finds nothing, and the read still moves on.
    let other = inbox
        .pull(pb::PullRequest {
            consumer: "clinic".into(),
            after: Some(0),
            max: 0,
            filter: Some(pb::InboxFilter {
                origins: vec!["440305".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.items.is_empty());
    assert_eq!(other.next_after, 3);

    // At the end of retention the bodies go; the inbox keeps tombstones: ids and dates only.
    assert_eq!(c.erase_as_if_after(1, 3651).await, 3);
    let items = inbox
        .pull(pull("clinic", Some(0)))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 3);
    for (i, id) in items.iter().zip([&r1, &r2, &r3]) {
        assert!(i.erased && !i.current);
        assert_eq!(&i.record_id, id);
        assert!(i.payload.is_none() && i.subject_ref.is_empty() && i.issued_at_ms > 0);
    }
    drop(inbox);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_inbox_and_admin_certificates_read_the_inbox_and_inbox_ones_do_nothing_else() {
    let c = TestCluster::start(2).await;
    let n = c.fed.nodes[1].clone();
    let intake_channel = c.local_channel(1, &n.intake_cert, &n.intake_key).await;
    let err = pb::inbox_client::InboxClient::new(intake_channel)
        .pull(pull("clinic", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Admins may read.
    let admin_channel = c.admin_channel(1).await;
    pb::inbox_client::InboxClient::new(admin_channel)
        .pull(pull("audit", None))
        .await
        .unwrap();
    // The peer listener does not serve the inbox at all.
    let a_tls = c.fed.nodes[0].federation_ca.parent().unwrap().to_owned();
    let peer = c
        .peer_channel_as(
            1,
            &a_tls.join("federation-ca.pem"),
            &a_tls.join("node.pem"),
            &a_tls.join("node.key"),
        )
        .await
        .unwrap();
    let err = pb::inbox_client::InboxClient::new(peer)
        .pull(pull("clinic", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    // An inbox certificate cannot submit or operate.
    let inbox_channel = c.local_channel(1, &n.inbox_cert, &n.inbox_key).await;
    let err = pb::intake_client::IntakeClient::new(inbox_channel.clone())
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(1, c.region(0).as_str())],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = pb::admin_client::AdminClient::new(inbox_channel)
        .stats(pb::StatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_finds_residents_with_inbound_records_and_is_audited_once_without_the_ids() {
    let mut c = TestCluster::start(2).await;
    let b = c.region(1);
    let ids = submit(&c, 0, vec![sample_submission(70, b.as_str())]).await;
    c.wait_for_record(1, &ids[0]).await;
    let resident = synthetic_id(70);
    let stranger = synthetic_id(71);
    let invalid = format!("{}0", &resident[..17]);
    let before = audit_entries(&c, 1).await.len();
    let requests = vec![
        pb::MatchRequest {
            case_ref: String::new(),
            purpose: pb::Purpose::ServiceContinuity as i32,
            national_ids: vec![resident.clone(), stranger.clone()],
        },
        pb::MatchRequest {
            case_ref: String::new(),
            purpose: 0,
            national_ids: vec![invalid.clone()],
        },
    ];
    let resp = c
        .inbox(1)
        .await
        .r#match(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.ids_received, 3);
    assert_eq!(resp.invalid, vec![2]);
    assert_eq!(resp.matches.len(), 1);
    let m = &resp.matches[0];
    assert_eq!(m.index, 0);
    assert_eq!(m.statuses.len(), 1);
    let s = &m.statuses[0];
    assert_eq!(s.kind, pb::RecordKind::ContraceptionStatus as i32);
    assert_eq!(s.peer, c.region(0).as_str());
    assert_eq!(s.current.as_ref().unwrap().record_id, ids[0]);
    // No ID comes back in the answer.
    let answer = format!("{resp:?}");
    for id in [&resident, &stranger, &invalid] {
        assert!(!answer.contains(id.as_str()));
    }
    // Without a purpose, refused.
    let err = c
        .inbox(1)
        .await
        .r#match(tokio_stream::iter(vec![pb::MatchRequest {
            case_ref: String::new(),
            purpose: 0,
            national_ids: vec![resident.clone()],
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // One audit entry for the call: caller, purpose and counts, never the IDs.
    // Written before Match answered.
    let entries = audit_entries(&c, 1).await;
    let matches: Vec<_> = entries[before..]
        .iter()
        .filter(|e| e.action == "Inbox.Match")
        .collect();
    // One for the answered call, one for the refused one (with the reason, no purpose).
    assert_eq!(matches.len(), 2, "{matches:?}");
    assert_eq!(matches[0].actor, "inbox:dev-clinic");
    assert_eq!(matches[0].purpose, "service-continuity");
    assert_eq!(matches[0].detail, "ids:3 matched:1");
    assert!(matches[0].subjects.is_empty() && matches[0].refused.is_empty());
    assert_eq!(matches[1].actor, "inbox:dev-clinic");
    assert!(matches[1].refused.contains("purpose"), "{:?}", matches[1]);
    assert!(matches[1].purpose.is_empty() && matches[1].detail.is_empty());
    let all = format!("{entries:?}");
    for id in [&resident, &stranger, &invalid] {
        assert!(!all.contains(id.as_str()));
    }
    let data = c.data_dir(1);
    c.stop(1).await;
    // Nothing under the node's data directory holds an ID it matched.
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap();
        for id in [&resident, &stranger] {
            assert!(
                !bytes.windows(id.len()).any(|w| w == id.as_bytes()),
                "`{}` holds a matched ID",
                entry.display()
            );
        }
    }
    c.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Node `i`'s whole audit log, oldest first.
async fn audit_entries(c: &TestCluster, i: usize) -> Vec<pb::AuditEntry> {
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
        .entries
}
