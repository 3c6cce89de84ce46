//! The run state machine: mailbox messages in, history events, a new snapshot and effects out.
//!
//! A [`Run`] couples the pure bookkeeping of one run ([`RunState`], the snapshot the runtime
//! stores) with its workflow instance ([`Executor`]). [`Run::handle`] is one transition: it turns
//! a batch of [`Message`]s into history events, decides retries and timeouts, activates the
//! workflow code with the events it can see, turns the code's commands into command events, and
//! returns the [`Effect`]s the runtime must perform after the transition commits (enqueue an
//! activity task, arm a durable timer, report the run closed). Nothing here does I/O or reads a
//! clock: `now` is an argument.

use crate::executor::{Executor, ExecutorError, PATCH_MARKER, SIDE_EFFECT_MARKER, WorkflowFn};
use cairn_types::limits::{HISTORY_BYTES_MAX, HISTORY_EVENTS_MAX};
use cairn_types::{
    ActivityOptions, ChildOptions, Command, CronRun, EventId, EventKind, Failure, HistoryEvent,
    Memo, ParentClosePolicy, Payload, RetryDecision, RunId, SearchAttributes, Seq, TimeoutKind,
    WorkflowId, WorkflowTimeouts,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Canceled,
    Terminated,
    TimedOut,
    /// Closed, and a new run of the same workflow id carries on.
    ContinuedAsNew,
}

impl RunStatus {
    pub fn is_closed(self) -> bool {
        self != Self::Running
    }
}

/// An activity the run is waiting for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingActivity {
    pub activity_type: String,
    pub input: Payload,
    pub options: ActivityOptions,
    /// The attempt currently scheduled or running, from 1.
    pub attempt: u32,
    pub scheduled_unix_ms: u64,
    pub last_failure: Option<Failure>,
    /// Whether `attempt` has been enqueued (a retry is enqueued when its backoff timer fires;
    /// a timer delivered twice enqueues it once).
    #[serde(default)]
    pub enqueued: bool,
    /// While waiting out its retry backoff (`enqueued` false): when `attempt` is enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_unix_ms: Option<u64>,
}

/// A child workflow the run started and has not heard the end of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingChild {
    pub workflow_id: WorkflowId,
    pub workflow_type: String,
    /// Known once `ChildWorkflowExecutionStarted` is recorded.
    pub run_id: Option<RunId>,
    pub parent_close_policy: ParentClosePolicy,
}

/// How a child workflow ended, as its parent's mailbox reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChildOutcome {
    Completed(Payload),
    Failed(Failure),
    Canceled,
    Terminated(String),
    TimedOut,
}

/// A run whose code runs in a remote worker (a Temporal SDK worker polling workflow tasks),
/// not in this process. The machine keeps Temporal's rule: at most one workflow task at a
/// time; inputs that arrive while it is out are buffered and recorded after its commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteCode {
    /// The task queue its workers poll.
    pub task_queue: String,
    /// How long a worker may hold a workflow task (Temporal's workflow task timeout).
    pub task_timeout_ms: u64,
    /// A workflow task is owed: the code has not seen the history's latest inputs.
    pub task_due: bool,
    /// Counts the run's workflow tasks; names the current one.
    pub task: u32,
    /// Attempt of the current task, from 1 (a task a worker failed or dropped is retried).
    pub attempt: u32,
    /// Fire time of the current task's check timer (`TimerId::WorkflowTask`).
    pub task_timer_at: Option<u64>,
    /// Inputs that arrived while the task was out, recorded when it ends.
    pub buffered: Vec<EventKind>,
    /// Period of the check timer: the task timeout at first, doubling (up to
    /// [`WORKFLOW_TASK_CHECK_MAX_MS`]) each time it finds the task still owed, so a run whose
    /// workers are away costs a commit a minute, not one per task timeout.
    #[serde(default)]
    pub check_ms: u64,
    /// A worker holds the current task. In memory only: a run loaded from the store has no
    /// task out (its worker's token named the node's previous life), so it hands it out again.
    #[serde(skip)]
    pub task_out: bool,
    /// The current task failed more than once in a row: it is owed again when its check
    /// timer fires ([`workflow_task_retry_pause_ms`]), or superseded by a new task when a new
    /// input arrives.
    #[serde(default)]
    pub backing_off: bool,
}

impl RemoteCode {
    pub fn new(task_queue: String, task_timeout_ms: u64) -> Self {
        Self {
            task_queue,
            task_timeout_ms,
            task_due: false,
            task: 0,
            attempt: 0,
            task_timer_at: None,
            buffered: Vec::new(),
            check_ms: 0,
            task_out: false,
            backing_off: false,
        }
    }
}

/// Longest period of a remote run's workflow task check timer.
pub const WORKFLOW_TASK_CHECK_MAX_MS: u64 = 60_000;

/// Pause before handing out a workflow task that failed twice in a row (the first retry is
/// at once, as on Temporal); it doubles with each further failure.
pub const WORKFLOW_TASK_RETRY_PAUSE_MS: u64 = 1_000;
/// How early a workflow task's timer may fire and still count as the one its run armed last
/// (clocks of nodes that hold the shard in turn may differ this much); an earlier firing is a
/// stale timer of the same task.
pub const WORKFLOW_TASK_TIMER_SLACK_MS: u64 = 250;
/// Longest pause between attempts of a failing workflow task: a worker whose code fails
/// every time (or sends commands Cairn refuses) costs a task a minute, not a hot loop.
pub const WORKFLOW_TASK_RETRY_PAUSE_MAX_MS: u64 = 60_000;

/// How long attempt `attempt` of a workflow task waits before it is handed out: nothing for
/// the first two, then [`WORKFLOW_TASK_RETRY_PAUSE_MS`] doubling up to
/// [`WORKFLOW_TASK_RETRY_PAUSE_MAX_MS`].
pub fn workflow_task_retry_pause_ms(attempt: u32) -> u64 {
    match attempt {
        0..=2 => 0,
        n => WORKFLOW_TASK_RETRY_PAUSE_MS
            .saturating_mul(1u64 << (n - 3).min(32))
            .min(WORKFLOW_TASK_RETRY_PAUSE_MAX_MS),
    }
}

/// The run's snapshot: everything needed to continue besides history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub workflow_type: String,
    pub status: RunStatus,
    /// Id the next history event gets.
    pub next_event_id: EventId,
    pub started_unix_ms: u64,
    pub closed_unix_ms: Option<u64>,
    pub activities: BTreeMap<Seq, PendingActivity>,
    /// User timers: seq → fire time.
    pub timers: BTreeMap<Seq, u64>,
    pub cancel_requested: bool,
    #[serde(default)]
    pub children: BTreeMap<Seq, PendingChild>,
    #[serde(default)]
    pub search_attributes: SearchAttributes,
    /// The memo (shown by describe and list; never queried).
    #[serde(default, skip_serializing_if = "Memo::is_empty")]
    pub memo: Memo,
    /// Encoded bytes of the history so far (what `history_size_bytes` reports).
    #[serde(default)]
    pub history_size_bytes: u64,
    /// When the execution (or run) timeout fires, if the run has one: the fire time of its
    /// `TimerId::WorkflowExecution` timer, so the timer can be cleared when the run closes.
    #[serde(default)]
    pub deadline_unix_ms: Option<u64>,
    /// Set when the code runs in remote workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteCode>,
    /// Every update the run accepted, by update id (at most
    /// [`UPDATES_TOTAL_MAX`](cairn_types::limits::UPDATES_TOTAL_MAX)): what deduplicates a
    /// request sent again, and where its outcome is in the history.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub updates: BTreeMap<String, UpdateEntry>,
    /// Set for a run of a workflow started with a cron schedule: what its successor needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronState>,
    /// While set, the run waits for its first workflow task (a cron run waiting for its
    /// schedule's time): its code does not run before then, and inputs are recorded as they
    /// come. Cleared by `TimerId::FirstWorkflowTask`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_task_at_unix_ms: Option<u64>,
    /// The inputs recorded while the first task waited, which code running in this process
    /// sees when it first runs (a remote worker's task carries the whole history anyway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen_inputs: Vec<HistoryEvent>,
}

