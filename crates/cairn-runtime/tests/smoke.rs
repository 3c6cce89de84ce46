//! End-to-end through the node on MemStore: a workflow with an activity and a timer completes.

use cairn_core::{WorkflowContext, WorkflowError};
use cairn_runtime::{ActivityContext, Node, NodeConfig, Outcome, Registry, StartWorkflow};
use cairn_store::MemStore;
use cairn_types::{ActivityOptions, ActivityTimeouts, Payload, RetryPolicy, WorkflowId};
use std::sync::Arc;
use std::time::Duration;

/// Proves a run schedules an activity, sleeps, and completes with the activity's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_then_timer_completes() {
    let mut registry = Registry::default();
    registry.workflow(
        "Greet",
        Arc::new(|ctx: WorkflowContext, input: Payload| {
            Box::pin(async move {
                let options = ActivityOptions {
                    task_queue: "default".into(),
                    timeouts: ActivityTimeouts::start_to_close(Duration::from_secs(5)),
                    retry: RetryPolicy::default(),
                };
                let greeting = ctx
                    .schedule_activity("hello", input, options)
                    .await
                    .map_err(WorkflowError::from)?;
                ctx.sleep(Duration::from_millis(20)).await;
                Ok(greeting)
            })
        }),
    );
    registry.activity(
        "hello",
        Arc::new(|_ctx: ActivityContext, input: Payload| {
            Box::pin(async move {
                let name: String = input.decode().unwrap();
                Ok(Payload::encode(&format!("hello {name}")).unwrap())
            })
        }),
    );
    let node = Node::start(MemStore::new(), registry, NodeConfig::default())
        .await
        .unwrap();
    let id = WorkflowId::new("greet-1").unwrap();
    node.start_workflow(StartWorkflow {
        workflow_id: id.clone(),
        workflow_type: "Greet".into(),
        input: Payload::encode("cairn").unwrap(),
        id_reuse_policy: Default::default(),
        timeouts: Default::default(),
        request_id: None,
        remote: None,
        memo: Default::default(),
        search_attributes: Default::default(),
        cron_schedule: None,
    })
    .await
    .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), node.result(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Completed(Payload::encode("hello cairn").unwrap())
    );
    let history = node.history(&id).await.unwrap();
    let names: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names.first(), Some(&"WorkflowExecutionStarted"));
    assert!(names.contains(&"TimerFired"));
    node.shutdown().await;
}

/// Proves a node id that task tokens and keys could not carry is refused at start, by name.
#[tokio::test]
async fn unusable_node_ids_are_refused_at_start() {
    for bad in ["", "rack/node-1", "tab\tnode"] {
        let config = NodeConfig {
            node_id: bad.to_string(),
            ..NodeConfig::default()
        };
        let error = Node::start(MemStore::new(), Registry::default(), config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(error.to_string().contains("node id"), "{bad:?}: {error}");
    }
}
