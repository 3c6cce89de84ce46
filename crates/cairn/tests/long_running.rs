//! The features long-running business processes lean on, through the public SDK: child
//! workflows (with parent close policies and a bounded fan-out), continue-as-new, visibility
//! queries over search attributes, schedules, and sagas. Feature tests run on the durable
//! embedded store and on `MemStore` behind a fault-injecting wrapper (conflicts and both kinds
//! of `MaybeCommitted`); the restart tests on the embedded store.

mod common;

use cairn::{
    ActivityContext, ChildError, ClientError, Ctx, Failure, Node, NodeConfig, OverlapPolicy,
    ParentClosePolicy, Query, Saga, SearchAttribute, Semaphore, Signal, WorkflowError,
    WorkflowOutcomeError, fail,
};
use cairn_store::{FaultConfig, FaultStore, MemStore, Store};
use common::{Counts, embedded_store, faulty_store, within};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::future::IntoFuture;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

// ---------------------------------------------------------------------------------------------
// Workflows and activities.

static CALLS: Counts = Counts::new();

fn calls(key: &str) -> u32 {
    CALLS.get(key)
}

fn count_call(key: &str) {
    CALLS.bump(key);
}

/// Fulfils one order; orders whose name contains "bad" fail.
async fn fulfil(_ctx: ActivityContext, order: String) -> Result<String, Failure> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if order.contains("bad") {
        return Err(Failure::new("OutOfStock", format!("{order}: out of stock")).non_retryable());
    }
    Ok(format!("shipped {order}"))
}

/// One order as a child workflow.
async fn order_child(ctx: Ctx, order: String) -> Result<String, WorkflowError> {
    Ok(ctx.activity(fulfil, order).await?)
}

/// A batch of orders as children, at most 3 at a time; failed orders are collected, not fatal.
async fn order_batch(ctx: Ctx, orders: Vec<String>) -> Result<(Vec<String>, usize), WorkflowError> {
    let slots = Semaphore::new(&ctx, 3);
    let running = Rc::new(Cell::new(0usize));
    let peak = Rc::new(Cell::new(0usize));
    let runs = orders.into_iter().map(|order| {
        let (ctx, slots, running, peak) =
            (ctx.clone(), slots.clone(), running.clone(), peak.clone());
        async move {
            let _permit = slots.acquire().await;
            running.set(running.get() + 1);
            peak.set(peak.get().max(running.get()));
            let id = format!("{}-{order}", ctx.uuid());
            let result = ctx.child_workflow(order_child, order).id(id).await;
            running.set(running.get() - 1);
            result
        }
    });
    let results = cairn::futures::future::join_all(runs).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let shipped = results.into_iter().filter_map(Result::ok).collect();
    if peak.get() > 3 {
        return Err(fail(
            "SemaphoreBroken",
            format!("{} children at once", peak.get()),
        ));
    }
    Ok((shipped, failed))
}

const RELEASE: Signal<()> = Signal::new("release");

/// Waits for `release`, then returns its input.
async fn held_child(ctx: Ctx, tag: String) -> Result<String, WorkflowError> {
    let mut release = ctx.signal_receiver(&RELEASE);
    released_or_canceled(&ctx, &mut release).await?;
    Ok(format!("released {tag}"))
}

/// Waits for `release` or for cancellation (then ends as canceled).
async fn released_or_canceled(
    ctx: &Ctx,
    release: &mut cairn::SignalReceiver<()>,
) -> Result<(), WorkflowError> {
    let released = release.recv();
    let cancelled = ctx.cancelled();
    cairn::futures::pin_mut!(released, cancelled);
    match cairn::futures::future::select(released, cancelled).await {
        cairn::futures::future::Either::Left(_) => Ok(()),
        cairn::futures::future::Either::Right(_) => Err(WorkflowError::Canceled),
    }
}

/// Starts three held children under the three parent close policies, then finishes.
async fn short_parent(ctx: Ctx, tag: String) -> Result<Vec<String>, WorkflowError> {
    let mut ids = Vec::new();
    for (name, policy) in [
        ("terminate", ParentClosePolicy::Terminate),
        ("cancel", ParentClosePolicy::RequestCancel),
        ("abandon", ParentClosePolicy::Abandon),
    ] {
        let id = format!("{tag}-{name}");
        let handle = ctx
            .child_workflow(held_child, name.to_string())
            .id(id.clone())
            .parent_close_policy(policy)
            .start()
            .await
            .map_err(WorkflowError::from)?;
        assert!(handle.run_id().is_some());
        ids.push(id);
    }
    Ok(ids)
}

/// Starts a child whose id is in use, reports how that went, then cancels a child it started.
async fn clashing_parent(ctx: Ctx, taken_id: String) -> Result<String, WorkflowError> {
    let clash = ctx
        .child_workflow(held_child, "clash".to_string())
        .id(taken_id)
        .await;
    let clash = match clash {
        Err(ChildError::StartFailed { cause }) => format!("start failed: {cause}"),
        other => format!("unexpected: {other:?}"),
    };
    let mut child = ctx
        .child_workflow(held_child, "to cancel".to_string())
        .id(format!("{}-cancelled", ctx.uuid()))
        .start()
        .await
        .map_err(WorkflowError::from)?;
    child.cancel();
    let cancelled = child.await;
    Ok(format!("{clash}; then {cancelled:?}"))
}

/// Waits for its child (which waits for a signal) and returns its result.
async fn patient_parent(ctx: Ctx, child_id: String) -> Result<String, WorkflowError> {
    Ok(ctx
        .child_workflow(held_child, "patient".to_string())
        .id(child_id)
        .await?)
}

const ADD: Signal<u64> = Signal::new("add");
const TOTAL: Query<(), u64> = Query::new("total");

/// State carried across continue-as-new.
#[derive(serde::Serialize, serde::Deserialize)]
struct Tally {
    total: u64,
    seen: u64,
    goal: u64,
    runs: u32,
}

