//! The inbox: arrival order, consumer cursors, indexing of older records.

use super::*;
use crate::inbox::Arrival;

fn arrival(at_ms: i64) -> Arrival {
    Arrival {
        me: a_to_b().destination,
        at_ms,
    }
}

#[test]
fn received_records_get_positions_in_arrival_order_and_repeats_get_none() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(3);
    s.receive(&recs[..2], arrival(NOW)).unwrap();
    s.receive(&recs, arrival(NOW + 5)).unwrap();
    assert_eq!(s.inbox_head().unwrap(), 3);
    let page = s.inbox_after(0, 10, 100, &|_| true).unwrap();
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.position, e.stored.id(), e.arrived_at_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, recs[0].id(), NOW),
            (2, recs[1].id(), NOW),
            (3, recs[2].id(), NOW + 5)
        ]
    );
    assert_eq!(page.scanned_to, 3);
    // Reading after a position, with a limit and a filter.
    let page = s.inbox_after(1, 1, 100, &|_| true).unwrap();
    assert_eq!(page.entries[0].position, 2);
    let none = s.inbox_after(0, 10, 100, &|_| false).unwrap();
    assert!(none.entries.is_empty());
    assert_eq!(none.scanned_to, 3, "a filtered read still moves on");
    assert!(
        s.verify_log(&|r| r.check_signature(&key().verifying_key()))
            .unwrap()
            .ok()
    );
}

#[test]
fn records_for_another_node_and_plain_applies_get_no_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // This node is the origin: recovering its own feed is not an arrival.
    let me_origin = Arrival {
        me: a_to_b().origin,
        at_ms: NOW,
    };
    s.receive(&chain(2), me_origin).unwrap();
    assert_eq!(s.inbox_head().unwrap(), 0);
}

#[test]
fn cursors_move_forward_only_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.receive(&chain(3), arrival(NOW)).unwrap();
        assert_eq!(s.cursor("clinic").unwrap().position, 0);
        assert_eq!(s.ack("clinic", 2, NOW + 1).unwrap().position, 2);
        assert_eq!(
            s.ack("clinic", 1, NOW + 2).unwrap().position,
            2,
            "never back"
        );
        s.ack("his", 3, NOW + 3).unwrap();
    }
    let s = open(dir.path());
    let cursors: Vec<_> = s
        .cursors()
        .unwrap()
        .into_iter()
        .map(|c| (c.consumer, c.position, c.acked_at_ms))
        .collect();
    assert_eq!(
        cursors,
        vec![("clinic".into(), 2, NOW + 1), ("his".into(), 3, NOW + 3)]
    );
}

#[test]
fn older_records_are_indexed_once_and_erased_ones_read_as_stubs() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(2);
    s.apply(&recs).unwrap();
    assert_eq!(s.inbox_head().unwrap(), 0);
    assert_eq!(s.index_inbox(a_to_b().destination).unwrap(), 2);
    assert_eq!(s.index_inbox(a_to_b().destination).unwrap(), 0, "only once");
    s.erase_expired(NOW + 10_000 * 86_400_000, &|_| Some(30))
        .unwrap();
    let e = s.inbox_at(1).unwrap().unwrap();
    assert!(matches!(e.stored, Stored::Erased(_)));
    assert_eq!(e.stored.id(), recs[0].id());
    assert!(
        s.verify_log(&|r| r.check_signature(&key().verifying_key()))
            .unwrap()
            .ok()
    );
}

#[test]
fn consumer_names_are_checked() {
    assert!(crate::valid_consumer("clinic-his.v2_a"));
    for bad in ["", "a b", "ü", &"x".repeat(65)] {
        assert!(!crate::valid_consumer(bad), "{bad}");
    }
}

#[test]
fn a_delivered_batch_takes_one_inbox_entry_and_every_position_in_it_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(6);
    s.receive(&recs[..1], arrival(NOW)).unwrap();
    s.receive(&recs[1..], arrival(NOW + 5)).unwrap();
    let entries = s.db().unwrap().scan_prefix([keys::INBOX]).count();
    assert_eq!(entries, 2, "one run per received batch");
    assert_eq!(s.inbox_head().unwrap(), 6);
    for (position, r) in (1u64..).zip(&recs) {
        let e = s.inbox_at(position).unwrap().unwrap();
        assert_eq!((e.position, e.stored.id()), (position, r.id()));
        assert_eq!(e.arrived_at_ms, if position == 1 { NOW } else { NOW + 5 });
    }
    assert!(s.inbox_at(7).unwrap().is_none());
    assert!(s.inbox_at(0).unwrap().is_none());
    // Reading from inside a run, with a limit and with a scan bound.
    let page = s.inbox_after(3, 2, 100, &|_| true).unwrap();
    let got: Vec<_> = page.entries.iter().map(|e| e.position).collect();
    assert_eq!((got, page.scanned_to), (vec![4, 5], 5));
    let page = s.inbox_after(0, 10, 3, &|_| false).unwrap();
    assert_eq!((page.entries.len(), page.scanned_to), (0, 3));
    assert!(
        s.verify_log(&|r| r.check_signature(&key().verifying_key()))
            .unwrap()
            .ok()
    );
}

#[test]
fn verify_names_an_inbox_run_that_points_past_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let recs = chain(3);
    s.receive(&recs, arrival(NOW)).unwrap();
    // A run claiming four positions over three records.
    let (k, v) = s
        .db()
        .unwrap()
        .scan_prefix([keys::INBOX])
        .next()
        .unwrap()
        .unwrap();
    let mut v = v.to_vec();
    let n = v.len();
    v[n - 4..].copy_from_slice(&4u32.to_be_bytes());
    s.db().unwrap().insert(k, v).unwrap();
    let report = s
        .verify_log(&|r| r.check_signature(&key().verifying_key()))
        .unwrap();
    assert!(!report.ok());
    assert!(
        report.problems[0].problem.contains("inbox position `4`"),
        "{:?}",
        report.problems
    );
}
