//! A simulated Cairn cluster: several nodes in one process over one `MemStore`, each behind its
//! own fault-injecting wrapper, driven by a seed.
//!
//! The seed chooses everything the simulation decides: how many nodes, the lease timeout, the
//! jobs (activities in sequence and in parallel, timers, child workflows, signals,
//! continue-as-new chains, heartbeating activities, and activities served by a simulated
//! Temporal SDK worker polling any node through the Temporal frontend), remote workflows that
//! worker runs from their workflow tasks, and when they start, and the faults — a node killed (and maybe
//! restarted, under its id or a new one), a node paused past its lease (a long GC pause: its
//! store calls stall), a node added, a node drained, a node crashing itself at a named point
//! inside the runtime (`CrashPoint`: before a commit, between a commit and its effects, during
//! an activity), the SDK worker killed holding an activity or workflow task, store conflicts and `MaybeCommitted`
//! (both kinds: a commit that lands and reports failure, and one that does not), latency. After the fault window everything
//! heals (pauses end, store faults stop, dead nodes come back) and the cluster must converge:
//! every accepted job completes, and [`check`] proves what must hold (exactly-once completion,
//! linear histories, each activity result applied once, fencing by lease epoch).
//!
//! The whole cluster runs on one thread, on virtual time ([`run`]): a current-thread tokio
//! runtime whose clock is paused and jumps to the next timer whenever every task waits. The
//! nodes read that clock (`Clock::Virtual`) and draw every random number from one stream seeded
//! by the seed (`Entropy::seeded`), their workflow code runs on the same thread
//! (`executor_threads` 0), and the store's faults come from seeded streams too. So a seed
//! replays exactly: the same commits, by the same nodes, at the same virtual times, with the
//! same bytes ([`Report::trace`]). A failure prints the seed and the plan, and the seed fails
//! the same way anywhere.

pub mod audit;
pub mod check;
pub mod sdk_worker;
pub mod workload;

use crate::audit::{AuditLog, AuditStore, TraceEntry};
use crate::check::Finished;
use crate::workload::{GO, JobSpec, PROGRESS, sim_job};
use cairn::{
    ClientError, CrashHook, CrashPoint, IdReusePolicy, InProcessPeers, Node, NodeConfig,
    PeersHandle, WorkflowOutcomeError,
};
use cairn::{Clock, Entropy};
use cairn_store::{FaultConfig, FaultStore, MemStore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The store a simulated node sees.
pub type SimStore = FaultStore<AuditStore<MemStore>>;

/// Where the simulation's virtual wall clock starts (2026-01-01T00:00:00Z).
pub const SIM_EPOCH_UNIX_MS: u64 = 1_767_225_600_000;

/// Longest one seed may take in real time (in debug builds, on a loaded machine; a seed takes
/// well under a second): past it the seed is taken to be livelocked.
pub const SEED_REAL_TIME_MAX: Duration = Duration::from_secs(120);

/// The short retention some seeds give their nodes: longer than the fault window and the
/// convergence bound together, so no workflow is deleted before the checks read it.
pub const RETENTION_MS: u64 = 40_000;

/// Longest a seed may take (virtual time) to converge after the fault window.
pub const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one client call may take before the driver tries another node.
const CLIENT_CALL_TIMEOUT: Duration = Duration::from_millis(400);

/// A fault, as planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Kill the node in this slot; `restart_after_ms` later start it again, under the same id
    /// (a restart) or a new one (a replacement).
    Kill {
        slot: usize,
        restart_after_ms: u64,
        same_id: bool,
    },
    /// Stall the node's store calls for this long (more than the lease timeout).
    Pause { slot: usize, for_ms: u64 },
    /// Start one more node.
    Add,
    /// Shut the node down gracefully (it hands its shards off); it comes back at healing.
    Drain { slot: usize },
    /// Arm the node to crash itself at the next occurrence of `point` (a named place inside
    /// the runtime); it comes back at healing.
    CrashAt { slot: usize, point: CrashPoint },
}

