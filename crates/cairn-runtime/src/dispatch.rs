//! The bound on dispatched activity attempts, and the pull dispatcher for the tasks past it.
//!
//! A node hands at most `activity_attempts_dispatched_max` attempts to its workers at once
//! (running, claiming, or waiting for a worker slot). Each dispatched attempt holds one
//! [`Unit`] of the node's [`Capacity`]; the unit returns when the attempt's dispatch ends.
//!
//! - A transition reserves a [`Room`] before it is planned: its first `room` new tasks are
//!   handed to the workers after the commit, as before; the rest are written with a *deferred*
//!   marker `("defer", shard, run, seq, attempt)` in the same commit, and no provisional
//!   start-to-close timer (they are not started). While any shard has deferred tasks and half
//!   the units or more are taken, a transition gets no room: new tasks queue behind the
//!   deferred ones instead of taking the units the puller waits for.
//! - A shard's new holder writes a deferred marker for every task it finds runnable (a page of
//!   tasks per transaction), instead of dispatching them all at once.
//! - [`spawn_refill`]'s loop pulls deferred tasks, a page per transaction, as units free up.
//!   A deferred attempt always starts by a claim, and the claim checks and clears its marker in
//!   the same commit that marks it started: one deferred attempt runs at most once however
//!   often it is pulled. A marker whose task is gone (the attempt ended unstarted: canceled,
//!   timed out, the run closed) is cleared when the puller finds it.
//!
//! Invariants: dispatched attempts never exceed the bound (units are taken by compare-and-swap);
//! while tasks are deferred near the bound, freed units go to the puller, shared evenly among the shards with
//! deferred tasks (each pass starts at the next shard), and within a shard in key order (run
//! ids are UUIDv7: oldest runs first); every deferred marker is either claimed, or cleared
//! once its task is gone.

use crate::backoff::Backoff;
use crate::local::Local;
use crate::ops::{Check, Op};
use crate::pool::{Pending, Room};
use crate::records::{TaskRecord, decode};
use cairn_store::{RangeRequest, Store, StoreError, Transaction};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use crate::config::ACTIVITY_ATTEMPTS_DISPATCHED_MAX;
/// Most deferred markers (or tasks, on a shard's rehydration) read in one transaction.
pub const DEFERRED_PAGE_MAX: usize = 256;
/// How often the puller looks even when nothing woke it (a backstop: units and deferrals wake
/// it as they happen).
pub const REFILL_BACKSTOP_MS: u64 = 1_000;
/// Least time between two passes of the puller. Units freed by attempts refused at once (their
/// claim fenced or rejected) wake it again; without a floor those passes would follow each
/// other with no pause until the node's next heartbeat or placement round, a busy loop.
pub const REFILL_PASS_MIN_MS: u64 = 5;

/// Starts the node's puller of deferred tasks (it ends with the node).
pub(crate) fn spawn_refill<S: Store>(shared: &Arc<Local<S>>) {
    let weak: Weak<Local<S>> = Arc::downgrade(shared);
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
            drop(shared);
            tokio::time::sleep(Duration::from_millis(REFILL_PASS_MIN_MS)).await;
        }
    });
}

