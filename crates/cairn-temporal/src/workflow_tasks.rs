//! Workflow tasks for Temporal SDK workers: a remote run's history as the poll response a
//! worker replays, and the commands of its completion as Cairn's.
//!
//! Temporal's SDKs number activities and timers with separate counters (`activity_id` "1",
//! "2", …; `timer_id` "1", …), where Cairn's runs have one sequence of commands. A remote
//! run's sequence number therefore encodes both: `id × 4 + kind` (activity 0, timer 1; child 2,
//! numbered by Cairn in start order, as the SDK names children by workflow id), so
//! the history converts back to the very ids the worker chose, and replay matches.

use crate::history::{self, RunContext, duration, timestamp};
use crate::payloads::{to_cairn, to_cairn_exact};
use crate::properties;
use cairn_runtime::{RemoteQuery, WorkflowTask};
use cairn_types::{
    ActivityOptions, ActivityTimeouts, ChildOptions, Command, EventKind, Failure, HistoryEvent,
    RetryPolicy, Seq, WorkflowId, WorkflowTimeouts,
};
use std::collections::HashMap;
use temporalio_protos::temporal::api::command::v1 as cmd;
use temporalio_protos::temporal::api::command::v1::command::Attributes as A;
use temporalio_protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use temporalio_protos::temporal::api::enums::v1::{EventType, ParentClosePolicy, QueryResultType};
use temporalio_protos::temporal::api::history::v1 as h;
use temporalio_protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_protos::temporal::api::query::v1::{WorkflowQuery, WorkflowQueryResult};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

/// What a remote run's sequence number names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqKind {
    Activity = 0,
    Timer = 1,
    /// Children are numbered by Cairn: the SDK names them by workflow id.
    Child = 2,
    /// Markers (patches, local activities, side effects): the SDK matches them by order and
    /// name, so they all take the one sequence number of this kind.
    Marker = 3,
}

/// Largest SDK id a sequence number can carry.
pub const SDK_ID_MAX: u32 = (u32::MAX - 3) / 4;

/// The sequence number of the SDK's `id` of `kind`.
pub fn seq_of(id: &str, kind: SeqKind) -> Result<Seq, Status> {
    let n: u32 = id.parse().ok().filter(|n| *n <= SDK_ID_MAX).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{} id {id:?}: Cairn takes the SDK's own numbering (a decimal number up to {SDK_ID_MAX}); \
             ids chosen by workflow code are not supported yet",
            match kind {
                SeqKind::Activity => "activity",
                SeqKind::Timer => "timer",
                SeqKind::Child => "child",
                SeqKind::Marker => "marker",
            }
        ))
    })?;
    Ok(n * 4 + kind as u32)
}

