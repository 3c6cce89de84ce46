//! Watches at FoundationDB's scale: a node's store watches are one per shard it holds (the
//! doorbell) plus at most `result_watches_max` for result waiters of runs another node holds,
//! never one per workflow. FoundationDB refuses a client's watches past 10,000
//! (`too_many_watches`); here more workflows than that are open and awaited at once, from a
//! second node, and every waiter gets its result while the watches each node holds stay within
//! that bound.
//!
//! Needs the `fdb` feature and `FDB_CLUSTER_FILE`; without the variable it prints why it skipped
//! and returns (`scripts/test.sh` sets it, and CI fails without FoundationDB).
//! `CAIRN_WATCH_TEST_WORKFLOWS` sets how many workflows (default [`WORKFLOWS`]).
#![cfg(feature = "fdb")]

mod common;

use cairn::{Ctx, InProcessPeers, Node, NodeConfig, PeersHandle, Signal, WorkflowError};
use cairn_store::{FaultConfig, FaultStore, Store};
use cairn_store_fdb::{CLUSTER_FILE_ENV, FdbStore};
use common::tag;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Open workflows by default: past FoundationDB's 10,000 watches per client.
const WORKFLOWS: usize = 12_000;
/// Calls in flight at once while starting and signalling them.
const IN_FLIGHT: usize = 400;
const SHARDS: u32 = 16;

const GO: Signal<u64> = Signal::new("go");

/// Waits for `go`, then returns what it was given.
async fn waits_for_go(ctx: Ctx, _: ()) -> Result<u64, WorkflowError> {
    Ok(ctx.signal_receiver(&GO).recv().await)
}

async fn start_node<S: Store>(store: S, name: &str, peers: &Arc<InProcessPeers>) -> Node<S> {
    Node::builder()
        .workflow(waits_for_go)
        .config(NodeConfig {
            node_id: name.to_string(),
            shard_count: SHARDS,
            advertise_address: Some(format!("inproc://{name}")),
            peers: Some(PeersHandle(peers.clone())),
            ..NodeConfig::default()
        })
        .start(store)
        .await
        .expect("a node starts on FoundationDB")
}

/// Runs `call(i)` for every i below `n`, at most [`IN_FLIGHT`] at once.
async fn all<F, Fut>(n: usize, call: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for i in 0..n {
        if running.len() >= IN_FLIGHT {
            running.join_next().await.unwrap().unwrap();
        }
        running.spawn(call(i));
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
}

/// Proves the watches stay bounded: more workflows than FoundationDB allows watches are open
/// and each awaited by a result waiter on the other node; each node's open watches stay within
/// its shards plus `result_watches_max`, and every waiter gets its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stay_bounded_past_foundationdbs_limit() {
    let Ok(cluster_file) = std::env::var(CLUSTER_FILE_ENV) else {
        println!("skipped: {CLUSTER_FILE_ENV} not set");
        return;
    };
    let workflows: usize = std::env::var("CAIRN_WATCH_TEST_WORKFLOWS")
        .map(|n| n.parse().expect("a number of workflows"))
        .unwrap_or(WORKFLOWS);
    let fdb = FdbStore::connect(Some(&cluster_file)).expect("connect to FoundationDB");
    let (store_a, store_b) = (
        FaultStore::new(fdb.clone(), FaultConfig::none(1)),
        FaultStore::new(fdb, FaultConfig::none(2)),
    );
    let peers = Arc::new(InProcessPeers::default());
    let tag = tag();
    let a = start_node(store_a.clone(), &format!("watch-a-{tag}"), &peers).await;
    let b = start_node(store_b.clone(), &format!("watch-b-{tag}"), &peers).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.held_shards().len() + b.held_shards().len() < SHARDS as usize
        || a.held_shards().is_empty()
        || b.held_shards().is_empty()
    {
        assert!(Instant::now() < deadline, "the shards never spread");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = move |i: usize| format!("watched-{tag}-{i}");
    let began = Instant::now();
    all(workflows, |i| {
        let client = a.client();
        async move {
            client.start(waits_for_go, &id(i), ()).send().await.unwrap();
        }
    })
    .await;
    let started_in = began.elapsed();
    // Every workflow awaited from node b: in memory for the runs b holds, through a store
    // watch (up to the bound) or a poll for the runs a holds.
    let mut waiters = tokio::task::JoinSet::new();
    for i in 0..workflows {
        let handle = b.client().handle::<u64>(&id(i)).unwrap();
        waiters.spawn(async move { (i, handle.result().await) });
    }
    let bound = b.runtime().config().result_watches_max;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (b.metrics().result_watches.load(Ordering::Relaxed) as usize) < bound {
        assert!(
            Instant::now() < deadline,
            "result waiters never took their watches"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all(workflows, |i| {
        let client = a.client();
        async move {
            let handle = client.handle::<u64>(&id(i)).unwrap();
            handle.signal(&GO, i as u64).await.unwrap();
        }
    })
    .await;
    let deadline = Duration::from_secs(300);
    while let Some(done) = tokio::time::timeout(deadline, waiters.join_next())
        .await
        .expect("every waiter gets its result")
    {
        let (i, result) = done.unwrap();
        assert_eq!(result.unwrap(), i as u64, "{}", id(i));
    }
    let (open_a, open_b) = (
        store_a.stats().watches_open_max.load(Ordering::Relaxed),
        store_b.stats().watches_open_max.load(Ordering::Relaxed),
    );
    println!(
        "{workflows} open workflows (started in {started_in:?}) awaited from the other node: at most {open_a} watches open on node a, {open_b} on node b (bound: {SHARDS} shards + {bound} result watches)",
    );
    for (node, open) in [("a", open_a), ("b", open_b)] {
        assert!(
            open as usize <= SHARDS as usize + bound,
            "node {node} held {open} watches at once"
        );
    }
    assert!(
        open_b as usize >= bound,
        "node b never held its result watches ({open_b}): the test proved nothing"
    );
    a.shutdown().await;
    b.shutdown().await;
}
