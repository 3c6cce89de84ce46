//! Typed search attributes: a constant names an attribute and fixes its type, the workflow
//! upserts values of that type, and visibility queries compare by it.

use crate::workflow::Ctx;
use cairn_types::search::validate_search_attributes;
use cairn_types::{Payload, SearchAttributeError, SearchAttributes, SearchType, SearchValue};
use std::marker::PhantomData;

/// A Rust type a search attribute can hold.
pub trait SearchAttributeType {
    /// The attribute type it maps to.
    const TYPE: SearchType;
    fn into_value(self) -> SearchValue;
}

/// Free text (stored as `Text`; a plain `String` is a `Keyword`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

/// A point in time, Unix milliseconds (stored as `Datetime`; queried with RFC 3339 strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixMillis(pub u64);

impl SearchAttributeType for String {
    const TYPE: SearchType = SearchType::Keyword;
    fn into_value(self) -> SearchValue {
        SearchValue::Keyword(self)
    }
}

impl SearchAttributeType for Text {
    const TYPE: SearchType = SearchType::Text;
    fn into_value(self) -> SearchValue {
        SearchValue::Text(self.0)
    }
}

impl SearchAttributeType for i64 {
    const TYPE: SearchType = SearchType::Int;
    fn into_value(self) -> SearchValue {
        SearchValue::Int(self)
    }
}

impl SearchAttributeType for f64 {
    const TYPE: SearchType = SearchType::Double;
    fn into_value(self) -> SearchValue {
        SearchValue::Double(self)
    }
}

impl SearchAttributeType for bool {
    const TYPE: SearchType = SearchType::Bool;
    fn into_value(self) -> SearchValue {
        SearchValue::Bool(self)
    }
}

impl SearchAttributeType for UnixMillis {
    const TYPE: SearchType = SearchType::Datetime;
    fn into_value(self) -> SearchValue {
        SearchValue::Datetime(self.0)
    }
}

impl SearchAttributeType for Vec<String> {
    const TYPE: SearchType = SearchType::KeywordList;
    fn into_value(self) -> SearchValue {
        SearchValue::KeywordList(self)
    }
}

/// A typed search attribute, shared by the workflows that set it and the node that indexes
/// it (`NodeBuilder::search_attribute`).
///
/// # Examples
/// ```no_run
/// use cairn::{Ctx, SearchAttribute, WorkflowError};
/// const CUSTOMER: SearchAttribute<String> = SearchAttribute::new("CustomerId");
/// const ITEMS: SearchAttribute<i64> = SearchAttribute::new("ItemCount");
///
/// async fn order(ctx: Ctx, customer: String) -> Result<(), WorkflowError> {
///     ctx.upsert_search_attribute(&CUSTOMER, customer).expect("a valid attribute");
///     ctx.upsert_search_attribute(&ITEMS, 3).expect("a valid attribute");
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct SearchAttribute<T> {
    name: &'static str,
    _type: PhantomData<fn(T)>,
}

impl<T: SearchAttributeType> SearchAttribute<T> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _type: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn search_type(&self) -> SearchType {
        T::TYPE
    }
}

impl Ctx {
    /// Sets search attribute `attribute` of this workflow to `value`, in the same commit as
    /// this transition, so visibility queries see it at once. Refused (writing nothing) if the
    /// name or value breaks the limits.
    pub fn upsert_search_attribute<T: SearchAttributeType>(
        &self,
        attribute: &SearchAttribute<T>,
        value: T,
    ) -> Result<(), SearchAttributeError> {
        let value = value.into_value();
        let mut merged = self.inner().search_attributes();
        merged.insert(attribute.name.to_string(), value.clone());
        validate_search_attributes(&merged)?;
        let mut change = SearchAttributes::new();
        change.insert(attribute.name.to_string(), value);
        self.inner().upsert_search_attributes(change);
        Ok(())
    }

    /// This workflow's search attributes: those it started with, as its code has set them.
    pub fn search_attributes(&self) -> SearchAttributes {
        self.inner().search_attributes()
    }

    /// The value of `key` in the memo this run started with (`None`: no such key).
    pub fn memo<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Option<Result<T, cairn_types::PayloadError>> {
        self.inner().memo().get(key).map(Payload::decode)
    }
}
