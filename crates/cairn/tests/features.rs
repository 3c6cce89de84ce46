//! Every workflow feature through the public SDK, each on two stores: the durable embedded
//! store, and `MemStore` behind the fault-injecting wrapper (commit conflicts and both kinds of
//! `MaybeCommitted` injected), so each feature is also shown to survive store faults.

mod common;

use cairn::{
    ActivityContext, ActivityError, Ctx, Failure, IdReusePolicy, Node, NodeConfig, Query,
    RetryPolicy, Signal, WorkflowError, WorkflowOutcomeError, fail,
};
use cairn_store::Store;
use common::Counts;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Activities shared by the scenarios. Attempt counts are kept per idempotency key, so
// concurrent tests do not interfere.

static ATTEMPTS: Counts = Counts::new();

fn count_attempt(ctx: &ActivityContext) -> u32 {
    ATTEMPTS.bump(&ctx.info().idempotency_key)
}

fn attempts_of(key: &str) -> u32 {
    ATTEMPTS.get(key)
}

/// Fails `failures` times with a retryable error, then succeeds.
async fn flaky(ctx: ActivityContext, failures: u32) -> Result<u32, Failure> {
    let attempt = count_attempt(&ctx);
    assert_eq!(
        attempt,
        ctx.info().attempt,
        "attempt number matches executions"
    );
    if attempt <= failures {
        return Err(Failure::new(
            "Transient",
            format!("attempt {attempt} fails"),
        ));
    }
    Ok(attempt)
}

async fn decline_card(ctx: ActivityContext, _card: String) -> Result<(), Failure> {
    count_attempt(&ctx);
    Err(Failure::new("InvalidCardError", "card declined"))
}

async fn sleepy(ctx: ActivityContext, millis: u64) -> Result<(), Failure> {
    count_attempt(&ctx);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(millis)) => Ok(()),
        _ = ctx.cancelled() => Err(Failure::new("Cancelled", "stopped on request")),
    }
}

/// Heartbeats its progress; the first attempt fails after heartbeating, the second reports
/// what the first recorded.
async fn resumable(ctx: ActivityContext, _input: ()) -> Result<String, Failure> {
    if let Some(details) = ctx.heartbeat_details() {
        let progress: String = details.decode().unwrap();
        return Ok(format!("resumed from {progress}"));
    }
    ctx.heartbeat(cairn::Payload::encode("item 5").unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    Err(Failure::new("Crash", "lost the connection"))
}

async fn echo(_ctx: ActivityContext, text: String) -> Result<String, Failure> {
    Ok(text)
}

fn fast_retries(max: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(20))
        .backoff_coefficient(2.0)
        .maximum_attempts(max)
        .non_retryable_error_type("InvalidCardError")
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Workflows.

async fn retrying(ctx: Ctx, id: String) -> Result<String, WorkflowError> {
    let ok = ctx.activity(flaky, 2).retry(fast_retries(5)).await?;
    let declined = ctx.activity(decline_card, id).retry(fast_retries(5)).await;
    let kind = match declined {
        Err(ActivityError::Failed(f)) => f.error_type,
        other => format!("{other:?}"),
    };
    Ok(format!("succeeded on attempt {ok}; then {kind}"))
}

async fn timeouts(ctx: Ctx, _input: ()) -> Result<Vec<String>, WorkflowError> {
    let mut out = Vec::new();
    let s2c = ctx
        .activity(sleepy, 2_000)
        .start_to_close(Duration::from_millis(150))
        .retry(fast_retries(2))
        .await;
    out.push(format!("{s2c:?}"));
    let hb = ctx
        .activity(sleepy, 2_000)
        .start_to_close(Duration::from_secs(10))
        .heartbeat_timeout(Duration::from_millis(150))
        .retry(fast_retries(1))
        .await;
    out.push(format!("{hb:?}"));
    let total = ctx
        .activity(sleepy, 2_000)
        .start_to_close(Duration::from_millis(100))
        // Mid-way through the third attempt (each ~110 ms with its 10 ms backoff), far from
        // an attempt's end, so the schedule-to-close timer is what ends the activity.
        .schedule_to_close(Duration::from_millis(280))
        .retry(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(10))
                .backoff_coefficient(1.0)
                .build()
                .unwrap(),
        )
        .await;
    out.push(format!("{total:?}"));
    Ok(out)
}

async fn heartbeats(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity(resumable, ())
        .start_to_close(Duration::from_secs(5))
        .retry(fast_retries(3))
        .await?)
}

