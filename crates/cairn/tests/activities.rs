//! Activities and runs that keep their promises, through the public SDK: many at once, with a
//! crash in the middle, under store faults. Each scenario runs on the embedded store and on a
//! `MemStore` behind the fault-injecting wrapper.
//!
//! What is proven here: a started attempt is never failed by its schedule-to-start timeout;
//! activities heartbeating from tight loops finish in about their own time and never time out
//! while beating; `maximum_attempts` bounds executions across a crash (`ActivityInfo::attempt`
//! counts the lost attempt); an activity result survives a failed transition commit; a
//! transient store error while loading a run is retried, not held; the close event is the last
//! event of a history; query handlers cannot change a run.

mod common;

use cairn::{
    ActivityContext, Ctx, Failure, Node, NodeConfig, Payload, Query, RetryPolicy, Signal,
    WorkflowError,
};
use cairn_store::{FaultConfig, FaultStore, Store, Transaction};
use common::{Counts, on_both_stores, within};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static EXECUTIONS: Counts = Counts::new();
static ATTEMPTS_SEEN: Counts = Counts::new();

fn node_config(node_id: &str) -> NodeConfig {
    NodeConfig {
        node_id: node_id.into(),
        shard_count: 4,
        ..NodeConfig::default()
    }
}

/// What an activity call ended with, as a string a test can compare.
fn outcome<T: std::fmt::Debug>(result: Result<T, cairn::ActivityError>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(e) => format!("err {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Schedule-to-start covers only the wait for a worker.

/// Runs for the given milliseconds, counting executions.
async fn slow(ctx: ActivityContext, millis: u64) -> Result<u64, Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(millis)
}

async fn slow_with_schedule_to_start(ctx: Ctx, millis: u64) -> Result<String, WorkflowError> {
    let result = ctx
        .activity(slow, millis)
        .schedule_to_start(Duration::from_millis(300))
        .start_to_close(Duration::from_secs(20))
        .retry(RetryPolicy::no_retries())
        .await;
    Ok(outcome(result))
}

/// Twenty activities with a 300 ms schedule-to-start timeout start at once and each runs
/// 900 ms: every one completes, none is failed by the schedule-to-start timer.
async fn started_attempt_outlives_schedule_to_start<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(slow_with_schedule_to_start)
        .activity(slow)
        .config(node_config(&format!("{tag}-node")))
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    let mut handles = Vec::new();
    for i in 0..20 {
        let id = format!("{tag}-{i}");
        handles.push(
            client
                .start(slow_with_schedule_to_start, &id, 900)
                .send()
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        let result = within("schedule-to-start workflow", handle.result())
            .await
            .unwrap();
        assert_eq!(result, "ok 900", "{}", handle.workflow_id());
    }
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Heartbeats from tight loops are cheap and keep the attempt alive.

/// Heartbeats every 5 ms for `millis`, then returns how many beats it made.
async fn beating(ctx: ActivityContext, millis: u64) -> Result<u64, Failure> {
    let started = std::time::Instant::now();
    let mut beats = 0u64;
    while started.elapsed() < Duration::from_millis(millis) {
        beats += 1;
        ctx.heartbeat(Payload::encode(&beats).unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(millis)
}

async fn beats_for(ctx: Ctx, millis: u64) -> Result<String, WorkflowError> {
    let result = ctx
        .activity(beating, millis)
        .heartbeat_timeout(Duration::from_millis(500))
        .start_to_close(Duration::from_secs(30))
        .retry(RetryPolicy::no_retries())
        .await;
    Ok(outcome(result))
}

/// Sixty activities heartbeating every 5 ms for 1.5 s, all started at once, with a 500 ms
/// heartbeat timeout and no retries: every one completes (none times out while beating, none
/// is stuck behind the others' heartbeats).
async fn many_heartbeating_activities_complete<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(beats_for)
        .activity(beating)
        .config(node_config(&format!("{tag}-node")))
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    let mut handles = Vec::new();
    for i in 0..60 {
        let id = format!("{tag}-{i}");
        handles.push(client.start(beats_for, &id, 1_500).send().await.unwrap());
    }
    for handle in handles {
        let result = within("heartbeating workflow", handle.result())
            .await
            .unwrap();
        assert_eq!(result, "ok 1500", "{}", handle.workflow_id());
    }
    node.shutdown().await;
}

/// Heartbeats once, then stops beating and hangs: the attempt must time out by heartbeat.
async fn stops_beating(ctx: ActivityContext, _: ()) -> Result<(), Failure> {
    ctx.heartbeat(Payload::encode(&1u32).unwrap());
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}

async fn stalls(ctx: Ctx, _: ()) -> Result<String, WorkflowError> {
    let result = ctx
        .activity(stops_beating, ())
        .heartbeat_timeout(Duration::from_millis(300))
        .start_to_close(Duration::from_secs(60))
        .retry(RetryPolicy::no_retries())
        .await;
    Ok(outcome(result))
}

/// An activity that stops heartbeating times out by heartbeat, not by start-to-close.
async fn silent_activity_times_out_by_heartbeat<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(stalls)
        .activity(stops_beating)
        .config(node_config(&format!("{tag}-node")))
        .start(store)
        .await
        .unwrap();
    let handle = node
        .client()
        .start(stalls, &format!("{tag}-stall"), ())
        .send()
        .await
        .unwrap();
    let result = within("stalled activity", handle.result()).await.unwrap();
    assert_eq!(result, "err activity timed out (heartbeat)");
    node.shutdown().await;
}

/// Heartbeats at once, then goes quiet for 3 s before returning.
async fn beats_once_then_quiet(ctx: ActivityContext, _: ()) -> Result<(), Failure> {
    ctx.heartbeat(Payload::encode(&1u32).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

async fn quiet_after_a_beat(ctx: Ctx, _: ()) -> Result<String, WorkflowError> {
    let result = ctx
        .activity(beats_once_then_quiet, ())
        .heartbeat_timeout(Duration::from_secs(2))
        .start_to_close(Duration::from_secs(60))
        .retry(RetryPolicy::no_retries())
        .await;
    Ok(outcome(result))
}

/// The heartbeat deadline runs from the last heartbeat (Temporal's rule), not from when the
/// throttled heartbeat write landed: an attempt that beats once and is then quiet for 3 s
/// under a 2 s heartbeat timeout times out (at about 2 s) before it can return. Under store
/// faults too: a heartbeat write that does not commit is written again, since the timer it
/// moves may be the attempt's only deadline.
async fn heartbeat_deadline_runs_from_the_last_beat<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(quiet_after_a_beat)
        .activity(beats_once_then_quiet)
        .config(node_config(&format!("{tag}-node")))
        .start(store)
        .await
        .unwrap();
    let handle = node
        .client()
        .start(quiet_after_a_beat, &format!("{tag}-quiet"), ())
        .send()
        .await
        .unwrap();
    let result = within("quiet activity", handle.result()).await.unwrap();
    assert_eq!(result, "err activity timed out (heartbeat)");
    node.shutdown().await;
}

/// Heartbeats 40 times quickly (the SDK throttles what it records), then fails on attempt 1;
/// attempt 2 returns the details it was handed.
async fn beats_then_fails(ctx: ActivityContext, _: ()) -> Result<u64, Failure> {
    if ctx.info().attempt > 1 {
        let details = ctx.heartbeat_details().expect("details of attempt 1");
        return Ok(details.decode::<u64>().unwrap());
    }
    for beat in 1..=40u64 {
        ctx.heartbeat(Payload::encode(&beat).unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(Failure::new("Flaky", "attempt 1 fails after beating"))
}

async fn last_details(ctx: Ctx, _: ()) -> Result<String, WorkflowError> {
    let result = ctx
        .activity(beats_then_fails, ())
        .heartbeat_timeout(Duration::from_secs(10))
        .start_to_close(Duration::from_secs(30))
        .retry(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(10))
                .maximum_attempts(2)
                .build()
                .unwrap(),
        )
        .await;
    Ok(outcome(result))
}

/// The last heartbeat's details reach the next attempt, even though the SDK recorded only
/// some of the 40 beats.
async fn last_heartbeat_details_reach_next_attempt<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(last_details)
        .activity(beats_then_fails)
        .config(node_config(&format!("{tag}-node")))
        .start(store)
        .await
        .unwrap();
    let handle = node
        .client()
        .start(last_details, &format!("{tag}-details"), ())
        .send()
        .await
        .unwrap();
    let result = within("details workflow", handle.result()).await.unwrap();
    assert_eq!(result, "ok 40");
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. maximum_attempts bounds executions across a crash.

/// Counts its executions and the attempt numbers it saw, then hangs (the node crashes while it
/// runs), unless it is a later attempt, which returns at once.
async fn hangs_first_time(ctx: ActivityContext, _: ()) -> Result<u32, Failure> {
    let key = &ctx.info().idempotency_key;
    EXECUTIONS.bump(key);
    ATTEMPTS_SEEN.bump(&format!("{key}#{}", ctx.info().attempt));
    if ctx.info().attempt == 1 {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    Ok(ctx.info().attempt)
}

async fn once_only(ctx: Ctx, attempts: u32) -> Result<String, WorkflowError> {
    let policy = if attempts == 1 {
        RetryPolicy::no_retries()
    } else {
        RetryPolicy::builder()
            .initial_interval(Duration::from_millis(10))
            .maximum_attempts(attempts)
            .build()
            .unwrap()
    };
    let result = ctx
        .activity(hangs_first_time, ())
        .start_to_close(Duration::from_millis(800))
        .retry(policy)
        .await;
    Ok(outcome(result))
}

/// Ten workflows with `no_retries()` and ten with `maximum_attempts(2)`; the node crashes while
/// every first attempt runs and restarts on the same store under the same id. The restarted
/// node fails every first attempt as lost (it knows their results can never land): the
/// no-retry activities end with that failure having run once; the others run attempt 2, which
/// knows it is attempt 2, and none runs more often than its policy allows.
async fn maximum_attempts_bound_executions_across_a_crash<S: Store>(store: S, tag: &str) {
    let config = node_config(&format!("{tag}-node"));
    let node = Node::builder()
        .workflow(once_only)
        .activity(hangs_first_time)
        .config(config.clone())
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let ids: Vec<(String, u32)> = (0..20)
        .map(|i| (format!("{tag}-{i}"), if i % 2 == 0 { 1 } else { 2 }))
        .collect();
    for (id, attempts) in &ids {
        client.start(once_only, id, *attempts).send().await.unwrap();
    }
    // Wait until every first attempt runs, then crash.
    let key = |id: &str| format!("{id}/1");
    within("first attempts running", async {
        while ids.iter().any(|(id, _)| EXECUTIONS.get(&key(id)) == 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    node.crash();
    let node = Node::builder()
        .workflow(once_only)
        .activity(hangs_first_time)
        .config(config)
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    for (id, attempts) in &ids {
        let handle = client.handle::<String>(id).unwrap();
        let result = within("workflow after crash", handle.result())
            .await
            .unwrap();
        let executions = EXECUTIONS.get(&key(id));
        assert_eq!(
            ATTEMPTS_SEEN.get(&format!("{}#1", key(id))),
            1,
            "{id}: attempt 1 ran more than once"
        );
        if *attempts == 1 {
            assert_eq!(executions, 1, "{id}: no_retries ran {executions} times");
            assert!(
                result.starts_with(&format!(
                    "err activity failed: {}",
                    cairn::ACTIVITY_ATTEMPT_LOST
                )),
                "{id}: {result}"
            );
        } else {
            assert_eq!(
                executions, 2,
                "{id}: maximum_attempts 2 ran {executions} times"
            );
            assert_eq!(ATTEMPTS_SEEN.get(&format!("{}#2", key(id))), 1, "{id}");
            assert_eq!(result, "ok 2", "{id}");
        }
    }
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A canceled attempt that waits for a worker slot never runs.

/// Holds the node's only worker slot for a while.
async fn holds_the_slot(ctx: Ctx, millis: u64) -> Result<u64, WorkflowError> {
    Ok(ctx
        .activity(slow, millis)
        .start_to_close(Duration::from_secs(20))
        .await?)
}

/// Schedules an activity (which must wait for the slot), then cancels it.
async fn cancels_while_waiting(ctx: Ctx, _: ()) -> Result<String, WorkflowError> {
    let mut waiting = ctx
        .activity(slow, 10)
        .start_to_close(Duration::from_secs(20))
        .start();
    ctx.sleep(Duration::from_millis(100)).await;
    waiting.cancel();
    Ok(outcome(waiting.await))
}

/// With one worker slot held by a long activity, an activity canceled while it waits for the
/// slot resolves canceled and never executes, not even once the slot frees.
async fn canceled_waiting_attempt_never_runs<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(holds_the_slot)
        .workflow(cancels_while_waiting)
        .activity(slow)
        .config(NodeConfig {
            activity_concurrency_max: 1,
            ..node_config(&format!("{tag}-node"))
        })
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    let holder = client
        .start(holds_the_slot, &format!("{tag}-holder"), 800)
        .send()
        .await
        .unwrap();
    within("slot taken", async {
        while EXECUTIONS.get(&format!("{tag}-holder/1")) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let canceler = client
        .start(cancels_while_waiting, &format!("{tag}-canceler"), ())
        .send()
        .await
        .unwrap();
    assert_eq!(
        within("canceler", canceler.result()).await.unwrap(),
        "err activity canceled"
    );
    assert_eq!(within("holder", holder.result()).await.unwrap(), 800);
    // The slot is free now: give a wrongly queued attempt time to run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        EXECUTIONS.get(&format!("{tag}-canceler/1")),
        0,
        "the canceled attempt ran"
    );
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 9. The close event ends the history.

async fn quick(_ctx: ActivityContext, n: u32) -> Result<u32, Failure> {
    Ok(n + 1)
}

async fn two_steps(ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    let a = ctx
        .activity(quick, n)
        .start_to_close(Duration::from_secs(5))
        .await?;
    Ok(a + 1)
}

/// A completed run's last event is `WorkflowExecutionCompleted`, and it replays (a query on
/// the closed run after a restart rebuilds it from that history).
async fn close_event_is_last<S: Store>(store: S, tag: &str) {
    let config = node_config(&format!("{tag}-node"));
    let node = Node::builder()
        .workflow(two_steps)
        .activity(quick)
        .config(config.clone())
        .start(store.clone())
        .await
        .unwrap();
    let handle = node
        .client()
        .start(two_steps, &format!("{tag}-close"), 1)
        .send()
        .await
        .unwrap();
    assert_eq!(within("two steps", handle.result()).await.unwrap(), 3);
    let history = handle.history().await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names.last(),
        Some(&"WorkflowExecutionCompleted"),
        "{names:?}"
    );
    node.shutdown().await;
    // The history replays after a restart (a query activates the closed run).
    let node = Node::builder()
        .workflow(two_steps)
        .activity(quick)
        .config(config)
        .start(store)
        .await
        .unwrap();
    let handle = node
        .client()
        .handle::<u32>(&format!("{tag}-close"))
        .unwrap();
    let error = handle
        .query(&Query::<(), u32>::new("no-such-query"), ())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !error.contains("held"),
        "closed run did not replay: {error}"
    );
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 10. Query handlers cannot change a run.

static QUERY_CALLS: AtomicU32 = AtomicU32::new(0);
const PEEK: Query<String, u64> = Query::new("peek");

/// Registers a query handler that does what the argument says (read state, or call something
/// only workflow code may call), then waits for a timer.
async fn queried(ctx: Ctx, _: ()) -> Result<u64, WorkflowError> {
    let inner = ctx.clone();
    ctx.on_query(&PEEK, move |what: String| {
        QUERY_CALLS.fetch_add(1, Ordering::Relaxed);
        match what.as_str() {
            "random" => inner.random(),
            "uuid" => inner.uuid().as_u128() as u64,
            "side_effect" => inner.side_effect(|| 7u64),
            "sleep" => {
                let _ = futures::FutureExt::now_or_never(inner.sleep(Duration::from_millis(1)));
                0
            }
            "activity" => {
                drop(inner.activity(quick, 1).start());
                0
            }
            _ => 42,
        }
    });
    ctx.sleep(Duration::from_millis(400)).await;
    Ok(ctx.random() % 1000)
}

/// A query handler that calls `random`, `uuid`, `side_effect`, starts a timer or an activity
/// gets a clear error naming the call, and the run goes on as if it had never been queried
/// (its result equals an unqueried twin's: same seed, same history).
async fn query_handlers_cannot_change_the_run<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(queried)
        .activity(quick)
        .config(node_config(&format!("{tag}-node")))
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    let handle = client
        .start(queried, &format!("{tag}-q"), ())
        .send()
        .await
        .unwrap();
    let plain: u64 = within("plain query", handle.query(&PEEK, "state".to_string()))
        .await
        .unwrap();
    assert_eq!(plain, 42);
    for call in ["random", "uuid", "side_effect", "sleep", "activity"] {
        let error = within("forbidden query", handle.query(&PEEK, call.to_string()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("query handler") && error.contains(call),
            "{call}: {error}"
        );
    }
    let result = within("queried workflow", handle.result()).await.unwrap();
    let history = handle.history().await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert!(
        !names.contains(&"ActivityTaskScheduled") && !names.contains(&"MarkerRecorded"),
        "a query changed the run: {names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "TimerStarted").count(),
        1,
        "{names:?}"
    );
    assert!(result < 1000);
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4, 5, 7. Store faults: a failed load, a failed transition commit, a failed verify read.

/// A test's action, run by the activity of its workflow.
type Hook = Box<dyn Fn() + Send>;

static HOOKS: Mutex<Option<HashMap<String, Hook>>> = Mutex::new(None);

fn set_hook(workflow_id: &str, hook: impl Fn() + Send + 'static) {
    HOOKS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(workflow_id.to_string(), Box::new(hook));
}

fn run_hook(workflow_id: &str) {
    if let Some(hook) = HOOKS
        .lock()
        .unwrap()
        .as_mut()
        .and_then(|h| h.remove(workflow_id))
    {
        hook();
    }
}

/// Calls the test's hook for its workflow (which arms a store fault), then returns.
async fn arms_fault(ctx: ActivityContext, n: u32) -> Result<u32, Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    run_hook(ctx.info().workflow_id.as_str());
    Ok(n * 10)
}

async fn one_armed(ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    Ok(ctx
        .activity(arms_fault, n)
        .start_to_close(Duration::from_secs(60))
        .await?)
}

const PING: Signal<u32> = Signal::new("ping");

/// Counts `ping` signals until a timer fires, then returns the count.
async fn counts_pings(ctx: Ctx, wait_ms: u64) -> Result<u32, WorkflowError> {
    let count = Rc::new(Cell::new(0u32));
    let c = count.clone();
    ctx.on_signal(&PING, move |_: u32| c.set(c.get() + 1));
    ctx.sleep(Duration::from_millis(wait_ms)).await;
    Ok(count.get())
}

/// Whether `key` belongs to run `run_id` (its run, history, mailbox and guard keys embed it).
fn key_of_run(run_id: uuid::Uuid) -> impl Fn(&[u8]) -> bool + Send + Sync + 'static {
    let needle = *run_id.as_bytes();
    move |key: &[u8]| key.windows(16).any(|w| w == needle)
}

fn fault_config(tag: &str) -> NodeConfig {
    NodeConfig {
        actor_idle_ms: 100,
        ..node_config(&format!("{tag}-node"))
    }
}

/// A run whose actor was passivated is activated by a signal while reads of its records fail
/// three times: the load is retried with backoff, the run is not held, and it completes.
async fn transient_load_failure_is_retried<S: Store>(store: FaultStore<S>, tag: &str) {
    let node = Node::builder()
        .workflow(counts_pings)
        .config(fault_config(tag))
        .start(store.clone())
        .await
        .unwrap();
    let id = format!("{tag}-load");
    let handle = node
        .client()
        .start(counts_pings, &id, 1_500)
        .send()
        .await
        .unwrap();
    let run_id = *handle.describe().await.unwrap().summary.run_id.as_uuid();
    // Idle past actor_idle_ms and a passivation sweep (every 250 ms).
    tokio::time::sleep(Duration::from_millis(700)).await;
    store.fail_reads(3, key_of_run(run_id));
    handle.signal(&PING, 1).await.unwrap();
    // The run's load takes the failures (nothing else reads its keys meanwhile).
    within("failed loads", async {
        while store.stats().reads_failed.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        within("run after failed loads", handle.result())
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.stats().reads_failed.load(Ordering::Relaxed), 3);
    node.shutdown().await;
}

/// The transition that records an activity's result fails to commit (a backend error, three
/// times): the result is not lost, and the run completes long before the attempt's 60 s
/// start-to-close timeout could retry it; the activity ran once.
async fn activity_result_survives_failed_commits<S: Store>(store: FaultStore<S>, tag: &str) {
    let node = Node::builder()
        .workflow(one_armed)
        .activity(arms_fault)
        .config(fault_config(tag))
        .start(store.clone())
        .await
        .unwrap();
    let id = format!("{tag}-result");
    let armed = store.clone();
    set_hook(&id, move || armed.fail_commits(3));
    let handle = node.client().start(one_armed, &id, 4).send().await.unwrap();
    assert_eq!(
        within("result after failed commits", handle.result())
            .await
            .unwrap(),
        40
    );
    assert_eq!(store.stats().commits_failed.load(Ordering::Relaxed), 3);
    assert_eq!(EXECUTIONS.get(&format!("{id}/1")), 1);
    node.shutdown().await;
}

/// A signal's commit is reported `MaybeCommitted` (it was applied) and the reads that would
/// verify it fail: the batch is not written again, so the signal is delivered once (the
/// caller hears that the outcome is unknown).
async fn unverifiable_commit_is_not_written_twice<S: Store>(store: FaultStore<S>, tag: &str) {
    let node = Node::builder()
        .workflow(counts_pings)
        .config(node_config(&format!("{tag}-node")))
        .start(store.clone())
        .await
        .unwrap();
    let id = format!("{tag}-verify");
    let handle = node
        .client()
        .start(counts_pings, &id, 1_000)
        .send()
        .await
        .unwrap();
    let run_id = *handle.describe().await.unwrap().summary.run_id.as_uuid();
    // Only the reads of the signal's request guard (tuple element "req"), its verify key.
    let of_run = key_of_run(run_id);
    let guard = move |key: &[u8]| of_run(key) && key.windows(5).any(|w| w == b"\x02req\x00");
    store.set_enabled(true);
    store.fail_reads(5, guard);
    let sent = handle.signal(&PING, 1).await;
    store.set_enabled(false);
    store.fail_reads(0, |_| false);
    let stats = store.stats();
    assert!(
        sent.is_err(),
        "an unverifiable signal reported success ({} reads failed, {} maybe-committed)",
        stats.reads_failed.load(Ordering::Relaxed),
        stats.maybe_committed_applied.load(Ordering::Relaxed)
    );
    assert_eq!(within("signalled run", handle.result()).await.unwrap(), 1);
    node.shutdown().await;
}

/// Counts its executions.
async fn counted_step(ctx: ActivityContext, n: u32) -> Result<u32, Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    Ok(n * 10)
}

/// Sleeps, then runs `counted_step` with a long start-to-close timeout.
async fn naps_then_acts(ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    ctx.sleep(Duration::from_millis(500)).await;
    Ok(ctx
        .activity(counted_step, n)
        .start_to_close(Duration::from_secs(60))
        .await?)
}

/// The transition that schedules an activity lands, but the store reports its outcome unknown
/// (`MaybeCommitted`) and every read that would verify it fails, so the run's actor cannot
/// tell whether to hand the attempt to the workers. The attempt is deferred for the puller and
/// runs once, at once — not after its 60 s start-to-close timeout, the only thing that would
/// otherwise have started it (a remote worker's attempt, which has no timer until a poll takes
/// it, would never have started: the open bug of a schedule that stopped firing).
async fn tasks_of_a_transition_of_unknown_outcome_still_run<S: Store>(
    store: FaultStore<S>,
    tag: &str,
) {
    let node = Node::builder()
        .workflow(naps_then_acts)
        .activity(counted_step)
        .config(node_config(&format!("{tag}-node")))
        .start(store.clone())
        .await
        .unwrap();
    let id = format!("{tag}-unknown");
    let handle = node
        .client()
        .start(naps_then_acts, &id, 4)
        .send()
        .await
        .unwrap();
    // Armed once the first transition (the nap's timer) has committed, so that the next
    // commit of the run is the one that schedules the activity.
    within("the nap's timer", async {
        loop {
            let history = handle.history().await.unwrap();
            if history.iter().any(|e| e.kind.name() == "TimerStarted") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let run_id = *handle.describe().await.unwrap().summary.run_id.as_uuid();
    let of_run = key_of_run(run_id);
    // The run record (tuple element "run"), which the transition's verify step reads.
    let record = move |key: &[u8]| of_run(key) && key.windows(5).any(|w| w == b"\x02run\x00");
    let verify_reads = cairn_runtime::VERIFY_READ_ATTEMPTS_MAX;
    store.fail_reads(verify_reads, record);
    store.set_enabled(true);
    within("the verify reads", async {
        while store.stats().reads_failed.load(Ordering::Relaxed) < u64::from(verify_reads) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    store.set_enabled(false);
    assert_eq!(within("result", handle.result()).await.unwrap(), 40);
    assert_eq!(EXECUTIONS.get(&format!("{id}/2")), 1);
    assert!(
        node.metrics()
            .activity_tasks_deferred
            .load(Ordering::Relaxed)
            >= 1,
        "the attempt was not deferred"
    );
    node.shutdown().await;
}

/// Fails attempt 1 after arming its hook (which stalls the store while the retry's transition
/// commits); later attempts count their executions and succeed.
async fn fails_first(ctx: ActivityContext, _: ()) -> Result<u32, Failure> {
    let attempt = ctx.info().attempt;
    if attempt == 1 {
        run_hook(ctx.info().workflow_id.as_str());
        return Err(Failure::new("Flaky", "attempt 1 fails"));
    }
    ATTEMPTS_SEEN.bump(&format!("{}#{attempt}", ctx.info().idempotency_key));
    Ok(attempt)
}

async fn retried_once(ctx: Ctx, _: ()) -> Result<u32, WorkflowError> {
    Ok(ctx
        .activity(fails_first, ())
        .start_to_close(Duration::from_secs(30))
        .retry(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_attempts(3)
                .build()
                .unwrap(),
        )
        .await?)
}

/// The store stalls for 2.3 s while the transition that enqueues attempt 2 commits, longer
/// than the shard's timer re-delivery (2 s), so the retry timer is delivered again while that
/// commit is in flight: attempt 2 still executes once.
async fn redelivered_retry_timer_runs_the_attempt_once<S: Store>(store: FaultStore<S>, tag: &str) {
    let node = Node::builder()
        .workflow(retried_once)
        .activity(fails_first)
        .config(node_config(&format!("{tag}-node")))
        .start(store.clone())
        .await
        .unwrap();
    let id = format!("{tag}-redeliver");
    let stalled = store.clone();
    set_hook(&id, move || {
        let stalled = stalled.clone();
        tokio::spawn(async move {
            // The retry timer fires 200 ms after attempt 1's failure is recorded.
            tokio::time::sleep(Duration::from_millis(100)).await;
            stalled.pause();
            tokio::time::sleep(Duration::from_millis(2_300)).await;
            stalled.resume();
        });
    });
    let handle = node
        .client()
        .start(retried_once, &id, ())
        .send()
        .await
        .unwrap();
    assert_eq!(
        within("retried workflow", handle.result()).await.unwrap(),
        2
    );
    assert_eq!(
        ATTEMPTS_SEEN.get(&format!("{id}/1#2")),
        1,
        "attempt 2 executed more than once"
    );
    node.shutdown().await;
}

/// Runs each scenario on the embedded store and on `MemStore`, each behind a fault wrapper
/// that injects nothing until the scenario arms it.
macro_rules! on_both_stores_with_faults {
    ($($scenario:ident),* $(,)?) => {
        mod fault_armed {
            $(
                mod $scenario {
                    use cairn_store::{FaultStore, MemStore};
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn embedded_store() {
                        let (store, _dir) = crate::common::embedded_store();
                        let store = FaultStore::new(store, crate::armed_config());
                        store.set_enabled(false);
                        crate::$scenario(store, concat!("ae-", stringify!($scenario))).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn mem_store() {
                        let store = FaultStore::new(MemStore::new(), crate::armed_config());
                        store.set_enabled(false);
                        crate::$scenario(store, concat!("am-", stringify!($scenario))).await;
                    }
                }
            )*
        }
    };
}

/// Faults only when a scenario enables them: every commit then reports `MaybeCommitted`
/// after applying it.
fn armed_config() -> FaultConfig {
    FaultConfig {
        maybe_committed_applied_probability: 1.0,
        ..FaultConfig::none(43)
    }
}

on_both_stores_with_faults!(
    redelivered_retry_timer_runs_the_attempt_once,
    transient_load_failure_is_retried,
    activity_result_survives_failed_commits,
    unverifiable_commit_is_not_written_twice,
    tasks_of_a_transition_of_unknown_outcome_still_run,
);

// ---------------------------------------------------------------------------------------------
// 10. Durable names.

async fn renamed_step(_ctx: ActivityContext, n: u32) -> Result<u32, Failure> {
    Ok(n * 3)
}

async fn renamed_flow(ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    Ok(ctx
        .activity(renamed_step, n)
        .start_to_close(Duration::from_secs(5))
        .await?)
}

/// Types registered under explicit names run under them and history records them (not the
/// Rust function names), so the functions can be renamed without orphaning running workflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_type_names_are_what_history_records() {
    let node = Node::builder()
        .workflow_named("order.v1", renamed_flow)
        .activity_named("charge-card", renamed_step)
        .config(node_config("names-node"))
        .start(cairn_store::MemStore::new())
        .await
        .unwrap();
    let handle = node
        .client()
        .start(renamed_flow, "named-1", 5)
        .send()
        .await
        .unwrap();
    assert_eq!(within("named workflow", handle.result()).await.unwrap(), 15);
    assert_eq!(
        handle.describe().await.unwrap().summary.workflow_type,
        "order.v1"
    );
    let history = format!("{:?}", handle.history().await.unwrap());
    assert!(history.contains("\"charge-card\""), "{history}");
    assert!(!history.contains("renamed_step"), "{history}");
    node.shutdown().await;
}

/// Two registrations under one name are refused, whether the same function twice or two
/// functions given one name.
#[test]
fn two_registrations_under_one_name_are_refused() {
    let refused = |build: fn()| {
        let message = std::panic::catch_unwind(build)
            .expect_err("registration accepted")
            .downcast::<String>()
            .map(|m| *m)
            .unwrap_or_default();
        assert!(
            message.contains("two activity registrations under the name"),
            "{message}"
        );
    };
    refused(|| {
        let _ = Node::builder().activity(quick).activity(quick);
    });
    refused(|| {
        let _ = Node::builder()
            .activity_named("same", slow)
            .activity_named("same", beating);
    });
}

// ---------------------------------------------------------------------------------------------
// 8. A restarted process on the same embedded data takes its shards back at once.

/// A process crashes and a new one (a new random node id, as with `NodeConfig::default()`)
/// opens the same embedded data: its leases are taken back at once, not after the old node's
/// 60 s lease timeout, because no other process can have that data open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_restart_on_embedded_data_resumes_at_once() {
    use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
    let dir = tempfile::tempdir().unwrap();
    let config = || NodeConfig {
        lease_timeout_ms: 60_000,
        ..NodeConfig::default()
    };
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let node = Node::builder()
        .workflow(counts_pings)
        .config(config())
        .start(store)
        .await
        .unwrap();
    let id = "restart-at-once";
    node.client()
        .start(counts_pings, id, 2_000)
        .send()
        .await
        .unwrap();
    node.crash();
    // The process is gone: reopen once its handles are released.
    let store = common::reopen_embedded(dir.path()).await;
    let node = Node::builder()
        .workflow(counts_pings)
        .config(config())
        .start(store)
        .await
        .unwrap();
    let handle = node.client().handle::<u32>(id).unwrap();
    within("signal after restart", async {
        while handle.signal(&PING, 1).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        within("run after restart", handle.result()).await.unwrap(),
        1
    );
    assert_eq!(node.held_shards().len(), 16, "every shard taken back");
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Dispatched attempts have a bound; the tasks past it wait in the store and each runs once.

/// Counts its executions and runs a few milliseconds.
async fn counted(ctx: ActivityContext, n: u32) -> Result<u32, Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(n)
}

/// Runs `n` activities at once and sums them: even `n` handed over (start-to-close only), odd
/// `n` claimed (with a heartbeat timeout); at most two attempts each.
async fn fans_out(ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    let calls = (0..n).map(|i| {
        // A second attempt only for one lost in a crash (it times out by start-to-close).
        let policy = RetryPolicy::builder()
            .initial_interval(Duration::from_millis(10))
            .maximum_attempts(2)
            .build()
            .unwrap();
        let call = ctx
            .activity(counted, i)
            .start_to_close(Duration::from_secs(3))
            .retry(policy);
        if n.is_multiple_of(2) {
            call
        } else {
            call.heartbeat_timeout(Duration::from_secs(2))
        }
    });
    let mut sum = 0;
    for result in futures::future::join_all(calls).await {
        sum += result?;
    }
    Ok(sum)
}

const DISPATCH_BOUND: usize = 3;

fn bounded_config(tag: &str) -> NodeConfig {
    NodeConfig {
        activity_concurrency_max: 2,
        activity_attempts_dispatched_max: DISPATCH_BOUND,
        ..node_config(&format!("{tag}-node"))
    }
}

/// Deferred markers left in the store (every shard).
/// `ActivityTaskCompleted` events in the stored histories of `runs`.
async fn completions_recorded<S: Store>(store: &S, runs: &[cairn::RunId]) -> u64 {
    let keys = cairn_runtime::Keys::default();
    let mut tx = store.begin().unwrap();
    let mut completed = 0;
    for run in runs {
        let (begin, end) = keys.history(run);
        for row in tx
            .get_range(&cairn_store::RangeRequest::new(begin, end))
            .await
            .unwrap()
        {
            let event: cairn_types::HistoryEvent = rmp_serde::from_slice(&row.value).unwrap();
            completed += u64::from(event.kind.name() == "ActivityTaskCompleted");
        }
    }
    completed
}

async fn deferred_left<S: Store>(store: &S, shards: u32) -> usize {
    let keys = cairn_runtime::Keys::default();
    let mut tx = store.begin().unwrap();
    let mut left = 0;
    for shard in 0..shards {
        let (begin, end) = keys.deferred_of_shard(shard);
        left += tx
            .get_range(&cairn_store::RangeRequest::new(begin, end))
            .await
            .unwrap()
            .len();
    }
    left
}

/// Eight workflows schedule 9 to 12 activities each at once (84 tasks) on a node whose workers
/// take at most 3 dispatched attempts: never more than 3 are dispatched, the rest are
/// deferred in the store and pulled as attempts end, every activity runs exactly once, every
/// workflow gets its sum, and no deferred marker is left behind.
async fn dispatched_attempts_are_bounded<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(fans_out)
        .activity(counted)
        .config(bounded_config(tag))
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let widths: Vec<u32> = (0..8).map(|i| 9 + i % 4).collect();
    let mut handles = Vec::new();
    for (i, n) in widths.iter().enumerate() {
        handles.push(
            client
                .start(fans_out, &format!("{tag}-{i}"), *n)
                .send()
                .await
                .unwrap(),
        );
    }
    for (i, (handle, n)) in handles.into_iter().zip(&widths).enumerate() {
        let sum = within("a fanned-out workflow", handle.result())
            .await
            .unwrap();
        assert_eq!(sum, n * (n - 1) / 2, "{tag}-{i}");
        for seq in 1..=*n {
            let key = format!("{tag}-{i}/{seq}");
            assert_eq!(
                EXECUTIONS.get(&key),
                1,
                "{key} ran {} times",
                EXECUTIONS.get(&key)
            );
        }
    }
    let metrics = node.metrics();
    let peak = metrics
        .activity_attempts_dispatched_peak
        .load(Ordering::Relaxed);
    assert!(
        (1..=DISPATCH_BOUND as u64).contains(&peak),
        "{peak} attempts dispatched at once past a bound of {DISPATCH_BOUND}"
    );
    assert!(
        metrics.activity_tasks_deferred.load(Ordering::Relaxed) > 0,
        "nothing was deferred"
    );
    // Back to none once every attempt's task has let its unit go (a task finishes its
    // bookkeeping just after it hands its result over, so the last ones may trail the results).
    within("every unit released", async {
        while metrics.activity_attempts_dispatched.load(Ordering::Relaxed) != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    node.shutdown().await;
    assert_eq!(deferred_left(&store, 4).await, 0, "deferred markers left");
}

/// The same fan-out (72 tasks), with the node crashing while most are still deferred: after a
/// restart on the same store every workflow gets its sum, the new tenure keeps the bound too
/// (its rehydration defers what it finds instead of dispatching it all), no activity runs
/// more than twice (once lost in the crash, once again), and only what the crash lost ran
/// twice: the attempts dispatched at the crash and the results not yet recorded by a transition.
async fn deferred_tasks_survive_a_crash<S: Store>(store: S, tag: &str) {
    let start = |store: S| {
        Node::builder()
            .workflow(fans_out)
            .activity(counted)
            .config(bounded_config(tag))
            .start(store)
    };
    let node = start(store.clone()).await.unwrap();
    let client = node.client();
    let width = 12;
    for i in 0..6 {
        client
            .start(fans_out, &format!("{tag}-{i}"), width)
            .send()
            .await
            .unwrap();
    }
    let executed = || -> usize {
        (0..6)
            .flat_map(|i| (1..=width).map(move |seq| format!("{tag}-{i}/{seq}")))
            .map(|key| EXECUTIONS.get(&key) as usize)
            .sum()
    };
    within("some activities ran", async {
        while executed() < 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let deferred = node
        .metrics()
        .activity_tasks_deferred
        .load(Ordering::Relaxed);
    let mut runs = Vec::new();
    for i in 0..6 {
        let handle = client.handle::<u32>(&format!("{tag}-{i}")).unwrap();
        runs.push(handle.describe().await.unwrap().summary.run_id);
    }
    let first_life = node.runtime();
    node.crash();
    // Results made but not yet recorded by a transition are lost with the node too (they
    // travel to the run in memory; start-to-close recovers them): counted once the crash has
    // settled, as results made minus results in the histories.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let made = first_life
        .metrics()
        .activities_succeeded
        .load(Ordering::Relaxed);
    drop(first_life);
    let unrecorded = made.saturating_sub(completions_recorded(&store, &runs).await) as usize;
    let before = executed();
    assert!(before < 72, "everything ran before the crash");
    assert!(deferred > 0, "nothing was deferred before the crash");
    let node = start(store.clone()).await.unwrap();
    let client = node.client();
    for i in 0..6 {
        let handle = client.handle::<u32>(&format!("{tag}-{i}")).unwrap();
        // An attempt lost in the crash times out and runs again.
        let sum = within("a workflow after the crash", handle.result())
            .await
            .unwrap();
        assert_eq!(sum, width * (width - 1) / 2, "{tag}-{i}");
    }
    let mut twice = 0;
    for i in 0..6 {
        for seq in 1..=width {
            let key = format!("{tag}-{i}/{seq}");
            let runs = EXECUTIONS.get(&key);
            assert!(runs <= 2, "{key} ran {runs} times");
            twice += usize::from(runs == 2);
        }
    }
    assert!(
        twice <= DISPATCH_BOUND + unrecorded,
        "{twice} activities ran twice; at most {DISPATCH_BOUND} were dispatched at the crash \
         and {unrecorded} results were not yet recorded"
    );
    let peak = node
        .metrics()
        .activity_attempts_dispatched_peak
        .load(Ordering::Relaxed);
    assert!(
        peak <= DISPATCH_BOUND as u64,
        "{peak} dispatched after the restart"
    );
    node.shutdown().await;
    assert_eq!(deferred_left(&store, 4).await, 0, "deferred markers left");
}

on_both_stores!(seed: 41;
    started_attempt_outlives_schedule_to_start,
    canceled_waiting_attempt_never_runs,
    many_heartbeating_activities_complete,
    silent_activity_times_out_by_heartbeat,
    heartbeat_deadline_runs_from_the_last_beat,
    last_heartbeat_details_reach_next_attempt,
    maximum_attempts_bound_executions_across_a_crash,
    close_event_is_last,
    query_handlers_cannot_change_the_run,
    dispatched_attempts_are_bounded,
    deferred_tasks_survive_a_crash,
);

/// A client call whose read of the workflow's current run outlives the store's transaction age
/// limit (the store stalled, as FoundationDB does through a recovery) reads again instead of
/// failing with `transaction_too_old`: the signal is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_read_outliving_the_transaction_age_limit_is_read_again() {
    let limits =
        cairn_store::Limits::default().with_transaction_age_max(Duration::from_millis(300));
    let store = FaultStore::new(
        cairn_store::MemStore::with_limits(limits),
        FaultConfig::none(7),
    );
    let node = Node::builder()
        .workflow(counts_pings)
        .config(node_config("stalled-read-node"))
        .start(store.clone())
        .await
        .unwrap();
    let handle = node
        .client()
        .start(counts_pings, "stalled-read", 2_000)
        .send()
        .await
        .unwrap();
    handle.describe().await.unwrap();
    // The signal's first read waits out the stall, by then older than the limit.
    store.pause();
    let signal = tokio::spawn({
        let handle = node.client().handle::<u32>("stalled-read").unwrap();
        async move { handle.signal(&PING, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.resume();
    within("the signal", signal).await.unwrap().unwrap();
    assert_eq!(within("result", handle.result()).await.unwrap(), 1);
    node.shutdown().await;
}

/// A result waiter whose read of the run the store answers with a retryable error (as
/// FoundationDB's `transaction_too_old` through a recovery) reads it again instead of handing
/// the error to the caller: the result comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_read_failing_retryably_is_read_again() {
    let store = FaultStore::new(cairn_store::MemStore::new(), FaultConfig::none(8));
    let node = Node::builder()
        .workflow(counts_pings)
        .config(node_config("retried-result-node"))
        .start(store.clone())
        .await
        .unwrap();
    let handle = node
        .client()
        .start(counts_pings, "retried-result", 1_500)
        .send()
        .await
        .unwrap();
    let run_id = handle.describe().await.unwrap().summary.run_id;
    let run_key = cairn_runtime::Keys::default().run(&run_id);
    let too_old = cairn_store::StoreError::TransactionTooOld {
        age_ms: 5_100,
        limit_ms: 5_000,
    };
    store.fail_reads_with(2, too_old, move |key| key == run_key.as_slice());
    assert_eq!(within("result", handle.result()).await.unwrap(), 0);
    assert_eq!(store.stats().reads_failed.load(Ordering::Relaxed), 2);
    node.shutdown().await;
}
