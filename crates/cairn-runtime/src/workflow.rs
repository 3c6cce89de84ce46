//! The workflow actor: one per active run, pinned to one thread (workflow code is `!Send`).
//!
//! Its input enum lists every reason it wakes up. `Load` rebuilds the run from the store
//! (snapshot + history, replayed); `Deliver` and `Wake` add mailbox work; `Flush` runs one
//! transition over everything pending and commits it through the committer — history events,
//! the new snapshot, consumed mailbox/timer/task keys, new tasks and timers — as one request;
//! side effects (dispatching tasks, arming in-memory timers, waking result waiters) happen only
//! after that commit. While a commit is in flight new deliveries queue, so the next transition
//! takes them all.

use crate::error::{QueryError, UpdateError};
use crate::local::Local;
use crate::matching::WorkflowTask;
use crate::messages::ShardMsg;
use crate::messages::{Delivery, TaskReply, WorkflowMsg};
use crate::ops::{Check, CommitError, Op, Verify};
use crate::plan::{AfterCommit, Planner};
use crate::records::{InboxItem, Outcome, RunRecord, decode, encode, load_record};
use crate::updates::{UpdateRequest, UpdateState, Updates};
use cairn_core::{
    Effect, Message, RemoteCode, Run, RunStatus, StartArgs, TimerId, Transition, WorkflowFn,
};
use cairn_store::{Pages, Store, Transaction};
use cairn_types::{Failure, HistoryEvent, RunId};
use ractor::thread_local::ThreadLocalActor;
use ractor::{ActorProcessingErr, ActorRef};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// How long after a transition failed to commit the run is woken again.
pub const RETRY_AFTER_FAILED_COMMIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Most mailbox entries one transition consumes.
pub const MAILBOX_BATCH_MAX: usize = 256;

/// Mailbox entries one transaction of a run's mailbox read returns; a longer mailbox is read
/// on from where the page ended, a page per transaction (entries are at most
/// `INLINE_PAYLOAD_BYTES_MAX` each, so a page stays far inside FoundationDB's 5 s).
pub const MAILBOX_PAGE_ROWS: usize = 256;

/// Start-up arguments (sent to the actor's thread, hence `Send`).
pub struct WorkflowArgs<S: Store> {
    pub shared: Arc<Local<S>>,
    pub shard_ref: ActorRef<ShardMsg>,
    pub run_id: RunId,
    pub shard: u32,
    pub epoch: u64,
}

/// The actor.
pub struct WorkflowActor<S>(std::marker::PhantomData<S>);

impl<S> Default for WorkflowActor<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// The actor hosted on the node's own runtime, for a node on one thread
/// (`NodeConfig::is_single_threaded`, the simulator's): its state (the run's executor, not
/// `Send`) is wrapped in `SendWrapper`, which checks every use — a poll, a borrow, the drop —
/// happens on the thread that made it. A current-thread runtime runs every task on that one
/// thread, so the check always holds there; anywhere else it would panic, never misbehave.
pub struct OnCallerThread<S>(WorkflowActor<S>);

impl<S> Default for OnCallerThread<S> {
    fn default() -> Self {
        Self(WorkflowActor::default())
    }
}

impl<S: Store> ractor::Actor for OnCallerThread<S> {
    type Msg = WorkflowMsg;
    type State = send_wrapper::SendWrapper<WorkflowState<S>>;
    type Arguments = WorkflowArgs<S>;

    fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> impl std::future::Future<Output = Result<Self::State, ActorProcessingErr>> + Send {
        send_wrapper::SendWrapper::new(async move {
            ThreadLocalActor::pre_start(&self.0, myself, args)
                .await
                .map(send_wrapper::SendWrapper::new)
        })
    }

    fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> impl std::future::Future<Output = Result<(), ActorProcessingErr>> + Send {
        send_wrapper::SendWrapper::new(ThreadLocalActor::post_stop(&self.0, myself, state))
    }

    fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> impl std::future::Future<Output = Result<(), ActorProcessingErr>> + Send {
        send_wrapper::SendWrapper::new(ThreadLocalActor::handle(&self.0, myself, message, state))
    }
}

/// The actor's state: lives on one thread.
pub struct WorkflowState<S: Store> {
    shared: Arc<Local<S>>,
    shard_ref: ActorRef<ShardMsg>,
    run_id: RunId,
    shard: u32,
    epoch: u64,
    /// The run's record as last committed (shared, not copied, by each transition's plan).
    record: Option<Arc<RunRecord>>,
    /// Chunks the stored run record occupies (0: stored whole).
    record_chunks: u32,
    run: Option<Run>,
    held: Option<String>,
    pending: Vec<Delivery>,
    /// Keys of deliveries taken but not yet committed, so none is taken twice.
    taken: BTreeSet<Vec<u8>>,
    flush_scheduled: bool,
    /// The last mailbox key read (see `read_inbox`).
    inbox_seen: Option<Vec<u8>>,
    /// Loads that failed on a store error in a row (the next waits longer).
    load_failures: u32,
    /// The shard was told the run is closed (`ShardMsg::Closed`).
    told_closed: bool,
    /// Completions of workflow tasks taken into the pending transition, answered after it
    /// commits.
    task_replies: Vec<TaskReply>,
    /// Queries of a remote run waiting for a worker.
    queries: crate::remote_queries::RemoteQueries,
    /// Updates admitted or accepted, followed by callers.
    updates: Updates,
    /// Workflow tasks whose completions are in the pending transition: their updates are
    /// settled once it commits.
    completed_tasks: Vec<(u32, u32)>,
}

/// Why a run could not be loaded.
enum LoadError {
    /// Retried with backoff.
    Store(cairn_store::StoreError),
    /// The run cannot run code (replay failed, unknown type, malformed record): held.
    Held(String),
}

impl From<cairn_store::StoreError> for LoadError {
    fn from(error: cairn_store::StoreError) -> Self {
        Self::Store(error)
    }
}

