//! Bounded memory through the public SDK: durable timers are held in memory only within the
//! shard's time window and under its bound, every timer still fires on time, and the timers of
//! a closed run leave the store with it.

mod common;

use cairn::{Ctx, Node, NodeConfig, WorkflowError};
use cairn_store::{MemStore, RangeRequest, Store, Transaction};
use common::within;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn sleeper(ctx: Ctx, millis: u64) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_millis(millis)).await;
    Ok(())
}

async fn node(store: MemStore, config: NodeConfig) -> Node<MemStore> {
    Node::builder()
        .workflow(sleeper)
        .config(config)
        .start(store)
        .await
        .unwrap()
}

/// Durable timer keys in the store, over every shard.
async fn stored_timers(store: &MemStore, shards: u32) -> usize {
    let keys = cairn_runtime::Keys::default();
    let mut tx = store.begin().unwrap();
    let mut n = 0;
    for shard in 0..shards {
        let (begin, end) = keys.timers_of_shard(shard);
        n += tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await
            .unwrap()
            .len();
    }
    n
}

/// Proves timers beyond the window cost no memory: 200 workflows sleeping an hour and 40
/// sleeping 1.5 s (beyond a 500 ms window when they start) hold at most the near ones in
/// memory; the near ones are paged in and fire; terminating the far ones clears their timers
/// (and their execution-timeout timers) from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_timers_stay_in_the_store_until_near() {
    let store = MemStore::new();
    let config = NodeConfig {
        shard_count: 4,
        timer_window_ms: 500,
        ..NodeConfig::default()
    };
    let node = node(store.clone(), config).await;
    let client = node.client();
    let mut far = Vec::new();
    for i in 0..200 {
        let handle = client
            .start(sleeper, &format!("far-{i}"), 3_600_000)
            .execution_timeout(Duration::from_secs(7 * 24 * 3_600))
            .send()
            .await
            .unwrap();
        far.push(handle);
    }
    let mut near = Vec::new();
    for i in 0..40 {
        near.push(
            client
                .start(sleeper, &format!("near-{i}"), 1_500)
                .send()
                .await
                .unwrap(),
        );
    }
    within("every far timer stored", async {
        // 200 sleeps and 200 execution timeouts, plus the near sleeps until they fire.
        while stored_timers(&store, 4).await < 400 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let held = node.metrics().timers_in_memory.load(Ordering::Relaxed);
    assert!(
        held <= 40,
        "{held} timers in memory; only the 40 near ones may be"
    );
    for handle in near {
        within("a near timer fires", handle.result()).await.unwrap();
    }
    for handle in &far {
        handle.terminate("done").await.unwrap();
    }
    within("far timers cleared with their runs", async {
        while stored_timers(&store, 4).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(node.metrics().timers_in_memory.load(Ordering::Relaxed), 0);
    node.shutdown().await;
}

/// Proves the in-memory bound: with room for 3 timers per shard, 120 timers due within the
/// window never occupy more than 3 per shard, and every one of them fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_bound_holds_and_every_timer_fires() {
    let store = MemStore::new();
    let config = NodeConfig {
        shard_count: 2,
        timers_in_memory_max_per_shard: 3,
        ..NodeConfig::default()
    };
    let node = node(store.clone(), config).await;
    let client = node.client();
    let mut handles = Vec::new();
    for i in 0..120 {
        handles.push(
            client
                .start(sleeper, &format!("b-{i}"), 200 + (i % 7) * 50)
                .send()
                .await
                .unwrap(),
        );
    }
    let metrics = node.metrics();
    let watch = async {
        let mut most = 0;
        for handle in handles {
            loop {
                most = most.max(metrics.timers_in_memory.load(Ordering::Relaxed));
                match tokio::time::timeout(Duration::from_millis(5), handle.result()).await {
                    Ok(result) => {
                        result.unwrap();
                        break;
                    }
                    Err(_) => continue,
                }
            }
        }
        most
    };
    let most = within("every bounded timer fires", watch).await;
    assert!(
        most <= 6,
        "{most} timers in memory; the bound is 3 per shard"
    );
    assert!(most > 0, "timers went through memory");
    node.shutdown().await;
}

/// Proves result waiters that give up leave nothing behind: 200 callers each wait 20 ms for a
/// workflow that sleeps an hour, time out, and the node holds no waiter afterwards; one still
/// waiting is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_waiters_that_give_up_are_forgotten() {
    let node = node(MemStore::new(), NodeConfig::default()).await;
    let client = node.client();
    let handle = client
        .start(sleeper, "w-1", 3_600_000)
        .send()
        .await
        .unwrap();
    for _ in 0..200 {
        let waited = tokio::time::timeout(Duration::from_millis(20), handle.result()).await;
        assert!(waited.is_err(), "the workflow sleeps for an hour");
    }
    assert_eq!(node.runtime().result_waiters(), 0);
    let patient = {
        let handle = client.handle::<()>("w-1").unwrap();
        tokio::spawn(async move { handle.result().await })
    };
    within("the patient waiter registers", async {
        while node.runtime().result_waiters() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    handle.terminate("done").await.unwrap();
    assert!(
        within("the patient waiter hears", patient)
            .await
            .unwrap()
            .is_err()
    );
    assert_eq!(node.runtime().result_waiters(), 0);
    node.shutdown().await;
}

/// Proves the committer's queue has a bound: with the store paused, 20 client starts meet a
/// queue of 8, so at most 8 are queued and the rest are refused at once with `Overloaded`
/// (nothing written); once the store resumes, every queued start lands and its workflow runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committer_queue_bound_refuses_client_writes_past_it() {
    use cairn_store::{FaultConfig, FaultStore};
    let store = FaultStore::new(MemStore::new(), FaultConfig::none(11));
    let node = Node::builder()
        .workflow(sleeper)
        .config(NodeConfig {
            commit_requests_queued_max: 8,
            ..NodeConfig::default()
        })
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    store.pause();
    let starts: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.start(sleeper, &format!("q-{i}"), 0).send().await })
        })
        .collect();
    // The refusals come at once, while the store is still paused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = starts.iter().filter(|s| s.is_finished()).count();
    assert!(
        refused >= 12,
        "only {refused} of 20 starts were answered while paused"
    );
    store.resume();
    let (mut accepted, mut refused_ids) = (Vec::new(), Vec::new());
    for (i, start) in starts.into_iter().enumerate() {
        match within("a start is answered", start).await.unwrap() {
            Ok(handle) => accepted.push(handle),
            Err(cairn::ClientError::Overloaded { .. }) => refused_ids.push(format!("q-{i}")),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(
        (1..=8).contains(&accepted.len()),
        "{} starts were queued past a bound of 8",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused_ids.len(), 20);
    for handle in accepted {
        within("a queued start's workflow completes", handle.result())
            .await
            .unwrap();
    }
    // A refused start wrote nothing: its id is free.
    for id in refused_ids {
        let described = client.handle::<()>(&id).unwrap().describe().await;
        assert!(
            matches!(described, Err(cairn::ClientError::NotFound { .. })),
            "{id} was refused but is stored: {described:?}"
        );
    }
    node.shutdown().await;
}

/// Proves the committer keeps several batches in flight, never more than its bound, and that
/// overlapping batches lose and repeat nothing: with commits slowed and 10% of them refused
/// or of unknown outcome, 60 workflows started at once each complete once, with a gap-free
/// history, while at most 3 batches were ever in flight (and more than one was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_batches_overlap_within_their_bound() {
    use cairn_store::{FaultConfig, FaultStore};
    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            latency: Some((Duration::from_millis(2), Duration::from_millis(6))),
            conflict_probability: 0.05,
            maybe_committed_applied_probability: 0.025,
            maybe_committed_lost_probability: 0.025,
            ..FaultConfig::none(41)
        },
    );
    let node = Node::builder()
        .workflow(sleeper)
        .config(NodeConfig {
            commit_batches_in_flight_max: 3,
            ..NodeConfig::default()
        })
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let starts: Vec<_> = (0..60)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let id = format!("overlap-{i}");
                loop {
                    match client.start(sleeper, &id, 5).send().await {
                        Ok(handle) => return handle,
                        // An unknown outcome that landed: the run is there.
                        Err(cairn::ClientError::AlreadyRunning { .. }) => {
                            return client.handle::<()>(&id).unwrap();
                        }
                        Err(cairn::ClientError::Store(e)) if e.is_retryable() => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
            })
        })
        .collect();
    for start in starts {
        let handle = within("a start is answered", start).await.unwrap();
        within("the workflow completes", handle.result())
            .await
            .unwrap();
        let history = handle.history().await.unwrap();
        for (position, event) in history.iter().enumerate() {
            assert_eq!(event.event_id, position as u64 + 1, "gap or duplicate");
        }
        let completions = history
            .iter()
            .filter(|e| e.kind.name() == "WorkflowExecutionCompleted")
            .count();
        assert_eq!(completions, 1);
    }
    let peak = node
        .metrics()
        .commit_batches_in_flight_peak
        .load(Ordering::Relaxed);
    assert!(
        (2..=3).contains(&peak),
        "{peak} batches were in flight at most (bound 3)"
    );
    assert!(store.stats().faults() > 0, "no fault was injected");
    node.shutdown().await;
}
