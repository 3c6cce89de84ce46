//! The simulated cluster under seeded faults: every seed's plan runs to convergence, the
//! checker finds nothing wrong, and a seed replays exactly.
//!
//! `CAIRN_SIM_SEEDS=N` runs N seeds (default 200) from `CAIRN_SIM_FIRST_SEED` (default 1);
//! `CAIRN_SIM_SEED=S` runs seed S alone, which is how a failure is replayed. `RUST_LOG` turns
//! on the nodes' logs.

use std::time::Instant;

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

/// Seeds that once found a bug, kept so the bug stays fixed.
const REGRESSION_SEEDS: &[u64] = &[
    // A deferred marker of an attempt already started was pulled and refused in a busy loop
    // (virtual time froze): the puller now clears such markers.
    1355,
    // The puller pulled deferred tasks of a tenure the node had lost without noticing yet;
    // their claims were fenced at once, freeing units that woke it again, a busy loop: a
    // fenced claim now drops that tenure's backlog, and passes are at least 5 ms apart.
    3709,
];

/// Seeds a plain `cargo test` runs (and `.ci/run` with it).
const SEEDS_DEFAULT: u64 = 200;

fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .with_ansi(false)
            .without_time()
            .try_init();
    }
}

/// Proves the cluster converges with its invariants intact under every seed's faults.
#[test]
fn seeded_simulations_converge_and_check_clean() {
    logs();
    let seeds: Vec<u64> = match env_u64("CAIRN_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("CAIRN_SIM_FIRST_SEED").unwrap_or(1);
            let count = env_u64("CAIRN_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
            (first..first + count)
                .chain(REGRESSION_SEEDS.iter().copied())
                .collect()
        }
    };
    let started = Instant::now();
    let mut virtual_ms = 0u128;
    let (mut crash_points, mut abandoned, mut chained, mut scheduled, mut retired) =
        (0, 0, 0, 0, 0);
    let (mut flows, mut tasks_abandoned) = (0, 0);
    for seed in &seeds {
        match cairn_sim::run(*seed) {
            Ok(report) => {
                virtual_ms += report.virtual_time.as_millis();
                crash_points += report.crash_points_fired;
                abandoned += report.remote_abandoned;
                chained += report.runs - report.jobs_accepted;
                scheduled += report.scheduled;
                retired += report.retired;
                flows += report.remote_flows;
                tasks_abandoned += report.workflow_tasks_abandoned;
                println!(
                    "seed {seed}: {} jobs ({} runs, {} scheduled, {} retired, {} remote workflows), {} faults applied ({} crash points), {} store faults, remote activities {}/{} answered/abandoned, workflow tasks {}/{}, {} audited commits, {} commits traced (fingerprint {:016x}), {:?} virtual in {:?}",
                    report.jobs_accepted,
                    report.runs,
                    report.scheduled,
                    report.retired,
                    report.remote_flows,
                    report.faults_applied,
                    report.crash_points_fired,
                    report.store_faults_injected,
                    report.remote_answered,
                    report.remote_abandoned,
                    report.workflow_tasks_answered,
                    report.workflow_tasks_abandoned,
                    report.audited_commits,
                    report.trace.len(),
                    report.fingerprint(),
                    report.virtual_time,
                    report.took
                );
            }
            Err(failure) => panic!("{failure}\nreplay with CAIRN_SIM_SEED={seed}"),
        }
    }
    println!(
        "{} seeds, {} s of virtual time, in {:?}: {crash_points} nodes stopped at crash points, {abandoned} remote activity tasks and {tasks_abandoned} workflow tasks abandoned, {flows} remote workflows through the Temporal frontend, {chained} continued-as-new runs, {scheduled} scheduled workflows, {retired} deleted by retention",
        seeds.len(),
        virtual_ms / 1_000,
        started.elapsed()
    );
    // The faults the seeds plan must happen, or the seeds prove less than they claim.
    if seeds.len() >= 50 {
        assert!(crash_points > 0, "no node stopped at a crash point");
        assert!(
            abandoned > 0,
            "the SDK worker never abandoned an activity task"
        );
        assert!(flows > 0, "no remote workflow ran");
        assert!(
            tasks_abandoned > 0,
            "the SDK worker never abandoned a workflow task"
        );
        assert!(chained > 0, "no job continued as new");
        assert!(scheduled > 0, "no schedule fired");
        assert!(retired > 0, "retention deleted nothing");
    }
}

/// A seed run twice gives the same trace: every landed commit, by the same node, at the same
/// virtual time, writing the same bytes. Seeds with store faults, kills and pauses included.
#[test]
fn a_seed_replays_byte_for_byte() {
    logs();
    let seeds = match env_u64("CAIRN_SIM_SEED") {
        Some(seed) => vec![seed],
        None => vec![3, 11, 42],
    };
    for seed in seeds {
        let first = cairn_sim::run(seed).unwrap_or_else(|f| panic!("{f}"));
        let second = cairn_sim::run(seed).unwrap_or_else(|f| panic!("{f}"));
        assert!(
            first.trace.len() > 100,
            "seed {seed}: only {} commits traced",
            first.trace.len()
        );
        if let Some(at) = (0..first.trace.len().max(second.trace.len()))
            .find(|i| first.trace.get(*i) != second.trace.get(*i))
        {
            panic!(
                "seed {seed} diverged at commit {at} of {}/{}:\nfirst:  {:?}\nsecond: {:?}\nreplay with CAIRN_SIM_SEED={seed}",
                first.trace.len(),
                second.trace.len(),
                first.trace.get(at),
                second.trace.get(at)
            );
        }
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.virtual_time, second.virtual_time);
    }
}
