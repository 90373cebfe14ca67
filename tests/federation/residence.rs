//! Two-way residence: the bureau where she lives registers her arrival with her home bureau,
//! status follows residence (the home bureau's intake refuses status to a bureau she left with
//! `NOT_RESIDENT`), a status that crossed the departure in flight is kept but never current,
//! and residence notices go one way only. Node 1 is the home bureau (C) of nodes 0 (A) and
//! 2 (B).

use futures::StreamExt;
use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_tests::TestCluster;

const A: usize = 0;
const C: usize = 1;
const B: usize = 2;
/// The person of the scenario: synthetic ID 1.
const P: u64 = 1;

pub(crate) fn residence(
    n: u64,
    key: &str,
    dest: &str,
    event: pb::ResidenceEvent,
) -> pb::Submission {
    pb::Submission {
        idempotency_key: format!("res-{key}"),
        destination: dest.into(),
        national_id: synthetic_id(n),
        supersedes: Vec::new(),
        payload: Some(pb::submission::Payload::Residence(pb::ResidenceNotice {
            event: event as i32,
            month: Some(pb::YearMonth {
                year: 2025,
                month: 6,
            }),
        })),
    }
}

pub(crate) async fn submit_one(
    c: &TestCluster,
    from: usize,
    item: pb::Submission,
) -> pb::SubmitResult {
    let mut r = c
        .intake(from)
        .await
        .submit(pb::SubmitRequest { items: vec![item] })
        .await
        .expect("submit")
        .into_inner()
        .results;
    r.pop().expect("one result")
}

pub(crate) fn stored(r: &pb::SubmitResult) -> Vec<u8> {
    match &r.outcome {
        Some(pb::submit_result::Outcome::RecordId(id)) => id.clone(),
        other => panic!("not stored: {other:?}"),
    }
}

