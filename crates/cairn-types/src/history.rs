//! History events, workflow commands and failures: the vocabulary of a run's history.
//!
//! Names and meanings follow Temporal's (`WorkflowExecutionStarted`, `ActivityTaskScheduled`,
//! `TimerFired`, …) so a later Temporal-compatible frontend can translate one-to-one. A
//! command (what workflow code asked for) becomes the history event of the same name when the
//! transition that produced it commits; replay compares the two.

use crate::{
    ActivityTimeouts, Memo, MemoUpdate, Payload, RetryPolicy, RunId, SearchAttributes, WorkflowId,
    WorkflowTimeouts,
};
use serde::{Deserialize, Serialize};

/// Position of an event in its run's history: 1, 2, 3, … without gaps.
pub type EventId = u64;

/// Sequence number of a command within a run (activities, timers and markers share one
/// counter). Assigned by the workflow code's calls in program order, so replay reproduces it.
pub type Seq = u32;

/// Bytes a run's start carries in user data: its input, memo and search attributes, which
/// its started event and start mail hold together, bounded by
/// [`INLINE_PAYLOAD_BYTES_MAX`](crate::limits::INLINE_PAYLOAD_BYTES_MAX).
pub fn start_bytes(input: &Payload, memo: &Memo, search_attributes: &SearchAttributes) -> usize {
    input.len()
        + crate::memo::memo_bytes(memo)
        + crate::search::search_attributes_bytes(search_attributes)
}

/// A run of a workflow started with a cron schedule (Temporal's `cron_schedule`): each run
/// waits for the schedule's next time before its first workflow task, and the next run starts
/// when this one completes, fails or reaches its run timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronRun {
    /// The expression, as the start gave it.
    pub schedule: String,
    /// How long the run waits for its first workflow task (until the schedule's next time).
    pub first_task_backoff_ms: u64,
    /// The result of the chain's last run that completed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completion_result: Option<Payload>,
    /// The failure that closed the previous run, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued_failure: Option<Failure>,
}

/// The error type of a failure made because a payload exceeded the inline bound.
pub const PAYLOAD_TOO_LARGE: &str = "PayloadTooLarge";

/// The error type of the failure a workflow fails with when an activity's failure ends it:
/// its cause is the activity's failure.
pub const ACTIVITY_ERROR: &str = "ActivityError";

/// The error type of the failure a workflow fails with when a child's failure ends it: its
/// cause is the child's failure.
pub const CHILD_WORKFLOW_ERROR: &str = "ChildWorkflowError";

/// An error as workflow and activity code see it: a message, a type name for retry policies
/// to match, whether retrying can help, and the failure that caused it (Temporal's cause
/// chain: a workflow failed because an activity failed because a card was declined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub message: String,
    /// The error's type name, matched against `RetryPolicy::non_retryable_error_types`.
    pub error_type: String,
    /// Set by the code that raised it: never retry, whatever the policy says.
    pub non_retryable: bool,
    pub details: Option<Payload>,
    /// The failure that caused this one, at most [`FAILURE_CAUSES_MAX`] deep (absent in
    /// failures stored before causes existed).
    ///
    /// [`FAILURE_CAUSES_MAX`]: crate::limits::FAILURE_CAUSES_MAX
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<Failure>>,
}