/// Everything a seed decides.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub nodes: usize,
    pub shard_count: u32,
    pub lease_timeout_ms: u64,
    pub fault_window_ms: u64,
    /// Store faults (conflicts, both kinds of `MaybeCommitted`) during the window.
    pub store_faults: bool,
    pub latency: bool,
    /// (start at ms, spec, signal value, signal at ms).
    pub jobs: Vec<(u64, JobSpec, u64, u64)>,
    pub faults: Vec<(u64, Fault)>,
    /// Chance that the SDK worker, during the fault window, takes a task and never answers
    /// (a worker killed holding it): the activity attempt or workflow task times out and is
    /// tried again.
    pub remote_worker_dies: f64,
    /// Remote workflows started through the Temporal frontend and run by the SDK worker:
    /// (start at ms, input).
    pub remote_flows: Vec<(u64, u64)>,
    /// A schedule created during the window: (created at ms, fires every ms). Each fire
    /// starts a one-step workflow; all of them must complete, fenced like any run.
    pub schedule: Option<(u64, u64)>,
    /// The nodes' `retention_ms`, when short enough to see: past it, after the checks, every
    /// closed workflow must be gone. Longer than the convergence bound, so nothing is
    /// deleted before it is checked.
    pub retention_ms: Option<u64>,
}

impl Plan {
    /// The plan of `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        // Children come from a stream of their own, so adding them left every other part of
        // each seed's plan as it was.
        let mut children = SmallRng::seed_from_u64(seed ^ 0xc41d);
        // So do heartbeating activities, continue-as-new chains and crash points.
        let mut beating = SmallRng::seed_from_u64(seed ^ 0xbea7);
        let mut chains = SmallRng::seed_from_u64(seed ^ 0xc4a1);
        let mut crashes = SmallRng::seed_from_u64(seed ^ 0xc7a5);
        let mut remote = SmallRng::seed_from_u64(seed ^ 0x7e40);
        let mut scheduling = SmallRng::seed_from_u64(seed ^ 0x5c4e);
        let mut retaining = SmallRng::seed_from_u64(seed ^ 0x7e7a);
        let mut flows = SmallRng::seed_from_u64(seed ^ 0xf10e);
        let nodes = rng.random_range(2..=4);
        let lease_timeout_ms = rng.random_range(250..=450);
        let fault_window_ms = 1_500;
        let jobs = (0..rng.random_range(12..=24))
            .map(|i| {
                let continues = chains.random_range(0..=3);
                let spec = JobSpec {
                    n: seed.wrapping_mul(1_000).wrapping_add(i),
                    sequential: rng.random_range(0..=3),
                    parallel: rng.random_range(0..=4),
                    timer_ms: if rng.random_bool(0.5) {
                        rng.random_range(1..=200)
                    } else {
                        0
                    },
                    signal: rng.random_bool(0.5),
                    children: children.random_range(0..=3),
                    beating: beating.random_range(0..=2),
                    continues: 0,
                    remote: remote.random_range(0..=2),
                };
                let spec = JobSpec {
                    continues: if spec.signal { 0 } else { continues },
                    ..spec
                };
                let start_at = rng.random_range(0..fault_window_ms);
                let signal_at = start_at + rng.random_range(0..600);
                (start_at, spec, rng.random_range(1..1_000), signal_at)
            })
            .collect();
        let mut faults = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(100..fault_window_ms);
            let slot = rng.random_range(0..nodes);
            let fault = match rng.random_range(0..10) {
                0..=3 => Fault::Kill {
                    slot,
                    restart_after_ms: rng.random_range(0..=lease_timeout_ms * 2),
                    same_id: rng.random_bool(0.5),
                },
                4..=6 => Fault::Pause {
                    slot,
                    for_ms: lease_timeout_ms + rng.random_range(50..=400),
                },
                7 => Fault::Add,
                _ => Fault::Drain { slot },
            };
            faults.push((at, fault));
        }
        // A node crashing itself at a named point inside the runtime (`CrashPoint`): armed at
        // some time, it fires at the point's next occurrence on that node.
        for _ in 0..crashes.random_range(0..=2) {
            let at = crashes.random_range(100..fault_window_ms);
            let slot = crashes.random_range(0..nodes);
            let point = match crashes.random_range(0..3) {
                0 => CrashPoint::BeforeCommit,
                1 => CrashPoint::AfterCommitBeforeEffects,
                _ => CrashPoint::DuringActivity,
            };
            faults.push((at, Fault::CrashAt { slot, point }));
        }
        faults.sort_by_key(|(at, _)| *at);
        Self {
            seed,
            nodes,
            shard_count: 8,
            lease_timeout_ms,
            fault_window_ms,
            store_faults: rng.random_bool(0.6),
            latency: rng.random_bool(0.3),
            jobs,
            faults,
            remote_worker_dies: if remote.random_bool(0.5) { 0.2 } else { 0.0 },
            schedule: scheduling.random_bool(0.5).then(|| {
                (
                    scheduling.random_range(0..fault_window_ms / 2),
                    scheduling.random_range(150..=400),
                )
            }),
            retention_ms: retaining.random_bool(0.1).then_some(RETENTION_MS),
            remote_flows: (0..flows.random_range(0..=3))
                .map(|i| {
                    (
                        flows.random_range(0..fault_window_ms),
                        seed.wrapping_mul(1_000).wrapping_add(900 + i),
                    )
                })
                .collect(),
        }
    }
}

