//! Timeout settings for activities and workflows, with Temporal's meanings, and the error type
//! shared by every policy validation in this crate.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a retry policy or timeout setting was refused. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("{field} is zero; intervals must be positive")]
    ZeroInterval { field: &'static str },
    #[error("{field} is {value_ms}; intervals must be positive")]
    NegativeInterval { field: &'static str, value_ms: i64 },
    #[error("backoff_coefficient is {value}; it must be a finite number of at least 1")]
    BackoffCoefficientBelowOne { value: f64 },
    #[error(
        "maximum_interval ({maximum_ms} ms) is shorter than initial_interval ({initial_ms} ms)"
    )]
    MaximumBelowInitial { maximum_ms: u128, initial_ms: u128 },
    #[error("maximum_attempts is 0; use at least 1 (or leave it unset for unlimited)")]
    ZeroMaximumAttempts,
    #[error("{count} non-retryable error types given; the limit is {max}")]
    TooManyErrorTypes { count: usize, max: usize },
    #[error("error type name {name:?} must be 1 to {max} bytes")]
    BadErrorTypeName { name: String, max: usize },
    #[error("{shorter} ({shorter_ms} ms) must not exceed {longer} ({longer_ms} ms)")]
    TimeoutOrder {
        shorter: &'static str,
        shorter_ms: u128,
        longer: &'static str,
        longer_ms: u128,
    },
    #[error("{field} is {value_ms} ms; the longest timeout is {max_ms} ms (a hundred years)")]
    TooLong {
        field: &'static str,
        value_ms: u128,
        max_ms: u64,
    },
    #[error(
        "an activity needs start_to_close or schedule_to_close; neither was given, so a lost worker would hang it forever"
    )]
    ActivityWithoutDeadline,
}

/// Reads a signed millisecond count from serialized input: negative and zero are refused with
/// the field's name.
pub(crate) fn millis_from_wire(
    field: &'static str,
    value_ms: i64,
) -> Result<Duration, PolicyError> {
    match u64::try_from(value_ms) {
        Ok(0) => Err(PolicyError::ZeroInterval { field }),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => Err(PolicyError::NegativeInterval { field, value_ms }),
    }
}

pub(crate) fn millis_to_wire(value: Duration) -> i64 {
    i64::try_from(value.as_millis()).unwrap_or(i64::MAX)
}

/// Checks a timeout is positive and at most [`crate::limits::TIMEOUT_MS_MAX`].
fn positive(field: &'static str, value: Option<Duration>) -> Result<(), PolicyError> {
    match value {
        Some(d) if d.is_zero() => Err(PolicyError::ZeroInterval { field }),
        Some(d) if d.as_millis() > u128::from(crate::limits::TIMEOUT_MS_MAX) => {
            Err(PolicyError::TooLong {
                field,
                value_ms: d.as_millis(),
                max_ms: crate::limits::TIMEOUT_MS_MAX,
            })
        }
        _ => Ok(()),
    }
}

