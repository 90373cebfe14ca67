//! Unit tests of the store's rules. The crash and fsync tests live in `tests/`.

use std::sync::atomic::{AtomicUsize, Ordering};

use std::path::Path;

use super::*;
use ed25519_dalek::SigningKey;
use interflow_core::NationalId;
use interflow_core::payload::Kind;
use interflow_core::payload::Payload;
use interflow_core::pb;
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
        payload,
        ..interflow_core::fixtures::sample_record(0)
    }
}

fn sub(key: &str, payload: Payload) -> Submission {
    Submission {
        record: new_record(payload, None),
        idempotency_key: key.into(),
    }
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
        ..StoreOptions::default()
    };
    (on, opts)
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn stored_id(o: &AppendOutcome) -> RecordId {
    match o {
        AppendOutcome::Stored(id) | AppendOutcome::Duplicate(id) => *id,
        other => panic!("not stored: {other:?}"),
    }
}

/// Every key and value in the database, to compare whole states.
fn dump(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.db()
        .unwrap()
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect()
}

/// Records sealed by the origin for `a_to_b`, seq 1..=n, without a store.
fn chain(n: u64) -> Vec<VerifiedRecord> {
    let mut prev = RecordId::ZERO;
    (1..=n)
        .map(|seq| {
            let r = new_record(
                contraception(pb::ContraceptiveMethod::Iud, (seq % 28 + 1) as u32),
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
                contraception(pb::ContraceptiveMethod::Iud, i + 1),
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
            &[sub("k1", contraception(pb::ContraceptiveMethod::Iud, 1))],
        )
        .unwrap();
    let again = s
        .append_outbound(
            &key(),
            &[
                sub("k1", contraception(pb::ContraceptiveMethod::Iud, 1)),
                sub("k1", contraception(pb::ContraceptiveMethod::Implant, 1)),
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
                sub("k2", contraception(pb::ContraceptiveMethod::Iud, 2)),
                sub("k2", contraception(pb::ContraceptiveMethod::Iud, 2)),
                sub("k2", contraception(pb::ContraceptiveMethod::Condom, 2)),
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
    let bad = new_record(contraception(pb::ContraceptiveMethod::Iud, 9), None)
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
    let other = new_record(contraception(pb::ContraceptiveMethod::Condom, 3), None)
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
    let next = new_record(contraception(pb::ContraceptiveMethod::Iud, 4), None)
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
            &[sub("a", contraception(pb::ContraceptiveMethod::Iud, 10))],
        )
        .unwrap()[0],
    );
    let cur = s
        .current_status(&who, Kind::Contraception)
        .unwrap()
        .unwrap();
    assert_eq!(cur.id(), first);

    // A correction of the same observation, entered later.
    let fix = Submission {
        record: new_record(
            contraception(pb::ContraceptiveMethod::Implant, 10),
            Some(first),
        ),
        idempotency_key: "b".into(),
    };
    let fixed = stored_id(&s.append_outbound(&key(), &[fix]).unwrap()[0]);
    assert_eq!(
        s.current_status(&who, Kind::Contraception)
            .unwrap()
            .unwrap()
            .id(),
        fixed
    );

    // Retracting the correction leaves no current status: the original was superseded.
    let retract = Submission {
        record: new_record(Payload::Retraction(Kind::Contraception), Some(fixed)),
        idempotency_key: "c".into(),
    };
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
                sub("late", contraception(pb::ContraceptiveMethod::Condom, 20)),
                sub("early", contraception(pb::ContraceptiveMethod::Iud, 5)),
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
                contraception(pb::ContraceptiveMethod::Iud, i + 1),
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
fn integrity_mismatch_on_open_makes_the_store_read_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(&chain(3)).unwrap();
        // Simulate lost data: the last record vanishes behind the state's back.
        s.db().unwrap().remove(keys::record(a_to_b(), 3)).unwrap();
        s.db().unwrap().flush().unwrap();
    }
    let s = open(dir.path());
    let refusal = s
        .write_refusal()
        .expect("store should be read-only")
        .to_string();
    assert!(refusal.contains("310115->110105"), "{refusal}");
    assert!(matches!(s.apply(&chain(1)), Err(StoreError::ReadOnly(_))));
    // Reads still work, so peers and operators can see what is there.
    assert_eq!(s.records_from(a_to_b(), 1, 10).unwrap().len(), 2);
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.db()
            .unwrap()
            .insert(keys::META_SCHEMA, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        s.db().unwrap().flush().unwrap();
    }
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn every_acknowledged_write_is_synced_once_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let counter = syncs.clone();
    let opts = StoreOptions {
        sync: Arc::new(move |f: &File| {
            counter.fetch_add(1, Ordering::SeqCst);
            f.sync_all()
        }),
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), opts).unwrap();
    let base = syncs.load(Ordering::SeqCst);
    let items: Vec<_> = (0..64)
        .map(|i| {
            sub(
                &format!("k{i}"),
                contraception(pb::ContraceptiveMethod::Iud, 1),
            )
        })
        .collect();
    s.append_outbound(&key(), &items).unwrap();
    assert_eq!(
        syncs.load(Ordering::SeqCst) - base,
        1,
        "one fsync per batch (group commit)"
    );
    s.apply(&chain(0)).unwrap();
    assert_eq!(
        syncs.load(Ordering::SeqCst) - base,
        1,
        "an empty batch syncs nothing"
    );
}

