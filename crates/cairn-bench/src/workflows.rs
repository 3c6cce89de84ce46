//! The workflow scenarios of DESIGN §9, on the durable embedded store (fsync on every commit
//! unless `--relaxed`), with the load generator in the same process and CPU budget.

use anyhow::{Context, Result, ensure};
use cairn::{ActivityContext, Ctx, Failure, Node, NodeConfig, Signal, WorkflowError};
use cairn_store_embedded::{Durability, EmbeddedConfig, EmbeddedStore};
use clap::{Args, ValueEnum};
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Workflows to run (W3: fan-out workflows, one after another; W4: open workflows).
    #[arg(long, default_value_t = 2_000)]
    workflows: usize,
    /// Workflows in flight at once (W1, W2; W2-latency forces 1).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Commit without fsync (labelled as such in the output).
    #[arg(long)]
    relaxed: bool,
    /// One JSON object per scenario instead of a table.
    #[arg(long)]
    json: bool,
    /// Where to create the temporary data directory (default: the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The store: `embedded` (a temporary durable embedded store, the default) or
    /// `fdb:<cluster file>` (FoundationDB; a build with `--features fdb`). Use a fresh
    /// FoundationDB (`scripts/fdb.sh start`): the scenarios' workflow ids repeat between runs.
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Most in-memory runs per shard (16 shards) before the least recently used are passivated.
    #[arg(long, default_value_t = 4_096)]
    actor_cache_max_per_shard: usize,
    /// Drive running servers over their HTTP API instead of an in-process node (W1, W2 and
    /// W2-latency; start them with `cairn-bench serve`). Several addresses, comma-separated,
    /// share the client threads round-robin: a cluster of node processes.
    #[arg(long)]
    address: Option<String>,
    /// Most commit batches each node keeps in flight at once (0: the store's own choice).
    #[arg(long, default_value_t = 0)]
    commit_batches_in_flight: usize,
    /// Embedded store memtable size, MiB.
    #[arg(long, default_value_t = 64)]
    memtable_mib: u64,
    /// Embedded store block cache size, MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    /// Nodes sharing the store (in this process; W1, W2, W2-latency: clients spread over
    /// them round-robin, so most runs live on another node than the client's).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Children: how many children each parent starts.
    #[arg(long, default_value_t = 1_000)]
    width: u64,
    /// Schedules: how long to let them fire.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Heartbeats: how long each activity works, heartbeating every 5 ms.
    #[arg(long, default_value_t = 3_000)]
    work_ms: u64,
    /// In process: most activity attempts dispatched at once (past it, tasks are deferred in
    /// the store and pulled as attempts end).
    #[arg(long, default_value_t = cairn::ACTIVITY_ATTEMPTS_DISPATCHED_MAX)]
    activity_attempts_dispatched_max: usize,
    /// Over HTTP: this many more connections call `count` in a loop, kept alive, for as long
    /// as the starts run (API reads beside writes).
    #[arg(long, default_value_t = 0)]
    count_loops: usize,
    /// The visibility query the count loops send.
    #[arg(
        long,
        default_value = "WorkflowType = 'noop' AND ExecutionStatus = 'Completed'"
    )]
    count_query: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    W1,
    W2,
    #[value(name = "w2-latency")]
    W2Latency,
    W3,
    W4,
    /// One parent starting `--width` child workflows at once: time to complete.
    Children,
    /// `--workflows` schedules firing every second for `--seconds`: lateness of each fire.
    Schedules,
    /// `--workflows` workflows started at once, each one activity heartbeating every 5 ms for
    /// `--work-ms` (heartbeat timeout 1 s, no retries): time from start to result.
    Heartbeats,
    /// `--workflows` updates (each waited for to completion) spread over running counter
    /// workflows, at most 5 in flight per workflow, `--concurrency` at once.
    Updates,
    /// Updates one at a time to one workflow: the round trip.
    #[value(name = "updates-latency")]
    UpdatesLatency,
}

const ADD: cairn::Update<u64, u64> = cairn::Update::new("add");
const FINISH: Signal<()> = Signal::new("finish");

/// Adds each update's amount; returns the total once told to finish.
pub(crate) async fn counter(ctx: Ctx, _input: ()) -> Result<u64, WorkflowError> {
    let total = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let done = std::rc::Rc::new(std::cell::Cell::new(false));
    let t = total.clone();
    ctx.on_update(&ADD, move |n: u64| {
        let t = t.clone();
        async move {
            t.set(t.get() + n);
            Ok(t.get())
        }
    });
    let d = done.clone();
    ctx.on_signal(&FINISH, move |()| d.set(true));
    ctx.wait_condition(move || done.get()).await;
    Ok(total.get())
}

pub(crate) async fn noop_activity(_ctx: ActivityContext, n: u64) -> Result<u64, Failure> {
    Ok(n)
}

