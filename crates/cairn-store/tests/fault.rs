//! The fault-injecting wrapper does what it says: each fault has its documented effect on the
//! store, and a seed replays the same faults.

use cairn_store::{FaultConfig, FaultStore, MemStore, Store, StoreError, Transaction};
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn commit_one<S: Store>(store: &S, key: &[u8]) -> Result<(), StoreError> {
    let mut tx = store.begin()?;
    tx.set(key, b"v")?;
    tx.commit().await.map(|_| ())
}

async fn present(store: &MemStore, key: &[u8]) -> bool {
    store.begin().unwrap().get(key).await.unwrap().is_some()
}

/// Proves "applied" MaybeCommitted writes the data and "lost" MaybeCommitted does not, while
/// both report the same error to the caller.
#[tokio::test]
async fn maybe_committed_variants_differ_only_in_the_store() {
    let mem = MemStore::new();
    let applied = FaultStore::new(
        mem.clone(),
        FaultConfig {
            maybe_committed_applied_probability: 1.0,
            ..FaultConfig::none(1)
        },
    );
    let lost = FaultStore::new(
        mem.clone(),
        FaultConfig {
            maybe_committed_lost_probability: 1.0,
            ..FaultConfig::none(1)
        },
    );
    assert_eq!(
        commit_one(&applied, b"a").await,
        Err(StoreError::MaybeCommitted)
    );
    assert_eq!(
        commit_one(&lost, b"b").await,
        Err(StoreError::MaybeCommitted)
    );
    assert!(present(&mem, b"a").await);
    assert!(!present(&mem, b"b").await);
    assert_eq!(
        applied
            .stats()
            .maybe_committed_applied
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(lost.stats().maybe_committed_lost.load(Ordering::Relaxed), 1);
}

/// Proves the same seed yields the same fault sequence, and a disabled wrapper is transparent.
#[tokio::test]
async fn seeds_replay_and_disabling_stops_faults() {
    async fn outcomes(seed: u64) -> Vec<bool> {
        let store = FaultStore::new(MemStore::new(), FaultConfig::chaos(seed));
        let mut out = Vec::new();
        for i in 0..200u32 {
            out.push(commit_one(&store, &i.to_be_bytes()).await.is_ok());
        }
        out
    }
    let first = outcomes(42).await;
    assert_eq!(first, outcomes(42).await);
    assert_ne!(first, outcomes(43).await);
    let failures = first.iter().filter(|ok| !**ok).count();
    assert!(
        (20..=60).contains(&failures),
        "chaos injected {failures} of 200"
    );

    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            conflict_probability: 1.0,
            ..FaultConfig::none(9)
        },
    );
    store.set_enabled(false);
    for i in 0..20u8 {
        commit_one(&store, &[i]).await.unwrap();
    }
    assert_eq!(store.stats().faults(), 0);
}

/// Proves latency is injected on reads and commits when configured.
#[tokio::test]
async fn latency_is_injected() {
    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            latency: Some((Duration::from_millis(1), Duration::from_millis(2))),
            ..FaultConfig::none(5)
        },
    );
    let started = std::time::Instant::now();
    let mut tx = store.begin().unwrap();
    tx.get(b"k").await.unwrap();
    tx.set(b"k", b"v").unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.stats().delays.load(Ordering::Relaxed), 2);
    assert!(started.elapsed() >= Duration::from_millis(2));
}

/// Proves a paused wrapper stalls reads and commits until resumed, while the same store
/// through another wrapper goes on (one node paused, the others not).
#[tokio::test]
async fn pause_stalls_one_wrapper_until_resumed() {
    let mem = MemStore::new();
    let paused = FaultStore::new(mem.clone(), FaultConfig::none(3));
    let other = FaultStore::new(mem.clone(), FaultConfig::none(4));
    paused.pause();
    let stalled = tokio::spawn({
        let paused = paused.clone();
        async move { commit_one(&paused, b"late").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stalled.is_finished(), "a paused commit went through");
    commit_one(&other, b"meanwhile").await.unwrap();
    assert!(present(&mem, b"meanwhile").await);
    assert!(!present(&mem, b"late").await);
    paused.resume();
    tokio::time::timeout(Duration::from_secs(5), stalled)
        .await
        .expect("resumed")
        .unwrap()
        .unwrap();
    assert!(present(&mem, b"late").await);
}

/// Proves an armed stall delays exactly the next transactions that read twice, before their
/// second read, and counts them.
#[tokio::test(start_paused = true)]
async fn stalls_delay_the_second_read_of_the_next_transactions() {
    let store = FaultStore::new(MemStore::new(), FaultConfig::none(3));
    store.stall_transactions(1, Duration::from_secs(2));
    // One read only: not stalled, and the stall stays armed.
    let began = tokio::time::Instant::now();
    store.begin().unwrap().get(b"a").await.unwrap();
    assert_eq!(began.elapsed(), Duration::ZERO);
    let mut tx = store.begin().unwrap();
    tx.get(b"a").await.unwrap();
    assert_eq!(began.elapsed(), Duration::ZERO);
    tx.get(b"b").await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    // Used up: the next transaction that reads twice runs at once.
    let mut tx = store.begin().unwrap();
    tx.get(b"a").await.unwrap();
    tx.get(b"b").await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert_eq!(
        store.stats().transactions_stalled.load(Ordering::Relaxed),
        1
    );
}