#[test]
fn an_fsync_error_stops_every_later_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let (fail, opts) = failing_sync(5);
    let s = Store::open(dir.path(), opts).unwrap();
    s.append_outbound(
        &key(),
        &[sub("ok", contraception(pb::ContraceptiveMethod::Iud, 1))],
    )
    .unwrap();
    fail.store(true, Ordering::SeqCst);
    let err = s
        .append_outbound(
            &key(),
            &[sub("eio", contraception(pb::ContraceptiveMethod::Iud, 2))],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    // Even once the disk recovers, the store does not retry and then acknowledge.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        s.append_outbound(
            &key(),
            &[sub("after", contraception(pb::ContraceptiveMethod::Iud, 3))]
        ),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(
        s.apply(&chain(1)),
        Err(StoreError::Poisoned { .. })
    ));
    assert!(matches!(
        s.audit(NOW, "a", "b", vec![]),
        Err(StoreError::Poisoned { .. })
    ));
    // The record whose sync failed is not served to peers.
    assert_eq!(s.records_from(a_to_b(), 1, 10).unwrap().len(), 1);
}

#[test]
fn reports_get_increasing_run_ids_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for t in 0..3 {
        s.save_report(RunReport {
            run_id: 0,
            started_at_ms: t,
            finished_at_ms: t,
            channels: vec![ChannelRun::new(a_to_b(), 0)],
        })
        .unwrap();
    }
    let r = s.reports(2).unwrap();
    assert_eq!(r.iter().map(|r| r.run_id).collect::<Vec<_>>(), vec![3, 2]);
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_resumes_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (full, opts) = failing_sync(28);
    let s = Store::open(dir.path(), opts).unwrap();
    let first = stored_id(
        &s.append_outbound(
            &key(),
            &[sub("a", contraception(pb::ContraceptiveMethod::Iud, 1))],
        )
        .unwrap()[0],
    );
    full.store(true, Ordering::SeqCst);
    let err = s
        .append_outbound(
            &key(),
            &[sub("b", contraception(pb::ContraceptiveMethod::Iud, 2))],
        )
        .unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    // Writes stay refused, reads go on.
    assert!(
        s.append_outbound(
            &key(),
            &[sub("c", contraception(pb::ContraceptiveMethod::Iud, 3))]
        )
        .unwrap_err()
        .is_disk_full()
    );
    assert_eq!(s.get(first).unwrap().unwrap().seq(), 1);
    assert_eq!(s.records_from(a_to_b(), 1, 10).unwrap().len(), 1);
    // While the disk is still full, nothing is reopened and reads keep working.
    assert!(!s.recover().unwrap());
    assert!(s.write_refusal().is_some());
    assert_eq!(s.get(first).unwrap().unwrap().seq(), 1);
    full.store(false, Ordering::SeqCst);
    assert!(s.recover().unwrap());
    assert!(s.write_refusal().is_none());
    // The refused submission is retried with its key: stored once, after the first record.
    let out = s
        .append_outbound(
            &key(),
            &[sub("b", contraception(pb::ContraceptiveMethod::Iud, 2))],
        )
        .unwrap();
    let again = match &out[0] {
        AppendOutcome::Stored(id) | AppendOutcome::Duplicate(id) => *id,
        other => panic!("{other:?}"),
    };
    assert_eq!(s.get(again).unwrap().unwrap().seq(), 2);
    assert_eq!(s.head(a_to_b()).0, 2);
    assert!(s.verify_log(&|_| Some(key().verifying_key())).unwrap().ok());
}

#[test]
fn an_io_error_is_not_recovered_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let (fail, opts) = failing_sync(5);
    let s = Store::open(dir.path(), opts).unwrap();
    fail.store(true, Ordering::SeqCst);
    let err = s
        .append_outbound(
            &key(),
            &[sub("a", contraception(pb::ContraceptiveMethod::Iud, 1))],
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Poisoned { .. }) && !err.is_disk_full(),
        "{err}"
    );
    fail.store(false, Ordering::SeqCst);
    // After a failed fsync the page cache cannot be trusted: only a restart clears it.
    assert!(!s.recover().unwrap());
    assert!(matches!(
        s.append_outbound(
            &key(),
            &[sub("b", contraception(pb::ContraceptiveMethod::Iud, 2))]
        ),
        Err(StoreError::Poisoned { .. })
    ));
}

