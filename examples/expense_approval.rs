//! Human in the loop: an expense waits for an `approve` or `reject` signal, with a timeout
//! (seven days in the guide; two seconds here), then pays, reports the rejection, or reports
//! the timeout. Three expenses take the three paths.
//!
//! Run: `cargo run --example expense_approval`

use anyhow::{Result, ensure};
use cairn::{ActivityContext, Ctx, Failure, Node, Signal, WorkflowError};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Expense {
    id: String,
    amount_cents: u64,
    submitter: String,
}

async fn send_approval_request(_ctx: ActivityContext, expense: Expense) -> Result<(), Failure> {
    println!(
        "  -> approval requested for {} ({} cents by {})",
        expense.id, expense.amount_cents, expense.submitter
    );
    Ok(())
}

async fn process_expense_payment(_ctx: ActivityContext, expense: Expense) -> Result<(), Failure> {
    println!(
        "  -> paid {} cents to {}",
        expense.amount_cents, expense.submitter
    );
    Ok(())
}

async fn send_timeout_notification(
    _ctx: ActivityContext,
    expense_id: String,
) -> Result<(), Failure> {
    println!("  -> {expense_id}: nobody decided in time; submitter notified");
    Ok(())
}

const APPROVE: Signal<()> = Signal::new("approve");
const REJECT: Signal<()> = Signal::new("reject");

/// Stands for the guide's seven days.
const DECISION_TIMEOUT: Duration = Duration::from_secs(2);

async fn expense_approval(ctx: Ctx, expense: Expense) -> Result<String, WorkflowError> {
    let decision = Rc::new(Cell::new(None::<bool>));
    let d = decision.clone();
    ctx.on_signal(&APPROVE, move |()| d.set(Some(true)));
    let d = decision.clone();
    ctx.on_signal(&REJECT, move |()| d.set(Some(false)));
    ctx.activity(send_approval_request, expense.clone())
        .start_to_close(Duration::from_secs(30))
        .await?;
    let d = decision.clone();
    if !ctx
        .wait_condition_timeout(move || d.get().is_some(), DECISION_TIMEOUT)
        .await
    {
        ctx.activity(send_timeout_notification, expense.id.clone())
            .await?;
        return Ok("timed_out".into());
    }
    if decision.get() == Some(true) {
        ctx.activity(process_expense_payment, expense).await?;
        Ok("approved".into())
    } else {
        Ok("rejected".into())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("cairn-expenses-{}", std::process::id()));
    let node = Node::builder()
        .workflow(expense_approval)
        .activity(send_approval_request)
        .activity(process_expense_payment)
        .activity(send_timeout_notification)
        .start(EmbeddedStore::open(EmbeddedConfig::new(&dir))?)
        .await?;
    let client = node.client();
    let expense = |id: &str, cents, who: &str| Expense {
        id: id.into(),
        amount_cents: cents,
        submitter: who.into(),
    };
    let taxi = client
        .start(
            expense_approval,
            "expense-taxi",
            expense("expense-taxi", 4_250, "ada"),
        )
        .send()
        .await?;
    let yacht = client
        .start(
            expense_approval,
            "expense-yacht",
            expense("expense-yacht", 9_900_000, "bob"),
        )
        .send()
        .await?;
    let lunch = client
        .start(
            expense_approval,
            "expense-lunch",
            expense("expense-lunch", 1_890, "cy"),
        )
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("manager approves the taxi and rejects the yacht; nobody looks at the lunch");
    taxi.signal(&APPROVE, ()).await?;
    yacht.signal(&REJECT, ()).await?;
    let results = [
        taxi.result().await?,
        yacht.result().await?,
        lunch.result().await?,
    ];
    println!(
        "taxi: {}, yacht: {}, lunch: {}",
        results[0], results[1], results[2]
    );
    ensure!(
        results == ["approved", "rejected", "timed_out"],
        "unexpected outcomes {results:?}"
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("expense approval example finished");
    Ok(())
}
