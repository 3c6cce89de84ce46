//! Conversions between Cairn's records and JSON. Payloads are MessagePack inside Cairn; here
//! they become JSON values (and back), so people and scripts never see bytes.

use crate::ApiError;
use axum::http::StatusCode;
use cairn_core::RunStatus;
use cairn_runtime::{ClusterStatus, Description, Outcome, WorkflowSummary};
use cairn_types::{EventKind, Failure, HistoryEvent, Payload};
use serde_json::{Value, json};

/// A JSON value as a payload (MessagePack with named fields, as the SDK writes them).
pub fn payload_of(value: &Value) -> Result<Payload, ApiError> {
    let bytes = rmp_serde::to_vec_named(value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
    Payload::from_bytes(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        )
    })
}

/// A payload as JSON; one that is not representable is shown by its size.
pub fn value_of(payload: &Payload) -> Value {
    rmp_serde::from_slice::<Value>(payload.as_bytes())
        .unwrap_or_else(|_| json!({"undecodable_payload_bytes": payload.len()}))
}

pub fn status(status: Option<RunStatus>) -> Value {
    Value::from(match status {
        None => "pending",
        Some(RunStatus::Running) => "running",
        Some(RunStatus::Completed) => "completed",
        Some(RunStatus::Failed) => "failed",
        Some(RunStatus::Canceled) => "canceled",
        Some(RunStatus::Terminated) => "terminated",
        Some(RunStatus::TimedOut) => "timed_out",
    })
}

fn failure(f: &Failure) -> Value {
    json!({
        "error_type": f.error_type,
        "message": f.message,
        "non_retryable": f.non_retryable,
        "details": f.details.as_ref().map(value_of),
    })
}

pub fn summary(s: &WorkflowSummary) -> Value {
    json!({
        "workflow_id": s.workflow_id,
        "run_id": s.run_id.to_string(),
        "workflow_type": s.workflow_type,
        "status": status(s.status),
        "started_unix_ms": s.started_unix_ms,
        "closed_unix_ms": s.closed_unix_ms,
    })
}

pub fn description(d: &Description) -> Value {
    let mut value = summary(&d.summary);
    value["history_length"] = json!(d.history_length);
    value["pending_activities"] = Value::Array(
        d.pending_activities
            .iter()
            .map(|(seq, a)| {
                json!({
                    "activity_id": seq.to_string(),
                    "activity_type": a.activity_type,
                    "attempt": a.attempt,
                    "scheduled_unix_ms": a.scheduled_unix_ms,
                    "last_failure": a.last_failure.as_ref().map(failure),
                })
            })
            .collect(),
    );
    value["outcome"] = d.outcome.as_ref().map_or(Value::Null, outcome);
    value
}

pub fn outcome(o: &Outcome) -> Value {
    match o {
        Outcome::Completed(result) => json!({"status": "completed", "result": value_of(result)}),
        Outcome::Failed(f) => json!({"status": "failed", "failure": failure(f)}),
        Outcome::Canceled => json!({"status": "canceled"}),
        Outcome::Terminated(reason) => json!({"status": "terminated", "reason": reason}),
        Outcome::TimedOut => json!({"status": "timed_out"}),
    }
}

pub fn event(e: &HistoryEvent) -> Value {
    let details = match &e.kind {
        EventKind::WorkflowExecutionStarted {
            workflow_type,
            input,
            ..
        } => json!({"workflow_type": workflow_type, "input": value_of(input)}),
        EventKind::ActivityTaskScheduled {
            seq,
            activity_type,
            input,
            options,
        } => json!({
            "activity_id": seq.to_string(),
            "activity_type": activity_type,
            "input": value_of(input),
            "task_queue": options.task_queue,
        }),
        EventKind::ActivityTaskCompleted {
            seq,
            attempt,
            result,
        } => {
            json!({"activity_id": seq.to_string(), "attempt": attempt, "result": value_of(result)})
        }
        EventKind::ActivityTaskFailed {
            seq,
            attempt,
            failure: f,
        } => {
            json!({"activity_id": seq.to_string(), "attempt": attempt, "failure": failure(f)})
        }
        EventKind::ActivityTaskTimedOut {
            seq,
            attempt,
            timeout,
        } => {
            json!({"activity_id": seq.to_string(), "attempt": attempt, "timeout": timeout.to_string()})
        }
        EventKind::ActivityTaskCancelRequested { seq }
        | EventKind::ActivityTaskCanceled { seq } => {
            json!({"activity_id": seq.to_string()})
        }
        EventKind::TimerStarted { seq, duration_ms } => {
            json!({"timer_id": seq.to_string(), "duration_ms": duration_ms})
        }
        EventKind::TimerFired { seq } | EventKind::TimerCanceled { seq } => {
            json!({"timer_id": seq.to_string()})
        }
        EventKind::WorkflowExecutionSignaled { signal_name, input } => {
            json!({"signal_name": signal_name, "input": value_of(input)})
        }
        EventKind::MarkerRecorded {
            marker_name,
            details,
            ..
        } => json!({"marker_name": marker_name, "details": value_of(details)}),
        EventKind::WorkflowExecutionCancelRequested { reason }
        | EventKind::WorkflowExecutionTerminated { reason } => json!({"reason": reason}),
        EventKind::WorkflowExecutionCompleted { result } => json!({"result": value_of(result)}),
        EventKind::WorkflowExecutionFailed { failure: f } => json!({"failure": failure(f)}),
        _ => json!({}),
    };
    json!({
        "event_id": e.event_id,
        "time_unix_ms": e.time_unix_ms,
        "event_type": e.kind.name(),
        "details": details,
    })
}

pub fn cluster(status: &ClusterStatus) -> Value {
    json!({
        "this_node": status.this_node,
        "now_unix_ms": status.now_unix_ms,
        "shard_count": status.shard_count,
        "lease_timeout_ms": status.lease_timeout_ms,
        "nodes": status.nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "instance": n.instance,
            "address": n.address,
            "alive": n.alive,
            "draining": n.draining,
            "started_unix_ms": n.started_unix_ms,
            "heartbeat_unix_ms": n.heartbeat_unix_ms,
            "expires_unix_ms": n.expires_unix_ms,
            "shards": status.shards.iter().filter(|s| s.held && s.holder.as_deref() == Some(n.node_id.as_str())).map(|s| s.shard).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "shards": status.shards.iter().map(|s| json!({
            "shard": s.shard,
            "holder": s.holder,
            "epoch": s.epoch,
            "held": s.held,
            "lease_expires_unix_ms": s.expires_unix_ms,
            "placed_on": s.placed_on,
            "changed_unix_ms": s.changed_unix_ms,
        })).collect::<Vec<_>>(),
        "held_here": status.held_here.iter().map(|(shard, epoch, since)| json!({
            "shard": shard, "epoch": epoch, "since_unix_ms": since,
        })).collect::<Vec<_>>(),
    })
}
