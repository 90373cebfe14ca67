//! Installed agreements and termination notices kept durably, and the retention they give
//! records of an agreement the node no longer has in force.

use super::*;
use crate::{InstalledAgreement, StoredTermination};

fn installed(id: &str, retention_days: u32) -> InstalledAgreement {
    InstalledAgreement {
        id: id.into(),
        retention_days,
        signed: vec![1, 2, 3],
        pseudonym_key_file: format!("/etc/interflow/agreements/{id}.key"),
    }
}

#[test]
fn installed_agreements_and_terminations_survive_a_reopen_and_the_first_notice_stands() {
    let dir = tempfile::tempdir().unwrap();
    let by = region("310115");
    let first = StoredTermination {
        agreement_id: "agr-310115-110105".into(),
        by,
        signed: vec![9; 4],
    };
    {
        let s = open(dir.path());
        s.save_agreement(&installed("agr-310115-110105", 30))
            .unwrap();
        s.save_agreement(&installed("agr.2", 90)).unwrap();
        assert!(s.save_termination(&first).unwrap());
        let again = StoredTermination {
            signed: vec![8; 4],
            ..first.clone()
        };
        assert!(!s.save_termination(&again).unwrap());
    }
    let s = open(dir.path());
    let got = s.agreements().unwrap();
    assert_eq!(
        got,
        vec![installed("agr-310115-110105", 30), installed("agr.2", 90)]
    );
    assert_eq!(s.terminations().unwrap(), vec![first]);
}

#[test]
fn records_of_an_installed_agreement_no_longer_in_force_are_erased_with_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.apply(&chain(2)).unwrap();
    s.save_agreement(&installed("agr-310115-110105", 30))
        .unwrap();
    let stored = s.installed_retention_days().unwrap();
    let retention = |id: &str| stored.get(id).copied();
    assert_eq!(
        s.erase_expired(NOW + 29 * 86_400_000, &retention).unwrap(),
        0
    );
    assert_eq!(
        s.erase_expired(NOW + 31 * 86_400_000, &retention).unwrap(),
        2
    );
}
