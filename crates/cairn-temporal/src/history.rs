//! Cairn's history in Temporal's shape.
//!
//! A Cairn transition is its inputs, the command events the code produced, and a
//! `WorkflowTaskCompleted` marker. Temporal writes the same transition as the inputs, a
//! workflow task (`WorkflowTaskScheduled`, `Started`, `Completed`), then the commands, each
//! pointing at the task that completed it. Event ids are renumbered accordingly; events that
//! refer to others (an activity's result to its scheduling, a timer's firing to its start, a
//! child's events to its initiation) carry the new ids. An activity's `ActivityTaskStarted` is
//! written just before its result, as Temporal itself writes it when the attempt closes.

use crate::payloads::payloads;
use cairn_types::{EventKind, Failure, HistoryEvent, RunId, Seq};
use std::collections::HashMap;
use temporalio_protos::temporal::api::common::v1::{
    ActivityType, SearchAttributes, WorkflowExecution, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::{
    CancelExternalWorkflowExecutionFailedCause as CancelExternalFailedCause, EventType, RetryState,
    SignalExternalWorkflowExecutionFailedCause as SignalExternalFailedCause, TimeoutType,
    WorkflowTaskFailedCause,
};
use temporalio_protos::temporal::api::failure::v1 as failure;
use temporalio_protos::temporal::api::history::v1 as h;
use temporalio_protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::update::v1 as update;

/// What the conversion needs besides the events.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub namespace: String,
    pub task_queue: String,
    pub run_id: RunId,
    /// The run that continued this one, if it continued as new or by its cron schedule.
    pub new_run_id: Option<RunId>,
    /// The run's code is a remote worker's: its sequence numbers carry the SDK's activity and
    /// timer ids ([`sdk_id`]).
    pub remote: bool,
    /// The run this one continues (continue-as-new), if any.
    pub previous_run: Option<RunId>,
    /// The parent, for a child workflow's run.
    pub parent: Option<(String, RunId)>,
    /// The workflow task timeout the history reports.
    pub task_timeout_ms: u64,
}

impl RunContext {
    /// A context with nothing but the run named.
    pub fn new(namespace: &str, task_queue: &str, run_id: RunId, remote: bool) -> Self {
        Self {
            namespace: namespace.to_string(),
            task_queue: task_queue.to_string(),
            run_id,
            new_run_id: None,
            remote,
            previous_run: None,
            parent: None,
            task_timeout_ms: 10_000,
        }
    }
}

/// A Unix-millisecond time as a protobuf timestamp.
pub fn timestamp(unix_ms: u64) -> prost_wkt_types::Timestamp {
    prost_wkt_types::Timestamp {
        seconds: (unix_ms / 1000) as i64,
        nanos: ((unix_ms % 1000) * 1_000_000) as i32,
    }
}

/// A duration as a protobuf duration.
pub fn duration(d: std::time::Duration) -> prost_wkt_types::Duration {
    prost_wkt_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Why the final failure of an activity was not retried, as Temporal says it: a failure
/// flagged non-retryable or of a type the policy names, the attempts used up, or else (the
/// policy would have retried) the schedule-to-close budget spent.
fn failed_retry_state(policy: &cairn_types::RetryPolicy, attempt: u32, f: &Failure) -> RetryState {
    if f.non_retryable {
        return RetryState::NonRetryableFailure;
    }
    match policy.decide(attempt.max(1), &f.error_type) {
        cairn_types::RetryDecision::GiveUpNonRetryable => RetryState::NonRetryableFailure,
        cairn_types::RetryDecision::GiveUpAttemptsExhausted => RetryState::MaximumAttemptsReached,
        _ => RetryState::Timeout,
    }
}

/// An optional duration as Temporal's server writes it: present, zero for "none".
pub fn duration_or_zero(d: Option<std::time::Duration>) -> prost_wkt_types::Duration {
    duration(d.unwrap_or_default())
}

/// A Cairn failure as Temporal's: an application failure, or the activity or child failure
/// that wraps its cause; its causes as the failure's causes.
pub fn failure(f: &Failure) -> failure::Failure {
    if let Some(exact) = f
        .details
        .as_ref()
        .and_then(crate::payloads::failure_of_exact)
    {
        // Raised by a Temporal SDK's workflow: returned as it was.
        return exact;
    }
    // The wrappers the SDK's `?` makes of an activity's or a child's failure are Temporal's
    // own kinds, so its SDKs raise the same errors as for their own workflows.
    let info = match f.error_type.as_str() {
        cairn_types::ACTIVITY_ERROR if f.cause.is_some() => {
            failure::failure::FailureInfo::ActivityFailureInfo(Default::default())
        }
        cairn_types::CHILD_WORKFLOW_ERROR if f.cause.is_some() => {
            failure::failure::FailureInfo::ChildWorkflowExecutionFailureInfo(Default::default())
        }
        _ => {
            failure::failure::FailureInfo::ApplicationFailureInfo(failure::ApplicationFailureInfo {
                r#type: f.error_type.clone(),
                non_retryable: f.non_retryable,
                details: f.details.as_ref().map(payloads),
                ..Default::default()
            })
        }
    };
    failure::Failure {
        message: f.message.clone(),
        source: "Cairn".into(),
        failure_info: Some(info),
        cause: f.cause.as_deref().map(|cause| Box::new(failure(cause))),
        ..Default::default()
    }
}

fn timeout_failure(kind: cairn_types::TimeoutKind) -> failure::Failure {
    let timeout_type = match kind {
        cairn_types::TimeoutKind::ScheduleToStart => TimeoutType::ScheduleToStart,
        cairn_types::TimeoutKind::StartToClose => TimeoutType::StartToClose,
        cairn_types::TimeoutKind::ScheduleToClose => TimeoutType::ScheduleToClose,
        cairn_types::TimeoutKind::Heartbeat => TimeoutType::Heartbeat,
    };
    failure::Failure {
        message: format!("activity {kind} timeout"),
        source: "Cairn".into(),
        failure_info: Some(failure::failure::FailureInfo::TimeoutFailureInfo(
            failure::TimeoutFailureInfo {
                timeout_type: timeout_type as i32,
                last_heartbeat_details: None,
            },
        )),
        ..Default::default()
    }
}

/// Search attributes as Temporal's indexed fields (JSON payloads with their type).
pub fn search_attributes(attributes: &cairn_types::SearchAttributes) -> SearchAttributes {
    crate::properties::search_out(attributes, &[])
}

/// The converter's state: ids handed out and what refers to what.
struct Builder<'a> {
    context: &'a RunContext,
    out: Vec<h::HistoryEvent>,
    /// Each activity's scheduled event id, type and retry policy (what its failure's retry
    /// state is read from).
    activities: HashMap<Seq, (i64, String, cairn_types::RetryPolicy)>,
    timers: HashMap<Seq, i64>,
    children: HashMap<Seq, (i64, String, String)>,
    child_started: HashMap<Seq, (i64, RunId)>,
    cancel_requested: HashMap<Seq, i64>,
    /// Signals and cancel requests to other workflows: their initiated event, the workflow
    /// task that made them, and their target.
    externals: HashMap<Seq, (i64, i64, WorkflowExecution)>,
    /// Each accepted update's accepted event id, by update id.
    updates: HashMap<String, i64>,
}

