//! The deterministic executor: polls one run's workflow future on one thread, and lets only
//! history resolve the futures it hands out.
//!
//! Workflow code talks to the outside world only through [`WorkflowContext`]. Each call that
//! needs the outside world takes the next sequence number, records a [`Command`], and returns a
//! future that is ready once the run's core holds the resolution for that number — put there by
//! applying a history event. Time (`now`), randomness (`random_u64`, `uuid`) and side effects
//! come from history too, so running the same code over the same history makes the same
//! commands: that is replay.
//!
//! The context and every future share one `Rc<RefCell<RunCore>>`: the executor is
//! single-threaded by design (`!Send`), and whoever hosts it keeps it on one thread.

use cairn_types::limits::{
    HISTORY_BYTES_SUGGEST_CONTINUE, HISTORY_EVENTS_SUGGEST_CONTINUE, INLINE_PAYLOAD_BYTES_MAX,
};
use cairn_types::{
    ChildOptions, Command, EventKind, Failure, HistoryEvent, Memo, Payload, RunId,
    SearchAttributes, Seq, UpdateOutcome, WorkflowId,
};

/// The error type of the rejection of an update no handler is registered for.
pub const UPDATE_HANDLER_NOT_FOUND: &str = "UpdateHandlerNotFound";
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The future a workflow function returns.
pub type WorkflowFuture = Pin<Box<dyn Future<Output = Result<Payload, WorkflowError>>>>;

/// Creates a run's workflow future from its context and input.
pub type WorkflowFn = Rc<dyn Fn(WorkflowContext, Payload) -> WorkflowFuture>;

/// The future an update handler returns: the update's result, or the failure it raised.
pub type UpdateFuture = Pin<Box<dyn Future<Output = Result<Payload, Failure>>>>;

/// Most polls of the root future in one activation before the executor gives up: a workflow
/// that keeps making progress without waiting on history is looping.
pub const POLLS_PER_ACTIVATION_MAX: usize = 10_000;

/// How a workflow ends other than by returning a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow failed: {0}")]
    Failed(Failure),
    /// The code acknowledged a cancellation request.
    #[error("workflow canceled")]
    Canceled,
    /// The run closes and a new run of the same workflow id starts with `input` (fresh
    /// history). Made by `WorkflowContext::continue_as_new`.
    #[error("workflow continues as new")]
    ContinueAsNew { input: Payload },
}

/// How a child workflow ended other than with a result, as its parent sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// The child could not start (its workflow id is in use).
    #[error("child workflow did not start: {cause}")]
    StartFailed { cause: String },
    #[error("child workflow failed: {0}")]
    Failed(Failure),
    #[error("child workflow canceled")]
    Canceled,
    #[error("child workflow terminated: {0}")]
    Terminated(String),
    #[error("child workflow timed out")]
    TimedOut,
}

/// A child's failure fails the parent with a [`CHILD_WORKFLOW_ERROR`] caused by it; other
/// endings fail it with a failure named after them.
///
/// [`CHILD_WORKFLOW_ERROR`]: cairn_types::CHILD_WORKFLOW_ERROR
impl From<ChildError> for WorkflowError {
    fn from(error: ChildError) -> Self {
        let (error_type, message) = match &error {
            ChildError::StartFailed { .. } => ("ChildWorkflowStartFailed", error.to_string()),
            ChildError::Failed(failure) => {
                return Self::Failed(
                    Failure::new(
                        cairn_types::CHILD_WORKFLOW_ERROR,
                        "Child Workflow execution failed",
                    )
                    .caused_by(failure.clone()),
                );
            }
            ChildError::Canceled => ("ChildWorkflowCanceled", error.to_string()),
            ChildError::Terminated(_) => ("ChildWorkflowTerminated", error.to_string()),
            ChildError::TimedOut => ("ChildWorkflowTimedOut", error.to_string()),
        };
        Self::Failed(Failure::new(error_type, message))
    }
}

impl From<Failure> for WorkflowError {
    fn from(failure: Failure) -> Self {
        Self::Failed(failure)
    }
}

/// An activity's failure fails the workflow with an [`ACTIVITY_ERROR`] caused by it (as
/// Temporal's activity failure wraps the application failure, with its message); a timeout or
/// cancellation fails it with a failure named after them.
///
/// [`ACTIVITY_ERROR`]: cairn_types::ACTIVITY_ERROR
impl From<ActivityError> for WorkflowError {
    fn from(error: ActivityError) -> Self {
        match error {
            ActivityError::Failed(failure) => Self::Failed(
                Failure::new(cairn_types::ACTIVITY_ERROR, "Activity task failed")
                    .caused_by(failure),
            ),
            ActivityError::TimedOut(kind) => Self::Failed(Failure::new(
                "ActivityTimedOut",
                format!("activity {kind} timeout"),
            )),
            ActivityError::Canceled => {
                Self::Failed(Failure::new("ActivityCanceled", "activity canceled"))
            }
        }
    }
}

/// How an activity ends other than with a result, as workflow code sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivityError {
    #[error("activity failed: {0}")]
    Failed(Failure),
    #[error("activity timed out ({0})")]
    TimedOut(cairn_types::TimeoutKind),
    #[error("activity canceled")]
    Canceled,
}

impl ActivityError {
    /// The error type name (`Failure::error_type`, or `Timeout`/`Canceled`).
    pub fn error_type(&self) -> &str {
        match self {
            Self::Failed(f) => &f.error_type,
            Self::TimedOut(_) => "Timeout",
            Self::Canceled => "Canceled",
        }
    }
}