/// Sums `add` signals; continues as new every 5 signals; done once `goal` signals arrived.
async fn tally(ctx: Ctx, state: Tally) -> Result<(u64, u32), WorkflowError> {
    let total = Rc::new(Cell::new(state.total));
    let seen = Rc::new(Cell::new(state.seen));
    let t = total.clone();
    ctx.on_query(&TOTAL, move |()| t.get());
    let (t, s) = (total.clone(), seen.clone());
    ctx.on_signal(&ADD, move |n| {
        t.set(t.get() + n);
        s.set(s.get() + 1);
    });
    let start_seen = state.seen;
    let s = seen.clone();
    let goal = state.goal;
    ctx.wait_condition(move || s.get() >= goal || s.get() >= start_seen + 5)
        .await;
    if seen.get() >= goal {
        return Ok((total.get(), state.runs));
    }
    assert!(ctx.history_length() > 5);
    Err(ctx.continue_as_new(&Tally {
        total: total.get(),
        seen: seen.get(),
        goal,
        runs: state.runs + 1,
    }))
}

const CUSTOMER: SearchAttribute<String> = SearchAttribute::new("CustomerId");
const PRIORITY: SearchAttribute<i64> = SearchAttribute::new("Priority");
const BUMP: Signal<i64> = Signal::new("bump");

/// Sets its search attributes, then raises its priority on each `bump` until it gets 0.
async fn tagged(ctx: Ctx, (customer, priority): (String, i64)) -> Result<i64, WorkflowError> {
    ctx.upsert_search_attribute(&CUSTOMER, customer)
        .map_err(|e| fail("BadAttribute", e.to_string()))?;
    ctx.upsert_search_attribute(&PRIORITY, priority)
        .map_err(|e| fail("BadAttribute", e.to_string()))?;
    let mut bumps = ctx.signal_receiver(&BUMP);
    let mut current = priority;
    loop {
        let by = bumps.recv().await;
        if by == 0 {
            return Ok(current);
        }
        current += by;
        ctx.upsert_search_attribute(&PRIORITY, current)
            .map_err(|e| fail("BadAttribute", e.to_string()))?;
    }
}

/// A scheduled job: runs for `millis` then ends.
async fn tick(_ctx: Ctx, millis: u64) -> Result<(), WorkflowError> {
    if millis > 0 {
        _ctx.sleep(Duration::from_millis(millis)).await;
    }
    Ok(())
}

async fn book(_ctx: ActivityContext, item: String) -> Result<String, Failure> {
    count_call(&format!("book {item}"));
    if item.contains("fail") {
        return Err(Failure::new("Unavailable", item).non_retryable());
    }
    Ok(item)
}

async fn unbook(_ctx: ActivityContext, item: String) -> Result<(), Failure> {
    count_call(&format!("unbook {item}"));
    if item.contains("stuck") {
        return Err(Failure::new("CannotUndo", item).non_retryable());
    }
    Ok(())
}

/// Books each item; on the first failure compensates the booked ones.
async fn trip(ctx: Ctx, (items, parallel): (Vec<String>, bool)) -> Result<String, WorkflowError> {
    let mut saga = Saga::new().parallel_compensation(parallel);
    for item in items {
        match ctx.activity(book, item.clone()).await {
            Ok(booked) => saga.add(ctx.activity(unbook, booked)),
            Err(e) => {
                let undone = saga.len();
                let failures = saga.compensate().await;
                return Ok(format!(
                    "failed at {item} ({e}); compensated {undone}, {} compensation failure(s)",
                    failures.len()
                ));
            }
        }
    }
    Ok("booked".into())
}

/// Echoes its input.
async fn echo(_ctx: ActivityContext, blob: String) -> Result<String, Failure> {
    Ok(blob)
}

/// Runs three activities at once over a large input, so the run's record (its input plus three
/// pending activities' inputs) is several times larger than one store value.
async fn bulky(ctx: Ctx, blob: String) -> Result<usize, WorkflowError> {
    let echoes = (0..3).map(|_| ctx.activity(echo, blob.clone()).into_future());
    let mut total = 0;
    for echoed in cairn::futures::future::join_all(echoes).await {
        let echoed = echoed?;
        if echoed != blob {
            return Err(fail("Garbled", "an echo differs from its input"));
        }
        total += echoed.len();
    }
    Ok(total)
}

/// Starts `width` children at once, each sleeping `millis` on a durable timer, and counts them
/// as they complete.
async fn wide_parent(ctx: Ctx, (width, millis): (u64, u64)) -> Result<u64, WorkflowError> {
    let children = (0..width).map(|_| ctx.child_workflow(tick, millis).into_future());
    let mut done = 0;
    for result in cairn::futures::future::join_all(children).await {
        result?;
        done += 1;
    }
    Ok(done)
}

fn builder() -> cairn::NodeBuilder {
    Node::builder()
        .workflow(order_child)
        .workflow(order_batch)
        .workflow(held_child)
        .workflow(short_parent)
        .workflow(clashing_parent)
        .workflow(patient_parent)
        .workflow(tally)
        .workflow(tagged)
        .workflow(tick)
        .workflow(trip)
        .workflow(bulky)
        .workflow(wide_parent)
        .activity(fulfil)
        .activity(echo)
        .activity(book)
        .activity(unbook)
        .search_attribute(&CUSTOMER)
        .search_attribute(&PRIORITY)
}