/// What a simulation did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub jobs_accepted: usize,
    pub faults_applied: usize,
    pub store_faults_injected: u64,
    pub audited_commits: usize,
    /// Nodes that stopped themselves at their armed crash point.
    pub crash_points_fired: usize,
    /// Remote attempts the SDK worker answered, and those it took and abandoned.
    pub remote_answered: u64,
    pub remote_abandoned: u64,
    /// Remote workflows accepted through the Temporal frontend (each checked like a job).
    pub remote_flows: usize,
    /// Workflow tasks the SDK worker answered, and those it took and abandoned.
    pub workflow_tasks_answered: u64,
    pub workflow_tasks_abandoned: u64,
    /// Runs of the accepted jobs, continue-as-new successors included.
    pub runs: usize,
    /// Workflows the seed's schedule started (each checked like a job).
    pub scheduled: usize,
    /// Workflows deleted by retention (seeds with a short retention).
    pub retired: usize,
    /// Virtual time the simulation covered.
    pub virtual_time: Duration,
    /// Real time it took.
    pub took: Duration,
    /// Every landed commit, in order: the same seed gives the same trace.
    pub trace: Vec<TraceEntry>,
}

impl Report {
    /// One number for the whole trace (equal traces, equal fingerprints).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        for entry in &self.trace {
            (entry.at_ms, &entry.node, entry.version, entry.writes_digest).hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// Runs the simulation of `seed` on a runtime of its own: one thread, virtual time. `Err`
/// carries the seed, the plan and every violation.
pub fn run(seed: u64) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("seed {seed}: cannot build the simulation's runtime: {e}"))?;
    let real = std::time::Instant::now();
    // A livelock (tasks that keep each other busy without waiting) freezes virtual time, so
    // no virtual deadline ends it: a real-time watchdog names the seed and stops the process.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(SEED_REAL_TIME_MAX)
        {
            // Straight to the stream: a test harness captures `eprintln!`, and exiting would
            // lose what it captured.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "seed {seed} livelocked: virtual time did not reach the end within {SEED_REAL_TIME_MAX:?} of real time; replay with CAIRN_SIM_SEED={seed}\n"
                )
                .as_bytes(),
            );
            std::process::exit(101);
        }
    });
    let outcome = runtime.block_on(simulate(seed));
    let _ = done.send(());
    let _ = watchdog.join();
    let mut report = outcome?;
    report.took = real.elapsed();
    Ok(report)
}

/// A node slot: its store wrapper (its own faults and pause switch) and, while alive, its node.
struct Slot {
    name: String,
    store: SimStore,
    node: Option<Node<SimStore>>,
    generation: u32,
    paused: bool,
    /// The crash point this node is armed to stop at, and whether it did.
    crash: Arc<ArmedCrash>,
}

/// A crash point a node is armed to stop at (`Fault::CrashAt`).
#[derive(Default)]
struct ArmedCrash {
    point: std::sync::Mutex<Option<CrashPoint>>,
    fired: std::sync::atomic::AtomicBool,
}

impl ArmedCrash {
    fn hook(self: &Arc<Self>) -> CrashHook {
        let armed = self.clone();
        CrashHook(Arc::new(move |at| {
            let mut point = armed.point.lock().unwrap_or_else(|p| p.into_inner());
            if *point == Some(at) {
                *point = None;
                armed.fired.store(true, std::sync::atomic::Ordering::SeqCst);
                return true;
            }
            false
        }))
    }

    fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Cluster {
    plan: Plan,
    /// The nodes whose frontend the SDK worker reaches (a killed or drained one is gone; a
    /// paused one stays, and holds the polls it gets).
    pollable: sdk_worker::Pollable,
    clock: Clock,
    entropy: Entropy,
    mem: MemStore,
    log: Arc<AuditLog>,
    peers: Arc<InProcessPeers>,
    slots: Vec<Slot>,
}

impl Cluster {
    fn fault_config(&self, slot: usize, generation: u32) -> FaultConfig {
        let seed = self
            .plan
            .seed
            .wrapping_mul(31)
            .wrapping_add(slot as u64 * 7 + u64::from(generation));
        let mut config = if self.plan.store_faults {
            FaultConfig {
                conflict_probability: 0.05,
                maybe_committed_applied_probability: 0.03,
                maybe_committed_lost_probability: 0.03,
                ..FaultConfig::none(seed)
            }
        } else {
            FaultConfig::none(seed)
        };
        if self.plan.latency {
            config.latency = Some((Duration::ZERO, Duration::from_millis(3)));
        }
        config
    }

    async fn start_slot(&mut self, slot: usize, same_id: bool) -> Result<(), String> {
        let generation = self.slots.get(slot).map_or(0, |s| s.generation + 1);
        let name = match self.slots.get(slot) {
            Some(s) if same_id => s.name.clone(),
            _ => format!("sim-{}-node-{slot}-{generation}", self.plan.seed),
        };
        if let Some(old) = self.slots.get(slot) {
            // A replaced node's store calls still in flight go on (a zombie's late writes,
            // which fencing must refuse).
            old.store.resume();
        }
        let store = FaultStore::new(
            AuditStore::new(self.mem.clone(), &name, self.log.clone()),
            self.fault_config(slot, generation),
        );
        // Faults only during the window; a node started while healing starts clean.
        store.set_enabled(self.plan.store_faults || self.plan.latency);
        let crash = Arc::new(ArmedCrash::default());
        let config = NodeConfig {
            node_id: name.clone(),
            shard_count: self.plan.shard_count,
            lease_timeout_ms: self.plan.lease_timeout_ms,
            advertise_address: Some(format!("inproc://{name}")),
            peers: Some(PeersHandle(self.peers.clone())),
            actor_idle_ms: 200,
            retention_ms: self
                .plan
                .retention_ms
                .unwrap_or(NodeConfig::default().retention_ms),
            executor_threads: 0,
            remote_activities: true,
            crash_hook: Some(crash.hook()),
            clock: self.clock.clone(),
            entropy: self.entropy.clone(),
            ..NodeConfig::default()
        };
        let node = workload::register(Node::builder())
            .config(config)
            .start(store.clone())
            .await
            .map_err(|e| format!("node {name} did not start: {e}"))?;
        self.unreachable(&name);
        self.pollable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.clone(), node.runtime()));
        let fresh = Slot {
            name,
            store,
            node: Some(node),
            generation,
            paused: false,
            crash,
        };
        if slot < self.slots.len() {
            self.slots[slot] = fresh;
        } else {
            self.slots.push(fresh);
        }
        Ok(())
    }

    /// Takes node `name`'s frontend out of the SDK worker's reach (its process is gone).
    fn unreachable(&self, name: &str) {
        self.pollable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _)| n != name);
    }

    /// Slots with a running node that is not paused (nor crashed at a crash point).
    fn healthy(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| {
                let slot = &self.slots[*i];
                slot.node.is_some() && !slot.paused && !slot.crash.fired()
            })
            .collect()
    }

    /// Whether taking `slot` out still leaves a healthy node: faults never take the whole
    /// cluster down at once (the checker is about surviving faults, not about total outages).
    fn may_disable(&self, slot: usize) -> bool {
        self.healthy().iter().any(|other| *other != slot)
    }

    /// A client of some healthy node (as a real client retries another node when one hangs).
    fn client(&self, pick: usize) -> Option<cairn::Client<SimStore>> {
        let healthy = self.healthy();
        let slot = *healthy.get(pick % healthy.len().max(1))?;
        self.slots[slot].node.as_ref().map(Node::client)
    }

    /// Some healthy node.
    fn node(&self, pick: usize) -> Option<Arc<cairn_runtime::Node<SimStore>>> {
        let healthy = self.healthy();
        let slot = *healthy.get(pick % healthy.len().max(1))?;
        self.slots[slot].node.as_ref().map(Node::runtime)
    }
}

