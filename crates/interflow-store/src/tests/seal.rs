//! Encryption at rest: nothing of a payload lies on disk in the clear, erasure destroys the
//! period's data key so even old copies of sled's files cannot be read, and the master key is
//! checked (authenticated) before anything is served.

use super::*;
use crate::seal::MasterKey;
use crate::{KEYRING_FILE, StoreError};
use interflow_core::pb;

/// A service point no other test uses: the marker the byte scan looks for.
const MARKER: &str = "3101159731";

fn marked_record(day: u32) -> NewRecord {
    let status = pb::ContraceptionStatus {
        method: pb::ContraceptiveMethod::Iud as i32,
        since: Some(pb::Date {
            year: 2025,
            month: 3,
            day: 1,
        }),
        observed_on: Some(pb::Date {
            year: 2026,
            month: 5,
            day,
        }),
        service_point: MARKER.into(),
    };
    new_record(Payload::Contraception(status.try_into().unwrap()), None)
}

/// Every file under `dir`, recursively, with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

/// The files under `dir` that contain `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p)
        .collect()
}

const RETENTION_DAYS: u32 = 30;

fn retention(agreement: &str) -> Option<u32> {
    (agreement == "agr-310115-110105").then_some(RETENTION_DAYS)
}

#[test]
fn a_payload_marker_and_the_subject_ref_are_in_no_file_before_or_after_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let who = subject(PERSON);
    let ids: Vec<_> = {
        let s = open(dir.path());
        let items: Vec<_> = (1..=5).map(marked_record).collect();
        let ids: Vec<_> = s
            .append_outbound(&key(), &items)
            .unwrap()
            .iter()
            .map(stored_id)
            .collect();
        // The marker is really in what was stored: it comes back on the way out.
        let rec = s.get(ids[0]).unwrap().unwrap();
        let Payload::Contraception(c) = rec.payload() else {
            panic!("kind")
        };
        assert_eq!(c.service_point().as_str(), MARKER);
        assert_eq!(s.subject_records(&who).unwrap().len(), 5);
        assert_eq!(s.data_key_count().unwrap(), 1);
        ids
    };
    // Closed, so every byte sled holds is in its files.
    assert!(holding(dir.path(), MARKER.as_bytes()).is_empty());
    assert!(holding(dir.path(), who.as_bytes()).is_empty());
    // What sled's old segments would keep: the whole directory as it was before erasure.
    let before = tempfile::tempdir().unwrap();
    for (p, b) in files(dir.path()) {
        let to = before.path().join(p.strip_prefix(dir.path()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, b).unwrap();
    }

    let s = open(dir.path());
    // Past retention for every record of the month they were issued in.
    let later = NOW + (RETENTION_DAYS as i64 + 32) * 86_400_000;
    assert_eq!(s.erase_expired(later, &retention).unwrap(), 5);
    assert_eq!(s.data_key_count().unwrap(), 0);
    assert!(matches!(
        s.get_entry(ids[2]).unwrap(),
        Some(Stored::Erased(_))
    ));
    assert!(
        s.verify_log(&|r| r.check_signature(&key().verifying_key()))
            .unwrap()
            .ok()
    );
    drop(s);
    assert!(holding(dir.path(), MARKER.as_bytes()).is_empty());
    assert!(holding(dir.path(), who.as_bytes()).is_empty());

    // The old bytes with today's keyring (the master key leaked too): nothing reads.
    std::fs::copy(
        dir.path().join(KEYRING_FILE),
        before.path().join(KEYRING_FILE),
    )
    .unwrap();
    let old = open(before.path());
    assert!(matches!(
        old.get_entry(ids[0]).unwrap(),
        Some(Stored::Erased(_))
    ));
    assert!(old.subject_records(&who).unwrap().is_empty());
    assert!(old.records_from(a_to_b(), 1, 10).unwrap().is_empty());
}

#[test]
fn a_period_key_stays_while_a_record_of_the_period_is_retained() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut old = marked_record(1);
    old.issued_at_ms = NOW - 10 * 86_400_000;
    let young = marked_record(2);
    s.append_outbound(&key(), &[old, young]).unwrap();
    // Retention passed for the older record only.
    let at = NOW + (RETENTION_DAYS as i64 - 5) * 86_400_000;
    assert_eq!(s.erase_expired(at, &retention).unwrap(), 1);
    let keys_left = s.data_key_count().unwrap();
    // Both were issued in one month unless NOW is early in a month; either way the younger
    // record's key is kept and it still reads.
    assert!(keys_left >= 1);
    assert!(s.record_at(a_to_b(), 2).unwrap().is_some());
    assert!(s.record_at(a_to_b(), 1).unwrap().is_none());
}

#[test]
fn a_wrong_master_key_is_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).append_outbound(&key(), &[marked_record(1)]));
    let wrong = Store::open(
        dir.path(),
        StoreOptions::new(MasterKey::from_bytes([8; 32])),
    );
    let err = wrong.unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err}");
    assert!(err.to_string().contains("authenticated"), "{err}");
    // The right key still opens it.
    assert!(
        open(dir.path())
            .get_entry(RecordId::ZERO)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_store_with_sealed_records_and_no_keyring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).append_outbound(&key(), &[marked_record(1)]));
    std::fs::remove_file(dir.path().join(KEYRING_FILE)).unwrap();
    let err = Store::open(
        dir.path(),
        StoreOptions::new(MasterKey::from_bytes([7; 32])),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::KeyringMissing { .. }), "{err}");
}

#[test]
fn a_sealed_body_moved_to_another_position_does_not_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_outbound(&key(), &[marked_record(1), marked_record(2)])
        .unwrap();
    let db = s.db().unwrap();
    let one = db.get(keys::record(a_to_b(), 1)).unwrap().unwrap();
    db.insert(keys::record(a_to_b(), 2), one).unwrap();
    drop(db);
    let err = s.record_at(a_to_b(), 2).unwrap_err();
    assert!(err.to_string().contains("does not authenticate"), "{err}");
}
