//! Schedules: workflows started on a cadence (cron in a time zone, intervals), with overlap
//! policies, a catch-up window, pause, trigger and backfill.
//!
//! A schedule lives in one record (`("sched", ns, id)`) and belongs to the shard of its id.
//! That shard's holder keeps the schedule's next wake-up in memory (from the index
//! `("schedq", shard, at, id)`, loaded when the shard is claimed) and, when it is due, fires
//! every due schedule of the shard in **one lease-fenced commit**: for each, an `Op::Derived`
//! reads the record (and the workflows it started) inside the transaction and decides what to
//! start, skip, buffer, cancel or terminate, writes the started workflows, the new record and
//! the next wake-up. A started workflow's id is `{schedule_id}-{nominal time, RFC 3339}`, and
//! it is not started if that id exists, so no restart or retry starts one twice. Client changes
//! (create, pause, trigger, …) are read-modify-writes of the record through the committer that
//! also write a wake-up, which reaches the holder wherever it is (`Op::WakeSchedule`). A
//! workflow a schedule started wakes it when it closes, so buffered starts go on at once.

use crate::error::ClientError;
use crate::keys::Keys;
use crate::ops::{Check, Derivation, Derive, DeriveFuture, Op, TxRead};
use crate::records::{
    InboxItem, NewRun, Stored, WorkflowRecord, clear_record_ops, decode, encode, load_record,
    record_ops,
};
use cairn_core::Message;
use cairn_core::schedule::{CompiledSpec, OverlapPolicy, SchedulePolicies, ScheduleSpec};
use cairn_core::visibility::format_time;
use cairn_store::StoreResult;
use cairn_types::{Payload, RunId, WorkflowId, WorkflowTimeouts};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Recent actions a schedule remembers (for describe).
pub const SCHEDULE_RECENT_ACTIONS_MAX: usize = 10;
/// Most nominal times one schedule processes in one pass; the rest wait for the next tick.
pub const SCHEDULE_TIMES_PER_PASS_MAX: usize = 64;
/// Longest schedule id, in bytes (it prefixes the workflow ids it starts).
pub const SCHEDULE_ID_BYTES_MAX: usize = 200;
/// Most start times one backfill may cover.
pub const SCHEDULE_BACKFILL_TIMES_MAX: usize = 10_000;
/// Most workflows a schedule tracks as running (allow-all overlap can start more; the oldest
/// stop being tracked).
pub const SCHEDULE_RUNNING_MAX: usize = 100;

/// What a schedule starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleAction {
    pub workflow_type: String,
    pub input: Payload,
    pub timeouts: WorkflowTimeouts,
    /// The workflow id its runs are named after (`{workflow_id}-{nominal time}`, as Temporal
    /// names them); `None`: the schedule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Set when the workflows it starts run in remote workers (see `StartRecord::remote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::records::RemoteStart>,
    /// The memo each started run gets.
    #[serde(default, skip_serializing_if = "cairn_types::Memo::is_empty")]
    pub memo: cairn_types::Memo,
    /// The search attributes each started run gets.
    #[serde(
        default,
        skip_serializing_if = "cairn_types::SearchAttributes::is_empty"
    )]
    pub search_attributes: cairn_types::SearchAttributes,
}

/// How one nominal time was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    Started,
    /// Its workflow id existed already (an earlier attempt or a restart started it).
    AlreadyStarted,
    /// Skipped by the overlap policy.
    Skipped,
    /// Waiting for the running workflow to close (buffer policies, cancel-other).
    Buffered,
    /// Older than the catch-up window when the schedule got to it.
    Missed,
}

