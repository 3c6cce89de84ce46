//! Activity workers: run activity attempts on the node's async runtime, at most
//! `activity_concurrency_max` at a time.
//!
//! Every attempt is marked started (`AttemptRecord`) before it runs, and a task whose attempt is
//! marked is never dispatched again: if its worker dies, the attempt times out by start-to-close
//! (or heartbeat) and the retry is the next attempt, counted against the retry policy.
//! Executions are therefore bounded by `maximum_attempts`; within that bound an activity is
//! at-least-once, and `ActivityInfo::attempt` tells it that it is a re-run.
//!
//! Two ways to the mark. An attempt without heartbeat or schedule-to-start timeouts is *handed
//! over* by the transition that enqueues it: that commit writes the mark and a provisional
//! start-to-close timer (`start_to_close + CLAIM_GRACE_MS` after scheduling), as a task handed
//! to a Temporal worker counts as started; a worker that starts it within the grace writes
//! nothing more (the exact timer lives in memory, the durable one is the crash backstop).
//! Every other attempt, and one that starts later than the grace, runs only after its *claim*
//! commits: one small fenced write (batched with everything else) that marks it started, arms its
//! start-to-close and heartbeat timers and clears its schedule-to-start and provisional timers.
//! The claim checks, inside the batch transaction, that the attempt's task still exists (the
//! run has not ended the attempt: timed out, canceled, closed) and that no other claim marked
//! it, so one attempt runs at most once however often it is dispatched.
//!
//! Heartbeats are cheap and never block: `heartbeat()` keeps the latest details in memory and
//! one recorder per attempt writes them (and moves the heartbeat timer) at most once per
//! throttle interval (0.8 × the heartbeat timeout, capped at `HEARTBEAT_THROTTLE_MAX_MS`;
//! `HEARTBEAT_THROTTLE_DEFAULT_MS` without a heartbeat timeout), one write at a time. A write
//! moves the heartbeat timer to the last heartbeat call + timeout (Temporal's deadline), and
//! one that does not commit is tried again every `HEARTBEAT_WRITE_RETRY` until it does (or
//! the attempt ends): the timer it moves may be the attempt's only deadline. The
//! recorder stops before the attempt's result is handed over, and the details of a failed
//! attempt are written before its result, so the next attempt sees the last details.
//!
//! The result goes to the run's actor in memory, only if this node still holds the shard at the
//! epoch that dispatched the attempt; attempts of a shard this node loses are aborted.
//!
//! Dispatched attempts (running, claiming, or waiting for a slot) are bounded by
//! `activity_attempts_dispatched_max`: each holds a `dispatch::Unit`, and tasks past the bound
//! wait in the store, deferred, until the puller (`dispatch`) hands them out; a deferred
//! attempt always starts by a claim, which also clears its deferred marker.

