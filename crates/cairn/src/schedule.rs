//! Schedules through the client: start a workflow on a cadence (cron or interval), with an
//! overlap policy and a catch-up window; pause, trigger, backfill, describe, delete.

use crate::client::Client;
use crate::workflow::function_name;
use cairn_core::WorkflowError;
use cairn_core::schedule::{IntervalSpec, OverlapPolicy, SchedulePolicies, ScheduleSpec};
use cairn_runtime::{
    ClientError, CreateSchedule, ScheduleAction, ScheduleDescription, ScheduleRecord,
};
use cairn_store::Store;
use cairn_types::{Payload, WorkflowTimeouts};
use serde::Serialize;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A schedule being configured; `.create().await` stores it.
///
/// # Examples
/// ```no_run
/// use cairn::{Ctx, OverlapPolicy, WorkflowError};
/// use std::time::Duration;
/// async fn daily_report(_ctx: Ctx, _: ()) -> Result<String, WorkflowError> { Ok("sent".into()) }
///
/// # async fn run(client: cairn::Client<cairn::MemStore>) -> Result<(), cairn::ClientError> {
/// let schedule = client
///     .schedule(daily_report, "daily-report-schedule", ())
///     .cron("0 9 * * *")                 // every day at 09:00 …
///     .time_zone("UTC")                  // … UTC
///     .overlap(OverlapPolicy::Skip)
///     .create()
///     .await?;
/// schedule.trigger().await?;             // and once right now
/// # Ok(()) }
/// ```
pub struct ScheduleBuilder<S: Store> {
    client: Client<S>,
    request: Result<CreateSchedule, ClientError>,
}

impl<S: Store> std::fmt::Debug for ScheduleBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleBuilder")
            .field("request", &self.request)
            .finish()
    }
}

impl<S: Store> Client<S> {
    /// Prepares schedule `schedule_id`, which starts workflow `f` with `input`. Started
    /// workflows are named `{schedule_id}-{scheduled time, RFC 3339}`.
    pub fn schedule<F, I, O, Fut>(&self, f: F, schedule_id: &str, input: I) -> ScheduleBuilder<S>
    where
        F: Fn(crate::Ctx, I) -> Fut + 'static,
        I: Serialize,
        Fut: Future<Output = Result<O, WorkflowError>>,
    {
        let _ = f;
        let request = Payload::encode(&input)
            .map_err(|e| ClientError::InputDoesNotDecode {
                workflow_type: function_name::<F>().to_string(),
                reason: e.to_string(),
            })
            .map(|input| CreateSchedule {
                schedule_id: schedule_id.to_string(),
                spec: ScheduleSpec::default(),
                action: ScheduleAction {
                    workflow_type: function_name::<F>().to_string(),
                    input,
                    timeouts: WorkflowTimeouts::default(),
                    workflow_id: None,
                    remote: None,
                    memo: Default::default(),
                    search_attributes: Default::default(),
                },
                policies: SchedulePolicies::default(),
                paused: false,
                note: String::new(),
            });
        ScheduleBuilder {
            client: self.clone(),
            request,
        }
    }

    /// A handle on an existing schedule.
    pub fn schedule_handle(&self, schedule_id: &str) -> ScheduleHandle<S> {
        ScheduleHandle {
            client: self.clone(),
            schedule_id: schedule_id.to_string(),
        }
    }

    /// Every schedule of the namespace.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, ClientError> {
        self.node().list_schedules().await
    }
}

impl<S: Store> ScheduleBuilder<S> {
    fn with(mut self, change: impl FnOnce(&mut CreateSchedule)) -> Self {
        if let Ok(request) = &mut self.request {
            change(request);
        }
        self
    }

    /// Adds a cron expression (5 fields, or 6 with seconds first). Several may be given.
    pub fn cron(self, expression: &str) -> Self {
        self.with(|r| r.spec.cron.push(expression.to_string()))
    }

    /// Adds an interval: every `every`, aligned to the Unix epoch.
    pub fn interval(self, every: Duration) -> Self {
        self.interval_with_offset(every, Duration::ZERO)
    }

    /// Adds an interval with an offset (`every` 1 h, `offset` 5 min: at :05 each hour).
    pub fn interval_with_offset(self, every: Duration, offset: Duration) -> Self {
        self.with(|r| {
            r.spec.intervals.push(IntervalSpec {
                every_ms: ms(every),
                offset_ms: ms(offset),
            })
        })
    }

