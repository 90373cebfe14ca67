//! Data directories written by earlier builds must keep opening: `golden/v1` and
//! `golden/v1-rich` were written by schema version 1 and can no longer be regenerated;
//! `golden/v2` by the current schema (regenerate it only on purpose, with
//! `INTERFLOW_WRITE_GOLDEN=1`, and add a new directory when the schema changes). A newer
//! build opens it (migrating it to the current schema), finds every record, and verifies the
//! log; it never silently re-creates it.

mod common;

use std::path::{Path, PathBuf};

use interflow_core::fixtures;
use interflow_core::payload::ContraceptionMethod;
use interflow_core::statement::{Receipt, sign_receipt};
use interflow_store::{
    Anomaly, Arrival, ChannelRun, DeliveryState, RunReport, SCHEMA_VERSION, Store, StoreOptions,
};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Writes `golden/v{SCHEMA_VERSION}` with every kind of state this schema keeps.
fn write_golden() {
    let dir = golden(&format!("v{SCHEMA_VERSION}"));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(&dir, StoreOptions::default()).unwrap();
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
    let mut prev = interflow_core::record::RecordId::ZERO;
    let inbound: Vec<_> = (1..=3u64)
        .map(|seq| {
            let mut r = fixtures::sample_record(500 - seq as i64);
            r.channel = c.reverse();
            let v = r.seal(seq, prev, &fixtures::key(2)).unwrap();
            prev = v.id();
            v
        })
        .collect();
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

/// Origin 310115 signs with key 1, 110105 with key 2.
fn key_of(r: interflow_core::RegionCode) -> Option<ed25519_dalek::VerifyingKey> {
    let seed = if r == fixtures::a_to_b().origin { 1 } else { 2 };
    Some(fixtures::key(seed).verifying_key())
}

/// Opens a copy of a golden directory and checks the state every rich one holds.
fn open_rich(name: &str) -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&golden(name), tmp.path());
    let s = Store::open(tmp.path(), StoreOptions::default()).unwrap();
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
    if std::env::var_os("INTERFLOW_WRITE_GOLDEN").is_some() {
        write_golden();
    }
    let (_dir, s) = open_rich(&format!("v{SCHEMA_VERSION}"));
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
}

#[test]
fn a_version_1_data_directory_opens_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&golden("v1"), tmp.path());
    let s = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert!(s.write_refusal().is_none());
    assert_eq!(s.head(fixtures::a_to_b()).0, 20);
    assert_eq!(
        s.records_from(fixtures::a_to_b(), 1, 100).unwrap().len(),
        20
    );
    assert_eq!(s.audit_entries(0, 10).unwrap().len(), 1);
    let vk = fixtures::key(1).verifying_key();
    let report = s.verify_log(&|_| Some(vk)).unwrap();
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
    assert!(s.verify_log(&|_| Some(vk)).unwrap().ok());
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
    let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.audit_entries(0, 10).unwrap().len(), 4);
    assert_eq!(s.reports(10).unwrap().len(), 2);
    assert!(s.verify_log(&|_| Some(vk)).unwrap().ok());
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
    let s = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.channel_state(fixtures::a_to_b()).unwrap().head_seq, 13);
    let report = s.verify_log(&key_of).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
