//! The transition planner: what one committed transition writes, as a pure function of the
//! run's record as last committed, its new snapshot, the transition's events and effects, the
//! keys it consumed and the time. The workflow actor calls it and submits the writes; nothing
//! here does I/O (a child start's decision is a `Derive` that runs inside the batch
//! transaction), so each rule is tested by looking at the writes it plans.

use crate::Registered;
use crate::keys::Keys;
use crate::ops::{Derivation, Derive, DeriveFuture, Key, Op, TxRead};
use crate::records::{
    InboxItem, NewRun, Outcome, ParentRef, RunRecord, TaskRecord, WorkflowRecord, chunks_for,
    decode, encode, record_ops,
};
use crate::timers::TimerEntry;
use cairn_core::{Effect, Message, RunState, RunStatus, TimerId, Transition};
use cairn_types::{EventKind, ParentClosePolicy, Payload, RunId, WorkflowId};

/// What the planner needs to know about the run's place (all plain data).
#[allow(missing_debug_implementations)] // holds the node's registrations, which are code
pub struct Planner<'a> {
    pub keys: &'a Keys,
    pub registry: &'a dyn Registered,
    /// Where the ids of the runs a transition starts come from.
    pub entropy: &'a crate::entropy::Entropy,
    pub shard_count: u32,
    pub shard: u32,
    pub run_id: RunId,
    /// Chunks the stored run record occupies now (0: stored whole).
    pub record_chunks: u32,
    /// How many of this transition's new tasks the node's workers have room for (units
    /// reserved from the dispatch bound): those are handed over after the commit, the rest are
    /// written deferred, for the pull dispatcher (`dispatch`).
    pub room: usize,
    /// The shard tenure planning (recorded in new tasks).
    pub epoch: u64,
    /// Whether remote workers may poll the node (`NodeConfig::remote_activities`): then an
    /// attempt on another task queue than [`crate::LOCAL_TASK_QUEUE`] is theirs.
    pub remote_activities: bool,
}

