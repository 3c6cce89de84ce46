//! Crash recovery and code changes, through the public SDK: a node is stopped abruptly (actors
//! killed mid-work, no further writes) and another node starts on the same store; code is
//! changed between nodes, incompatibly and then behind `patched`.

mod common;

use cairn::{ActivityContext, Ctx, Failure, Node, NodeConfig, Query, Signal, WorkflowError};
use cairn_store::{FaultConfig, FaultStore, MemStore, Store};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use common::Counts;
use std::collections::HashMap;
use std::time::Duration;

static RUNS: Counts = Counts::new();

fn executions(key: &str) -> u32 {
    RUNS.get(key)
}

/// Counts its executions per idempotency key; takes a little while, so crashes land mid-run.
async fn charge(ctx: ActivityContext, amount: u64) -> Result<u64, Failure> {
    tokio::time::sleep(Duration::from_millis(5 + amount % 20)).await;
    RUNS.bump(&ctx.info().idempotency_key);
    Ok(amount)
}

async fn order(ctx: Ctx, amount: u64) -> Result<u64, WorkflowError> {
    let a = ctx
        .activity(charge, amount)
        .start_to_close(Duration::from_millis(500))
        .await?;
    ctx.sleep(Duration::from_millis(30)).await;
    let (b, c) = futures::join!(
        ctx.activity(charge, amount + 1)
            .start_to_close(Duration::from_millis(500)),
        ctx.activity(charge, amount + 2)
            .start_to_close(Duration::from_millis(500))
    );
    Ok(a + b? + c?)
}

/// Logs to the test output when `RUST_LOG` is set (for example `RUST_LOG=cairn_runtime=info`).
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The node that crashes and the node that replaces it share an id: a restart of the same
/// node, which takes its shards back at once (a new id would wait for the old leases to lapse).
fn config() -> NodeConfig {
    NodeConfig {
        node_id: "recovering-node".into(),
        shard_count: 4,
        ..NodeConfig::default()
    }
}

/// Starts 40 orders, crashes the node after `crash_after`, restarts on the same store, and
/// checks every order completes with a gap-free history in which each activity completed
/// once, and that no activity already recorded as completed at the crash ran again.
async fn crash_and_recover<S: Store>(store: S, tag: &str, crash_after: Duration) {
    init_logging();
    let node = Node::builder()
        .workflow(order)
        .activity(charge)
        .config(config())
        .start(store.clone())
        .await
        .unwrap();
    let ids = start_orders(&node, tag, 40).await;
    tokio::time::sleep(crash_after).await;
    node.crash();
    recover_and_verify(store, &ids).await;
}

