//! A fault-injecting wrapper around any [`Store`]: seeded, so a failing run replays exactly.
//!
//! It injects what FoundationDB can do to a correct client — commit conflicts, commits whose
//! outcome is unknown (both the "it was applied" and the "it was not" case), and latency — so
//! the engine's tests can prove they survive them. It can also stall its user entirely
//! ([`FaultStore::pause`]): every read and commit waits until [`FaultStore::resume`], which is
//! what a long garbage-collection pause or a network partition looks like from the store.

use crate::{
    CommitInfo, KeyValue, Limits, RangeRequest, Store, StoreError, StoreResult, Transaction, Watch,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which faults to inject, and how often. Probabilities are per commit, in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Seed of the random choices. Print it on failure; the same seed replays the same faults
    /// for the same sequence of calls.
    pub seed: u64,
    /// The commit is refused with `Conflict` and nothing is written.
    pub conflict_probability: f64,
    /// The commit is applied, then reported as `MaybeCommitted`.
    pub maybe_committed_applied_probability: f64,
    /// The commit is dropped, then reported as `MaybeCommitted`.
    pub maybe_committed_lost_probability: f64,
    /// A delay drawn uniformly from this range before each read and each commit.
    pub latency: Option<(Duration, Duration)>,
}

impl FaultConfig {
    /// No faults at all (a transparent wrapper), with the given seed.
    pub fn none(seed: u64) -> Self {
        Self {
            seed,
            conflict_probability: 0.0,
            maybe_committed_applied_probability: 0.0,
            maybe_committed_lost_probability: 0.0,
            latency: None,
        }
    }

    /// A mix that exercises every commit-path fault often: 10% conflicts, 5% applied-unknown,
    /// 5% lost-unknown.
    pub fn chaos(seed: u64) -> Self {
        Self {
            conflict_probability: 0.10,
            maybe_committed_applied_probability: 0.05,
            maybe_committed_lost_probability: 0.05,
            ..Self::none(seed)
        }
    }

    fn validate(&self) {
        let p = [
            self.conflict_probability,
            self.maybe_committed_applied_probability,
            self.maybe_committed_lost_probability,
        ];
        for x in p {
            assert!(
                (0.0..=1.0).contains(&x),
                "fault probability {x} outside [0, 1]"
            );
        }
        assert!(
            p.iter().sum::<f64>() <= 1.0,
            "fault probabilities sum above 1"
        );
        if let Some((low, high)) = self.latency {
            assert!(low <= high, "latency range inverted");
        }
    }
}

/// Counts of what the wrapper did, for tests to prove faults were actually injected.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub commits: AtomicU64,
    pub conflicts_injected: AtomicU64,
    pub maybe_committed_applied: AtomicU64,
    pub maybe_committed_lost: AtomicU64,
    pub delays: AtomicU64,
    /// Reads failed by [`FaultStore::fail_reads`].
    pub reads_failed: AtomicU64,
    /// Commits failed by [`FaultStore::fail_commits`].
    pub commits_failed: AtomicU64,
    /// Keys read: one per point read, one per pair a range read returned. Lets a test prove
    /// how much a query reads.
    pub keys_read: AtomicU64,
    /// Commits the wrapped store itself answered `MaybeCommitted` (not injected here: a real
    /// backend's, e.g. FoundationDB's under its client buggify).
    pub backend_maybe_committed: AtomicU64,
    /// The most pairs the range reads of one transaction returned together. Lets a test prove
    /// a scan reads a page per transaction, however long its range.
    pub range_rows_per_transaction_max: AtomicU64,
    /// Reads and commits the wrapped store itself answered `TransactionTooOld` (a real
    /// backend's: FoundationDB's `transaction_too_old` once a read version leaves its window).
    pub backend_transaction_too_old: AtomicU64,
    /// Transactions stalled before their second read ([`FaultStore::stall_transactions`]).
    pub transactions_stalled: AtomicU64,
    /// Watches made through this wrapper and not yet fired, failed or dropped (a gauge), and
    /// the most there ever were at once: lets a test prove a node's watches stay bounded.
    pub watches_open: AtomicU64,
    pub watches_open_max: AtomicU64,
}