/// First wait before a failed load is tried again (doubling per failure).
pub const LOAD_RETRY_FIRST_MS: u64 = 50;
/// Longest wait between loads of a run whose loads keep failing.
pub const LOAD_RETRY_MAX_MS: u64 = 5_000;

fn load_retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    Duration::from_millis((LOAD_RETRY_FIRST_MS << doublings).min(LOAD_RETRY_MAX_MS))
}

impl<S: Store> ThreadLocalActor for WorkflowActor<S> {
    type Msg = WorkflowMsg;
    type State = WorkflowState<S>;
    type Arguments = WorkflowArgs<S>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.shared
            .metrics
            .active_actors
            .fetch_add(1, Ordering::Relaxed);
        Ok(WorkflowState {
            shared: args.shared,
            shard_ref: args.shard_ref,
            run_id: args.run_id,
            shard: args.shard,
            epoch: args.epoch,
            record: None,
            record_chunks: 0,
            run: None,
            held: None,
            pending: Vec::new(),
            taken: BTreeSet::new(),
            flush_scheduled: false,
            inbox_seen: None,
            load_failures: 0,
            told_closed: false,
            task_replies: Vec::new(),
            queries: Default::default(),
            updates: Updates::default(),
            completed_tasks: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .shared
            .metrics
            .active_actors
            .fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkflowMsg::Load => match state.load().await {
                Ok(()) => {
                    state.load_failures = 0;
                    state.schedule_flush(&myself);
                    state.tell_if_closed();
                    state.record_buffered_inputs(&myself);
                    state.offer_workflow_task();
                }
                Err(LoadError::Held(reason)) => {
                    tracing::error!(run_id = %state.run_id, %reason, "run held");
                    state.held = Some(reason);
                }
                Err(LoadError::Store(error)) => {
                    // A store error is transient as far as the run knows: load again with
                    // backoff, keeping what was delivered meanwhile.
                    state.load_failures = state.load_failures.saturating_add(1);
                    let wait = load_retry_delay(state.load_failures);
                    tracing::warn!(run_id = %state.run_id, %error, retry_in_ms = wait.as_millis() as u64, "loading the run failed; retrying");
                    myself.send_after(wait, || WorkflowMsg::Load);
                }
            },
            WorkflowMsg::Deliver(deliveries) => {
                for delivery in deliveries {
                    state.accept(delivery);
                }
                state.schedule_flush(&myself);
            }
            WorkflowMsg::Wake => {
                if let Err(e) = state.read_inbox().await {
                    // Read again shortly; what was delivered in memory stays pending.
                    tracing::warn!(run_id = %state.run_id, error = %e, "mailbox read failed; retrying");
                    myself.send_after(RETRY_AFTER_FAILED_COMMIT, || WorkflowMsg::Wake);
                    return Ok(());
                }
                state.schedule_flush(&myself);
            }
            WorkflowMsg::Flush => {
                state.flush_scheduled = false;
                let span = tracing::info_span!(
                    "transition",
                    run_id = %state.run_id,
                    shard = state.shard,
                    workflow_id = state.record.as_ref().map(|r| r.workflow_id.as_str()).unwrap_or(""),
                );
                if !tracing::Instrument::instrument(state.flush(&myself), span).await {
                    myself.stop(None);
                    return Ok(());
                }
                state.schedule_flush(&myself);
                state.tell_if_closed();
                state.owe_task_for_updates(&myself);
                state.offer_workflow_task();
            }
            WorkflowMsg::TakeWorkflowTask(reply) => {
                let task = state.take_workflow_task(&myself).await;
                let _ = reply.send(task);
            }
            WorkflowMsg::CompleteWorkflowTask {
                task,
                attempt,
                earlier_holder,
                commands,
                query_results,
                new_task,
                rejections,
                reply,
            } => {
                let mut commands = commands;
                for command in &mut commands {
                    // An acceptance that does not repeat its request: the one admitted here.
                    if let cairn_types::Command::AcceptUpdate {
                        update_id,
                        name,
                        input,
                        ..
                    } = command
                        && name.is_empty()
                        && let Some(request) =
                            state.updates.requests().find(|r| r.update_id == *update_id)
                    {
                        name.clone_from(&request.name);
                        input.clone_from(&request.input);
                    }
                }
                if let Some(next_event_id) = earlier_holder {
                    // An acceptance whose request was admitted only by the earlier holder
                    // cannot be recorded whole: not adopted; the task is handed out again.
                    let unknown_update = commands.iter().any(|c| {
                        matches!(c, cairn_types::Command::AcceptUpdate { name, .. } if name.is_empty())
                    });
                    let adopted = !unknown_update
                        && state
                            .run
                            .as_mut()
                            .is_some_and(|r| r.adopt_workflow_task(task, attempt, next_event_id));
                    if !adopted {
                        let _ = reply.send(Err(crate::MatchingError::WorkflowTaskNotFound));
                        return Ok(());
                    }
                } else {
                    // Query ids are this life's own: an earlier holder's answers are not for
                    // the queries waiting here.
                    for (id, answer) in query_results {
                        state.queries.answer(id, answer);
                    }
                }
                for (update_id, failure) in rejections {
                    state.updates.reject(&update_id, failure);
                }
                // Queries the worker left unanswered wait for the next task.
                state.queries.detach(task, attempt);
                let Some(run) = state
                    .run
                    .as_ref()
                    .filter(|r| r.holds_workflow_task(task, attempt))
                else {
                    let _ = reply.send(Err(crate::MatchingError::WorkflowTaskNotFound));
                    return Ok(());
                };
                let oversized = commands.iter().find(|c| {
                    c.largest_payload_bytes() > cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX
                });
                let refusal = match oversized {
                    Some(command) => Some(format!(
                        "{} carries {} bytes; the limit is {} bytes",
                        command.describe(),
                        command.largest_payload_bytes(),
                        cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX
                    )),
                    None => run.refusal(&commands),
                };
                if let Some(reason) = refusal {
                    // Not applied; the task is handed out again (the worker sees why).
                    let _ = reply.send(Err(crate::MatchingError::WorkflowTaskRefused(
                        reason.clone(),
                    )));
                    state.updates.detach(task, attempt);
                    let failure = Failure::new("CommandsRefused", reason).non_retryable();
                    state.accept(Delivery {
                        item: InboxItem::Message(Message::WorkflowTaskFailed {
                            task,
                            attempt,
                            why: Some(cairn_core::WorkflowTaskFailure::Failed(failure)),
                        }),
                        consume: Vec::new(),
                    });
                    state.schedule_flush(&myself);
                    return Ok(());
                }
                if run.completion_is_stale(&commands) {
                    let _ = reply.send(Err(crate::MatchingError::WorkflowTaskStale));
                } else {
                    state.task_replies.push(reply);
                }
                state.completed_tasks.push((task, attempt));
                state.accept(Delivery {
                    item: InboxItem::Message(Message::WorkflowTaskCompleted {
                        task,
                        attempt,
                        commands,
                        new_task,
                    }),
                    consume: Vec::new(),
                });
                state.schedule_flush(&myself);
            }
            WorkflowMsg::AnswerQuery { id, answer } => {
                match answer {
                    Some(answer) => {
                        state.queries.answer(id, answer);
                    }
                    None => state.queries.expire(id),
                }
                state.offer_workflow_task();
            }
            WorkflowMsg::FailWorkflowTask { task, attempt, why } => {
                state.queries.detach(task, attempt);
                state.updates.detach(task, attempt);
                if state
                    .run
                    .as_ref()
                    .is_some_and(|r| r.holds_workflow_task(task, attempt))
                {
                    state.accept(Delivery {
                        item: InboxItem::Message(Message::WorkflowTaskFailed {
                            task,
                            attempt,
                            why,
                        }),
                        consume: Vec::new(),
                    });
                    state.schedule_flush(&myself);
                }
            }
            WorkflowMsg::Query { name, args, reply } => {
                if !state.ensure_started(&myself).await {
                    let _ = reply.send(Err(QueryError::Unavailable));
                    myself.stop(None);
                    return Ok(());
                }
                if state.held.is_none() && state.run.as_ref().is_some_and(|r| r.remote().is_some())
                {
                    // The code is a worker's: the query waits for one.
                    if let Some(id) = state.queries.add(name, args, reply) {
                        myself.send_after(
                            Duration::from_millis(crate::remote_queries::REMOTE_QUERY_WAIT_MS),
                            move || WorkflowMsg::AnswerQuery { id, answer: None },
                        );
                        state.offer_workflow_task();
                    }
                    return Ok(());
                }
                let answer = match (&state.run, &state.held) {
                    (_, Some(reason)) => Err(QueryError::Held(reason.clone())),
                    (Some(run), None) => run
                        .query(&name, args)
                        .map_err(|e| QueryError::Handler(e.to_string())),
                    (None, None) => Err(QueryError::NotStarted),
                };
                let _ = reply.send(answer);
            }
            WorkflowMsg::Update { request, reply } => {
                if !state.ensure_started(&myself).await {
                    let _ = reply.send(Err(UpdateError::Unavailable));
                    myself.stop(None);
                    return Ok(());
                }
                let answer = state.admit_update(&myself, request).await;
                let _ = reply.send(answer);
            }
            WorkflowMsg::PollUpdate { update_id, reply } => {
                if !state.ensure_started(&myself).await {
                    let _ = reply.send(Err(UpdateError::Unavailable));
                    myself.stop(None);
                    return Ok(());
                }
                let answer = match state.find_update(&update_id).await {
                    Some(found) => found,
                    None => Err(UpdateError::NotFound { update_id }),
                };
                let _ = reply.send(answer);
            }
            WorkflowMsg::Passivate(reply) => {
                // A remote run whose worker holds a task stays: the task lives only here.
                let task_out = state
                    .run
                    .as_ref()
                    .and_then(Run::remote)
                    .is_some_and(|r| r.task_out);
                let idle = state.pending.is_empty()
                    && !state.flush_scheduled
                    && !task_out
                    && state.queries.is_empty()
                    && state.updates.is_empty();
                let _ = reply.send(idle);
                if idle {
                    state
                        .shared
                        .metrics
                        .passivations
                        .fetch_add(1, Ordering::Relaxed);
                    myself.stop(None);
                }
            }
        }
        Ok(())
    }
}

