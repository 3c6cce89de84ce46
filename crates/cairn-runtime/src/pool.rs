//! The node's activity worker pool as state: its slots, its bound on dispatched attempts
//! ([`Capacity`], with the shards that have deferred tasks), the attempts dispatched now and
//! each one's heartbeat and stop signals. What runs an attempt (`worker`) and what pulls
//! deferred tasks (`dispatch`) sit above it and the node's shared state; this sits below both.

use crate::Metrics;
use crate::registry::AttemptKey;
use cairn_types::{Payload, RunId, Seq};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};

/// The latest heartbeat of an attempt, shared by its `ActivityContext` and its recorder.
#[derive(Debug, Default)]
pub(crate) struct Beat {
    /// Details given to `heartbeat()` and not yet written.
    pub(crate) pending: Mutex<Option<Payload>>,
    /// When `heartbeat()` was last called, in Unix milliseconds (0: never). The heartbeat
    /// deadline runs from it (Temporal's rule), not from when the throttled write lands; it
    /// is on the clock the heartbeat timers fire by.
    pub(crate) last_call_unix_ms: std::sync::atomic::AtomicU64,
    /// Rung by every `heartbeat()`.
    pub(crate) called: Notify,
    /// Rung to write the pending details now, whatever the throttle.
    pub(crate) forced: Notify,
    pub(crate) force: AtomicBool,
    /// The node's clock.
    pub(crate) clock: crate::Clock,
}

impl Beat {
    pub(crate) fn call(&self, details: Payload) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(details);
        self.last_call_unix_ms
            .store(self.clock.now_ms(), Ordering::Relaxed);
        self.called.notify_one();
    }

    pub(crate) fn take(&self) -> Option<Payload> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Puts details back after a failed write, unless newer ones came meanwhile.
    pub(crate) fn restore(&self, details: Payload) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(details);
    }
}

/// A dispatched attempt (waiting for a slot, claiming, or running).
#[derive(Debug)]
pub(crate) struct Running {
    /// Its share of `activity_attempts_dispatched_max`, returned when the entry goes.
    pub(crate) _unit: Unit,
    pub(crate) attempt: u32,
    pub(crate) shard: u32,
    /// The shard tenure that dispatched it.
    pub(crate) epoch: u64,
    /// The workflow asked the activity to stop.
    pub(crate) cancel: watch::Sender<bool>,
    /// This node no longer holds the shard: the attempt is aborted.
    pub(crate) abandon: watch::Sender<bool>,
    pub(crate) beat: Arc<Beat>,
}

/// A flag that is set once and wakes every waiter, in the order they began to wait (a watch
/// channel wakes its waiters in a random order, which a seeded simulation cannot replay).
#[derive(Debug, Default)]
pub(crate) struct Latch {
    pub(crate) set: AtomicBool,
    pub(crate) rung: Notify,
}

impl Latch {
    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.rung.notify_waiters();
    }

    /// Returns once the latch is set.
    pub(crate) async fn wait(&self) {
        loop {
            let rung = self.rung.notified();
            tokio::pin!(rung);
            // Registered before the flag is read, so a set in between still wakes it.
            rung.as_mut().enable();
            if self.set.load(Ordering::SeqCst) {
                return;
            }
            rung.await;
        }
    }
}

/// The node's activity worker pool.
#[derive(Debug)]
pub struct Workers {
    pub(crate) slots: Arc<Semaphore>,
    /// The bound on dispatched attempts, and the shards with deferred tasks.
    pub(crate) capacity: Capacity,
    /// Set when the node stops: attempts in flight are abandoned, as a crash would.
    pub(crate) halted: Latch,
    /// Dispatched attempts by (run, activity).
    pub(crate) running: Mutex<BTreeMap<AttemptKey, Running>>,
}

