//! Payloads at and past the engine's inline bound (`INLINE_PAYLOAD_BYTES_MAX`), from every
//! place one is made: a client's start (input, memo and search attributes together), a
//! workflow's result, failure, side effect and continue-as-new input, an activity's input,
//! result, failure and heartbeat details. Each oversized one gets a clear error at its source
//! (`PayloadTooLarge`, or a failure cut to fit), nothing stored is lost, and no other run is
//! held up: small workflows started alongside finish. Run on `MemStore` and on the faulting
//! store.

mod common;

use cairn::{
    ActivityContext, ActivityError, Ctx, Failure, Node, NodeConfig, Payload, RetryPolicy,
    WorkflowError, WorkflowOutcomeError,
};
use cairn_runtime::INLINE_PAYLOAD_BYTES_MAX as MAX;
use cairn_store::{MemStore, Store};
use common::{Counts, faulty_store, within};
use std::time::Duration;

static EXECUTIONS: Counts = Counts::new();

/// A string whose MessagePack payload is exactly `bytes` long (str32 header: 5 bytes).
fn text_of(bytes: usize) -> String {
    "x".repeat(bytes - 5)
}

fn once() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(10))
        .maximum_attempts(3)
        .build()
        .unwrap()
}

/// How an activity call ended, without its (possibly huge) payload.
fn summary<T>(out: Result<T, ActivityError>, len: impl Fn(&T) -> usize) -> String {
    match out {
        Ok(value) => format!("ok {}", len(&value)),
        Err(ActivityError::Failed(f)) => {
            format!(
                "failed {} ({} bytes): {}",
                f.error_type,
                f.size_bytes(),
                head(&f.message)
            )
        }
        Err(other) => format!("{other:?}"),
    }
}

fn head(message: &str) -> String {
    message.chars().take(120).collect()
}

// ---------------------------------------------------------------------------------------------
// Activities.

async fn big_output(ctx: ActivityContext, bytes: usize) -> Result<String, Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    Ok(text_of(bytes))
}

async fn length(_ctx: ActivityContext, text: String) -> Result<usize, Failure> {
    Ok(text.len())
}

async fn fails_loudly(ctx: ActivityContext, bytes: usize) -> Result<(), Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    Err(Failure::new("Loud", "é".repeat(bytes / 2)).non_retryable())
}