type QueryHandler = Rc<dyn Fn(Payload) -> Result<Payload, Failure>>;
type SignalHandler = Rc<RefCell<dyn FnMut(Payload)>>;
type UpdateValidator = Rc<dyn Fn(&Payload) -> Result<(), Failure>>;
type UpdateHandler = Rc<dyn Fn(Payload) -> UpdateFuture>;

/// An update handler and its optional validator.
#[derive(Clone)]
struct UpdateDef {
    validator: Option<UpdateValidator>,
    handler: UpdateHandler,
}

/// Everything a run's futures share.
struct RunCore {
    next_seq: Seq,
    commands: Vec<Command>,
    activity_results: HashMap<Seq, Result<Payload, ActivityError>>,
    fired_timers: HashSet<Seq>,
    /// Marker details recorded in history, keyed by seq (side effects on replay).
    recorded_markers: HashMap<Seq, Payload>,
    /// Patch ids present anywhere in the history being replayed.
    recorded_patches: HashSet<String>,
    patch_answers: HashMap<String, bool>,
    signal_queues: HashMap<String, VecDeque<Payload>>,
    signal_handlers: HashMap<String, SignalHandler>,
    /// Names of the signal channels the code opened (declared signals without a handler).
    signal_channels: BTreeSet<String>,
    query_handlers: HashMap<String, QueryHandler>,
    update_handlers: HashMap<String, UpdateDef>,
    /// Accepted updates whose handler is not registered yet, in acceptance order: each starts
    /// when its handler is registered (as a signal waits in its queue).
    updates_waiting: Vec<(String, String, Payload)>,
    /// Update handlers started and not yet taken over by the executor.
    updates_started: Vec<(String, UpdateFuture)>,
    child_started: HashMap<Seq, Result<RunId, ChildError>>,
    child_results: HashMap<Seq, Result<Payload, ChildError>>,
    /// The run's type (a continue-as-new starts the same type).
    workflow_type: String,
    /// History as this activation sees it: events up to its inputs, and their encoded bytes.
    history_length: u64,
    history_size_bytes: u64,
    search_attributes: SearchAttributes,
    /// The memo the run started with.
    memo: Memo,
    now_unix_ms: u64,
    rng: SplitMix64,
    cancel_requested: bool,
    replaying: bool,
    /// Bumped whenever a future takes a resolution or state changes, so the executor knows
    /// whether another poll can make progress.
    progress: u64,
    /// Wakers of every future that returned `Pending`, woken before each poll of the root so
    /// that combinators which only re-poll woken children (`join_all` over many futures,
    /// `FuturesUnordered`) see every resolution.
    parked: Vec<Waker>,
    /// While a query handler runs: the first call it made that only workflow code may make.
    query: Option<QueryCalls>,
    /// The first command whose payload would not fit one stored event: the commands before
    /// it stand, it and everything after are dropped, and the run fails with this failure.
    payload_fault: Option<(usize, Failure)>,
}

/// What a running query handler has done (see [`Executor::query`]).
#[derive(Default)]
struct QueryCalls {
    forbidden: Option<&'static str>,
}

/// A tiny, stable PRNG (SplitMix64). Stable matters more than quality here: a generator whose
/// output changed with a library upgrade would break replay of every running workflow.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RunCore {
    fn next_seq(&mut self) -> Seq {
        self.next_seq += 1;
        self.next_seq
    }

    fn push(&mut self, command: Command) {
        // A child's input is refused by the start (the child's future fails); every other
        // payload past the bound fails the run, since its event could not be stored.
        let bytes = command.largest_payload_bytes();
        if bytes > INLINE_PAYLOAD_BYTES_MAX
            && !matches!(command, Command::StartChildWorkflow { .. })
            && self.payload_fault.is_none()
        {
            let what = format!("the payload of {}", command.describe());
            self.payload_fault = Some((
                self.commands.len(),
                Failure::payload_too_large(&what, bytes),
            ));
        }
        self.commands.push(command);
        self.progress += 1;
    }

    /// Notes that the code called `call`, which changes the run: refused inside a query
    /// handler (the first such call is reported; the state it touched is restored).
    fn mutating(&mut self, call: &'static str) {
        if let Some(query) = &mut self.query {
            query.forbidden.get_or_insert(call);
        }
    }
}

/// The workflow code's handle on its run. Cheap to clone; every clone is the same run.
#[derive(Clone)]
pub struct WorkflowContext {
    core: Rc<RefCell<RunCore>>,
}

impl fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkflowContext")
    }
}

impl WorkflowContext {
    /// Schedules an activity; the future resolves with its result once history has it.
    pub fn schedule_activity(
        &self,
        activity_type: &str,
        input: Payload,
        options: cairn_types::ActivityOptions,
    ) -> ActivityFuture {
        let mut core = self.core.borrow_mut();
        core.mutating("an activity");
        let seq = core.next_seq();
        core.push(Command::ScheduleActivity {
            seq,
            activity_type: activity_type.to_string(),
            input,
            options,
        });
        ActivityFuture {
            seq,
            core: self.core.clone(),
            done: false,
        }
    }

    /// A durable timer. A zero duration is ready at once and records nothing.
    pub fn sleep(&self, duration: Duration) -> TimerFuture {
        if duration.is_zero() {
            return TimerFuture {
                seq: 0,
                core: self.core.clone(),
                done: true,
                immediate: true,
            };
        }
        let mut core = self.core.borrow_mut();
        core.mutating("sleep (a durable timer)");
        let seq = core.next_seq();
        let duration_ms = u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        core.push(Command::StartTimer { seq, duration_ms });
        TimerFuture {
            seq,
            core: self.core.clone(),
            done: false,
            immediate: false,
        }
    }

