//! What a node measures about itself, exported as Prometheus text by `cairn-server`.
//!
//! Counters are relaxed atomics (statistics, not synchronization); histograms have fixed
//! buckets; per-workflow-type counts sit behind one mutex, touched once per start and close.

use cairn_core::RunStatus;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram of durations (seconds) or sizes.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths.
    sum_micro: AtomicU64,
}

/// Bucket bounds for latencies, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
];
/// Bucket bounds for commit batch sizes, in requests.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "bucket bounds ascend"
        );
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self.bounds.partition_point(|b| *b < value);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, value: Duration) {
        self.observe(value.as_secs_f64());
    }

    /// Appends the Prometheus exposition (`_bucket`, `_sum`, `_count`).
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Runs per workflow type, by how they ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct TypeCounts {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub canceled: u64,
    pub terminated: u64,
    pub timed_out: u64,
    /// Runs that closed by continuing as new (each also counts its successor as started).
    pub continued_as_new: u64,
}

/// Everything a node measures.
#[derive(Debug)]
pub struct Metrics {
    pub commits: AtomicU64,
    pub committed_requests: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub transitions: AtomicU64,
    pub activities_succeeded: AtomicU64,
    pub activities_failed: AtomicU64,
    pub activations: AtomicU64,
    pub passivations: AtomicU64,
    pub active_actors: AtomicU64,
    /// Shards claimed by this node (takeovers included).
    pub shard_claims: AtomicU64,
    /// Claims of shards whose previous holder had died (its lease lapsed).
    pub shard_takeovers: AtomicU64,
    /// Shards this node handed off (placed elsewhere, or draining).
    pub shard_handoffs: AtomicU64,
    /// Shards this node found it had lost (taken over while it was paused or cut off).
    pub shard_losses: AtomicU64,
    /// Durable timers held in memory, over all shards of this node.
    pub timers_in_memory: AtomicU64,
    /// Closed workflows and replaced runs deleted by retention.
    pub retention_deleted: AtomicU64,
    /// Runs with mail found when a shard was claimed, and woken.
    pub runs_rehydrated: AtomicU64,
    /// Commits of the node's own work that waited for a place in the full committer queue.
    pub commit_slot_waits: AtomicU64,
    /// Detached housekeeping writes skipped because the committer queue was full.
    pub commits_skipped: AtomicU64,
    /// Activity attempts dispatched to this node's workers now (running, claiming, or waiting
    /// for a slot); at most `activity_attempts_dispatched_max`.
    pub activity_attempts_dispatched: AtomicU64,
    /// The most that were ever dispatched at once.
    pub activity_attempts_dispatched_peak: AtomicU64,
    /// Tasks written deferred (no room in the workers), then pulled as attempts ended.
    pub activity_tasks_deferred: AtomicU64,
    /// Attempts a shard's new holder found started by an earlier tenure and failed at once as
    /// lost (their results could no longer land), instead of waiting out their timeouts.
    pub activity_attempts_lost: AtomicU64,
    /// Store watches result waiters hold now (at most `NodeConfig::result_watches_max`).
    pub result_watches: AtomicU64,
    /// Reads of a run's record by result waiters past the watch bound.
    pub result_polls: AtomicU64,
    /// Result waiters past the watch bound now (each reads its run now and then).
    pub result_pollers: AtomicU64,
    /// Queries sent to the node holding the run.
    pub queries_forwarded: AtomicU64,
    /// Commit batches in flight now (separate store transactions), and the most there ever
    /// were at once (at most the committer's bound, `NodeConfig::commit_batches_in_flight_max`).
    pub commit_batches_in_flight: AtomicU64,
    pub commit_batches_in_flight_peak: AtomicU64,
    /// Membership heartbeat commit latency (one heartbeat renews every lease of the node).
    pub lease_renew_latency: Histogram,
    pub commit_latency: Histogram,
    pub commit_batch_size: Histogram,
    pub workflow_execution_time: Histogram,
    pub activity_schedule_to_start: Histogram,
    by_type: Mutex<BTreeMap<String, TypeCounts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            commits: AtomicU64::new(0),
            committed_requests: AtomicU64::new(0),
            commit_micros_total: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            activities_succeeded: AtomicU64::new(0),
            activities_failed: AtomicU64::new(0),
            activations: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            active_actors: AtomicU64::new(0),
            shard_claims: AtomicU64::new(0),
            shard_takeovers: AtomicU64::new(0),
            shard_handoffs: AtomicU64::new(0),
            shard_losses: AtomicU64::new(0),
            timers_in_memory: AtomicU64::new(0),
            retention_deleted: AtomicU64::new(0),
            runs_rehydrated: AtomicU64::new(0),
            commit_slot_waits: AtomicU64::new(0),
            commits_skipped: AtomicU64::new(0),
            activity_attempts_dispatched: AtomicU64::new(0),
            activity_attempts_dispatched_peak: AtomicU64::new(0),
            activity_tasks_deferred: AtomicU64::new(0),
            activity_attempts_lost: AtomicU64::new(0),
            result_watches: AtomicU64::new(0),
            result_polls: AtomicU64::new(0),
            result_pollers: AtomicU64::new(0),
            commit_batches_in_flight: AtomicU64::new(0),
            commit_batches_in_flight_peak: AtomicU64::new(0),
            queries_forwarded: AtomicU64::new(0),
            lease_renew_latency: Histogram::new(LATENCY_BUCKETS),
            commit_latency: Histogram::new(LATENCY_BUCKETS),
            commit_batch_size: Histogram::new(BATCH_BUCKETS),
            workflow_execution_time: Histogram::new(LATENCY_BUCKETS),
            activity_schedule_to_start: Histogram::new(LATENCY_BUCKETS),
            by_type: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    pub(crate) fn record_commit(&self, requests: usize, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
        self.commit_micros_total.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.commit_latency.observe_duration(took);
        self.commit_batch_size.observe(requests as f64);
    }

    pub(crate) fn record_started(&self, workflow_type: &str) {
        let mut by_type = self.by_type.lock().unwrap_or_else(|p| p.into_inner());
        by_type
            .entry(workflow_type.to_string())
            .or_default()
            .started += 1;
    }

    pub(crate) fn record_closed(&self, workflow_type: &str, status: RunStatus, ran_for: Duration) {
        self.workflow_execution_time.observe_duration(ran_for);
        let mut by_type = self.by_type.lock().unwrap_or_else(|p| p.into_inner());
        let counts = by_type.entry(workflow_type.to_string()).or_default();
        match status {
            RunStatus::Completed => counts.completed += 1,
            RunStatus::Failed => counts.failed += 1,
            RunStatus::Canceled => counts.canceled += 1,
            RunStatus::Terminated => counts.terminated += 1,
            RunStatus::TimedOut => counts.timed_out += 1,
            RunStatus::ContinuedAsNew => {
                counts.continued_as_new += 1;
                counts.started += 1;
            }
            RunStatus::Running => {}
        }
    }

    /// Per-type counts (since this node started).
    pub fn by_type(&self) -> BTreeMap<String, TypeCounts> {
        self.by_type
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Mean requests per committed batch so far.
    pub fn mean_batch_size(&self) -> f64 {
        let commits = self.commits.load(Ordering::Relaxed).max(1);
        self.committed_requests.load(Ordering::Relaxed) as f64 / commits as f64
    }
}
