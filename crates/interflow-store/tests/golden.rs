//! Data directories written by earlier builds must keep opening: `golden/v1` and
//! `golden/v1-rich` were written by schema version 1 and can no longer be regenerated;
//! `golden/v2` by schema 2 (bodies in the clear), `golden/v3` by schema 3 (sealed bodies, an
//! inbox entry per record), `golden/v4` by the current schema (inbox positions in runs; the
//! keyrings are sealed under the test master key `[7; 32]`; regenerate it only on purpose,
//! with `INTERFLOW_WRITE_GOLDEN=1`, and add a new directory when the schema changes). A newer
//! build opens it (migrating it to the current schema), finds every record, and verifies the
//! log; it never silently re-creates it. `golden/v3-keys` holds schema-3 records in the body
//! formats that came after it without a store change: version-2 bodies that name their key id
//! (Ed25519 at the sender, SM2 with SM3 from the peer) and subject refs of pseudonym epoch 2
//! (written with `INTERFLOW_WRITE_GOLDEN=v3-keys`).

mod common;

use std::path::{Path, PathBuf};

use interflow_core::fixtures;
use interflow_core::payload::ContraceptionMethod;
use interflow_core::record::{ChannelId, RecordId, Sealer, VerifiedRecord};
use interflow_core::statement::{Receipt, sign_receipt};
use interflow_store::{
    Anomaly, Arrival, AuditNote, ChannelRun, DeliveryState, RunReport, SCHEMA_VERSION, Store,
    StoreOptions,
};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The peer's records at `seqs` on channel `c`, chained from `prev`: the golden directories'
/// arrivals, each a sample record issued `500 - seq` days ago.
fn peer_records<'a>(
    c: ChannelId,
    seqs: std::ops::RangeInclusive<u64>,
    mut prev: RecordId,
    key: impl Into<Sealer<'a>> + Copy,
) -> Vec<VerifiedRecord> {
    seqs.map(|seq| {
        let mut r = fixtures::sample_record(500 - seq as i64);
        r.channel = c;
        let v = r.seal(seq, prev, key).unwrap();
        prev = v.id();
        v
    })
    .collect()
}

/// Writes `golden/v{SCHEMA_VERSION}` with every kind of state this schema keeps.
fn write_golden() {
    let dir = golden(&format!("v{SCHEMA_VERSION}"));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(
        &dir,
        StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
    )
    .unwrap();
    let items: Vec<_> = (0..12u64)
        .map(|n| {
            let mut record = fixtures::sample_record(1000 - n as i64);
            record.payload = fixtures::contraception(ContraceptionMethod::Iud, (n % 28 + 1) as u32);
            {
                record.idempotency = Some(fixtures::idempotency(&format!("golden-{n}")));
                record
            }
        })
        .collect();
    s.append_outbound(&fixtures::key(1), &items).unwrap();
    let c = fixtures::a_to_b();
    let id5 = s.entry_at(c, 5).unwrap().unwrap().id();
    let r = Receipt {
        channel: c,
        acked_seq: 5,
        head_hash: id5,
        issued_at_ms: fixtures::NOW,
    };
    let signed = sign_receipt(&fixtures::key(2), &r);
    s.record_receipt(&r, &prost::Message::encode_to_vec(&signed))
        .unwrap();
    s.set_delivery_state(
        c,
        &DeliveryState {
            attempts: 3,
            last_error: Some("Unavailable: connection refused".into()),
            next_attempt_ms: Some(fixtures::NOW + 4000),
        },
    )
    .unwrap();
    s.save_checkpoint(c.destination, b"signed heads bytes")
        .unwrap();
    for (i, a) in ["Admin.Lookup", "Admin.GetRecord", "Admin.Disclosure"]
        .iter()
        .enumerate()
    {
        s.audit(
            fixtures::NOW + i as i64,
            &format!("admin:clerk{i}"),
            a,
            vec![format!("ref:{i:02}"), "rec:abc".into()],
        )
        .unwrap();
    }
    // Three records from the peer, in this node's inbox, and a consumer that read two.
    let inbound = peer_records(c.reverse(), 1..=3, RecordId::ZERO, &fixtures::key(2));
    let me = Arrival {
        me: c.origin,
        at_ms: fixtures::NOW,
    };
    s.receive(&inbound, me).unwrap();
    s.ack("clinic", 2, fixtures::NOW + 1).unwrap();
    for run in 0..2i64 {
        let mut ch = ChannelRun::new(c, 12);
        ch.peer_head = 5;
        ch.records_fetched = run as u64;
        ch.flag(Anomaly::PeerUnreachable);
        ch.flag(Anomaly::OwnFeedBehind);
        s.save_report(
            RunReport {
                run_id: 0,
                started_at_ms: fixtures::NOW + run,
                finished_at_ms: fixtures::NOW + run + 7,
                channels: vec![ch],
            },
            interflow_store::ReportRetention {
                max_count: 10,
                max_age_ms: i64::MAX,
            },
        )
        .unwrap();
    }
}