impl Failure {
    /// A retryable failure of type `error_type`.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            non_retryable: false,
            details: None,
            cause: None,
        }
    }

    /// This failure, caused by `cause` (whose own causes follow it). A chain deeper than
    /// [`FAILURE_CAUSES_MAX`] keeps its outermost links, and the last one kept says causes
    /// were dropped.
    ///
    /// [`FAILURE_CAUSES_MAX`]: crate::limits::FAILURE_CAUSES_MAX
    pub fn caused_by(mut self, cause: Failure) -> Self {
        self.cause = Some(Box::new(cause));
        self.cut_causes(crate::limits::FAILURE_CAUSES_MAX);
        self
    }

    /// This failure and each of its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &Failure> {
        std::iter::successors(Some(self), |f| f.cause.as_deref())
    }

    /// The innermost failure of the chain: the error that started it.
    pub fn root_cause(&self) -> &Failure {
        self.chain().last().unwrap_or(self)
    }

    /// Keeps at most `depth` causes below this failure.
    fn cut_causes(&mut self, depth: usize) {
        let mut link = self;
        for _ in 0..depth {
            match link.cause.as_deref_mut() {
                Some(next) => link = next,
                None => return,
            }
        }
        const NOTE: &str = " (deeper causes dropped)";
        if link.cause.take().is_some() && !link.message.ends_with(NOTE) {
            link.message.push_str(NOTE);
        }
    }

    /// Marks the failure as never retryable.
    pub fn non_retryable(mut self) -> Self {
        self.non_retryable = true;
        self
    }

    /// The non-retryable `PayloadTooLarge` failure of `what` (say "the activity's result"),
    /// `len` bytes against [`INLINE_PAYLOAD_BYTES_MAX`]. Retrying makes the same payload.
    ///
    /// [`INLINE_PAYLOAD_BYTES_MAX`]: crate::limits::INLINE_PAYLOAD_BYTES_MAX
    pub fn payload_too_large(what: &str, len: usize) -> Self {
        Self::new(
            PAYLOAD_TOO_LARGE,
            format!(
                "{what} is {len} bytes; the limit is {} bytes",
                crate::limits::INLINE_PAYLOAD_BYTES_MAX
            ),
        )
        .non_retryable()
    }

    /// Bytes of text and details the failure and its causes carry.
    pub fn size_bytes(&self) -> usize {
        self.chain().map(Failure::own_size_bytes).sum()
    }

    /// Bytes of text and details this failure carries, without its causes.
    fn own_size_bytes(&self) -> usize {
        self.message.len() + self.error_type.len() + self.details.as_ref().map_or(0, Payload::len)
    }

    /// The failure cut to carry at most `max` bytes (`size_bytes`), so it fits one stored
    /// event. A failure with causes keeps at most [`FAILURE_CAUSES_MAX`] of them; its own part
    /// is cut to half of `max` and its causes, in turn, to what that leaves. Each part: the
    /// error type is cut to [`ERROR_TYPE_BYTES_MAX`], then the details are dropped, then the
    /// message is cut, each cut said in the message. A failure that fits is returned
    /// unchanged.
    ///
    /// [`ERROR_TYPE_BYTES_MAX`]: crate::limits::ERROR_TYPE_BYTES_MAX
    /// [`FAILURE_CAUSES_MAX`]: crate::limits::FAILURE_CAUSES_MAX
    pub fn bounded(mut self, max: usize) -> Self {
        self.cut_causes(crate::limits::FAILURE_CAUSES_MAX);
        if self.size_bytes() <= max {
            return self;
        }
        let Some(cause) = self.cause.take() else {
            return self.bounded_alone(max);
        };
        let mut outer = self.bounded_alone(max / 2);
        let room = max.saturating_sub(outer.own_size_bytes());
        outer.cause = Some(Box::new(cause.bounded(room)));
        outer
    }

    /// [`Failure::bounded`] for a failure without causes.
    fn bounded_alone(mut self, max: usize) -> Self {
        if self.size_bytes() <= max {
            return self;
        }
        let type_max = crate::limits::ERROR_TYPE_BYTES_MAX.min(max / 4);
        if self.error_type.len() > type_max {
            let kept = floor_char_boundary(&self.error_type, type_max);
            self.error_type.truncate(kept);
        }
        if let Some(details) = self.details.take() {
            if self.size_bytes() + details.len() <= max {
                self.details = Some(details);
                return self;
            }
            self.message
                .push_str(&format!(" (details of {} bytes dropped)", details.len()));
        }
        if self.size_bytes() > max {
            let total = self.message.len();
            // Room for the note, which is at most 60 bytes.
            let room = max.saturating_sub(self.error_type.len() + 60);
            let kept = floor_char_boundary(&self.message, room);
            self.message.truncate(kept);
            self.message
                .push_str(&format!(" … (cut to {kept} of {total} bytes)"));
        }
        self
    }
}

/// The largest index at most `at` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl std::fmt::Display for Failure {
    /// `type: message`, then `: caused by type: message` for each cause.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)?;
        for cause in self.chain().skip(1) {
            write!(f, ": caused by {}: {}", cause.error_type, cause.message)?;
        }
        Ok(())
    }
}

/// How an activity is run: where, with which timeouts and which retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityOptions {
    pub task_queue: String,
    pub timeouts: ActivityTimeouts,
    pub retry: RetryPolicy,
}

/// What happens to a child workflow still open when its parent closes (Temporal's three).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentClosePolicy {
    /// The child is terminated. The default, as in Temporal.
    #[default]
    Terminate,
    /// The child is asked to cancel; its code decides how to wind down.
    RequestCancel,
    /// The child runs on, on its own.
    Abandon,
}

/// How a child workflow is started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChildOptions {
    pub parent_close_policy: ParentClosePolicy,
    pub timeouts: WorkflowTimeouts,
    /// The child's memo at start.
    #[serde(default, skip_serializing_if = "Memo::is_empty")]
    pub memo: Memo,
    /// The child's search attributes at start.
    #[serde(default, skip_serializing_if = "SearchAttributes::is_empty")]
    pub search_attributes: SearchAttributes,
}

