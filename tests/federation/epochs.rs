//! Pseudonym key rotation by epoch: an agreement's key is rotated at runtime (the next epoch
//! added to both configs, `Admin.Reload`, no restart); new records use the new epoch, and one
//! search by national ID (`Admin.Lookup`, `Inbox.Match`, `Admin.Disclosure`) finds a person's
//! records of both epochs, at the origin and at the receiver.

use std::collections::HashSet;

use interflow_core::pb;
use interflow_core::pseudonym::{Epoch, PseudonymKey};
use interflow_core::record::{DecodedRecord, RecordId};
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_tests::TestCluster;

const ALICE: u64 = 80;
const BOB: u64 = 81;

/// Node `i` gets `key` as `epoch` of `agreement` in its config and reloads.
async fn add_epoch(c: &TestCluster, i: usize, agreement: &str, epoch: u32, key: &PseudonymKey) {
    let config = c.config_path(i);
    let file = format!("agreements/{agreement}.epoch{epoch}.key");
    let dir = config.parent().unwrap();
    interflow_core::keys::save_pseudonym_key(&dir.join(&file), key).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[pseudonym_keys]]\nagreement = \"{agreement}\"\nepoch = {epoch}\nkey_file = \"{file}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    c.reload(i).await.expect("reload with the new epoch");
}

/// A contraception status of person `n` for node 1, under its own idempotency key.
fn status(
    c: &TestCluster,
    n: u64,
    key: &str,
    method: pb::ContraceptiveMethod,
    month: u32,
) -> pb::Submission {
    let mut s = sample_submission(n, c.region(1).as_str());
    s.idempotency_key = key.into();
    if let Some(pb::submission::Payload::Contraception(p)) = &mut s.payload {
        p.method = method as i32;
        p.observed_on = Some(pb::Date {
            year: 2025,
            month,
            day: 15,
        });
    }
    s
}

fn ids(records: &[pb::SignedRecord]) -> HashSet<RecordId> {
    records.iter().map(|r| RecordId::of_body(&r.body)).collect()
}

async fn lookup(c: &TestCluster, i: usize, n: u64) -> pb::LookupResponse {
    c.admin(i)
        .await
        .lookup(pb::LookupRequest {
            national_id: synthetic_id(n),
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `Inbox.Match` at node `i`: for each ID, the record ids of its current statuses.
async fn match_current(c: &TestCluster, i: usize, people: &[u64]) -> Vec<Vec<RecordId>> {
    let resp = c
        .inbox(i)
        .await
        .r#match(tokio_stream::iter(vec![pb::MatchRequest {
            case_ref: String::new(),
            purpose: pb::Purpose::ServiceContinuity as i32,
            national_ids: people.iter().map(|n| synthetic_id(*n)).collect(),
        }]))
        .await
        .unwrap()
        .into_inner();
    let mut out = vec![Vec::new(); people.len()];
    for m in resp.matches {
        for s in m.statuses {
            let item = s.current.unwrap();
            out[m.index as usize].push(RecordId::try_from(item.record_id.as_slice()).unwrap());
        }
    }
    out
}

