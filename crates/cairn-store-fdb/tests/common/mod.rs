//! The workload the engine's FoundationDB tests run (`engine.rs`, `buggify.rs`,
//! `long_reads.rs`): a workflow of three activities in sequence, each counting its executions in
//! this process, and the check of one finished run of it.

use cairn::{ActivityContext, Ctx, Failure, Node, WorkflowError};
use cairn_store::Store;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Executions per activity (`workflow id/seq`), in this process.
static EXECUTIONS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

/// How often activity `key` (`workflow id/seq`) executed in this process.
#[allow(dead_code)] // not every test binary asks per key
pub fn executions(key: &str) -> u32 {
    EXECUTIONS.lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Every activity's execution count in this process.
#[allow(dead_code)] // not every test binary asks for all of them
pub fn all_executions() -> BTreeMap<String, u32> {
    EXECUTIONS.lock().unwrap().clone()
}

/// Takes 30–49 ms, counts its execution, returns `n + 1`.
#[allow(dead_code)] // not every test binary runs the workload
pub async fn step(ctx: ActivityContext, n: u64) -> Result<u64, Failure> {
    tokio::time::sleep(Duration::from_millis(30 + n % 20)).await;
    *EXECUTIONS
        .lock()
        .unwrap()
        .entry(ctx.info().idempotency_key.clone())
        .or_default() += 1;
    Ok(n + 1)
}

/// `step` three times in sequence: returns `n + 3`.
#[allow(dead_code)] // not every test binary runs the workload
pub async fn three_steps(ctx: Ctx, n: u64) -> Result<u64, WorkflowError> {
    let mut n = n;
    for _ in 0..3 {
        n = ctx
            .activity(step, n)
            .start_to_close(Duration::from_secs(5))
            .await?;
    }
    Ok(n)
}

/// A tag for ids of their own (microseconds since the epoch), so a test can run again on the
/// same cluster.
pub fn tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// Starts `three_steps` as `id` with `n`, asking again (up to 20 times, 50 ms apart) while the
/// store fails the start; already running is fine (an earlier start, answered "unknown",
/// landed).
#[allow(dead_code)] // not every test binary starts runs this way
pub async fn start_three_steps<S: Store>(client: &cairn::Client<S>, id: &str, n: u64) {
    let mut tries = 0;
    loop {
        match client.start(three_steps, id, n).send().await {
            Ok(_) | Err(cairn::ClientError::AlreadyRunning { .. }) => return,
            Err(e) if tries < 20 => {
                tries += 1;
                println!("start of {id} failed ({e}); again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{id} could not be started: {e}"),
        }
    }
}

/// Waits (at most 120 s) for `three_steps` run `id`, started with `n`, asking again through
/// store errors, and checks it: result `n + 3`, a gap-free history, each of its three
/// activities completed once in it.
#[allow(dead_code)] // not every test binary checks runs this way
pub async fn check_three_steps<S: Store>(node: &Node<S>, id: &str, n: u64) {
    let handle = node.client().handle::<u64>(id).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match handle.result().await {
                Ok(result) => break result,
                Err(e) => {
                    println!("result of {id}: {e}; asking again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} did not complete within 120 s"));
    assert_eq!(result, n + 3, "{id}");
    let history = loop {
        match handle.history().await {
            Ok(history) => break history,
            Err(e) => println!("history of {id}: {e}; asking again"),
        }
    };
    for (position, event) in history.iter().enumerate() {
        assert_eq!(
            event.event_id,
            position as u64 + 1,
            "{id}: gap-free history"
        );
    }
    let mut completed = BTreeMap::<u32, u32>::new();
    for event in &history {
        if let cairn_types::EventKind::ActivityTaskCompleted { seq, .. } = event.kind {
            *completed.entry(seq).or_default() += 1;
        }
    }
    assert_eq!(completed.len(), 3, "{id}: three activities completed");
    assert!(
        completed.values().all(|n| *n == 1),
        "{id}: an activity completed twice: {completed:?}"
    );
}
