//! A workflow's memo and search attributes between Temporal's wire form and Cairn's.
//!
//! Memo values are opaque: each is kept exactly (`payloads::to_cairn_exact`), so a Python
//! client reads back the very payload it wrote, and a plain JSON value still decodes in Rust.
//! Search attribute values are typed: Temporal's SDKs put the type in the payload's `type`
//! metadata; a client that does not (the Go SDK's untyped map, the CLI) gets the type this
//! node declares for the name. A null value (`binary/null`, as the SDKs write an unset) or an
//! empty list removes the key.

use crate::payloads::{json_payload, payloads, to_cairn_exact};
use cairn_types::{Memo, MemoUpdate, SearchType, SearchValue};
use temporalio_protos::temporal::api::common::v1 as common;
use tonic::Status;

fn bad(what: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{what}: {reason}"))
}

/// Whether a payload carries no value (an unset).
fn is_null(payload: &common::Payload) -> bool {
    match payload.metadata.get("encoding").map(Vec::as_slice) {
        Some(b"binary/null") => true,
        Some(b"json/plain") => {
            matches!(payload.data.as_slice(), b"null" | b"[]")
        }
        _ => false,
    }
}

fn memo_value(key: &str, payload: &common::Payload) -> Result<cairn_types::Payload, Status> {
    let one = common::Payloads {
        payloads: vec![payload.clone()],
    };
    to_cairn_exact(Some(&one), &format!("memo {key:?}")).map_err(|e| Status::invalid_argument(e.0))
}

/// A memo given at start, checked against Cairn's bounds.
pub fn memo_in(memo: Option<&common::Memo>, what: &str) -> Result<Memo, Status> {
    let mut out = Memo::new();
    for (key, payload) in memo.map(|m| &m.fields).into_iter().flatten() {
        out.insert(key.clone(), memo_value(key, payload)?);
    }
    cairn_types::memo::validate_memo(&out).map_err(|e| bad(what, e))?;
    Ok(out)
}