/// Runs the simulation of `seed` on the current runtime, which must be a current-thread
/// runtime with paused time (see [`run`]); `Err` carries the seed, the plan and every
/// violation.
pub async fn simulate(seed: u64) -> Result<Report, String> {
    let plan = Plan::from_seed(seed);
    let started = Instant::now();
    workload::reset();
    let fail = |what: String| format!("seed {seed} failed: {what}\nplan: {plan:#?}");
    let mut cluster = Cluster {
        plan: plan.clone(),
        pollable: Arc::default(),
        clock: Clock::virtual_from(SIM_EPOCH_UNIX_MS),
        entropy: Entropy::seeded(seed ^ 0xe27e),
        mem: MemStore::new(),
        log: Arc::new(AuditLog::default()),
        peers: Arc::new(InProcessPeers::default()),
        slots: Vec::new(),
    };
    for slot in 0..plan.nodes {
        cluster.start_slot(slot, true).await.map_err(&fail)?;
    }
    let mut report = Report::default();
    let mut accepted: Vec<(String, JobSpec, u64)> = Vec::new();
    // The SDK worker: polls any node through the Temporal frontend for `sim_remote` attempts
    // and remote workflows' tasks and answers them, or, while `dies` is set, sometimes takes
    // one and never answers.
    let dies = Arc::new(std::sync::atomic::AtomicBool::new(
        plan.remote_worker_dies > 0.0,
    ));
    let sdk = sdk_worker::Worker {
        pollable: cluster.pollable.clone(),
        die_chance: plan.remote_worker_dies,
        dies: dies.clone(),
        served: Arc::default(),
    };
    let served = sdk.served.clone();
    let activity_worker = tokio::spawn(sdk.clone().serve_activities(seed ^ 0x3077));
    let workflow_worker = tokio::spawn(sdk.serve_workflows(seed ^ 0x3078));
    let mut flows_accepted: Vec<(String, u64)> = Vec::new();
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);

    // The timeline: job starts, signals, queries and faults, in time order.
    enum Event {
        Start(usize),
        Signal(usize),
        Fault(Fault),
        Restart(usize, bool),
        Resume(usize),
        Schedule(u64),
        StartFlow(usize),
    }
    let mut timeline: Vec<(u64, Event)> = Vec::new();
    let mut pending: Vec<(u64, Event)> = Vec::new();
    for (i, (start_at, _, _, signal_at)) in plan.jobs.iter().enumerate() {
        timeline.push((*start_at, Event::Start(i)));
        timeline.push((*signal_at, Event::Signal(i)));
    }
    for (at, fault) in &plan.faults {
        timeline.push((*at, Event::Fault(*fault)));
    }
    if let Some((at, every_ms)) = plan.schedule {
        timeline.push((at, Event::Schedule(every_ms)));
    }
    for (i, (at, _)) in plan.remote_flows.iter().enumerate() {
        timeline.push((*at, Event::StartFlow(i)));
    }
    let schedule_id = format!("sim-{seed}-sched");
    let mut schedule_created = false;
    // Latest first, so the next event is popped off the end; follow-ups (restarts, resumes)
    // are merged in as they are planned.
    timeline.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let window = Instant::now();
    loop {
        timeline.append(&mut pending);
        timeline.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        let Some((next, event)) = timeline.pop() else {
            break;
        };
        let elapsed = window.elapsed().as_millis() as u64;
        if next > elapsed {
            tokio::time::sleep(Duration::from_millis(next - elapsed)).await;
        }
        match event {
            Event::Start(i) => {
                let (_, spec, _, _) = plan.jobs[i];
                let id = format!("sim-{seed}-job-{i}");
                if start_job(&cluster, &mut rng, &id, spec).await {
                    accepted.push((id, spec, plan.jobs[i].2));
                }
            }
            Event::Signal(i) => {
                let (_, spec, value, _) = plan.jobs[i];
                if spec.signal {
                    let id = format!("sim-{seed}-job-{i}");
                    // Signals to a job not started (yet) are retried at healing.
                    let _ = send_signal(&cluster, &mut rng, &id, value).await;
                }
                // A query on the way, through whichever node: it must not break anything.
                let id = format!("sim-{seed}-job-{i}");
                if let Some(client) = cluster.client(rng.random_range(0..8)) {
                    let handle = client.handle::<u64>(&id).map_err(|e| fail(e.to_string()))?;
                    let _ = tokio::time::timeout(CLIENT_CALL_TIMEOUT, handle.query(&PROGRESS, ()))
                        .await;
                }
            }
            Event::Fault(fault) => {
                let now = window.elapsed().as_millis() as u64;
                match fault {
                    Fault::Kill {
                        slot,
                        restart_after_ms,
                        same_id,
                    } => {
                        if cluster.may_disable(slot)
                            && let Some(node) = cluster.slots[slot].node.take()
                        {
                            cluster.unreachable(&cluster.slots[slot].name);
                            node.crash();
                            report.faults_applied += 1;
                            pending.push((now + restart_after_ms, Event::Restart(slot, same_id)));
                        }
                    }
                    Fault::Pause { slot, for_ms } => {
                        if cluster.slots[slot].node.is_some()
                            && !cluster.slots[slot].paused
                            && cluster.may_disable(slot)
                        {
                            cluster.slots[slot].store.pause();
                            cluster.slots[slot].paused = true;
                            report.faults_applied += 1;
                            pending.push((now + for_ms, Event::Resume(slot)));
                        }
                    }
                    Fault::Add => {
                        let slot = cluster.slots.len();
                        cluster.start_slot(slot, false).await.map_err(&fail)?;
                        report.faults_applied += 1;
                    }
                    Fault::CrashAt { slot, point } => {
                        if cluster.may_disable(slot) && cluster.slots[slot].node.is_some() {
                            *cluster.slots[slot]
                                .crash
                                .point
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()) = Some(point);
                            report.faults_applied += 1;
                        }
                    }
                    Fault::Drain { slot } => {
                        if cluster.may_disable(slot)
                            && let Some(node) = cluster.slots[slot].node.take()
                        {
                            // A drain of a paused node waits for the pause to end.
                            cluster.unreachable(&cluster.slots[slot].name);
                            tokio::spawn(async move { node.shutdown().await });
                            report.faults_applied += 1;
                        }
                    }
                }
            }
            Event::Restart(slot, same_id) => {
                cluster.start_slot(slot, same_id).await.map_err(&fail)?;
            }
            Event::Resume(slot) => {
                cluster.slots[slot].store.resume();
                cluster.slots[slot].paused = false;
            }
            Event::Schedule(every_ms) => {
                schedule_created =
                    create_schedule(&cluster, &mut rng, &schedule_id, seed, every_ms).await;
            }
            Event::StartFlow(i) => {
                let id = format!("sim-{seed}-flow-{i}");
                let x = plan.remote_flows[i].1;
                if sdk_worker::start_remote_flow(&cluster, &mut rng, &id, x).await {
                    flows_accepted.push((id, x));
                }
            }
        }
    }

    // Healing: no more faults, every slot alive again, the remote worker answers everything.
    dies.store(false, std::sync::atomic::Ordering::SeqCst);
    for slot in &mut cluster.slots {
        report.store_faults_injected += slot.store.stats().faults();
        slot.store.resume();
        slot.paused = false;
        slot.store.set_enabled(false);
    }
    for slot in 0..cluster.slots.len() {
        // A node that crashed at its point stays down until now; one armed that never reached
        // it is disarmed.
        *cluster.slots[slot]
            .crash
            .point
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if cluster.slots[slot].crash.fired()
            && let Some(node) = cluster.slots[slot].node.take()
        {
            node.crash();
            report.crash_points_fired += 1;
        }
        if cluster.slots[slot].node.is_none() {
            cluster.start_slot(slot, true).await.map_err(&fail)?;
            cluster.slots[slot].store.set_enabled(false);
        }
    }
    report.jobs_accepted = accepted.len();

    // Convergence: every accepted job completes.
    let deadline = Instant::now() + CONVERGENCE_TIMEOUT;
    let mut finished = Vec::new();
    for (id, spec, value) in &accepted {
        if spec.signal {
            // Signals sent during the window may have gone to a start not yet accepted.
            loop {
                match send_signal(&cluster, &mut rng, id, *value).await {
                    Ok(()) => break,
                    Err(ClientError::NotRunning { .. }) => break,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(fail(format!("{id}: cannot signal: {e}"))),
                }
            }
        }
        let expected = (
            workload::expected(spec, *value),
            spec.continues as usize + 1,
        );
        finished.push(
            finish(&cluster, &mut rng, id, expected, deadline)
                .await
                .map_err(&fail)?,
        );
    }
    for (id, x) in &flows_accepted {
        let expected = (sdk_worker::remote_flow_value(*x), 1);
        finished.push(
            finish(&cluster, &mut rng, id, expected, deadline)
                .await
                .map_err(&fail)?,
        );
    }
    report.remote_flows = flows_accepted.len();
    report.runs = finished.iter().map(|f| f.runs.len()).sum();
    if schedule_created {
        let scheduled = scheduled_runs(&cluster, &mut rng, &schedule_id, seed, deadline)
            .await
            .map_err(&fail)?;
        report.scheduled = scheduled.len();
        finished.extend(scheduled);
    }
    activity_worker.abort();
    workflow_worker.abort();
    if let Some(retention_ms) = plan.retention_ms {
        // Every workflow closed by now; past its retention (and a few sweeps), each is gone.
        // (The sweeper looks every quarter of the period.)
        tokio::time::sleep(Duration::from_millis(
            retention_ms + retention_ms / 4 + 2_000,
        ))
        .await;
        for f in &finished {
            let client = cluster.client(rng.random_range(0..8)).expect("a live node");
            let handle = client
                .handle::<u64>(&f.workflow_id)
                .map_err(|e| fail(e.to_string()))?;
            match handle.describe().await {
                Err(ClientError::NotFound { .. }) => report.retired += 1,
                other => {
                    return Err(fail(format!(
                        "{} closed more than {retention_ms} ms ago and is still there: {other:?}",
                        f.workflow_id
                    )));
                }
            }
        }
    }
    let count = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::SeqCst);
    report.remote_answered = count(&served.activities_answered);
    report.remote_abandoned = count(&served.activities_abandoned);
    report.workflow_tasks_answered = count(&served.workflow_tasks_answered);
    report.workflow_tasks_abandoned = count(&served.workflow_tasks_abandoned);
    for slot in &mut cluster.slots {
        if let Some(node) = slot.node.take() {
            node.shutdown().await;
        }
    }
    let commits = cluster.log.commits();
    report.audited_commits = commits.len();
    let violations = check::check(&finished, &commits);
    if !violations.0.is_empty() {
        return Err(fail(violations.0.join("\n")));
    }
    report.virtual_time = started.elapsed();
    report.trace = cluster.log.trace();
    Ok(report)
}