#[test]
fn retention_erases_bodies_but_keeps_ids_links_and_a_verifiable_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(3);
    s.apply(&recs).unwrap();
    let who = subject(PERSON);
    assert!(
        s.current_status(&who, Kind::Contraception)
            .unwrap()
            .is_some()
    );
    let retention = |agreement: &str| (agreement == "agr-310115-110105").then_some(30);
    // Not yet: 29 days after issue.
    assert_eq!(
        s.erase_expired(NOW + 29 * 86_400_000, &retention).unwrap(),
        0
    );
    let erased_at = NOW + 31 * 86_400_000;
    assert_eq!(s.erase_expired(erased_at, &retention).unwrap(), 3);
    // The person cannot be found any more; the record ids and positions stay.
    assert!(s.subject_records(&who).unwrap().is_empty());
    assert!(
        s.current_status(&who, Kind::Contraception)
            .unwrap()
            .is_none()
    );
    assert!(s.get(recs[1].id()).unwrap().is_none());
    match s.get_entry(recs[1].id()).unwrap() {
        Some(Stored::Erased(e)) => {
            assert_eq!(
                (e.seq, e.prev_hash, e.erased_at_ms),
                (2, recs[0].id(), erased_at)
            );
        }
        other => panic!("expected a stub, got {other:?}"),
    }
    assert_eq!(s.head(a_to_b()), (3, recs[2].id()));
    // The log still verifies: chain links and indexes over the stubs.
    let report = s.verify_log(&|_| Some(key().verifying_key())).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // Re-delivery of an erased record is still recognised as a duplicate, not equivocation.
    assert_eq!(
        s.apply(&recs[..1]).unwrap(),
        vec![Ok(ApplyOutcome::Duplicate)]
    );
    // Erased records are not served again, and erasure is idempotent.
    assert!(s.records_from(a_to_b(), 1, 10).unwrap().is_empty());
    assert_eq!(s.erase_expired(erased_at, &retention).unwrap(), 0);
    drop(s);
    let s = open(dir.path());
    assert!(
        s.write_refusal().is_none(),
        "integrity figures still match after erasure"
    );
    assert!(s.verify_log(&|_| Some(key().verifying_key())).unwrap().ok());
}

#[test]
fn erasure_works_in_chunks_each_its_own_durable_batch() {
    let dir = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let counter = syncs.clone();
    let opts = StoreOptions {
        sync: Arc::new(move |f: &File| {
            counter.fetch_add(1, Ordering::SeqCst);
            f.sync_all()
        }),
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), opts).unwrap();
    let n = 2 * retention::CHUNK as u64 + 7;
    s.apply(&chain(n)).unwrap();
    let before = syncs.load(Ordering::SeqCst);
    let erased = s
        .erase_expired(NOW + 31 * 86_400_000, &|_| Some(30))
        .unwrap();
    assert_eq!(erased, n);
    // Three chunks, three commits: the writer lock is taken per chunk (in `erase_chunk`) and
    // released between them, so intake and delivery are never held up by a whole pass.
    assert_eq!(syncs.load(Ordering::SeqCst) - before, 3);
    assert!(s.records_from(a_to_b(), 1, 10).unwrap().is_empty());
    assert!(s.verify_log(&|_| Some(key().verifying_key())).unwrap().ok());
}

#[test]
fn records_of_unknown_agreements_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.apply(&chain(2)).unwrap();
    assert_eq!(
        s.erase_expired(NOW + 10_000 * 86_400_000, &|_| None)
            .unwrap(),
        0
    );
    assert_eq!(s.records_from(a_to_b(), 1, 10).unwrap().len(), 2);
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
fn a_store_that_lost_durable_records_opens_read_only_until_the_anchor_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(&chain(3)).unwrap();
        // What a truncated log looks like: records and their state gone together, consistent.
        let db = s.db().unwrap();
        for prefix in [keys::RECORD, keys::CHANNEL, keys::ID, keys::SUBJECT] {
            for kv in db.scan_prefix([prefix]) {
                db.remove(kv.unwrap().0).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let s = open(dir.path());
    let reason = s.write_refusal().expect("the loss is noticed").to_string();
    assert!(
        reason.contains("holds 0 records but 3 were durable"),
        "{reason}"
    );
    assert!(matches!(s.apply(&chain(1)), Err(StoreError::ReadOnly(_))));
    drop(s);
    // The operator accepts the older state: peers re-supply the rest.
    std::fs::remove_file(dir.path().join("heads.anchor")).unwrap();
    let s = open(dir.path());
    assert!(s.write_refusal().is_none());
    assert_eq!(s.apply(&chain(1)).unwrap(), vec![Ok(ApplyOutcome::Stored)]);
}
