//! Crash recovery: start orders, kill the node abruptly mid-flight (its actors are killed and
//! nothing more is written — what a crash leaves behind), start a new node on the same data,
//! and watch every order complete with each card charged exactly once.
//!
//! Activities are at-least-once: an attempt whose result was not yet committed when the node
//! died runs again on the new node. The charge activity passes its idempotency key
//! (`workflow_id/activity_id`, stable across retries) to the payment service, which charges once
//! per key, so customers are charged exactly once; and an activity whose completion was
//! committed before the crash is never run again.
//!
//! Run: `cargo run --example crash_recovery`

use anyhow::{Context, Result, ensure};
use cairn::{ActivityContext, Ctx, Failure, Node, NodeConfig, WorkflowError};
use cairn_examples::PaymentService;
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static PAYMENTS: LazyLock<PaymentService> = LazyLock::new(PaymentService::default);
static SHIPMENTS: AtomicU64 = AtomicU64::new(0);

async fn charge_card(ctx: ActivityContext, amount_cents: u64) -> Result<String, Failure> {
    // A slow payment provider, so the crash catches some charges in flight.
    tokio::time::sleep(Duration::from_millis(40 + (amount_cents % 10) * 25)).await;
    Ok(PAYMENTS
        .charge(&ctx.info().idempotency_key, amount_cents)
        .id)
}

async fn ship(_ctx: ActivityContext, order: String) -> Result<String, Failure> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    SHIPMENTS.fetch_add(1, Ordering::SeqCst);
    Ok(format!("parcel for {order}"))
}

async fn order(ctx: Ctx, amount_cents: u64) -> Result<String, WorkflowError> {
    let charge = ctx
        .activity(charge_card, amount_cents)
        .start_to_close(Duration::from_millis(500))
        .await?;
    ctx.sleep(Duration::from_millis(50)).await;
    let parcel = ctx
        .activity(ship, charge.clone())
        .start_to_close(Duration::from_millis(500))
        .await?;
    Ok(format!("{charge} / {parcel}"))
}

fn builder() -> cairn::NodeBuilder {
    Node::builder()
        .workflow(order)
        .activity(charge_card)
        .activity(ship)
        .config(NodeConfig {
            // The same id before and after the crash: a restart of the same node, which takes
            // its shards back at once. (A node with a new id would wait for the crashed node's
            // leases to lapse, `lease_timeout_ms`, as any other node of a cluster does.)
            node_id: "example-node".into(),
            shard_count: 8,
            ..NodeConfig::default()
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cairn-crash-{}", std::process::id()));
    let store = EmbeddedStore::open(EmbeddedConfig::new(&dir))?;
    let orders = 30u64;

    let node = builder().start(store.clone()).await?;
    let client = node.client();
    for n in 0..orders {
        client
            .start(order, &format!("order-{n}"), 1_000 + n)
            .send()
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let calls_before = PAYMENTS.calls();
    println!(
        "crashing the node: {} charge calls made, {} shipments so far",
        calls_before,
        SHIPMENTS.load(Ordering::SeqCst)
    );
    node.crash();

    let node = builder().start(store.clone()).await?;
    println!("new node started on the same data; recovering");
    let client = node.client();
    for n in 0..orders {
        let handle = client.handle::<String>(&format!("order-{n}"))?;
        let receipt = tokio::time::timeout(Duration::from_secs(30), handle.result())
            .await
            .context("order did not finish")??;
        if n < 3 {
            println!("order-{n}: {receipt}");
        }
    }
    let charges = PAYMENTS.charges();
    println!(
        "all {orders} orders completed; {} charges made for {} charge calls (re-runs deduplicated by idempotency key); {} shipments",
        charges.len(),
        PAYMENTS.calls(),
        SHIPMENTS.load(Ordering::SeqCst)
    );
    ensure!(
        charges.len() as u64 == orders,
        "each order charged exactly once"
    );
    ensure!(
        charges.keys().all(|k| k.ends_with("/1")),
        "charges keyed by the charge activity"
    );
    node.shutdown().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    println!("crash recovery example finished");
    Ok(())
}