/// How accepted workflow `id` ended, read through some live node once it completes: its
/// result, history and last run, and every run visibility lists under its id, beside what
/// it should have ended with, `(result, runs in its chain)`.
async fn finish(
    cluster: &Cluster,
    rng: &mut SmallRng,
    id: &str,
    (expected, runs_expected): (u64, usize),
    deadline: Instant,
) -> Result<Finished, String> {
    let (result, history, run_id) = loop {
        let client = cluster.client(rng.random_range(0..8)).expect("a live node");
        let handle = client.handle::<u64>(id).map_err(|e| e.to_string())?;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, handle.result()).await {
            Ok(Ok(result)) => {
                let history = handle.history().await.map_err(|e| e.to_string())?;
                let run_id = handle
                    .describe()
                    .await
                    .map_err(|e| e.to_string())?
                    .summary
                    .run_id;
                break (result, history, run_id);
            }
            Ok(Err(WorkflowOutcomeError::Client(_))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => return Err(format!("{id} ended badly: {e}")),
            Err(_) => {
                let description = handle.describe().await;
                return Err(format!(
                    "{id} did not complete within {CONVERGENCE_TIMEOUT:?} of healing: {description:#?}"
                ));
            }
        }
    };
    let runs = loop {
        let client = cluster.client(rng.random_range(0..8)).expect("a live node");
        let listed = client
            .list_workflows(&format!("WorkflowId = '{id}'"), Some(100), None)
            .await;
        match listed {
            Ok(page) => break page.workflows.iter().map(|w| w.run_id).collect(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("{id}: cannot list its runs: {e}")),
        }
    };
    Ok(Finished {
        workflow_id: id.to_string(),
        run_id,
        runs,
        runs_expected,
        shard: cairn_runtime::shard_of(id, cluster.plan.shard_count),
        expected,
        result,
        history,
    })
}