async fn start_orders<S: Store>(node: &Node<S>, tag: &str, count: u64) -> Vec<String> {
    let client = node.client();
    let ids: Vec<String> = (0..count).map(|i| format!("order-{tag}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client
            .start(order, id, (i as u64) * 100)
            .send()
            .await
            .unwrap();
    }
    ids
}

/// After a crash: notes what history recorded as completed, restarts, waits for every order,
/// and checks results, histories, and that recorded activities did not run again.
async fn recover_and_verify<S: Store>(store: S, ids: &[String]) {
    let recorded_at_crash = completed_keys(&store, ids).await;
    let runs_at_crash: HashMap<String, u32> = recorded_at_crash
        .iter()
        .map(|k| (k.clone(), executions(k)))
        .collect();
    let node = Node::builder()
        .workflow(order)
        .activity(charge)
        .config(config())
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    for (i, id) in ids.iter().enumerate() {
        let handle = client.handle::<u64>(id).unwrap();
        let result = match tokio::time::timeout(Duration::from_secs(30), handle.result()).await {
            Ok(r) => r.unwrap(),
            Err(_) => {
                // Say where it stopped, which is most of the diagnosis.
                let d = handle.describe().await.unwrap();
                let h = handle.history().await.unwrap();
                panic!("{id} did not complete in 30 s: {d:#?}\nhistory: {h:#?}");
            }
        };
        let base = (i as u64) * 100;
        assert_eq!(result, 3 * base + 3, "{id}");
        let history = handle.history().await.unwrap();
        for (position, event) in history.iter().enumerate() {
            assert_eq!(
                event.event_id,
                position as u64 + 1,
                "{id}: history has a gap or duplicate"
            );
        }
        let completions = history
            .iter()
            .filter(|e| e.kind.name() == "ActivityTaskCompleted")
            .count();
        assert_eq!(completions, 3, "{id}: each activity completed once");
    }
    for (key, runs) in runs_at_crash {
        assert_eq!(
            executions(&key),
            runs,
            "{key} completed before the crash but ran again"
        );
    }
    node.shutdown().await;
}

/// Proves recovery from a crash at each chosen point — before a commit, after a commit but
/// before its side effects, and inside an activity after it finished but before its result
/// was handed over — on the durable embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_chosen_points() {
    init_logging();
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    for (round, point) in [
        cairn::CrashPoint::BeforeCommit,
        cairn::CrashPoint::AfterCommitBeforeEffects,
        cairn::CrashPoint::DuringActivity,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let fired = Arc::new(AtomicBool::new(false));
        let armed = Arc::new(AtomicBool::new(false));
        let (h, f, a) = (hits.clone(), fired.clone(), armed.clone());
        // Crash at the 5th time the point is reached once all 10 orders are started, so the
        // crash catches them mid-way and never a start itself.
        let hook = cairn::CrashHook(Arc::new(move |p| {
            p == point
                && a.load(Ordering::SeqCst)
                && h.fetch_add(1, Ordering::SeqCst) + 1 == 5
                && !f.swap(true, Ordering::SeqCst)
        }));
        let node = Node::builder()
            .workflow(order)
            .activity(charge)
            .config(NodeConfig {
                crash_hook: Some(hook),
                ..config()
            })
            .start(store.clone())
            .await
            .unwrap();
        let ids = start_orders(&node, &format!("p{round}"), 10).await;
        armed.store(true, Ordering::SeqCst);
        for _ in 0..500 {
            if fired.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(fired.load(Ordering::SeqCst), "{point:?} was never reached");
        drop(node);
        recover_and_verify(store, &ids).await;
    }
}

/// Keys (`workflow_id/seq`) of activities whose completion is in history.
async fn completed_keys<S: Store>(store: &S, ids: &[String]) -> Vec<String> {
    // Read history through a throwaway node under its own id: the crashed node's leases are
    // still alive in its eyes, so it takes no shard and runs nothing; it leaves cleanly, so it
    // does not linger in placement either.
    let node = Node::builder()
        .config(NodeConfig {
            node_id: "history-reader".into(),
            ..config()
        })
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    let mut keys = Vec::new();
    for id in ids {
        let handle = client.handle::<u64>(id).unwrap();
        let Ok(history) = handle.history().await else {
            continue;
        };
        for event in history {
            if let cairn_types::EventKind::ActivityTaskCompleted { seq, .. } = event.kind {
                keys.push(format!("{id}/{seq}"));
            }
        }
    }
    node.shutdown().await;
    keys
}

/// Proves recovery after crashes at several moments, on the durable embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_embedded() {
    for (round, millis) in [10u64, 40, 90].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        crash_and_recover(store, &format!("e{round}"), Duration::from_millis(millis)).await;
    }
}

/// Proves recovery after crashes with store faults (conflicts, MaybeCommitted) injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_with_store_faults() {
    for (round, millis) in [15u64, 60].into_iter().enumerate() {
        let store = FaultStore::new(
            MemStore::new(),
            FaultConfig {
                conflict_probability: 0.05,
                maybe_committed_applied_probability: 0.05,
                maybe_committed_lost_probability: 0.05,
                ..FaultConfig::none(round as u64 + 11)
            },
        );
        crash_and_recover(store, &format!("f{round}"), Duration::from_millis(millis)).await;
    }
}

static FIRST_ATTEMPT_RUNNING: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The first attempt never ends (it is running when the node dies); a retry answers with
/// its attempt number.
async fn hangs_first(ctx: ActivityContext, _input: ()) -> Result<u32, Failure> {
    if ctx.info().attempt == 1 {
        FIRST_ATTEMPT_RUNNING.notify_one();
        std::future::pending::<()>().await;
    }
    Ok(ctx.info().attempt)
}

