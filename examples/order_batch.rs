//! The order batch of the Temporal guide, on Cairn's durable embedded store: a batch workflow
//! fulfils each order as a child workflow (`order-{id}-fulfillment`), at most 10 at a time
//! behind a workflow-safe semaphore, and collects the failures instead of failing itself.
//!
//! 25 orders; three of them (every eighth) have a card that is declined (their children fail, the batch goes
//! on). The shipping service counts how many shipments run at once, to show the bound holds.
//!
//! Run: `cargo run --example order_batch`

use anyhow::{Result, ensure};
use cairn::{
    ActivityContext, ChildError, Ctx, Failure, Node, NodeConfig, RetryPolicy, Semaphore,
    WorkflowError,
};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static SHIPPING_NOW: AtomicUsize = AtomicUsize::new(0);
static SHIPPING_PEAK: AtomicUsize = AtomicUsize::new(0);

// ----- activities (the outside world) ---------------------------------------------------------

async fn charge_card(ctx: ActivityContext, order_id: String) -> Result<String, Failure> {
    if order_id.parse::<u32>().is_ok_and(|n| n % 8 == 0) {
        return Err(
            Failure::new("InvalidCardError", format!("card for {order_id} declined"))
                .non_retryable(),
        );
    }
    Ok(format!("ch_{order_id}_{}", ctx.info().attempt))
}

async fn ship(_ctx: ActivityContext, order_id: String) -> Result<String, Failure> {
    let now = SHIPPING_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    SHIPPING_PEAK.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    SHIPPING_NOW.fetch_sub(1, Ordering::SeqCst);
    Ok(format!("tracking-{order_id}"))
}

// ----- workflows ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Fulfilled {
    order_id: String,
    charge_id: String,
    tracking: String,
}

/// One order: charge, then ship.
async fn order_fulfillment(ctx: Ctx, order_id: String) -> Result<Fulfilled, WorkflowError> {
    let charge_id = ctx
        .activity(charge_card, order_id.clone())
        .start_to_close(Duration::from_secs(30))
        .retry(
            RetryPolicy::builder()
                .maximum_attempts(3)
                .build()
                .expect("valid"),
        )
        .await?;
    let tracking = ctx
        .activity(ship, order_id.clone())
        .start_to_close(Duration::from_secs(30))
        .await?;
    Ok(Fulfilled {
        order_id,
        charge_id,
        tracking,
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct BatchReport {
    fulfilled: Vec<Fulfilled>,
    failed: Vec<String>,
}

/// The batch: every order as a child workflow, at most 10 at a time; failures collected.
async fn order_batch(ctx: Ctx, order_ids: Vec<String>) -> Result<BatchReport, WorkflowError> {
    let semaphore = Semaphore::new(&ctx, 10);
    let runs = order_ids.into_iter().map(|order_id| {
        let (ctx, semaphore) = (ctx.clone(), semaphore.clone());
        async move {
            let _permit = semaphore.acquire().await;
            let result: Result<Fulfilled, ChildError> = ctx
                .child_workflow(order_fulfillment, order_id.clone())
                .id(format!("order-{order_id}-fulfillment"))
                .await;
            result.map_err(|e| format!("{order_id}: {e}"))
        }
    });
    let (fulfilled, failed): (Vec<_>, Vec<_>) = cairn::futures::future::join_all(runs)
        .await
        .into_iter()
        .partition(Result::is_ok);
    Ok(BatchReport {
        fulfilled: fulfilled.into_iter().filter_map(Result::ok).collect(),
        failed: failed.into_iter().filter_map(Result::err).collect(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cairn-order-batch-{}", std::process::id()));
    let store = EmbeddedStore::open(EmbeddedConfig::new(&dir))?;
    let node = Node::builder()
        .workflow(order_batch)
        .workflow(order_fulfillment)
        .activity(charge_card)
        .activity(ship)
        .config(NodeConfig {
            node_id: "order-batch-example".into(),
            ..NodeConfig::default()
        })
        .start(store)
        .await?;
    let orders: Vec<String> = (1..=25).map(|n| format!("{n:04}")).collect();
    let batch = node
        .client()
        .start(order_batch, "batch-2026-11-30", orders.clone())
        .send()
        .await?;
    let report = tokio::time::timeout(Duration::from_secs(60), batch.result()).await??;
    println!(
        "batch done: {} fulfilled, {} failed; at most {} orders shipping at once",
        report.fulfilled.len(),
        report.failed.len(),
        SHIPPING_PEAK.load(Ordering::SeqCst)
    );
    for failure in &report.failed {
        println!("  failed: {failure}");
    }
    ensure!(
        report.fulfilled.len() == 22,
        "22 orders should be fulfilled"
    );
    ensure!(
        report.failed.len() == 3,
        "orders 0008, 0016, 0024 have declined cards"
    );
    ensure!(
        report.failed.iter().all(|f| f.contains("InvalidCardError")),
        "the failures are the declined cards"
    );
    ensure!(
        SHIPPING_PEAK.load(Ordering::SeqCst) <= 10,
        "the semaphore bounds the batch to 10 children at a time"
    );
    // Each order is its own workflow, a child of the batch, with a queryable record.
    let children = node
        .client()
        .list_workflows(
            "WorkflowType = 'order_fulfillment' AND ParentWorkflowId = 'batch-2026-11-30'",
            Some(100),
            None,
        )
        .await?;
    ensure!(children.workflows.len() == 25, "one child per order");
    let failed = node
        .client()
        .count_workflows("WorkflowId STARTS_WITH 'order-' AND ExecutionStatus = 'Failed'")
        .await?;
    ensure!(failed == 3, "three children failed");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("order batch example finished");
    Ok(())
}
