//! The store conformance suite: one set of specs, written once, run against every backend.
//!
//! Each spec is a plain async function over any [`Store`], working under a key prefix it owns
//! (so backends that share a cluster, like FoundationDB, can run specs side by side). A backend
//! crate instantiates the whole suite as tests with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! cairn_store::conformance_tests!(async { Some((cairn_store::MemStore::new(), ())) });
//! ```
//!
//! The expression yields `Option<(store, guard)>`: `None` skips the suite with a printed reason
//! (the FDB backend without `FDB_CLUSTER_FILE`), and `guard` lives as long as the spec (a
//! temporary directory, say).

use crate::keyspace::{Subspace, TupleVersionstamp, key_after};
use crate::{
    FaultConfig, FaultStore, KeyValue, RangeRequest, Store, StoreError, TransactOptions,
    Transaction, Versionstamp, transact,
};
use std::time::Duration;

/// The spec names, in the order [`conformance_tests!`](crate::conformance_tests) runs them.
pub const SPECS: &[&str] = &[
    "read_your_writes",
    "snapshot_isolation",
    "read_write_conflict",
    "get_many_reads_like_get",
    "read_modify_write_conflict",
    "blind_writes_do_not_conflict",
    "disjoint_transactions_commit",
    "range_read_conflicts_with_insert",
    "snapshot_reads_add_no_conflict",
    "range_reads_bounds_limits_directions",
    "range_reads_merge_own_writes",
    "randomized_reads_match_model",
    "clear_range_semantics",
    "atomic_add_semantics",
    "atomic_add_under_concurrency",
    "commit_versionstamps_order_commits",
    "versionstamped_keys_order_by_commit",
    "watch_fires_on_change",
    "watch_ignores_non_changes",
    "watch_cancelled_without_commit",
    "watch_baseline_is_what_the_transaction_read",
    "read_only_transactions_never_conflict",
    "key_size_limit",
    "value_size_limit",
    "transaction_size_limit",
    "transaction_age_limit",
    "system_keyspace_refused",
    "malformed_requests_refused",
    "transact_retries_conflicts",
    "transact_concurrent_increments",
    "transact_maybe_committed_idempotent",
    "transact_retry_limit",
    "transact_timeout",
];

fn key(prefix: &[u8], suffix: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(suffix.as_bytes());
    k
}

fn end_of(prefix: &[u8]) -> Vec<u8> {
    crate::keyspace::strinc(prefix)
}

/// Clears the spec's prefix so a spec starts from nothing even on a shared cluster.
pub async fn reset<S: Store>(store: &S, prefix: &[u8]) {
    let mut tx = store.begin().expect("begin");
    tx.clear_range(prefix, &end_of(prefix))
        .expect("clear_range");
    tx.commit().await.expect("commit reset");
}

async fn put<S: Store>(store: &S, k: &[u8], v: &[u8]) -> u64 {
    let mut tx = store.begin().expect("begin");
    tx.set(k, v).expect("set");
    tx.commit().await.expect("commit").version
}

async fn read<S: Store>(store: &S, k: &[u8]) -> Option<Vec<u8>> {
    let mut tx = store.begin().expect("begin");
    tx.get(k).await.expect("get")
}

fn i64_of(v: Option<Vec<u8>>) -> i64 {
    let v = v.expect("counter present");
    i64::from_le_bytes(v.try_into().expect("8-byte counter"))
}

fn kv(k: Vec<u8>, v: &[u8]) -> KeyValue {
    KeyValue {
        key: k,
        value: v.to_vec(),
    }
}

/// A transaction sees its own sets, clears and adds before commit, and others see none of
/// them until it commits.
pub async fn read_your_writes<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "a"), b"old").await;
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.get(&key(p, "a")).await.unwrap(), Some(b"old".to_vec()));
    tx.set(&key(p, "a"), b"new").unwrap();
    tx.set(&key(p, "b"), b"bee").unwrap();
    assert_eq!(tx.get(&key(p, "a")).await.unwrap(), Some(b"new".to_vec()));
    tx.clear(&key(p, "b")).unwrap();
    assert_eq!(tx.get(&key(p, "b")).await.unwrap(), None);
    tx.atomic_add(&key(p, "n"), 5).unwrap();
    tx.atomic_add(&key(p, "n"), -2).unwrap();
    assert_eq!(i64_of(tx.get(&key(p, "n")).await.unwrap()), 3);
    assert_eq!(read(store, &key(p, "a")).await, Some(b"old".to_vec()));
    tx.commit().await.unwrap();
    assert_eq!(read(store, &key(p, "a")).await, Some(b"new".to_vec()));
    assert_eq!(read(store, &key(p, "b")).await, None);
    assert_eq!(i64_of(read(store, &key(p, "n")).await), 3);
}