impl<S: Store> WorkflowState<S> {
    /// Runs the first transition now if the run has not started in this actor, so a call
    /// that arrives right after its start (accepted perhaps by another node, and only in the
    /// store yet) finds it. False if the actor must stop.
    async fn ensure_started(&mut self, myself: &ActorRef<WorkflowMsg>) -> bool {
        if self.run.is_none()
            && self.held.is_none()
            && self.pending.is_empty()
            && let Err(e) = self.read_inbox().await
        {
            tracing::warn!(run_id = %self.run_id, error = %e, "mailbox read failed");
        }
        self.run.is_some()
            || self.held.is_some()
            || self.pending.is_empty()
            || self.flush(myself).await
    }

    /// Update `update_id` if this run knows it: accepted (in its snapshot: completed, or
    /// in flight) or admitted here.
    async fn find_update(
        &mut self,
        update_id: &str,
    ) -> Option<Result<watch::Receiver<UpdateState>, UpdateError>> {
        let state = self.run.as_ref()?.state();
        if let Some(entry) = state.updates.get(update_id).copied() {
            let closed = state.status.is_closed();
            return Some(match entry.completed_event_id {
                Some(event_id) => self
                    .read_update_outcome(event_id)
                    .await
                    .map(|outcome| settled(UpdateState::Completed(outcome))),
                None if closed => Ok(settled(UpdateState::Completed(
                    cairn_types::UpdateOutcome::Failure(crate::updates::closed_before_completion()),
                ))),
                None => Ok(self.updates.watch_accepted(update_id)),
            });
        }
        self.updates.watch(update_id).map(Ok)
    }

