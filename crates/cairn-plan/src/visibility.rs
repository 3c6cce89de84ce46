//! Visibility: the secondary indexes over workflow records, and the lists and counts that read
//! them a page at a time.
//!
//! Every write of a workflow record goes through [`put_workflow`], an `Op::Derived` that reads
//! the record it replaces inside the commit transaction and writes, in that same transaction,
//! the index entries that changed and the counters they move. So indexes and counts can never
//! disagree with the records, whatever crashes or `MaybeCommitted` outcomes happen: they are one
//! commit.
//!
//! ```text
//! ("vis", ns, "ts", type, status, -start_ms, workflow_id)      -> ()  by type and status
//! ("vis", ns, "kw", attribute, value, -start_ms, workflow_id)  -> ()  by a Keyword attribute
//! ("vis", ns, "ct", close_ms, workflow_id)                    -> ()  closed, by close time
//! ("vis", ns, "types", type)                                   -> ()  the types seen
//! ("vis", ns, "runs", workflow_id, -start_ms, run_id)          -> record  past runs
//! ("viscount", ns, "ts", type, status)                         -> i64 (atomic add)
//! ("viscount", ns, "changes")                                  -> i64 (atomic add)
//! ```
//!
//! The `changes` counter counts every workflow-record write (a start, a close, a
//! continue-as-new's next run, an attribute upsert): what a live list waits on, since some of
//! those move no other count.
//!
//! The start time is negated so every index lists newest first, the order Temporal lists in.
//! Only the (type, status) index is stored: a list by status alone, by type alone or of
//! everything merges its (type, status) parts (seven statuses, times the types seen), and a
//! count sums their counters. So a start writes one entry and a close moves one, which is
//! what keeps indexing cheap on the write path that every workflow takes.
//!
//! The indexes and counters hold each workflow id's current run. A run replaced by a later one
//! (a new start of its closed id, a continue-as-new, its cron schedule's next run) keeps its
//! record as it closed among the id's past runs, written by the replacing commit: a query
//! naming `WorkflowId = 'id'` lists the current run and then those, newest first, as Temporal
//! lists every run of an id. Retention deletes a past run with the rest of it.
//!
//! Invariants:
//! - A list reads O(page) keys when the query's conjuncts name an indexed equality, and at most
//!   [`LIST_SCAN_ENTRIES_MAX`] index entries whatever the query: past that it answers a shorter
//!   page with a token to resume from. No transaction reads more than [`SCAN_CHUNK_ENTRIES`]
//!   entries, so FoundationDB's 5 s / 10 MB limits are never approached.
//! - `count` of no filter, of `ExecutionStatus = s`, of `WorkflowType = t` and of both is one
//!   read of a maintained counter; any other count walks the best index a chunk per transaction.
//! - A query with an `ORDER BY` other than the default sorts in memory at most
//!   [`SORTED_QUERY_WORKFLOWS_MAX`] workflows and refuses broader ones with a clear error.

use crate::Registered;
use crate::error::ClientError;
use crate::keys::Keys;
use crate::ops::{Derivation, Derive, DeriveFuture, Op, TxRead};
use crate::records::{WorkflowRecord, decode, encode};
use cairn_core::RunStatus;
use cairn_core::visibility::{CompareOp, Condition, Filter, Searchable};
use cairn_store::keyspace::{Subspace, key_after};
use cairn_store::{RangeRequest, Store, StoreError, StoreResult, Transaction};
use cairn_types::{RunId, SearchAttributes, SearchType, SearchValue};

/// Default page size of a list.
pub const LIST_PAGE_SIZE_DEFAULT: usize = 100;
/// Largest page a list returns.
pub const LIST_PAGE_SIZE_MAX: usize = 1_000;
/// Index entries one transaction of a list or count reads.
pub const SCAN_CHUNK_ENTRIES: usize = 500;
/// Index entries one list call examines; past this it returns what it found (perhaps nothing)
/// with a token that resumes where it stopped.
pub const LIST_SCAN_ENTRIES_MAX: usize = 10_000;
/// Most workflows a query with a non-default `ORDER BY` may match (they are sorted in memory).
pub const SORTED_QUERY_WORKFLOWS_MAX: usize = 10_000;

const _: () = assert!(LIST_PAGE_SIZE_MAX < LIST_SCAN_ENTRIES_MAX);
const _: () = assert!(SCAN_CHUNK_ENTRIES <= LIST_SCAN_ENTRIES_MAX);

/// A summary of a workflow, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSummary {
    pub workflow_id: String,
    pub run_id: RunId,
    pub workflow_type: String,
    pub status: Option<RunStatus>,
    pub started_unix_ms: u64,
    pub closed_unix_ms: Option<u64>,
    pub parent_workflow_id: Option<String>,
    pub search_attributes: SearchAttributes,
    pub memo: cairn_types::Memo,
    pub history_length: u64,
}

impl WorkflowSummary {
    pub fn from_record(workflow_id: String, record: WorkflowRecord) -> Self {
        Self {
            workflow_id,
            run_id: record.run_id,
            workflow_type: record.workflow_type,
            status: record.status,
            started_unix_ms: record.started_unix_ms,
            closed_unix_ms: record.closed_unix_ms,
            parent_workflow_id: record.parent_workflow_id.map(|id| id.to_string()),
            search_attributes: record.search_attributes,
            memo: record.memo,
            history_length: record.history_length,
        }
    }
}

/// What visibility queries see of a workflow: its built-in attributes and custom ones.
impl Searchable for WorkflowSummary {
    fn field(&self, name: &str) -> Option<SearchValue> {
        Some(match name {
            "WorkflowId" => SearchValue::Keyword(self.workflow_id.clone()),
            "RunId" => SearchValue::Keyword(self.run_id.to_string()),
            "WorkflowType" => SearchValue::Keyword(self.workflow_type.clone()),
            "ExecutionStatus" => SearchValue::Keyword(status_name(self.status).to_string()),
            "StartTime" => SearchValue::Datetime(self.started_unix_ms),
            "CloseTime" => SearchValue::Datetime(self.closed_unix_ms?),
            "ExecutionDuration" => SearchValue::Int(
                i64::try_from(self.closed_unix_ms?.saturating_sub(self.started_unix_ms))
                    .unwrap_or(i64::MAX),
            ),
            "HistoryLength" => {
                SearchValue::Int(i64::try_from(self.history_length).unwrap_or(i64::MAX))
            }
            "ParentWorkflowId" => SearchValue::Keyword(self.parent_workflow_id.clone()?),
            custom => self.search_attributes.get(custom)?.clone(),
        })
    }
}