static CANCELED_ATTEMPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn cancellable(ctx: ActivityContext, _input: ()) -> Result<(), Failure> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(()),
        _ = ctx.cancelled() => {
            CANCELED_ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(Failure::new("Cancelled", "stopped on request"))
        }
    }
}

async fn cancels_activity(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
    let mut long = ctx
        .activity(cancellable, ())
        .start_to_close(Duration::from_secs(60))
        .start();
    ctx.sleep(Duration::from_millis(100)).await;
    long.cancel();
    Ok(format!("{:?}", long.await))
}

const APPROVE: Signal<String> = Signal::new("approve");
const STATUS: Query<(), String> = Query::new("status");

async fn approvals(ctx: Ctx, needed: usize) -> Result<Vec<String>, WorkflowError> {
    let approvers = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let state = approvers.clone();
    ctx.on_query(&STATUS, move |()| {
        format!("{} approvals", state.borrow().len())
    });
    let sink = approvers.clone();
    ctx.on_signal(&APPROVE, move |who| sink.borrow_mut().push(who));
    // Part of the approvals may arrive before this point (buffered), part after.
    ctx.sleep(Duration::from_millis(100)).await;
    let seen = approvers.clone();
    let met = ctx
        .wait_condition_timeout(
            move || seen.borrow().len() >= needed,
            Duration::from_secs(20),
        )
        .await;
    if !met {
        return Err(fail("Timeout", "not enough approvals"));
    }
    let result = approvers.borrow().clone();
    Ok(result)
}

async fn impatient(ctx: Ctx, _input: ()) -> Result<bool, WorkflowError> {
    Ok(ctx
        .wait_condition_timeout(|| false, Duration::from_millis(150))
        .await)
}

async fn parallel(ctx: Ctx, n: usize) -> Result<Vec<String>, WorkflowError> {
    let calls: Vec<_> = (0..n)
        .map(|i| ctx.activity(echo, format!("item-{i}")))
        .collect();
    let results = futures::future::join_all(calls).await;
    results
        .into_iter()
        .map(|r| r.map_err(WorkflowError::from))
        .collect()
}

async fn compensating(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
    ctx.activity(echo, "reserve".to_string()).await?;
    ctx.cancelled().await;
    // Cancellation requested: undo, then end as canceled.
    ctx.activity(echo, "release".to_string()).await?;
    Err(WorkflowError::Canceled)
}

/// Fails with the card's decline: the activity's failure, through `?`.
async fn declines(ctx: Ctx, id: String) -> Result<(), WorkflowError> {
    ctx.activity(decline_card, id)
        .retry(fast_retries(1))
        .await?;
    Ok(())
}

/// Fails with its child's failure, through `?`.
async fn parent_of_declines(ctx: Ctx, id: String) -> Result<(), WorkflowError> {
    let child_id = format!("{id}-child");
    ctx.child_workflow(declines, id).id(child_id).await?;
    Ok(())
}

async fn waits_forever(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    ctx.wait_condition(|| false).await;
    Ok(())
}

async fn quick(_ctx: Ctx, outcome: String) -> Result<String, WorkflowError> {
    match outcome.as_str() {
        "fail" => Err(fail("Requested", "asked to fail")),
        other => Ok(other.to_string()),
    }
}

fn builder() -> cairn::NodeBuilder {
    Node::builder()
        .workflow(retrying)
        .workflow(timeouts)
        .workflow(heartbeats)
        .workflow(cancels_activity)
        .workflow(approvals)
        .workflow(impatient)
        .workflow(parallel)
        .workflow(compensating)
        .workflow(waits_forever)
        .workflow(quick)
        .workflow(heartbeats_pending)
        .workflow(declines)
        .workflow(parent_of_declines)
        .activity(flaky)
        .activity(decline_card)
        .activity(sleepy)
        .activity(resumable)
        .activity(echo)
        .activity(cancellable)
        .config(NodeConfig {
            shard_count: 4,
            ..NodeConfig::default()
        })
}

async fn node<S: Store>(store: S) -> Node<S> {
    builder().start(store).await.expect("node starts")
}

const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("finished in time")
}

// ---------------------------------------------------------------------------------------------
// Scenarios, generic over the store.

async fn retries_with_backoff_and_non_retryable<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let id = format!("retry-{tag}");
    let handle = client
        .start(retrying, &id, id.clone())
        .send()
        .await
        .unwrap();
    let result = within(handle.result()).await.unwrap();
    assert_eq!(result, "succeeded on attempt 3; then InvalidCardError");
    assert_eq!(attempts_of(&format!("{id}/1")), 3, "flaky ran 3 times");
    assert_eq!(attempts_of(&format!("{id}/2")), 1, "non-retryable ran once");
    node.shutdown().await;
}

