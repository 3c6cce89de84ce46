//! Temporal's schedules as Cairn's: a schedule's spec (cron strings, intervals, bounds,
//! jitter, time zone), its start-workflow action, policies and state, both ways.

use crate::history::{duration, timestamp};
use crate::payloads::{to_cairn, to_cairn_exact};
use cairn_core::schedule::{IntervalSpec, OverlapPolicy, SchedulePolicies, ScheduleSpec};
use cairn_runtime::{
    CreateSchedule, RemoteStart, ScheduleAction, ScheduleDescription, ScheduleRecord,
    WORKFLOW_TASK_TIMEOUT_DEFAULT_MS, WORKFLOW_TASK_TIMEOUT_MAX_MS,
};
use cairn_types::WorkflowTimeouts;
use temporalio_protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use temporalio_protos::temporal::api::enums::v1::ScheduleOverlapPolicy;
use temporalio_protos::temporal::api::schedule::v1 as s;
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflow::v1::NewWorkflowExecutionInfo;
use tonic::Status;

fn ms(d: Option<&prost_wkt_types::Duration>) -> Option<u64> {
    d.filter(|d| d.seconds > 0 || d.nanos > 0).map(|d| {
        (d.seconds.max(0) as u64)
            .saturating_mul(1000)
            .saturating_add((d.nanos.max(0) as u64) / 1_000_000)
    })
}

fn unix_ms(t: Option<&prost_wkt_types::Timestamp>) -> Option<u64> {
    t.map(|t| {
        (t.seconds.max(0) as u64)
            .saturating_mul(1000)
            .saturating_add((t.nanos.max(0) as u64) / 1_000_000)
    })
}

fn unsupported(what: &str) -> Status {
    crate::status::unsupported(&format!("{what} in a schedule"))
}

/// Temporal's overlap policy as Cairn's (`None`: the schedule's own).
pub fn overlap(policy: i32) -> Option<OverlapPolicy> {
    Some(match ScheduleOverlapPolicy::try_from(policy).ok()? {
        ScheduleOverlapPolicy::Unspecified => return None,
        ScheduleOverlapPolicy::Skip => OverlapPolicy::Skip,
        ScheduleOverlapPolicy::BufferOne => OverlapPolicy::BufferOne,
        ScheduleOverlapPolicy::BufferAll => OverlapPolicy::BufferAll,
        ScheduleOverlapPolicy::CancelOther => OverlapPolicy::CancelOther,
        ScheduleOverlapPolicy::TerminateOther => OverlapPolicy::TerminateOther,
        ScheduleOverlapPolicy::AllowAll => OverlapPolicy::AllowAll,
    })
}

fn overlap_of(policy: OverlapPolicy) -> ScheduleOverlapPolicy {
    match policy {
        OverlapPolicy::Skip => ScheduleOverlapPolicy::Skip,
        OverlapPolicy::BufferOne => ScheduleOverlapPolicy::BufferOne,
        OverlapPolicy::BufferAll => ScheduleOverlapPolicy::BufferAll,
        OverlapPolicy::CancelOther => ScheduleOverlapPolicy::CancelOther,
        OverlapPolicy::TerminateOther => ScheduleOverlapPolicy::TerminateOther,
        OverlapPolicy::AllowAll => ScheduleOverlapPolicy::AllowAll,
    }
}

