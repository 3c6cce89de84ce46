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

pub mod executor;
pub mod machine;

pub use executor::{
    ActivityError, ActivityFuture, Executor, ExecutorError, SignalChannel, TimerFuture,
    WorkflowContext, WorkflowError, WorkflowFn, WorkflowFuture,
};
pub use machine::{
    Effect, Message, PendingActivity, Run, RunError, RunState, RunStatus, StartArgs, TimerId,
    Transition,
};