/// One recent action of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentAction {
    pub nominal_unix_ms: u64,
    pub actual_unix_ms: u64,
    pub kind: ActionKind,
    pub workflow_id: Option<String>,
    pub run_id: Option<RunId>,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub schedule_id: String,
    pub namespace: String,
    pub spec: ScheduleSpec,
    pub action: ScheduleAction,
    pub policies: SchedulePolicies,
    pub paused: bool,
    pub note: String,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// Nominal times up to here have been handled (started, skipped, buffered or missed).
    pub processed_until_unix_ms: u64,
    /// When the holder looks at the schedule next (the time in its index key).
    pub wake_at_unix_ms: Option<u64>,
    /// Workflows it started that were open when last checked: (workflow id, run id).
    pub running: Vec<(String, RunId)>,
    /// Nominal times waiting for the running workflow to close.
    pub buffered: VecDeque<u64>,
    /// Times to start now, whatever the spec says (trigger requests), each with the overlap
    /// policy to apply (`None`: the schedule's).
    pub triggers: Vec<(u64, Option<OverlapPolicy>)>,
    /// Ranges of nominal times to start, whatever the catch-up window says.
    pub backfills: VecDeque<Backfill>,
    pub recent_actions: VecDeque<RecentAction>,
    pub actions_started: u64,
    pub actions_skipped: u64,
    pub actions_missed: u64,
    /// The create request that wrote the schedule: a create retried after the store answered
    /// `MaybeCommitted` recognises its own write by it.
    #[serde(default)]
    pub request_id: String,
}

/// A range of nominal times to start (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// The overlap policy for these starts (`None`: the schedule's).
    pub overlap: Option<OverlapPolicy>,
}

/// What a client asks for when creating a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSchedule {
    pub schedule_id: String,
    pub spec: ScheduleSpec,
    pub action: ScheduleAction,
    pub policies: SchedulePolicies,
    pub paused: bool,
    pub note: String,
}

/// A schedule as `describe` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDescription {
    pub record: ScheduleRecord,
    /// The next start times (after jitter), at most `count` asked for.
    pub next_times_unix_ms: Vec<u64>,
}

/// The workflow id a schedule gives the run of nominal time `nominal`: its action's
/// workflow id (or the schedule id) and the time.
pub fn scheduled_workflow_id(base: &str, nominal: u64) -> String {
    format!("{base}-{}", format_time(nominal))
}

fn invalid(reason: impl Into<String>) -> ClientError {
    ClientError::InvalidSchedule {
        reason: reason.into(),
    }
}

/// Longest note a schedule keeps, in bytes.
pub const SCHEDULE_NOTE_BYTES_MAX: usize = 1_000;