/// A status as visibility queries name it (Temporal's names; a run not yet started runs).
pub fn status_name(status: Option<RunStatus>) -> &'static str {
    match status {
        None | Some(RunStatus::Running) => "Running",
        Some(RunStatus::Completed) => "Completed",
        Some(RunStatus::Failed) => "Failed",
        Some(RunStatus::Canceled) => "Canceled",
        Some(RunStatus::Terminated) => "Terminated",
        Some(RunStatus::TimedOut) => "TimedOut",
        Some(RunStatus::ContinuedAsNew) => "ContinuedAsNew",
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowPage {
    pub workflows: Vec<WorkflowSummary>,
    /// Pass it back for the next page; `None` on the last one. A page may hold fewer
    /// workflows than asked for (even none) and still have a token: the list stopped after
    /// examining [`LIST_SCAN_ENTRIES_MAX`] entries.
    pub next_page_token: Option<String>,
}

/// One secondary index: the workflows with one value of an attribute (or all of them), newest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Index {
    All,
    Status(String),
    Type(String),
    TypeStatus(String, String),
    /// A custom attribute of type Keyword, by value.
    Keyword(String, String),
}

impl Index {
    /// The stored indexes whose merge is this one: `types` are the workflow types seen.
    fn parts(&self, types: &[String]) -> Vec<Self> {
        let statuses = cairn_core::visibility::EXECUTION_STATUSES;
        match self {
            Self::All => types
                .iter()
                .flat_map(|t| {
                    statuses
                        .iter()
                        .map(move |s| Self::TypeStatus(t.clone(), (*s).to_string()))
                })
                .collect(),
            Self::Status(s) => types
                .iter()
                .map(|t| Self::TypeStatus(t.clone(), s.clone()))
                .collect(),
            Self::Type(t) => statuses
                .iter()
                .map(|s| Self::TypeStatus(t.clone(), (*s).to_string()))
                .collect(),
            Self::TypeStatus(..) | Self::Keyword(..) => vec![self.clone()],
        }
    }

    fn entries(&self, keys: &Keys, namespace: &str) -> Subspace {
        self.entries_in(&keys.visibility(namespace))
    }

    /// The index's entries within a namespace's visibility subspace.
    fn entries_in(&self, vis: &Subspace) -> Subspace {
        match self {
            Self::All => vis.subspace(&("all",)),
            Self::Status(s) => vis.subspace(&("st", s.as_str())),
            Self::Type(t) => vis.subspace(&("ty", t.as_str())),
            Self::TypeStatus(t, s) => vis.subspace(&("ts", t.as_str(), s.as_str())),
            Self::Keyword(name, value) => vis.subspace(&("kw", name.as_str(), value.as_str())),
        }
    }

    /// The index's maintained count, for the indexes that have one.
    fn counter(&self, keys: &Keys, namespace: &str) -> Option<Vec<u8>> {
        self.counter_in(&keys.visibility_counts(namespace))
    }

    fn counter_in(&self, counts: &Subspace) -> Option<Vec<u8>> {
        Some(match self {
            Self::All => counts.pack(&("all",)),
            Self::Status(s) => counts.pack(&("st", s.as_str())),
            Self::Type(t) => counts.pack(&("ty", t.as_str())),
            Self::TypeStatus(t, s) => counts.pack(&("ts", t.as_str(), s.as_str())),
            Self::Keyword(..) => return None,
        })
    }

    /// The stored indexes a workflow record appears in.
    fn of(record: &WorkflowRecord) -> Vec<Self> {
        let status = status_name(record.status).to_string();
        let mut out = vec![Self::TypeStatus(record.workflow_type.clone(), status)];
        for (name, value) in &record.search_attributes {
            if let SearchValue::Keyword(value) = value {
                out.push(Self::Keyword(name.clone(), value.clone()));
            }
        }
        out
    }
}

fn entry_key(sub: &Subspace, started_unix_ms: u64, workflow_id: &str) -> Vec<u8> {
    sub.pack(&(negated(started_unix_ms), workflow_id))
}

fn negated(unix_ms: u64) -> i64 {
    -i64::try_from(unix_ms).unwrap_or(i64::MAX)
}

