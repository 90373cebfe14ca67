//! Unit tests of the store's rules: this file the helpers and the chain, index, audit and
//! report rules; `engine` durability, poisoning and open-time checks; `retention` erasure. The
//! crash and fsync-order tests with real processes live in the crate's `tests/`.

mod agreements;
mod engine;
mod group;
mod inbox;
mod retention;
mod seal;

use std::sync::atomic::{AtomicUsize, Ordering};

use std::path::Path;

use super::*;
use ed25519_dalek::SigningKey;
use interflow_core::NationalId;
use interflow_core::payload::ContraceptionMethod;
use interflow_core::payload::Kind;
use interflow_core::payload::Payload;
use interflow_core::pseudonym::PseudonymKey;
use interflow_core::pseudonym::SubjectRef;
use interflow_core::record::{DecodedRecord, NewRecord, RecordId, VerifiedRecord};
use interflow_core::statement::Receipt;

use interflow_core::fixtures::{NOW, a_to_b, contraception, region};

fn key() -> SigningKey {
    interflow_core::fixtures::key(1)
}

fn subject(id: &str) -> SubjectRef {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    SubjectRef::derive(
        &PseudonymKey::from_bytes([9; 32]),
        &NationalId::parse(id, today).unwrap(),
    )
}

const PERSON: &str = interflow_core::fixtures::SAMPLE_ID;

fn new_record(payload: Payload, supersedes: Option<RecordId>) -> NewRecord {
    NewRecord {
        supersedes,
        idempotency: None,
        payload,
        ..interflow_core::fixtures::sample_record(0)
    }
}

/// A new record submitted under idempotency key `key`.
fn sub(key: &str, payload: Payload) -> NewRecord {
    keyed(key, new_record(payload, None))
}

fn keyed(key: &str, mut record: NewRecord) -> NewRecord {
    record.idempotency = Some(interflow_core::fixtures::idempotency(key));
    record
}

/// Options whose fsync fails with `errno` while the returned switch is on.
fn failing_sync(errno: i32) -> (Arc<std::sync::atomic::AtomicBool>, StoreOptions) {
    let on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let switch = on.clone();
    let opts = StoreOptions {
        sync: Arc::new(move |f: &File| {
            if switch.load(Ordering::SeqCst) {
                Err(io::Error::from_raw_os_error(errno))
            } else {
                f.sync_all()
            }
        }),
        ..StoreOptions::new(crate::MasterKey::from_bytes([7; 32]))
    };
    (on, opts)
}

/// Options whose fsync counts its calls.
fn counting_sync() -> (Arc<AtomicUsize>, StoreOptions) {
    let syncs = Arc::new(AtomicUsize::new(0));
    let counter = syncs.clone();
    let opts = StoreOptions {
        sync: Arc::new(move |f: &File| {
            counter.fetch_add(1, Ordering::SeqCst);
            f.sync_all()
        }),
        ..StoreOptions::new(crate::MasterKey::from_bytes([7; 32]))
    };
    (syncs, opts)
}

fn open(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions::new(crate::MasterKey::from_bytes([7; 32])),
    )
    .unwrap()
}

fn stored_id(o: &AppendOutcome) -> RecordId {
    match o {
        AppendOutcome::Stored(id) | AppendOutcome::Duplicate(id) => *id,
        other => panic!("not stored: {other:?}"),
    }
}

/// Every key and value in the database, to compare whole states; sealed values as their
/// plain bytes (each seal has a fresh random nonce).
fn dump(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = s.db().unwrap();
    db.iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let v = if v.first() == Some(&crate::seal::SEALED) {
                db.vault
                    .unseal(Place::Data("test".into()), &k, &v)
                    .unwrap()
                    .unwrap()
            } else {
                v.to_vec()
            };
            (k.to_vec(), v)
        })
        .collect()
}

/// Records sealed by the origin for `a_to_b`, seq 1..=n, without a store.
fn chain(n: u64) -> Vec<VerifiedRecord> {
    let mut prev = RecordId::ZERO;
    (1..=n)
        .map(|seq| {
            let r = new_record(
                contraception(ContraceptionMethod::Iud, (seq % 28 + 1) as u32),
                None,
            )
            .seal(seq, prev, &key())
            .unwrap();
            prev = r.id();
            r
        })
        .collect()
}

