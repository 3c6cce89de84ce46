//! Updates through the Rust SDK, end to end: a validator rejects without writing history; an
//! accepted update's handler runs to its result, waiting on an activity if it must; an
//! update id sent again joins the first update (on a closed run too); an accepted update
//! survives a crash of its node between acceptance and completion; a run bounds the updates
//! in flight and in total; an update still running when its run is terminated fails, and
//! one sent after answers that the run closed; update-with-start starts a run or uses the
//! running one.

mod common;

use cairn::{
    ActivityContext, ClientError, Ctx, Failure, Node, NodeConfig, Signal, Update, UpdateCallError,
    UpdateError, WorkflowError,
};
use cairn_store::Store;
use cairn_types::EventKind;
use cairn_types::limits::{UPDATES_IN_FLIGHT_MAX, UPDATES_TOTAL_MAX};
use common::within;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Adds its amount to the balance and answers the new balance; amounts of 1,000 or more
/// wait for the `approve` activity first. Zero is rejected by the validator.
const DEPOSIT: Update<u64, u64> = Update::new("deposit");
/// Waits until `RELEASE` is signalled, then answers the balance.
const PARK: Update<(), u64> = Update::new("park");
const RELEASE: Signal<()> = Signal::new("release");
const CLOSE: Signal<()> = Signal::new("close");

/// While set, `approve` never returns (the node running it is about to crash).
static APPROVALS_HANG: AtomicBool = AtomicBool::new(false);

async fn approve(_ctx: ActivityContext, amount: u64) -> Result<u64, Failure> {
    while APPROVALS_HANG.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(amount)
}

async fn ledger(ctx: Ctx, _input: ()) -> Result<u64, WorkflowError> {
    let balance = Rc::new(Cell::new(0u64));
    let released = Rc::new(Cell::new(false));
    let closed = Rc::new(Cell::new(false));
    let (b, handler_ctx) = (balance.clone(), ctx.clone());
    ctx.on_update_validated(
        &DEPOSIT,
        |amount: &u64| match amount {
            0 => Err(Failure::new("Invalid", "a deposit must be positive")),
            _ => Ok(()),
        },
        move |amount: u64| {
            let (b, ctx) = (b.clone(), handler_ctx.clone());
            async move {
                let amount = if amount >= 1_000 {
                    ctx.activity(approve, amount)
                        .start_to_close(Duration::from_secs(2))
                        .await
                        .map_err(|e| Failure::new("NotApproved", e.to_string()))?
                } else {
                    amount
                };
                b.set(b.get() + amount);
                Ok(b.get())
            }
        },
    );
    let (b, r, parked_ctx) = (balance.clone(), released.clone(), ctx.clone());
    ctx.on_update(&PARK, move |()| {
        let (b, r, ctx) = (b.clone(), r.clone(), parked_ctx.clone());
        async move {
            ctx.wait_condition(move || r.get()).await;
            Ok(b.get())
        }
    });
    let r = released.clone();
    ctx.on_signal(&RELEASE, move |()| r.set(true));
    let c = closed.clone();
    ctx.on_signal(&CLOSE, move |()| c.set(true));
    ctx.wait_condition(move || closed.get()).await;
    Ok(balance.get())
}

async fn node<S: Store>(store: S, config: NodeConfig) -> Node<S> {
    Node::builder()
        .workflow(ledger)
        .activity(approve)
        .config(config)
        .start(store)
        .await
        .expect("node starts")
}

/// The update ids of the run's accepted and completed events.
async fn update_events<S: Store>(node: &Node<S>, id: &str) -> (Vec<String>, Vec<String>) {
    let history = node
        .client()
        .handle::<u64>(id)
        .unwrap()
        .history()
        .await
        .unwrap();
    let (mut accepted, mut completed) = (Vec::new(), Vec::new());
    for event in history {
        match event.kind {
            EventKind::WorkflowExecutionUpdateAccepted { update_id, .. } => {
                accepted.push(update_id)
            }
            EventKind::WorkflowExecutionUpdateCompleted { update_id, .. } => {
                completed.push(update_id)
            }
            _ => {}
        }
    }
    (accepted, completed)
}