impl FaultStats {
    /// Every fault injected so far.
    pub fn faults(&self) -> u64 {
        self.conflicts_injected.load(Ordering::Relaxed)
            + self.maybe_committed_applied.load(Ordering::Relaxed)
            + self.maybe_committed_lost.load(Ordering::Relaxed)
            + self.reads_failed.load(Ordering::Relaxed)
            + self.commits_failed.load(Ordering::Relaxed)
    }
}

/// Which keys a read failure targets.
type KeyFilter = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Reads still to fail, which, and with what.
struct ReadFailures {
    remaining: u32,
    matches: KeyFilter,
    error: StoreError,
}

#[derive(Debug)]
struct FaultState {
    config: FaultConfig,
    rng: Mutex<SmallRng>,
    enabled: AtomicBool,
    stats: FaultStats,
    /// True while paused; reads and commits wait for it to turn false.
    paused: AtomicBool,
    /// Rung on resume. A `Notify` wakes its waiters in a fixed order (a watch channel's order
    /// is random), so a seeded simulation replays the same.
    resumed: tokio::sync::Notify,
    read_failures: Mutex<Option<ReadFailures>>,
    commit_failures: AtomicU64,
    /// Transactions still to stall before their second read, and for how long.
    stalls: Mutex<(u32, Duration)>,
}

impl std::fmt::Debug for ReadFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFailures")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// The error an armed read or commit failure returns: a backend failure (not retryable by
/// the contract), the kind a full disk or a lost connection gives.
fn injected(what: &str) -> StoreError {
    StoreError::Backend {
        message: format!("injected {what} failure"),
    }
}

enum CommitFault {
    None,
    Conflict,
    AppliedUnknown,
    LostUnknown,
}