pub(crate) fn refused(r: &pb::SubmitResult) -> (pb::SubmitErrorCode, String) {
    match &r.outcome {
        Some(pb::submit_result::Outcome::Error(e)) => (
            pb::SubmitErrorCode::try_from(e.code).expect("known code"),
            e.reason.clone(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn inbox_items(c: &TestCluster, i: usize, kinds: Vec<pb::RecordKind>) -> Vec<pb::InboxItem> {
    c.inbox(i)
        .await
        .pull(pb::PullRequest {
            consumer: "residence-test".into(),
            after: Some(0),
            max: 0,
            filter: Some(pb::InboxFilter {
                kinds: kinds.into_iter().map(|k| k as i32).collect(),
                ..Default::default()
            }),
        })
        .await
        .expect("pull")
        .into_inner()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_residence_from_arrival_to_departure_and_on_to_the_next_bureau() {
    let c = TestCluster::start_residence(3).await;
    let (a, cc, b) = (c.region(A), c.region(C), c.region(B));

    // B registers P's arrival with her home bureau C; C's inbox shows it.
    let arrived = stored(
        &submit_one(
            &c,
            B,
            residence(P, "b-arr", cc.as_str(), pb::ResidenceEvent::Arrived),
        )
        .await,
    );
    c.wait_for_record(C, &arrived).await;
    let items = inbox_items(&c, C, vec![pb::RecordKind::Residence]).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].record_id, arrived);
    assert!(matches!(
        items[0].payload,
        Some(pb::inbox_item::Payload::Residence(n)) if n.event == pb::ResidenceEvent::Arrived as i32
    ));
    assert!(items[0].awaiting_answer, "on C's worklist until C answers");

    // C's status for P to B is accepted and reaches B.
    let first = stored(&submit_one(&c, C, sample_submission(P, b.as_str())).await);
    c.wait_for_record(B, &first).await;
    let items = inbox_items(&c, C, vec![pb::RecordKind::Residence]).await;
    assert!(!items[0].awaiting_answer, "answered: off the worklist");

    // B sends DEPARTED; once C holds it, C's next status for P to B is refused at intake.
    let departed = stored(
        &submit_one(
            &c,
            B,
            residence(P, "b-dep", cc.as_str(), pb::ResidenceEvent::Departed),
        )
        .await,
    );
    c.wait_for_record(C, &departed).await;
    let mut next = sample_submission(P, b.as_str());
    next.idempotency_key = "after-departure".into();
    let (code, reason) = refused(&submit_one(&c, C, next).await);
    assert_eq!(code, pb::SubmitErrorCode::NotResident, "{reason}");
    assert!(!reason.contains(&synthetic_id(P)), "{reason}");
    let c_to_b = ChannelId::new(cc, b);
    assert_eq!(
        c.node(C).store.head(c_to_b).0,
        1,
        "the refused status is not stored"
    );

    // A status C issued before it learnt of the departure, arriving at B after B sent it.
    let crossing = c
        .crafted_record(
            C,
            B,
            2,
            c.node(C).store.head(c_to_b).1,
            &c.signing_key(C),
            P,
        )
        .into_decoded()
        .into_signed();
    let crossing_id = interflow_core::record::RecordId::of_body(&crossing.body);
    let mut acks = c
        .exchange_from(C, B)
        .await
        .deliver(tokio_stream::iter(vec![crossing]))
        .await
        .expect("deliver")
        .into_inner();
    let ack = acks.next().await.expect("an answer").expect("not a status");
    assert!(
        matches!(ack.result, Some(pb::delivery_ack::Result::Receipt(_))),
        "the crossing record is stored: {ack:?}"
    );
    let items = inbox_items(&c, B, vec![pb::RecordKind::ContraceptionStatus]).await;
    let find = |id: &[u8]| {
        items
            .iter()
            .find(|i| i.record_id == id)
            .expect("in B's inbox")
            .clone()
    };
    let late = find(&crossing_id.0);
    assert!(late.after_departure, "marked as after departure");
    assert!(!late.current, "never current");
    let earlier = find(&first);
    assert!(!earlier.after_departure);
    assert!(
        earlier.current,
        "the status from before the departure stays current"
    );
    // Matching P's ID at B gives the same current status, not the one after departure.
    let matched = c
        .inbox(B)
        .await
        .r#match(tokio_stream::iter(vec![pb::MatchRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            national_ids: vec![synthetic_id(P)],
            case_ref: String::new(),
        }]))
        .await
        .expect("match")
        .into_inner();
    let current: Vec<Vec<u8>> = matched
        .matches
        .iter()
        .flat_map(|m| &m.statuses)
        .filter(|st| st.kind == pb::RecordKind::ContraceptionStatus as i32)
        .filter_map(|st| st.current.as_ref().map(|it| it.record_id.clone()))
        .collect();
    assert_eq!(
        current,
        vec![first.clone()],
        "Match skips the record after departure"
    );
    let looked_up = c
        .admin(B)
        .await
        .lookup(pb::LookupRequest {
            national_id: synthetic_id(P),
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
        })
        .await
        .expect("lookup")
        .into_inner();
    let current: Vec<Vec<u8>> = looked_up
        .current
        .iter()
        .filter(|st| st.kind == pb::RecordKind::ContraceptionStatus as i32)
        .filter_map(|st| st.current.as_ref())
        .map(|r| {
            interflow_core::record::RecordId::of_body(&r.body)
                .0
                .to_vec()
        })
        .collect();
    assert_eq!(current, vec![first.clone()], "so does Lookup");
    let counted = c
        .admin(B)
        .await
        .coverage(pb::CoverageRequest {})
        .await
        .expect("coverage")
        .into_inner();
    assert_eq!(counted.status_after_departure, 1, "and counted");

    // P then arrives at A; C's status for her to A is accepted.
    let at_a = stored(
        &submit_one(
            &c,
            A,
            residence(P, "a-arr", cc.as_str(), pb::ResidenceEvent::Arrived),
        )
        .await,
    );
    c.wait_for_record(C, &at_a).await;
    let to_a = stored(&submit_one(&c, C, sample_submission(P, a.as_str())).await);
    c.wait_for_record(A, &to_a).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residence_in_the_wrong_direction_or_uncovered_is_refused_and_nothing_is_stored() {
    let c = TestCluster::start_residence(3).await;
    let (cc, b) = (c.region(C), c.region(B));
    // The home bureau cannot send a residence notice to the residence bureau.
    let (code, reason) = refused(
        &submit_one(
            &c,
            C,
            residence(P, "wrong", b.as_str(), pb::ResidenceEvent::Arrived),
        )
        .await,
    );
    assert_eq!(code, pb::SubmitErrorCode::WrongDirection, "{reason}");
    assert!(reason.contains("residence"), "{reason}");
    assert_eq!(c.node(C).store.head(ChannelId::new(cc, b)).0, 0);
    // With no arrival at all, status to B is refused too (option on).
    let (code, _) = refused(&submit_one(&c, C, sample_submission(P, b.as_str())).await);
    assert_eq!(code, pb::SubmitErrorCode::NotResident);
    assert_eq!(c.node(C).store.head(ChannelId::new(cc, b)).0, 0);
    c.shutdown().await;

    // An agreement without residence in any direction does not cover it.
    let c = TestCluster::start(2).await;
    let (x, y) = (c.region(0), c.region(1));
    let (code, reason) = refused(
        &submit_one(
            &c,
            0,
            residence(P, "uncovered", y.as_str(), pb::ResidenceEvent::Arrived),
        )
        .await,
    );
    assert_eq!(code, pb::SubmitErrorCode::NoAgreement, "{reason}");
    assert!(reason.contains("does not cover residence"), "{reason}");
    assert_eq!(c.node(0).store.head(ChannelId::new(x, y)).0, 0);
    // Without the option, status goes as before.
    stored(&submit_one(&c, 0, sample_submission(P, y.as_str())).await);
    c.shutdown().await;
}

