//! The cluster through the public SDK: several nodes in one process over one store, each with
//! its own lease on a share of the shards. Nodes join, leave gracefully, crash and stall; the
//! shards move, and the workflows in flight complete exactly once on whoever holds them.
//! Network traffic stays on loopback; every wait is bounded.

mod common;

use cairn::{
    ActivityContext, ClientError, Ctx, Failure, InProcessPeers, Node, NodeConfig, PeersHandle,
    Query, Signal, WorkflowError,
};
use cairn_store::{FaultConfig, FaultStore, MemStore, Store};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use common::{Counts, within};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The workload: activities, a durable timer, a signal and a query.

static EXECUTIONS: Counts = Counts::new();

fn executions_of(key: &str) -> u32 {
    EXECUTIONS.get(key)
}

/// Doubles its input after a short while, counting executions per idempotency key.
async fn step(ctx: ActivityContext, n: u64) -> Result<u64, Failure> {
    tokio::time::sleep(Duration::from_millis(5 + n % 20)).await;
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    Ok(n * 2)
}

const GO: Signal<u64> = Signal::new("go");
const PROGRESS: Query<(), u32> = Query::new("progress");

/// One activity, a timer, two activities in parallel, then waits for `go`.
async fn job(ctx: Ctx, n: u64) -> Result<u64, WorkflowError> {
    let progress = Rc::new(Cell::new(0u32));
    let p = progress.clone();
    ctx.on_query(&PROGRESS, move |()| p.get());
    let a = ctx
        .activity(step, n)
        .start_to_close(Duration::from_secs(2))
        .await?;
    progress.set(1);
    ctx.sleep(Duration::from_millis(50)).await;
    let (b, c) = futures::join!(
        ctx.activity(step, a + 1)
            .start_to_close(Duration::from_secs(2)),
        ctx.activity(step, a + 2)
            .start_to_close(Duration::from_secs(2)),
    );
    progress.set(2);
    let bonus = ctx.signal_receiver(&GO).recv().await;
    progress.set(3);
    Ok(a + b? + c? + bonus)
}

/// Sleeps `millis`, then ends: one durable timer in its shard.
async fn nap(ctx: Ctx, millis: u64) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_millis(millis)).await;
    Ok(())
}

fn expected(n: u64) -> u64 {
    let a = 2 * n;
    a + 2 * (a + 1) + 2 * (a + 2) + n
}

const NOTE: Signal<u32> = Signal::new("note");

/// Counts `note` signals until it has `n` distinct ones.
async fn collector(ctx: Ctx, n: usize) -> Result<usize, WorkflowError> {
    let seen = Rc::new(std::cell::RefCell::new(BTreeSet::new()));
    let s = seen.clone();
    ctx.on_signal(&NOTE, move |v| {
        s.borrow_mut().insert(v);
    });
    let s = seen.clone();
    ctx.wait_condition(move || s.borrow().len() >= n).await;
    let count = seen.borrow().len();
    Ok(count)
}

// ---------------------------------------------------------------------------------------------
// A cluster of in-process nodes.

const LEASE_MS: u64 = 600;

fn config(name: &str, peers: &Arc<InProcessPeers>) -> NodeConfig {
    NodeConfig {
        node_id: name.to_string(),
        shard_count: 8,
        lease_timeout_ms: LEASE_MS,
        advertise_address: Some(format!("inproc://{name}")),
        peers: Some(PeersHandle(peers.clone())),
        ..NodeConfig::default()
    }
}

async fn start_node<S: Store>(store: &S, config: NodeConfig) -> Node<S> {
    Node::builder()
        .workflow(job)
        .workflow(collector)
        .workflow(nap)
        .activity(step)
        .config(config)
        .start(store.clone())
        .await
        .unwrap()
}

/// The shard workflow `id` is placed on, if `node` holds it now.
fn held_shard_of<S: Store>(node: &Node<S>, id: &str) -> Option<u32> {
    let shard = node
        .runtime()
        .shard_of(&cairn::WorkflowId::new(id).unwrap());
    node.held_shards()
        .iter()
        .any(|(s, _)| *s == shard)
        .then_some(shard)
}

