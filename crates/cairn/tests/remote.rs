//! The remote client: the same typed calls as the in-process client, over a node's HTTP API
//! with MessagePack bodies (loopback).

use cairn::{
    ActivityContext, Ctx, Failure, Node, Query, RemoteClient, RemoteError, Signal, WorkflowError,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: String,
    items: Vec<String>,
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    order: String,
    total: u64,
    extras: Vec<String>,
}

async fn price(_ctx: ActivityContext, order: Order) -> Result<u64, Failure> {
    Ok(order.cents * order.items.len() as u64)
}

const EXTRA: Signal<String> = Signal::new("extra");
const EXTRAS: Query<(), Vec<String>> = Query::new("extras");

async fn checkout(ctx: Ctx, order: Order) -> Result<Receipt, WorkflowError> {
    let extras = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let e = extras.clone();
    ctx.on_query(&EXTRAS, move |()| e.borrow().clone());
    let e = extras.clone();
    ctx.on_signal(&EXTRA, move |x| e.borrow_mut().push(x));
    let total = ctx.activity(price, order.clone()).await?;
    let e = extras.clone();
    ctx.wait_condition(move || e.borrow().len() >= 2).await;
    let extras = extras.borrow().clone();
    Ok(Receipt {
        order: order.id,
        total,
        extras,
    })
}

async fn serve(token: Option<&str>) -> String {
    let node = Node::builder()
        .workflow(checkout)
        .activity(price)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    let router = cairn_server::router(node.runtime(), token.map(str::to_string));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _node = node;
        axum::serve(listener, router).await.unwrap();
    });
    address
}

/// Proves a typed start, signals, a query and the typed result over HTTP + MessagePack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_over_http() {
    let client = RemoteClient::new(&serve(None).await);
    let order = Order {
        id: "o-1".into(),
        items: vec!["lamp".into(), "bulb".into()],
        cents: 1_000,
    };
    let handle = client
        .start(checkout, "checkout-1", order)
        .send()
        .await
        .unwrap();
    handle.signal(&EXTRA, "gift wrap".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        handle.query(&EXTRAS, ()).await.unwrap(),
        vec!["gift wrap".to_string()]
    );
    handle.signal(&EXTRA, "express".into()).await.unwrap();
    let receipt: Receipt = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        receipt,
        Receipt {
            order: "o-1".into(),
            total: 2_000,
            extras: vec!["gift wrap".into(), "express".into()]
        }
    );

    let again = client
        .start(
            checkout,
            "checkout-1",
            Order {
                id: "o-2".into(),
                items: vec![],
                cents: 1,
            },
        )
        .send()
        .await;
    // Completed runs may be reused by default; a running one may not.
    assert!(again.is_ok(), "{again:?}");
    let dup = client
        .start(
            checkout,
            "checkout-1",
            Order {
                id: "o-3".into(),
                items: vec![],
                cents: 1,
            },
        )
        .send()
        .await;
    assert!(
        matches!(&dup, Err(RemoteError::Api { code, status: 409, .. }) if code == "already_running"),
        "{dup:?}"
    );
    let handle = client.handle::<Receipt>("checkout-1");
    handle.terminate("test over").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .unwrap();
    assert_eq!(ended, Err(RemoteError::Terminated("test over".into())));
    let missing = client
        .handle::<Receipt>("nope")
        .signal(&EXTRA, "x".into())
        .await;
    assert!(
        matches!(&missing, Err(RemoteError::Api { code, status: 404, .. }) if code == "not_found"),
        "{missing:?}"
    );
}

/// Proves the remote client sends the bearer token, and is refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token() {
    let address = serve(Some("s3cret")).await;
    let order = Order {
        id: "o".into(),
        items: vec!["x".into()],
        cents: 5,
    };
    let refused = RemoteClient::new(&address)
        .start(checkout, "t-1", order.clone())
        .send()
        .await;
    assert!(
        matches!(&refused, Err(RemoteError::Api { code, status: 401, .. }) if code == "unauthorized"),
        "{refused:?}"
    );
    let client = RemoteClient::new(&address).with_token("s3cret");
    let handle = client.start(checkout, "t-1", order).send().await.unwrap();
    handle.terminate("done").await.unwrap();
}

/// Proves the remote client backs off when the node is overloaded: with room for one request
/// in flight, held by a long-poll, a start is refused `overloaded`, waits the node's
/// `Retry-After` and is tried again, and succeeds once the slot is free, writing the workflow
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_node_is_retried_after_its_retry_after() {
    let node = Node::builder()
        .workflow(checkout)
        .activity(price)
        .start(cairn::MemStore::new())
        .await
        .unwrap();
    let mut options = cairn_server::ApiOptions::default();
    options.requests_in_flight_max = 1;
    let router = cairn_server::router_with(node.runtime(), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let runtime = node.runtime();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = RemoteClient::new(&address);
    let order = Order {
        id: "o".into(),
        items: vec!["x".into()],
        cents: 5,
    };
    let first = client
        .start(checkout, "busy-0", order.clone())
        .send()
        .await
        .unwrap();
    // Hold the only slot for 1.5 s with a result long-poll.
    let holder = {
        let url = format!("{address}/api/v1/workflows/busy-0/result?wait_ms=1500");
        tokio::task::spawn_blocking(move || {
            let _ = ureq::get(&url).call();
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = client.start(checkout, "busy-1", order).send().await;
    assert!(second.is_ok(), "{second:?}");
    assert!(
        holder.is_finished(),
        "the start got through only after the slot was free"
    );
    let page = runtime
        .list_workflows("WorkflowId = 'busy-1'", None, None)
        .await
        .unwrap();
    assert_eq!(page.workflows.len(), 1);
    first.terminate("done").await.unwrap();
    second.unwrap().terminate("done").await.unwrap();
}
