//! Durable outbound append throughput for batch sizes 1, 64 and 1024 (records/s, each batch
//! flushed and fsynced once). Run: `cargo bench -p interflow-store --bench append`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use interflow_core::payload::Payload;
use interflow_core::pseudonym::{PseudonymKey, SubjectRef};
use interflow_core::record::{ChannelId, NewRecord};
use interflow_core::{NationalId, pb};
use interflow_store::{Store, StoreOptions, Submission};

fn submission(n: u64) -> Submission {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    let id = NationalId::parse("11010519491231002X", today).unwrap();
    let subject = SubjectRef::derive(&PseudonymKey::from_bytes([9; 32]), &id);
    Submission {
        record: NewRecord {
            channel: ChannelId::new("310115".parse().unwrap(), "110105".parse().unwrap()),
            agreement_id: "agr-1".into(),
            subject,
            issued_at_ms: 1_780_272_000_000,
            supersedes: None,
            payload: Payload::Contraception(pb::ContraceptionStatus {
                method: pb::ContraceptiveMethod::Iud as i32,
                since: Some(pb::Date {
                    year: 2025,
                    month: 3,
                    day: 1,
                }),
                observed_on: Some(pb::Date {
                    year: 2026,
                    month: 5,
                    day: (n % 28 + 1) as u32,
                }),
                service_point: "3101150042".into(),
            }),
        },
        idempotency_key: format!("bench-{n}"),
    }
}

fn append(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[1; 32]);
    let mut group = c.benchmark_group("append_outbound_durable");
    group.sample_size(10);
    for batch in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
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