/// Waits (bounded) until the live nodes hold every shard between them, each shard once, and
/// every live node holds at least one.
async fn converged<S: Store>(nodes: &[&Node<S>], shard_count: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held: Vec<Vec<(u32, u64)>> = nodes.iter().map(|n| n.held_shards()).collect();
        let all: Vec<u32> = held.iter().flatten().map(|(s, _)| *s).collect();
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        if all.len() == shard_count as usize
            && distinct.len() == shard_count as usize
            && held.iter().all(|h| !h.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {:?}",
            nodes
                .iter()
                .map(|n| (n.node_id().to_string(), n.held_shards()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks the workflow completed once with the right result: one run, a gap-free history with
/// one completion event, and each of its three activities' results applied once.
async fn check_completed<S: Store>(node: &Node<S>, id: &str, n: u64) {
    let handle = node.client().handle::<u64>(id).unwrap();
    let result = within(id, handle.result()).await.unwrap();
    assert_eq!(result, expected(n), "{id}");
    let history = handle.history().await.unwrap();
    for (position, event) in history.iter().enumerate() {
        assert_eq!(
            event.event_id,
            position as u64 + 1,
            "{id}: gap or duplicate"
        );
    }
    let count = |name: &str| history.iter().filter(|e| e.kind.name() == name).count();
    assert_eq!(count("WorkflowExecutionCompleted"), 1, "{id}");
    assert_eq!(count("ActivityTaskCompleted"), 3, "{id}");
    for seq in 1..=4 {
        let key = format!("{id}/{seq}");
        if seq == 2 {
            continue; // the timer's sequence number
        }
        assert!(executions_of(&key) >= 1, "{key} never ran");
    }
}

// ---------------------------------------------------------------------------------------------

/// Proves placement spreads the shards over the live nodes, a joining node takes its share
/// from the others (hand-off, not expiry), and a node that shuts down gracefully hands its
/// shards on at once; every move bumps the shard's epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_move_on_join_and_on_graceful_leave() {
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let a = start_node(&store, config("node-a", &peers)).await;
    assert_eq!(a.held_shards().len(), 8, "a lone node takes every shard");
    let b = start_node(&store, config("node-b", &peers)).await;
    let c = start_node(&store, config("node-c", &peers)).await;
    converged(&[&a, &b, &c], 8).await;
    let epochs_before: HashMap<u32, u64> =
        [&a, &b, &c].iter().flat_map(|n| n.held_shards()).collect();
    let d = start_node(&store, config("node-d", &peers)).await;
    converged(&[&a, &b, &c, &d], 8).await;
    for (shard, epoch) in d.held_shards() {
        assert!(
            epoch >= epochs_before[&shard] + 2,
            "shard {shard} moved without a release and a claim"
        );
    }
    let status = a.cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 4);
    assert!(status.nodes.iter().all(|n| n.alive));
    for shard in &status.shards {
        assert!(shard.held, "{shard:?}");
        assert_eq!(shard.holder, shard.placed_on, "{shard:?}");
    }
    // A graceful leave: the other nodes take over long before a lease could lapse.
    let left = Instant::now();
    d.shutdown().await;
    converged(&[&a, &b, &c], 8).await;
    assert!(
        left.elapsed() < Duration::from_millis(LEASE_MS),
        "took {:?}, as long as a lease expiry",
        left.elapsed()
    );
    let status = a.cluster_status().await.unwrap();
    assert!(
        status.nodes.iter().all(|n| n.node_id != "node-d"),
        "a drained node leaves the membership"
    );
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// Proves `drain` hands a node's shards to the others at once while the node still serves its
/// clients (what a server does as soon as it is asked to stop, before it lets requests in
/// progress finish): a workflow started through the drained node runs on the other and its
/// result comes back through the drained one; `shutdown` afterwards drains nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_off_at_once_and_still_serves_its_clients() {
    const LEASE_LONG_MS: u64 = 10_000;
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let long_lease = |name: &str| NodeConfig {
        lease_timeout_ms: LEASE_LONG_MS,
        ..config(name, &peers)
    };
    let a = start_node(&store, long_lease("drain-a")).await;
    let b = start_node(&store, long_lease("drain-b")).await;
    converged(&[&a, &b], 8).await;
    let asked = Instant::now();
    a.drain().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.held_shards().len() < 8 {
        assert!(Instant::now() < deadline, "b never took a's shards");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        asked.elapsed() < Duration::from_millis(LEASE_LONG_MS / 2),
        "took {:?}, as long as a lease expiry",
        asked.elapsed()
    );
    assert!(a.held_shards().is_empty());
    let handle = a
        .client()
        .start(job, "started-through-a-drained-node", 4)
        .send()
        .await
        .unwrap();
    b.client()
        .handle::<u64>("started-through-a-drained-node")
        .unwrap()
        .signal(&GO, 4)
        .await
        .unwrap();
    assert_eq!(
        within("the result", handle.result()).await.unwrap(),
        expected(4)
    );
    a.shutdown().await;
    assert_eq!(b.held_shards().len(), 8);
    b.shutdown().await;
}

/// Proves a node killed while workflows with activities, timers and signals are in flight
/// loses nothing: on the durable embedded store, with three nodes talking HTTP over loopback,
/// the survivors take its shards after the lease lapses and every workflow completes exactly
/// once with the right result; queries reach the run's holder through any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_work_completes_on_the_survivors_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let mut nodes = Vec::new();
    for name in ["http-a", "http-b", "http-c"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let node = start_node(
            &store,
            NodeConfig {
                node_id: name.to_string(),
                shard_count: 8,
                lease_timeout_ms: LEASE_MS,
                advertise_address: Some(address),
                peers: Some(PeersHandle(Arc::new(cairn_server::HttpPeers::new(None)))),
                ..NodeConfig::default()
            },
        )
        .await;
        let router = cairn_server::router(node.runtime(), None);
        tokio::spawn(async move { axum::serve(listener, router).await });
        nodes.push(node);
    }
    converged(&nodes.iter().collect::<Vec<_>>(), 8).await;
    let client = nodes[0].client();
    let ids: Vec<String> = (0..24).map(|i| format!("http-job-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client.start(job, id, i as u64).send().await.unwrap();
    }
    // Queries for runs on the other nodes' shards are forwarded over HTTP.
    let forwarded_before = nodes[0]
        .metrics()
        .queries_forwarded
        .load(std::sync::atomic::Ordering::Relaxed);
    for id in &ids {
        let progress = client
            .handle::<u64>(id)
            .unwrap()
            .query(&PROGRESS, ())
            .await
            .unwrap();
        assert!(progress <= 3);
    }
    let forwarded = nodes[0]
        .metrics()
        .queries_forwarded
        .load(std::sync::atomic::Ordering::Relaxed)
        - forwarded_before;
    assert!(forwarded > 0, "no query went to another node");
    // Kill the node holding the most shards, mid-flight.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let victim = (0..3)
        .max_by_key(|&i| nodes[i].held_shards().len())
        .unwrap();
    let victim_shards: Vec<u32> = nodes[victim]
        .held_shards()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    nodes.remove(victim).crash();
    let survivor = &nodes[0];
    for (i, id) in ids.iter().enumerate() {
        let handle = survivor.client().handle::<u64>(id).unwrap();
        within(id, handle.signal(&GO, i as u64)).await.unwrap();
    }
    converged(&nodes.iter().collect::<Vec<_>>(), 8).await;
    let now_held: BTreeSet<u32> = nodes
        .iter()
        .flat_map(|n| n.held_shards())
        .map(|(s, _)| s)
        .collect();
    for shard in victim_shards {
        assert!(
            now_held.contains(&shard),
            "shard {shard} was not taken over"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        check_completed(survivor, id, i as u64).await;
    }
    // And a query still reaches every run, wherever it lives now.
    for id in &ids {
        let progress = nodes[1]
            .client()
            .handle::<u64>(id)
            .unwrap()
            .query(&PROGRESS, ())
            .await
            .unwrap();
        assert_eq!(progress, 3, "{id}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Proves a node that stalls past its lease (a long pause) is fenced: another node takes its
/// shards, the stalled node's commits are refused once it wakes, it drops the shards from
/// memory, and the workflows complete exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_is_fenced() {
    let mem = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let store_a = FaultStore::new(mem.clone(), FaultConfig::none(11));
    let store_b = FaultStore::new(mem.clone(), FaultConfig::none(12));
    let a = start_node(&store_a, config("pause-a", &peers)).await;
    let b = start_node(&store_b, config("pause-b", &peers)).await;
    converged(&[&a, &b], 8).await;
    let ids: Vec<String> = (0..12).map(|i| format!("pause-job-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        b.client().start(job, id, i as u64).send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a_shards: Vec<(u32, u64)> = a.held_shards();
    store_a.pause();
    // B takes A's shards once A's membership lapses.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.held_shards().len() < 8 {
        assert!(Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        b.client()
            .handle::<u64>(id)
            .unwrap()
            .signal(&GO, i as u64)
            .await
            .unwrap();
    }
    store_a.resume();
    // A notices its leases moved on and drops them (it may later get a share back, under a
    // new epoch).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept_old = a.held_shards().iter().any(|held| a_shards.contains(held));
        if !kept_old {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a kept its old leases: {:?}",
            a.held_shards()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        a.metrics()
            .shard_losses
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            || a_shards.is_empty()
    );
    for (i, id) in ids.iter().enumerate() {
        check_completed(&b, id, i as u64).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Proves a query whose shard is between holders waits for the new holder instead of
/// failing, and that a node without a transport to others says so clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_wait_out_a_failover_and_fail_clearly_without_a_route() {
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let a = start_node(&store, config("query-a", &peers)).await;
    let b = start_node(&store, config("query-b", &peers)).await;
    converged(&[&a, &b], 8).await;
    // A workflow on one of a's shards.
    let id = (0..)
        .map(|i| format!("query-job-{i}"))
        .find(|id| held_shard_of(&a, id).is_some())
        .unwrap();
    b.client().start(job, &id, 1).send().await.unwrap();
    let handle = b.client().handle::<u64>(&id).unwrap();
    within("query", handle.query(&PROGRESS, ())).await.unwrap();
    a.crash();
    // The lease has not lapsed yet: the query retries until b holds the shard.
    let progress = within("query during failover", handle.query(&PROGRESS, ()))
        .await
        .unwrap();
    assert!(progress <= 3);

    // A node with no transport cannot reach a run another node holds.
    let lonely = start_node(
        &store,
        NodeConfig {
            peers: None,
            advertise_address: None,
            ..config("query-c", &peers)
        },
    )
    .await;
    let held_by_b = (0..)
        .map(|i| format!("query-other-{i}"))
        .find(|id| held_shard_of(&b, id).is_some() && held_shard_of(&lonely, id).is_none())
        .unwrap();
    b.client().start(job, &held_by_b, 2).send().await.unwrap();
    let error = lonely
        .client()
        .handle::<u64>(&held_by_b)
        .unwrap()
        .query(&PROGRESS, ())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::ShardUnavailable { reason, .. } if reason.contains("no transport")),
        "{error}"
    );
    lonely.shutdown().await;
    b.shutdown().await;
}

/// Proves the cluster status shows how far a shard lags: a timer that falls due while its
/// shard's holder is dead (its lease not yet lapsed) waits past its time, and the status read
/// on the survivor shows that shard's earliest due time as the timer's and its lag growing,
/// the other shards none; once the survivor takes the shard the timer fires, the run
/// completes and the lag is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_a_shard_lagging_while_its_holder_is_dead() {
    const LEASE: u64 = 3_000;
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let config = |name: &str| NodeConfig {
        lease_timeout_ms: LEASE,
        ..config(name, &peers)
    };
    let a = start_node(&store, config("lag-a")).await;
    let b = start_node(&store, config("lag-b")).await;
    converged(&[&a, &b], 8).await;
    let (id, shard) = (0..)
        .map(|i| format!("lag-nap-{i}"))
        .find_map(|id| held_shard_of(&a, &id).map(|shard| (id, shard)))
        .unwrap();
    b.client().start(nap, &id, 100).send().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let due = loop {
        let status = b.cluster_status().await.unwrap();
        if let Some(due) = status.shards[shard as usize].earliest_due_unix_ms {
            break due;
        }
        assert!(Instant::now() < deadline, "the nap's timer never showed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    a.crash();
    let crashed = Instant::now();
    let status = loop {
        let status = b.cluster_status().await.unwrap();
        if status.shards[shard as usize].lag_ms(status.now_unix_ms) >= 500 {
            break status;
        }
        assert!(
            crashed.elapsed() < Duration::from_millis(LEASE),
            "no lag shown before the lease lapsed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lagging = &status.shards[shard as usize];
    assert_eq!(lagging.earliest_due_unix_ms, Some(due));
    assert_eq!(lagging.lag_ms(status.now_unix_ms), status.now_unix_ms - due);
    for other in status.shards.iter().filter(|s| s.shard != shard) {
        assert_eq!(other.lag_ms(status.now_unix_ms), 0, "{other:?}");
    }
    within(&id, b.client().handle::<()>(&id).unwrap().result())
        .await
        .unwrap();
    let status = b.cluster_status().await.unwrap();
    let caught_up = &status.shards[shard as usize];
    assert_eq!(caught_up.earliest_due_unix_ms, None, "{caught_up:?}");
    assert_eq!(caught_up.lag_ms(status.now_unix_ms), 0);
    b.shutdown().await;
}

/// Proves the status reads every shard's due work past one transaction's share
/// ([`cairn::DUE_SHARDS_PER_TRANSACTION`]): with twice that many shards and one more, a
/// timer in each of the last two shards shows at its own shard and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_reads_due_work_of_more_shards_than_one_transaction_takes() {
    let shard_count = 2 * cairn::DUE_SHARDS_PER_TRANSACTION + 1;
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let node = start_node(
        &store,
        NodeConfig {
            shard_count,
            ..config("due-many", &peers)
        },
    )
    .await;
    let shard_of = |id: &String| {
        node.runtime()
            .shard_of(&cairn::WorkflowId::new(id.clone()).unwrap())
    };
    let mut napping = BTreeSet::new();
    for last in [shard_count - 2, shard_count - 1] {
        let id = (0..)
            .map(|i| format!("due-nap-{i}"))
            .find(|id| shard_of(id) == last)
            .unwrap();
        node.client().start(nap, &id, 60_000).send().await.unwrap();
        napping.insert(last);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = node.cluster_status().await.unwrap();
        assert_eq!(status.shards.len(), shard_count as usize);
        let due: BTreeSet<u32> = status
            .shards
            .iter()
            .filter(|s| s.earliest_due_unix_ms.is_some())
            .map(|s| s.shard)
            .collect();
        if due == napping {
            break;
        }
        assert!(due.is_subset(&napping), "{due:?}");
        assert!(Instant::now() < deadline, "timers shown at {due:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.shutdown().await;
}

/// Proves many signals sent at once to one workflow from several nodes all arrive: mailbox
/// writes batched into one commit each get their own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signals_from_several_nodes_all_arrive() {
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let a = start_node(&store, config("signal-a", &peers)).await;
    let b = start_node(&store, config("signal-b", &peers)).await;
    converged(&[&a, &b], 8).await;
    let handle = a
        .client()
        .start(collector, "collector", 200)
        .send()
        .await
        .unwrap();
    let mut sends = Vec::new();
    for i in 0..200u32 {
        let client = if i % 2 == 0 { a.client() } else { b.client() };
        sends.push(tokio::spawn(async move {
            client
                .handle::<usize>("collector")
                .unwrap()
                .signal(&NOTE, i)
                .await
        }));
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(within("collector", handle.result()).await.unwrap(), 200);
    a.shutdown().await;
    b.shutdown().await;
}

/// Proves a run's mailbox longer than any page is read whole, a page per transaction: while
/// the holder's store is stalled, another node mails the run more entries than a shard scan
/// or a mailbox read takes per transaction; once it resumes, the run gets every one, and no
/// transaction of the holder read more than a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_longer_than_a_page_is_read_a_page_per_transaction() {
    const NOTES: u32 = 1_100;
    const _: () = assert!(NOTES as usize > cairn_runtime::REHYDRATE_PAGE_ROWS);
    const _: () = assert!(NOTES as usize > cairn_runtime::MAILBOX_PAGE_ROWS);
    let mem = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let store_a = FaultStore::new(mem.clone(), FaultConfig::none(21));
    let store_b = FaultStore::new(mem.clone(), FaultConfig::none(22));
    let a = start_node(&store_a, config("pages-a", &peers)).await;
    let b = start_node(&store_b, config("pages-b", &peers)).await;
    converged(&[&a, &b], 8).await;
    let held: BTreeSet<u32> = a.held_shards().iter().map(|(s, _)| *s).collect();
    let id = (0..)
        .map(|i| format!("long-mailbox-{i}"))
        .find(|id| {
            held.contains(
                &a.runtime()
                    .shard_of(&cairn::WorkflowId::new(id.clone()).unwrap()),
            )
        })
        .unwrap();
    let handle = b
        .client()
        .start(collector, &id, NOTES as usize)
        .send()
        .await
        .unwrap();
    within("the first transition", async {
        while handle.history().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    store_a.pause();
    let mut sends = Vec::new();
    for chunk in (0..NOTES).collect::<Vec<_>>().chunks(100) {
        for &i in chunk {
            let client = b.client();
            let id = id.clone();
            sends.push(tokio::spawn(async move {
                client.handle::<usize>(&id).unwrap().signal(&NOTE, i).await
            }));
        }
        for send in sends.drain(..) {
            send.await.unwrap().unwrap();
        }
    }
    store_a.resume();
    assert_eq!(within(&id, handle.result()).await.unwrap(), NOTES as usize);
    let widest = store_a
        .stats()
        .range_rows_per_transaction_max
        .load(std::sync::atomic::Ordering::Relaxed);
    let page = cairn_runtime::REHYDRATE_PAGE_ROWS.max(cairn_runtime::MAILBOX_PAGE_ROWS);
    assert!(
        widest as usize <= page,
        "one transaction read {widest} rows (a page is {page})"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Proves a node answers the whole cluster's task queues: its own and each live peer's, each
/// with the workers that polled through that node (a worker may poll any node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_queues_of_the_whole_cluster() {
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let a = start_node(&store, config("queues-a", &peers)).await;
    let b = start_node(&store, config("queues-b", &peers)).await;
    converged(&[&a, &b], 8).await;
    a.runtime()
        .note_poller("orders", cairn_runtime::PollKind::Activity, "worker-at-a");
    b.runtime()
        .note_poller("orders", cairn_runtime::PollKind::Workflow, "worker-at-b");
    let nodes = a.runtime().cluster_task_queues().await;
    let seen: Vec<(String, Vec<String>)> = nodes
        .iter()
        .map(|n| {
            let pollers = n
                .task_queues
                .as_ref()
                .expect("every live node answers")
                .iter()
                .filter(|q| q.name == "orders")
                .flat_map(|q| q.pollers.iter().map(|p| p.identity.clone()))
                .collect();
            (n.node_id.clone(), pollers)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("queues-a".to_string(), vec!["worker-at-a".to_string()]),
            ("queues-b".to_string(), vec!["worker-at-b".to_string()]),
        ]
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Proves a node configured with another shard count than the store was set up with is
/// refused with an error naming both, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_shard_count_is_refused() {
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let a = start_node(&store, config("count-a", &peers)).await;
    let error = Node::builder()
        .workflow(job)
        .config(NodeConfig {
            shard_count: 16,
            ..config("count-b", &peers)
        })
        .start(store.clone())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("8 shards") && error.to_string().contains("16"),
        "{error}"
    );
    let status = a.cluster_status().await.unwrap();
    assert_eq!(
        status.nodes.len(),
        1,
        "the refused node left no membership record"
    );
    a.shutdown().await;
}

/// Proves a node joins through reads the store refuses for a moment (FoundationDB answers
/// `not_committed`, `future_version` or `transaction_too_old` so, and its client buggify
/// injects them): every other read fails retryably while the node starts, and it starts, holds
/// every shard and runs a workflow. Each of the join's transactions is retried, read-only ones
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_through_reads_refused_for_a_moment() {
    let store = FaultStore::new(MemStore::new(), FaultConfig::none(31));
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let every_other = {
        let reads = reads.clone();
        move |_: &[u8]| reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 1
    };
    store.fail_reads_with(40, cairn_store::StoreError::Conflict, every_other);
    let peers = Arc::new(InProcessPeers::default());
    let node = start_node(&store, config("refused-reads", &peers)).await;
    let refused = store
        .stats()
        .reads_failed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused > 0, "no read was refused while the node joined");
    store.fail_reads(0, |_| false);
    converged(&[&node], 8).await;
    node.client()
        .start(job, "refused-reads-1", 5)
        .send()
        .await
        .unwrap()
        .signal(&GO, 5)
        .await
        .unwrap();
    check_completed(&node, "refused-reads-1", 5).await;
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Attempts across shard moves.

static RUNNING_NOW: Counts = Counts::new();
static RUNNING_MAX: std::sync::Mutex<Option<HashMap<String, u32>>> = std::sync::Mutex::new(None);
static ATTEMPT_RUNS: Counts = Counts::new();

/// Marks an attempt running for as long as it lives (an aborted attempt is dropped, which
/// ends it too).
struct RunningGuard(String);

impl RunningGuard {
    fn enter(key: &str) -> Self {
        let now = RUNNING_NOW.bump(key);
        let mut max = RUNNING_MAX.lock().unwrap();
        let entry = max
            .get_or_insert_with(HashMap::new)
            .entry(key.to_string())
            .or_insert(0);
        *entry = (*entry).max(now);
        Self(key.to_string())
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING_NOW.add(&self.0, -1);
    }
}

/// Heartbeats every 5 ms for `millis`, noting how many of its attempts run at once.
async fn long_beat(ctx: ActivityContext, millis: u64) -> Result<u32, Failure> {
    let key = ctx.info().idempotency_key.clone();
    let _running = RunningGuard::enter(&key);
    ATTEMPT_RUNS.bump(&key);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(millis) {
        ctx.heartbeat(cairn::Payload::encode(&1u8).unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(ctx.info().attempt)
}

async fn beat_job(ctx: Ctx, millis: u64) -> Result<u32, WorkflowError> {
    Ok(ctx
        .activity(long_beat, millis)
        .heartbeat_timeout(Duration::from_millis(300))
        .start_to_close(Duration::from_secs(30))
        .await?)
}

/// Proves a shard move never runs an activity twice at once: node A runs 24 heartbeating
/// activities, node B joins (A hands shards off mid-attempt) and A then drains. A's attempts
/// of moved shards are aborted; B lets them time out (heartbeat) and runs the next attempt;
/// no activity ever has two attempts running, and every workflow completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_moves_never_run_an_activity_twice_at_once() {
    shard_moves_scenario(MemStore::new(), "moves").await;
}

/// The same on the durable embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_moves_never_run_an_activity_twice_at_once_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    shard_moves_scenario(store, "moves-e").await;
}

async fn shard_moves_scenario<S: Store>(store: S, tag: &str) {
    let peers = Arc::new(InProcessPeers::default());
    let builder = || Node::builder().workflow(beat_job).activity(long_beat);
    let a = builder()
        .config(config(&format!("{tag}-a"), &peers))
        .start(store.clone())
        .await
        .unwrap();
    let ids: Vec<String> = (0..24).map(|i| format!("{tag}-{i}")).collect();
    for id in &ids {
        a.client().start(beat_job, id, 1_500).send().await.unwrap();
    }
    within("attempts running on A", async {
        while ids
            .iter()
            .any(|id| ATTEMPT_RUNS.get(&format!("{id}/1")) == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let b = builder()
        .config(config(&format!("{tag}-b"), &peers))
        .start(store.clone())
        .await
        .unwrap();
    converged(&[&a, &b], 8).await;
    a.shutdown().await;
    let mut retried = 0;
    for id in &ids {
        let handle = b.client().handle::<u32>(id).unwrap();
        let attempt = within(id, handle.result()).await.unwrap();
        if attempt > 1 {
            retried += 1;
        }
    }
    let max = RUNNING_MAX.lock().unwrap().clone().unwrap_or_default();
    for id in &ids {
        let key = format!("{id}/1");
        assert_eq!(max.get(&key), Some(&1), "{key}: attempts ran at once");
        // One move at most reached each activity (A's shards go to B once), so one lost
        // attempt at most.
        assert!(
            ATTEMPT_RUNS.get(&key) <= 2,
            "{key}: {} attempts",
            ATTEMPT_RUNS.get(&key)
        );
    }
    assert!(retried > 0, "no attempt was caught by a move");
    b.shutdown().await;
}

/// Proves the membership heartbeat never waits behind the node's async workers: with every
/// worker blocked for 2.5 lease timeouts (as blocking store reads of API calls once blocked
/// them), the node's membership record stays unexpired throughout, and afterwards it has lost
/// no shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_workers_do_not_stop_the_heartbeat() {
    let peers = Arc::new(InProcessPeers::default());
    let store = MemStore::new();
    let node = start_node(&store, config("blocked", &peers)).await;
    converged(&[&node], 8).await;
    let claims = node
        .metrics()
        .shard_claims
        .load(std::sync::atomic::Ordering::Relaxed);
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async {
                std::thread::sleep(Duration::from_millis(LEASE_MS * 5 / 2));
            })
        })
        .collect();
    // The test body runs on its own thread, not on a worker, so it can watch meanwhile.
    let deadline = Instant::now() + Duration::from_millis(LEASE_MS * 2);
    let mut checks = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(LEASE_MS / 4));
        let status = node.runtime().cluster_status().await.unwrap();
        let me = status
            .nodes
            .iter()
            .find(|n| n.node_id == "blocked")
            .expect("the node's membership record");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            me.expires_unix_ms > now,
            "the membership record expired while the workers were blocked"
        );
        checks += 1;
    }
    assert!(checks >= 4);
    for blocker in blockers {
        blocker.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    let metrics = node.metrics();
    assert_eq!(
        metrics
            .shard_losses
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        metrics
            .shard_claims
            .load(std::sync::atomic::Ordering::Relaxed),
        claims,
        "no shard was lost and claimed again"
    );
    assert_eq!(node.held_shards().len(), 8);
    node.shutdown().await;
}

/// A node's result waiters for runs held by another node hold at most
/// `result_watches_max` store watches (FoundationDB allows a client 10,000); the waiters past
/// the bound read the run again every `RESULT_POLL_MS`, and every waiter gets its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_waiters_past_the_watch_bound_poll_and_all_get_their_results() {
    const WATCHES_MAX: usize = 3;
    const WAITERS: usize = 12;
    let store = MemStore::new();
    let peers = Arc::new(InProcessPeers::default());
    let a = start_node(&store, config("watch-a", &peers)).await;
    let b = start_node(
        &store,
        NodeConfig {
            result_watches_max: WATCHES_MAX,
            ..config("watch-b", &peers)
        },
    )
    .await;
    converged(&[&a, &b], 8).await;
    // Workflows on a's shards, awaited through b.
    let ids: Vec<String> = (0..)
        .map(|i| format!("watched-{i}"))
        .filter(|id| held_shard_of(&a, id).is_some())
        .take(WAITERS)
        .collect();
    for id in &ids {
        a.client().start(job, id, 1).send().await.unwrap();
    }
    let waiters: Vec<_> = ids
        .iter()
        .map(|id| {
            let handle = b.client().handle::<u64>(id).unwrap();
            tokio::spawn(async move { handle.result().await })
        })
        .collect();
    let metrics = b.metrics();
    within("waiters past the bound poll", async {
        while metrics
            .result_polls
            .load(std::sync::atomic::Ordering::Relaxed)
            < WAITERS as u64
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        metrics
            .result_watches
            .load(std::sync::atomic::Ordering::Relaxed),
        WATCHES_MAX as u64,
        "the waiters hold exactly the bound's watches, no more"
    );
    for id in &ids {
        a.client()
            .handle::<u64>(id)
            .unwrap()
            .signal(&GO, 1)
            .await
            .unwrap();
    }
    for waiter in waiters {
        let result = within("a result through b", waiter).await.unwrap().unwrap();
        assert_eq!(result, expected(1));
    }
    assert_eq!(
        metrics
            .result_watches
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "every watch given back"
    );
    b.shutdown().await;
    a.shutdown().await;
}
