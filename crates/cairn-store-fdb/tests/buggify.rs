//! FoundationDB's client buggify (`ClientBuggifyEnable`): the client library fails requests at
//! random, `commit_unknown_result` among them, for commits that landed and for commits that
//! did not. First the store is shown to meet both kinds for real; then the engine runs
//! workflows through them: every workflow completes, with a gap-free history and each activity
//! completed once, and no attempt is recorded twice.
//!
//! One process, one network: both tests connect with the same [`BUGGIFY`]. Needs the `fdb`
//! feature and `FDB_CLUSTER_FILE`; without the variable it prints why it skipped and returns
//! (`scripts/test.sh` sets it, and CI fails without FoundationDB).
#![cfg(feature = "fdb")]

mod common;

use cairn::{Node, NodeConfig};
use cairn_store::{FaultConfig, FaultStore, Store, StoreError, Transaction};
use cairn_store_fdb::{CLUSTER_FILE_ENV, ClientBuggify, FdbStore};
use common::{all_executions, check_three_steps, start_three_steps, step, tag, three_steps};
use std::collections::BTreeMap;

/// Every client buggify section active, each firing on 5% of its passes.
const BUGGIFY: ClientBuggify = ClientBuggify {
    activated_percent: 100,
    fired_percent: 5,
};

fn connect() -> Option<FdbStore> {
    let Ok(cluster_file) = std::env::var(CLUSTER_FILE_ENV) else {
        println!("skipped: {CLUSTER_FILE_ENV} not set");
        return None;
    };
    Some(
        FdbStore::connect_with_client_buggify(Some(&cluster_file), BUGGIFY)
            .expect("connect to FoundationDB with client buggify"),
    )
}

/// Commits this many single writes, each of its own key.
const PROBE_COMMITS: usize = 1_000;

/// Proves client buggify reaches the store as `MaybeCommitted`, and that both kinds occur:
/// some of those commits landed, some did not (read back by key afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_buggify_reports_commits_of_both_outcomes_as_unknown() {
    let Some(store) = connect() else { return };
    let prefix = format!("buggify-probe-{}-", tag());
    let mut unknown = Vec::new();
    let mut other_errors = BTreeMap::<String, u32>::new();
    for i in 0..PROBE_COMMITS {
        let key = format!("{prefix}{i:04}").into_bytes();
        let outcome = async {
            let mut tx = store.begin()?;
            tx.set(&key, b"x")?;
            tx.commit().await
        }
        .await;
        match outcome {
            Ok(_) => {}
            Err(StoreError::MaybeCommitted) => unknown.push(key),
            Err(e) => *other_errors.entry(format!("{e}")).or_default() += 1,
        }
    }
    let mut landed = 0;
    for key in &unknown {
        // Reads may be buggified too: retry each until it answers.
        let value = loop {
            let read = async {
                let mut tx = store.begin()?;
                tx.get(key).await
            }
            .await;
            if let Ok(value) = read {
                break value;
            }
        };
        landed += usize::from(value.is_some());
    }
    println!(
        "{PROBE_COMMITS} commits under client buggify: {} reported unknown ({landed} of them landed), other errors {other_errors:?}",
        unknown.len()
    );
    assert!(
        landed > 0 && landed < unknown.len(),
        "both kinds of unknown outcome must occur: {landed} of {} landed",
        unknown.len()
    );
}

/// Workflows the engine test runs, in waves (small waves make small commit batches: more
/// commits, so more of them meet a fault).
const WORKFLOWS: u64 = 100;
const WAVE: usize = 10;

/// Proves the engine through FoundationDB's own unknown commit results (and its buggified
/// conflicts and too-old transactions): every workflow completes with its result, a gap-free
/// history and each of its activities completed exactly once in it, and the store did answer
/// `MaybeCommitted` meanwhile (else the test proved nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_complete_exactly_once_through_unknown_commit_results() {
    let Some(fdb) = connect() else { return };
    // A transparent wrapper, to count the store's own `MaybeCommitted` answers.
    let store = FaultStore::new(fdb, FaultConfig::none(1));
    let tag = tag();
    let node = Node::builder()
        .workflow(three_steps)
        .activity(step)
        .config(NodeConfig {
            node_id: format!("fdb-buggify-{tag}"),
            ..NodeConfig::default()
        })
        .start(store.clone())
        .await
        .expect("a node starts on FoundationDB under client buggify");
    let ids: Vec<(String, u64)> = (0..WORKFLOWS)
        .map(|i| (format!("fdb-buggify-{tag}-{i}"), i * 100))
        .collect();
    for wave in ids.chunks(WAVE) {
        for (id, n) in wave {
            // A start may itself be answered "unknown": asking again with the same id is safe
            // (the first start's run, if it landed, answers it).
            start_three_steps(&node.client(), id, *n).await;
        }
        for (id, n) in wave {
            check_three_steps(&node, id, *n).await;
        }
    }
    let unknown = store
        .stats()
        .backend_maybe_committed
        .load(std::sync::atomic::Ordering::Relaxed);
    let executions = all_executions();
    let again = executions.values().filter(|n| **n > 1).count();
    println!(
        "{WORKFLOWS} workflows completed through {unknown} unknown commit results; {} activity executions, {again} activities executed more than once (at-least-once: a retry after a lost attempt)",
        executions.values().sum::<u32>()
    );
    assert!(
        unknown > 0,
        "FoundationDB answered no commit `MaybeCommitted`: it tested nothing"
    );
    node.shutdown().await;
}