#[test]
fn outbound_append_assigns_contiguous_linked_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let items: Vec<_> = (0..3)
        .map(|i| {
            sub(
                &format!("k{i}"),
                contraception(ContraceptionMethod::Iud, i + 1),
            )
        })
        .collect();
    let out = s.append_outbound(&key(), &items).unwrap();
    let ids: Vec<_> = out.iter().map(stored_id).collect();
    let recs = s.records_from(a_to_b(), 1, 10).unwrap();
    assert_eq!(
        recs.iter().map(|r| (r.seq, r.id)).collect::<Vec<_>>(),
        vec![(1, ids[0]), (2, ids[1]), (3, ids[2])]
    );
    let prev = |r: &StoredRecord| DecodedRecord::from_bytes(&r.bytes).unwrap().prev_hash();
    assert_eq!(prev(&recs[0]), RecordId::ZERO);
    assert_eq!(prev(&recs[1]), ids[0]);
    assert_eq!(prev(&recs[2]), ids[1]);
    assert_eq!(s.head(a_to_b()), (3, ids[2]));
    assert_eq!(s.get(ids[1]).unwrap().unwrap().seq(), 2);
    assert!(s.verify_log(&|_| Some(key().verifying_key())).unwrap().ok());
}

#[test]
fn idempotency_key_reuse_same_content_is_duplicate_other_content_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let first = s
        .append_outbound(
            &key(),
            &[sub("k1", contraception(ContraceptionMethod::Iud, 1))],
        )
        .unwrap();
    let again = s
        .append_outbound(
            &key(),
            &[
                sub("k1", contraception(ContraceptionMethod::Iud, 1)),
                sub("k1", contraception(ContraceptionMethod::Implant, 1)),
            ],
        )
        .unwrap();
    assert_eq!(again[0], AppendOutcome::Duplicate(stored_id(&first[0])));
    assert_eq!(again[1], AppendOutcome::Conflict);
    assert_eq!(s.head(a_to_b()).0, 1);
    // Within one batch too.
    let batch = s
        .append_outbound(
            &key(),
            &[
                sub("k2", contraception(ContraceptionMethod::Iud, 2)),
                sub("k2", contraception(ContraceptionMethod::Iud, 2)),
                sub("k2", contraception(ContraceptionMethod::Condom, 2)),
            ],
        )
        .unwrap();
    assert!(matches!(batch[0], AppendOutcome::Stored(_)));
    assert_eq!(batch[1], AppendOutcome::Duplicate(stored_id(&batch[0])));
    assert_eq!(batch[2], AppendOutcome::Conflict);
    assert_eq!(s.head(a_to_b()).0, 2);
}

#[test]
fn inbound_apply_stores_in_order_and_duplicate_apply_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(5);
    let out = s.apply(&recs).unwrap();
    assert!(out.iter().all(|o| *o == Ok(ApplyOutcome::Stored)));
    let before = dump(&s);
    let again = s.apply(&recs).unwrap();
    assert!(again.iter().all(|o| *o == Ok(ApplyOutcome::Duplicate)));
    assert_eq!(dump(&s), before, "duplicate apply changed the database");
    assert_eq!(s.head(a_to_b()), (5, recs[4].id()));
}

#[test]
fn ids_with_a_prefix_are_found_by_one_scan() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(5);
    s.apply(&recs).unwrap();
    let id = recs[2].id();
    assert_eq!(s.ids_with_prefix(&id.as_bytes()[..4], 10).unwrap(), [id]);
    assert_eq!(s.ids_with_prefix(id.as_bytes(), 10).unwrap(), [id]);
    assert_eq!(s.ids_with_prefix(&[], 10).unwrap().len(), 5);
    assert_eq!(s.ids_with_prefix(&[], 2).unwrap().len(), 2);
    let mut other = id.as_bytes()[..4].to_vec();
    other[3] ^= 0xff;
    assert!(
        s.ids_with_prefix(&other, 10)
            .unwrap()
            .iter()
            .all(|i| i.as_bytes()[..4] == other[..])
    );
}

