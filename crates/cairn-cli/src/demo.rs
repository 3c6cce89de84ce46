//! Workflows the dev server registers, so there is something to run from a fresh clone.

use cairn::{ActivityContext, Ctx, Failure, Query, Signal, Update, WorkflowError};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

async fn greet(_ctx: ActivityContext, name: String) -> Result<String, Failure> {
    Ok(format!("hello {name}"))
}

/// Greets `name` through an activity, after a one-second durable timer.
pub async fn hello(ctx: Ctx, name: String) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(ctx.activity(greet, name).await?)
}

const REMAINING: Query<(), u64> = Query::new("remaining");

/// Counts down `seconds` one durable timer at a time; query `remaining` while it runs.
pub async fn countdown(ctx: Ctx, seconds: u64) -> Result<String, WorkflowError> {
    let remaining = Rc::new(Cell::new(seconds));
    let r = remaining.clone();
    ctx.on_query(&REMAINING, move |()| r.get());
    while remaining.get() > 0 {
        ctx.sleep(Duration::from_secs(1)).await;
        remaining.set(remaining.get() - 1);
    }
    Ok("liftoff".to_string())
}

const DECIDE: Signal<bool> = Signal::new("decide");
const AMEND: Update<u64, String> = Update::new("amend");

/// Waits up to an hour for a `decide` signal (true approves), then reports. Update `amend`
/// changes the amount while undecided (a zero amount, or one after the decision, is
/// rejected by its validator).
pub async fn approval(ctx: Ctx, amount_cents: u64) -> Result<String, WorkflowError> {
    let decision = Rc::new(Cell::new(None::<bool>));
    let amount = Rc::new(Cell::new(amount_cents));
    let d = decision.clone();
    ctx.on_signal(&DECIDE, move |approved| d.set(Some(approved)));
    let (d, a) = (decision.clone(), amount.clone());
    ctx.on_update_validated(
        &AMEND,
        move |cents: &u64| match (*cents, d.get()) {
            (0, _) => Err(Failure::new("InvalidAmount", "the amount must be positive")),
            (_, Some(_)) => Err(Failure::new("AlreadyDecided", "the request is decided")),
            _ => Ok(()),
        },
        move |cents: u64| {
            let a = a.clone();
            async move {
                a.set(cents);
                Ok(format!("amount is now {cents} cents"))
            }
        },
    );
    let d = decision.clone();
    let decided = ctx
        .wait_condition_timeout(move || d.get().is_some(), Duration::from_secs(3600))
        .await;
    Ok(match (decided, decision.get()) {
        (true, Some(true)) => format!("approved {} cents", amount.get()),
        (true, _) => "rejected".to_string(),
        (false, _) => "timed out".to_string(),
    })
}

/// Asks a worker of task queue `greetings` (any language: a Temporal SDK worker polling this
/// node) to compose a greeting with activity `compose_greeting`, retried if the worker dies.
pub async fn remote_hello(ctx: Ctx, name: String) -> Result<String, WorkflowError> {
    Ok(ctx
        .activity_named::<_, String>("compose_greeting", name)
        .task_queue("greetings")
        .start_to_close(Duration::from_secs(60))
        .heartbeat_timeout(Duration::from_secs(2))
        .await?)
}

/// Returns at once (benchmark W1 through Temporal's clients).
pub async fn noop(_ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    Ok(())
}

/// Three sequential no-op activities `step` on task queue `steps`, run by remote workers
/// (benchmark W2 through Temporal's clients and workers).
pub async fn three_step(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    for i in 0..3u32 {
        ctx.activity_named::<_, serde_json::Value>("step", i)
            .task_queue("steps")
            .start_to_close(Duration::from_secs(30))
            .await?;
    }
    Ok(())
}

/// Registers the demo workflows and activities.
pub fn register(builder: cairn::NodeBuilder) -> cairn::NodeBuilder {
    // The custom search attributes Temporal's dev server predefines, so the same programs
    // (Temporal SDK workflows upserting them, clients listing by them) run here.
    const KEYWORD: cairn::SearchAttribute<String> =
        cairn::SearchAttribute::new("CustomKeywordField");
    const STRING: cairn::SearchAttribute<cairn::Text> =
        cairn::SearchAttribute::new("CustomStringField");
    const TEXT: cairn::SearchAttribute<cairn::Text> =
        cairn::SearchAttribute::new("CustomTextField");
    const INT: cairn::SearchAttribute<i64> = cairn::SearchAttribute::new("CustomIntField");
    const DOUBLE: cairn::SearchAttribute<f64> = cairn::SearchAttribute::new("CustomDoubleField");
    const BOOL: cairn::SearchAttribute<bool> = cairn::SearchAttribute::new("CustomBoolField");
    const DATETIME: cairn::SearchAttribute<cairn::UnixMillis> =
        cairn::SearchAttribute::new("CustomDatetimeField");
    builder
        .search_attribute(&KEYWORD)
        .search_attribute(&STRING)
        .search_attribute(&TEXT)
        .search_attribute(&INT)
        .search_attribute(&DOUBLE)
        .search_attribute(&BOOL)
        .search_attribute(&DATETIME)
        .workflow(hello)
        .workflow(countdown)
        .workflow(approval)
        .workflow(remote_hello)
        .workflow(noop)
        .workflow(three_step)
        .activity(greet)
}