/// What a cron run keeps to start the next run of its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronState {
    pub schedule: String,
    /// When the run's first workflow task was due (its start plus its backoff): the time the
    /// schedule's next time counts from, as Temporal counts it.
    pub scheduled_unix_ms: u64,
    /// When the chain's execution timeout ends it, if it has one: no run starts after it.
    pub chain_deadline_unix_ms: Option<u64>,
    /// The result of the chain's last run that completed.
    pub last_completion_result: Option<Payload>,
}

/// An update the run accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateEntry {
    /// Its `WorkflowExecutionUpdateAccepted` event.
    pub accepted_event_id: EventId,
    /// Its `WorkflowExecutionUpdateCompleted` event, once its handler finished.
    pub completed_event_id: Option<EventId>,
}

impl RunState {
    /// Updates accepted whose handlers have not finished.
    pub fn updates_in_flight(&self) -> usize {
        self.updates
            .values()
            .filter(|u| u.completed_event_id.is_none())
            .count()
    }
}

/// Durable timers a run arms. A timer that fires after it stopped mattering (the attempt it
/// guarded finished) is ignored; the runtime clears a run's user timers when they are
/// canceled, and its user and deadline timers when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerId {
    User {
        seq: Seq,
    },
    ActivityScheduleToStart {
        seq: Seq,
        attempt: u32,
    },
    /// Armed by the runtime when a worker claims the attempt.
    ActivityStartToClose {
        seq: Seq,
        attempt: u32,
    },
    /// Armed (and moved on every heartbeat) by the runtime.
    ActivityHeartbeat {
        seq: Seq,
        attempt: u32,
    },
    ActivityScheduleToClose {
        seq: Seq,
    },
    /// Backoff before attempt `attempt` is enqueued.
    ActivityRetry {
        seq: Seq,
        attempt: u32,
    },
    WorkflowExecution,
    /// The end of a run's wait for its first workflow task (`RunState::first_task_at_unix_ms`).
    FirstWorkflowTask,
    /// Re-offers workflow task `task` of a remote run while it is owed (after a restart, its
    /// run is activated by this timer).
    WorkflowTask {
        task: u32,
    },
}

/// A mailbox message: why a run wakes up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Signal {
        name: String,
        input: Payload,
    },
    ActivityCompleted {
        seq: Seq,
        attempt: u32,
        result: Payload,
    },
    ActivityFailed {
        seq: Seq,
        attempt: u32,
        failure: Failure,
    },
    TimerFired {
        timer: TimerId,
    },
    CancelRequested {
        reason: String,
    },
    Terminate {
        reason: String,
    },
    /// The child started in the same transaction as the parent's record of it.
    ChildStarted {
        seq: Seq,
        run_id: RunId,
    },
    /// The signal this run sent (`seq`) reached its workflow's mailbox, or why it did not
    /// (written in the same transaction as the delivery).
    ExternalSignaled {
        seq: Seq,
        result: Result<(), String>,
    },
    /// The cancel request this run sent (`seq`) reached its workflow, or why it did not.
    ExternalCancelRequested {
        seq: Seq,
        result: Result<(), String>,
    },
    /// The child could not start (its workflow id is in use).
    ChildStartFailed {
        seq: Seq,
        cause: String,
    },
    /// The child closed (written in the same transaction as its close).
    ChildClosed {
        seq: Seq,
        outcome: ChildOutcome,
    },
    /// A remote worker completed workflow task `task` (attempt `attempt`) with `commands`.
    /// Delivered in memory, never stored: a task's answer is only good for the life it was
    /// handed out in.
    WorkflowTaskCompleted {
        task: u32,
        attempt: u32,
        commands: Vec<Command>,
        /// The worker asks for the next task at once, whatever arrives (it is running local
        /// activities past the task timeout and heartbeats this way).
        #[serde(default)]
        new_task: bool,
    },
    /// A remote worker failed workflow task `task`, or held it past its timeout: it is
    /// handed out again (attempt + 1). `why`, when known, is recorded for the task's first
    /// attempt (`WorkflowTaskFailed` / `WorkflowTaskTimedOut`), as Temporal records it.
    WorkflowTaskFailed {
        task: u32,
        attempt: u32,
        #[serde(default)]
        why: Option<WorkflowTaskFailure>,
    },
    /// A client asks for update `update_id`. Delivered in memory, never stored: an update is
    /// durable once accepted. Code in this process validates it now (accepted: recorded as an
    /// input; rejected: `Effect::UpdateRejected`, nothing written); a remote run owes its
    /// workers a workflow task, which carries the request.
    Update {
        update_id: String,
        name: String,
        input: Payload,
    },
}

/// Why a remote workflow task failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkflowTaskFailure {
    /// The worker held it past its timeout.
    TimedOut,
    /// The worker failed it (its code raised, or it sent commands Cairn refused).
    Failed(Failure),
}

/// What the runtime must do once the transition has committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    EnqueueActivityTask {
        seq: Seq,
        attempt: u32,
        activity_type: String,
        input: Payload,
        options: ActivityOptions,
    },
    ScheduleTimer {
        timer: TimerId,
        fire_at_unix_ms: u64,
    },
    /// Tell a worker running this activity that it should stop (best effort).
    CancelActivityTask {
        seq: Seq,
    },
    RunClosed {
        status: RunStatus,
    },
    /// Start a child workflow, in the same transaction, unless its workflow id is in use; either
    /// way tell this run (`Message::ChildStarted` / `ChildStartFailed`).
    StartChild {
        seq: Seq,
        workflow_type: String,
        workflow_id: WorkflowId,
        input: Payload,
        options: ChildOptions,
    },
    /// Ask the child to cancel, if it still runs.
    CancelChild {
        seq: Seq,
        workflow_id: WorkflowId,
        run_id: Option<RunId>,
    },
    /// This run closed with a child still open: apply its parent close policy.
    ApplyParentClosePolicy {
        workflow_id: WorkflowId,
        run_id: Option<RunId>,
        policy: ParentClosePolicy,
    },
    /// Start the next run of this workflow id with `input`, `memo` and `search_attributes`
    /// (this run closed as `ContinuedAsNew` in the same transition).
    ContinueAsNew {
        workflow_type: String,
        input: Payload,
        memo: Memo,
        search_attributes: SearchAttributes,
    },
    /// Start the next run of this cron workflow (this run completed, failed or timed out in
    /// the same transition): the chain's input, this run's memo and search attributes.
    CronNext {
        cron: CronRun,
    },
    /// Deliver signal `signal_name` to workflow `workflow_id` (its run `run_id`, if given)
    /// and tell this run `Message::ExternalSignaled`.
    SignalExternal {
        seq: Seq,
        workflow_id: WorkflowId,
        run_id: Option<RunId>,
        signal_name: String,
        input: Payload,
    },
    /// Ask workflow `workflow_id` to cancel and tell this run `Message::ExternalCancelRequested`.
    CancelExternal {
        seq: Seq,
        workflow_id: WorkflowId,
        run_id: Option<RunId>,
    },
    /// The search attributes changed (they are in the snapshot).
    SearchAttributesChanged,
    /// The memo changed (it is in the snapshot).
    MemoChanged,
    /// Update `update_id`'s validator refused it: nothing of it is in the history; tell its
    /// callers.
    UpdateRejected {
        update_id: String,
        failure: Failure,
    },
}

