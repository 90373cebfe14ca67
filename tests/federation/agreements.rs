//! Agreements that end: terminated at runtime by one party (both refuse new records, the
//! partner recovers what was issued while active for the grace period, then nothing), and
//! records of an agreement this node no longer has are erased on schedule, never kept forever.

use std::time::Duration;

use interflow_core::pb;
use interflow_core::record::{ChannelId, RecordId};
use interflow_node::dev::sample_submission;
use interflow_tests::{TestCluster, eventually};
use tokio_stream::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_an_agreement_removed_from_the_config_are_erased_after_the_default() {
    let mut c = TestCluster::start(3).await;
    let (a, b) = (c.region(0), c.region(1));
    let rid = c.submit_one(0, sample_submission(31, b.as_str())).await;
    c.wait_for_record(1, &rid).await;
    let agreement = c
        .node(1)
        .fed()
        .agreements
        .iter()
        .find(|g| g.peer_of(b) == Some(a))
        .map(|g| g.id.clone())
        .expect("an agreement between nodes 0 and 1");

    // The operator removes the agreement from node 1's config (it keeps the one with node 2)
    // and sets a short default for records of agreements known nowhere any more.
    c.stop(1).await;
    let config = c.config_path(1);
    let text = std::fs::read_to_string(&config).unwrap();
    let pb_entry = format!("\"agreements/{agreement}.pb\"");
    let key_entry = format!(
        "\n[[pseudonym_keys]]\nagreement = \"{agreement}\"\nkey_file = \"agreements/{agreement}.key\"\n"
    );
    assert!(
        text.contains(&pb_entry) && text.contains(&key_entry),
        "{text}"
    );
    let edited = text
        .replace(&format!("{pb_entry}, "), "")
        .replace(&format!(", {pb_entry}"), "")
        .replace(&key_entry, "")
        + "\n[retention]\nunknown_agreement_days = 30\n";
    std::fs::write(&config, edited).unwrap();
    c.restart(1).await;
    assert!(c.node(1).fed().agreements.get(&agreement).is_none());

    assert_eq!(c.erase_as_if_after(1, 29).await, 0);
    assert_eq!(c.erase_as_if_after(1, 31).await, 1);
    let id = RecordId::try_from(rid.as_slice()).unwrap();
    let node = c.node(1).clone();
    assert!(node.store.run(move |s| s.get(id)).await.unwrap().is_none());
    c.shutdown().await;
}

/// The only agreement between nodes 0 and 1 of a two-node cluster.
fn agreement_id(c: &TestCluster) -> String {
    c.node(0)
        .fed()
        .agreements
        .iter()
        .next()
        .map(|g| g.id.clone())
        .expect("an agreement")
}

/// What node `i`'s intake answers for a new record to node `to`.
async fn submit_code(c: &TestCluster, i: usize, to: usize, n: u64) -> pb::SubmitErrorCode {
    c.submit_refused(i, sample_submission(n, c.region(to).as_str()))
        .await
        .code()
}