fn config(node_id: &str) -> NodeConfig {
    NodeConfig {
        node_id: node_id.to_string(),
        shard_count: 8,
        ..NodeConfig::default()
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios (each on both stores).

/// Proves a parent fans out to child workflows at most three at a time, collects their
/// results, and counts failed children without failing itself.
async fn child_fan_out_bounded_and_failures_collected<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let orders: Vec<String> = (0..10)
        .map(|i| {
            if i % 4 == 3 {
                format!("bad-{i}")
            } else {
                format!("o{i}")
            }
        })
        .collect();
    let handle = node
        .client()
        .start(order_batch, &format!("batch-{tag}"), orders)
        .send()
        .await
        .unwrap();
    let (shipped, failed) = within("batch", handle.result()).await.unwrap();
    assert_eq!(shipped.len(), 8);
    assert_eq!(failed, 2);
    assert!(shipped.contains(&"shipped o0".to_string()));
    let history = handle.history().await.unwrap();
    let count = |name: &str| history.iter().filter(|e| e.kind.name() == name).count();
    assert_eq!(count("StartChildWorkflowExecutionInitiated"), 10);
    assert_eq!(count("ChildWorkflowExecutionStarted"), 10);
    assert_eq!(count("ChildWorkflowExecutionCompleted"), 8);
    assert_eq!(count("ChildWorkflowExecutionFailed"), 2);
    // Each child ran once, as its own workflow with the parent recorded.
    let children = node
        .client()
        .list_workflows("WorkflowType = 'order_child'", Some(1000), None)
        .await
        .unwrap();
    let mine: Vec<_> = children
        .workflows
        .iter()
        .filter(|w| w.parent_workflow_id.as_deref() == Some(&format!("batch-{tag}")))
        .collect();
    assert_eq!(mine.len(), 10);
    node.shutdown().await;
}

/// Proves a child whose workflow id is in use fails to start (the parent sees it and goes
/// on), and a child the parent cancels ends as canceled.
async fn child_id_clash_and_cancel<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let client = node.client();
    let taken = format!("taken-{tag}");
    let blocker = client
        .start(held_child, &taken, "blocker".to_string())
        .send()
        .await
        .unwrap();
    let parent = client
        .start(clashing_parent, &format!("clash-{tag}"), taken.clone())
        .send()
        .await
        .unwrap();
    let outcome = within("clash", parent.result()).await.unwrap();
    assert!(
        outcome.starts_with("start failed: workflow id") && outcome.ends_with("then Err(Canceled)"),
        "{outcome}"
    );
    blocker.signal(&RELEASE, ()).await.unwrap();
    assert_eq!(
        within("blocker", blocker.result()).await.unwrap(),
        "released blocker"
    );
    node.shutdown().await;
}

/// Proves parent close policies: when the parent closes, its child with `Terminate` is
/// terminated, the one with `RequestCancel` is asked to cancel (and does), and the abandoned
/// one runs on to its own end.
async fn parent_close_policies<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let client = node.client();
    let parent = client
        .start(short_parent, &format!("short-{tag}"), format!("pc-{tag}"))
        .send()
        .await
        .unwrap();
    let ids = within("parent", parent.result()).await.unwrap();
    let handle = |name: &str| {
        client
            .handle::<String>(&format!("pc-{tag}-{name}"))
            .unwrap()
    };
    assert!(matches!(
        within("terminated", handle("terminate").result()).await,
        Err(WorkflowOutcomeError::Terminated(reason)) if reason.contains("parent close policy")
    ));
    assert!(matches!(
        within("canceled", handle("cancel").result()).await,
        Err(WorkflowOutcomeError::Canceled)
    ));
    let abandoned = handle("abandon");
    assert_eq!(
        abandoned.describe().await.unwrap().summary.status,
        Some(cairn::RunStatus::Running)
    );
    abandoned.signal(&RELEASE, ()).await.unwrap();
    assert_eq!(
        within("abandoned", abandoned.result()).await.unwrap(),
        "released abandon"
    );
    assert_eq!(ids.len(), 3);
    node.shutdown().await;
}

