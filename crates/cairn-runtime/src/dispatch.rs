//! The bound on dispatched activity attempts, and the pull dispatcher for the tasks past it.
//!
//! A node hands at most `activity_attempts_dispatched_max` attempts to its workers at once
//! (running, claiming, or waiting for a worker slot). Each dispatched attempt holds one
//! [`Unit`] of the node's [`Capacity`]; the unit returns when the attempt's dispatch ends.
//!
//! - A transition reserves a [`Room`] before it is planned: its first `room` new tasks are
//!   handed to the workers after the commit, as before; the rest are written with a *deferred*
//!   marker `("defer", shard, run, seq, attempt)` in the same commit, and no provisional
//!   start-to-close timer (they are not started). While any shard has deferred tasks, a
//!   transition gets no room: new tasks queue behind the deferred ones instead of taking the
//!   units the puller waits for.
//! - A shard's new holder writes a deferred marker for every task it finds runnable (a page of
//!   tasks per transaction), instead of dispatching them all at once.
//! - [`spawn_refill`]'s loop pulls deferred tasks, a page per transaction, as units free up.
//!   A deferred attempt always starts by a claim, and the claim checks and clears its marker in
//!   the same commit that marks it started: one deferred attempt runs at most once however
//!   often it is pulled. A marker whose task is gone (the attempt ended unstarted: canceled,
//!   timed out, the run closed) is cleared when the puller finds it.
//!
//! Invariants: dispatched attempts never exceed the bound (units are taken by compare-and-swap);
//! while tasks are deferred, freed units go to the puller, shared evenly among the shards with
//! deferred tasks (each pass starts at the next shard), and within a shard in key order (run
//! ids are UUIDv7: oldest runs first); every deferred marker is either claimed, or cleared
//! once its task is gone.

use crate::Metrics;
use crate::ops::Op;
use crate::records::{TaskRecord, decode};
use crate::shared::Shared;
use cairn_store::{RangeRequest, Store, StoreError, Transaction};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

pub use crate::config::ACTIVITY_ATTEMPTS_DISPATCHED_MAX;
/// Most deferred markers (or tasks, on a shard's rehydration) read in one transaction.
pub const DEFERRED_PAGE_MAX: usize = 256;
/// How often the puller looks even when nothing woke it (a backstop: units and deferrals wake
/// it as they happen).
pub const REFILL_BACKSTOP_MS: u64 = 1_000;

/// The node's units of dispatch.
#[derive(Debug)]
pub struct Capacity {
    inner: Arc<Inner>,
    /// Per shard: (epoch, where the puller reads next, deferrals since it last found none).
    pending: Mutex<BTreeMap<u32, Pending>>,
    /// Per shard, the tenure whose rehydration has finished: the puller leaves a shard alone
    /// until then, so it never claims a task that rehydration, reading on, would defer again.
    rehydrated: Mutex<BTreeMap<u32, u64>>,
    /// Passes of the puller so far: each starts at the next shard, so none waits behind another.
    passes: AtomicUsize,
}

#[derive(Debug)]
struct Inner {
    /// `activity_attempts_dispatched` (and its peak) in the node's metrics.
    metrics: Arc<Metrics>,
    max: u64,
    /// A unit came back while tasks wait deferred, or a task was deferred.
    wake: Notify,
    /// Shards with deferred tasks (`Capacity::pending`'s size, read without its lock by every
    /// transition and every returned unit).
    backlogged: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Pending {
    epoch: u64,
    cursor: Option<Vec<u8>>,
    generation: u64,
}

/// Units reserved for a transition's new tasks; what is not turned into [`Unit`]s returns on
/// drop (a transition that does not commit hands nothing over).
#[derive(Debug)]
pub struct Room {
    inner: Arc<Inner>,
    held: usize,
}

/// One dispatched attempt's share of the bound; returned on drop.
#[derive(Debug)]
pub struct Unit {
    inner: Arc<Inner>,
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

    /// Units for a transition's new tasks: none while older tasks wait deferred, so a task
    /// never passes one deferred before it (the freed units go to the puller, in order).
    pub fn reserve_for_transition(&self, wanted: usize) -> Room {
        if self.inner.backlogged.load(Ordering::Acquire) > 0 {
            return self.reserve(0);
        }
        self.reserve(wanted)
    }

    /// Units free now.
    fn free(&self) -> usize {
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

    /// Shard `shard`'s new tenure `epoch` has deferred what it found: the puller may start.
    pub fn rehydrated(&self, shard: u32, epoch: u64) {
        self.rehydrated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shard, epoch);
        self.deferred(shard, epoch);
    }

