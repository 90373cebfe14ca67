//! The audit log says who read what and why, and a rewritten audit log shows against a peer:
//! every audited method writes exactly one entry (the read with its caller and purpose, the
//! write with its counts, or the refusal with its reason), and `VerifyLog { with_peers }`
//! compares the audit head each peer holds (from this node's signed head statements) with the
//! local chain.

use futures::StreamExt as _;
use interflow_core::pb;
use interflow_node::dev::{sample_submission, synthetic_id};
use interflow_store::AuditEntry;
use interflow_tests::TestCluster;
use sha2::{Digest, Sha256};

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

/// The entries after `before` with `action`.
fn of(entries: &[pb::AuditEntry], before: usize, action: &str) -> Vec<pb::AuditEntry> {
    entries[before..]
        .iter()
        .filter(|e| e.action == action)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audited_call_writes_one_entry_with_caller_and_purpose_and_a_refusal_one_with_the_reason()
 {
    let c = TestCluster::start(2).await;
    let (a, b) = (c.region(0), c.region(1));

    // Intake.Submit: the caller and the counts, never the contents.
    let before_a = audit_entries(&c, 0).await.len();
    let mut bad = sample_submission(901, b.as_str());
    bad.idempotency_key = "bad-destination".into();
    bad.destination = "999999".into();
    let resp = c
        .intake(0)
        .await
        .submit(pb::SubmitRequest {
            items: vec![sample_submission(900, b.as_str()), bad],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::submit_result::Outcome::RecordId(rid)) = resp.results[0].outcome.clone() else {
        panic!("not stored: {resp:?}")
    };
    let entries = audit_entries(&c, 0).await;
    let submits = of(&entries, before_a, "Intake.Submit");
    assert_eq!(submits.len(), 1, "{submits:?}");
    assert_eq!(submits[0].actor, "intake:dev-intake");
    assert_eq!(submits[0].detail, "items:2 stored:1 duplicate:0 refused:1");
    assert!(submits[0].subjects.is_empty() && submits[0].refused.is_empty());
    c.wait_for_record(1, &rid).await;

    // The reads of a person at B, each with its purpose (and case when given).
    let before = audit_entries(&c, 1).await.len();
    let mut admin = c.admin(1).await;
    admin
        .get_record(pb::GetRecordRequest {
            record_id: rid.clone(),
            record_id_prefix: String::new(),
            purpose: pb::Purpose::Correction as i32,
            case_ref: "C-2026.1".into(),
        })
        .await
        .unwrap();
    admin
        .lookup(pb::LookupRequest {
            national_id: synthetic_id(900),
            purpose: pb::Purpose::OwnRequest as i32,
            case_ref: String::new(),
        })
        .await
        .unwrap();
    admin
        .disclosure(pb::DisclosureRequest {
            national_id: synthetic_id(900),
            purpose: pb::Purpose::LegalObligation as i32,
            case_ref: "LO_7".into(),
        })
        .await
        .unwrap();
    c.inbox(1)
        .await
        .r#match(tokio_stream::iter(vec![pb::MatchRequest {
            purpose: pb::Purpose::ServiceContinuity as i32,
            national_ids: vec![synthetic_id(900)],
            case_ref: "M-1".into(),
        }]))
        .await
        .unwrap();
    let entries = audit_entries(&c, 1).await;
    for (action, actor, purpose, case) in [
        (
            "Admin.GetRecord",
            "admin:dev-operator",
            "correction",
            "C-2026.1",
        ),
        ("Admin.Lookup", "admin:dev-operator", "own-request", ""),
        (
            "Admin.Disclosure",
            "admin:dev-operator",
            "legal-obligation",
            "LO_7",
        ),
        (
            "Inbox.Match",
            "inbox:dev-clinic",
            "service-continuity",
            "M-1",
        ),
    ] {
        let got = of(&entries, before, action);
        assert_eq!(got.len(), 1, "{action}: {got:?}");
        assert_eq!(got[0].actor, actor, "{action}");
        assert_eq!(got[0].purpose, purpose, "{action}");
        assert_eq!(got[0].case_ref, case, "{action}");
        assert!(got[0].refused.is_empty(), "{action}");
    }

    // Refused calls: one entry each, with the caller and the reason, and no read.
    let before = entries.len();
    let no_purpose = admin
        .lookup(pb::LookupRequest {
            national_id: synthetic_id(900),
            purpose: 0,
            case_ref: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_purpose.code(), tonic::Code::InvalidArgument);
    let bad_case = admin
        .get_record(pb::GetRecordRequest {
            record_id: rid.clone(),
            record_id_prefix: String::new(),
            purpose: pb::Purpose::Audit as i32,
            case_ref: "a case with spaces".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_case.code(), tonic::Code::InvalidArgument);
    assert!(bad_case.message().contains("case_ref"), "{bad_case:?}");
    let n = c.fed.nodes[1].clone();
    let intake_as_admin = c.local_channel(1, &n.intake_cert, &n.intake_key).await;
    let denied = pb::admin_client::AdminClient::new(intake_as_admin)
        .stats(pb::StatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let entries = audit_entries(&c, 1).await;
    let lookups = of(&entries, before, "Admin.Lookup");
    assert_eq!(lookups.len(), 1, "{lookups:?}");
    assert!(lookups[0].refused.contains("purpose"), "{lookups:?}");
    assert!(lookups[0].purpose.is_empty() && lookups[0].subjects.is_empty());
    let gets = of(&entries, before, "Admin.GetRecord");
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert!(gets[0].refused.contains("case_ref"), "{gets:?}");
    assert!(
        gets[0].subjects.is_empty(),
        "not audited as a read: {gets:?}"
    );
    let stats = of(&entries, before, "Admin.Stats");
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].actor, "intake:dev-intake");
    assert!(stats[0].refused.contains("certificate"), "{stats:?}");

    // Exchange.Fetch at A, as B: the peer, the channel and the range served; a fetch of a
    // channel B is no party to is refused and written with the reason.
    let before = audit_entries(&c, 0).await.len();
    let mut ex = c.exchange_from(1, 0).await;
    let served: Vec<_> = ex
        .fetch(pb::FetchRequest {
            origin: a.to_string(),
            destination: b.to_string(),
            from_seq: 1,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(served.len(), 1);
    let refused = ex
        .fetch(pb::FetchRequest {
            origin: a.to_string(),
            destination: "440305".into(),
            from_seq: 1,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let fetches = of(&audit_entries(&c, 0).await, before, "Exchange.Fetch");
    let peer = format!("peer:{b}");
    let answered: Vec<_> = fetches
        .iter()
        .filter(|e| e.detail == "seq:1..1 records:1")
        .collect();
    assert_eq!(answered.len(), 1, "{fetches:?}");
    assert_eq!(answered[0].actor, peer);
    assert_eq!(answered[0].subjects, vec![format!("{a}->{b}")]);
    let refusals: Vec<_> = fetches.iter().filter(|e| !e.refused.is_empty()).collect();
    assert_eq!(refusals.len(), 1, "{fetches:?}");
    assert_eq!(refusals[0].actor, peer);
    assert!(refusals[0].refused.contains("not a party"), "{refusals:?}");
    c.shutdown().await;
}

/// Rewrites audit entry `index` in node `dir`'s sled directory (the node stopped) as someone
/// covering their tracks would: the entry edited, every later entry re-linked and the head
/// moved, so the local chain verifies again.
fn rewrite_audit_entry(dir: &std::path::Path, index: u64, edit: impl Fn(&mut AuditEntry)) {
    let db = sled::Config::new()
        .path(dir)
        .open()
        .expect("open the stopped node's sled");
    let key = |i: u64| {
        let mut k = vec![b'a'];
        k.extend_from_slice(&i.to_be_bytes());
        k
    };
    let encode = |e: &AuditEntry| {
        let mut v = vec![3u8];
        v.extend(postcard::to_allocvec(e).unwrap());
        v
    };
    let decode = |v: &[u8]| -> AuditEntry {
        assert_eq!(v[0], 3, "entries written by this build are version 3");
        postcard::from_bytes(&v[1..]).unwrap()
    };
    let mut e = decode(&db.get(key(index)).unwrap().unwrap());
    edit(&mut e);
    let mut bytes = encode(&e);
    db.insert(key(index), bytes.clone()).unwrap();
    let mut i = index + 1;
    while let Some(v) = db.get(key(i)).unwrap() {
        let mut e = decode(&v);
        e.prev_hash = Sha256::digest(&bytes).into();
        bytes = encode(&e);
        db.insert(key(i), bytes.clone()).unwrap();
        i += 1;
    }
    let mut head = (i - 1).to_be_bytes().to_vec();
    head.extend_from_slice(&Sha256::digest(&bytes));
    db.insert(b"maudit_head", head).unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_audit_entry_verifies_locally_but_not_against_the_peer() {
    // Only explicit runs: a scheduled one at B after the rewrite would take A's new head.
    let mut c = TestCluster::start_edited(2, |_, cfg| {
        *cfg = cfg.replace("interval_secs = 30", "interval_secs = 86400");
    })
    .await;
    let a = c.region(0);
    // A read at A that someone would rather hide.
    c.admin(0)
        .await
        .lookup(pb::LookupRequest {
            national_id: synthetic_id(950),
            purpose: pb::Purpose::ServiceContinuity as i32,
            case_ref: String::new(),
        })
        .await
        .unwrap();
    // B reconciles with A and keeps A's signed head statement, with A's audit head in it.
    let run: Vec<_> = c
        .admin(1)
        .await
        .reconcile(pb::ReconcileRequest {
            peer: a.to_string(),
            recover: false,
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(run.iter().all(|r| r.is_ok()), "{run:?}");
    let with_peers = pb::VerifyLogRequest { with_peers: true };
    let v = c
        .admin(0)
        .await
        .verify_log(with_peers)
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.peers.len(), 1, "{v:?}");
    assert_eq!(v.peers[0].state, pb::AnchorState::Matches as i32, "{v:?}");
    let anchored = v.peers[0].audit_seq;
    let lookup = audit_entries(&c, 0)
        .await
        .into_iter()
        .find(|e| e.action == "Admin.Lookup")
        .expect("the lookup was audited");
    assert!(lookup.index <= anchored, "{lookup:?} after {anchored}");

    c.stop(0).await;
    rewrite_audit_entry(&c.data_dir(0), lookup.index, |e| {
        e.action = "Admin.Stats".into();
        e.subjects.clear();
        e.note = Default::default();
    });
    c.restart(0).await;

    let mut admin = c.admin(0).await;
    let local = admin
        .verify_log(pb::VerifyLogRequest { with_peers: false })
        .await
        .unwrap()
        .into_inner();
    assert!(local.ok, "the rewrite is consistent locally: {local:?}");
    let v = admin.verify_log(with_peers).await.unwrap().into_inner();
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.peers[0].state, pb::AnchorState::Mismatch as i32, "{v:?}");
    assert_eq!(v.peers[0].audit_seq, anchored);
    assert!(v.peers[0].problem.contains("rewritten"), "{v:?}");
    c.shutdown().await;
}

/// Concurrent Submit calls share durable commits (perf-intake): the same idempotency key from
/// many callers at once still gives one record, and each call still writes exactly one audit
/// entry, chained in order with its counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_with_one_key_store_one_record_and_one_audit_entry_each() {
    let c = TestCluster::start(2).await;
    let b = c.region(1);
    let before = audit_entries(&c, 0).await.len();
    let calls = (0..8).map(|i| {
        let mut intake_item = sample_submission(7000 + i, b.as_str());
        intake_item.idempotency_key = format!("own-{i}");
        let shared = sample_submission(7777, b.as_str());
        let c = &c;
        async move {
            c.intake(0)
                .await
                .submit(pb::SubmitRequest {
                    items: vec![shared, intake_item],
                })
                .await
                .unwrap()
                .into_inner()
        }
    });
    let answers = futures::future::join_all(calls).await;
    let ids: Vec<_> = answers
        .iter()
        .map(|r| match &r.results[0].outcome {
            Some(pb::submit_result::Outcome::RecordId(id)) => id.clone(),
            other => panic!("not stored: {other:?}"),
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one record for one key");
    let fresh = answers.iter().filter(|r| !r.results[0].duplicate).count();
    assert_eq!(fresh, 1, "exactly one call stored it: {answers:?}");
    let submits = of(&audit_entries(&c, 0).await, before, "Intake.Submit");
    assert_eq!(submits.len(), 8, "one entry per call: {submits:?}");
    let mut details: Vec<_> = submits.iter().map(|e| e.detail.as_str()).collect();
    details.sort();
    let mut want = vec!["items:2 stored:1 duplicate:1 refused:0"; 7];
    want.push("items:2 stored:2 duplicate:0 refused:0");
    assert_eq!(details, want);
    let v = c
        .admin(0)
        .await
        .verify_log(pb::VerifyLogRequest { with_peers: false })
        .await
        .unwrap()
        .into_inner();
    assert!(v.ok, "the audit chain and the log verify: {v:?}");
}