#[test]
fn gaps_and_broken_links_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(3);
    assert_eq!(
        s.apply(&recs[1..2]).unwrap(),
        vec![Err(ApplyError::Gap { head: 0, seq: 2 })]
    );
    s.apply(&recs[..1]).unwrap();
    // A record at seq 2 whose prev_hash is not the id of seq 1.
    let bad = new_record(contraception(ContraceptionMethod::Iud, 9), None)
        .seal(2, RecordId([7; 32]), &key())
        .unwrap();
    let before = dump(&s);
    assert_eq!(
        s.apply(&[bad]).unwrap(),
        vec![Err(ApplyError::ChainBroken { seq: 2 })]
    );
    assert_eq!(dump(&s), before);
    assert_eq!(s.head(a_to_b()).0, 1);
}

#[test]
fn equivocation_is_refused_kept_as_evidence_and_stops_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(2);
    s.apply(&recs).unwrap();
    let other = new_record(contraception(ContraceptionMethod::Condom, 3), None)
        .seal(2, recs[0].id(), &key())
        .unwrap();
    let out = s.apply(std::slice::from_ref(&other)).unwrap();
    assert_eq!(
        out,
        vec![Err(ApplyError::Equivocation {
            seq: 2,
            stored: recs[1].id(),
            received: other.id()
        })]
    );
    // Both records are kept: the stored one in the log, the other as evidence.
    let ev = s.evidence(a_to_b()).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].stored, recs[1].to_bytes());
    assert_eq!(ev[0].received, other.to_bytes());
    assert_eq!(s.get(recs[1].id()).unwrap().unwrap().id(), recs[1].id());
    assert!(s.get(other.id()).unwrap().is_none());
    // The channel accepts nothing more until an operator clears it.
    let next = new_record(contraception(ContraceptionMethod::Iud, 4), None)
        .seal(3, recs[1].id(), &key())
        .unwrap();
    assert!(matches!(
        s.apply(std::slice::from_ref(&next)).unwrap()[0],
        Err(ApplyError::ChannelStopped(_))
    ));
    s.clear_stop(a_to_b()).unwrap();
    assert_eq!(s.apply(&[next]).unwrap(), vec![Ok(ApplyOutcome::Stored)]);
    // Evidence carries personal data too: it goes at the end of the retention period.
    let retention = |_: &str| Some(30);
    s.erase_expired(NOW + 31 * 86_400_000, &retention).unwrap();
    assert!(s.evidence(a_to_b()).unwrap().is_empty());
}

#[test]
fn corrections_change_the_current_status_and_retractions_remove_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let who = subject(PERSON);
    let first = stored_id(
        &s.append_outbound(
            &key(),
            &[sub("a", contraception(ContraceptionMethod::Iud, 10))],
        )
        .unwrap()[0],
    );
    let cur = s
        .current_status(&who, Kind::Contraception)
        .unwrap()
        .unwrap();
    assert_eq!(cur.id(), first);

    // A correction of the same observation, entered later.
    let fix = keyed(
        "b",
        new_record(contraception(ContraceptionMethod::Implant, 10), Some(first)),
    );
    let fixed = stored_id(&s.append_outbound(&key(), &[fix]).unwrap()[0]);
    assert_eq!(
        s.current_status(&who, Kind::Contraception)
            .unwrap()
            .unwrap()
            .id(),
        fixed
    );

    // Retracting the correction leaves no current status: the original was superseded.
    let retract = keyed(
        "c",
        new_record(Payload::Retraction(Kind::Contraception), Some(fixed)),
    );
    s.append_outbound(&key(), &[retract]).unwrap();
    assert!(
        s.current_status(&who, Kind::Contraception)
            .unwrap()
            .is_none()
    );
    assert!(s.current_status(&who, Kind::Pregnancy).unwrap().is_none());
    assert_eq!(s.subject_records(&who).unwrap().len(), 3);
}

#[test]
fn latest_observation_wins_without_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let out = s
        .append_outbound(
            &key(),
            &[
                sub("late", contraception(ContraceptionMethod::Condom, 20)),
                sub("early", contraception(ContraceptionMethod::Iud, 5)),
            ],
        )
        .unwrap();
    let cur = s
        .current_status(&subject(PERSON), Kind::Contraception)
        .unwrap()
        .unwrap();
    assert_eq!(cur.id(), stored_id(&out[0]));
}

