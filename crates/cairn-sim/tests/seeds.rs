//! The simulated cluster under seeded faults: every seed's plan runs to convergence and the
//! checker finds nothing wrong.
//!
//! `CAIRN_SIM_SEEDS=N` runs N seeds (default 20) from `CAIRN_SIM_FIRST_SEED` (default 1);
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
const REGRESSION_SEEDS: &[u64] = &[];

/// Proves the cluster converges with its invariants intact under every seed's faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_simulations_converge_and_check_clean() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let seeds: Vec<u64> = match env_u64("CAIRN_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("CAIRN_SIM_FIRST_SEED").unwrap_or(1);
            let count = env_u64("CAIRN_SIM_SEEDS").unwrap_or(20);
            (first..first + count)
                .chain(REGRESSION_SEEDS.iter().copied())
                .collect()
        }
    };
    let started = Instant::now();
    for seed in seeds {
        match cairn_sim::simulate(seed).await {
            Ok(report) => println!(
                "seed {seed}: {} jobs, {} faults applied, {} store faults, {} audited commits, {:?}",
                report.jobs_accepted,
                report.faults_applied,
                report.store_faults_injected,
                report.audited_commits,
                report.took
            ),
            Err(failure) => panic!("{failure}\nreplay with CAIRN_SIM_SEED={seed}"),
        }
    }
    println!("all seeds in {:?}", started.elapsed());
}