impl Builder<'_> {
    fn next_id(&self) -> i64 {
        self.out.len() as i64 + 1
    }

    fn push(&mut self, time_unix_ms: u64, event_type: EventType, attributes: Attributes) -> i64 {
        let event_id = self.next_id();
        self.out.push(h::HistoryEvent {
            event_id,
            event_time: Some(timestamp(time_unix_ms)),
            event_type: event_type as i32,
            task_id: event_id,
            attributes: Some(attributes),
            ..Default::default()
        });
        event_id
    }

    /// The id Temporal shows for the activity or timer `seq`.
    fn id(&self, seq: Seq) -> String {
        if self.context.remote {
            sdk_id(seq)
        } else {
            seq.to_string()
        }
    }

    fn task_queue(&self) -> Option<TaskQueue> {
        Some(TaskQueue {
            name: self.context.task_queue.clone(),
            kind: 1,
            ..Default::default()
        })
    }

    /// A workflow task's scheduled and started events (attempt 1); returns their ids.
    fn task_scheduled_and_started(&mut self, time: u64) -> (i64, i64) {
        let scheduled = self.push(
            time,
            EventType::WorkflowTaskScheduled,
            Attributes::WorkflowTaskScheduledEventAttributes(
                h::WorkflowTaskScheduledEventAttributes {
                    task_queue: self.task_queue(),
                    start_to_close_timeout: Some(duration(std::time::Duration::from_millis(
                        self.context.task_timeout_ms,
                    ))),
                    attempt: 1,
                },
            ),
        );
        let started = self.push(
            time,
            EventType::WorkflowTaskStarted,
            Attributes::WorkflowTaskStartedEventAttributes(h::WorkflowTaskStartedEventAttributes {
                scheduled_event_id: scheduled,
                identity: "cairn".into(),
                ..Default::default()
            }),
        );
        (scheduled, started)
    }

    /// A workflow task around the transition that `time` closed; returns its completed id.
    fn workflow_task(&mut self, time: u64) -> i64 {
        let (scheduled, started) = self.task_scheduled_and_started(time);
        self.push(
            time,
            EventType::WorkflowTaskCompleted,
            Attributes::WorkflowTaskCompletedEventAttributes(
                h::WorkflowTaskCompletedEventAttributes {
                    scheduled_event_id: scheduled,
                    started_event_id: started,
                    identity: "cairn".into(),
                    ..Default::default()
                },
            ),
        )
    }

    /// A workflow task that failed or timed out: its scheduled and started events, then
    /// `end` (built from the scheduled and started ids).
    fn failed_workflow_task(
        &mut self,
        time: u64,
        event_type: EventType,
        end: impl FnOnce(i64, i64) -> Attributes,
    ) {
        let (scheduled, started) = self.task_scheduled_and_started(time);
        self.push(time, event_type, end(scheduled, started));
    }

    /// An activity's started event, written when its attempt closes.
    fn activity_started(&mut self, time: u64, seq: Seq, attempt: u32) -> (i64, i64) {
        let scheduled = self.activities.get(&seq).map_or(0, |(id, ..)| *id);
        let started = self.push(
            time,
            EventType::ActivityTaskStarted,
            Attributes::ActivityTaskStartedEventAttributes(h::ActivityTaskStartedEventAttributes {
                scheduled_event_id: scheduled,
                identity: "cairn".into(),
                attempt: attempt as i32,
                ..Default::default()
            }),
        );
        (scheduled, started)
    }

    /// What a signal or cancel request to another workflow was: its initiated event, the
    /// workflow task that made it, its target.
    fn external(&self, seq: Seq) -> (i64, i64, WorkflowExecution) {
        self.externals.get(&seq).cloned().unwrap_or_default()
    }

    fn child_execution(&self, seq: Seq) -> (i64, Option<WorkflowExecution>, Option<WorkflowType>) {
        let (initiated, workflow_id, workflow_type) =
            self.children
                .get(&seq)
                .cloned()
                .unwrap_or((0, String::new(), String::new()));
        let run_id = self
            .child_started
            .get(&seq)
            .map(|(_, r)| r.to_string())
            .unwrap_or_default();
        (
            initiated,
            Some(WorkflowExecution {
                workflow_id,
                run_id,
            }),
            Some(WorkflowType {
                name: workflow_type,
            }),
        )
    }

    /// The run that continues this one, as a close event names it ("" for none).
    fn next_run(&self) -> String {
        self.context
            .new_run_id
            .map(|r| r.to_string())
            .unwrap_or_default()
    }

    /// One Cairn event; `task` is the completed workflow task of a command.
    fn event(&mut self, event: &HistoryEvent, task: i64) {
        let t = event.time_unix_ms;
        let ns = self.context.namespace.clone();
        match &event.kind {
            EventKind::WorkflowExecutionStarted {
                workflow_type,
                input,
                timeouts,
                memo,
                search_attributes: attributes,
                cron,
                ..
            } => {
                let cron = cron.as_ref();
                let continued = cron.is_some() && self.context.previous_run.is_some();
                let attributes = h::WorkflowExecutionStartedEventAttributes {
                    cron_schedule: cron.map(|c| c.schedule.clone()).unwrap_or_default(),
                    first_workflow_task_backoff: cron.filter(|c| c.first_task_backoff_ms > 0).map(
                        |c| duration(std::time::Duration::from_millis(c.first_task_backoff_ms)),
                    ),
                    initiator: if continued {
                        temporalio_protos::temporal::api::enums::v1::ContinueAsNewInitiator::CronSchedule
                            as i32
                    } else {
                        0
                    },
                    last_completion_result: cron
                        .and_then(|c| c.last_completion_result.as_ref())
                        .map(payloads),
                    continued_failure: cron.and_then(|c| c.continued_failure.as_ref()).map(failure),
                    workflow_type: Some(WorkflowType {
                        name: workflow_type.clone(),
                    }),
                    task_queue: self.task_queue(),
                    input: Some(payloads(input)),
                    workflow_execution_timeout: timeouts.execution.map(duration),
                    workflow_run_timeout: timeouts.run.map(duration),
                    workflow_task_timeout: Some(duration(std::time::Duration::from_millis(
                        self.context.task_timeout_ms,
                    ))),
                    original_execution_run_id: self.context.run_id.to_string(),
                    first_execution_run_id: self.context.run_id.to_string(),
                    continued_execution_run_id: self
                        .context
                        .previous_run
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    parent_workflow_namespace: if self.context.parent.is_some() {
                        self.context.namespace.clone()
                    } else {
                        String::new()
                    },
                    parent_workflow_execution: self.context.parent.as_ref().map(
                        |(workflow_id, run_id)| WorkflowExecution {
                            workflow_id: workflow_id.clone(),
                            run_id: run_id.to_string(),
                        },
                    ),
                    attempt: 1,
                    identity: "cairn".into(),
                    memo: (!memo.is_empty()).then(|| crate::properties::memo_out(memo)),
                    search_attributes: (!attributes.is_empty())
                        .then(|| search_attributes(attributes)),
                    ..Default::default()
                };
                self.push(
                    t,
                    EventType::WorkflowExecutionStarted,
                    Attributes::WorkflowExecutionStartedEventAttributes(attributes),
                );
            }
            EventKind::WorkflowTaskCompleted => {}
            EventKind::ActivityTaskScheduled {
                seq,
                activity_type,
                input,
                options,
            } => {
                let attributes = h::ActivityTaskScheduledEventAttributes {
                    activity_id: self.id(*seq),
                    activity_type: Some(ActivityType {
                        name: activity_type.clone(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: options.task_queue.clone(),
                        kind: 1,
                        ..Default::default()
                    }),
                    input: Some(payloads(input)),
                    schedule_to_close_timeout: Some(duration_or_zero(
                        options.timeouts.schedule_to_close,
                    )),
                    schedule_to_start_timeout: Some(duration_or_zero(
                        options.timeouts.schedule_to_start,
                    )),
                    start_to_close_timeout: Some(duration_or_zero(options.timeouts.start_to_close)),
                    heartbeat_timeout: Some(duration_or_zero(options.timeouts.heartbeat)),
                    workflow_task_completed_event_id: task,
                    ..Default::default()
                };
                let id = self.push(
                    t,
                    EventType::ActivityTaskScheduled,
                    Attributes::ActivityTaskScheduledEventAttributes(attributes),
                );
                self.activities
                    .insert(*seq, (id, activity_type.clone(), options.retry.clone()));
            }
            EventKind::ActivityTaskCompleted {
                seq,
                attempt,
                result,
            } => {
                let (scheduled, started) = self.activity_started(t, *seq, *attempt);
                self.push(
                    t,
                    EventType::ActivityTaskCompleted,
                    Attributes::ActivityTaskCompletedEventAttributes(
                        h::ActivityTaskCompletedEventAttributes {
                            result: Some(payloads(result)),
                            scheduled_event_id: scheduled,
                            started_event_id: started,
                            identity: "cairn".into(),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ActivityTaskFailed {
                seq,
                attempt,
                failure: f,
            } => {
                let (scheduled, started) = self.activity_started(t, *seq, *attempt);
                let retry_state = self
                    .activities
                    .get(seq)
                    .map_or(RetryState::MaximumAttemptsReached, |(.., policy)| {
                        failed_retry_state(policy, *attempt, f)
                    });
                self.push(
                    t,
                    EventType::ActivityTaskFailed,
                    Attributes::ActivityTaskFailedEventAttributes(
                        h::ActivityTaskFailedEventAttributes {
                            failure: Some(failure(f)),
                            scheduled_event_id: scheduled,
                            started_event_id: started,
                            identity: "cairn".into(),
                            retry_state: retry_state as i32,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ActivityTaskTimedOut {
                seq,
                attempt,
                timeout,
            } => {
                let (scheduled, started) = self.activity_started(t, *seq, *attempt);
                self.push(
                    t,
                    EventType::ActivityTaskTimedOut,
                    Attributes::ActivityTaskTimedOutEventAttributes(
                        h::ActivityTaskTimedOutEventAttributes {
                            failure: Some(timeout_failure(*timeout)),
                            scheduled_event_id: scheduled,
                            started_event_id: started,
                            retry_state: RetryState::Timeout as i32,
                        },
                    ),
                );
            }
            EventKind::ActivityTaskCancelRequested { seq } => {
                let scheduled = self.activities.get(seq).map_or(0, |(id, ..)| *id);
                let id = self.push(
                    t,
                    EventType::ActivityTaskCancelRequested,
                    Attributes::ActivityTaskCancelRequestedEventAttributes(
                        h::ActivityTaskCancelRequestedEventAttributes {
                            scheduled_event_id: scheduled,
                            workflow_task_completed_event_id: task,
                        },
                    ),
                );
                self.cancel_requested.insert(*seq, id);
            }
            EventKind::ActivityTaskCanceled { seq } => {
                let scheduled = self.activities.get(seq).map_or(0, |(id, ..)| *id);
                let requested = self.cancel_requested.get(seq).copied().unwrap_or(0);
                self.push(
                    t,
                    EventType::ActivityTaskCanceled,
                    Attributes::ActivityTaskCanceledEventAttributes(
                        h::ActivityTaskCanceledEventAttributes {
                            latest_cancel_requested_event_id: requested,
                            scheduled_event_id: scheduled,
                            identity: "cairn".into(),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::TimerStarted { seq, duration_ms } => {
                let id = self.push(
                    t,
                    EventType::TimerStarted,
                    Attributes::TimerStartedEventAttributes(h::TimerStartedEventAttributes {
                        timer_id: self.id(*seq),
                        start_to_fire_timeout: Some(duration(std::time::Duration::from_millis(
                            *duration_ms,
                        ))),
                        workflow_task_completed_event_id: task,
                    }),
                );
                self.timers.insert(*seq, id);
            }
            EventKind::TimerFired { seq } => {
                let started = self.timers.get(seq).copied().unwrap_or(0);
                self.push(
                    t,
                    EventType::TimerFired,
                    Attributes::TimerFiredEventAttributes(h::TimerFiredEventAttributes {
                        timer_id: self.id(*seq),
                        started_event_id: started,
                    }),
                );
            }
            EventKind::TimerCanceled { seq } => {
                let started = self.timers.get(seq).copied().unwrap_or(0);
                self.push(
                    t,
                    EventType::TimerCanceled,
                    Attributes::TimerCanceledEventAttributes(h::TimerCanceledEventAttributes {
                        timer_id: self.id(*seq),
                        started_event_id: started,
                        workflow_task_completed_event_id: task,
                        identity: "cairn".into(),
                    }),
                );
            }
            EventKind::WorkflowExecutionSignaled { signal_name, input } => {
                self.push(
                    t,
                    EventType::WorkflowExecutionSignaled,
                    Attributes::WorkflowExecutionSignaledEventAttributes(
                        h::WorkflowExecutionSignaledEventAttributes {
                            signal_name: signal_name.clone(),
                            input: Some(payloads(input)),
                            identity: "cairn".into(),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::MarkerRecorded {
                marker_name,
                details,
                ..
            } => {
                if let Some(marker) = crate::payloads::marker_of_exact(details) {
                    // A remote workflow's marker, as its worker wrote it.
                    self.push(
                        t,
                        EventType::MarkerRecorded,
                        Attributes::MarkerRecordedEventAttributes(
                            h::MarkerRecordedEventAttributes {
                                marker_name: marker.marker_name,
                                details: marker.details,
                                header: marker.header,
                                failure: marker.failure,
                                workflow_task_completed_event_id: task,
                            },
                        ),
                    );
                    return;
                }
                self.push(
                    t,
                    EventType::MarkerRecorded,
                    Attributes::MarkerRecordedEventAttributes(h::MarkerRecordedEventAttributes {
                        marker_name: marker_name.clone(),
                        details: HashMap::from([("data".to_string(), payloads(details))]),
                        workflow_task_completed_event_id: task,
                        ..Default::default()
                    }),
                );
            }
            EventKind::WorkflowExecutionCancelRequested { reason } => {
                self.push(
                    t,
                    EventType::WorkflowExecutionCancelRequested,
                    Attributes::WorkflowExecutionCancelRequestedEventAttributes(
                        h::WorkflowExecutionCancelRequestedEventAttributes {
                            cause: reason.clone(),
                            identity: "cairn".into(),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::WorkflowExecutionCompleted { result } => {
                self.push(
                    t,
                    EventType::WorkflowExecutionCompleted,
                    Attributes::WorkflowExecutionCompletedEventAttributes(
                        h::WorkflowExecutionCompletedEventAttributes {
                            result: Some(payloads(result)),
                            workflow_task_completed_event_id: task,
                            new_execution_run_id: self.next_run(),
                        },
                    ),
                );
            }
            EventKind::WorkflowExecutionFailed { failure: f } => {
                self.push(
                    t,
                    EventType::WorkflowExecutionFailed,
                    Attributes::WorkflowExecutionFailedEventAttributes(
                        h::WorkflowExecutionFailedEventAttributes {
                            failure: Some(failure(f)),
                            retry_state: RetryState::RetryPolicyNotSet as i32,
                            workflow_task_completed_event_id: task,
                            new_execution_run_id: self.next_run(),
                        },
                    ),
                );
            }
            EventKind::WorkflowExecutionCanceled => {
                self.push(
                    t,
                    EventType::WorkflowExecutionCanceled,
                    Attributes::WorkflowExecutionCanceledEventAttributes(
                        h::WorkflowExecutionCanceledEventAttributes {
                            workflow_task_completed_event_id: task,
                            details: None,
                        },
                    ),
                );
            }
            EventKind::WorkflowExecutionTerminated { reason } => {
                self.push(
                    t,
                    EventType::WorkflowExecutionTerminated,
                    Attributes::WorkflowExecutionTerminatedEventAttributes(
                        h::WorkflowExecutionTerminatedEventAttributes {
                            reason: reason.clone(),
                            identity: "cairn".into(),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::WorkflowExecutionTimedOut => {
                self.push(
                    t,
                    EventType::WorkflowExecutionTimedOut,
                    Attributes::WorkflowExecutionTimedOutEventAttributes(
                        h::WorkflowExecutionTimedOutEventAttributes {
                            retry_state: RetryState::Timeout as i32,
                            new_execution_run_id: self.next_run(),
                        },
                    ),
                );
            }
            EventKind::StartChildWorkflowExecutionInitiated {
                seq,
                workflow_type,
                workflow_id,
                input,
                options,
            } => {
                let id = self.push(
                    t,
                    EventType::StartChildWorkflowExecutionInitiated,
                    Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(
                        h::StartChildWorkflowExecutionInitiatedEventAttributes {
                            namespace: ns,
                            workflow_id: workflow_id.to_string(),
                            workflow_type: Some(WorkflowType {
                                name: workflow_type.clone(),
                            }),
                            task_queue: self.task_queue(),
                            input: Some(payloads(input)),
                            workflow_execution_timeout: options.timeouts.execution.map(duration),
                            workflow_run_timeout: options.timeouts.run.map(duration),
                            parent_close_policy: match options.parent_close_policy {
                                cairn_types::ParentClosePolicy::Terminate => 1,
                                cairn_types::ParentClosePolicy::Abandon => 2,
                                cairn_types::ParentClosePolicy::RequestCancel => 3,
                            },
                            workflow_task_completed_event_id: task,
                            memo: (!options.memo.is_empty())
                                .then(|| crate::properties::memo_out(&options.memo)),
                            search_attributes: (!options.search_attributes.is_empty())
                                .then(|| search_attributes(&options.search_attributes)),
                            ..Default::default()
                        },
                    ),
                );
                self.children
                    .insert(*seq, (id, workflow_id.to_string(), workflow_type.clone()));
            }
            EventKind::StartChildWorkflowExecutionFailed {
                seq, workflow_id, ..
            } => {
                let (initiated, _, workflow_type) = self.child_execution(*seq);
                self.push(
                    t,
                    EventType::StartChildWorkflowExecutionFailed,
                    Attributes::StartChildWorkflowExecutionFailedEventAttributes(
                        h::StartChildWorkflowExecutionFailedEventAttributes {
                            namespace: ns,
                            workflow_id: workflow_id.to_string(),
                            workflow_type,
                            cause: 1, // WORKFLOW_ALREADY_EXISTS
                            initiated_event_id: initiated,
                            workflow_task_completed_event_id: task,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ChildWorkflowExecutionStarted { seq, run_id, .. } => {
                let (initiated, mut execution, workflow_type) = self.child_execution(*seq);
                if let Some(e) = execution.as_mut() {
                    e.run_id = run_id.to_string();
                }
                let id = self.push(
                    t,
                    EventType::ChildWorkflowExecutionStarted,
                    Attributes::ChildWorkflowExecutionStartedEventAttributes(
                        h::ChildWorkflowExecutionStartedEventAttributes {
                            namespace: ns,
                            initiated_event_id: initiated,
                            workflow_execution: execution,
                            workflow_type,
                            ..Default::default()
                        },
                    ),
                );
                self.child_started.insert(*seq, (id, *run_id));
            }
            EventKind::ChildWorkflowExecutionCompleted { seq, result } => {
                let (initiated, execution, workflow_type) = self.child_execution(*seq);
                let started = self.child_started.get(seq).map_or(0, |(id, _)| *id);
                self.push(
                    t,
                    EventType::ChildWorkflowExecutionCompleted,
                    Attributes::ChildWorkflowExecutionCompletedEventAttributes(
                        h::ChildWorkflowExecutionCompletedEventAttributes {
                            result: Some(payloads(result)),
                            namespace: ns,
                            workflow_execution: execution,
                            workflow_type,
                            initiated_event_id: initiated,
                            started_event_id: started,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ChildWorkflowExecutionFailed { seq, failure: f } => {
                let (initiated, execution, workflow_type) = self.child_execution(*seq);
                let started = self.child_started.get(seq).map_or(0, |(id, _)| *id);
                self.push(
                    t,
                    EventType::ChildWorkflowExecutionFailed,
                    Attributes::ChildWorkflowExecutionFailedEventAttributes(
                        h::ChildWorkflowExecutionFailedEventAttributes {
                            failure: Some(failure(f)),
                            namespace: ns,
                            workflow_execution: execution,
                            workflow_type,
                            initiated_event_id: initiated,
                            started_event_id: started,
                            retry_state: RetryState::RetryPolicyNotSet as i32,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ChildWorkflowExecutionCanceled { seq } => {
                let (initiated, execution, workflow_type) = self.child_execution(*seq);
                let started = self.child_started.get(seq).map_or(0, |(id, _)| *id);
                self.push(
                    t,
                    EventType::ChildWorkflowExecutionCanceled,
                    Attributes::ChildWorkflowExecutionCanceledEventAttributes(
                        h::ChildWorkflowExecutionCanceledEventAttributes {
                            namespace: ns,
                            workflow_execution: execution,
                            workflow_type,
                            initiated_event_id: initiated,
                            started_event_id: started,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ChildWorkflowExecutionTerminated { seq, .. } => {
                let (initiated, execution, workflow_type) = self.child_execution(*seq);
                let started = self.child_started.get(seq).map_or(0, |(id, _)| *id);
                self.push(
                    t,
                    EventType::ChildWorkflowExecutionTerminated,
                    Attributes::ChildWorkflowExecutionTerminatedEventAttributes(
                        h::ChildWorkflowExecutionTerminatedEventAttributes {
                            namespace: ns,
                            workflow_execution: execution,
                            workflow_type,
                            initiated_event_id: initiated,
                            started_event_id: started,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ChildWorkflowExecutionTimedOut { seq } => {
                let (initiated, execution, workflow_type) = self.child_execution(*seq);
                let started = self.child_started.get(seq).map_or(0, |(id, _)| *id);
                self.push(
                    t,
                    EventType::ChildWorkflowExecutionTimedOut,
                    Attributes::ChildWorkflowExecutionTimedOutEventAttributes(
                        h::ChildWorkflowExecutionTimedOutEventAttributes {
                            namespace: ns,
                            workflow_execution: execution,
                            workflow_type,
                            initiated_event_id: initiated,
                            started_event_id: started,
                            retry_state: RetryState::Timeout as i32,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::RequestCancelExternalWorkflowExecutionInitiated {
                seq,
                workflow_id: Some(workflow_id),
                run_id,
            } => {
                let execution = WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: run_id.map(|r| r.to_string()).unwrap_or_default(),
                };
                let id = self.push(
                    t,
                    EventType::RequestCancelExternalWorkflowExecutionInitiated,
                    Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
                        h::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes {
                            workflow_task_completed_event_id: task,
                            namespace: ns,
                            workflow_execution: Some(execution.clone()),
                            ..Default::default()
                        },
                    ),
                );
                self.externals.insert(*seq, (id, task, execution));
            }
            EventKind::RequestCancelExternalWorkflowExecutionInitiated { seq, .. } => {
                let (_, execution, _) = self.child_execution(*seq);
                self.push(
                    t,
                    EventType::RequestCancelExternalWorkflowExecutionInitiated,
                    Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
                        h::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes {
                            workflow_task_completed_event_id: task,
                            namespace: ns,
                            workflow_execution: execution,
                            child_workflow_only: true,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::ExternalWorkflowExecutionCancelRequested { seq } => {
                let (initiated, _, execution) = self.external(*seq);
                self.push(
                    t,
                    EventType::ExternalWorkflowExecutionCancelRequested,
                    Attributes::ExternalWorkflowExecutionCancelRequestedEventAttributes(
                        h::ExternalWorkflowExecutionCancelRequestedEventAttributes {
                            initiated_event_id: initiated,
                            namespace: ns,
                            workflow_execution: Some(execution),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::RequestCancelExternalWorkflowExecutionFailed { seq, .. } => {
                let (initiated, made_by, execution) = self.external(*seq);
                self.push(
                    t,
                    EventType::RequestCancelExternalWorkflowExecutionFailed,
                    Attributes::RequestCancelExternalWorkflowExecutionFailedEventAttributes(
                        h::RequestCancelExternalWorkflowExecutionFailedEventAttributes {
                            cause: CancelExternalFailedCause::ExternalWorkflowExecutionNotFound
                                as i32,
                            workflow_task_completed_event_id: made_by,
                            namespace: ns,
                            workflow_execution: Some(execution),
                            initiated_event_id: initiated,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::SignalExternalWorkflowExecutionInitiated {
                seq,
                workflow_id,
                run_id,
                signal_name,
                input,
            } => {
                let execution = WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: run_id.map(|r| r.to_string()).unwrap_or_default(),
                };
                let id = self.push(
                    t,
                    EventType::SignalExternalWorkflowExecutionInitiated,
                    Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(
                        h::SignalExternalWorkflowExecutionInitiatedEventAttributes {
                            workflow_task_completed_event_id: task,
                            namespace: ns,
                            workflow_execution: Some(execution.clone()),
                            signal_name: signal_name.clone(),
                            input: Some(payloads(input)),
                            ..Default::default()
                        },
                    ),
                );
                self.externals.insert(*seq, (id, task, execution));
            }
            EventKind::ExternalWorkflowExecutionSignaled { seq } => {
                let (initiated, _, execution) = self.external(*seq);
                self.push(
                    t,
                    EventType::ExternalWorkflowExecutionSignaled,
                    Attributes::ExternalWorkflowExecutionSignaledEventAttributes(
                        h::ExternalWorkflowExecutionSignaledEventAttributes {
                            initiated_event_id: initiated,
                            namespace: ns,
                            workflow_execution: Some(execution),
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::SignalExternalWorkflowExecutionFailed { seq, .. } => {
                let (initiated, made_by, execution) = self.external(*seq);
                self.push(
                    t,
                    EventType::SignalExternalWorkflowExecutionFailed,
                    Attributes::SignalExternalWorkflowExecutionFailedEventAttributes(
                        h::SignalExternalWorkflowExecutionFailedEventAttributes {
                            cause: SignalExternalFailedCause::ExternalWorkflowExecutionNotFound
                                as i32,
                            workflow_task_completed_event_id: made_by,
                            namespace: ns,
                            workflow_execution: Some(execution),
                            initiated_event_id: initiated,
                            ..Default::default()
                        },
                    ),
                );
            }
            EventKind::WorkflowExecutionContinuedAsNew {
                workflow_type,
                input,
            } => {
                let attributes = h::WorkflowExecutionContinuedAsNewEventAttributes {
                    new_execution_run_id: self.next_run(),
                    workflow_type: Some(WorkflowType {
                        name: workflow_type.clone(),
                    }),
                    task_queue: self.task_queue(),
                    input: Some(payloads(input)),
                    workflow_task_completed_event_id: task,
                    ..Default::default()
                };
                self.push(
                    t,
                    EventType::WorkflowExecutionContinuedAsNew,
                    Attributes::WorkflowExecutionContinuedAsNewEventAttributes(attributes),
                );
            }
            EventKind::UpsertWorkflowSearchAttributes {
                attributes,
                removed,
            } => {
                self.push(
                    t,
                    EventType::UpsertWorkflowSearchAttributes,
                    Attributes::UpsertWorkflowSearchAttributesEventAttributes(
                        h::UpsertWorkflowSearchAttributesEventAttributes {
                            workflow_task_completed_event_id: task,
                            search_attributes: Some(crate::properties::search_out(
                                attributes, removed,
                            )),
                        },
                    ),
                );
            }
            EventKind::WorkflowPropertiesModified { memo } => {
                self.push(
                    t,
                    EventType::WorkflowPropertiesModified,
                    Attributes::WorkflowPropertiesModifiedEventAttributes(
                        h::WorkflowPropertiesModifiedEventAttributes {
                            workflow_task_completed_event_id: task,
                            upserted_memo: Some(crate::properties::memo_update_out(memo)),
                        },
                    ),
                );
            }
            EventKind::WorkflowTaskFailed { failure: f } => {
                let failure = failure(f);
                self.failed_workflow_task(
                    t,
                    EventType::WorkflowTaskFailed,
                    |scheduled, started| {
                        Attributes::WorkflowTaskFailedEventAttributes(
                            h::WorkflowTaskFailedEventAttributes {
                                scheduled_event_id: scheduled,
                                started_event_id: started,
                                cause: WorkflowTaskFailedCause::WorkflowWorkerUnhandledFailure
                                    as i32,
                                failure: Some(failure),
                                identity: "cairn".into(),
                                ..Default::default()
                            },
                        )
                    },
                );
            }
            EventKind::WorkflowTaskTimedOut => {
                self.failed_workflow_task(
                    t,
                    EventType::WorkflowTaskTimedOut,
                    |scheduled, started| {
                        Attributes::WorkflowTaskTimedOutEventAttributes(
                            h::WorkflowTaskTimedOutEventAttributes {
                                scheduled_event_id: scheduled,
                                started_event_id: started,
                                timeout_type: TimeoutType::StartToClose as i32,
                            },
                        )
                    },
                );
            }
            EventKind::WorkflowExecutionUpdateAccepted {
                update_id,
                name,
                input,
                request_message_id,
                sequencing_event_id,
            } => {
                // Code in this process: the request came with the task that accepted it.
                let sequencing = match *sequencing_event_id {
                    0 => task.saturating_sub(2),
                    id => i64::try_from(id).unwrap_or(0),
                };
                let message_id = if request_message_id.is_empty() {
                    format!("{update_id}/request")
                } else {
                    request_message_id.clone()
                };
                let id = self.push(
                    t,
                    EventType::WorkflowExecutionUpdateAccepted,
                    Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(
                        h::WorkflowExecutionUpdateAcceptedEventAttributes {
                            protocol_instance_id: update_id.clone(),
                            accepted_request_message_id: message_id,
                            accepted_request_sequencing_event_id: sequencing,
                            accepted_request: Some(request_out(update_id, name, input)),
                        },
                    ),
                );
                self.updates.insert(update_id.clone(), id);
            }
            EventKind::WorkflowExecutionUpdateCompleted {
                update_id, outcome, ..
            } => {
                let accepted = self.updates.get(update_id).copied().unwrap_or(0);
                self.push(
                    t,
                    EventType::WorkflowExecutionUpdateCompleted,
                    Attributes::WorkflowExecutionUpdateCompletedEventAttributes(
                        h::WorkflowExecutionUpdateCompletedEventAttributes {
                            meta: Some(temporalio_protos::temporal::api::update::v1::Meta {
                                update_id: update_id.clone(),
                                identity: String::new(),
                            }),
                            accepted_event_id: accepted,
                            outcome: Some(outcome_out(outcome)),
                        },
                    ),
                );
            }
            _ => {}
        }
    }
}

/// A run's Cairn history as Temporal's events.
pub fn convert(events: &[HistoryEvent], context: &RunContext) -> Vec<h::HistoryEvent> {
    let mut builder = Builder {
        context,
        out: Vec::with_capacity(events.len() * 2),
        activities: HashMap::new(),
        timers: HashMap::new(),
        children: HashMap::new(),
        child_started: HashMap::new(),
        cancel_requested: HashMap::new(),
        externals: HashMap::new(),
        updates: HashMap::new(),
    };
    let mut commands: Vec<&HistoryEvent> = Vec::new();
    let mut last_task = 0;
    for event in events {
        if event.kind.is_close_command_event() && commands.is_empty() {
            // Cairn writes a closing command after the marker of the task that made it.
            builder.event(event, last_task);
        } else if event.kind.is_command_event()
            // An update's acceptance follows the workflow task that accepted it.
            || matches!(event.kind, EventKind::WorkflowExecutionUpdateAccepted { .. })
            || (matches!(event.kind, EventKind::ActivityTaskCanceled { .. })
                && !commands.is_empty())
        {
            // A cancel's `ActivityTaskCanceled`, recorded with the command, follows it.
            commands.push(event);
        } else if matches!(event.kind, EventKind::WorkflowTaskCompleted) {
            let task = builder.workflow_task(event.time_unix_ms);
            last_task = task;
            for command in commands.drain(..) {
                builder.event(command, task);
            }
        } else {
            builder.event(event, 0);
        }
    }
    for command in commands {
        builder.event(command, 0);
    }
    builder.out
}

/// The close event of a converted history, if the run closed.
pub fn is_close_event(event: &h::HistoryEvent) -> bool {
    matches!(
        EventType::try_from(event.event_type),
        Ok(EventType::WorkflowExecutionCompleted
            | EventType::WorkflowExecutionFailed
            | EventType::WorkflowExecutionCanceled
            | EventType::WorkflowExecutionTerminated
            | EventType::WorkflowExecutionTimedOut
            | EventType::WorkflowExecutionContinuedAsNew)
    )
}

/// The SDK's id a remote run's sequence number carries.
pub fn sdk_id(seq: Seq) -> String {
    (seq / 4).to_string()
}

/// An update request as Temporal writes it (in a protocol message, in an accepted event).
pub fn request_out(update_id: &str, name: &str, input: &cairn_types::Payload) -> update::Request {
    update::Request {
        meta: Some(update::Meta {
            update_id: update_id.to_string(),
            identity: String::new(),
        }),
        input: Some(update::Input {
            header: None,
            name: name.to_string(),
            args: Some(payloads(input)),
        }),
        ..Default::default()
    }
}

/// An update's outcome as Temporal's.
pub fn outcome_out(outcome: &cairn_types::UpdateOutcome) -> update::Outcome {
    update::Outcome {
        value: Some(match outcome {
            cairn_types::UpdateOutcome::Success(result) => {
                update::outcome::Value::Success(payloads(result))
            }
            cairn_types::UpdateOutcome::Failure(f) => update::outcome::Value::Failure(failure(f)),
        }),
    }
}
