//! An acknowledged message is never lost, whatever closes its run at the same moment
//! (Temporal's rule): every signal answered `Ok` is in the run's final history, whether the
//! run is terminated while signals pour in, or completes on its own (its code saw enough of
//! them) while more arrive. Senders race the close through the Rust client and over HTTP, on
//! the durable embedded store and on a store that injects conflicts and `MaybeCommitted`.

mod common;

use cairn::{Ctx, Node, RemoteClient, RemoteError, Signal, WorkflowError};
use cairn_store::Store;
use cairn_types::EventKind;
use std::collections::BTreeSet;
use std::time::Duration;

const TICK: Signal<u32> = Signal::new("tick");

/// Most signals one sender sends to one run before giving up on seeing it close.
const SIGNALS_PER_SENDER_MAX: u32 = 400;
/// Concurrent senders per run.
const SENDERS_PER_RUN: u32 = 3;
/// Runs raced at once, per scenario.
const RUNS: usize = 4;

/// Waits for signals until it has seen `needed` of them, then completes.
async fn counts_to(ctx: Ctx, needed: usize) -> Result<usize, WorkflowError> {
    let seen = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let sink = seen.clone();
    ctx.on_signal(&TICK, move |_| sink.set(sink.get() + 1));
    let done = seen.clone();
    ctx.wait_condition(move || done.get() >= needed).await;
    Ok(seen.get())
}

async fn node<S: Store>(store: S) -> Node<S> {
    Node::builder()
        .workflow(counts_to)
        .start(store)
        .await
        .expect("node starts")
}

/// Where the senders send from.
#[derive(Clone)]
enum Sender<S: Store> {
    Rust(cairn::Client<S>),
    Http(RemoteClient),
}

impl<S: Store> Sender<S> {
    /// Sends tick `n` to `workflow_id`: `Some(true)` acknowledged, `Some(false)` refused
    /// because the run is closed, `None` for any other refusal (retried by the caller).
    async fn tick(&self, workflow_id: &str, n: u32) -> Option<bool> {
        match self {
            Sender::Rust(client) => {
                let handle = client.handle::<usize>(workflow_id).ok()?;
                match handle.signal(&TICK, n).await {
                    Ok(()) => Some(true),
                    Err(cairn::ClientError::NotRunning { .. }) => Some(false),
                    Err(_) => None,
                }
            }
            Sender::Http(client) => {
                match client.handle::<usize>(workflow_id).signal(&TICK, n).await {
                    Ok(()) => Some(true),
                    Err(RemoteError::Api { code, .. }) if code == "not_running" => Some(false),
                    Err(_) => None,
                }
            }
        }
    }
}

/// Senders fire ticks at `workflow_id` until it refuses them as closed; returns every tick
/// acknowledged.
async fn flood<S: Store>(sender: Sender<S>, workflow_id: String, first: u32) -> Vec<u32> {
    let mut acknowledged = Vec::new();
    for n in first..first + SIGNALS_PER_SENDER_MAX {
        match sender.tick(&workflow_id, n).await {
            Some(true) => acknowledged.push(n),
            Some(false) => return acknowledged,
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    acknowledged
}

/// The ticks recorded in the workflow's history (its only run).
async fn recorded<S: Store>(node: &Node<S>, workflow_id: &str) -> BTreeSet<u32> {
    let history = node
        .client()
        .handle::<usize>(workflow_id)
        .unwrap()
        .history()
        .await
        .unwrap();
    history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::WorkflowExecutionSignaled { input, .. } => input.decode::<u32>().ok(),
            _ => None,
        })
        .collect()
}