    /// The outcome recorded by the `WorkflowExecutionUpdateCompleted` event `event_id`.
    async fn read_update_outcome(
        &self,
        event_id: cairn_types::EventId,
    ) -> Result<cairn_types::UpdateOutcome, UpdateError> {
        let key = self.shared.keys.history_event(&self.run_id, event_id);
        let read = async {
            let mut tx = self.shared.store.begin()?;
            tx.get(&key).await
        };
        let value = read
            .await
            .map_err(|e| UpdateError::Store(e.to_string()))?
            .ok_or_else(|| UpdateError::Store(format!("history event {event_id} is missing")))?;
        let event: HistoryEvent =
            decode("history event", &value).map_err(|e| UpdateError::Store(e.to_string()))?;
        match event.kind {
            cairn_types::EventKind::WorkflowExecutionUpdateCompleted { outcome, .. } => Ok(outcome),
            other => Err(UpdateError::Store(format!(
                "history event {event_id} is {}, not an update's completion",
                other.name()
            ))),
        }
    }

    /// Admits `request`, or finds the update of its id: the channel that follows it.
    async fn admit_update(
        &mut self,
        myself: &ActorRef<WorkflowMsg>,
        request: UpdateRequest,
    ) -> Result<watch::Receiver<UpdateState>, UpdateError> {
        if let Some(reason) = &self.held {
            return Err(UpdateError::Held(reason.clone()));
        }
        if let Some(found) = self.find_update(&request.update_id).await {
            return found;
        }
        let Some(run) = &self.run else {
            return Err(UpdateError::NotStarted);
        };
        let state = run.state();
        if state.status.is_closed() {
            return Err(UpdateError::Closed);
        }
        let admitted = self.updates.admitted();
        if state.updates_in_flight() + admitted >= cairn_types::limits::UPDATES_IN_FLIGHT_MAX {
            return Err(UpdateError::TooManyInFlight);
        }
        if state.updates.len() + admitted >= cairn_types::limits::UPDATES_TOTAL_MAX {
            return Err(UpdateError::TooMany);
        }
        // Code in this process validates the request in the next transition; a remote run
        // hands it out with its next workflow task.
        let local = run.remote().is_none().then(|| update_delivery(&request));
        let receiver = self.updates.admit(request);
        match local {
            Some(delivery) => {
                self.accept(delivery);
                self.schedule_flush(myself);
            }
            None => self.owe_task_for_updates(myself),
        }
        Ok(receiver)
    }

    /// A remote run with admitted updates no task carries owes its workers one (a task owed
    /// already carries them when taken; one out, or backing off, is followed by another).
    fn owe_task_for_updates(&mut self, myself: &ActorRef<WorkflowMsg>) {
        let Some(remote) = self.run.as_ref().and_then(Run::remote) else {
            return;
        };
        if remote.task_due || remote.backing_off || !self.updates.unsent() {
            return;
        }
        let Some(delivery) = self.updates.requests().next().map(update_delivery) else {
            return;
        };
        self.accept(delivery);
        self.schedule_flush(myself);
    }

    /// Tells callers what a committed transition did to their updates.
    fn settle_updates(&mut self, transition: &Transition, tasks_applied: bool) {
        for event in &transition.events {
            match &event.kind {
                cairn_types::EventKind::WorkflowExecutionUpdateAccepted { update_id, .. } => {
                    self.updates.accepted(update_id);
                }
                cairn_types::EventKind::WorkflowExecutionUpdateCompleted {
                    update_id,
                    outcome,
                    ..
                } => self.updates.completed(update_id, outcome.clone()),
                _ => {}
            }
        }
        for effect in &transition.effects {
            match effect {
                Effect::UpdateRejected { update_id, failure } => {
                    self.updates.reject(update_id, failure.clone());
                }
                Effect::RunClosed { status } => {
                    self.updates.closed(*status == RunStatus::ContinuedAsNew);
                }
                _ => {}
            }
        }
        for (task, attempt) in std::mem::take(&mut self.completed_tasks) {
            if tasks_applied {
                self.updates.unprocessed(task, attempt);
            } else {
                self.updates.detach(task, attempt);
            }
        }
    }

    /// A remote run loaded with inputs buffered for a task lost with the node's previous life
    /// records them now (its check timer would, later), so its next task carries them.
    fn record_buffered_inputs(&mut self, myself: &ActorRef<WorkflowMsg>) {
        let Some(remote) = self.run.as_ref().and_then(Run::remote) else {
            return;
        };
        if remote.task_out || remote.buffered.is_empty() {
            return;
        }
        let task = remote.task;
        self.accept(Delivery {
            item: InboxItem::Message(Message::TimerFired {
                timer: TimerId::WorkflowTask { task },
            }),
            consume: Vec::new(),
        });
        self.schedule_flush(myself);
    }

    /// Queues the run's owed workflow task for its workers, if it is a remote run with one.
    fn offer_workflow_task(&self) {
        let Some(run) = &self.run else {
            return;
        };
        let Some(remote) = run.remote() else {
            return;
        };
        let task_owed = !run.state().status.is_closed()
            && remote.task_due
            && !remote.task_out
            && remote.buffered.is_empty();
        let query_alone = !remote.task_due && !remote.task_out && self.queries.any_waiting();
        if self.held.is_none() && (task_owed || query_alone) {
            self.shared.matching.offer_workflow_task(
                &remote.task_queue,
                crate::matching::WorkflowTaskRef {
                    shard: self.shard,
                    run_id: self.run_id,
                },
            );
        }
    }

