//! Counters a node keeps about itself (exported as Prometheus text by the server later).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Node-wide counters. All relaxed atomics: they are statistics, not synchronization.
#[derive(Debug, Default)]
pub struct Metrics {
    pub commits: AtomicU64,
    pub committed_requests: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub transitions: AtomicU64,
    pub workflows_started: AtomicU64,
    pub workflows_closed: AtomicU64,
    pub activities_succeeded: AtomicU64,
    pub activities_failed: AtomicU64,
    pub activations: AtomicU64,
    pub passivations: AtomicU64,
    pub active_actors: AtomicU64,
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
    }

    /// Mean requests per committed batch so far.
    pub fn mean_batch_size(&self) -> f64 {
        let commits = self.commits.load(Ordering::Relaxed).max(1);
        self.committed_requests.load(Ordering::Relaxed) as f64 / commits as f64
    }
}
