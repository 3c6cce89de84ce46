//! Workflow tasks of remote workflows through the gRPC frontend, driven with Temporal's
//! generated client as an SDK worker drives it: many workflows over several pollers at once,
//! a task held past its timeout, late and forged answers, a signal racing a closing
//! completion, queries, and a node killed while a worker holds a task.

use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::collections::HashMap;
use std::time::Duration;
use temporalio_protos::temporal::api::command::v1::{self as cmd, command::Attributes as A};
use temporalio_protos::temporal::api::common::v1::{
    Payload, Payloads, WorkflowExecution, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::{
    CommandType, EventType, HistoryEventFilterType, QueryResultType,
};
use temporalio_protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_protos::temporal::api::query::v1::{WorkflowQuery, WorkflowQueryResult};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use temporalio_protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const QUEUE: &str = "py-workflows";

struct Server {
    node: cairn::Node<EmbeddedStore>,
    address: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn serve(dir: &std::path::Path) -> Server {
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap();
    let node = cairn::Node::builder()
        .config(cairn::NodeConfig {
            node_id: "wft".into(),
            shard_count: 4,
            remote_activities: true,
            ..cairn::NodeConfig::default()
        })
        .start(store)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cairn_temporal::serve(
        listener,
        node.runtime(),
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        node,
        address,
        stop,
        served,
    }
}

impl Server {
    async fn client(&self) -> WorkflowServiceClient<Channel> {
        WorkflowServiceClient::connect(format!("http://{}", self.address))
            .await
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
        self.node.shutdown().await;
    }
}

fn json(value: serde_json::Value) -> Payloads {
    Payloads {
        payloads: vec![Payload {
            metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
            data: serde_json::to_vec(&value).unwrap(),
            ..Default::default()
        }],
    }
}

async fn start(client: &mut WorkflowServiceClient<Channel>, id: &str, task_timeout_s: i64) {
    client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: id.into(),
            workflow_type: Some(WorkflowType {
                name: "PythonWorkflow".into(),
            }),
            task_queue: Some(TaskQueue {
                name: QUEUE.into(),
                ..Default::default()
            }),
            input: Some(json(serde_json::json!(id))),
            workflow_task_timeout: Some(prost_wkt_types::Duration {
                seconds: task_timeout_s,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn poll(client: &mut WorkflowServiceClient<Channel>) -> ws::PollWorkflowTaskQueueResponse {
    client
        .poll_workflow_task_queue(ws::PollWorkflowTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(TaskQueue {
                name: QUEUE.into(),
                kind: 1,
                ..Default::default()
            }),
            identity: "test-worker".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn command(attributes: A) -> cmd::Command {
    let command_type = match &attributes {
        A::StartTimerCommandAttributes(_) => CommandType::StartTimer,
        A::CompleteWorkflowExecutionCommandAttributes(_) => CommandType::CompleteWorkflowExecution,
        _ => CommandType::Unspecified,
    };
    cmd::Command {
        command_type: command_type as i32,
        attributes: Some(attributes),
        ..Default::default()
    }
}

fn timer(id: &str) -> cmd::Command {
    command(A::StartTimerCommandAttributes(
        cmd::StartTimerCommandAttributes {
            timer_id: id.into(),
            start_to_fire_timeout: Some(prost_wkt_types::Duration {
                seconds: 0,
                nanos: 20_000_000,
            }),
        },
    ))
}

fn finish(result: serde_json::Value) -> cmd::Command {
    command(A::CompleteWorkflowExecutionCommandAttributes(
        cmd::CompleteWorkflowExecutionCommandAttributes {
            result: Some(json(result)),
        },
    ))
}

async fn complete(
    client: &mut WorkflowServiceClient<Channel>,
    token: Vec<u8>,
    commands: Vec<cmd::Command>,
    query_results: HashMap<String, WorkflowQueryResult>,
) -> Result<(), tonic::Status> {
    client
        .respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: token,
            commands,
            query_results,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn types(task: &ws::PollWorkflowTaskQueueResponse) -> Vec<EventType> {
    task.history
        .as_ref()
        .unwrap()
        .events
        .iter()
        .map(|e| EventType::try_from(e.event_type).unwrap())
        .collect()
}

fn input_of(task: &ws::PollWorkflowTaskQueueResponse) -> String {
    let first = &task.history.as_ref().unwrap().events[0];
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) = &first.attributes else {
        panic!("first event is not the start: {first:?}");
    };
    serde_json::from_slice(&a.input.as_ref().unwrap().payloads[0].data).unwrap()
}

async fn closed_result(client: &mut WorkflowServiceClient<Channel>, id: &str) -> serde_json::Value {
    let answer = client
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: id.into(),
                run_id: String::new(),
            }),
            wait_new_event: true,
            history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let events = answer.history.unwrap_or_default().events;
    match events.first().and_then(|e| e.attributes.as_ref()) {
        Some(Attributes::WorkflowExecutionCompletedEventAttributes(done)) => {
            serde_json::from_slice(&done.result.as_ref().unwrap().payloads[0].data).unwrap()
        }
        other => panic!("{id} did not complete: {other:?}"),
    }
}

/// A worker: each workflow starts a timer ("1"), then completes with its input.
async fn worker(mut client: WorkflowServiceClient<Channel>, done: usize) -> usize {
    let mut completed = 0;
    let mut tasks = 0;
    while completed < done {
        let task = poll(&mut client).await;
        if task.task_token.is_empty() {
            continue;
        }
        tasks += 1;
        let seen = types(&task);
        assert_eq!(
            &seen[seen.len() - 2..],
            [
                EventType::WorkflowTaskScheduled,
                EventType::WorkflowTaskStarted
            ],
            "a task's history ends with its own task"
        );
        let commands = if seen.contains(&EventType::TimerFired) {
            completed += 1;
            vec![finish(serde_json::json!(format!(
                "done {}",
                input_of(&task)
            )))]
        } else {
            vec![timer("1")]
        };
        complete(&mut client, task.task_token, commands, HashMap::new())
            .await
            .unwrap();
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_remote_workflows_over_several_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    const N: usize = 60;
    const POLLERS: usize = 4;
    for i in 0..N {
        start(&mut client, &format!("many-{i}"), 10).await;
    }
    let mut workers = Vec::new();
    for _ in 0..POLLERS {
        workers.push(tokio::spawn(worker(server.client().await, N / POLLERS)));
    }
    let mut tasks = 0;
    for w in workers {
        tasks += tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("the workers finish")
            .unwrap();
    }
    assert_eq!(tasks, 2 * N, "two tasks per workflow, each handed out once");
    for i in 0..N {
        assert_eq!(
            closed_result(&mut client, &format!("many-{i}")).await,
            serde_json::json!(format!("done many-{i}"))
        );
    }
    assert_eq!(server.node.runtime().workflow_tasks_queued(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_past_its_timeout_is_handed_out_again_and_late_or_forged_answers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    start(&mut client, "held", 1).await;
    let first = poll(&mut client).await;
    assert_eq!(first.attempt, 1);
    // Not answered: after the 1 s task timeout the task is owed again, attempt 2.
    let second = poll(&mut client).await;
    assert_eq!(second.attempt, 2, "handed out again after its timeout");
    assert_eq!(
        second.workflow_execution, first.workflow_execution,
        "the same workflow's task"
    );
    // The first attempt's timeout is in the history, as Temporal writes it; no task has
    // completed yet.
    assert_eq!(
        types(&second),
        vec![
            EventType::WorkflowExecutionStarted,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted,
            EventType::WorkflowTaskTimedOut,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted,
        ]
    );
    assert_eq!(second.previous_started_event_id, 0);
    let late = complete(
        &mut client,
        first.task_token,
        vec![finish(serde_json::json!(1))],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
    let forged = complete(
        &mut client,
        b"cairn-wft/wft/not-this-life/0/x/1/1".to_vec(),
        vec![],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(forged.code(), Code::NotFound, "{forged:?}");
    let garbage = complete(&mut client, b"garbage".to_vec(), vec![], HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    // A command Cairn does not take fails the task with a clear error.
    let refused = complete(
        &mut client,
        second.task_token.clone(),
        vec![command(A::ScheduleNexusOperationCommandAttributes(
            Default::default(),
        ))],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    assert!(
        refused.message().contains("ScheduleNexusOperation"),
        "{refused:?}"
    );
    let refused_at = std::time::Instant::now();
    let third = poll(&mut client).await;
    assert_eq!(third.attempt, 3, "the refused task is handed out again");
    // Failing twice in a row: handed out after a pause (1 s, then 2 s), not in a hot loop.
    assert!(
        refused_at.elapsed() >= Duration::from_millis(900),
        "{:?}",
        refused_at.elapsed()
    );
    // A result too large for one stored event is refused whole; the run stays open.
    let oversized = complete(
        &mut client,
        third.task_token.clone(),
        vec![finish(serde_json::json!("x".repeat(100_000)))],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert!(
        oversized.message().contains("the limit is 90000 bytes"),
        "{oversized:?}"
    );
    let oversized_at = std::time::Instant::now();
    let fourth = poll(&mut client).await;
    assert_eq!(
        fourth.attempt, 4,
        "the oversized completion's task is handed out again"
    );
    assert!(
        oversized_at.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        oversized_at.elapsed()
    );
    complete(
        &mut client,
        fourth.task_token,
        vec![finish(serde_json::json!("ok"))],
        HashMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        closed_result(&mut client, "held").await,
        serde_json::json!("ok")
    );
    // Only a streak's first failure is recorded (attempts 2 and 3 failed too).
    let history = client
        .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: "held".into(),
                run_id: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let failures: Vec<i32> = history
        .history
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_type)
        .filter(|t| {
            *t == EventType::WorkflowTaskTimedOut as i32
                || *t == EventType::WorkflowTaskFailed as i32
        })
        .collect();
    assert_eq!(failures, vec![EventType::WorkflowTaskTimedOut as i32]);
    server.stop().await;
}

/// Proves a worker's failure of a workflow task is in the history (the first of a streak,
/// with the worker's failure), and the next task's `previous_started_event_id` still names
/// the last task that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_recorded_with_the_workers_failure() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    start(&mut client, "fails-once", 10).await;
    let first = poll(&mut client).await;
    complete(
        &mut client,
        first.task_token,
        vec![timer("1")],
        HashMap::new(),
    )
    .await
    .unwrap();
    let second = poll(&mut client).await;
    let completed_started = second.previous_started_event_id;
    assert!(completed_started > 0);
    client
        .respond_workflow_task_failed(ws::RespondWorkflowTaskFailedRequest {
            namespace: "default".into(),
            task_token: second.task_token,
            failure: Some(temporalio_protos::temporal::api::failure::v1::Failure {
                message: "the code raised".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let third = poll(&mut client).await;
    assert_eq!(third.attempt, 2);
    assert_eq!(
        third.previous_started_event_id, completed_started,
        "the failed task is not the last completed one"
    );
    let events = &third.history.as_ref().unwrap().events;
    let failed = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskFailedEventAttributes(a)) => Some(a),
            _ => None,
        })
        .expect("a WorkflowTaskFailed event");
    assert_eq!(
        failed.failure.as_ref().map(|f| f.message.as_str()),
        Some("the code raised")
    );
    complete(
        &mut client,
        third.task_token,
        vec![finish(serde_json::json!("done"))],
        HashMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        closed_result(&mut client, "fails-once").await,
        serde_json::json!("done")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_racing_a_closing_completion_and_queries_reach_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    start(&mut client, "race", 10).await;
    let task = poll(&mut client).await;
    signal_late(&mut client, "race").await;
    let stale = complete(
        &mut client,
        task.task_token,
        vec![finish(serde_json::json!("early"))],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(stale.code(), Code::InvalidArgument, "{stale:?}");
    // A query waits for the next task, attached to it.
    let query = status_query(server.client().await, "race");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = poll(&mut client).await;
    assert!(
        types(&next).contains(&EventType::WorkflowExecutionSignaled),
        "the signal is in the next task: {:?}",
        types(&next)
    );
    assert_eq!(next.queries.len(), 1, "the query rides on the task");
    let (id, q) = next.queries.iter().next().unwrap();
    assert_eq!(q.query_type, "status");
    let answer = HashMap::from([(
        id.clone(),
        WorkflowQueryResult {
            result_type: QueryResultType::Answered as i32,
            answer: Some(json(serde_json::json!("signalled"))),
            ..Default::default()
        },
    )]);
    complete(
        &mut client,
        next.task_token,
        vec![finish(serde_json::json!("late"))],
        answer,
    )
    .await
    .unwrap();
    assert_eq!(query.await.unwrap(), serde_json::json!("signalled"));
    assert_eq!(
        closed_result(&mut client, "race").await,
        serde_json::json!("late")
    );
    server.stop().await;
}

/// Queries workflow `id`'s `status` in the background: its answer, decoded.
fn status_query(
    mut querier: WorkflowServiceClient<Channel>,
    id: &str,
) -> tokio::task::JoinHandle<serde_json::Value> {
    let id = id.to_string();
    tokio::spawn(async move {
        let answered = querier
            .query_workflow(ws::QueryWorkflowRequest {
                namespace: "default".into(),
                execution: Some(WorkflowExecution {
                    workflow_id: id,
                    run_id: String::new(),
                }),
                query: Some(WorkflowQuery {
                    query_type: "status".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        serde_json::from_slice(&answered.query_result.unwrap().payloads[0].data).unwrap()
    })
}

/// Signals workflow `id` with `late` (7).
async fn signal_late(client: &mut WorkflowServiceClient<Channel>, id: &str) {
    client
        .signal_workflow_execution(ws::SignalWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id: id.into(),
                run_id: String::new(),
            }),
            signal_name: "late".into(),
            input: Some(json(serde_json::json!(7))),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A task held by a worker when its node died, whose run got a signal after the restart: the
/// worker's completion is refused (it did not see the signal), and the task is handed out
/// again from the store with the signal in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_a_worker_holds_a_task_hands_it_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    start(&mut client, "killed", 1).await;
    let task = poll(&mut client).await;
    complete(
        &mut client,
        task.task_token,
        vec![timer("1")],
        HashMap::new(),
    )
    .await
    .unwrap();
    let held = poll(&mut client).await;
    assert!(types(&held).contains(&EventType::TimerFired));
    let _ = server.stop.send(());
    let _ = server.served.await;
    server.node.crash();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    signal_late(&mut client, "killed").await;
    let refused = complete(
        &mut client,
        held.task_token.clone(),
        vec![finish(serde_json::json!(0))],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::NotFound,
        "a task of the node's previous life whose history grew since"
    );
    let again = tokio::time::timeout(Duration::from_secs(30), poll(&mut client))
        .await
        .unwrap();
    assert!(
        types(&again).contains(&EventType::WorkflowExecutionSignaled),
        "the task again, from the store, with the signal: {:?}",
        types(&again)
    );
    complete(
        &mut client,
        again.task_token,
        vec![finish(serde_json::json!("after"))],
        HashMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        closed_result(&mut client, "killed").await,
        serde_json::json!("after")
    );
    server.stop().await;
}

/// An earlier holder's worker answers queries by the ids its own hand-out carried; the ids
/// of this life's queries may be the same. Its completion applies (the history is
/// unchanged), but its answers do not answer the query waiting here, which rides on the next
/// task instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_holders_query_answers_do_not_answer_this_lifes_queries() {
    let dir = tempfile::tempdir().unwrap();
    // This life hands the task out again at once; a query sent then waits for the next task.
    let (server, mut client, held, again) = held_across_a_crash(dir.path(), "asked").await;
    assert!(again.queries.is_empty());
    let query = status_query(server.client().await, "asked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The earlier holder's worker answers ids 0 to 99, whatever this life numbers its query.
    let stale = (0..100)
        .map(|id| {
            let result = WorkflowQueryResult {
                result_type: QueryResultType::Answered as i32,
                answer: Some(json(serde_json::json!("stale"))),
                ..Default::default()
            };
            (id.to_string(), result)
        })
        .collect();
    complete(&mut client, held.task_token, vec![timer("1")], stale)
        .await
        .unwrap();
    // No task is owed until the timer fires: the query goes out on its own.
    let next = tokio::time::timeout(Duration::from_secs(30), poll(&mut client))
        .await
        .unwrap();
    assert!(next.query.is_some(), "a query task: {:?}", types(&next));
    let token = String::from_utf8(next.task_token.clone()).unwrap();
    let id = token.rsplit('/').next().unwrap();
    assert!(
        id.parse::<u32>().is_ok_and(|i| i < 100),
        "{token}: its query id is among the stale answers"
    );
    client
        .respond_query_task_completed(ws::RespondQueryTaskCompletedRequest {
            namespace: "default".into(),
            task_token: next.task_token,
            completed_type: QueryResultType::Answered as i32,
            query_result: Some(json(serde_json::json!("fresh"))),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(query.await.unwrap(), serde_json::json!("fresh"));
    server.stop().await;
}

/// Starts workflow `id` (task timeout 120 s) on a node in `dir`, takes its first task, kills
/// the node and starts it again: the restarted server, a client of it, the task held across
/// the crash and the same task as the restarted node hands it out again (well before the
/// timeout).
async fn held_across_a_crash(
    dir: &std::path::Path,
    id: &str,
) -> (
    Server,
    WorkflowServiceClient<Channel>,
    ws::PollWorkflowTaskQueueResponse,
    ws::PollWorkflowTaskQueueResponse,
) {
    let server = serve(dir).await;
    let mut client = server.client().await;
    start(&mut client, id, 120).await;
    let held = poll(&mut client).await;
    let _ = server.stop.send(());
    let _ = server.served.await;
    server.node.crash();
    let server = serve(dir).await;
    let mut client = server.client().await;
    let again = tokio::time::timeout(Duration::from_secs(30), poll(&mut client))
        .await
        .expect("the task is offered again well before its 120 s timeout");
    (server, client, held, again)
}

/// Two workers hold one task of workflow `id` (an earlier holder's hand-out, `held`, and the
/// current holder's, `again`): `held`'s completion closes the run with "held", `again`'s is
/// refused.
async fn first_completion_wins(
    client: &mut WorkflowServiceClient<Channel>,
    id: &str,
    held: ws::PollWorkflowTaskQueueResponse,
    again: ws::PollWorkflowTaskQueueResponse,
) {
    complete(
        client,
        held.task_token,
        vec![finish(serde_json::json!("held"))],
        HashMap::new(),
    )
    .await
    .unwrap();
    let second = complete(
        client,
        again.task_token,
        vec![finish(serde_json::json!("again"))],
        HashMap::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(second.code(), Code::NotFound, "the task was completed");
    assert_eq!(closed_result(client, id).await, serde_json::json!("held"));
}

/// The shard's new holder (here the node itself, restarted) offers a task the dead node had
/// handed out at once: waiting for the task's check timer would cost the whole task timeout
/// (two minutes here). The run is as the worker holding it saw it, so, as on Temporal (where
/// the task's start is stored), that worker's completion still applies: the first of the two
/// completions wins and the other is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_when_its_node_died_is_offered_at_once_and_either_hold_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut client, held, again) = held_across_a_crash(dir.path(), "held-long").await;
    assert_eq!(types(&again), types(&held), "the same task, from the store");
    first_completion_wins(&mut client, "held-long", held, again).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_starts_and_awaits_a_workflow_an_sdk_worker_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let mut client = server.client().await;
    let handle = server
        .node
        .client()
        .start_remote::<_, String>("PythonWorkflow", QUEUE, "from-rust", ("Ada", 36))
        .send()
        .await
        .unwrap();
    let task = poll(&mut client).await;
    assert_eq!(task.workflow_type.as_ref().unwrap().name, "PythonWorkflow");
    let first = &task.history.as_ref().unwrap().events[0];
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) = &first.attributes
    else {
        panic!("{first:?}");
    };
    let input = &started.input.as_ref().unwrap().payloads[0];
    assert_eq!(input.metadata["encoding"], b"json/plain");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&input.data).unwrap(),
        serde_json::json!(["Ada", 36]),
        "Rust's MessagePack input reaches the worker as JSON"
    );
    complete(
        &mut client,
        task.task_token,
        vec![finish(serde_json::json!("hello Ada"))],
        HashMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(handle.result().await.unwrap(), "hello Ada");
    server.stop().await;
}

fn schedule_activity(id: &str, input: serde_json::Value) -> cmd::Command {
    cmd::Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(A::ScheduleActivityTaskCommandAttributes(
            cmd::ScheduleActivityTaskCommandAttributes {
                activity_id: id.into(),
                activity_type: Some(temporalio_protos::temporal::api::common::v1::ActivityType {
                    name: "double".into(),
                }),
                task_queue: Some(TaskQueue {
                    name: "acts".into(),
                    ..Default::default()
                }),
                input: Some(json(input)),
                start_to_close_timeout: Some(prost_wkt_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Two nodes over one store; a worker talks to node A only. The runs whose shards node B holds
/// reach it too: their workflow tasks and activity attempts are taken from B through the peer
/// transport, and the worker's answers, sent to A, go on to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_polling_one_node_gets_the_tasks_of_every_shard() {
    let (a, b) = two_nodes_in_process("wa", "wb").await;
    worker_on_one_of_two_nodes(a, b).await;
}

/// Two nodes over one store, reaching each other through in-process peers.
async fn two_nodes_in_process(
    a: &str,
    b: &str,
) -> (cairn::Node<cairn::MemStore>, cairn::Node<cairn::MemStore>) {
    let peers = std::sync::Arc::new(cairn::InProcessPeers::default());
    let store = cairn::MemStore::new();
    let start = |name: &str| {
        cairn::Node::builder()
            .config(cairn::NodeConfig {
                advertise_address: Some(format!("inproc://{name}")),
                peers: Some(cairn::PeersHandle(peers.clone())),
                ..two_node_config(name)
            })
            .start(store.clone())
    };
    (start(a).await.unwrap(), start(b).await.unwrap())
}

/// The same over HTTP between the nodes' own APIs (the transport `cairn server start` uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_polling_one_node_gets_the_tasks_of_every_shard_over_http() {
    let store = cairn::MemStore::new();
    let mut nodes = Vec::new();
    for name in ["ha", "hb"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = cairn::NodeConfig {
            advertise_address: Some(format!("http://{}", listener.local_addr().unwrap())),
            peers: Some(cairn::PeersHandle(std::sync::Arc::new(
                cairn_server::HttpPeers::new(None),
            ))),
            ..two_node_config(name)
        };
        let node = cairn::Node::builder()
            .config(config)
            .start(store.clone())
            .await
            .unwrap();
        let router = cairn_server::router(node.runtime(), None);
        tokio::spawn(async move {
            cairn_server::serve(
                listener,
                router,
                &cairn_server::ApiOptions::default(),
                std::future::pending(),
            )
            .await
        });
        nodes.push(node);
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    worker_on_one_of_two_nodes(a, b).await;
}

/// A task a worker holds when its run's shard moves (its node drains; the other node takes
/// the shard): the worker's completion, sent to the node that handed the task out, goes on to
/// the shard's new holder, which applies it (the history is as the worker saw it) — no
/// timeout, no second hand-out, as on Temporal. The task the new holder owed meanwhile is
/// refused once the first completion is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_held_while_its_shard_moves_completes_at_the_new_holder() {
    let (a, b) = two_nodes_in_process("ma", "mb").await;
    shards_shared(&a, &b).await;
    let (mut client, stop, served) = frontend(&b).await;
    let id = (0..)
        .map(|i| format!("moving-{i}"))
        .find(|id| {
            let shard = b
                .runtime()
                .shard_of(&cairn::WorkflowId::new(id.clone()).unwrap());
            b.held_shards().iter().any(|(s, _)| *s == shard)
        })
        .unwrap();
    start(&mut client, &id, 10).await;
    let held = tokio::time::timeout(Duration::from_secs(20), poll(&mut client))
        .await
        .unwrap();
    b.drain().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while a.held_shards().len() != 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "a did not take b's shards"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new holder owes the task again (it cannot know the worker still holds it).
    let again = tokio::time::timeout(Duration::from_secs(20), poll(&mut client))
        .await
        .unwrap();
    assert_eq!(types(&again), types(&held), "the same task");
    first_completion_wins(&mut client, &id, held, again).await;
    let history = types(&ws::PollWorkflowTaskQueueResponse {
        history: Some(
            client
                .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                    namespace: "default".into(),
                    execution: Some(WorkflowExecution {
                        workflow_id: id.clone(),
                        run_id: String::new(),
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .history
                .unwrap(),
        ),
        ..Default::default()
    });
    assert!(
        !history.contains(&EventType::WorkflowTaskTimedOut)
            && !history.contains(&EventType::WorkflowTaskFailed),
        "{history:?}"
    );
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    b.shutdown().await;
    a.shutdown().await;
}

/// Waits (bounded) until the two nodes hold every shard between them, each some.
async fn shards_shared<S: cairn_store::Store>(a: &cairn::Node<S>, b: &cairn::Node<S>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while a.held_shards().is_empty()
        || b.held_shards().is_empty()
        || a.held_shards().len() + b.held_shards().len() != 8
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes did not share the shards"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Temporal's gRPC API of `node` on a loopback port: a client of it, the sender that stops
/// it, and its task.
async fn frontend<S: cairn_store::Store>(
    node: &cairn::Node<S>,
) -> (
    WorkflowServiceClient<Channel>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cairn_temporal::serve(
        listener,
        node.runtime(),
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = WorkflowServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    (client, stop, served)
}

fn two_node_config(name: &str) -> cairn::NodeConfig {
    cairn::NodeConfig {
        node_id: name.into(),
        shard_count: 8,
        lease_timeout_ms: 1_000,
        remote_activities: true,
        ..cairn::NodeConfig::default()
    }
}

async fn worker_on_one_of_two_nodes(
    a: cairn::Node<cairn::MemStore>,
    b: cairn::Node<cairn::MemStore>,
) {
    shards_shared(&a, &b).await;
    let (mut client, stop, served) = frontend(&a).await;
    // Workflows on both nodes' shards.
    let mut ids = Vec::new();
    let mut on_b = 0;
    for i in 0.. {
        let id = format!("spread-{i}");
        let shard = a
            .runtime()
            .shard_of(&cairn::WorkflowId::new(id.clone()).unwrap());
        let b_holds = b.held_shards().iter().any(|(s, _)| *s == shard);
        if b_holds && on_b >= 4 || !b_holds && ids.len() - on_b >= 4 {
            continue;
        }
        on_b += usize::from(b_holds);
        start(&mut client, &id, 10).await;
        ids.push(id);
        if ids.len() == 8 {
            break;
        }
    }
    assert_eq!(on_b, 4, "half of them on node B's shards");
    // The worker, on node A only: each workflow doubles its index through an activity.
    let mut done = 0;
    while done < ids.len() {
        let task = tokio::time::timeout(Duration::from_secs(20), poll(&mut client))
            .await
            .expect("a workflow task comes");
        if task.task_token.is_empty() {
            continue;
        }
        let events = types(&task);
        let commands = if let Some(result) =
            task.history
                .as_ref()
                .unwrap()
                .events
                .iter()
                .find_map(|e| match &e.attributes {
                    Some(Attributes::ActivityTaskCompletedEventAttributes(c)) => c.result.clone(),
                    _ => None,
                }) {
            done += 1;
            vec![command(A::CompleteWorkflowExecutionCommandAttributes(
                cmd::CompleteWorkflowExecutionCommandAttributes {
                    result: Some(result),
                },
            ))]
        } else {
            assert!(!events.contains(&EventType::ActivityTaskScheduled));
            let n: u64 = input_of(&task)
                .trim_start_matches("spread-")
                .parse()
                .unwrap();
            vec![schedule_activity("1", serde_json::json!(n))]
        };
        complete(&mut client, task.task_token, commands, HashMap::new())
            .await
            .unwrap();
        // Run the activity the command scheduled, polled from node A as well.
        if done < ids.len() && !events.contains(&EventType::ActivityTaskCompleted) {
            let attempt = tokio::time::timeout(
                Duration::from_secs(20),
                client.poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
                    namespace: "default".into(),
                    task_queue: Some(TaskQueue {
                        name: "acts".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            )
            .await
            .expect("the activity comes")
            .unwrap()
            .into_inner();
            assert!(!attempt.task_token.is_empty());
            let n: u64 =
                serde_json::from_slice(&attempt.input.as_ref().unwrap().payloads[0].data).unwrap();
            client
                .record_activity_task_heartbeat(ws::RecordActivityTaskHeartbeatRequest {
                    namespace: "default".into(),
                    task_token: attempt.task_token.clone(),
                    ..Default::default()
                })
                .await
                .expect("a heartbeat reaches the attempt's node");
            client
                .respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
                    namespace: "default".into(),
                    task_token: attempt.task_token,
                    result: Some(json(serde_json::json!(n * 2))),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    for id in &ids {
        let n: u64 = id.trim_start_matches("spread-").parse().unwrap();
        assert_eq!(
            closed_result(&mut client, id).await,
            serde_json::json!(n * 2),
            "{id}"
        );
    }
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    a.shutdown().await;
    b.shutdown().await;
}