/// Which timeout expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeoutKind {
    ScheduleToStart,
    StartToClose,
    ScheduleToClose,
    Heartbeat,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ScheduleToStart => "schedule-to-start",
            Self::StartToClose => "start-to-close",
            Self::ScheduleToClose => "schedule-to-close",
            Self::Heartbeat => "heartbeat",
        })
    }
}

/// How an update's handler ended: its result, or the failure it raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UpdateOutcome {
    Success(Payload),
    Failure(Failure),
}

impl UpdateOutcome {
    /// Bytes of user data the outcome carries.
    pub fn size_bytes(&self) -> usize {
        match self {
            Self::Success(result) => result.len(),
            Self::Failure(failure) => failure.size_bytes(),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One entry of a run's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub event_id: EventId,
    /// When the transition that wrote it ran, Unix milliseconds. Workflow code's `now()`.
    pub time_unix_ms: u64,
    pub kind: EventKind,
}

/// What happened. Variants named after Temporal's event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    WorkflowExecutionStarted {
        workflow_type: String,
        input: Payload,
        /// Seeds `ctx.random()` and `ctx.uuid()`.
        random_seed: u64,
        timeouts: WorkflowTimeouts,
        /// The memo the run started with.
        #[serde(default, skip_serializing_if = "Memo::is_empty")]
        memo: Memo,
        /// The search attributes the run started with.
        #[serde(default, skip_serializing_if = "SearchAttributes::is_empty")]
        search_attributes: SearchAttributes,
        /// Set for a run of a workflow started with a cron schedule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cron: Option<CronRun>,
    },
    /// Closes one transition: the events before it (since the previous one) were applied
    /// together, and the command events just before it are what the code produced. Replay
    /// groups history by these markers.
    WorkflowTaskCompleted,
    ActivityTaskScheduled {
        seq: Seq,
        activity_type: String,
        input: Payload,
        options: ActivityOptions,
    },
    ActivityTaskCompleted {
        seq: Seq,
        attempt: u32,
        result: Payload,
    },
    ActivityTaskFailed {
        seq: Seq,
        attempt: u32,
        failure: Failure,
    },
    ActivityTaskTimedOut {
        seq: Seq,
        attempt: u32,
        timeout: TimeoutKind,
    },
    ActivityTaskCancelRequested {
        seq: Seq,
    },
    ActivityTaskCanceled {
        seq: Seq,
    },
    TimerStarted {
        seq: Seq,
        duration_ms: u64,
    },
    TimerFired {
        seq: Seq,
    },
    TimerCanceled {
        seq: Seq,
    },
    WorkflowExecutionSignaled {
        signal_name: String,
        input: Payload,
    },
    MarkerRecorded {
        seq: Seq,
        marker_name: String,
        details: Payload,
    },
    WorkflowExecutionCancelRequested {
        reason: String,
    },
    WorkflowExecutionCompleted {
        result: Payload,
    },
    WorkflowExecutionFailed {
        failure: Failure,
    },
    WorkflowExecutionCanceled,
    WorkflowExecutionTerminated {
        reason: String,
    },
    WorkflowExecutionTimedOut,
    /// The code started a child workflow; the start itself commits in the same transaction
    /// (or fails, reported by `StartChildWorkflowExecutionFailed`).
    StartChildWorkflowExecutionInitiated {
        seq: Seq,
        workflow_type: String,
        workflow_id: WorkflowId,
        input: Payload,
        options: ChildOptions,
    },
    StartChildWorkflowExecutionFailed {
        seq: Seq,
        workflow_id: WorkflowId,
        cause: String,
    },
    ChildWorkflowExecutionStarted {
        seq: Seq,
        workflow_id: WorkflowId,
        run_id: RunId,
    },
    ChildWorkflowExecutionCompleted {
        seq: Seq,
        result: Payload,
    },
    ChildWorkflowExecutionFailed {
        seq: Seq,
        failure: Failure,
    },
    ChildWorkflowExecutionCanceled {
        seq: Seq,
    },
    ChildWorkflowExecutionTerminated {
        seq: Seq,
        reason: String,
    },
    ChildWorkflowExecutionTimedOut {
        seq: Seq,
    },
    /// The code asked a child to cancel (`workflow_id` unset: the child `seq` names), or
    /// another workflow (`workflow_id`, and `run_id` if the code named one).
    RequestCancelExternalWorkflowExecutionInitiated {
        seq: Seq,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow_id: Option<WorkflowId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<RunId>,
    },
    /// The workflow the code asked to cancel was told.
    ExternalWorkflowExecutionCancelRequested {
        seq: Seq,
    },
    /// The workflow the code asked to cancel is not open (or does not exist).
    RequestCancelExternalWorkflowExecutionFailed {
        seq: Seq,
        cause: String,
    },
    /// The code sent signal `signal_name` to another workflow.
    SignalExternalWorkflowExecutionInitiated {
        seq: Seq,
        workflow_id: WorkflowId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<RunId>,
        signal_name: String,
        input: Payload,
    },
    /// The signal reached the workflow's mailbox.
    ExternalWorkflowExecutionSignaled {
        seq: Seq,
    },
    /// The signal could not be delivered: the workflow is not open (or does not exist).
    SignalExternalWorkflowExecutionFailed {
        seq: Seq,
        cause: String,
    },
    /// The run closed and a new run of the same workflow id started with `input`.
    WorkflowExecutionContinuedAsNew {
        workflow_type: String,
        input: Payload,
    },
    UpsertWorkflowSearchAttributes {
        attributes: SearchAttributes,
        /// Attributes the upsert removed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<String>,
    },
    /// The code changed its memo (Temporal's `ModifyWorkflowProperties`).
    WorkflowPropertiesModified {
        memo: MemoUpdate,
    },
    /// Update `update_id` passed its validator and its handler runs. Durable from here: the
    /// handler runs to completion whatever restarts (replay starts it again from this event).
    WorkflowExecutionUpdateAccepted {
        update_id: String,
        name: String,
        input: Payload,
        /// The protocol message that carried the request to a remote worker (none for code
        /// running in this process).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_message_id: String,
        /// The event, in the worker's (Temporal's) numbering, after which it handled the
        /// request (0 for code running in this process).
        #[serde(default, skip_serializing_if = "is_zero")]
        sequencing_event_id: u64,
    },
    /// A remote worker failed the run's workflow task (its first attempt: Temporal records
    /// the first failure of a streak, not the retries).
    WorkflowTaskFailed {
        failure: Failure,
    },
    /// A remote worker held the run's workflow task past its timeout (first attempt).
    WorkflowTaskTimedOut,
    /// Update `update_id`'s handler finished.
    WorkflowExecutionUpdateCompleted {
        update_id: String,
        /// The update's `WorkflowExecutionUpdateAccepted` event.
        accepted_event_id: EventId,
        outcome: UpdateOutcome,
    },
}