/// A transaction keeps reading the snapshot at its read version while others commit.
pub async fn snapshot_isolation<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "x"), b"1").await;
    let mut reader = store.begin().unwrap();
    assert_eq!(reader.get(&key(p, "x")).await.unwrap(), Some(b"1".to_vec()));
    put(store, &key(p, "x"), b"2").await;
    put(store, &key(p, "y"), b"new").await;
    assert_eq!(
        reader.get_snapshot(&key(p, "x")).await.unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(reader.get(&key(p, "y")).await.unwrap(), None);
    let range = reader
        .get_range(&RangeRequest::new(p.to_vec(), end_of(p)))
        .await
        .unwrap();
    assert_eq!(range, vec![kv(key(p, "x"), b"1")]);
}

/// A transaction whose read key was written by a later commit fails with `Conflict` and
/// writes nothing.
pub async fn read_write_conflict<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "k"), b"0").await;
    let mut t1 = store.begin().unwrap();
    t1.get(&key(p, "k")).await.unwrap();
    put(store, &key(p, "k"), b"1").await;
    t1.set(&key(p, "other"), b"x").unwrap();
    assert_eq!(t1.commit().await, Err(StoreError::Conflict));
    assert_eq!(read(store, &key(p, "other")).await, None);
}

/// `get_many` answers each key's value in the order asked (absent as none, the transaction's
/// own writes included), and its reads join the conflict set as `get`'s do.
pub async fn get_many_reads_like_get<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "a"), b"1").await;
    put(store, &key(p, "b"), b"2").await;
    let mut t1 = store.begin().unwrap();
    t1.set(&key(p, "c"), b"own").unwrap();
    let values = t1
        .get_many(&[key(p, "b"), key(p, "missing"), key(p, "a"), key(p, "c")])
        .await
        .unwrap();
    assert_eq!(
        values,
        vec![
            Some(b"2".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"own".to_vec())
        ]
    );
    assert_eq!(
        t1.get_many(&[]).await.unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    put(store, &key(p, "missing"), b"now").await;
    assert_eq!(t1.commit().await, Err(StoreError::Conflict));
    assert_eq!(read(store, &key(p, "c")).await, None);
}

/// A transaction that wrote nothing commits even if what it read changed meanwhile
/// (FoundationDB commits read-only transactions without a conflict check): there is nothing to
/// apply, and its reads were a consistent snapshot all along.
pub async fn read_only_transactions_never_conflict<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "k"), b"0").await;
    let mut reader = store.begin().unwrap();
    assert_eq!(
        reader.get(&key(p, "k")).await.unwrap().as_deref(),
        Some(&b"0"[..])
    );
    put(store, &key(p, "k"), b"1").await;
    reader.commit().await.expect("a read-only commit succeeds");
    assert_eq!(read(store, &key(p, "k")).await, Some(b"1".to_vec()));
}

/// Two read-modify-writes of one key: the first commit wins, the second conflicts (no lost
/// update).
pub async fn read_modify_write_conflict<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "k"), b"0").await;
    let mut t1 = store.begin().unwrap();
    let mut t2 = store.begin().unwrap();
    assert!(t1.get(&key(p, "k")).await.unwrap().is_some());
    assert!(t2.get(&key(p, "k")).await.unwrap().is_some());
    t1.set(&key(p, "k"), b"t1").unwrap();
    t2.set(&key(p, "k"), b"t2").unwrap();
    t1.commit().await.unwrap();
    assert_eq!(t2.commit().await, Err(StoreError::Conflict));
    assert_eq!(read(store, &key(p, "k")).await, Some(b"t1".to_vec()));
}

/// Writes without reads never conflict (FoundationDB semantics): both commit, last one wins.
pub async fn blind_writes_do_not_conflict<S: Store>(store: &S, p: &[u8]) {
    let mut t1 = store.begin().unwrap();
    let mut t2 = store.begin().unwrap();
    t1.set(&key(p, "k"), b"t1").unwrap();
    t2.set(&key(p, "k"), b"t2").unwrap();
    t1.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(read(store, &key(p, "k")).await, Some(b"t2".to_vec()));
}

/// Concurrent transactions over disjoint keys both commit.
pub async fn disjoint_transactions_commit<S: Store>(store: &S, p: &[u8]) {
    let mut t1 = store.begin().unwrap();
    let mut t2 = store.begin().unwrap();
    t1.get(&key(p, "a")).await.unwrap();
    t2.get(&key(p, "b")).await.unwrap();
    t1.set(&key(p, "a"), b"1").unwrap();
    t2.set(&key(p, "b"), b"2").unwrap();
    t1.commit().await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(read(store, &key(p, "a")).await, Some(b"1".to_vec()));
    assert_eq!(read(store, &key(p, "b")).await, Some(b"2".to_vec()));
}

