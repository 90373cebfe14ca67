//! Intake, delivery and acknowledgement between nodes.

use std::time::Duration;

use interflow_core::pb;
use interflow_core::record::{ChannelId, DecodedRecord};
use interflow_node::dev::sample_submission;
use interflow_tests::{TestCluster, eventually};

fn record_id(r: &pb::SubmitResult) -> Vec<u8> {
    match &r.outcome {
        Some(pb::submit_result::Outcome::RecordId(id)) => id.clone(),
        other => panic!("not stored: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_both_ways_under_an_agreement_and_not_without_one() {
    let c = TestCluster::start(3).await;
    let (a, b, cc) = (c.region(0), c.region(1), c.region(2));

    // A → B.
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(1, b.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    let id = record_id(&resp.results[0]);
    let b_node = c.node(1).clone();
    let got = c.wait_for_record(1, &id).await;
    assert_eq!(got.channel(), ChannelId::new(a, b));
    // Stored as received, and it verifies under A's directory key.
    let a_key = b_node.fed().directory.signing_key(a).unwrap();
    assert!(
        DecodedRecord::decode(got.signed().clone())
            .unwrap()
            .verify(&a_key)
            .is_ok()
    );

    // B → A.
    let resp = c
        .intake(1)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(2, a.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    let id = record_id(&resp.results[0]);
    c.wait_for_record(0, &id).await;

    // A → C: no agreement, a precise error at submit, nothing stored.
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(3, cc.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    match &resp.results[0].outcome {
        Some(pb::submit_result::Outcome::Error(e)) => {
            assert_eq!(e.code, pb::SubmitErrorCode::NoAgreement as i32);
            assert!(e.reason.contains(cc.as_str()), "{}", e.reason);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(c.node(0).store.head(ChannelId::new(a, cc)).0, 0);
    // Release the test's handles so shutdown can close each store at once.
    drop(b_node);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_the_same_batch_twice_stores_nothing_new() {
    let c = TestCluster::start(2).await;
    let b = c.region(1);
    let items: Vec<_> = (0..20).map(|n| sample_submission(n, b.as_str())).collect();
    let mut intake = c.intake(0).await;
    let first = intake
        .submit(pb::SubmitRequest {
            items: items.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let head = c.node(0).store.head(ChannelId::new(c.region(0), b)).0;
    assert_eq!(head, 20);
    let second = intake
        .submit(pb::SubmitRequest { items })
        .await
        .unwrap()
        .into_inner();
    for (x, y) in first.results.iter().zip(&second.results) {
        assert_eq!(record_id(x), record_id(y));
        assert!(!x.duplicate);
        assert!(y.duplicate);
    }
    assert_eq!(c.node(0).store.head(ChannelId::new(c.region(0), b)).0, head);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_records_for_a_stopped_peer_arrive_exactly_once_in_order() {
    let mut c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    let ch = ChannelId::new(a, b);
    c.stop(1).await;
    let mut intake = c.intake(0).await;
    let mut ids = Vec::new();
    for chunk in (0..1000u64).collect::<Vec<_>>().chunks(250) {
        let items = chunk
            .iter()
            .map(|n| sample_submission(*n, b.as_str()))
            .collect();
        let resp = intake
            .submit(pb::SubmitRequest { items })
            .await
            .unwrap()
            .into_inner();
        ids.extend(resp.results.iter().map(record_id));
    }
    // While B is down, A shows the backlog and why it is stuck.
    let a_node = c.node(0).clone();
    let pending = eventually(Duration::from_secs(10), "a failed delivery attempt", || {
        let n = a_node.clone();
        async move {
            let region = n.region;
            let p = n
                .store
                .run(move |s| s.pending(region))
                .await
                .ok()?
                .into_iter()
                .find(|p| p.channel == ch)?;
            (p.delivery.attempts > 0).then_some(p)
        }
    })
    .await;
    assert_eq!(pending.pending_count, 1000);
    assert!(pending.delivery.last_error.is_some());

    c.restart(1).await;
    let mut admin = c.admin(0).await;
    eventually(
        Duration::from_secs(30),
        "pending at A drops to zero",
        || {
            let mut admin = admin.clone();
            async move {
                let r = admin
                    .list_pending(pb::ListPendingRequest {})
                    .await
                    .ok()?
                    .into_inner();
                let p = r.channels.iter().find(|p| p.destination == b.as_str())?;
                (p.pending_count == 0 && p.acked_seq == 1000).then_some(())
            }
        },
    )
    .await;
    let _ = admin.stats(pb::StatsRequest {}).await.unwrap();
    let recs = c
        .node(1)
        .store
        .run(move |s| s.records_from(ch, 1, 2000))
        .await
        .unwrap();
    assert_eq!(recs.len(), 1000, "exactly once");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "in order");
        assert_eq!(r.id.as_bytes().as_slice(), ids[i].as_slice());
    }
    // A keeps B's latest signed receipt as proof of delivery.
    let receipt = c.node(0).store.run(move |s| s.receipt(ch)).await.unwrap();
    assert!(receipt.is_some());
    // Release the test's handles so shutdown can close each store at once.
    drop(a_node);
    c.shutdown().await;
}