#[test]
fn receipts_advance_acks_only_forward_and_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let items: Vec<_> = (0..3)
        .map(|i| {
            sub(
                &format!("k{i}"),
                contraception(ContraceptionMethod::Iud, i + 1),
            )
        })
        .collect();
    let ids: Vec<_> = s
        .append_outbound(&key(), &items)
        .unwrap()
        .iter()
        .map(stored_id)
        .collect();
    let me = region("310115");
    assert_eq!(s.pending(me).unwrap()[0].pending_count, 3);
    assert_eq!(
        s.pending(me).unwrap()[0].oldest_pending_issued_at_ms,
        Some(NOW)
    );
    let dest_key = SigningKey::from_bytes(&[2; 32]);
    let receipt = |seq: u64, hash: RecordId| {
        let r = Receipt {
            channel: a_to_b(),
            acked_seq: seq,
            head_hash: hash,
            issued_at_ms: NOW,
        };
        let signed = interflow_core::statement::sign_receipt(&dest_key, &r);
        (r, prost::Message::encode_to_vec(&signed))
    };
    let (r, sr) = receipt(2, ids[1]);
    assert!(s.record_receipt(&r, &sr).unwrap());
    let p = &s.pending(me).unwrap()[0];
    assert_eq!((p.acked_seq, p.pending_count), (2, 1));
    let (r1, sr1) = receipt(1, ids[0]);
    assert!(
        !s.record_receipt(&r1, &sr1).unwrap(),
        "acks never move back"
    );
    let (bad, sbad) = receipt(3, ids[0]);
    assert!(matches!(
        s.record_receipt(&bad, &sbad),
        Err(StoreError::ReceiptMismatch { .. })
    ));
    assert_eq!(s.receipt(a_to_b()).unwrap(), Some(sr));
    // A signed head statement acknowledges too: forward only, and only the record we hold.
    let heads = b"signed heads".to_vec();
    assert_eq!(
        s.ack_by_heads(a_to_b(), 3, ids[1], &heads).unwrap(),
        HeadsAck::Mismatch
    );
    assert_eq!(
        s.ack_by_heads(a_to_b(), 1, ids[0], &heads).unwrap(),
        HeadsAck::NothingNew
    );
    assert_eq!(s.heads_ack(a_to_b()).unwrap(), None);
    assert_eq!(
        s.ack_by_heads(a_to_b(), 3, ids[2], &heads).unwrap(),
        HeadsAck::Advanced
    );
    assert_eq!(s.pending(me).unwrap()[0].pending_count, 0);
    assert_eq!(s.heads_ack(a_to_b()).unwrap(), Some(heads));
}

#[test]
fn audit_chain_detects_edited_and_removed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for i in 0..3 {
        s.audit(
            NOW + i,
            "admin:alice",
            "Admin.Lookup",
            vec![format!("ref:{i}")],
        )
        .unwrap();
    }
    assert!(s.verify_log(&|_| None).unwrap().ok());
    assert_eq!(s.audit_entries(NOW + 1, 10).unwrap().len(), 2);

    // Edit the middle entry.
    let k = keys::audit(2);
    let mut e = AuditEntry::decode(2, &s.db().unwrap().get(&k).unwrap().unwrap()).unwrap();
    e.actor = "admin:mallory".into();
    s.db().unwrap().insert(&k, e.encode()).unwrap();
    let r = s.verify_log(&|_| None).unwrap();
    assert!(!r.ok());
    assert!(
        r.problems[0].problem.contains("does not link"),
        "{:?}",
        r.problems
    );

    // Remove the last entry instead.
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = open(dir2.path());
    for i in 0..3 {
        s2.audit(NOW + i, "admin:alice", "Admin.Lookup", vec![])
            .unwrap();
    }
    s2.db().unwrap().remove(keys::audit(3)).unwrap();
    assert!(!s2.verify_log(&|_| None).unwrap().ok());
}

#[test]
fn verify_log_reports_a_broken_index_and_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(3);
    s.apply(&recs).unwrap();
    assert!(s.verify_log(&|_| Some(key().verifying_key())).unwrap().ok());
    let wrong_key = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let r = s.verify_log(&|_| Some(wrong_key)).unwrap();
    assert_eq!(
        r.problems.len(),
        1,
        "first problem per channel only: {:?}",
        r.problems
    );
    s.db().unwrap().remove(keys::id(recs[1].id())).unwrap();
    let r = s.verify_log(&|_| Some(key().verifying_key())).unwrap();
    assert_eq!(r.problems[0].seq, 2);
}