impl EventKind {
    /// The Temporal event type name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::WorkflowExecutionStarted { .. } => "WorkflowExecutionStarted",
            Self::WorkflowTaskCompleted => "WorkflowTaskCompleted",
            Self::ActivityTaskScheduled { .. } => "ActivityTaskScheduled",
            Self::ActivityTaskCompleted { .. } => "ActivityTaskCompleted",
            Self::ActivityTaskFailed { .. } => "ActivityTaskFailed",
            Self::ActivityTaskTimedOut { .. } => "ActivityTaskTimedOut",
            Self::ActivityTaskCancelRequested { .. } => "ActivityTaskCancelRequested",
            Self::ActivityTaskCanceled { .. } => "ActivityTaskCanceled",
            Self::TimerStarted { .. } => "TimerStarted",
            Self::TimerFired { .. } => "TimerFired",
            Self::TimerCanceled { .. } => "TimerCanceled",
            Self::WorkflowExecutionSignaled { .. } => "WorkflowExecutionSignaled",
            Self::MarkerRecorded { .. } => "MarkerRecorded",
            Self::WorkflowExecutionCancelRequested { .. } => "WorkflowExecutionCancelRequested",
            Self::WorkflowExecutionCompleted { .. } => "WorkflowExecutionCompleted",
            Self::WorkflowExecutionFailed { .. } => "WorkflowExecutionFailed",
            Self::WorkflowExecutionCanceled => "WorkflowExecutionCanceled",
            Self::WorkflowExecutionTerminated { .. } => "WorkflowExecutionTerminated",
            Self::WorkflowExecutionTimedOut => "WorkflowExecutionTimedOut",
            Self::StartChildWorkflowExecutionInitiated { .. } => {
                "StartChildWorkflowExecutionInitiated"
            }
            Self::StartChildWorkflowExecutionFailed { .. } => "StartChildWorkflowExecutionFailed",
            Self::ChildWorkflowExecutionStarted { .. } => "ChildWorkflowExecutionStarted",
            Self::ChildWorkflowExecutionCompleted { .. } => "ChildWorkflowExecutionCompleted",
            Self::ChildWorkflowExecutionFailed { .. } => "ChildWorkflowExecutionFailed",
            Self::ChildWorkflowExecutionCanceled { .. } => "ChildWorkflowExecutionCanceled",
            Self::ChildWorkflowExecutionTerminated { .. } => "ChildWorkflowExecutionTerminated",
            Self::ChildWorkflowExecutionTimedOut { .. } => "ChildWorkflowExecutionTimedOut",
            Self::RequestCancelExternalWorkflowExecutionInitiated { .. } => {
                "RequestCancelExternalWorkflowExecutionInitiated"
            }
            Self::ExternalWorkflowExecutionCancelRequested { .. } => {
                "ExternalWorkflowExecutionCancelRequested"
            }
            Self::RequestCancelExternalWorkflowExecutionFailed { .. } => {
                "RequestCancelExternalWorkflowExecutionFailed"
            }
            Self::SignalExternalWorkflowExecutionInitiated { .. } => {
                "SignalExternalWorkflowExecutionInitiated"
            }
            Self::ExternalWorkflowExecutionSignaled { .. } => "ExternalWorkflowExecutionSignaled",
            Self::SignalExternalWorkflowExecutionFailed { .. } => {
                "SignalExternalWorkflowExecutionFailed"
            }
            Self::WorkflowExecutionContinuedAsNew { .. } => "WorkflowExecutionContinuedAsNew",
            Self::UpsertWorkflowSearchAttributes { .. } => "UpsertWorkflowSearchAttributes",
            Self::WorkflowPropertiesModified { .. } => "WorkflowPropertiesModified",
            Self::WorkflowExecutionUpdateAccepted { .. } => "WorkflowExecutionUpdateAccepted",
            Self::WorkflowTaskFailed { .. } => "WorkflowTaskFailed",
            Self::WorkflowTaskTimedOut => "WorkflowTaskTimedOut",
            Self::WorkflowExecutionUpdateCompleted { .. } => "WorkflowExecutionUpdateCompleted",
        }
    }

    /// Events that record a command of the workflow code (compared on replay).
    /// Whether this is the event of a command that closes the run (complete, fail, cancel,
    /// continue as new). It is the last event of its run, after the `WorkflowTaskCompleted`
    /// of the activation that made it.
    pub fn is_close_command_event(&self) -> bool {
        matches!(
            self,
            Self::WorkflowExecutionCompleted { .. }
                | Self::WorkflowExecutionFailed { .. }
                | Self::WorkflowExecutionCanceled
                | Self::WorkflowExecutionContinuedAsNew { .. }
        )
    }

    pub fn is_command_event(&self) -> bool {
        matches!(
            self,
            Self::ActivityTaskScheduled { .. }
                | Self::ActivityTaskCancelRequested { .. }
                | Self::TimerStarted { .. }
                | Self::TimerCanceled { .. }
                | Self::MarkerRecorded { .. }
                | Self::WorkflowExecutionCompleted { .. }
                | Self::WorkflowExecutionFailed { .. }
                | Self::WorkflowExecutionCanceled
                | Self::StartChildWorkflowExecutionInitiated { .. }
                | Self::RequestCancelExternalWorkflowExecutionInitiated { .. }
                | Self::SignalExternalWorkflowExecutionInitiated { .. }
                | Self::WorkflowExecutionContinuedAsNew { .. }
                | Self::UpsertWorkflowSearchAttributes { .. }
                | Self::WorkflowPropertiesModified { .. }
                | Self::WorkflowExecutionUpdateCompleted { .. }
        )
    }
}