/// A scripted federation: B (node 2) registers persons 11, 12, 13 with their home C, A (node 0)
/// registers 14 and 15; B reports 13 departed; C answers 11 to B. The IDs used are returned.
pub(crate) async fn scripted(c: &TestCluster) -> Vec<u64> {
    let (cc, b) = (c.region(C), c.region(B));
    let mut last = Vec::new();
    for n in [11, 12, 13] {
        let key = format!("b-{n}");
        last.push(stored(
            &submit_one(
                c,
                B,
                residence(n, &key, cc.as_str(), pb::ResidenceEvent::Arrived),
            )
            .await,
        ));
    }
    for n in [14, 15] {
        let key = format!("a-{n}");
        last.push(stored(
            &submit_one(
                c,
                A,
                residence(n, &key, cc.as_str(), pb::ResidenceEvent::Arrived),
            )
            .await,
        ));
    }
    last.push(stored(
        &submit_one(
            c,
            B,
            residence(13, "b-13-dep", cc.as_str(), pb::ResidenceEvent::Departed),
        )
        .await,
    ));
    for id in &last {
        c.wait_for_record(C, id).await;
    }
    let answer = stored(&submit_one(c, C, sample_submission(11, b.as_str())).await);
    c.wait_for_record(B, &answer).await;
    vec![11, 12, 13, 14, 15]
}