async fn each_timeout_fires<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let handle = node
        .client()
        .start(timeouts, &format!("timeouts-{tag}"), ())
        .send()
        .await
        .unwrap();
    let result = within(handle.result()).await.unwrap();
    assert_eq!(
        result,
        vec![
            "Err(TimedOut(StartToClose))".to_string(),
            "Err(TimedOut(Heartbeat))".to_string(),
            "Err(TimedOut(ScheduleToClose))".to_string(),
        ]
    );
    node.shutdown().await;
}

async fn heartbeat_details_reach_next_attempt<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let handle = node
        .client()
        .start(heartbeats, &format!("hb-{tag}"), ())
        .send()
        .await
        .unwrap();
    assert_eq!(
        within(handle.result()).await.unwrap(),
        "resumed from item 5"
    );
    node.shutdown().await;
}

async fn signals_queries_and_conditions<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let id = format!("approvals-{tag}");
    let handle = client.start(approvals, &id, 3usize).send().await.unwrap();
    handle.signal(&APPROVE, "ann".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        within(handle.query(&STATUS, ())).await.unwrap(),
        "1 approvals"
    );
    handle.signal(&APPROVE, "bob".into()).await.unwrap();
    handle.signal(&APPROVE, "cy".into()).await.unwrap();
    assert_eq!(
        within(handle.result()).await.unwrap(),
        vec!["ann", "bob", "cy"]
    );
    // Queries still work after completion (the run is replayed from history).
    assert_eq!(
        within(handle.query(&STATUS, ())).await.unwrap(),
        "3 approvals"
    );
    // The built-in metadata query names the handlers the code declared.
    const METADATA: Query<(), serde_json::Value> = Query::new(cairn::WORKFLOW_METADATA_QUERY);
    let metadata = within(handle.query(&METADATA, ())).await.unwrap();
    let names = |kind: &str| -> Vec<String> {
        metadata["definition"][kind]
            .as_array()
            .unwrap_or_else(|| panic!("{kind} in {metadata}"))
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("queryDefinitions"),
        vec![cairn::WORKFLOW_METADATA_QUERY, "status"]
    );
    assert_eq!(names("signalDefinitions"), vec!["approve"]);
    assert!(names("updateDefinitions").is_empty());
    assert_eq!(metadata["definition"]["type"], "approvals");
    let sent_late = handle.signal(&APPROVE, "late".into()).await;
    assert!(
        matches!(sent_late, Err(cairn::ClientError::NotRunning { .. })),
        "{sent_late:?}"
    );

    let waiting = client
        .start(impatient, &format!("impatient-{tag}"), ())
        .send()
        .await
        .unwrap();
    assert!(
        !within(waiting.result()).await.unwrap(),
        "condition timed out"
    );
    node.shutdown().await;
}

async fn parallel_activities<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let handle = node
        .client()
        .start(parallel, &format!("par-{tag}"), 100usize)
        .send()
        .await
        .unwrap();
    let results = within(handle.result()).await.unwrap();
    assert_eq!(
        results,
        (0..100).map(|i| format!("item-{i}")).collect::<Vec<_>>()
    );
    let history = handle.history().await.unwrap();
    let scheduled = history
        .iter()
        .filter(|e| e.kind.name() == "ActivityTaskScheduled")
        .count();
    assert_eq!(scheduled, 100);
    node.shutdown().await;
}

async fn cancellation_and_termination<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let handle = client
        .start(compensating, &format!("comp-{tag}"), ())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.cancel("customer asked").await.unwrap();
    assert_eq!(
        within(handle.result()).await,
        Err(WorkflowOutcomeError::Canceled)
    );
    let history = handle.history().await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert!(names.contains(&"WorkflowExecutionCancelRequested"));
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "ActivityTaskCompleted")
            .count(),
        2,
        "reserve and release ran"
    );

    let stuck = client
        .start(waits_forever, &format!("stuck-{tag}"), ())
        .send()
        .await
        .unwrap();
    stuck.terminate("operator").await.unwrap();
    assert_eq!(
        within(stuck.result()).await,
        Err(WorkflowOutcomeError::Terminated("operator".into()))
    );
    node.shutdown().await;
}

