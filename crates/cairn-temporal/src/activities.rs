//! Activity tasks for remote workers: what `PollActivityTaskQueue` hands out and how a
//! worker's answers (completed, failed, canceled, heartbeats, and their `ById` forms) go back.

use crate::history::{duration, duration_or_zero, timestamp};
use crate::payloads::{payloads, to_cairn};
use cairn_runtime::{MatchingError, RemoteActivityTask};
use cairn_types::{Failure, Payload};
use temporalio_protos::temporal::api::common::v1::{
    ActivityType, Payloads, RetryPolicy, WorkflowExecution,
};
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tonic::Status;

/// A matching refusal as Temporal's server answers the same case.
pub fn status(error: MatchingError) -> Status {
    match error {
        MatchingError::NotFound | MatchingError::WorkflowTaskNotFound => {
            Status::not_found(error.to_string())
        }
        MatchingError::WorkflowTaskStale
        | MatchingError::WorkflowTaskRefused(_)
        | MatchingError::HeartbeatTooLarge { .. } => Status::invalid_argument(error.to_string()),
        MatchingError::WorkflowTaskUnavailable => Status::unavailable(error.to_string()),
        MatchingError::TooManyPolls(_) => Status::resource_exhausted(error.to_string()),
    }
}

/// An attempt as the poll response a Temporal worker runs.
pub fn poll_response(
    namespace: &str,
    task: RemoteActivityTask,
) -> ws::PollActivityTaskQueueResponse {
    let retry = &task.retry;
    ws::PollActivityTaskQueueResponse {
        task_token: task.token.into_bytes(),
        workflow_namespace: namespace.to_string(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: task.workflow_id.to_string(),
            run_id: task.run_id.to_string(),
        }),
        activity_type: Some(ActivityType {
            name: task.activity_type,
        }),
        activity_id: task.seq.to_string(),
        input: Some(payloads(&task.input)),
        heartbeat_details: task.heartbeat_details.as_ref().map(payloads),
        scheduled_time: Some(timestamp(task.scheduled_unix_ms)),
        current_attempt_scheduled_time: Some(timestamp(task.scheduled_unix_ms)),
        started_time: Some(timestamp(task.started_unix_ms)),
        attempt: task.attempt as i32,
        // Always present, zero for "none", as Temporal's server sends them: its workers
        // (TypeScript's among them) refuse a task whose timeouts are missing.
        schedule_to_close_timeout: Some(duration_or_zero(task.timeouts.schedule_to_close)),
        start_to_close_timeout: Some(duration_or_zero(task.timeouts.start_to_close)),
        heartbeat_timeout: Some(duration_or_zero(task.timeouts.heartbeat)),
        retry_policy: Some(RetryPolicy {
            initial_interval: Some(duration(retry.initial_interval())),
            backoff_coefficient: retry.backoff_coefficient(),
            maximum_interval: Some(duration(retry.maximum_interval())),
            maximum_attempts: retry.maximum_attempts().map_or(0, |n| n as i32),
            non_retryable_error_types: retry.non_retryable_error_types().to_vec(),
        }),
        ..Default::default()
    }
}

/// A worker's result payloads as Cairn's.
pub fn result(payloads: Option<&Payloads>) -> Result<Payload, Status> {
    to_cairn(payloads, "activity result").map_err(|e| Status::invalid_argument(e.0))
}

/// A worker's report that it stopped on the workflow's cancellation request.
pub fn canceled() -> Failure {
    Failure::new(
        "ActivityCanceled",
        "the activity was canceled by its worker",
    )
    .non_retryable()
}