    /// The time of the transition being executed (from history), Unix milliseconds.
    pub fn now_unix_ms(&self) -> u64 {
        self.core.borrow().now_unix_ms
    }

    /// A deterministic random number (seeded from the run's start event).
    pub fn random_u64(&self) -> u64 {
        let mut core = self.core.borrow_mut();
        core.mutating("random");
        core.rng.next()
    }

    /// A deterministic UUID (version 4 layout, bits from [`Self::random_u64`]).
    pub fn uuid(&self) -> uuid::Uuid {
        self.core.borrow_mut().mutating("uuid");
        let hi = self.random_u64();
        let lo = self.random_u64();
        uuid::Builder::from_random_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
            .into_uuid()
    }

    /// Runs `f` once and records its result in history; on replay returns the recorded value
    /// without running `f`. For anything nondeterministic that is not worth an activity.
    pub fn side_effect(&self, f: impl FnOnce() -> Payload) -> Payload {
        let (seq, recorded) = {
            let mut core = self.core.borrow_mut();
            core.mutating("side_effect");
            let seq = core.next_seq();
            (seq, core.recorded_markers.remove(&seq))
        };
        let details = match recorded {
            Some(details) => details,
            None => f(),
        };
        self.core.borrow_mut().push(Command::RecordMarker {
            seq,
            marker_name: SIDE_EFFECT_MARKER.into(),
            details: details.clone(),
        });
        details
    }

    /// Whether this run takes the new code path of change `patch_id`: true for runs that
    /// reach this call with the patched code, false for runs whose history predates it.
    /// Stable for the run's lifetime.
    pub fn patched(&self, patch_id: &str) -> bool {
        let mut core = self.core.borrow_mut();
        core.mutating("patched");
        if let Some(answer) = core.patch_answers.get(patch_id) {
            return *answer;
        }
        let answer = !core.replaying || core.recorded_patches.contains(patch_id);
        core.patch_answers.insert(patch_id.to_string(), answer);
        if answer {
            let seq = core.next_seq();
            core.push(Command::RecordMarker {
                seq,
                marker_name: PATCH_MARKER.into(),
                details: Payload::encode(patch_id).expect("a string encodes"),
            });
        }
        answer
    }

    /// Starts a child workflow. Its start commits in the same transaction as this run's
    /// record of it; the returned future resolves with the child's result, and
    /// [`ChildFuture::started`] with its run id once started.
    pub fn start_child(
        &self,
        workflow_type: &str,
        workflow_id: WorkflowId,
        input: Payload,
        options: ChildOptions,
    ) -> ChildFuture {
        let mut core = self.core.borrow_mut();
        core.mutating("a child workflow");
        let seq = core.next_seq();
        core.push(Command::StartChildWorkflow {
            seq,
            workflow_type: workflow_type.to_string(),
            workflow_id,
            input,
            options,
        });
        ChildFuture {
            seq,
            core: self.core.clone(),
            done: false,
            cancel_requested: false,
        }
    }

    /// The error that makes the run continue as new with `input` when the workflow returns it.
    pub fn continue_as_new(&self, input: Payload) -> WorkflowError {
        WorkflowError::ContinueAsNew { input }
    }

    /// Events in this run's history, as of the activation running now.
    pub fn history_length(&self) -> u64 {
        self.core.borrow().history_length
    }

    /// Encoded bytes of this run's history, as of the activation running now.
    pub fn history_size_bytes(&self) -> u64 {
        self.core.borrow().history_size_bytes
    }

    /// True once the history is long or large enough that the run should continue as new
    /// (`HISTORY_EVENTS_SUGGEST_CONTINUE` events or `HISTORY_BYTES_SUGGEST_CONTINUE` bytes);
    /// past five times that, the run is terminated.
    pub fn continue_as_new_suggested(&self) -> bool {
        let core = self.core.borrow();
        core.history_length >= HISTORY_EVENTS_SUGGEST_CONTINUE
            || core.history_size_bytes >= HISTORY_BYTES_SUGGEST_CONTINUE
    }

    /// Merges `attributes` into the workflow's search attributes (validated by the caller).
    pub fn upsert_search_attributes(&self, attributes: SearchAttributes) {
        let mut core = self.core.borrow_mut();
        core.mutating("upsert_search_attributes");
        for (name, value) in &attributes {
            core.search_attributes.insert(name.clone(), value.clone());
        }
        core.push(Command::UpsertSearchAttributes {
            attributes,
            removed: Vec::new(),
        });
    }

    /// The workflow's search attributes: those it started with, as its code has changed them.
    pub fn search_attributes(&self) -> SearchAttributes {
        self.core.borrow().search_attributes.clone()
    }

    /// The memo the run started with.
    pub fn memo(&self) -> Memo {
        self.core.borrow().memo.clone()
    }

    /// Tells the executor that workflow state changed outside any history event (a semaphore
    /// permit released), so waiting conditions are evaluated again.
    pub fn notify(&self) {
        self.core.borrow_mut().progress += 1;
    }

    /// Waits until `predicate` holds; it is re-evaluated after every change.
    pub fn wait_condition<P: FnMut() -> bool>(&self, predicate: P) -> ConditionFuture<P> {
        ConditionFuture {
            predicate,
            core: self.core.clone(),
        }
    }

