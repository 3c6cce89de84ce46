//! Workflow code that panics: in its body, in a signal handler, in a query handler. A panic
//! is an error of that run, never of the node: the run is held (its history untouched, a query
//! says why) while other runs go on, a panicking query handler fails only its query, and a
//! node started with fixed code carries the held run on from its history (Temporal's SDKs
//! retry a panicking workflow task the same way).

mod common;

use cairn::{ClientError, Ctx, Node, NodeConfig, Query, QueryError, Signal, WorkflowError};
use cairn_store::Store;
use cairn_store_embedded::EmbeddedStore;
use common::{embedded_store, within};
use std::time::Duration;

const POKE: Signal<u32> = Signal::new("poke");
const PEEK: Query<u32, u32> = Query::new("peek");

/// Waits for a poke; panics in its signal handler on a poke of 13, in its query handler on a
/// peek of 13, and in its body (after the wait) on an input of 13 (version 1's bug).
async fn buggy(ctx: Ctx, input: u32) -> Result<u32, WorkflowError> {
    let poked = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = poked.clone();
    ctx.on_signal(&POKE, move |n: u32| {
        assert_ne!(n, 13, "unlucky poke");
        seen.set(Some(n));
    });
    ctx.on_query(&PEEK, move |n: u32| {
        assert_ne!(n, 13, "unlucky peek");
        n + 1
    });
    let waiting = poked.clone();
    ctx.wait_condition(move || waiting.get().is_some()).await;
    assert_ne!(input, 13, "unlucky input");
    Ok(input + poked.get().unwrap_or(0))
}

/// Version 2 of `buggy`, registered under the same name: the body's bug fixed.
async fn fixed(ctx: Ctx, input: u32) -> Result<u32, WorkflowError> {
    let poked = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = poked.clone();
    ctx.on_signal(&POKE, move |n: u32| seen.set(Some(n)));
    ctx.on_query(&PEEK, move |n: u32| n + 1);
    let waiting = poked.clone();
    ctx.wait_condition(move || waiting.get().is_some()).await;
    Ok(input + poked.get().unwrap_or(0))
}

async fn node<S: Store>(store: S, fixed_code: bool) -> Node<S> {
    let builder = if fixed_code {
        Node::builder().workflow_named("buggy", fixed)
    } else {
        Node::builder().workflow_named("buggy", buggy)
    };
    builder
        .config(NodeConfig {
            shard_count: 2,
            ..NodeConfig::default()
        })
        .start(store)
        .await
        .expect("node starts")
}

/// The reason a query gives for a held run, once the run is held.
async fn held_reason(node: &Node<EmbeddedStore>, id: &str) -> String {
    let handle = node.client().handle::<u32>(id).unwrap();
    within("held", async {
        loop {
            match handle.query(&PEEK, 1).await {
                Err(ClientError::Query(QueryError::Held(reason))) => return reason,
                Ok(_) | Err(ClientError::Query(QueryError::NotStarted)) => {}
                Err(other) => panic!("{id}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_panic_holds_its_run_only_and_fixed_code_carries_it_on() {
    let (store, _dir) = embedded_store();
    let node1 = node(store.clone(), false).await;
    let client = node1.client();
    let body = client.start(buggy, "body", 13).send().await.unwrap();
    let handler = client.start(buggy, "handler", 1).send().await.unwrap();
    let healthy: Vec<_> = futures::future::join_all((0..20).map(|i| {
        let client = client.clone();
        async move {
            client
                .start(buggy, &format!("healthy-{i}"), 20 + i)
                .send()
                .await
                .unwrap()
        }
    }))
    .await;

    // A panicking query handler fails its query; the run answers the next one.
    let answer = handler.query(&PEEK, 13).await;
    assert!(
        matches!(&answer, Err(ClientError::Query(QueryError::Handler(m))) if m.contains("query handler panicked: ") && m.contains("unlucky peek")),
        "{answer:?}"
    );
    assert_eq!(handler.query(&PEEK, 4).await.unwrap(), 5);

    body.signal(&POKE, 2).await.unwrap();
    handler.signal(&POKE, 13).await.unwrap();
    for (i, run) in healthy.iter().enumerate() {
        run.signal(&POKE, 100).await.unwrap();
        let i = u32::try_from(i).unwrap();
        assert_eq!(within("healthy", run.result()).await.unwrap(), 20 + i + 100);
    }
    let reason = held_reason(&node1, "body").await;
    assert!(
        reason.contains("workflow code panicked: ") && reason.contains("unlucky input"),
        "{reason}"
    );
    let reason = held_reason(&node1, "handler").await;
    assert!(reason.contains("unlucky poke"), "{reason}");
    // Held, not failed: the transition that panicked committed nothing, so its signal is
    // still in the mailbox, for the fixed code to take.
    let history = body.history().await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["WorkflowExecutionStarted", "WorkflowTaskCompleted"]);
    node1.shutdown().await;

    // Version 2 of the code, on the same store: the body's bug is fixed, the run carries on
    // from its history. (The handler's run panicked in its signal handler, which version 2
    // fixes too.)
    let node2 = node(store, true).await;
    let client = node2.client();
    let body = client.handle::<u32>("body").unwrap();
    assert_eq!(within("fixed body", body.result()).await.unwrap(), 15);
    let handler = client.handle::<u32>("handler").unwrap();
    assert_eq!(within("fixed handler", handler.result()).await.unwrap(), 14);
    node2.shutdown().await;
}
