//! FoundationDB's own `transaction_too_old`, met for real: reads whose transaction outlived the
//! cluster's MVCC window. The cluster runs with a short window
//! (`max_read_transaction_life_versions`, one second where FoundationDB's default is five), so
//! FoundationDB refuses an old read before the backend's own five-second limit could: the error
//! is FoundationDB's. First the store is shown to answer it as a retryable `TransactionTooOld`
//! that writes nothing; then the engine runs workflows while some of its transactions stall
//! past the window between two reads: every workflow completes with its result, a gap-free
//! history and each activity completed once, and FoundationDB did refuse transactions
//! meanwhile.
//!
//! Needs the `fdb` feature, `FDB_CLUSTER_FILE` and [`WINDOW_ENV`] naming the window the cluster
//! was started with (`scripts/test.sh` starts such a cluster and sets both; CI fails without
//! FoundationDB). Without them each test prints why it skipped and returns.
#![cfg(feature = "fdb")]

mod common;

use cairn::{Node, NodeConfig};
use cairn_store::{FaultConfig, FaultStore, Store, StoreError, Transaction};
use cairn_store_fdb::{CLUSTER_FILE_ENV, FdbStore};
use common::{check_three_steps, start_three_steps, step, tag, three_steps};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The MVCC window of the cluster under test, in milliseconds (its
/// `max_read_transaction_life_versions` over FoundationDB's million versions a second).
const WINDOW_ENV: &str = "CAIRN_FDB_READ_WINDOW_MS";

/// The store and its window, if the test is configured.
fn connect() -> Option<(FdbStore, Duration)> {
    let (Ok(cluster_file), Ok(window)) =
        (std::env::var(CLUSTER_FILE_ENV), std::env::var(WINDOW_ENV))
    else {
        println!(
            "skipped: {CLUSTER_FILE_ENV} and {WINDOW_ENV} (a cluster with a short read window) not both set"
        );
        return None;
    };
    let window = Duration::from_millis(window.parse().expect("a window in milliseconds"));
    assert!(
        window + Duration::from_secs(1) < cairn_store::TRANSACTION_AGE_MAX,
        "the window must be shorter than the backend's own limit, or the error is not FoundationDB's"
    );
    let store = FdbStore::connect(Some(&cluster_file)).expect("connect to FoundationDB");
    Some((store, window))
}

/// Proves a read past the window fails with a retryable `TransactionTooOld` well before the
/// backend's own age limit (so it is FoundationDB's), and a transaction that met it writes
/// nothing when committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_the_window_is_refused_by_foundationdb() {
    let Some((store, window)) = connect() else {
        return;
    };
    let key = format!("long-read-{}", tag()).into_bytes();
    let mut tx = store.begin().unwrap();
    tx.set(&key, b"old").unwrap();
    tx.commit().await.unwrap();

    let began = Instant::now();
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.get(&key).await.unwrap().as_deref(), Some(&b"old"[..]));
    tx.set(&key, b"from a stale transaction").unwrap();
    tokio::time::sleep(window + Duration::from_millis(1_500)).await;
    let mut other = key.clone();
    other.push(b'!');
    let refused = tx.get(&other).await;
    let age = began.elapsed();
    assert!(
        matches!(refused, Err(StoreError::TransactionTooOld { .. })),
        "a read {age:?} into the transaction answered {refused:?}"
    );
    assert!(refused.unwrap_err().is_retryable());
    assert!(
        age < cairn_store::TRANSACTION_AGE_MAX,
        "refused at {age:?}: the backend's own limit, not FoundationDB's"
    );
    assert!(tx.commit().await.is_err(), "a stale transaction committed");
    let mut tx = store.begin().unwrap();
    assert_eq!(tx.get(&key).await.unwrap().as_deref(), Some(&b"old"[..]));
}

/// Rounds of the engine test: each arms stalls past the window for the next few transactions
/// that read twice, and starts workflows meanwhile (so commits, loads and scans are in flight).
const ROUNDS: u32 = 4;
const STALLS_PER_ROUND: u32 = 3;
const WORKFLOWS_PER_ROUND: u64 = 20;
const START_EVERY_MS: u64 = 50;

/// Proves the engine through FoundationDB's own `transaction_too_old`: while workflows keep
/// starting, transactions of the engine (the committer's reads ahead, the actors' loads, the
/// shard's scans, the client's reads) stall past the window between their first and second
/// read, so FoundationDB refuses them; every workflow completes exactly once all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_complete_exactly_once_through_reads_past_the_window() {
    let Some((fdb, window)) = connect() else {
        return;
    };
    // Stalls transactions before their second read; counts FoundationDB's refusals.
    let store = FaultStore::new(fdb, FaultConfig::none(2));
    let tag = tag();
    let node = Node::builder()
        .workflow(three_steps)
        .activity(step)
        .config(NodeConfig {
            node_id: format!("fdb-long-reads-{tag}"),
            // Longer than any stall, so the node keeps its shards through them.
            lease_timeout_ms: 30_000,
            ..NodeConfig::default()
        })
        .start(store.clone())
        .await
        .expect("a node starts on FoundationDB");
    let mut ids = Vec::new();
    for _ in 0..ROUNDS {
        store.stall_transactions(STALLS_PER_ROUND, window + Duration::from_millis(500));
        for _ in 0..WORKFLOWS_PER_ROUND {
            let (id, n) = (
                format!("fdb-long-reads-{tag}-{}", ids.len()),
                ids.len() as u64 * 100,
            );
            let started = tokio::spawn({
                let (client, id) = (node.client(), id.clone());
                async move { start_three_steps(&client, &id, n).await }
            });
            ids.push((id, n, started));
            tokio::time::sleep(Duration::from_millis(START_EVERY_MS)).await;
        }
    }
    let ids: Vec<(String, u64)> = {
        let mut done = Vec::new();
        for (id, n, started) in ids {
            started.await.unwrap();
            done.push((id, n));
        }
        done
    };
    for (id, n) in &ids {
        check_three_steps(&node, id, *n).await;
    }
    let stats = store.stats();
    let too_old = stats.backend_transaction_too_old.load(Ordering::Relaxed);
    let stalled = stats.transactions_stalled.load(Ordering::Relaxed);
    println!(
        "{} workflows completed; {stalled} transactions stalled {:?} before their second read; FoundationDB refused {too_old} reads or commits as too old",
        ids.len(),
        window + Duration::from_millis(500)
    );
    assert!(
        too_old > 0,
        "FoundationDB refused nothing as too old: the test proved nothing"
    );
    node.shutdown().await;
}