async fn long_step(ctx: Ctx, _input: ()) -> Result<u32, WorkflowError> {
    Ok(ctx
        .activity(hangs_first, ())
        .start_to_close(Duration::from_secs(600))
        .await?)
}

/// An attempt running when its node dies is retried as soon as the shard's next holder (here
/// the node, restarted) rehydrates it, not after its 10-minute start-to-close timeout: its
/// result could never land, so the holder fails it as lost, and the retry policy retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_running_at_a_crash_is_retried_at_once_not_after_its_timeout() {
    init_logging();
    let store = MemStore::new();
    let start = || {
        Node::builder()
            .workflow(long_step)
            .activity(hangs_first)
            .config(config())
            .start(store.clone())
    };
    let node = start().await.unwrap();
    let running = FIRST_ATTEMPT_RUNNING.notified();
    node.client()
        .start(long_step, "lost-attempt", ())
        .send()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the first attempt starts");
    node.crash();
    let node = start().await.unwrap();
    let handle = node.client().handle::<u32>("lost-attempt").unwrap();
    let attempt = tokio::time::timeout(Duration::from_secs(30), handle.result())
        .await
        .expect("retried well before the 600 s start-to-close timeout")
        .unwrap();
    assert_eq!(attempt, 2, "the lost attempt counted as one");
    let lost = node
        .metrics()
        .activity_attempts_lost
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        lost, 1,
        "the new holder failed exactly the one running attempt as lost"
    );
    node.shutdown().await;
}

const FINISH: Signal<()> = Signal::new("finish");

async fn add_one(_ctx: ActivityContext, n: u64) -> Result<u64, Failure> {
    Ok(n + 1)
}

/// 150 activities one after another (a history longer than one page of reads), then waits.
async fn long_history(ctx: Ctx, _input: ()) -> Result<u64, WorkflowError> {
    let mut n = 0;
    for _ in 0..150 {
        n = ctx.activity(add_one, n).await?;
    }
    ctx.signal_receiver(&FINISH).recv().await;
    Ok(n)
}

/// A history read a page per transaction (`HISTORY_PAGE_EVENTS`) is whole and in order: the
/// restarted node replays a run of several pages, and the client reads all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_several_pages_replays_and_reads_whole() {
    init_logging();
    let store = MemStore::new();
    let start = || {
        Node::builder()
            .workflow(long_history)
            .activity(add_one)
            .config(config())
            .start(store.clone())
    };
    let node = start().await.unwrap();
    node.client()
        .start(long_history, "paged", ())
        .send()
        .await
        .unwrap();
    let handle = node.client().handle::<u64>("paged").unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let done = handle
                .history()
                .await
                .unwrap()
                .iter()
                .filter(|e| e.kind.name() == "ActivityTaskCompleted")
                .count();
            if done == 150 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("150 activities complete");
    node.crash();
    let node = start().await.unwrap();
    let handle = node.client().handle::<u64>("paged").unwrap();
    handle.signal(&FINISH, ()).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), handle.result())
        .await
        .expect("the replayed run finishes")
        .unwrap();
    assert_eq!(result, 150);
    let history = handle.history().await.unwrap();
    assert!(
        history.len() > cairn_runtime::HISTORY_PAGE_EVENTS,
        "{} events: more than one page",
        history.len()
    );
    for (position, event) in history.iter().enumerate() {
        assert_eq!(event.event_id, position as u64 + 1, "gap-free, in order");
    }
    node.shutdown().await;
}

async fn shout(_ctx: ActivityContext, text: String) -> Result<String, Failure> {
    Ok(text.to_uppercase())
}

async fn echo(_ctx: ActivityContext, text: String) -> Result<String, Failure> {
    Ok(text)
}

const GO: Signal<()> = Signal::new("go");
const STEP: Query<(), String> = Query::new("step");

mod v1 {
    use super::*;
    pub async fn versioned(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
        ctx.on_query(&STEP, |()| "v1".to_string());
        let a = ctx.activity(echo, "a".to_string()).await?;
        ctx.signal_receiver(&GO).recv().await;
        Ok(format!("{a} then old path"))
    }
}