/// Proves continue-as-new: the workflow closes and reopens under the same id with its state
/// as input, `result` follows the chain to its end, signals sent throughout (some arriving as a
/// run closes) all count, and each run's history stays short.
async fn continue_as_new_chain<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let id = format!("tally-{tag}");
    let handle = node
        .client()
        .start(
            tally,
            &id,
            Tally {
                total: 0,
                seen: 0,
                goal: 23,
                runs: 1,
            },
        )
        .send()
        .await
        .unwrap();
    let first_run = handle.describe().await.unwrap().summary.run_id;
    // In groups of four sent back to back (racing the runs' closes), each group counted
    // before the next: every run sees fewer than its five before it continues, so the chain
    // has several runs however the mail is batched.
    let mut sent = 0u64;
    for group in (1..=23u64).collect::<Vec<_>>().chunks(4) {
        for &n in group {
            handle.signal(&ADD, n).await.unwrap();
            sent += n;
        }
        if sent == (1..=23).sum::<u64>() {
            break;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while handle.query(&TOTAL, ()).await.ok() != Some(sent) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "group up to {sent} not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (total, runs) = within("tally", handle.result()).await.unwrap();
    assert_eq!(total, (1..=23).sum::<u64>(), "every signal counted once");
    assert!(runs >= 3, "{runs} runs");
    let last = handle.describe().await.unwrap();
    assert_ne!(last.summary.run_id, first_run);
    assert!(last.previous_run.is_some());
    assert!(last.history_length < 40, "{}", last.history_length);
    let chain = node
        .client()
        .count_workflows(&format!("WorkflowId = '{id}'"))
        .await
        .unwrap();
    // Every run of the chain is listed by its id, as on Temporal: the last, then the runs it
    // continued, newest first.
    assert_eq!(chain, u64::from(runs), "each run of the chain is listed");
    let listed = node
        .client()
        .list_workflows(&format!("WorkflowId = '{id}'"), None, None)
        .await
        .unwrap()
        .workflows;
    assert_eq!(listed[0].run_id, last.summary.run_id);
    assert_eq!(listed[0].status, Some(cairn::RunStatus::Completed));
    assert_eq!(listed.last().unwrap().run_id, first_run);
    assert!(
        listed[1..]
            .iter()
            .all(|w| w.status == Some(cairn::RunStatus::ContinuedAsNew)),
        "{listed:?}"
    );
    node.shutdown().await;
}

/// Proves a closed run's actor leaves memory at the next sweep (not after `actor_idle_ms`, here
/// an hour) while 40 chains continue as new under concurrent signals: every signal that races a
/// continue-as-new is still forwarded to the successor (the closed run's actor may be a fresh
/// one), every total is exact, and closed runs still answer queries by replay.
async fn closed_runs_leave_memory_at_once<S: Store>(store: S, tag: &str) {
    let node = builder()
        .config(NodeConfig {
            actor_idle_ms: 3_600_000,
            ..config(tag)
        })
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    let chains = 40;
    let goal = 12u64;
    let mut handles = Vec::new();
    for i in 0..chains {
        let state = Tally {
            total: 0,
            seen: 0,
            goal,
            runs: 1,
        };
        let handle = client
            .start(tally, &format!("{tag}-chain-{i}"), state)
            .send()
            .await
            .unwrap();
        handles.push(handle);
    }
    let signals = handles.iter().map(|handle| async move {
        for n in 1..=goal {
            handle.signal(&ADD, n).await.unwrap();
        }
    });
    futures::future::join_all(signals).await;
    let mut all_runs = 0;
    for handle in &handles {
        let (total, runs) = within("chain", handle.result()).await.unwrap();
        assert_eq!(total, (1..=goal).sum::<u64>(), "every signal counted once");
        all_runs += runs;
    }
    // A run may take several signals in one transition, so a chain can be short; over 40 of
    // them most continue as new at least once.
    assert!(all_runs > chains, "{all_runs} runs over {chains} chains");
    let node_ref = &node;
    eventually("closed runs passivated", async || {
        node_ref
            .metrics()
            .active_actors
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    })
    .await;
    for handle in handles.iter().take(5) {
        assert_eq!(
            handle.query(&TOTAL, ()).await.unwrap(),
            (1..=goal).sum::<u64>()
        );
    }
    node.shutdown().await;
}

/// Proves visibility: typed custom search attributes upserted by workflows are queryable with
/// AND/OR/IN/ORDER BY at once (the record is written with the run's transition), results page
/// with tokens, counts agree, and malformed queries point at the offending token.
async fn visibility_queries<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let client = node.client();
    for i in 0..7i64 {
        let customer = if i % 2 == 0 { "acme" } else { "globex" };
        let handle = client
            .start(
                tagged,
                &format!("{tag}-tagged-{i}"),
                (customer.to_string(), i),
            )
            .send()
            .await
            .unwrap();
        if i == 6 {
            handle.signal(&BUMP, 0).await.unwrap();
            within("tagged", handle.result()).await.unwrap();
        }
    }
    let ids = |page: &cairn::WorkflowPage| -> Vec<String> {
        page.workflows
            .iter()
            .map(|w| w.workflow_id.clone())
            .collect()
    };
    let prefix = format!("WorkflowId STARTS_WITH '{tag}-tagged-'");
    eventually("all seven visible with attributes", async || {
        client
            .count_workflows(&format!("{prefix} AND Priority IS NOT NULL"))
            .await
            .unwrap()
            == 7
    })
    .await;
    let acme = client
        .list_workflows(
            &format!("{prefix} AND CustomerId = 'acme' AND ExecutionStatus = 'Running' ORDER BY Priority DESC"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&acme),
        vec![
            format!("{tag}-tagged-4"),
            format!("{tag}-tagged-2"),
            format!("{tag}-tagged-0")
        ]
    );
    let either = client
        .count_workflows(&format!(
            "{prefix} AND (Priority >= 5 OR CustomerId IN ('nobody', 'globex'))"
        ))
        .await
        .unwrap();
    assert_eq!(either, 4, "1, 3, 5 (globex) and 5, 6 (priority)");
    // An upsert is visible as soon as the transition that made it committed.
    let bumped = client.handle::<i64>(&format!("{tag}-tagged-1")).unwrap();
    bumped.signal(&BUMP, 100).await.unwrap();
    eventually("bump applied", async || {
        bumped
            .describe()
            .await
            .unwrap()
            .search_attributes
            .get("Priority")
            == Some(&cairn::SearchValue::Int(101))
    })
    .await;
    let top = client
        .list_workflows(&format!("{prefix} AND Priority > 100"), None, None)
        .await
        .unwrap();
    assert_eq!(ids(&top), vec![format!("{tag}-tagged-1")]);
    // Pages of 3 with tokens cover everything once, in order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_workflows(
                &format!("{prefix} ORDER BY Priority ASC"),
                Some(3),
                token.as_deref(),
            )
            .await
            .unwrap();
        seen.extend(ids(&page));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7);
    assert_eq!(seen.last().unwrap(), &format!("{tag}-tagged-1"));
    let error = client
        .list_workflows("CustomerId = 'acme' ANDD Priority > 1", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::InvalidQuery(e) if e.token == "ANDD" && e.position == 20),
        "{error}"
    );
    assert!(matches!(
        client.count_workflows("Priority = 'high'").await,
        Err(ClientError::InvalidQuery(_))
    ));
    assert!(matches!(
        client.list_workflows("", None, Some("zz")).await,
        Err(ClientError::InvalidPageToken { .. })
    ));
    for i in 0..6 {
        let handle = client.handle::<i64>(&format!("{tag}-tagged-{i}")).unwrap();
        handle.signal(&BUMP, 0).await.unwrap();
    }
    node.shutdown().await;
}

/// Proves the saga helper: compensations run newest first (or all at once) for the steps
/// done, a failing compensation is collected rather than stopping the rest.
async fn saga_compensation<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let client = node.client();
    let items =
        |names: &[&str]| -> Vec<String> { names.iter().map(|n| format!("{tag}-{n}")).collect() };
    let ok = client
        .start(
            trip,
            &format!("trip-ok-{tag}"),
            (items(&["flight", "hotel"]), false),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(within("ok", ok.result()).await.unwrap(), "booked");
    let failed = client
        .start(
            trip,
            &format!("trip-bad-{tag}"),
            (items(&["car", "stuck-train", "fail-boat"]), true),
        )
        .send()
        .await
        .unwrap();
    let outcome = within("bad", failed.result()).await.unwrap();
    assert!(
        outcome.contains("compensated 2, 1 compensation failure"),
        "{outcome}"
    );
    assert_eq!(calls(&format!("unbook {tag}-car")), 1);
    assert_eq!(calls(&format!("unbook {tag}-stuck-train")), 1);
    assert_eq!(
        calls(&format!("unbook {tag}-flight")),
        0,
        "nothing to undo for a success"
    );
    node.shutdown().await;
}

/// Proves runs whose records outgrow one store value (100,000 bytes) work: a workflow with a
/// 60,000-byte input and three such activities pending at once, and a parent with 1,000
/// children pending at once (before records were chunked, both retried their commit forever).
async fn records_larger_than_one_value<S: Store>(store: S, tag: &str) {
    let node = builder().config(config(tag)).start(store).await.unwrap();
    let blob = "x".repeat(60_000);
    let bulky = node
        .client()
        .start(bulky, &format!("bulky-{tag}"), blob)
        .send()
        .await
        .unwrap();
    assert_eq!(within("bulky", bulky.result()).await.unwrap(), 180_000);
    let described = bulky.describe().await.unwrap();
    assert!(described.pending_activities.is_empty());

    let wide = node
        .client()
        .start(wide_parent, &format!("wide-{tag}"), (1_000u64, 0u64))
        .send()
        .await
        .unwrap();
    assert_eq!(
        within("1,000 children", wide.result()).await.unwrap(),
        1_000
    );
    let children = node
        .client()
        .count_workflows(&format!("ParentWorkflowId = 'wide-{tag}'"))
        .await
        .unwrap();
    assert_eq!(children, 1_000);
    node.shutdown().await;
}