/// Heartbeats `bytes` of details, then waits to be stopped.
async fn beats(ctx: ActivityContext, bytes: usize) -> Result<(), Failure> {
    EXECUTIONS.bump(&ctx.info().idempotency_key);
    ctx.heartbeat(Payload::encode(&text_of(bytes)).unwrap());
    tokio::time::sleep(Duration::from_secs(20)).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workflows.

async fn returns(_ctx: Ctx, bytes: usize) -> Result<String, WorkflowError> {
    Ok(text_of(bytes))
}

async fn fails(_ctx: Ctx, bytes: usize) -> Result<(), WorkflowError> {
    Err(cairn::fail("Loud", "é".repeat(bytes / 2)))
}

/// Sends an activity `bytes` of input.
async fn sends(ctx: Ctx, bytes: usize) -> Result<String, WorkflowError> {
    Ok(summary(ctx.activity(length, text_of(bytes)).await, |n| *n))
}

/// Asks an activity for `bytes` of output, of a failure, of heartbeat details.
async fn receives(ctx: Ctx, bytes: usize) -> Result<Vec<String>, WorkflowError> {
    let output = ctx.activity(big_output, bytes).retry(once()).await;
    let failure = ctx.activity(fails_loudly, bytes).retry(once()).await;
    let beat = ctx
        .activity(beats, bytes)
        .retry(once())
        .start_to_close(Duration::from_secs(30))
        .await;
    Ok(vec![
        summary(output, String::len),
        summary(failure, |()| 0),
        summary(beat, |()| 0),
    ])
}

/// Records a side effect of `bytes`, then (if it got that far) schedules an activity.
async fn remembers(ctx: Ctx, bytes: usize) -> Result<String, WorkflowError> {
    let value = ctx.side_effect(|| text_of(bytes));
    ctx.activity(length, value)
        .await
        .map_err(|e| WorkflowError::Failed(Failure::new("Unexpected", format!("{e:?}"))))?;
    Ok("recorded".into())
}

/// "grow": continues as new with an input past the bound; "step": with a small one.
async fn continues(ctx: Ctx, input: String) -> Result<String, WorkflowError> {
    match input.as_str() {
        "grow" => Err(ctx.continue_as_new(&text_of(MAX + 1))),
        "step" => Err(ctx.continue_as_new(&"end")),
        other => Ok(format!("successor got {other}")),
    }
}

async fn echoes(_ctx: Ctx, text: String) -> Result<usize, WorkflowError> {
    Ok(text.len())
}

async fn node<S: Store>(store: S) -> Node<S> {
    Node::builder()
        .workflow(returns)
        .workflow(fails)
        .workflow(sends)
        .workflow(receives)
        .workflow(remembers)
        .workflow(continues)
        .workflow(echoes)
        .activity(big_output)
        .activity(length)
        .activity(fails_loudly)
        .activity(beats)
        .config(NodeConfig {
            shard_count: 2,
            ..NodeConfig::default()
        })
        .start(store)
        .await
        .expect("node starts")
}

fn failed_as_too_large<T>(outcome: &Result<T, WorkflowOutcomeError>) -> bool {
    matches!(outcome, Err(WorkflowOutcomeError::Failed(f))
        if f.error_type == "PayloadTooLarge" && f.message.contains(&format!("the limit is {MAX} bytes")))
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn results_past_the_bound_fail_their_run_alone<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let mut big = Vec::new();
    for (i, bytes) in [MAX + 1, 150_000, 1_500_000].into_iter().enumerate() {
        big.push(
            client
                .start(returns, &format!("big-{tag}-{i}"), bytes)
                .send()
                .await
                .unwrap(),
        );
    }
    let small: Vec<_> = futures::future::join_all((0..30).map(|i| {
        let client = client.clone();
        let tag = tag.to_string();
        async move {
            client
                .start(returns, &format!("small-{tag}-{i}"), 10usize)
                .send()
                .await
                .unwrap()
        }
    }))
    .await;
    for handle in small {
        assert_eq!(within("small", handle.result()).await.unwrap().len(), 5);
    }
    for handle in big {
        let outcome = within("big", handle.result()).await;
        assert!(
            failed_as_too_large(&outcome),
            "{:?}",
            outcome.map(|s| s.len())
        );
    }
    let fits = client
        .start(returns, &format!("fits-{tag}"), MAX)
        .send()
        .await
        .unwrap();
    assert_eq!(within("fits", fits.result()).await.unwrap().len(), MAX - 5);

    let failing = client
        .start(fails, &format!("fails-{tag}"), 400_000usize)
        .send()
        .await
        .unwrap();
    match within("fails", failing.result()).await {
        Err(WorkflowOutcomeError::Failed(f)) => {
            assert_eq!(f.error_type, "Loud");
            assert!(f.size_bytes() <= MAX, "{}", f.size_bytes());
            assert!(
                f.message.ends_with("of 400000 bytes)"),
                "{}",
                head(&f.message)
            );
        }
        other => panic!("{:?}", other),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn results_past_the_bound_fail_their_run_alone_mem() {
    results_past_the_bound_fail_their_run_alone(MemStore::new(), "mem").await;
}

#[tokio::test]
async fn results_past_the_bound_fail_their_run_alone_faulty() {
    results_past_the_bound_fail_their_run_alone(faulty_store(71), "faulty").await;
}

#[tokio::test]
async fn activity_payloads_past_the_bound_fail_the_activity_once() {
    let node = node(faulty_store(72)).await;
    let client = node.client();
    let sent = client.start(sends, "sends", MAX + 1).send().await.unwrap();
    let sent_fits = client.start(sends, "sends-fits", MAX).send().await.unwrap();
    let got = client
        .start(receives, "receives", MAX + 1)
        .send()
        .await
        .unwrap();
    let sent = within("sends", sent.result()).await.unwrap();
    assert!(sent.starts_with("failed PayloadTooLarge"), "{sent}");
    assert!(sent.contains("the activity input is 90001 bytes"), "{sent}");
    assert_eq!(
        within("sends-fits", sent_fits.result()).await.unwrap(),
        format!("ok {}", MAX - 5)
    );

    let got = within("receives", got.result()).await.unwrap();
    assert!(
        got[0].starts_with("failed PayloadTooLarge") && got[0].contains("the activity's result"),
        "{got:?}"
    );
    // The activity's own failure is kept, cut to fit.
    assert!(got[1].starts_with("failed Loud"), "{got:?}");
    assert!(
        got[2].starts_with("failed PayloadTooLarge") && got[2].contains("heartbeat details"),
        "{got:?}"
    );
    // Non-retryable: each ran once, though the policy allows three attempts.
    for seq in 1..=3 {
        assert_eq!(
            EXECUTIONS.get(&format!("receives/{seq}")),
            1,
            "activity {seq}"
        );
    }
    node.shutdown().await;
}

#[tokio::test]
async fn side_effects_and_continue_as_new_past_the_bound_fail_the_run() {
    let node = node(MemStore::new()).await;
    let client = node.client();
    let remembers_big = client
        .start(remembers, "remembers-big", MAX + 1)
        .send()
        .await
        .unwrap();
    let outcome = within("remembers", remembers_big.result()).await;
    assert!(failed_as_too_large(&outcome), "{outcome:?}");
    // Nothing after the oversized side effect ran: its activity was never scheduled.
    let history = remembers_big.history().await.unwrap();
    assert!(
        history
            .iter()
            .all(|e| !matches!(e.kind, cairn_types::EventKind::ActivityTaskScheduled { .. })),
        "{history:?}"
    );
    let remembers_small = client
        .start(remembers, "remembers-small", 100usize)
        .send()
        .await
        .unwrap();
    assert_eq!(
        within("small", remembers_small.result()).await.unwrap(),
        "recorded"
    );

    let grows = client
        .start(continues, "continues-big", "grow".to_string())
        .send()
        .await
        .unwrap();
    let outcome = within("continues", grows.result()).await;
    assert!(
        failed_as_too_large(&outcome),
        "{:?}",
        outcome.map(|s| s.len())
    );
    let steps = client
        .start(continues, "continues-small", "step".to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        within("steps", steps.result()).await.unwrap(),
        "successor got end"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_start_carries_input_memo_and_search_attributes_within_one_bound() {
    let node = node(MemStore::new()).await;
    let client = node.client();
    let memo = text_of(30_000);
    let refused = client
        .start(echoes, "carries", "a".to_string())
        .memo("notes", &memo)
        .memo("more", &text_of(31_000))
        .send()
        .await;
    assert!(
        matches!(&refused, Err(cairn::ClientError::InvalidMemo(_))),
        "a memo past its own bound: {refused:?}"
    );
    // The input alone fits, the memo alone fits; together they would not fit one event.
    let too_much = client
        .start(echoes, "carries", text_of(65_000))
        .memo("notes", &memo)
        .send()
        .await;
    match &too_much {
        Err(cairn::ClientError::PayloadTooLarge { what, len, max }) => {
            assert!(what.contains("memo"), "{what}");
            assert_eq!(*max, MAX);
            assert!(*len > MAX, "{len}");
        }
        other => panic!("{:?}", other.as_ref().map(|_| ())),
    }
    // Nothing was written: the id is free, and a start that fits goes through.
    let ok = client
        .start(echoes, "carries", text_of(55_000))
        .memo("notes", &memo)
        .send()
        .await
        .unwrap();
    assert_eq!(within("carries", ok.result()).await.unwrap(), 55_000 - 5);
    node.shutdown().await;
}