impl Planner<'_> {
    /// The writes of a transition, and what to do once they commit.
    pub fn plan(
        &self,
        record: &RunRecord,
        state: &RunState,
        transition: &Transition,
        consumed: &[Vec<u8>],
        now: u64,
    ) -> (Vec<Op>, AfterCommit, RunRecord) {
        let keys = self.keys;
        // A history is linear: a transition's events continue the committed history, one id
        // after another, and the snapshot's next id follows the last of them.
        let first_id = record.state.as_ref().map_or(1, |s| s.next_event_id);
        for (offset, event) in (0u64..).zip(&transition.events) {
            assert_eq!(
                event.event_id,
                first_id + offset,
                "run {}: event {} of a transition does not continue its history",
                self.run_id,
                event.kind.name()
            );
        }
        assert_eq!(
            state.next_event_id,
            first_id + transition.events.len() as u64,
            "run {}: the snapshot's next event id does not follow its transition",
            self.run_id
        );
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
        ops.extend(
            ended_attempt_ops(keys, self.shard, &self.run_id, record, state)
                .into_iter()
                // A worker's result already consumes its task and mark.
                .filter(|op| !matches!(op, Op::Clear(key) if consumed.contains(key))),
        );
        let mut new_record = record.next_version(state.clone());
        let first_transition = record.state.is_none();
        let mut summary_changed = first_transition;
        // The successor's records, written last: its workflow record supersedes this run's.
        let mut successor = None;
        let mut room = self.room;
        for effect in &transition.effects {
            match effect {
                Effect::EnqueueActivityTask {
                    seq,
                    attempt,
                    activity_type,
                    input,
                    options,
                } => {
                    // An attempt number is used once: the committed snapshot has this
                    // activity at an earlier attempt, or at this one not yet enqueued.
                    let before = record.state.as_ref().and_then(|s| s.activities.get(seq));
                    assert!(
                        before.is_none_or(
                            |a| a.attempt < *attempt || (a.attempt == *attempt && !a.enqueued)
                        ),
                        "activity {seq} attempt {attempt} enqueued twice (committed: {before:?})"
                    );
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
                        epoch: self.epoch,
                    };
                    ops.push(Op::Set(
                        keys.task(self.shard, &self.run_id, *seq, *attempt),
                        encode(&task),
                    ));
                    if room == 0 {
                        // No room: the task waits in the store, unstarted, for the puller.
                        ops.push(Op::Set(
                            keys.deferred(self.shard, &self.run_id, *seq, *attempt),
                            Vec::new(),
                        ));
                        after.deferred = true;
                        after.deferred_tasks += 1;
                        continue;
                    }
                    room -= 1;
                    // An attempt without heartbeat or schedule-to-start timeouts is handed to
                    // this node's workers by this very commit: its provisional start-to-close
                    // timer, written here, marks it started, so a worker that picks it up
                    // within the grace needs no claim commit of its own (see `worker`). Not
                    // one of a type this node's workers do not run: a remote worker starts it
                    // when its poll takes it, and it claims then; until then it has not
                    // started, and no start-to-close timeout runs.
                    let handed_over = crate::runs_locally(
                        self.registry,
                        self.remote_activities,
                        activity_type,
                        &options.task_queue,
                    );
                    if let Some(timer) = crate::timers::provisional_start_to_close(keys, &task)
                        .filter(|_| handed_over)
                    {
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
                    memo,
                    search_attributes,
                } => {
                    let next = NewRun::new(
                        &record.namespace,
                        record.workflow_id.clone(),
                        workflow_type,
                        input.clone(),
                        record.start.timeouts,
                        now,
                        self.entropy.run_id(now),
                    )
                    .with(memo.clone(), search_attributes.clone())
                    .continuing(record);
                    after.outcome = Some(Outcome::ContinuedAsNew {
                        new_run_id: next.run_id,
                    });
                    successor = Some(next);
                }
                Effect::CronNext { cron } => {
                    // The chain's input each time, and what this run leaves of its memo and
                    // search attributes; this run keeps its own outcome.
                    let mut next = NewRun::new(
                        &record.namespace,
                        record.workflow_id.clone(),
                        &record.start.workflow_type,
                        record.start.input.clone(),
                        record.start.timeouts,
                        now,
                        self.entropy.run_id(now),
                    )
                    .with(state.memo.clone(), state.search_attributes.clone())
                    .continuing(record);
                    next.record.start.cron = Some(cron.clone());
                    new_record.next_run = Some(next.run_id);
                    successor = Some(next);
                }
                Effect::SignalExternal {
                    seq,
                    workflow_id,
                    run_id,
                    signal_name,
                    input,
                } => ops.push(self.message_external(
                    &record.namespace,
                    workflow_id,
                    *run_id,
                    Message::Signal {
                        name: signal_name.clone(),
                        input: input.clone(),
                    },
                    ExternalAnswer::Signaled { seq: *seq },
                )),
                Effect::CancelExternal {
                    seq,
                    workflow_id,
                    run_id,
                } => ops.push(self.message_external(
                    &record.namespace,
                    workflow_id,
                    *run_id,
                    Message::CancelRequested {
                        reason: format!("canceled by workflow {}", record.workflow_id),
                    },
                    ExternalAnswer::CancelRequested { seq: *seq },
                )),
                Effect::SearchAttributesChanged | Effect::MemoChanged => summary_changed = true,
                // Told to the update's callers by the actor; nothing to write.
                Effect::UpdateRejected { .. } => {}
            }
        }
        for key in dropped_timer_keys(keys, self.shard, &self.run_id, record, state, after.closed) {
            if !consumed.contains(&key) {
                ops.push(Op::Clear(key.clone()));
                after.cleared_timers.push(key);
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
                shard: crate::keys::shard_of(schedule_id, self.shard_count),
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
        if summary_changed || successor.is_some() {
            let summary = WorkflowRecord {
                run_id: self.run_id,
                workflow_type: record.start.workflow_type.clone(),
                status: Some(state.status),
                // When the start was accepted (as the start wrote it), not when the run first
                // ran: the visibility entries, keyed by it, stay where they are.
                started_unix_ms: record.created_unix_ms,
                closed_unix_ms: state.closed_unix_ms,
                parent_workflow_id: record.parent.as_ref().map(|p| p.workflow_id.clone()),
                parent_run_id: record.parent.as_ref().map(|p| p.run_id),
                search_attributes: state.search_attributes.clone(),
                memo: state.memo.clone(),
                history_length: state.next_event_id - 1,
                execution_started_unix_ms: record
                    .start
                    .execution_started_unix_ms
                    .unwrap_or(record.created_unix_ms),
            };
            // The closing run's own summary first, even when a successor replaces it in the
            // same commit: the replacement keeps it, as the run's entry among the id's past
            // runs (`visibility::replacement_ops`).
            ops.push(crate::visibility::put_workflow(
                keys,
                &record.namespace,
                record.workflow_id.as_str(),
                summary.clone(),
                previous_summary(record),
            ));
            if let Some(next) = successor {
                ops.extend(next.writes(
                    keys,
                    self.shard,
                    crate::visibility::Replacing::Record(summary),
                ));
            }
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
        let keys = self.keys.clone();
        let parent = Requester {
            shard: self.shard,
            run_id: self.run_id,
        };
        // Refusals known before any read: they need no transaction-time decision.
        // A remote run's children run remotely too, on its task queue, unless their type is
        // registered here.
        let remote = record
            .start
            .remote
            .clone()
            .filter(|_| !self.registry.has_workflow(workflow_type));
        let carried = cairn_types::start_bytes(input, &options.memo, &options.search_attributes);
        let refused = if !self.registry.has_workflow(workflow_type) && remote.is_none() {
            Some(format!(
                "workflow type {workflow_type:?} is not registered on this node"
            ))
        } else if carried > cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX {
            Some(format!(
                "the child's input, memo and search attributes are {carried} bytes together; the limit is {} bytes",
                cairn_types::limits::INLINE_PAYLOAD_BYTES_MAX
            ))
        } else {
            None
        };
        if let Some(cause) = refused {
            return parent.tell(Message::ChildStartFailed { seq, cause });
        }
        let child = NewRun::new(
            &record.namespace,
            workflow_id.clone(),
            workflow_type,
            input.clone(),
            options.timeouts,
            now,
            self.entropy.run_id(now),
        )
        .with(options.memo.clone(), options.search_attributes.clone())
        .parent(ParentRef {
            namespace: record.namespace.clone(),
            workflow_id: record.workflow_id.clone(),
            run_id: self.run_id,
            shard: self.shard,
            seq,
        });
        let mut child = child;
        child.record.start.remote = remote;
        Op::Derived(Derive::new(StartChild {
            wf_key: Key(keys.workflow(&record.namespace, workflow_id.as_str())),
            child_shard: crate::keys::shard_of(workflow_id.as_str(), self.shard_count),
            parent,
            seq,
            keys,
            child,
        }))
    }

    /// The writes that put `message` in the mailbox of workflow `workflow_id`'s current run
    /// (which must be `run_id`, when given) if it is open, and tell this run how it went
    /// (`answer`), all inside the batch transaction.
    fn message_external(
        &self,
        namespace: &str,
        workflow_id: &WorkflowId,
        run_id: Option<RunId>,
        message: Message,
        answer: ExternalAnswer,
    ) -> Op {
        Op::Derived(Derive::new(MessageExternal {
            wf_key: Key(self.keys.workflow(namespace, workflow_id.as_str())),
            target_shard: crate::keys::shard_of(workflow_id.as_str(), self.shard_count),
            workflow_id: workflow_id.clone(),
            run_id,
            message,
            requester: Requester {
                shard: self.shard,
                run_id: self.run_id,
            },
            answer,
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
        Op::Derived(Derive::new(MessageChild {
            wf_key: Key(self.keys.workflow(namespace, workflow_id.as_str())),
            child_shard: crate::keys::shard_of(workflow_id.as_str(), self.shard_count),
            parent_run: self.run_id,
            run_id,
            message,
        }))
    }
}

/// The run a derived write answers: its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    pub shard: u32,
    pub run_id: RunId,
}

impl Requester {
    fn tell(&self, message: Message) -> Op {
        Op::Mail {
            shard: self.shard,
            run_id: self.run_id,
            item: encode(&InboxItem::Message(message)),
        }
    }
}

/// A child start, decided in the commit: if workflow id `child`'s is free (no record, or a
/// closed one, read with conflict tracking), the child's records go in and its parent is told
/// `ChildStarted`; otherwise the parent is told `ChildStartFailed`.
#[derive(Debug)]
pub struct StartChild {
    pub keys: Keys,
    pub child: NewRun,
    pub wf_key: Key,
    pub child_shard: u32,
    pub parent: Requester,
    pub seq: cairn_types::Seq,
}

impl Derivation for StartChild {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let child = &self.child;
            if let Some(bytes) = tx.read(&self.wf_key.0).await? {
                let existing: WorkflowRecord = decode("workflow", &bytes)?;
                if existing.status.is_none_or(|s| !s.is_closed()) {
                    return Ok(vec![self.parent.tell(Message::ChildStartFailed {
                        seq: self.seq,
                        cause: format!(
                            "workflow id {} is already running as run {}",
                            child.record.workflow_id, existing.run_id
                        ),
                    })]);
                }
            }
            let mut ops = child.writes(
                &self.keys,
                self.child_shard,
                crate::visibility::Replacing::Unknown,
            );
            ops.push(Op::Started {
                workflow_type: child.record.start.workflow_type.clone(),
            });
            ops.push(self.parent.tell(Message::ChildStarted {
                seq: self.seq,
                run_id: child.run_id,
            }));
            Ok(ops)
        })
    }
}

/// What a run asking to message another workflow is told back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalAnswer {
    Signaled { seq: cairn_types::Seq },
    CancelRequested { seq: cairn_types::Seq },
}

