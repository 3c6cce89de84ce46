//! The visibility filter language: the SQL-like subset Temporal users write to find workflows.
//!
//! ```text
//! WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND StartTime > '2026-01-01T00:00:00Z'
//! (CustomerId IN ('c-1', 'c-2') OR Priority >= 3) AND NOT WorkflowId STARTS_WITH 'test-'
//! CloseTime IS NULL ORDER BY StartTime DESC
//! ```
//!
//! Grammar: `query := [expr] [ORDER BY field [ASC|DESC] {, field [ASC|DESC]}]`;
//! `expr := term {OR term}`; `term := factor {AND factor}`; `factor := NOT factor | '(' expr ')'
//! | field op value | field [NOT] IN (value {, value}) | field [NOT] BETWEEN value AND value |
//! field STARTS_WITH value | field IS [NOT] NULL`; `op := = != <> < <= > >=`. Keywords are
//! case-insensitive; names are case-sensitive; strings are quoted with ' or ", numbers bare,
//! `true`/`false`, times RFC 3339 strings. A query is checked against the known attributes
//! (built-in ones and those registered on the node) before it runs: an unknown name, a value
//! of the wrong type, or a malformed query is an error naming the offending token and its
//! position. Nothing here does I/O: the runtime hands records in.

use cairn_types::{SearchType, SearchValue};
use std::cmp::Ordering;
use std::fmt;

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position} (near {token:?})")]
pub struct FilterError {
    pub message: String,
    /// Byte offset of the offending token in the query.
    pub position: usize,
    pub token: String,
}

/// Longest query accepted, in bytes.
pub const QUERY_BYTES_MAX: usize = 4_096;
/// Deepest nesting of parentheses and `NOT`s a query may have.
pub const QUERY_DEPTH_MAX: usize = 32;
/// Most comparisons (`=`, `IN`, `BETWEEN`, `STARTS_WITH`, `IS NULL`…) one query may make.
pub const QUERY_CONDITIONS_MAX: usize = 100;

/// Built-in attributes every workflow has, with their types.
pub const BUILT_IN_FIELDS: &[(&str, SearchType)] = &[
    ("WorkflowId", SearchType::Keyword),
    ("RunId", SearchType::Keyword),
    ("WorkflowType", SearchType::Keyword),
    ("ExecutionStatus", SearchType::Keyword),
    ("StartTime", SearchType::Datetime),
    ("CloseTime", SearchType::Datetime),
    ("ExecutionDuration", SearchType::Int),
    ("HistoryLength", SearchType::Int),
    ("ParentWorkflowId", SearchType::Keyword),
];

/// Values `ExecutionStatus` takes (Temporal's names).
pub const EXECUTION_STATUSES: &[&str] = &[
    "Running",
    "Completed",
    "Failed",
    "Canceled",
    "Terminated",
    "TimedOut",
    "ContinuedAsNew",
];

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Word(String),
    Str(String),
    Number(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    position: usize,
    text: String,
}

fn error(message: impl Into<String>, token: &Token) -> FilterError {
    FilterError {
        message: message.into(),
        position: token.position,
        token: token.text.clone(),
    }
}