    /// Hands the owed workflow task out: the history as committed, a token, and a timer that
    /// takes the task back if the worker holds it past its timeout.
    async fn take_workflow_task(&mut self, myself: &ActorRef<WorkflowMsg>) -> Option<WorkflowTask> {
        if self.held.is_some() {
            return None;
        }
        let record = self.record.clone()?;
        let run = self.run.as_mut()?;
        let Some((task, attempt)) = run.take_workflow_task() else {
            return self.take_query_task(&record).await;
        };
        let remote = run.remote()?.clone();
        // Nothing is held, so the run's state is as committed: the history the worker reads.
        let next_event_id = run.state().next_event_id;
        let queries = self.queries.attach(task, attempt);
        let history = match self.read_history().await {
            Ok(history) => history,
            Err(error) => {
                tracing::warn!(run_id = %self.run_id, %error, "reading history for a workflow task failed");
                // Not handed out: owed again, and offered again by its check timer.
                myself.send_after(RETRY_AFTER_FAILED_COMMIT, move || {
                    WorkflowMsg::FailWorkflowTask {
                        task,
                        attempt,
                        why: None,
                    }
                });
                return None;
            }
        };
        let timeout = Duration::from_millis(remote.task_timeout_ms);
        myself.send_after(timeout, move || WorkflowMsg::FailWorkflowTask {
            task,
            attempt,
            why: Some(cairn_core::WorkflowTaskFailure::TimedOut),
        });
        Some(WorkflowTask {
            token: self.shared.matching.workflow_token(
                self.shard,
                self.run_id,
                task,
                attempt,
                next_event_id,
            ),
            attempt,
            scheduled_unix_ms: remote
                .task_timer_at
                .map_or(0, |at| at.saturating_sub(remote.task_timeout_ms)),
            queries,
            updates: self.updates.attach(task, attempt),
            ..self.task_of(&record, remote, history)
        })
    }

    /// A task of this run with `history`: the run's fields, attempt 1, no queries (the caller
    /// sets what differs).
    fn task_of(
        &self,
        record: &RunRecord,
        remote: RemoteCode,
        history: Vec<HistoryEvent>,
    ) -> WorkflowTask {
        WorkflowTask {
            token: String::new(),
            namespace: record.namespace.clone(),
            workflow_id: record.workflow_id.clone(),
            run_id: self.run_id,
            workflow_type: record.start.workflow_type.clone(),
            task_queue: remote.task_queue,
            attempt: 1,
            history,
            previous_run: record.previous_run,
            parent: record
                .parent
                .as_ref()
                .map(|p| (p.workflow_id.clone(), p.run_id)),
            task_timeout_ms: remote.task_timeout_ms,
            scheduled_unix_ms: self.shared.now_ms(),
            queries: Vec::new(),
            query: None,
            updates: Vec::new(),
        }
    }

    /// Hands a waiting query out on its own, when the run has no workflow task owed or out
    /// (the worker replays the history to its last completed task and answers).
    async fn take_query_task(&mut self, record: &RunRecord) -> Option<WorkflowTask> {
        let remote = self.run.as_ref()?.remote()?.clone();
        if remote.task_due || remote.task_out {
            return None;
        }
        let query = self.queries.take_alone()?;
        let history = match self.read_history().await {
            Ok(history) => history,
            Err(error) => {
                tracing::warn!(run_id = %self.run_id, %error, "reading history for a query task failed");
                self.queries.answer(
                    query.id,
                    Err(format!("reading the workflow's history failed: {error}")),
                );
                return None;
            }
        };
        Some(WorkflowTask {
            token: self
                .shared
                .matching
                .query_token(self.shard, self.run_id, query.id),
            query: Some(query),
            ..self.task_of(record, remote, history)
        })
    }

    /// The run's history as committed.
    async fn read_history(&self) -> Result<Vec<HistoryEvent>, cairn_store::StoreError> {
        crate::shared::read_history(&self.shared.store, &self.shared.keys, &self.run_id, None).await
    }

    fn accept(&mut self, delivery: Delivery) {
        if delivery.consume.iter().any(|k| self.taken.contains(k)) {
            return;
        }
        self.taken.extend(delivery.consume.iter().cloned());
        self.pending.push(delivery);
    }

    /// Once the run is closed (in the store), tells the shard, which passivates the actor at
    /// its next sweep: a closed run's memory is not kept for `actor_idle_ms`.
    fn tell_if_closed(&mut self) {
        if self.told_closed
            || !self
                .record
                .as_ref()
                .and_then(|r| r.state.as_ref())
                .is_some_and(|s| s.status.is_closed())
        {
            return;
        }
        self.told_closed = true;
        let _ = self.shard_ref.cast(ShardMsg::Closed {
            run_id: self.run_id,
        });
    }

    fn schedule_flush(&mut self, myself: &ActorRef<WorkflowMsg>) {
        if !self.flush_scheduled
            && !self.pending.is_empty()
            && self.held.is_none()
            && self.record.is_some()
        {
            self.flush_scheduled = myself.cast(WorkflowMsg::Flush).is_ok();
        }
    }

    fn workflow_fn(&self, workflow_type: &str) -> Result<WorkflowFn, String> {
        let def = self
            .shared
            .registry
            .workflow_def(workflow_type)
            .ok_or_else(|| {
                format!("workflow type {workflow_type:?} is not registered on this node")
            })?
            .clone();
        Ok(Rc::new(move |ctx, input| def(ctx, input)))
    }

    /// Activation: snapshot + history from the store, replayed through the code.
    async fn load(&mut self) -> Result<(), LoadError> {
        let keys = &self.shared.keys;
        let mut tx = self.shared.store.begin()?;
        let Some((record, stored)) =
            load_record::<RunRecord>(&mut tx, keys, &keys.run(&self.run_id), "run").await?
        else {
            return Err(LoadError::Held("no such run in the store".into()));
        };
        self.record_chunks = stored.chunk_count();
        drop(tx);
        if let Some(state) = &record.state {
            // Up to what the record says it holds (read a page per transaction).
            let history = crate::shared::read_history(
                &self.shared.store,
                keys,
                &self.run_id,
                Some(state.next_event_id),
            )
            .await
            .map_err(|e| match e {
                e if e.is_retryable() => LoadError::Store(e),
                e => LoadError::Held(e.to_string()),
            })?;
            let run = if record.start.remote.is_some() {
                Run::resume_remote(state.clone())
            } else {
                let workflow = self
                    .workflow_fn(&record.start.workflow_type)
                    .map_err(LoadError::Held)?;
                Run::replay(&workflow, state.clone(), &history)
            };
            self.run = Some(run.map_err(|e| LoadError::Held(e.to_string()))?);
        }
        self.shared
            .metrics
            .activations
            .fetch_add(1, Ordering::Relaxed);
        self.record = Some(Arc::new(record));
        Ok(())
    }