/// A Temporal schedule as the request that creates it on Cairn. `registered` tells whether
/// the node has code for a workflow type (else its runs go to remote workers).
pub fn create_request(
    schedule_id: &str,
    schedule: Option<&s::Schedule>,
    registry: &cairn_runtime::Registry,
) -> Result<CreateSchedule, Status> {
    let registered = |t: &str| registry.workflow_def(t).is_some();
    let declared = &|name: &str| registry.search_attribute_type(name);
    let schedule = schedule.ok_or_else(|| Status::invalid_argument("schedule is required"))?;
    let spec = schedule
        .spec
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("schedule.spec is required"))?;
    if !spec.structured_calendar.is_empty() || !spec.calendar.is_empty() {
        return Err(unsupported(
            "calendar specs (ScheduleCalendarSpec; cron expressions and intervals are)",
        ));
    }
    #[allow(deprecated)] // still sent by older clients
    let excludes = !spec.exclude_calendar.is_empty();
    if excludes || !spec.exclude_structured_calendar.is_empty() {
        return Err(unsupported("exclusion calendars"));
    }
    let spec = ScheduleSpec {
        cron: spec.cron_string.clone(),
        intervals: spec
            .interval
            .iter()
            .map(|i| {
                Ok(IntervalSpec {
                    every_ms: ms(i.interval.as_ref())
                        .ok_or_else(|| Status::invalid_argument("an interval of zero"))?,
                    offset_ms: ms(i.phase.as_ref()).unwrap_or(0),
                })
            })
            .collect::<Result<_, Status>>()?,
        time_zone: (!spec.timezone_name.is_empty()).then(|| spec.timezone_name.clone()),
        jitter_ms: ms(spec.jitter.as_ref()).unwrap_or(0),
        start_unix_ms: unix_ms(spec.start_time.as_ref()),
        end_unix_ms: unix_ms(spec.end_time.as_ref()),
    };
    let Some(s::schedule_action::Action::StartWorkflow(start)) =
        schedule.action.as_ref().and_then(|a| a.action.as_ref())
    else {
        return Err(Status::invalid_argument(
            "schedule.action.start_workflow is required",
        ));
    };
    let workflow_type = start
        .workflow_type
        .as_ref()
        .map(|t| t.name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Status::invalid_argument("start_workflow.workflow_type is required"))?;
    let task_queue = start
        .task_queue
        .as_ref()
        .map(|q| q.name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Status::invalid_argument("start_workflow.task_queue is required"))?;
    let remote = (!registered(&workflow_type)).then(|| RemoteStart {
        task_queue,
        task_timeout_ms: ms(start.workflow_task_timeout.as_ref())
            .map_or(WORKFLOW_TASK_TIMEOUT_DEFAULT_MS, |t| {
                t.clamp(1_000, WORKFLOW_TASK_TIMEOUT_MAX_MS)
            }),
    });
    let input = if remote.is_some() {
        to_cairn_exact(start.input.as_ref(), "schedule input")
    } else {
        to_cairn(start.input.as_ref(), "schedule input")
    }
    .map_err(|e| Status::invalid_argument(e.0))?;
    let policies = schedule.policies.unwrap_or_default();
    if policies.pause_on_failure {
        return Err(unsupported("pause_on_failure"));
    }
    let state = schedule.state.clone().unwrap_or_default();
    if state.limited_actions {
        return Err(unsupported("limited actions"));
    }
    Ok(CreateSchedule {
        schedule_id: schedule_id.to_string(),
        spec,
        action: ScheduleAction {
            workflow_type,
            input,
            timeouts: WorkflowTimeouts {
                execution: ms(start.workflow_execution_timeout.as_ref())
                    .map(std::time::Duration::from_millis),
                run: ms(start.workflow_run_timeout.as_ref()).map(std::time::Duration::from_millis),
            },
            workflow_id: (!start.workflow_id.is_empty()).then(|| start.workflow_id.clone()),
            remote,
            memo: crate::properties::memo_in(start.memo.as_ref(), "start_workflow.memo")?,
            search_attributes: crate::properties::start_search_in(
                start.search_attributes.as_ref(),
                declared,
            )?,
        },
        policies: SchedulePolicies {
            overlap: overlap(policies.overlap_policy).unwrap_or_default(),
            catchup_window_ms: ms(policies.catchup_window.as_ref())
                .unwrap_or(SchedulePolicies::default().catchup_window_ms),
        },
        paused: state.paused,
        note: state.notes,
    })
}