/// The index writes that turn `old` (the record being replaced, if any) into `new` for
/// workflow `workflow_id`: entries cleared and set, counters moved. Entries and counters that
/// both records share are not touched.
pub fn index_ops(
    keys: &Keys,
    namespace: &str,
    workflow_id: &str,
    old: Option<&WorkflowRecord>,
    new: Option<&WorkflowRecord>,
) -> Vec<Op> {
    // Compared as values first: only the entries and counters that differ are packed into
    // keys (packing is what costs), so a step that changes nothing indexed costs nothing.
    let indexes = |r: Option<&WorkflowRecord>| r.map(Index::of).unwrap_or_default();
    let (old_indexes, new_indexes) = (indexes(old), indexes(new));
    let same_position = match (old, new) {
        (Some(o), Some(n)) => o.started_unix_ms == n.started_unix_ms,
        _ => false,
    };
    let vis = keys.visibility(namespace);
    let entry = |index: &Index, record: &WorkflowRecord| {
        entry_key(&index.entries_in(&vis), record.started_unix_ms, workflow_id)
    };
    let mut ops = Vec::new();
    if let Some(old) = old {
        for index in &old_indexes {
            if !(same_position && new_indexes.contains(index)) {
                ops.push(Op::Clear(entry(index, old)));
            }
        }
    }
    if let Some(new) = new {
        for index in &new_indexes {
            if !(same_position && old_indexes.contains(index)) {
                ops.push(Op::Set(entry(index, new), Vec::new()));
            }
        }
    }
    // Closed workflows are also listed by close time, for retention.
    let closed =
        |r: Option<&WorkflowRecord>| r.filter(|r| r.is_closed()).and_then(|r| r.closed_unix_ms);
    let (old_closed, new_closed) = (closed(old), closed(new));
    if old_closed != new_closed {
        if let Some(at) = old_closed {
            ops.push(Op::Clear(keys.closed_entry(namespace, at, workflow_id)));
        }
        if let Some(at) = new_closed {
            ops.push(Op::Set(
                keys.closed_entry(namespace, at, workflow_id),
                Vec::new(),
            ));
        }
    }
    // The types seen, so lists and counts by status alone can find their parts. Written with
    // every start (one key per type per commit batch, however many starts it carries).
    if let Some(new) = new
        && old.is_none_or(|o| o.workflow_type != new.workflow_type)
    {
        ops.push(Op::Set(
            keys.visibility(namespace)
                .pack(&("types", new.workflow_type.as_str())),
            Vec::new(),
        ));
    }
    let counts = keys.visibility_counts(namespace);
    for index in &old_indexes {
        if !new_indexes.contains(index)
            && let Some(counter) = index.counter_in(&counts)
        {
            ops.push(Op::Add(counter, -1));
        }
    }
    for index in &new_indexes {
        if !old_indexes.contains(index)
            && let Some(counter) = index.counter_in(&counts)
        {
            ops.push(Op::Add(counter, 1));
        }
    }
    ops
}

/// What the caller expects a workflow-record write to replace. With an expectation, the index
/// writes are planned by the caller (on its own thread) and the commit only checks, with one
/// read, that the record it replaces is indexed as expected; `Unknown`, or a wrong guess, plans
/// them inside the commit instead. Either way the writes are exact.
#[derive(Debug, Clone)]
pub enum Replacing {
    Unknown,
    /// No record: a workflow id never used (or deleted by retention).
    Nothing,
    /// A record indexed as this one is (its run, type, status, start and close times and
    /// Keyword attributes; other fields do not matter).
    Record(WorkflowRecord),
}

/// Whether two records have the same index entries and counters.
fn indexed_alike(a: &WorkflowRecord, b: &WorkflowRecord) -> bool {
    let closed = |r: &WorkflowRecord| {
        r.status
            .is_some_and(RunStatus::is_closed)
            .then_some(r.closed_unix_ms)
    };
    let keywords = |r: &WorkflowRecord| {
        r.search_attributes
            .iter()
            .filter(|(_, v)| matches!(v, SearchValue::Keyword(_)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    a.run_id == b.run_id
        && a.workflow_type == b.workflow_type
        && status_name(a.status) == status_name(b.status)
        && a.started_unix_ms == b.started_unix_ms
        && closed(a) == closed(b)
        && keywords(a) == keywords(b)
}

/// The index writes of replacing `old` by `record`, plus the retirement of `old`'s run when
/// the record names another run (a new start of a closed id, or a continue-as-new): it is no
/// longer reachable from its workflow id, and retention deletes it by time.
fn replacement_ops(
    keys: &Keys,
    namespace: &str,
    workflow_id: &str,
    old: Option<&WorkflowRecord>,
    record: &WorkflowRecord,
) -> Vec<Op> {
    let mut ops = index_ops(keys, namespace, workflow_id, old, Some(record));
    if let Some(old) = old
        && old.run_id != record.run_id
    {
        let closed = old.closed_unix_ms.unwrap_or(record.started_unix_ms);
        ops.push(Op::Set(
            keys.retired_run(namespace, closed, &old.run_id),
            encode(&RetiredRun {
                workflow_id: workflow_id.to_string(),
                started_unix_ms: Some(old.started_unix_ms),
            }),
        ));
        ops.push(Op::Set(
            keys.past_run(namespace, workflow_id, old.started_unix_ms, &old.run_id),
            encode(old),
        ));
    }
    ops
}

/// A retired run's entry (`Keys::retired_run`): where its past-run record is.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RetiredRun {
    pub workflow_id: String,
    /// `None` in an entry written before past runs were listed (it has no past-run record).
    pub started_unix_ms: Option<u64>,
}

impl RetiredRun {
    /// The entry's value, also as written before past runs were listed (the id alone).
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        decode::<Self>("retired run", bytes).or_else(|_| {
            Ok(Self {
                workflow_id: decode("retired run", bytes)?,
                started_unix_ms: None,
            })
        })
    }
}

/// Writes `record` as workflow `workflow_id`'s record, with its index entries and counts, in
/// the commit transaction: the record it replaces is read there (as of the batch).
pub fn put_workflow(
    keys: &Keys,
    namespace: &str,
    workflow_id: &str,
    record: WorkflowRecord,
    replacing: Replacing,
) -> Op {
    let planned = match &replacing {
        Replacing::Unknown => None,
        Replacing::Nothing => Some(replacement_ops(keys, namespace, workflow_id, None, &record)),
        Replacing::Record(old) => Some(replacement_ops(
            keys,
            namespace,
            workflow_id,
            Some(old),
            &record,
        )),
    };
    Op::Derived(Derive::new(PutWorkflow {
        keys: keys.clone(),
        namespace: namespace.to_string(),
        workflow_id: workflow_id.to_string(),
        record,
        replacing,
        planned,
    }))
}

/// A workflow record's write with its index entries and counts, decided in the commit from
/// the record it replaces there: the index writes planned for the expected record
/// (`planned`, from `replacing`) if the one read is indexed alike, otherwise planned anew.
#[derive(Debug)]
pub struct PutWorkflow {
    pub keys: Keys,
    pub namespace: String,
    pub workflow_id: String,
    pub record: WorkflowRecord,
    pub replacing: Replacing,
    pub planned: Option<Vec<Op>>,
}

impl Derivation for PutWorkflow {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let (keys, namespace, workflow_id) = (&self.keys, &self.namespace, &self.workflow_id);
            let key = keys.workflow(namespace, workflow_id);
            let old: Option<WorkflowRecord> = match tx.read(&key).await? {
                Some(old) => Some(decode("workflow", &old)?),
                None => None,
            };
            let as_planned = match (&self.replacing, &old) {
                (Replacing::Nothing, None) => true,
                (Replacing::Record(expected), Some(old)) => indexed_alike(expected, old),
                _ => false,
            };
            let mut ops = match &self.planned {
                Some(planned) if as_planned => planned.clone(),
                _ => replacement_ops(keys, namespace, workflow_id, old.as_ref(), &self.record),
            };
            ops.push(Op::Set(key, encode(&self.record)));
            ops.push(Op::Add(changes_counter(keys, namespace), 1));
            Ok(ops)
        })
    }

    fn reads(&self) -> Vec<Vec<u8>> {
        vec![self.keys.workflow(&self.namespace, &self.workflow_id)]
    }
}