/// A range read conflicts with a later insert inside the range (no phantoms), not outside it;
/// a limited read only protects the part it returned.
pub async fn range_read_conflicts_with_insert<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "r/1"), b"").await;
    put(store, &key(p, "r/5"), b"").await;
    let mut outside = store.begin().unwrap();
    outside
        .get_range(&RangeRequest::new(key(p, "r/"), key(p, "r/9")))
        .await
        .unwrap();
    outside.set(&key(p, "w1"), b"").unwrap();
    let mut inside = store.begin().unwrap();
    inside
        .get_range(&RangeRequest::new(key(p, "r/"), key(p, "r/9")))
        .await
        .unwrap();
    inside.set(&key(p, "w2"), b"").unwrap();
    let mut limited = store.begin().unwrap();
    let got = limited
        .get_range(&RangeRequest::new(key(p, "r/"), key(p, "r/9")).limit(1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    limited.set(&key(p, "w3"), b"").unwrap();
    put(store, &key(p, "r/3"), b"phantom").await;
    put(store, &key(p, "s"), b"outside").await;
    assert_eq!(inside.commit().await, Err(StoreError::Conflict));
    // `outside` also read [r/, r/9), which contains r/3.
    assert_eq!(outside.commit().await, Err(StoreError::Conflict));
    // `limited` read only up to r/1 inclusive; r/3 lies beyond what it saw.
    limited.commit().await.unwrap();
}

/// Snapshot reads (point and range) leave no read conflict.
pub async fn snapshot_reads_add_no_conflict<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "k"), b"0").await;
    let mut tx = store.begin().unwrap();
    tx.get_snapshot(&key(p, "k")).await.unwrap();
    tx.get_range(&RangeRequest::new(p.to_vec(), end_of(p)).snapshot())
        .await
        .unwrap();
    put(store, &key(p, "k"), b"1").await;
    tx.set(&key(p, "out"), b"x").unwrap();
    tx.commit().await.unwrap();
}

/// Range reads honour [begin, end), limits, and both directions.
pub async fn range_reads_bounds_limits_directions<S: Store>(store: &S, p: &[u8]) {
    let mut tx = store.begin().unwrap();
    for i in 0..10 {
        tx.set(&key(p, &format!("i{i}")), &[i]).unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = store.begin().unwrap();
    let all = RangeRequest::new(key(p, "i"), key(p, "j"));
    let forward = tx.get_range(&all).await.unwrap();
    assert_eq!(
        forward.iter().map(|kv| kv.value[0]).collect::<Vec<_>>(),
        (0..10).collect::<Vec<u8>>()
    );
    let backward = tx.get_range(&all.clone().reverse()).await.unwrap();
    assert_eq!(
        backward.iter().map(|kv| kv.value[0]).collect::<Vec<_>>(),
        (0..10).rev().collect::<Vec<u8>>()
    );
    let first3 = tx.get_range(&all.clone().limit(3)).await.unwrap();
    assert_eq!(
        first3.iter().map(|kv| kv.value[0]).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let last2 = tx.get_range(&all.clone().reverse().limit(2)).await.unwrap();
    assert_eq!(
        last2.iter().map(|kv| kv.value[0]).collect::<Vec<_>>(),
        [9, 8]
    );
    let inner = RangeRequest::new(key(p, "i3"), key(p, "i6"));
    let mid = tx.get_range(&inner).await.unwrap();
    assert_eq!(
        mid.iter().map(|kv| kv.value[0]).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let exact_end = RangeRequest::new(key(p, "i3"), key_after(&key(p, "i3")));
    assert_eq!(tx.get_range(&exact_end).await.unwrap().len(), 1);
    let inverted = RangeRequest::new(key(p, "i6"), key(p, "i3"));
    assert!(tx.get_range(&inverted).await.unwrap().is_empty());
    assert!(
        tx.get_range(&all.clone().limit(0))
            .await
            .unwrap()
            .is_empty()
    );
    let prefixed = tx
        .get_range(&RangeRequest::prefix(&key(p, "i")))
        .await
        .unwrap();
    assert_eq!(prefixed.len(), 10);
}

/// A range read inside a transaction shows its own uncommitted sets, clears and adds, in order
/// and within the limit.
pub async fn range_reads_merge_own_writes<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "b"), b"B").await;
    put(store, &key(p, "d"), b"D").await;
    put(store, &key(p, "f"), b"F").await;
    let mut tx = store.begin().unwrap();
    tx.set(&key(p, "a"), b"a").unwrap();
    tx.set(&key(p, "d"), b"d").unwrap();
    tx.clear(&key(p, "f")).unwrap();
    tx.set(&key(p, "e"), b"e").unwrap();
    let all = RangeRequest::new(p.to_vec(), end_of(p));
    let got = tx.get_range(&all).await.unwrap();
    assert_eq!(
        got,
        vec![
            kv(key(p, "a"), b"a"),
            kv(key(p, "b"), b"B"),
            kv(key(p, "d"), b"d"),
            kv(key(p, "e"), b"e"),
        ]
    );
    let rev = tx.get_range(&all.clone().reverse().limit(2)).await.unwrap();
    assert_eq!(rev, vec![kv(key(p, "e"), b"e"), kv(key(p, "d"), b"d")]);
    tx.atomic_add(&key(p, "c"), 1).unwrap();
    let got = tx.get_range(&all).await.unwrap();
    assert_eq!(got[2], kv(key(p, "c"), &1i64.to_le_bytes()));
}