/// Origin 310115 signs with key 1, 110105 with key 2, as key id 0 of a directory that lists
/// further keys: records written before keys had ids (version-1 bodies) verify under key id 0.
fn key_of(
    r: &interflow_core::record::DecodedRecord,
) -> Result<(), interflow_core::record::RecordError> {
    static DIRECTORY: std::sync::OnceLock<interflow_core::directory::Directory> =
        std::sync::OnceLock::new();
    let d = DIRECTORY.get_or_init(|| {
        fixtures::directory(vec![
            fixtures::member("310115", 1, vec![fixtures::member_key(1, 3, 0, 0, 0)]),
            fixtures::member("110105", 2, vec![fixtures::member_key(1, 4, 0, 0, 0)]),
        ])
    });
    r.check_signature(d)
}

/// Opens a copy of a golden directory and checks the state every rich one holds.
fn open_rich(name: &str) -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&golden(name), tmp.path());
    let s = Store::open(
        tmp.path(),
        StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
    )
    .unwrap();
    assert!(s.write_refusal().is_none());
    let c = fixtures::a_to_b();
    let st = s.channel_state(c).unwrap();
    assert_eq!((st.head_seq, st.count, st.acked_seq), (12, 12, 5));
    let advice = s.delivery_state(c).unwrap();
    assert_eq!(advice.attempts, 3);
    assert_eq!(
        advice.last_error.as_deref(),
        Some("Unavailable: connection refused")
    );
    assert!(s.receipt(c).unwrap().is_some());
    assert!(s.checkpoint(c.destination).unwrap().is_some());
    let reports = s.reports(10).unwrap();
    assert_eq!(
        reports.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(reports[0].channels[0].channel, c);
    assert_eq!(
        reports[0].channels[0].anomalies,
        vec![Anomaly::PeerUnreachable, Anomaly::OwnFeedBehind]
    );
    let audit = s.audit_entries(0, 10).unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[1].action, "Admin.GetRecord");
    let report = s.verify_log(&key_of).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.audit_entries_checked, 3);
    (tmp, s)
}

#[test]
fn this_schema_s_data_directory_opens_and_verifies() {
    match std::env::var("INTERFLOW_WRITE_GOLDEN").as_deref() {
        Ok("v3-keys") | Err(_) => {}
        Ok(_) => write_golden(),
    }
    open_rich_with_inbox(&format!("v{SCHEMA_VERSION}"));
}

#[test]
fn a_version_3_inbox_reads_as_before_and_takes_new_arrivals_after_it() {
    let (_dir, s) = open_rich_with_inbox("v3");
    // Two more arrivals on the peer's channel, after the three schema-3 entries.
    let c = fixtures::a_to_b().reverse();
    let prev = s.entry_at(c, 3).unwrap().unwrap().id();
    let more = peer_records(c, 4..=5, prev, &fixtures::key(2));
    let me = Arrival {
        me: c.destination,
        at_ms: fixtures::NOW + 9,
    };
    s.receive(&more, me).unwrap();
    assert_eq!(s.inbox_head().unwrap(), 5);
    let page = s.inbox_after(2, 10, 100, &|_| true).unwrap();
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.position, e.stored.seq(), e.arrived_at_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, 3, fixtures::NOW),
            (4, 4, fixtures::NOW + 9),
            (5, 5, fixtures::NOW + 9)
        ]
    );
    let report = s.verify_log(&key_of).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// The directory `golden/v3-keys` was signed under: 310115 signs with Ed25519 key id 1