/// The writes that delete run `run_id` (of a workflow id living in `shard`): its record and
/// chunks, history, mailbox, request guards and heartbeat details.
pub fn run_deletion_ops(keys: &Keys, shard: u32, run_id: &RunId) -> Vec<Op> {
    let mut ops = crate::records::clear_record_ops(keys, &keys.run(run_id));
    for (begin, end) in [
        keys.history(run_id),
        keys.inbox_of_run(shard, run_id),
        keys.request_guards(run_id),
        keys.heartbeats(run_id),
    ] {
        ops.push(Op::ClearRange(begin, end));
    }
    ops
}

/// Deletes workflow `workflow_id` (living in `shard`) with its index entries and its run, if
/// its record is still the closed one that closed at `closed_unix_ms`; clears the close-time
/// entry either way ([`DeleteClosedWorkflow`]).
pub fn delete_closed_workflow(
    keys: &Keys,
    namespace: &str,
    workflow_id: String,
    closed_unix_ms: u64,
    shard: u32,
) -> Op {
    Op::Derived(Derive::new(DeleteClosedWorkflow {
        keys: keys.clone(),
        namespace: namespace.to_string(),
        workflow_id,
        closed_unix_ms,
        shard,
    }))
}

/// See [`delete_closed_workflow`].
#[derive(Debug)]
pub struct DeleteClosedWorkflow {
    pub keys: Keys,
    pub namespace: String,
    pub workflow_id: String,
    pub closed_unix_ms: u64,
    pub shard: u32,
}

impl Derivation for DeleteClosedWorkflow {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let (keys, namespace, workflow_id) = (&self.keys, &self.namespace, &self.workflow_id);
            let key = keys.workflow(namespace, workflow_id);
            let entry = keys.closed_entry(namespace, self.closed_unix_ms, workflow_id);
            let Some(bytes) = tx.read(&key).await? else {
                return Ok(vec![Op::Clear(entry)]);
            };
            let record: WorkflowRecord = decode("workflow", &bytes)?;
            if record.closed_unix_ms != Some(self.closed_unix_ms) {
                return Ok(vec![Op::Clear(entry)]);
            }
            let mut ops = index_ops(keys, namespace, workflow_id, Some(&record), None);
            ops.push(Op::Clear(key));
            ops.push(Op::Clear(entry));
            ops.extend(run_deletion_ops(keys, self.shard, &record.run_id));
            Ok(ops)
        })
    }
}

/// Where a run sits among its workflow id's runs (a `WorkflowId = 'id'` list's position).
fn run_position(w: &WorkflowSummary) -> (u64, String) {
    (w.started_unix_ms, w.run_id.to_string())
}

/// One page of a list being filled as its walk visits workflows.
struct Page<'f> {
    filter: &'f Filter,
    size: usize,
    workflows: Vec<WorkflowSummary>,
    /// A match was left out: the page is full and more follow.
    more: bool,
}

impl<'f> Page<'f> {
    fn new(filter: &'f Filter, size: usize) -> Self {
        Self {
            filter,
            size,
            workflows: Vec::new(),
            more: false,
        }
    }

    /// Takes `w` if it matches; false (stop walking) once a match finds the page full.
    fn take(&mut self, w: WorkflowSummary) -> bool {
        if !self.filter.matches(&w) {
            return true;
        }
        if self.workflows.len() == self.size {
            self.more = true;
            return false;
        }
        self.workflows.push(w);
        true
    }
}

/// How a query reaches its candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `WorkflowId = 'x'`: its current run, then its past runs.
    Point(String),
    /// The entries of one index, newest first.
    Scan(Index),
}

/// The top-level conjuncts of a condition (`a AND (b AND c)` is `[a, b, c]`).
fn conjuncts(condition: &Condition) -> Vec<&Condition> {
    let mut out = Vec::new();
    let mut stack = vec![condition];
    while let Some(c) = stack.pop() {
        match c {
            Condition::And(a, b) => {
                stack.push(b);
                stack.push(a);
            }
            Condition::True => {}
            other => out.push(other),
        }
    }
    out
}

fn equality<'a>(condition: &'a Condition, field: &str) -> Option<&'a str> {
    match condition {
        Condition::Compare(f, CompareOp::Eq, SearchValue::Keyword(v)) if f == field => Some(v),
        _ => None,
    }
}

/// How to read `filter`'s candidates: a point read for a workflow id, otherwise the narrowest
/// index its conjuncts name (a custom Keyword attribute, then type and status, type, status),
/// otherwise every workflow. `custom` gives a custom attribute's type.
pub fn access(filter: &Filter, custom: &dyn Fn(&str) -> Option<SearchType>) -> Access {
    let parts = conjuncts(&filter.condition);
    let first = |field: &str| parts.iter().find_map(|c| equality(c, field));
    if let Some(id) = first("WorkflowId") {
        return Access::Point(id.to_string());
    }
    for part in &parts {
        if let Condition::Compare(name, CompareOp::Eq, SearchValue::Keyword(value)) = part
            && custom(name) == Some(SearchType::Keyword)
        {
            return Access::Scan(Index::Keyword(name.clone(), value.clone()));
        }
    }
    let ty = first("WorkflowType");
    let status = first("ExecutionStatus");
    Access::Scan(match (ty, status) {
        (Some(t), Some(s)) => Index::TypeStatus(t.into(), s.into()),
        (Some(t), None) => Index::Type(t.into()),
        (None, Some(s)) => Index::Status(s.into()),
        (None, None) => Index::All,
    })
}

