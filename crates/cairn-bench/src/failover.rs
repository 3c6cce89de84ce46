//! `cairn-bench failover`: how long a dead node's shards stay dark.
//!
//! Three nodes (in this process) share the durable embedded store under a W2 load. Each round
//! kills the node holding the most shards (no drain: its leases must lapse), and at once starts
//! one probe workflow on each of its shards through a survivor. A probe completes only after a
//! new holder claimed the shard and committed the probe's transitions there, so the time from
//! the kill to a probe's result is that shard's failover time (the probe's own work is a
//! millisecond or two). The killed node then restarts under its id and the cluster rebalances
//! before the next round.

use crate::workflows::{bench_builder, converged, noop, three_steps};
use anyhow::{Result, ensure};
use cairn::{InProcessPeers, Node, NodeConfig, PeersHandle};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Options of `cairn-bench failover`.
#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The nodes' lease timeout, ms.
    #[arg(long, default_value_t = 2_000)]
    lease_timeout_ms: u64,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Kills to measure.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// W2 workflows in flight all along (0: an idle cluster).
    #[arg(long, default_value_t = 50)]
    load_concurrency: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

type Cluster = Vec<Option<Node<EmbeddedStore>>>;

async fn start(
    store: &EmbeddedStore,
    peers: &Arc<InProcessPeers>,
    args: &FailoverArgs,
    n: usize,
) -> Result<Node<EmbeddedStore>> {
    let name = format!("failover-{n}");
    Ok(bench_builder()
        .config(NodeConfig {
            node_id: name.clone(),
            lease_timeout_ms: args.lease_timeout_ms,
            advertise_address: Some(format!("inproc://{name}")),
            peers: Some(PeersHandle(peers.clone())),
            ..NodeConfig::default()
        })
        .start(store.clone())
        .await?)
}

pub fn run(args: &FailoverArgs) -> Result<()> {
    ensure!(args.nodes >= 2, "--nodes must be at least 2");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(args))
}

async fn measure(args: &FailoverArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()))?;
    let peers = Arc::new(InProcessPeers::default());
    let mut cluster: Cluster = Vec::new();
    for n in 0..args.nodes {
        cluster.push(Some(start(&store, &peers, args, n).await?));
    }
    converged(&live(&cluster)).await?;
    // Background load through node 0 (which the rounds never kill).
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for worker in 0..args.load_concurrency {
        let client = cluster[0].as_ref().expect("node 0 lives").client();
        let (stop, completed) = (stop.clone(), completed.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("failover-load-{worker}-{i}");
                if let Ok(handle) = client.start(three_steps, &id, i).send().await
                    && handle.result().await.is_ok()
                {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let victim = (1..cluster.len())
            .max_by_key(|&i| cluster[i].as_ref().map_or(0, |n| n.held_shards().len()))
            .expect("two nodes or more");
        let node = cluster[victim].take().expect("the victim lives");
        let shards: Vec<u32> = node.held_shards().iter().map(|(s, _)| *s).collect();
        let shard_count = node.cluster_status().await?.shard_count;
        node.crash();
        let killed = Instant::now();
        let client = cluster[0].as_ref().expect("node 0 lives").client();
        let probes: Vec<_> = shards
            .iter()
            .map(|&shard| {
                let id = (0..)
                    .map(|i| format!("failover-probe-{round}-{shard}-{i}"))
                    .find(|id| cairn_runtime::shard_of(id, shard_count) == shard)
                    .expect("some id lands on every shard");
                let client = client.clone();
                tokio::spawn(async move {
                    client.start(noop, &id, ()).send().await?.result().await?;
                    Ok::<_, anyhow::Error>(killed.elapsed())
                })
            })
            .collect();
        let mut per_shard = Vec::new();
        for probe in probes {
            per_shard.push(probe.await??);
        }
        let worst = per_shard.iter().max().copied().unwrap_or_default();
        rounds.push((victim, shards.len(), worst, per_shard));
        cluster[victim] = Some(start(&store, &peers, args, victim).await?);
        converged(&live(&cluster)).await?;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let worst_ms: Vec<u128> = rounds.iter().map(|r| r.2.as_millis()).collect();
    let bound = Duration::from_millis(args.lease_timeout_ms) + Duration::from_secs(1);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "failover",
                "lease_timeout_ms": args.lease_timeout_ms,
                "nodes": args.nodes,
                "load_concurrency": args.load_concurrency,
                "load_workflows_completed": completed.load(Ordering::Relaxed),
                "worst_shard_failover_ms_per_round": worst_ms,
                "shards_moved_per_round": rounds.iter().map(|r| r.1).collect::<Vec<_>>(),
                "bound_ms": bound.as_millis(),
                "within_bound": rounds.iter().all(|r| r.2 <= bound),
            })
        );
    } else {
        for (round, (victim, moved, worst, per_shard)) in rounds.iter().enumerate() {
            let mut sorted: Vec<u128> = per_shard.iter().map(Duration::as_millis).collect();
            sorted.sort_unstable();
            println!(
                "round {round}: killed node {victim} holding {moved} shards; shards committing again after {sorted:?} ms (worst {} ms)",
                worst.as_millis()
            );
        }
        println!(
            "lease timeout {} ms: worst failover {:?} ms per round; bound (lease + 1 s) {} ms; {} W2 workflows completed meanwhile",
            args.lease_timeout_ms,
            worst_ms,
            bound.as_millis(),
            completed.load(Ordering::Relaxed)
        );
    }
    for node in cluster.into_iter().flatten() {
        node.shutdown().await;
    }
    Ok(())
}

fn live(cluster: &Cluster) -> Vec<&Node<EmbeddedStore>> {
    cluster.iter().flatten().collect()
}
