//! Payloads between Temporal's wire form and Cairn's.
//!
//! Temporal carries a list of payloads, each with metadata naming its encoding; Cairn's
//! in-process workflows take and return one MessagePack value. Arguments become that value
//! (none: nil, one: itself, several: an array, as a Rust tuple decodes them); results go back
//! as one `json/plain` payload (`binary/null` for nil), which every Temporal SDK's default
//! converter reads.
//!
//! Payloads made by remote (SDK-hosted) workflows for remote consumers — several
//! arguments, no argument, an encoding Cairn does not read, codec metadata — are kept
//! exactly instead ([`to_cairn_exact`]): wrapped in one MessagePack value that converts
//! back to the very payloads, so they pass through Cairn untouched.

// Temporal payloads kept exactly, as one Cairn value: the form is `cairn_types`', whose
// `Payload::decode` reads one kept JSON payload for Rust code.
use cairn_types::{ExactPayload, ExactPayloads as Exact, Failure, Payload as CairnPayload};
use serde_json::Value;
use std::collections::HashMap;
use temporalio_protos::temporal::api::common::v1::{Payload, Payloads};
use temporalio_protos::temporal::api::failure::v1 as failure;

/// Metadata key of a payload's encoding.
const ENCODING: &str = "encoding";

/// Why a payload could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError(pub String);

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One Temporal payload as a JSON value.
fn value_of(payload: &Payload, what: &str) -> Result<Value, PayloadError> {
    let encoding = payload
        .metadata
        .get(ENCODING)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    match encoding.as_str() {
        "json/plain" => serde_json::from_slice(&payload.data).map_err(|e| {
            PayloadError(format!(
                "{what}: a json/plain payload that is not JSON: {e}"
            ))
        }),
        "binary/null" => Ok(Value::Null),
        "binary/plain" => Ok(Value::Array(
            payload.data.iter().map(|b| Value::from(*b)).collect(),
        )),
        other => Err(PayloadError(format!(
            "{what}: payload encoding {other:?} is not supported by Cairn's in-process workflows \
             (json/plain, binary/null and binary/plain are; use the default data converter)"
        ))),
    }
}

/// Temporal arguments as one Cairn payload.
pub fn to_cairn(payloads: Option<&Payloads>, what: &str) -> Result<CairnPayload, PayloadError> {
    let list = payloads.map(|p| p.payloads.as_slice()).unwrap_or_default();
    let value = match list {
        [] => Value::Null,
        [one] => value_of(one, what)?,
        many => Value::Array(
            many.iter()
                .map(|p| value_of(p, what))
                .collect::<Result<_, _>>()?,
        ),
    };
    let bytes =
        rmp_serde::to_vec_named(&value).map_err(|e| PayloadError(format!("{what}: {e}")))?;
    CairnPayload::from_bytes(bytes).map_err(|e| PayloadError(format!("{what}: {e}")))
}

/// Temporal payloads as one Cairn payload, kept exactly unless they are one plain JSON (or
/// null) value, which converts as [`to_cairn`] does (so Rust code reads it).
pub fn to_cairn_exact(
    payloads: Option<&Payloads>,
    what: &str,
) -> Result<CairnPayload, PayloadError> {
    let list = payloads.map(|p| p.payloads.as_slice()).unwrap_or_default();
    let plain = |p: &Payload| {
        p.metadata.len() == 1
            && matches!(
                p.metadata.get(ENCODING).map(Vec::as_slice),
                Some(b"json/plain" | b"binary/null")
            )
    };
    // A plain value is converted (Rust code reads it) only if it converts back to the very
    // bytes the worker sent; otherwise (escapes, number spellings, spacing) it is kept
    // exactly, and `Payload::decode` still reads it for Rust code.
    if let [one] = list
        && plain(one)
    {
        let converted = to_cairn(payloads, what)?;
        let back = to_temporal(&converted);
        if back.data == one.data && back.metadata == one.metadata {
            return Ok(converted);
        }
    }
    let exact = Exact {
        payloads: list
            .iter()
            .map(|p| ExactPayload {
                metadata: p.metadata.clone().into_iter().collect(),
                data: p.data.clone(),
            })
            .collect(),
    };
    let bytes =
        rmp_serde::to_vec_named(&exact).map_err(|e| PayloadError(format!("{what}: {e}")))?;
    CairnPayload::from_bytes(bytes).map_err(|e| PayloadError(format!("{what}: {e}")))
}

/// Encoding of a payload that carries a Temporal failure exactly.
const FAILURE_ENCODING: &[u8] = b"cairn/temporal-failure";

/// A Temporal failure, exactly, as a Cairn payload (a failure's details).
pub fn exact_failure(
    failure: &temporalio_protos::temporal::api::failure::v1::Failure,
) -> CairnPayload {
    use prost::Message;
    let exact = Exact {
        payloads: vec![ExactPayload {
            metadata: [(ENCODING.to_string(), FAILURE_ENCODING.to_vec())].into(),
            data: failure.encode_to_vec(),
        }],
    };
    let bytes = rmp_serde::to_vec_named(&exact).unwrap_or_default();
    CairnPayload::from_bytes(bytes).unwrap_or_else(|_| CairnPayload::encode(&()).expect("nil"))
}

