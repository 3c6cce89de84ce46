//! The workflow actor: one per active run, pinned to one thread (workflow code is `!Send`).
//!
//! Its input enum lists every reason it wakes up. `Load` rebuilds the run from the store
//! (snapshot + history, replayed); `Deliver` and `Wake` add mailbox work; `Flush` runs one
//! transition over everything pending and commits it through the committer — history events,
//! the new snapshot, consumed mailbox/timer/task keys, new tasks and timers — as one request;
//! side effects (dispatching tasks, arming in-memory timers, waking result waiters) happen only
//! after that commit. While a commit is in flight new deliveries queue, so the next transition
//! takes them all.

use crate::clock::now_ms;
use crate::committer::{CommitError, Op, Verify};
use crate::node::Shared;
use crate::records::{InboxItem, Outcome, RunRecord, TaskRecord, WorkflowRecord, decode, encode};
use crate::shard::{ShardMsg, TimerEntry};
use cairn_core::{Effect, Message, Run, RunStatus, StartArgs, Transition, WorkflowFn};
use cairn_store::{RangeRequest, Store, Transaction};
use cairn_types::{EventKind, Failure, HistoryEvent, Payload, RunId};
use ractor::thread_local::ThreadLocalActor;
use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long after a transition failed to commit the run is woken again.
pub const RETRY_AFTER_FAILED_COMMIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Most mailbox entries one transition consumes.
pub const MAILBOX_BATCH_MAX: usize = 256;

/// Work for a run, with the store keys its transition must clear (mailbox entry, fired timer,
/// finished task) so that it is consumed exactly once.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub item: InboxItem,
    pub consume: Vec<Vec<u8>>,
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

/// The workflow actor's inputs.
pub enum WorkflowMsg {
    Load,
    Deliver(Vec<Delivery>),
    /// Read the run's mailbox from the store.
    Wake,
    Flush,
    Query {
        name: String,
        args: Payload,
        reply: RpcReplyPort<Result<Payload, QueryError>>,
    },
    /// Stop if idle; answers whether it stopped.
    Passivate(RpcReplyPort<bool>),
}

impl std::fmt::Debug for WorkflowMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Load => "Load",
            Self::Deliver(_) => "Deliver",
            Self::Wake => "Wake",
            Self::Flush => "Flush",
            Self::Query { .. } => "Query",
            Self::Passivate(_) => "Passivate",
        })
    }
}

