//! Visibility through the public SDK: indexed lists and maintained counts stay exact under
//! store faults and id reuse, a page reads O(page) keys whatever the store holds, and the
//! named bounds (page size, scan budget, sorted queries) answer with a token or a clear error.

mod common;

use cairn::{ClientError, Ctx, Node, Signal, WorkflowError, fail};
use cairn_store::{FaultConfig, FaultStore, MemStore, Store};
use common::within;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

const GO: Signal<()> = Signal::new("go");

async fn quick(_ctx: Ctx, outcome: String) -> Result<String, WorkflowError> {
    match outcome.as_str() {
        "fail" => Err(fail("Requested", "asked to fail")),
        other => Ok(other.to_string()),
    }
}

async fn waits(ctx: Ctx, _input: ()) -> Result<(), WorkflowError> {
    let go = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = go.clone();
    ctx.on_signal(&GO, move |()| seen.set(true));
    ctx.wait_condition(move || go.get()).await;
    Ok(())
}

async fn node<S: Store>(store: S) -> Node<S> {
    Node::builder()
        .workflow(quick)
        .workflow(waits)
        .start(store)
        .await
        .unwrap()
}

/// Waits until `query` counts `n`.
async fn count_reaches<S: Store>(client: &cairn::Client<S>, query: &str, n: u64) {
    within(query, async {
        loop {
            if client.count_workflows(query).await.unwrap() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The count of `query` three ways: the maintained counter, a walk of the index (a conjunct
/// no counter answers), and paging through the list.
async fn counted_three_ways<S: Store>(client: &cairn::Client<S>, query: &str) -> [u64; 3] {
    let counter = client.count_workflows(query).await.unwrap();
    let scan_query = format!("{query} AND HistoryLength >= 0");
    let scanned = client.count_workflows(&scan_query).await.unwrap();
    let mut listed = BTreeSet::new();
    let mut token = None;
    loop {
        let page = client
            .list_workflows(query, Some(7), token.as_deref())
            .await
            .unwrap();
        for w in page.workflows {
            assert!(
                listed.insert(w.workflow_id.clone()),
                "{} twice",
                w.workflow_id
            );
        }
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    [counter, scanned, listed.len() as u64]
}

/// Proves counts and lists agree with what happened, counted three ways, while the store
/// injects conflicts and both kinds of `MaybeCommitted` (each commit that writes a record
/// moves its counters exactly once), through closes, failures, signals and a reused id.
async fn counts_and_lists_stay_exact<S: Store>(store: S, tag: &str) {
    let node = node(store).await;
    let client = node.client();
    let n = 24;
    for i in 0..n {
        let outcome = if i % 4 == 0 { "fail" } else { "ok" };
        client
            .start(quick, &format!("{tag}-q-{i}"), outcome.to_string())
            .send()
            .await
            .unwrap();
        client
            .start(waits, &format!("{tag}-w-{i}"), ())
            .send()
            .await
            .unwrap();
    }
    count_reaches(
        &client,
        "WorkflowType = 'quick' AND ExecutionStatus = 'Completed'",
        18,
    )
    .await;
    count_reaches(
        &client,
        "WorkflowType = 'quick' AND ExecutionStatus = 'Failed'",
        6,
    )
    .await;
    for i in 0..n / 2 {
        let handle = client.handle::<()>(&format!("{tag}-w-{i}")).unwrap();
        handle.signal(&GO, ()).await.unwrap();
    }
    count_reaches(
        &client,
        "WorkflowType = 'waits' AND ExecutionStatus = 'Completed'",
        12,
    )
    .await;
    // A closed id started again is one workflow, now running again.
    let again = client
        .start(quick, &format!("{tag}-q-1"), "ok".to_string())
        .send()
        .await
        .unwrap();
    within("rerun", again.result()).await.unwrap();
    for (query, expected) in [
        ("", 48),
        ("WorkflowType = 'quick'", 24),
        ("ExecutionStatus = 'Completed'", 30),
        ("ExecutionStatus = 'Failed'", 6),
        ("ExecutionStatus = 'Running'", 12),
        ("WorkflowType = 'waits' AND ExecutionStatus = 'Running'", 12),
        (
            "ExecutionStatus = 'Completed' AND WorkflowType = 'quick'",
            18,
        ),
    ] {
        let scan = if query.is_empty() {
            "WorkflowType = 'quick' OR WorkflowType = 'waits'".to_string()
        } else {
            query.to_string()
        };
        let got = counted_three_ways(&client, &scan).await;
        assert_eq!(got, [expected; 3], "{query:?} (counter, index walk, list)");
        assert_eq!(
            client.count_workflows(query).await.unwrap(),
            expected,
            "{query:?}"
        );
    }
    for i in n / 2..n {
        let handle = client.handle::<()>(&format!("{tag}-w-{i}")).unwrap();
        handle.terminate("done").await.unwrap();
    }
    node.shutdown().await;
}

common::on_both_stores!(seed: 11; counts_and_lists_stay_exact);

/// Proves a page reads O(page) keys: over 1,500 closed workflows, the first page of a filtered
/// list, its next page and a count read a small fixed number of keys, not the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_keys_in_proportion_to_the_page() {
    let store = FaultStore::new(MemStore::new(), FaultConfig::none(1));
    let node = node(store.clone()).await;
    let client = node.client();
    let n = 1_500;
    let handles = futures::future::join_all((0..n).map(|i| {
        let client = client.clone();
        async move {
            client
                .start(quick, &format!("r-{i}"), "ok".to_string())
                .send()
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(handles.len(), n);
    count_reaches(&client, "ExecutionStatus = 'Completed'", n as u64).await;
    let read = || store.stats().keys_read.load(Ordering::Relaxed);
    let query = "WorkflowType = 'quick' AND ExecutionStatus = 'Completed'";
    let before = read();
    let first = client.list_workflows(query, Some(10), None).await.unwrap();
    let second = client
        .list_workflows(query, Some(10), first.next_page_token.as_deref())
        .await
        .unwrap();
    let count = client.count_workflows(query).await.unwrap();
    let spent = read() - before;
    assert_eq!((first.workflows.len(), second.workflows.len()), (10, 10));
    assert_eq!(count, n as u64);
    let newest: Vec<u64> = first
        .workflows
        .iter()
        .chain(&second.workflows)
        .map(|w| w.started_unix_ms)
        .collect();
    assert!(newest.windows(2).all(|p| p[0] >= p[1]), "newest first");
    // Two pages of 11 entries and 11 records each, one counter, plus whatever the node's own
    // loops read meanwhile: far below the 1,500 records a scan reads.
    assert!(spent < 200, "two pages and a count read {spent} keys");
    node.shutdown().await;
}

/// Proves the bounds: a page size past the maximum is refused, a query that matches nothing
/// stops after examining `LIST_SCAN_ENTRIES_MAX` entries with a token to resume from (and
/// resuming reaches the end), and an `ORDER BY` over more than `SORTED_QUERY_WORKFLOWS_MAX`
/// matches is refused with a clear error, while a narrower one is sorted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_bounds_answer_with_tokens_or_errors() {
    let node = node(MemStore::new()).await;
    let client = node.client();
    let n = cairn::LIST_SCAN_ENTRIES_MAX + 50;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        futures::future::join_all(chunk.iter().map(|i| {
            let client = client.clone();
            async move {
                client
                    .start(quick, &format!("b-{i:05}"), "ok".to_string())
                    .send()
                    .await
                    .unwrap()
            }
        }))
        .await;
    }
    count_reaches(&client, "ExecutionStatus = 'Completed'", n as u64).await;
    assert!(matches!(
        client
            .list_workflows("", Some(cairn::LIST_PAGE_SIZE_MAX + 1), None)
            .await,
        Err(ClientError::InvalidPageSize { .. })
    ));
    let nothing = "WorkflowType = 'quick' AND WorkflowId STARTS_WITH 'none-'";
    let first = client.list_workflows(nothing, Some(5), None).await.unwrap();
    assert!(first.workflows.is_empty());
    let token = first
        .next_page_token
        .expect("the scan budget ran out before the index did: resume from here");
    let rest = client
        .list_workflows(nothing, Some(5), Some(&token))
        .await
        .unwrap();
    assert_eq!((rest.workflows.len(), rest.next_page_token), (0, None));
    let broad = client
        .list_workflows("ORDER BY WorkflowId ASC", Some(5), None)
        .await;
    assert!(
        matches!(broad, Err(ClientError::QueryTooBroad { limit }) if limit == cairn::SORTED_QUERY_WORKFLOWS_MAX),
        "{broad:?}"
    );
    let narrow = client
        .list_workflows(
            "WorkflowId STARTS_WITH 'b-0000' ORDER BY WorkflowId DESC",
            Some(3),
            None,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = narrow
        .workflows
        .iter()
        .map(|w| w.workflow_id.as_str())
        .collect();
    assert_eq!(ids, ["b-00009", "b-00008", "b-00007"]);
    node.shutdown().await;
}

const REGION: cairn::SearchAttribute<String> = cairn::SearchAttribute::new("Region");
const RANK: cairn::SearchAttribute<i64> = cairn::SearchAttribute::new("Rank");

/// Reads the memo and search attributes it started with; the first run waits for `GO`, upserts
/// `Rank` and continues as new; the second returns what it sees.
async fn noted(ctx: Ctx, round: u32) -> Result<(Option<String>, String, i64), WorkflowError> {
    let owner = ctx
        .memo::<String>("owner")
        .transpose()
        .map_err(|e| fail("Memo", e.to_string()))?;
    let attributes = ctx.search_attributes();
    let region = match attributes.get("Region") {
        Some(cairn::SearchValue::Keyword(region)) => region.clone(),
        other => return Err(fail("Region", format!("{other:?}"))),
    };
    if round == 0 {
        let go = std::rc::Rc::new(std::cell::Cell::new(false));
        let seen = go.clone();
        ctx.on_signal(&GO, move |()| seen.set(true));
        ctx.wait_condition(move || go.get()).await;
        ctx.upsert_search_attribute(&RANK, 5)
            .map_err(|e| fail("Rank", e.to_string()))?;
        return Err(ctx.continue_as_new(&1u32));
    }
    let rank = match attributes.get("Rank") {
        Some(cairn::SearchValue::Int(rank)) => *rank,
        _ => -1,
    };
    Ok((owner, region, rank))
}

async fn noted_node<S: Store>(store: S) -> Node<S> {
    Node::builder()
        .workflow(noted)
        .search_attribute(&REGION)
        .search_attribute(&RANK)
        .start(store)
        .await
        .unwrap()
}

/// Proves a start's memo and search attributes: listed by them before the run's first step,
/// shown by describe, seen by the workflow code, kept across a node restart and into the run
/// a continue-as-new starts; a memo past its bound or an attribute of the wrong type is
/// refused with its own error and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memo_and_start_attributes_last_across_a_restart_and_continue_as_new() {
    let store = MemStore::new();
    let node = noted_node(store.clone()).await;
    let client = node.client();
    client
        .start(noted, "noted-1", 0u32)
        .memo("owner", &"ops")
        .search_attribute(&REGION, "eu".to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(client.count_workflows("Region = 'eu'").await.unwrap(), 1);
    let described = client
        .handle::<(Option<String>, String, i64)>("noted-1")
        .unwrap()
        .describe()
        .await
        .unwrap();
    assert_eq!(
        described.summary.memo["owner"].decode::<String>().unwrap(),
        "ops"
    );
    let e = client
        .start(noted, "noted-big", 0u32)
        .memo("blob", &"x".repeat(cairn_types::limits::MEMO_BYTES_MAX))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidMemo(_)), "{e}");
    let e = node
        .runtime()
        .start_workflow(cairn_runtime::StartWorkflow {
            workflow_id: cairn_types::WorkflowId::new("noted-typed").unwrap(),
            workflow_type: "noted".into(),
            input: cairn_types::Payload::encode(&0u32).unwrap(),
            id_reuse_policy: Default::default(),
            timeouts: Default::default(),
            request_id: None,
            remote: None,
            memo: Default::default(),
            search_attributes: [("Region".to_string(), cairn::SearchValue::Int(1))].into(),
            cron_schedule: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::InvalidSearchAttributes { reason } if reason.contains("declared Keyword")),
        "{e}"
    );
    assert_eq!(
        client
            .count_workflows("WorkflowType = 'noted'")
            .await
            .unwrap(),
        1,
        "refused starts wrote nothing"
    );
    // A restart in the middle: the waiting run's attributes come back from the store.
    node.shutdown().await;
    let node = noted_node(store).await;
    let client = node.client();
    let handle = client
        .handle::<(Option<String>, String, i64)>("noted-1")
        .unwrap();
    handle.signal(&GO, ()).await.unwrap();
    let seen = within("the continued run", handle.result()).await.unwrap();
    assert_eq!(seen, (Some("ops".to_string()), "eu".to_string(), 5));
    assert_eq!(
        client
            .count_workflows("Region = 'eu' AND Rank = 5")
            .await
            .unwrap(),
        1,
        "the continued run is listed by what it kept"
    );
    node.shutdown().await;
}