/// What workflow code asks for; each becomes the command event of the same meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    ScheduleActivity {
        seq: Seq,
        activity_type: String,
        input: Payload,
        options: ActivityOptions,
    },
    RequestCancelActivity {
        seq: Seq,
    },
    StartTimer {
        seq: Seq,
        duration_ms: u64,
    },
    CancelTimer {
        seq: Seq,
    },
    RecordMarker {
        seq: Seq,
        marker_name: String,
        details: Payload,
    },
    CompleteWorkflow {
        result: Payload,
    },
    FailWorkflow {
        failure: Failure,
    },
    /// The code acknowledged a cancellation request by ending as canceled.
    CancelWorkflow,
    StartChildWorkflow {
        seq: Seq,
        workflow_type: String,
        workflow_id: WorkflowId,
        input: Payload,
        options: ChildOptions,
    },
    RequestCancelChild {
        seq: Seq,
    },
    /// Send signal `signal_name` to workflow `workflow_id` (its run `run_id` if given); the
    /// run hears back `ExternalWorkflowExecutionSignaled` or `…Failed`.
    SignalExternal {
        seq: Seq,
        workflow_id: WorkflowId,
        run_id: Option<RunId>,
        signal_name: String,
        input: Payload,
    },
    /// Ask workflow `workflow_id` (its run `run_id` if given) to cancel; the run hears back
    /// `ExternalWorkflowExecutionCancelRequested` or `…Failed`.
    RequestCancelExternal {
        seq: Seq,
        workflow_id: WorkflowId,
        run_id: Option<RunId>,
    },
    /// Close this run and start a new run of the same workflow id with `input`. The new run
    /// keeps this run's memo and search attributes unless these are given.
    ContinueAsNew {
        workflow_type: String,
        input: Payload,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memo: Option<Memo>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        search_attributes: Option<SearchAttributes>,
    },
    /// Merge `attributes` into the workflow's search attributes, then drop those `removed`.
    UpsertSearchAttributes {
        attributes: SearchAttributes,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<String>,
    },
    /// Change the workflow's memo.
    UpsertMemo {
        memo: MemoUpdate,
    },
    /// A remote worker accepted update `update_id` (its validator passed): recorded as
    /// `WorkflowExecutionUpdateAccepted` where the worker placed it among its commands. (Code
    /// running in this process never sends it: its acceptances are inputs.)
    AcceptUpdate {
        update_id: String,
        name: String,
        input: Payload,
        request_message_id: String,
        sequencing_event_id: u64,
    },
    /// Update `update_id`'s handler finished with `outcome`.
    CompleteUpdate {
        update_id: String,
        outcome: UpdateOutcome,
    },
}

