//! Activity workers: run activity attempts on the node's async runtime, at most
//! `activity_concurrency_max` at a time.
//!
//! An attempt is claimed by durably arming its start-to-close and heartbeat timers (one small
//! commit, batched with everything else), so if this node dies mid-attempt the timer fires on
//! whoever owns the shard next and the attempt is retried. Its result goes to the run's actor
//! in memory, together with the keys to clear (the task and the attempt's timers); the run's
//! next transition records it. A result lost with a crashed node is recovered by that timer:
//! activities are at-least-once, and `ActivityInfo::idempotency_key` lets them be idempotent.

use crate::clock::now_ms;
use crate::committer::Op;
use crate::node::Shared;
use crate::records::{InboxItem, TaskRecord, decode, encode};
use crate::registry::{ActivityContext, ActivityInfo, AttemptKey};
use crate::shard::{ShardMsg, TimerEntry};
use crate::workflow::Delivery;
use cairn_core::{Message, TimerId};
use cairn_store::{Store, Transaction};
use cairn_types::{Failure, Payload, RunId, Seq};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};

/// How long after scheduling an attempt may start without a claim commit. The transition that
/// schedules an attempt also arms its start-to-close timer `start_to_close + CLAIM_GRACE_MS`
/// after scheduling (a *provisional* timer); an attempt that starts within the grace is then
/// timed correctly without writing anything, and one that starts later moves the timer with a
/// claim commit. Attempts with a heartbeat timeout always claim (their heartbeat timer starts
/// at the start).
pub const CLAIM_GRACE_MS: u64 = 1_000;

/// The provisional start-to-close timer of a task, if it gets one.
pub(crate) fn provisional_start_to_close(
    keys: &crate::keys::Keys,
    task: &TaskRecord,
) -> Option<TimerEntry> {
    let timeouts = task.options.timeouts;
    if timeouts.heartbeat.is_some() {
        return None;
    }
    let s2c = timeouts.start_to_close?;
    let fire_at = task
        .scheduled_unix_ms
        .saturating_add(ms(s2c))
        .saturating_add(CLAIM_GRACE_MS);
    let timer = TimerId::ActivityStartToClose {
        seq: task.seq,
        attempt: task.attempt,
    };
    Some(TimerEntry::new(
        keys,
        task.shard,
        fire_at,
        task.run_id,
        timer,
    ))
}

