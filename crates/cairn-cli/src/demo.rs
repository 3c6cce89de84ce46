//! Workflows the dev server registers, so there is something to run from a fresh clone.

use cairn::{ActivityContext, Ctx, Failure, Payload, Query, Signal, Update, WorkflowError};
use std::cell::Cell;
use std::future::IntoFuture;
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

/// Fails its first two attempts (a declined card), then succeeds: the retries, each with its
/// last failure, show on the run while it backs off.
async fn demo_card_charge(ctx: ActivityContext, cents: u64) -> Result<String, Failure> {
    if ctx.info().attempt < 3 {
        return Err(Failure::new(
            "CardDeclined",
            format!("attempt {}: the bank declined the card", ctx.info().attempt),
        ));
    }
    Ok(format!(
        "charged {cents} cents on attempt {}",
        ctx.info().attempt
    ))
}

/// Charges `cents` through an activity that fails twice before it succeeds (retried every 5 s).
pub async fn flaky_payment(ctx: Ctx, cents: u64) -> Result<String, WorkflowError> {
    let retry = cairn::RetryPolicy::builder()
        .initial_interval(Duration::from_secs(5))
        .backoff_coefficient(1.0)
        .maximum_attempts(5)
        .build()
        .map_err(|e| WorkflowError::Failed(Failure::new("BadPolicy", e.to_string())))?;
    Ok(ctx
        .activity(demo_card_charge, cents)
        .start_to_close(Duration::from_secs(10))
        .retry(retry)
        .await?)
}

/// Exports `rows` rows, 100 every 200 ms, heartbeating how far it got (a retry resumes there).
async fn demo_export_rows(ctx: ActivityContext, rows: u64) -> Result<u64, Failure> {
    let mut done: u64 = ctx
        .heartbeat_details()
        .and_then(|p| p.decode().ok())
        .unwrap_or(0);
    while done < rows {
        tokio::time::sleep(Duration::from_millis(200)).await;
        done = (done + 100).min(rows);
        ctx.heartbeat(Payload::encode(&done).map_err(|e| Failure::new("Encode", e.to_string()))?);
    }
    Ok(done)
}

/// Runs a long export activity that heartbeats its progress (heartbeat timeout 5 s).
pub async fn export(ctx: Ctx, rows: u64) -> Result<u64, WorkflowError> {
    Ok(ctx
        .activity(demo_export_rows, rows)
        .start_to_close(Duration::from_secs(600))
        .heartbeat_timeout(Duration::from_secs(5))
        .await?)
}

/// Greets each name in a child workflow `hello` of its own, all at once.
pub async fn fan_out(ctx: Ctx, names: Vec<String>) -> Result<Vec<String>, WorkflowError> {
    let children: Vec<_> = names
        .into_iter()
        .map(|name| ctx.child_workflow(hello, name).into_future())
        .collect();
    let mut greetings = Vec::new();
    for result in cairn::futures::future::join_all(children).await {
        greetings.push(result?);
    }
    Ok(greetings)
}

/// Counts `(done, rounds)` up one round per run, a second apart, continuing as new each round:
/// a chain of `rounds` runs.
pub async fn rounds(ctx: Ctx, (done, rounds): (u32, u32)) -> Result<u32, WorkflowError> {
    ctx.sleep(Duration::from_secs(1)).await;
    if done + 1 < rounds {
        return Err(ctx.continue_as_new(&(done + 1, rounds)));
    }
    Ok(rounds)
}

/// Most steps `relay` takes: about 16,000 events, well under one run's bound (51,200).
pub const RELAY_STEPS_MAX: u32 = 5_000;

/// Runs `steps` activities one after another, with a 10 ms timer after every tenth: a long
/// history with a lane per step, for the timeline. More than [`RELAY_STEPS_MAX`] fails at once.
pub async fn relay(ctx: Ctx, steps: u32) -> Result<u32, WorkflowError> {
    if steps > RELAY_STEPS_MAX {
        return Err(Failure::new(
            "TooManySteps",
            format!("a relay takes at most {RELAY_STEPS_MAX} steps, not {steps}"),
        )
        .non_retryable()
        .into());
    }
    for step in 1..=steps {
        ctx.activity(greet, format!("step {step}")).await?;
        if step % 10 == 0 {
            ctx.sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(steps)
}

async fn demo_order_check(_ctx: ActivityContext, order: String) -> Result<(), Failure> {
    Err(Failure::new("InvalidOrder", format!("order {order:?} has no items")).non_retryable())
}

/// Fails: its validation activity fails with a non-retryable error.
pub async fn doomed(ctx: Ctx, order: String) -> Result<(), WorkflowError> {
    ctx.activity(demo_order_check, order)
        .start_to_close(Duration::from_secs(10))
        .await?;
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
        .workflow(flaky_payment)
        .workflow(export)
        .workflow(fan_out)
        .workflow(rounds)
        .workflow(doomed)
        .workflow(relay)
        .activity(greet)
        .activity(demo_card_charge)
        .activity(demo_export_rows)
        .activity(demo_order_check)
}
