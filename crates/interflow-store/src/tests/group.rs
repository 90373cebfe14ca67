//! The group commit of outbound appends: several callers' records and audit entries in one
//! durable write, idempotency across concurrent callers, and a failed commit failing all.

use super::*;

fn items(prefix: &str, n: usize) -> Vec<NewRecord> {
    (0..n)
        .map(|i| {
            sub(
                &format!("{prefix}{i}"),
                contraception(ContraceptionMethod::Iud, 1),
            )
        })
        .collect()
}

fn audited<'a>(items: &'a [NewRecord], actor: &str) -> OutboundGroup<'a> {
    OutboundGroup {
        items,
        audit: Some(GroupAudit {
            at_ms: NOW,
            actor: actor.into(),
            action: "Intake.Submit".into(),
            note: Box::new(|outcomes| AuditNote {
                detail: format!("stored:{}", outcomes.len()),
                ..Default::default()
            }),
        }),
    }
}

#[test]
fn groups_and_their_audit_entries_share_one_fsync_and_chain_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (syncs, opts) = counting_sync();
    let s = Store::open(dir.path(), opts).unwrap();
    let (a, b) = (items("a", 100), items("b", 3));
    let base = syncs.load(Ordering::SeqCst);
    let out = s
        .append_outbound_groups(&key(), vec![audited(&a, "first"), audited(&b, "second")])
        .unwrap();
    assert_eq!(syncs.load(Ordering::SeqCst) - base, 1, "one fsync for both");
    assert_eq!((out[0].len(), out[1].len()), (100, 3));
    assert_eq!(s.head(a_to_b()).0, 103);
    // Signed on several threads, the records still link in seq order.
    assert!(s.verify_log(&|_| Some(key().verifying_key())).unwrap().ok());
    let entries = s.audit_entries(0, 10).unwrap();
    let got: Vec<_> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.note.detail.as_str()))
        .collect();
    assert_eq!(got, [("first", "stored:100"), ("second", "stored:3")]);
    let (index, hash) = s.audit_head().unwrap();
    assert_eq!(index, 2);
    assert_eq!(s.audit_chain_at(index).unwrap(), AuditChainAt::Hash(hash));
}

#[test]
fn concurrent_appends_with_one_idempotency_key_store_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    let same = [sub("same", contraception(ContraceptionMethod::Iud, 1))];
    let ids: Vec<RecordId> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| stored_id(&s.append_outbound(&key(), &same).unwrap()[0])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(s.head(a_to_b()).0, 1);
}

#[test]
fn a_failed_commit_fails_every_group_and_acknowledges_none() {
    let dir = tempfile::tempdir().unwrap();
    let (fail, opts) = failing_sync(5);
    let s = Store::open(dir.path(), opts).unwrap();
    let (a, b) = (items("a", 5), items("b", 5));
    fail.store(true, Ordering::SeqCst);
    let err = s
        .append_outbound_groups(&key(), vec![audited(&a, "first"), audited(&b, "second")])
        .unwrap_err();
    assert!(matches!(err, StoreError::Poisoned { .. }), "{err}");
    assert_eq!(s.head(a_to_b()).0, 0, "nothing of the group is served");
    assert_eq!(s.audit_head(), None, "no audit head from a failed commit");
    assert!(s.records_from(a_to_b(), 1, 10).unwrap().is_empty());
}