/// The Temporal failure a payload made by [`exact_failure`] carries.
pub fn failure_of_exact(
    payload: &CairnPayload,
) -> Option<temporalio_protos::temporal::api::failure::v1::Failure> {
    use prost::Message;
    let exact = rmp_serde::from_slice::<Exact>(payload.as_bytes()).ok()?;
    let [one] = exact.payloads.as_slice() else {
        return None;
    };
    if one.metadata.get(ENCODING).map(Vec::as_slice) != Some(FAILURE_ENCODING) {
        return None;
    }
    temporalio_protos::temporal::api::failure::v1::Failure::decode(one.data.as_slice()).ok()
}

/// Encoding of a payload that carries a remote workflow's marker exactly.
const MARKER_ENCODING: &[u8] = b"cairn/temporal-marker";

/// A remote workflow's `RecordMarker` (a patch, a local activity's result, a side effect)
/// exactly, as a Cairn payload (the marker event's details): its details map, header and
/// failure come back as the worker wrote them.
pub fn exact_marker(
    marker: &temporalio_protos::temporal::api::command::v1::RecordMarkerCommandAttributes,
) -> Result<CairnPayload, PayloadError> {
    use prost::Message;
    let exact = Exact {
        payloads: vec![ExactPayload {
            metadata: [(ENCODING.to_string(), MARKER_ENCODING.to_vec())].into(),
            data: marker.encode_to_vec(),
        }],
    };
    let bytes =
        rmp_serde::to_vec_named(&exact).map_err(|e| PayloadError(format!("marker: {e}")))?;
    CairnPayload::from_bytes(bytes).map_err(|e| PayloadError(format!("marker: {e}")))
}

/// The marker a payload made by [`exact_marker`] carries.
pub fn marker_of_exact(
    payload: &CairnPayload,
) -> Option<temporalio_protos::temporal::api::command::v1::RecordMarkerCommandAttributes> {
    use prost::Message;
    let exact = rmp_serde::from_slice::<Exact>(payload.as_bytes()).ok()?;
    let [one] = exact.payloads.as_slice() else {
        return None;
    };
    if one.metadata.get(ENCODING).map(Vec::as_slice) != Some(MARKER_ENCODING) {
        return None;
    }
    temporalio_protos::temporal::api::command::v1::RecordMarkerCommandAttributes::decode(
        one.data.as_slice(),
    )
    .ok()
}

/// A Cairn payload as one Temporal payload.
pub fn to_temporal(payload: &CairnPayload) -> Payload {
    let value = rmp_serde::from_slice::<Value>(payload.as_bytes()).unwrap_or_else(
        |_| serde_json::json!({"undecodable_payload_bytes": payload.as_bytes().len()}),
    );
    json_payload(&value)
}

/// A JSON value as a payload, `binary/null` for null (as Temporal's converters write it).
pub fn json_payload(value: &Value) -> Payload {
    if value.is_null() {
        return Payload {
            metadata: HashMap::from([(ENCODING.to_string(), b"binary/null".to_vec())]),
            data: Vec::new(),
            ..Default::default()
        };
    }
    Payload {
        metadata: HashMap::from([(ENCODING.to_string(), b"json/plain".to_vec())]),
        data: serde_json::to_vec(value).unwrap_or_default(),
        ..Default::default()
    }
}

/// A Cairn payload as Temporal's payload list.
pub fn payloads(payload: &CairnPayload) -> Payloads {
    if let Ok(exact) = rmp_serde::from_slice::<Exact>(payload.as_bytes()) {
        return Payloads {
            payloads: exact
                .payloads
                .into_iter()
                .map(|p| Payload {
                    metadata: p.metadata.into_iter().collect(),
                    data: p.data,
                    ..Default::default()
                })
                .collect(),
        };
    }
    Payloads {
        payloads: vec![to_temporal(payload)],
    }
}

/// A worker's failure as Cairn's: the application failure's type, message and
/// non-retryable flag (what the retry policy reads); other kinds by their kind's name; its
/// causes as the failure's causes (at most `FAILURE_CAUSES_MAX`).
pub fn failure_of(f: Option<&failure::Failure>) -> Failure {
    let Some(f) = f else {
        return Failure::new("Error", "the worker reported a failure without details");
    };
    let outer = failure_alone(f);
    match f.cause.as_deref() {
        Some(cause) => outer.caused_by(failure_of(Some(cause))),
        None => outer,
    }
}

