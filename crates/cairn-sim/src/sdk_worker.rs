//! The simulation's SDK worker: what Temporal's SDKs do against a server, through Cairn's
//! Temporal frontend (`cairn_temporal::Frontend`, the gRPC service's handlers called in
//! process: the simulated cluster runs on one thread with no sockets).
//!
//! - Its **activity poller** serves `sim_remote` attempts, whether a Rust job or a remote
//!   workflow scheduled them: `PollActivityTaskQueue` on any node, then
//!   `RespondActivityTaskCompleted` with the step's value.
//! - Its **workflow poller** runs remote workflows of type [`REMOTE_WORKFLOW`], which no node
//!   registers: `PollWorkflowTaskQueue` on any node returns the whole history (no sticky
//!   queue), and the worker answers with commands: schedule one `sim_remote` activity with the
//!   workflow's input, then complete with its result plus one.
//! - During the fault window, with the plan's chance, it takes a task and never answers (a
//!   worker killed holding it): an activity attempt then times out (start-to-close) and is
//!   retried, a workflow task times out ([`WORKFLOW_TASK_TIMEOUT_S`]) and is scheduled again.

use crate::workload::{REMOTE_ACTIVITY, REMOTE_TASK_QUEUE, remote_value};
use crate::{CLIENT_CALL_TIMEOUT, Cluster, SimStore};
use cairn_temporal::Frontend;
use cairn_temporal::proto::workflow_service_server::WorkflowService;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use temporalio_protos::temporal::api::command::v1::{self as cmd, command::Attributes as A};
use temporalio_protos::temporal::api::common::v1::{
    ActivityType, Payload, Payloads, RetryPolicy, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::CommandType;
use temporalio_protos::temporal::api::history::v1::history_event::Attributes as E;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::{Code, Request};

/// The remote workflow type no node registers, and its task queue.
pub const REMOTE_WORKFLOW: &str = "SimRemoteFlow";
pub const REMOTE_WORKFLOW_QUEUE: &str = "sim-remote-flows";
/// The remote workflows' workflow task timeout: an abandoned task is retried after it.
pub const WORKFLOW_TASK_TIMEOUT_S: i64 = 1;
/// How long one poll waits before the worker tries another node (Temporal's SDKs wait about
/// 70 s; a node paused past its lease would hold the worker that long).
const POLL_WAIT: Duration = Duration::from_secs(2);

/// What `SimRemoteFlow(x)` returns.
pub fn remote_flow_value(x: u64) -> u64 {
    remote_value(x).wrapping_add(1)
}

/// The nodes whose frontend the worker reaches, by name.
pub(crate) type Pollable = Arc<std::sync::Mutex<Vec<(String, Arc<cairn_runtime::Node<SimStore>>)>>>;

/// What the worker did.
#[derive(Default)]
pub(crate) struct Served {
    pub activities_answered: AtomicU64,
    pub activities_abandoned: AtomicU64,
    pub workflow_tasks_answered: AtomicU64,
    pub workflow_tasks_abandoned: AtomicU64,
}

/// The worker's switches: while `dies` is set, it abandons a task it took with chance
/// `die_chance`.
#[derive(Clone)]
pub(crate) struct Worker {
    pub pollable: Pollable,
    pub die_chance: f64,
    pub dies: Arc<AtomicBool>,
    pub served: Arc<Served>,
}

impl Worker {
    /// A frontend over a node the worker may poll, picked by `rng`.
    fn frontend(&self, rng: &mut SmallRng) -> Option<Frontend<SimStore>> {
        let nodes = self.pollable.lock().unwrap_or_else(|p| p.into_inner());
        if nodes.is_empty() {
            return None;
        }
        Some(Frontend::new(
            nodes[rng.random_range(0..nodes.len())].1.clone(),
        ))
    }

    /// Polls reachable nodes, one at a time, until one hands out a task (`none`: the answer
    /// carries no task); the task and the frontend it came from, where its answer goes.
    async fn next_task<T, Fut>(
        &self,
        rng: &mut SmallRng,
        poll: impl Fn(Frontend<SimStore>) -> Fut,
        none: impl Fn(&T) -> bool,
    ) -> (Frontend<SimStore>, T)
    where
        Fut: std::future::Future<
                Output = (
                    Frontend<SimStore>,
                    Result<tonic::Response<T>, tonic::Status>,
                ),
            >,
    {
        loop {
            let Some(frontend) = self.frontend(rng) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match tokio::time::timeout(POLL_WAIT, poll(frontend)).await {
                Ok((frontend, Ok(task))) if !none(task.get_ref()) => {
                    return (frontend, task.into_inner());
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn abandons(&self, rng: &mut SmallRng) -> bool {
        self.dies.load(Ordering::SeqCst) && rng.random_bool(self.die_chance)
    }

    /// Polls for `sim_remote` attempts and answers each with its step value, forever.
    pub(crate) async fn serve_activities(self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        loop {
            let (frontend, task) = self
                .next_task(
                    &mut rng,
                    |frontend| async move {
                        let request = ws::PollActivityTaskQueueRequest {
                            namespace: "default".into(),
                            task_queue: Some(queue(REMOTE_TASK_QUEUE)),
                            identity: "sim-sdk-worker".into(),
                            ..Default::default()
                        };
                        let polled = frontend
                            .poll_activity_task_queue(Request::new(request))
                            .await;
                        (frontend, polled)
                    },
                    |task: &ws::PollActivityTaskQueueResponse| task.task_token.is_empty(),
                )
                .await;
            if self.abandons(&mut rng) {
                self.served
                    .activities_abandoned
                    .fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let name = task.activity_type.as_ref().map(|t| t.name.as_str());
            let Some(x) = (name == Some(REMOTE_ACTIVITY))
                .then(|| first_u64(task.input.as_ref()))
                .flatten()
            else {
                continue;
            };
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..10))).await;
            let answer = frontend.respond_activity_task_completed(Request::new(
                ws::RespondActivityTaskCompletedRequest {
                    namespace: "default".into(),
                    task_token: task.task_token,
                    result: Some(json(remote_value(x))),
                    identity: "sim-sdk-worker".into(),
                    ..Default::default()
                },
            ));
            if let Ok(Ok(_)) = tokio::time::timeout(CLIENT_CALL_TIMEOUT, answer).await {
                self.served
                    .activities_answered
                    .fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Polls for workflow tasks of [`REMOTE_WORKFLOW`] runs and answers each with the
    /// commands its history calls for, forever.
    pub(crate) async fn serve_workflows(self, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        loop {
            let (frontend, task) = self
                .next_task(
                    &mut rng,
                    |frontend| async move {
                        let request = ws::PollWorkflowTaskQueueRequest {
                            namespace: "default".into(),
                            task_queue: Some(queue(REMOTE_WORKFLOW_QUEUE)),
                            identity: "sim-sdk-worker".into(),
                            ..Default::default()
                        };
                        let polled = frontend
                            .poll_workflow_task_queue(Request::new(request))
                            .await;
                        (frontend, polled)
                    },
                    |task: &ws::PollWorkflowTaskQueueResponse| task.task_token.is_empty(),
                )
                .await;
            if self.abandons(&mut rng) {
                self.served
                    .workflow_tasks_abandoned
                    .fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let commands = decide(&task);
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..5))).await;
            let answer = frontend.respond_workflow_task_completed(Request::new(
                ws::RespondWorkflowTaskCompletedRequest {
                    namespace: "default".into(),
                    task_token: task.task_token,
                    commands,
                    identity: "sim-sdk-worker".into(),
                    ..Default::default()
                },
            ));
            if let Ok(Ok(_)) = tokio::time::timeout(CLIENT_CALL_TIMEOUT, answer).await {
                self.served
                    .workflow_tasks_answered
                    .fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The workflow's code, replayed from its whole history: schedule activity 1 with the input,
/// then complete with its result plus one. Anything else (an activity that failed or timed
/// out for good) completes with 0, which the checker reports as a wrong result.
fn decide(task: &ws::PollWorkflowTaskQueueResponse) -> Vec<cmd::Command> {
    let events = task.history.as_ref().map(|h| h.events.as_slice());
    let mut input = None;
    let mut scheduled = false;
    let mut outcome = None;
    for event in events.unwrap_or_default() {
        match &event.attributes {
            Some(E::WorkflowExecutionStartedEventAttributes(a)) => {
                input = first_u64(a.input.as_ref());
            }
            Some(E::ActivityTaskScheduledEventAttributes(_)) => scheduled = true,
            Some(E::ActivityTaskCompletedEventAttributes(a)) => {
                outcome = Some(first_u64(a.result.as_ref()).map_or(0, |r| r.wrapping_add(1)));
            }
            Some(
                E::ActivityTaskFailedEventAttributes(_) | E::ActivityTaskTimedOutEventAttributes(_),
            ) => outcome = Some(0),
            _ => {}
        }
    }
    if let Some(result) = outcome {
        return vec![command(
            CommandType::CompleteWorkflowExecution,
            A::CompleteWorkflowExecutionCommandAttributes(
                cmd::CompleteWorkflowExecutionCommandAttributes {
                    result: Some(json(result)),
                },
            ),
        )];
    }
    match input {
        Some(x) if !scheduled => vec![command(
            CommandType::ScheduleActivityTask,
            A::ScheduleActivityTaskCommandAttributes(cmd::ScheduleActivityTaskCommandAttributes {
                activity_id: "1".into(),
                activity_type: Some(ActivityType {
                    name: REMOTE_ACTIVITY.into(),
                }),
                task_queue: Some(queue(REMOTE_TASK_QUEUE)),
                input: Some(json(x)),
                start_to_close_timeout: Some(millis(300)),
                retry_policy: Some(RetryPolicy {
                    initial_interval: Some(millis(20)),
                    backoff_coefficient: 2.0,
                    maximum_interval: Some(millis(200)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )],
        // Waiting on the activity.
        _ => Vec::new(),
    }
}

/// Starts remote workflow `id` with input `x` through some live node's frontend, retrying
/// through others; true once accepted (by this call or, after an ambiguous failure, by an
/// earlier one with the same request id).
pub(crate) async fn start_remote_flow(
    cluster: &Cluster,
    rng: &mut SmallRng,
    id: &str,
    x: u64,
) -> bool {
    for _ in 0..10 {
        let Some(node) = cluster.node(rng.random_range(0..8)) else {
            return false;
        };
        let frontend = Frontend::new(node);
        let call =
            frontend.start_workflow_execution(Request::new(ws::StartWorkflowExecutionRequest {
                namespace: "default".into(),
                workflow_id: id.into(),
                workflow_type: Some(WorkflowType {
                    name: REMOTE_WORKFLOW.into(),
                }),
                task_queue: Some(queue(REMOTE_WORKFLOW_QUEUE)),
                input: Some(json(x)),
                workflow_task_timeout: Some(prost_wkt_types::Duration {
                    seconds: WORKFLOW_TASK_TIMEOUT_S,
                    nanos: 0,
                }),
                request_id: format!("{id}-start"),
                identity: "sim-sdk-client".into(),
                ..Default::default()
            }));
        match tokio::time::timeout(CLIENT_CALL_TIMEOUT, call).await {
            Ok(Ok(_)) => return true,
            // An earlier attempt that looked failed did land.
            Ok(Err(status)) if status.code() == Code::AlreadyExists => return true,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

fn queue(name: &str) -> TaskQueue {
    TaskQueue {
        name: name.into(),
        kind: 1, // NORMAL
        ..Default::default()
    }
}

fn millis(ms: i32) -> prost_wkt_types::Duration {
    prost_wkt_types::Duration {
        seconds: 0,
        nanos: ms * 1_000_000,
    }
}

fn json(value: u64) -> Payloads {
    Payloads {
        payloads: vec![Payload {
            metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
            data: value.to_string().into_bytes(),
            ..Default::default()
        }],
    }
}

/// The first payload as a JSON number.
fn first_u64(payloads: Option<&Payloads>) -> Option<u64> {
    let first = payloads?.payloads.first()?;
    serde_json::from_slice(&first.data).ok()
}

fn command(command_type: CommandType, attributes: A) -> cmd::Command {
    cmd::Command {
        command_type: command_type as i32,
        attributes: Some(attributes),
        ..Default::default()
    }
}