/// (seed 3), 110105 with SM2 key id 2 (seed 5); both keep key id 0.
fn keyed_directory() -> interflow_core::directory::Directory {
    fixtures::directory(vec![
        fixtures::member("310115", 1, vec![fixtures::member_key(1, 3, 0, 0, 0)]),
        fixtures::member("110105", 2, vec![fixtures::sm2_member_key(2, 5, 0)]),
    ])
}

/// Writes `golden/v3-keys`: six records sent, signed with key id 1, the last three under
/// pseudonym epoch 2, and three received, signed with the peer's SM2 key id 2.
fn write_keyed_golden() {
    use interflow_core::record::SealKey;
    let dir = golden("v3-keys");
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(
        &dir,
        StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
    )
    .unwrap();
    let (ed, sm2) = (fixtures::key(3), fixtures::sm2_key(5));
    let epoch2 = interflow_core::pseudonym::Epoch::new(2).unwrap();
    let items: Vec<_> = (0..6u64)
        .map(|n| {
            let mut record = fixtures::sample_record(1000 - n as i64);
            if n >= 3 {
                record.pseudonym_epoch = epoch2;
            }
            record
        })
        .collect();
    let sender = Sealer {
        key: SealKey::Ed25519(&ed),
        key_id: 1,
    };
    s.append_outbound(sender, &items).unwrap();
    let c = fixtures::a_to_b();
    let peer = Sealer {
        key: SealKey::Sm2(&sm2),
        key_id: 2,
    };
    let inbound = peer_records(c.reverse(), 1..=3, RecordId::ZERO, peer);
    let me = Arrival {
        me: c.origin,
        at_ms: fixtures::NOW,
    };
    s.receive(&inbound, me).unwrap();
}

#[test]
fn records_naming_their_key_and_epoch_open_and_verify() {
    if std::env::var("INTERFLOW_WRITE_GOLDEN").as_deref() == Ok("v3-keys") {
        write_keyed_golden();
    }
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&golden("v3-keys"), tmp.path());
    let s = Store::open(tmp.path(), test_options()).unwrap();
    let c = fixtures::a_to_b();
    let read = |c, n: u64| -> Vec<_> {
        (1..=n)
            .map(|seq| s.record_at(c, seq).unwrap().expect("a stored record"))
            .collect()
    };
    let sent = read(c, 6);
    assert_eq!(s.head(c).0, 6);
    assert!(sent.iter().all(|r| r.key_id() == 1));
    let epochs: Vec<u32> = sent.iter().map(|r| r.pseudonym_epoch().get()).collect();
    assert_eq!(epochs, [1, 1, 1, 2, 2, 2]);
    let received = read(c.reverse(), 3);
    assert_eq!(s.head(c.reverse()).0, 3);
    assert!(received.iter().all(|r| r.key_id() == 2));
    let directory = keyed_directory();
    let report = s.verify_log(&|r| r.check_signature(&directory)).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // Under a directory without those keys the same records fail: the check is real.
    let bare = fixtures::directory(vec![
        fixtures::member("310115", 1, vec![]),
        fixtures::member("110105", 2, vec![]),
    ]);
    assert!(!s.verify_log(&|r| r.check_signature(&bare)).unwrap().ok());
}

/// Schema 2 stored bodies in the clear: opening it seals them and blinds the subject index,
/// and everything still reads and verifies.
#[test]
fn a_version_2_data_directory_is_sealed_on_open_and_verifies() {
    let (dir, s) = open_rich_with_inbox("v2");
    let c = fixtures::a_to_b();
    let subject = fixtures::sample_record(0).subject;
    assert_eq!(s.subject_records(&subject).unwrap().len(), 15);
    assert_eq!(s.records_from(c, 1, 100).unwrap().len(), 12);
    drop(s);
    // Opening the migrated store again changes nothing; a wrong key is refused.
    let wrong = Store::open(
        dir.path(),
        StoreOptions::new(interflow_store::MasterKey::from_bytes([8; 32])),
    );
    assert!(matches!(
        wrong,
        Err(interflow_store::StoreError::WrongMasterKey { .. })
    ));
    let s = Store::open(dir.path(), test_options()).unwrap();
    assert!(s.verify_log(&key_of).unwrap().ok());
}