common::on_both_stores!(
    seed: 0x10_06;
    child_fan_out_bounded_and_failures_collected,
    child_id_clash_and_cancel,
    parent_close_policies,
    continue_as_new_chain,
    closed_runs_leave_memory_at_once,
    visibility_queries,
    saga_compensation,
    records_larger_than_one_value,
);

// ---------------------------------------------------------------------------------------------
// Children across shards under heavy store faults, and across passivation and restarts.

/// Proves the cross-shard atomicity of child start and child completion under injected store
/// faults: 12 parents each start 5 children (on other shards), every commit faces conflicts and
/// both kinds of MaybeCommitted; every child starts exactly once, every parent hears exactly
/// one start and one result per child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_start_and_result_are_atomic_across_shards_under_faults() {
    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            conflict_probability: 0.15,
            maybe_committed_applied_probability: 0.15,
            maybe_committed_lost_probability: 0.15,
            ..FaultConfig::none(0xa70_31c)
        },
    );
    let node = builder()
        .config(config("atomic"))
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let mut parents = Vec::new();
    for p in 0..12 {
        let orders: Vec<String> = (0..5).map(|c| format!("p{p}c{c}")).collect();
        parents.push(
            client
                .start(order_batch, &format!("atomic-{p}"), orders)
                .send()
                .await
                .unwrap(),
        );
    }
    for parent in &parents {
        let (shipped, failed) = within("parent", parent.result()).await.unwrap();
        assert_eq!((shipped.len(), failed), (5, 0));
        let history = parent.history().await.unwrap();
        let mut started = HashMap::new();
        let mut finished = HashMap::new();
        for event in &history {
            match &event.kind {
                cairn_types::EventKind::ChildWorkflowExecutionStarted { seq, .. } => {
                    *started.entry(*seq).or_insert(0) += 1;
                }
                cairn_types::EventKind::ChildWorkflowExecutionCompleted { seq, .. } => {
                    *finished.entry(*seq).or_insert(0) += 1;
                }
                _ => {}
            }
        }
        assert_eq!(started.len(), 5);
        assert!(started.values().all(|n| *n == 1), "{started:?}");
        assert!(finished.values().all(|n| *n == 1), "{finished:?}");
    }
    let children = client
        .list_workflows("WorkflowType = 'order_child'", Some(1000), None)
        .await
        .unwrap()
        .workflows;
    assert_eq!(children.len(), 60, "each child started exactly once");
    let shards: BTreeSet<u32> = children
        .iter()
        .map(|c| cairn_runtime::shard_of(&c.workflow_id, 8))
        .collect();
    assert!(shards.len() > 1, "children spread over shards");
    assert!(store.stats().faults() > 20, "faults were injected");
    node.shutdown().await;
}

/// Proves a child that finishes while its parent is passivated (dropped from memory) wakes the
/// parent, which completes with the child's result; and the same after a node restart while
/// the parent waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_result_wakes_a_passivated_parent_and_survives_a_restart() {
    let (store, _dir) = embedded_store();
    let start = || {
        builder()
            .config(NodeConfig {
                actor_idle_ms: 100,
                ..config("passivating")
            })
            .start(store.clone())
    };
    let node = start().await.unwrap();
    let parent = node
        .client()
        .start(
            patient_parent,
            "patient-parent",
            "patient-child".to_string(),
        )
        .send()
        .await
        .unwrap();
    let node_ref = &node;
    eventually("child started and both passivated", async || {
        node_ref
            .client()
            .handle::<String>("patient-child")
            .unwrap()
            .describe()
            .await
            .is_ok()
            && node_ref
                .metrics()
                .passivations
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 2
    })
    .await;
    let child = node.client().handle::<String>("patient-child").unwrap();
    child.signal(&RELEASE, ()).await.unwrap();
    assert_eq!(
        within("parent after passivation", parent.result())
            .await
            .unwrap(),
        "released patient"
    );

    // Again, with the node crashing while the parent waits.
    let second = node
        .client()
        .start(
            patient_parent,
            "patient-parent-2",
            "patient-child-2".to_string(),
        )
        .send()
        .await
        .unwrap();
    eventually("second child started", async || {
        second
            .describe()
            .await
            .unwrap()
            .pending_children
            .iter()
            .any(|(_, c)| c.run_id.is_some())
    })
    .await;
    node.crash();
    let node = start().await.unwrap();
    let child = node.client().handle::<String>("patient-child-2").unwrap();
    child.signal(&RELEASE, ()).await.unwrap();
    let parent = node.client().handle::<String>("patient-parent-2").unwrap();
    assert_eq!(
        within("parent after restart", parent.result())
            .await
            .unwrap(),
        "released patient"
    );
    node.shutdown().await;
}

/// Proves a run whose record is stored in chunks survives a crash: a parent with 1,000
/// children sleeping on timers is described (its record read back whole) mid-way, the node
/// crashes, and after a restart the parent loads its record and hears every child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_record_survives_a_restart() {
    let (store, _dir) = embedded_store();
    let start = || builder().config(config("chunked")).start(store.clone());
    let node = start().await.unwrap();
    let parent = node
        .client()
        // The children sleep long enough that all are still open once all have started,
        // even on a loaded machine.
        .start(wide_parent, "wide-restart", (1_000u64, 5_000u64))
        .send()
        .await
        .unwrap();
    eventually("every child started", async || {
        let described = parent.describe().await.unwrap();
        described.pending_children.len() == 1_000
            && described
                .pending_children
                .iter()
                .all(|(_, c)| c.run_id.is_some())
    })
    .await;
    node.crash();
    let node = start().await.unwrap();
    let parent = node.client().handle::<u64>("wide-restart").unwrap();
    assert_eq!(
        within("parent after restart", parent.result())
            .await
            .unwrap(),
        1_000
    );
    assert!(parent.describe().await.unwrap().pending_children.is_empty());
    node.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Schedules.