/// Seeded random transactions of sets, clears, clear ranges, adds and reads: every read inside
/// a transaction matches a `BTreeMap` model of committed state plus the transaction's own
/// writes, and after each commit the store matches the model.
pub async fn randomized_reads_match_model<S: Store>(store: &S, p: &[u8]) {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    let mut rng = SmallRng::seed_from_u64(0xca1e);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let random_key = |rng: &mut SmallRng| {
        let len = rng.random_range(1..=2);
        let suffix: String = (0..len)
            .map(|_| ['a', 'b', 'c'][rng.random_range(0..3)])
            .collect();
        key(p, &suffix)
    };
    let model_range =
        |model: &BTreeMap<Vec<u8>, Vec<u8>>, b: &[u8], e: &[u8], limit: usize, rev: bool| {
            let span = model
                .range(b.to_vec()..e.to_vec())
                .map(|(k, v)| kv(k.clone(), v));
            if rev {
                span.rev().take(limit).collect::<Vec<_>>()
            } else {
                span.take(limit).collect::<Vec<_>>()
            }
        };
    for _ in 0..30 {
        let mut tx = store.begin().unwrap();
        let mut pending = model.clone();
        for _ in 0..20 {
            let (a, b) = (random_key(&mut rng), random_key(&mut rng));
            let (lo, hi) = (a.clone().min(b.clone()), a.clone().max(b));
            match rng.random_range(0..6) {
                0 => {
                    let v = vec![rng.random::<u8>()];
                    tx.set(&a, &v).unwrap();
                    pending.insert(a, v);
                }
                1 => {
                    tx.clear(&a).unwrap();
                    pending.remove(&a);
                }
                2 => {
                    tx.clear_range(&lo, &hi).unwrap();
                    pending.retain(|k, _| !(&lo <= k && k < &hi));
                }
                3 => {
                    let delta = i64::from(rng.random::<i8>());
                    tx.atomic_add(&a, delta).unwrap();
                    let v = crate::kit::add_le(pending.get(&a).map(Vec::as_slice), delta);
                    pending.insert(a, v);
                }
                4 => assert_eq!(tx.get(&a).await.unwrap(), pending.get(&a).cloned()),
                _ => {
                    let limit = rng.random_range(1..5);
                    let reverse = rng.random::<bool>();
                    let mut request = RangeRequest::new(lo.clone(), hi.clone()).limit(limit);
                    request.reverse = reverse;
                    let got = tx.get_range(&request).await.unwrap();
                    assert_eq!(got, model_range(&pending, &lo, &hi, limit, reverse));
                }
            }
        }
        tx.commit().await.unwrap();
        model = pending;
        let mut check = store.begin().unwrap();
        let all = check
            .get_range(&RangeRequest::new(p.to_vec(), end_of(p)))
            .await
            .unwrap();
        assert_eq!(all, model_range(&model, p, &end_of(p), usize::MAX, false));
    }
}

/// `clear_range` removes [begin, end) and nothing else, sees its own later writes, and a set
/// after a clear in one transaction survives.
pub async fn clear_range_semantics<S: Store>(store: &S, p: &[u8]) {
    let mut tx = store.begin().unwrap();
    for s in ["a", "b", "c", "d"] {
        tx.set(&key(p, s), s.as_bytes()).unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = store.begin().unwrap();
    tx.clear_range(&key(p, "b"), &key(p, "d")).unwrap();
    assert_eq!(tx.get(&key(p, "b")).await.unwrap(), None);
    tx.set(&key(p, "c"), b"again").unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().unwrap();
    let got = tx
        .get_range(&RangeRequest::new(p.to_vec(), end_of(p)))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            kv(key(p, "a"), b"a"),
            kv(key(p, "c"), b"again"),
            kv(key(p, "d"), b"d"),
        ]
    );
}

