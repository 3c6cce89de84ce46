//! Workflows started with a cron schedule (Temporal's `cron_schedule`), through the public
//! SDK: each run waits for the schedule's time, each completed or failed run starts the next,
//! `WorkflowId = 'id'` lists every run a page at a time, a terminate ends the chain, and a
//! crash while a run waits loses none of it.

mod common;

use cairn::{ClientError, Ctx, Node, NodeConfig, RunStatus, WorkflowError, WorkflowSummary, fail};
use cairn_store::{MemStore, Store};
use common::within;
use std::time::Duration;

/// Fails every third run, so the chain goes on through failures too.
async fn tick(ctx: Ctx, label: String) -> Result<String, WorkflowError> {
    let n = ctx.random() % 3;
    if n == 0 {
        return Err(fail("Unlucky", "the third of runs fail"));
    }
    Ok(format!("{label}-{n}"))
}

async fn node<S: Store>(store: S) -> Node<S> {
    Node::builder()
        .workflow(tick)
        .config(NodeConfig {
            lease_timeout_ms: 60_000,
            ..NodeConfig::default()
        })
        .start(store)
        .await
        .expect("node starts")
}

/// Every run of `id`, newest first, read a page of `page_size` at a time.
async fn runs<S: Store>(node: &Node<S>, id: &str, page_size: usize) -> Vec<WorkflowSummary> {
    let client = node.client();
    let query = format!("WorkflowId = '{id}'");
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1_000 {
        let page = client
            .list_workflows(&query, Some(page_size), token.as_deref())
            .await
            .unwrap();
        assert!(page.workflows.len() <= page_size);
        all.extend(page.workflows);
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => return all,
        }
    }
    panic!("paging through the runs of {id} did not end");
}

/// Waits until `id` has at least `closed` closed runs, and returns its runs.
async fn closed_runs<S: Store>(node: &Node<S>, id: &str, closed: usize) -> Vec<WorkflowSummary> {
    within("closed runs", async {
        loop {
            let all = runs(node, id, 100).await;
            if all.iter().filter(|w| w.closed_unix_ms.is_some()).count() >= closed {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_workflow_runs_each_time_and_lists_every_run() {
    let node = node(MemStore::new()).await;
    let client = node.client();
    let started = std::time::Instant::now();
    client
        .start(tick, "every-second", "t".to_string())
        .cron_schedule("@every 1s")
        .send()
        .await
        .unwrap();
    let all = closed_runs(&node, "every-second", 3).await;
    // Each run waits for its time: three closed runs take at least three periods.
    assert!(started.elapsed() >= Duration::from_secs(3), "{all:?}");
    // The current run is the newest and waits for its time; the rest completed or failed
    // (a cron run that ends starts the next: none is `ContinuedAsNew`).
    assert_eq!(all[0].status, Some(RunStatus::Running), "{all:?}");
    for run in &all[1..] {
        assert!(
            matches!(run.status, Some(RunStatus::Completed | RunStatus::Failed)),
            "{run:?}"
        );
    }
    // Newest first, each run once, the same whatever the page size.
    let starts: Vec<u64> = all.iter().map(|w| w.started_unix_ms).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{starts:?}");
    let ids: std::collections::BTreeSet<_> = all.iter().map(|w| w.run_id).collect();
    assert_eq!(ids.len(), all.len());
    let one_at_a_time = runs(&node, "every-second", 1).await;
    let prefix: Vec<_> = one_at_a_time.iter().map(|w| w.run_id).collect();
    assert!(prefix.len() >= all.len());
    assert_eq!(
        prefix[prefix.len() - (all.len() - 1)..],
        all[1..].iter().map(|w| w.run_id).collect::<Vec<_>>()[..],
        "the closed runs page one at a time in the same order"
    );
    // A filter applies to every run; a count counts runs.
    let completed = client
        .count_workflows("WorkflowId = 'every-second' AND ExecutionStatus = 'Completed'")
        .await
        .unwrap();
    let failed = client
        .count_workflows("WorkflowId = 'every-second' AND ExecutionStatus = 'Failed'")
        .await
        .unwrap();
    assert!(completed + failed >= 3, "{completed} + {failed}");

    // A terminate ends the chain: the waiting run closes and none follows.
    let handle = client.handle::<String>("every-second").unwrap();
    handle.terminate("enough").await.unwrap();
    let before = within("terminated", async {
        loop {
            let all = runs(&node, "every-second", 100).await;
            if all[0].status == Some(RunStatus::Terminated) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = runs(&node, "every-second", 100).await;
    assert_eq!(
        after.len(),
        before.len(),
        "a run started after the terminate"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_cron_schedule_is_refused_and_starts_nothing() {
    let node = node(MemStore::new()).await;
    let client = node.client();
    for bad in [
        "every minute",
        "@every 5x",
        "61 * * * *",
        "CRON_TZ=Nowhere/Else @hourly",
    ] {
        let e = client
            .start(tick, "bad-cron", "t".to_string())
            .cron_schedule(bad)
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::InvalidCronSchedule { .. }),
            "{bad:?}: {e}"
        );
    }
    assert!(runs(&node, "bad-cron", 10).await.is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_chain_survives_a_crash_while_a_run_waits() {
    let (store, dir) = common::embedded_store();
    let first = node(store).await;
    first
        .client()
        .start(tick, "cron-crash", "c".to_string())
        .cron_schedule("@every 1s")
        .send()
        .await
        .unwrap();
    closed_runs(&first, "cron-crash", 1).await;
    // The process dies with a run waiting for its time.
    first.crash();
    let store = common::reopen_embedded(dir.path()).await;
    let second = node(store).await;
    let all = closed_runs(&second, "cron-crash", 3).await;
    assert_eq!(all[0].status, Some(RunStatus::Running), "{all:?}");
    assert!(
        all[1..].iter().all(|w| w.closed_unix_ms.is_some()),
        "{all:?}"
    );
    second
        .client()
        .handle::<String>("cron-crash")
        .unwrap()
        .terminate("done")
        .await
        .unwrap();
    second.shutdown().await;
}