/// Works for `millis`, heartbeating every 5 ms, as a tight loop over a batch would.
pub(crate) async fn beating_activity(ctx: ActivityContext, millis: u64) -> Result<u64, Failure> {
    let started = Instant::now();
    let mut beats = 0u64;
    while started.elapsed() < Duration::from_millis(millis) {
        beats += 1;
        ctx.heartbeat(
            cairn::Payload::encode(&beats).map_err(|e| Failure::new("Encode", e.to_string()))?,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(beats)
}

/// One heartbeating activity; fails the workflow if it times out.
pub(crate) async fn heartbeating(ctx: Ctx, millis: u64) -> Result<u64, WorkflowError> {
    Ok(ctx
        .activity(beating_activity, millis)
        .heartbeat_timeout(Duration::from_secs(1))
        .start_to_close(Duration::from_secs(30))
        .retry(cairn::RetryPolicy::no_retries())
        .await?)
}

pub(crate) async fn noop(_ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    Ok(())
}

pub(crate) async fn three_steps(ctx: Ctx, n: u64) -> Result<u64, WorkflowError> {
    let a = ctx.activity(noop_activity, n).await?;
    let b = ctx.activity(noop_activity, a + 1).await?;
    Ok(ctx.activity(noop_activity, b + 1).await?)
}

async fn fan_out(ctx: Ctx, width: u64) -> Result<u64, WorkflowError> {
    let calls: Vec<_> = (0..width).map(|i| ctx.activity(noop_activity, i)).collect();
    let mut sum = 0;
    for result in futures::future::join_all(calls).await {
        sum += result?;
    }
    Ok(sum)
}

const WAKE: Signal<()> = Signal::new("wake");

/// Starts `width` no-op children at once and waits for them all.
async fn child_fan_out(ctx: Ctx, width: u64) -> Result<u64, WorkflowError> {
    let children: Vec<_> = (0..width)
        .map(|_| ctx.child_workflow(noop, ()).into_future())
        .collect();
    let mut done = 0;
    for result in futures::future::join_all(children).await {
        result?;
        done += 1;
    }
    Ok(done)
}

/// W4: waits for a signal, with a durable 7-day timeout pending meanwhile.
async fn idle(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    let woken = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = woken.clone();
    ctx.on_signal(&WAKE, move |()| seen.set(true));
    let week = Duration::from_secs(7 * 24 * 3_600);
    if !ctx.wait_condition_timeout(move || woken.get(), week).await {
        return Err(cairn::fail("TimedOut", "no signal within a week"));
    }
    Ok(())
}

struct Report {
    scenario: &'static str,
    workflows: usize,
    concurrency: Option<usize>,
    seconds: f64,
    activities: Option<usize>,
    latencies: Vec<Duration>,
    rss_bytes: Option<u64>,
    extra: Vec<(&'static str, serde_json::Value)>,
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Returns freed heap pages to the OS (jemalloc's `arena.<i>.purge` for every arena).
#[allow(unsafe_code)]
fn trim_allocator() {
    // 4096 is MALLCTL_ARENAS_ALL.
    let name = c"arena.4096.purge";
    // SAFETY: `purge` takes and returns nothing (all four pointers null, lengths 0) and only
    // releases unused pages; the name is a NUL-terminated string.
    let code = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if code != 0 {
        eprintln!("could not purge jemalloc's arenas (error {code})");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i].as_secs_f64() * 1e3)
}

pub fn run(args: &RunArgs) -> Result<()> {
    ensure!(args.workflows > 0, "--workflows must be positive");
    ensure!(args.concurrency > 0, "--concurrency must be positive");
    ensure!(args.nodes > 0, "--nodes must be positive");
    ensure!(
        args.nodes == 1
            || matches!(
                args.scenario,
                Scenario::W1 | Scenario::W2 | Scenario::W2Latency
            ),
        "--nodes above 1 is for w1, w2 and w2-latency"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = match &args.address {
        Some(address) => over_http(args, address)?,
        None => runtime.block_on(scenario(args))?,
    };
    print(args, &report);
    Ok(())
}

/// Options of `cairn-bench serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 (0 picks one; the address is printed).
    #[arg(long, default_value_t = 7290)]
    port: u16,
    /// Commit without fsync (embedded store).
    #[arg(long)]
    relaxed: bool,
    /// The store: `embedded` (a temporary durable embedded store, the default) or
    /// `fdb:<cluster file>` (FoundationDB; a build with `--features fdb`). Several `serve`
    /// processes on one FoundationDB, each with its own `--node-id`, are one cluster: they
    /// share the shards and forward to each other over HTTP.
    #[arg(long, default_value = "embedded")]
    store: String,
    /// This node's id in the cluster.
    #[arg(long, default_value = "bench")]
    node_id: String,
    /// Most commit batches the node keeps in flight at once (0: the store's own choice).
    #[arg(long, default_value_t = 0)]
    commit_batches_in_flight: usize,
}

/// A node with the bench workflows and the HTTP API, until Ctrl-C: on a temporary embedded
/// store, or on FoundationDB as one node of a cluster of `serve` processes.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(cluster_file) = args.store.strip_prefix("fdb:") {
            return serve_on_fdb(cluster_file, args).await;
        }
        ensure!(
            args.store == "embedded",
            "--store {:?} is not understood: use embedded or fdb:<cluster file>",
            args.store
        );
        let dir = tempfile::tempdir()?;
        let durability = if args.relaxed {
            Durability::OsBuffered
        } else {
            Durability::Fsync
        };
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()).durability(durability))?;
        serve_on(store, args).await
    })
}