/// Atomic add is a little-endian 64-bit add, treating absent as zero and wrapping on overflow.
pub async fn atomic_add_semantics<S: Store>(store: &S, p: &[u8]) {
    let mut tx = store.begin().unwrap();
    tx.atomic_add(&key(p, "n"), 41).unwrap();
    tx.set(&key(p, "max"), &i64::MAX.to_le_bytes()).unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().unwrap();
    tx.atomic_add(&key(p, "n"), 1).unwrap();
    tx.atomic_add(&key(p, "max"), 1).unwrap();
    tx.commit().await.unwrap();
    assert_eq!(i64_of(read(store, &key(p, "n")).await), 42);
    assert_eq!(i64_of(read(store, &key(p, "max")).await), i64::MIN);
}

/// Concurrent atomic adds to one key never conflict and none is lost.
pub async fn atomic_add_under_concurrency<S: Store>(store: &S, p: &[u8]) {
    let counter = key(p, "counter");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let mut tx = store.begin().unwrap();
                tx.atomic_add(&counter, 1).unwrap();
                tx.commit().await.expect("atomic adds never conflict");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(i64_of(read(store, &counter).await), 200);
}

/// Commits one after another get increasing versions. Commits running at once may share a
/// version (FoundationDB commits a batch of transactions at one version), never a
/// versionstamp: the versionstamp (the version, then the order within the batch) is unique
/// and its order is commit order. Every versionstamp carries its commit's version.
pub async fn commit_versionstamps_order_commits<S: Store>(store: &S, p: &[u8]) {
    let commit = |k: Vec<u8>| async move {
        let mut tx = store.begin().expect("begin");
        tx.set(&k, b"").expect("set");
        tx.commit().await.expect("commit")
    };
    let mut last = Versionstamp([0; 10]);
    for i in 0..20 {
        let info = commit(key(p, &format!("v{i}"))).await;
        assert!(
            info.version > last.version(),
            "version {} after {}",
            info.version,
            last.version()
        );
        assert!(info.versionstamp > last);
        assert_eq!(info.versionstamp.version(), info.version);
        last = info.versionstamp;
    }
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        let p = p.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut stamps = Vec::new();
            for i in 0..10 {
                let mut tx = store.begin().expect("begin");
                tx.set(&key(&p, &format!("c{t}-{i}")), b"").expect("set");
                let info = tx.commit().await.expect("commit");
                assert_eq!(info.versionstamp.version(), info.version);
                stamps.push(info.versionstamp);
            }
            stamps
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let stamps = t.await.unwrap();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
        all.extend(stamps);
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "two commits shared a versionstamp");
    assert!(all[0] > last);
}

/// Versionstamped keys take the commit's versionstamp and so sort in commit order: a queue.
pub async fn versionstamped_keys_order_by_commit<S: Store>(store: &S, p: &[u8]) {
    let queue = Subspace::from_bytes(key(p, "q"));
    let mut stamps = Vec::new();
    for i in 0..5u8 {
        let mut tx = store.begin().unwrap();
        let k = queue.pack_with_versionstamp(&(TupleVersionstamp::incomplete(0),));
        tx.set_versionstamped_key(&k, &[i]).unwrap();
        stamps.push(tx.commit().await.unwrap().versionstamp);
    }
    let mut tx = store.begin().unwrap();
    let (begin, end) = queue.range();
    let items = tx.get_range(&RangeRequest::new(begin, end)).await.unwrap();
    assert_eq!(
        items.iter().map(|kv| kv.value[0]).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    for (item, stamp) in items.iter().zip(&stamps) {
        let (vs,): (TupleVersionstamp,) = queue.unpack(&item.key).unwrap();
        assert_eq!(vs.transaction_version(), stamp.0.as_slice());
    }
}

/// A watch fires after a commit changes its key's value (set, then clear).
pub async fn watch_fires_on_change<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "w"), b"0").await;
    let mut tx = store.begin().unwrap();
    let watch = tx.watch(&key(p, "w")).unwrap();
    tx.commit().await.unwrap();
    put(store, &key(p, "w"), b"1").await;
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch fired")
        .expect("watch ok");
    let mut tx = store.begin().unwrap();
    let watch = tx.watch(&key(p, "w")).unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().unwrap();
    tx.clear(&key(p, "w")).unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch fired on clear")
        .expect("watch ok");
}

/// A watch does not fire for writes to other keys or for rewriting the same value.
pub async fn watch_ignores_non_changes<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "w"), b"same").await;
    let mut tx = store.begin().unwrap();
    let mut watch = tx.watch(&key(p, "w")).unwrap();
    tx.commit().await.unwrap();
    put(store, &key(p, "w"), b"same").await;
    put(store, &key(p, "w2"), b"other").await;
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut watch).await;
    assert!(waited.is_err(), "watch fired without a change");
    put(store, &key(p, "w"), b"different").await;
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch fired")
        .expect("watch ok");
}