/// Ids of the workflows schedule `schedule_id` started, sorted (by time, as they end in it).
fn started_by(workflows: &[cairn::WorkflowSummary], schedule_id: &str) -> Vec<String> {
    let prefix = format!("{schedule_id}-");
    let mut ids: Vec<String> = workflows
        .iter()
        .filter(|w| w.workflow_id.starts_with(&prefix))
        .map(|w| w.workflow_id.clone())
        .collect();
    ids.sort();
    ids
}

async fn all<S: Store>(node: &Node<S>) -> Vec<cairn::WorkflowSummary> {
    node.client()
        .list_workflows("", Some(1000), None)
        .await
        .unwrap()
        .workflows
}

/// Proves an interval schedule starts its workflow on cadence under ids named after the
/// scheduled time, describes its next times and recent actions, pauses (and starts nothing)
/// with a note, unpauses, triggers now, backfills a past range, and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_cadence_pause_trigger_backfill_delete() {
    let (store, _dir) = embedded_store();
    let node = builder()
        .config(config("scheduler"))
        .start(store)
        .await
        .unwrap();
    let client = node.client();
    let schedule = client
        .schedule(tick, "every-200ms", 0u64)
        .interval(Duration::from_millis(200))
        .create()
        .await
        .unwrap();
    let node_ref = &node;
    eventually("three fires", async || {
        started_by(&all(node_ref).await, "every-200ms").len() >= 3
    })
    .await;
    let described = schedule.describe().await.unwrap();
    assert!(described.record.actions_started >= 3);
    assert_eq!(described.next_times_unix_ms.len(), 5);
    assert!(
        described
            .next_times_unix_ms
            .windows(2)
            .all(|w| w[1] - w[0] == 200)
    );
    let ids = started_by(&all(&node).await, "every-200ms");
    let first = &ids[0];
    assert!(
        first.ends_with("Z") && first.contains('T'),
        "named after the time: {first}"
    );

    schedule.pause("maintenance window").await.unwrap();
    let paused = schedule.describe().await.unwrap();
    assert!(paused.record.paused);
    assert_eq!(paused.record.note, "maintenance window");
    assert!(paused.next_times_unix_ms.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = started_by(&all(&node).await, "every-200ms").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = started_by(&all(&node).await, "every-200ms").len();
    assert_eq!(before, after, "nothing starts while paused");

    schedule.trigger().await.unwrap();
    eventually("trigger starts one while paused", async || {
        started_by(&all(node_ref).await, "every-200ms").len() == after + 1
    })
    .await;
    schedule.unpause("done").await.unwrap();
    eventually("fires again", async || {
        started_by(&all(node_ref).await, "every-200ms").len() >= after + 3
    })
    .await;

    // Backfill a past second: five times, each once (ids are named after the time).
    let now = SystemTime::now();
    let backfill_start = now - Duration::from_secs(120);
    let backfill_end = backfill_start + Duration::from_millis(999);
    schedule
        .backfill(backfill_start, backfill_end, Some(OverlapPolicy::AllowAll))
        .await
        .unwrap();
    eventually("backfill started", async || {
        backfilled(&all(node_ref).await, backfill_start) >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backfilled(&all(&node).await, backfill_start),
        5,
        "each time once"
    );

    schedule.delete().await.unwrap();
    assert!(matches!(
        schedule.describe().await,
        Err(ClientError::ScheduleNotFound { .. })
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = started_by(&all(&node).await, "every-200ms").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        started_by(&all(&node).await, "every-200ms").len(),
        settled,
        "a deleted schedule starts nothing"
    );
    node.shutdown().await;
}

/// Workflows of schedule `every-200ms` whose scheduled time is within a second after `start`.
fn backfilled(workflows: &[cairn::WorkflowSummary], start: SystemTime) -> usize {
    let from = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    workflows
        .iter()
        .filter_map(|w| w.workflow_id.strip_prefix("every-200ms-"))
        .filter_map(cairn_core::visibility::parse_time)
        .filter(|t| *t >= from && *t < from + 1_000)
        .count()
}

/// Holds until released or canceled (a scheduled job that overlaps the next time).
async fn held_job(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    let mut release = ctx.signal_receiver(&RELEASE);
    released_or_canceled(&ctx, &mut release).await
}

/// Proves a schedule keeps firing after its node loses every shard at once and claims them
/// back, as when a store outage outlasts the lease (FoundationDB recovering from a lost
/// process): with runs that overlap the next fire (skip policy), the store is stalled past the
/// lease mid-run; the node drops all its shards, takes them again, and the schedule starts
/// runs on cadence afterwards, every one of which completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_after_a_stall_costs_every_shard() {
    let store = FaultStore::new(MemStore::new(), FaultConfig::none(51));
    schedule_through_shard_loss(&store, "stall", true, async || {
        store.pause();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        store.resume();
    })
    .await;
}

/// The same through an outage in which commits fail and crawl, most with an unknown outcome
/// (half of those applied), for longer than the lease, as FoundationDB's
/// `commit_unknown_result` made them in the cluster test. Whether the node drops its shards
/// depends on when its placement round looks (a commit after the lease lapsed is fenced
/// either way), so this one claims only what follows: fires on cadence afterwards, every run
/// completing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_on_after_failing_commits_cost_every_shard() {
    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            conflict_probability: 0.2,
            maybe_committed_applied_probability: 0.4,
            maybe_committed_lost_probability: 0.4,
            latency: Some((Duration::from_millis(50), Duration::from_millis(150))),
            ..FaultConfig::none(52)
        },
    );
    store.set_enabled(false);
    schedule_through_shard_loss(&store, "unknown", false, async || {
        store.set_enabled(true);
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        store.set_enabled(false);
    })
    .await;
}

