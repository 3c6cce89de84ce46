//! Client calls on schedules: create, describe, list, pause, unpause, trigger, backfill,
//! delete.

use crate::error::ClientError;
use crate::node::{Node, check_payload, check_start_bytes};
use crate::ops::{Check, Derive, Op, Verify};
use crate::records::{Stored, decode_row};
use crate::schedules::{
    self, CreateSchedule, ScheduleChange, ScheduleDescription, ScheduleRecord, must_exist,
};
use cairn_core::schedule::OverlapPolicy;
use cairn_store::{RangeRequest, Store, Transaction};

/// Schedule records one transaction of [`Node::list_schedules`] reads (each may bring its
/// chunks along).
pub const SCHEDULES_PAGE_MAX: usize = 256;

impl<S: Store> Node<S> {
    /// Creates a schedule. Refused, writing nothing, if the id exists, the spec or policies
    /// are invalid, or the workflow type is not registered here.
    pub async fn create_schedule(&self, request: CreateSchedule) -> Result<(), ClientError> {
        let shared = &self.shared;
        let now = self.shared.now_ms();
        let (record, spec) = self.validated_schedule(request, now)?;
        let id = record.schedule_id.clone();
        let key = shared.keys.schedule(&record.namespace, &id);
        let exists = Check::key(key, {
            let id = id.clone();
            move |value: Option<&[u8]>| match value {
                None => Ok(()),
                Some(_) => Err(ClientError::ScheduleExists {
                    schedule_id: id.clone(),
                }),
            }
        });
        let request_id = record.request_id.clone();
        let wake = schedules::next_wake(&record, &spec, now);
        let ops = schedules::store_record(
            &shared.keys,
            shared.shard_of_id(&id),
            record,
            wake,
            Stored::Whole,
        );
        match self.submit(ops, vec![exists], None).await {
            // A retry after `MaybeCommitted` finds the schedule its first attempt wrote.
            Err(ClientError::ScheduleExists { schedule_id }) => {
                let mut tx = shared.store.begin()?;
                let stored = schedules::read_schedule(
                    &mut tx,
                    &shared.keys,
                    &shared.config.namespace,
                    &schedule_id,
                )
                .await?;
                match stored {
                    Some((record, _)) if record.request_id == request_id => Ok(()),
                    _ => Err(ClientError::ScheduleExists { schedule_id }),
                }
            }
            other => other,
        }
    }

    /// Replaces what schedule `request.schedule_id` does and when (spec, action, policies,
    /// paused, note) in one commit, checked as a create is; its recent actions, counts and
    /// running workflows stay. Refused, changing nothing, if it is missing or the request is
    /// invalid.
    pub async fn update_schedule(&self, request: CreateSchedule) -> Result<(), ClientError> {
        let (record, _) = self.validated_schedule(request, self.shared.now_ms())?;
        let id = record.schedule_id.clone();
        self.change_schedule(&id, ScheduleChange::Replace(Box::new(record)))
            .await
    }

    /// A new schedule record from `request`, or why it is refused: the id, note, spec,
    /// policies and timeouts, the workflow type (registered here unless remote), the input
    /// (it must decode as the type's input) and the start's bounds.
    fn validated_schedule(
        &self,
        request: CreateSchedule,
        now: u64,
    ) -> Result<(ScheduleRecord, cairn_core::schedule::CompiledSpec), ClientError> {
        let shared = &self.shared;
        let remote = request.action.remote.is_some();
        let registered = remote
            || shared
                .registry
                .workflow_def(&request.action.workflow_type)
                .is_some();
        check_payload("schedule input", &request.action.input)?;
        cairn_types::memo::validate_memo(&request.action.memo)?;
        self.check_search_attributes(&request.action.search_attributes)?;
        check_start_bytes(
            &request.action.input,
            &request.action.memo,
            &request.action.search_attributes,
        )?;
        let (record, spec) = schedules::new_record(
            request,
            &shared.config.namespace,
            registered,
            now,
            shared.config.entropy.uuid_v7(now),
        )
        .map_err(|e| match e {
            ClientError::UnknownWorkflowType { workflow_type, .. } => {
                ClientError::UnknownWorkflowType {
                    workflow_type,
                    registered: shared.registry.workflow_names(),
                }
            }
            other => other,
        })?;
        // Checked after the spec, as start checks its input: a schedule whose every start
        // would be refused is refused itself.
        if !remote {
            shared
                .registry
                .check_input(&record.action.workflow_type, &record.action.input)
                .map_err(|reason| ClientError::InputDoesNotDecode {
                    workflow_type: record.action.workflow_type.clone(),
                    reason,
                })?;
        }
        Ok((record, spec))
    }

    /// A schedule, and its next `count` start times (after jitter).
    pub async fn describe_schedule(
        &self,
        schedule_id: &str,
        count: usize,
    ) -> Result<ScheduleDescription, ClientError> {
        schedules::check_schedule_id(schedule_id)?;
        let mut tx = self.shared.store.begin()?;
        let namespace = &self.shared.config.namespace;
        let (record, _) =
            schedules::read_schedule(&mut tx, &self.shared.keys, namespace, schedule_id)
                .await?
                .ok_or_else(|| ClientError::ScheduleNotFound {
                    schedule_id: schedule_id.to_string(),
                })?;
        let mut next_times_unix_ms = Vec::new();
        if !record.paused
            && let Ok(spec) = record.spec.compile()
        {
            let mut at = record.processed_until_unix_ms.max(self.shared.now_ms());
            while next_times_unix_ms.len() < count.min(100) {
                let Some(next) = spec.next_after(at) else {
                    break;
                };
                next_times_unix_ms.push(next.saturating_add(spec.jitter(schedule_id, next)));
                at = next;
            }
        }
        Ok(ScheduleDescription {
            record,
            next_times_unix_ms,
        })
    }