/// [`failure_of`] for `f` itself, without its causes.
fn failure_alone(f: &failure::Failure) -> Failure {
    let message = if f.message.is_empty() {
        "activity failed".to_string()
    } else {
        f.message.clone()
    };
    match &f.failure_info {
        Some(failure::failure::FailureInfo::ApplicationFailureInfo(info)) => {
            let error_type = if info.r#type.is_empty() {
                "Error".to_string()
            } else {
                info.r#type.clone()
            };
            let mut failure = Failure::new(error_type, message);
            failure.non_retryable = info.non_retryable;
            failure.details = info
                .details
                .as_ref()
                .and_then(|d| to_cairn(Some(d), "failure details").ok());
            failure
        }
        Some(failure::failure::FailureInfo::CanceledFailureInfo(_)) => {
            Failure::new("ActivityCanceled", message).non_retryable()
        }
        Some(failure::failure::FailureInfo::TimeoutFailureInfo(_)) => {
            Failure::new("TimeoutError", message)
        }
        Some(failure::failure::FailureInfo::ActivityFailureInfo(_)) => {
            Failure::new(cairn_types::ACTIVITY_ERROR, message)
        }
        Some(failure::failure::FailureInfo::ChildWorkflowExecutionFailureInfo(_)) => {
            Failure::new(cairn_types::CHILD_WORKFLOW_ERROR, message)
        }
        _ => Failure::new("Error", message),
    }
}

/// A workflow's failure as Cairn's (the application failure's type and message, what Rust
/// code reads), carrying the SDK's failure exactly (its cause chain, stack trace and details)
/// so Temporal's clients get it back as it was raised (as `history::failure` writes it back).
pub fn workflow_failure(
    f: Option<&temporalio_protos::temporal::api::failure::v1::Failure>,
) -> Failure {
    let Some(f) = f else {
        return Failure::new("Error", "the workflow failed without details");
    };
    // The type and message Rust code sees: the innermost application failure's, if the
    // workflow failed because of one (an activity's, a child's).
    let mut innermost = f;
    let mut application = None;
    loop {
        if let Some(temporalio_protos::temporal::api::failure::v1::failure::FailureInfo::ApplicationFailureInfo(_)) = &innermost.failure_info {
            application = Some(innermost);
        }
        match innermost.cause.as_deref() {
            Some(cause) => innermost = cause,
            None => break,
        }
    }
    let mut failure = failure_of(Some(application.unwrap_or(f)));
    failure.details = Some(exact_failure(f));
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(data: &str) -> Payload {
        Payload {
            metadata: HashMap::from([(ENCODING.to_string(), b"json/plain".to_vec())]),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn arguments_become_one_value_and_results_json() {
        let one = Payloads {
            payloads: vec![json("\"world\"")],
        };
        let p = to_cairn(Some(&one), "input").unwrap();
        assert_eq!(p.decode::<String>().unwrap(), "world");
        let two = Payloads {
            payloads: vec![json("\"a\""), json("7")],
        };
        let p = to_cairn(Some(&two), "input").unwrap();
        assert_eq!(p.decode::<(String, u32)>().unwrap(), ("a".to_string(), 7));
        let none = to_cairn(None, "input").unwrap();
        none.decode::<()>().unwrap();
        let back = to_temporal(&CairnPayload::encode(&("x", 3)).unwrap());
        assert_eq!(back.data, b"[\"x\",3]");
        assert_eq!(back.metadata[ENCODING], b"json/plain");
        let null = to_temporal(&CairnPayload::encode(&()).unwrap());
        assert_eq!(null.metadata[ENCODING], b"binary/null");
    }

    #[test]
    fn payloads_of_remote_workflows_pass_through_exactly() {
        let proto = Payload {
            metadata: HashMap::from([
                (ENCODING.to_string(), b"binary/protobuf".to_vec()),
                ("messageType".to_string(), b"x.Y".to_vec()),
            ]),
            data: vec![0, 1, 2, 255],
            ..Default::default()
        };
        for list in [
            vec![json("\"a\""), json("[1,2]")],
            vec![],
            vec![proto.clone()],
            vec![proto, json("3")],
        ] {
            let original = Payloads { payloads: list };
            let kept = to_cairn_exact(Some(&original), "input").unwrap();
            assert_eq!(payloads(&kept), original);
        }
        // One plain JSON value converts, so Rust code reads it.
        let one = Payloads {
            payloads: vec![json("\"world\"")],
        };
        let p = to_cairn_exact(Some(&one), "input").unwrap();
        assert_eq!(p.decode::<String>().unwrap(), "world");
        assert_eq!(payloads(&p), one);
    }

    #[test]
    fn foreign_encodings_and_bad_json_are_refused_by_name() {
        let proto = Payload {
            metadata: HashMap::from([(ENCODING.to_string(), b"json/protobuf".to_vec())]),
            data: b"{}".to_vec(),
            ..Default::default()
        };
        let e = to_cairn(
            Some(&Payloads {
                payloads: vec![proto],
            }),
            "input",
        )
        .unwrap_err();
        assert!(e.0.contains("\"json/protobuf\""), "{e}");
        let e = to_cairn(
            Some(&Payloads {
                payloads: vec![json("{nope")],
            }),
            "input",
        )
        .unwrap_err();
        assert!(e.0.contains("not JSON"), "{e}");
    }
}