    /// The part of the run's mailbox this actor has not read: after the last entry it took.
    fn unread_mail(&self) -> (Vec<u8>, Vec<u8>) {
        let (begin, end) = self.shared.keys.inbox_of_run(self.shard, &self.run_id);
        match &self.inbox_seen {
            Some(seen) => (cairn_store::keyspace::key_after(seen), end),
            None => (begin, end),
        }
    }

    /// Takes the mailbox entries written since the last read, a page of [`MAILBOX_PAGE_ROWS`]
    /// per transaction. Entry keys are versionstamped, so mail committed after a read sorts
    /// after everything that read saw: reading on from the last key seen finds all new mail
    /// without rescanning entries already taken, and a mailbox of any length is read whole
    /// without one transaction reading it all. Each page is taken as it is read, so a failed
    /// page keeps the ones before it.
    async fn read_inbox(&mut self) -> Result<(), cairn_store::StoreError> {
        let (begin, end) = self.unread_mail();
        let mut pages = Pages::new(begin, end, MAILBOX_PAGE_ROWS);
        while let Some(rows) = pages.next(&self.shared.store).await? {
            let items = rows
                .iter()
                .map(|row| decode::<InboxItem>("mailbox entry", &row.value))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(last) = rows.last() {
                self.inbox_seen = Some(last.key.clone());
            }
            for (item, row) in items.into_iter().zip(rows) {
                self.accept(Delivery {
                    item,
                    consume: vec![row.key],
                });
            }
        }
        Ok(())
    }

    /// The check a closing transition makes inside its commit: no mail reached the run's
    /// mailbox since this actor last read it. Mail committed before the close is therefore
    /// either in this transition or fails it (the range read is conflict-tracked, so mail that
    /// commits between the batch's read and its commit fails the batch, which re-checks); the
    /// actor then starts over from the store and reads it. Mail after the close is refused
    /// by its sender's own check of the workflow record.
    fn no_unread_mail(&self) -> Check {
        let (begin, end) = self.unread_mail();
        let run_id = self.run_id;
        Check::first_in(begin, end, move |first: Option<&[u8]>| match first {
            None => Ok(()),
            Some(_) => Err(crate::ClientError::MailUnread { run_id }),
        })
    }

