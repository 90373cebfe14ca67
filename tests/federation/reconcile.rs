//! Reconciliation: idempotent runs, exchange without delivery, and recovery of lost data.

use std::time::Duration;

use interflow_core::pb;
use interflow_core::record::ChannelId;
use interflow_node::dev::sample_submission;
use interflow_tests::{TestCluster, copy_dir, eventually};

fn without_delivery(_: usize, text: &mut String) {
    *text = text.replace("[delivery]\n", "[delivery]\nenabled = false\n");
}

async fn submit(c: &TestCluster, i: usize, dest: usize, range: std::ops::Range<u64>) {
    let mut intake = c.intake(i).await;
    let items: Vec<_> = range
        .map(|n| sample_submission(n, c.region(dest).as_str()))
        .collect();
    for chunk in items.chunks(250) {
        let r = intake
            .submit(pb::SubmitRequest {
                items: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.results
                .iter()
                .all(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::RecordId(_))))
        );
    }
}

async fn reconcile(c: &TestCluster, i: usize, recover: bool) -> pb::ReconcileReport {
    let mut stream = c
        .admin(i)
        .await
        .reconcile(pb::ReconcileRequest {
            peer: String::new(),
            recover,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(p) = stream.message().await.unwrap() {
        if let Some(pb::reconcile_progress::Event::Report(r)) = p.event {
            return r;
        }
    }
    panic!("the run ended without a report");
}

fn fetched(r: &pb::ReconcileReport) -> u64 {
    r.channels.iter().map(|c| c.records_fetched).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_records_arrive_by_reconciliation_alone_and_a_second_run_changes_nothing() {
    let c = TestCluster::start_edited(2, without_delivery).await;
    let ch = ChannelId::new(c.region(0), c.region(1));
    submit(&c, 0, 1, 0..500).await;
    assert_eq!(c.node(1).store.head(ch).0, 0, "delivery is off");

    let first = reconcile(&c, 1, false).await;
    assert_eq!(fetched(&first), 500);
    assert_eq!(c.node(1).store.head(ch), c.node(0).store.head(ch));
    let verify = c
        .admin(1)
        .await
        .verify_log(pb::VerifyLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{:?}", verify.problems);

    let second = reconcile(&c, 1, false).await;
    assert_eq!(fetched(&second), 0, "a second run fetches nothing");
    assert!(
        second.channels.iter().all(|ch| ch.anomalies.is_empty()),
        "{second:?}"
    );
    assert_eq!(c.node(1).store.head(ch).0, 500);
    let reports = c
        .admin(1)
        .await
        .list_reconcile_reports(pb::ListReconcileReportsRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .reports;
    assert!(reports.len() >= 2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_disk_gets_everything_back() {
    let mut c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    submit(&c, 0, 1, 0..50).await;
    submit(&c, 1, 0, 1000..1030).await;
    let a_node = c.node(0).clone();
    eventually(Duration::from_secs(20), "both feeds delivered", || {
        let n = a_node.clone();
        async move {
            let region = n.region;
            let ok = n.store.head(ChannelId::new(b, a)).0 == 30
                && n.store
                    .run(move |s| s.pending(region))
                    .await
                    .ok()?
                    .iter()
                    .all(|p| p.pending_count == 0);
            ok.then_some(())
        }
    })
    .await;
    c.stop(1).await;
    std::fs::remove_dir_all(c.data_dir(1)).unwrap();
    c.restart(1).await;
    // At start B compares its (empty) outbound feed with A's signed view and recovers it
    // before it may issue anything new, so its next record is seq 31, not 1.
    c.wait_released(1).await;
    let report = reconcile(&c, 1, true).await;
    let b_node = c.node(1).clone();
    assert_eq!(b_node.store.head(ChannelId::new(a, b)).0, 50);
    assert_eq!(b_node.store.head(ChannelId::new(b, a)).0, 30);
    assert!(fetched(&report) <= 80);
    // Resubmitting the same source rows after the disk loss stores nothing new: the recovered
    // records carry the digests of their idempotency keys.
    let again = c
        .intake(1)
        .await
        .submit(pb::SubmitRequest {
            items: (1000..1030)
                .map(|n| sample_submission(n, a.as_str()))
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.results.iter().all(|r| r.duplicate), "{again:?}");
    assert_eq!(b_node.store.head(ChannelId::new(b, a)).0, 30);
    submit(&c, 1, 0, 2000..2001).await;
    assert_eq!(b_node.store.head(ChannelId::new(b, a)).0, 31);
    let verify = c
        .admin(1)
        .await
        .verify_log(pb::VerifyLogRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(verify.ok, "{:?}", verify.problems);
    // A accepts B's new record: no equivocation.
    eventually(Duration::from_secs(20), "seq 31 at A", || {
        let n = a_node.clone();
        async move { (n.store.head(ChannelId::new(b, a)).0 == 31).then_some(()) }
    })
    .await;
    assert!(
        a_node
            .store
            .run(move |s| s.evidence(ChannelId::new(b, a)))
            .await
            .unwrap()
            .is_empty()
    );
    // Release the test's handles so shutdown can close each store at once.
    drop(a_node);
    drop(b_node);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_backup_never_reuses_a_seq() {
    let mut c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    let ch = ChannelId::new(a, b);
    submit(&c, 0, 1, 0..200).await;
    let b_node = c.node(1).clone();
    eventually(Duration::from_secs(20), "200 at B", || {
        let n = b_node.clone();
        async move { (n.store.head(ch).0 == 200).then_some(()) }
    })
    .await;
    // Back up A's data directory with A stopped, then let A go on to 500.
    c.stop(0).await;
    let backup = c.dir.path().join("backup-a");
    copy_dir(&c.data_dir(0), &backup);
    c.restart(0).await;
    c.wait_released(0).await;
    submit(&c, 0, 1, 200..500).await;
    eventually(Duration::from_secs(30), "500 at B", || {
        let n = b_node.clone();
        async move { (n.store.head(ch).0 == 500).then_some(()) }
    })
    .await;
    // Restore the old copy while A is stopped.
    c.stop(0).await;
    std::fs::remove_dir_all(c.data_dir(0)).unwrap();
    copy_dir(&backup, &c.data_dir(0));
    c.restart(0).await;
    c.wait_released(0).await;
    let a_node = c.node(0).clone();
    assert_eq!(
        a_node.store.head(ch).0,
        500,
        "A recovered 201..500 from B before issuing"
    );
    submit(&c, 0, 1, 500..501).await;
    assert_eq!(
        a_node.store.head(ch).0,
        501,
        "new submissions continue at 501"
    );
    eventually(Duration::from_secs(20), "501 at B", || {
        let n = b_node.clone();
        async move { (n.store.head(ch).0 == 501).then_some(()) }
    })
    .await;
    assert!(
        b_node
            .store
            .run(move |s| s.evidence(ch))
            .await
            .unwrap()
            .is_empty(),
        "no equivocation"
    );
    // Release the test's handles so shutdown can close each store at once.
    drop(a_node);
    drop(b_node);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_equivocating_or_forged_records_is_reported_and_nothing_is_stored() {
    let c = TestCluster::start_edited(3, without_delivery).await;
    let (a, b) = (c.region(0), c.region(1));
    let b_to_a = ChannelId::new(b, a);
    let b_key = c.signing_key(1);

    // B's log holds Y at seq 1, while A was given X, also signed by B, for the same seq.
    submit(&c, 1, 0, 0..1).await;
    let x = c.crafted_record(1, 0, 1, interflow_core::record::RecordId::ZERO, &b_key, 77);
    let stored = x.clone();
    c.node(0)
        .store
        .run(move |s| s.apply(std::slice::from_ref(&stored)))
        .await
        .unwrap();
    let report = reconcile(&c, 0, false).await;
    let ch = report
        .channels
        .iter()
        .find(|r| r.origin == b.as_str() && r.destination == a.as_str())
        .unwrap();
    assert!(
        ch.anomalies.contains(&(pb::Anomaly::Equivocation as i32)),
        "{report:?}"
    );
    assert_eq!(ch.records_fetched, 0);
    let evidence = c
        .node(0)
        .store
        .run(move |s| s.evidence(b_to_a))
        .await
        .unwrap();
    assert_eq!(evidence.len(), 1, "both records kept as proof");
    assert_eq!(evidence[0].stored, x.to_bytes());
    assert_eq!(c.node(0).store.head(b_to_a), (1, x.id()));
    // The channel stays stopped: the next run fetches nothing from it.
    submit(&c, 1, 0, 1..2).await;
    let again = reconcile(&c, 0, false).await;
    let ch = again
        .channels
        .iter()
        .find(|r| r.origin == b.as_str() && r.destination == a.as_str())
        .unwrap();
    assert!(
        ch.anomalies.contains(&(pb::Anomaly::ChannelStopped as i32)),
        "{again:?}"
    );
    assert_eq!(c.node(0).store.head(b_to_a).0, 1);
    // An operator who has looked resumes it; the evidence stays.
    let resumed = c
        .admin(0)
        .await
        .resume_channel(pb::ResumeChannelRequest {
            origin: b.to_string(),
            destination: a.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resumed.was_stopped);
    assert_eq!(resumed.evidence, 1);
    assert!(
        c.node(0)
            .store
            .run(move |s| s.channel_state(b_to_a))
            .await
            .unwrap()
            .stopped
            .is_none()
    );
    assert_eq!(
        c.node(0)
            .store
            .run(move |s| s.evidence(b_to_a))
            .await
            .unwrap()
            .len(),
        1
    );

    // C's log serves a record on C → B signed with a key that is not C's.
    let (cc, bb) = (c.region(2), c.region(1));
    let forger = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let forged = c.crafted_record(2, 1, 1, interflow_core::record::RecordId::ZERO, &forger, 78);
    c.node(2)
        .store
        .run(move |s| s.apply(&[forged]))
        .await
        .unwrap();
    let report = reconcile(&c, 1, false).await;
    let ch = report
        .channels
        .iter()
        .find(|r| r.origin == cc.as_str() && r.destination == bb.as_str())
        .unwrap();
    assert!(
        ch.anomalies.contains(&(pb::Anomaly::BadRecord as i32)),
        "{report:?}"
    );
    assert_eq!(
        c.node(1).store.head(ChannelId::new(cc, bb)).0,
        0,
        "nothing stored from the forgery"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_signed_view_goes_backwards_is_an_anomaly_and_the_old_statement_is_kept() {
    use interflow_core::statement::{Head, Heads, sign_heads};
    let c = TestCluster::start_edited(2, without_delivery).await;
    let (a, b) = (c.region(0), c.region(1));
    let b_key = c.signing_key(1);
    let first = reconcile(&c, 0, false).await;
    assert!(
        first.channels.iter().all(|ch| ch.anomalies.is_empty()),
        "{first:?}"
    );
    // A statement B signed earlier claimed 10 records of A→B; B now says 0.
    let earlier = Heads {
        signer: b,
        peer: a,
        issued_at_ms: c.node(0).now() - 1000,
        heads: vec![Head {
            channel: ChannelId::new(a, b),
            seq: 10,
            hash: interflow_core::record::RecordId([5; 32]),
        }],
        audit: None,
        directory_serial: 1,
    };
    let signed = sign_heads(&b_key, &earlier);
    let bytes = prost::Message::encode_to_vec(&signed);
    let kept = bytes.clone();
    c.node(0)
        .store
        .run(move |s| s.save_checkpoint(b, &kept))
        .await
        .unwrap();
    let run = reconcile(&c, 0, false).await;
    let ch = run
        .channels
        .iter()
        .find(|r| r.origin == a.as_str() && r.destination == b.as_str())
        .unwrap();
    assert!(
        ch.anomalies.contains(&(pb::Anomaly::HeadsRegressed as i32)),
        "{run:?}"
    );
    // The earlier statement is kept as evidence, not overwritten by the regressed one.
    assert_eq!(
        c.node(0).store.run(move |s| s.checkpoint(b)).await.unwrap(),
        Some(bytes)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_intake_for_an_unreachable_peer_is_held_and_says_so() {
    let mut c = TestCluster::start(2).await;
    let b = c.region(1);
    c.stop(1).await;
    c.stop(0).await;
    c.restart(0).await;
    // A cannot compare heads with B: the channel is held, visibly, and intake says why.
    let mut admin = c.admin(0).await;
    let pending = admin
        .list_pending(pb::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        pending.channels.iter().any(|p| p.destination == b.as_str()
            && p.held
            && p.held_since_ms > 0
            && p.held_since_ms <= pending.now_ms),
        "held, and since when: {pending:?}"
    );
    let channels = admin
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        channels
            .channels
            .iter()
            .any(|ch| ch.destination == b.as_str() && ch.held)
    );
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(1, b.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    match &resp.results[0].outcome {
        Some(pb::submit_result::Outcome::Error(e)) => {
            assert_eq!(e.code, pb::SubmitErrorCode::ChannelHeld as i32);
            assert!(e.reason.contains("retry"), "{}", e.reason);
        }
        other => panic!("expected CHANNEL_HELD, got {other:?}"),
    }
    // Once B is back, A compares heads and opens the channel.
    c.restart(1).await;
    c.wait_released(0).await;
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(1, b.as_str())],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        resp.results[0].outcome,
        Some(pb::submit_result::Outcome::RecordId(_))
    ));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_its_peer_is_down_backs_off_and_keeps_few_reports() {
    let mut c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            *text = text.replace(
                "[reconcile]\n",
                "[reconcile]\nmin_backoff_ms = 100\nkeep_reports = 4\n",
            );
        }
    })
    .await;
    c.stop(1).await;
    c.stop(0).await;
    c.restart(0).await;
    assert!(
        c.node(0).holds.any(),
        "the channel to the stopped peer is held"
    );
    let node = c.node(0).clone();
    eventually(Duration::from_secs(20), "six runs after restart", || {
        let node = node.clone();
        async move { (node.metrics.reconcile_runs.get() >= 6).then_some(()) }
    })
    .await;
    let reports = node.store.run(|s| s.reports(100)).await.unwrap();
    assert!(reports.len() <= 4, "{} reports kept", reports.len());
    // Backoff from 100 ms doubling: the sixth run came at least 1.6 s after the fifth
    // (a fixed retry every second would have come after about one).
    let (newest, before) = (&reports[0], &reports[1]);
    let gap = newest.started_at_ms - before.started_at_ms;
    assert!(gap >= 1500, "runs {} ms apart", gap);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_delivery_records_the_peer_pulled_count_as_delivered() {
    let c = TestCluster::start_edited(2, without_delivery).await;
    let (a, b) = (c.region(0), c.region(1));
    let ch = ChannelId::new(a, b);
    submit(&c, 0, 1, 0..5).await;
    assert_eq!(fetched(&reconcile(&c, 1, false).await), 5, "B pulls");
    // A's next run reads B's signed heads: they name A's own record at seq 5.
    reconcile(&c, 0, false).await;
    let pending = c
        .admin(0)
        .await
        .list_pending(pb::ListPendingRequest {})
        .await
        .unwrap()
        .into_inner();
    let to_b = pending
        .channels
        .iter()
        .find(|p| p.destination == b.as_str())
        .unwrap();
    assert_eq!(
        (
            to_b.acked_seq,
            to_b.pending_count,
            to_b.oldest_pending_issued_at_ms
        ),
        (5, 0, 0),
        "{to_b:?}"
    );
    // The proof is B's signed statement, kept as received.
    let proof = c
        .node(0)
        .store
        .run(move |s| s.heads_ack(ch))
        .await
        .unwrap()
        .expect("the statement is kept");
    let signed = <pb::SignedHeads as prost::Message>::decode(proof.as_slice()).unwrap();
    let key = c.node(0).fed().directory.signing_key(b).unwrap();
    let heads = interflow_core::statement::verify_heads(&signed, &key).unwrap();
    assert_eq!(heads.head(ch).map(|h| h.seq), Some(5));
    c.shutdown().await;
}