fn spec_of(record: &ScheduleRecord) -> s::ScheduleSpec {
    let spec = &record.spec;
    s::ScheduleSpec {
        cron_string: spec.cron.clone(),
        interval: spec
            .intervals
            .iter()
            .map(|i| s::IntervalSpec {
                interval: Some(duration(std::time::Duration::from_millis(i.every_ms))),
                phase: (i.offset_ms > 0)
                    .then(|| duration(std::time::Duration::from_millis(i.offset_ms))),
            })
            .collect(),
        start_time: spec.start_unix_ms.map(timestamp),
        end_time: spec.end_unix_ms.map(timestamp),
        jitter: (spec.jitter_ms > 0)
            .then(|| duration(std::time::Duration::from_millis(spec.jitter_ms))),
        timezone_name: spec.time_zone.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn recent_actions(record: &ScheduleRecord) -> Vec<s::ScheduleActionResult> {
    record
        .recent_actions
        .iter()
        .filter_map(|a| {
            let (workflow_id, run_id) = (a.workflow_id.clone()?, a.run_id?);
            Some(s::ScheduleActionResult {
                schedule_time: Some(timestamp(a.nominal_unix_ms)),
                actual_time: Some(timestamp(a.actual_unix_ms)),
                start_workflow_result: Some(WorkflowExecution {
                    workflow_id,
                    run_id: run_id.to_string(),
                }),
                ..Default::default()
            })
        })
        .collect()
}

/// A Cairn schedule as Temporal's.
pub fn schedule_of(record: &ScheduleRecord) -> s::Schedule {
    let action = &record.action;
    s::Schedule {
        spec: Some(spec_of(record)),
        action: Some(s::ScheduleAction {
            action: Some(s::schedule_action::Action::StartWorkflow(
                NewWorkflowExecutionInfo {
                    workflow_id: action
                        .workflow_id
                        .clone()
                        .unwrap_or_else(|| record.schedule_id.clone()),
                    workflow_type: Some(WorkflowType {
                        name: action.workflow_type.clone(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: action.remote.as_ref().map_or_else(
                            || crate::IN_PROCESS_TASK_QUEUE.to_string(),
                            |r| r.task_queue.clone(),
                        ),
                        kind: 1,
                        ..Default::default()
                    }),
                    input: Some(crate::payloads::payloads(&action.input)),
                    workflow_execution_timeout: action.timeouts.execution.map(duration),
                    workflow_run_timeout: action.timeouts.run.map(duration),
                    memo: (!action.memo.is_empty())
                        .then(|| crate::properties::memo_out(&action.memo)),
                    search_attributes: (!action.search_attributes.is_empty())
                        .then(|| crate::history::search_attributes(&action.search_attributes)),
                    ..Default::default()
                },
            )),
        }),
        policies: Some(s::SchedulePolicies {
            overlap_policy: overlap_of(record.policies.overlap) as i32,
            catchup_window: Some(duration(std::time::Duration::from_millis(
                record.policies.catchup_window_ms,
            ))),
            ..Default::default()
        }),
        state: Some(s::ScheduleState {
            notes: record.note.clone(),
            paused: record.paused,
            ..Default::default()
        }),
    }
}

/// A schedule's description as `DescribeSchedule` answers it.
pub fn info_of(description: &ScheduleDescription) -> s::ScheduleInfo {
    let record = &description.record;
    s::ScheduleInfo {
        action_count: record.actions_started as i64,
        missed_catchup_window: record.actions_missed as i64,
        overlap_skipped: record.actions_skipped as i64,
        buffer_size: record.buffered.len() as i64,
        running_workflows: record
            .running
            .iter()
            .map(|(workflow_id, run_id)| WorkflowExecution {
                workflow_id: workflow_id.clone(),
                run_id: run_id.to_string(),
            })
            .collect(),
        recent_actions: recent_actions(record),
        future_action_times: description
            .next_times_unix_ms
            .iter()
            .map(|t| timestamp(*t))
            .collect(),
        create_time: Some(timestamp(record.created_unix_ms)),
        update_time: Some(timestamp(record.updated_unix_ms)),
        ..Default::default()
    }
}

/// A schedule as `ListSchedules` lists it.
pub fn list_entry(record: &ScheduleRecord) -> s::ScheduleListEntry {
    s::ScheduleListEntry {
        schedule_id: record.schedule_id.clone(),
        info: Some(s::ScheduleListInfo {
            spec: Some(spec_of(record)),
            workflow_type: Some(WorkflowType {
                name: record.action.workflow_type.clone(),
            }),
            notes: record.note.clone(),
            paused: record.paused,
            recent_actions: recent_actions(record),
            ..Default::default()
        }),
        ..Default::default()
    }
}
