//! Temporal's update protocol over Cairn's updates: requests handed to workers as protocol
//! messages on workflow tasks, and the workers' acceptances, rejections and responses back
//! as Cairn commands; the lifecycle stages and outcomes of `UpdateWorkflowExecution` and
//! `PollWorkflowExecutionUpdate`.

use crate::history::{outcome_out, request_out};
use crate::payloads::to_cairn_exact;
use cairn_runtime::{UpdateAnswer, UpdateRequest, UpdateStage, UpdateState};
use cairn_types::{Command, Failure, UpdateOutcome};
use prost::{Message as _, Name};
use std::time::Duration;
use temporalio_protos::temporal::api::common::v1::{Payloads, WorkflowExecution};
use temporalio_protos::temporal::api::enums::v1::UpdateWorkflowExecutionLifecycleStage as Stage;
use temporalio_protos::temporal::api::protocol::v1::{Message, message::SequencingId};
use temporalio_protos::temporal::api::update::v1 as update;
use tonic::Status;

/// How long before the caller's gRPC deadline an update call answers with the stage reached
/// (so it can ask again). A deadline closer than twice this is left to expire: the caller
/// then sees its own timeout, as it would from Temporal's server.
pub const DEADLINE_MARGIN_MS: u64 = 1_000;

/// The protocol message carrying `request` to a worker, to be handled after event
/// `sequencing_event_id` (the task's `WorkflowTaskScheduled`, as Temporal sends it).
pub fn request_message(request: &UpdateRequest, sequencing_event_id: i64) -> Message {
    let body = request_out(&request.update_id, &request.name, &request.input);
    Message {
        id: format!("{}/request", request.update_id),
        protocol_instance_id: request.update_id.clone(),
        sequencing_id: Some(SequencingId::EventId(sequencing_event_id)),
        body: Some(any(&body)),
    }
}

fn any<M: prost::Message + Name>(message: &M) -> prost_wkt_types::Any {
    prost_wkt_types::Any {
        type_url: format!("type.googleapis.com/{}", M::full_name()),
        value: message.encode_to_vec(),
    }
}

/// What one protocol message of a worker's completion says.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Accepted or completed: recorded where the worker placed it among its commands.
    Command(Command),
    /// Rejected by its validator: nothing recorded.
    Rejection(String, Failure),
}

/// A worker's protocol messages, by message id, in the order sent.
pub fn answers(messages: &[Message]) -> Result<Vec<(String, Answer)>, Status> {
    messages
        .iter()
        .map(|m| Ok((m.id.clone(), answer(m)?)))
        .collect()
}

fn answer(message: &Message) -> Result<Answer, Status> {
    let bad = |reason: String| {
        Status::invalid_argument(format!("protocol message {:?}: {reason}", message.id))
    };
    let body = message
        .body
        .as_ref()
        .ok_or_else(|| bad("it has no body".into()))?;
    let kind = body.type_url.rsplit('/').next().unwrap_or_default();
    let decode_error = |e: prost::DecodeError| bad(format!("its body does not decode: {e}"));
    if kind == update::Acceptance::full_name() {
        let acceptance = update::Acceptance::decode(body.value.as_slice()).map_err(decode_error)?;
        let request = acceptance.accepted_request.unwrap_or_default();
        let input = request.input.unwrap_or_default();
        Ok(Answer::Command(Command::AcceptUpdate {
            update_id: message.protocol_instance_id.clone(),
            name: input.name,
            input: update_input(input.args.as_ref())?,
            request_message_id: acceptance.accepted_request_message_id,
            sequencing_event_id: u64::try_from(acceptance.accepted_request_sequencing_event_id)
                .unwrap_or(0),
        }))
    } else if kind == update::Rejection::full_name() {
        let rejection = update::Rejection::decode(body.value.as_slice()).map_err(decode_error)?;
        Ok(Answer::Rejection(
            message.protocol_instance_id.clone(),
            crate::payloads::workflow_failure(rejection.failure.as_ref()),
        ))
    } else if kind == update::Response::full_name() {
        let response = update::Response::decode(body.value.as_slice()).map_err(decode_error)?;
        let outcome = match response.outcome.and_then(|o| o.value) {
            Some(update::outcome::Value::Success(result)) => UpdateOutcome::Success(
                to_cairn_exact(Some(&result), "update result")
                    .map_err(|e| Status::invalid_argument(e.0))?,
            ),
            Some(update::outcome::Value::Failure(f)) => {
                UpdateOutcome::Failure(crate::payloads::workflow_failure(Some(&f)))
            }
            None => return Err(bad("the response has no outcome".into())),
        };
        Ok(Answer::Command(Command::CompleteUpdate {
            update_id: message.protocol_instance_id.clone(),
            outcome,
        }))
    } else {
        Err(Status::unimplemented(format!(
            "protocol message {:?} carries {}, which Cairn does not know",
            message.id, body.type_url
        )))
    }
}

/// An update's arguments as Cairn's payload, kept exactly.
pub fn update_input(args: Option<&Payloads>) -> Result<cairn_types::Payload, Status> {
    to_cairn_exact(args, "update input").map_err(|e| Status::invalid_argument(e.0))
}