/// Refuses a schedule id no schedule can have, before any key is built from it.
pub fn check_schedule_id(id: &str) -> Result<(), ClientError> {
    if id.is_empty() || id.len() > SCHEDULE_ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "schedule id must be 1 to {SCHEDULE_ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

/// Refuses a note longer than [`SCHEDULE_NOTE_BYTES_MAX`].
pub fn check_note(note: &str) -> Result<(), ClientError> {
    if note.len() > SCHEDULE_NOTE_BYTES_MAX {
        return Err(invalid(format!(
            "note is {} bytes; the limit is {SCHEDULE_NOTE_BYTES_MAX}",
            note.len()
        )));
    }
    Ok(())
}

/// Checks what a client sent and builds the stored record.
pub fn new_record(
    request: CreateSchedule,
    namespace: &str,
    registered: bool,
    now: u64,
    request_id: uuid::Uuid,
) -> Result<(ScheduleRecord, CompiledSpec), ClientError> {
    let id = &request.schedule_id;
    check_schedule_id(id)?;
    check_note(&request.note)?;
    // The ids it will start must be valid workflow ids.
    WorkflowId::new(scheduled_workflow_id(
        request.action.workflow_id.as_deref().unwrap_or(id),
        now,
    ))?;
    if !registered {
        return Err(ClientError::UnknownWorkflowType {
            workflow_type: request.action.workflow_type.clone(),
            registered: Vec::new(),
        });
    }
    let compiled = request.spec.compile().map_err(|e| invalid(e.to_string()))?;
    let policies = request
        .policies
        .validate()
        .map_err(|e| invalid(e.to_string()))?;
    let timeouts = request.action.timeouts.validate()?;
    let record = ScheduleRecord {
        schedule_id: request.schedule_id,
        namespace: namespace.to_string(),
        spec: request.spec,
        action: ScheduleAction {
            timeouts,
            ..request.action
        },
        policies,
        paused: request.paused,
        note: request.note,
        created_unix_ms: now,
        updated_unix_ms: now,
        processed_until_unix_ms: now,
        wake_at_unix_ms: None,
        running: Vec::new(),
        buffered: VecDeque::new(),
        triggers: Vec::new(),
        backfills: VecDeque::new(),
        recent_actions: VecDeque::new(),
        actions_started: 0,
        actions_skipped: 0,
        actions_missed: 0,
        request_id: request_id.to_string(),
    };
    Ok((record, compiled))
}

/// When the holder should look at `record` next: its next fire (unless paused), or now if a
/// trigger or backfill waits. Buffered starts wait for the running workflow's close, which
/// wakes the schedule itself.
pub fn next_wake(record: &ScheduleRecord, spec: &CompiledSpec, now: u64) -> Option<u64> {
    if !record.triggers.is_empty() || !record.backfills.is_empty() {
        return Some(now);
    }
    if record.paused {
        return None;
    }
    if !record.buffered.is_empty() && record.running.is_empty() {
        return Some(now);
    }
    let next = spec.next_after(record.processed_until_unix_ms)?;
    Some(next.saturating_add(spec.jitter(&record.schedule_id, next)))
}

/// Writes `record` with its wake-up moved to `wake` (clearing the old index entry);
/// `previous` is how the record was stored before, so chunks it no longer needs are cleared.
pub fn store_record(
    keys: &Keys,
    shard: u32,
    mut record: ScheduleRecord,
    wake: Option<u64>,
    previous: Stored,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if let Some(old) = record.wake_at_unix_ms
        && Some(old) != wake
    {
        ops.push(Op::Clear(keys.schedule_wake(
            shard,
            old,
            &record.schedule_id,
        )));
    }
    if let Some(at) = wake {
        ops.push(Op::WakeSchedule {
            shard,
            schedule_id: record.schedule_id.clone(),
            at_unix_ms: at,
        });
    }
    record.wake_at_unix_ms = wake;
    ops.extend(record_ops(
        keys,
        &keys.schedule(&record.namespace, &record.schedule_id),
        encode(&record),
        previous.chunk_count(),
    ));
    ops
}

/// Reads schedule `schedule_id` inside a transaction, with how it is stored.
pub async fn read_schedule(
    tx: &mut dyn TxRead,
    keys: &Keys,
    namespace: &str,
    schedule_id: &str,
) -> StoreResult<Option<(ScheduleRecord, Stored)>> {
    load_record(tx, keys, &keys.schedule(namespace, schedule_id), "schedule").await
}

/// Where the workflows a schedule starts go.
#[derive(Debug, Clone)]
pub struct Placement {
    pub keys: Keys,
    pub shard_count: u32,
}

impl Placement {
    fn shard_of(&self, workflow_id: &str) -> u32 {
        crate::keys::shard_of(workflow_id, self.shard_count)
    }
}

/// The writes of one fire pass over schedule `schedule_id` at time `now`, woken by the index
/// entries at `woken_at`, decided inside the batch transaction from the record and the
/// workflows it started ([`FireSchedule`]). The runs it starts take their ids from one draw
/// of `entropy`. The record's next wake-up is an `Op::WakeSchedule`, which tells the shard's
/// holder once the commit lands.
pub fn fire(
    placement: Placement,
    namespace: String,
    schedule_id: String,
    shard: u32,
    woken_at: Vec<u64>,
    now: u64,
    entropy: &crate::entropy::Entropy,
) -> Op {
    Op::Derived(Derive::new(FireSchedule {
        placement,
        namespace,
        schedule_id,
        shard,
        woken_at,
        now,
        run_id_seed: entropy.next_u64(),
    }))
}

/// See [`fire`].
#[derive(Debug)]
pub struct FireSchedule {
    pub placement: Placement,
    pub namespace: String,
    pub schedule_id: String,
    pub shard: u32,
    pub woken_at: Vec<u64>,
    pub now: u64,
    /// Seeds the ids of the runs the pass starts (the same on every attempt of the batch).
    pub run_id_seed: u64,
}

impl Derivation for FireSchedule {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let (placement, schedule_id, shard, now) =
                (&self.placement, &self.schedule_id, self.shard, self.now);
            let keys = &placement.keys;
            // The index entries that woke this pass are used up (the record's own next one is
            // rewritten below).
            let mut ops: Vec<Op> = self
                .woken_at
                .iter()
                .map(|at| Op::Clear(keys.schedule_wake(shard, *at, schedule_id)))
                .collect();
            let Some((record, stored)) =
                read_schedule(tx, keys, &self.namespace, schedule_id).await?
            else {
                // Deleted meanwhile.
                return Ok(ops);
            };
            let spec = match record.spec.compile() {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(schedule_id, error = %e, "stored schedule no longer compiles");
                    ops.extend(store_record(keys, shard, record, None, stored));
                    return Ok(ops);
                }
            };
            let run_ids = crate::entropy::Entropy::seeded(self.run_id_seed);
            let (record, started) = pass(tx, placement, &run_ids, record, &spec, now).await?;
            ops.extend(started);
            let wake = next_wake(&record, &spec, now);
            ops.extend(store_record(keys, shard, record, wake, stored));
            Ok(ops)
        })
    }
}

