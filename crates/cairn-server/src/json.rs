//! Conversions between Cairn's records and JSON. Payloads are MessagePack inside Cairn; here
//! they become JSON values (and back), so people and scripts never see bytes.

use crate::ApiError;
use axum::http::StatusCode;
use cairn_core::RunStatus;
use cairn_core::visibility::format_time;
use cairn_runtime::{
    ClusterStatus, Description, Outcome, RecentAction, ScheduleDescription, ShardStatus,
    WorkflowSummary,
};
use cairn_types::{
    EventKind, Failure, HistoryEvent, Memo, Payload, SearchAttributes, SearchValue, UpdateOutcome,
};
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

/// A status as the API names it. A run whose first step has not run yet is running, as
/// visibility queries see it (and as `status=running` lists it).
pub fn status(status: Option<RunStatus>) -> Value {
    Value::from(match status {
        None => "running",
        Some(RunStatus::Running) => "running",
        Some(RunStatus::Completed) => "completed",
        Some(RunStatus::Failed) => "failed",
        Some(RunStatus::Canceled) => "canceled",
        Some(RunStatus::Terminated) => "terminated",
        Some(RunStatus::TimedOut) => "timed_out",
        Some(RunStatus::ContinuedAsNew) => "continued_as_new",
    })
}

/// A search attribute value as JSON: its type and value (times also as RFC 3339).
pub fn search_value(v: &SearchValue) -> Value {
    match v {
        SearchValue::Keyword(s) => json!({"type": "Keyword", "value": s}),
        SearchValue::Text(s) => json!({"type": "Text", "value": s}),
        SearchValue::Int(n) => json!({"type": "Int", "value": n}),
        SearchValue::Double(d) => json!({"type": "Double", "value": d}),
        SearchValue::Bool(b) => json!({"type": "Bool", "value": b}),
        SearchValue::Datetime(ms) => {
            json!({"type": "Datetime", "value": format_time(*ms), "unix_ms": ms})
        }
        SearchValue::KeywordList(list) => json!({"type": "KeywordList", "value": list}),
    }
}

/// A memo given as a JSON object: each value a payload.
pub fn memo_of(memo: &serde_json::Map<String, Value>) -> Result<Memo, ApiError> {
    memo.iter()
        .map(|(key, value)| Ok((key.clone(), payload_of(value)?)))
        .collect()
}

/// A memo as a JSON object.
pub fn memo(memo: &Memo) -> Value {
    Value::Object(
        memo.iter()
            .map(|(key, value)| (key.clone(), value_of(value)))
            .collect(),
    )
}

/// Search attributes given as the API shows them: `{"Name": {"type": "Keyword", "value": …}}`.
pub fn search_attributes_of(
    attributes: &serde_json::Map<String, Value>,
) -> Result<SearchAttributes, ApiError> {
    let bad = |name: &str, reason: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_search_attributes",
            format!("search attribute {name:?}: {reason}"),
        )
    };
    let mut out = SearchAttributes::new();
    for (name, typed) in attributes {
        let (Some(ty), Some(value)) = (
            typed.get("type").and_then(Value::as_str),
            typed.get("value"),
        ) else {
            return Err(bad(name, "expected {\"type\": …, \"value\": …}"));
        };
        let wrong = || bad(name, &format!("the value does not fit its type {ty}"));
        let value = match ty {
            "Keyword" => SearchValue::Keyword(value.as_str().ok_or_else(wrong)?.to_string()),
            "Text" => SearchValue::Text(value.as_str().ok_or_else(wrong)?.to_string()),
            "Int" => SearchValue::Int(value.as_i64().ok_or_else(wrong)?),
            "Double" => SearchValue::Double(value.as_f64().ok_or_else(wrong)?),
            "Bool" => SearchValue::Bool(value.as_bool().ok_or_else(wrong)?),
            "Datetime" => SearchValue::Datetime(
                cairn_core::visibility::parse_time(value.as_str().ok_or_else(wrong)?)
                    .ok_or_else(|| bad(name, "not an RFC 3339 time"))?,
            ),
            "KeywordList" => SearchValue::KeywordList(
                value
                    .as_array()
                    .ok_or_else(wrong)?
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(wrong))
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(bad(
                    name,
                    &format!(
                        "unknown type {other:?} (Keyword, Text, Int, Double, Bool, Datetime, KeywordList)"
                    ),
                ));
            }
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

pub fn search_attributes(attributes: &SearchAttributes) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|(name, value)| (name.clone(), search_value(value)))
            .collect(),
    )
}