/// The node's activity worker pool.
#[derive(Debug)]
pub struct Workers {
    slots: Arc<Semaphore>,
    /// Set when the node stops: attempts in flight are abandoned, as a crash would.
    halted: watch::Sender<bool>,
    /// Running attempts: (run, activity) → (attempt, cancel flag).
    running: Mutex<HashMap<AttemptKey, (u32, watch::Sender<bool>)>>,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Workers {
    pub fn new(concurrency_max: usize) -> Self {
        assert!(
            concurrency_max > 0,
            "activity_concurrency_max must be positive"
        );
        Self {
            slots: Arc::new(Semaphore::new(concurrency_max)),
            halted: watch::channel(false).0,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses new attempts and abandons running ones (their results are never delivered;
    /// the attempts' timers retry them wherever the shard lives next).
    pub fn close(&self) {
        self.slots.close();
        // `send_replace` stores the value even when no attempt is subscribed right now.
        self.halted.send_replace(true);
    }

    /// Asks a running attempt of activity `seq` of `run_id` to stop (best effort).
    pub fn cancel(&self, run_id: RunId, seq: Seq) {
        if let Some(flag) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(run_id, seq))
        {
            let _ = flag.1.send(true);
        }
    }

    /// Runs `task` on the node's runtime.
    pub fn dispatch<S: Store>(&self, shared: Arc<Shared<S>>, epoch: u64, task: TaskRecord) {
        self.dispatch_recovered(shared, epoch, task, Vec::new());
    }

    /// Runs a task found in the store after a restart. `stale_timers` are the attempt timers a
    /// previous owner armed when it claimed the attempt; the new claim clears them, so the dead
    /// claim does not also time the attempt out.
    pub fn dispatch_recovered<S: Store>(
        &self,
        shared: Arc<Shared<S>>,
        epoch: u64,
        task: TaskRecord,
        stale_timers: Vec<Vec<u8>>,
    ) {
        let runtime = shared.runtime.clone();
        runtime.spawn(async move {
            let permit = shared.workers.slots.clone().acquire_owned().await;
            if permit.is_err() {
                return;
            }
            run_attempt(shared, epoch, task, stale_timers).await;
        });
    }
}

async fn run_attempt<S: Store>(
    shared: Arc<Shared<S>>,
    epoch: u64,
    task: TaskRecord,
    stale_timers: Vec<Vec<u8>>,
) {
    let keys = &shared.keys;
    let shard = task.shard;
    let fence = (shard, epoch);
    let now = now_ms();
    let timeouts = task.options.timeouts;
    let attempt_timer = |timer: TimerId, after: std::time::Duration| {
        let fire_at = now.saturating_add(ms(after));
        TimerEntry::new(keys, shard, fire_at, task.run_id, timer)
    };
    let mut stale_timers = stale_timers;
    let mut claim = Vec::new();
    let provisional = provisional_start_to_close(keys, &task);
    let start_to_close = match provisional {
        Some(entry)
            if stale_timers.is_empty()
                && now <= task.scheduled_unix_ms.saturating_add(CLAIM_GRACE_MS) =>
        {
            // Started within the grace: the durable provisional timer is the crash backstop;
            // in memory the same timer is moved to the exact start + start-to-close.
            let exact = TimerEntry {
                fire_at_unix_ms: timeouts
                    .start_to_close
                    .map_or(entry.fire_at_unix_ms, |s2c| now.saturating_add(ms(s2c))),
                ..entry
            };
            if let Some(shard_ref) = shared.shard_at(shard, epoch) {
                let _ = shard_ref.cast(ShardMsg::AddTimers(vec![exact.clone()]));
            }
            Some(exact)
        }
        provisional => {
            // Started late (or after a restart): move the timer to now + start-to-close.
            stale_timers.extend(provisional.map(|p| p.key));
            timeouts.start_to_close.map(|s2c| {
                let entry = attempt_timer(
                    TimerId::ActivityStartToClose {
                        seq: task.seq,
                        attempt: task.attempt,
                    },
                    s2c,
                );
                claim.push(entry.clone());
                entry
            })
        }
    };
    let heartbeat_timer = timeouts.heartbeat.map(|hb| {
        attempt_timer(
            TimerId::ActivityHeartbeat {
                seq: task.seq,
                attempt: task.attempt,
            },
            hb,
        )
    });
    claim.extend(heartbeat_timer.clone());
    if !claim.is_empty() || !stale_timers.is_empty() {
        let mut ops: Vec<Op> = claim
            .iter()
            .map(|t| Op::Set(t.key.clone(), encode(&t.timer)))
            .collect();
        ops.extend(stale_timers.iter().cloned().map(Op::Clear));
        if shared
            .commit(ops, Vec::new(), Some(fence), None)
            .await
            .is_err()
        {
            // Not claimed: the task stays in the store for whoever owns the shard.
            return;
        }
        let Some(shard_ref) = shared.shard_at(shard, epoch) else {
            // The shard moved on since the claim committed; its new holder runs the task.
            return;
        };
        if !stale_timers.is_empty() {
            let _ = shard_ref.cast(ShardMsg::RemoveTimers(stale_timers));
        }
        let _ = shard_ref.cast(ShardMsg::AddTimers(claim.clone()));
    }
    shared
        .metrics
        .activity_schedule_to_start
        .observe_duration(std::time::Duration::from_millis(
            now.saturating_sub(task.scheduled_unix_ms),
        ));
    let last_heartbeat = match shared.store.begin() {
        Ok(mut tx) => tx
            .get(&keys.heartbeat(&task.run_id, task.seq))
            .await
            .ok()
            .flatten()
            .and_then(|bytes| decode::<Payload>("heartbeat", &bytes).ok()),
        Err(_) => None,
    };
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let attempt_key = (task.run_id, task.seq);
    shared
        .workers
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(attempt_key, (task.attempt, cancel_tx));
    let current_heartbeat_timer = Arc::new(Mutex::new(heartbeat_timer));
    let sink = {
        let shared = shared.clone();
        let run_id = task.run_id;
        let seq = task.seq;
        let attempt = task.attempt;
        let heartbeat_after = timeouts.heartbeat;
        let current = current_heartbeat_timer.clone();
        Arc::new(move |details: Payload| {
            let shared = shared.clone();
            let current = current.clone();
            shared.runtime.clone().spawn(async move {
                let keys = &shared.keys;
                let mut ops = vec![Op::Set(keys.heartbeat(&run_id, seq), encode(&details))];
                let mut replaced = None;
                let mut armed = None;
                if let Some(after) = heartbeat_after {
                    let fire_at = now_ms().saturating_add(ms(after));
                    let timer = TimerId::ActivityHeartbeat { seq, attempt };
                    let entry = TimerEntry::new(keys, shard, fire_at, run_id, timer);
                    ops.push(Op::Set(entry.key.clone(), encode(&timer)));
                    let old = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(old) = old {
                        ops.push(Op::Clear(old.key.clone()));
                        replaced = Some(old.key);
                    }
                    armed = Some(entry);
                }
                if shared
                    .commit(ops, Vec::new(), Some(fence), None)
                    .await
                    .is_ok()
                {
                    let shard_ref = shared.shard_at(shard, epoch);
                    if let Some(entry) = armed {
                        *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(entry.clone());
                        if let Some(shard_ref) = &shard_ref {
                            let _ = shard_ref.cast(ShardMsg::AddTimers(vec![entry]));
                        }
                    }
                    if let (Some(old), Some(shard_ref)) = (replaced, &shard_ref) {
                        let _ = shard_ref.cast(ShardMsg::RemoveTimers(vec![old]));
                    }
                }
            });
        }) as crate::registry::HeartbeatSink
    };
    let info = ActivityInfo {
        workflow_id: task.workflow_id.clone(),
        run_id: task.run_id,
        activity_id: task.seq.to_string(),
        activity_type: task.activity_type.clone(),
        attempt: task.attempt,
        idempotency_key: format!("{}/{}", task.workflow_id, task.seq),
        task_queue: task.options.task_queue.clone(),
    };
    let outcome = match shared.registry.activity_def(&task.activity_type) {
        Some(def) => {
            let ctx = ActivityContext::new(info, last_heartbeat, sink, cancel_rx);
            let future = def(ctx, task.input.clone());
            let mut running = shared.runtime.spawn(future);
            let mut halted = shared.workers.halted.subscribe();
            tokio::select! {
                joined = &mut running => match joined {
                    Ok(result) => result,
                    Err(e) => Err(Failure::new("ActivityPanicked", format!("activity panicked: {e}"))),
                },
                _ = halted.wait_for(|h| *h) => {
                    // The node stopped: abandon the attempt, as a crash would.
                    running.abort();
                    return;
                }
            }
        }
        None => Err(Failure::new(
            "ActivityTypeNotRegistered",
            format!(
                "activity type {:?} is not registered on this node",
                task.activity_type
            ),
        )
        .non_retryable()),
    };
    {
        // Only this attempt's entry: a later attempt of the same activity may be running.
        let mut running = shared
            .workers
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if running
            .get(&attempt_key)
            .is_some_and(|(attempt, _)| *attempt == task.attempt)
        {
            running.remove(&attempt_key);
        }
    }
    if shared.crash_at(crate::CrashPoint::DuringActivity) {
        return;
    }
    let message = match outcome {
        Ok(result) => {
            shared
                .metrics
                .activities_succeeded
                .fetch_add(1, Ordering::Relaxed);
            Message::ActivityCompleted {
                seq: task.seq,
                attempt: task.attempt,
                result,
            }
        }
        Err(failure) => {
            shared
                .metrics
                .activities_failed
                .fetch_add(1, Ordering::Relaxed);
            Message::ActivityFailed {
                seq: task.seq,
                attempt: task.attempt,
                failure,
            }
        }
    };
    let mut consume = vec![keys.task(shard, &task.run_id, task.seq, task.attempt)];
    consume.extend(start_to_close.map(|t| t.key));
    if let Some(hb) = current_heartbeat_timer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        consume.push(hb.key);
    }
    let delivery = Delivery {
        item: InboxItem::Message(message),
        consume,
    };
    // Only to the tenure that dispatched the attempt: if the shard moved meanwhile, its new
    // holder re-dispatched the task when it claimed the shard, and this result is dropped
    // (activities are at-least-once).
    if let Some(shard_ref) = shared.shard_at(shard, epoch) {
        let _ = shard_ref.cast(ShardMsg::Deliver {
            run_id: task.run_id,
            deliveries: vec![delivery],
        });
    }
}