async fn id_reuse_policies_and_execution_timeout<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let id = format!("reuse-{tag}");
    let first = client.start(waits_forever, &id, ()).send().await.unwrap();
    let again = client.start(waits_forever, &id, ()).send().await;
    assert!(
        matches!(again, Err(cairn::ClientError::AlreadyRunning { .. })),
        "{again:?}"
    );
    first.terminate("done").await.unwrap();
    within(first.result()).await.unwrap_err();
    // Terminated counts as failed for the failed-only policy.
    let second = client
        .start(quick, &id, "ok".to_string())
        .id_reuse_policy(IdReusePolicy::AllowDuplicateFailedOnly)
        .send()
        .await
        .unwrap();
    assert_eq!(within(second.result()).await.unwrap(), "ok");
    let third = client
        .start(quick, &id, "x".to_string())
        .id_reuse_policy(IdReusePolicy::AllowDuplicateFailedOnly)
        .send()
        .await;
    assert!(
        matches!(third, Err(cairn::ClientError::DuplicateRejected { .. })),
        "{third:?}"
    );
    let fourth = client
        .start(quick, &id, "x".to_string())
        .id_reuse_policy(IdReusePolicy::RejectDuplicate)
        .send()
        .await;
    assert!(
        matches!(fourth, Err(cairn::ClientError::DuplicateRejected { .. })),
        "{fourth:?}"
    );
    let fifth = client
        .start(quick, &id, "again".to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(within(fifth.result()).await.unwrap(), "again");

    let timed = client
        .start(waits_forever, &format!("timeout-{tag}"), ())
        .execution_timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap();
    assert_eq!(
        within(timed.result()).await,
        Err(WorkflowOutcomeError::TimedOut)
    );
    node.shutdown().await;
}

async fn bad_input_is_refused_without_writes<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let bad_id = client.start(quick, "", "x".to_string()).send().await;
    assert!(
        matches!(bad_id, Err(cairn::ClientError::InvalidWorkflowId(_))),
        "{bad_id:?}"
    );
    let big = "x".repeat(cairn_runtime::INLINE_PAYLOAD_BYTES_MAX + 1);
    let too_big = client.start(quick, &format!("big-{tag}"), big).send().await;
    assert!(
        matches!(too_big, Err(cairn::ClientError::PayloadTooLarge { .. })),
        "{too_big:?}"
    );
    let missing = client
        .handle::<String>(&format!("big-{tag}"))
        .unwrap()
        .describe()
        .await;
    assert!(
        matches!(missing, Err(cairn::ClientError::NotFound { .. })),
        "nothing was written"
    );
    node.shutdown().await;
}

