//! The engine layer: durable commits, poisoning after failed syncs, a full disk, open-time
//! integrity and schema checks, and the heads anchor.

use super::*;

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
fn open_reads_only_the_head_record_and_verify_log_walks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(&chain(3)).unwrap();
        // A record inside the chain vanishes: open does not walk the chain, so it opens
        // writable in time independent of the store's size ...
        s.db().unwrap().remove(keys::record(a_to_b(), 2)).unwrap();
        s.db().unwrap().flush().unwrap();
    }
    let s = open(dir.path());
    assert!(s.write_refusal().is_none());
    // ... and the full check still names the gap.
    let report = s.verify_log(&|_| Some(key().verifying_key())).unwrap();
    assert!(!report.ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.channel == Some(a_to_b()) && p.seq <= 3),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_head_record_replaced_behind_the_state_makes_the_store_read_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(&chain(3)).unwrap();
        let db = s.db().unwrap();
        let second = db.get(keys::record(a_to_b(), 2)).unwrap().unwrap();
        db.insert(keys::record(a_to_b(), 3), second).unwrap();
        db.flush().unwrap();
    }
    let s = open(dir.path());
    let refusal = s
        .write_refusal()
        .expect("store should be read-only")
        .to_string();
    assert!(refusal.contains("head seq `3`"), "{refusal}");
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
    let err = Store::open(
        dir.path(),
        StoreOptions::new(crate::MasterKey::from_bytes([7; 32])),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn every_acknowledged_write_is_synced_once_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (syncs, opts) = counting_sync();
    let s = Store::open(dir.path(), opts).unwrap();
    let base = syncs.load(Ordering::SeqCst);
    let items: Vec<_> = (0..64)
        .map(|i| sub(&format!("k{i}"), contraception(ContraceptionMethod::Iud, 1)))
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
        &[sub("ok", contraception(ContraceptionMethod::Iud, 1))],
    )
    .unwrap();
    fail.store(true, Ordering::SeqCst);
    let err = s
        .append_outbound(
            &key(),
            &[sub("eio", contraception(ContraceptionMethod::Iud, 2))],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    // Even once the disk recovers, the store does not retry and then acknowledge.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        s.append_outbound(
            &key(),
            &[sub("after", contraception(ContraceptionMethod::Iud, 3))]
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
fn a_full_disk_refuses_writes_keeps_reads_and_resumes_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (full, opts) = failing_sync(28);
    let s = Store::open(dir.path(), opts).unwrap();
    let first = stored_id(
        &s.append_outbound(
            &key(),
            &[sub("a", contraception(ContraceptionMethod::Iud, 1))],
        )
        .unwrap()[0],
    );
    full.store(true, Ordering::SeqCst);
    let err = s
        .append_outbound(
            &key(),
            &[sub("b", contraception(ContraceptionMethod::Iud, 2))],
        )
        .unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    // Writes stay refused, reads go on.
    assert!(
        s.append_outbound(
            &key(),
            &[sub("c", contraception(ContraceptionMethod::Iud, 3))]
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
            &[sub("b", contraception(ContraceptionMethod::Iud, 2))],
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
            &[sub("a", contraception(ContraceptionMethod::Iud, 1))],
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
            &[sub("b", contraception(ContraceptionMethod::Iud, 2))]
        ),
        Err(StoreError::Poisoned { .. })
    ));
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
