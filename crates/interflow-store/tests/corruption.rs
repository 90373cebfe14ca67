//! Corrupted data files: flipping bytes anywhere in a copy of a data directory never makes the
//! store panic or serve a record that does not verify. It refuses to open, opens read-only, or
//! `verify_log` names the damage.

mod common;

use interflow_core::fixtures;
use interflow_core::payload::ContraceptionMethod;
use interflow_store::{Store, StoreOptions};

#[test]
fn flipped_bytes_never_panic_and_never_serve_bad_records() {
    let base = tempfile::tempdir().unwrap();
    let key = fixtures::key(1);
    {
        let s = Store::open(
            base.path(),
            StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        let items: Vec<_> = (0..60u64)
            .map(|n| {
                let mut record = fixtures::sample_record(0);
                record.payload =
                    fixtures::contraception(ContraceptionMethod::Iud, (n % 28 + 1) as u32);
                {
                    record.idempotency = Some(fixtures::idempotency(&format!("k{n}")));
                    record
                }
            })
            .collect();
        s.append_outbound(&key, &items).unwrap();
    }
    // Flip bytes where data is: sled preallocates, and a flip in zeroed space proves nothing.
    let original = std::fs::read(base.path().join("db")).unwrap();
    let used: Vec<usize> = (0..original.len()).filter(|&i| original[i] != 0).collect();
    assert!(used.len() > 1000, "too little data to corrupt");
    let mut seed = 0x5eed_u64;
    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    for _ in 0..40 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = used[((seed >> 33) % used.len() as u64) as usize];
        let copy = tempfile::tempdir().unwrap();
        common::copy_dir(base.path(), copy.path());
        let file = copy.path().join("db");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[offset] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();

        let vk = key.verifying_key();
        let result = std::panic::catch_unwind(|| {
            let s = match Store::open(
                copy.path(),
                StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
            ) {
                Ok(s) => s,
                Err(_) => return "refused to open",
            };
            if s.write_refusal().is_some() {
                return "opened read-only";
            }
            match s.verify_log(&|r| r.check_signature(&vk)) {
                Ok(r) if !r.ok() => return "verify found damage",
                Err(_) => return "verify errored",
                Ok(_) => {}
            }
            // Whatever it serves verifies.
            match s.records_from(fixtures::a_to_b(), 1, 100) {
                Ok(recs) => {
                    // Whatever is served verifies and is an unbroken prefix of the feed.
                    for (i, r) in recs.iter().enumerate() {
                        let rec = interflow_core::record::DecodedRecord::from_bytes(&r.bytes)
                            .expect("served a record that does not decode");
                        assert_eq!(rec.id(), r.id, "served a record under another id");
                        assert!(
                            rec.verify(&vk).is_ok(),
                            "served a record that does not verify"
                        );
                        assert_eq!(r.seq, i as u64 + 1, "served a broken chain");
                    }
                    if recs.len() == 60 {
                        "intact"
                    } else {
                        // Like a restore from an older backup: consistent, and the node's
                        // start-up head comparison recovers the rest from its peers.
                        "an older consistent state"
                    }
                }
                Err(_) => "read errored",
            }
        });
        let outcome = result
            .unwrap_or_else(|_| panic!("the store panicked on a flipped byte at offset {offset}"));
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("corruption outcomes: {outcomes:?}");
}