/// One transition's output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub events: Vec<HistoryEvent>,
    pub effects: Vec<Effect>,
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq)]
pub struct StartArgs {
    pub workflow_type: String,
    pub input: Payload,
    pub random_seed: u64,
    pub timeouts: WorkflowTimeouts,
    /// When the workflow's first run started, if this run continues a chain (the execution
    /// timeout spans the chain; the run timeout is this run's). `None`: this run is the first.
    pub execution_started_unix_ms: Option<u64>,
    /// The memo the run starts with (validated by the caller).
    pub memo: Memo,
    /// The search attributes the run starts with (validated by the caller).
    pub search_attributes: SearchAttributes,
    /// Set for a run of a workflow started with a cron schedule (validated by the caller).
    pub cron: Option<CronRun>,
}

/// Why a transition or a replay could not proceed. The run is then held as it was: nothing of
/// the failed transition is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error(
        "nondeterminism at history event {event_id}: history has {expected} but the workflow code now produces {got}"
    )]
    Nondeterminism {
        event_id: EventId,
        expected: String,
        got: String,
    },
    #[error("history is malformed: {reason}")]
    MalformedHistory { reason: String },
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

/// A live run: its snapshot plus its workflow instance.
pub struct Run {
    state: RunState,
    /// The code, when it runs in this process; `None` for a remote run.
    executor: Option<Executor>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Events the workflow code observes (the inputs of an activation).
fn is_code_input(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::WorkflowExecutionStarted { .. }
            | EventKind::ActivityTaskCompleted { .. }
            | EventKind::ActivityTaskFailed { .. }
            | EventKind::ActivityTaskTimedOut { .. }
            | EventKind::TimerFired { .. }
            | EventKind::WorkflowExecutionSignaled { .. }
            | EventKind::WorkflowExecutionCancelRequested { .. }
            | EventKind::ChildWorkflowExecutionStarted { .. }
            | EventKind::StartChildWorkflowExecutionFailed { .. }
            | EventKind::ChildWorkflowExecutionCompleted { .. }
            | EventKind::ChildWorkflowExecutionFailed { .. }
            | EventKind::ChildWorkflowExecutionCanceled { .. }
            | EventKind::ChildWorkflowExecutionTerminated { .. }
            | EventKind::ChildWorkflowExecutionTimedOut { .. }
            | EventKind::ExternalWorkflowExecutionSignaled { .. }
            | EventKind::SignalExternalWorkflowExecutionFailed { .. }
            | EventKind::ExternalWorkflowExecutionCancelRequested { .. }
            | EventKind::RequestCancelExternalWorkflowExecutionFailed { .. }
            | EventKind::WorkflowExecutionUpdateAccepted { .. }
    )
}

/// Encoded size of an event, as history sizes count it (the record the runtime stores).
pub fn event_size_bytes(event: &HistoryEvent) -> u64 {
    /// Counts what is written, keeping nothing.
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // A stored event always encodes; a failure here would be a bug in the event types.
    match rmp_serde::encode::write_named(&mut count, event) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

/// Builds a transition's events with consecutive ids, keeping the history size.
struct EventLog<'a> {
    state: &'a mut RunState,
    now: u64,
    events: Vec<HistoryEvent>,
}

impl EventLog<'_> {
    fn push(&mut self, mut kind: EventKind) {
        let event_id = self.state.next_event_id;
        self.state.next_event_id += 1;
        match &mut kind {
            EventKind::WorkflowExecutionUpdateAccepted { update_id, .. } => {
                self.state.updates.insert(
                    update_id.clone(),
                    UpdateEntry {
                        accepted_event_id: event_id,
                        completed_event_id: None,
                    },
                );
            }
            EventKind::WorkflowExecutionUpdateCompleted {
                update_id,
                accepted_event_id,
                ..
            } => {
                if let Some(entry) = self.state.updates.get_mut(update_id.as_str()) {
                    *accepted_event_id = entry.accepted_event_id;
                    entry.completed_event_id = Some(event_id);
                }
            }
            _ => {}
        }
        let event = HistoryEvent {
            event_id,
            time_unix_ms: self.now,
            kind,
        };
        self.state.history_size_bytes += event_size_bytes(&event);
        self.events.push(event);
    }

    /// Events so far in the run's history.
    fn length(&self) -> u64 {
        self.state.next_event_id - 1
    }
}

impl Run {
    /// Starts a run: the `WorkflowExecutionStarted` event and the first activation.
    pub fn start(
        workflow: &WorkflowFn,
        args: StartArgs,
        now: u64,
    ) -> Result<(Run, Transition), RunError> {
        let state = Self::fresh_state(&args, now);
        let mut executor = Executor::new(
            workflow,
            &args.workflow_type,
            args.input.clone(),
            args.random_seed,
            now,
        );
        executor.set_start(args.memo.clone(), args.search_attributes.clone());
        let run = Run {
            state,
            executor: Some(executor),
        };
        run.started(args, now)
    }

    /// Starts a run whose code runs in remote workers: the `WorkflowExecutionStarted` event
    /// and its first workflow task, owed.
    pub fn start_remote(
        args: StartArgs,
        remote: RemoteCode,
        now: u64,
    ) -> Result<(Run, Transition), RunError> {
        let run = Run {
            state: RunState {
                remote: Some(remote),
                ..Self::fresh_state(&args, now)
            },
            executor: None,
        };
        run.started(args, now)
    }

    /// A remote run from its snapshot (nothing to replay: its code is elsewhere).
    pub fn resume_remote(state: RunState) -> Result<Run, RunError> {
        if state.remote.is_none() {
            return Err(RunError::MalformedHistory {
                reason: "the run's code is not remote".into(),
            });
        }
        Ok(Run {
            state,
            executor: None,
        })
    }

    fn fresh_state(args: &StartArgs, now: u64) -> RunState {
        RunState {
            workflow_type: args.workflow_type.clone(),
            status: RunStatus::Running,
            next_event_id: 1,
            started_unix_ms: now,
            closed_unix_ms: None,
            activities: BTreeMap::new(),
            timers: BTreeMap::new(),
            cancel_requested: false,
            children: BTreeMap::new(),
            search_attributes: args.search_attributes.clone(),
            memo: args.memo.clone(),
            history_size_bytes: 0,
            deadline_unix_ms: None,
            remote: None,
            updates: BTreeMap::new(),
            cron: None,
            first_task_at_unix_ms: None,
            unseen_inputs: Vec::new(),
        }
    }