impl ExternalAnswer {
    fn message(self, result: Result<(), String>) -> Message {
        match self {
            Self::Signaled { seq } => Message::ExternalSignaled { seq, result },
            Self::CancelRequested { seq } => Message::ExternalCancelRequested { seq, result },
        }
    }
}

/// A message to workflow `workflow_id`'s current run (which must be `run_id`, when given),
/// decided in the commit: delivered if that run is open, and the requester told how it went.
#[derive(Debug)]
pub struct MessageExternal {
    pub wf_key: Key,
    pub target_shard: u32,
    pub workflow_id: WorkflowId,
    pub run_id: Option<RunId>,
    pub message: Message,
    pub requester: Requester,
    pub answer: ExternalAnswer,
}

impl Derivation for MessageExternal {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let tell = |result| self.requester.tell(self.answer.message(result));
            let current = match tx.read(&self.wf_key.0).await? {
                Some(bytes) => Some(decode::<WorkflowRecord>("workflow", &bytes)?),
                None => None,
            };
            let open =
                current.filter(|c| !c.is_closed() && self.run_id.is_none_or(|r| r == c.run_id));
            let Some(current) = open else {
                let run = self
                    .run_id
                    .map(|r| format!(" (run {r})"))
                    .unwrap_or_default();
                return Ok(vec![tell(Err(format!(
                    "workflow {}{run} is not open (or does not exist)",
                    self.workflow_id
                )))]);
            };
            Ok(vec![
                Op::Mail {
                    shard: self.target_shard,
                    run_id: current.run_id,
                    item: encode(&InboxItem::Message(self.message.clone())),
                },
                tell(Ok(())),
            ])
        })
    }
}