    /// One transition over the pending deliveries. Returns false if the actor must stop (its
    /// in-memory run may now be ahead of the store).
    async fn flush(&mut self, myself: &ActorRef<WorkflowMsg>) -> bool {
        if self.pending.is_empty() || self.held.is_some() {
            return true;
        }
        let Some(record) = self.record.clone() else {
            // Not loaded yet (a load is being retried): the deliveries wait for it.
            return true;
        };
        let take = self.pending.len().min(MAILBOX_BATCH_MAX);
        let mut batch: Vec<Delivery> = self.pending.drain(..take).collect();
        // Signals and cancel requests further back join the batch whatever its bound: should
        // this transition close the run, every acknowledged message it has read belongs in the
        // history before the close. (Mail is read only once committed, so these are few
        // unless a flood is arriving; each is bounded by `INLINE_PAYLOAD_BYTES_MAX`.)
        if self.pending.iter().any(Delivery::is_client_message) {
            let (messages, rest): (Vec<Delivery>, Vec<Delivery>) =
                std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(Delivery::is_client_message);
            batch.extend(messages);
            self.pending = rest;
        }
        let now = self.shared.now_ms().max(record.created_unix_ms);
        let mut transition = Transition::default();
        let mut messages: Vec<Message> = Vec::new();
        let mut start = false;
        for delivery in &batch {
            match &delivery.item {
                InboxItem::Start => start = true,
                InboxItem::Message(m) => messages.push(m.clone()),
            }
        }
        if self.run.is_none() {
            if !start && record.state.is_none() {
                tracing::error!(run_id = %self.run_id, "messages for a run that never started");
                return false;
            }
            if record.state.is_none() {
                let args = StartArgs {
                    workflow_type: record.start.workflow_type.clone(),
                    input: record.start.input.clone(),
                    random_seed: record.start.random_seed,
                    timeouts: record.start.timeouts,
                    execution_started_unix_ms: record.start.execution_started_unix_ms,
                    memo: record.start.memo.clone(),
                    search_attributes: record.start.search_attributes.clone(),
                    cron: record.start.cron.clone(),
                };
                let started = match &record.start.remote {
                    Some(remote) => Run::start_remote(
                        args,
                        RemoteCode::new(remote.task_queue.clone(), remote.task_timeout_ms),
                        now,
                    ),
                    None => match self.workflow_fn(&record.start.workflow_type) {
                        Ok(workflow) => Run::start(&workflow, args, now),
                        Err(reason) => {
                            self.held = Some(reason);
                            return true;
                        }
                    },
                };
                match started {
                    Ok((run, t)) => {
                        self.run = Some(run);
                        transition = t;
                    }
                    Err(e) => {
                        self.held = Some(e.to_string());
                        return true;
                    }
                }
            }
        }
        let Some(mut run) = self.run.take() else {
            return true;
        };
        // Mail reaching a run that continued as new is the successor's: a signal sent as the
        // run closed would otherwise be consumed here and lost.
        let forwarded: Vec<Op> = match &record.outcome {
            Some(Outcome::ContinuedAsNew { new_run_id }) => messages
                .iter()
                .filter(|m| {
                    matches!(
                        m,
                        Message::Signal { .. }
                            | Message::CancelRequested { .. }
                            | Message::Terminate { .. }
                    )
                })
                .map(|m| Op::Mail {
                    shard: self.shard,
                    run_id: *new_run_id,
                    item: encode(&InboxItem::Message(m.clone())),
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut checks = self.screen_attempt_timers(&run, &mut messages).await;
        if !messages.is_empty() {
            match run.handle(messages, now) {
                Ok(mut t) => {
                    transition.events.append(&mut t.events);
                    transition.effects.append(&mut t.effects);
                }
                Err(e) => {
                    tracing::error!(run_id = %self.run_id, error = %e, "run held");
                    // Nothing was committed; the possibly advanced instance is dropped.
                    self.held = Some(e.to_string());
                    return true;
                }
            }
        }
        let was_closed = record
            .state
            .as_ref()
            .is_some_and(|state| state.status.is_closed());
        if !was_closed && run.state().status.is_closed() {
            checks.push(self.no_unread_mail());
        }
        let consumed: Vec<Vec<u8>> = batch
            .iter()
            .flat_map(|d| d.consume.iter().cloned())
            .collect();
        let new_tasks = transition
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::EnqueueActivityTask { .. }))
            .count();
        // Units for the new tasks; returned if the transition does not commit.
        let room = self
            .shared
            .workers
            .capacity
            .reserve_for_transition(new_tasks);
        let planner = Planner {
            room: room.held(),
            epoch: self.epoch,
            keys: &self.shared.keys,
            registry: &self.shared.registry,
            entropy: &self.shared.config.entropy,
            shard_count: self.shared.config.shard_count,
            shard: self.shard,
            run_id: self.run_id,
            record_chunks: self.record_chunks,
            remote_activities: self.shared.config.remote_activities,
        };
        let (mut ops, after, new_record) =
            planner.plan(&record, run.state(), &transition, &consumed, now);
        self.shared
            .metrics
            .activity_tasks_deferred
            .fetch_add(after.deferred_tasks, Ordering::Relaxed);
        ops.extend(forwarded);
        self.run = Some(run);
        let fence = Some((self.shard, self.epoch));
        let verify = Some((
            self.shared.keys.run(&self.run_id),
            Verify::RunVersionAtLeast(new_record.version),
        ));
        if self.shared.crash_at(crate::CrashPoint::BeforeCommit) {
            return false;
        }
        match self.shared.commit(ops, checks, fence, verify).await {
            Ok(()) => {}
            Err(CommitError::Fenced { shard, epoch }) => {
                tracing::warn!(run_id = %self.run_id, shard, epoch, "lost the shard; dropping the run");
                return false;
            }
            Err(CommitError::Stopped) => return false,
            Err(e) => {
                tracing::warn!(run_id = %self.run_id, error = %e, "transition did not commit");
                // This actor stops (its run may be ahead of the store); have the shard wake a
                // fresh one shortly, so mailbox entries taken by this one are not left waiting
                // for the next message. Timers are re-delivered by the shard anyway; activity
                // results live only in memory, so they are handed back with the wake-up (the
                // run ignores one whose attempt the store already recorded).
                let run_id = self.run_id;
                let results: Vec<Delivery> = batch
                    .into_iter()
                    .filter(|d| {
                        matches!(
                            d.item,
                            InboxItem::Message(
                                Message::ActivityCompleted { .. } | Message::ActivityFailed { .. }
                            )
                        )
                    })
                    .collect();
                // The commit may have landed all the same (its outcome could not be learned):
                // the tasks it would have handed to the workers are deferred if so, before a
                // fresh actor loads the run, or nothing would ever start them.
                let stranded = after.tasks;
                let (shared, shard_ref) = (self.shared.clone(), self.shard_ref.clone());
                let (shard, epoch) = (self.shard, self.epoch);
                self.shared.runtime.spawn(async move {
                    tokio::time::sleep(RETRY_AFTER_FAILED_COMMIT).await;
                    crate::dispatch::defer_if_landed(&shared, shard, epoch, stranded).await;
                    let _ = shard_ref.cast(ShardMsg::Wake { run_id });
                    if !results.is_empty() {
                        let _ = shard_ref.cast(ShardMsg::Deliver {
                            run_id,
                            deliveries: results,
                        });
                    }
                });
                return false;
            }
        }
        self.shared
            .metrics
            .transitions
            .fetch_add(1, Ordering::Relaxed);
        for key in &consumed {
            self.taken.remove(key);
        }
        // A completion took effect iff its task's `WorkflowTaskCompleted` was written (one
        // whose run closed meanwhile, or that turned stale in the batch, did not).
        let applied = transition
            .events
            .iter()
            .any(|e| e.kind == cairn_types::EventKind::WorkflowTaskCompleted);
        for reply in self.task_replies.drain(..) {
            let _ = reply.send(if applied {
                Ok(())
            } else {
                Err(crate::MatchingError::WorkflowTaskStale)
            });
        }
        self.settle_updates(&transition, applied);
        warn_if_history_grew_past_suggestion(&record, &new_record);
        self.record = Some(Arc::new(new_record));
        self.record_chunks = after.record_chunks;
        if self
            .shared
            .crash_at(crate::CrashPoint::AfterCommitBeforeEffects)
        {
            return false;
        }
        self.release(myself, after, consumed, room);
        true
    }

    /// Drops attempt timers that no longer mean a timeout, and returns the checks the
    /// transition needs for the rest:
    /// - a schedule-to-start timer of an attempt that started (its claim's mark is in the
    ///   store) is stale; for one that has not, the transition checks inside its commit that
    ///   no claim marked it meanwhile, so a start and its schedule-to-start timeout never both
    ///   land;
    /// - a heartbeat timer of an attempt that is beating on this node (its write was late) is
    ///   not a timeout; the attempt's recorder is told to write at once, which re-arms it;
    /// - a schedule-to-close timer of an activity whose first attempt is due to time out
    ///   schedule-to-start (an attempt never picked up, its two deadlines the same) brings that
    ///   timeout along: it wins the tie, as on Temporal, even when its own timer's mail comes in
    ///   a later batch.
    async fn screen_attempt_timers(&self, run: &Run, messages: &mut Vec<Message>) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut kept = Vec::with_capacity(messages.len());
        for message in messages.drain(..) {
            let Message::TimerFired { timer } = &message else {
                kept.push(message);
                continue;
            };
            match *timer {
                TimerId::ActivityScheduleToStart { seq, attempt } => {
                    if let Some(check) = self.unstarted(seq, attempt).await {
                        checks.push(check);
                        kept.push(message);
                    }
                }
                TimerId::ActivityScheduleToClose { seq } => {
                    // The first attempt's: it was enqueued when the activity was scheduled
                    // (a retry's schedule-to-start runs from its own enqueue, later).
                    let due = run.state().activities.get(&seq).filter(|a| {
                        a.attempt == 1
                            && a.enqueued
                            && crate::timers::schedule_to_start_deadline(
                                &a.options.timeouts,
                                a.scheduled_unix_ms,
                            )
                            .is_some_and(|deadline| deadline <= self.shared.now_ms())
                    });
                    if let Some(activity) = due
                        && let Some(check) = self.unstarted(seq, activity.attempt).await
                    {
                        checks.push(check);
                        kept.push(Message::TimerFired {
                            timer: TimerId::ActivityScheduleToStart {
                                seq,
                                attempt: activity.attempt,
                            },
                        });
                    }
                    kept.push(message);
                }
                TimerId::ActivityHeartbeat { seq, attempt } => {
                    let timeout = run
                        .state()
                        .activities
                        .get(&seq)
                        .filter(|a| a.attempt == attempt)
                        .and_then(|a| a.options.timeouts.heartbeat);
                    let beating = timeout.is_some_and(|within| {
                        self.shared
                            .workers
                            .beating(self.run_id, seq, attempt, within)
                    });
                    if !beating {
                        kept.push(message);
                    }
                }
                _ => kept.push(message),
            }
        }
        *messages = kept;
        checks
    }

