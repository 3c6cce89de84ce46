//! The order flow of the Temporal guide, on Cairn's durable embedded store:
//! validate → charge (retries, a non-retryable `InvalidCardError`, heartbeats) → reserve
//! inventory (refund the charge if that fails: a saga) → confirmation and fulfilment notices in
//! parallel, whose failure does not fail the order. A `status` query and a `cancel_order`
//! signal. The outside services are simulated so that every path runs:
//!
//! - order-1: everything works.
//! - order-2: the card is declined: no retry, the order fails, nothing is charged.
//! - order-3: the payment processor times out twice, the third attempt succeeds.
//! - order-4: inventory cannot be reserved: the charge is refunded, the order fails.
//! - order-5: the confirmation email keeps failing: the order still completes.
//! - order-6: the customer cancels while inventory is being reserved: refund, canceled.
//!
//! Run: `cargo run --example order_fulfillment`

use anyhow::{Context, Result, ensure};
use cairn::{
    ActivityContext, Ctx, Failure, Node, NodeConfig, Query, RetryPolicy, Saga, Signal,
    WorkflowError, WorkflowOutcomeError, fail,
};
use cairn_examples::PaymentService;
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

static PAYMENTS: LazyLock<PaymentService> = LazyLock::new(PaymentService::default);
static PAYMENT_TIMEOUTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    order_id: String,
    total_cents: u64,
    card: String,
    items: Vec<String>,
    customer_email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChargeRequest {
    order_id: String,
    amount_cents: u64,
    card: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Receipt {
    order_id: String,
    charge_id: String,
    notices_failed: usize,
}

// ----- activities (the outside world) ---------------------------------------------------------

async fn validate_order(_ctx: ActivityContext, order_id: String) -> Result<Order, Failure> {
    let n: u64 = order_id.trim_start_matches("order-").parse().map_err(|_| {
        Failure::new("ValueError", format!("order {order_id} not found")).non_retryable()
    })?;
    Ok(Order {
        order_id: order_id.clone(),
        total_cents: 1_000 * n + 99,
        card: if n == 2 {
            "4000-0000-0000-0002".into()
        } else {
            "4242-4242-4242-4242".into()
        },
        items: vec![format!("lamp-{n}"), "bulb".into()],
        customer_email: format!("customer{n}@example.com"),
    })
}

async fn charge_card(ctx: ActivityContext, request: ChargeRequest) -> Result<String, Failure> {
    ctx.heartbeat(cairn::Payload::encode("starting charge").expect("encodes"));
    if request.card.ends_with("0002") {
        return Err(Failure::new(
            "InvalidCardError",
            "card declined: insufficient funds",
        ));
    }
    if request.order_id == "order-3" {
        let mut timeouts = PAYMENT_TIMEOUTS.lock().unwrap();
        let seen = timeouts
            .get_or_insert_with(HashMap::new)
            .entry(request.order_id.clone())
            .or_insert(0);
        if *seen < 2 {
            *seen += 1;
            return Err(Failure::new(
                "PaymentTimeoutError",
                "payment processor timed out",
            ));
        }
    }
    // The workflow's idempotency key makes retries and re-runs charge once.
    let charge = PAYMENTS.charge(&ctx.info().idempotency_key, request.amount_cents);
    ctx.heartbeat(cairn::Payload::encode("charge completed").expect("encodes"));
    Ok(charge.id)
}

async fn reserve_inventory(_ctx: ActivityContext, order: Order) -> Result<(), Failure> {
    if order.order_id == "order-6" {
        // A slow warehouse: long enough for the customer to change their mind.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    if order.order_id == "order-4" {
        return Err(Failure::new(
            "OutOfStock",
            format!("{} is out of stock", order.items[0]),
        ));
    }
    Ok(())
}

async fn rollback_charge(_ctx: ActivityContext, charge_key: String) -> Result<bool, Failure> {
    Ok(PAYMENTS.refund(&charge_key))
}

async fn send_confirmation(_ctx: ActivityContext, email: String) -> Result<(), Failure> {
    if email.starts_with("customer5") {
        return Err(Failure::new("SmtpError", "mailbox unavailable"));
    }
    Ok(())
}

async fn notify_fulfillment(_ctx: ActivityContext, _order_id: String) -> Result<(), Failure> {
    Ok(())
}

// ----- the workflow ----------------------------------------------------------------------------

const STATUS: Query<(), String> = Query::new("status");
const CANCEL_ORDER: Signal<String> = Signal::new("cancel_order");

async fn order_fulfillment(ctx: Ctx, order_id: String) -> Result<Receipt, WorkflowError> {
    let status = Rc::new(RefCell::new("validating".to_string()));
    let cancel = Rc::new(RefCell::new(None::<String>));
    let s = status.clone();
    ctx.on_query(&STATUS, move |()| s.borrow().clone());
    let c = cancel.clone();
    ctx.on_signal(&CANCEL_ORDER, move |reason| *c.borrow_mut() = Some(reason));
    let set = |text: &str| *status.borrow_mut() = text.to_string();

    let order = ctx
        .activity(validate_order, order_id.clone())
        .start_to_close(Duration::from_secs(30))
        .retry(
            RetryPolicy::builder()
                .maximum_attempts(3)
                .build()
                .expect("valid"),
        )
        .await?;

    set("charging");
    let charge = ctx
        .activity(
            charge_card,
            ChargeRequest {
                order_id: order_id.clone(),
                amount_cents: order.total_cents,
                card: order.card.clone(),
            },
        )
        .start_to_close(Duration::from_secs(60))
        .heartbeat_timeout(Duration::from_secs(10))
        .retry(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(50))
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(5)
                .non_retryable_error_type("InvalidCardError")
                .build()
                .expect("valid"),
        )
        .await;
    let charge_id = match charge {
        Ok(id) => id,
        Err(e) => {
            set("failed");
            return Err(e.into());
        }
    };
    // The key the charge was made under (workflow id / activity id of charge_card). Should a
    // later step fail, the saga refunds it.
    let charge_key = format!("{order_id}/2");
    let mut saga = Saga::new();
    saga.add(
        ctx.activity(rollback_charge, charge_key)
            .start_to_close(Duration::from_secs(30)),
    );

    set("reserving_inventory");
    let reserved = ctx
        .activity(reserve_inventory, order.clone())
        .start_to_close(Duration::from_secs(300))
        .retry(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(20))
                .maximum_attempts(3)
                .build()
                .expect("valid"),
        )
        .await;
    let cancel_reason = cancel.borrow().clone();
    if reserved.is_err() || cancel_reason.is_some() {
        let failures = saga.compensate().await;
        if let Some(failure) = failures.into_iter().next() {
            set("compensation_failed");
            return Err(WorkflowError::Failed(failure));
        }
        if let Some(reason) = cancel_reason {
            set("canceled");
            return Err(fail(
                "OrderCanceled",
                format!("canceled by customer: {reason}"),
            ));
        }
        set("failed");
        return Err(reserved.expect_err("reservation failed").into());
    }

    set("completing");
    let (confirmation, fulfillment) = futures::join!(
        ctx.activity(send_confirmation, order.customer_email.clone())
            .start_to_close(Duration::from_secs(60))
            .retry(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_millis(10))
                    .maximum_attempts(3)
                    .build()
                    .expect("valid")
            ),
        ctx.activity(notify_fulfillment, order_id.clone())
            .start_to_close(Duration::from_secs(60)),
    );
    let notices_failed = usize::from(confirmation.is_err()) + usize::from(fulfillment.is_err());
    set("completed");
    Ok(Receipt {
        order_id,
        charge_id,
        notices_failed,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cairn-orders-{}", std::process::id()));
    let store = EmbeddedStore::open(EmbeddedConfig::new(&dir))?;
    let node = Node::builder()
        .workflow(order_fulfillment)
        .activity(validate_order)
        .activity(charge_card)
        .activity(reserve_inventory)
        .activity(rollback_charge)
        .activity(send_confirmation)
        .activity(notify_fulfillment)
        .config(NodeConfig {
            shard_count: 8,
            ..NodeConfig::default()
        })
        .start(store)
        .await?;
    let client = node.client();
    let mut handles = Vec::new();
    for n in 1..=6 {
        let id = format!("order-{n}");
        let handle = client
            .start(order_fulfillment, &id, id.clone())
            .execution_timeout(Duration::from_secs(60))
            .send()
            .await?;
        handles.push((id, handle));
    }
    // Order 6: the customer cancels while the warehouse is slow.
    let (_, sixth) = &handles[5];
    for _ in 0..200 {
        if sixth.query(&STATUS, ()).await? == "reserving_inventory" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "order-6 status before cancel: {}",
        sixth.query(&STATUS, ()).await?
    );
    sixth
        .signal(&CANCEL_ORDER, "changed my mind".into())
        .await?;

    let mut outcomes = HashMap::new();
    for (id, handle) in &handles {
        let result = tokio::time::timeout(Duration::from_secs(30), handle.result())
            .await
            .context("order timed out")?;
        let status = handle.query(&STATUS, ()).await?;
        let line = match &result {
            Ok(receipt) => format!(
                "completed, charge {}, {} notice(s) failed",
                receipt.charge_id, receipt.notices_failed
            ),
            Err(WorkflowOutcomeError::Failed(f)) => format!("failed: {f}"),
            Err(other) => format!("{other}"),
        };
        println!("{id}: {line} (status query: {status})");
        outcomes.insert(id.clone(), (result, status));
    }
    let charges = PAYMENTS.charges();
    let mut sorted: Vec<_> = charges.iter().collect();
    sorted.sort_by_key(|(key, _)| key.as_str());
    for (key, charge) in sorted {
        println!(
            "charge {} for {key}: {} cents{}",
            charge.id,
            charge.amount_cents,
            if charge.refunded { ", refunded" } else { "" }
        );
    }

    // The error that started each failure: an activity's failure is the cause of the
    // `ActivityError` its workflow failed with.
    let failed_with = |id: &str| match &outcomes[id].0 {
        Err(WorkflowOutcomeError::Failed(f)) => f.root_cause().error_type.clone(),
        other => format!("{other:?}"),
    };
    ensure!(outcomes["order-1"].0.is_ok(), "order-1 should complete");
    ensure!(
        failed_with("order-2") == "InvalidCardError",
        "order-2 should fail on the declined card"
    );
    ensure!(
        !charges.contains_key("order-2/2"),
        "a declined card is never charged"
    );
    ensure!(
        outcomes["order-3"].0.is_ok(),
        "order-3 should complete after payment retries"
    );
    ensure!(
        failed_with("order-4") == "OutOfStock",
        "order-4 should fail on inventory"
    );
    ensure!(
        charges["order-4/2"].refunded,
        "order-4's charge is refunded"
    );
    ensure!(
        matches!(&outcomes["order-5"].0, Ok(r) if r.notices_failed == 1),
        "order-5 completes despite the failed email"
    );
    ensure!(
        failed_with("order-6") == "OrderCanceled",
        "order-6 is canceled"
    );
    ensure!(
        charges["order-6/2"].refunded,
        "order-6's charge is refunded"
    );
    ensure!(
        charges.len() == 5,
        "one charge per order that reached payment"
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("order fulfillment example finished: every path behaved as expected");
    Ok(())
}