impl Command {
    /// Encoded bytes of the largest payload the command carries (its event must fit in one
    /// store value).
    pub fn largest_payload_bytes(&self) -> usize {
        match self {
            Self::ScheduleActivity { input, .. }
            | Self::StartChildWorkflow { input, .. }
            | Self::ContinueAsNew { input, .. } => input.len(),
            Self::RecordMarker { details, .. } => details.len(),
            Self::SignalExternal { input, .. } => input.len(),
            Self::CompleteWorkflow { result } => result.len(),
            Self::FailWorkflow { failure } => failure.size_bytes(),
            Self::UpsertMemo { memo } => memo.values().flatten().map(Payload::len).sum(),
            Self::AcceptUpdate { input, .. } => input.len(),
            Self::CompleteUpdate { outcome, .. } => outcome.size_bytes(),
            _ => 0,
        }
    }

    /// Whether this command closes the run.
    pub fn closes_run(&self) -> bool {
        matches!(
            self,
            Self::CompleteWorkflow { .. }
                | Self::FailWorkflow { .. }
                | Self::CancelWorkflow
                | Self::ContinueAsNew { .. }
        )
    }

    /// The history event recording this command.
    pub fn to_event(&self) -> EventKind {
        match self.clone() {
            Self::ScheduleActivity {
                seq,
                activity_type,
                input,
                options,
            } => EventKind::ActivityTaskScheduled {
                seq,
                activity_type,
                input,
                options,
            },
            Self::RequestCancelActivity { seq } => EventKind::ActivityTaskCancelRequested { seq },
            Self::StartTimer { seq, duration_ms } => EventKind::TimerStarted { seq, duration_ms },
            Self::CancelTimer { seq } => EventKind::TimerCanceled { seq },
            Self::RecordMarker {
                seq,
                marker_name,
                details,
            } => EventKind::MarkerRecorded {
                seq,
                marker_name,
                details,
            },
            Self::CompleteWorkflow { result } => EventKind::WorkflowExecutionCompleted { result },
            Self::FailWorkflow { failure } => EventKind::WorkflowExecutionFailed { failure },
            Self::CancelWorkflow => EventKind::WorkflowExecutionCanceled,
            Self::StartChildWorkflow {
                seq,
                workflow_type,
                workflow_id,
                input,
                options,
            } => EventKind::StartChildWorkflowExecutionInitiated {
                seq,
                workflow_type,
                workflow_id,
                input,
                options,
            },
            Self::RequestCancelChild { seq } => {
                EventKind::RequestCancelExternalWorkflowExecutionInitiated {
                    seq,
                    workflow_id: None,
                    run_id: None,
                }
            }
            Self::RequestCancelExternal {
                seq,
                workflow_id,
                run_id,
            } => EventKind::RequestCancelExternalWorkflowExecutionInitiated {
                seq,
                workflow_id: Some(workflow_id),
                run_id,
            },
            Self::SignalExternal {
                seq,
                workflow_id,
                run_id,
                signal_name,
                input,
            } => EventKind::SignalExternalWorkflowExecutionInitiated {
                seq,
                workflow_id,
                run_id,
                signal_name,
                input,
            },
            Self::ContinueAsNew {
                workflow_type,
                input,
                ..
            } => EventKind::WorkflowExecutionContinuedAsNew {
                workflow_type,
                input,
            },
            Self::UpsertSearchAttributes {
                attributes,
                removed,
            } => EventKind::UpsertWorkflowSearchAttributes {
                attributes,
                removed,
            },
            Self::UpsertMemo { memo } => EventKind::WorkflowPropertiesModified { memo },
            Self::AcceptUpdate {
                update_id,
                name,
                input,
                request_message_id,
                sequencing_event_id,
            } => EventKind::WorkflowExecutionUpdateAccepted {
                update_id,
                name,
                input,
                request_message_id,
                sequencing_event_id,
            },
            // The run's state knows the accepted event (`Run` fills it in).
            Self::CompleteUpdate { update_id, outcome } => {
                EventKind::WorkflowExecutionUpdateCompleted {
                    update_id,
                    accepted_event_id: 0,
                    outcome,
                }
            }
        }
    }