fn tokenize(query: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let kind = match c {
            '(' => {
                i += 1;
                TokenKind::LParen
            }
            ')' => {
                i += 1;
                TokenKind::RParen
            }
            ',' => {
                i += 1;
                TokenKind::Comma
            }
            '\'' | '"' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    let Some(ch) = query[i..].chars().next() else {
                        return Err(FilterError {
                            message: "string is not closed".into(),
                            position: start,
                            token: query[start..].chars().take(20).collect(),
                        });
                    };
                    i += ch.len_utf8();
                    if ch == quote {
                        // A doubled quote is a quote inside the string.
                        if query[i..].starts_with(quote) {
                            text.push(quote);
                            i += 1;
                            continue;
                        }
                        break;
                    }
                    text.push(ch);
                }
                TokenKind::Str(text)
            }
            '`' => {
                let Some(end) = query[i + 1..].find('`') else {
                    return Err(FilterError {
                        message: "quoted name is not closed".into(),
                        position: start,
                        token: query[start..].chars().take(20).collect(),
                    });
                };
                let name = query[i + 1..i + 1 + end].to_string();
                i += end + 2;
                TokenKind::Word(name)
            }
            '=' => {
                i += 1;
                TokenKind::Op("=")
            }
            '!' if query[i..].starts_with("!=") => {
                i += 2;
                TokenKind::Op("!=")
            }
            '<' if query[i..].starts_with("<>") => {
                i += 2;
                TokenKind::Op("!=")
            }
            '<' if query[i..].starts_with("<=") => {
                i += 2;
                TokenKind::Op("<=")
            }
            '<' => {
                i += 1;
                TokenKind::Op("<")
            }
            '>' if query[i..].starts_with(">=") => {
                i += 2;
                TokenKind::Op(">=")
            }
            '>' => {
                i += 1;
                TokenKind::Op(">")
            }
            c if c.is_ascii_digit()
                || (c == '-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                TokenKind::Number(query[start..i].to_string())
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                TokenKind::Word(query[start..i].to_string())
            }
            _ => {
                let ch = query[i..].chars().next().unwrap_or(c);
                return Err(FilterError {
                    message: format!("unexpected character {ch:?}"),
                    position: start,
                    token: ch.to_string(),
                });
            }
        };
        tokens.push(Token {
            kind,
            position: start,
            text: query[start..i].to_string(),
        });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        position: query.len(),
        text: "end of query".into(),
    });
    Ok(tokens)
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A checked query's condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    Compare(String, CompareOp, SearchValue),
    In(String, Vec<SearchValue>),
    Between(String, SearchValue, SearchValue),
    StartsWith(String, String),
    IsNull(String),
    True,
}

/// A sort key of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
}

/// A parsed and type-checked query.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub condition: Condition,
    /// Empty: newest first (`StartTime DESC`), as Temporal lists.
    pub order: Vec<OrderBy>,
}

/// What a query can see of one workflow.
pub trait Searchable {
    /// The value of attribute `name` (built-in or custom), `None` if unset.
    fn field(&self, name: &str) -> Option<SearchValue>;
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    /// Parentheses and `NOT`s open around the current token.
    depth: usize,
    /// Comparisons parsed so far.
    conditions: usize,
    types: &'a dyn Fn(&str) -> Option<SearchType>,
}

fn keyword(token: &Token, word: &str) -> bool {
    matches!(&token.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(word))
}

