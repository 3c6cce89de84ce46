//! The workload the engine's FoundationDB tests run (`engine.rs`, `buggify.rs`): a workflow of
//! three activities in sequence, each counting its executions in this process.

use cairn::{ActivityContext, Ctx, Failure, WorkflowError};
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