/// One pass: refresh what runs, then handle triggers, backfills, due times and buffered
/// starts, in that order, under the overlap policy.
async fn pass(
    tx: &mut dyn TxRead,
    placement: &Placement,
    run_ids: &crate::entropy::Entropy,
    mut record: ScheduleRecord,
    spec: &CompiledSpec,
    now: u64,
) -> StoreResult<(ScheduleRecord, Vec<Op>)> {
    let mut ops = Vec::new();
    // Which of the workflows it started still run. A workflow id it started gets a new run
    // only by continuing as new, so the id's current run, if open, is the one to track.
    let mut still = Vec::new();
    for (workflow_id, _) in std::mem::take(&mut record.running) {
        let key = placement.keys.workflow(&record.namespace, &workflow_id);
        if let Some(bytes) = tx.read(&key).await? {
            let current: WorkflowRecord = decode("workflow", &bytes)?;
            if current.status.is_none_or(|s| !s.is_closed()) {
                still.push((workflow_id, current.run_id));
            }
        }
    }
    record.running = still;
    // (nominal time, counts against the catch-up window, overlap policy)
    let mut times: Vec<(u64, bool, OverlapPolicy)> = Vec::new();
    let default = record.policies.overlap;
    for (t, overlap) in std::mem::take(&mut record.triggers) {
        times.push((t, false, overlap.unwrap_or(default)));
    }
    while times.len() < SCHEDULE_TIMES_PER_PASS_MAX {
        let Some(backfill) = record.backfills.front().copied() else {
            break;
        };
        let room = SCHEDULE_TIMES_PER_PASS_MAX - times.len();
        let batch = spec.times_between(
            backfill.start_unix_ms.saturating_sub(1),
            backfill.end_unix_ms,
            room,
        );
        match batch.last() {
            Some(last) if batch.len() == room && *last < backfill.end_unix_ms => {
                record.backfills[0].start_unix_ms = last + 1;
            }
            _ => {
                record.backfills.pop_front();
            }
        }
        let overlap = backfill.overlap.unwrap_or(default);
        times.extend(batch.into_iter().map(|t| (t, false, overlap)));
    }
    if record.paused {
        // Times passing while paused are not made up later (as in Temporal).
        record.processed_until_unix_ms = record.processed_until_unix_ms.max(now);
    } else {
        let room = SCHEDULE_TIMES_PER_PASS_MAX
            .saturating_sub(times.len())
            .max(1);
        for nominal in spec.times_between(record.processed_until_unix_ms, now, room) {
            if nominal.saturating_add(spec.jitter(&record.schedule_id, nominal)) > now {
                break;
            }
            record.processed_until_unix_ms = nominal;
            times.push((nominal, true, default));
        }
    }
    for (nominal, catchup_applies, overlap) in times {
        let late_by =
            now.saturating_sub(nominal.saturating_add(spec.jitter(&record.schedule_id, nominal)));
        if catchup_applies && late_by > record.policies.catchup_window_ms {
            record.actions_missed += 1;
            remember(&mut record, nominal, now, ActionKind::Missed, None);
            continue;
        }
        decide(
            tx,
            placement,
            run_ids,
            &mut record,
            nominal,
            overlap,
            now,
            &mut ops,
        )
        .await?;
    }
    // A buffered start goes once nothing runs any more (and the schedule is not paused).
    if record.running.is_empty()
        && !record.paused
        && let Some(nominal) = record.buffered.pop_front()
    {
        start(tx, placement, run_ids, &mut record, nominal, now, &mut ops).await?;
    }
    Ok((record, ops))
}