impl FaultState {
    fn draw(&self) -> (CommitFault, Option<Duration>) {
        if !self.enabled.load(Ordering::Relaxed) {
            return (CommitFault::None, None);
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let x: f64 = rng.random();
        let c = &self.config;
        let fault = if x < c.conflict_probability {
            CommitFault::Conflict
        } else if x < c.conflict_probability + c.maybe_committed_applied_probability {
            CommitFault::AppliedUnknown
        } else if x < c.conflict_probability
            + c.maybe_committed_applied_probability
            + c.maybe_committed_lost_probability
        {
            CommitFault::LostUnknown
        } else {
            CommitFault::None
        };
        let delay = c.latency.map(|(low, high)| {
            if low == high {
                low
            } else {
                rng.random_range(low..high)
            }
        });
        (fault, delay)
    }

    fn delay(&self) -> Option<Duration> {
        self.draw().1
    }

    /// The stall a transaction's second read takes, if one is armed (see
    /// [`FaultStore::stall_transactions`]).
    fn take_stall(&self) -> Option<Duration> {
        let mut armed = self.stalls.lock().unwrap_or_else(|p| p.into_inner());
        let (count, stall) = &mut *armed;
        if *count == 0 {
            return None;
        }
        *count -= 1;
        self.stats
            .transactions_stalled
            .fetch_add(1, Ordering::Relaxed);
        Some(*stall)
    }

    /// `answer`, from the wrapped store, counted if it is `TransactionTooOld`.
    fn counted<T>(&self, answer: StoreResult<T>) -> StoreResult<T> {
        if let Err(StoreError::TransactionTooOld { .. }) = &answer {
            self.stats
                .backend_transaction_too_old
                .fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// The error a read of `key` (or of a range starting there) fails with, if one is armed
    /// for it.
    fn read_fails(&self, key: &[u8]) -> Option<StoreError> {
        let mut armed = self.read_failures.lock().unwrap_or_else(|p| p.into_inner());
        let failures = armed.as_mut()?;
        if !(failures.matches)(key) {
            return None;
        }
        let error = failures.error.clone();
        failures.remaining -= 1;
        if failures.remaining == 0 {
            *armed = None;
        }
        self.stats.reads_failed.fetch_add(1, Ordering::Relaxed);
        Some(error)
    }

    fn commit_fails(&self) -> bool {
        let taken = self
            .commit_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            self.stats.commits_failed.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    async fn sleep(&self, delay: Option<Duration>) {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            // Registered before the flag is read, so a resume in between still wakes it.
            resumed.as_mut().enable();
            if !self.paused.load(Ordering::SeqCst) {
                break;
            }
            resumed.await;
        }
        if let Some(d) = delay {
            self.stats.delays.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(d).await;
        }
    }
}

/// Wraps a store and injects faults at commit (and latency on reads).
///
/// # Examples
/// ```
/// use cairn_store::{FaultConfig, FaultStore, MemStore, Store, Transaction, StoreError};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let config = FaultConfig { conflict_probability: 1.0, ..FaultConfig::none(7) };
/// let store = FaultStore::new(MemStore::new(), config);
/// let mut tx = store.begin().unwrap();
/// tx.set(b"k", b"v").unwrap();
/// assert_eq!(tx.commit().await, Err(StoreError::Conflict));
/// assert_eq!(store.stats().faults(), 1);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct FaultStore<S> {
    inner: S,
    state: Arc<FaultState>,
}

impl<S: Store> FaultStore<S> {
    /// Wraps `inner`. Panics on probabilities outside [0, 1] or summing above 1.
    pub fn new(inner: S, config: FaultConfig) -> Self {
        config.validate();
        Self {
            inner,
            state: Arc::new(FaultState {
                rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
                config,
                enabled: AtomicBool::new(true),
                stats: FaultStats::default(),
                paused: AtomicBool::new(false),
                resumed: tokio::sync::Notify::new(),
                read_failures: Mutex::new(None),
                commit_failures: AtomicU64::new(0),
                stalls: Mutex::new((0, Duration::ZERO)),
            }),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Turns injection on or off (on by default); off makes the wrapper transparent, which is
    /// how a test lets the system converge after a fault period.
    pub fn set_enabled(&self, enabled: bool) {
        self.state.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Stalls every read and commit through this wrapper (and its clones) until
    /// [`Self::resume`]; transactions begun meanwhile wait at their first read. Faults stay as
    /// configured; a paused commit may come back `TransactionTooOld`, as on FoundationDB.
    pub fn pause(&self) {
        self.state.paused.store(true, Ordering::SeqCst);
    }

    /// Ends a [`Self::pause`]; waiting reads and commits go on.
    pub fn resume(&self) {
        self.state.paused.store(false, Ordering::SeqCst);
        self.state.resumed.notify_waiters();
    }

    /// Makes the next `count` reads whose key (for a range read, its begin key) satisfies
    /// `matches` fail with a backend error, as a transient disk or network failure would. Replaces
    /// any failures still armed; `count` 0 disarms.
    pub fn fail_reads(&self, count: u32, matches: impl Fn(&[u8]) -> bool + Send + Sync + 'static) {
        self.fail_reads_with(count, injected("read"), matches);
    }

    /// [`FaultStore::fail_reads`], failing them with `error` (a retryable one, say, as
    /// FoundationDB answers a read whose transaction outlived its window).
    pub fn fail_reads_with(
        &self,
        count: u32,
        error: StoreError,
        matches: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
    ) {
        *self
            .state
            .read_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (count > 0).then(|| ReadFailures {
            remaining: count,
            matches: Box::new(matches),
            error,
        });
    }

    /// Makes the next `count` transactions that read twice wait `stall` before their second
    /// read: a long read, as a slow scan or a stalled process makes it. On FoundationDB, a
    /// stall longer than its read window makes that read `transaction_too_old`, for real.
    /// Replaces any stalls still armed; `count` 0 disarms.
    pub fn stall_transactions(&self, count: u32, stall: Duration) {
        *self.state.stalls.lock().unwrap_or_else(|p| p.into_inner()) = (count, stall);
    }

    /// Makes the next `count` commits fail with a backend error, writing nothing.
    pub fn fail_commits(&self, count: u64) {
        self.state.commit_failures.store(count, Ordering::Relaxed);
    }

    /// What has been injected so far.
    pub fn stats(&self) -> &FaultStats {
        &self.state.stats
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.state.config.seed
    }
}

impl<S: Store> Store for FaultStore<S> {
    type Tx = FaultTransaction<S::Tx>;

    fn begin(&self) -> StoreResult<Self::Tx> {
        Ok(FaultTransaction {
            inner: self.inner.begin()?,
            state: self.state.clone(),
            range_rows: 0,
            reads: 0,
        })
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn reads_ahead_pay(&self) -> bool {
        self.inner.reads_ahead_pay()
    }

    fn commit_batches_in_flight(&self) -> usize {
        self.inner.commit_batches_in_flight()
    }

    fn exclusive_opening(&self) -> Option<String> {
        self.inner.exclusive_opening()
    }
}

/// Counts one watch as open from its making until its future ends or is dropped.
struct WatchOpen(Arc<FaultState>);

impl WatchOpen {
    fn new(state: Arc<FaultState>) -> Self {
        let open = state.stats.watches_open.fetch_add(1, Ordering::Relaxed) + 1;
        state
            .stats
            .watches_open_max
            .fetch_max(open, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for WatchOpen {
    fn drop(&mut self) {
        self.0.stats.watches_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A transaction of a [`FaultStore`].
#[derive(Debug)]
pub struct FaultTransaction<T> {
    inner: T,
    state: Arc<FaultState>,
    /// Pairs this transaction's range reads returned so far.
    range_rows: u64,
    /// Reads this transaction made so far.
    reads: u32,
}

impl<T> FaultTransaction<T> {
    /// Before each read: the injected delay, and an armed stall before a second read.
    async fn before_read(&mut self) {
        self.reads += 1;
        let stall = (self.reads == 2).then(|| self.state.take_stall()).flatten();
        self.state.sleep(stall).await;
        self.state.sleep(self.state.delay()).await;
    }
}

impl<T: Transaction> Transaction for FaultTransaction<T> {
    async fn get(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.before_read().await;
        if let Some(error) = self.state.read_fails(key) {
            return Err(error);
        }
        self.state.stats.keys_read.fetch_add(1, Ordering::Relaxed);
        self.state.counted(self.inner.get(key).await)
    }

    async fn get_snapshot(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.before_read().await;
        if let Some(error) = self.state.read_fails(key) {
            return Err(error);
        }
        self.state.stats.keys_read.fetch_add(1, Ordering::Relaxed);
        self.state.counted(self.inner.get_snapshot(key).await)
    }

    async fn get_range(&mut self, range: &RangeRequest) -> StoreResult<Vec<KeyValue>> {
        self.before_read().await;
        if let Some(error) = self.state.read_fails(&range.begin) {
            return Err(error);
        }
        let rows = self.state.counted(self.inner.get_range(range).await)?;
        let stats = &self.state.stats;
        stats
            .keys_read
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.range_rows += rows.len() as u64;
        stats
            .range_rows_per_transaction_max
            .fetch_max(self.range_rows, Ordering::Relaxed);
        Ok(rows)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.inner.set(key, value)
    }

    fn clear(&mut self, key: &[u8]) -> StoreResult<()> {
        self.inner.clear(key)
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> StoreResult<()> {
        self.inner.clear_range(begin, end)
    }

    fn atomic_add(&mut self, key: &[u8], delta: i64) -> StoreResult<()> {
        self.inner.atomic_add(key, delta)
    }

    fn set_versionstamped_key(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.inner.set_versionstamped_key(key, value)
    }

    fn watch(&mut self, key: &[u8]) -> StoreResult<Watch> {
        let inner = self.inner.watch(key)?;
        let open = WatchOpen::new(self.state.clone());
        Ok(Watch::new(async move {
            let _open = open;
            inner.await
        }))
    }

    async fn commit(self) -> StoreResult<CommitInfo> {
        let (fault, delay) = self.state.draw();
        self.state.sleep(delay).await;
        let stats = &self.state.stats;
        stats.commits.fetch_add(1, Ordering::Relaxed);
        if self.state.commit_fails() {
            return Err(injected("commit"));
        }
        match fault {
            CommitFault::None => {
                let outcome = self.state.counted(self.inner.commit().await);
                if matches!(outcome, Err(StoreError::MaybeCommitted)) {
                    stats
                        .backend_maybe_committed
                        .fetch_add(1, Ordering::Relaxed);
                }
                outcome
            }
            CommitFault::Conflict => {
                stats.conflicts_injected.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Conflict)
            }
            CommitFault::LostUnknown => {
                stats.maybe_committed_lost.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::MaybeCommitted)
            }
            CommitFault::AppliedUnknown => {
                self.inner.commit().await?;
                stats
                    .maybe_committed_applied
                    .fetch_add(1, Ordering::Relaxed);
                Err(StoreError::MaybeCommitted)
            }
        }
    }
}