    /// For attempt `attempt` of activity `seq` timing out schedule-to-start: `None` if it
    /// started (its claim's mark is in the store), else the commit's check that no claim
    /// marked it meanwhile, so a start and its schedule-to-start timeout never both land.
    async fn unstarted(&self, seq: u32, attempt: u32) -> Option<Check> {
        let key = self
            .shared
            .keys
            .attempt(self.shard, &self.run_id, seq, attempt);
        let started = match self.shared.store.begin() {
            Ok(mut tx) => matches!(tx.get(&key).await, Ok(Some(_))),
            Err(_) => false,
        };
        (!started).then(|| {
            Check::key(key, |value| match value {
                None => Ok(()),
                Some(_) => Err(crate::worker::refused(
                    "the attempt started before its schedule-to-start timeout landed",
                )),
            })
        })
    }

    /// Side effects of a committed transition.
    fn release(
        &self,
        _myself: &ActorRef<WorkflowMsg>,
        mut after: AfterCommit,
        mut consumed: Vec<Vec<u8>>,
        mut room: crate::pool::Room,
    ) {
        consumed.append(&mut after.cleared_timers);
        if !consumed.is_empty() {
            let _ = self.shard_ref.cast(ShardMsg::RemoveTimers(consumed));
        }
        if !after.timers.is_empty() {
            let _ = self.shard_ref.cast(ShardMsg::AddTimers(after.timers));
        }
        for seq in after.cancels {
            self.shared.workers.cancel(self.run_id, seq);
        }
        for task in after.tasks {
            // The planner handed over exactly as many tasks as the room holds units.
            let Some(unit) = room.unit() else {
                break;
            };
            self.shared
                .workers
                .dispatch(self.shared.clone(), self.epoch, task, unit, false);
        }
        if after.deferred {
            self.shared
                .workers
                .capacity
                .deferred(self.shard, self.epoch);
        }
        if let Some(status) = after.closed {
            if let Some(record) = &self.record {
                let started = record
                    .state
                    .as_ref()
                    .map_or(record.created_unix_ms, |s| s.started_unix_ms);
                let ran_for = Duration::from_millis(self.shared.now_ms().saturating_sub(started));
                self.shared
                    .metrics
                    .record_closed(&record.start.workflow_type, status, ran_for);
            }
            let outcome = after.outcome.unwrap_or(match status {
                RunStatus::TimedOut => Outcome::TimedOut,
                _ => Outcome::Failed(Failure::new("Unknown", "run closed without an outcome")),
            });
            self.shared.notify_closed(self.run_id, outcome);
        }
    }
}

/// The in-memory delivery of an update request to its run's state machine.
fn update_delivery(request: &UpdateRequest) -> Delivery {
    Delivery {
        item: InboxItem::Message(Message::Update {
            update_id: request.update_id.clone(),
            name: request.name.clone(),
            input: request.input.clone(),
        }),
        consume: Vec::new(),
    }
}

/// A channel that holds `state` and nothing more will come.
fn settled(state: UpdateState) -> watch::Receiver<UpdateState> {
    watch::channel(state).1
}

/// Logs a warning once, at the transition whose history crosses the continue-as-new
/// suggestion (the code sees `continue_as_new_suggested()` from then on; five times further
/// the run is terminated).
fn warn_if_history_grew_past_suggestion(before: &RunRecord, after: &RunRecord) {
    use cairn_types::limits::{HISTORY_BYTES_SUGGEST_CONTINUE, HISTORY_EVENTS_SUGGEST_CONTINUE};
    let size = |record: &RunRecord| {
        record
            .state
            .as_ref()
            .map_or((0, 0), |s| (s.next_event_id - 1, s.history_size_bytes))
    };
    let ((events_before, bytes_before), (events, bytes)) = (size(before), size(after));
    let crossed = |old: u64, new: u64, limit: u64| old < limit && new >= limit;
    if crossed(events_before, events, HISTORY_EVENTS_SUGGEST_CONTINUE)
        || crossed(bytes_before, bytes, HISTORY_BYTES_SUGGEST_CONTINUE)
    {
        tracing::warn!(
            workflow_id = %after.workflow_id,
            run_id = %after.run_id,
            events,
            bytes,
            "history is long: the workflow should continue as new (it is terminated at five times this)"
        );
    }
}
