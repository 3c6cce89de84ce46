//! Remote activity workers through the gRPC frontend, driven with Temporal's generated client
//! as Temporal's SDK workers drive it: many attempts over several pollers at once, a worker
//! that dies mid-attempt, late and forged answers, non-retryable failures, answers by id.

use cairn::{Ctx, RetryPolicy, WorkflowError};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::collections::HashMap;
use std::time::Duration;
use temporalio_protos::temporal::api::common::v1::{
    Payload, Payloads, WorkflowExecution, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::HistoryEventFilterType;
use temporalio_protos::temporal::api::failure::v1::{
    ApplicationFailureInfo, Failure as TemporalFailure, failure::FailureInfo,
};
use temporalio_protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use temporalio_protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const QUEUE: &str = "remote-work";

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(50))
        .maximum_attempts(3)
        .build()
        .unwrap()
}

/// Doubles each of `n` numbers on a remote worker, all at once; reports failures by type.
async fn fan_out(ctx: Ctx, n: u64) -> Result<Vec<String>, WorkflowError> {
    let calls = (0..n).map(|i| {
        ctx.activity_named::<_, u64>("double", i)
            .task_queue(QUEUE)
            .start_to_close(Duration::from_secs(30))
            .heartbeat_timeout(Duration::from_millis(600))
            .retry(policy())
    });
    let results = cairn::futures::future::join_all(calls).await;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("failed: {}", e.error_type()),
        })
        .collect())
}

/// Calls an activity on a queue no worker polls, its schedule-to-start and schedule-to-close
/// timeouts equal (as Temporal fills them for an SDK that sets schedule-to-close only): how
/// it timed out.
async fn unpolled(ctx: Ctx, _input: ()) -> Result<String, WorkflowError> {
    let call = ctx
        .activity_named::<_, u64>("double", 1)
        .task_queue("nobody-polls")
        .schedule_to_start(Duration::from_millis(1_500))
        .schedule_to_close(Duration::from_millis(1_500));
    Ok(match call.await {
        Err(cairn::ActivityError::TimedOut(kind)) => kind.to_string(),
        other => format!("{other:?}"),
    })
}

/// Calls an activity with a start-to-close timeout only: how long the attempt waits for a
/// worker does not count against it.
async fn late_pickup(ctx: Ctx, x: u64) -> Result<u64, WorkflowError> {
    Ok(ctx
        .activity_named::<_, u64>("double", x)
        .task_queue(QUEUE)
        .start_to_close(Duration::from_millis(500))
        .retry(policy())
        .await?)
}

/// A Rust activity of the same name as the remote workers' `double`, registered on the node
/// (its local task queue): attempts on [`QUEUE`] still go to the workers polling that queue,
/// as a Temporal task queue routes. Were it run instead, results would be a thousandfold.
async fn double(_ctx: cairn::ActivityContext, n: u64) -> Result<u64, cairn::Failure> {
    Ok(n * 1_000)
}

struct Server {
    node: cairn::Node<EmbeddedStore>,
    address: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: tempfile::TempDir,
}

async fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let node = cairn::Node::builder()
        .workflow(fan_out)
        .workflow(unpolled)
        .workflow(late_pickup)
        .activity(double)
        .config(cairn::NodeConfig {
            node_id: "remote".into(),
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
        _dir: dir,
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
        assert_eq!(
            self.node.runtime().remote_activity_tasks(),
            0,
            "no attempt left behind"
        );
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

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn value(payloads: &Option<Payloads>) -> serde_json::Value {
    serde_json::from_slice(&payloads.as_ref().unwrap().payloads[0].data).unwrap()
}

async fn start(client: &mut WorkflowServiceClient<Channel>, id: &str, n: u64) {
    client
        .start_workflow_execution(ws::StartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: id.into(),
            workflow_type: Some(WorkflowType {
                name: "fan_out".into(),
            }),
            task_queue: Some(TaskQueue {
                name: "workflows".into(),
                ..Default::default()
            }),
            input: Some(json(serde_json::json!(n))),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn poll(client: &mut WorkflowServiceClient<Channel>) -> ws::PollActivityTaskQueueResponse {
    client
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: Some(TaskQueue {
                name: QUEUE.into(),
                ..Default::default()
            }),
            identity: "test-worker".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn complete(
    client: &mut WorkflowServiceClient<Channel>,
    token: Vec<u8>,
    result: serde_json::Value,
) -> Result<(), tonic::Status> {
    client
        .respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: token,
            result: Some(json(result)),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn result(client: &mut WorkflowServiceClient<Channel>, id: &str) -> serde_json::Value {
    let mut token = Vec::new();
    loop {
        let answer = client
            .get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
                namespace: "default".into(),
                execution: Some(WorkflowExecution {
                    workflow_id: id.into(),
                    run_id: String::new(),
                }),
                wait_new_event: true,
                history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                next_page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(event) = answer.history.unwrap_or_default().events.first() {
            match &event.attributes {
                Some(Attributes::WorkflowExecutionCompletedEventAttributes(done)) => {
                    return value(&done.result);
                }
                other => panic!("{id} closed with {other:?}"),
            }
        }
        token = answer.next_page_token;
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done in 60 s"))
}

/// Proves an attempt for remote workers starts when a worker takes it, not when it is
/// offered: one no worker picks up times out schedule-to-start (Temporal's verdict; it
/// timed out schedule-to-close when the attempt was claimed on offer), and is withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_no_worker_takes_times_out_schedule_to_start() {
    let server = serve().await;
    let handle = server
        .node
        .client()
        .start(unpolled, "unpolled", ())
        .send()
        .await
        .unwrap();
    let verdict = tokio::time::timeout(Duration::from_secs(20), handle.result())
        .await
        .expect("the attempt times out")
        .unwrap();
    assert_eq!(verdict, "schedule-to-start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.node.runtime().remote_activity_tasks() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attempt is withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// Proves an attempt's start-to-close timeout counts from the poll that takes it, as in
/// Temporal: an attempt that waited in its queue five times its start-to-close timeout (and
/// past the grace of a handed-over attempt) is still attempt 1 when a worker takes it, and
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_to_close_counts_from_the_poll_that_takes_the_attempt() {
    let server = serve().await;
    let mut client = server.client().await;
    let handle = server
        .node
        .client()
        .start(late_pickup, "late-pickup", 21)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500 + 1_000)).await;
    // The node's task queues show the attempt waiting, and no poller yet.
    let queues = server.node.runtime().task_queues();
    let queue = queues.iter().find(|q| q.name == QUEUE).expect("the queue");
    assert_eq!((queue.activities_waiting, queue.pollers.len()), (1, 0));
    let task = within("a poll", poll(&mut client)).await;
    assert_eq!(task.attempt, 1, "the waiting attempt did not time out");
    // The poll took the attempt, and its worker shows as a poller of the queue.
    let queues = server.node.runtime().task_queues();
    let queue = queues.iter().find(|q| q.name == QUEUE).expect("the queue");
    assert_eq!(queue.activities_waiting, 0);
    assert_eq!(queue.pollers.len(), 1, "{queue:?}");
    assert_eq!(queue.pollers[0].identity, "test-worker");
    assert_eq!(queue.pollers[0].kind, cairn_runtime::PollKind::Activity);
    assert_eq!(value(&task.input), serde_json::json!(21));
    // Taken now: its start-to-close timeout counts from here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    complete(&mut client, task.task_token, serde_json::json!(42))
        .await
        .unwrap();
    let result = within("the result", handle.result()).await.unwrap();
    assert_eq!(result, 42);
    server.stop().await;
}

/// Proves 3 workflows × 12 remote activities run once each over 4 pollers on separate
/// connections, each attempt heartbeating and completing; an answer to a token already
/// answered, and a forged token, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_remote_attempts_over_several_pollers() {
    let server = serve().await;
    let mut client = server.client().await;
    for i in 0..3 {
        start(&mut client, &format!("fan-{i}"), 12).await;
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (done, answered) = (done.clone(), answered.clone());
            let connect = server.client();
            async move {
                let mut client = connect.await;
                while done.load(std::sync::atomic::Ordering::SeqCst) < 36 {
                    let task =
                        tokio::time::timeout(Duration::from_secs(1), poll(&mut client)).await;
                    let Ok(task) = task else { continue };
                    if task.task_token.is_empty() {
                        continue;
                    }
                    assert_eq!(task.activity_type.as_ref().unwrap().name, "double");
                    assert_eq!(task.attempt, 1, "no attempt needed a retry");
                    let input: u64 = value(&task.input).as_u64().unwrap();
                    let beat = client
                        .record_activity_task_heartbeat(ws::RecordActivityTaskHeartbeatRequest {
                            namespace: "default".into(),
                            task_token: task.task_token.clone(),
                            details: Some(json(serde_json::json!("half way"))),
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(!beat.cancel_requested);
                    complete(
                        &mut client,
                        task.task_token.clone(),
                        serde_json::json!(input * 2),
                    )
                    .await
                    .unwrap();
                    answered.lock().unwrap().push(task.task_token);
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
        .collect();
    within("workers", cairn::futures::future::join_all(workers)).await;
    let expected: Vec<String> = (0..12u64).map(|i| (i * 2).to_string()).collect();
    for i in 0..3 {
        assert_eq!(
            within("result", result(&mut client, &format!("fan-{i}"))).await,
            serde_json::json!(expected)
        );
    }
    let again = answered.lock().unwrap()[0].clone();
    let e = complete(&mut client, again, serde_json::json!(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = complete(&mut client, b"forged".to_vec(), serde_json::json!(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    server.stop().await;
}

/// Proves a worker that takes an attempt and dies loses it to the heartbeat timeout: the next
/// poll receives attempt 2 (with the dead attempt's heartbeat details), the late answer to
/// attempt 1 is refused, and the workflow gets attempt 2's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_loses_its_attempt_to_the_heartbeat_timeout() {
    let server = serve().await;
    let mut client = server.client().await;
    start(&mut client, "dies", 1).await;
    let first = poll(&mut client).await;
    assert_eq!(first.attempt, 1);
    client
        .record_activity_task_heartbeat(ws::RecordActivityTaskHeartbeatRequest {
            namespace: "default".into(),
            task_token: first.task_token.clone(),
            details: Some(json(serde_json::json!({"progress": 40}))),
            ..Default::default()
        })
        .await
        .unwrap();
    let beaten = unix_ms();
    // Describe shows the last heartbeat, its details and its time, as Temporal's
    // `PendingActivityInfo` does (the write is throttled: wait for it).
    let pending = within("the heartbeat in describe", async {
        loop {
            let described = client
                .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
                    namespace: "default".into(),
                    execution: Some(WorkflowExecution {
                        workflow_id: "dies".into(),
                        run_id: String::new(),
                    }),
                })
                .await
                .unwrap()
                .into_inner();
            if let Some(pending) = described
                .pending_activities
                .into_iter()
                .find(|p| p.last_heartbeat_time.is_some())
            {
                break pending;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let at = pending.last_heartbeat_time.unwrap();
    let at_ms = at.seconds * 1_000 + i64::from(at.nanos / 1_000_000);
    assert!(
        at_ms <= beaten && beaten - at_ms < 5_000,
        "last heartbeat at {at_ms}, sent just before {beaten}"
    );
    assert_eq!(
        value(&pending.heartbeat_details),
        serde_json::json!({"progress": 40})
    );
    // The worker dies: no more heartbeats. The next poll waits out the timeout and backoff.
    let second = within("second attempt", async {
        loop {
            let task = poll(&mut client).await;
            if !task.task_token.is_empty() {
                break task;
            }
        }
    })
    .await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        value(&second.heartbeat_details),
        serde_json::json!({"progress": 40}),
        "the next attempt sees the last details"
    );
    let late = complete(&mut client, first.task_token, serde_json::json!(-1))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::NotFound);
    complete(&mut client, second.task_token, serde_json::json!(1000))
        .await
        .unwrap();
    assert_eq!(
        within("result", result(&mut client, "dies")).await,
        serde_json::json!(["1000"])
    );
    server.stop().await;
}

/// Proves a non-retryable application failure ends the activity at once (its type reaches the
/// workflow), a retryable one is retried, and answers by workflow and activity id work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_follow_the_retry_policy_and_answers_by_id_work() {
    let server = serve().await;
    let mut client = server.client().await;
    start(&mut client, "fails", 3).await;
    let fail = |non_retryable: bool, error_type: &str| TemporalFailure {
        message: "declined".into(),
        failure_info: Some(FailureInfo::ApplicationFailureInfo(
            ApplicationFailureInfo {
                r#type: error_type.into(),
                non_retryable,
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let mut seen = HashMap::new();
    while seen.len() < 4 {
        let task = within("poll", poll(&mut client)).await;
        if task.task_token.is_empty() {
            continue;
        }
        let input = value(&task.input).as_u64().unwrap();
        *seen.entry((input, task.attempt)).or_insert(0) += 1;
        match (input, task.attempt) {
            (0, _) => {
                client
                    .respond_activity_task_failed(ws::RespondActivityTaskFailedRequest {
                        namespace: "default".into(),
                        task_token: task.task_token,
                        failure: Some(fail(true, "InvalidCardError")),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            (1, 1) => {
                client
                    .respond_activity_task_failed(ws::RespondActivityTaskFailedRequest {
                        namespace: "default".into(),
                        task_token: task.task_token,
                        failure: Some(fail(false, "Flaky")),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            _ => {
                let execution = task.workflow_execution.unwrap();
                client
                    .respond_activity_task_completed_by_id(
                        ws::RespondActivityTaskCompletedByIdRequest {
                            namespace: "default".into(),
                            workflow_id: execution.workflow_id,
                            run_id: execution.run_id,
                            activity_id: task.activity_id,
                            result: Some(json(serde_json::json!(input * 10))),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(seen.get(&(0, 1)), Some(&1));
    assert_eq!(
        seen.get(&(0, 2)),
        None,
        "a non-retryable failure is not retried"
    );
    assert_eq!(seen.get(&(1, 2)), Some(&1), "a retryable failure is");
    assert_eq!(
        within("result", result(&mut client, "fails")).await,
        serde_json::json!(["failed: InvalidCardError", "10", "20"])
    );
    server.stop().await;
}

/// Proves a worker's result or heartbeat details too large for one stored event fail the
/// attempt as `PayloadTooLarge`, not retried (as Temporal's server does): the completion is
/// taken, the heartbeat refused with the limit in its message, and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_past_the_bound_fail_the_attempt() {
    let server = serve().await;
    let mut client = server.client().await;
    start(&mut client, "oversized", 2).await;
    let big = serde_json::json!("x".repeat(cairn_runtime::INLINE_PAYLOAD_BYTES_MAX));
    let first = poll(&mut client).await;
    let second = poll(&mut client).await;
    complete(&mut client, first.task_token, big.clone())
        .await
        .unwrap();
    let refused = client
        .record_activity_task_heartbeat(ws::RecordActivityTaskHeartbeatRequest {
            namespace: "default".into(),
            task_token: second.task_token.clone(),
            details: Some(json(big)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("the limit is 90000 bytes"),
        "{}",
        refused.message()
    );
    assert_eq!(
        within("result", result(&mut client, "oversized")).await,
        serde_json::json!(["failed: PayloadTooLarge", "failed: PayloadTooLarge"])
    );
    let late = complete(&mut client, second.task_token, serde_json::json!(1))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::NotFound);
    server.stop().await;
}