    /// The start's deadline timer and first transition.
    fn started(mut self, args: StartArgs, now: u64) -> Result<(Run, Transition), RunError> {
        let run = &mut self;
        let mut effects = Vec::new();
        // The execution timeout counts from the chain's first run, the run timeout from the
        // run's first workflow task.
        let execution_started = args.execution_started_unix_ms.unwrap_or(now);
        let chain_deadline = args
            .timeouts
            .execution
            .map(|limit| execution_started.saturating_add(ms(limit)));
        let backoff = args.cron.as_ref().map_or(0, |c| c.first_task_backoff_ms);
        if let Some(cron) = &args.cron {
            run.state.cron = Some(CronState {
                schedule: cron.schedule.clone(),
                scheduled_unix_ms: now.saturating_add(cron.first_task_backoff_ms),
                chain_deadline_unix_ms: chain_deadline,
                last_completion_result: cron.last_completion_result.clone(),
            });
        }
        if backoff > 0 {
            let fire_at_unix_ms = now.saturating_add(backoff);
            run.state.first_task_at_unix_ms = Some(fire_at_unix_ms);
            effects.push(Effect::ScheduleTimer {
                timer: TimerId::FirstWorkflowTask,
                fire_at_unix_ms,
            });
        }
        let deadline = [
            chain_deadline,
            args.timeouts
                .run
                .map(|limit| now.saturating_add(backoff).saturating_add(ms(limit))),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(fire_at_unix_ms) = deadline {
            let fire_at_unix_ms = fire_at_unix_ms.max(now);
            run.state.deadline_unix_ms = Some(fire_at_unix_ms);
            effects.push(Effect::ScheduleTimer {
                timer: TimerId::WorkflowExecution,
                fire_at_unix_ms,
            });
        }
        let started = EventKind::WorkflowExecutionStarted {
            workflow_type: args.workflow_type,
            input: args.input,
            random_seed: args.random_seed,
            timeouts: args.timeouts,
            memo: args.memo,
            search_attributes: args.search_attributes,
            cron: args.cron,
        };
        let mut transition = run.transition(vec![started], None, None, false, now)?;
        effects.append(&mut transition.effects);
        transition.effects = effects;
        Ok((self, transition))
    }

    /// The snapshot.
    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// Runs a query handler of the workflow.
    pub fn query(&self, name: &str, args: Payload) -> Result<Payload, ExecutorError> {
        match &self.executor {
            Some(executor) => executor.query(name, args),
            None => Err(ExecutorError::UnknownQuery {
                name: format!("{name} (the workflow's code runs in a remote worker)"),
                known: Vec::new(),
            }),
        }
    }

    /// The remote code's bookkeeping, for a remote run.
    pub fn remote(&self) -> Option<&RemoteCode> {
        self.state.remote.as_ref()
    }

    /// Hands the owed workflow task to a worker: its `(task, attempt)`, or `None` if no task
    /// is owed or one is out already. In memory: nothing to commit.
    pub fn take_workflow_task(&mut self) -> Option<(u32, u32)> {
        if self.state.status.is_closed() {
            return None;
        }
        let remote = self.state.remote.as_mut()?;
        if !remote.task_due || remote.task_out || !remote.buffered.is_empty() {
            return None;
        }
        remote.task_out = true;
        Some((remote.task, remote.attempt))
    }

    /// Takes `(task, attempt)` as out with a worker an earlier holder of the run handed it to
    /// (another node before the shard moved, or this node's previous life), when it is still
    /// the task owed and the history is as that worker saw it (`next_event_id`, the run's next
    /// event id at the hand-out): its completion then applies as one handed out here would.
    /// A task handed out here too is held by both workers; the first completion wins. In
    /// memory: nothing to commit.
    pub fn adopt_workflow_task(&mut self, task: u32, attempt: u32, next_event_id: u64) -> bool {
        if self.state.status.is_closed() || self.state.next_event_id != next_event_id {
            return false;
        }
        let Some(remote) = self.state.remote.as_mut() else {
            return false;
        };
        if remote.task != task || remote.attempt != attempt {
            return false;
        }
        if remote.task_out {
            return true;
        }
        if !remote.task_due || !remote.buffered.is_empty() {
            return false;
        }
        remote.task_out = true;
        true
    }

    /// Whether `(task, attempt)` is the task a worker holds now.
    pub fn holds_workflow_task(&self, task: u32, attempt: u32) -> bool {
        !self.state.status.is_closed()
            && self
                .state
                .remote
                .as_ref()
                .is_some_and(|r| r.task_out && r.task == task && r.attempt == attempt)
    }

    /// Why `commands` cannot be applied at all, if they cannot: the search attributes or memo
    /// they set, merged with the run's, break a bound (so do those a continue-as-new gives).
    pub fn refusal(&self, commands: &[Command]) -> Option<String> {
        let mut attributes = self.state.search_attributes.clone();
        let mut memo = self.state.memo.clone();
        let (mut attributes_changed, mut memo_changed) = (false, false);
        for command in commands {
            match command {
                Command::UpsertSearchAttributes {
                    attributes: upserted,
                    removed,
                } => {
                    attributes.extend(upserted.clone());
                    for name in removed {
                        attributes.remove(name);
                    }
                    attributes_changed = true;
                }
                Command::UpsertMemo { memo: update } => {
                    match cairn_types::memo::updated(&memo, update) {
                        Ok(next) => memo = next,
                        Err(e) => return Some(e.to_string()),
                    }
                    memo_changed = true;
                }
                Command::ContinueAsNew {
                    memo: next_memo,
                    search_attributes: next_attributes,
                    ..
                } => {
                    if let Some(next) = next_memo
                        && let Err(e) = cairn_types::memo::validate_memo(next)
                    {
                        return Some(format!("continue-as-new: {e}"));
                    }
                    if let Some(next) = next_attributes
                        && let Err(e) = cairn_types::search::validate_search_attributes(next)
                    {
                        return Some(format!("continue-as-new: {e}"));
                    }
                }
                Command::StartChildWorkflow {
                    workflow_id,
                    options,
                    ..
                } => {
                    if let Err(e) = cairn_types::memo::validate_memo(&options.memo) {
                        return Some(format!("child {workflow_id}: {e}"));
                    }
                    if let Err(e) =
                        cairn_types::search::validate_search_attributes(&options.search_attributes)
                    {
                        return Some(format!("child {workflow_id}: {e}"));
                    }
                }
                _ => {}
            }
        }
        if attributes_changed
            && let Err(e) = cairn_types::search::validate_search_attributes(&attributes)
        {
            return Some(e.to_string());
        }
        if memo_changed && let Err(e) = cairn_types::memo::validate_memo(&memo) {
            return Some(e.to_string());
        }
        None
    }

    /// Whether completing the task out with `commands` would be refused (Temporal's rule): it
    /// closes the run while inputs the code has not seen (a signal, an activity result) wait.
    pub fn completion_is_stale(&self, commands: &[Command]) -> bool {
        self.state.remote.as_ref().is_some_and(|r| {
            commands.iter().any(Command::closes_run) && r.buffered.iter().any(is_code_input)
        })
    }

    /// One transition: applies `messages` (in order) at time `now`.
    ///
    /// On error the run must be dropped and rebuilt from the store: the executor may have
    /// advanced past what was committed.
    pub fn handle(&mut self, messages: Vec<Message>, now: u64) -> Result<Transition, RunError> {
        if self.state.status.is_closed() {
            return Ok(Transition::default());
        }
        let mut inputs = Vec::new();
        let mut effects = Vec::new();
        let mut terminal = None;
        let mut completion: Option<(Vec<Command>, bool)> = None;
        let mut update_owed = false;
        let mut messages = messages;
        // An attempt never picked up whose schedule-to-start deadline falls together with
        // another of its deadlines timed out as schedule-to-start (Temporal's verdict): its
        // schedule-to-start timers go first in the batch.
        let schedule_to_start = |m: &Message| {
            matches!(
                m,
                Message::TimerFired {
                    timer: TimerId::ActivityScheduleToStart { .. }
                }
            )
        };
        if messages.iter().any(schedule_to_start) {
            messages.sort_by_key(|m| !schedule_to_start(m));
        }
        let wait_ended = self.state.first_task_at_unix_ms.is_some()
            && messages.iter().any(|m| {
                matches!(
                    m,
                    Message::TimerFired {
                        timer: TimerId::FirstWorkflowTask
                    }
                )
            });
        for message in messages {
            // Once the run is closing, only a signal or cancel request is still recorded: it
            // was accepted before the close, so it is part of the history (Temporal's rule).
            if terminal.is_some()
                && !matches!(
                    message,
                    Message::Signal { .. } | Message::CancelRequested { .. }
                )
            {
                continue;
            }
            match message {
                Message::Signal { name, input } => {
                    inputs.push(EventKind::WorkflowExecutionSignaled {
                        signal_name: name,
                        input,
                    })
                }
                Message::Update {
                    update_id,
                    name,
                    input,
                } => {
                    let accepted_before = self.state.updates.contains_key(&update_id)
                        || inputs.iter().any(|i| {
                            matches!(i, EventKind::WorkflowExecutionUpdateAccepted { update_id: u, .. } if *u == update_id)
                        });
                    if accepted_before {
                        continue;
                    }
                    if self.state.remote.is_some() {
                        update_owed = true;
                        continue;
                    }
                    // The validator sees the state as of the last activation.
                    let verdict = match &self.executor {
                        Some(executor) => executor.validate_update(&name, &input),
                        None => {
                            Err(Failure::new("Unavailable", "the run has no code").non_retryable())
                        }
                    };
                    match verdict {
                        Ok(()) => inputs.push(EventKind::WorkflowExecutionUpdateAccepted {
                            update_id,
                            name,
                            input,
                            request_message_id: String::new(),
                            sequencing_event_id: 0,
                        }),
                        Err(failure) => effects.push(Effect::UpdateRejected { update_id, failure }),
                    }
                }
                Message::ActivityCompleted {
                    seq,
                    attempt,
                    result,
                } => {
                    if self.is_current_attempt(seq, attempt) {
                        self.state.activities.remove(&seq);
                        inputs.push(EventKind::ActivityTaskCompleted {
                            seq,
                            attempt,
                            result,
                        });
                    }
                }
                Message::ActivityFailed {
                    seq,
                    attempt,
                    failure,
                } => {
                    if self.is_current_attempt(seq, attempt) {
                        self.attempt_failed(
                            seq,
                            AttemptEnd::Failed(failure),
                            now,
                            &mut inputs,
                            &mut effects,
                        );
                    }
                }
                Message::TimerFired { timer } => {
                    self.timer_fired(timer, now, &mut inputs, &mut effects, &mut terminal);
                }
                Message::CancelRequested { reason } => {
                    if !self.state.cancel_requested {
                        self.state.cancel_requested = true;
                        inputs.push(EventKind::WorkflowExecutionCancelRequested { reason });
                    }
                }
                Message::Terminate { reason } => {
                    terminal = Some((
                        EventKind::WorkflowExecutionTerminated { reason },
                        RunStatus::Terminated,
                    ));
                }
                Message::ChildStarted { seq, run_id } => {
                    if let Some(child) = self.state.children.get_mut(&seq)
                        && child.run_id.is_none()
                    {
                        child.run_id = Some(run_id);
                        inputs.push(EventKind::ChildWorkflowExecutionStarted {
                            seq,
                            workflow_id: child.workflow_id.clone(),
                            run_id,
                        });
                    }
                }
                Message::ExternalSignaled { seq, result } => inputs.push(match result {
                    Ok(()) => EventKind::ExternalWorkflowExecutionSignaled { seq },
                    Err(cause) => EventKind::SignalExternalWorkflowExecutionFailed { seq, cause },
                }),
                Message::ExternalCancelRequested { seq, result } => inputs.push(match result {
                    Ok(()) => EventKind::ExternalWorkflowExecutionCancelRequested { seq },
                    Err(cause) => {
                        EventKind::RequestCancelExternalWorkflowExecutionFailed { seq, cause }
                    }
                }),
                Message::ChildStartFailed { seq, cause } => {
                    if let Some(child) = self.state.children.remove(&seq) {
                        inputs.push(EventKind::StartChildWorkflowExecutionFailed {
                            seq,
                            workflow_id: child.workflow_id,
                            cause,
                        });
                    }
                }
                Message::WorkflowTaskCompleted {
                    task,
                    attempt,
                    commands,
                    new_task,
                } => {
                    if completion.is_none() && self.holds_workflow_task(task, attempt) {
                        completion = Some((commands, new_task));
                    }
                }
                Message::WorkflowTaskFailed { task, attempt, why } => {
                    if completion.is_none()
                        && self.holds_workflow_task(task, attempt)
                        && let Some(remote) = self.state.remote.as_mut()
                    {
                        if attempt == 1
                            && let Some(why) = why
                        {
                            // Recorded before what arrived while the task was out.
                            inputs.push(match why {
                                WorkflowTaskFailure::TimedOut => EventKind::WorkflowTaskTimedOut,
                                WorkflowTaskFailure::Failed(failure) => {
                                    EventKind::WorkflowTaskFailed {
                                        failure: failure
                                            .bounded(cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX),
                                    }
                                }
                            });
                            inputs.append(&mut remote.buffered);
                        }
                        remote.task_out = false;
                        remote.attempt += 1;
                        remote.check_ms = remote.task_timeout_ms;
                        let pause = workflow_task_retry_pause_ms(remote.attempt);
                        // Owed at once, or (failing again and again) when the timer fires.
                        remote.task_due = pause == 0;
                        remote.backing_off = pause > 0;
                        let fire_at = now.saturating_add(if pause > 0 {
                            pause
                        } else {
                            remote.task_timeout_ms
                        });
                        remote.task_timer_at = Some(fire_at);
                        effects.push(Effect::ScheduleTimer {
                            timer: TimerId::WorkflowTask { task },
                            fire_at_unix_ms: fire_at,
                        });
                    }
                }
                Message::ChildClosed { seq, outcome } => {
                    if self.state.children.remove(&seq).is_some() {
                        inputs.push(match outcome {
                            ChildOutcome::Completed(result) => {
                                EventKind::ChildWorkflowExecutionCompleted { seq, result }
                            }
                            ChildOutcome::Failed(failure) => {
                                EventKind::ChildWorkflowExecutionFailed { seq, failure }
                            }
                            ChildOutcome::Canceled => {
                                EventKind::ChildWorkflowExecutionCanceled { seq }
                            }
                            ChildOutcome::Terminated(reason) => {
                                EventKind::ChildWorkflowExecutionTerminated { seq, reason }
                            }
                            ChildOutcome::TimedOut => {
                                EventKind::ChildWorkflowExecutionTimedOut { seq }
                            }
                        });
                    }
                }
            }
        }
        if terminal.is_some() {
            // A closing transition runs no code, so it accepts no update: they stay admitted
            // and are aborted with the run (their callers hear it closed).
            inputs.retain(|i| !matches!(i, EventKind::WorkflowExecutionUpdateAccepted { .. }));
        }
        let mut transition = self.transition(inputs, terminal, completion, wait_ended, now)?;
        if update_owed
            && !self.state.status.is_closed()
            && self.state.first_task_at_unix_ms.is_none()
        {
            // The next workflow task carries the request (the runtime holds it).
            owe_workflow_task(&mut self.state, now, &mut transition.effects);
        }
        effects.append(&mut transition.effects);
        transition.effects = effects;
        Ok(transition)
    }

    fn is_current_attempt(&self, seq: Seq, attempt: u32) -> bool {
        self.state
            .activities
            .get(&seq)
            .is_some_and(|a| a.attempt == attempt)
    }

    /// An attempt ended without a result: retry per policy, or give the code the final error.
    fn attempt_failed(
        &mut self,
        seq: Seq,
        end: AttemptEnd,
        now: u64,
        inputs: &mut Vec<EventKind>,
        effects: &mut Vec<Effect>,
    ) {
        let activity = self
            .state
            .activities
            .get_mut(&seq)
            .expect("current attempt");
        let attempt = activity.attempt;
        let retry = match &end {
            AttemptEnd::Failed(f) if f.non_retryable => None,
            AttemptEnd::Failed(f) => Some(activity.options.retry.decide(attempt, &f.error_type)),
            // Temporal retries lost attempts (start-to-close, heartbeat), never queue timeouts.
            AttemptEnd::TimedOut(TimeoutKind::StartToClose | TimeoutKind::Heartbeat) => {
                Some(activity.options.retry.decide(attempt, "Timeout"))
            }
            AttemptEnd::TimedOut(_) => None,
        };
        if let Some(RetryDecision::RetryAfter(delay)) = retry {
            let fire_at = now.saturating_add(ms(delay));
            let within_budget = activity
                .options
                .timeouts
                .schedule_to_close
                .is_none_or(|s2c| fire_at < activity.scheduled_unix_ms.saturating_add(ms(s2c)));
            if within_budget {
                activity.attempt += 1;
                activity.enqueued = false;
                activity.retry_at_unix_ms = Some(fire_at);
                if let AttemptEnd::Failed(f) = &end {
                    activity.last_failure = Some(f.clone());
                }
                effects.push(Effect::ScheduleTimer {
                    timer: TimerId::ActivityRetry {
                        seq,
                        attempt: activity.attempt,
                    },
                    fire_at_unix_ms: fire_at,
                });
                return;
            }
        }
        self.state.activities.remove(&seq);
        inputs.push(match end {
            AttemptEnd::Failed(failure) => EventKind::ActivityTaskFailed {
                seq,
                attempt,
                failure,
            },
            AttemptEnd::TimedOut(timeout) => EventKind::ActivityTaskTimedOut {
                seq,
                attempt,
                timeout,
            },
        });
    }

    fn timer_fired(
        &mut self,
        timer: TimerId,
        now: u64,
        inputs: &mut Vec<EventKind>,
        effects: &mut Vec<Effect>,
        terminal: &mut Option<(EventKind, RunStatus)>,
    ) {
        match timer {
            TimerId::User { seq } => {
                if self.state.timers.remove(&seq).is_some() {
                    inputs.push(EventKind::TimerFired { seq });
                }
            }
            TimerId::ActivityScheduleToStart { seq, attempt } => {
                if self.is_current_attempt(seq, attempt) {
                    let end = AttemptEnd::TimedOut(TimeoutKind::ScheduleToStart);
                    self.attempt_failed(seq, end, now, inputs, effects);
                }
            }
            TimerId::ActivityStartToClose { seq, attempt } => {
                if self.is_current_attempt(seq, attempt) {
                    let end = AttemptEnd::TimedOut(TimeoutKind::StartToClose);
                    self.attempt_failed(seq, end, now, inputs, effects);
                }
            }
            TimerId::ActivityHeartbeat { seq, attempt } => {
                if self.is_current_attempt(seq, attempt) {
                    let end = AttemptEnd::TimedOut(TimeoutKind::Heartbeat);
                    self.attempt_failed(seq, end, now, inputs, effects);
                }
            }
            TimerId::ActivityScheduleToClose { seq } => {
                if let Some(activity) = self.state.activities.remove(&seq) {
                    inputs.push(EventKind::ActivityTaskTimedOut {
                        seq,
                        attempt: activity.attempt,
                        timeout: TimeoutKind::ScheduleToClose,
                    });
                }
            }
            TimerId::ActivityRetry { seq, attempt } => {
                if let Some(activity) = self.state.activities.get_mut(&seq)
                    && activity.attempt == attempt
                    && !activity.enqueued
                {
                    activity.enqueued = true;
                    activity.retry_at_unix_ms = None;
                    effects.extend(enqueue_effects(seq, activity, now));
                }
            }
            TimerId::WorkflowTask { task } => {
                if let Some(remote) = self.state.remote.as_mut()
                    && remote.task == task
                    && remote.backing_off
                    // Not an older check timer of the same task firing before the pause's
                    // own (both are `WorkflowTask` timers): it would cut the pause short.
                    && remote
                        .task_timer_at
                        .is_none_or(|at| now.saturating_add(WORKFLOW_TASK_TIMER_SLACK_MS) >= at)
                {
                    // The pause after repeated failures is over: owed again (the timer's
                    // firing activated the run, which offers it), checked as a fresh one.
                    remote.backing_off = false;
                    remote.task_due = true;
                    remote.check_ms = remote.task_timeout_ms;
                    let fire_at = now.saturating_add(remote.task_timeout_ms);
                    remote.task_timer_at = Some(fire_at);
                    effects.push(Effect::ScheduleTimer {
                        timer,
                        fire_at_unix_ms: fire_at,
                    });
                } else if let Some(remote) = self.state.remote.as_mut()
                    && remote.task == task
                    && remote.task_due
                {
                    // Still owed: check again later, less often each time (the timer's firing
                    // activated the run, which offers the task to its workers again).
                    remote.check_ms = remote
                        .check_ms
                        .max(remote.task_timeout_ms)
                        .saturating_mul(2)
                        .min(WORKFLOW_TASK_CHECK_MAX_MS.max(remote.task_timeout_ms));
                    let fire_at = now.saturating_add(remote.check_ms);
                    remote.task_timer_at = Some(fire_at);
                    effects.push(Effect::ScheduleTimer {
                        timer,
                        fire_at_unix_ms: fire_at,
                    });
                }
            }
            TimerId::FirstWorkflowTask => {
                // The transition runs the code (or owes a remote run its first task) now.
                self.state.first_task_at_unix_ms = None;
            }
            TimerId::WorkflowExecution => {
                if terminal.is_none() {
                    *terminal = Some((EventKind::WorkflowExecutionTimedOut, RunStatus::TimedOut));
                }
            }
        }
    }

    /// Records `inputs`, activates the code if it can see any of them, records its commands,
    /// then the terminal event if any.
    fn transition(
        &mut self,
        inputs: Vec<EventKind>,
        terminal: Option<(EventKind, RunStatus)>,
        completion: Option<(Vec<Command>, bool)>,
        wait_ended: bool,
        now: u64,
    ) -> Result<Transition, RunError> {
        let mut inputs = inputs;
        if let Some(remote) = self.state.remote.as_mut() {
            if terminal.is_some() {
                // What a worker's task had not seen yet happened before the close: recorded
                // now, ahead of it, rather than dropped with the buffer.
                let mut buffered = std::mem::take(&mut remote.buffered);
                buffered.append(&mut inputs);
                inputs = buffered;
            } else if remote.task_out {
                // The worker holding the task has not seen these: they follow its commands.
                remote.buffered.append(&mut inputs);
            } else if !remote.buffered.is_empty() {
                // Buffered for a task that was lost with the node's life: recorded now.
                let mut buffered = std::mem::take(&mut remote.buffered);
                buffered.append(&mut inputs);
                inputs = buffered;
            }
        }
        // A run whose first workflow task waits records its inputs; the code sees them (all of
        // them, the start first) when the wait ends (`wait_ended`).
        let waiting = self.state.first_task_at_unix_ms.is_some();
        let activate =
            terminal.is_none() && !waiting && (wait_ended || inputs.iter().any(is_code_input));
        let mut log = EventLog {
            state: &mut self.state,
            now,
            events: Vec::new(),
        };
        for kind in inputs {
            log.push(kind);
        }
        if waiting && self.executor.is_some() {
            let new_inputs = log.events.iter().filter(|e| is_code_input(&e.kind));
            log.state.unseen_inputs.extend(new_inputs.cloned());
        }
        let mut effects = Vec::new();
        if let Some((commands, new_task)) = completion
            && terminal.is_none()
        {
            remote_task_completed(&mut log, commands, new_task, now, &mut effects);
        } else if activate && log.state.remote.is_some() {
            owe_workflow_task(log.state, now, &mut effects);
        } else if activate && let Some(executor) = self.executor.as_mut() {
            executor.set_history(log.length(), log.state.history_size_bytes);
            // What arrived while the first task waited (none otherwise), then this transition's.
            let mut inputs = std::mem::take(&mut log.state.unseen_inputs);
            inputs.extend(log.events.iter().cloned());
            let commands = executor.activate(&inputs, HashMap::new())?;
            let mut task_completed = false;
            for command in commands {
                // The close event is the run's last event (Temporal's order): the workflow
                // task that closed the run completes before it.
                if command.closes_run() && !task_completed {
                    log.push(EventKind::WorkflowTaskCompleted);
                    task_completed = true;
                }
                apply_command(&mut log, command, now, &mut effects);
            }
            if !task_completed {
                log.push(EventKind::WorkflowTaskCompleted);
            }
        }
        let mut terminal = terminal;
        if terminal.is_none()
            && !log.state.status.is_closed()
            && (log.length() > HISTORY_EVENTS_MAX
                || log.state.history_size_bytes > HISTORY_BYTES_MAX)
        {
            // A history that keeps growing would eventually break replay and the store; the
            // code was told to continue as new well before this (five times the suggestion).
            terminal = Some((
                EventKind::WorkflowExecutionTerminated {
                    reason: format!(
                        "history limit exceeded: {} events, {} bytes (limits {HISTORY_EVENTS_MAX} events, {HISTORY_BYTES_MAX} bytes); continue as new before that",
                        log.length(),
                        log.state.history_size_bytes
                    ),
                },
                RunStatus::Terminated,
            ));
        }
        if let Some((kind, status)) = terminal {
            log.push(kind);
            close(log.state, status, now, &mut effects);
            if status == RunStatus::TimedOut {
                cron_next(log.state, now, None, None, &mut effects);
            }
        }
        Ok(Transition {
            events: log.events,
            effects,
        })
    }

    /// Rebuilds a run from its snapshot and history by running the workflow code over the
    /// history, checking that it makes the recorded commands.
    pub fn replay(
        workflow: &WorkflowFn,
        state: RunState,
        history: &[HistoryEvent],
    ) -> Result<Run, RunError> {
        let Some(first) = history.first() else {
            return Err(RunError::MalformedHistory {
                reason: "history is empty".into(),
            });
        };
        let EventKind::WorkflowExecutionStarted {
            input,
            random_seed,
            memo,
            search_attributes,
            ..
        } = &first.kind
        else {
            return Err(RunError::MalformedHistory {
                reason: format!(
                    "first event is {}, not WorkflowExecutionStarted",
                    first.kind.name()
                ),
            });
        };
        for (index, event) in history.iter().enumerate() {
            if event.event_id != index as EventId + 1 {
                return Err(RunError::MalformedHistory {
                    reason: format!("event at position {} has id {}", index + 1, event.event_id),
                });
            }
        }
        let mut executor = Executor::new(
            workflow,
            &state.workflow_type,
            input.clone(),
            *random_seed,
            first.time_unix_ms,
        );
        executor.set_start(memo.clone(), search_attributes.clone());
        let patches: HashSet<String> = history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::MarkerRecorded {
                    marker_name,
                    details,
                    ..
                } if marker_name == PATCH_MARKER => details.decode::<String>().ok(),
                _ => None,
            })
            .collect();
        executor.set_replaying(true, patches);
        // Sizes of every prefix of the history, as the live run counted them.
        let mut prefix_bytes = Vec::with_capacity(history.len() + 1);
        prefix_bytes.push(0u64);
        for event in history {
            let last = *prefix_bytes.last().expect("never empty");
            prefix_bytes.push(last + event_size_bytes(event));
        }
        let mut group_start = 0;
        for (index, event) in history.iter().enumerate() {
            if event.kind != EventKind::WorkflowTaskCompleted {
                continue;
            }
            let group = &history[group_start..index];
            // The activation saw the history up to its inputs, which lead the group.
            let leading_inputs = group.iter().take_while(|e| is_code_input(&e.kind)).count();
            let seen = group_start + leading_inputs;
            executor.set_history(seen as u64, prefix_bytes[seen]);
            group_start = index + 1;
            let inputs: Vec<HistoryEvent> = group
                .iter()
                .filter(|e| is_code_input(&e.kind))
                .cloned()
                .collect();
            // A closing command's event follows the workflow task that made it.
            let closing = history[index + 1..]
                .iter()
                .take_while(|e| e.kind.is_close_command_event());
            let recorded: Vec<&HistoryEvent> = group
                .iter()
                .filter(|e| e.kind.is_command_event())
                .chain(closing)
                .collect();
            let markers = recorded
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::MarkerRecorded {
                        seq,
                        marker_name,
                        details,
                    } if marker_name == SIDE_EFFECT_MARKER => Some((*seq, details.clone())),
                    _ => None,
                })
                .collect();
            let commands = executor.activate(&inputs, markers)?;
            for i in 0..commands.len().max(recorded.len()) {
                match (commands.get(i), recorded.get(i)) {
                    (Some(command), Some(event)) if command.matches_event(&event.kind) => {}
                    (got, expected) => {
                        return Err(RunError::Nondeterminism {
                            event_id: expected.map_or(event.event_id, |e| e.event_id),
                            expected: expected.map_or_else(
                                || "no further command".to_string(),
                                |e| describe_event(&e.kind),
                            ),
                            got: got.map_or_else(|| "no command".to_string(), Command::describe),
                        });
                    }
                }
            }
        }
        executor.set_replaying(false, HashSet::new());
        let mut state = state;
        // Snapshots written before history sizes were kept say 0.
        state.history_size_bytes = prefix_bytes[history.len()];
        Ok(Run {
            state,
            executor: Some(executor),
        })
    }
}

