//! Durable timers as a shard holds them in memory ([`TimerEntry`]), and the timers an activity
//! attempt's enqueuing transition arms: what the planner writes and the worker relies on.

use crate::records::TaskRecord;
use cairn_core::TimerId;
use cairn_types::{ActivityTimeouts, RunId};
use std::time::Duration;

/// How long after scheduling a handed-over attempt may start without a claim commit.
pub const CLAIM_GRACE_MS: u64 = 1_000;

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A durable timer, as held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEntry {
    pub fire_at_unix_ms: u64,
    pub run_id: RunId,
    pub timer: TimerId,
    pub key: Vec<u8>,
}

impl TimerEntry {
    /// The timer `timer` of `run_id` in `shard`, due at `fire_at_unix_ms`, with its store key.
    pub fn new(
        keys: &crate::keys::Keys,
        shard: u32,
        fire_at_unix_ms: u64,
        run_id: RunId,
        timer: TimerId,
    ) -> Self {
        Self {
            fire_at_unix_ms,
            run_id,
            timer,
            key: keys.timer(shard, fire_at_unix_ms, &run_id, &timer),
        }
    }
}

/// Whether attempts with these timeouts start by a claim that writes a start mark (those with
/// a heartbeat or schedule-to-start timeout, or no start-to-close timeout), rather than being
/// handed over by their enqueuing transition, whose provisional start-to-close timer marks
/// them started.
pub fn needs_claim(timeouts: &ActivityTimeouts) -> bool {
    timeouts.heartbeat.is_some()
        || timeouts.schedule_to_start.is_some()
        || timeouts.start_to_close.is_none()
}

/// The provisional start-to-close timer of a task its enqueuing transition hands over (one
/// with a start-to-close timeout and neither heartbeat nor schedule-to-start timeouts):
/// `start_to_close + CLAIM_GRACE_MS` after scheduling. `None`: the task needs a claim.
pub fn provisional_start_to_close(
    keys: &crate::keys::Keys,
    task: &TaskRecord,
) -> Option<TimerEntry> {
    let timeouts = task.options.timeouts;
    if needs_claim(&timeouts) {
        return None;
    }
    let fire_at = task
        .scheduled_unix_ms
        .saturating_add(ms(timeouts.start_to_close?))
        .saturating_add(CLAIM_GRACE_MS);
    Some(TimerEntry::new(
        keys,
        task.shard,
        fire_at,
        task.run_id,
        TimerId::ActivityStartToClose {
            seq: task.seq,
            attempt: task.attempt,
        },
    ))
}

/// When an attempt enqueued at `enqueued_unix_ms` times out schedule-to-start, if its
/// options set that timeout.
pub fn schedule_to_start_deadline(
    timeouts: &cairn_types::ActivityTimeouts,
    enqueued_unix_ms: u64,
) -> Option<u64> {
    Some(enqueued_unix_ms.saturating_add(ms(timeouts.schedule_to_start?)))
}

/// The schedule-to-start timer the transition that enqueued `task` armed, if any.
pub fn schedule_to_start_timer(keys: &crate::keys::Keys, task: &TaskRecord) -> Option<TimerEntry> {
    Some(TimerEntry::new(
        keys,
        task.shard,
        schedule_to_start_deadline(&task.options.timeouts, task.scheduled_unix_ms)?,
        task.run_id,
        TimerId::ActivityScheduleToStart {
            seq: task.seq,
            attempt: task.attempt,
        },
    ))
}