/// Start-up arguments (sent to the actor's thread, hence `Send`).
pub struct WorkflowArgs<S: Store> {
    pub shared: Arc<Shared<S>>,
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

/// The actor's state: lives on one thread.
pub struct WorkflowState<S: Store> {
    shared: Arc<Shared<S>>,
    shard_ref: ActorRef<ShardMsg>,
    run_id: RunId,
    shard: u32,
    epoch: u64,
    record: Option<RunRecord>,
    run: Option<Run>,
    held: Option<String>,
    pending: Vec<Delivery>,
    /// Keys of deliveries taken but not yet committed, so none is taken twice.
    taken: HashSet<Vec<u8>>,
    flush_scheduled: bool,
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
            run: None,
            held: None,
            pending: Vec::new(),
            taken: HashSet::new(),
            flush_scheduled: false,
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
            WorkflowMsg::Load => {
                if let Err(reason) = state.load().await {
                    tracing::error!(run_id = %state.run_id, %reason, "run held");
                    state.held = Some(reason);
                }
            }
            WorkflowMsg::Deliver(deliveries) => {
                for delivery in deliveries {
                    state.accept(delivery);
                }
                state.schedule_flush(&myself);
            }
            WorkflowMsg::Wake => {
                if let Err(e) = state.read_inbox().await {
                    tracing::warn!(run_id = %state.run_id, error = %e, "mailbox read failed");
                    myself.stop(None);
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
            }
            WorkflowMsg::Query { name, args, reply } => {
                // A query that arrives before the first transition runs it first, so a run
                // that was just started can answer (its start may still be only in the store,
                // if it was accepted by another node).
                if state.run.is_none()
                    && state.held.is_none()
                    && state.pending.is_empty()
                    && let Err(e) = state.read_inbox().await
                {
                    tracing::warn!(run_id = %state.run_id, error = %e, "mailbox read failed");
                }
                if state.run.is_none()
                    && state.held.is_none()
                    && !state.pending.is_empty()
                    && !state.flush(&myself).await
                {
                    let _ = reply.send(Err(QueryError::Unavailable));
                    myself.stop(None);
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
            WorkflowMsg::Passivate(reply) => {
                let idle = state.pending.is_empty() && !state.flush_scheduled;
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
    fn accept(&mut self, delivery: Delivery) {
        if delivery.consume.iter().any(|k| self.taken.contains(k)) {
            return;
        }
        self.taken.extend(delivery.consume.iter().cloned());
        self.pending.push(delivery);
    }

    fn schedule_flush(&mut self, myself: &ActorRef<WorkflowMsg>) {
        if !self.flush_scheduled && !self.pending.is_empty() && self.held.is_none() {
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
    async fn load(&mut self) -> Result<(), String> {
        let keys = &self.shared.keys;
        let mut tx = self.shared.store.begin().map_err(|e| e.to_string())?;
        let Some(bytes) = tx
            .get(&keys.run(&self.run_id))
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err("no such run in the store".into());
        };
        let record: RunRecord = decode("run", &bytes).map_err(|e| e.to_string())?;
        if let Some(state) = &record.state {
            let (begin, end) = keys.history(&self.run_id);
            let rows = tx
                .get_range(&RangeRequest::new(begin, end).snapshot())
                .await
                .map_err(|e| e.to_string())?;
            let history: Vec<HistoryEvent> = rows
                .iter()
                .map(|kv| decode("history event", &kv.value))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let workflow = self.workflow_fn(&record.start.workflow_type)?;
            let run = Run::replay(&workflow, state.clone(), &history).map_err(|e| e.to_string())?;
            self.run = Some(run);
        }
        self.shared
            .metrics
            .activations
            .fetch_add(1, Ordering::Relaxed);
        self.record = Some(record);
        Ok(())
    }

    async fn read_inbox(&mut self) -> Result<(), cairn_store::StoreError> {
        let (begin, end) = self.shared.keys.inbox_of_run(self.shard, &self.run_id);
        let mut tx = self.shared.store.begin()?;
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await?;
        for row in rows {
            let item: InboxItem = decode("mailbox entry", &row.value)?;
            self.accept(Delivery {
                item,
                consume: vec![row.key],
            });
        }
        Ok(())
    }

    /// One transition over the pending deliveries. Returns false if the actor must stop (its
    /// in-memory run may now be ahead of the store).
    async fn flush(&mut self, myself: &ActorRef<WorkflowMsg>) -> bool {
        if self.pending.is_empty() || self.held.is_some() {
            return true;
        }
        let Some(record) = self.record.clone() else {
            return false;
        };
        let take = self.pending.len().min(MAILBOX_BATCH_MAX);
        let batch: Vec<Delivery> = self.pending.drain(..take).collect();
        let now = now_ms().max(record.created_unix_ms);
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
                let workflow = match self.workflow_fn(&record.start.workflow_type) {
                    Ok(w) => w,
                    Err(reason) => {
                        self.held = Some(reason);
                        return true;
                    }
                };
                let args = StartArgs {
                    workflow_type: record.start.workflow_type.clone(),
                    input: record.start.input.clone(),
                    random_seed: record.start.random_seed,
                    timeouts: record.start.timeouts,
                };
                match Run::start(&workflow, args, now) {
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
        let consumed: Vec<Vec<u8>> = batch
            .iter()
            .flat_map(|d| d.consume.iter().cloned())
            .collect();
        let (ops, after, new_record) = self.plan(&record, &run, &transition, &consumed, now);
        self.run = Some(run);
        let fence = Some((self.shard, self.epoch));
        let verify = Some((
            self.shared.keys.run(&self.run_id),
            Verify::RunVersionAtLeast(new_record.version),
        ));
        if self.shared.crash_at(crate::CrashPoint::BeforeCommit) {
            return false;
        }
        match self.shared.commit(ops, Vec::new(), fence, verify).await {
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
                // for the next message. Timers are re-delivered by the shard anyway.
                let run_id = self.run_id;
                self.shard_ref
                    .send_after(RETRY_AFTER_FAILED_COMMIT, move || ShardMsg::Wake { run_id });
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
        self.record = Some(new_record);
        if self
            .shared
            .crash_at(crate::CrashPoint::AfterCommitBeforeEffects)
        {
            return false;
        }
        self.release(myself, after, consumed);
        true
    }

    /// The writes of a transition, and what to do once they commit.
    fn plan(
        &self,
        record: &RunRecord,
        run: &Run,
        transition: &Transition,
        consumed: &[Vec<u8>],
        now: u64,
    ) -> (Vec<Op>, AfterCommit, RunRecord) {
        let keys = &self.shared.keys;
        let mut ops = Vec::new();
        let mut after = AfterCommit::default();
        for event in &transition.events {
            ops.push(Op::Set(
                keys.history_event(&self.run_id, event.event_id),
                encode(event),
            ));
            match &event.kind {
                EventKind::ActivityTaskCompleted { seq, .. }
                | EventKind::ActivityTaskFailed { seq, .. }
                | EventKind::ActivityTaskTimedOut { seq, .. }
                | EventKind::ActivityTaskCanceled { seq } => {
                    ops.push(Op::Clear(keys.heartbeat(&self.run_id, *seq)));
                }
                _ => {}
            }
            if let Some(outcome) = outcome_of(&event.kind) {
                after.outcome = Some(outcome);
            }
        }
        for key in consumed {
            ops.push(Op::Clear(key.clone()));
        }
        let mut new_record = record.clone();
        let first_transition = record.state.is_none();
        new_record.state = Some(run.state().clone());
        new_record.version += 1;
        if after.outcome.is_some() {
            new_record.outcome = after.outcome.clone();
        }
        for effect in &transition.effects {
            match effect {
                Effect::EnqueueActivityTask {
                    seq,
                    attempt,
                    activity_type,
                    input,
                    options,
                } => {
                    let task = TaskRecord {
                        namespace: record.namespace.clone(),
                        workflow_id: record.workflow_id.clone(),
                        run_id: self.run_id,
                        shard: self.shard,
                        seq: *seq,
                        attempt: *attempt,
                        activity_type: activity_type.clone(),
                        input: input.clone(),
                        options: options.clone(),
                        scheduled_unix_ms: now,
                    };
                    ops.push(Op::Set(
                        keys.task(self.shard, &self.run_id, *seq, *attempt),
                        encode(&task),
                    ));
                    if let Some(timer) = crate::worker::provisional_start_to_close(keys, &task) {
                        ops.push(Op::Set(timer.key.clone(), encode(&timer.timer)));
                        after.timers.push(timer);
                    }
                    after.tasks.push(task);
                }
                Effect::ScheduleTimer {
                    timer,
                    fire_at_unix_ms,
                } => {
                    let entry =
                        TimerEntry::new(keys, self.shard, *fire_at_unix_ms, self.run_id, *timer);
                    ops.push(Op::Set(entry.key.clone(), encode(timer)));
                    after.timers.push(entry);
                }
                Effect::CancelActivityTask { seq } => after.cancels.push(*seq),
                Effect::RunClosed { status } => after.closed = Some(*status),
            }
        }
        ops.push(Op::Set(keys.run(&self.run_id), encode(&new_record)));
        if first_transition || after.closed.is_some() {
            let state = run.state();
            let summary = WorkflowRecord {
                run_id: self.run_id,
                workflow_type: record.start.workflow_type.clone(),
                status: Some(state.status),
                started_unix_ms: state.started_unix_ms,
                closed_unix_ms: state.closed_unix_ms,
            };
            ops.push(Op::Set(
                keys.workflow(&record.namespace, record.workflow_id.as_str()),
                encode(&summary),
            ));
        }
        (ops, after, new_record)
    }

    /// Side effects of a committed transition.
    fn release(&self, _myself: &ActorRef<WorkflowMsg>, after: AfterCommit, consumed: Vec<Vec<u8>>) {
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
            self.shared
                .workers
                .dispatch(self.shared.clone(), self.epoch, task);
        }
        if let Some(status) = after.closed {
            if let Some(record) = &self.record {
                let started = record
                    .state
                    .as_ref()
                    .map_or(record.created_unix_ms, |s| s.started_unix_ms);
                let ran_for = Duration::from_millis(now_ms().saturating_sub(started));
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

#[derive(Default)]
struct AfterCommit {
    tasks: Vec<TaskRecord>,
    timers: Vec<TimerEntry>,
    cancels: Vec<u32>,
    closed: Option<RunStatus>,
    outcome: Option<Outcome>,
}

fn outcome_of(kind: &EventKind) -> Option<Outcome> {
    Some(match kind {
        EventKind::WorkflowExecutionCompleted { result } => Outcome::Completed(result.clone()),
        EventKind::WorkflowExecutionFailed { failure } => Outcome::Failed(failure.clone()),
        EventKind::WorkflowExecutionCanceled => Outcome::Canceled,
        EventKind::WorkflowExecutionTerminated { reason } => Outcome::Terminated(reason.clone()),
        EventKind::WorkflowExecutionTimedOut => Outcome::TimedOut,
        _ => return None,
    })
}
