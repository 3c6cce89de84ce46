//! Cairn's node: the runtime that hosts workflow executions as persistent actors.
//!
//! Invariants:
//! - Every change to a run is one transition = one commit request through the committer:
//!   history events, snapshot, consumed mailbox/timer/task keys, new tasks and timers. Side
//!   effects (dispatching activity tasks, arming in-memory timers, waking waiters) happen only
//!   after that commit succeeds.
//! - Every commit of a run is fenced by its shard's lease epoch, read inside the transaction;
//!   a node that lost a shard (to a takeover, a handoff, or its own lapsed heartbeat) can no
//!   longer commit for it, whatever it still has in memory.
//! - Workflow code runs on `executor_threads` dedicated threads (ractor thread-local actors; 0: on the caller's current-thread runtime, for the simulator),
//!   because it is single-threaded by design; everything else runs on the tokio runtime.
//! - Knows the store only through the `cairn_store::Store` contract; no HTTP.

// What a transition writes lives one crate down; these names keep its modules' paths.
use cairn_plan::{error, keys, ops, plan, records, schedules, timers, visibility};

pub mod auth;
mod backoff;
mod batches;
mod client_calls;
mod clock;
mod cluster;
mod committer;
mod config;
mod dispatch;
mod list_calls;
mod local;
mod matching;
mod membership;
mod messages;
mod metrics;
mod node;
mod peers;
mod pool;
mod registry;
mod remote_calls;
mod remote_queries;
mod remote_tasks;
mod retention;
mod schedule_calls;
mod shard;
mod shared;
mod update_calls;
mod updates;
mod worker;
mod workflow;

pub use batches::{
    BATCH_CALLS_IN_FLIGHT, BATCH_PAGE_WORKFLOWS, BATCH_REASON_BYTES_MAX, BATCHES_KEPT_MAX,
    BATCHES_RUNNING_MAX, BatchOperation, BatchRecord, BatchState,
};
pub use client_calls::{
    Description, HISTORY_PAGE_EVENTS_MAX, HistoryPage, RunHistory, StartWorkflow,
};
pub use clock::{Clock, Entropy};
pub use cluster::{
    ACTIVITY_ATTEMPT_LOST, ClusterStatus, DUE_SHARDS_PER_TRANSACTION, LEASE_TIMEOUT_MS_MIN,
    NodeStatus, PLACEMENT_INTERVAL_MS_MAX, REHYDRATE_PAGE_ROWS, ShardStatus, rendezvous,
};
pub use committer::{
    BATCH_BYTES_MAX, BATCH_REQUESTS_MAX, COMMIT_REQUESTS_QUEUED_MAX, VERIFY_READ_ATTEMPTS_MAX,
};
pub use config::{CrashHook, CrashPoint, NodeConfig, RESULT_POLL_MS, RESULT_WATCHES_MAX};
pub use dispatch::{ACTIVITY_ATTEMPTS_DISPATCHED_MAX, DEFERRED_PAGE_MAX};
pub use error::{ClientError, ClusterError, IdReusePolicy, QueryError, UpdateError};
pub use keys::Keys;
pub use matching::{
    ACTIVITY_POLL_WAIT_MAX_MS, ACTIVITY_POLLS_WAITING_MAX, MatchingError, NodeTaskQueues,
    POLLER_FORGET_MS, POLLERS_TRACKED_MAX, PollKind, Poller, RemoteActivityTask, RemoteOutcome,
    TaskQueueStatus, WorkflowTask, WorkflowTaskRef,
};
pub use metrics::Metrics;
pub use node::{INLINE_PAYLOAD_BYTES_MAX, Node};
pub use peers::{
    InProcessPeers, PeerError, PeerFuture, PeerQuery, PeerTaskAnswer, PeerTaskCall, Peers,
    PeersHandle, QueryTarget,
};
pub use records::{
    Lease, NodeRecord, Outcome, RemoteStart, WORKFLOW_TASK_TIMEOUT_DEFAULT_MS,
    WORKFLOW_TASK_TIMEOUT_MAX_MS,
};
pub use registry::{
    ActivityContext, ActivityDef, ActivityFuture, ActivityInfo, Registry, WorkflowDef,
};
pub use remote_queries::{REMOTE_QUERIES_WAITING_MAX, REMOTE_QUERY_WAIT_MS, RemoteQuery};
pub use remote_tasks::PEER_POLL_SLICE_MS;
pub use retention::{RETENTION_BATCH_MAX, RETENTION_MS_MIN};
pub use schedule_calls::SCHEDULES_PAGE_MAX;
pub use schedules::{
    ActionKind, CreateSchedule, RecentAction, SCHEDULE_ID_BYTES_MAX, SCHEDULE_NOTE_BYTES_MAX,
    ScheduleAction, ScheduleDescription, ScheduleRecord, scheduled_workflow_id,
};
pub use shared::{
    CLIENT_COMMITS_IN_FLIGHT_MAX, HISTORY_PAGE_EVENTS, OVERLOADED_RETRY_AFTER_MS, shard_of,
};
pub use update_calls::{UPDATE_WAIT_MS_MAX, UpdateAnswer, UpdateWorkflow};
pub use updates::{
    ACCEPTED_UPDATE_COMPLETED_WORKFLOW, PeerUpdate, UNPROCESSED_UPDATE, UpdateCall, UpdateRequest,
    UpdateStage, UpdateState,
};
pub use visibility::{
    LIST_PAGE_SIZE_DEFAULT, LIST_PAGE_SIZE_MAX, LIST_SCAN_ENTRIES_MAX, PAGE_TOKEN_BYTES_MAX,
    SORTED_QUERY_WORKFLOWS_MAX, WorkflowPage, WorkflowSummary, status_name,
};
pub use workflow::{MAILBOX_BATCH_MAX, MAILBOX_PAGE_ROWS};