async fn schedule_through_shard_loss(
    store: &FaultStore<MemStore>,
    tag: &str,
    every_shard_lost: bool,
    outage: impl AsyncFnOnce(),
) {
    let node = builder()
        .config(NodeConfig {
            lease_timeout_ms: 600,
            ..config(&format!("shard-loss-{tag}"))
        })
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let schedule_id = format!("loses-shards-{tag}");
    let schedule = client
        .schedule(tick, &schedule_id, 300u64)
        .interval(Duration::from_millis(200))
        .create()
        .await
        .unwrap();
    let node_ref = &node;
    eventually("two fires", async || {
        started_by(&all(node_ref).await, &schedule_id).len() >= 2
    })
    .await;
    outage().await;
    eventually(
        "every shard held again (lost first, where claimed)",
        async || {
            let losses = node_ref
                .metrics()
                .shard_losses
                .load(std::sync::atomic::Ordering::Relaxed);
            (!every_shard_lost || losses >= 8) && node_ref.held_shards().len() == 8
        },
    )
    .await;
    let before = started_by(&all(&node).await, &schedule_id).len();
    eventually("three fires after the loss", async || {
        started_by(&all(node_ref).await, &schedule_id).len() >= before + 3
    })
    .await;
    schedule.delete().await.unwrap();
    for id in started_by(&all(&node).await, &schedule_id) {
        within(&id, client.handle::<()>(&id).unwrap().result())
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    node.shutdown().await;
}

/// Proves the six overlap policies over exactly five scheduled times (100 ms apart, bounded by
/// the schedule's start and end) of jobs that run until released: `Skip` starts one,
/// `BufferOne` one more after it ends, `BufferAll` each in turn, `AllowAll` all five at once,
/// `TerminateOther` all five terminating each predecessor, `CancelOther` cancels the running
/// one before starting the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_overlap_policies() {
    let node = builder()
        .workflow(held_job)
        .config(config("overlap"))
        .start(MemStore::new())
        .await
        .unwrap();
    let client = node.client();
    let now = SystemTime::now();
    let start = now + Duration::from_millis(300);
    // Interval times are multiples of 100 ms since the epoch: [start, start + 499 ms] holds
    // exactly five of them, wherever it begins.
    let end = start + Duration::from_millis(499);
    let policies = [
        ("ov-skip", OverlapPolicy::Skip),
        ("ov-buffer-one", OverlapPolicy::BufferOne),
        ("ov-buffer-all", OverlapPolicy::BufferAll),
        ("ov-allow", OverlapPolicy::AllowAll),
        ("ov-terminate", OverlapPolicy::TerminateOther),
        ("ov-cancel", OverlapPolicy::CancelOther),
    ];
    for (id, policy) in policies {
        client
            .schedule(held_job, id, ())
            .interval(Duration::from_millis(100))
            .start_at(start)
            .end_at(end)
            .overlap(policy)
            .create()
            .await
            .unwrap();
    }
    let of = async |id: &str| -> Vec<cairn::WorkflowSummary> {
        let mut runs: Vec<_> = all(&node)
            .await
            .into_iter()
            .filter(|w| w.workflow_id.starts_with(&format!("{id}-")))
            .collect();
        runs.sort_by(|a, b| a.workflow_id.cmp(&b.workflow_id));
        runs
    };
    let open = |runs: &[cairn::WorkflowSummary]| {
        runs.iter()
            .filter(|w| w.status.is_none_or(|s| s == cairn::RunStatus::Running))
            .count()
    };
    // All five times have come and gone (the schedules end after them).
    let after_end = end + Duration::from_millis(300);
    if let Ok(wait) = after_end.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    eventually("allow all started all five", async || {
        of("ov-allow").await.len() == 5
    })
    .await;
    let skip = client
        .schedule_handle("ov-skip")
        .describe()
        .await
        .unwrap()
        .record;
    assert_eq!((of("ov-skip").await.len(), skip.actions_skipped), (1, 4));
    assert_eq!(of("ov-allow").await.len(), 5);
    assert_eq!(open(&of("ov-allow").await), 5, "allow all: five at once");
    let terminate = of("ov-terminate").await;
    assert_eq!(terminate.len(), 5);
    eventually("terminate other: the four older terminated", async || {
        of("ov-terminate")
            .await
            .iter()
            .filter(|w| w.status == Some(cairn::RunStatus::Terminated))
            .count()
            == 4
    })
    .await;
    let cancel = of("ov-cancel").await;
    assert!(cancel.len() >= 2, "cancel other started {}", cancel.len());
    eventually("cancel other: all but the newest canceled", async || {
        let runs = of("ov-cancel").await;
        runs[..runs.len() - 1]
            .iter()
            .all(|w| w.status == Some(cairn::RunStatus::Canceled))
    })
    .await;
    // The buffers hold while the first runs; releasing runs lets the buffered ones start.
    assert_eq!(of("ov-buffer-one").await.len(), 1);
    assert_eq!(of("ov-buffer-all").await.len(), 1);
    let release = async |id: &str, expected_after: usize| {
        let runs = of(id).await;
        let running = runs
            .iter()
            .find(|w| w.status.is_none_or(|s| s == cairn::RunStatus::Running))
            .expect("one running")
            .workflow_id
            .clone();
        client
            .handle::<()>(&running)
            .unwrap()
            .signal(&RELEASE, ())
            .await
            .unwrap();
        eventually("the buffered start", async || {
            of(id).await.len() == expected_after
        })
        .await;
    };
    release("ov-buffer-one", 2).await;
    for n in 2..=5 {
        release("ov-buffer-all", n).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        of("ov-buffer-one").await.len(),
        2,
        "buffer one keeps one waiting, not four"
    );
    assert_eq!(of("ov-buffer-all").await.len(), 5);
    node.shutdown().await;
}