/// A watch compares against the value its transaction could read (FoundationDB's rule), so a
/// "read, then watch" transaction cannot miss a change that commits between its read and its
/// commit; and a watch armed by a transaction that writes the key starts from that write.
pub async fn watch_baseline_is_what_the_transaction_read<S: Store>(store: &S, p: &[u8]) {
    put(store, &key(p, "w"), b"old").await;
    let mut reader = store.begin().unwrap();
    assert_eq!(
        reader.get_snapshot(&key(p, "w")).await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    put(store, &key(p, "w"), b"new").await;
    let watch = reader.watch(&key(p, "w")).unwrap();
    reader.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("a change after the read version fires the watch")
        .expect("watch ok");

    let mut writer = store.begin().unwrap();
    writer.set(&key(p, "w"), b"mine").unwrap();
    let mut watch = writer.watch(&key(p, "w")).unwrap();
    writer.commit().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut watch).await;
    assert!(
        waited.is_err(),
        "the transaction's own write fired its watch"
    );
    put(store, &key(p, "w"), b"theirs").await;
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("a later change fires the watch")
        .expect("watch ok");
}

/// A watch whose transaction is dropped (or fails) reports `WatchCancelled`.
pub async fn watch_cancelled_without_commit<S: Store>(store: &S, p: &[u8]) {
    let mut tx = store.begin().unwrap();
    let watch = tx.watch(&key(p, "w")).unwrap();
    drop(tx);
    let result = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("watch resolved");
    assert_eq!(result, Err(StoreError::WatchCancelled));
}

/// Keys up to the limit work; one byte more is refused on write and read, naming the limit.
pub async fn key_size_limit<S: Store>(store: &S, p: &[u8]) {
    let max = store.limits().key_bytes_max;
    let mut ok = key(p, "k");
    ok.resize(max, b'x');
    let mut too_long = ok.clone();
    too_long.push(b'x');
    let mut tx = store.begin().unwrap();
    tx.set(&ok, b"v").unwrap();
    let err = tx.set(&too_long, b"v").unwrap_err();
    assert_eq!(
        err,
        StoreError::KeyTooLarge {
            size: max + 1,
            limit: max
        }
    );
    assert!(err.to_string().contains("key_bytes_max"));
    assert!(matches!(
        tx.get(&too_long).await,
        Err(StoreError::KeyTooLarge { .. })
    ));
    tx.commit().await.unwrap();
    assert_eq!(read(store, &ok).await, Some(b"v".to_vec()));
}

/// Values up to the limit work; one byte more is refused, naming the limit.
pub async fn value_size_limit<S: Store>(store: &S, p: &[u8]) {
    let max = store.limits().value_bytes_max;
    let mut tx = store.begin().unwrap();
    tx.set(&key(p, "v"), &vec![7; max]).unwrap();
    let err = tx.set(&key(p, "w"), &vec![7; max + 1]).unwrap_err();
    assert_eq!(
        err,
        StoreError::ValueTooLarge {
            size: max + 1,
            limit: max
        }
    );
    assert!(err.to_string().contains("value_bytes_max"));
    tx.commit().await.unwrap();
    assert_eq!(read(store, &key(p, "v")).await.map(|v| v.len()), Some(max));
    assert_eq!(read(store, &key(p, "w")).await, None);
}