/// A failure and, under `cause`, the failure that caused it (absent at the end of the chain).
fn failure(f: &Failure) -> Value {
    let mut body = json!({
        "error_type": f.error_type,
        "message": f.message,
        "non_retryable": f.non_retryable,
        "details": f.details.as_ref().map(value_of),
    });
    if let Some(cause) = &f.cause {
        body["cause"] = failure(cause);
    }
    body
}

pub fn summary(s: &WorkflowSummary) -> Value {
    json!({
        "workflow_id": s.workflow_id,
        "run_id": s.run_id.to_string(),
        "workflow_type": s.workflow_type,
        "status": status(s.status),
        "started_unix_ms": s.started_unix_ms,
        "closed_unix_ms": s.closed_unix_ms,
        "parent_workflow_id": s.parent_workflow_id,
        "history_length": s.history_length,
        "search_attributes": search_attributes(&s.search_attributes),
        "memo": memo(&s.memo),
    })
}

pub fn description(d: &Description) -> Value {
    let mut value = summary(&d.summary);
    value["history_length"] = json!(d.history_length);
    value["pending_activities"] = Value::Array(
        d.pending_activities
            .iter()
            .map(|(seq, a)| {
                let heartbeat = d.heartbeats.iter().find(|(s, _)| s == seq).map(|(_, b)| b);
                json!({
                    "activity_id": seq.to_string(),
                    "activity_type": a.activity_type,
                    "attempt": a.attempt,
                    "maximum_attempts": a.options.retry.maximum_attempts(),
                    "task_queue": a.options.task_queue,
                    // Scheduled: enqueued for a worker (or running); backoff: waiting out its
                    // retry interval before the next attempt is enqueued.
                    "state": if a.enqueued { "scheduled" } else { "backoff" },
                    "scheduled_unix_ms": a.scheduled_unix_ms,
                    "next_attempt_unix_ms": a.retry_at_unix_ms,
                    "last_failure": a.last_failure.as_ref().map(failure),
                    "heartbeat_details": heartbeat.map(|b| value_of(&b.details)),
                    "last_heartbeat_unix_ms": heartbeat
                        .map(|b| b.at_unix_ms)
                        .filter(|at| *at > 0),
                })
            })
            .collect(),
    );
    value["pending_children"] = Value::Array(
        d.pending_children
            .iter()
            .map(|(seq, c)| {
                json!({
                    "child_id": seq.to_string(),
                    "workflow_id": c.workflow_id.to_string(),
                    "workflow_type": c.workflow_type,
                    "run_id": c.run_id.map(|r| r.to_string()),
                    "parent_close_policy": format!("{:?}", c.parent_close_policy),
                })
            })
            .collect(),
    );
    value["parent"] = d.parent.as_ref().map_or(
        Value::Null,
        |(id, run)| json!({"workflow_id": id.to_string(), "run_id": run.to_string()}),
    );
    value["previous_run_id"] = json!(d.previous_run.map(|r| r.to_string()));
    value["next_run_id"] = json!(d.next_run.map(|r| r.to_string()));
    value["scheduled_by"] = json!(d.scheduled_by);
    value["current"] = json!(d.current);
    value["input"] = value_of(&d.input);
    value["task_queue"] = json!(d.remote.as_ref().map(|r| r.task_queue.clone()));
    value["search_attributes"] = search_attributes(&d.search_attributes);
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
        Outcome::ContinuedAsNew { new_run_id } => {
            json!({"status": "continued_as_new", "new_run_id": new_run_id.to_string()})
        }
    }
}

/// An update's answer: where it got, and its result or failure once completed.
pub fn update_answer(answer: &cairn_runtime::UpdateAnswer) -> Value {
    let mut body = json!({
        "update_id": answer.update_id,
        "run_id": answer.run_id.to_string(),
    });
    let stage = match &answer.state {
        cairn_runtime::UpdateState::Completed(outcome) => {
            match outcome {
                UpdateOutcome::Success(result) => body["result"] = value_of(result),
                UpdateOutcome::Failure(f) => body["failure"] = failure(f),
            }
            "completed"
        }
        cairn_runtime::UpdateState::Accepted => "accepted",
        _ => "admitted",
    };
    body["stage"] = json!(stage);
    body
}