/// The files under `dir` (recursively) holding `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_holding(&p, needle));
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            out.push(p);
        }
    }
    out
}

/// The v2 golden directory holds its sample bodies in the clear (service point `3101150042`
/// in every payload). sled keeps old segments after the migration seals them, so the store
/// files are rewritten: no file holds a plain body afterwards, and it all still reads.
#[test]
fn after_sealing_a_version_2_directory_no_file_holds_a_plain_body() {
    const PLAIN: &[u8] = b"3101150042";
    assert!(!files_holding(&golden("v2"), PLAIN).is_empty());
    let (dir, s) = open_rich("v2");
    assert_eq!(
        files_holding(dir.path(), PLAIN),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(s.verify_log(&key_of).unwrap().ok());
    drop(s);
    assert!(!dir.path().join("rewrite.tmp").exists());
}

/// A crash during the rewrite: before the copy was complete, the copy is discarded (the old
/// files are already migrated); once complete, the move is finished, even half done.
#[test]
fn an_interrupted_rewrite_is_discarded_or_finished_on_the_next_open() {
    let (dir, s) = open_rich("v2");
    drop(s);
    let tmp = dir.path().join("rewrite.tmp");
    // Incomplete copy: some stray file, no `complete` list.
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("db"), b"half a copy").unwrap();
    let s = Store::open(dir.path(), test_options()).unwrap();
    assert!(!tmp.exists());
    assert!(s.verify_log(&key_of).unwrap().ok());
    drop(s);
    // Complete copy, crash after `db` was moved in but before `conf`: the copy is the live
    // files themselves, so finishing the move must give the same store.
    std::fs::create_dir(&tmp).unwrap();
    std::fs::copy(dir.path().join("conf"), tmp.join("conf")).unwrap();
    std::fs::write(tmp.join("complete"), "db\nconf").unwrap();
    std::fs::write(dir.path().join("snap.0000000000000001"), b"stale").unwrap();
    let s = Store::open(dir.path(), test_options()).unwrap();
    assert!(!tmp.exists());
    assert!(!dir.path().join("snap.0000000000000001").exists());
    assert_eq!(
        s.records_from(fixtures::a_to_b(), 1, 100).unwrap().len(),
        12
    );
    assert!(s.verify_log(&key_of).unwrap().ok());
}

fn test_options() -> StoreOptions {
    StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32]))
}

fn open_rich_with_inbox(name: &str) -> (tempfile::TempDir, Store) {
    let (dir, s) = open_rich(name);
    // The inbox: three arrivals from the peer, a consumer at position 2.
    assert_eq!(s.inbox_head().unwrap(), 3);
    let page = s.inbox_after(0, 10, 100, &|_| true).unwrap();
    assert_eq!(page.entries.len(), 3);
    assert!(
        page.entries
            .iter()
            .all(|e| e.stored.seq() == e.position && e.arrived_at_ms == fixtures::NOW)
    );
    assert_eq!(s.cursor("clinic").unwrap().position, 2);
    // An entry in this build's encoding (with purpose and case) chains on to the old ones,
    // whose bytes stay as they were written.
    let note = AuditNote {
        purpose: "audit".into(),
        case_ref: "G-1".into(),
        ..AuditNote::default()
    };
    s.audit_noted(
        fixtures::NOW,
        "admin:ops",
        "Admin.Lookup",
        vec![],
        note.clone(),
    )
    .unwrap();
    let report = s.verify_log(&key_of).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.audit_entries_checked, 4);
    let audit = s.audit_entries(0, 10).unwrap();
    assert_eq!(audit[3].note, note);
    assert_eq!(audit[1].note, AuditNote::default());
    (dir, s)
}

