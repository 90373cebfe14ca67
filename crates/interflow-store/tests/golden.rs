//! Data directories written by earlier builds must keep opening: `golden/v1` was written by
//! schema version 1 (regenerate only on purpose, with `INTERFLOW_WRITE_GOLDEN=1`). A newer
//! build opens it, finds every record, and verifies the log; it never silently re-creates it.

mod common;

use std::path::{Path, PathBuf};

use interflow_core::{fixtures, pb};
use interflow_store::{Store, StoreOptions, Submission};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn write_golden() {
    let dir = golden();
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(&dir, StoreOptions::default()).unwrap();
    let items: Vec<_> = (0..20u64)
        .map(|n| {
            let mut record = fixtures::sample_record(0);
            record.payload =
                fixtures::contraception(pb::ContraceptiveMethod::Iud, (n % 28 + 1) as u32);
            Submission {
                record,
                idempotency_key: format!("golden-{n}"),
            }
        })
        .collect();
    s.append_outbound(&fixtures::key(1), &items).unwrap();
    s.audit(
        fixtures::NOW,
        "admin:golden",
        "Admin.Lookup",
        vec!["ref:00".into()],
    )
    .unwrap();
}

#[test]
fn a_version_1_data_directory_opens_and_verifies() {
    if std::env::var_os("INTERFLOW_WRITE_GOLDEN").is_some() {
        write_golden();
    }
    let tmp = tempfile::tempdir().unwrap();
    common::copy_dir(&golden(), tmp.path());
    let s = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    assert_eq!(s.write_refusal(), None);
    assert_eq!(s.head(fixtures::a_to_b()).0, 20);
    assert_eq!(
        s.records_from(fixtures::a_to_b(), 1, 100).unwrap().len(),
        20
    );
    assert_eq!(s.audit_entries(0, 10).unwrap().len(), 1);
    let vk = fixtures::key(1).verifying_key();
    let report = s.verify_log(&|_| Some(vk)).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}