/// A workflow task is owed to the remote code (unless one is already): a new task, attempt 1,
/// with its check timer.
fn owe_workflow_task(state: &mut RunState, now: u64, effects: &mut Vec<Effect>) {
    let Some(remote) = state.remote.as_mut() else {
        return;
    };
    if remote.task_due {
        return;
    }
    // A task backing off after failures is superseded: new input, a new task, attempt 1.
    remote.backing_off = false;
    remote.task_due = true;
    remote.task += 1;
    remote.attempt = 1;
    remote.check_ms = remote.task_timeout_ms;
    let fire_at = now.saturating_add(remote.task_timeout_ms);
    remote.task_timer_at = Some(fire_at);
    effects.push(Effect::ScheduleTimer {
        timer: TimerId::WorkflowTask { task: remote.task },
        fire_at_unix_ms: fire_at,
    });
}

/// The worker's answer to the task out: its commands, as the executor's would be, then the
/// inputs that arrived meanwhile (which owe the next task). A completion that would close the
/// run past inputs it has not seen is dropped (`Run::completion_is_stale`): those inputs owe a
/// new task instead.
fn remote_task_completed(
    log: &mut EventLog<'_>,
    commands: Vec<Command>,
    new_task: bool,
    now: u64,
    effects: &mut Vec<Effect>,
) {
    let Some(remote) = log.state.remote.as_mut() else {
        return;
    };
    let stale =
        commands.iter().any(Command::closes_run) && remote.buffered.iter().any(is_code_input);
    remote.task_out = false;
    remote.task_due = false;
    remote.task_timer_at = None;
    let buffered = std::mem::take(&mut remote.buffered);
    if !stale {
        let mut task_completed = false;
        for mut command in commands {
            if log.state.status.is_closed() {
                break;
            }
            let known = |id: &str| log.state.updates.get(id).copied();
            match &command {
                // Accepted once only; completed once, after its acceptance.
                Command::AcceptUpdate { update_id, .. } if known(update_id).is_some() => continue,
                Command::CompleteUpdate { update_id, .. }
                    if known(update_id).is_none_or(|u| u.completed_event_id.is_some()) =>
                {
                    continue;
                }
                _ => {}
            }
            if let Command::ContinueAsNew { workflow_type, .. } = &mut command
                && workflow_type.is_empty()
            {
                // The SDK names no type: the same workflow carries on.
                workflow_type.clone_from(&log.state.workflow_type);
            }
            if command.closes_run() && !task_completed {
                log.push(EventKind::WorkflowTaskCompleted);
                task_completed = true;
            }
            apply_command(log, command, now, effects);
        }
        if !task_completed {
            log.push(EventKind::WorkflowTaskCompleted);
        }
    }
    if log.state.status.is_closed() {
        return;
    }
    let owed = new_task || buffered.iter().any(is_code_input);
    for kind in buffered {
        log.push(kind);
    }
    if owed {
        owe_workflow_task(log.state, now, effects);
    }
}