/// The maintained counter that answers `filter` exactly, if its condition is nothing but (at
/// most one each) `WorkflowType = t` and `ExecutionStatus = s`.
pub fn counted(filter: &Filter) -> Option<Index> {
    let parts = conjuncts(&filter.condition);
    let (mut ty, mut status) = (None, None);
    for part in parts {
        if let Some(t) = equality(part, "WorkflowType")
            && ty.is_none()
        {
            ty = Some(t.to_string());
        } else if let Some(s) = equality(part, "ExecutionStatus")
            && status.is_none()
        {
            status = Some(s.to_string());
        } else {
            return None;
        }
    }
    Some(match (ty, status) {
        (Some(t), Some(s)) => Index::TypeStatus(t, s),
        (Some(t), None) => Index::Type(t),
        (None, Some(s)) => Index::Status(s),
        (None, None) => Index::All,
    })
}

/// Whether the filter lists in index order (newest first, then by workflow id).
fn default_order(filter: &Filter) -> bool {
    match filter.order.as_slice() {
        [] => true,
        [only] => only.field == "StartTime" && only.descending,
        _ => false,
    }
}

/// Most workflow types a namespace's lists and counts by status alone merge over.
pub const TYPES_MAX: usize = 1_000;
/// Fewest entries a merged part reads at a time.
const PART_CHUNK_MIN: usize = 16;

/// One stored index being merged: its entries in order, read a chunk at a time.
struct Part {
    sub: Subspace,
    prefix_len: usize,
    begin: Vec<u8>,
    end: Vec<u8>,
    buffered: std::collections::VecDeque<Vec<u8>>,
    done: bool,
}

impl Part {
    fn new(sub: Subspace, after: Option<&(u64, String)>) -> Self {
        let (mut begin, end) = sub.range();
        if let Some((start, id)) = after {
            begin = key_after(&entry_key(&sub, *start, id));
        }
        let prefix_len = sub.bytes().len();
        Self {
            sub,
            prefix_len,
            begin,
            end,
            buffered: std::collections::VecDeque::new(),
            done: false,
        }
    }

    fn needs_refill(&self) -> bool {
        self.buffered.is_empty() && !self.done
    }

    /// The entry's position within every part: (negated start, workflow id), tuple-encoded,
    /// so comparing bytes orders entries of different parts.
    fn head(&self) -> Option<&[u8]> {
        self.buffered.front().map(|k| &k[self.prefix_len..])
    }

    async fn refill<T: Transaction>(&mut self, tx: &mut T, limit: usize) -> StoreResult<()> {
        let rows = tx
            .get_range(
                &RangeRequest::new(self.begin.clone(), self.end.clone())
                    .limit(limit)
                    .snapshot(),
            )
            .await?;
        self.done = rows.len() < limit;
        if let Some(last) = rows.last() {
            self.begin = key_after(&last.key);
        }
        self.buffered.extend(rows.into_iter().map(|row| row.key));
        Ok(())
    }
}

/// Where a list resumes: after this sort key (see `Filter::sort_key`).
pub type After = Vec<Option<SearchValue>>;

/// Reads visibility for one namespace of one store.
#[allow(missing_debug_implementations)] // holds the store and the node's registrations
pub struct Visibility<'a, S: Store> {
    pub store: &'a S,
    pub keys: &'a Keys,
    pub namespace: &'a str,
    pub registry: &'a dyn Registered,
}