/// Checks every acknowledged tick of every run is in its history.
async fn every_acknowledged_is_recorded<S: Store>(node: &Node<S>, runs: Flooded) -> usize {
    let mut total = 0;
    for (workflow_id, senders) in runs {
        let mut acknowledged = BTreeSet::new();
        for sender in senders {
            acknowledged.extend(common::within("a sender", sender).await.unwrap());
        }
        // Compared once the run has closed: a sender that used up its budget first leaves
        // acknowledged mail the run has yet to take.
        let handle = node.client().handle::<usize>(&workflow_id).unwrap();
        let _ = common::within("the run's close", handle.result()).await;
        let recorded = recorded(node, &workflow_id).await;
        let lost: Vec<_> = acknowledged.difference(&recorded).collect();
        assert!(
            lost.is_empty(),
            "{workflow_id}: {} of {} acknowledged ticks are missing from the history: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
        total += acknowledged.len();
    }
    total
}

async fn serve_http<S: Store>(node: &Node<S>) -> RemoteClient {
    let router = cairn_server::router(node.runtime(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    RemoteClient::new(&address)
}

/// A run's workflow id and its senders, each answering with the ticks it got acknowledged.
type Flooded = Vec<(String, Vec<tokio::task::JoinHandle<Vec<u32>>>)>;

/// Starts `RUNS` runs of `counts_to`, run `i` waiting for `needed(i)` ticks, and floods each
/// from `SENDERS_PER_RUN` senders at once, alternating the Rust client and HTTP.
async fn start_flooded<S: Store>(
    node: &Node<S>,
    prefix: &str,
    needed: impl Fn(usize) -> usize,
) -> Flooded {
    let http = serve_http(node).await;
    let client = node.client();
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let workflow_id = format!("{prefix}-{run}");
        client
            .start(counts_to, &workflow_id, needed(run))
            .send()
            .await
            .unwrap();
        let senders = (0..SENDERS_PER_RUN as usize)
            .map(|i| {
                let sender = match (run + i) % 2 {
                    0 => Sender::Rust(client.clone()),
                    _ => Sender::Http(http.clone()),
                };
                tokio::spawn(flood(sender, workflow_id.clone(), i as u32 * 100_000))
            })
            .collect();
        runs.push((workflow_id, senders));
    }
    runs
}

/// Runs are terminated while ticks pour in from several senders at once.
async fn signals_racing_a_terminate<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    // Never satisfied: only the terminate closes them.
    let runs = start_flooded(&node, &format!("terminated-{tag}"), |_| usize::MAX).await;
    for (i, (workflow_id, _)) in runs.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(20 + 15 * i as u64)).await;
        client
            .handle::<usize>(workflow_id)
            .unwrap()
            .terminate("racing the senders")
            .await
            .unwrap();
    }
    let total = every_acknowledged_is_recorded(&node, runs).await;
    assert!(total > 0, "no tick was acknowledged before the terminates");
    node.shutdown().await;
}

/// Runs complete on their own (their code saw enough ticks) while more ticks arrive.
async fn signals_racing_a_completion<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let runs = start_flooded(&node, &format!("completed-{tag}"), |run| 40 + 10 * run).await;
    let ids: Vec<String> = runs.iter().map(|(id, _)| id.clone()).collect();
    let total = every_acknowledged_is_recorded(&node, runs).await;
    for workflow_id in ids {
        let seen = common::within(
            "the result",
            client.handle::<usize>(&workflow_id).unwrap().result(),
        )
        .await
        .unwrap();
        let recorded = recorded(&node, &workflow_id).await.len();
        // The code saw at least what it waited for; the history holds at least that.
        assert!(
            recorded >= seen,
            "{workflow_id}: {recorded} recorded, code saw {seen}"
        );
    }
    assert!(total > 0);
    node.shutdown().await;
}

common::on_both_stores!(seed: 21; signals_racing_a_terminate, signals_racing_a_completion);

/// A mailbox holding several pages of mail (`MAILBOX_BATCH_MAX` entries per read) is read a
/// page per transition, and none is lost: 1,000 signals written while no node holds the run
/// are all counted once a node takes its shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_of_several_pages_is_read_whole() {
    const SIGNALS: u32 = 1_000;
    let store = cairn_store::MemStore::new();
    let config = |id: &str| cairn::NodeConfig {
        node_id: id.into(),
        shard_count: 2,
        lease_timeout_ms: 1_000,
        ..cairn::NodeConfig::default()
    };
    let first = Node::builder()
        .workflow(counts_to)
        .config(config("pages-first"))
        .start(store.clone())
        .await
        .unwrap();
    first
        .client()
        .start(counts_to, "pages", SIGNALS as usize)
        .send()
        .await
        .unwrap();
    let handle = first.client().handle::<usize>("pages").unwrap();
    common::within("the run starts", async {
        while handle.history().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    first.crash();
    // A second node: its client writes the mail at once; it takes the shard once the first
    // node's lease lapses.
    let second = Node::builder()
        .workflow(counts_to)
        .config(config("pages-second"))
        .start(store)
        .await
        .unwrap();
    let client = second.client();
    let sends = (0..SIGNALS).map(|n| {
        let handle = client.handle::<usize>("pages").unwrap();
        async move { handle.signal(&TICK, n).await }
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    let handle = client.handle::<usize>("pages").unwrap();
    let counted = common::within("every signal counted", handle.result())
        .await
        .unwrap();
    assert_eq!(counted, SIGNALS as usize);
    let signaled = handle
        .history()
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::WorkflowExecutionSignaled { .. }))
        .count();
    assert_eq!(signaled, SIGNALS as usize, "each signal recorded once");
    second.shutdown().await;
}