fn describe_event(kind: &EventKind) -> String {
    match kind {
        EventKind::ActivityTaskScheduled {
            seq, activity_type, ..
        } => format!("ActivityTaskScheduled(seq {seq}, {activity_type:?})"),
        EventKind::TimerStarted { seq, duration_ms } => {
            format!("TimerStarted(seq {seq}, {duration_ms} ms)")
        }
        EventKind::MarkerRecorded {
            seq, marker_name, ..
        } => format!("MarkerRecorded(seq {seq}, {marker_name:?})"),
        other => other.name().to_string(),
    }
}

enum AttemptEnd {
    Failed(Failure),
    TimedOut(TimeoutKind),
}

fn enqueue_effects(seq: Seq, activity: &PendingActivity, now: u64) -> Vec<Effect> {
    let mut effects = vec![Effect::EnqueueActivityTask {
        seq,
        attempt: activity.attempt,
        activity_type: activity.activity_type.clone(),
        input: activity.input.clone(),
        options: activity.options.clone(),
    }];
    if let Some(s2s) = activity.options.timeouts.schedule_to_start {
        effects.push(Effect::ScheduleTimer {
            timer: TimerId::ActivityScheduleToStart {
                seq,
                attempt: activity.attempt,
            },
            fire_at_unix_ms: now.saturating_add(ms(s2s)),
        });
    }
    effects
}

