//! Payloads between Temporal's wire form and Cairn's.
//!
//! Temporal carries a list of payloads, each with metadata naming its encoding; Cairn's
//! in-process workflows take and return one MessagePack value. Arguments become that value
//! (none: nil, one: itself, several: an array, as a Rust tuple decodes them); results go back
//! as one `json/plain` payload (`binary/null` for nil), which every Temporal SDK's default
//! converter reads.

use cairn_types::Payload as CairnPayload;
use serde_json::Value;
use std::collections::HashMap;
use temporalio_protos::temporal::api::common::v1::{Payload, Payloads};

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
    Payloads {
        payloads: vec![to_temporal(payload)],
    }
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