pub fn event(e: &HistoryEvent) -> Value {
    let details = match &e.kind {
        EventKind::WorkflowExecutionStarted {
            workflow_type,
            input,
            memo: start_memo,
            search_attributes: start_attributes,
            ..
        } => json!({
            "workflow_type": workflow_type,
            "input": value_of(input),
            "memo": memo(start_memo),
            "search_attributes": search_attributes(start_attributes),
        }),
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
        EventKind::StartChildWorkflowExecutionInitiated {
            seq,
            workflow_type,
            workflow_id,
            input,
            options,
        } => json!({
            "child_id": seq.to_string(),
            "workflow_type": workflow_type,
            "workflow_id": workflow_id.to_string(),
            "input": value_of(input),
            "parent_close_policy": format!("{:?}", options.parent_close_policy),
        }),
        EventKind::StartChildWorkflowExecutionFailed {
            seq,
            workflow_id,
            cause,
        } => {
            json!({"child_id": seq.to_string(), "workflow_id": workflow_id.to_string(), "cause": cause})
        }
        EventKind::ChildWorkflowExecutionStarted {
            seq,
            workflow_id,
            run_id,
        } => json!({
            "child_id": seq.to_string(),
            "workflow_id": workflow_id.to_string(),
            "run_id": run_id.to_string(),
        }),
        EventKind::ChildWorkflowExecutionCompleted { seq, result } => {
            json!({"child_id": seq.to_string(), "result": value_of(result)})
        }
        EventKind::ChildWorkflowExecutionFailed { seq, failure: f } => {
            json!({"child_id": seq.to_string(), "failure": failure(f)})
        }
        EventKind::ChildWorkflowExecutionTerminated { seq, reason } => {
            json!({"child_id": seq.to_string(), "reason": reason})
        }
        EventKind::ChildWorkflowExecutionCanceled { seq }
        | EventKind::ChildWorkflowExecutionTimedOut { seq }
        | EventKind::RequestCancelExternalWorkflowExecutionInitiated {
            seq,
            workflow_id: None,
            ..
        } => {
            json!({"child_id": seq.to_string()})
        }
        EventKind::RequestCancelExternalWorkflowExecutionInitiated {
            seq,
            workflow_id: Some(workflow_id),
            run_id,
        } => json!({
            "seq": seq,
            "workflow_id": workflow_id.to_string(),
            "run_id": run_id.map(|r| r.to_string()),
        }),
        EventKind::SignalExternalWorkflowExecutionInitiated {
            seq,
            workflow_id,
            run_id,
            signal_name,
            input,
        } => json!({
            "seq": seq,
            "workflow_id": workflow_id.to_string(),
            "run_id": run_id.map(|r| r.to_string()),
            "signal_name": signal_name,
            "input": value_of(input),
        }),
        EventKind::ExternalWorkflowExecutionSignaled { seq }
        | EventKind::ExternalWorkflowExecutionCancelRequested { seq } => json!({"seq": seq}),
        EventKind::SignalExternalWorkflowExecutionFailed { seq, cause }
        | EventKind::RequestCancelExternalWorkflowExecutionFailed { seq, cause } => {
            json!({"seq": seq, "cause": cause})
        }
        EventKind::WorkflowExecutionContinuedAsNew {
            workflow_type,
            input,
        } => json!({"workflow_type": workflow_type, "input": value_of(input)}),
        EventKind::UpsertWorkflowSearchAttributes {
            attributes,
            removed,
        } => {
            json!({"search_attributes": search_attributes(attributes), "removed": removed})
        }
        EventKind::WorkflowExecutionUpdateAccepted {
            update_id,
            name,
            input,
            ..
        } => json!({"update_id": update_id, "name": name, "input": value_of(input)}),
        EventKind::WorkflowTaskFailed { failure: f } => json!({"failure": failure(f)}),
        EventKind::WorkflowExecutionUpdateCompleted {
            update_id,
            accepted_event_id,
            outcome,
        } => match outcome {
            UpdateOutcome::Success(result) => json!({
                "update_id": update_id,
                "accepted_event_id": accepted_event_id,
                "result": value_of(result),
            }),
            UpdateOutcome::Failure(f) => json!({
                "update_id": update_id,
                "accepted_event_id": accepted_event_id,
                "failure": failure(f),
            }),
        },
        EventKind::WorkflowPropertiesModified { memo } => json!({
            "memo": Value::Object(
                memo.iter()
                    .map(|(key, value)| (key.clone(), value.as_ref().map_or(Value::Null, value_of)))
                    .collect(),
            ),
        }),
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
    let now = status.now_unix_ms;
    fn held_by<'a>(
        status: &'a ClusterStatus,
        node: &'a str,
    ) -> impl Iterator<Item = &'a ShardStatus> {
        status
            .shards
            .iter()
            .filter(move |s| s.held && s.holder.as_deref() == Some(node))
    }
    json!({
        "this_node": status.this_node,
        "now_unix_ms": now,
        "shard_count": status.shard_count,
        "lease_timeout_ms": status.lease_timeout_ms,
        "lag_ms": status.shards.iter().map(|s| s.lag_ms(now)).max().unwrap_or(0),
        "nodes": status.nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "instance": n.instance,
            "address": n.address,
            "alive": n.alive,
            "draining": n.draining,
            "started_unix_ms": n.started_unix_ms,
            "heartbeat_unix_ms": n.heartbeat_unix_ms,
            "expires_unix_ms": n.expires_unix_ms,
            "shards": held_by(status, &n.node_id).map(|s| s.shard).collect::<Vec<_>>(),
            "lag_ms": held_by(status, &n.node_id).map(|s| s.lag_ms(now)).max().unwrap_or(0),
        })).collect::<Vec<_>>(),
        "shards": status.shards.iter().map(|s| json!({
            "shard": s.shard,
            "holder": s.holder,
            "epoch": s.epoch,
            "held": s.held,
            "lease_expires_unix_ms": s.expires_unix_ms,
            "placed_on": s.placed_on,
            "changed_unix_ms": s.changed_unix_ms,
            "earliest_due_unix_ms": s.earliest_due_unix_ms,
            "lag_ms": s.lag_ms(now),
        })).collect::<Vec<_>>(),
        "held_here": status.held_here.iter().map(|(shard, epoch, since)| json!({
            "shard": shard, "epoch": epoch, "since_unix_ms": since,
        })).collect::<Vec<_>>(),
    })
}