/// The stage a wait policy asks for (unspecified: `unspecified`).
pub fn stage_in(policy: Option<&update::WaitPolicy>, unspecified: UpdateStage) -> UpdateStage {
    match policy.map(|p| Stage::try_from(p.lifecycle_stage)) {
        Some(Ok(Stage::Admitted)) => UpdateStage::Admitted,
        Some(Ok(Stage::Accepted)) => UpdateStage::Accepted,
        Some(Ok(Stage::Completed)) => UpdateStage::Completed,
        _ => unspecified,
    }
}

/// The stage and outcome an answer reports for a caller that waited for `wanted`: a wait
/// that ended before it reports `UNSPECIFIED` (Temporal's "ask again").
pub fn stage_out(answer: &UpdateAnswer, wanted: UpdateStage) -> (Stage, Option<update::Outcome>) {
    let state = &answer.state;
    if !state.reached(wanted) {
        return (Stage::Unspecified, None);
    }
    match state {
        UpdateState::Completed(outcome) => (Stage::Completed, Some(outcome_out(outcome))),
        UpdateState::Accepted => (Stage::Accepted, None),
        _ => (Stage::Admitted, None),
    }
}

/// The update's reference as Temporal's responses carry it.
pub fn update_ref(workflow_id: &str, answer: &UpdateAnswer) -> update::UpdateRef {
    update::UpdateRef {
        workflow_execution: Some(WorkflowExecution {
            workflow_id: workflow_id.to_string(),
            run_id: answer.run_id.to_string(),
        }),
        update_id: answer.update_id.clone(),
    }
}

/// How long a call may wait, from the caller's gRPC deadline (`grpc-timeout`): until
/// [`DEADLINE_MARGIN_MS`] before it, or past it when it is closer than twice that (the
/// caller's own timeout then ends the call); `max_ms` without a deadline.
pub fn wait_ms(metadata: &tonic::metadata::MetadataMap, max_ms: u64) -> u64 {
    let Some(deadline) = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout)
    else {
        return max_ms;
    };
    let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    if deadline_ms > 2 * DEADLINE_MARGIN_MS {
        (deadline_ms - DEADLINE_MARGIN_MS).min(max_ms)
    } else {
        (deadline_ms + DEADLINE_MARGIN_MS).min(max_ms)
    }
}

/// A `grpc-timeout` header value: digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_bound_the_wait() {
        assert_eq!(grpc_timeout("1500m"), Some(Duration::from_millis(1_500)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("S"), None);
        assert_eq!(grpc_timeout("12x"), None);
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(wait_ms(&metadata, 30_000), 30_000);
        metadata.insert("grpc-timeout", "60S".parse().unwrap());
        assert_eq!(wait_ms(&metadata, 30_000), 30_000);
        metadata.insert("grpc-timeout", "10S".parse().unwrap());
        assert_eq!(wait_ms(&metadata, 30_000), 9_000);
        // Too close to answer before it: the caller's own deadline ends the call.
        metadata.insert("grpc-timeout", "1000m".parse().unwrap());
        assert_eq!(wait_ms(&metadata, 30_000), 2_000);
    }

    #[test]
    fn a_workers_messages_become_commands_and_rejections() {
        let input = cairn_types::Payload::encode(&5u32).unwrap();
        let request = request_out("u1", "add", &input);
        let acceptance = update::Acceptance {
            accepted_request_message_id: "u1/request".into(),
            accepted_request_sequencing_event_id: 7,
            accepted_request: Some(request.clone()),
        };
        let rejection = update::Rejection {
            rejected_request_message_id: "u2/request".into(),
            failure: Some(crate::history::failure(&Failure::new("Negative", "no"))),
            ..Default::default()
        };
        let response = update::Response {
            meta: request.meta.clone(),
            outcome: Some(outcome_out(&UpdateOutcome::Success(input.clone()))),
        };
        let message = |id: &str, instance: &str, body: prost_wkt_types::Any| Message {
            id: id.into(),
            protocol_instance_id: instance.into(),
            sequencing_id: None,
            body: Some(body),
        };
        let answers = answers(&[
            message("a", "u1", any(&acceptance)),
            message("r", "u2", any(&rejection)),
            message("c", "u1", any(&response)),
        ])
        .unwrap();
        assert!(matches!(
            &answers[0].1,
            Answer::Command(Command::AcceptUpdate { update_id, name, sequencing_event_id: 7, .. })
                if update_id == "u1" && name == "add"
        ));
        assert!(
            matches!(&answers[1].1, Answer::Rejection(id, f) if id == "u2" && f.message == "no")
        );
        assert!(matches!(
            &answers[2].1,
            Answer::Command(Command::CompleteUpdate {
                outcome: UpdateOutcome::Success(_),
                ..
            })
        ));
        let unknown = message("x", "u3", prost_wkt_types::Any::default());
        assert!(answers_of(&unknown).is_err());
    }

    fn answers_of(message: &Message) -> Result<Answer, Status> {
        answer(message)
    }
}