use crate::backoff::Backoff;
use crate::local::Local;
use crate::messages::Delivery;
use crate::messages::ShardMsg;
use crate::ops::{Check, CommitError, Op, Verify};
use crate::pool::Unit;
use crate::pool::{Beat, Running, Workers};
use crate::records::{AttemptRecord, Heartbeat, InboxItem, TaskRecord, encode};
use crate::registry::{ActivityContext, ActivityInfo};
use crate::shared::Shared;
use crate::timers::TimerEntry;
use cairn_core::{Message, TimerId};
use cairn_store::{Store, StoreError, Transaction};
use cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX;
use cairn_types::{ActivityTimeouts, Failure, Payload};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Throttle of heartbeat writes for an attempt without a heartbeat timeout (Temporal's SDKs'
/// default).
pub const HEARTBEAT_THROTTLE_DEFAULT_MS: u64 = 30_000;
/// Pause before a heartbeat write that did not commit is tried again.
pub const HEARTBEAT_WRITE_RETRY: Duration = Duration::from_millis(50);
/// Longest throttle of heartbeat writes, whatever the heartbeat timeout.
pub const HEARTBEAT_THROTTLE_MAX_MS: u64 = 60_000;
/// Shortest throttle: a 1 ms heartbeat timeout still writes at most once per this.
pub const HEARTBEAT_THROTTLE_MIN_MS: u64 = 1;
/// First wait before a claim that failed on a store error is tried again (doubling).
pub const CLAIM_RETRY_FIRST_MS: u64 = 20;
/// Longest wait between claim tries.
pub const CLAIM_RETRY_MAX_MS: u64 = 2_000;

pub use crate::timers::CLAIM_GRACE_MS;
use crate::timers::{ms, needs_claim, provisional_start_to_close, schedule_to_start_timer};

const _: () = assert!(HEARTBEAT_THROTTLE_DEFAULT_MS <= HEARTBEAT_THROTTLE_MAX_MS);
const _: () = assert!(CLAIM_RETRY_FIRST_MS <= CLAIM_RETRY_MAX_MS);

/// How often an attempt with these timeouts writes its heartbeat at most.
pub fn heartbeat_throttle(timeouts: &ActivityTimeouts) -> Duration {
    let millis = match timeouts.heartbeat {
        Some(timeout) => (ms(timeout).saturating_mul(4) / 5)
            .clamp(HEARTBEAT_THROTTLE_MIN_MS, HEARTBEAT_THROTTLE_MAX_MS),
        None => HEARTBEAT_THROTTLE_DEFAULT_MS,
    };
    Duration::from_millis(millis)
}

/// A spawned task aborted when its handle drops (an attempt given up mid-way).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Dispatch needs the node's shared state, so it lives here, above the pool.
impl Workers {
    /// Runs `task` on the node's runtime, once a slot is free and its claim commits; `unit` is
    /// its share of the dispatch bound. A `deferred` task (pulled from the store, see
    /// `dispatch`) always starts by a claim, which also clears its deferred marker.
    pub(crate) fn dispatch<S: Store>(
        &self,
        shared: Arc<Local<S>>,
        epoch: u64,
        task: TaskRecord,
        unit: Unit,
        deferred: bool,
    ) {
        let key = (task.run_id, task.seq);
        let beat = Arc::new(Beat {
            clock: shared.config.clock.clone(),
            ..Beat::default()
        });
        let (cancel, cancel_rx) = watch::channel(false);
        let (abandon, abandon_rx) = watch::channel(false);
        {
            let mut running = self.running();
            if running.get(&key).is_some_and(|r| {
                r.attempt == task.attempt && r.epoch == epoch && !*r.abandon.borrow()
            }) {
                // Already dispatched by this tenure; its claim decides, this copy adds nothing.
                return;
            }
            running.insert(
                key,
                Running {
                    _unit: unit,
                    attempt: task.attempt,
                    shard: task.shard,
                    epoch,
                    cancel,
                    abandon,
                    beat: beat.clone(),
                },
            );
        }
        let runtime = shared.runtime.clone();
        runtime.spawn(async move {
            let attempt = task.attempt;
            let permit = shared.workers.slots.clone().acquire_owned().await;
            if permit.is_ok() && !*cancel_rx.borrow() && !*abandon_rx.borrow() {
                let signals = Signals {
                    cancel: cancel_rx,
                    abandon: abandon_rx,
                    beat,
                };
                run_attempt(&shared, epoch, task, signals, deferred).await;
            }
            // Only this dispatch's entry: a later attempt, or a later tenure's dispatch of
            // this one, may be here.
            let mut running = shared.workers.running();
            if running
                .get(&key)
                .is_some_and(|r| r.attempt == attempt && r.epoch == epoch)
            {
                running.remove(&key);
            }
        });
    }
}

/// What an attempt listens to while it runs.
struct Signals {
    cancel: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
    beat: Arc<Beat>,
}

/// What a committed claim armed.
struct Claimed {
    started_unix_ms: u64,
    start_to_close: Option<TimerEntry>,
    heartbeat: Option<TimerEntry>,
}

/// Why a claim did not commit.
enum ClaimError {
    /// The attempt is no longer runnable here (ended, claimed by another dispatch, the shard
    /// moved, the node stopped).
    Refused,
}

/// Claims the attempt: marks it started and arms its timers, in one fenced commit that checks
/// the task still exists and no other claim marked it. Store errors are retried with backoff
/// while this node holds the shard.
async fn claim<S: Store>(
    shared: &Arc<Local<S>>,
    epoch: u64,
    task: &TaskRecord,
    abandon: &watch::Receiver<bool>,
    deferred: bool,
) -> Result<Claimed, ClaimError> {
    let keys = &shared.keys;
    let shard = task.shard;
    let deferred_key = keys.deferred(shard, &task.run_id, task.seq, task.attempt);
    let attempt_key = keys.attempt(shard, &task.run_id, task.seq, task.attempt);
    let task_key = keys.task(shard, &task.run_id, task.seq, task.attempt);
    let mark = AttemptRecord {
        started_unix_ms: shared.now_ms(),
        node_id: shared.config.node_id.clone(),
        claim: shared.config.entropy.uuid_v7(shared.now_ms()),
    };
    let mark_bytes = encode(&mark);
    let mut backoff = Backoff::new(
        Duration::from_millis(CLAIM_RETRY_FIRST_MS),
        Duration::from_millis(CLAIM_RETRY_MAX_MS),
    );
    loop {
        if *abandon.borrow() || shared.shard_at(shard, epoch).is_none() {
            return Err(ClaimError::Refused);
        }
        let now = shared.now_ms();
        let timeouts = task.options.timeouts;
        let timer = |timer: TimerId, after: Duration| {
            TimerEntry::new(
                keys,
                shard,
                now.saturating_add(ms(after)),
                task.run_id,
                timer,
            )
        };
        let (seq, attempt) = (task.seq, task.attempt);
        let start_to_close = timeouts
            .start_to_close
            .map(|d| timer(TimerId::ActivityStartToClose { seq, attempt }, d));
        let heartbeat = timeouts
            .heartbeat
            .map(|d| timer(TimerId::ActivityHeartbeat { seq, attempt }, d));
        // Timers this claim replaces: the schedule-to-start timer, and the provisional
        // start-to-close timer of a handed-over attempt that started late.
        // (Unless the new timer has the same key, when the write itself replaces it.)
        let replaced: Vec<Vec<u8>> = schedule_to_start_timer(keys, task)
            .into_iter()
            .chain(provisional_start_to_close(keys, task))
            .map(|t| t.key)
            .filter(|key| start_to_close.as_ref().is_none_or(|t| &t.key != key))
            .collect();
        // A handed-over attempt starting late moves its start-to-close timer (its mark);
        // every other attempt writes a start mark, checked against every other claim.
        let handed_over = !needs_claim(&timeouts);
        let mut ops = Vec::new();
        if !handed_over {
            ops.push(Op::Set(attempt_key.clone(), mark_bytes.clone()));
        }
        for entry in start_to_close.iter().chain(&heartbeat) {
            ops.push(Op::Set(entry.key.clone(), encode(&entry.timer)));
        }
        ops.extend(replaced.iter().cloned().map(Op::Clear));
        let ours = mark_bytes.clone();
        let mut checks = vec![Check::key(task_key.clone(), |value| match value {
            Some(_) => Ok(()),
            None => Err(refused("the attempt is no longer scheduled")),
        })];
        if deferred {
            // Whoever clears the marker starts the attempt; a second pull of it is refused.
            ops.push(Op::Clear(deferred_key.clone()));
            checks.push(Check::key(deferred_key.clone(), |value| match value {
                Some(_) => Ok(()),
                None => Err(refused("the deferred attempt was already pulled")),
            }));
        }
        let verify = if handed_over {
            // The new timer key (its fire time in ms) is written only by this claim.
            start_to_close
                .as_ref()
                .map(|t| (t.key.clone(), Verify::Exists))
        } else {
            checks.push(Check::key(attempt_key.clone(), move |value| match value {
                None => Ok(()),
                // Our own mark: an earlier try of this claim landed after all.
                Some(bytes) if bytes == ours.as_slice() => Ok(()),
                Some(_) => Err(refused("the attempt was started by another claim")),
            }));
            Some((attempt_key.clone(), Verify::Holds(mark_bytes.clone())))
        };
        match shared
            .commit(ops, checks, Some((shard, epoch)), verify)
            .await
        {
            Ok(()) => {
                if let Some(shard_ref) = shared.shard_at(shard, epoch) {
                    if !replaced.is_empty() {
                        let _ = shard_ref.cast(ShardMsg::RemoveTimers(replaced));
                    }
                    let armed: Vec<TimerEntry> =
                        start_to_close.iter().chain(&heartbeat).cloned().collect();
                    if !armed.is_empty() {
                        let _ = shard_ref.cast(ShardMsg::AddTimers(armed));
                    }
                }
                return Ok(Claimed {
                    started_unix_ms: now,
                    start_to_close,
                    heartbeat,
                });
            }
            Err(CommitError::Store(error)) => {
                tracing::debug!(run_id = %task.run_id, seq = task.seq, %error, "attempt claim failed; retrying");
                backoff.wait().await;
            }
            Err(CommitError::Fenced { .. }) => {
                // This tenure is over (the lease moved on before the node noticed): its
                // backlog of deferred tasks is the next holder's, and pulling more of it would
                // only be fenced again.
                shared.workers.capacity.forget(shard, epoch);
                return Err(ClaimError::Refused);
            }
            Err(CommitError::Rejected(_) | CommitError::Stopped) => {
                return Err(ClaimError::Refused);
            }
        }
    }
}

/// The error a `Check` of an attempt's keys answers when the attempt may not go ahead (it
/// reaches only the runtime, which stops the claim or transition it refused).
pub(crate) fn refused(reason: &str) -> crate::ClientError {
    crate::ClientError::Store(StoreError::Backend {
        message: reason.to_string(),
    })
}

async fn run_attempt<S: Store>(
    shared: &Arc<Local<S>>,
    epoch: u64,
    task: TaskRecord,
    signals: Signals,
    deferred: bool,
) {
    // Shared with the heartbeat recorder, not copied.
    let task = Arc::new(task);
    let keys = &shared.keys;
    let shard = task.shard;
    let now = shared.now_ms();
    // A deferred task was written without a provisional timer, and so was one of a type this
    // node's workers do not run (the planner's rule): those always claim.
    let runs_here = cairn_plan::runs_locally(
        &shared.registry,
        shared.config.remote_activities,
        &task.activity_type,
        &task.options.task_queue,
    );
    let handed_over = provisional_start_to_close(keys, &task).filter(|_| {
        runs_here && !deferred && now <= task.scheduled_unix_ms.saturating_add(CLAIM_GRACE_MS)
    });
    // An attempt for a remote worker starts when a worker's poll takes it: it claims then
    // (`remote_attempt`), so its start-to-close counts from that poll, and one never picked
    // up times out schedule-to-start.
    let claim_on_take = shared.config.remote_activities && !runs_here;
    let claimed = match (handed_over, task.options.timeouts.start_to_close) {
        _ if claim_on_take => Claimed {
            started_unix_ms: now,
            start_to_close: None,
            heartbeat: None,
        },
        (Some(provisional), Some(s2c)) => {
            // Started within the grace of its hand-over: the durable provisional timer is the
            // crash backstop; in memory the same timer moves to the exact start + timeout.
            let exact = TimerEntry {
                fire_at_unix_ms: now.saturating_add(ms(s2c)),
                ..provisional
            };
            if let Some(shard_ref) = shared.shard_at(shard, epoch) {
                let _ = shard_ref.cast(ShardMsg::AddTimers(vec![exact.clone()]));
            }
            Claimed {
                started_unix_ms: now,
                start_to_close: Some(exact),
                heartbeat: None,
            }
        }
        _ => match claim(shared, epoch, &task, &signals.abandon, deferred).await {
            Ok(claimed) => claimed,
            Err(ClaimError::Refused) => return,
        },
    };
    if !claim_on_take {
        observe_schedule_to_start(shared, &task, &claimed);
    }
    // Set by a claim made when a remote worker takes the attempt.
    let claimed_on_take: Arc<Mutex<Option<Claimed>>> = Arc::new(Mutex::new(None));
    let last_heartbeat = match shared.store.begin() {
        Ok(mut tx) => tx
            .get(&keys.heartbeat(&task.run_id, task.seq))
            .await
            .ok()
            .flatten()
            .and_then(|bytes| Heartbeat::decode(&bytes).ok())
            .map(|beat| beat.details),
        Err(_) => None,
    };
    let (stop_recorder, stop_rx) = watch::channel(false);
    // The claim armed the heartbeat timer: it counts as the first write.
    let claimed_at = Instant::now();
    let current_heartbeat_timer = Arc::new(Mutex::new(claimed.heartbeat.clone()));
    // The recorder starts with the attempt's first heartbeat: most activities never beat.
    let recorder: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>> = Arc::new(Mutex::new(None));
    // Details too large to store fail the attempt (as Temporal's server does): set here by
    // the sink, watched while the attempt runs.
    let (oversized_tx, mut oversized) = watch::channel(None::<usize>);
    let sink = {
        let beat = signals.beat.clone();
        let (shared, task, current, recorder) = (
            shared.clone(),
            task.clone(),
            current_heartbeat_timer.clone(),
            recorder.clone(),
        );
        Arc::new(move |details: Payload| {
            if details.len() > INLINE_PAYLOAD_BYTES_MAX {
                oversized_tx.send_replace(Some(details.len()));
                return;
            }
            beat.call(details);
            let mut recorder = recorder.lock().unwrap_or_else(|p| p.into_inner());
            if recorder.is_none() && !*stop_rx.borrow() {
                *recorder = Some(shared.runtime.spawn(record_heartbeats(
                    shared.clone(),
                    epoch,
                    task.clone(),
                    beat.clone(),
                    current.clone(),
                    stop_rx.clone(),
                    claimed_at,
                )));
            }
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
    let attempt = async {
        match shared
            .registry
            .activity_def(&task.activity_type)
            .filter(|_| runs_here)
        {
            Some(def) => {
                let ctx = ActivityContext::new(info, last_heartbeat, sink, signals.cancel.clone());
                let future = def(ctx, task.input.clone());
                let mut running = AbortOnDrop(shared.runtime.spawn(future));
                let mut abandon = signals.abandon.clone();
                tokio::select! {
                    biased;
                    joined = &mut running.0 => match joined {
                        Ok(result) => Some(result),
                        Err(e) => Some(Err(Failure::new("ActivityPanicked", format!("activity panicked: {e}")))),
                    },
                    () = shared.workers.halted.wait() => None,
                    _ = abandon.wait_for(|a| *a) => None,
                }
                // Otherwise the node stopped or lost the shard: the attempt is abandoned (aborted
                // as `running` drops), as a crash would.
            }
            None if shared.config.remote_activities => {
                let take = claim_on_take.then_some(RemoteClaim {
                    epoch,
                    deferred,
                    claimed: &claimed_on_take,
                    heartbeat_timer: &current_heartbeat_timer,
                });
                remote_attempt(
                    shared,
                    &task,
                    &claimed,
                    take,
                    last_heartbeat,
                    sink,
                    &signals,
                )
                .await
            }
            None => Some(Err(Failure::new(
                "ActivityTypeNotRegistered",
                format!(
                    "activity type {:?} is not registered on this node",
                    task.activity_type
                ),
            )
            .non_retryable())),
        }
    };
    let too_large = async {
        let seen = oversized
            .wait_for(Option::is_some)
            .await
            .map(|len| (*len).unwrap_or(0));
        match seen {
            Ok(len) => len,
            // The attempt's context is gone: no heartbeat can come.
            Err(_) => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        biased;
        outcome = attempt => outcome,
        len = too_large => Some(Err(Failure::payload_too_large("the heartbeat details", len))),
    };
    // What the attempt made is stored in one event: a result too large fails the attempt, a
    // failure too large is cut to fit.
    let outcome = outcome.map(|outcome| match outcome {
        Ok(result) if result.len() > INLINE_PAYLOAD_BYTES_MAX => Err(Failure::payload_too_large(
            "the activity's result",
            result.len(),
        )),
        Ok(result) => Ok(result),
        Err(failure) => Err(failure.bounded(INLINE_PAYLOAD_BYTES_MAX)),
    });
    // The recorder stops (finishing a write in flight) before the result is handed over, so
    // no heartbeat write lands after the transition that consumes the attempt's timers.
    stop_recorder.send_replace(true);
    let running_recorder = recorder.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(recorder) = running_recorder {
        let _ = recorder.await;
    }
    let Some(outcome) = outcome else {
        return;
    };
    if shared.crash_at(crate::CrashPoint::DuringActivity) {
        return;
    }
    if outcome.is_err()
        && let Some(details) = signals.beat.take()
    {
        // The next attempt must see the last details, even those the throttle held back.
        let beat = Heartbeat {
            details,
            at_unix_ms: signals.beat.last_call_unix_ms.load(Ordering::Relaxed),
        };
        let ops = vec![Op::Set(
            keys.heartbeat(&task.run_id, task.seq),
            encode(&beat),
        )];
        let _ = shared
            .commit(ops, Vec::new(), Some((shard, epoch)), None)
            .await;
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
    if needs_claim(&task.options.timeouts) {
        consume.push(keys.attempt(shard, &task.run_id, task.seq, task.attempt));
    }
    consume.extend(claimed.start_to_close.map(|t| t.key));
    let taken = claimed_on_take
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    consume.extend(taken.and_then(|c| c.start_to_close).map(|t| t.key));
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
    // holder times the attempt out and retries it (the attempt was aborted on the move).
    if let Some(shard_ref) = shared.shard_at(shard, epoch) {
        let _ = shard_ref.cast(ShardMsg::Deliver {
            run_id: task.run_id,
            deliveries: vec![delivery],
        });
    }
}

/// Hands the attempt to a remote worker through matching and waits for its answer. `None`
/// (no result delivered) if the node stops, the shard leaves, or the attempt's own timeouts
/// pass first: its timer then ends the attempt in the run, and a late answer is refused.
/// Records how long the attempt waited to start.
fn observe_schedule_to_start<S: Store>(shared: &Shared<S>, task: &TaskRecord, claimed: &Claimed) {
    shared
        .metrics
        .activity_schedule_to_start
        .observe_duration(Duration::from_millis(
            claimed
                .started_unix_ms
                .saturating_sub(task.scheduled_unix_ms),
        ));
}

/// What a remote attempt needs to claim itself when a worker takes it.
struct RemoteClaim<'a> {
    epoch: u64,
    deferred: bool,
    /// Where the claim is kept (its start-to-close timer is consumed with the result).
    claimed: &'a Mutex<Option<Claimed>>,
    /// The attempt's heartbeat timer, armed by the claim.
    heartbeat_timer: &'a Mutex<Option<TimerEntry>>,
}

async fn remote_attempt<S: Store>(
    shared: &Arc<Local<S>>,
    task: &TaskRecord,
    claimed: &Claimed,
    take: Option<RemoteClaim<'_>>,
    heartbeat_details: Option<Payload>,
    sink: crate::registry::HeartbeatSink,
    signals: &Signals,
) -> Option<Result<Payload, Failure>> {
    let remote = crate::matching::RemoteActivityTask {
        token: String::new(),
        workflow_id: task.workflow_id.clone(),
        run_id: task.run_id,
        seq: task.seq,
        activity_type: task.activity_type.clone(),
        task_queue: task.options.task_queue.clone(),
        input: task.input.clone(),
        attempt: task.attempt,
        scheduled_unix_ms: task.scheduled_unix_ms,
        started_unix_ms: claimed.started_unix_ms,
        timeouts: task.options.timeouts,
        retry: task.options.retry.clone(),
        heartbeat_details,
    };
    let mut offered = shared.matching.offer(remote, sink, signals.cancel.clone());
    let timeouts = task.options.timeouts;
    let mut abandon = signals.abandon.clone();
    if let Some(take) = take {
        // Waits for a worker to take it, within its schedule-to-start bound (past it the
        // run's timer has ended the attempt); then claims it, as a local attempt claims
        // when it starts. A claim refused (the timeout landed first) withdraws the task.
        let waiting = timeouts
            .schedule_to_start
            .into_iter()
            .chain(timeouts.schedule_to_close)
            .min()
            .unwrap_or(Duration::from_secs(3_600))
            .saturating_add(Duration::from_millis(CLAIM_GRACE_MS));
        let taken = tokio::select! {
            biased;
            taken = &mut offered.taken => taken.is_ok(),
            _ = tokio::time::sleep(waiting) => false,
            () = shared.workers.halted.wait() => false,
            _ = abandon.wait_for(|a| *a) => false,
        };
        if !taken {
            return None;
        }
        let claimed = claim(shared, take.epoch, task, &signals.abandon, take.deferred)
            .await
            .ok()?;
        observe_schedule_to_start(shared, task, &claimed);
        *take
            .heartbeat_timer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = claimed.heartbeat.clone();
        *take.claimed.lock().unwrap_or_else(|p| p.into_inner()) = Some(claimed);
    }
    // The attempt's own bound in time: past it the run's timer has ended the attempt.
    let limit = timeouts
        .start_to_close
        .into_iter()
        .chain(timeouts.schedule_to_close)
        .min()
        .unwrap_or(Duration::from_secs(3_600))
        .saturating_add(Duration::from_millis(CLAIM_GRACE_MS));
    let outcome = tokio::select! {
        biased;
        answer = &mut offered.outcome => answer.ok(),
        _ = tokio::time::sleep(limit) => None,
        () = shared.workers.halted.wait() => None,
        _ = abandon.wait_for(|a| *a) => None,
    };
    drop(offered);
    outcome.map(|o| match o {
        crate::matching::RemoteOutcome::Completed(result) => Ok(result),
        crate::matching::RemoteOutcome::Failed(failure) => Err(failure),
    })
}

/// One attempt's heartbeat recorder: writes the latest details (and moves the heartbeat
/// timer) at most once per throttle interval, one write at a time, until told to stop.
async fn record_heartbeats<S: Store>(
    shared: Arc<Local<S>>,
    epoch: u64,
    task: Arc<TaskRecord>,
    beat: Arc<Beat>,
    current: Arc<Mutex<Option<TimerEntry>>>,
    mut stop: watch::Receiver<bool>,
    mut last_write: Instant,
) {
    let throttle = heartbeat_throttle(&task.options.timeouts);
    let mut write_failed = false;
    loop {
        if write_failed {
            // Written again without waiting for another heartbeat: the timer this write
            // moves may be the attempt's only deadline (a forced write replaces a fired one).
            tokio::select! {
                biased;
                _ = tokio::time::sleep(HEARTBEAT_WRITE_RETRY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        } else {
            tokio::select! {
                biased;
                _ = beat.called.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let due = last_write + throttle;
            if Instant::now() < due && !beat.force.load(Ordering::Relaxed) {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(due) => {}
                    _ = beat.forced.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        beat.force.store(false, Ordering::Relaxed);
        let Some(details) = beat.take() else {
            write_failed = false;
            continue;
        };
        last_write = Instant::now();
        let called_unix_ms = beat.last_call_unix_ms.load(Ordering::Relaxed);
        write_failed =
            !write_heartbeat(&shared, epoch, &task, &details, called_unix_ms, &current).await;
        if write_failed {
            beat.restore(details);
        }
    }
}

/// Writes one heartbeat: its details and, with a heartbeat timeout, the timer moved to the
/// last heartbeat call (`called_unix_ms`) + timeout. Returns whether it committed.
async fn write_heartbeat<S: Store>(
    shared: &Arc<Local<S>>,
    epoch: u64,
    task: &TaskRecord,
    details: &Payload,
    called_unix_ms: u64,
    current: &Mutex<Option<TimerEntry>>,
) -> bool {
    let keys = &shared.keys;
    let (shard, run_id, seq, attempt) = (task.shard, task.run_id, task.seq, task.attempt);
    let beat = Heartbeat {
        details: details.clone(),
        at_unix_ms: called_unix_ms,
    };
    let mut ops = vec![Op::Set(keys.heartbeat(&run_id, seq), encode(&beat))];
    let old = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let armed = task.options.timeouts.heartbeat.map(|after| {
        let fire_at = called_unix_ms.saturating_add(ms(after));
        let timer = TimerId::ActivityHeartbeat { seq, attempt };
        TimerEntry::new(keys, shard, fire_at, run_id, timer)
    });
    if let Some(entry) = &armed {
        ops.push(Op::Set(entry.key.clone(), encode(&entry.timer)));
        if let Some(old) = &old
            && old.key != entry.key
        {
            ops.push(Op::Clear(old.key.clone()));
        }
    }
    if shared
        .commit(ops, Vec::new(), Some((shard, epoch)), None)
        .await
        .is_err()
    {
        return false;
    }
    if let Some(entry) = armed {
        *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(entry.clone());
        if let Some(shard_ref) = shared.shard_at(shard, epoch) {
            let _ = shard_ref.cast(ShardMsg::AddTimers(vec![entry.clone()]));
            if let Some(old) = old
                && old.key != entry.key
            {
                let _ = shard_ref.cast(ShardMsg::RemoveTimers(vec![old.key]));
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The throttle is 0.8 × the heartbeat timeout within its bounds, and the default without.
    #[test]
    fn heartbeat_throttle_follows_the_timeout() {
        let with = |millis| {
            heartbeat_throttle(
                &ActivityTimeouts::start_to_close(Duration::from_secs(600))
                    .with_heartbeat(Duration::from_millis(millis)),
            )
        };
        assert_eq!(with(1_000), Duration::from_millis(800));
        assert_eq!(with(1), Duration::from_millis(HEARTBEAT_THROTTLE_MIN_MS));
        assert_eq!(
            with(300_000),
            Duration::from_millis(HEARTBEAT_THROTTLE_MAX_MS)
        );
        assert_eq!(
            heartbeat_throttle(&ActivityTimeouts::start_to_close(Duration::from_secs(5))),
            Duration::from_millis(HEARTBEAT_THROTTLE_DEFAULT_MS)
        );
    }
}