/// A message from run `parent_run` to its child, decided in the commit: delivered if the
/// child workflow id's current run is still that child (`run_id`, when known) and open.
#[derive(Debug)]
pub struct MessageChild {
    pub wf_key: Key,
    pub child_shard: u32,
    pub parent_run: RunId,
    pub run_id: Option<RunId>,
    pub message: Message,
}

impl Derivation for MessageChild {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let Some(bytes) = tx.read(&self.wf_key.0).await? else {
                return Ok(Vec::new());
            };
            let current: WorkflowRecord = decode("workflow", &bytes)?;
            let ours = match self.run_id {
                Some(run_id) => current.run_id == run_id,
                None => current.parent_run_id == Some(self.parent_run),
            };
            if !ours || current.is_closed() {
                return Ok(Vec::new());
            }
            Ok(vec![Op::Mail {
                shard: self.child_shard,
                run_id: current.run_id,
                item: encode(&InboxItem::Message(self.message.clone())),
            }])
        })
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
    state: &RunState,
) -> Vec<Op> {
    let Some(before) = &record.state else {
        return Vec::new();
    };
    let now = &state.activities;
    before
        .activities
        .iter()
        .filter(|(seq, old)| now.get(seq).is_none_or(|a| a.attempt != old.attempt))
        .flat_map(|(seq, old)| {
            let task = Op::Clear(keys.task(shard, run_id, *seq, old.attempt));
            // Handed-over attempts never have a start mark (their timer is their mark).
            let mark = crate::timers::needs_claim(&old.options.timeouts)
                .then(|| Op::Clear(keys.attempt(shard, run_id, *seq, old.attempt)));
            std::iter::once(task).chain(mark)
        })
        .collect()
}

#[derive(Debug, Default)]
pub struct AfterCommit {
    /// New tasks to hand to the workers (as many as the planner's `room`).
    pub tasks: Vec<TaskRecord>,
    /// Some new tasks were written deferred.
    pub deferred: bool,
    /// How many (for the node's metrics).
    pub deferred_tasks: u64,
    pub timers: Vec<TimerEntry>,
    pub cancels: Vec<u32>,
    pub closed: Option<RunStatus>,
    pub outcome: Option<Outcome>,
    /// Timer keys this transition cleared (canceled timers, and a closed run's timers): the
    /// shard forgets them.
    pub cleared_timers: Vec<Vec<u8>>,
    /// Chunks the new run record occupies once committed.
    pub record_chunks: u32,
}