fn failed_with(result: Result<u64, UpdateCallError>, error_type: &str) -> bool {
    matches!(&result, Err(UpdateCallError::Failed(f)) if f.error_type == error_type)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_validate_deduplicate_and_complete() {
    let node = node(cairn::MemStore::new(), NodeConfig::default()).await;
    let client = node.client();
    let handle = client.start(ledger, "ledger-1", ()).send().await.unwrap();

    let rejected = within("rejected update", handle.update(&DEPOSIT, 0)).await;
    assert!(
        failed_with(rejected, "Invalid"),
        "a zero deposit is rejected"
    );
    assert_eq!(
        update_events(&node, "ledger-1").await,
        (vec![], vec![]),
        "a rejection writes nothing"
    );

    assert_eq!(within("deposit", handle.update(&DEPOSIT, 5)).await, Ok(5));
    let first = within("dup", handle.start_update(&DEPOSIT, "dup", 7))
        .await
        .unwrap();
    assert_eq!(within("dup result", first.result()).await, Ok(12));
    let again = within("dup again", handle.start_update(&DEPOSIT, "dup", 7))
        .await
        .unwrap();
    assert_eq!(
        within("dup again result", again.result()).await,
        Ok(12),
        "the same update id answers the first update's result, not a second deposit"
    );
    let big = within("big", handle.update(&DEPOSIT, 1_000)).await;
    assert_eq!(big, Ok(1_012), "a handler waits for an activity");

    let unknown: Update<u64, u64> = Update::new("withdraw");
    assert!(failed_with(
        within("unknown", handle.update(&unknown, 1)).await,
        cairn::UPDATE_HANDLER_NOT_FOUND
    ));

    let (accepted, completed) = update_events(&node, "ledger-1").await;
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    assert_eq!(accepted.iter().filter(|u| *u == "dup").count(), 1);
    assert_eq!(completed.len(), 3);

    handle.signal(&CLOSE, ()).await.unwrap();
    assert_eq!(within("result", handle.result()).await.unwrap(), 1_012);
    let after = within("after close", handle.update(&DEPOSIT, 1)).await;
    assert!(
        matches!(
            after,
            Err(UpdateCallError::Client(ClientError::Update(
                UpdateError::Closed
            )))
        ),
        "{after:?}"
    );
    let known = within("dup after close", handle.start_update(&DEPOSIT, "dup", 7)).await;
    assert_eq!(
        within("dup after close result", known.unwrap().result()).await,
        Ok(12),
        "a closed run still answers an update it completed"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_start_starts_or_uses_the_running_run() {
    let node = node(cairn::MemStore::new(), NodeConfig::default()).await;
    let client = node.client();
    // A new id: started, then updated.
    let (handle, first) = within(
        "with start",
        client
            .start(ledger, "ledger-uws", ())
            .send_with_update(&DEPOSIT, "first", 4),
    )
    .await
    .unwrap();
    assert_eq!(within("first", first.result()).await, Ok(4));
    // Running: the same run takes the update.
    let (_, second) = within(
        "with running",
        client
            .start(ledger, "ledger-uws", ())
            .send_with_update(&DEPOSIT, "second", 6),
    )
    .await
    .unwrap();
    assert_eq!(second.run_id(), first.run_id(), "the running run was used");
    assert_eq!(within("second", second.result()).await, Ok(10));
    // Sent again with the same update id: the same update, not a second deposit.
    let (_, again) = client
        .start(ledger, "ledger-uws", ())
        .send_with_update(&DEPOSIT, "second", 6)
        .await
        .unwrap();
    assert_eq!(within("again", again.result()).await, Ok(10));
    // A rejected update starts the run all the same (as on Temporal) and says why.
    let (started, rejected) = client
        .start(ledger, "ledger-uws-2", ())
        .send_with_update(&DEPOSIT, "zero", 0)
        .await
        .unwrap();
    let rejected = rejected.result().await;
    assert_eq!(
        started.describe().await.unwrap().summary.status,
        Some(cairn::RunStatus::Running)
    );
    assert!(
        matches!(&rejected, Err(UpdateCallError::Failed(f)) if f.message.contains("positive")),
        "{rejected:?}"
    );
    // A closed id its reuse policy refuses: neither a start nor an update.
    handle.signal(&CLOSE, ()).await.unwrap();
    assert_eq!(within("closed", handle.result()).await, Ok(10));
    let refused = client
        .start(ledger, "ledger-uws", ())
        .id_reuse_policy(cairn::IdReusePolicy::RejectDuplicate)
        .send_with_update(&DEPOSIT, "third", 1)
        .await;
    assert!(
        matches!(
            &refused,
            Err(UpdateCallError::Client(
                ClientError::DuplicateRejected { .. }
            ))
        ),
        "{refused:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_update_survives_a_crash_before_it_completes() {
    use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
    let dir = tempfile::tempdir().unwrap();
    let config = || NodeConfig {
        lease_timeout_ms: 60_000,
        ..NodeConfig::default()
    };
    APPROVALS_HANG.store(true, Ordering::SeqCst);
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let first = node(store, config()).await;
    let handle = first
        .client()
        .start(ledger, "ledger-crash", ())
        .send()
        .await
        .unwrap();
    within("deposit 3", handle.update(&DEPOSIT, 3))
        .await
        .unwrap();
    // Accepted (in the history), its handler waiting on an approval that never comes here.
    let accepted = within("accept big", handle.start_update(&DEPOSIT, "big", 5_000))
        .await
        .unwrap();
    assert_eq!(accepted.update_id(), "big");
    // The process dies: nothing of it may hold the store open.
    drop((accepted, handle));
    first.crash();
    APPROVALS_HANG.store(false, Ordering::SeqCst);
    let store = common::reopen_embedded(dir.path()).await;
    let second = node(store, config()).await;
    let handle = second.client().handle::<u64>("ledger-crash").unwrap();
    // Asked again by id: the same update, replayed from its acceptance, not a second one.
    let resumed = within("big again", handle.start_update(&DEPOSIT, "big", 5_000))
        .await
        .unwrap();
    assert_eq!(within("big result", resumed.result()).await, Ok(5_003));
    let (accepted, completed) = update_events(&second, "ledger-crash").await;
    assert_eq!(
        accepted.iter().filter(|u| *u == "big").count(),
        1,
        "{accepted:?}"
    );
    assert_eq!(
        completed.iter().filter(|u| *u == "big").count(),
        1,
        "{completed:?}"
    );
    handle.signal(&CLOSE, ()).await.unwrap();
    assert_eq!(within("result", handle.result()).await.unwrap(), 5_003);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_in_flight_and_in_total_are_bounded() {
    let node = node(cairn::MemStore::new(), NodeConfig::default()).await;
    let handle = node
        .client()
        .start(ledger, "ledger-bounds", ())
        .send()
        .await
        .unwrap();
    let mut parked = Vec::new();
    for n in 0..UPDATES_IN_FLIGHT_MAX {
        let id = format!("park-{n}");
        parked.push(
            within("park", handle.start_update(&PARK, &id, ()))
                .await
                .unwrap(),
        );
    }
    let refused = within("one too many", handle.start_update(&PARK, "park-extra", ())).await;
    assert!(
        matches!(
            refused,
            Err(UpdateCallError::Client(ClientError::Update(
                UpdateError::TooManyInFlight
            )))
        ),
        "{refused:?}"
    );
    handle.signal(&RELEASE, ()).await.unwrap();
    for update in &parked {
        assert_eq!(within("parked result", update.result()).await, Ok(0));
    }
    // Up to the total bound, one update at a time; the next distinct id is refused.
    for n in UPDATES_IN_FLIGHT_MAX..UPDATES_TOTAL_MAX {
        within(
            "deposit",
            handle.start_update(&DEPOSIT, &format!("d-{n}"), 1),
        )
        .await
        .unwrap();
    }
    let refused = within(
        "past the total",
        handle.start_update(&DEPOSIT, "d-extra", 1),
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(UpdateCallError::Client(ClientError::Update(
                UpdateError::TooMany
            )))
        ),
        "{refused:?}"
    );
    // A known id is still answered at the bound.
    let known = within(
        "known at the bound",
        handle.start_update(&DEPOSIT, "d-10", 1),
    )
    .await;
    assert!(known.is_ok(), "{known:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_running_when_its_run_is_terminated_fails() {
    let node = node(cairn::MemStore::new(), NodeConfig::default()).await;
    let handle = node
        .client()
        .start(ledger, "ledger-term", ())
        .send()
        .await
        .unwrap();
    let parked = within("park", handle.start_update(&PARK, "p", ()))
        .await
        .unwrap();
    handle.terminate("enough").await.unwrap();
    let result = within("parked result", parked.result()).await;
    assert!(
        failed_with(result, cairn::ACCEPTED_UPDATE_COMPLETED_WORKFLOW),
        "an accepted update whose run closed fails"
    );
    let (accepted, completed) = update_events(&node, "ledger-term").await;
    assert_eq!((accepted.len(), completed.len()), (1, 0));
    node.shutdown().await;
}

async fn serve_http<S: Store>(node: &Node<S>) -> (cairn::RemoteClient, String) {
    let router = cairn_server::router(node.runtime(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (cairn::RemoteClient::new(&address), address)
}

/// The same updates over the HTTP API: the typed remote client, and raw calls that wait for
/// acceptance and then poll the update by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_over_http() {
    let node = node(cairn::MemStore::new(), NodeConfig::default()).await;
    node.client()
        .start(ledger, "ledger-http", ())
        .send()
        .await
        .unwrap();
    let (remote, address) = serve_http(&node).await;
    let handle = remote.handle::<u64>("ledger-http");
    assert_eq!(
        within("deposit", handle.update(&DEPOSIT, 4)).await.unwrap(),
        4
    );
    let rejected = within("rejected", handle.update(&DEPOSIT, 0)).await;
    assert!(
        matches!(&rejected, Err(cairn::RemoteError::UpdateFailed { error_type, .. }) if error_type == "Invalid"),
        "{rejected:?}"
    );
    assert_eq!(
        within("same id", handle.update_with_id(&DEPOSIT, "h1", 6))
            .await
            .unwrap(),
        10
    );
    assert_eq!(
        within("same id again", handle.update_with_id(&DEPOSIT, "h1", 6))
            .await
            .unwrap(),
        10
    );

    // Raw: wait for acceptance only, then poll the update by id until it completes.
    let url = format!("{address}/api/v1/workflows/ledger-http/updates");
    let http = http_json(
        format!("{url}/park?update_id=p1&wait=accepted"),
        Some("null"),
    );
    let (status, body) = within("park accepted", http).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stage"], "accepted", "{body}");
    let (status, body) = within("poll at once", http_json(format!("{url}/p1"), None)).await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    let waiting = http_json(format!("{url}/p1?wait=completed&wait_ms=300"), None);
    let (status, body) = within("poll before release", waiting).await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (202, Some("accepted")),
        "{body}"
    );
    handle.signal(&RELEASE, ()).await.unwrap();
    let done = http_json(format!("{url}/p1?wait=completed"), None);
    let (status, body) = within("poll after release", done).await;
    assert_eq!(
        (status, &body["result"]),
        (200, &serde_json::json!(10)),
        "{body}"
    );
    let (status, body) = within("unknown id", http_json(format!("{url}/nope"), None)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("update_not_found")),
        "{body}"
    );
    let bad = http_json(format!("{url}/park?wait=later"), Some("null"));
    let (status, body) = within("bad wait", bad).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_parameter")),
        "{body}"
    );
    node.shutdown().await;
}

/// A JSON call with `ureq` (POST with `body`, else GET): the status and the JSON answer.
async fn http_json(url: String, body: Option<&'static str>) -> (u16, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = match body {
            Some(body) => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body)
                .unwrap(),
            None => agent.get(&url).call().unwrap(),
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    })
    .await
    .unwrap()
}