/// A transaction over the size limit is refused at commit and writes nothing.
pub async fn transaction_size_limit<S: Store>(store: &S, p: &[u8]) {
    let limits = store.limits();
    let value = vec![1u8; limits.value_bytes_max];
    let count = limits.transaction_bytes_max / limits.value_bytes_max + 1;
    let mut tx = store.begin().unwrap();
    for i in 0..count {
        tx.set(&key(p, &format!("big{i:04}")), &value).unwrap();
    }
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(err, StoreError::TransactionTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(read(store, &key(p, "big0000")).await, None);
}

/// A transaction older than the age limit is refused on its next read and at commit: a read
/// of a key it wrote itself too (FoundationDB would answer that one from the transaction's
/// own writes, and the others only once the read version leaves its storage servers' window,
/// some time after 5 s; the backend enforces the limit itself).
pub async fn transaction_age_limit<S: Store>(store: &S, p: &[u8]) {
    let age = store.limits().transaction_age_max;
    let mut tx = store.begin().unwrap();
    tx.get(&key(p, "a")).await.unwrap();
    tx.set(&key(p, "a"), b"late").unwrap();
    tokio::time::sleep(age + Duration::from_millis(200)).await;
    for read in ["a", "b"] {
        let err = tx.get(&key(p, read)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::TransactionTooOld { .. }),
            "a read of {read:?}: {err:?}"
        );
    }
    let err = tx
        .get_range(&RangeRequest::new(key(p, "a"), key(p, "z")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TransactionTooOld { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(err, StoreError::TransactionTooOld { .. }),
        "{err:?}"
    );
    assert_eq!(read(store, &key(p, "a")).await, None);
}

/// Keys in FoundationDB's system keyspace (0xFF...) are refused for reads and writes.
pub async fn system_keyspace_refused<S: Store>(store: &S, _p: &[u8]) {
    let mut tx = store.begin().unwrap();
    assert_eq!(
        tx.set(b"\xffsystem", b"x"),
        Err(StoreError::KeyOutsideLegalRange)
    );
    assert_eq!(
        tx.get(b"\xffsystem").await,
        Err(StoreError::KeyOutsideLegalRange)
    );
    assert_eq!(
        tx.get_range(&RangeRequest::new(b"a".to_vec(), b"\xff\xff".to_vec()))
            .await,
        Err(StoreError::KeyOutsideLegalRange)
    );
}

/// Malformed requests get specific errors, and the transaction stays usable: what it did
/// correctly still commits.
pub async fn malformed_requests_refused<S: Store>(store: &S, p: &[u8]) {
    let mut tx = store.begin().unwrap();
    tx.set(&key(p, "good"), b"1").unwrap();
    assert_eq!(
        tx.clear_range(&key(p, "z"), &key(p, "a")),
        Err(StoreError::InvalidRange)
    );
    assert_eq!(
        tx.set_versionstamped_key(&key(p, "q"), b"x"),
        Err(StoreError::InvalidVersionstampOffset)
    );
    let mut bad_offset = key(p, "queue-item");
    bad_offset.extend_from_slice(&(bad_offset.len() as u32).to_le_bytes());
    assert_eq!(
        tx.set_versionstamped_key(&bad_offset, b"x"),
        Err(StoreError::InvalidVersionstampOffset)
    );
    tx.commit().await.unwrap();
    assert_eq!(read(store, &key(p, "good")).await, Some(b"1".to_vec()));
}

/// `transact` retries a body that conflicted and returns the successful attempt's result.
pub async fn transact_retries_conflicts<S: Store>(store: &S, p: &[u8]) {
    let counter = key(p, "c");
    put(store, &counter, &0i64.to_le_bytes()).await;
    let (value, attempts) = transact(store, &TransactOptions::default(), |tx, attempt| {
        let counter = counter.clone();
        let store = store.clone();
        Box::pin(async move {
            let current = i64_of(tx.get(&counter).await?);
            if attempt.number == 1 {
                // Someone else commits between our read and our commit.
                let mut meddler = store.begin()?;
                meddler.atomic_add(&counter, 1)?;
                meddler.commit().await?;
            }
            tx.set(&counter, &(current + 1).to_le_bytes())?;
            Ok::<_, StoreError>((current + 1, attempt.number))
        })
    })
    .await
    .unwrap();
    assert_eq!((value, attempts), (2, 2));
    assert_eq!(i64_of(read(store, &counter).await), 2);
}

/// Read-modify-write increments from several tasks through `transact` lose nothing.
pub async fn transact_concurrent_increments<S: Store>(store: &S, p: &[u8]) {
    let counter = key(p, "c");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                transact(&store, &TransactOptions::default(), |tx, _| {
                    let counter = counter.clone();
                    Box::pin(async move {
                        let current = tx.get(&counter).await?.map_or(0, |v| i64_of(Some(v)));
                        tx.set(&counter, &(current + 1).to_le_bytes())?;
                        Ok::<_, StoreError>(())
                    })
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(i64_of(read(store, &counter).await), 60);
}

/// Under injected `MaybeCommitted` (applied and lost), `transact` retries and an idempotent
/// body (it checks a marker it writes) applies each operation exactly once.
pub async fn transact_maybe_committed_idempotent<S: Store>(store: &S, p: &[u8]) {
    let faulty = FaultStore::new(
        store.clone(),
        FaultConfig {
            maybe_committed_applied_probability: 0.35,
            maybe_committed_lost_probability: 0.35,
            ..FaultConfig::none(0x5eed)
        },
    );
    let counter = key(p, "count");
    let mut saw_flag = 0;
    for op in 0..40 {
        let marker = key(p, &format!("done/{op}"));
        let flagged = transact(&faulty, &TransactOptions::default(), |tx, attempt| {
            let (marker, counter) = (marker.clone(), counter.clone());
            Box::pin(async move {
                if tx.get(&marker).await?.is_some() {
                    return Ok::<_, StoreError>(attempt.maybe_committed);
                }
                tx.atomic_add(&counter, 1)?;
                tx.set(&marker, b"")?;
                Ok(attempt.maybe_committed)
            })
        })
        .await
        .unwrap();
        saw_flag += usize::from(flagged);
    }
    assert_eq!(i64_of(read(store, &counter).await), 40);
    let stats = faulty.stats();
    assert!(
        stats
            .maybe_committed_applied
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        stats
            .maybe_committed_lost
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        saw_flag > 0,
        "the body was never told of a maybe-committed attempt"
    );
}

/// Runs a blind write through `transact` on a wrapper of `store` that fails every commit with
/// `Conflict`, returning the error `transact` gives up with.
async fn transact_against_endless_conflicts<S: Store>(
    store: &S,
    k: &[u8],
    options: &TransactOptions,
) -> StoreError {
    let always = FaultStore::new(
        store.clone(),
        FaultConfig {
            conflict_probability: 1.0,
            ..FaultConfig::none(1)
        },
    );
    transact(&always, options, |tx, _| {
        let k = k.to_vec();
        Box::pin(async move {
            tx.set(&k, b"x")?;
            Ok::<_, StoreError>(())
        })
    })
    .await
    .unwrap_err()
}

/// `transact` stops after `attempts_max` attempts with an error naming the count and cause.
pub async fn transact_retry_limit<S: Store>(store: &S, p: &[u8]) {
    let options = TransactOptions {
        attempts_max: 5,
        ..TransactOptions::default()
    };
    let err = transact_against_endless_conflicts(store, &key(p, "never"), &options).await;
    assert!(
        matches!(err, StoreError::RetryLimitReached { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("conflicted"));
    assert_eq!(read(store, &key(p, "never")).await, None);
}

/// `transact` stops once its time budget is spent.
pub async fn transact_timeout<S: Store>(store: &S, p: &[u8]) {
    let options = TransactOptions {
        attempts_max: u32::MAX,
        timeout: Duration::from_millis(100),
        ..TransactOptions::default()
    };
    let err = transact_against_endless_conflicts(store, &key(p, "never"), &options).await;
    assert!(matches!(err, StoreError::RetryTimeout { .. }), "{err:?}");
}

/// Instantiates every spec of the suite as a `#[tokio::test]` in the calling module.
///
/// `$factory` is an expression (evaluated once per spec) of type
/// `impl Future<Output = Option<(S, G)>>`; `None` skips with the reason printed by the factory.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests!($factory;
            read_your_writes, snapshot_isolation, read_write_conflict, get_many_reads_like_get,
            read_modify_write_conflict, blind_writes_do_not_conflict,
            disjoint_transactions_commit, range_read_conflicts_with_insert,
            snapshot_reads_add_no_conflict, range_reads_bounds_limits_directions,
            range_reads_merge_own_writes, randomized_reads_match_model, clear_range_semantics,
            atomic_add_semantics,
            atomic_add_under_concurrency, commit_versionstamps_order_commits,
            versionstamped_keys_order_by_commit, watch_fires_on_change,
            watch_ignores_non_changes, watch_cancelled_without_commit,
            watch_baseline_is_what_the_transaction_read, read_only_transactions_never_conflict,
            key_size_limit,
            value_size_limit, transaction_size_limit, transaction_age_limit,
            system_keyspace_refused, malformed_requests_refused, transact_retries_conflicts,
            transact_concurrent_increments, transact_maybe_committed_idempotent,
            transact_retry_limit, transact_timeout
        );

    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $($spec:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $spec() {
                let Some((store, _guard)) = $factory.await else { return };
                let prefix = format!("conformance/{}/", stringify!($spec)).into_bytes();
                $crate::conformance::reset(&store, &prefix).await;
                $crate::conformance::$spec(&store, &prefix).await;
            }
        )*

        /// Proves the instantiated list and `cairn_store::conformance::SPECS` agree, so no
        /// spec is silently left out of a backend's run, and reports the count per backend.
        #[tokio::test]
        async fn conformance_spec_list_is_complete() {
            use ::std::io::Write as _;
            let listed: &[&str] = &[$(stringify!($spec)),*];
            assert_eq!(listed, $crate::conformance::SPECS);
            let backend = match $factory.await {
                Some((store, _guard)) => $crate::Store::backend_name(&store),
                None => "none (skipped)",
            };
            // Written to the process's stderr directly, past the test harness's capture, so
            // the count shows in every CI log.
            let _ = writeln!(
                ::std::io::stderr(),
                "conformance suite: {} specs on backend {backend} ({})",
                listed.len(),
                module_path!()
            );
        }
    };
}
