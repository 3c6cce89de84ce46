//! The simulated workload: jobs whose shape (sequential and parallel activities, a durable
//! timer, child workflows, a signal to wait for) comes from their input, so each result is
//! known in advance.

use cairn::{ActivityContext, Ctx, Failure, Query, RetryPolicy, Signal, WorkflowError};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::IntoFuture;
use std::rc::Rc;
use std::time::Duration;

/// What one job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub n: u64,
    pub sequential: u32,
    pub parallel: u32,
    pub timer_ms: u64,
    /// Waits for a `go` signal and adds its value.
    pub signal: bool,
    /// Child workflows started at once (on whatever shards their ids fall), each one step.
    #[serde(default)]
    pub children: u32,
    /// Heartbeating activities run at once after the children (each with a schedule-to-start
    /// timeout shorter than its work, and a heartbeat timeout).
    #[serde(default)]
    pub beating: u32,
    /// Runs before the job proper: each does one step and continues as new with the step's
    /// value added (a job with a signal continues none: its signal could reach a run that
    /// never reads it).
    #[serde(default)]
    pub continues: u32,
    /// Steps run by the simulation's remote worker (type `sim_remote`, not registered on any
    /// node: each attempt waits in matching for a poll), after the heartbeating activities.
    #[serde(default)]
    pub remote: u32,
}

/// The activity type the remote worker serves, and its task queue.
pub const REMOTE_ACTIVITY: &str = "sim_remote";
pub const REMOTE_TASK_QUEUE: &str = "sim-remote";

/// What the remote worker returns for input `x` (as a step would).
pub fn remote_value(x: u64) -> u64 {
    step_value(x)
}

/// What `sim_child(x)` returns.
pub fn child_value(x: u64) -> u64 {
    step_value(x)
}

/// Most attempts of a heartbeating activity (its retry policy's `maximum_attempts`).
pub const BEAT_ATTEMPTS_MAX: u32 = 20;
/// A heartbeating activity's schedule-to-start timeout: shorter than its work, so a start
/// that the timeout failed would show.
pub const BEAT_SCHEDULE_TO_START_MS: u64 = 200;
/// How long a heartbeating activity works, beating every 2 ms.
pub const BEAT_WORK_MS: u64 = 300;

thread_local! {
    /// Attempt numbers that executed, by idempotency key. Per thread: a simulation runs on one
    /// thread, and simulations on other threads (tests run in parallel) keep their own.
    static ATTEMPTS: RefCell<HashMap<String, Vec<u32>>> = RefCell::default();
    /// Executions of each step, by idempotency key.
    static EXECUTIONS: RefCell<HashMap<String, u32>> = RefCell::default();
}

/// Forgets what earlier simulations on this thread executed.
pub fn reset() {
    ATTEMPTS.with_borrow_mut(HashMap::clear);
    EXECUTIONS.with_borrow_mut(HashMap::clear);
}

/// The attempt numbers that started executing for the heartbeating activity with this
/// idempotency key, in order (any node).
pub fn attempts_executed(key: &str) -> Vec<u32> {
    ATTEMPTS.with_borrow(|m| m.get(key).cloned().unwrap_or_default())
}