/// Handles one nominal time under overlap policy `overlap`.
#[allow(clippy::too_many_arguments)]
async fn decide(
    tx: &mut dyn TxRead,
    placement: &Placement,
    run_ids: &crate::entropy::Entropy,
    record: &mut ScheduleRecord,
    nominal: u64,
    overlap: OverlapPolicy,
    now: u64,
    ops: &mut Vec<Op>,
) -> StoreResult<()> {
    if record.running.is_empty() {
        return start(tx, placement, run_ids, record, nominal, now, ops).await;
    }
    match overlap {
        OverlapPolicy::Skip => {
            record.actions_skipped += 1;
            remember(record, nominal, now, ActionKind::Skipped, None);
        }
        OverlapPolicy::BufferOne => {
            record.buffered.clear();
            record.buffered.push_back(nominal);
            remember(record, nominal, now, ActionKind::Buffered, None);
        }
        OverlapPolicy::BufferAll => {
            record.buffered.push_back(nominal);
            remember(record, nominal, now, ActionKind::Buffered, None);
        }
        OverlapPolicy::CancelOther => {
            for (workflow_id, run_id) in &record.running {
                ops.push(message(
                    placement,
                    workflow_id,
                    *run_id,
                    Message::CancelRequested {
                        reason: format!(
                            "schedule {} started a newer run (overlap policy: cancel other)",
                            record.schedule_id
                        ),
                    },
                ));
            }
            record.buffered.clear();
            record.buffered.push_back(nominal);
            remember(record, nominal, now, ActionKind::Buffered, None);
        }
        OverlapPolicy::TerminateOther => {
            for (workflow_id, run_id) in std::mem::take(&mut record.running) {
                ops.push(message(
                    placement,
                    &workflow_id,
                    run_id,
                    Message::Terminate {
                        reason: format!(
                            "schedule {} started a newer run (overlap policy: terminate other)",
                            record.schedule_id
                        ),
                    },
                ));
            }
            start(tx, placement, run_ids, record, nominal, now, ops).await?;
        }
        OverlapPolicy::AllowAll => start(tx, placement, run_ids, record, nominal, now, ops).await?,
    }
    Ok(())
}

fn message(placement: &Placement, workflow_id: &str, run_id: RunId, message: Message) -> Op {
    Op::Mail {
        shard: placement.shard_of(workflow_id),
        run_id,
        item: encode(&InboxItem::Message(message)),
    }
}

/// Starts the run of nominal time `nominal`, unless its workflow id exists already.
async fn start(
    tx: &mut dyn TxRead,
    placement: &Placement,
    run_ids: &crate::entropy::Entropy,
    record: &mut ScheduleRecord,
    nominal: u64,
    now: u64,
    ops: &mut Vec<Op>,
) -> StoreResult<()> {
    let id = scheduled_workflow_id(
        record
            .action
            .workflow_id
            .as_deref()
            .unwrap_or(&record.schedule_id),
        nominal,
    );
    let key = placement.keys.workflow(&record.namespace, &id);
    if let Some(bytes) = tx.read(&key).await? {
        let existing: WorkflowRecord = decode("workflow", &bytes)?;
        remember(
            record,
            nominal,
            now,
            ActionKind::AlreadyStarted,
            Some((id, existing.run_id)),
        );
        return Ok(());
    }
    let Ok(workflow_id) = WorkflowId::new(id.clone()) else {
        // Checked at creation; a schedule id that makes a bad workflow id never gets here.
        return Ok(());
    };
    let run = NewRun::new(
        &record.namespace,
        workflow_id,
        &record.action.workflow_type,
        record.action.input.clone(),
        record.action.timeouts,
        now,
        run_ids.run_id(now),
    )
    .with(
        record.action.memo.clone(),
        record.action.search_attributes.clone(),
    )
    .scheduled_by(&record.schedule_id);
    let mut run = run;
    run.record.start.remote = record.action.remote.clone();
    // The workflow id was just read and found free.
    ops.extend(run.writes(
        &placement.keys,
        placement.shard_of(&id),
        crate::visibility::Replacing::Nothing,
    ));
    record.running.push((id.clone(), run.run_id));
    if record.running.len() > SCHEDULE_RUNNING_MAX {
        record.running.remove(0);
    }
    record.actions_started += 1;
    remember(
        record,
        nominal,
        now,
        ActionKind::Started,
        Some((id, run.run_id)),
    );
    Ok(())
}

