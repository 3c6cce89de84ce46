//! Cairn's pure core: the run state machine and the deterministic workflow executor.
//!
//! Invariants: no I/O, no tokio, no store, no clock — time and randomness arrive as arguments
//! or from history. Given the same snapshot, history, messages and `now`, a transition produces
//! the same events, snapshot and effects; that is what makes replay, crash recovery and the
//! data-driven tests exact.
//!
//! - [`executor`]: polls workflow code single-threaded; only history resolves its futures.
//! - [`machine`]: one transition of a run — messages in, events + snapshot + effects out —
//!   including retry backoff and timeout decisions, and replay with nondeterminism detection.
//! - [`schedule`]: when a schedule fires (cron in a time zone, intervals, bounds, jitter).
//! - [`visibility`]: the filter language that finds workflows, parsed, checked and evaluated.

pub mod executor;
pub mod machine;
pub mod schedule;
pub mod visibility;

pub use executor::{
    ActivityError, ActivityFuture, ChildError, ChildFuture, Executor, ExecutorError, SignalChannel,
    TimerFuture, UPDATE_HANDLER_NOT_FOUND, UpdateFuture, WORKFLOW_METADATA_QUERY, WorkflowContext,
    WorkflowError, WorkflowFn, WorkflowFuture, WorkflowMetadata,
};
pub use machine::{
    ChildOutcome, Effect, Message, PendingActivity, PendingChild, RemoteCode, Run, RunError,
    RunState, RunStatus, StartArgs, TimerId, Transition, UpdateEntry,
    WORKFLOW_TASK_RETRY_PAUSE_MAX_MS, WORKFLOW_TASK_RETRY_PAUSE_MS, WorkflowTaskFailure,
    event_size_bytes, workflow_task_retry_pause_ms,
};