impl Workers {
    pub fn new(
        concurrency_max: usize,
        dispatched_max: usize,
        metrics: Arc<crate::Metrics>,
    ) -> Self {
        assert!(
            concurrency_max > 0,
            "activity_concurrency_max must be positive"
        );
        Self {
            slots: Arc::new(Semaphore::new(concurrency_max)),
            capacity: Capacity::new(dispatched_max, metrics),
            halted: Latch::default(),
            running: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<AttemptKey, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses new attempts and abandons running ones (their results are never delivered;
    /// the attempts' timers retry them wherever the shard lives next).
    pub fn close(&self) {
        self.slots.close();
        // `send_replace` stores the value even when no attempt is subscribed right now.
        self.halted.set();
    }

    /// Whether this tenure (`epoch`) has dispatched attempt `attempt` of activity `seq`.
    pub(crate) fn is_dispatched(&self, run_id: &RunId, seq: Seq, attempt: u32, epoch: u64) -> bool {
        self.running()
            .get(&(*run_id, seq))
            .is_some_and(|r| r.attempt == attempt && r.epoch == epoch && !*r.abandon.borrow())
    }

    /// Asks the attempt of activity `seq` of `run_id` to stop (best effort); one still waiting
    /// for a slot never starts.
    pub fn cancel(&self, run_id: RunId, seq: Seq) {
        if let Some(running) = self.running().get(&(run_id, seq)) {
            running.cancel.send_replace(true);
        }
    }

    /// Aborts every attempt of `shard`: this node no longer holds it, so their results could
    /// not land, and the shard's new holder times them out and retries them.
    pub fn abandon_shard(&self, shard: u32) {
        for running in self.running().values().filter(|r| r.shard == shard) {
            running.abandon.send_replace(true);
        }
    }

    /// Whether attempt `attempt` of activity `seq` of `run_id` runs here and heartbeated
    /// within `within`; if so its recorder is told to write now. A heartbeat timer that fires
    /// while the activity is beating (its write was slow) is then not a timeout.
    pub fn beating(&self, run_id: RunId, seq: Seq, attempt: u32, within: Duration) -> bool {
        let running = self.running();
        let Some(running) = running.get(&(run_id, seq)) else {
            return false;
        };
        if running.attempt != attempt {
            return false;
        }
        let called = running.beat.last_call_unix_ms.load(Ordering::Relaxed);
        let recent = called > 0
            && u128::from(running.beat.clock.now_ms().saturating_sub(called)) < within.as_millis();
        if recent {
            running.beat.force.store(true, Ordering::Relaxed);
            running.beat.forced.notify_one();
        }
        recent
    }
}

/// The node's units of dispatch.
#[derive(Debug)]
pub struct Capacity {
    pub(crate) inner: Arc<Inner>,
    /// Per shard: (epoch, where the puller reads next, deferrals since it last found none).
    pub(crate) pending: Mutex<BTreeMap<u32, Pending>>,
    /// Per shard, the tenure whose rehydration has finished: the puller leaves a shard alone
    /// until then, so it never claims a task that rehydration, reading on, would defer again.
    pub(crate) rehydrated: Mutex<BTreeMap<u32, u64>>,
    /// Passes of the puller so far: each starts at the next shard, so none waits behind another.
    pub(crate) passes: AtomicUsize,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// `activity_attempts_dispatched` (and its peak) in the node's metrics.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max: u64,
    /// A unit came back while tasks wait deferred, or a task was deferred.
    pub(crate) wake: Notify,
    /// Shards with deferred tasks (`Capacity::pending`'s size, read without its lock by every
    /// transition and every returned unit).
    pub(crate) backlogged: AtomicUsize,
}

#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) epoch: u64,
    pub(crate) cursor: Option<Vec<u8>>,
    pub(crate) generation: u64,
}

/// Units reserved for a transition's new tasks; what is not turned into [`Unit`]s returns on
/// drop (a transition that does not commit hands nothing over).
#[derive(Debug)]
pub struct Room {
    pub(crate) inner: Arc<Inner>,
    pub(crate) held: usize,
}

/// One dispatched attempt's share of the bound; returned on drop.
#[derive(Debug)]
pub struct Unit {
    pub(crate) inner: Arc<Inner>,
}

impl Capacity {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        assert!(max > 0, "activity_attempts_dispatched_max must be positive");
        Self {
            inner: Arc::new(Inner {
                metrics,
                max: max as u64,
                wake: Notify::new(),
                backlogged: AtomicUsize::new(0),
            }),
            pending: Mutex::new(BTreeMap::new()),
            rehydrated: Mutex::new(BTreeMap::new()),
            passes: AtomicUsize::new(0),
        }
    }

    /// Units for a transition's new tasks: none while older tasks wait deferred and half the
    /// units or more are taken, so near the bound a task never passes one deferred before it
    /// (the freed units go to the puller, in order). With more than half free the puller
    /// dispatches what waits at once anyway, and deferring new tasks too would only cost each
    /// two more writes — and keep the node backlogged for as long as load lasts, since every
    /// deferral renews the backlog the puller must see empty.
    pub fn reserve_for_transition(&self, wanted: usize) -> Room {
        let plenty = self.free() as u64 * 2 > self.inner.max;
        if self.inner.backlogged.load(Ordering::Acquire) > 0 && !plenty {
            return self.reserve(0);
        }
        self.reserve(wanted)
    }

    /// Units free now.
    pub(crate) fn free(&self) -> usize {
        let used = self
            .inner
            .metrics
            .activity_attempts_dispatched
            .load(Ordering::Acquire);
        usize::try_from(self.inner.max.saturating_sub(used)).unwrap_or(usize::MAX)
    }

    /// Takes up to `wanted` units (fewer when the bound is near, none at it).
    pub fn reserve(&self, wanted: usize) -> Room {
        let mut held = 0;
        if wanted > 0 {
            let metrics = &self.inner.metrics;
            let wanted = wanted as u64;
            if let Ok(before) = metrics.activity_attempts_dispatched.fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |used| {
                    held = wanted.min(self.inner.max.saturating_sub(used));
                    (held > 0).then_some(used + held)
                },
            ) {
                metrics
                    .activity_attempts_dispatched_peak
                    .fetch_max(before + held, Ordering::Relaxed);
            }
        }
        let held = held as usize;
        Room {
            inner: self.inner.clone(),
            held,
        }
    }

