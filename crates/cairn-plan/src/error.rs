//! What a client of the node is told when a call fails (`ClientError`, with the query,
//! update and cluster errors it carries), and the id-reuse policy those errors name. Imports
//! no module of the crate.

use cairn_core::RunStatus;
use cairn_core::visibility::FilterError;
use cairn_store::StoreError;
use cairn_types::limits::{UPDATES_IN_FLIGHT_MAX, UPDATES_TOTAL_MAX};
use cairn_types::{PolicyError, RunId};

/// What to do when a workflow id is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdReusePolicy {
    /// A new run may start once the previous one closed, however it closed. The default.
    #[default]
    AllowDuplicate,
    /// A new run may start only if the previous one failed, was canceled, terminated or timed out.
    AllowDuplicateFailedOnly,
    /// The id can never be used again.
    RejectDuplicate,
}

/// Errors a client of the node can act on. Each leaves stored state untouched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("workflow type {workflow_type:?} is not registered (registered: {registered:?})")]
    UnknownWorkflowType {
        workflow_type: String,
        registered: Vec<String>,
    },
    #[error("input does not decode as the input type of workflow {workflow_type:?}: {reason}")]
    InputDoesNotDecode {
        workflow_type: String,
        reason: String,
    },
    #[error("workflow {workflow_id} is already running as run {run_id}")]
    AlreadyRunning { workflow_id: String, run_id: RunId },
    #[error(
        "workflow id {workflow_id} was used before and its id-reuse policy ({policy:?}) forbids another run"
    )]
    DuplicateRejected {
        workflow_id: String,
        policy: IdReusePolicy,
    },
    #[error("invalid workflow id: {0}")]
    InvalidWorkflowId(#[from] cairn_types::IdError),
    #[error("no workflow with id {workflow_id}")]
    NotFound { workflow_id: String },
    #[error("workflow {workflow_id} is not running (status {status:?})")]
    NotRunning {
        workflow_id: String,
        status: Option<RunStatus>,
    },
    #[error("{what} is {len} bytes; the limit is {max} bytes")]
    PayloadTooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(transparent)]
    InvalidTimeouts(#[from] PolicyError),
    #[error("query failed: {0}")]
    Query(#[from] QueryError),
    #[error("update refused: {0}")]
    Update(#[from] UpdateError),
    #[error("invalid update: {reason}")]
    InvalidUpdate { reason: String },
    #[error("the node is shutting down")]
    NodeStopped,
    /// The node has `CLIENT_COMMITS_IN_FLIGHT_MAX` client writes waiting for the store
    /// already, or its committer queue holds `COMMIT_REQUESTS_QUEUED_MAX` requests
    /// (`NodeConfig::commit_requests_queued_max`); nothing was written. Retry after
    /// `retry_after_ms`.
    #[error(
        "the node is overloaded: {in_flight} client writes are waiting for the store; retry in {retry_after_ms} ms"
    )]
    Overloaded {
        in_flight: usize,
        retry_after_ms: u64,
    },
    #[error("invalid schedule: {reason}")]
    InvalidSchedule { reason: String },
    #[error("invalid cron_schedule: {reason}")]
    InvalidCronSchedule { reason: String },
    #[error("invalid search attributes: {reason}")]
    InvalidSearchAttributes { reason: String },
    #[error("invalid memo: {0}")]
    InvalidMemo(#[from] cairn_types::MemoError),
    #[error("no schedule with id {schedule_id}")]
    ScheduleNotFound { schedule_id: String },
    #[error("a schedule with id {schedule_id} exists already")]
    ScheduleExists { schedule_id: String },
    #[error("no batch operation {batch_id}")]
    BatchNotFound { batch_id: String },
    #[error("{running} batch operations are running (at most {max}); wait for one to finish")]
    TooManyBatches { running: usize, max: usize },
    #[error("invalid batch operation: {reason}")]
    InvalidBatch { reason: String },
    #[error("invalid query: {0}")]
    InvalidQuery(#[from] FilterError),
    #[error("page_size {page_size} is out of range: 1 to {max}")]
    InvalidPageSize { page_size: usize, max: usize },
    #[error(
        "the query matches more than {limit} workflows and orders them by something other than StartTime DESC; narrow it (WorkflowType, ExecutionStatus, a Keyword attribute) or drop the ORDER BY"
    )]
    QueryTooBroad { limit: usize },
    #[error("page token is not one this node issued (or the query changed since): {reason}")]
    InvalidPageToken { reason: String },
    /// No node answered for the run's shard in time (it is moving, or its holder is down or
    /// unreachable). Retrying later may succeed.
    #[error("shard {shard} is unavailable: {reason}")]
    ShardUnavailable { shard: u32, reason: String },
    /// A run's closing transition found mail in its mailbox that it had not read: the close
    /// is redone with it, so a message acknowledged before the close is in the history.
    /// Internal to the runtime; clients never see it.
    #[error("run {run_id} has mail it did not read; its closing transition is redone with it")]
    MailUnread { run_id: RunId },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl cairn_store::RetryClass for ClientError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_retryable())
    }
    fn is_maybe_committed(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_maybe_committed())
    }
}

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Handler(String),
    #[error("run is held and cannot run code: {0}")]
    Held(String),
    #[error("run has not started yet")]
    NotStarted,
    #[error("the run's actor stopped before answering; retry")]
    Unavailable,
}

/// Why a node could not join.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(
        "the store was set up with {stored} shards, this node is configured with {configured}; the shard count cannot change for a store"
    )]
    ShardCountMismatch { stored: u32, configured: u32 },
    #[error(
        "lease_timeout_ms is {value}; it must be at least {min} (heartbeats and placement rounds fit several times into it)"
    )]
    LeaseTimeoutTooShort { value: u64, min: u64 },
    #[error("retention_ms is {value}; it must be at least {min}")]
    RetentionTooShort { value: u64, min: u64 },
    #[error(
        "node id {node_id:?} is not usable: it must be non-empty, without '/' or control characters"
    )]
    BadNodeId { node_id: String },
    #[error(
        "namespace {namespace:?} in this store holds workflows written by a Cairn from before visibility indexes (2026-12), which this version cannot list or count; start it on a new data directory (this one is left untouched)"
    )]
    StoreWithoutIndexes { namespace: String },
    #[error(
        "executor_threads is 0 (every task on the caller's runtime), which needs a current-thread tokio runtime; this one has several threads"
    )]
    SingleThreadedOnManyThreads,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an update was refused before it was admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum UpdateError {
    #[error(
        "{UPDATES_IN_FLIGHT_MAX} updates of this workflow are already in flight (admitted or accepted and not completed); retry once one completes"
    )]
    TooManyInFlight,
    #[error(
        "this run has taken {UPDATES_TOTAL_MAX} distinct updates, the most one run takes; give duplicates the same update id, or continue as new"
    )]
    TooMany,
    #[error("no update {update_id:?} in this run")]
    NotFound { update_id: String },
    #[error("the workflow execution already completed")]
    Closed,
    #[error("run is held and cannot run code: {0}")]
    Held(String),
    #[error("run has not started yet")]
    NotStarted,
    #[error("invalid update: {0}")]
    Invalid(String),
    #[error("the run's actor stopped before answering; retry")]
    Unavailable,
    #[error("reading the update's outcome failed: {0}")]
    Store(String),
}