const RESERVED: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "IS",
    "NULL",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "STARTS_WITH",
];

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if keyword(self.peek(), word) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), FilterError> {
        if self.eat_keyword(word) {
            Ok(())
        } else {
            Err(error(format!("expected {word}"), self.peek()))
        }
    }

    fn query(&mut self) -> Result<Filter, FilterError> {
        let condition =
            if matches!(self.peek().kind, TokenKind::End) || keyword(self.peek(), "ORDER") {
                Condition::True
            } else {
                self.or()?
            };
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                let (field, _) = self.field()?;
                let descending = if self.eat_keyword("DESC") {
                    true
                } else {
                    self.eat_keyword("ASC");
                    false
                };
                order.push(OrderBy { field, descending });
                if matches!(self.peek().kind, TokenKind::Comma) {
                    self.next();
                    continue;
                }
                break;
            }
        }
        if !matches!(self.peek().kind, TokenKind::End) {
            return Err(error(
                "expected AND, OR, ORDER BY or the end of the query",
                self.peek(),
            ));
        }
        Ok(Filter { condition, order })
    }

    fn or(&mut self) -> Result<Condition, FilterError> {
        let mut left = self.and()?;
        while self.eat_keyword("OR") {
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, FilterError> {
        let mut left = self.factor()?;
        while self.eat_keyword("AND") {
            let right = self.factor()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Condition, FilterError> {
        let nests = keyword(self.peek(), "NOT") || matches!(self.peek().kind, TokenKind::LParen);
        if nests {
            // Parsing, evaluating and dropping a condition all recurse once per level: the
            // bound keeps a hostile query from overflowing the stack.
            if self.depth == QUERY_DEPTH_MAX {
                return Err(error(
                    format!(
                        "the query nests parentheses and NOTs more than {QUERY_DEPTH_MAX} deep"
                    ),
                    self.peek(),
                ));
            }
            self.depth += 1;
            let inner = self.nested();
            self.depth -= 1;
            return inner;
        }
        if self.conditions == QUERY_CONDITIONS_MAX {
            return Err(error(
                format!("the query makes more than {QUERY_CONDITIONS_MAX} comparisons"),
                self.peek(),
            ));
        }
        self.conditions += 1;
        self.comparison()
    }

    /// `NOT factor` or `( expr )`.
    fn nested(&mut self) -> Result<Condition, FilterError> {
        if self.eat_keyword("NOT") {
            return Ok(Condition::Not(Box::new(self.factor()?)));
        }
        self.next();
        let inner = self.or()?;
        if !matches!(self.peek().kind, TokenKind::RParen) {
            return Err(error("expected )", self.peek()));
        }
        self.next();
        Ok(inner)
    }

    /// A field name, checked against the known attributes.
    fn field(&mut self) -> Result<(String, SearchType), FilterError> {
        let token = self.next();
        let TokenKind::Word(name) = &token.kind else {
            return Err(error("expected an attribute name", &token));
        };
        if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) && !token.text.starts_with('`') {
            return Err(error("expected an attribute name", &token));
        }
        match (self.types)(name) {
            Some(ty) => Ok((name.clone(), ty)),
            None => Err(error(
                format!(
                    "unknown search attribute {name:?} (built-in: {}; custom ones must be registered on the node)",
                    BUILT_IN_FIELDS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &token,
            )),
        }
    }

    fn comparison(&mut self) -> Result<Condition, FilterError> {
        let (field, ty) = self.field()?;
        let token = self.peek().clone();
        if let TokenKind::Op(op) = token.kind {
            self.next();
            let op = match op {
                "=" => CompareOp::Eq,
                "!=" => CompareOp::Ne,
                "<" => CompareOp::Lt,
                "<=" => CompareOp::Le,
                ">" => CompareOp::Gt,
                _ => CompareOp::Ge,
            };
            if !matches!(op, CompareOp::Eq | CompareOp::Ne)
                && matches!(
                    ty,
                    SearchType::Text | SearchType::Bool | SearchType::KeywordList
                )
            {
                return Err(error(
                    format!("{field} is a {} attribute: only = and != apply", ty.name()),
                    &token,
                ));
            }
            let value = self.value(&field, ty)?;
            return Ok(Condition::Compare(field, op, value));
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            if !matches!(self.peek().kind, TokenKind::LParen) {
                return Err(error("expected ( after IN", self.peek()));
            }
            self.next();
            let mut values = vec![self.value(&field, ty)?];
            while matches!(self.peek().kind, TokenKind::Comma) {
                self.next();
                values.push(self.value(&field, ty)?);
            }
            if !matches!(self.peek().kind, TokenKind::RParen) {
                return Err(error("expected , or ) in the IN list", self.peek()));
            }
            self.next();
            let condition = Condition::In(field, values);
            return Ok(if negated {
                Condition::Not(Box::new(condition))
            } else {
                condition
            });
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.value(&field, ty)?;
            self.expect_keyword("AND")?;
            let high = self.value(&field, ty)?;
            let condition = Condition::Between(field, low, high);
            return Ok(if negated {
                Condition::Not(Box::new(condition))
            } else {
                condition
            });
        }
        if negated {
            return Err(error("expected IN or BETWEEN after NOT", self.peek()));
        }
        if self.eat_keyword("STARTS_WITH") {
            if ty != SearchType::Keyword {
                return Err(error(
                    format!(
                        "STARTS_WITH applies to Keyword attributes; {field} is {}",
                        ty.name()
                    ),
                    &token,
                ));
            }
            let value_token = self.next();
            let TokenKind::Str(prefix) = value_token.kind else {
                return Err(error("expected a quoted prefix", &value_token));
            };
            return Ok(Condition::StartsWith(field, prefix));
        }
        if self.eat_keyword("IS") {
            let not = self.eat_keyword("NOT");
            self.expect_keyword("NULL")?;
            let condition = Condition::IsNull(field);
            return Ok(if not {
                Condition::Not(Box::new(condition))
            } else {
                condition
            });
        }
        Err(error(
            format!(
                "expected a comparison after {field} (=, !=, <, <=, >, >=, IN, BETWEEN, STARTS_WITH, IS NULL)"
            ),
            &token,
        ))
    }

    /// A literal, converted to the field's type.
    fn value(&mut self, field: &str, ty: SearchType) -> Result<SearchValue, FilterError> {
        let token = self.next();
        let mismatch = |expected: &str| {
            error(
                format!("{field} is a {} attribute: expected {expected}", ty.name()),
                &token,
            )
        };
        match (ty, &token.kind) {
            (SearchType::Keyword | SearchType::KeywordList, TokenKind::Str(s)) => {
                if field == "ExecutionStatus" && !EXECUTION_STATUSES.contains(&s.as_str()) {
                    return Err(error(
                        format!(
                            "ExecutionStatus is one of {}",
                            EXECUTION_STATUSES.join(", ")
                        ),
                        &token,
                    ));
                }
                Ok(SearchValue::Keyword(s.clone()))
            }
            (SearchType::Text, TokenKind::Str(s)) => Ok(SearchValue::Text(s.clone())),
            (SearchType::Int, TokenKind::Number(n)) => n
                .parse()
                .map(SearchValue::Int)
                .map_err(|_| mismatch("an integer")),
            (SearchType::Double, TokenKind::Number(n)) => n
                .parse()
                .map(SearchValue::Double)
                .map_err(|_| mismatch("a number")),
            (SearchType::Bool, TokenKind::Word(w)) if w.eq_ignore_ascii_case("true") => {
                Ok(SearchValue::Bool(true))
            }
            (SearchType::Bool, TokenKind::Word(w)) if w.eq_ignore_ascii_case("false") => {
                Ok(SearchValue::Bool(false))
            }
            (SearchType::Datetime, TokenKind::Str(s)) => parse_time(s)
                .map(SearchValue::Datetime)
                .ok_or_else(|| mismatch("an RFC 3339 time such as '2026-01-01T00:00:00Z'")),
            (SearchType::Keyword | SearchType::KeywordList | SearchType::Text, _) => {
                Err(mismatch("a quoted string"))
            }
            (SearchType::Int, _) => Err(mismatch("an integer")),
            (SearchType::Double, _) => Err(mismatch("a number")),
            (SearchType::Bool, _) => Err(mismatch("true or false")),
            (SearchType::Datetime, _) => {
                Err(mismatch("an RFC 3339 time such as '2026-01-01T00:00:00Z'"))
            }
        }
    }
}

/// Unix milliseconds of an RFC 3339 time.
pub fn parse_time(text: &str) -> Option<u64> {
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp_millis()).ok()
}

/// An RFC 3339 rendering of Unix milliseconds (UTC, millisecond precision).
pub fn format_time(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || unix_ms.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

impl Filter {
    /// Parses and checks `query`; `custom` gives the type of each registered custom attribute.
    pub fn parse(
        query: &str,
        custom: &dyn Fn(&str) -> Option<SearchType>,
    ) -> Result<Self, FilterError> {
        let types = |name: &str| {
            BUILT_IN_FIELDS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .or_else(|| custom(name))
        };
        if query.len() > QUERY_BYTES_MAX {
            return Err(FilterError {
                message: format!(
                    "the query is {} bytes; the limit is {QUERY_BYTES_MAX}",
                    query.len()
                ),
                position: QUERY_BYTES_MAX,
                token: query.chars().take(20).collect(),
            });
        }
        let mut parser = Parser {
            tokens: tokenize(query)?,
            at: 0,
            depth: 0,
            conditions: 0,
            types: &types,
        };
        parser.query()
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &dyn Searchable) -> bool {
        eval(&self.condition, record)
    }

    /// Orders two records by the query's `ORDER BY` (newest first when it has none), then by
    /// workflow id, so every order is total and pages are stable.
    pub fn compare(&self, a: &dyn Searchable, b: &dyn Searchable) -> Ordering {
        let default = [OrderBy {
            field: "StartTime".into(),
            descending: true,
        }];
        let keys = if self.order.is_empty() {
            &default[..]
        } else {
            &self.order[..]
        };
        for key in keys {
            let ordering = compare_options(&a.field(&key.field), &b.field(&key.field));
            let ordering = if key.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        compare_options(&a.field("WorkflowId"), &b.field("WorkflowId"))
    }

    /// The values a record sorts by (for page tokens), in `ORDER BY` order, then its id.
    pub fn sort_key(&self, record: &dyn Searchable) -> Vec<Option<SearchValue>> {
        let mut key: Vec<Option<SearchValue>> = if self.order.is_empty() {
            vec![record.field("StartTime")]
        } else {
            self.order.iter().map(|o| record.field(&o.field)).collect()
        };
        key.push(record.field("WorkflowId"));
        key
    }

    /// Compares sort keys made by [`Self::sort_key`] as [`Self::compare`] compares records.
    pub fn compare_keys(&self, a: &[Option<SearchValue>], b: &[Option<SearchValue>]) -> Ordering {
        let descending: Vec<bool> = if self.order.is_empty() {
            vec![true, false]
        } else {
            self.order
                .iter()
                .map(|o| o.descending)
                .chain(std::iter::once(false))
                .collect()
        };
        for ((x, y), descending) in a.iter().zip(b).zip(descending) {
            let ordering = compare_options(x, y);
            let ordering = if descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        a.len().cmp(&b.len())
    }
}

/// Orders values of one type; unset sorts first, values of different types by type.
fn compare_options(a: &Option<SearchValue>, b: &Option<SearchValue>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => {
            compare_values(a, b).unwrap_or_else(|| a.search_type().cmp(&b.search_type()))
        }
    }
}

fn compare_values(a: &SearchValue, b: &SearchValue) -> Option<Ordering> {
    use SearchValue as V;
    Some(match (a, b) {
        (V::Keyword(x) | V::Text(x), V::Keyword(y) | V::Text(y)) => x.cmp(y),
        (V::Int(x), V::Int(y)) => x.cmp(y),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y)?,
        (V::Int(x), V::Double(y)) => (*x as f64).partial_cmp(y)?,
        (V::Double(x), V::Int(y)) => x.partial_cmp(&(*y as f64))?,
        (V::Bool(x), V::Bool(y)) => x.cmp(y),
        (V::Datetime(x), V::Datetime(y)) => x.cmp(y),
        (V::KeywordList(x), V::KeywordList(y)) => x.cmp(y),
        _ => return None,
    })
}

fn eval(condition: &Condition, record: &dyn Searchable) -> bool {
    match condition {
        Condition::True => true,
        Condition::And(a, b) => eval(a, record) && eval(b, record),
        Condition::Or(a, b) => eval(a, record) || eval(b, record),
        Condition::Not(inner) => !eval(inner, record),
        Condition::IsNull(field) => record.field(field).is_none(),
        Condition::StartsWith(field, prefix) => match record.field(field) {
            Some(SearchValue::Keyword(value)) => value.starts_with(prefix.as_str()),
            _ => false,
        },
        Condition::In(field, values) => match record.field(field) {
            Some(value) => values.iter().any(|v| equals(&value, v)),
            None => false,
        },
        Condition::Between(field, low, high) => match record.field(field) {
            Some(value) => {
                compare_values(&value, low).is_some_and(|o| o != Ordering::Less)
                    && compare_values(&value, high).is_some_and(|o| o != Ordering::Greater)
            }
            None => false,
        },
        Condition::Compare(field, op, literal) => {
            let Some(value) = record.field(field) else {
                // Unset compares unequal to everything, as in SQL's NULL (only != holds).
                return *op == CompareOp::Ne;
            };
            match op {
                CompareOp::Eq => equals(&value, literal),
                CompareOp::Ne => !equals(&value, literal),
                _ => match compare_values(&value, literal) {
                    Some(ordering) => match op {
                        CompareOp::Lt => ordering == Ordering::Less,
                        CompareOp::Le => ordering != Ordering::Greater,
                        CompareOp::Gt => ordering == Ordering::Greater,
                        _ => ordering != Ordering::Less,
                    },
                    None => false,
                },
            }
        }
    }
}

/// Equality; a keyword list equals a keyword it contains.
fn equals(value: &SearchValue, literal: &SearchValue) -> bool {
    match (value, literal) {
        (SearchValue::KeywordList(list), SearchValue::Keyword(k)) => list.contains(k),
        _ => compare_values(value, literal) == Some(Ordering::Equal),
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Record(BTreeMap<&'static str, SearchValue>);

    impl Searchable for Record {
        fn field(&self, name: &str) -> Option<SearchValue> {
            self.0.get(name).cloned()
        }
    }

    fn record(id: &str, ty: &str, status: &str, start: u64, priority: Option<i64>) -> Record {
        let mut fields = BTreeMap::new();
        fields.insert("WorkflowId", SearchValue::Keyword(id.into()));
        fields.insert("WorkflowType", SearchValue::Keyword(ty.into()));
        fields.insert("ExecutionStatus", SearchValue::Keyword(status.into()));
        fields.insert("StartTime", SearchValue::Datetime(start));
        if let Some(p) = priority {
            fields.insert("Priority", SearchValue::Int(p));
        }
        Record(fields)
    }

    fn custom(name: &str) -> Option<SearchType> {
        match name {
            "Priority" => Some(SearchType::Int),
            "Tags" => Some(SearchType::KeywordList),
            _ => None,
        }
    }

    fn parse(query: &str) -> Result<Filter, FilterError> {
        Filter::parse(query, &custom)
    }

    /// Proves the language's forms evaluate as SQL does: precedence of AND over OR, NOT,
    /// IN, BETWEEN, STARTS_WITH, IS NULL, time literals, and unset attributes.
    #[test]
    fn queries_evaluate() {
        let jan = parse_time("2026-01-10T00:00:00Z").unwrap();
        let records = [
            record("order-1", "Order", "Running", jan, Some(5)),
            record("order-2", "Order", "Completed", jan + 1, None),
            record(
                "refund-1",
                "Refund",
                "Running",
                jan - 86_400_000 * 30,
                Some(1),
            ),
        ];
        let ids = |query: &str| -> Vec<String> {
            let filter = parse(query).unwrap();
            records
                .iter()
                .filter(|r| filter.matches(*r))
                .map(|r| match r.field("WorkflowId") {
                    Some(SearchValue::Keyword(id)) => id,
                    _ => unreachable!(),
                })
                .collect()
        };
        assert_eq!(
            ids(
                "WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND StartTime > '2026-01-01T00:00:00Z'"
            ),
            vec!["order-1"]
        );
        assert_eq!(
            ids("WorkflowType = 'Refund' OR WorkflowType = 'Order' AND Priority >= 5"),
            vec!["order-1", "refund-1"]
        );
        assert_eq!(ids("NOT (WorkflowType = 'Order')"), vec!["refund-1"]);
        assert_eq!(
            ids("WorkflowId STARTS_WITH 'order-'"),
            vec!["order-1", "order-2"]
        );
        assert_eq!(ids("Priority IS NULL"), vec!["order-2"]);
        assert_eq!(
            ids("Priority IS NOT NULL AND Priority BETWEEN 2 AND 9"),
            vec!["order-1"]
        );
        assert_eq!(ids("ExecutionStatus NOT IN ('Running')"), vec!["order-2"]);
        assert_eq!(ids("Priority != 5"), vec!["order-2", "refund-1"]);
        assert!(
            parse("workflowtype = 'Order'").is_err(),
            "names are case-sensitive: a wrong case is an unknown attribute"
        );
    }

    /// Proves ORDER BY sorts (newest first by default) with the workflow id breaking ties, and
    /// sort keys compare the same way the records do (page tokens rely on it).
    #[test]
    fn ordering_and_sort_keys_agree() {
        let a = record("a", "T", "Running", 30, Some(2));
        let b = record("b", "T", "Running", 10, Some(2));
        let c = record("c", "T", "Running", 20, Some(1));
        let by_default = parse("").unwrap();
        let mut all = [&a, &b, &c];
        all.sort_by(|x, y| by_default.compare(*x, *y));
        assert_eq!(
            all.iter()
                .map(|r| r.field("WorkflowId"))
                .collect::<Vec<_>>(),
            vec![
                Some(SearchValue::Keyword("a".into())),
                Some(SearchValue::Keyword("c".into())),
                Some(SearchValue::Keyword("b".into()))
            ]
        );
        let by_priority = parse("ORDER BY Priority DESC, StartTime ASC").unwrap();
        all.sort_by(|x, y| by_priority.compare(*x, *y));
        let order: Vec<_> = all.iter().map(|r| r.field("WorkflowId")).collect();
        assert_eq!(order[0], Some(SearchValue::Keyword("b".into())));
        assert_eq!(order[2], Some(SearchValue::Keyword("c".into())));
        for pair in all.windows(2) {
            let (x, y) = (by_priority.sort_key(pair[0]), by_priority.sort_key(pair[1]));
            assert_eq!(by_priority.compare_keys(&x, &y), Ordering::Less);
        }
    }

    /// Proves malformed queries are refused with the offending token and its position.
    #[test]
    fn errors_point_at_the_offending_token() {
        let e = parse("WorkflowType = 'Order' ANDD ExecutionStatus = 'Running'").unwrap_err();
        assert_eq!((e.position, e.token.as_str()), (23, "ANDD"));
        let e = parse("Colour = 'red'").unwrap_err();
        assert_eq!((e.position, e.token.as_str()), (0, "Colour"));
        assert!(e.message.contains("unknown search attribute"), "{e}");
        let e = parse("Priority = 'high'").unwrap_err();
        assert_eq!(e.token, "'high'");
        assert!(e.message.contains("Int"), "{e}");
        let e = parse("StartTime > 'yesterday'").unwrap_err();
        assert!(e.message.contains("RFC 3339"), "{e}");
        let e = parse("ExecutionStatus = 'Sleeping'").unwrap_err();
        assert!(e.message.contains("Running"), "{e}");
        let e = parse("WorkflowId = 'unterminated").unwrap_err();
        assert_eq!(e.position, 13);
        let e = parse("(WorkflowId = 'x'").unwrap_err();
        assert_eq!(e.token, "end of query");
        let e = parse("Priority STARTS_WITH '1'").unwrap_err();
        assert!(e.message.contains("Keyword"), "{e}");
        assert!(parse("Tags = 'vip'").is_ok());
        assert!(parse("Tags > 'vip'").is_err());
    }

    /// Proves hostile queries are refused with an error, never a stack overflow: nesting,
    /// NOT chains, comparison counts and length each stop exactly past their limit.
    #[test]
    fn hostile_queries_hit_named_limits() {
        let nested = |n: usize| format!("{}WorkflowId = 'x'{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&nested(QUERY_DEPTH_MAX)).is_ok());
        let e = parse(&nested(QUERY_DEPTH_MAX + 1)).unwrap_err();
        assert!(e.message.contains("deep"), "{e}");
        let nots = |n: usize| format!("{}WorkflowId = 'x'", "NOT ".repeat(n));
        assert!(parse(&nots(QUERY_DEPTH_MAX)).is_ok());
        assert!(parse(&nots(QUERY_DEPTH_MAX + 1)).is_err());
        // The reproductions from the field: 1,800 parentheses, 10,000 NOTs.
        assert!(parse(&nested(1_800)).is_err());
        assert!(parse(&format!("{}WorkflowId = 'x'", "NOT ".repeat(10_000))).is_err());
        let many = |n: usize| vec!["Priority = 1"; n].join(" OR ");
        assert!(parse(&many(QUERY_CONDITIONS_MAX)).is_ok());
        let e = parse(&many(QUERY_CONDITIONS_MAX + 1)).unwrap_err();
        assert!(e.message.contains("comparisons"), "{e}");
        let long = format!("WorkflowId = '{}'", "x".repeat(QUERY_BYTES_MAX));
        let e = parse(&long).unwrap_err();
        assert!(e.message.contains("bytes"), "{e}");
    }
}