    /// Whether a recorded command event is this command, as far as determinism goes: the same
    /// kind, sequence number and type name. Inputs are not compared (Temporal does the same), so
    /// a changed activity argument does not break replay; a changed activity does.
    pub fn matches_event(&self, event: &EventKind) -> bool {
        match (self, event) {
            (
                Self::ScheduleActivity {
                    seq, activity_type, ..
                },
                EventKind::ActivityTaskScheduled {
                    seq: s,
                    activity_type: t,
                    ..
                },
            ) => seq == s && activity_type == t,
            (
                Self::RequestCancelActivity { seq },
                EventKind::ActivityTaskCancelRequested { seq: s },
            )
            | (Self::StartTimer { seq, .. }, EventKind::TimerStarted { seq: s, .. })
            | (Self::CancelTimer { seq }, EventKind::TimerCanceled { seq: s }) => seq == s,
            (
                Self::RecordMarker {
                    seq, marker_name, ..
                },
                EventKind::MarkerRecorded {
                    seq: s,
                    marker_name: n,
                    ..
                },
            ) => seq == s && marker_name == n,
            (
                Self::StartChildWorkflow {
                    seq, workflow_type, ..
                },
                EventKind::StartChildWorkflowExecutionInitiated {
                    seq: s,
                    workflow_type: t,
                    ..
                },
            ) => seq == s && workflow_type == t,
            (
                Self::RequestCancelChild { seq } | Self::RequestCancelExternal { seq, .. },
                EventKind::RequestCancelExternalWorkflowExecutionInitiated { seq: s, .. },
            )
            | (
                Self::SignalExternal { seq, .. },
                EventKind::SignalExternalWorkflowExecutionInitiated { seq: s, .. },
            ) => seq == s,
            (Self::CompleteWorkflow { .. }, EventKind::WorkflowExecutionCompleted { .. })
            | (Self::FailWorkflow { .. }, EventKind::WorkflowExecutionFailed { .. })
            | (Self::CancelWorkflow, EventKind::WorkflowExecutionCanceled)
            | (Self::ContinueAsNew { .. }, EventKind::WorkflowExecutionContinuedAsNew { .. })
            | (
                Self::UpsertSearchAttributes { .. },
                EventKind::UpsertWorkflowSearchAttributes { .. },
            )
            | (Self::UpsertMemo { .. }, EventKind::WorkflowPropertiesModified { .. }) => true,
            (
                Self::CompleteUpdate { update_id, .. },
                EventKind::WorkflowExecutionUpdateCompleted { update_id: u, .. },
            )
            | (
                Self::AcceptUpdate { update_id, .. },
                EventKind::WorkflowExecutionUpdateAccepted { update_id: u, .. },
            ) => update_id == u,
            _ => false,
        }
    }