/// The poll response for `task`: the run's history in Temporal's shape, ending with the
/// task's `WorkflowTaskScheduled` and `WorkflowTaskStarted`.
pub fn poll_response(task: WorkflowTask, now_ms: u64) -> ws::PollWorkflowTaskQueueResponse {
    let context = RunContext {
        previous_run: task.previous_run,
        parent: task.parent.as_ref().map(|(w, r)| (w.to_string(), *r)),
        task_timeout_ms: task.task_timeout_ms,
        ..RunContext::new(&task.namespace, &task.task_queue, task.run_id, true)
    };
    let mut events = history::convert(&task.history, &context);
    // The started event of the last workflow task that completed (not of one that failed).
    let previous_started = events
        .iter()
        .rev()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskCompletedEventAttributes(a)) => Some(a.started_event_id),
            _ => None,
        })
        .unwrap_or(0);
    if let Some(query) = task.query {
        // A query task: the history up to the last completed workflow task, and the query.
        return ws::PollWorkflowTaskQueueResponse {
            task_token: task.token.into_bytes(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id: task.workflow_id.to_string(),
                run_id: task.run_id.to_string(),
            }),
            workflow_type: Some(WorkflowType {
                name: task.workflow_type,
            }),
            previous_started_event_id: previous_started,
            started_event_id: previous_started,
            attempt: 1,
            history: Some(h::History { events }),
            query: Some(workflow_query(&query)),
            workflow_execution_task_queue: Some(TaskQueue {
                name: task.task_queue,
                kind: 1,
                ..Default::default()
            }),
            scheduled_time: Some(timestamp(now_ms)),
            started_time: Some(timestamp(now_ms)),
            ..Default::default()
        };
    }
    let queries = task
        .queries
        .iter()
        .map(|q| (q.id.to_string(), workflow_query(q)))
        .collect();
    let scheduled_ms = task.scheduled_unix_ms.min(now_ms);
    let scheduled = events.len() as i64 + 1;
    events.push(h::HistoryEvent {
        event_id: scheduled,
        event_time: Some(timestamp(scheduled_ms)),
        event_type: EventType::WorkflowTaskScheduled as i32,
        task_id: scheduled,
        attributes: Some(Attributes::WorkflowTaskScheduledEventAttributes(
            h::WorkflowTaskScheduledEventAttributes {
                task_queue: Some(TaskQueue {
                    name: task.task_queue.clone(),
                    kind: 1,
                    ..Default::default()
                }),
                start_to_close_timeout: Some(duration(std::time::Duration::from_millis(
                    task.task_timeout_ms,
                ))),
                attempt: task.attempt as i32,
            },
        )),
        ..Default::default()
    });
    let started = scheduled + 1;
    events.push(h::HistoryEvent {
        event_id: started,
        event_time: Some(timestamp(now_ms)),
        event_type: EventType::WorkflowTaskStarted as i32,
        task_id: started,
        attributes: Some(Attributes::WorkflowTaskStartedEventAttributes(
            h::WorkflowTaskStartedEventAttributes {
                scheduled_event_id: scheduled,
                identity: "cairn".into(),
                request_id: task.token.clone(),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    ws::PollWorkflowTaskQueueResponse {
        task_token: task.token.into_bytes(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: task.workflow_id.to_string(),
            run_id: task.run_id.to_string(),
        }),
        workflow_type: Some(WorkflowType {
            name: task.workflow_type,
        }),
        previous_started_event_id: previous_started,
        started_event_id: started,
        attempt: task.attempt as i32,
        history: Some(h::History { events }),
        workflow_execution_task_queue: Some(TaskQueue {
            name: task.task_queue,
            kind: 1,
            ..Default::default()
        }),
        scheduled_time: Some(timestamp(scheduled_ms)),
        started_time: Some(timestamp(now_ms)),
        queries,
        messages: task
            .updates
            .iter()
            .map(|u| crate::updates::request_message(u, scheduled))
            .collect(),
        ..Default::default()
    }
}

fn workflow_query(query: &RemoteQuery) -> WorkflowQuery {
    WorkflowQuery {
        query_type: query.name.clone(),
        query_args: match query.args.decode::<()>() {
            // No arguments: none on the wire either.
            Ok(()) => None,
            Err(_) => Some(crate::payloads::payloads(&query.args)),
        },
        header: None,
    }
}

/// A worker's answers to the queries attached to its task, by query id.
pub fn query_results(
    results: &HashMap<String, WorkflowQueryResult>,
) -> Vec<(u64, Result<cairn_types::Payload, String>)> {
    results
        .iter()
        .filter_map(|(id, r)| {
            let id = id.parse().ok()?;
            Some((
                id,
                query_answer(r.result_type, r.answer.as_ref(), &r.error_message),
            ))
        })
        .collect()
}

/// One query's answer: its result, or why it failed.
pub fn query_answer(
    result_type: i32,
    answer: Option<&temporalio_protos::temporal::api::common::v1::Payloads>,
    error_message: &str,
) -> Result<cairn_types::Payload, String> {
    if result_type == QueryResultType::Answered as i32 {
        to_cairn(answer, "query result").map_err(|e| e.0)
    } else if error_message.is_empty() {
        Err("the query failed in the worker".into())
    } else {
        Err(error_message.to_string())
    }
}

fn std_duration(d: Option<&prost_wkt_types::Duration>) -> Option<std::time::Duration> {
    d.filter(|d| d.seconds > 0 || (d.seconds == 0 && d.nanos > 0))
        .map(|d| std::time::Duration::new(d.seconds as u64, d.nanos.max(0) as u32))
}

fn bad(what: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{what}: {reason}"))
}

fn retry_policy(
    p: Option<&temporalio_protos::temporal::api::common::v1::RetryPolicy>,
) -> Result<RetryPolicy, Status> {
    let Some(p) = p else {
        return Ok(RetryPolicy::default());
    };
    let mut builder = RetryPolicy::builder();
    let initial = std_duration(p.initial_interval.as_ref());
    if let Some(initial) = initial {
        builder = builder.initial_interval(initial);
    }
    if p.backoff_coefficient > 0.0 {
        builder = builder.backoff_coefficient(p.backoff_coefficient);
    }
    match std_duration(p.maximum_interval.as_ref()) {
        Some(max) => builder = builder.maximum_interval(max),
        None => {
            // Temporal's default: 100 × the initial interval.
            if let Some(initial) = initial {
                builder = builder.maximum_interval(initial * 100);
            }
        }
    }
    if p.maximum_attempts > 0 {
        builder = builder.maximum_attempts(p.maximum_attempts as u32);
    }
    for name in &p.non_retryable_error_types {
        builder = builder.non_retryable_error_type(name.clone());
    }
    builder.build().map_err(|e| bad("retry_policy", e))
}

/// What a completion's commands refer to in the run's history.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    /// Temporal event id of each `ActivityTaskScheduled` → its sequence number (a cancel names
    /// the event).
    pub activities: HashMap<i64, Seq>,
    /// Children started so far, by workflow id → sequence number.
    pub children: HashMap<String, Seq>,
    /// Operations Cairn numbers (children, signals and cancel requests to other workflows)
    /// recorded so far: the next one takes the next number.
    pub numbered: u32,
}

impl Refs {
    /// Reads the references off the run's history.
    pub fn of(history: &[HistoryEvent], context: &RunContext) -> Self {
        let converted = history::convert(history, context);
        let seqs = history.iter().filter_map(|e| match &e.kind {
            EventKind::ActivityTaskScheduled { seq, .. } => Some(*seq),
            _ => None,
        });
        let activities = converted
            .iter()
            .filter(|e| e.event_type == EventType::ActivityTaskScheduled as i32)
            .map(|e| e.event_id)
            .zip(seqs)
            .collect();
        let children = history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StartChildWorkflowExecutionInitiated {
                    seq, workflow_id, ..
                } => Some((workflow_id.to_string(), *seq)),
                _ => None,
            })
            .collect();
        let numbered = history
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::StartChildWorkflowExecutionInitiated { .. }
                        | EventKind::SignalExternalWorkflowExecutionInitiated { .. }
                        | EventKind::RequestCancelExternalWorkflowExecutionInitiated {
                            workflow_id: Some(_),
                            ..
                        }
                )
            })
            .count() as u32;
        Self {
            activities,
            children,
            numbered,
        }
    }
}