#[cfg(feature = "fdb")]
async fn serve_on_fdb(cluster_file: &str, args: &ServeArgs) -> Result<()> {
    let store = cairn_store_fdb::FdbStore::connect(Some(cluster_file))
        .map_err(|e| anyhow::anyhow!("connecting to FoundationDB at {cluster_file}: {e}"))?;
    serve_on(store, args).await
}

#[cfg(not(feature = "fdb"))]
async fn serve_on_fdb(_cluster_file: &str, _args: &ServeArgs) -> Result<()> {
    anyhow::bail!(
        "this cairn-bench was built without FoundationDB; build it with `--features fdb` (see scripts/fdb.sh env)"
    )
}

async fn serve_on<S: cairn_store::Store>(store: S, args: &ServeArgs) -> Result<()> {
    let listener = cairn_server::bind("127.0.0.1", args.port).await?;
    let address = format!("http://{}", listener.local_addr()?);
    let node = bench_builder()
        .config(NodeConfig {
            node_id: args.node_id.clone(),
            commit_batches_in_flight_max: args.commit_batches_in_flight,
            advertise_address: Some(address.clone()),
            peers: Some(cairn::PeersHandle(Arc::new(cairn_server::HttpPeers::new(
                None,
            )))),
            ..NodeConfig::default()
        })
        .start(store)
        .await?;
    println!("cairn-bench serving on {address}");
    let options = cairn_server::ApiOptions::default();
    let router = cairn_server::router_with(node.runtime(), options.clone());
    cairn_server::serve(listener, router, &options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    node.shutdown().await;
    Ok(())
}

/// W1/W2 through the HTTP API: `concurrency` client threads each start a workflow and
/// long-poll its result, repeatedly.
fn over_http(args: &RunArgs, address: &str) -> Result<Report> {
    let (name, workflow_type, activities_each, concurrency) = match args.scenario {
        Scenario::W1 => ("w1", "noop", 0, args.concurrency),
        Scenario::W2 => ("w2", "three_steps", 3, args.concurrency),
        Scenario::W2Latency => ("w2-latency", "three_steps", 3, 1),
        other => anyhow::bail!("{other:?} is not available over HTTP; use w1, w2 or w2-latency"),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Every client thread keeps its connection (ureq's pool keeps 10 overall by default,
        // which had most of 100 threads connecting anew per request).
        .max_idle_connections(concurrency + args.count_loops)
        .max_idle_connections_per_host(concurrency + args.count_loops)
        .build()
        .into();
    let addresses: Vec<String> = address
        .split(',')
        .map(|a| a.trim().trim_end_matches('/').to_string())
        .filter(|a| !a.is_empty())
        .collect();
    ensure!(!addresses.is_empty(), "--address names no server");
    let address = addresses[0].clone();
    let run_tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let membership_before = memberships(&agent, &addresses)?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counters: Vec<_> = (0..args.count_loops)
        .map(|_| {
            let (agent, done, refusals) = (agent.clone(), done.clone(), refused.clone());
            let url = format!("{address}/api/v1/visibility/count");
            let query = args.count_query.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut latencies = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let mut response = until_accepted(&refusals, || {
                        agent.get(&url).query("query", &query).call()
                    })?;
                    let text = response.body_mut().read_to_string()?;
                    ensure!(response.status() == 200, "count: {text}");
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|thread| {
            let address = addresses[thread % addresses.len()].clone();
            let (agent, next) = (agent.clone(), next.clone());
            let refusals = refused.clone();
            let total = args.workflows;
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok(latencies);
                    }
                    let id = format!("{name}-http-{run_tag}-{i}");
                    let t = Instant::now();
                    // `noop` takes `()` (JSON null); the others a number.
                    let input = if activities_each == 0 {
                        serde_json::Value::Null
                    } else {
                        serde_json::json!(i)
                    };
                    let body = serde_json::json!({"workflow_id": id, "workflow_type": workflow_type, "input": input});
                    let mut response = until_accepted(&refusals, || {
                        agent
                            .post(&format!("{address}/api/v1/workflows"))
                            .header("Content-Type", "application/json")
                            .send(body.to_string())
                    })?;
                    ensure!(response.status() == 201, "start: {}", response.body_mut().read_to_string()?);
                    let _ = response.body_mut().read_to_string()?;
                    let mut response = until_accepted(&refusals, || {
                        agent
                            .get(&format!("{address}/api/v1/workflows/{id}/result?wait_ms=60000"))
                            .call()
                    })?;
                    let text = response.body_mut().read_to_string()?;
                    ensure!(text.contains("\"completed\""), "result of {id}: {text}");
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for thread in counters {
        counts.extend(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("count thread panicked"))??,
        );
    }
    counts.sort();
    let membership_after = memberships(&agent, &addresses)?;
    let mut extra = vec![
        ("over_http", serde_json::json!(addresses)),
        (
            "overloaded_refusals",
            serde_json::json!(refused.load(Ordering::Relaxed)),
        ),
        ("membership_before", serde_json::json!(membership_before)),
        ("membership_after", serde_json::json!(membership_after)),
    ];
    if args.count_loops > 0 {
        extra.push((
            "counts",
            serde_json::json!({
                "loops": args.count_loops,
                "query": args.count_query,
                "calls": counts.len(),
                "per_second": counts.len() as f64 / seconds,
                "p50_ms": percentile(&counts, 0.50),
                "p99_ms": percentile(&counts, 0.99),
            }),
        ));
    }
    Ok(Report {
        scenario: name,
        workflows: args.workflows,
        concurrency: Some(concurrency),
        seconds,
        activities: Some(args.workflows * activities_each),
        latencies,
        rss_bytes: rss_bytes(),
        extra,
    })
}

/// [`membership`] of each node, by address (one node: its figures alone).
fn memberships(agent: &ureq::Agent, addresses: &[String]) -> Result<serde_json::Value> {
    if let [address] = addresses {
        return membership(agent, address);
    }
    let mut each = serde_json::Map::new();
    for address in addresses {
        each.insert(address.clone(), membership(agent, address)?);
    }
    Ok(serde_json::Value::Object(each))
}

/// The node's shard claims, takeovers and losses, read from its `/metrics`: a node whose
/// heartbeats wait behind API work loses its leases and claims them again.
fn membership(agent: &ureq::Agent, address: &str) -> Result<serde_json::Value> {
    let mut response = agent.get(&format!("{address}/metrics")).call()?;
    let text = response.body_mut().read_to_string()?;
    ensure!(response.status() == 200, "metrics: {text}");
    let read = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Ok(serde_json::json!({
        "claims": read("cairn_shard_claims_total"),
        "takeovers": read("cairn_shard_takeovers_total"),
        "losses": read("cairn_shard_losses_total"),
    }))
}

/// Sends a request until the node takes it: a node at its bound answers 429/503 `overloaded`
/// with `Retry-After` (nothing written), so each such answer is counted in `refusals`, waited
/// out as told, and sent again, as the SDK does.
fn until_accepted(
    refusals: &AtomicUsize,
    send: impl Fn() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<ureq::http::Response<ureq::Body>> {
    loop {
        let mut response = send()?;
        if !matches!(response.status().as_u16(), 429 | 503) {
            return Ok(response);
        }
        let secs = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1);
        let _ = response.body_mut().read_to_string();
        refusals.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(secs));
    }
}

async fn scenario(args: &RunArgs) -> Result<Report> {
    if let Some(cluster_file) = args.store.strip_prefix("fdb:") {
        return scenario_on_fdb(cluster_file, args).await;
    }
    ensure!(
        args.store == "embedded",
        "--store {:?} is not understood: use embedded or fdb:<cluster file>",
        args.store
    );
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let durability = if args.relaxed {
        Durability::OsBuffered
    } else {
        Durability::Fsync
    };
    let mut config = EmbeddedConfig::new(dir.path()).durability(durability);
    config.memtable_bytes = args.memtable_mib * 1024 * 1024;
    config.cache_bytes = args.cache_mib * 1024 * 1024;
    let store = EmbeddedStore::open(config)?;
    let mut report = scenario_on(store, args).await?;
    report.extra.push(("store", serde_json::json!("embedded")));
    Ok(report)
}

#[cfg(feature = "fdb")]
async fn scenario_on_fdb(cluster_file: &str, args: &RunArgs) -> Result<Report> {
    let store = cairn_store_fdb::FdbStore::connect(Some(cluster_file))
        .map_err(|e| anyhow::anyhow!("connecting to FoundationDB at {cluster_file}: {e}"))?;
    let mut report = scenario_on(store, args).await?;
    report
        .extra
        .push(("store", serde_json::json!(format!("fdb:{cluster_file}"))));
    Ok(report)
}

#[cfg(not(feature = "fdb"))]
async fn scenario_on_fdb(_cluster_file: &str, _args: &RunArgs) -> Result<Report> {
    anyhow::bail!(
        "this cairn-bench was built without FoundationDB; build it with `--features fdb` (see scripts/fdb.sh env)"
    )
}

/// The scenario on `store`, with `args.nodes` nodes in this process.
async fn scenario_on<S: cairn_store::Store>(store: S, args: &RunArgs) -> Result<Report> {
    let idle_ms = if args.scenario == Scenario::W4 {
        500
    } else {
        30_000
    };
    let peers = Arc::new(cairn::InProcessPeers::default());
    let mut nodes = Vec::new();
    for n in 0..args.nodes {
        let name = format!("bench-{n}");
        nodes.push(
            bench_builder()
                .config(NodeConfig {
                    node_id: name.clone(),
                    actor_idle_ms: idle_ms,
                    actor_cache_max_per_shard: args.actor_cache_max_per_shard,
                    activity_attempts_dispatched_max: args.activity_attempts_dispatched_max,
                    commit_batches_in_flight_max: args.commit_batches_in_flight,
                    advertise_address: Some(format!("inproc://{name}")),
                    peers: Some(cairn::PeersHandle(peers.clone())),
                    ..NodeConfig::default()
                })
                .start(store.clone())
                .await?,
        );
    }
    converged(&nodes.iter().collect::<Vec<_>>()).await?;
    let node = &nodes[0];
    let report = match args.scenario {
        Scenario::W1 => closed_loop(&nodes, args, "w1", args.concurrency, 0).await?,
        Scenario::W2 => closed_loop(&nodes, args, "w2", args.concurrency, 3).await?,
        Scenario::W2Latency => closed_loop(&nodes, args, "w2-latency", 1, 3).await?,
        Scenario::W3 => w3(node, args).await?,
        Scenario::W4 => w4(node, args).await?,
        Scenario::Children => children(node, args).await?,
        Scenario::Schedules => schedules(node, args).await?,
        Scenario::Heartbeats => heartbeats(node, args).await?,
        Scenario::Updates => updates(node, args, args.concurrency).await?,
        Scenario::UpdatesLatency => updates(node, args, 1).await?,
    };
    let batches: Vec<f64> = nodes
        .iter()
        .map(|n| n.metrics().mean_batch_size())
        .collect();
    for node in nodes {
        node.shutdown().await;
    }
    let mut report = report;
    report
        .extra
        .push(("mean_commit_batch", serde_json::json!(batches[0])));
    if args.nodes > 1 {
        report.extra.push(("nodes", serde_json::json!(args.nodes)));
        report
            .extra
            .push(("mean_commit_batch_per_node", serde_json::json!(batches)));
    }
    Ok(report)
}

/// A node builder with every bench workflow and activity.
pub(crate) fn bench_builder() -> cairn::NodeBuilder {
    Node::builder()
        .workflow(noop)
        .workflow(three_steps)
        .workflow(fan_out)
        .workflow(child_fan_out)
        .workflow(idle)
        .workflow(heartbeating)
        .workflow(counter)
        .activity(noop_activity)
        .activity(beating_activity)
}

/// Waits (bounded) until the nodes hold every shard between them, each once.
pub(crate) async fn converged<S: cairn_store::Store>(nodes: &[&Node<S>]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: usize = nodes.iter().map(|n| n.held_shards().len()).sum();
        let status = nodes[0].cluster_status().await?;
        if held == status.shard_count as usize && nodes.iter().all(|n| !n.held_shards().is_empty())
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the nodes did not share the shards within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// W1/W2: `concurrency` clients each start a workflow and wait for its result, repeatedly;
/// workflow `i` goes through node `i % nodes`.
async fn closed_loop<S: cairn_store::Store>(
    nodes: &[Node<S>],
    args: &RunArgs,
    name: &'static str,
    concurrency: usize,
    activities_each: usize,
) -> Result<Report> {
    let started = Instant::now();
    let clients: Arc<Vec<cairn::Client<S>>> = Arc::new(nodes.iter().map(Node::client).collect());
    let progress = Arc::new(Progress::default());
    let watchdog = tokio::spawn(watch_for_stall(
        clients[0].clone(),
        nodes[0].runtime(),
        progress.clone(),
    ));
    let latencies = for_each_index(concurrency, args.workflows, move |i| {
        let client = clients[i % clients.len()].clone();
        let progress = progress.clone();
        async move {
            let id = format!("{name}-{i}");
            progress.begin(&id);
            if activities_each == 0 {
                client.start(noop, &id, ()).send().await?.result().await?;
            } else {
                client
                    .start(three_steps, &id, i as u64)
                    .send()
                    .await?
                    .result()
                    .await?;
            }
            progress.end(&id);
            Ok(())
        }
    })
    .await?;
    watchdog.abort();
    Ok(Report {
        scenario: name,
        workflows: args.workflows,
        concurrency: Some(concurrency),
        seconds: started.elapsed().as_secs_f64(),
        activities: Some(args.workflows * activities_each),
        latencies,
        rss_bytes: rss_bytes(),
        extra: Vec::new(),
    })
}

/// Longest a closed loop may go without a workflow finishing before the run counts as
/// stalled: a run that never ends is a bug, and the watchdog says which workflows it waits for.
const STALL_AFTER: Duration = Duration::from_secs(30);
/// Most stalled workflows the watchdog describes.
const STALL_DESCRIBED_MAX: usize = 5;

/// The workflows a closed loop has in flight, and how many finished.
#[derive(Default)]
struct Progress {
    in_flight: std::sync::Mutex<std::collections::BTreeSet<String>>,
    finished: AtomicUsize,
}

impl Progress {
    fn begin(&self, id: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    fn end(&self, id: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Ends the process (exit status 3) when no workflow finished for [`STALL_AFTER`], after
/// printing a description of the first workflows still in flight.
async fn watch_for_stall<S: cairn_store::Store>(
    client: cairn::Client<S>,
    node: Arc<cairn_runtime::Node<S>>,
    progress: Arc<Progress>,
) {
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let finished = progress.finished.load(Ordering::Relaxed);
        if finished != last.0 {
            last = (finished, Instant::now());
            continue;
        }
        if last.1.elapsed() < STALL_AFTER {
            continue;
        }
        let waiting: Vec<String> = progress
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .take(STALL_DESCRIBED_MAX)
            .cloned()
            .collect();
        eprintln!(
            "stalled: no workflow finished for {STALL_AFTER:?} after {finished}; first in flight: {waiting:?}"
        );
        let m = node.metrics();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "node: shard claims {}, takeovers {}, losses {}, handoffs {}; attempts dispatched {} (peak {}), deferred {}; activities succeeded {}, failed {}; passivations {}; commits skipped {}, slot waits {}",
            get(&m.shard_claims),
            get(&m.shard_takeovers),
            get(&m.shard_losses),
            get(&m.shard_handoffs),
            get(&m.activity_attempts_dispatched),
            get(&m.activity_attempts_dispatched_peak),
            get(&m.activity_tasks_deferred),
            get(&m.activities_succeeded),
            get(&m.activities_failed),
            get(&m.passivations),
            get(&m.commits_skipped),
            get(&m.commit_slot_waits),
        );
        for id in &waiting {
            match client.handle::<serde_json::Value>(id) {
                Ok(handle) => {
                    let described = handle.describe().await;
                    if let Ok(d) = &described
                        && let Ok(workflow_id) = cairn::WorkflowId::new(id.clone())
                    {
                        for (seq, pending) in &d.pending_activities {
                            eprintln!(
                                "{id}: activity {seq} attempt {}: {}",
                                pending.attempt,
                                node.attempt_in_store(
                                    &workflow_id,
                                    &d.summary.run_id,
                                    *seq,
                                    pending.attempt
                                )
                                .await
                            );
                        }
                    }
                    eprintln!("{id}: {described:#?}");
                }
                Err(e) => eprintln!("{id}: {e}"),
            }
        }
        eprintln!("{}", node.deferred_backlog().await);
        // A signal wakes each run: one that then moves had what it needed and was not woken
        // (a lost wake-up); one that does not lost its work.
        const POKE: Signal<()> = Signal::new("stall-poke");
        for id in &waiting {
            if let Ok(handle) = client.handle::<serde_json::Value>(id) {
                let poked = handle.signal(&POKE, ()).await;
                eprintln!("{id}: poked: {poked:?}");
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        for id in &waiting {
            if let Ok(handle) = client.handle::<serde_json::Value>(id) {
                let after = handle.describe().await.map(|d| {
                    (
                        d.summary.status,
                        d.summary.history_length,
                        d.pending_activities.len(),
                    )
                });
                eprintln!("{id}: 5 s after the poke (status, history length, pending): {after:?}");
            }
        }
        std::process::exit(3);
    }
}

/// Runs `work(i)` for every `i` in `0..total` on `concurrency` tasks, each taking the next
/// index when it is free (a closed loop), and returns how long each item took.
pub(crate) async fn for_each_index<F, Fut>(
    concurrency: usize,
    total: usize,
    work: F,
) -> Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, work) = (next.clone(), work.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let t = Instant::now();
                    work(i).await?;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}

/// Runs `one(i)` for each `i < n`, one after another: the time each took.
async fn one_after_another<Fut: std::future::Future<Output = Result<()>>>(
    n: usize,
    mut one: impl FnMut(usize) -> Fut,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        one(i).await?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

/// W3: one workflow fanning out to 100 activities, `--workflows` times in a row.
async fn w3<S: cairn_store::Store>(node: &Node<S>, args: &RunArgs) -> Result<Report> {
    let client = node.client();
    let started = Instant::now();
    let latencies = one_after_another(args.workflows, |i| {
        let client = client.clone();
        async move {
            let handle = client
                .start(fan_out, &format!("w3-{i}"), 100u64)
                .send()
                .await?;
            let sum = handle.result().await?;
            ensure!(sum == 4_950, "fan-out result {sum}");
            Ok(())
        }
    })
    .await?;
    Ok(Report {
        scenario: "w3",
        workflows: args.workflows,
        concurrency: Some(1),
        seconds: started.elapsed().as_secs_f64(),
        activities: Some(args.workflows * 100),
        latencies,
        rss_bytes: rss_bytes(),
        extra: Vec::new(),
    })
}

/// Heartbeats: every workflow started at once, each one activity heartbeating every 5 ms for
/// `--work-ms`; every one must complete (none may time out while beating).
async fn heartbeats<S: cairn_store::Store>(node: &Node<S>, args: &RunArgs) -> Result<Report> {
    let client = node.client();
    let started = Instant::now();
    let work_ms = args.work_ms;
    let latencies = for_each_index(args.workflows, args.workflows, move |i| {
        let client = client.clone();
        async move {
            let handle = client
                .start(heartbeating, &format!("hb-{i}"), work_ms)
                .send()
                .await?;
            let beats = handle
                .result()
                .await
                .with_context(|| format!("workflow hb-{i}"))?;
            ensure!(beats > 0, "hb-{i} never heartbeated");
            Ok(())
        }
    })
    .await?;
    Ok(Report {
        scenario: "heartbeats",
        workflows: args.workflows,
        concurrency: Some(args.workflows),
        seconds: started.elapsed().as_secs_f64(),
        activities: Some(args.workflows),
        latencies,
        rss_bytes: rss_bytes(),
        extra: vec![("work_ms", serde_json::json!(work_ms))],
    })
}

/// Updates: `--workflows` updates over `concurrency / 5` counters (one at least), each
/// waited for to completion, `concurrency` at once; checks every one was applied once.
async fn updates<S: cairn_store::Store>(
    node: &Node<S>,
    args: &RunArgs,
    concurrency: usize,
) -> Result<Report> {
    let client = node.client();
    let counters = (concurrency / 5).max(1);
    for i in 0..counters {
        client
            .start(counter, &format!("counter-{i}"), ())
            .send()
            .await?;
    }
    let started = Instant::now();
    let calls = client.clone();
    let latencies = for_each_index(concurrency, args.workflows, move |i| {
        let client = calls.clone();
        async move {
            let handle = client.handle::<u64>(&format!("counter-{}", i % counters))?;
            handle.update(&ADD, 1).await?;
            Ok(())
        }
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut applied = 0;
    for i in 0..counters {
        let handle = client.handle::<u64>(&format!("counter-{i}"))?;
        handle.signal(&FINISH, ()).await?;
        applied += handle.result().await?;
    }
    ensure!(
        applied == args.workflows as u64,
        "{applied} updates applied, {} sent",
        args.workflows
    );
    Ok(Report {
        scenario: if concurrency == 1 {
            "updates-latency"
        } else {
            "updates"
        },
        workflows: args.workflows,
        concurrency: Some(concurrency),
        seconds,
        activities: None,
        latencies,
        rss_bytes: rss_bytes(),
        extra: vec![
            (
                "updates_per_sec",
                serde_json::json!(args.workflows as f64 / seconds),
            ),
            ("counters", serde_json::json!(counters)),
        ],
    })
}

/// Children: one parent starting `--width` children, `--workflows` times in a row.
async fn children<S: cairn_store::Store>(node: &Node<S>, args: &RunArgs) -> Result<Report> {
    let client = node.client();
    let started = Instant::now();
    let width = args.width;
    let latencies = one_after_another(args.workflows, |i| {
        let client = client.clone();
        async move {
            let handle = client
                .start(child_fan_out, &format!("children-{i}"), width)
                .send()
                .await?;
            let done = handle.result().await?;
            ensure!(done == width, "{done} of {width} children completed");
            Ok(())
        }
    })
    .await?;
    Ok(Report {
        scenario: "children",
        workflows: args.workflows,
        concurrency: Some(1),
        seconds: started.elapsed().as_secs_f64(),
        activities: None,
        latencies,
        rss_bytes: rss_bytes(),
        extra: vec![("children_per_parent", serde_json::json!(width))],
    })
}

/// Schedules: `--workflows` schedules every second for `--seconds`; the lateness behind the
/// scheduled time of each fire (when the holder's fire pass started the workflow, from the
/// schedules' recent actions: the last ten of each) and of each run (when the started no-op
/// workflow closed, from the visibility list). The report's latencies are the runs'.
async fn schedules<S: cairn_store::Store>(node: &Node<S>, args: &RunArgs) -> Result<Report> {
    let client = node.client();
    let started = Instant::now();
    for i in 0..args.workflows {
        client
            .schedule(noop, &format!("s{i:05}"), ())
            .interval(Duration::from_secs(1))
            .create()
            .await?;
    }
    let created_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    for i in 0..args.workflows {
        client
            .schedule_handle(&format!("s{i:05}"))
            .pause("measured")
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut fire = Vec::new();
    for i in 0..args.workflows {
        let described = client
            .schedule_handle(&format!("s{i:05}"))
            .describe()
            .await?;
        fire.extend(
            described
                .record
                .recent_actions
                .iter()
                .filter(|a| a.kind == cairn::ActionKind::Started)
                .map(|a| Duration::from_millis(a.actual_unix_ms.saturating_sub(a.nominal_unix_ms))),
        );
    }
    let mut run = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_workflows("WorkflowType = 'noop'", Some(1_000), token.as_deref())
            .await?;
        for w in &page.workflows {
            let Some((_, time)) = w.workflow_id.split_once('-') else {
                continue;
            };
            let Some(nominal) = cairn::parse_time(time) else {
                continue;
            };
            if let Some(closed) = w.closed_unix_ms {
                run.push(Duration::from_millis(closed.saturating_sub(nominal)));
            }
        }
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    fire.sort_unstable();
    Ok(Report {
        scenario: "schedules",
        workflows: run.len(),
        concurrency: None,
        seconds: args.seconds as f64,
        activities: None,
        latencies: run,
        rss_bytes: rss_bytes(),
        extra: vec![
            ("schedules", serde_json::json!(args.workflows)),
            (
                "created_in_seconds",
                serde_json::json!(created_in.as_secs_f64()),
            ),
            (
                "fire_lateness_p50_ms",
                serde_json::json!(percentile(&fire, 0.50)),
            ),
            (
                "fire_lateness_p99_ms",
                serde_json::json!(percentile(&fire, 0.99)),
            ),
            (
                "fire_lateness_max_ms",
                serde_json::json!(percentile(&fire, 1.0)),
            ),
        ],
    })
}

/// W4: K workflows blocked on a signal; resident memory per open workflow once passivated,
/// start rate, then the time to signal and drain them all.
async fn w4<S: cairn_store::Store>(node: &Node<S>, args: &RunArgs) -> Result<Report> {
    let client = node.client();
    let rss_before = rss_bytes().context("no /proc/self/status")?;
    let started = Instant::now();
    let starter = client.clone();
    for_each_index(args.concurrency, args.workflows, move |i| {
        let client = starter.clone();
        async move {
            client.start(idle, &format!("w4-{i}"), ()).send().await?;
            Ok(())
        }
    })
    .await?;
    let start_seconds = started.elapsed().as_secs_f64();
    // Wait for every run's first transition, then for passivation.
    let deadline = Instant::now() + Duration::from_secs(600);
    while node.metrics().transitions.load(Ordering::Relaxed) < args.workflows as u64 {
        ensure!(Instant::now() < deadline, "runs did not start in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while node.metrics().active_actors.load(Ordering::Relaxed) > 0 {
        ensure!(Instant::now() < deadline, "runs did not passivate in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_bytes().context("no /proc/self/status")?;
    // Settled: once the store's conflict resolver has forgotten the start burst (its window is
    // the 5 s transaction age limit plus 1 s, pruned at the next transaction, which one more
    // tiny workflow provides) and the allocator has returned freed pages, what the open workflows
    // still hold.
    tokio::time::sleep(Duration::from_secs(7)).await;
    client
        .start(noop, "w4-settle", ())
        .send()
        .await?
        .result()
        .await?;
    trim_allocator();
    let rss_open_trimmed = rss_bytes().context("no /proc/self/status")?;
    let drain_started = Instant::now();
    let signaler = client.clone();
    let latencies = for_each_index(args.concurrency, args.workflows, move |i| {
        let client = signaler.clone();
        async move {
            let handle = client.handle::<()>(&format!("w4-{i}"))?;
            handle.signal(&WAKE, ()).await?;
            handle.result().await?;
            Ok(())
        }
    })
    .await?;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let per_workflow = rss_open.saturating_sub(rss_before) as f64 / args.workflows as f64;
    // Visibility over the closed workflows: the first page of a filtered list, and counts
    // (a maintained one, and one that walks an index), 50 of each, one after another.
    let mut list_ms = Vec::new();
    let mut count_ms = Vec::new();
    let mut count_walk_ms = Vec::new();
    for _ in 0..50 {
        let at = Instant::now();
        let page = client
            .list_workflows(
                "WorkflowType = 'idle' AND ExecutionStatus = 'Completed'",
                Some(100),
                None,
            )
            .await?;
        list_ms.push(at.elapsed());
        ensure!(
            page.workflows.len() == 100.min(args.workflows),
            "a full first page"
        );
        let at = Instant::now();
        let count = client
            .count_workflows("WorkflowType = 'idle' AND ExecutionStatus = 'Completed'")
            .await?;
        count_ms.push(at.elapsed());
        ensure!(
            count == args.workflows as u64,
            "every workflow counted: {count}"
        );
    }
    for _ in 0..3 {
        let at = Instant::now();
        client
            .count_workflows("WorkflowType = 'idle' AND HistoryLength > 0")
            .await?;
        count_walk_ms.push(at.elapsed());
    }
    let quantiles = |mut v: Vec<Duration>| {
        v.sort_unstable();
        serde_json::json!({"p50_ms": percentile(&v, 0.5), "p99_ms": percentile(&v, 0.99)})
    };
    Ok(Report {
        scenario: "w4",
        workflows: args.workflows,
        concurrency: Some(args.concurrency),
        seconds: start_seconds + drain_seconds,
        activities: None,
        latencies,
        rss_bytes: Some(rss_open),
        extra: vec![
            ("start_seconds", serde_json::json!(start_seconds)),
            (
                "starts_per_sec",
                serde_json::json!(args.workflows as f64 / start_seconds),
            ),
            ("drain_seconds", serde_json::json!(drain_seconds)),
            ("rss_before_bytes", serde_json::json!(rss_before)),
            (
                "rss_growth_per_open_workflow_bytes",
                serde_json::json!(per_workflow),
            ),
            ("rss_settled_bytes", serde_json::json!(rss_open_trimmed)),
            ("list_first_page", quantiles(list_ms)),
            ("count_maintained", quantiles(count_ms)),
            ("count_index_walk", quantiles(count_walk_ms)),
            (
                "rss_growth_per_open_workflow_settled_bytes",
                serde_json::json!(
                    rss_open_trimmed.saturating_sub(rss_before) as f64 / args.workflows as f64
                ),
            ),
        ],
    })
}

fn print(args: &RunArgs, r: &Report) {
    let mut sorted = r.latencies.clone();
    sorted.sort_unstable();
    let wps = r.workflows as f64 / r.seconds;
    let aps = r.activities.map(|a| a as f64 / r.seconds);
    let p50 = percentile(&sorted, 0.50);
    let p99 = percentile(&sorted, 0.99);
    if args.json {
        let mut object = serde_json::json!({
            "scenario": r.scenario,
            "durability": if args.relaxed { "os-buffered" } else { "fsync" },
            "workflows": r.workflows,
            "concurrency": r.concurrency,
            "seconds": r.seconds,
            "workflows_per_sec": wps,
            "activities_per_sec": aps,
            "p50_ms": p50,
            "p99_ms": p99,
            "rss_bytes": r.rss_bytes,
        });
        for (key, value) in &r.extra {
            object[*key] = value.clone();
        }
        println!("{object}");
    } else {
        println!(
            "{:<11} {:>9} {:>11} {:>9} {:>11} {:>13} {:>9} {:>9}",
            "scenario",
            "workflows",
            "concurrency",
            "seconds",
            "wf/s",
            "activities/s",
            "p50 ms",
            "p99 ms"
        );
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
        println!(
            "{:<11} {:>9} {:>11} {:>9.2} {:>11.0} {:>13} {:>9} {:>9}",
            r.scenario,
            r.workflows,
            r.concurrency.map_or("-".into(), |c| c.to_string()),
            r.seconds,
            wps,
            opt(aps, 0),
            opt(p50, 2),
            opt(p99, 2)
        );
        for (key, value) in &r.extra {
            println!("  {key}: {value}");
        }
        if let Some(rss) = r.rss_bytes {
            println!("  rss_bytes: {rss}");
        }
    }
}