/// Starts a job through some live node, retrying through others; true once accepted (by this
/// call or, after an ambiguous failure, by an earlier one).
async fn start_job(cluster: &Cluster, rng: &mut SmallRng, id: &str, spec: JobSpec) -> bool {
    for _ in 0..10 {
        let Some(client) = cluster.client(rng.random_range(0..8)) else {
            return false;
        };
        let call = client
            .start(sim_job, id, spec)
            .id_reuse_policy(IdReusePolicy::RejectDuplicate)
            .send();
        match tokio::time::timeout(CLIENT_CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => return true,
            // An earlier attempt that looked failed did land.
            Ok(Err(ClientError::AlreadyRunning { .. } | ClientError::DuplicateRejected { .. })) => {
                return true;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

async fn send_signal(
    cluster: &Cluster,
    rng: &mut SmallRng,
    id: &str,
    value: u64,
) -> Result<(), ClientError> {
    let mut last = ClientError::NodeStopped;
    for _ in 0..10 {
        let Some(client) = cluster.client(rng.random_range(0..8)) else {
            break;
        };
        let handle = client.handle::<u64>(id)?;
        match tokio::time::timeout(CLIENT_CALL_TIMEOUT, handle.signal(&GO, value)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e @ (ClientError::NotRunning { .. } | ClientError::NotFound { .. }))) => {
                return Err(e);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = ClientError::NodeStopped,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(last)
}

/// The input of the schedule's workflows.
fn schedule_input(seed: u64) -> u64 {
    seed.wrapping_mul(7_919)
}

/// Creates the schedule through some live node, retrying through others; true once it exists
/// (made by this call or, after an ambiguous failure, by an earlier one).
async fn create_schedule(
    cluster: &Cluster,
    rng: &mut SmallRng,
    schedule_id: &str,
    seed: u64,
    every_ms: u64,
) -> bool {
    for _ in 0..10 {
        let Some(client) = cluster.client(rng.random_range(0..8)) else {
            return false;
        };
        let call = client
            .schedule(workload::sim_child, schedule_id, schedule_input(seed))
            .interval(Duration::from_millis(every_ms))
            .overlap(cairn::OverlapPolicy::AllowAll)
            .create();
        match tokio::time::timeout(CLIENT_CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) if e.to_string().contains("already") => return true,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

/// After healing: waits until the schedule has started a workflow, pauses it, and returns every
/// workflow it started, each awaited to its end (they are checked like the jobs).
async fn scheduled_runs(
    cluster: &Cluster,
    rng: &mut SmallRng,
    schedule_id: &str,
    seed: u64,
    deadline: Instant,
) -> Result<Vec<Finished>, String> {
    let prefix = format!("{schedule_id}-");
    let list = |client: cairn::Client<SimStore>| async move {
        let page = client
            .list_workflows("WorkflowType = 'sim_child'", Some(1_000), None)
            .await?;
        Ok::<_, ClientError>(page.workflows)
    };
    // Liveness: a schedule that exists fires, faults or not.
    loop {
        let client = cluster.client(rng.random_range(0..8)).expect("a live node");
        if let Ok(found) = list(client).await
            && found.iter().any(|w| w.workflow_id.starts_with(&prefix))
        {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("schedule {schedule_id} never started a workflow"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let client = cluster.client(rng.random_range(0..8)).expect("a live node");
        match client
            .schedule_handle(schedule_id)
            .pause("the simulation ends")
            .await
        {
            Ok(()) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("schedule {schedule_id} cannot be paused: {e}")),
        }
    }
    let client = cluster.client(rng.random_range(0..8)).expect("a live node");
    let started = list(client)
        .await
        .map_err(|e| format!("cannot list the schedule's workflows: {e}"))?;
    let mut out = Vec::new();
    for summary in started
        .into_iter()
        .filter(|w| w.workflow_id.starts_with(&prefix))
    {
        let id = summary.workflow_id;
        let client = cluster.client(rng.random_range(0..8)).expect("a live node");
        let handle = client.handle::<u64>(&id).map_err(|e| e.to_string())?;
        let left = deadline.saturating_duration_since(Instant::now());
        let result = match tokio::time::timeout(left, handle.result()).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => return Err(format!("{id} (scheduled) ended badly: {e}")),
            Err(_) => return Err(format!("{id} (scheduled) did not complete")),
        };
        let history = handle.history().await.map_err(|e| e.to_string())?;
        out.push(Finished {
            workflow_id: id.clone(),
            run_id: summary.run_id,
            runs: vec![summary.run_id],
            runs_expected: 1,
            shard: cairn_runtime::shard_of(&id, cluster.plan.shard_count),
            expected: workload::child_value(schedule_input(seed)),
            result,
            history,
        });
    }
    Ok(out)
}