/// One pass: for each shard with deferred tasks, pulls as many as there are free units.
pub(crate) async fn refill<S: Store>(shared: &Arc<Local<S>>) -> Result<(), StoreError> {
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

/// The error this module's `Check`s answer when their reason no longer holds at the commit.
fn refused(reason: &str) -> crate::ClientError {
    crate::ClientError::Store(StoreError::Backend {
        message: reason.to_string(),
    })
}

/// Reads up to `room` deferred markers of `shard` from the puller's cursor (wrapping to the
/// start once past the end) and dispatches their tasks.
async fn pull_page<S: Store>(
    shared: &Arc<Local<S>>,
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
    // Markers to clear, each with the check that still holds its reason at the commit: a
    // clear that outlived its reason (a read that saw less than the store holds) is refused
    // rather than stranding a task that waits for it.
    let mut stale: Vec<(Op, Option<Check>)> = Vec::new();
    for marker in &markers {
        let Some((run_id, seq, attempt)) = keys.parse_attempt(&marker.key) else {
            stale.push((Op::Clear(marker.key.clone()), None));
            continue;
        };
        if shared
            .workers
            .is_dispatched(&run_id, seq, attempt, seen.epoch)
        {
            continue;
        }
        let task_key = keys.task(shard, &run_id, seq, attempt);
        let Some(bytes) = tx.get(&task_key).await? else {
            // The attempt ended before it started.
            let gone = Check::key(task_key, |value| match value {
                None => Ok(()),
                Some(_) => Err(refused("the deferred task is still scheduled")),
            });
            stale.push((Op::Clear(marker.key.clone()), Some(gone)));
            continue;
        };
        let mark_key = keys.attempt(shard, &run_id, seq, attempt);
        if tx.get(&mark_key).await?.is_some() {
            // Started already (its start mark is in): not waiting, and a claim would be
            // refused. Left in place, the marker would be pulled and refused again at once,
            // a busy loop until the attempt's timers end it.
            let started = Check::key(mark_key, |value| match value {
                Some(_) => Ok(()),
                None => Err(refused("the deferred attempt has no start mark")),
            });
            stale.push((Op::Clear(marker.key.clone()), Some(started)));
            continue;
        }
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
    for (clear, check) in stale {
        shared.submit_detached_checked(
            vec![clear],
            check.into_iter().collect(),
            (shard, seen.epoch),
        );
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

/// Most tries of [`defer_if_landed`]'s commit while the store keeps failing; past them the
/// tasks are left to the shard's next holder, which defers every task it finds.
pub const STRANDED_DEFER_TRIES_MAX: u32 = 20;
/// First pause between two of those tries (doubling, at most a second).
const STRANDED_DEFER_RETRY_FIRST_MS: u64 = 50;

/// After a transition commit whose outcome is unknown (the store reported `MaybeCommitted`
/// and it could not be verified), the tasks it would have handed to the workers in memory:
/// if the commit landed after all, they are in the store with no deferred marker, no start mark
/// and (a remote worker's) no timer, so nothing would ever start them. Writes their markers,
/// checked against their exact records (none is written unless the transition landed, and a
/// later transition's own writing of the same attempt does not match), for the puller to
/// claim. Returns once the outcome is known, the shard moved on, or the tries run out.
pub(crate) async fn defer_if_landed<S: Store>(
    shared: &Local<S>,
    shard: u32,
    epoch: u64,
    tasks: Vec<TaskRecord>,
) {
    if tasks.is_empty() {
        return;
    }
    let keys = &shared.keys;
    let mut backoff = Backoff::new(
        Duration::from_millis(STRANDED_DEFER_RETRY_FIRST_MS),
        Duration::from_secs(1),
    );
    for _ in 0..STRANDED_DEFER_TRIES_MAX {
        let mut ops = Vec::new();
        let mut checks = Vec::new();
        for task in &tasks {
            let (run_id, seq, attempt) = (task.run_id, task.seq, task.attempt);
            let planned = crate::records::encode(task);
            checks.push(Check::key(
                keys.task(shard, &run_id, seq, attempt),
                move |value| match value {
                    Some(stored) if stored == planned.as_slice() => Ok(()),
                    _ => Err(refused("the transition did not land")),
                },
            ));
            checks.push(Check::key(
                keys.attempt(shard, &run_id, seq, attempt),
                |value| match value {
                    None => Ok(()),
                    Some(_) => Err(refused("the attempt started")),
                },
            ));
            ops.push(Op::Set(
                keys.deferred(shard, &run_id, seq, attempt),
                Vec::new(),
            ));
        }
        match shared.commit(ops, checks, Some((shard, epoch)), None).await {
            Ok(()) => {
                shared
                    .metrics
                    .activity_tasks_deferred
                    .fetch_add(tasks.len() as u64, std::sync::atomic::Ordering::Relaxed);
                shared.workers.capacity.deferred(shard, epoch);
                tracing::info!(
                    shard,
                    tasks = tasks.len(),
                    "a transition of unknown outcome had landed; its tasks are deferred"
                );
                return;
            }
            Err(crate::ops::CommitError::Store(error)) => {
                tracing::debug!(shard, %error, "deferring the tasks of a transition of unknown outcome failed; retrying");
                backoff.wait().await;
            }
            // Not landed (a check refused), the shard moved on (its next holder defers what it
            // finds), or the node stopped.
            Err(_) => return,
        }
    }
    tracing::warn!(
        shard,
        tasks = tasks.len(),
        "could not learn whether a transition landed; its tasks wait for the shard's next holder"
    );
}