impl<S: Store> Visibility<'_, S> {
    fn access(&self, filter: &Filter) -> Access {
        access(filter, &|name| self.registry.search_attribute_type(name))
    }

    async fn record(
        &self,
        tx: &mut S::Tx,
        workflow_id: &str,
    ) -> Result<Option<WorkflowSummary>, StoreError> {
        let key = self.keys.workflow(self.namespace, workflow_id);
        Ok(match tx.get_snapshot(&key).await? {
            Some(bytes) => Some(WorkflowSummary::from_record(
                workflow_id.to_string(),
                decode("workflow", &bytes)?,
            )),
            None => None,
        })
    }

    /// Walks workflow `id`'s runs newest first, from after `after` (start time, run id): its
    /// current run, then its past runs a chunk per transaction. Gives each to `visit` until it
    /// returns false or `budget` runs have been examined; returns the position of the last run
    /// examined and whether runs remain.
    async fn runs(
        &self,
        id: &str,
        after: Option<(u64, String)>,
        mut budget: usize,
        visit: &mut (dyn FnMut(WorkflowSummary) -> bool + Send),
    ) -> Result<(Option<(u64, String)>, bool), ClientError> {
        let after_run = match &after {
            Some((start, run)) => Some((
                *start,
                run.parse::<RunId>()
                    .map_err(|_| ClientError::InvalidPageToken {
                        reason: format!("{run:?} is not a run id"),
                    })?,
            )),
            None => None,
        };
        let mut last = after.clone();
        // The current run and the first chunk of past runs are read in one transaction, so a
        // replacement committing meanwhile cannot list a run twice or miss one there.
        let mut tx = self.store.begin()?;
        if let Some(current) = self.record(&mut tx, id).await?
            && after.as_ref().is_none_or(|(start, run)| {
                (negated(current.started_unix_ms), current.run_id.to_string())
                    > (negated(*start), run.clone())
            })
        {
            last = Some(run_position(&current));
            budget = budget.saturating_sub(1);
            if !visit(current) {
                return Ok((last, true));
            }
        }
        let past = self.keys.past_runs(self.namespace, id);
        let (mut begin, end) = past.range();
        if let Some((start, run)) = after_run {
            begin = key_after(&past.pack(&(negated(start), run.as_uuid())));
        }
        let mut first_chunk = true;
        while budget > 0 {
            let limit = budget.min(SCAN_CHUNK_ENTRIES);
            if !std::mem::take(&mut first_chunk) {
                tx = self.store.begin()?;
            }
            let rows = tx
                .get_range(
                    &RangeRequest::new(begin.clone(), end.clone())
                        .limit(limit)
                        .snapshot(),
                )
                .await?;
            for row in &rows {
                let summary =
                    WorkflowSummary::from_record(id.to_string(), decode("past run", &row.value)?);
                last = Some(run_position(&summary));
                budget -= 1;
                if !visit(summary) {
                    return Ok((last, true));
                }
            }
            match rows.last() {
                Some(row) if rows.len() == limit => begin = key_after(&row.key),
                _ => return Ok((last, false)),
            }
            yield_now().await;
        }
        Ok((last, true))
    }

    /// The workflow types seen in the namespace (at most [`TYPES_MAX`]).
    async fn types(&self) -> Result<Vec<String>, ClientError> {
        let (begin, end) = self
            .keys
            .visibility(self.namespace)
            .subspace(&("types",))
            .range();
        let mut tx = self.store.begin()?;
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).limit(TYPES_MAX).snapshot())
            .await?;
        let vis = self.keys.visibility(self.namespace);
        Ok(rows
            .iter()
            .filter_map(|row| vis.unpack::<(String, String)>(&row.key).ok())
            .map(|(_, t)| t)
            .collect())
    }

    /// Walks `index` (merging its stored parts, newest first) from after `after` (start time,
    /// workflow id), reading each part a chunk at a time, and gives each record that still
    /// belongs there to `visit` until it returns false or `budget` entries have been examined.
    /// Returns the position of the last entry examined and whether entries remain.
    async fn walk(
        &self,
        index: &Index,
        after: Option<(u64, String)>,
        mut budget: usize,
        first_chunk: usize,
        visit: &mut (dyn FnMut(WorkflowSummary) -> bool + Send),
    ) -> Result<(Option<(u64, String)>, bool), ClientError> {
        let types = match index {
            Index::All | Index::Status(_) => self.types().await?,
            _ => Vec::new(),
        };
        let mut parts: Vec<Part> = index
            .parts(&types)
            .iter()
            .map(|part| Part::new(part.entries(self.keys, self.namespace), after.as_ref()))
            .collect();
        let many = parts.len() > 1;
        let mut chunk = if many {
            (first_chunk / parts.len() + 1).clamp(PART_CHUNK_MIN, SCAN_CHUNK_ENTRIES)
        } else {
            first_chunk.clamp(1, SCAN_CHUNK_ENTRIES)
        };
        let mut last = after;
        let mut tx = self.store.begin()?;
        let mut examined_in_tx = 0;
        loop {
            // Refill the parts that ran dry, in one fresh transaction.
            if parts.iter().any(Part::needs_refill) || examined_in_tx >= SCAN_CHUNK_ENTRIES {
                tx = self.store.begin()?;
                examined_in_tx = 0;
                for part in parts.iter_mut().filter(|p| p.needs_refill()) {
                    part.refill(&mut tx, chunk.min(budget.max(1))).await?;
                }
                chunk = if many {
                    (chunk * 2).min(SCAN_CHUNK_ENTRIES / 4)
                } else {
                    SCAN_CHUNK_ENTRIES
                };
                yield_now().await;
            }
            let Some(next) = parts
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.head().map(|h| (h, i)))
                .min()
                .map(|(_, i)| i)
            else {
                return Ok((last, false));
            };
            let part = &mut parts[next];
            let key = part.buffered.pop_front().expect("a head");
            budget -= 1;
            examined_in_tx += 1;
            if let Ok((negated_start, id)) = part.sub.unpack::<(i64, String)>(&key) {
                let start = u64::try_from(negated_start.saturating_neg()).unwrap_or(0);
                last = Some((start, id.clone()));
                // The entry and the record are written in one commit, so they agree; the
                // check guards against a record read from a later snapshot than the entry.
                if let Some(summary) = self.record(&mut tx, &id).await?
                    && summary.started_unix_ms == start
                    && !visit(summary)
                {
                    return Ok((last, true));
                }
            }
            if budget == 0 {
                let remaining = parts.iter().any(|p| p.head().is_some() || !p.done);
                return Ok((last, remaining));
            }
        }
    }

    /// One page of the workflows matching `filter`, after `after`.
    pub async fn list(
        &self,
        filter: &Filter,
        page_size: usize,
        after: Option<After>,
    ) -> Result<WorkflowPage, ClientError> {
        let page_size = page_size.clamp(1, LIST_PAGE_SIZE_MAX);
        if !default_order(filter) {
            return self.list_sorted(filter, page_size, after).await;
        }
        let after = after.map(|key| index_position(&key)).transpose()?;
        match self.access(filter) {
            Access::Point(id) => {
                // A workflow id's runs, positioned by (start time, run id).
                let mut page = Page::new(filter, page_size);
                let (last, remaining) = self
                    .runs(&id, after, LIST_SCAN_ENTRIES_MAX, &mut |w| page.take(w))
                    .await?;
                let position = if page.more {
                    page.workflows.last().map(run_position)
                } else if remaining {
                    last
                } else {
                    None
                };
                Ok(WorkflowPage {
                    workflows: page.workflows,
                    next_page_token: position.map(|(start, run)| {
                        page_token(&[
                            Some(SearchValue::Datetime(start)),
                            Some(SearchValue::Keyword(run)),
                        ])
                    }),
                })
            }
            Access::Scan(index) => {
                let mut page = Page::new(filter, page_size);
                let (last, remaining) = self
                    .walk(
                        &index,
                        after,
                        LIST_SCAN_ENTRIES_MAX,
                        page_size + 1,
                        &mut |w| page.take(w),
                    )
                    .await?;
                let (workflows, more) = (page.workflows, page.more);
                let next_page_token = if more {
                    workflows.last().map(|w| page_token(&filter.sort_key(w)))
                } else if remaining {
                    last.map(|(start, id)| {
                        page_token(&[
                            Some(SearchValue::Datetime(start)),
                            Some(SearchValue::Keyword(id)),
                        ])
                    })
                } else {
                    None
                };
                Ok(WorkflowPage {
                    workflows,
                    next_page_token,
                })
            }
        }
    }

    /// A list in another order than the indexes': every match is read (at most
    /// [`SORTED_QUERY_WORKFLOWS_MAX`]), sorted, and paged by sort key.
    async fn list_sorted(
        &self,
        filter: &Filter,
        page_size: usize,
        after: Option<After>,
    ) -> Result<WorkflowPage, ClientError> {
        let mut matching = self.matching_all(filter).await?;
        if let Some(after) = &after {
            matching.retain(|w| filter.compare_keys(&filter.sort_key(w), after).is_gt());
        }
        matching.sort_by(|a, b| filter.compare(a, b));
        let more = matching.len() > page_size;
        matching.truncate(page_size);
        let next_page_token = match matching.last() {
            Some(last) if more => Some(page_token(&filter.sort_key(last))),
            _ => None,
        };
        Ok(WorkflowPage {
            workflows: matching,
            next_page_token,
        })
    }

    /// Gives every candidate of `filter` to `visit` (the runs of a `WorkflowId = 'id'`, or
    /// the entries of its index), a chunk per transaction.
    async fn visit_all(
        &self,
        filter: &Filter,
        visit: &mut (dyn FnMut(WorkflowSummary) -> bool + Send),
    ) -> Result<(), ClientError> {
        match self.access(filter) {
            Access::Point(id) => self.runs(&id, None, usize::MAX, visit).await?,
            Access::Scan(index) => {
                self.walk(&index, None, usize::MAX, SCAN_CHUNK_ENTRIES, visit)
                    .await?
            }
        };
        Ok(())
    }

    async fn matching_all(&self, filter: &Filter) -> Result<Vec<WorkflowSummary>, ClientError> {
        let mut matching = Vec::new();
        let mut too_many = false;
        let mut visit = |w: WorkflowSummary| {
            if filter.matches(&w) {
                if matching.len() == SORTED_QUERY_WORKFLOWS_MAX {
                    too_many = true;
                    return false;
                }
                matching.push(w);
            }
            true
        };
        self.visit_all(filter, &mut visit).await?;
        if too_many {
            return Err(ClientError::QueryTooBroad {
                limit: SORTED_QUERY_WORKFLOWS_MAX,
            });
        }
        Ok(matching)
    }

    /// How many workflows match `filter`.
    pub async fn count(&self, filter: &Filter) -> Result<u64, ClientError> {
        if let Some(index) = counted(filter) {
            let types = self.types().await?;
            let mut tx = self.store.begin()?;
            let mut total = 0i64;
            for part in index.parts(&types) {
                if let Some(key) = part.counter(self.keys, self.namespace) {
                    total += counter_value(tx.get_snapshot(&key).await?.as_deref());
                }
            }
            return Ok(u64::try_from(total).unwrap_or(0));
        }
        let mut count = 0u64;
        let mut visit = |w: WorkflowSummary| {
            count += u64::from(filter.matches(&w));
            true
        };
        self.visit_all(filter, &mut visit).await?;
        Ok(count)
    }

    /// How many workflow records were written in the namespace so far (one read): it moves
    /// with every start, close and upsert, where the counts may not.
    pub async fn changes(&self) -> Result<u64, ClientError> {
        let mut tx = self.store.begin()?;
        let key = changes_counter(self.keys, self.namespace);
        let n = counter_value(tx.get_snapshot(&key).await?.as_deref());
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The counter of workflow-record writes in `namespace` (see the module's key layout).
fn changes_counter(keys: &Keys, namespace: &str) -> Vec<u8> {
    keys.visibility_counts(namespace).pack(&("changes",))
}

/// An atomic-add counter's value (little-endian, as FoundationDB's ADD writes it).
fn counter_value(bytes: Option<&[u8]>) -> i64 {
    let mut le = [0u8; 8];
    if let Some(bytes) = bytes {
        let n = bytes.len().min(8);
        le[..n].copy_from_slice(&bytes[..n]);
    }
    i64::from_le_bytes(le)
}

/// The index position a default-order sort key names: (start time, workflow id).
fn index_position(key: &After) -> Result<(u64, String), ClientError> {
    match key.as_slice() {
        [
            Some(SearchValue::Datetime(start)),
            Some(SearchValue::Keyword(id)),
        ] => Ok((*start, id.clone())),
        _ => Err(ClientError::InvalidPageToken {
            reason: "it was issued for another query".into(),
        }),
    }
}

/// Longest page token accepted, in bytes.
pub const PAGE_TOKEN_BYTES_MAX: usize = 8_192;

/// A sort key as a page token (hexadecimal MessagePack).
pub fn page_token(key: &[Option<SearchValue>]) -> String {
    encode(&key.to_vec())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sort key in a token made by [`page_token`].
pub fn decode_page_token(token: &str) -> Result<After, ClientError> {
    let bad = |reason: &str| ClientError::InvalidPageToken {
        reason: reason.to_string(),
    };
    let digits = token.as_bytes();
    if digits.len() > PAGE_TOKEN_BYTES_MAX {
        return Err(bad("too long"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(bad("odd length"));
    }
    let nibble = |d: u8| (d as char).to_digit(16);
    let bytes: Vec<u8> = digits
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("not hexadecimal"))?;
    rmp_serde::from_slice(&bytes).map_err(|_| bad("does not decode"))
}

/// A new run's writes live here, above `records`: its workflow record goes through
/// [`put_workflow`].
impl crate::records::NewRun {
    /// The writes that start the run: its workflow record (making it the workflow id's current
    /// run), its run record, and its start mail to `shard` (the workflow id's shard).
    /// `replacing` is what the caller expects the workflow record to be now (see
    /// `visibility::Replacing`).
    pub fn writes(
        &self,
        keys: &crate::keys::Keys,
        shard: u32,
        replacing: Replacing,
    ) -> Vec<crate::ops::Op> {
        use crate::ops::Op;
        let record = &self.record;
        let mut ops = vec![put_workflow(
            keys,
            &record.namespace,
            record.workflow_id.as_str(),
            self.summary.clone(),
            replacing,
        )];
        ops.extend(crate::records::record_ops(
            keys,
            &keys.run(&self.run_id),
            encode(record),
            0,
        ));
        ops.push(Op::Mail {
            shard,
            run_id: self.run_id,
            item: encode(&crate::records::InboxItem::Start),
        });
        ops
    }
}

/// Lets other tasks run between the pages of a long scan, on any executor: returns `Pending`
/// once, waking itself first.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::visibility::Filter;

    fn record(ty: &str, status: Option<RunStatus>, start: u64) -> WorkflowRecord {
        WorkflowRecord {
            run_id: RunId::from_parts(start, [7; 10]),
            workflow_type: ty.into(),
            status,
            started_unix_ms: start,
            closed_unix_ms: None,
            parent_workflow_id: None,
            parent_run_id: None,
            search_attributes: SearchAttributes::new(),
            history_length: 0,
            execution_started_unix_ms: start,
            memo: Default::default(),
        }
    }

    fn adds(ops: &[Op]) -> Vec<i64> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Add(_, d) => Some(*d),
                _ => None,
            })
            .collect()
    }

    /// A new record sets its (type, status) entry and its type's registry key and adds one to
    /// its counter; a step that changes nothing indexed writes nothing; a close moves the entry
    /// and the counter; a deletion clears and subtracts.
    #[test]
    fn index_writes_follow_the_change() {
        let keys = Keys::default();
        let sets = |ops: &[Op]| ops.iter().filter(|o| matches!(o, Op::Set(..))).count();
        let clears = |ops: &[Op]| ops.iter().filter(|o| matches!(o, Op::Clear(..))).count();
        let started = record("Order", None, 1_000);
        let ops = index_ops(&keys, "default", "o-1", None, Some(&started));
        assert_eq!((sets(&ops), clears(&ops)), (2, 0));
        assert_eq!(adds(&ops), vec![1]);

        let running = record("Order", Some(RunStatus::Running), 1_000);
        assert!(index_ops(&keys, "default", "o-1", Some(&started), Some(&running)).is_empty());

        let mut closed = record("Order", Some(RunStatus::Completed), 1_000);
        closed.closed_unix_ms = Some(2_000);
        let ops = index_ops(&keys, "default", "o-1", Some(&running), Some(&closed));
        // The entry moves, and the close-time entry (for retention) appears.
        assert_eq!((sets(&ops), clears(&ops)), (2, 1));
        let mut moved = adds(&ops);
        moved.sort_unstable();
        assert_eq!(moved, vec![-1, 1]);

        let gone = index_ops(&keys, "default", "o-1", Some(&closed), None);
        assert_eq!((sets(&gone), clears(&gone)), (0, 2));
        assert_eq!(adds(&gone), vec![-1]);
    }

    fn parse(query: &str) -> Filter {
        Filter::parse(query, &|name| {
            (name == "CustomerId").then_some(SearchType::Keyword)
        })
        .unwrap()
    }

    /// Queries go to the narrowest index their conjuncts name, and only the exact shapes are
    /// answered from counters.
    #[test]
    fn queries_choose_indexes() {
        let custom = |name: &str| (name == "CustomerId").then_some(SearchType::Keyword);
        let cases = [
            ("", Access::Scan(Index::All)),
            (
                "ExecutionStatus = 'Running'",
                Access::Scan(Index::Status("Running".into())),
            ),
            (
                "StartTime > '2026-01-01T00:00:00Z' AND WorkflowType = 'Order'",
                Access::Scan(Index::Type("Order".into())),
            ),
            (
                "ExecutionStatus = 'Failed' AND (WorkflowType = 'Order' AND HistoryLength > 3)",
                Access::Scan(Index::TypeStatus("Order".into(), "Failed".into())),
            ),
            (
                "WorkflowType = 'Order' AND CustomerId = 'c-1'",
                Access::Scan(Index::Keyword("CustomerId".into(), "c-1".into())),
            ),
            (
                "WorkflowType = 'Order' OR ExecutionStatus = 'Failed'",
                Access::Scan(Index::All),
            ),
            ("WorkflowId = 'o-1'", Access::Point("o-1".into())),
        ];
        for (query, expected) in cases {
            assert_eq!(access(&parse(query), &custom), expected, "{query}");
        }
        assert_eq!(counted(&parse("")), Some(Index::All));
        assert_eq!(
            counted(&parse(
                "ExecutionStatus = 'Running' AND WorkflowType = 'Order'"
            )),
            Some(Index::TypeStatus("Order".into(), "Running".into()))
        );
        assert_eq!(
            counted(&parse("WorkflowType = 'Order' AND HistoryLength > 3")),
            None
        );
        assert_eq!(
            counted(&parse("WorkflowType = 'A' AND WorkflowType = 'B'")),
            None
        );
        assert_eq!(counted(&parse("NOT ExecutionStatus = 'Running'")), None);
    }

    /// Tokens round-trip; hostile tokens (odd, non-hex, multi-byte characters, oversized) are
    /// refused with an error, never a panic.
    #[test]
    fn page_tokens_refuse_garbage() {
        let key = vec![
            Some(SearchValue::Datetime(5)),
            Some(SearchValue::Keyword("x".into())),
        ];
        assert_eq!(decode_page_token(&page_token(&key)).unwrap(), key);
        for bad in ["0", "zz", "a\u{1F600}b", "\u{1F600}\u{1F600}", "ff"] {
            assert!(decode_page_token(bad).is_err(), "{bad:?}");
        }
        assert!(decode_page_token(&"0".repeat(PAGE_TOKEN_BYTES_MAX + 2)).is_err());
    }
}
