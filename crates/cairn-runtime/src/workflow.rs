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
use crate::committer::{Check, CommitError, Derive, Op, Verify};
use crate::records::{
    InboxItem, NewRun, Outcome, ParentRef, RunRecord, TaskRecord, WorkflowRecord, chunks_for,
    decode, encode, load_record, record_ops,
};
use crate::shard::{ShardMsg, TimerEntry};
use crate::shared::Shared;
use cairn_core::{Effect, Message, Run, RunStatus, StartArgs, TimerId, Transition, WorkflowFn};
use cairn_store::{RangeRequest, Store, Transaction};
use cairn_types::{
    EventKind, Failure, HistoryEvent, ParentClosePolicy, Payload, RunId, WorkflowId,
};
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
    /// The run's record as last committed (shared, not copied, by each transition's plan).
    record: Option<Arc<RunRecord>>,
    /// Chunks the stored run record occupies (0: stored whole).
    record_chunks: u32,
    run: Option<Run>,
    held: Option<String>,
    pending: Vec<Delivery>,
    /// Keys of deliveries taken but not yet committed, so none is taken twice.
    taken: HashSet<Vec<u8>>,
    flush_scheduled: bool,
    /// The last mailbox key read (see `read_inbox`).
    inbox_seen: Option<Vec<u8>>,
    /// Loads that failed on a store error in a row (the next waits longer).
    load_failures: u32,
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
            taken: HashSet::new(),
            flush_scheduled: false,
            inbox_seen: None,
            load_failures: 0,
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
        if let Some(state) = &record.state {
            let (begin, end) = keys.history(&self.run_id);
            let rows = tx
                .get_range(&RangeRequest::new(begin, end).snapshot())
                .await?;
            let history: Vec<HistoryEvent> = rows
                .iter()
                .map(|kv| decode("history event", &kv.value))
                .collect::<Result<_, _>>()
                .map_err(|e| LoadError::Held(e.to_string()))?;
            let workflow = self
                .workflow_fn(&record.start.workflow_type)
                .map_err(LoadError::Held)?;
            let run = Run::replay(&workflow, state.clone(), &history)
                .map_err(|e| LoadError::Held(e.to_string()))?;
            self.run = Some(run);
        }
        self.shared
            .metrics
            .activations
            .fetch_add(1, Ordering::Relaxed);
        self.record = Some(Arc::new(record));
        Ok(())
    }

    /// Takes the mailbox entries written since the last read. Entry keys are versionstamped,
    /// so mail committed after a read sorts after everything that read saw: reading on from
    /// the last key seen finds all new mail without rescanning entries already taken.
    async fn read_inbox(&mut self) -> Result<(), cairn_store::StoreError> {
        let (mut begin, end) = self.shared.keys.inbox_of_run(self.shard, &self.run_id);
        if let Some(seen) = &self.inbox_seen {
            begin = seen.clone();
            begin.push(0);
        }
        let mut tx = self.shared.store.begin()?;
        let rows = tx
            .get_range(&RangeRequest::new(begin, end).snapshot())
            .await?;
        if let Some(last) = rows.last() {
            self.inbox_seen = Some(last.key.clone());
        }
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
            // Not loaded yet (a load is being retried): the deliveries wait for it.
            return true;
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
                    execution_started_unix_ms: record.start.execution_started_unix_ms,
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
        let checks = self.screen_attempt_timers(&run, &mut messages).await;
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
        let (mut ops, after, new_record) = self.plan(&record, &run, &transition, &consumed, now);
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
                self.shard_ref
                    .send_after(RETRY_AFTER_FAILED_COMMIT, move || ShardMsg::Wake { run_id });
                if !results.is_empty() {
                    self.shard_ref
                        .send_after(RETRY_AFTER_FAILED_COMMIT, move || ShardMsg::Deliver {
                            run_id,
                            deliveries: results,
                        });
                }
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
        warn_if_history_grew_past_suggestion(&record, &new_record);
        self.record = Some(Arc::new(new_record));
        self.record_chunks = after.record_chunks;
        if self
            .shared
            .crash_at(crate::CrashPoint::AfterCommitBeforeEffects)
        {
            return false;
        }
        self.release(myself, after, consumed);
        true
    }

    /// Drops attempt timers that no longer mean a timeout, and returns the checks the
    /// transition needs for the rest:
    /// - a schedule-to-start timer of an attempt that started (its claim's mark is in the
    ///   store) is stale; for one that has not, the transition checks inside its commit that
    ///   no claim marked it meanwhile, so a start and its schedule-to-start timeout never both
    ///   land;
    /// - a heartbeat timer of an attempt that is beating on this node (its write was late) is
    ///   not a timeout; the attempt's recorder is told to write at once, which re-arms it.
    async fn screen_attempt_timers(&self, run: &Run, messages: &mut Vec<Message>) -> Vec<Check> {
        let keys = &self.shared.keys;
        let mut checks = Vec::new();
        let mut kept = Vec::with_capacity(messages.len());
        for message in messages.drain(..) {
            let Message::TimerFired { timer } = &message else {
                kept.push(message);
                continue;
            };
            match *timer {
                TimerId::ActivityScheduleToStart { seq, attempt } => {
                    let key = keys.attempt(self.shard, &self.run_id, seq, attempt);
                    let started = match self.shared.store.begin() {
                        Ok(mut tx) => matches!(tx.get(&key).await, Ok(Some(_))),
                        Err(_) => false,
                    };
                    if started {
                        continue;
                    }
                    checks.push(Check {
                        key,
                        accept: Box::new(|value| match value {
                            None => Ok(()),
                            Some(_) => Err(crate::ClientError::Store(
                                cairn_store::StoreError::Backend {
                                    message: "the attempt started before its schedule-to-start timeout landed".into(),
                                },
                            )),
                        }),
                    });
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
        ops.extend(ended_attempt_ops(
            keys,
            self.shard,
            &self.run_id,
            record,
            run,
        ));
        let mut new_record = record.next_version(run.state().clone());
        let first_transition = record.state.is_none();
        let mut summary_changed = first_transition;
        // The successor's records, written last: its workflow record supersedes this run's.
        let mut successor = None;
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
                Effect::RunClosed { status } => {
                    after.closed = Some(*status);
                    summary_changed = true;
                }
                Effect::StartChild {
                    seq,
                    workflow_type,
                    workflow_id,
                    input,
                    options,
                } => ops.push(self.start_child(
                    record,
                    *seq,
                    workflow_type,
                    workflow_id,
                    input,
                    options,
                    now,
                )),
                Effect::CancelChild {
                    workflow_id,
                    run_id,
                    ..
                } => ops.push(self.message_child(
                    &record.namespace,
                    workflow_id,
                    *run_id,
                    Message::CancelRequested {
                        reason: format!("canceled by its parent workflow {}", record.workflow_id),
                    },
                )),
                Effect::ApplyParentClosePolicy {
                    workflow_id,
                    run_id,
                    policy,
                } => {
                    let message = match policy {
                        ParentClosePolicy::Terminate => Message::Terminate {
                            reason: format!(
                                "parent workflow {} closed (parent close policy: terminate)",
                                record.workflow_id
                            ),
                        },
                        _ => Message::CancelRequested {
                            reason: format!(
                                "parent workflow {} closed (parent close policy: request cancel)",
                                record.workflow_id
                            ),
                        },
                    };
                    ops.push(self.message_child(&record.namespace, workflow_id, *run_id, message));
                }
                Effect::ContinueAsNew {
                    workflow_type,
                    input,
                } => {
                    let next = NewRun::new(
                        &record.namespace,
                        record.workflow_id.clone(),
                        workflow_type,
                        input.clone(),
                        record.start.timeouts,
                        now,
                    )
                    .continuing(record);
                    after.outcome = Some(Outcome::ContinuedAsNew {
                        new_run_id: next.run_id,
                    });
                    successor = Some(next);
                }
                Effect::SearchAttributesChanged => summary_changed = true,
            }
        }
        if after.outcome.is_some() {
            new_record.outcome = after.outcome.clone();
        }
        if let (Some(schedule_id), Some(status)) = (&record.scheduled_by, after.closed)
            && status != RunStatus::ContinuedAsNew
        {
            // The schedule that started this run may have a start waiting for it to close.
            ops.push(Op::WakeSchedule {
                shard: self.shared.shard_of_id(schedule_id),
                schedule_id: schedule_id.clone(),
                at_unix_ms: now,
            });
        }
        if let (Some(parent), Some(outcome)) = (
            &record.parent,
            after.outcome.as_ref().and_then(Outcome::for_parent),
        ) {
            // The child's end reaches its parent in the child's closing commit.
            ops.push(Op::Mail {
                shard: parent.shard,
                run_id: parent.run_id,
                item: encode(&InboxItem::Message(Message::ChildClosed {
                    seq: parent.seq,
                    outcome,
                })),
            });
        }
        let bytes = encode(&new_record);
        after.record_chunks = chunks_for(bytes.len());
        ops.extend(record_ops(
            keys,
            &keys.run(&self.run_id),
            bytes,
            self.record_chunks,
        ));
        let wf_key = keys.workflow(&record.namespace, record.workflow_id.as_str());
        match successor {
            Some(next) => ops.extend(next.writes(keys, self.shard)),
            None if summary_changed => {
                let state = run.state();
                let summary = WorkflowRecord {
                    run_id: self.run_id,
                    workflow_type: record.start.workflow_type.clone(),
                    status: Some(state.status),
                    started_unix_ms: state.started_unix_ms,
                    closed_unix_ms: state.closed_unix_ms,
                    parent_workflow_id: record.parent.as_ref().map(|p| p.workflow_id.clone()),
                    parent_run_id: record.parent.as_ref().map(|p| p.run_id),
                    search_attributes: state.search_attributes.clone(),
                    history_length: state.next_event_id - 1,
                    execution_started_unix_ms: record
                        .start
                        .execution_started_unix_ms
                        .unwrap_or(record.created_unix_ms),
                };
                ops.push(Op::Set(wf_key, encode(&summary)));
            }
            None => {}
        }
        (ops, after, new_record)
    }

    /// The writes that start child `seq`: inside the batch transaction the child's workflow
    /// id is checked (read with conflict tracking); if free, the child's records and start go in
    /// with this transition and this run is told `ChildStarted`, otherwise `ChildStartFailed`.
    #[allow(clippy::too_many_arguments)]
    fn start_child(
        &self,
        record: &RunRecord,
        seq: cairn_types::Seq,
        workflow_type: &str,
        workflow_id: &WorkflowId,
        input: &Payload,
        options: &cairn_types::ChildOptions,
        now: u64,
    ) -> Op {
        let keys = self.shared.keys.clone();
        let parent_shard = self.shard;
        let parent_run = self.run_id;
        let tell_parent = move |message: Message| Op::Mail {
            shard: parent_shard,
            run_id: parent_run,
            item: encode(&InboxItem::Message(message)),
        };
        // Refusals known before any read: they need no transaction-time decision.
        let refused = if self.shared.registry.workflow_def(workflow_type).is_none() {
            Some(format!(
                "workflow type {workflow_type:?} is not registered on this node"
            ))
        } else if input.len() > crate::node::INLINE_PAYLOAD_BYTES_MAX {
            Some(format!(
                "child input is {} bytes; the limit is {} bytes",
                input.len(),
                crate::node::INLINE_PAYLOAD_BYTES_MAX
            ))
        } else {
            None
        };
        if let Some(cause) = refused {
            return tell_parent(Message::ChildStartFailed { seq, cause });
        }
        let child = NewRun::new(
            &record.namespace,
            workflow_id.clone(),
            workflow_type,
            input.clone(),
            options.timeouts,
            now,
        )
        .parent(ParentRef {
            namespace: record.namespace.clone(),
            workflow_id: record.workflow_id.clone(),
            run_id: self.run_id,
            shard: self.shard,
            seq,
        });
        let child_shard = self.shared.shard_of(workflow_id);
        let wf_key = keys.workflow(&record.namespace, workflow_id.as_str());
        let workflow_id = workflow_id.clone();
        let metrics = self.shared.metrics.clone();
        Op::Derived(Derive::new(move |tx| {
            let (keys, child, wf_key, workflow_id) = (
                keys.clone(),
                child.clone(),
                wf_key.clone(),
                workflow_id.clone(),
            );
            let metrics = metrics.clone();
            Box::pin(async move {
                if let Some(bytes) = tx.read(&wf_key).await? {
                    let existing: WorkflowRecord = decode("workflow", &bytes)?;
                    if existing.status.is_none_or(|s| !s.is_closed()) {
                        return Ok(vec![tell_parent(Message::ChildStartFailed {
                            seq,
                            cause: format!(
                                "workflow id {workflow_id} is already running as run {}",
                                existing.run_id
                            ),
                        })]);
                    }
                }
                metrics.record_started(&child.record.start.workflow_type);
                let mut ops = child.writes(&keys, child_shard);
                ops.push(tell_parent(Message::ChildStarted {
                    seq,
                    run_id: child.run_id,
                }));
                Ok(ops)
            })
        }))
    }

    /// The writes that put `message` in the mailbox of this run's child `workflow_id`, if the
    /// workflow id's current run is still this run's child (`run_id`, when known) and open.
    fn message_child(
        &self,
        namespace: &str,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
        message: Message,
    ) -> Op {
        let wf_key = self.shared.keys.workflow(namespace, workflow_id.as_str());
        let child_shard = self.shared.shard_of(workflow_id);
        let parent_run = self.run_id;
        let item = encode(&InboxItem::Message(message));
        Op::Derived(Derive::new(move |tx| {
            let (wf_key, item) = (wf_key.clone(), item.clone());
            Box::pin(async move {
                let Some(bytes) = tx.read(&wf_key).await? else {
                    return Ok(Vec::new());
                };
                let current: WorkflowRecord = decode("workflow", &bytes)?;
                let ours = match run_id {
                    Some(run_id) => current.run_id == run_id,
                    None => current.parent_run_id == Some(parent_run),
                };
                if !ours || current.status.is_some_and(RunStatus::is_closed) {
                    return Ok(Vec::new());
                }
                Ok(vec![Op::Mail {
                    shard: child_shard,
                    run_id: current.run_id,
                    item,
                }])
            })
        }))
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

/// Clears the task and start mark of every attempt this transition ended (completed, failed,
/// timed out, retried as the next attempt, canceled, or left behind by the run's close): a task
/// in the store is an attempt that may still run, so an ended one must not stay there.
fn ended_attempt_ops(
    keys: &crate::keys::Keys,
    shard: u32,
    run_id: &RunId,
    record: &RunRecord,
    run: &Run,
) -> Vec<Op> {
    let Some(before) = &record.state else {
        return Vec::new();
    };
    let now = &run.state().activities;
    before
        .activities
        .iter()
        .filter(|(seq, old)| now.get(seq).is_none_or(|a| a.attempt != old.attempt))
        .flat_map(|(seq, old)| {
            [
                Op::Clear(keys.task(shard, run_id, *seq, old.attempt)),
                Op::Clear(keys.attempt(shard, run_id, *seq, old.attempt)),
            ]
        })
        .collect()
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

#[derive(Default)]
struct AfterCommit {
    tasks: Vec<TaskRecord>,
    timers: Vec<TimerEntry>,
    cancels: Vec<u32>,
    closed: Option<RunStatus>,
    outcome: Option<Outcome>,
    /// Chunks the new run record occupies once committed.
    record_chunks: u32,
}

/// The outcome an event records, if it closes the run (a continue-as-new's outcome names the
/// successor, which the transition's plan makes).
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
