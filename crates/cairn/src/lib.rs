//! Cairn's SDK: durable workflows as plain async Rust.
//!
//! A workflow is an `async fn(Ctx, Input) -> Result<Output, WorkflowError>`; an activity is an
//! `async fn(ActivityContext, Input) -> Result<Output, Failure>`. Both are referred to by the
//! function itself — `ctx.activity(charge_card, request)`, `client.start(order_workflow, ...)` —
//! so a misspelled name is a compile error and inputs and outputs are type-checked. Signals and
//! queries are typed constants (`Signal<T>`, `Query<A, R>`) shared by workflow and client.
//!
//! ```no_run
//! use cairn::{ActivityContext, Ctx, Failure, Node, WorkflowError};
//! use std::time::Duration;
//!
//! async fn greet(_ctx: ActivityContext, name: String) -> Result<String, Failure> {
//!     Ok(format!("hello {name}"))
//! }
//!
//! async fn hello_workflow(ctx: Ctx, name: String) -> Result<String, WorkflowError> {
//!     let greeting = ctx.activity(greet, name).start_to_close(Duration::from_secs(10)).await?;
//!     ctx.sleep(Duration::from_millis(10)).await;
//!     Ok(greeting)
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder()
//!     .workflow(hello_workflow)
//!     .activity(greet)
//!     .start(cairn::MemStore::new())
//!     .await?;
//! let client = node.client();
//! let handle = client.start(hello_workflow, "hello-1", "Ada".to_string()).send().await?;
//! assert_eq!(handle.result().await?, "hello Ada");
//! # Ok(()) }
//! ```

mod child;
mod client;
mod node;
mod remote;
mod saga;
mod schedule;
mod search;
mod workflow;

pub use cairn_core::UPDATE_HANDLER_NOT_FOUND;
pub use cairn_core::WORKFLOW_METADATA_QUERY;
pub use cairn_core::schedule::{OverlapPolicy, ScheduleSpec};
pub use cairn_core::visibility::{FilterError, format_time, parse_time};
pub use cairn_core::{ActivityError, ChildError, RunStatus, WorkflowError};
pub use cairn_runtime::{ACCEPTED_UPDATE_COMPLETED_WORKFLOW, UNPROCESSED_UPDATE};
pub use cairn_runtime::{
    ACTIVITY_ATTEMPT_LOST, ACTIVITY_ATTEMPTS_DISPATCHED_MAX, ActionKind, ActivityContext,
    ActivityInfo, BATCH_PAGE_WORKFLOWS, BATCHES_KEPT_MAX, BATCHES_RUNNING_MAX, BatchOperation,
    BatchRecord, BatchState, ClientError, Clock, ClusterStatus, CrashHook, CrashPoint,
    DUE_SHARDS_PER_TRANSACTION, Entropy, IdReusePolicy, InProcessPeers, LIST_PAGE_SIZE_DEFAULT,
    LIST_PAGE_SIZE_MAX, LIST_SCAN_ENTRIES_MAX, NodeConfig, NodeStatus, Outcome, Peers, PeersHandle,
    QueryError, RecentAction, SORTED_QUERY_WORKFLOWS_MAX, ScheduleDescription, ScheduleRecord,
    ShardStatus, UpdateError, UpdateStage, WorkflowPage, WorkflowSummary,
};
pub use cairn_store::{MemStore, StoreError};
pub use cairn_types::{
    ACTIVITY_ERROR, CHILD_WORKFLOW_ERROR, Failure, ParentClosePolicy, Payload, RetryPolicy, RunId,
    SearchAttributeError, SearchAttributes, SearchType, SearchValue, WorkflowId, WorkflowTimeouts,
};
pub use child::{ChildCall, ChildHandle};
pub use client::{
    Client, StartCall, UpdateCallError, UpdateHandle, WorkflowHandle, WorkflowOutcomeError,
};
pub use node::{Node, NodeBuilder};
pub use remote::{RemoteClient, RemoteError, RemoteHandle, RemoteStart};
pub use saga::{Permit, Saga, Semaphore};
pub use schedule::{ScheduleBuilder, ScheduleHandle};
pub use search::{SearchAttribute, SearchAttributeType, Text, UnixMillis};
pub use workflow::{
    ActivityCall, ActivityHandle, Ctx, Query, Signal, SignalReceiver, Update, activity_name,
    workflow_name,
};

/// The `futures` crate, for `join!`, `select!` and `join_all` inside workflows (they poll in
/// program order, which keeps workflow code deterministic).
pub use futures;

/// A failure a workflow returns on purpose: `Err(cairn::fail("OutOfStock", "no lamps left"))`.
pub fn fail(error_type: &str, message: impl Into<String>) -> WorkflowError {
    WorkflowError::Failed(Failure::new(error_type, message))
}

/// The README's Rust snippets, compiled and run as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
