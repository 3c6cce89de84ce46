//! Cairn's vocabulary: the identifiers, payloads, retry policies, timeouts and limits that every
//! other crate speaks.
//!
//! Invariant: this crate does no I/O and reads no clock. Anything that needs "now" or randomness
//! takes it as an argument, so the state machine built on these types stays replayable. Every
//! value that arrives from outside (an id, a policy, a timeout) has a validating constructor that
//! returns a specific error rather than a value that would misbehave later.

pub mod history;
pub mod ids;
pub mod limits;
pub mod memo;
pub mod payload;
pub mod retry;
pub mod search;
pub mod timeouts;

pub use history::{
    ACTIVITY_ERROR, ActivityOptions, CHILD_WORKFLOW_ERROR, ChildOptions, Command, CronRun, EventId,
    EventKind, Failure, HistoryEvent, PAYLOAD_TOO_LARGE, ParentClosePolicy, Seq, TimeoutKind,
    UpdateOutcome, start_bytes,
};
pub use ids::{ActivityId, IdError, RunId, WorkflowId};
pub use memo::{Memo, MemoError, MemoUpdate};
pub use payload::{ExactPayload, ExactPayloads, Payload, PayloadError};
pub use retry::{RetryDecision, RetryPolicy};
pub use search::{SearchAttributeError, SearchAttributes, SearchType, SearchValue};
pub use timeouts::{ActivityTimeouts, PolicyError, WorkflowTimeouts};