/// Senders per run in the race below, and the most updates each sends.
const RACERS: usize = 3;
const RACE_UPDATES_MAX: usize = 300;

/// Sends deposits of 1 to `workflow_id` until the run refuses them as closed; returns the ids
/// acknowledged (accepted) with how each ended.
async fn race_deposits<S: Store>(
    node: &Node<S>,
    workflow_id: String,
    sender: usize,
) -> Vec<(String, Result<u64, UpdateCallError>)> {
    let handle = node.client().handle::<u64>(&workflow_id).unwrap();
    let mut acknowledged = Vec::new();
    for n in 0..RACE_UPDATES_MAX {
        let id = format!("{sender}-{n}");
        match handle.start_update(&DEPOSIT, &id, 1).await {
            Ok(update) => acknowledged.push((id, update.result().await)),
            Err(UpdateCallError::Client(ClientError::Update(UpdateError::Closed))) => break,
            // Lost to a store fault and not answered in time: not acknowledged.
            Err(_) => {}
        }
    }
    acknowledged
}

/// Proves an acknowledged update is in the history, whatever closes its run at the same
/// moment: updates pour into runs as they are terminated (on the durable store and on one
/// injecting conflicts and `MaybeCommitted`); every update answered `Ok` (accepted) has its
/// acceptance in the run's final history, once, and every one whose result came back its
/// completion. A transition that terminates the run accepts none.
async fn acknowledged_updates_survive_a_terminate<S: Store>(store: S) {
    let node = node(store, NodeConfig::default()).await;
    let mut races = Vec::new();
    for run in 0..3 {
        let id = format!("race-{run}");
        node.client().start(ledger, &id, ()).send().await.unwrap();
        let senders: Vec<_> = (0..RACERS)
            .map(|sender| race_deposits(&node, id.clone(), sender))
            .collect();
        races.push((id, senders));
    }
    let mut checked = Vec::new();
    for (id, senders) in races {
        let handle = node.client().handle::<u64>(&id).unwrap();
        let terminate = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            while handle.terminate("enough").await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let (sent, ()) = within("race", async {
            tokio::join!(cairn::futures::future::join_all(senders), terminate)
        })
        .await;
        checked.push((id, sent.concat()));
    }
    let mut acknowledged_in_all = 0;
    for (id, acknowledged) in checked {
        let (accepted, completed) = update_events(&node, &id).await;
        for (update, result) in &acknowledged {
            assert!(
                accepted.contains(update),
                "{id}: acknowledged update {update} is not in the history"
            );
            match result {
                Ok(_) => assert!(
                    completed.contains(update),
                    "{id}: update {update} answered its result, which is not in the history"
                ),
                Err(e) => panic!("{id}: accepted update {update} did not complete: {e}"),
            }
        }
        let unique: std::collections::BTreeSet<&String> = accepted.iter().collect();
        assert_eq!(
            unique.len(),
            accepted.len(),
            "{id}: an update accepted twice"
        );
        acknowledged_in_all += acknowledged.len();
    }
    assert!(acknowledged_in_all > 0, "no update raced the terminations");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_survive_a_terminate_on_the_embedded_store() {
    let (store, _dir) = common::embedded_store();
    acknowledged_updates_survive_a_terminate(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_survive_a_terminate_under_store_faults() {
    acknowledged_updates_survive_a_terminate(common::faulty_store(21)).await;
}
