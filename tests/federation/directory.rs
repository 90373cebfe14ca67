//! The directory and agreements at runtime: reloading them from the config files without a
//! restart, refusing a rolled-back directory, and refusing a removed member at once.

use interflow_core::pb;
use interflow_node::dev::sample_submission;
use interflow_tests::{TestCluster, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_at_once_while_the_others_keep_exchanging() {
    let c = TestCluster::start(3).await;
    let (a, b) = (c.region(0), c.region(1));
    // Before: node 2 is a member and may call node 1.
    c.exchange_from(2, 1)
        .await
        .heads(pb::HeadsRequest {})
        .await
        .expect("a member's call is answered");
    let id = c
        .submit_one(1, sample_submission(9, c.region(2).as_str()))
        .await;
    c.wait_for_record(2, &id).await;

    // The operator removes node 2: a new directory at node 1, its agreement with 2 dropped.
    c.publish_directory(1, &c.directory_with(2, |i| i != 2));
    c.drop_agreements_with(1, 2);
    let r = c.reload(1).await.expect("reload");
    assert_eq!((r.directory_serial, r.members, r.agreements), (2, 2, 1));
    assert_eq!(c.node(1).fed().directory.serial, 2);

    let refused = c
        .exchange_from(2, 1)
        .await
        .heads(pb::HeadsRequest {})
        .await
        .expect_err("a removed member is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("not a member"), "{refused:?}");

    // Node 1 keeps its channels with node 2 and shows them as removed.
    let channels = c
        .admin(1)
        .await
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    let gone = c.region(2).to_string();
    for ch in &channels {
        let with_removed = ch.origin == gone || ch.destination == gone;
        assert_eq!(ch.removed, with_removed, "{ch:?}");
    }
    assert!(channels.iter().any(|ch| ch.removed && ch.head_seq == 1));

    // Node 0 and node 1 go on exchanging, both ways.
    let id = c.submit_one(0, sample_submission(1, b.as_str())).await;
    c.wait_for_record(1, &id).await;
    let id = c.submit_one(1, sample_submission(2, a.as_str())).await;
    c.wait_for_record(0, &id).await;
    // Intake at node 1 no longer sends to the removed member.
    let resp = c
        .intake(1)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(3, c.region(2).as_str())],
        })
        .await
        .expect("submit")
        .into_inner();
    assert!(
        matches!(
            resp.results[0].outcome,
            Some(pb::submit_result::Outcome::Error(_))
        ),
        "{resp:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_or_bad_directory_is_refused_and_the_installed_one_kept() {
    let c = TestCluster::start(2).await;
    c.publish_directory(0, &c.directory_with(3, |_| true));
    let r = c.reload(0).await.expect("a newer directory installs");
    assert_eq!(r.directory_serial, 3);

    // A lower serial is a rollback.
    c.publish_directory(0, &c.directory_with(2, |_| true));
    let refused = c.reload(0).await.expect_err("rollback refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("rollback"), "{refused:?}");
    assert_eq!(c.node(0).fed().directory.serial, 3);

    // A file that is not a signed directory keeps the installed one too, and says why.
    std::fs::write(
        c.config_path(0)
            .parent()
            .unwrap()
            .join("federation/directory.pb"),
        b"not a directory",
    )
    .unwrap();
    let refused = c.reload(0).await.expect_err("bad file refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("directory"), "{refused:?}");
    assert_eq!(c.node(0).fed().directory.serial, 3);
    let last = c.node(0).last_reload().expect("a reload happened");
    assert!(last.error.is_some_and(|e| e.contains("SignedDirectory")));
    assert_eq!(c.node(0).metrics.reload_failures.get(), 2);
    // `interflowctl channels` says so too.
    let channels = c
        .admin(0)
        .await
        .list_channels(pb::ListChannelsRequest {})
        .await
        .expect("list channels")
        .into_inner();
    assert!(
        channels.last_reload_error.contains("SignedDirectory"),
        "{channels:?}"
    );

    // The node still works under the installed directory.
    let id = c
        .submit_one(0, sample_submission(1, c.region(1).as_str()))
        .await;
    c.wait_for_record(1, &id).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_directory_spreads_from_peer_to_peer_and_survives_a_restart() {
    let mut c = TestCluster::start(3).await;
    // The operator publishes serial 2 at node 2 only.
    c.publish_directory(2, &c.directory_with(2, |_| true));
    assert_eq!(c.reload(2).await.expect("reload").directory_serial, 2);
    assert_eq!(c.node(0).fed().directory.serial, 1);

    // Node 1 sees serial 2 in node 2's signed heads and fetches it; node 0 then from node 1.
    c.reconcile_now(1).await;
    assert_eq!(c.node(1).fed().directory.serial, 2);
    assert_eq!(
        c.node(1).directory_source().1,
        interflow_node::reload::DirectorySource::Peer(c.region(2))
    );
    c.reconcile_now(0).await;
    assert_eq!(c.node(0).fed().directory.serial, 2);

    // Kept in the data directory: a restart with the old file does not roll back.
    c.stop(0).await;
    c.restart(0).await;
    assert_eq!(c.node(0).fed().directory.serial, 2);
    // And a reload with the (older) config file keeps the newer directory learnt from peers.
    c.wait_released(0).await;
    assert_eq!(c.reload(0).await.expect("reload").directory_serial, 2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_directory_is_not_installed() {
    let c = TestCluster::start(2).await;
    let mut body = c.directory_with(2, |_| true);
    body.expires_at_ms = c.node(0).now() - 1;
    c.publish_directory(0, &body);
    let refused = c.reload(0).await.expect_err("expired directory refused");
    assert!(refused.message().contains("expired"), "{refused:?}");
    assert_eq!(c.node(0).fed().directory.serial, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_directory_alarms_while_the_members_go_on_exchanging() {
    use prost::Message as _;
    // Node 0 starts with the generated directory, signed again with an expiry in the past.
    let c = TestCluster::start_prepared(2, |i, node_dir, _| {
        if i != 0 {
            return;
        }
        let fed_dir = node_dir.parent().unwrap().join("federation");
        let signed = pb::SignedDirectory::decode(
            std::fs::read(fed_dir.join("directory.pb"))
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let mut body = pb::DirectoryBody::decode(signed.body.as_slice()).unwrap();
        body.expires_at_ms = 1;
        let operator =
            interflow_core::keys::load_signing_key(&fed_dir.join("operator.pem")).unwrap();
        let signed = interflow_core::directory::Directory::sign(&body, &operator);
        std::fs::write(
            node_dir.join("federation/directory.pb"),
            signed.encode_to_vec(),
        )
        .unwrap();
    })
    .await;
    let status = c
        .admin(0)
        .await
        .federation(pb::FederationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.directory_expired, "{status:?}");
    assert_eq!(status.directory_expires_at_ms, 1);
    let node = c.node(0).clone();
    interflow_tests::eventually(
        std::time::Duration::from_secs(10),
        "the expiry gauge",
        || {
            let n = node.clone();
            async move { (n.metrics.directory_expired.get() == 1).then_some(()) }
        },
    )
    .await;
    // It admits no new member: no agreement is put in force on its word.
    let (agreement, key) = c.new_agreement(0, 1);
    let agreement_id = format!("agr-new-{}-{}", c.region(0), c.region(1));
    let refused = c
        .admin(0)
        .await
        .install_agreement(pb::InstallAgreementRequest {
            agreement: Some(agreement),
            pseudonym_key_file: key.display().to_string(),
        })
        .await
        .expect_err("no agreement installs under an expired directory");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("expired"), "{refused:?}");
    assert!(c.node(0).fed().agreements.get(&agreement_id).is_none());
    // The existing members go on.
    let id = c
        .submit_one(0, sample_submission(1, c.region(1).as_str()))
        .await;
    c.wait_for_record(1, &id).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_joins_a_running_federation_without_restarts() {
    let mut c = TestCluster::start_without_newcomer(4).await;
    assert_eq!(c.node(0).fed().directory.members().count(), 3);
    let (c2, c3) = (c.region(2), c.region(3));

    // The operator publishes serial 2 with all four members at node 2 and at the newcomer;
    // node 2 adds the agreement with the newcomer to its config and reloads.
    let all = c.directory_with(2, |_| true);
    c.publish_directory(2, &all);
    c.publish_directory(3, &all);
    c.restore_agreement_with(2, 3);
    let r = c.reload(2).await.expect("reload");
    assert_eq!((r.directory_serial, r.members, r.agreements), (2, 4, 2));
    c.restart(3).await;

    // The others learn the directory from their peers at their next reconciliation.
    c.reconcile_now(1).await;
    c.reconcile_now(0).await;
    for i in 0..2 {
        let fed = c.node(i).fed();
        assert_eq!(fed.directory.serial, 2, "node {i}");
        assert!(fed.directory.member(c3).is_some(), "node {i}");
    }

    // Node 2 and the newcomer compare heads once, then records flow both ways.
    c.reconcile_now(2).await;
    c.wait_released(2).await;
    c.wait_released(3).await;
    let id = c.submit_one(2, sample_submission(1, c3.as_str())).await;
    c.wait_for_record(3, &id).await;
    let id = c.submit_one(3, sample_submission(2, c2.as_str())).await;
    c.wait_for_record(2, &id).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_file_replaced_in_place_is_installed_without_a_signal() {
    let c = TestCluster::start_edited(2, |i, text| {
        if i == 0 {
            *text = text.replace("watch_interval_ms = 0", "watch_interval_ms = 50");
        }
    })
    .await;
    let wait = std::time::Duration::from_secs(20);
    c.publish_directory(0, &c.directory_with(2, |_| true));
    eventually(
        wait,
        "the watched directory file to be installed",
        || async { (c.node(0).fed().directory.serial == 2).then_some(()) },
    )
    .await;
    assert_eq!(c.node(0).metrics.reload_failures.get(), 0);

    // A rollback written to the file is refused like one sent with SIGHUP, and says why.
    c.publish_directory(0, &c.directory_with(1, |_| true));
    let error = eventually(wait, "the rolled-back file to be refused", || async {
        c.node(0).last_reload().and_then(|r| r.error)
    })
    .await;
    assert!(error.contains("rollback"), "{error}");
    assert_eq!(c.node(0).fed().directory.serial, 2);
    // Node 1 does not watch: it learns serial 2 from node 0 as before.
    assert_eq!(c.node(1).fed().directory.serial, 1);
    c.shutdown().await;
}