fn id(bytes: &[u8]) -> RecordId {
    RecordId::try_from(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_search_finds_records_made_before_and_after_a_pseudonym_key_rotation() {
    use pb::ContraceptiveMethod::{Condom, Implant, Iud};
    let c = TestCluster::start(2).await;
    let agreement = c.node(0).fed().agreements.iter().next().unwrap().id.clone();

    // Epoch 1: Alice and Bob each get a status.
    let r1 = c.submit_one(0, status(&c, ALICE, "alice-1", Iud, 9)).await;
    let rb = c.submit_one(0, status(&c, BOB, "bob-1", Iud, 9)).await;
    let old: DecodedRecord = c.wait_for_record(1, &r1).await;
    c.wait_for_record(1, &rb).await;
    assert_eq!(old.pseudonym_epoch(), Epoch::FIRST);
    assert_eq!(old.body().pseudonym_epoch, 0, "epoch 1 keeps the old bytes");

    // Both parties add epoch 2 of the agreement's key and reload; no node restarts.
    let key = PseudonymKey::from_bytes([0x5e; 32]);
    for i in [1, 0] {
        add_epoch(&c, i, &agreement, 2, &key).await;
        let keys = &c.node(i).fed().pseudonym_keys[&agreement];
        assert_eq!(keys.newest().0.get(), 2);
    }

    // A new status of Alice uses epoch 2 (another ref); a correction of her epoch-1 record
    // keeps epoch 1, so it stays under the ref of the record it corrects.
    let r2 = c
        .submit_one(0, status(&c, ALICE, "alice-2", Implant, 10))
        .await;
    let mut fix = status(&c, ALICE, "alice-fix", Condom, 9);
    fix.supersedes = r1.clone();
    let r3 = c.submit_one(0, fix).await;
    // A resubmission of Alice's first status (a retry across the rotation) is recognised as
    // the record it first made, not answered as an idempotency conflict.
    assert_eq!(
        c.submit_one(0, status(&c, ALICE, "alice-1", Iud, 9)).await,
        r1
    );
    let new = c.wait_for_record(1, &r2).await;
    let corrected = c.wait_for_record(1, &r3).await;
    assert_eq!(new.pseudonym_epoch().get(), 2);
    assert_ne!(new.subject(), old.subject());
    assert_eq!(corrected.pseudonym_epoch(), Epoch::FIRST);
    assert_eq!(corrected.subject(), old.subject());

    // One lookup of Alice, at the origin and at the receiver, finds all three records; her
    // current status is the epoch-2 one (observed later).
    let alice: HashSet<RecordId> = [&r1, &r2, &r3].into_iter().map(|r| id(r)).collect();
    for i in [0, 1] {
        let l = lookup(&c, i, ALICE).await;
        assert_eq!(ids(&l.timeline), alice, "node {i}");
        let current: Vec<_> = l.current.into_iter().map(|s| s.current.unwrap()).collect();
        assert_eq!(ids(&current), HashSet::from([id(&r2)]), "node {i}");
    }

    // One Match at the receiver: Alice's current status across both epochs, and Bob, who has
    // only an epoch-1 record, is still found.
    assert_eq!(
        match_current(&c, 1, &[ALICE, BOB]).await,
        vec![vec![id(&r2)], vec![id(&rb)]]
    );

    // Disclosure to Alice lists the exchanges of both epochs.
    let d = c
        .admin(0)
        .await
        .disclosure(pb::DisclosureRequest {
            national_id: synthetic_id(ALICE),
            purpose: pb::Purpose::OwnRequest as i32,
            case_ref: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let disclosed: HashSet<RecordId> = d.exchanges.iter().map(|e| id(&e.record_id)).collect();
    assert_eq!(disclosed, alice);

    // The receiver's inbox carries the records of both epochs in arrival order.
    let pulled = c
        .inbox(1)
        .await
        .pull(pb::PullRequest {
            consumer: "epochs".into(),
            after: None,
            max: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    let order: Vec<RecordId> = pulled.items.iter().map(|it| id(&it.record_id)).collect();
    assert_eq!(order, vec![id(&r1), id(&rb), id(&r2), id(&r3)]);
    assert!(pulled.items.iter().all(|it| it.payload.is_some()));

    // Node 0 drops epoch 1 while records made under it are inside retention: the reload is
    // refused and says why, and both epochs stay in force.
    let config = c.config_path(0);
    let text = std::fs::read_to_string(&config).unwrap();
    let first = format!(
        "\n[[pseudonym_keys]]\nagreement = \"{agreement}\"\nkey_file = \"agreements/{agreement}.key\"\n"
    );
    assert!(text.contains(&first), "{text}");
    std::fs::write(&config, text.replace(&first, "")).unwrap();
    let refused = c.reload(0).await.unwrap_err();
    assert!(
        refused
            .message()
            .contains(&format!("pseudonym epoch 1 of agreement `{agreement}` is no longer listed, but records made under it are inside retention")),
        "{}",
        refused.message()
    );
    let epochs = |c: &TestCluster| -> Vec<u32> {
        c.node(0).fed().pseudonym_keys[&agreement]
            .epochs()
            .map(Epoch::get)
            .collect()
    };
    assert_eq!(epochs(&c), vec![1, 2]);
    // Once retention has erased them, the key can go.
    let days = c
        .node(0)
        .fed()
        .agreements
        .get(&agreement)
        .unwrap()
        .retention_days;
    assert!(c.erase_as_if_after(0, i64::from(days) + 1).await >= 4);
    c.reload(0)
        .await
        .expect("epoch 1 dropped after its records' retention");
    assert_eq!(epochs(&c), vec![2]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_residence_across_a_pseudonym_key_rotation() {
    use crate::residence::{refused, residence, stored, submit_one};
    // Node 1 is the home bureau of node 2, where she lives (as in `residence`).
    let (home, lives) = (1, 2);
    let c = TestCluster::start_residence(3).await;
    let (h, l) = (c.region(home), c.region(lives));
    let agreement = c
        .node(home)
        .fed()
        .agreements
        .iter()
        .find(|a| a.peer_of(h) == Some(l))
        .unwrap()
        .id
        .clone();

    // Her arrival is registered under epoch 1; then both parties rotate the key.
    let arrived = stored(
        &submit_one(
            &c,
            lives,
            residence(ALICE, "arr", h.as_str(), pb::ResidenceEvent::Arrived),
        )
        .await,
    );
    c.wait_for_record(home, &arrived).await;
    let key = PseudonymKey::from_bytes([0x6a; 32]);
    for i in [home, lives] {
        add_epoch(&c, i, &agreement, 2, &key).await;
    }

    // The home bureau finds the epoch-1 arrival, so its status (made under epoch 2) goes.
    let status = stored(&submit_one(&c, home, sample_submission(ALICE, l.as_str())).await);
    let sent = c.wait_for_record(lives, &status).await;
    assert_eq!(sent.pseudonym_epoch().get(), 2);

    // Her departure, registered under epoch 2, stops the next status.
    let departed = stored(
        &submit_one(
            &c,
            lives,
            residence(ALICE, "dep", h.as_str(), pb::ResidenceEvent::Departed),
        )
        .await,
    );
    c.wait_for_record(home, &departed).await;
    let mut next = sample_submission(ALICE, l.as_str());
    next.idempotency_key = "after-departure".into();
    let (code, _) = refused(&submit_one(&c, home, next).await);
    assert_eq!(code, pb::SubmitErrorCode::NotResident);
    c.shutdown().await;
}