    /// Waits until `predicate` holds or `timeout` passes; true if the condition held.
    pub async fn wait_condition_timeout(
        &self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> bool {
        if predicate() {
            return true;
        }
        let mut timer = self.sleep(timeout);
        let mut condition = self.wait_condition(predicate);
        let met = std::future::poll_fn(|cx| {
            if Pin::new(&mut condition).poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if met {
            timer.cancel();
        }
        met
    }

    /// Receives signals named `name`, in arrival order, including those that arrived before
    /// this call (unless a handler took them).
    pub fn signal_channel(&self, name: &str) -> SignalChannel {
        self.core
            .borrow_mut()
            .signal_channels
            .insert(name.to_string());
        SignalChannel {
            name: name.to_string(),
            core: self.core.clone(),
        }
    }

    /// Calls `handler` for every signal named `name`: those already buffered now, later ones as
    /// their events are applied (before the workflow future is polled).
    pub fn on_signal(&self, name: &str, handler: impl FnMut(Payload) + 'static) {
        let handler: SignalHandler = Rc::new(RefCell::new(handler));
        let buffered: Vec<Payload> = {
            let mut core = self.core.borrow_mut();
            core.signal_handlers
                .insert(name.to_string(), handler.clone());
            core.progress += 1;
            core.signal_queues
                .remove(name)
                .map(Vec::from)
                .unwrap_or_default()
        };
        for input in buffered {
            (handler.borrow_mut())(input);
        }
    }

    /// Answers queries named `name` with `handler`, which reads (never changes) the workflow's
    /// state.
    pub fn on_query(
        &self,
        name: &str,
        handler: impl Fn(Payload) -> Result<Payload, Failure> + 'static,
    ) {
        self.core
            .borrow_mut()
            .query_handlers
            .insert(name.to_string(), Rc::new(handler));
    }

    /// Handles updates named `name` with `handler`, which may wait on activities, timers and
    /// conditions like the workflow itself; its result (or failure) is the update's outcome.
    /// Updates accepted before this call (on replay, or before the code registered it) start
    /// now.
    pub fn on_update<F, Fut>(&self, name: &str, handler: F)
    where
        F: Fn(Payload) -> Fut + 'static,
        Fut: Future<Output = Result<Payload, Failure>> + 'static,
    {
        self.register_update(name, None, handler);
    }

    /// Like [`on_update`](Self::on_update), with a validator that runs first: a failure it
    /// returns rejects the update, and nothing of it is written to history. It reads the
    /// workflow's state and must not change it (as a query handler).
    pub fn on_update_validated<V, F, Fut>(&self, name: &str, validator: V, handler: F)
    where
        V: Fn(&Payload) -> Result<(), Failure> + 'static,
        F: Fn(Payload) -> Fut + 'static,
        Fut: Future<Output = Result<Payload, Failure>> + 'static,
    {
        self.register_update(name, Some(Rc::new(validator)), handler);
    }

    fn register_update<F, Fut>(&self, name: &str, validator: Option<UpdateValidator>, handler: F)
    where
        F: Fn(Payload) -> Fut + 'static,
        Fut: Future<Output = Result<Payload, Failure>> + 'static,
    {
        let handler: UpdateHandler = Rc::new(move |input| Box::pin(handler(input)));
        let waiting: Vec<(String, Payload)> = {
            let mut core = self.core.borrow_mut();
            core.update_handlers.insert(
                name.to_string(),
                UpdateDef {
                    validator,
                    handler: handler.clone(),
                },
            );
            core.progress += 1;
            let (now, later) = std::mem::take(&mut core.updates_waiting)
                .into_iter()
                .partition(|(_, n, _)| n == name);
            core.updates_waiting = later;
            now.into_iter().map(|(id, _, input)| (id, input)).collect()
        };
        // Started with no borrow held: the handler may call the context.
        for (update_id, input) in waiting {
            let future = handler(input);
            self.core
                .borrow_mut()
                .updates_started
                .push((update_id, future));
        }
    }

    /// Whether cancellation of this run has been requested.
    pub fn is_cancel_requested(&self) -> bool {
        self.core.borrow().cancel_requested
    }

    /// Resolves once cancellation of this run is requested.
    pub fn cancelled(&self) -> ConditionFuture<impl FnMut() -> bool + use<>> {
        let core = self.core.clone();
        self.wait_condition(move || core.borrow().cancel_requested)
    }
}

macro_rules! opaque_debug {
    ($($name:ident $(<$p:ident>)?),*) => {
        $(impl$(<$p>)? fmt::Debug for $name$(<$p>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
        })*
    };
}

opaque_debug!(
    ActivityFuture,
    TimerFuture,
    ConditionFuture<P>,
    SignalChannel,
    ChildFuture
);

/// Marker name of `side_effect` records.
pub const SIDE_EFFECT_MARKER: &str = "SideEffect";
/// Marker name of `patched` records.
pub const PATCH_MARKER: &str = "Patch";

/// An activity's pending result.
pub struct ActivityFuture {
    seq: Seq,
    core: Rc<RefCell<RunCore>>,
    done: bool,
}

impl ActivityFuture {
    /// The activity's sequence number in this run.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Requests cancellation; the future resolves with [`ActivityError::Canceled`] at once
    /// (Temporal's try-cancel) unless the result is already in.
    pub fn cancel(&mut self) {
        let mut core = self.core.borrow_mut();
        if self.done || core.activity_results.contains_key(&self.seq) {
            return;
        }
        let seq = self.seq;
        core.push(Command::RequestCancelActivity { seq });
        core.activity_results
            .insert(seq, Err(ActivityError::Canceled));
    }
}

/// Takes what history resolved for `seq` out of `results` (counting progress), or parks the
/// waker until the next activation.
fn take_or_park<T>(
    core: &RefCell<RunCore>,
    seq: Seq,
    cx: &Context<'_>,
    results: impl FnOnce(&mut RunCore) -> &mut HashMap<Seq, T>,
) -> Poll<T> {
    let mut core = core.borrow_mut();
    match results(&mut core).remove(&seq) {
        Some(result) => {
            core.progress += 1;
            Poll::Ready(result)
        }
        None => {
            core.parked.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Future for ActivityFuture {
    type Output = Result<Payload, ActivityError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "activity future polled after completion");
        let poll = take_or_park(&self.core, self.seq, cx, |core| &mut core.activity_results);
        self.done = poll.is_ready();
        poll
    }
}

/// A child workflow's pending result.
pub struct ChildFuture {
    seq: Seq,
    core: Rc<RefCell<RunCore>>,
    done: bool,
    cancel_requested: bool,
}

impl ChildFuture {
    /// The child's sequence number in this run.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Resolves once the child started (with its run id), or could not start.
    pub fn started(&self) -> impl Future<Output = Result<RunId, ChildError>> + use<> {
        let core = self.core.clone();
        let seq = self.seq;
        std::future::poll_fn(move |cx| {
            let mut core = core.borrow_mut();
            match core.child_started.get(&seq).cloned() {
                Some(started) => {
                    core.progress += 1;
                    Poll::Ready(started)
                }
                None => {
                    core.parked.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    /// Asks the child to cancel (once); its code decides how, and this future then resolves
    /// with how it ended.
    pub fn cancel(&mut self) {
        if self.done || self.cancel_requested {
            return;
        }
        let mut core = self.core.borrow_mut();
        if core.child_results.contains_key(&self.seq) {
            return;
        }
        self.cancel_requested = true;
        let seq = self.seq;
        core.push(Command::RequestCancelChild { seq });
    }
}

impl Future for ChildFuture {
    type Output = Result<Payload, ChildError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "child future polled after completion");
        let poll = take_or_park(&self.core, self.seq, cx, |core| &mut core.child_results);
        self.done = poll.is_ready();
        poll
    }
}

/// A durable timer.
pub struct TimerFuture {
    seq: Seq,
    core: Rc<RefCell<RunCore>>,
    done: bool,
    immediate: bool,
}

impl TimerFuture {
    /// Cancels the timer if it has not fired; the future then never resolves.
    pub fn cancel(&mut self) {
        if self.done || self.immediate {
            return;
        }
        let mut core = self.core.borrow_mut();
        if core.fired_timers.contains(&self.seq) {
            return;
        }
        let seq = self.seq;
        core.push(Command::CancelTimer { seq });
        self.done = true;
    }
}

impl Future for TimerFuture {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.immediate {
            return Poll::Ready(());
        }
        if self.done {
            return Poll::Pending;
        }
        let mut core = self.core.borrow_mut();
        if core.fired_timers.remove(&self.seq) {
            core.progress += 1;
            drop(core);
            self.done = true;
            return Poll::Ready(());
        }
        core.parked.push(cx.waker().clone());
        Poll::Pending
    }
}

/// See [`WorkflowContext::wait_condition`].
pub struct ConditionFuture<P> {
    predicate: P,
    core: Rc<RefCell<RunCore>>,
}

// The predicate is only ever called through `&mut`, never pinned, so the future can move.
impl<P> Unpin for ConditionFuture<P> {}

impl<P: FnMut() -> bool> Future for ConditionFuture<P> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if (this.predicate)() {
            this.core.borrow_mut().progress += 1;
            Poll::Ready(())
        } else {
            this.core.borrow_mut().parked.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// The built-in query answering which handlers the running code declares (Temporal's name
/// for it, so its tools find it too), unless the code registers a query of that name.
pub const WORKFLOW_METADATA_QUERY: &str = "__temporal_workflow_metadata";

/// What [`WORKFLOW_METADATA_QUERY`] answers: the handlers the code has registered so far,
/// in the shape of Temporal's `WorkflowMetadata` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowMetadata {
    pub definition: WorkflowDefinition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDefinition {
    #[serde(rename = "type")]
    pub workflow_type: String,
    pub query_definitions: Vec<HandlerDefinition>,
    pub signal_definitions: Vec<HandlerDefinition>,
    pub update_definitions: Vec<HandlerDefinition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandlerDefinition {
    pub name: String,
}

impl RunCore {
    fn metadata(&self) -> WorkflowMetadata {
        let definitions = |names: Vec<String>| {
            let names: BTreeSet<String> = names.into_iter().collect();
            names
                .into_iter()
                .map(|name| HandlerDefinition { name })
                .collect()
        };
        let mut queries: Vec<String> = self.query_handlers.keys().cloned().collect();
        queries.push(WORKFLOW_METADATA_QUERY.to_string());
        let signals = self
            .signal_handlers
            .keys()
            .chain(self.signal_channels.iter())
            .cloned()
            .collect();
        WorkflowMetadata {
            definition: WorkflowDefinition {
                workflow_type: self.workflow_type.clone(),
                query_definitions: definitions(queries),
                signal_definitions: definitions(signals),
                update_definitions: definitions(self.update_handlers.keys().cloned().collect()),
            },
        }
    }
}

/// Signals of one name (see [`WorkflowContext::signal_channel`]).
pub struct SignalChannel {
    name: String,
    core: Rc<RefCell<RunCore>>,
}

impl SignalChannel {
    /// The next signal's input.
    pub fn recv(&mut self) -> impl Future<Output = Payload> + '_ {
        std::future::poll_fn(move |cx| {
            let mut core = self.core.borrow_mut();
            match core
                .signal_queues
                .get_mut(&self.name)
                .and_then(VecDeque::pop_front)
            {
                Some(input) => {
                    core.progress += 1;
                    Poll::Ready(input)
                }
                None => {
                    core.parked.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    /// A buffered signal, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<Payload> {
        let mut core = self.core.borrow_mut();
        let input = core.signal_queues.get_mut(&self.name)?.pop_front();
        if input.is_some() {
            core.progress += 1;
        }
        input
    }
}

/// What went wrong inside the executor (not inside the workflow's own logic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    #[error(
        "workflow made progress {polls} times in one activation without waiting on history; it is probably looping"
    )]
    Livelock { polls: usize },
    #[error("no query handler named {name:?} (known: {known:?})")]
    UnknownQuery { name: String, known: Vec<String> },
    #[error("query {name:?} failed: {failure}")]
    QueryFailed { name: String, failure: Failure },
    #[error(
        "query handler {name:?} called {call}, which only workflow code may call: a query reads the run and must not change it"
    )]
    QueryNotReadOnly { name: String, call: &'static str },
    /// The workflow's code (its body, a signal handler, a condition) panicked. The instance
    /// is unusable; the run is held until its code is fixed, as a failing workflow task is
    /// retried on Temporal.
    #[error("workflow code panicked: {message}")]
    Panicked { message: String },
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// One run's workflow instance: the root future and the core it shares with its context.
pub struct Executor {
    core: Rc<RefCell<RunCore>>,
    root: Option<WorkflowFuture>,
    /// Update handlers running, in acceptance order.
    updates: Vec<(String, UpdateFuture)>,
    outcome_reported: bool,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("finished", &self.root.is_none())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Creates the instance of a run of `workflow_type`; `workflow` runs on the first
    /// activation.
    pub fn new(
        workflow: &WorkflowFn,
        workflow_type: &str,
        input: Payload,
        random_seed: u64,
        start_unix_ms: u64,
    ) -> Self {
        let core = Rc::new(RefCell::new(RunCore {
            next_seq: 0,
            commands: Vec::new(),
            activity_results: HashMap::new(),
            fired_timers: HashSet::new(),
            recorded_markers: HashMap::new(),
            recorded_patches: HashSet::new(),
            patch_answers: HashMap::new(),
            signal_queues: HashMap::new(),
            signal_handlers: HashMap::new(),
            signal_channels: BTreeSet::new(),
            query_handlers: HashMap::new(),
            update_handlers: HashMap::new(),
            updates_waiting: Vec::new(),
            updates_started: Vec::new(),
            child_started: HashMap::new(),
            child_results: HashMap::new(),
            workflow_type: workflow_type.to_string(),
            history_length: 0,
            history_size_bytes: 0,
            search_attributes: SearchAttributes::new(),
            memo: Memo::new(),
            now_unix_ms: start_unix_ms,
            rng: SplitMix64(random_seed),
            cancel_requested: false,
            replaying: false,
            progress: 0,
            parked: Vec::new(),
            query: None,
            payload_fault: None,
        }));
        let root = workflow(WorkflowContext { core: core.clone() }, input);
        Self {
            core,
            root: Some(root),
            updates: Vec::new(),
            outcome_reported: false,
        }
    }

    /// What the run started with besides its input: its memo and search attributes (set
    /// before the first activation).
    pub fn set_start(&mut self, memo: Memo, search_attributes: SearchAttributes) {
        let mut core = self.core.borrow_mut();
        core.memo = memo;
        core.search_attributes = search_attributes;
    }

    /// Marks the following activations as replay of recorded history (`patched` then answers
    /// from `patches`, and side effects from the recorded markers passed to `activate`).
    pub fn set_replaying(&mut self, replaying: bool, patches: HashSet<String>) {
        let mut core = self.core.borrow_mut();
        core.replaying = replaying;
        core.recorded_patches = patches;
    }

    /// Sets what the next activation's code sees of its history (`history_length`,
    /// `history_size_bytes`): the events up to that activation's inputs.
    pub fn set_history(&mut self, length: u64, size_bytes: u64) {
        let mut core = self.core.borrow_mut();
        core.history_length = length;
        core.history_size_bytes = size_bytes;
    }

    /// Applies code-visible events, polls the workflow until it waits on history, and returns
    /// the commands it produced. `recorded_markers` are the side-effect values recorded by this
    /// activation when it ran live (empty when live).
    pub fn activate(
        &mut self,
        events: &[HistoryEvent],
        recorded_markers: HashMap<Seq, Payload>,
    ) -> Result<Vec<Command>, ExecutorError> {
        let mut handler_calls = Vec::new();
        let mut update_calls: Vec<(String, UpdateHandler, Payload)> = Vec::new();
        {
            let mut core = self.core.borrow_mut();
            core.recorded_markers = recorded_markers;
            for event in events {
                core.now_unix_ms = core.now_unix_ms.max(event.time_unix_ms);
                match &event.kind {
                    EventKind::ActivityTaskCompleted { seq, result, .. } => {
                        core.activity_results.insert(*seq, Ok(result.clone()));
                    }
                    EventKind::ActivityTaskFailed { seq, failure, .. } => {
                        core.activity_results
                            .insert(*seq, Err(ActivityError::Failed(failure.clone())));
                    }
                    EventKind::ActivityTaskTimedOut { seq, timeout, .. } => {
                        core.activity_results
                            .insert(*seq, Err(ActivityError::TimedOut(*timeout)));
                    }
                    EventKind::TimerFired { seq } => {
                        core.fired_timers.insert(*seq);
                    }
                    EventKind::WorkflowExecutionSignaled { signal_name, input } => {
                        match core.signal_handlers.get(signal_name) {
                            Some(handler) => handler_calls.push((handler.clone(), input.clone())),
                            None => core
                                .signal_queues
                                .entry(signal_name.clone())
                                .or_default()
                                .push_back(input.clone()),
                        }
                    }
                    EventKind::WorkflowExecutionCancelRequested { .. } => {
                        core.cancel_requested = true;
                    }
                    EventKind::WorkflowExecutionUpdateAccepted {
                        update_id,
                        name,
                        input,
                        ..
                    } => match core.update_handlers.get(name) {
                        Some(def) => update_calls.push((
                            update_id.clone(),
                            def.handler.clone(),
                            input.clone(),
                        )),
                        None => core.updates_waiting.push((
                            update_id.clone(),
                            name.clone(),
                            input.clone(),
                        )),
                    },
                    EventKind::ChildWorkflowExecutionStarted { seq, run_id, .. } => {
                        core.child_started.insert(*seq, Ok(*run_id));
                    }
                    EventKind::StartChildWorkflowExecutionFailed { seq, cause, .. } => {
                        let error = ChildError::StartFailed {
                            cause: cause.clone(),
                        };
                        core.child_started.insert(*seq, Err(error.clone()));
                        core.child_results.insert(*seq, Err(error));
                    }
                    EventKind::ChildWorkflowExecutionCompleted { seq, result } => {
                        core.child_results.insert(*seq, Ok(result.clone()));
                    }
                    EventKind::ChildWorkflowExecutionFailed { seq, failure } => {
                        core.child_results
                            .insert(*seq, Err(ChildError::Failed(failure.clone())));
                    }
                    EventKind::ChildWorkflowExecutionCanceled { seq } => {
                        core.child_results.insert(*seq, Err(ChildError::Canceled));
                    }
                    EventKind::ChildWorkflowExecutionTerminated { seq, reason } => {
                        core.child_results
                            .insert(*seq, Err(ChildError::Terminated(reason.clone())));
                    }
                    EventKind::ChildWorkflowExecutionTimedOut { seq } => {
                        core.child_results.insert(*seq, Err(ChildError::TimedOut));
                    }
                    _ => {}
                }
                core.progress += 1;
            }
        }
        // Handlers run with no borrow held: they may call the context. A panic in the code is
        // an error of this activation, not of the thread running it.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (handler, input) in handler_calls {
                (handler.borrow_mut())(input);
            }
            for (update_id, handler, input) in update_calls {
                let future = handler(input);
                self.updates.push((update_id, future));
            }
            self.poll_until_waiting()
        }));
        match ran {
            Ok(polled) => polled?,
            Err(panic) => {
                self.root = None;
                return Err(ExecutorError::Panicked {
                    message: panic_message(panic.as_ref()),
                });
            }
        }
        Ok(std::mem::take(&mut self.core.borrow_mut().commands))
    }

    /// Bytes of user data the successor of a continue-as-new with `input` starts with (it
    /// inherits the memo and search attributes).
    fn successor_bytes(&self, input: &Payload) -> usize {
        let core = self.core.borrow();
        cairn_types::start_bytes(input, &core.memo, &core.search_attributes)
    }

    fn poll_until_waiting(&mut self) -> Result<(), ExecutorError> {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..POLLS_PER_ACTIVATION_MAX {
            let Some(root) = self.root.as_mut() else {
                return Ok(());
            };
            let before = self.core.borrow().progress;
            // Every parked future may be ready now; wake them all (with no borrow held).
            let parked = std::mem::take(&mut self.core.borrow_mut().parked);
            for waker in parked {
                waker.wake();
            }
            let polled = root.as_mut().poll(&mut cx);
            if polled.is_pending() {
                self.poll_updates(&mut cx);
            }
            let fault = self.core.borrow_mut().payload_fault.take();
            if let Some((at, failure)) = fault {
                self.root = None;
                let mut core = self.core.borrow_mut();
                core.commands.truncate(at);
                if !self.outcome_reported {
                    self.outcome_reported = true;
                    core.push(Command::FailWorkflow { failure });
                }
                return Ok(());
            }
            if let Poll::Ready(outcome) = polled {
                self.root = None;
                let command = match outcome {
                    Ok(result) if result.len() > INLINE_PAYLOAD_BYTES_MAX => {
                        Command::FailWorkflow {
                            failure: Failure::payload_too_large(
                                "the workflow's result",
                                result.len(),
                            ),
                        }
                    }
                    Ok(result) => Command::CompleteWorkflow { result },
                    Err(WorkflowError::Failed(failure)) => Command::FailWorkflow {
                        failure: failure.bounded(INLINE_PAYLOAD_BYTES_MAX),
                    },
                    Err(WorkflowError::Canceled) => Command::CancelWorkflow,
                    Err(WorkflowError::ContinueAsNew { input }) => {
                        let carried = self.successor_bytes(&input);
                        if carried > INLINE_PAYLOAD_BYTES_MAX {
                            Command::FailWorkflow {
                                failure: Failure::payload_too_large(
                                    "the continue-as-new input with the memo and search attributes it carries",
                                    carried,
                                ),
                            }
                        } else {
                            Command::ContinueAsNew {
                                workflow_type: self.core.borrow().workflow_type.clone(),
                                input,
                                memo: None,
                                search_attributes: None,
                            }
                        }
                    }
                };
                if !self.outcome_reported {
                    self.outcome_reported = true;
                    self.core.borrow_mut().push(command);
                }
                return Ok(());
            }
            if self.core.borrow().progress == before {
                return Ok(());
            }
        }
        Err(ExecutorError::Livelock {
            polls: POLLS_PER_ACTIVATION_MAX,
        })
    }

    /// Polls every running update handler once (started ones first join the list); a
    /// handler that finished records its update's completion.
    fn poll_updates(&mut self, cx: &mut Context<'_>) {
        let started = std::mem::take(&mut self.core.borrow_mut().updates_started);
        self.updates.extend(started);
        let mut index = 0;
        while index < self.updates.len() {
            let Poll::Ready(outcome) = self.updates[index].1.as_mut().poll(cx) else {
                index += 1;
                continue;
            };
            let (update_id, _) = self.updates.remove(index);
            let outcome = match outcome {
                Ok(result) if result.len() > INLINE_PAYLOAD_BYTES_MAX => UpdateOutcome::Failure(
                    Failure::payload_too_large("the update's result", result.len()),
                ),
                Ok(result) => UpdateOutcome::Success(result),
                Err(failure) => UpdateOutcome::Failure(failure.bounded(INLINE_PAYLOAD_BYTES_MAX)),
            };
            self.core
                .borrow_mut()
                .push(Command::CompleteUpdate { update_id, outcome });
            // Handlers started by this one's calls join on the next round.
            let started = std::mem::take(&mut self.core.borrow_mut().updates_started);
            self.updates.extend(started);
        }
    }

    /// Whether update `name` with `input` would be accepted: its handler is registered and its
    /// validator (if any) passes. Runs the validator read-only, as a query.
    pub fn validate_update(&self, name: &str, input: &Payload) -> Result<(), Failure> {
        let def = {
            let core = self.core.borrow();
            match core.update_handlers.get(name) {
                Some(def) => def.clone(),
                None => {
                    let mut known: Vec<&String> = core.update_handlers.keys().collect();
                    known.sort();
                    return Err(Failure::new(
                        UPDATE_HANDLER_NOT_FOUND,
                        format!("no update handler named {name:?} (known: {known:?})"),
                    )
                    .non_retryable());
                }
            }
        };
        let Some(validator) = def.validator else {
            return Ok(());
        };
        match self.read_only("update validator", "ValidatorPanicked", || validator(input)) {
            Ok(verdict) => verdict,
            Err(call) => Err(Failure::new(
                "ValidatorNotReadOnly",
                format!(
                    "the validator of update {name:?} called {call}, which only workflow code may call: a validator reads the run and must not change it"
                ),
            )
            .non_retryable()),
        }
    }

    /// Runs `f` (user code that must only read the run: a query handler, an update
    /// validator) and restores whatever it touched; a panic in it becomes a failure.
    /// `Err(call)`: it called `call`, which only workflow code may call.
    fn read_only<T>(
        &self,
        what: &str,
        panicked_type: &str,
        f: impl FnOnce() -> Result<T, Failure>,
    ) -> Result<Result<T, Failure>, &'static str> {
        let saved = {
            let mut core = self.core.borrow_mut();
            core.query = Some(QueryCalls::default());
            (
                core.next_seq,
                core.commands.len(),
                core.rng.clone(),
                core.patch_answers.clone(),
                core.search_attributes.clone(),
                core.recorded_markers.clone(),
            )
        };
        // No borrow is held while user code runs; a panic in it is its failure.
        let answer =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
                Err(Failure::new(
                    panicked_type,
                    format!("{what} panicked: {}", panic_message(panic.as_ref())),
                ))
            });
        let forbidden = {
            let mut core = self.core.borrow_mut();
            let (next_seq, commands, rng, patches, attributes, markers) = saved;
            core.next_seq = next_seq;
            core.commands.truncate(commands);
            core.rng = rng;
            core.patch_answers = patches;
            core.search_attributes = attributes;
            core.recorded_markers = markers;
            core.query.take().and_then(|q| q.forbidden)
        };
        match forbidden {
            Some(call) => Err(call),
            None => Ok(answer),
        }
    }

    /// True once the workflow future has returned.
    pub fn is_finished(&self) -> bool {
        self.root.is_none()
    }

    /// Runs a query handler against the current state.
    pub fn query(&self, name: &str, args: Payload) -> Result<Payload, ExecutorError> {
        let handler = {
            let core = self.core.borrow();
            match core.query_handlers.get(name) {
                Some(handler) => handler.clone(),
                None if name == WORKFLOW_METADATA_QUERY => {
                    return Ok(Payload::encode(&core.metadata())
                        .unwrap_or_else(|_| Payload::encode(&()).expect("unit encodes")));
                }
                None => {
                    let mut known: Vec<String> = core.query_handlers.keys().cloned().collect();
                    known.sort();
                    return Err(ExecutorError::UnknownQuery {
                        name: name.to_string(),
                        known,
                    });
                }
            }
        };
        // What a handler could touch is restored afterwards: a query never changes the run,
        // whatever its handler calls (a forbidden call is reported as the query's error).
        let answer = self
            .read_only("query handler", "QueryPanicked", || handler(args))
            .map_err(|call| ExecutorError::QueryNotReadOnly {
                name: name.to_string(),
                call,
            })?;
        answer.map_err(|failure| ExecutorError::QueryFailed {
            name: name.to_string(),
            failure,
        })
    }
}