/// A memo change a workflow makes (`upsert_memo`): a null value removes its key.
pub fn memo_update_in(memo: Option<&common::Memo>) -> Result<MemoUpdate, Status> {
    let mut out = MemoUpdate::new();
    for (key, payload) in memo.map(|m| &m.fields).into_iter().flatten() {
        let value = if is_null(payload) {
            None
        } else {
            Some(memo_value(key, payload)?)
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

fn memo_payload(value: &cairn_types::Payload) -> common::Payload {
    payloads(value)
        .payloads
        .into_iter()
        .next()
        .unwrap_or_else(|| json_payload(&serde_json::Value::Null))
}

/// A memo as Temporal's.
pub fn memo_out(memo: &Memo) -> common::Memo {
    common::Memo {
        fields: memo
            .iter()
            .map(|(key, value)| (key.clone(), memo_payload(value)))
            .collect(),
    }
}

/// A memo change as Temporal's (removed keys as null payloads, as the SDKs write them).
pub fn memo_update_out(update: &MemoUpdate) -> common::Memo {
    common::Memo {
        fields: update
            .iter()
            .map(|(key, value)| {
                let payload = match value {
                    Some(value) => memo_payload(value),
                    None => json_payload(&serde_json::Value::Null),
                };
                (key.clone(), payload)
            })
            .collect(),
    }
}

/// Search attributes as a client or a workflow sends them: those set, and those removed.
/// `declared` is the node's type for a name, used when the payload names none.
pub fn search_in(
    attributes: Option<&common::SearchAttributes>,
    declared: &dyn Fn(&str) -> Option<SearchType>,
) -> Result<(cairn_types::SearchAttributes, Vec<String>), Status> {
    let mut set = cairn_types::SearchAttributes::new();
    let mut removed = Vec::new();
    for (name, payload) in attributes.map(|a| &a.indexed_fields).into_iter().flatten() {
        match search_value(name, payload, declared(name))? {
            Some(value) => {
                set.insert(name.clone(), value);
            }
            None => removed.push(name.clone()),
        }
    }
    Ok((set, removed))
}

/// Search attributes given at start (where a removal means nothing).
pub fn start_search_in(
    attributes: Option<&common::SearchAttributes>,
    declared: &dyn Fn(&str) -> Option<SearchType>,
) -> Result<cairn_types::SearchAttributes, Status> {
    Ok(search_in(attributes, declared)?.0)
}

/// One search attribute value (`None`: an unset). Its type is the payload's `type` metadata,
/// or else `declared`; a name the node declares takes only its declared type.
pub fn search_value(
    name: &str,
    payload: &common::Payload,
    declared: Option<SearchType>,
) -> Result<Option<SearchValue>, Status> {
    use cairn_types::SearchValue as V;
    let what = format!("search attribute {name:?}");
    if is_null(payload) {
        cairn_types::search::validate_search_attribute_name(name).map_err(|e| bad(&what, e))?;
        return Ok(None);
    }
    let ty = match payload.metadata.get("type") {
        Some(t) => String::from_utf8_lossy(t).into_owned(),
        None => declared
            .map(|t| t.name().to_string())
            .ok_or_else(|| {
                bad(
                    &what,
                    "no \"type\" metadata and not declared on this node (use the SDK's typed search attributes, or declare the attribute)",
                )
            })?,
    };
    let json: serde_json::Value = serde_json::from_slice(&payload.data)
        .map_err(|e| bad(&what, format!("its value is not JSON: {e}")))?;
    // A single value may come as a list of one (untyped clients send lists).
    let json = match (ty.as_str(), json) {
        ("KeywordList", json) => json,
        (_, serde_json::Value::Array(mut one)) if one.len() == 1 => one.remove(0),
        (_, json) => json,
    };
    let wrong = || bad(&what, format!("the value does not fit its type {ty}"));
    let value = match ty.as_str() {
        "Keyword" => V::Keyword(json.as_str().ok_or_else(wrong)?.to_string()),
        "Text" => V::Text(json.as_str().ok_or_else(wrong)?.to_string()),
        "Int" => V::Int(json.as_i64().ok_or_else(wrong)?),
        "Double" => V::Double(json.as_f64().ok_or_else(wrong)?),
        "Bool" => V::Bool(json.as_bool().ok_or_else(wrong)?),
        "Datetime" => V::Datetime(
            cairn_core::visibility::parse_time(json.as_str().ok_or_else(wrong)?)
                .ok_or_else(|| bad(&what, "not an RFC 3339 time"))?,
        ),
        "KeywordList" => V::KeywordList(
            json.as_array()
                .ok_or_else(wrong)?
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(wrong))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(bad(&what, format!("unknown type {other:?}"))),
    };
    cairn_types::search::validate_search_attribute(name, &value).map_err(|e| bad(&what, e))?;
    if let Some(declared) = declared
        && declared != value.search_type()
    {
        return Err(bad(
            &what,
            format!(
                "declared {} on this node; the value is a {}",
                declared.name(),
                value.search_type().name()
            ),
        ));
    }
    Ok(Some(value))
}

fn typed_payload(value: &SearchValue) -> common::Payload {
    let json = match value {
        SearchValue::Keyword(s) | SearchValue::Text(s) => serde_json::json!(s),
        SearchValue::Int(n) => serde_json::json!(n),
        SearchValue::Double(d) => serde_json::json!(d),
        SearchValue::Bool(b) => serde_json::json!(b),
        SearchValue::Datetime(ms) => {
            serde_json::json!(cairn_core::visibility::format_time(*ms))
        }
        SearchValue::KeywordList(list) => serde_json::json!(list),
    };
    let mut payload = json_payload(&json);
    payload.metadata.insert(
        "type".into(),
        value.search_type().name().as_bytes().to_vec(),
    );
    payload
}

/// Search attributes as Temporal's indexed fields (JSON payloads with their type); `removed`
/// names go as nulls (an upsert that unsets them).
pub fn search_out(
    attributes: &cairn_types::SearchAttributes,
    removed: &[String],
) -> common::SearchAttributes {
    let mut indexed_fields: std::collections::HashMap<_, _> = attributes
        .iter()
        .map(|(name, value)| (name.clone(), typed_payload(value)))
        .collect();
    for name in removed {
        indexed_fields.insert(name.clone(), json_payload(&serde_json::Value::Null));
    }
    common::SearchAttributes { indexed_fields }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn payload(encoding: &str, data: &str, ty: Option<&str>) -> common::Payload {
        let mut metadata = HashMap::from([("encoding".to_string(), encoding.as_bytes().to_vec())]);
        if let Some(ty) = ty {
            metadata.insert("type".into(), ty.as_bytes().to_vec());
        }
        common::Payload {
            metadata,
            data: data.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    /// Proves memo values round-trip exactly (a codec's metadata included), a null in an
    /// update removes its key, and an oversized memo is refused naming the bound.
    #[test]
    fn memos_round_trip_and_are_bounded() {
        let proto = payload("binary/protobuf", "\u{1}\u{2}", None);
        let json = payload("json/plain", "{\"by\":\"ops\"}", None);
        let memo = common::Memo {
            fields: HashMap::from([("raw".into(), proto.clone()), ("who".into(), json)]),
        };
        let kept = memo_in(Some(&memo), "memo").unwrap();
        let back = memo_out(&kept);
        assert_eq!(back.fields["raw"], proto);
        let who: serde_json::Value = serde_json::from_slice(&back.fields["who"].data).unwrap();
        assert_eq!(who, serde_json::json!({"by": "ops"}));
        // Plain JSON reads in Rust.
        assert!(kept["who"].decode::<serde_json::Value>().is_ok());

        let update = common::Memo {
            fields: HashMap::from([
                ("who".into(), payload("binary/null", "", None)),
                ("new".into(), payload("json/plain", "1", None)),
            ]),
        };
        let update = memo_update_in(Some(&update)).unwrap();
        assert_eq!(update["who"], None);
        assert!(update["new"].is_some());
        let unset = memo_update_out(&update);
        assert!(is_null(&unset.fields["who"]));

        let huge = common::Memo {
            fields: HashMap::from([(
                "big".into(),
                payload("json/plain", &format!("\"{}\"", "x".repeat(40_000)), None),
            )]),
        };
        let e = memo_in(Some(&huge), "memo").unwrap_err();
        assert!(e.message().contains("limit is 32000"), "{}", e.message());
    }

    /// Proves typed values convert by their metadata, untyped ones by the declared type, an
    /// untyped undeclared one is refused naming the fix, a null is a removal, and values
    /// that do not fit their type are refused.
    #[test]
    fn search_attributes_take_their_type() {
        let undeclared = |_: &str| None;
        let declared = |name: &str| (name == "Region").then_some(SearchType::Keyword);
        let attrs = common::SearchAttributes {
            indexed_fields: HashMap::from([
                ("Priority".into(), payload("json/plain", "3", Some("Int"))),
                (
                    "Tags".into(),
                    payload("json/plain", "[\"a\",\"b\"]", Some("KeywordList")),
                ),
                ("Region".into(), payload("json/plain", "[\"eu\"]", None)),
                ("Gone".into(), payload("binary/null", "", None)),
            ]),
        };
        let (set, removed) = search_in(Some(&attrs), &declared).unwrap();
        assert_eq!(set["Priority"], SearchValue::Int(3));
        assert_eq!(set["Region"], SearchValue::Keyword("eu".into()));
        assert_eq!(
            set["Tags"],
            SearchValue::KeywordList(vec!["a".into(), "b".into()])
        );
        assert_eq!(removed, vec!["Gone".to_string()]);
        let out = search_out(&set, &removed);
        assert!(is_null(&out.indexed_fields["Gone"]));
        let (again, _) = search_in(Some(&out), &undeclared).unwrap();
        assert_eq!(again, set);

        let e = search_value("Region", &payload("json/plain", "\"eu\"", None), None).unwrap_err();
        assert!(
            e.message().contains("declare the attribute"),
            "{}",
            e.message()
        );
        let e = search_value(
            "Priority",
            &payload("json/plain", "\"high\"", Some("Int")),
            None,
        )
        .unwrap_err();
        assert!(
            e.message().contains("does not fit its type Int"),
            "{}",
            e.message()
        );
        let e = search_value(
            "Region",
            &payload("json/plain", "3", Some("Int")),
            declared("Region"),
        )
        .unwrap_err();
        assert!(e.message().contains("declared Keyword"), "{}", e.message());
        let e = search_value(
            "WorkflowId",
            &payload("json/plain", "\"x\"", Some("Keyword")),
            None,
        )
        .unwrap_err();
        assert!(e.message().contains("built-in"), "{}", e.message());
    }
}