fn ordered(
    shorter: (&'static str, Option<Duration>),
    longer: (&'static str, Option<Duration>),
) -> Result<(), PolicyError> {
    if let (Some(s), Some(l)) = (shorter.1, longer.1)
        && s > l
    {
        return Err(PolicyError::TimeoutOrder {
            shorter: shorter.0,
            shorter_ms: s.as_millis(),
            longer: longer.0,
            longer_ms: l.as_millis(),
        });
    }
    Ok(())
}

/// An activity's timeouts (Temporal's four). At least one of `start_to_close` and
/// `schedule_to_close` is required.
///
/// # Examples
/// ```
/// use cairn_types::ActivityTimeouts;
/// use std::time::Duration;
/// let t = ActivityTimeouts::start_to_close(Duration::from_secs(30))
///     .with_heartbeat(Duration::from_secs(5))
///     .validate()
///     .unwrap();
/// assert_eq!(t.heartbeat, Some(Duration::from_secs(5)));
/// assert!(ActivityTimeouts::default().validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActivityTimeoutsWire", into = "ActivityTimeoutsWire")]
pub struct ActivityTimeouts {
    /// From scheduling to the final result, across all attempts.
    pub schedule_to_close: Option<Duration>,
    /// From scheduling to a worker picking the task up (per attempt).
    pub schedule_to_start: Option<Duration>,
    /// From a worker picking the task up to its result (per attempt).
    pub start_to_close: Option<Duration>,
    /// Longest gap between heartbeats before the attempt counts as lost.
    pub heartbeat: Option<Duration>,
}

impl ActivityTimeouts {
    /// Only a start-to-close timeout.
    pub fn start_to_close(value: Duration) -> Self {
        Self {
            start_to_close: Some(value),
            ..Self::default()
        }
    }

    /// Adds a heartbeat timeout.
    pub fn with_heartbeat(mut self, value: Duration) -> Self {
        self.heartbeat = Some(value);
        self
    }

    /// The timeouts as Temporal's server fills in what a workflow left out, capping rather
    /// than refusing: schedule-to-start and start-to-close default to schedule-to-close and
    /// never exceed it, and the heartbeat timeout never exceeds start-to-close. A Temporal
    /// worker reads the filled values (its SDK refuses a task without them), and an activity
    /// never picked up then times out as schedule-to-start, as on Temporal.
    ///
    /// # Examples
    /// ```
    /// use cairn_types::ActivityTimeouts;
    /// use std::time::Duration;
    /// let given = ActivityTimeouts {
    ///     schedule_to_close: Some(Duration::from_secs(3)),
    ///     heartbeat: Some(Duration::from_secs(10)),
    ///     ..ActivityTimeouts::default()
    /// };
    /// let filled = given.filled_as_temporal();
    /// assert_eq!(filled.schedule_to_start, Some(Duration::from_secs(3)));
    /// assert_eq!(filled.start_to_close, Some(Duration::from_secs(3)));
    /// assert_eq!(filled.heartbeat, Some(Duration::from_secs(3)));
    /// ```
    pub fn filled_as_temporal(self) -> Self {
        let capped = |value: Option<Duration>, cap: Option<Duration>| match (value, cap) {
            (Some(v), Some(c)) => Some(v.min(c)),
            (None, cap) => cap,
            (value, None) => value,
        };
        let start_to_close = capped(self.start_to_close, self.schedule_to_close);
        Self {
            schedule_to_close: self.schedule_to_close,
            schedule_to_start: capped(self.schedule_to_start, self.schedule_to_close),
            start_to_close,
            heartbeat: match (self.heartbeat, start_to_close) {
                (Some(h), Some(s)) => Some(h.min(s)),
                (heartbeat, _) => heartbeat,
            },
        }
    }

    /// Checks the settings make sense together.
    pub fn validate(self) -> Result<Self, PolicyError> {
        positive("schedule_to_close", self.schedule_to_close)?;
        positive("schedule_to_start", self.schedule_to_start)?;
        positive("start_to_close", self.start_to_close)?;
        positive("heartbeat", self.heartbeat)?;
        if self.start_to_close.is_none() && self.schedule_to_close.is_none() {
            return Err(PolicyError::ActivityWithoutDeadline);
        }
        let s2c = ("schedule_to_close", self.schedule_to_close);
        ordered(("start_to_close", self.start_to_close), s2c)?;
        ordered(("schedule_to_start", self.schedule_to_start), s2c)?;
        ordered(
            ("heartbeat", self.heartbeat),
            ("start_to_close", self.start_to_close),
        )?;
        Ok(self)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityTimeoutsWire {
    #[serde(default)]
    schedule_to_close_ms: Option<i64>,
    #[serde(default)]
    schedule_to_start_ms: Option<i64>,
    #[serde(default)]
    start_to_close_ms: Option<i64>,
    #[serde(default)]
    heartbeat_ms: Option<i64>,
}

fn optional_from_wire(
    field: &'static str,
    v: Option<i64>,
) -> Result<Option<Duration>, PolicyError> {
    v.map(|ms| millis_from_wire(field, ms)).transpose()
}

impl TryFrom<ActivityTimeoutsWire> for ActivityTimeouts {
    type Error = PolicyError;
    fn try_from(w: ActivityTimeoutsWire) -> Result<Self, PolicyError> {
        Self {
            schedule_to_close: optional_from_wire("schedule_to_close_ms", w.schedule_to_close_ms)?,
            schedule_to_start: optional_from_wire("schedule_to_start_ms", w.schedule_to_start_ms)?,
            start_to_close: optional_from_wire("start_to_close_ms", w.start_to_close_ms)?,
            heartbeat: optional_from_wire("heartbeat_ms", w.heartbeat_ms)?,
        }
        .validate()
    }
}

impl From<ActivityTimeouts> for ActivityTimeoutsWire {
    fn from(t: ActivityTimeouts) -> Self {
        Self {
            schedule_to_close_ms: t.schedule_to_close.map(millis_to_wire),
            schedule_to_start_ms: t.schedule_to_start.map(millis_to_wire),
            start_to_close_ms: t.start_to_close.map(millis_to_wire),
            heartbeat_ms: t.heartbeat.map(millis_to_wire),
        }
    }
}

/// A workflow's timeouts: `execution` spans every run of the workflow id (retries and
/// continue-as-new included); `run` bounds one run. Both optional (unbounded).
///
/// # Examples
/// ```
/// use cairn_types::WorkflowTimeouts;
/// use std::time::Duration;
/// let bad = WorkflowTimeouts { execution: Some(Duration::from_secs(1)), run: Some(Duration::from_secs(2)) };
/// assert!(bad.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WorkflowTimeoutsWire", into = "WorkflowTimeoutsWire")]
pub struct WorkflowTimeouts {
    pub execution: Option<Duration>,
    pub run: Option<Duration>,
}

impl WorkflowTimeouts {
    /// Checks both are positive and `run` does not exceed `execution`.
    pub fn validate(self) -> Result<Self, PolicyError> {
        positive("execution", self.execution)?;
        positive("run", self.run)?;
        ordered(("run", self.run), ("execution", self.execution))?;
        Ok(self)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowTimeoutsWire {
    #[serde(default)]
    execution_ms: Option<i64>,
    #[serde(default)]
    run_ms: Option<i64>,
}

impl TryFrom<WorkflowTimeoutsWire> for WorkflowTimeouts {
    type Error = PolicyError;
    fn try_from(w: WorkflowTimeoutsWire) -> Result<Self, PolicyError> {
        Self {
            execution: optional_from_wire("execution_ms", w.execution_ms)?,
            run: optional_from_wire("run_ms", w.run_ms)?,
        }
        .validate()
    }
}

impl From<WorkflowTimeouts> for WorkflowTimeoutsWire {
    fn from(t: WorkflowTimeouts) -> Self {
        Self {
            execution_ms: t.execution.map(millis_to_wire),
            run_ms: t.run.map(millis_to_wire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves inconsistent activity timeouts are refused, naming the fields.
    #[test]
    fn inconsistent_activity_timeouts_are_refused() {
        let zero = ActivityTimeouts::start_to_close(Duration::ZERO).validate();
        assert_eq!(
            zero,
            Err(PolicyError::ZeroInterval {
                field: "start_to_close"
            })
        );
        let inverted = ActivityTimeouts {
            start_to_close: Some(Duration::from_secs(10)),
            schedule_to_close: Some(Duration::from_secs(5)),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            inverted.to_string(),
            "start_to_close (10000 ms) must not exceed schedule_to_close (5000 ms)"
        );
        let heartbeat_too_long = ActivityTimeouts::start_to_close(Duration::from_secs(1))
            .with_heartbeat(Duration::from_secs(2))
            .validate();
        assert!(matches!(
            heartbeat_too_long,
            Err(PolicyError::TimeoutOrder { .. })
        ));
    }

    /// Proves negative milliseconds in serialized input are refused on decode.
    #[test]
    fn negative_wire_timeouts_are_refused() {
        let wire = ActivityTimeoutsWire {
            schedule_to_close_ms: None,
            schedule_to_start_ms: None,
            start_to_close_ms: Some(-1),
            heartbeat_ms: None,
        };
        let bytes = rmp_serde::to_vec_named(&wire).unwrap();
        let err = rmp_serde::from_slice::<ActivityTimeouts>(&bytes).unwrap_err();
        assert!(err.to_string().contains("start_to_close_ms is -1"), "{err}");
        let ok = ActivityTimeouts::start_to_close(Duration::from_millis(1500));
        let bytes = rmp_serde::to_vec_named(&ok).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ActivityTimeouts>(&bytes).unwrap(),
            ok
        );
    }
}