fn recent_action(a: &RecentAction) -> Value {
    json!({
        "scheduled_time": format_time(a.nominal_unix_ms),
        "scheduled_unix_ms": a.nominal_unix_ms,
        "actual_unix_ms": a.actual_unix_ms,
        "action": format!("{:?}", a.kind),
        "workflow_id": a.workflow_id,
        "run_id": a.run_id.map(|r| r.to_string()),
    })
}

pub fn schedule(d: &ScheduleDescription) -> Value {
    let r = &d.record;
    json!({
        "schedule_id": r.schedule_id,
        "workflow_type": r.action.workflow_type,
        "input": value_of(&r.action.input),
        "spec": {
            "cron": r.spec.cron,
            "intervals": r.spec.intervals.iter().map(|i| json!({"every_ms": i.every_ms, "offset_ms": i.offset_ms})).collect::<Vec<_>>(),
            "time_zone": r.spec.time_zone.clone().unwrap_or_else(|| "UTC".into()),
            "jitter_ms": r.spec.jitter_ms,
            "start_unix_ms": r.spec.start_unix_ms,
            "end_unix_ms": r.spec.end_unix_ms,
        },
        "overlap_policy": r.policies.overlap.name(),
        "catchup_window_ms": r.policies.catchup_window_ms,
        "paused": r.paused,
        "note": r.note,
        "created_unix_ms": r.created_unix_ms,
        "updated_unix_ms": r.updated_unix_ms,
        "next_times": d.next_times_unix_ms.iter().map(|t| format_time(*t)).collect::<Vec<_>>(),
        "next_times_unix_ms": d.next_times_unix_ms,
        "running": r.running.iter().map(|(id, run)| json!({"workflow_id": id, "run_id": run.to_string()})).collect::<Vec<_>>(),
        "buffered": r.buffered.len(),
        "recent_actions": r.recent_actions.iter().map(recent_action).collect::<Vec<_>>(),
        "actions_started": r.actions_started,
        "actions_skipped": r.actions_skipped,
        "actions_missed": r.actions_missed,
    })
}

pub fn batch(b: &cairn_runtime::BatchRecord) -> Value {
    let (state, error) = match &b.state {
        cairn_runtime::BatchState::Running => ("running", None),
        cairn_runtime::BatchState::Completed => ("completed", None),
        cairn_runtime::BatchState::Failed { message } => ("failed", Some(message.clone())),
    };
    json!({
        "batch_id": b.batch_id,
        "operation": match b.operation {
            cairn_runtime::BatchOperation::Cancel => "cancel",
            cairn_runtime::BatchOperation::Terminate => "terminate",
        },
        "query": b.query,
        "reason": b.reason,
        "state": state,
        "error": error,
        "visited": b.visited,
        "applied": b.applied,
        "skipped": b.skipped,
        "failed": b.failed,
        "last_error": b.last_error,
        "created_unix_ms": b.created_unix_ms,
        "updated_unix_ms": b.updated_unix_ms,
        "finished_unix_ms": b.finished_unix_ms,
    })
}
