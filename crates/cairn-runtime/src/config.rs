//! A node's settings (`NodeConfig`) and the crash points tests can stop it at.

use crate::clock::{Clock, Entropy};
use crate::peers::PeersHandle;
use std::sync::Arc;

/// Default of `NodeConfig::activity_attempts_dispatched_max`.
///
/// An attempt waiting for a worker slot holds its task (input included) and a small task on the
/// runtime, about a kilobyte with a small input: 16 MiB at the bound. Tasks past it cost two more
/// writes each (the deferred marker and a claim), so the bound sits well above the default
/// `activity_concurrency_max` (1,000) to keep ordinary bursts on the direct path.
pub const ACTIVITY_ATTEMPTS_DISPATCHED_MAX: usize = 16_384;

/// Most commit requests one node has submitted and not yet answered (queued, or in the batch
/// in flight): the committer's queue bound (`NodeConfig::commit_requests_queued_max`). Past
/// it, a client write is refused at once (`ClientError::Overloaded`), the node's own
/// transitions, claims and timer writes wait for a slot, and detached housekeeping is
/// skipped (it is repeated later).
pub const COMMIT_REQUESTS_QUEUED_MAX: usize = 16_384;

/// Most client writes one node keeps waiting for the committer. Past it a client write is
/// refused at once with `ClientError::Overloaded` (HTTP 429 with `Retry-After`): latency stays
/// bounded and the client learns to back off, instead of every request queueing longer.
pub const CLIENT_COMMITS_IN_FLIGHT_MAX: usize = 8_192;

/// Default of [`NodeConfig::result_watches_max`]: a tenth of the 10,000 watches FoundationDB
/// allows one client by default, leaving the rest to the shards' doorbells (one per shard held).
pub const RESULT_WATCHES_MAX: usize = 1_000;

/// How often a result waiter past [`NodeConfig::result_watches_max`] reads the run again, at
/// most (see [`RESULT_POLLS_PER_SECOND_MAX`]).
pub const RESULT_POLL_MS: u64 = 1_000;

/// Most reads a second a node's polling result waiters make together: with more waiters than
/// this polling, each polls less often than [`RESULT_POLL_MS`], so their load on the store stays
/// bounded however many there are (100,000 waiters polling each second starved the node's own
/// commits past FoundationDB's 5 s).
pub const RESULT_POLLS_PER_SECOND_MAX: u64 = 1_000;

/// The pause between two reads of one polling result waiter, when `pollers` poll at once.
pub(crate) fn result_poll_pause(pollers: u64) -> std::time::Duration {
    let spread_ms = pollers.saturating_mul(1_000) / RESULT_POLLS_PER_SECOND_MAX;
    std::time::Duration::from_millis(RESULT_POLL_MS.max(spread_ms))
}

const _: () = assert!(COMMIT_REQUESTS_QUEUED_MAX > CLIENT_COMMITS_IN_FLIGHT_MAX);