    /// Every schedule of the namespace, read [`SCHEDULES_PAGE_MAX`] per transaction.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, ClientError> {
        let (mut begin, end) = self.shared.keys.schedules(&self.shared.config.namespace);
        let mut records = Vec::new();
        loop {
            let mut tx = self.shared.store.begin()?;
            let rows = tx
                .get_range(
                    &RangeRequest::new(begin.clone(), end.clone())
                        .limit(SCHEDULES_PAGE_MAX)
                        .snapshot(),
                )
                .await?;
            for row in &rows {
                records.push(decode_row(&mut tx, &self.shared.keys, row, "schedule").await?);
            }
            match rows.last() {
                Some(last) if rows.len() == SCHEDULES_PAGE_MAX => {
                    begin = cairn_store::keyspace::key_after(&last.key);
                }
                _ => return Ok(records),
            }
        }
    }

    /// Applies `change` to schedule `schedule_id` inside a commit (refused if it is missing).
    pub(crate) async fn change_schedule(
        &self,
        schedule_id: &str,
        change: ScheduleChange,
    ) -> Result<(), ClientError> {
        schedules::check_schedule_id(schedule_id)?;
        let shared = &self.shared;
        let namespace = shared.config.namespace.clone();
        let key = shared.keys.schedule(&namespace, schedule_id);
        let op = Op::Derived(Derive::new(schedules::UpdateSchedule {
            keys: shared.keys.clone(),
            namespace,
            schedule_id: schedule_id.to_string(),
            shard: shared.shard_of_id(schedule_id),
            change,
            now: shared.now_ms(),
        }));
        self.submit(vec![op], vec![must_exist(key, schedule_id)], None)
            .await
    }

    /// Pauses a schedule (no starts until unpaused; times passing meanwhile are not made up).
    pub async fn pause_schedule(&self, schedule_id: &str, note: &str) -> Result<(), ClientError> {
        schedules::check_note(note)?;
        let note = note.to_string();
        self.change_schedule(schedule_id, ScheduleChange::Pause { note })
            .await
    }

    /// Unpauses a schedule; it goes on from now.
    pub async fn unpause_schedule(&self, schedule_id: &str, note: &str) -> Result<(), ClientError> {
        schedules::check_note(note)?;
        let note = note.to_string();
        self.change_schedule(schedule_id, ScheduleChange::Unpause { note })
            .await
    }

    /// Starts the schedule's workflow now, whatever the spec says, under `overlap` (`None`:
    /// the schedule's overlap policy).
    pub async fn trigger_schedule(
        &self,
        schedule_id: &str,
        overlap: Option<OverlapPolicy>,
    ) -> Result<(), ClientError> {
        // The time is fixed here, not in the transaction: a commit retried after
        // `MaybeCommitted` then repeats the same trigger, whose workflow id (from its time) is
        // started at most once.
        let at = self.shared.now_ms();
        self.change_schedule(schedule_id, ScheduleChange::Trigger { at, overlap })
            .await
    }

    /// Starts the workflows of every spec time in `[start, end]`, whatever the catch-up
    /// window says, under `overlap` (`None`: the schedule's overlap policy; `AllowAll` starts
    /// them all at once, `BufferAll` one after another).
    pub async fn backfill_schedule(
        &self,
        schedule_id: &str,
        start_unix_ms: u64,
        end_unix_ms: u64,
        overlap: Option<OverlapPolicy>,
    ) -> Result<(), ClientError> {
        if start_unix_ms > end_unix_ms {
            return Err(ClientError::InvalidSchedule {
                reason: format!("backfill start {start_unix_ms} is after its end {end_unix_ms}"),
            });
        }
        let described = self.describe_schedule(schedule_id, 0).await?;
        let spec = described
            .record
            .spec
            .compile()
            .map_err(|e| ClientError::InvalidSchedule {
                reason: e.to_string(),
            })?;
        let count = spec
            .times_between(
                start_unix_ms.saturating_sub(1),
                end_unix_ms,
                schedules::SCHEDULE_BACKFILL_TIMES_MAX + 1,
            )
            .len();
        if count > schedules::SCHEDULE_BACKFILL_TIMES_MAX {
            return Err(ClientError::InvalidSchedule {
                reason: format!(
                    "the backfill covers more than {} start times; split it",
                    schedules::SCHEDULE_BACKFILL_TIMES_MAX
                ),
            });
        }
        let backfill = schedules::Backfill {
            start_unix_ms,
            end_unix_ms,
            overlap,
        };
        // Repeated by a retried commit, a backfill starts nothing twice (each time's workflow
        // id is started at most once), but is not queued twice either.
        self.change_schedule(schedule_id, ScheduleChange::Backfill(backfill))
            .await
    }

    /// Deletes a schedule (the workflows it started run on).
    pub async fn delete_schedule(&self, schedule_id: &str) -> Result<(), ClientError> {
        schedules::check_schedule_id(schedule_id)?;
        let shared = &self.shared;
        let namespace = shared.config.namespace.clone();
        let exists_key = shared.keys.schedule(&namespace, schedule_id);
        let op = Op::Derived(Derive::new(schedules::DeleteSchedule {
            keys: shared.keys.clone(),
            namespace,
            schedule_id: schedule_id.to_string(),
            shard: shared.shard_of_id(schedule_id),
        }));
        // After `MaybeCommitted`, a schedule that is gone was deleted by this request.
        let verify = Some((exists_key.clone(), Verify::Absent));
        self.submit(vec![op], vec![must_exist(exists_key, schedule_id)], verify)
            .await
    }
}