async fn fetch_from_1_as_0(c: &TestCluster) -> Result<Vec<pb::SignedRecord>, tonic::Status> {
    let mut client = c.exchange_from(0, 1).await;
    let mut stream = client
        .fetch(pb::FetchRequest {
            origin: c.region(0).to_string(),
            destination: c.region(1).to_string(),
            from_seq: 1,
            limit: 0,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.next().await {
        out.push(r?);
    }
    Ok(out)
}

/// Terminates the agreement at node 0 through `Admin.TerminateAgreement` and waits until
/// node 1 has applied the partner's notice.
async fn terminate_at_0(c: &TestCluster, id: &str) -> pb::TerminateAgreementResponse {
    let resp = c
        .admin(0)
        .await
        .terminate_agreement(pb::TerminateAgreementRequest {
            agreement_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.partner_has_it, "{resp:?}");
    let b = c.node(1).clone();
    let (id, at) = (id.to_owned(), resp.terminated_at_ms);
    eventually(
        Duration::from_secs(10),
        "node 1 to apply the termination",
        || {
            let b = b.clone();
            let id = id.clone();
            async move {
                (b.fed().agreements.get(&id).and_then(|g| g.terminated_at_ms) == Some(at))
                    .then_some(())
            }
        },
    )
    .await;
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_agreement_refuses_new_records_on_both_sides_and_serves_what_was_issued_before()
 {
    let c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    let id = agreement_id(&c);
    let rid = c.submit_one(0, sample_submission(41, b.as_str())).await;
    c.wait_for_record(1, &rid).await;

    let resp = terminate_at_0(&c, &id).await;
    // Node 1 keeps node 0's signed notice as evidence.
    let kept = c.node(1).store.run(|s| s.terminations()).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].agreement_id.as_str(), kept[0].by),
        (id.as_str(), a)
    );
    assert_eq!(
        Some(kept[0].signed.clone()),
        resp.termination.map(|t| prost::Message::encode_to_vec(&t))
    );

    // Both intakes refuse new records under it, also after a reload (SIGHUP) re-read the
    // config file that still lists the agreement.
    c.reload(0).await.expect("reload at node 0");
    c.reload(1).await.expect("reload at node 1");
    assert_eq!(
        submit_code(&c, 0, 1, 42).await,
        pb::SubmitErrorCode::NoAgreement
    );
    assert_eq!(
        submit_code(&c, 1, 0, 43).await,
        pb::SubmitErrorCode::NoAgreement
    );

    // A record node 0 issued after the termination is refused by node 1 with its own reason.
    let prev = RecordId::try_from(rid.as_slice()).unwrap();
    let late = c
        .crafted_record_under(0, 1, 2, prev, &c.signing_key(0), 44, &id)
        .into_decoded()
        .into_signed();
    let mut acks = c
        .exchange_from(0, 1)
        .await
        .deliver(tokio_stream::iter(vec![late]))
        .await
        .unwrap()
        .into_inner();
    match acks.next().await.unwrap().unwrap().result {
        Some(pb::delivery_ack::Result::Rejection(r)) => {
            assert_eq!(r.reason(), pb::RejectReason::AgreementTerminated)
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(c.node(1).store.head(ChannelId::new(a, b)).0, 1);

    // Inside the grace period node 0 can still recover what was issued while active.
    let served = fetch_from_1_as_0(&c).await.unwrap();
    assert_eq!(served.len(), 1);

    // Retention still erases the terminated agreement's records on its schedule.
    assert_eq!(c.erase_as_if_after(1, 3649).await, 0);
    assert_eq!(c.erase_as_if_after(1, 3651).await, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_heads_and_fetch_serve_the_former_partner_nothing() {
    let c = TestCluster::start_edited(2, |_, text| {
        *text = text.replace(
            "[federation]\n",
            "[federation]\ntermination_grace_days = 0\n",
        );
    })
    .await;
    let b = c.region(1);
    let id = agreement_id(&c);
    let rid = c.submit_one(0, sample_submission(51, b.as_str())).await;
    c.wait_for_record(1, &rid).await;
    assert_eq!(fetch_from_1_as_0(&c).await.unwrap().len(), 1);

    terminate_at_0(&c, &id).await;
    let err = fetch_from_1_as_0(&c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("grace period"), "{err:?}");
    let err = c
        .exchange_from(0, 1)
        .await
        .heads(pb::HeadsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_was_down_gets_the_termination_from_reconciliation() {
    let mut c = TestCluster::start(2).await;
    let id = agreement_id(&c);
    c.stop(1).await;
    let resp = c
        .admin(0)
        .await
        .terminate_agreement(pb::TerminateAgreementRequest {
            agreement_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.partner_has_it);
    c.restart(1).await;
    assert_eq!(
        c.node(1)
            .fed()
            .agreements
            .get(&id)
            .unwrap()
            .terminated_at_ms,
        None
    );
    interflow_node::reconcile::run(c.node(0), None, false, None).await;
    assert_eq!(
        c.node(1)
            .fed()
            .agreements
            .get(&id)
            .unwrap()
            .terminated_at_ms,
        Some(resp.terminated_at_ms)
    );
    c.shutdown().await;
}

async fn install(
    c: &TestCluster,
    i: usize,
    agreement: &pb::SignedAgreement,
    key: &str,
) -> Result<pb::InstallAgreementResponse, tonic::Status> {
    c.admin(i)
        .await
        .install_agreement(pb::InstallAgreementRequest {
            agreement: Some(agreement.clone()),
            pseudonym_key_file: key.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agreement_installed_at_runtime_on_both_nodes_carries_records_at_once() {
    // Nodes 0 and 2 have no agreement with each other (neighbours only).
    let c = TestCluster::start(3).await;
    let (a, z) = (c.region(0), c.region(2));
    assert!(!c.node(0).fed().peers(a).contains(&z));
    let (agreement, key) = c.new_agreement(0, 2);
    let key = key.to_string_lossy().into_owned();

    // A stranger to the agreement cannot install it; a forged signature is refused.
    let err = install(&c, 1, &agreement, &key).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mut forged = agreement.clone();
    forged.signatures[1].signature[0] ^= 1;
    let err = install(&c, 0, &forged, &key).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    for i in [0, 2] {
        let r = install(&c, i, &agreement, &key).await.unwrap();
        assert!(r.installed_now, "{r:?}");
        // Installing the same agreement again changes nothing.
        assert!(
            !install(&c, i, &agreement, &key)
                .await
                .unwrap()
                .installed_now
        );
    }
    assert!(c.node(0).fed().peers(a).contains(&z));
    // A reload (SIGHUP) re-reads the config file, which does not list it: it stays in force.
    c.reload(0).await.expect("reload at node 0");
    assert!(c.node(0).fed().peers(a).contains(&z));
    // Its kept copy is what a restart puts in force again.
    let kept = c.node(0).store.run(|s| s.agreements()).await.unwrap();
    assert_eq!(kept.len(), 1);

    // The new partners compare heads (as the next scheduled run would), then records flow.
    interflow_node::reconcile::run(c.node(0), Some(z), false, None).await;
    interflow_node::reconcile::run(c.node(2), Some(a), false, None).await;
    c.wait_released(0).await;
    let rid = c.submit_one(0, sample_submission(61, z.as_str())).await;
    let got = c.wait_for_record(2, &rid).await;
    assert_eq!(got.agreement_id(), format!("agr-new-{a}-{z}"));
    c.shutdown().await;
}