fn remember(
    record: &mut ScheduleRecord,
    nominal: u64,
    now: u64,
    kind: ActionKind,
    started: Option<(String, RunId)>,
) {
    let (workflow_id, run_id) = match started {
        Some((id, run)) => (Some(id), Some(run)),
        None => (None, None),
    };
    record.recent_actions.push_back(RecentAction {
        nominal_unix_ms: nominal,
        actual_unix_ms: now,
        kind,
        workflow_id,
        run_id,
    });
    while record.recent_actions.len() > SCHEDULE_RECENT_ACTIONS_MAX {
        record.recent_actions.pop_front();
    }
}

/// A check that schedule `key` exists (refusing with `ScheduleNotFound` otherwise).
pub fn must_exist(key: Vec<u8>, schedule_id: &str) -> Check {
    let id = schedule_id.to_string();
    Check::key(key, move |value: Option<&[u8]>| match value {
        Some(_) => Ok(()),
        None => Err(ClientError::ScheduleNotFound {
            schedule_id: id.clone(),
        }),
    })
}

/// A change to a schedule record, made by a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleChange {
    /// No starts until unpaused; times passing meanwhile are not made up.
    Pause { note: String },
    /// Goes on from now.
    Unpause { note: String },
    /// Starts the schedule's workflow for time `at` (fixed by the caller, so a retried commit
    /// repeats the same trigger), under `overlap` (`None`: the schedule's policy).
    Trigger {
        at: u64,
        overlap: Option<OverlapPolicy>,
    },
    /// Queues a backfill (once, however often the commit is retried).
    Backfill(Backfill),
    /// Replaces what the schedule does and when (from a validated record); its history —
    /// recent actions, counts, running workflows, queued backfills — stays. Times of the new
    /// spec that passed before the change are not made up.
    Replace(Box<ScheduleRecord>),
}

impl ScheduleChange {
    fn apply(&self, record: &mut ScheduleRecord, now: u64) {
        match self {
            Self::Pause { note } => {
                record.paused = true;
                record.note = note.clone();
            }
            Self::Unpause { note } => {
                record.paused = false;
                record.note = note.clone();
                record.processed_until_unix_ms = record.processed_until_unix_ms.max(now);
            }
            Self::Trigger { at, overlap } => {
                if !record.triggers.contains(&(*at, *overlap)) {
                    record.triggers.push((*at, *overlap));
                }
            }
            Self::Backfill(backfill) => {
                if !record.backfills.contains(backfill) {
                    record.backfills.push_back(*backfill);
                }
            }
            Self::Replace(fresh) => {
                record.spec = fresh.spec.clone();
                record.action = fresh.action.clone();
                record.policies = fresh.policies;
                record.paused = fresh.paused;
                record.note = fresh.note.clone();
                record.processed_until_unix_ms = record.processed_until_unix_ms.max(now);
            }
        }
    }
}

/// A change to an existing schedule at time `now`, made inside the batch transaction: reads
/// the record, applies the change, stores it with a fresh wake-up.
#[derive(Debug)]
pub struct UpdateSchedule {
    pub keys: Keys,
    pub namespace: String,
    pub schedule_id: String,
    pub shard: u32,
    pub change: ScheduleChange,
    pub now: u64,
}

impl Derivation for UpdateSchedule {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let Some((mut record, stored)) =
                read_schedule(tx, &self.keys, &self.namespace, &self.schedule_id).await?
            else {
                return Ok(Vec::new());
            };
            self.change.apply(&mut record, self.now);
            record.updated_unix_ms = self.now;
            let wake = match record.spec.compile() {
                Ok(spec) => next_wake(&record, &spec, self.now),
                Err(_) => None,
            };
            Ok(store_record(&self.keys, self.shard, record, wake, stored))
        })
    }
}

/// A schedule's deletion, inside the batch transaction: its record and its wake-up entry (the
/// workflows it started run on).
#[derive(Debug)]
pub struct DeleteSchedule {
    pub keys: Keys,
    pub namespace: String,
    pub schedule_id: String,
    pub shard: u32,
}

impl Derivation for DeleteSchedule {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        Box::pin(async move {
            let (keys, id) = (&self.keys, &self.schedule_id);
            let Some((record, _)) = read_schedule(tx, keys, &self.namespace, id).await? else {
                return Ok(Vec::new());
            };
            let mut ops = clear_record_ops(keys, &keys.schedule(&self.namespace, id));
            if let Some(at) = record.wake_at_unix_ms {
                ops.push(Op::Clear(keys.schedule_wake(self.shard, at, id)));
            }
            Ok(ops)
        })
    }
}