fn row(
    rows: &[pb::CoverageRow],
    peer: interflow_core::RegionCode,
    role: pb::CoverageRole,
) -> &pb::CoverageRow {
    let found: Vec<_> = rows
        .iter()
        .filter(|r| r.peer == peer.as_str() && r.role == role as i32)
        .collect();
    assert_eq!(found.len(), 1, "one row per agreement and month: {rows:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_equals_what_was_submitted() {
    let c = TestCluster::start_residence(3).await;
    let (a, cc, b) = (c.region(A), c.region(C), c.region(B));
    scripted(&c).await;
    let june = Some(pb::YearMonth {
        year: 2025,
        month: 6,
    });

    // At the residence bureau B: 11 and 12 live there (13 left); only 11 has a status.
    let at_b = c
        .admin(B)
        .await
        .coverage(pb::CoverageRequest {})
        .await
        .expect("coverage")
        .into_inner();
    let r = row(&at_b.rows, cc, pb::CoverageRole::Residence);
    assert_eq!(r.month, june);
    assert_eq!((r.residents, r.residents_with_status), (2, 1));
    assert!(
        r.median_days_to_first_status
            .is_some_and(|d| (0.0..1.0).contains(&d))
    );
    assert_eq!(at_b.status_after_departure, 0);

    // At the home bureau C: three arrivals from B (one answered at once, 12 waiting, 13 gone
    // again so not on the worklist), two from A (both waiting).
    let at_c = c
        .admin(C)
        .await
        .coverage(pb::CoverageRequest {})
        .await
        .expect("coverage")
        .into_inner();
    let from_b = row(&at_c.rows, b, pb::CoverageRole::Home);
    assert_eq!(from_b.month, june);
    assert_eq!(
        (
            from_b.arrivals,
            from_b.answered_within_7_days,
            from_b.answered_within_30_days,
            from_b.unanswered
        ),
        (3, 1, 1, 1)
    );
    let from_a = row(&at_c.rows, a, pb::CoverageRole::Home);
    assert_eq!((from_a.arrivals, from_a.unanswered), (2, 2));
    assert_eq!(from_a.oldest_unanswered_days, 0);

    // The gauges on /metrics say the same.
    let text = scrape(c.metrics_addr(C)).await;
    let agreement = &from_a.agreement_id;
    let line = format!(
        "interflow_coverage{{region=\"{cc}\",agreement=\"{agreement}\",role=\"home\",month=\"2025-06\",figure=\"unanswered\"}} 2"
    );
    assert!(
        text.lines().any(|l| l == line),
        "missing `{line}` in:\n{text}"
    );
    c.shutdown().await;
}

pub(crate) async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_residence_notice_delivered_from_the_home_bureau_is_rejected_and_not_stored() {
    use interflow_core::payload::{Payload, ResidenceEvent, ResidenceNotice, YearMonth};
    use interflow_core::pseudonym::SubjectRef;
    use interflow_core::record::{NewRecord, RecordId};
    let c = TestCluster::start_residence(3).await;
    let (cc, b) = (c.region(C), c.region(B));
    // C (the home bureau) signs a residence notice to B with its own key, as if its intake
    // had let it through, and delivers it over its own mTLS identity.
    let node = c.node(C).clone();
    let agreement = node
        .fed()
        .agreements
        .iter()
        .find(|a| a.peer_of(cc) == Some(b))
        .expect("the B–C agreement")
        .id
        .clone();
    let today = interflow_core::time::latest_permitted_date(node.now(), 0);
    let id = interflow_core::NationalId::parse(&synthetic_id(P), today).unwrap();
    let record = NewRecord {
        channel: ChannelId::new(cc, b),
        subject: SubjectRef::derive(node.fed().pseudonym_keys[&agreement].newest().1, &id),
        pseudonym_epoch: node.fed().pseudonym_keys[&agreement].newest().0,
        agreement_id: agreement,
        issued_at_ms: node.now(),
        supersedes: None,
        idempotency: None,
        payload: Payload::Residence(ResidenceNotice::new(
            ResidenceEvent::Arrived,
            YearMonth::new(2025, 6).unwrap(),
        )),
    }
    .seal(1, RecordId::ZERO, &c.signing_key(C))
    .expect("seal")
    .into_decoded()
    .into_signed();
    let mut acks = c
        .exchange_from(C, B)
        .await
        .deliver(tokio_stream::iter(vec![record]))
        .await
        .expect("deliver")
        .into_inner();
    let ack = acks.next().await.expect("an answer").expect("not a status");
    match ack.result {
        Some(pb::delivery_ack::Result::Rejection(r)) => {
            assert_eq!(r.reason, pb::RejectReason::WrongDirection as i32, "{r:?}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        c.node(B).store.head(ChannelId::new(cc, b)).0,
        0,
        "nothing stored"
    );
    drop((acks, node));
    c.shutdown().await;
}