/// Proves bad schedules are refused, writing nothing: an invalid cron expression, an unknown
/// time zone, an unregistered workflow, a duplicate id, a too-short catch-up window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused() {
    let node = builder()
        .config(config("bad-schedules"))
        .start(MemStore::new())
        .await
        .unwrap();
    let client = node.client();
    let refused = |e: ClientError| e.to_string();
    let e = client
        .schedule(tick, "bad-cron", 0u64)
        .cron("61 * * * *")
        .create()
        .await
        .unwrap_err();
    assert!(refused(e).contains("61 * * * *"));
    let e = client
        .schedule(tick, "bad-zone", 0u64)
        .cron("0 9 * * *")
        .time_zone("Mars/Olympus")
        .create()
        .await
        .unwrap_err();
    assert!(refused(e).contains("Mars/Olympus"));
    let e = client
        .schedule(tick, "no-spec", 0u64)
        .create()
        .await
        .unwrap_err();
    assert!(refused(e).contains("at least one"));
    let e = client
        .schedule(tick, "short-window", 0u64)
        .interval(Duration::from_secs(1))
        .catchup_window(Duration::from_millis(5))
        .create()
        .await
        .unwrap_err();
    assert!(refused(e).contains("catch-up"));
    client
        .schedule(tick, "dup", 0u64)
        .interval(Duration::from_secs(3600))
        .create()
        .await
        .unwrap();
    let e = client
        .schedule(tick, "dup", 0u64)
        .interval(Duration::from_secs(60))
        .create()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::ScheduleExists { .. }));
    let listed = client.list_schedules().await.unwrap();
    assert_eq!(listed.len(), 1, "only the valid schedule was written");
    assert_eq!(
        listed[0].spec.intervals[0].every_ms, 3_600_000,
        "the duplicate changed nothing"
    );
    assert!(matches!(
        client.schedule_handle("nope").pause("x").await,
        Err(ClientError::ScheduleNotFound { .. })
    ));
    node.shutdown().await;
}

/// Proves every workflow a schedule starts gets run when the store answers `MaybeCommitted`
/// to a third of the commits that it applied: a fire pass retried after such an answer finds
/// the start already made and writes no mail, so the wake-up of the attempt that landed must
/// not be lost (it once was, and such a run waited for the shard's next claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_start_when_fire_commits_are_maybe_committed() {
    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            maybe_committed_applied_probability: 0.33,
            ..FaultConfig::none(0x5c4e)
        },
    );
    let node = builder()
        .config(config("maybe-fired"))
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let schedule = client
        .schedule(tick, "often", 0u64)
        .interval(Duration::from_millis(100))
        .create()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    schedule.pause("measured").await.unwrap();
    let started = started_by(&all(&node).await, "often");
    assert!(started.len() >= 10, "{} started", started.len());
    for id in &started {
        let run = client.handle::<()>(id).unwrap();
        within(&format!("scheduled run {id}"), run.result())
            .await
            .unwrap();
    }
    assert!(store.stats().faults() > 0, "no fault was injected");
    node.shutdown().await;
}

/// Proves a schedule whose record outgrows one store value (an input just under the inline
/// payload limit) is described, listed, paused, triggered and deleted like any other, and the
/// workflow it starts carries the whole input through an activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_with_a_large_input() {
    let node = builder()
        .config(config("large-schedule"))
        .start(faulty_store(0x10_06))
        .await
        .unwrap();
    let client = node.client();
    let order = "o".repeat(89_900);
    let schedule = client
        .schedule(order_child, "large", order.clone())
        .interval(Duration::from_secs(3600))
        .paused("until triggered")
        .create()
        .await
        .unwrap();
    let described = schedule.describe().await.unwrap();
    assert!(described.record.paused);
    let listed = client.list_schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], described.record, "listing reads the chunks too");
    schedule.trigger().await.unwrap();
    let node_ref = &node;
    eventually("the triggered run", async || {
        !started_by(&all(node_ref).await, "large").is_empty()
    })
    .await;
    let id = started_by(&all(&node).await, "large").remove(0);
    let run = client.handle::<String>(&id).unwrap();
    assert_eq!(
        within("large run", run.result()).await.unwrap(),
        format!("shipped {order}")
    );
    assert_eq!(schedule.describe().await.unwrap().record.actions_started, 1);
    schedule.delete().await.unwrap();
    assert!(client.list_schedules().await.unwrap().is_empty());
    assert!(matches!(
        schedule.describe().await,
        Err(ClientError::ScheduleNotFound { .. })
    ));
    node.shutdown().await;
}

/// Proves a schedule survives a node restart without double-firing and keeps its cadence:
/// every nominal time is started at most once across the crash; after downtime longer than the
/// catch-up window, the old missed times are skipped (counted) and the recent ones made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_survives_restart_without_double_fires_and_catches_up() {
    let (store, _dir) = embedded_store();
    let start = || {
        builder()
            .config(config("sched-restart"))
            .start(store.clone())
    };
    let node = start().await.unwrap();
    let schedule_id = "restart-100ms";
    node.client()
        .schedule(tick, schedule_id, 0u64)
        .interval(Duration::from_millis(100))
        .catchup_window(Duration::from_millis(1_000))
        .create()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(650)).await;
    node.crash();
    // Down for 2.5 s: more than the 1 s catch-up window.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let node = start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    node.client()
        .schedule_handle(schedule_id)
        .pause("stop")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let described = node
        .client()
        .schedule_handle(schedule_id)
        .describe()
        .await
        .unwrap();
    let ids = started_by(&all(&node).await, schedule_id);
    let times: Vec<u64> = ids
        .iter()
        .filter_map(|id| cairn_core::visibility::parse_time(id.strip_prefix("restart-100ms-")?))
        .collect();
    assert_eq!(times.len(), ids.len());
    assert!(
        times.windows(2).all(|w| w[1] > w[0]),
        "each time started once"
    );
    assert!(times.iter().all(|t| t % 100 == 0), "on the 100 ms cadence");
    assert!(
        described.record.actions_missed >= 10,
        "missed {}",
        described.record.actions_missed
    );
    assert_eq!(described.record.actions_started as usize, ids.len());
    // The made-up times reach back about one catch-up window before the restart, not further.
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap >= 1_000, "a gap of missed times: {gap} ms");
    node.shutdown().await;
}

/// Listing reads the schedules a page per transaction (`SCHEDULES_PAGE_MAX`): past a page,
/// every schedule is listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_past_one_page_are_all_listed() {
    let node = builder()
        .config(config("many-schedules"))
        .start(MemStore::new())
        .await
        .unwrap();
    let client = node.client();
    let count = cairn_runtime::SCHEDULES_PAGE_MAX + 5;
    for i in 0..count {
        client
            .schedule(tick, &format!("hourly-{i:04}"), 0u64)
            .interval(Duration::from_secs(3600))
            .create()
            .await
            .unwrap();
    }
    let listed = client.list_schedules().await.unwrap();
    let ids: std::collections::BTreeSet<String> =
        listed.iter().map(|s| s.schedule_id.clone()).collect();
    assert_eq!(listed.len(), count);
    assert_eq!(ids.len(), count, "each schedule once");
    node.shutdown().await;
}