#[test]
fn reports_get_increasing_run_ids_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for t in 0..3 {
        s.save_report(report_at(t), KEEP_ALL).unwrap();
    }
    let r = s.reports(2).unwrap();
    assert_eq!(r.iter().map(|r| r.run_id).collect::<Vec<_>>(), vec![3, 2]);
}

const KEEP_ALL: ReportRetention = ReportRetention {
    max_count: u64::MAX,
    max_age_ms: i64::MAX,
};

fn report_at(t: i64) -> RunReport {
    RunReport {
        run_id: 0,
        started_at_ms: t,
        finished_at_ms: t,
        channels: vec![ChannelRun::new(a_to_b(), 0)],
    }
}

fn run_ids(s: &Store) -> Vec<u64> {
    s.reports(usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.run_id)
        .collect()
}

#[test]
fn stored_reports_are_bounded_by_count_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let by_count = ReportRetention {
        max_count: 3,
        max_age_ms: i64::MAX,
    };
    for t in 0..5 {
        s.save_report(report_at(t), by_count).unwrap();
    }
    assert_eq!(run_ids(&s), vec![5, 4, 3], "only the newest three are kept");
    // By age: reports that started more than 10 s before the newest one finished go.
    let by_age = ReportRetention {
        max_count: 100,
        max_age_ms: 10_000,
    };
    s.save_report(report_at(5), by_age).unwrap();
    s.save_report(report_at(10_003), by_age).unwrap();
    assert_eq!(run_ids(&s), vec![7, 6, 5, 4]);
    // Even a bound of 0 keeps the report just stored.
    let none = ReportRetention {
        max_count: 0,
        max_age_ms: 0,
    };
    assert_eq!(s.save_report(report_at(20_000), none).unwrap(), 8);
    assert_eq!(run_ids(&s), vec![8]);
}

#[test]
fn a_backlog_of_reports_is_pruned_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let n = PRUNE_CHUNK as i64 * 2 + 5;
    for t in 0..n {
        s.save_report(report_at(t), KEEP_ALL).unwrap();
    }
    let keep = ReportRetention {
        max_count: 2,
        max_age_ms: i64::MAX,
    };
    s.save_report(report_at(n), keep).unwrap();
    let last = u64::try_from(n).unwrap() + 1;
    assert_eq!(run_ids(&s), vec![last, last - 1]);
}

mod reorder {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Records arriving in any order, retried as senders do, end in the same state as
        /// in-order delivery; the head only ever advances over contiguous seqs.
        #[test]
        fn final_state_is_independent_of_arrival_order(order in Just((0..12usize).collect::<Vec<_>>()).prop_shuffle()) {
            let recs = chain(12);
            let in_order = tempfile::tempdir().unwrap();
            let reference = open(in_order.path());
            reference.apply(&recs).unwrap();

            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path());
            let mut rounds = 0;
            while s.head(a_to_b()).0 < 12 {
                rounds += 1;
                prop_assert!(rounds <= 12, "no progress");
                for &i in &order {
                    let before = s.head(a_to_b()).0;
                    let out = s.apply(std::slice::from_ref(&recs[i])).unwrap();
                    let after = s.head(a_to_b()).0;
                    match &out[0] {
                        Ok(_) => prop_assert!(after == before.max(recs[i].seq())),
                        Err(ApplyError::Gap { .. }) => prop_assert_eq!(after, before),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
            }
            prop_assert_eq!(s.head(a_to_b()), reference.head(a_to_b()));
            prop_assert_eq!(dump(&s), dump(&reference));
        }
    }
}

#[test]
fn idempotency_keys_are_kept_only_as_digests() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // A clerk typed an ID into the key: it must not end up on disk.
    let typed = "clerk-11010519491231002X";
    let first = s
        .append_outbound(
            &key(),
            &[sub(typed, contraception(ContraceptionMethod::Iud, 1))],
        )
        .unwrap();
    let again = s
        .append_outbound(
            &key(),
            &[sub(typed, contraception(ContraceptionMethod::Iud, 1))],
        )
        .unwrap();
    assert_eq!(again, vec![AppendOutcome::Duplicate(stored_id(&first[0]))]);
    for (k, v) in dump(&s) {
        for bytes in [&k, &v] {
            assert!(!bytes.windows(typed.len()).any(|w| w == typed.as_bytes()));
        }
    }
}