    /// The shards with deferred tasks, starting at a different one each pass, each with
    /// whether its tenure's rehydration has finished.
    fn pending(&self) -> Vec<(u32, Pending, bool)> {
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
    fn advance(&self, shard: u32, seen: &Pending, cursor: Option<Vec<u8>>, exhausted: bool) {
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
    fn forget(&self, shard: u32, epoch: u64) {
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

/// Starts the node's puller of deferred tasks (it ends with the node).
pub(crate) fn spawn_refill<S: Store>(shared: &Arc<Shared<S>>) {
    let weak: Weak<Shared<S>> = Arc::downgrade(shared);
    let inner = shared.workers.capacity.inner.clone();
    shared.runtime.spawn(async move {
        loop {
            let _ = tokio::time::timeout(
                Duration::from_millis(REFILL_BACKSTOP_MS),
                inner.wake.notified(),
            )
            .await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if shared.cluster.is_stopped() {
                return;
            }
            if let Err(error) = refill(&shared).await {
                tracing::warn!(%error, "pulling deferred activity tasks failed; retrying");
            }
        }
    });
}

/// One pass: for each shard with deferred tasks, pulls as many as there are free units.
pub(crate) async fn refill<S: Store>(shared: &Arc<Shared<S>>) -> Result<(), StoreError> {
    let capacity = &shared.workers.capacity;
    let mut pending = capacity.pending();
    // A lost tenure's backlog is forgotten, rehydrated or not.
    pending.retain(|(shard, seen, _)| {
        let held = shared.shard_at(*shard, seen.epoch).is_some();
        if !held {
            capacity.forget(*shard, seen.epoch);
        }
        held
    });
    pending.retain(|(_, _, ready)| *ready);
    let count = pending.len();
    for (i, (shard, seen, _)) in pending.into_iter().enumerate() {
        // An even share of the free units for each shard still to be served this pass.
        let share = capacity.free().div_ceil(count - i).min(DEFERRED_PAGE_MAX);
        let room = capacity.reserve(share);
        if room.held() == 0 {
            return Ok(());
        }
        pull_page(shared, shard, &seen, room).await?;
    }
    Ok(())
}

/// Reads up to `room` deferred markers of `shard` from the puller's cursor (wrapping to the
/// start once past the end) and dispatches their tasks.
async fn pull_page<S: Store>(
    shared: &Arc<Shared<S>>,
    shard: u32,
    seen: &Pending,
    mut room: Room,
) -> Result<(), StoreError> {
    let keys = &shared.keys;
    let capacity = &shared.workers.capacity;
    let (begin, end) = keys.deferred_of_shard(shard);
    let from = seen.cursor.clone().unwrap_or_else(|| begin.clone());
    let asked = room.held();
    let mut tx = shared.store.begin()?;
    let markers = tx
        .get_range(&RangeRequest::new(from.clone(), end).limit(asked).snapshot())
        .await?;
    let mut stale = Vec::new();
    for marker in &markers {
        let Some((run_id, seq, attempt)) = keys.parse_attempt(&marker.key) else {
            stale.push(Op::Clear(marker.key.clone()));
            continue;
        };
        if shared
            .workers
            .is_dispatched(&run_id, seq, attempt, seen.epoch)
        {
            continue;
        }
        let Some(bytes) = tx.get(&keys.task(shard, &run_id, seq, attempt)).await? else {
            // The attempt ended before it started.
            stale.push(Op::Clear(marker.key.clone()));
            continue;
        };
        let task: TaskRecord = match decode("task", &bytes) {
            Ok(task) => task,
            Err(error) => {
                // Left in place (and looked at again each pass) rather than lost.
                tracing::error!(%run_id, seq, attempt, %error, "a deferred task does not decode");
                continue;
            }
        };
        let Some(unit) = room.unit() else {
            break;
        };
        shared
            .workers
            .dispatch(shared.clone(), seen.epoch, task, unit, true);
    }
    drop(tx);
    if !stale.is_empty() {
        shared.submit_detached(stale, (shard, seen.epoch));
    }
    match markers.last() {
        // A full page: more may follow, from there.
        Some(last) if markers.len() == asked => capacity.advance(
            shard,
            seen,
            Some(cairn_store::keyspace::key_after(&last.key)),
            false,
        ),
        // Past the end: the next pass starts over; a shard whose whole range was empty (read
        // from its start) has nothing deferred.
        _ => capacity.advance(shard, seen, None, markers.is_empty() && from == begin),
    }
    Ok(())
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
        capacity.deferred(3, 7);
        assert!(
            !capacity.pending()[0].2,
            "pullable before its rehydration finished"
        );
        capacity.rehydrated(3, 7);
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
    }
}