    /// The IANA time zone of the cron expressions. Default UTC.
    pub fn time_zone(self, zone: &str) -> Self {
        self.with(|r| r.spec.time_zone = Some(zone.to_string()))
    }

    /// Delays each start by up to `jitter` (deterministically). Default none.
    pub fn jitter(self, jitter: Duration) -> Self {
        self.with(|r| r.spec.jitter_ms = ms(jitter))
    }

    /// No start before `time`. Default: from now.
    pub fn start_at(self, time: SystemTime) -> Self {
        self.with(|r| r.spec.start_unix_ms = Some(unix_ms(time)))
    }

    /// No start after `time`. Default: never ends.
    pub fn end_at(self, time: SystemTime) -> Self {
        self.with(|r| r.spec.end_unix_ms = Some(unix_ms(time)))
    }

    /// What to do when a start comes while the previous run still runs. Default
    /// [`OverlapPolicy::Skip`].
    pub fn overlap(self, policy: OverlapPolicy) -> Self {
        self.with(|r| r.policies.overlap = policy)
    }

    /// After downtime, starts missed by more than this are skipped. Default one year, at least
    /// 1 s.
    pub fn catchup_window(self, window: Duration) -> Self {
        self.with(|r| r.policies.catchup_window_ms = ms(window))
    }

    /// Limit on each started workflow's execution. Default none.
    pub fn execution_timeout(self, timeout: Duration) -> Self {
        self.with(|r| r.action.timeouts.execution = Some(timeout))
    }

    /// Creates it paused, with `note`. Default: running.
    pub fn paused(self, note: &str) -> Self {
        self.with(|r| {
            r.paused = true;
            r.note = note.to_string();
        })
    }

    /// Stores the schedule. Refused, writing nothing, if the id exists or anything is invalid.
    pub async fn create(self) -> Result<ScheduleHandle<S>, ClientError> {
        let request = self.request?;
        let schedule_id = request.schedule_id.clone();
        self.client.node().create_schedule(request).await?;
        Ok(ScheduleHandle {
            client: self.client,
            schedule_id,
        })
    }
}

/// A schedule, as a client steers it.
pub struct ScheduleHandle<S: Store> {
    client: Client<S>,
    schedule_id: String,
}

impl<S: Store> std::fmt::Debug for ScheduleHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleHandle")
            .field("schedule_id", &self.schedule_id)
            .finish()
    }
}

impl<S: Store> ScheduleHandle<S> {
    pub fn schedule_id(&self) -> &str {
        &self.schedule_id
    }

    /// The schedule, its next five start times and recent actions.
    pub async fn describe(&self) -> Result<ScheduleDescription, ClientError> {
        self.client
            .node()
            .describe_schedule(&self.schedule_id, 5)
            .await
    }

    /// No starts until unpaused; times passing meanwhile are not made up.
    pub async fn pause(&self, note: &str) -> Result<(), ClientError> {
        self.client
            .node()
            .pause_schedule(&self.schedule_id, note)
            .await
    }

    /// Goes on from now.
    pub async fn unpause(&self, note: &str) -> Result<(), ClientError> {
        self.client
            .node()
            .unpause_schedule(&self.schedule_id, note)
            .await
    }

    /// Starts the workflow now, under the schedule's overlap policy.
    pub async fn trigger(&self) -> Result<(), ClientError> {
        self.client
            .node()
            .trigger_schedule(&self.schedule_id, None)
            .await
    }

    /// Starts the workflow now, under `overlap` instead of the schedule's policy.
    pub async fn trigger_with(&self, overlap: OverlapPolicy) -> Result<(), ClientError> {
        self.client
            .node()
            .trigger_schedule(&self.schedule_id, Some(overlap))
            .await
    }

    /// Starts the workflows of every scheduled time in `[start, end]`, even those older than
    /// the catch-up window, under `overlap` (`None`: the schedule's policy; `AllowAll` starts
    /// them all at once, `BufferAll` one after another).
    pub async fn backfill(
        &self,
        start: SystemTime,
        end: SystemTime,
        overlap: Option<OverlapPolicy>,
    ) -> Result<(), ClientError> {
        self.client
            .node()
            .backfill_schedule(&self.schedule_id, unix_ms(start), unix_ms(end), overlap)
            .await
    }

    /// Deletes the schedule; workflows it started run on.
    pub async fn delete(&self) -> Result<(), ClientError> {
        self.client.node().delete_schedule(&self.schedule_id).await
    }
}