    /// A short description for error messages (`ScheduleActivity(seq 3, "charge_card")`).
    pub fn describe(&self) -> String {
        match self {
            Self::ScheduleActivity {
                seq, activity_type, ..
            } => format!("ScheduleActivity(seq {seq}, {activity_type:?})"),
            Self::RequestCancelActivity { seq } => format!("RequestCancelActivity(seq {seq})"),
            Self::StartTimer { seq, duration_ms } => {
                format!("StartTimer(seq {seq}, {duration_ms} ms)")
            }
            Self::CancelTimer { seq } => format!("CancelTimer(seq {seq})"),
            Self::RecordMarker {
                seq, marker_name, ..
            } => format!("RecordMarker(seq {seq}, {marker_name:?})"),
            Self::CompleteWorkflow { .. } => "CompleteWorkflow".into(),
            Self::FailWorkflow { .. } => "FailWorkflow".into(),
            Self::CancelWorkflow => "CancelWorkflow".into(),
            Self::StartChildWorkflow {
                seq,
                workflow_type,
                workflow_id,
                ..
            } => format!("StartChildWorkflow(seq {seq}, {workflow_type:?}, id {workflow_id})"),
            Self::RequestCancelChild { seq } => format!("RequestCancelChild(seq {seq})"),
            Self::SignalExternal {
                seq,
                workflow_id,
                signal_name,
                ..
            } => format!("SignalExternal(seq {seq}, {signal_name:?} to {workflow_id})"),
            Self::RequestCancelExternal {
                seq, workflow_id, ..
            } => format!("RequestCancelExternal(seq {seq}, {workflow_id})"),
            Self::ContinueAsNew { .. } => "ContinueAsNew".into(),
            Self::UpsertSearchAttributes { .. } => "UpsertSearchAttributes".into(),
            Self::UpsertMemo { .. } => "UpsertMemo".into(),
            Self::AcceptUpdate {
                update_id, name, ..
            } => format!("AcceptUpdate({update_id:?}, {name:?})"),
            Self::CompleteUpdate { update_id, .. } => format!("CompleteUpdate({update_id:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_that_fits_is_unchanged() {
        let failure = Failure::new("Declined", "card declined").non_retryable();
        assert_eq!(failure.clone().bounded(1_000), failure);
        let exact = Failure::new("T", "x".repeat(99));
        assert_eq!(exact.size_bytes(), 100);
        assert_eq!(exact.clone().bounded(100), exact);
    }

    #[test]
    fn a_cause_chain_is_kept_to_its_depth_and_bound() {
        // Deeper than the bound: the outermost links stay, the last kept says what went.
        let mut deep = Failure::new("Root", "the first error");
        for i in 0..20 {
            deep = Failure::new(format!("Level{i}"), "wrapped").caused_by(deep);
        }
        let chain: Vec<&Failure> = deep.chain().collect();
        assert_eq!(chain.len(), crate::limits::FAILURE_CAUSES_MAX + 1);
        assert_eq!(chain[0].error_type, "Level19");
        assert!(
            chain[crate::limits::FAILURE_CAUSES_MAX]
                .message
                .ends_with("wrapped (deeper causes dropped)"),
            "{}",
            chain[crate::limits::FAILURE_CAUSES_MAX].message
        );

        // Over the byte bound: the outer part and the cause are each cut, the chain stays.
        let big = Failure::new("Outer", "o".repeat(8_000))
            .caused_by(Failure::new("Inner", "i".repeat(8_000)));
        assert_eq!(big.size_bytes(), 16_010);
        let cut = big.bounded(10_000);
        assert!(cut.size_bytes() <= 10_000, "{}", cut.size_bytes());
        assert_eq!(cut.error_type, "Outer");
        assert_eq!(cut.root_cause().error_type, "Inner");
        assert!(cut.root_cause().message.starts_with("iii"));
        assert_eq!(cut.to_string().matches("caused by").count(), 1);

        // Stored before causes existed: decodes with none; a chain round-trips.
        #[derive(Serialize)]
        struct Before {
            message: String,
            error_type: String,
            non_retryable: bool,
            details: Option<Payload>,
        }
        let old = rmp_serde::to_vec_named(&Before {
            message: "m".into(),
            error_type: "T".into(),
            non_retryable: true,
            details: None,
        })
        .unwrap();
        let decoded: Failure = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(decoded, Failure::new("T", "m").non_retryable());
        let chained = Failure::new("A", "a").caused_by(Failure::new("B", "b"));
        let bytes = rmp_serde::to_vec_named(&chained).unwrap();
        assert_eq!(rmp_serde::from_slice::<Failure>(&bytes).unwrap(), chained);
    }

    #[test]
    fn a_large_failure_is_cut_to_its_bound_and_says_so() {
        // Multi-byte characters across the cut: the cut lands on a char boundary.
        let failure = Failure {
            details: Some(Payload::from_bytes(vec![0xc0; 5_000]).unwrap()),
            ..Failure::new("E".repeat(1_000), "é".repeat(50_000))
        }
        .non_retryable();
        let cut = failure.clone().bounded(10_000);
        assert!(cut.size_bytes() <= 10_000, "{}", cut.size_bytes());
        assert_eq!(cut.error_type.len(), crate::limits::ERROR_TYPE_BYTES_MAX);
        assert_eq!(cut.details, None);
        assert!(cut.non_retryable);
        assert!(cut.message.starts_with("éé"));
        let total = "é".len() * 50_000 + " (details of 5000 bytes dropped)".len();
        assert!(
            cut.message.ends_with(&format!("of {total} bytes)")),
            "{}",
            &cut.message[cut.message.len() - 80..]
        );

        // Details that fit beside a cut type are kept.
        let small = Failure {
            details: Some(Payload::from_bytes(vec![0xc0; 100]).unwrap()),
            ..Failure::new("E".repeat(1_000), "boom")
        };
        let kept = small.bounded(1_000);
        assert_eq!(kept.details.map(|d| d.len()), Some(100));
        assert_eq!(kept.message, "boom");

        // Details too large alone are dropped, and the message says how large they were.
        let big_details = Failure {
            details: Some(Payload::from_bytes(vec![0xc0; 2_000]).unwrap()),
            ..Failure::new("E", "boom")
        };
        let dropped = big_details.bounded(1_000);
        assert_eq!(dropped.details, None);
        assert_eq!(dropped.message, "boom (details of 2000 bytes dropped)");
    }
}