/// Whether a completion's commands need the run's history to translate (a cancel names an
/// event, a child's number follows the children before it).
pub fn needs_history(commands: &[cmd::Command]) -> bool {
    commands.iter().any(|c| {
        matches!(
            c.attributes,
            Some(
                A::RequestCancelActivityTaskCommandAttributes(_)
                    | A::StartChildWorkflowExecutionCommandAttributes(_)
                    | A::RequestCancelExternalWorkflowExecutionCommandAttributes(_)
                    | A::SignalExternalWorkflowExecutionCommandAttributes(_)
            )
        )
    })
}

/// Updates a worker's validators rejected, by update id.
pub type Rejections = Vec<(String, Failure)>;

/// A worker's commands as Cairn's; `refs` resolves what they name in the history (see
/// [`Refs::of`]); `declared` is the node's type of a search attribute.
///
/// The worker's update protocol messages (`answers`) take the places its `ProtocolMessage`
/// commands give them, the rest follow its commands; rejections are returned apart (they
/// write nothing).
pub fn commands(
    commands: &[cmd::Command],
    answers: Vec<(String, crate::updates::Answer)>,
    workflow_type: &str,
    refs: &Refs,
    declared: &dyn Fn(&str) -> Option<cairn_types::SearchType>,
) -> Result<(Vec<Command>, Rejections), Status> {
    let mut out = Vec::with_capacity(commands.len() + answers.len());
    let mut answers: Vec<Option<(String, crate::updates::Answer)>> =
        answers.into_iter().map(Some).collect();
    let mut rejections = Vec::new();
    let mut place = |answer: crate::updates::Answer, out: &mut Vec<Command>| match answer {
        crate::updates::Answer::Command(command) => out.push(command),
        crate::updates::Answer::Rejection(update_id, failure) => {
            rejections.push((update_id, failure))
        }
    };
    let mut children = refs.children.clone();
    let mut numbered = refs.numbered;
    // The sequence number of the next operation Cairn numbers.
    let mut next_numbered = |what: &str| {
        numbered += 1;
        if numbered > SDK_ID_MAX {
            return Err(bad(what, "too many children, signals and cancel requests"));
        }
        Ok(numbered * 4 + SeqKind::Child as u32)
    };
    for command in commands {
        let Some(attributes) = &command.attributes else {
            return Err(bad("command", "a command without attributes"));
        };
        if let A::ProtocolMessageCommandAttributes(a) = attributes {
            let answer = answers
                .iter_mut()
                .find(|m| m.as_ref().is_some_and(|(id, _)| *id == a.message_id))
                .and_then(Option::take)
                .ok_or_else(|| {
                    bad(
                        "ProtocolMessage",
                        format!("no protocol message {:?} came with it", a.message_id),
                    )
                })?;
            place(answer.1, &mut out);
            continue;
        }
        out.push(match attributes {
            A::ScheduleActivityTaskCommandAttributes(a) => {
                let seq = seq_of(&a.activity_id, SeqKind::Activity)?;
                let activity_type = a
                    .activity_type
                    .as_ref()
                    .map(|t| t.name.clone())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| bad("ScheduleActivityTask", "activity_type is required"))?;
                let task_queue = a
                    .task_queue
                    .as_ref()
                    .map(|q| q.name.clone())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| bad("ScheduleActivityTask", "task_queue is required"))?;
                let timeouts = ActivityTimeouts {
                    schedule_to_close: std_duration(a.schedule_to_close_timeout.as_ref()),
                    schedule_to_start: std_duration(a.schedule_to_start_timeout.as_ref()),
                    start_to_close: std_duration(a.start_to_close_timeout.as_ref()),
                    heartbeat: std_duration(a.heartbeat_timeout.as_ref()),
                };
                // Filled and capped as Temporal's server does, so the worker and the history
                // read what they would read there.
                let timeouts = timeouts
                    .filled_as_temporal()
                    .validate()
                    .map_err(|e| bad("ScheduleActivityTask timeouts", e))?;
                Command::ScheduleActivity {
                    seq,
                    activity_type,
                    input: to_cairn_exact(a.input.as_ref(), "activity input")
                        .map_err(|e| Status::invalid_argument(e.0))?,
                    options: ActivityOptions {
                        task_queue,
                        timeouts,
                        retry: retry_policy(a.retry_policy.as_ref())?,
                    },
                }
            }
            A::RequestCancelActivityTaskCommandAttributes(a) => {
                let seq = refs
                    .activities
                    .get(&a.scheduled_event_id)
                    .copied()
                    .ok_or_else(|| {
                        bad(
                            "RequestCancelActivityTask",
                            format!(
                                "no activity was scheduled at event {}",
                                a.scheduled_event_id
                            ),
                        )
                    })?;
                Command::RequestCancelActivity { seq }
            }
            A::StartTimerCommandAttributes(a) => Command::StartTimer {
                seq: seq_of(&a.timer_id, SeqKind::Timer)?,
                duration_ms: std_duration(a.start_to_fire_timeout.as_ref())
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
            A::CancelTimerCommandAttributes(a) => Command::CancelTimer {
                seq: seq_of(&a.timer_id, SeqKind::Timer)?,
            },
            A::CompleteWorkflowExecutionCommandAttributes(a) => Command::CompleteWorkflow {
                result: to_cairn_exact(a.result.as_ref(), "workflow result")
                    .map_err(|e| Status::invalid_argument(e.0))?,
            },
            A::FailWorkflowExecutionCommandAttributes(a) => Command::FailWorkflow {
                failure: crate::payloads::workflow_failure(a.failure.as_ref()),
            },
            A::CancelWorkflowExecutionCommandAttributes(_) => Command::CancelWorkflow,
            A::ContinueAsNewWorkflowExecutionCommandAttributes(a) => Command::ContinueAsNew {
                workflow_type: a
                    .workflow_type
                    .as_ref()
                    .map(|t| t.name.clone())
                    .filter(|n| !n.is_empty())
                    // Empty: the run's own type (the state machine fills it in).
                    .unwrap_or_else(|| workflow_type.to_string()),
                input: to_cairn_exact(a.input.as_ref(), "continue-as-new input")
                    .map_err(|e| Status::invalid_argument(e.0))?,
                // Unset: the next run keeps this run's (as Temporal's server does).
                memo: a
                    .memo
                    .as_ref()
                    .map(|m| properties::memo_in(Some(m), "continue-as-new memo"))
                    .transpose()?,
                search_attributes: a
                    .search_attributes
                    .as_ref()
                    .map(|s| properties::start_search_in(Some(s), declared))
                    .transpose()?,
            },
            A::StartChildWorkflowExecutionCommandAttributes(a) => {
                let workflow_id = WorkflowId::new(a.workflow_id.clone())
                    .map_err(|e| bad("StartChildWorkflowExecution workflow_id", e))?;
                let workflow_type = a
                    .workflow_type
                    .as_ref()
                    .map(|t| t.name.clone())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        bad("StartChildWorkflowExecution", "workflow_type is required")
                    })?;
                let seq = next_numbered("StartChildWorkflowExecution")?;
                children.insert(a.workflow_id.clone(), seq);
                let timeouts = WorkflowTimeouts {
                    execution: std_duration(a.workflow_execution_timeout.as_ref()),
                    run: std_duration(a.workflow_run_timeout.as_ref()),
                }
                .validate()
                .map_err(|e| bad("StartChildWorkflowExecution timeouts", e))?;
                Command::StartChildWorkflow {
                    seq,
                    workflow_type,
                    workflow_id,
                    input: to_cairn_exact(a.input.as_ref(), "child input")
                        .map_err(|e| Status::invalid_argument(e.0))?,
                    options: ChildOptions {
                        parent_close_policy: match ParentClosePolicy::try_from(
                            a.parent_close_policy,
                        ) {
                            Ok(ParentClosePolicy::Abandon) => {
                                cairn_types::ParentClosePolicy::Abandon
                            }
                            Ok(ParentClosePolicy::RequestCancel) => {
                                cairn_types::ParentClosePolicy::RequestCancel
                            }
                            _ => cairn_types::ParentClosePolicy::Terminate,
                        },
                        timeouts,
                        memo: properties::memo_in(a.memo.as_ref(), "child memo")?,
                        search_attributes: properties::start_search_in(
                            a.search_attributes.as_ref(),
                            declared,
                        )?,
                    },
                }
            }
            A::UpsertWorkflowSearchAttributesCommandAttributes(a) => {
                let (attributes, removed) =
                    properties::search_in(a.search_attributes.as_ref(), declared)?;
                Command::UpsertSearchAttributes {
                    attributes,
                    removed,
                }
            }
            A::RecordMarkerCommandAttributes(a) => {
                if a.marker_name.is_empty() {
                    return Err(bad("RecordMarker", "marker_name is required"));
                }
                Command::RecordMarker {
                    seq: SeqKind::Marker as u32,
                    marker_name: a.marker_name.clone(),
                    details: crate::payloads::exact_marker(a)
                        .map_err(|e| Status::invalid_argument(e.0))?,
                }
            }
            A::ModifyWorkflowPropertiesCommandAttributes(a) => Command::UpsertMemo {
                memo: properties::memo_update_in(a.upserted_memo.as_ref())?,
            },
            A::RequestCancelExternalWorkflowExecutionCommandAttributes(a)
                if children.contains_key(&a.workflow_id) =>
            {
                Command::RequestCancelChild {
                    seq: children[&a.workflow_id],
                }
            }
            A::RequestCancelExternalWorkflowExecutionCommandAttributes(a) => {
                let (workflow_id, run_id) = external_target(
                    "RequestCancelExternalWorkflowExecution",
                    &a.workflow_id,
                    &a.run_id,
                )?;
                Command::RequestCancelExternal {
                    seq: next_numbered("RequestCancelExternalWorkflowExecution")?,
                    workflow_id,
                    run_id,
                }
            }
            A::SignalExternalWorkflowExecutionCommandAttributes(a) => {
                let what = "SignalExternalWorkflowExecution";
                let execution = a
                    .execution
                    .as_ref()
                    .ok_or_else(|| bad(what, "execution is required"))?;
                if a.signal_name.is_empty() {
                    return Err(bad(what, "signal_name is required"));
                }
                let (workflow_id, run_id) =
                    external_target(what, &execution.workflow_id, &execution.run_id)?;
                Command::SignalExternal {
                    seq: next_numbered(what)?,
                    workflow_id,
                    run_id,
                    signal_name: a.signal_name.clone(),
                    input: to_cairn_exact(a.input.as_ref(), "signal input")
                        .map_err(|e| Status::invalid_argument(e.0))?,
                }
            }
            other => {
                return Err(crate::status::unsupported(&format!(
                    "workflow command {} from a remote workflow",
                    command_name(other)
                )));
            }
        });
    }
    for (_, answer) in answers.into_iter().flatten() {
        place(answer, &mut out);
    }
    Ok((out, rejections))
}

/// The workflow (and run, if named) a signal or cancel request goes to.
fn external_target(
    what: &str,
    workflow_id: &str,
    run_id: &str,
) -> Result<(WorkflowId, Option<cairn_types::RunId>), Status> {
    let workflow_id = WorkflowId::new(workflow_id.to_string())
        .map_err(|e| bad(&format!("{what} workflow_id"), e))?;
    let run_id = if run_id.is_empty() {
        None
    } else {
        Some(
            run_id
                .parse::<cairn_types::RunId>()
                .map_err(|e| bad(&format!("{what} run_id"), e))?,
        )
    };
    Ok((workflow_id, run_id))
}

fn command_name(a: &A) -> &'static str {
    match a {
        A::ScheduleNexusOperationCommandAttributes(_) => "ScheduleNexusOperation",
        A::RequestCancelNexusOperationCommandAttributes(_) => "RequestCancelNexusOperation",
        _ => "of this kind",
    }
}
