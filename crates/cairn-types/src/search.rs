//! Search attributes: typed values a workflow attaches to itself (`ctx.upsert_search_attributes`)
//! so that visibility queries can find it (`CustomerId = 'c-42' AND Priority > 3`).
//!
//! Values are typed as Temporal's are (keyword, text, int, double, bool, datetime, keyword
//! list); a name holds one type for good in a namespace, and queries compare by that type.

use crate::limits::{
    SEARCH_ATTRIBUTE_NAME_BYTES_MAX, SEARCH_ATTRIBUTE_VALUE_BYTES_MAX, SEARCH_ATTRIBUTES_BYTES_MAX,
    SEARCH_ATTRIBUTES_MAX,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type of a search attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SearchType {
    /// An exact string (ids, enums): `=`, `!=`, `IN`, `STARTS_WITH`, ordering.
    Keyword,
    /// Free text: `=` and `!=` only here (no full-text index).
    Text,
    Int,
    Double,
    Bool,
    /// Unix milliseconds; written in queries as RFC 3339 (`'2026-01-01T00:00:00Z'`).
    Datetime,
    /// Several keywords; `=` matches if any equals.
    KeywordList,
}

impl SearchType {
    /// The name used in messages and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keyword => "Keyword",
            Self::Text => "Text",
            Self::Int => "Int",
            Self::Double => "Double",
            Self::Bool => "Bool",
            Self::Datetime => "Datetime",
            Self::KeywordList => "KeywordList",
        }
    }
}

/// A search attribute value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SearchValue {
    Keyword(String),
    Text(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Unix milliseconds.
    Datetime(u64),
    KeywordList(Vec<String>),
}

impl SearchValue {
    pub fn search_type(&self) -> SearchType {
        match self {
            Self::Keyword(_) => SearchType::Keyword,
            Self::Text(_) => SearchType::Text,
            Self::Int(_) => SearchType::Int,
            Self::Double(_) => SearchType::Double,
            Self::Bool(_) => SearchType::Bool,
            Self::Datetime(_) => SearchType::Datetime,
            Self::KeywordList(_) => SearchType::KeywordList,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Keyword(s) | Self::Text(s) => s.len(),
            Self::KeywordList(list) => list.iter().map(String::len).sum(),
            _ => 8,
        }
    }
}

/// A workflow's search attributes, by name.
pub type SearchAttributes = BTreeMap<String, SearchValue>;

/// Names Cairn fills in itself; custom attributes may not take them.
pub const BUILT_IN_SEARCH_ATTRIBUTES: &[&str] = &[
    "WorkflowId",
    "RunId",
    "WorkflowType",
    "ExecutionStatus",
    "StartTime",
    "CloseTime",
    "ExecutionDuration",
    "HistoryLength",
    "ParentWorkflowId",
];

/// Why search attributes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SearchAttributeError {
    #[error(
        "search attribute name {name:?} must be 1 to {max} bytes of letters, digits and '_', starting with a letter"
    )]
    BadName { name: String, max: usize },
    #[error("{name:?} is a built-in search attribute; custom attributes need another name")]
    BuiltIn { name: String },
    #[error("search attribute {name:?} holds {len} bytes; the limit is {max}")]
    ValueTooLarge {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("search attribute {name:?} is a Double that is not finite")]
    NotFinite { name: String },
    #[error("{count} search attributes; the limit is {max}")]
    TooMany { count: usize, max: usize },
    #[error("search attributes hold {len} bytes in all; the limit is {max}")]
    TooLarge { len: usize, max: usize },
}

/// Checks a custom attribute's name.
pub fn validate_search_attribute_name(name: &str) -> Result<(), SearchAttributeError> {
    let valid_name = !name.is_empty()
        && name.len() <= SEARCH_ATTRIBUTE_NAME_BYTES_MAX
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(SearchAttributeError::BadName {
            name: name.chars().take(80).collect(),
            max: SEARCH_ATTRIBUTE_NAME_BYTES_MAX,
        });
    }
    if BUILT_IN_SEARCH_ATTRIBUTES.contains(&name) {
        return Err(SearchAttributeError::BuiltIn {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Checks one attribute's name and value.
pub fn validate_search_attribute(
    name: &str,
    value: &SearchValue,
) -> Result<(), SearchAttributeError> {
    validate_search_attribute_name(name)?;
    if value.bytes() > SEARCH_ATTRIBUTE_VALUE_BYTES_MAX {
        return Err(SearchAttributeError::ValueTooLarge {
            name: name.to_string(),
            len: value.bytes(),
            max: SEARCH_ATTRIBUTE_VALUE_BYTES_MAX,
        });
    }
    if let SearchValue::Double(d) = value
        && !d.is_finite()
    {
        return Err(SearchAttributeError::NotFinite {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Bytes of a set's names and values, as [`SEARCH_ATTRIBUTES_BYTES_MAX`] counts them.
pub fn search_attributes_bytes(all: &SearchAttributes) -> usize {
    all.iter()
        .map(|(name, value)| name.len() + value.bytes())
        .sum()
}

/// Checks a whole set (as it will be stored after an upsert).
pub fn validate_search_attributes(all: &SearchAttributes) -> Result<(), SearchAttributeError> {
    if all.len() > SEARCH_ATTRIBUTES_MAX {
        return Err(SearchAttributeError::TooMany {
            count: all.len(),
            max: SEARCH_ATTRIBUTES_MAX,
        });
    }
    for (name, value) in all {
        validate_search_attribute(name, value)?;
    }
    let total = search_attributes_bytes(all);
    if total > SEARCH_ATTRIBUTES_BYTES_MAX {
        return Err(SearchAttributeError::TooLarge {
            len: total,
            max: SEARCH_ATTRIBUTES_BYTES_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves bad names, built-in names, oversized and non-finite values are each refused with
    /// their own error, and a reasonable set passes.
    #[test]
    fn search_attributes_are_validated() {
        assert!(matches!(
            validate_search_attribute("9lives", &SearchValue::Int(1)),
            Err(SearchAttributeError::BadName { .. })
        ));
        assert!(matches!(
            validate_search_attribute("Customer-Id", &SearchValue::Int(1)),
            Err(SearchAttributeError::BadName { .. })
        ));
        assert!(matches!(
            validate_search_attribute("WorkflowType", &SearchValue::Keyword("x".into())),
            Err(SearchAttributeError::BuiltIn { .. })
        ));
        let long = "x".repeat(SEARCH_ATTRIBUTE_VALUE_BYTES_MAX + 1);
        assert!(matches!(
            validate_search_attribute("Note", &SearchValue::Text(long)),
            Err(SearchAttributeError::ValueTooLarge { .. })
        ));
        assert!(matches!(
            validate_search_attribute("Score", &SearchValue::Double(f64::NAN)),
            Err(SearchAttributeError::NotFinite { .. })
        ));
        let mut ok = SearchAttributes::new();
        ok.insert("CustomerId".into(), SearchValue::Keyword("c-42".into()));
        ok.insert("Priority".into(), SearchValue::Int(3));
        assert_eq!(validate_search_attributes(&ok), Ok(()));
    }
}
