//! Durable outbound append throughput for batch sizes 1, 64 and 1024 (records/s, each batch
//! flushed and fsynced once). Run: `cargo bench -p interflow-store --bench append`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use interflow_core::fixtures;
use interflow_core::payload::ContraceptionMethod;
use interflow_core::record::NewRecord;
use interflow_store::{Store, StoreOptions};

fn submission(n: u64) -> NewRecord {
    let mut record = fixtures::sample_record(0);
    record.payload = fixtures::contraception(ContraceptionMethod::Iud, (n % 28 + 1) as u32);
    {
        record.idempotency = Some(fixtures::idempotency(&format!("bench-{n}")));
        record
    }
}

fn append(c: &mut Criterion) {
    let key = fixtures::key(1);
    let mut group = c.benchmark_group("append_outbound_durable");
    group.sample_size(10);
    for batch in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions::new(interflow_store::MasterKey::from_bytes([7; 32])),
        )
        .unwrap();
        let mut next = 0u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_batched(
                || {
                    let items: Vec<_> = (next..next + batch).map(submission).collect();
                    next += batch;
                    items
                },
                |items| black_box(store.append_outbound(&key, &items).unwrap()),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
