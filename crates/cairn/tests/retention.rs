//! Retention through the public SDK: closed workflows, their histories and visibility entries,
//! and the earlier runs of reused ids leave the store once the retention period has passed,
//! in bounded batches, while open workflows stay untouched.

mod common;

use cairn::{ClientError, Ctx, Node, NodeConfig, Signal, WorkflowError};
use cairn_store::{RangeRequest, Store, Transaction};
use common::within;
use std::time::Duration;

const GO: Signal<()> = Signal::new("go");

async fn quick(ctx: Ctx, n: u32) -> Result<u32, WorkflowError> {
    // A few events of history per run, so there is history to delete.
    ctx.sleep(Duration::from_millis(1)).await;
    Ok(n)
}

async fn waits(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    let go = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = go.clone();
    ctx.on_signal(&GO, move |()| seen.set(true));
    ctx.wait_condition(move || go.get()).await;
    Ok(())
}

/// Every key Cairn stores.
async fn stored_keys<S: Store>(store: &S) -> usize {
    let mut tx = store.begin().unwrap();
    let mut n = 0;
    let mut begin = b"cairn".to_vec();
    let end = cairn_store::keyspace::strinc(b"cairn");
    loop {
        let rows = tx
            .get_range(
                &RangeRequest::new(begin.clone(), end.clone())
                    .limit(10_000)
                    .snapshot(),
            )
            .await
            .unwrap();
        n += rows.len();
        match rows.last() {
            Some(last) if rows.len() == 10_000 => {
                begin = cairn_store::keyspace::key_after(&last.key)
            }
            _ => return n,
        }
    }
}

/// Proves retention on both stores: 300 closed workflows (60 of them started twice, so their
/// first runs are retired, and listed by their id until then) are deleted with their histories
/// and visibility entries after a 3 s retention, counts fall to the open workflows, and the open ones (one of them closed by a
/// signal later) are kept until their own time comes.
async fn closed_workflows_are_deleted_after_retention<S: Store>(store: S, tag: &str) {
    let node = Node::builder()
        .workflow(quick)
        .workflow(waits)
        .config(NodeConfig {
            // Long enough that all 360 runs close, and the store is counted full, before the
            // first of them is due (300 sequential starts take ~1 s on a loaded 2-core box).
            retention_ms: 3_000,
            ..NodeConfig::default()
        })
        .start(store.clone())
        .await
        .unwrap();
    let client = node.client();
    for i in 0..5 {
        client
            .start(waits, &format!("{tag}-open-{i}"), ())
            .send()
            .await
            .unwrap();
    }
    let empty = stored_keys(&store).await;
    let mut handles = Vec::new();
    for i in 0..300u32 {
        handles.push(
            client
                .start(quick, &format!("{tag}-q-{i}"), i)
                .send()
                .await
                .unwrap(),
        );
    }
    for handle in handles {
        within("quick closes", handle.result()).await.unwrap();
    }
    let reused = format!("WorkflowId = '{tag}-q-0'");
    for i in 0..60u32 {
        let again = client
            .start(quick, &format!("{tag}-q-{i}"), i)
            .send()
            .await
            .unwrap();
        within("second run closes", again.result()).await.unwrap();
        if i == 0 {
            // A workflow id started twice lists both runs, the second first.
            let runs = client.list_workflows(&reused, None, None).await.unwrap();
            assert_eq!(runs.workflows.len(), 2, "{runs:?}");
            assert!(runs.workflows[0].started_unix_ms >= runs.workflows[1].started_unix_ms);
        }
    }
    let full = stored_keys(&store).await;
    assert!(full > empty + 300 * 5, "{full} keys stored, {empty} before");
    within("retention deletes the closed workflows", async {
        loop {
            if client.count_workflows("").await.unwrap() == 5 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The retired first runs go in the same passes; wait for the store to settle.
    let settled = within("retired runs deleted", async {
        loop {
            let n = stored_keys(&store).await;
            if n <= empty + 50 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(settled < full / 10, "{settled} keys left of {full}");
    let runs = client.list_workflows(&reused, None, None).await.unwrap();
    assert!(
        runs.workflows.is_empty(),
        "past runs outlived retention: {runs:?}"
    );
    assert_eq!(
        client
            .count_workflows("ExecutionStatus = 'Completed'")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        client
            .count_workflows("ExecutionStatus = 'Running' AND HistoryLength >= 0")
            .await
            .unwrap(),
        5
    );
    let gone = client.handle::<u32>(&format!("{tag}-q-7")).unwrap();
    assert!(
        matches!(gone.describe().await, Err(ClientError::NotFound { .. })),
        "a deleted workflow is not found"
    );
    // An open workflow closed now is kept for its own retention period, then deleted.
    let open = client.handle::<()>(&format!("{tag}-open-0")).unwrap();
    open.signal(&GO, ()).await.unwrap();
    within("the signaled workflow closes", open.result())
        .await
        .unwrap();
    assert!(open.describe().await.is_ok(), "kept right after it closed");
    within(
        "the signaled workflow is deleted after its retention",
        async {
            while client.count_workflows("").await.unwrap() != 4 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    for i in 1..5 {
        let handle = client.handle::<()>(&format!("{tag}-open-{i}")).unwrap();
        assert!(handle.describe().await.is_ok());
        handle.terminate("done").await.unwrap();
    }
    node.shutdown().await;
}

common::on_both_stores!(seed: 21; closed_workflows_are_deleted_after_retention);
