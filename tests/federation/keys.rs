//! Record-signing key rotation: a node switches to a new key mid-stream (by a reload, no
//! restart), records, receipts and head statements before and after the switch verify at the
//! receiver, in `VerifyLog` and through `Fetch` from both nodes; a revoked key's records issued
//! after the revocation are refused with the reason, earlier ones still verify.

use interflow_core::pb;
use interflow_core::record::{DecodedRecord, RecordId, Sealer};
use interflow_node::dev::sample_submission;
use interflow_tests::TestCluster;
use tokio_stream::StreamExt;

/// `Fetch` of the whole channel `origin → dest` at node `at`, as node `caller`.
async fn fetch_all(c: &TestCluster, caller: usize, at: usize) -> Vec<DecodedRecord> {
    let (a, b) = (c.region(0), c.region(1));
    c.exchange_from(caller, at)
        .await
        .fetch(pb::FetchRequest {
            origin: a.to_string(),
            destination: b.to_string(),
            from_seq: 1,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|r| DecodedRecord::decode(r.unwrap()).unwrap())
        .collect()
        .await
}

async fn verify_log_clean(c: &TestCluster, i: usize) {
    let v = c
        .admin(i)
        .await
        .verify_log(pb::VerifyLogRequest { with_peers: false })
        .await
        .unwrap()
        .into_inner();
    assert!(v.problems.is_empty(), "node {i}: {:?}", v.problems);
}

async fn deliver_one(
    c: &TestCluster,
    from: usize,
    to: usize,
    rec: pb::SignedRecord,
) -> pb::DeliveryAck {
    let mut acks = c
        .exchange_from(from, to)
        .await
        .deliver(tokio_stream::iter(vec![rec]))
        .await
        .unwrap()
        .into_inner();
    acks.next().await.expect("an answer").expect("not a status")
}

fn rejection(ack: pb::DeliveryAck) -> pb::RejectReason {
    match ack.result {
        Some(pb::delivery_ack::Result::Rejection(r)) => r.reason(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_on_and_a_revoked_one_is_refused_after_its_revocation() {
    let c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));

    // Before the rotation: key id 0, a version-1 body.
    let before = c.submit_one(0, sample_submission(1, b.as_str())).await;
    assert_eq!(c.wait_for_record(1, &before).await.key_id(), 0);

    // A key the directory does not list yet: the reload fails and A keeps signing with key 0.
    let (_, entry) = c.new_signing_key(0, 1, c.node(0).now() - 1_000);
    c.use_signing_key(0, 1);
    let refused = c.reload(0).await.unwrap_err();
    assert!(refused.message().contains("not among"), "{refused:?}");
    assert_eq!(c.node(0).signer().key_id(), 0);

    // The operator lists the new key (serial 2) at both nodes; A's reload then switches.
    let dir = c.with_member_key(c.directory_with(2, |_| true), 0, entry.clone());
    for i in [1, 0] {
        c.publish_directory(i, &dir);
        c.reload(i).await.unwrap();
    }
    assert_eq!(c.node(0).signer().key_id(), 1);

    // After the switch: a version-2 body naming key id 1 arrives and verifies at B; A's
    // receipt for B's record, signed with key id 1, verifies at B (B's pending drains).
    let after = c.submit_one(0, sample_submission(2, b.as_str())).await;
    let got = c.wait_for_record(1, &after).await;
    assert_eq!((got.body().version, got.key_id()), (2, 1));
    let to_a = c.submit_one(1, sample_submission(3, a.as_str())).await;
    c.wait_for_record(0, &to_a).await;
    let b_node = c.node(1).clone();
    interflow_tests::eventually(
        std::time::Duration::from_secs(10),
        "B's record to A acknowledged by A's receipt",
        || {
            let n = b_node.clone();
            async move {
                let p = n.store.run(move |s| s.pending(b)).await.ok()?;
                p.iter().all(|p| p.pending_count == 0).then_some(())
            }
        },
    )
    .await;
    // The node must not outlive the cluster's shutdown.
    drop(b_node);

    // Head statements signed with the new key verify at B (no anomaly), and both logs,
    // Fetch from either node and each node's directory agree on both records.
    for i in [0, 1] {
        let report = c.reconcile_now(i).await;
        for ch in &report.channels {
            assert!(ch.anomalies.is_empty(), "node {i}: {:?}", ch.anomalies);
        }
        verify_log_clean(&c, i).await;
    }
    for (caller, at) in [(1, 0), (0, 1)] {
        let fetched = fetch_all(&c, caller, at).await;
        assert_eq!(fetched.len(), 2);
        let dir = c.node(caller).fed();
        for r in fetched {
            r.verify_in(&dir.directory)
                .expect("a fetched record verifies");
        }
    }

    // The operator revokes key id 1 (serial 3, at B) from now on: A's records under it issued
    // from now are refused; the one issued before still verifies.
    let revoked_at = c.node(1).now();
    let revoked = pb::MemberKey {
        revoked_at_ms: revoked_at,
        ..entry
    };
    c.publish_directory(
        1,
        &c.with_member_key(c.directory_with(3, |_| true), 0, revoked),
    );
    c.reload(1).await.unwrap();
    let key1 = interflow_core::keys::load_signing_key(
        &c.config_path(0)
            .parent()
            .unwrap()
            .join("keys/signing-1.pem"),
    )
    .unwrap();
    let head = RecordId::try_from(after.as_slice()).unwrap();
    let forged = |key_id| {
        let rec = c.crafted_record(
            0,
            1,
            3,
            head,
            Sealer {
                key: (&key1).into(),
                key_id,
            },
            9,
        );
        assert!(rec.issued_at_ms() >= revoked_at);
        rec.into_decoded().into_signed()
    };
    assert_eq!(
        rejection(deliver_one(&c, 0, 1, forged(1)).await),
        pb::RejectReason::KeyNotValid
    );
    assert_eq!(
        rejection(deliver_one(&c, 0, 1, forged(7)).await),
        pb::RejectReason::UnknownKey
    );
    assert_eq!(
        c.node(1)
            .store
            .head(interflow_core::record::ChannelId::new(a, b))
            .0,
        2
    );
    verify_log_clean(&c, 1).await;
    c.shutdown().await;
}

/// `n - s` for the SM2 group order `n` (big-endian, 32 bytes).
fn negate_mod_order(s: &[u8]) -> Vec<u8> {
    const N: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123";
    let n: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&N[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = d.rem_euclid(256) as u8;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_federation_exchanges_with_sm2_on_one_side_and_ed25519_on_the_other() {
    let c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));
    let sm2 = c.switch_to_sm2(0, 2).await;
    assert_eq!(c.node(0).signer().key_id(), 1);

    // A → B in SM2, B → A in Ed25519; each side's receipts (A's in SM2) drain the other's
    // pending.
    let from_a = c.submit_one(0, sample_submission(1, b.as_str())).await;
    let got = c.wait_for_record(1, &from_a).await;
    assert_eq!(got.signed().alg, pb::SignatureAlgorithm::Sm2Sm3 as i32);
    let from_b = c.submit_one(1, sample_submission(2, a.as_str())).await;
    let got = c.wait_for_record(0, &from_b).await;
    assert_eq!(got.signed().alg, pb::SignatureAlgorithm::Ed25519 as i32);
    for (i, peer) in [(0, b), (1, a)] {
        let node = c.node(i).clone();
        interflow_tests::eventually(
            std::time::Duration::from_secs(10),
            "the peer's signed receipt",
            || {
                let n = node.clone();
                async move {
                    let me = n.region;
                    let p = n.store.run(move |s| s.pending(me)).await.ok()?;
                    p.iter()
                        .filter(|p| p.channel.destination == peer)
                        .all(|p| p.pending_count == 0)
                        .then_some(())
                }
            },
        )
        .await;
    }

    // Reconciliation both ways: head statements in either suite verify; logs are clean.
    for i in [0, 1] {
        let report = c.reconcile_now(i).await;
        for ch in &report.channels {
            assert!(ch.anomalies.is_empty(), "node {i}: {:?}", ch.anomalies);
        }
        verify_log_clean(&c, i).await;
    }

    // Forged and malleated SM2 records from A are refused at B; nothing is stored.
    let head = RecordId::try_from(from_a.as_slice()).unwrap();
    let good = c
        .crafted_record(
            0,
            1,
            2,
            head,
            Sealer {
                key: (&sm2).into(),
                key_id: 1,
            },
            9,
        )
        .into_decoded()
        .into_signed();
    let mut malleated = good.clone();
    let s = negate_mod_order(&malleated.signature[32..]);
    malleated.signature[32..].copy_from_slice(&s);
    let mut flipped = good.clone();
    flipped.signature[5] ^= 0x01;
    let other = interflow_core::sm2_suite::Sm2SigningKey::generate();
    let forged = c
        .crafted_record(
            0,
            1,
            2,
            head,
            Sealer {
                key: (&other).into(),
                key_id: 1,
            },
            9,
        )
        .into_decoded()
        .into_signed();
    for bad in [malleated, flipped, forged] {
        assert_eq!(
            rejection(deliver_one(&c, 0, 1, bad).await),
            pb::RejectReason::BadSignature
        );
    }
    let a_to_b = interflow_core::record::ChannelId::new(a, b);
    assert_eq!(c.node(1).store.head(a_to_b).0, 1);
    // The untouched signature is accepted: the refusals were about the signatures.
    match deliver_one(&c, 0, 1, good).await.result {
        Some(pb::delivery_ack::Result::Receipt(r)) => {
            assert_eq!(r.alg, pb::SignatureAlgorithm::Ed25519 as i32)
        }
        other => panic!("expected a receipt, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agreement_that_requires_sm2_carries_only_sm2_records() {
    use interflow_core::agreement::{encode_body, party_signature};
    use prost::Message as _;
    // Nodes 0 and 2 have no agreement with each other; node 0 signs with SM2 (key id 1).
    let c = TestCluster::start(3).await;
    let (a, z) = (c.region(0), c.region(2));
    let sm2 = c.switch_to_sm2(0, 2).await;
    let (signed, key) = c.new_agreement(0, 2);
    let mut body = pb::AgreementBody::decode(signed.body.as_slice()).unwrap();
    body.required_signature_algorithm = pb::SignatureAlgorithm::Sm2Sm3 as i32;
    let bytes = encode_body(&body);
    // Both parties sign with their key id 0 (Ed25519), valid at `valid_from_ms`.
    let agreement = pb::SignedAgreement {
        signatures: vec![
            party_signature(&c.signing_key(0), a, &bytes),
            party_signature(&c.signing_key(2), z, &bytes),
        ],
        body: bytes,
    };
    for i in [0, 2] {
        c.admin(i)
            .await
            .install_agreement(pb::InstallAgreementRequest {
                agreement: Some(agreement.clone()),
                pseudonym_key_file: key.to_string_lossy().into_owned(),
            })
            .await
            .unwrap();
    }
    interflow_node::reconcile::run(c.node(0), Some(z), false, None).await;
    interflow_node::reconcile::run(c.node(2), Some(a), false, None).await;
    c.wait_released(0).await;

    // A's SM2 records flow; Z, signing with Ed25519, is refused at its own intake.
    let rid = c.submit_one(0, sample_submission(1, z.as_str())).await;
    let got = c.wait_for_record(2, &rid).await;
    assert_eq!(got.signed().alg, pb::SignatureAlgorithm::Sm2Sm3 as i32);
    let err = c.submit_refused(2, sample_submission(2, a.as_str())).await;
    assert_eq!(err.code(), pb::SubmitErrorCode::NoAgreement);
    assert!(err.reason.contains("requires"), "{err:?}");

    // An Ed25519 record from A under it (key id 0, still valid) is refused at Z.
    let head = RecordId::try_from(rid.as_slice()).unwrap();
    let id = body.agreement_id.clone();
    let ed = c
        .crafted_record_under(0, 2, 2, head, &c.signing_key(0), 7, &id)
        .into_decoded()
        .into_signed();
    assert_eq!(
        rejection(deliver_one(&c, 0, 2, ed).await),
        pb::RejectReason::WrongSignatureAlgorithm
    );
    let sm2_rec = c
        .crafted_record_under(
            0,
            2,
            2,
            head,
            Sealer {
                key: (&sm2).into(),
                key_id: 1,
            },
            7,
            &id,
        )
        .into_decoded()
        .into_signed();
    assert!(matches!(
        deliver_one(&c, 0, 2, sm2_rec).await.result,
        Some(pb::delivery_ack::Result::Receipt(_))
    ));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_generated_with_sm2_keys_signs_everything_in_sm2() {
    let c = TestCluster::start_sm2(2).await;
    let (a, b) = (c.region(0), c.region(1));
    for (i, to) in [(0, b), (1, a)] {
        assert_eq!(c.node(i).signer().key_id(), 1);
        let rid = c
            .submit_one(i, sample_submission(i as u64, to.as_str()))
            .await;
        let got = c.wait_for_record(1 - i, &rid).await;
        assert_eq!(got.signed().alg, pb::SignatureAlgorithm::Sm2Sm3 as i32);
    }
    for i in [0, 1] {
        let report = c.reconcile_now(i).await;
        for ch in &report.channels {
            assert!(ch.anomalies.is_empty(), "node {i}: {:?}", ch.anomalies);
        }
        verify_log_clean(&c, i).await;
    }
    c.shutdown().await;
}
