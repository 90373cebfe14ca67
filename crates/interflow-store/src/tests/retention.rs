//! Retention: erasing bodies at the end of their agreement's retention, in chunks.

use super::*;

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
    let report = s
        .verify_log(&|r| r.check_signature(&key().verifying_key()))
        .unwrap();
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
    assert!(
        s.verify_log(&|r| r.check_signature(&key().verifying_key()))
            .unwrap()
            .ok()
    );
}

#[test]
fn erasure_works_in_chunks_each_its_own_durable_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (syncs, opts) = counting_sync();
    let s = Store::open(dir.path(), opts).unwrap();
    let n = 2 * crate::retention::CHUNK as u64 + 7;
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
    assert!(
        s.verify_log(&|r| r.check_signature(&key().verifying_key()))
            .unwrap()
            .ok()
    );
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

#[test]
fn the_newest_record_of_a_pseudonym_epoch_is_found_until_retention_erases_it() {
    use interflow_core::pseudonym::Epoch;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let epoch2 = Epoch::new(2).unwrap();
    let made = |age_ms: i64, epoch: Epoch| NewRecord {
        pseudonym_epoch: epoch,
        ..interflow_core::fixtures::sample_record(age_ms)
    };
    let items = [
        made(3_000, Epoch::FIRST),
        made(2_000, Epoch::FIRST),
        made(1_000, epoch2),
    ];
    s.append_outbound(&key(), &items).unwrap();
    let (c, agreement) = (a_to_b(), "agr-310115-110105");
    assert_eq!(
        s.newest_under_epoch(c, agreement, Epoch::FIRST).unwrap(),
        Some(NOW - 2_000)
    );
    assert_eq!(
        s.newest_under_epoch(c, agreement, epoch2).unwrap(),
        Some(NOW - 1_000)
    );
    assert_eq!(
        s.newest_under_epoch(c, agreement, Epoch::new(3).unwrap())
            .unwrap(),
        None
    );
    assert_eq!(
        s.newest_under_epoch(c, "agr-other", Epoch::FIRST).unwrap(),
        None
    );
    assert_eq!(
        s.newest_under_epoch(c.reverse(), agreement, Epoch::FIRST)
            .unwrap(),
        None
    );
    s.erase_expired(NOW + 31 * 86_400_000, &|_| Some(30))
        .unwrap();
    assert_eq!(
        s.newest_under_epoch(c, agreement, Epoch::FIRST).unwrap(),
        None
    );
}