async fn activity_cancellation<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let before = CANCELED_ATTEMPTS.load(std::sync::atomic::Ordering::SeqCst);
    let handle = node
        .client()
        .start(cancels_activity, &format!("cancel-act-{tag}"), ())
        .send()
        .await
        .unwrap();
    assert_eq!(within(handle.result()).await.unwrap(), "Err(Canceled)");
    // The running attempt was told, and stopped.
    within(async {
        while CANCELED_ATTEMPTS.load(std::sync::atomic::Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    node.shutdown().await;
}

async fn unclaimed_then_expired(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
    // With one worker slot, the first activity holds it; the second cannot start in time.
    let busy = ctx
        .activity(sleepy, 1_000)
        .start_to_close(Duration::from_secs(10))
        .start();
    ctx.sleep(Duration::from_millis(100)).await;
    let starved = ctx
        .activity(echo, "never started".to_string())
        .start_to_close(Duration::from_secs(10))
        .schedule_to_start(Duration::from_millis(150))
        .await;
    let _ = busy.await;
    Ok(format!("{starved:?}"))
}

async fn schedule_to_start_timeout<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(unclaimed_then_expired)
        .activity(sleepy)
        .activity(echo)
        .config(NodeConfig {
            shard_count: 2,
            activity_concurrency_max: 1,
            ..NodeConfig::default()
        })
        .start(store)
        .await
        .unwrap();
    let handle = node
        .client()
        .start(unclaimed_then_expired, &format!("s2s-{tag}"), ())
        .send()
        .await
        .unwrap();
    assert_eq!(
        within(handle.result()).await.unwrap(),
        "Err(TimedOut(ScheduleToStart))"
    );
    node.shutdown().await;
}

/// A workflow failed by an activity's failure fails with an `ActivityError` caused by it; its
/// parent, failed by that child, with a `ChildWorkflowError` caused by the child's failure: the
/// whole chain in the result, the history and the failure's text.
async fn failures_keep_their_causes<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let id = format!("causes-{tag}");
    let handle = client
        .start(parent_of_declines, &id, id.clone())
        .send()
        .await
        .unwrap();
    let failure = match within(handle.result()).await {
        Err(WorkflowOutcomeError::Failed(f)) => f,
        other => panic!("expected a failure, got {other:?}"),
    };
    let chain: Vec<(&str, &str)> = failure
        .chain()
        .map(|f| (f.error_type.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(
        chain,
        [
            (
                cairn::CHILD_WORKFLOW_ERROR,
                "Child Workflow execution failed"
            ),
            (cairn::ACTIVITY_ERROR, "Activity task failed"),
            ("InvalidCardError", "card declined"),
        ]
    );
    assert_eq!(
        failure.to_string(),
        "ChildWorkflowError: Child Workflow execution failed: caused by ActivityError: \
         Activity task failed: caused by InvalidCardError: card declined"
    );
    let recorded = handle
        .history()
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.kind {
            cairn_types::EventKind::WorkflowExecutionFailed { failure } => Some(failure),
            _ => None,
        });
    assert_eq!(recorded.as_ref(), Some(&failure));
    let child = client
        .handle::<()>(&format!("{id}-child"))
        .unwrap()
        .result()
        .await;
    match child {
        Err(WorkflowOutcomeError::Failed(f)) => {
            assert_eq!(f.error_type, cairn::ACTIVITY_ERROR);
            assert_eq!(f.root_cause().error_type, "InvalidCardError");
        }
        other => panic!("expected the child to fail, got {other:?}"),
    }
    node.shutdown().await;
}

async fn listing_and_describe<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    for i in 0..3 {
        let handle = client
            .start(quick, &format!("list-{tag}-{i}"), "ok".to_string())
            .send()
            .await
            .unwrap();
        within(handle.result()).await.unwrap();
    }
    let failed = client
        .start(quick, &format!("list-{tag}-f"), "fail".to_string())
        .send()
        .await
        .unwrap();
    assert!(matches!(
        within(failed.result()).await,
        Err(WorkflowOutcomeError::Failed(_))
    ));
    let waiting = client
        .start(heartbeats_pending, &format!("list-{tag}-w"), ())
        .send()
        .await
        .unwrap();
    // Wait until the pending activity is recorded.
    let description = within(async {
        loop {
            let d = waiting.describe().await.unwrap();
            if !d.pending_activities.is_empty() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(description.summary.workflow_type, "heartbeats_pending");
    assert_eq!(description.summary.status, Some(cairn::RunStatus::Running));
    assert_eq!(description.pending_activities[0].1.activity_type, "sleepy");
    assert!(description.history_length >= 3);

    let mine = |page: cairn::WorkflowPage| {
        assert_eq!(page.next_page_token, None, "a few workflows fit one page");
        let mut ids: Vec<String> = page
            .workflows
            .into_iter()
            .map(|w| w.workflow_id)
            .filter(|id| id.starts_with(&format!("list-{tag}-")))
            .collect();
        ids.sort();
        ids
    };
    let completed = client
        .list(Some("quick"), Some(cairn::RunStatus::Completed), None, None)
        .await
        .unwrap();
    assert_eq!(
        mine(completed),
        (0..3)
            .map(|i| format!("list-{tag}-{i}"))
            .collect::<Vec<_>>()
    );
    let failures = client
        .list(None, Some(cairn::RunStatus::Failed), None, None)
        .await
        .unwrap();
    assert_eq!(mine(failures), vec![format!("list-{tag}-f")]);
    let all_quick = client.list(Some("quick"), None, None, None).await.unwrap();
    assert_eq!(mine(all_quick).len(), 4);
    let running = client
        .list(
            Some("heartbeats_pending"),
            Some(cairn::RunStatus::Running),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(mine(running), vec![format!("list-{tag}-w")]);
    waiting.terminate("done").await.unwrap();
    node.shutdown().await;
}

async fn heartbeats_pending(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    ctx.activity(sleepy, 30_000)
        .start_to_close(Duration::from_secs(60))
        .await?;
    Ok(())
}

common::on_both_stores!(
    seed: 0xfa17;
    retries_with_backoff_and_non_retryable,
    each_timeout_fires,
    heartbeat_details_reach_next_attempt,
    signals_queries_and_conditions,
    parallel_activities,
    cancellation_and_termination,
    id_reuse_policies_and_execution_timeout,
    bad_input_is_refused_without_writes,
    activity_cancellation,
    schedule_to_start_timeout,
    listing_and_describe,
    failures_keep_their_causes,
);