mod v2 {
    use super::*;
    /// An incompatible change: the first activity is now another one.
    pub async fn versioned(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
        ctx.on_query(&STEP, |()| "v2".to_string());
        let a = ctx.activity(shout, "a".to_string()).await?;
        ctx.signal_receiver(&GO).recv().await;
        Ok(a)
    }
}

mod v3 {
    use super::*;
    /// The same change done safely.
    pub async fn versioned(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
        ctx.on_query(&STEP, |()| "v3".to_string());
        let a = ctx.activity(echo, "a".to_string()).await?;
        if ctx.patched("shout-after-echo") {
            let b = ctx.activity(shout, a.clone()).await?;
            ctx.signal_receiver(&GO).recv().await;
            return Ok(format!("{a} then {b}"));
        }
        ctx.signal_receiver(&GO).recv().await;
        Ok(format!("{a} then old path"))
    }
}

/// Proves an incompatible code change is detected on replay — the run is held, its history
/// untouched, and a signal sent meanwhile is kept — and that the same change behind
/// `patched` replays the old run on the old path while new runs take the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nondeterminism_is_held_and_patched_code_replays() {
    let dir = tempfile::tempdir().unwrap();
    // One store handle for the three nodes: a node that stopped may still hold its handle
    // briefly, and the data directory admits one opener per process.
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    code_change_scenario(store).await;
}

/// The same, on `MemStore` with conflicts and `MaybeCommitted` injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nondeterminism_and_patching_under_store_faults() {
    let store = FaultStore::new(
        MemStore::new(),
        FaultConfig {
            conflict_probability: 0.1,
            maybe_committed_applied_probability: 0.1,
            maybe_committed_lost_probability: 0.1,
            ..FaultConfig::none(77)
        },
    );
    code_change_scenario(store).await;
}

async fn code_change_scenario<S: Store>(store: S) {
    let open = || store.clone();
    let wait = |n| tokio::time::sleep(Duration::from_millis(n));

    let node = Node::builder()
        .workflow(v1::versioned)
        .activity(echo)
        .activity(shout)
        .config(config())
        .start(open())
        .await
        .unwrap();
    let handle = node
        .client()
        .start(v1::versioned, "versioned-1", ())
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        if handle
            .history()
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind.name() == "ActivityTaskCompleted")
        {
            break;
        }
        wait(20).await;
    }
    assert_eq!(handle.query(&STEP, ()).await.unwrap(), "v1");
    let before = handle.history().await.unwrap();
    node.shutdown().await;
    wait(100).await;

    let node = Node::builder()
        .workflow(v2::versioned)
        .activity(echo)
        .activity(shout)
        .config(config())
        .start(open())
        .await
        .unwrap();
    let handle = node.client().handle::<String>("versioned-1").unwrap();
    let held = handle.query(&STEP, ()).await.unwrap_err().to_string();
    assert!(held.contains("nondeterminism"), "{held}");
    assert!(
        held.contains("ActivityTaskScheduled(seq 1, \"echo\")"),
        "{held}"
    );
    assert!(
        held.contains("ScheduleActivity(seq 1, \"shout\")"),
        "{held}"
    );
    handle.signal(&GO, ()).await.unwrap();
    wait(200).await;
    assert_eq!(
        handle.history().await.unwrap(),
        before,
        "a held run's history is untouched"
    );
    node.shutdown().await;
    wait(100).await;

    let node = Node::builder()
        .workflow(v3::versioned)
        .activity(echo)
        .activity(shout)
        .config(config())
        .start(open())
        .await
        .unwrap();
    let client = node.client();
    let handle = client.handle::<String>("versioned-1").unwrap();
    let old = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        old, "a then old path",
        "the signal kept while held was delivered"
    );
    let fresh = client
        .start(v3::versioned, "versioned-2", ())
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        if fresh
            .history()
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind.name() == "ActivityTaskCompleted")
            .count()
            == 2
        {
            break;
        }
        wait(20).await;
    }
    fresh.signal(&GO, ()).await.unwrap();
    let new = tokio::time::timeout(Duration::from_secs(20), fresh.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new, "a then A");
    node.shutdown().await;
}

async fn same_number(_ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    Ok(n)
}