/// Heartbeats every 2 ms for `BEAT_WORK_MS`, noting which attempt executed; returns `3x + 1`.
pub async fn sim_beat(ctx: ActivityContext, x: u64) -> Result<u64, Failure> {
    ATTEMPTS.with_borrow_mut(|m| {
        m.entry(ctx.info().idempotency_key.clone())
            .or_default()
            .push(ctx.info().attempt);
    });
    let started = tokio::time::Instant::now();
    let mut beat = 0u64;
    while started.elapsed() < Duration::from_millis(BEAT_WORK_MS) {
        beat += 1;
        ctx.heartbeat(
            cairn::Payload::encode(&beat).map_err(|e| Failure::new("Encode", e.to_string()))?,
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(step_value(x))
}

/// The signal a job may wait for.
pub const GO: Signal<u64> = Signal::new("go");
/// How many steps a job has finished.
pub const PROGRESS: Query<(), u32> = Query::new("progress");

/// How many times the activity with this idempotency key ran (any attempt, any node).
pub fn executions(key: &str) -> u32 {
    EXECUTIONS.with_borrow(|m| m.get(key).copied().unwrap_or(0))
}

fn step_value(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

/// A step: takes a few milliseconds, counts its executions, returns `3x + 1`.
pub async fn sim_step(ctx: ActivityContext, x: u64) -> Result<u64, Failure> {
    tokio::time::sleep(Duration::from_millis(2 + x % 7)).await;
    EXECUTIONS.with_borrow_mut(|m| {
        *m.entry(ctx.info().idempotency_key.clone()).or_insert(0) += 1;
    });
    Ok(step_value(x))
}

fn retries() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(20))
        .maximum_interval(Duration::from_millis(200))
        .build()
        .expect("a valid policy")
}

/// The job: `sequential` steps one after another, a timer, `parallel` steps at once, then the
/// signal if it waits for one.
pub async fn sim_job(ctx: Ctx, spec: JobSpec) -> Result<u64, WorkflowError> {
    let progress = Rc::new(Cell::new(0u32));
    let p = progress.clone();
    ctx.on_query(&PROGRESS, move |()| p.get());
    if spec.continues > 0 {
        let step = ctx
            .activity(sim_step, spec.n.wrapping_add(400))
            .start_to_close(Duration::from_secs(2))
            .retry(retries())
            .await?;
        return Err(ctx.continue_as_new(&JobSpec {
            n: spec.n.wrapping_add(step),
            continues: spec.continues - 1,
            ..spec
        }));
    }
    let mut acc = spec.n;
    for i in 0..spec.sequential {
        let x = acc.wrapping_add(u64::from(i));
        acc = acc.wrapping_add(
            ctx.activity(sim_step, x)
                .start_to_close(Duration::from_secs(2))
                .retry(retries())
                .await?,
        );
        progress.set(progress.get() + 1);
    }
    if spec.timer_ms > 0 {
        ctx.sleep(Duration::from_millis(spec.timer_ms)).await;
    }
    let calls: Vec<_> = (0..spec.parallel)
        .map(|i| {
            ctx.activity(sim_step, acc.wrapping_add(100 + u64::from(i)))
                .start_to_close(Duration::from_secs(2))
                .retry(retries())
        })
        .collect();
    for result in futures::future::join_all(calls).await {
        acc = acc.wrapping_add(result?);
    }
    progress.set(progress.get() + 1);
    let base = acc;
    let children: Vec<_> = (0..spec.children)
        .map(|i| {
            ctx.child_workflow(sim_child, base.wrapping_add(200 + u64::from(i)))
                .into_future()
        })
        .collect();
    for result in futures::future::join_all(children).await {
        acc = acc.wrapping_add(result?);
    }
    let beats: Vec<_> = (0..spec.beating)
        .map(|i| {
            ctx.activity(sim_beat, acc.wrapping_add(300 + u64::from(i)))
                .schedule_to_start(Duration::from_millis(BEAT_SCHEDULE_TO_START_MS))
                .heartbeat_timeout(Duration::from_millis(150))
                .start_to_close(Duration::from_secs(5))
                .retry(
                    RetryPolicy::builder()
                        .initial_interval(Duration::from_millis(20))
                        .maximum_interval(Duration::from_millis(200))
                        .maximum_attempts(BEAT_ATTEMPTS_MAX)
                        .build()
                        .expect("a valid policy"),
                )
        })
        .collect();
    let base = acc;
    for (i, result) in (0u64..).zip(futures::future::join_all(beats).await) {
        // A schedule-to-start timeout is legitimate (a node died before the attempt started)
        // and not retried; the checker proves no started attempt ended that way. The job's
        // value does not depend on it.
        match result {
            Ok(value) => acc = acc.wrapping_add(value),
            Err(cairn::ActivityError::TimedOut(cairn_types::TimeoutKind::ScheduleToStart)) => {
                acc = acc.wrapping_add(step_value(base.wrapping_add(300 + i)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let remote: Vec<_> = (0..spec.remote)
        .map(|i| {
            ctx.activity_named::<u64, u64>(REMOTE_ACTIVITY, acc.wrapping_add(500 + u64::from(i)))
                .task_queue(REMOTE_TASK_QUEUE)
                .start_to_close(Duration::from_millis(300))
                .retry(retries())
        })
        .collect();
    for result in futures::future::join_all(remote).await {
        acc = acc.wrapping_add(result?);
    }
    if spec.signal {
        let value = ctx.signal_receiver(&GO).recv().await;
        acc = acc.wrapping_add(value);
    }
    Ok(acc)
}

/// A child: one step.
pub async fn sim_child(ctx: Ctx, x: u64) -> Result<u64, WorkflowError> {
    Ok(ctx
        .activity(sim_step, x)
        .start_to_close(Duration::from_secs(2))
        .retry(retries())
        .await?)
}

/// What `sim_job(spec)` returns when its signal (if any) carries `signal_value`.
pub fn expected(spec: &JobSpec, signal_value: u64) -> u64 {
    let mut acc = spec.n;
    for _ in 0..spec.continues {
        acc = acc.wrapping_add(step_value(acc.wrapping_add(400)));
    }
    for i in 0..spec.sequential {
        acc = acc.wrapping_add(step_value(acc.wrapping_add(u64::from(i))));
    }
    let base = acc;
    for i in 0..spec.parallel {
        acc = acc.wrapping_add(step_value(base.wrapping_add(100 + u64::from(i))));
    }
    let base = acc;
    for i in 0..spec.children {
        acc = acc.wrapping_add(step_value(base.wrapping_add(200 + u64::from(i))));
    }
    let base = acc;
    for i in 0..spec.beating {
        acc = acc.wrapping_add(step_value(base.wrapping_add(300 + u64::from(i))));
    }
    let base = acc;
    for i in 0..spec.remote {
        acc = acc.wrapping_add(step_value(base.wrapping_add(500 + u64::from(i))));
    }
    if spec.signal {
        acc = acc.wrapping_add(signal_value);
    }
    acc
}

/// Registers the workload on a node builder.
pub fn register(builder: cairn::NodeBuilder) -> cairn::NodeBuilder {
    builder
        .workflow(sim_job)
        .workflow(sim_child)
        .activity(sim_step)
        .activity(sim_beat)
}