    /// Shard `shard` (held at `epoch`) has deferred tasks: wake the puller.
    pub fn deferred(&self, shard: u32, epoch: u64) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let entry = pending.entry(shard).or_insert_with(|| {
                self.inner.backlogged.fetch_add(1, Ordering::AcqRel);
                Pending {
                    epoch,
                    cursor: None,
                    generation: 0,
                }
            });
            if entry.epoch != epoch {
                *entry = Pending {
                    epoch,
                    cursor: None,
                    generation: 0,
                };
            }
            entry.generation += 1;
        }
        self.inner.wake.notify_one();
    }

    /// Shard `shard`'s new tenure `epoch` has deferred what it found (`deferred_any`: some
    /// tasks): the puller may start. A shard whose rehydration deferred nothing is backlogged
    /// only if its transitions deferred tasks meanwhile (they said so with [`Self::deferred`]).
    pub fn rehydrated(&self, shard: u32, epoch: u64, deferred_any: bool) {
        self.rehydrated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, epoch);
        if deferred_any {
            self.deferred(shard, epoch);
        } else {
            self.inner.wake.notify_one();
        }
    }

    /// The shards with deferred tasks, starting at a different one each pass, each with
    /// whether its tenure's rehydration has finished.
    pub(crate) fn pending(&self) -> Vec<(u32, Pending, bool)> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = pending
            .iter()
            .map(|(s, p)| (*s, p.clone(), false))
            .collect();
        drop(pending);
        let rehydrated = self.rehydrated.lock().unwrap_or_else(|p| p.into_inner());
        for (shard, p, ready) in &mut out {
            *ready = rehydrated.get(shard) == Some(&p.epoch);
        }
        drop(rehydrated);
        out.sort_unstable_by_key(|(s, _, _)| *s);
        if !out.is_empty() {
            let first = self.passes.fetch_add(1, Ordering::Relaxed) % out.len();
            out.rotate_left(first);
        }
        out
    }

    /// Records where the puller stopped in `shard`; with `exhausted`, forgets the shard unless
    /// a task was deferred since `seen` was read.
    pub(crate) fn advance(
        &self,
        shard: u32,
        seen: &Pending,
        cursor: Option<Vec<u8>>,
        exhausted: bool,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = pending.get_mut(&shard) else {
            return;
        };
        if entry.epoch != seen.epoch {
            return;
        }
        if exhausted && entry.generation == seen.generation {
            pending.remove(&shard);
            self.inner.backlogged.fetch_sub(1, Ordering::AcqRel);
        } else {
            entry.cursor = cursor;
        }
    }

    /// Forgets `shard`'s backlog of tenure `epoch` (a newer tenure's backlog stays).
    pub(crate) fn forget(&self, shard: u32, epoch: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.get(&shard).is_some_and(|p| p.epoch == epoch) {
            pending.remove(&shard);
            self.inner.backlogged.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Room {
    /// Units still held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// One unit for one dispatch, while any are held.
    pub fn unit(&mut self) -> Option<Unit> {
        if self.held == 0 {
            return None;
        }
        self.held -= 1;
        Some(Unit {
            inner: self.inner.clone(),
        })
    }
}

impl Drop for Room {
    /// Unused units return without waking the puller: whoever reserved them has just looked
    /// for work (only an attempt's end, or a deferral, is news).
    fn drop(&mut self) {
        if self.held > 0 {
            self.inner
                .metrics
                .activity_attempts_dispatched
                .fetch_sub(self.held as u64, Ordering::AcqRel);
        }
    }
}

impl Drop for Unit {
    /// Wakes the puller only if tasks wait for the unit (most attempts end with none waiting).
    fn drop(&mut self) {
        self.inner
            .metrics
            .activity_attempts_dispatched
            .fetch_sub(1, Ordering::AcqRel);
        if self.inner.backlogged.load(Ordering::Acquire) > 0 {
            self.inner.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatched(capacity: &Capacity) -> u64 {
        capacity
            .inner
            .metrics
            .activity_attempts_dispatched
            .load(Ordering::Relaxed)
    }

    /// Units never exceed the bound, come back when rooms and units drop, and the peak is kept.
    #[test]
    fn units_are_bounded_and_return() {
        let capacity = Capacity::new(4, Arc::new(Metrics::default()));
        let mut first = capacity.reserve(3);
        assert_eq!(first.held(), 3);
        let second = capacity.reserve(3);
        assert_eq!(second.held(), 1, "only one unit was left");
        assert_eq!(capacity.reserve(1).held(), 0, "at the bound");
        let unit = first.unit().unwrap();
        drop(first);
        drop(second);
        assert_eq!(dispatched(&capacity), 1, "the unit in use stays taken");
        drop(unit);
        assert_eq!(dispatched(&capacity), 0);
        let peak = capacity
            .inner
            .metrics
            .activity_attempts_dispatched_peak
            .load(Ordering::Relaxed);
        assert_eq!(peak, 4);
    }

    /// While a shard has deferred tasks, transitions get no units (the puller does); once the
    /// puller finds the shard's range empty, and nothing was deferred meanwhile, they do again.
    #[test]
    fn deferred_tasks_go_first() {
        let capacity = Capacity::new(8, Arc::new(Metrics::default()));
        // Near the bound (half the units or more taken).
        let busy = capacity.reserve(5);
        capacity.deferred(3, 7);
        assert!(
            !capacity.pending()[0].2,
            "pullable before its rehydration finished"
        );
        capacity.rehydrated(3, 7, true);
        assert_eq!(capacity.reserve_for_transition(2).held(), 0);
        assert_eq!(capacity.reserve(2).held(), 2, "the puller still gets units");
        let seen = capacity.pending()[0].1.clone();
        // A deferral after the puller's read keeps the shard backlogged.
        capacity.deferred(3, 7);
        capacity.advance(3, &seen, None, true);
        assert_eq!(capacity.reserve_for_transition(2).held(), 0);
        let seen = capacity.pending()[0].1.clone();
        capacity.advance(3, &seen, None, true);
        assert_eq!(capacity.reserve_for_transition(2).held(), 2);
        // A shard this node no longer holds is forgotten.
        capacity.deferred(5, 1);
        // A newer tenure's backlog survives the forgetting of the older one.
        capacity.deferred(5, 2);
        capacity.forget(5, 1);
        assert_eq!(capacity.reserve_for_transition(1).held(), 0);
        capacity.forget(5, 2);
        assert_eq!(capacity.reserve_for_transition(1).held(), 1);
        // Far from the bound, transitions get units even while tasks wait deferred: the
        // puller dispatches those at once.
        capacity.deferred(6, 1);
        assert_eq!(capacity.reserve_for_transition(1).held(), 0);
        drop(busy);
        assert_eq!(capacity.reserve_for_transition(2).held(), 2);
        // A rehydration that deferred nothing leaves the shard unbacklogged.
        capacity.forget(6, 1);
        capacity.rehydrated(9, 1, false);
        assert!(capacity.pending().is_empty());
    }
}