/// A node's settings. Each field documents its default.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity in membership and leases. Default: a random UUID. Set it to keep a node's
    /// identity across restarts: a node restarted under its id takes its shards back at once,
    /// while a new id waits for the old one's leases to lapse (`lease_timeout_ms`).
    pub node_id: String,
    /// Namespace of this node's workflows. Default `"default"`.
    pub namespace: String,
    /// Fixed number of shards. Default 16. Must not change for a given store.
    pub shard_count: u32,
    /// Threads that run workflow code. Default 2. 0 runs workflow code on the node's own
    /// runtime, which must then be a current-thread runtime (the simulator's: one thread, so a
    /// seed replays exactly).
    pub executor_threads: usize,
    /// Most active (in-memory) runs per shard before the least recently used are passivated.
    /// Default 4,096.
    pub actor_cache_max_per_shard: usize,
    /// A run idle this long is passivated. Default 30,000 ms.
    pub actor_idle_ms: u64,
    /// Most activity attempts running at once. Default 1,000.
    pub activity_concurrency_max: usize,
    /// Most activity attempts dispatched to this node's workers at once (running, claiming or
    /// waiting for one of `activity_concurrency_max` slots). Tasks written past it wait in the
    /// store, marked deferred, and are pulled as attempts end. At least 1. Default
    /// [`ACTIVITY_ATTEMPTS_DISPATCHED_MAX`].
    pub activity_attempts_dispatched_max: usize,
    /// Attempts of activity types not registered on this node wait for a remote worker (a
    /// Temporal SDK worker polling the node's gRPC API) instead of failing with
    /// `ActivityTypeNotRegistered`. Default false.
    pub remote_activities: bool,
    /// How long a node's leases outlive its last membership heartbeat: the time a dead node's
    /// shards wait before others take them over. Heartbeats come every third of it, placement
    /// rounds every fifth (at most 250 ms). At least 100. Default 10,000 ms.
    pub lease_timeout_ms: u64,
    /// Where other nodes reach this one (its HTTP API, or an `inproc://` name), published in
    /// its membership record for forwarded queries. Default none (queries for shards held
    /// elsewhere then fail with `ShardUnavailable`).
    pub advertise_address: Option<String>,
    /// The transport to other nodes. Default none.
    pub peers: Option<PeersHandle>,
    /// How far ahead a shard keeps its durable timers in memory; later ones stay in the store
    /// and are paged in as their time comes near. Default 60,000 ms.
    pub timer_window_ms: u64,
    /// Most durable timers one shard keeps in memory; past it the latest wait in the store.
    /// Default 16,384.
    pub timers_in_memory_max_per_shard: usize,
    /// Closed workflows (their records, histories and visibility entries) are deleted this
    /// long after they close, in bounded background batches. Default 7 days.
    pub retention_ms: u64,
    /// Most store watches this node's result waiters hold at once (a waiter for a run held by
    /// another node watches its workflow record); waiters past it read the record every
    /// [`RESULT_POLL_MS`] instead. Default [`RESULT_WATCHES_MAX`].
    pub result_watches_max: usize,
    /// Most commit requests submitted and not yet answered (the committer's queue). Default
    /// [`COMMIT_REQUESTS_QUEUED_MAX`] (16,384); 0 counts as 1.
    pub commit_requests_queued_max: usize,
    /// Most commit batches in flight at once (separate store transactions). Default 0: the
    /// store's own [`cairn_store::Store::commit_batches_in_flight`] (1 on the local stores, more
    /// on FoundationDB, where a commit is a network round trip).
    pub commit_batches_in_flight_max: usize,
    /// Where the node reads the time. Default the system clock; the simulator passes virtual
    /// time.
    pub clock: Clock,
    /// Where the node draws randomness (run ids, workflow seeds, instance and request ids,
    /// retry jitter). Default the operating system's; the simulator passes a seeded stream.
    pub entropy: Entropy,
    /// Test hook: asked at each crash point; answering true stops the node right there, as a
    /// crash would. Default none.
    pub crash_hook: Option<CrashHook>,
}

impl NodeConfig {
    /// Whether the node runs every task on its caller's runtime (`executor_threads` 0): no
    /// thread of its own, as the simulator needs.
    pub fn is_single_threaded(&self) -> bool {
        self.executor_threads == 0
    }
}

/// Places in the runtime where a test can make the node crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashPoint {
    /// A transition was computed but not yet submitted for commit.
    BeforeCommit,
    /// A transition committed; its side effects (tasks, timers, waiters) not yet released.
    AfterCommitBeforeEffects,
    /// An activity attempt finished; its result not yet handed to the run.
    DuringActivity,
}

/// See [`NodeConfig::crash_hook`].
#[derive(Clone)]
pub struct CrashHook(pub Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>);

impl std::fmt::Debug for CrashHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashHook")
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: uuid::Uuid::now_v7().to_string(),
            namespace: "default".into(),
            shard_count: 16,
            executor_threads: 2,
            actor_cache_max_per_shard: 4_096,
            actor_idle_ms: 30_000,
            activity_concurrency_max: 1_000,
            activity_attempts_dispatched_max: ACTIVITY_ATTEMPTS_DISPATCHED_MAX,
            remote_activities: false,
            lease_timeout_ms: 10_000,
            advertise_address: None,
            peers: None,
            timer_window_ms: 60_000,
            timers_in_memory_max_per_shard: 16_384,
            retention_ms: 7 * 24 * 3_600_000,
            commit_requests_queued_max: COMMIT_REQUESTS_QUEUED_MAX,
            commit_batches_in_flight_max: 0,
            result_watches_max: RESULT_WATCHES_MAX,
            clock: Clock::System,
            entropy: Entropy::os(),
            crash_hook: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_waiters_share_a_bounded_rate() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(result_poll_pause(1), ms(RESULT_POLL_MS));
        assert_eq!(
            result_poll_pause(RESULT_POLLS_PER_SECOND_MAX),
            ms(RESULT_POLL_MS)
        );
        // Ten times the rate's worth of pollers: each waits ten seconds, a thousand reads a
        // second in all.
        assert_eq!(
            result_poll_pause(10 * RESULT_POLLS_PER_SECOND_MAX),
            ms(10 * RESULT_POLL_MS)
        );
        assert_eq!(
            result_poll_pause(u64::MAX),
            ms(u64::MAX / RESULT_POLLS_PER_SECOND_MAX)
        );
    }
}
