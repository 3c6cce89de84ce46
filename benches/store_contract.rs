//! CPU cost of the store contract itself, on `MemStore` (no disk): what the read-your-writes
//! buffer, `finalize` and the conflict resolver add to one engine-sized commit. Disk-bound
//! throughput is measured by `cairn-bench store` instead.

use cairn_store::keyspace::pack;
use cairn_store::{MemStore, Store, Transaction};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// One workflow transition's writes: 3 history events, a snapshot, 2 mailbox deletes.
fn transition<T: Transaction>(tx: &mut T, run: u64, event: u64) {
    for i in 0..3 {
        tx.set(&pack(&("run", run, "hist", event + i)), &[b'h'; 150])
            .unwrap();
    }
    tx.set(&pack(&("run", run, "state")), &[b's'; 400]).unwrap();
    tx.clear(&pack(&("run", run, "inbox", event))).unwrap();
    tx.clear(&pack(&("run", run, "inbox", event + 1))).unwrap();
}

fn commit_batches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("mem_commit");
    for batch in [1u64, 100] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let store = MemStore::new();
            let mut event = 0;
            b.iter(|| {
                runtime.block_on(async {
                    let mut tx = store.begin().unwrap();
                    // Every transition first reads its run's snapshot, as the engine will.
                    for run in 0..batch {
                        black_box(tx.get(&pack(&("run", run, "state"))).await.unwrap());
                        transition(&mut tx, run, event);
                    }
                    event += 3;
                    tx.commit().await.unwrap()
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit_batches);
criterion_main!(benches);