fn close(state: &mut RunState, status: RunStatus, now: u64, effects: &mut Vec<Effect>) {
    assert!(!state.status.is_closed(), "run closed twice");
    state.status = status;
    state.closed_unix_ms = Some(now);
    state.activities.clear();
    state.timers.clear();
    state.unseen_inputs.clear();
    if let Some(remote) = state.remote.as_mut() {
        // No task is owed any more; one out is answered "not found".
        remote.task_due = false;
        remote.task_out = false;
        remote.backing_off = false;
        remote.task_timer_at = None;
        remote.buffered.clear();
    }
    for (_, child) in std::mem::take(&mut state.children) {
        if child.parent_close_policy != ParentClosePolicy::Abandon {
            effects.push(Effect::ApplyParentClosePolicy {
                workflow_id: child.workflow_id,
                run_id: child.run_id,
                policy: child.parent_close_policy,
            });
        }
    }
    effects.push(Effect::RunClosed { status });
}

/// A cron run that just closed (completed, failed or timed out) starts the chain's next run,
/// unless the chain's execution timeout ends it first.
fn cron_next(
    state: &RunState,
    now: u64,
    result: Option<Payload>,
    failure: Option<Failure>,
    effects: &mut Vec<Effect>,
) {
    let Some(cron) = &state.cron else {
        return;
    };
    // Validated when the workflow started; an expression that no longer parses (or has no
    // next time) ends the chain rather than failing the close.
    let Some(backoff) = crate::schedule::CronSchedule::parse(&cron.schedule)
        .ok()
        .and_then(|schedule| schedule.backoff_ms(cron.scheduled_unix_ms, now))
    else {
        return;
    };
    if cron
        .chain_deadline_unix_ms
        .is_some_and(|deadline| now.saturating_add(backoff) >= deadline)
    {
        return;
    }
    effects.push(Effect::CronNext {
        cron: CronRun {
            schedule: cron.schedule.clone(),
            first_task_backoff_ms: backoff,
            last_completion_result: result.or_else(|| cron.last_completion_result.clone()),
            continued_failure: failure,
        },
    });
}

