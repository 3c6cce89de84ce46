//! The engine on FoundationDB: a node crashes while its workflows run and restarts under its
//! id on the same cluster; every workflow completes with a gap-free history, each activity
//! completed once, and no activity whose completion was recorded before the crash runs again.
//! The embedded store's crash test (`crates/cairn/tests/recovery.rs`), on a real cluster.
//!
//! Needs the `fdb` feature and `FDB_CLUSTER_FILE`; without the variable it prints why it
//! skipped and returns (`scripts/test.sh` sets it, and CI fails without FoundationDB).
#![cfg(feature = "fdb")]

mod common;

use cairn::{Node, NodeConfig};
use cairn_store_fdb::{CLUSTER_FILE_ENV, FdbStore};
use common::{executions, step, tag, three_steps};
use std::collections::BTreeMap;
use std::time::Duration;

fn config(node_id: &str) -> NodeConfig {
    NodeConfig {
        node_id: node_id.into(),
        lease_timeout_ms: 2_000,
        ..NodeConfig::default()
    }
}

async fn start(store: &FdbStore, node_id: &str) -> Node<FdbStore> {
    Node::builder()
        .workflow(three_steps)
        .activity(step)
        .config(config(node_id))
        .start(store.clone())
        .await
        .expect("a node starts on FoundationDB")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_a_node_crash_on_foundationdb() {
    let Ok(cluster_file) = std::env::var(CLUSTER_FILE_ENV) else {
        println!("skipped: {CLUSTER_FILE_ENV} not set");
        return;
    };
    let store = FdbStore::connect(Some(&cluster_file)).expect("connect to FoundationDB");
    // Ids of their own, so the test can run again on the same cluster.
    let tag = tag();
    let node_id = format!("fdb-engine-{tag}");
    let node = start(&store, &node_id).await;
    let ids: Vec<(String, u64)> = (0..30u64)
        .map(|i| (format!("fdb-crash-{tag}-{i}"), i * 100))
        .collect();
    for (id, n) in &ids {
        node.client()
            .start(three_steps, id, *n)
            .send()
            .await
            .unwrap();
    }
    // Each workflow takes 90 ms or more of activity time: the crash lands mid-run.
    tokio::time::sleep(Duration::from_millis(40)).await;
    node.crash();
    // What history recorded as completed at the crash, read by a node of another id (the
    // crashed node's leases are live in its eyes: it takes no shard and runs nothing).
    let reader = start(&store, &format!("{node_id}-reader")).await;
    let mut recorded = Vec::new();
    for (id, _) in &ids {
        let Ok(history) = reader.client().handle::<u64>(id).unwrap().history().await else {
            continue;
        };
        for event in history {
            if let cairn_types::EventKind::ActivityTaskCompleted { seq, .. } = event.kind {
                recorded.push(format!("{id}/{seq}"));
            }
        }
    }
    reader.shutdown().await;
    assert!(
        recorded.len() < 3 * ids.len(),
        "the crash came after every activity was recorded: it tested nothing"
    );
    println!(
        "{} of {} activities recorded as completed at the crash",
        recorded.len(),
        3 * ids.len()
    );
    let at_crash: BTreeMap<String, u32> = recorded
        .iter()
        .map(|k| (k.clone(), executions(k)))
        .collect();
    let node = start(&store, &node_id).await;
    for (id, n) in &ids {
        let handle = node.client().handle::<u64>(id).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(60), handle.result())
            .await
            .unwrap_or_else(|_| panic!("{id} did not complete within 60 s of the restart"))
            .unwrap();
        assert_eq!(result, n + 3, "{id}");
        let history = handle.history().await.unwrap();
        for (position, event) in history.iter().enumerate() {
            assert_eq!(
                event.event_id,
                position as u64 + 1,
                "{id}: gap-free history"
            );
        }
        let completions = history
            .iter()
            .filter(|e| matches!(e.kind, cairn_types::EventKind::ActivityTaskCompleted { .. }))
            .count();
        assert_eq!(completions, 3, "{id}: each activity completed once");
    }
    for (key, runs) in at_crash {
        assert_eq!(
            executions(&key),
            runs,
            "{key} was recorded before the crash but ran again"
        );
    }
    node.shutdown().await;
}