/// Proves a store whose workflows were written before the visibility indexes (a workflow
/// record and no type registry) is refused at start with an error that says so, and is left
/// as it was; an empty store and a store written by this version start normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_the_indexes_is_refused_untouched() {
    use cairn_store::Transaction;
    let store = cairn::MemStore::new();
    let keys = cairn_runtime::Keys::default();
    let old_key = keys.workflow("default", "from-an-old-version");
    let mut tx = store.begin().unwrap();
    tx.set(&old_key, b"an old workflow record").unwrap();
    tx.commit().await.unwrap();
    let refused = Node::builder().start(store.clone()).await;
    let error = match refused {
        Ok(_) => panic!("the old store was opened"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("before visibility indexes") && error.contains("new data directory"),
        "{error}"
    );
    let mut tx = store.begin().unwrap();
    assert_eq!(
        tx.get(&old_key).await.unwrap().as_deref(),
        Some(&b"an old workflow record"[..]),
        "the refused store was changed"
    );
    // A store this version wrote (a workflow and its index entries) starts again.
    let fresh = cairn::MemStore::new();
    let node = Node::builder()
        .workflow(same_number)
        .start(fresh.clone())
        .await
        .unwrap();
    let handle = node
        .client()
        .start(same_number, "echo-1", 7)
        .send()
        .await
        .unwrap();
    assert_eq!(handle.result().await.unwrap(), 7);
    node.shutdown().await;
    let node = Node::builder()
        .workflow(same_number)
        .start(fresh)
        .await
        .unwrap();
    let summary = node
        .client()
        .handle::<u32>("echo-1")
        .unwrap()
        .describe()
        .await;
    assert!(summary.is_ok(), "{summary:?}");
    node.shutdown().await;
}

async fn waits_for_a_signal(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    const GO: Signal<()> = Signal::new("go");
    let mut go = ctx.signal_receiver(&GO);
    go.recv().await;
    Ok(())
}

/// Proves a batch operation survives a crash in its middle: the node dies after the batch
/// stored some of its progress, the node started on the same store carries it on from the
/// stored position, and every selected workflow ends terminated, none counted twice as
/// applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_on_after_a_crash_in_its_middle() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let node = Node::builder()
        .workflow(waits_for_a_signal)
        .config(config())
        .start(store.clone())
        .await
        .unwrap();
    let count = cairn::BATCH_PAGE_WORKFLOWS * 3;
    for i in 0..count {
        node.client()
            .start(waits_for_a_signal, &format!("held-{i:04}"), ())
            .send()
            .await
            .unwrap();
    }
    let runtime = node.runtime();
    let batch = runtime
        .start_batch(
            cairn::BatchOperation::Terminate,
            "WorkflowType = 'waits_for_a_signal'",
            "crash test",
        )
        .await
        .unwrap();
    // Crash once a page is recorded and before the last.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = runtime.describe_batch(&batch.batch_id).await.unwrap();
        assert_eq!(
            seen.state,
            cairn::BatchState::Running,
            "finished before the crash"
        );
        if seen.visited > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(runtime);
    node.crash();

    let node = Node::builder()
        .workflow(waits_for_a_signal)
        .config(config())
        .start(store)
        .await
        .unwrap();
    let runtime = node.runtime();
    let finished = loop {
        let seen = runtime.describe_batch(&batch.batch_id).await.unwrap();
        if seen.state != cairn::BatchState::Running {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never finished: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished.state, cairn::BatchState::Completed);
    assert_eq!(finished.failed, 0, "{finished:?}");
    // A page the crash interrupted is visited again: what it terminated before the crash is
    // skipped the second time, so applied + skipped covers every workflow at least once.
    assert!(finished.visited >= count as u64, "{finished:?}");
    assert_eq!(
        finished.applied + finished.skipped,
        finished.visited,
        "{finished:?}"
    );
    assert!(finished.applied <= count as u64, "{finished:?}");
    // Applied means the termination is in the run's mailbox: each run then closes.
    loop {
        let terminated = node
            .client()
            .count_workflows("ExecutionStatus = 'Terminated'")
            .await
            .unwrap();
        if terminated == count as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{terminated} of {count} terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}