/// Records one command of the code and derives its effects.
fn apply_command(log: &mut EventLog<'_>, command: Command, now: u64, effects: &mut Vec<Effect>) {
    log.push(command.to_event());
    match command {
        Command::ScheduleActivity {
            seq,
            activity_type,
            input,
            options,
        } => {
            let activity = PendingActivity {
                activity_type,
                input,
                options,
                attempt: 1,
                scheduled_unix_ms: now,
                last_failure: None,
                enqueued: true,
                retry_at_unix_ms: None,
            };
            effects.extend(enqueue_effects(seq, &activity, now));
            if let Some(s2c) = activity.options.timeouts.schedule_to_close {
                effects.push(Effect::ScheduleTimer {
                    timer: TimerId::ActivityScheduleToClose { seq },
                    fire_at_unix_ms: now.saturating_add(ms(s2c)),
                });
            }
            log.state.activities.insert(seq, activity);
        }
        Command::RequestCancelActivity { seq } => {
            if log.state.activities.remove(&seq).is_some() {
                effects.push(Effect::CancelActivityTask { seq });
            }
            log.push(EventKind::ActivityTaskCanceled { seq });
        }
        Command::StartTimer { seq, duration_ms } => {
            let fire_at = now.saturating_add(duration_ms);
            log.state.timers.insert(seq, fire_at);
            effects.push(Effect::ScheduleTimer {
                timer: TimerId::User { seq },
                fire_at_unix_ms: fire_at,
            });
        }
        Command::CancelTimer { seq } => {
            log.state.timers.remove(&seq);
        }
        Command::RecordMarker { .. } => {}
        Command::CompleteWorkflow { result } => {
            close(log.state, RunStatus::Completed, now, effects);
            cron_next(log.state, now, Some(result), None, effects);
        }
        Command::FailWorkflow { failure } => {
            close(log.state, RunStatus::Failed, now, effects);
            cron_next(log.state, now, None, Some(failure), effects);
        }
        Command::CancelWorkflow => close(log.state, RunStatus::Canceled, now, effects),
        Command::StartChildWorkflow {
            seq,
            workflow_type,
            workflow_id,
            input,
            options,
        } => {
            log.state.children.insert(
                seq,
                PendingChild {
                    workflow_id: workflow_id.clone(),
                    workflow_type: workflow_type.clone(),
                    run_id: None,
                    parent_close_policy: options.parent_close_policy,
                },
            );
            effects.push(Effect::StartChild {
                seq,
                workflow_type,
                workflow_id,
                input,
                options,
            });
        }
        Command::RequestCancelChild { seq } => {
            if let Some(child) = log.state.children.get(&seq) {
                effects.push(Effect::CancelChild {
                    seq,
                    workflow_id: child.workflow_id.clone(),
                    run_id: child.run_id,
                });
            }
        }
        Command::ContinueAsNew {
            workflow_type,
            input,
            memo,
            search_attributes,
        } => {
            // The next run keeps what this one has unless the command says otherwise.
            let memo = memo.unwrap_or_else(|| log.state.memo.clone());
            let search_attributes =
                search_attributes.unwrap_or_else(|| log.state.search_attributes.clone());
            close(log.state, RunStatus::ContinuedAsNew, now, effects);
            effects.push(Effect::ContinueAsNew {
                workflow_type,
                input,
                memo,
                search_attributes,
            });
        }
        Command::UpsertSearchAttributes {
            attributes,
            removed,
        } => {
            log.state.search_attributes.extend(attributes);
            for name in removed {
                log.state.search_attributes.remove(&name);
            }
            effects.push(Effect::SearchAttributesChanged);
        }
        Command::UpsertMemo { memo } => {
            cairn_types::memo::apply(&mut log.state.memo, &memo);
            effects.push(Effect::MemoChanged);
        }
        Command::SignalExternal {
            seq,
            workflow_id,
            run_id,
            signal_name,
            input,
        } => effects.push(Effect::SignalExternal {
            seq,
            workflow_id,
            run_id,
            signal_name,
            input,
        }),
        Command::RequestCancelExternal {
            seq,
            workflow_id,
            run_id,
        } => effects.push(Effect::CancelExternal {
            seq,
            workflow_id,
            run_id,
        }),
        _ => {}
    }
}