#[test]
fn a_version_1_data_directory_opens_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&golden("v1"), tmp.path());
    let s = Store::open(
        tmp.path(),
        StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
    )
    .unwrap();
    assert!(s.write_refusal().is_none());
    assert_eq!(s.head(fixtures::a_to_b()).0, 20);
    assert_eq!(
        s.records_from(fixtures::a_to_b(), 1, 100).unwrap().len(),
        20
    );
    assert_eq!(s.audit_entries(0, 10).unwrap().len(), 1);
    let vk = fixtures::key(1).verifying_key();
    let report = s.verify_log(&|r| r.check_signature(&vk)).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    // Its idempotency keys were stored in the clear: the node digests them at start, and a
    // resubmission is still recognised afterwards.
    let digest = |k: &str| Some(fixtures::idempotency(k));
    assert_eq!(s.digest_legacy_intake_keys(&digest).unwrap(), 20);
    assert_eq!(s.digest_legacy_intake_keys(&digest).unwrap(), 0);
    let mut again = fixtures::sample_record(0);
    again.payload = fixtures::contraception(ContraceptionMethod::Iud, 4);
    again.idempotency = Some(fixtures::idempotency("golden-3"));
    let out = s.append_outbound(&fixtures::key(1), &[again]).unwrap();
    assert!(
        matches!(out[0], interflow_store::AppendOutcome::Duplicate(_)),
        "{out:?}"
    );
    // Its records predate the inbox: indexed once, as the node does at start.
    let me = fixtures::a_to_b().destination;
    assert_eq!(s.index_inbox(me).unwrap(), 20);
    assert_eq!(s.index_inbox(me).unwrap(), 0);
    assert_eq!(s.inbox_head().unwrap(), 20);
    assert!(s.verify_log(&|r| r.check_signature(&vk)).unwrap().ok());
}

/// `golden/v1-rich` was written by the last schema-1 build with every kind of state: an audit
/// chain of three entries, two reconciliation reports, a receipt, a checkpoint and delivery
/// retry advice. Opening it migrates to the current schema; the audit chain written before the
/// migration still verifies, and new entries chain onto it.
#[test]
fn a_version_1_store_migrates_and_its_audit_chain_still_verifies() {
    let vk = fixtures::key(1).verifying_key();
    let dir = {
        let (tmp, s) = open_rich("v1-rich");
        // A new entry, in the new encoding, chains onto the ones written by schema 1.
        s.audit(fixtures::NOW + 10, "admin:after", "Admin.Lookup", vec![])
            .unwrap();
        let report = s.verify_log(&key_of).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.audit_entries_checked, 4);
        tmp
    };
    // Opening the migrated store again changes nothing.
    let s = Store::open(
        dir.path(),
        StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
    )
    .unwrap();
    assert_eq!(s.audit_entries(0, 10).unwrap().len(), 4);
    assert_eq!(s.reports(10).unwrap().len(), 2);
    assert!(s.verify_log(&|r| r.check_signature(&vk)).unwrap().ok());
}

/// Residence notices came after schema 2 without a new schema: a v2 directory written before
/// them holds none, takes them as it is (kind byte 3 in the subject index), finds them by
/// subject and still verifies, before and after a reopen.
#[test]
fn a_version_2_directory_from_before_residence_notices_takes_them_without_migration() {
    use interflow_core::payload::{Kind, Payload, ResidenceEvent, ResidenceNotice, YearMonth};
    let (dir, s) = open_rich("v2");
    let mut notice = fixtures::sample_record(0);
    notice.payload = Payload::Residence(ResidenceNotice::new(
        ResidenceEvent::Arrived,
        YearMonth::new(2026, 5).unwrap(),
    ));
    s.append_outbound(&fixtures::key(1), &[notice]).unwrap();
    let found = s
        .current_status(&fixtures::subject(), Kind::Residence)
        .unwrap()
        .expect("the notice, by subject");
    assert_eq!(found.seq(), 13);
    // The status records of the same person are still found by their own kind.
    assert!(
        s.current_status(&fixtures::subject(), Kind::Contraception)
            .unwrap()
            .is_some()
    );
    drop(s);
    let s = Store::open(dir.path(), test_options()).unwrap();
    assert_eq!(s.channel_state(fixtures::a_to_b()).unwrap().head_seq, 13);
    let report = s.verify_log(&key_of).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
