//! Open time of a data directory by its size: from `Store::open` to the first answer a store
//! gives (a channel's head), for stores of 30 k and 300 k sent records. Open checks each
//! channel's last record and the heads anchor, not every record, so the time should hardly
//! grow with the store. Run: `cargo bench -p interflow-store --bench open` (building the
//! 300 k-record store takes a minute or two first).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use interflow_core::fixtures;
use interflow_core::payload::ContraceptionMethod;
use interflow_store::{Store, StoreOptions};

fn options() -> StoreOptions {
    StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32]))
}

/// A store with `n` records sent on one channel, in durable batches of 1000.
fn filled(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let key = fixtures::key(1);
    for start in (0..n).step_by(1000) {
        let items: Vec<_> = (start..(start + 1000).min(n))
            .map(|i| {
                let mut r = fixtures::sample_record(0);
                r.payload = fixtures::contraception(ContraceptionMethod::Iud, (i % 28 + 1) as u32);
                r.idempotency = Some(fixtures::idempotency(&format!("open-{i}")));
                r
            })
            .collect();
        store.append_outbound(&key, &items).unwrap();
    }
    dir
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open_to_first_answer");
    group.sample_size(10);
    for n in [30_000u64, 300_000] {
        let dir = filled(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            // Timed up to the first answer; each store is closed (untimed) before the next
            // open, since the directory takes one process-wide lock.
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let started = std::time::Instant::now();
                    let store = Store::open(dir.path(), options()).unwrap();
                    black_box(store.head(fixtures::a_to_b()));
                    spent += started.elapsed();
                    assert_eq!(store.head(fixtures::a_to_b()).0, n);
                    drop(store);
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, open);
criterion_main!(benches);