/// The workflow record as this run's last write left it, as far as its index entries go: the
/// start's (not yet run) before the first transition, then the committed snapshot's status,
/// close time and search attributes.
fn previous_summary(record: &RunRecord) -> crate::visibility::Replacing {
    let state = record.state.as_ref();
    crate::visibility::Replacing::Record(WorkflowRecord {
        run_id: record.run_id,
        workflow_type: record.start.workflow_type.clone(),
        status: state.map(|s| s.status),
        started_unix_ms: record.created_unix_ms,
        closed_unix_ms: state.and_then(|s| s.closed_unix_ms),
        parent_workflow_id: None,
        parent_run_id: None,
        search_attributes: state.map_or_else(
            || record.start.search_attributes.clone(),
            |s| s.search_attributes.clone(),
        ),
        history_length: 0,
        execution_started_unix_ms: 0,
        memo: Default::default(),
    })
}

/// The keys of the run's timers that stopped mattering in this transition: user timers the
/// code canceled and, when the run closes, its remaining user timers and its deadline timer.
/// Left in place they would wait (in the store, and in memory once near) until they fired into
/// a closed run, or into one retention already deleted.
fn dropped_timer_keys(
    keys: &Keys,
    shard: u32,
    run_id: &cairn_types::RunId,
    record: &RunRecord,
    state: &RunState,
    closed: Option<RunStatus>,
) -> Vec<Vec<u8>> {
    let user = |seq: u32, fire_at: u64| keys.timer(shard, fire_at, run_id, &TimerId::User { seq });
    let mut out = Vec::new();
    if let Some(before) = &record.state {
        for (seq, fire_at) in &before.timers {
            if state.timers.get(seq) != Some(fire_at) {
                out.push(user(*seq, *fire_at));
            }
        }
    }
    // A remote run's workflow task check timer, once its task changed or ended.
    let task_timer = |s: &RunState| {
        s.remote
            .as_ref()
            .and_then(|r| r.task_timer_at.map(|at| (r.task, at)))
    };
    if let Some((task, at)) = record.state.as_ref().and_then(task_timer)
        && (closed.is_some() || task_timer(state) != Some((task, at)))
    {
        out.push(keys.timer(shard, at, run_id, &TimerId::WorkflowTask { task }));
    }
    if closed.is_some() {
        out.extend(state.timers.iter().map(|(seq, at)| user(*seq, *at)));
        if let Some(deadline) = state.deadline_unix_ms {
            out.push(keys.timer(shard, deadline, run_id, &TimerId::WorkflowExecution));
        }
        if let Some(at) = state.first_task_at_unix_ms {
            out.push(keys.timer(shard, at, run_id, &TimerId::FirstWorkflowTask));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    //! Each rule of the planner, read off the writes it plans for a hand-built transition.

    use super::*;
    use cairn_core::{PendingActivity, RunStatus};
    use cairn_types::{ActivityOptions, ActivityTimeouts, RetryPolicy, WorkflowTimeouts};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn options() -> ActivityOptions {
        ActivityOptions {
            task_queue: "default".into(),
            timeouts: ActivityTimeouts::start_to_close(Duration::from_secs(5)),
            retry: RetryPolicy::default(),
        }
    }

    /// A pending attempt that starts by a claim (it has a heartbeat timeout), so it has a
    /// start mark to clear.
    fn pending(attempt: u32) -> PendingActivity {
        let mut options = options();
        options.timeouts = options.timeouts.with_heartbeat(Duration::from_secs(1));
        PendingActivity {
            activity_type: "charge".into(),
            input: Payload::encode(&1u32).unwrap(),
            options,
            attempt,
            scheduled_unix_ms: 1_000,
            last_failure: None,
            enqueued: true,
            retry_at_unix_ms: None,
        }
    }

    fn state(activities: &[(u32, u32)], status: RunStatus) -> RunState {
        RunState {
            workflow_type: "order".into(),
            status,
            next_event_id: 4,
            started_unix_ms: 1_000,
            closed_unix_ms: status.is_closed().then_some(2_000),
            activities: activities
                .iter()
                .map(|(seq, attempt)| (*seq, pending(*attempt)))
                .collect(),
            timers: BTreeMap::new(),
            cancel_requested: false,
            children: BTreeMap::new(),
            search_attributes: Default::default(),
            memo: Default::default(),
            history_size_bytes: 0,
            deadline_unix_ms: None,
            remote: None,
            updates: BTreeMap::new(),
            cron: None,
            first_task_at_unix_ms: None,
            unseen_inputs: Vec::new(),
        }
    }

    /// A committed record whose snapshot has `before` pending (seq, attempt).
    fn record(before: &[(u32, u32)]) -> RunRecord {
        let new = NewRun::new(
            "default",
            WorkflowId::new("order-1").unwrap(),
            "order",
            Payload::encode(&()).unwrap(),
            WorkflowTimeouts::default(),
            1_000,
            RunId::from_parts(1_000, [7; 10]),
        );
        RunRecord {
            state: Some(state(before, RunStatus::Running)),
            ..new.record
        }
    }

    fn plan(record: &RunRecord, after: &RunState, transition: &Transition) -> Vec<Op> {
        plan_with_room(record, after, transition, usize::MAX).0
    }

    fn plan_with_room(
        record: &RunRecord,
        after: &RunState,
        transition: &Transition,
        room: usize,
    ) -> (Vec<Op>, AfterCommit) {
        let keys = Keys::new(b"t");
        let registry = NothingRegistered;
        let entropy = crate::entropy::Entropy::seeded(1);
        let planner = Planner {
            keys: &keys,
            registry: &registry,
            entropy: &entropy,
            shard_count: 4,
            shard: 2,
            run_id: record.run_id,
            record_chunks: 0,
            room,
            epoch: 1,
            remote_activities: true,
        };
        let (ops, after, _) = planner.plan(record, after, transition, &[], 2_000);
        (ops, after)
    }

    /// A node with no workflow type and no search attribute registered, whose workers run
    /// the activity type `charge` only.
    struct NothingRegistered;

    impl crate::Registered for NothingRegistered {
        fn has_workflow(&self, _: &str) -> bool {
            false
        }
        fn has_activity(&self, name: &str) -> bool {
            name == "charge"
        }
        fn search_attribute_type(&self, _: &str) -> Option<cairn_types::SearchType> {
            None
        }
    }

    fn clears(ops: &[Op]) -> Vec<Vec<u8>> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Clear(key) => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    /// The keys `ops` set, derived writes included (derived against an empty store).
    fn sets(ops: &[Op]) -> Vec<Vec<u8>> {
        let store = cairn_store::MemStore::new();
        let mut tx = cairn_store::Store::begin(&store).unwrap();
        let mut out = Vec::new();
        let mut pending: Vec<Op> = ops.to_vec();
        while let Some(op) = pending.pop() {
            match op {
                Op::Set(key, _) => out.push(key),
                Op::Derived(derive) => {
                    pending.extend(futures::executor::block_on(derive.derive(&mut tx)).unwrap());
                }
                _ => {}
            }
        }
        out
    }

    /// An attempt retried as the next one has its task and start mark cleared; an attempt
    /// still pending keeps both.
    #[test]
    fn a_retried_attempt_is_cleared_and_a_pending_one_kept() {
        let keys = Keys::new(b"t");
        let record = record(&[(1, 1), (3, 2)]);
        let ops = plan(
            &record,
            &state(&[(1, 2), (3, 2)], RunStatus::Running),
            &Transition::default(),
        );
        let cleared = clears(&ops);
        let run = record.run_id;
        assert!(cleared.contains(&keys.task(2, &run, 1, 1)));
        assert!(cleared.contains(&keys.attempt(2, &run, 1, 1)));
        assert!(!cleared.contains(&keys.task(2, &run, 3, 2)));
        assert!(!cleared.contains(&keys.attempt(2, &run, 3, 2)));
    }

    /// A run that closes with activities pending clears every one of their tasks (none may be
    /// dispatched again by a later holder) and writes its workflow record.
    #[test]
    fn closing_clears_every_pending_attempt() {
        let keys = Keys::new(b"t");
        let record = record(&[(1, 1), (2, 4)]);
        let transition = Transition {
            events: Vec::new(),
            effects: vec![Effect::RunClosed {
                status: RunStatus::Completed,
            }],
        };
        let ops = plan(&record, &state(&[], RunStatus::Completed), &transition);
        let cleared = clears(&ops);
        let run = record.run_id;
        for (seq, attempt) in [(1, 1), (2, 4)] {
            assert!(cleared.contains(&keys.task(2, &run, seq, attempt)));
            assert!(cleared.contains(&keys.attempt(2, &run, seq, attempt)));
        }
        assert!(sets(&ops).contains(&keys.workflow("default", "order-1")));
    }

    /// A remote run's workflow task check timer is cleared once its task completed (or the
    /// task's timer moved), and kept while the task is still owed.
    #[test]
    fn a_remote_runs_task_timer_is_cleared_when_its_task_ends() {
        let keys = Keys::new(b"t");
        let remote = |task_timer_at: Option<u64>| {
            let mut code = cairn_core::RemoteCode::new("q".into(), 10_000);
            code.task = 1;
            code.task_due = task_timer_at.is_some();
            code.task_timer_at = task_timer_at;
            Some(code)
        };
        let mut record = record(&[]);
        if let Some(state) = record.state.as_mut() {
            state.remote = remote(Some(11_000));
        }
        let timer = keys.timer(
            2,
            11_000,
            &record.run_id,
            &TimerId::WorkflowTask { task: 1 },
        );
        let mut owed = state(&[], RunStatus::Running);
        owed.remote = remote(Some(11_000));
        let kept = plan(&record, &owed, &Transition::default());
        assert!(!clears(&kept).contains(&timer), "still owed: kept");
        let mut done = state(&[], RunStatus::Running);
        done.remote = remote(None);
        let ops = plan(&record, &done, &Transition::default());
        assert!(clears(&ops).contains(&timer), "completed: cleared");
        let mut moved = state(&[], RunStatus::Running);
        moved.remote = remote(Some(15_000));
        let ops = plan(&record, &moved, &Transition::default());
        assert!(clears(&ops).contains(&timer), "moved: the old one cleared");
    }

    fn enqueue(options: ActivityOptions) -> Transition {
        Transition {
            events: Vec::new(),
            effects: vec![Effect::EnqueueActivityTask {
                seq: 5,
                attempt: 1,
                activity_type: "charge".into(),
                input: Payload::encode(&1u32).unwrap(),
                options,
            }],
        }
    }

    fn timer_keys(keys: &Keys, written: &[Vec<u8>]) -> usize {
        let (begin, end) = keys.timers_of_shard(2);
        written
            .iter()
            .filter(|k| k.as_slice() >= begin.as_slice() && k.as_slice() < end.as_slice())
            .count()
    }

    /// An attempt with only a start-to-close timeout is handed over by its enqueuing commit:
    /// its task and provisional start-to-close timer (which marks it started) in one go.
    #[test]
    fn a_plain_attempt_is_handed_over_with_its_mark_and_timer() {
        let keys = Keys::new(b"t");
        let record = record(&[]);
        let ops = plan(
            &record,
            &state(&[(5, 1)], RunStatus::Running),
            &enqueue(options()),
        );
        let written = sets(&ops);
        assert!(written.contains(&keys.task(2, &record.run_id, 5, 1)));
        assert_eq!(timer_keys(&keys, &written), 1);
    }

    /// An attempt of a type this node's workers do not run (a remote worker's) has not started
    /// when its transition commits: no provisional start-to-close timer, so its timeout counts
    /// from the poll that takes it, not from its scheduling.
    #[test]
    fn a_remote_workers_attempt_is_written_unstarted() {
        let keys = Keys::new(b"t");
        let record = record(&[]);
        let mut transition = enqueue(options());
        let Effect::EnqueueActivityTask { activity_type, .. } = &mut transition.effects[0] else {
            unreachable!()
        };
        *activity_type = "ship".into();
        let (ops, after) = plan_with_room(
            &record,
            &state(&[(5, 1)], RunStatus::Running),
            &transition,
            1,
        );
        let written = sets(&ops);
        assert!(written.contains(&keys.task(2, &record.run_id, 5, 1)));
        assert_eq!(timer_keys(&keys, &written), 0);
        assert!(after.timers.is_empty());
        assert_eq!(after.tasks.len(), 1, "still handed to the node's matching");
        // A registered type on another task queue is that queue's workers' too.
        let mut transition = enqueue(options());
        let Effect::EnqueueActivityTask { options, .. } = &mut transition.effects[0] else {
            unreachable!()
        };
        options.task_queue = "orders".into();
        let (ops, _) = plan_with_room(
            &record,
            &state(&[(5, 1)], RunStatus::Running),
            &transition,
            1,
        );
        assert_eq!(timer_keys(&keys, &sets(&ops)), 0);
    }

    /// An attempt with a heartbeat timeout waits for a worker's claim: its enqueuing commit
    /// writes the task only (no mark, no timer).
    #[test]
    fn a_heartbeating_attempt_waits_for_its_claim() {
        let keys = Keys::new(b"t");
        let record = record(&[]);
        let mut beating = options();
        beating.timeouts = beating.timeouts.with_heartbeat(Duration::from_secs(1));
        let ops = plan(
            &record,
            &state(&[(5, 1)], RunStatus::Running),
            &enqueue(beating),
        );
        let written = sets(&ops);
        assert!(written.contains(&keys.task(2, &record.run_id, 5, 1)));
        assert!(!written.contains(&keys.attempt(2, &record.run_id, 5, 1)));
        assert_eq!(timer_keys(&keys, &written), 0);
    }

    /// With room for one of three new tasks (the workers are near their dispatch bound), the
    /// first is handed over as usual; the other two are written with a deferred marker and no
    /// provisional timer (they have not started), and are not handed to the workers.
    #[test]
    fn tasks_past_the_room_are_written_deferred() {
        let keys = Keys::new(b"t");
        let record = record(&[]);
        let mut transition = enqueue(options());
        let Effect::EnqueueActivityTask { input, options, .. } = transition.effects[0].clone()
        else {
            unreachable!()
        };
        for seq in [6, 7] {
            transition.effects.push(Effect::EnqueueActivityTask {
                seq,
                attempt: 1,
                activity_type: "charge".into(),
                input: input.clone(),
                options: options.clone(),
            });
        }
        let after_state = state(&[(5, 1), (6, 1), (7, 1)], RunStatus::Running);
        let (ops, after) = plan_with_room(&record, &after_state, &transition, 1);
        let written = sets(&ops);
        let run = record.run_id;
        for seq in [5, 6, 7] {
            assert!(written.contains(&keys.task(2, &run, seq, 1)), "task {seq}");
        }
        assert!(!written.contains(&keys.deferred(2, &run, 5, 1)));
        assert!(written.contains(&keys.deferred(2, &run, 6, 1)));
        assert!(written.contains(&keys.deferred(2, &run, 7, 1)));
        assert_eq!(
            timer_keys(&keys, &written),
            1,
            "only the handed-over task's timer"
        );
        assert_eq!(after.tasks.len(), 1);
        assert_eq!(after.tasks[0].seq, 5);
        assert!(after.deferred);
        // With room for all, nothing is deferred.
        let (ops, after) = plan_with_room(&record, &after_state, &transition, 3);
        assert!(
            !sets(&ops)
                .iter()
                .any(|k| *k == keys.deferred(2, &run, 6, 1))
        );
        assert_eq!(after.tasks.len(), 3);
        assert!(!after.deferred);
    }

    /// The writes a transition decides inside the commit are data: printed, they say what
    /// will be read and what each outcome writes, and two plans of one transition print alike.
    #[test]
    fn derived_writes_print_as_data() {
        let record = record(&[]);
        let transition = Transition {
            events: Vec::new(),
            effects: vec![
                Effect::SignalExternal {
                    seq: 3,
                    workflow_id: WorkflowId::new("invoice-9").unwrap(),
                    run_id: None,
                    signal_name: "paid".into(),
                    input: Payload::encode(&7u32).unwrap(),
                },
                Effect::CancelChild {
                    seq: 4,
                    workflow_id: WorkflowId::new("ship-1").unwrap(),
                    run_id: None,
                },
            ],
        };
        let derived = |ops: Vec<Op>| -> Vec<String> {
            ops.into_iter()
                .filter(|op| matches!(op, Op::Derived(_)))
                .map(|op| format!("{op:?}"))
                .filter(|printed| !printed.starts_with("Derived(PutWorkflow"))
                .collect()
        };
        let after = state(&[], RunStatus::Running);
        let printed = derived(plan(&record, &after, &transition));
        assert_eq!(printed, derived(plan(&record, &after, &transition)));
        expect_test::expect![[r#"
            Derived(MessageExternal { wf_key: "t\x02v1\x00\x02wf\x00\x02default\x00\x02invoice-9\x00", target_shard: 2, workflow_id: WorkflowId("invoice-9"), run_id: None, message: Signal { name: "paid", input: Payload(1 bytes) }, requester: Requester { shard: 2, run_id: RunId(00000000-03e8-7707-8707-070707070707) }, answer: Signaled { seq: 3 } })
            Derived(MessageChild { wf_key: "t\x02v1\x00\x02wf\x00\x02default\x00\x02ship-1\x00", child_shard: 1, parent_run: RunId(00000000-03e8-7707-8707-070707070707), run_id: None, message: CancelRequested { reason: "canceled by its parent workflow order-1" } })"#]].assert_eq(&printed.join("\n"));
        // Derived against a store without the target: the requester alone is told (that the
        // target is not open); the child message writes nothing.
        let store = cairn_store::MemStore::new();
        let mut tx = cairn_store::Store::begin(&store).unwrap();
        let mut outcomes = Vec::new();
        for op in plan(&record, &after, &transition) {
            if let Op::Derived(derive) = op
                && !format!("{derive:?}").starts_with("PutWorkflow")
            {
                outcomes.push(futures::executor::block_on(derive.derive(&mut tx)).unwrap());
            }
        }
        assert!(matches!(
            outcomes[0].as_slice(),
            [Op::Mail { shard: 2, run_id, .. }] if *run_id == record.run_id
        ));
        assert!(outcomes[1].is_empty());
    }
}
