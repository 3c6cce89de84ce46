//! Schedule specifications: when a schedule fires, as pure arithmetic on Unix milliseconds.
//!
//! A spec is any number of cron expressions (evaluated in an IANA time zone, so "09:00" follows
//! daylight saving) and intervals (`every` with an `offset`, aligned to the Unix epoch), bounded
//! by an optional start and end. Each nominal time may be delayed by a jitter that is a
//! deterministic function of the schedule id and the time, so every node (and every restart)
//! computes the same actual fire time. Validation names the field at fault.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Longest cron expression, in bytes.
pub const CRON_EXPRESSION_BYTES_MAX: usize = 256;
/// Most cron expressions plus intervals in one spec.
pub const SCHEDULE_SPEC_ENTRIES_MAX: usize = 16;
/// Shortest interval, ms.
pub const SCHEDULE_INTERVAL_MS_MIN: u64 = 100;
/// Default catch-up window: Temporal's (one year).
pub const CATCHUP_WINDOW_MS_DEFAULT: u64 = 365 * 24 * 3_600_000;
/// Shortest catch-up window, ms. (Temporal's minimum is 10 s; a second keeps short-cadence
/// schedules and their tests practical, and nothing below relies on more.)
pub const CATCHUP_WINDOW_MS_MIN: u64 = 1_000;
/// Longest catch-up window: ten years.
pub const CATCHUP_WINDOW_MS_MAX: u64 = 10 * 366 * 24 * 3_600_000;
/// Longest interval: a hundred years.
pub const SCHEDULE_INTERVAL_MS_MAX: u64 = 100 * 366 * 24 * 3_600_000;
/// Longest jitter: seven days. Times plus jitter stay far from `u64::MAX`.
pub const SCHEDULE_JITTER_MS_MAX: u64 = 7 * 24 * 3_600_000;

/// Every `every_ms`, at `offset_ms` past each multiple of it since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalSpec {
    pub every_ms: u64,
    #[serde(default)]
    pub offset_ms: u64,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScheduleSpec {
    /// Cron expressions: 5 fields (minute hour day-of-month month day-of-week) or 6 with
    /// seconds first; `@daily`-style nicknames allowed.
    #[serde(default)]
    pub cron: Vec<String>,
    #[serde(default)]
    pub intervals: Vec<IntervalSpec>,
    /// IANA time zone of the cron expressions. Default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Each fire is delayed by up to this much (deterministically). Default 0.
    #[serde(default)]
    pub jitter_ms: u64,
    /// No fire before this time.
    #[serde(default)]
    pub start_unix_ms: Option<u64>,
    /// No fire after this time.
    #[serde(default)]
    pub end_unix_ms: Option<u64>,
}

/// What to do when a fire comes while the previous run is still going (Temporal's six).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlapPolicy {
    /// Don't start; count it as skipped. The default.
    #[default]
    Skip,
    /// Start it when the running one closes; keep at most one waiting.
    BufferOne,
    /// Start each in turn as the previous closes.
    BufferAll,
    /// Ask the running one to cancel; start this one once it has closed.
    CancelOther,
    /// Terminate the running one and start this one at once.
    TerminateOther,
    /// Start it anyway.
    AllowAll,
}

impl OverlapPolicy {
    /// Names as the API and CLI spell them.
    pub const NAMES: &'static [&'static str] = &[
        "skip",
        "buffer_one",
        "buffer_all",
        "cancel_other",
        "terminate_other",
        "allow_all",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::BufferOne => "buffer_one",
            Self::BufferAll => "buffer_all",
            Self::CancelOther => "cancel_other",
            Self::TerminateOther => "terminate_other",
            Self::AllowAll => "allow_all",
        }
    }
}

impl FromStr for OverlapPolicy {
    type Err = ScheduleError;
    fn from_str(text: &str) -> Result<Self, ScheduleError> {
        Ok(match text {
            "skip" => Self::Skip,
            "buffer_one" => Self::BufferOne,
            "buffer_all" => Self::BufferAll,
            "cancel_other" => Self::CancelOther,
            "terminate_other" => Self::TerminateOther,
            "allow_all" => Self::AllowAll,
            other => {
                return Err(ScheduleError::UnknownOverlapPolicy {
                    given: other.to_string(),
                });
            }
        })
    }
}

/// How a schedule behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulePolicies {
    pub overlap: OverlapPolicy,
    /// After downtime, fires missed by more than this are skipped. Default one year.
    pub catchup_window_ms: u64,
}

impl Default for SchedulePolicies {
    fn default() -> Self {
        Self {
            overlap: OverlapPolicy::default(),
            catchup_window_ms: CATCHUP_WINDOW_MS_DEFAULT,
        }
    }
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("a schedule needs at least one cron expression or interval")]
    Empty,
    #[error("{count} cron expressions and intervals; the limit is {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("cron expression {expression:?} is invalid: {reason}")]
    BadCron { expression: String, reason: String },
    #[error("interval every_ms is {every_ms}; it must be at least {min}")]
    IntervalTooShort { every_ms: u64, min: u64 },
    #[error("interval every_ms is {every_ms}; the limit is {max}")]
    IntervalTooLong { every_ms: u64, max: u64 },
    #[error("jitter_ms is {jitter_ms}; the limit is {max}")]
    JitterTooLong { jitter_ms: u64, max: u64 },
    #[error("catch-up window {given} ms is above the maximum of {max} ms")]
    CatchupWindowTooLong { given: u64, max: u64 },
    #[error("interval offset_ms {offset_ms} must be less than every_ms {every_ms}")]
    OffsetNotBelowInterval { offset_ms: u64, every_ms: u64 },
    #[error("time zone {given:?} is not an IANA time zone name (such as Europe/Paris or UTC)")]
    UnknownTimeZone { given: String },
    #[error("start time {start} is after end time {end}")]
    StartAfterEnd { start: u64, end: u64 },
    #[error("catch-up window {given} ms is below the minimum of {min} ms")]
    CatchupWindowTooShort { given: u64, min: u64 },
    #[error(
        "overlap policy {given:?} is not one of skip, buffer_one, buffer_all, cancel_other, terminate_other, allow_all"
    )]
    UnknownOverlapPolicy { given: String },
}

/// A validated spec, ready to compute fire times.
#[derive(Debug, Clone)]
pub struct CompiledSpec {
    crons: Vec<croner::Cron>,
    intervals: Vec<IntervalSpec>,
    time_zone: chrono_tz::Tz,
    jitter_ms: u64,
    start_unix_ms: Option<u64>,
    end_unix_ms: Option<u64>,
}

impl SchedulePolicies {
    pub fn validate(self) -> Result<Self, ScheduleError> {
        if self.catchup_window_ms < CATCHUP_WINDOW_MS_MIN {
            return Err(ScheduleError::CatchupWindowTooShort {
                given: self.catchup_window_ms,
                min: CATCHUP_WINDOW_MS_MIN,
            });
        }
        if self.catchup_window_ms > CATCHUP_WINDOW_MS_MAX {
            return Err(ScheduleError::CatchupWindowTooLong {
                given: self.catchup_window_ms,
                max: CATCHUP_WINDOW_MS_MAX,
            });
        }
        Ok(self)
    }
}

impl ScheduleSpec {
    /// Checks the spec and prepares it for computing times.
    pub fn compile(&self) -> Result<CompiledSpec, ScheduleError> {
        let count = self.cron.len() + self.intervals.len();
        if count == 0 {
            return Err(ScheduleError::Empty);
        }
        if count > SCHEDULE_SPEC_ENTRIES_MAX {
            return Err(ScheduleError::TooManyEntries {
                count,
                max: SCHEDULE_SPEC_ENTRIES_MAX,
            });
        }
        let mut crons = Vec::new();
        for expression in &self.cron {
            within_cron_bound(expression)?;
            let cron = croner::Cron::from_str(expression)
                .map_err(|e| bad_cron(expression, e.to_string()))?;
            crons.push(cron);
        }
        for interval in &self.intervals {
            if interval.every_ms < SCHEDULE_INTERVAL_MS_MIN {
                return Err(ScheduleError::IntervalTooShort {
                    every_ms: interval.every_ms,
                    min: SCHEDULE_INTERVAL_MS_MIN,
                });
            }
            if interval.every_ms > SCHEDULE_INTERVAL_MS_MAX {
                return Err(ScheduleError::IntervalTooLong {
                    every_ms: interval.every_ms,
                    max: SCHEDULE_INTERVAL_MS_MAX,
                });
            }
            if interval.offset_ms >= interval.every_ms {
                return Err(ScheduleError::OffsetNotBelowInterval {
                    offset_ms: interval.offset_ms,
                    every_ms: interval.every_ms,
                });
            }
        }
        if self.jitter_ms > SCHEDULE_JITTER_MS_MAX {
            return Err(ScheduleError::JitterTooLong {
                jitter_ms: self.jitter_ms,
                max: SCHEDULE_JITTER_MS_MAX,
            });
        }
        let time_zone = match &self.time_zone {
            None => chrono_tz::UTC,
            Some(name) => {
                name.parse::<chrono_tz::Tz>()
                    .map_err(|_| ScheduleError::UnknownTimeZone {
                        given: name.clone(),
                    })?
            }
        };
        if let (Some(start), Some(end)) = (self.start_unix_ms, self.end_unix_ms)
            && start > end
        {
            return Err(ScheduleError::StartAfterEnd { start, end });
        }
        Ok(CompiledSpec {
            crons,
            intervals: self.intervals.clone(),
            time_zone,
            jitter_ms: self.jitter_ms,
            start_unix_ms: self.start_unix_ms,
            end_unix_ms: self.end_unix_ms,
        })
    }
}

impl CompiledSpec {
    /// The first nominal fire time strictly after `after_unix_ms`, or `None` if the spec has
    /// no more (past its end).
    pub fn next_after(&self, after_unix_ms: u64) -> Option<u64> {
        // Nothing before the start: look from just before it.
        let after = match self.start_unix_ms {
            Some(start) if after_unix_ms < start => start - 1,
            _ => after_unix_ms,
        };
        let from_intervals = self.intervals.iter().map(|i| {
            // The first k with k * every + offset > after.
            let k = if after < i.offset_ms {
                0
            } else {
                (after - i.offset_ms) / i.every_ms + 1
            };
            k.saturating_mul(i.every_ms).saturating_add(i.offset_ms)
        });
        let from_crons = self.crons.iter().filter_map(|cron| {
            // Cron times are whole seconds: search from the second `after` falls in (the
            // search keeps any fraction it starts from).
            let whole_seconds = i64::try_from(after / 1_000).ok()?;
            let from =
                chrono::DateTime::from_timestamp(whole_seconds, 0)?.with_timezone(&self.time_zone);
            let next = cron.find_next_occurrence(&from, false).ok()?;
            u64::try_from(next.timestamp()).ok()?.checked_mul(1_000)
        });
        let next = from_intervals.chain(from_crons).min()?;
        match self.end_unix_ms {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// The nominal times in `(after, until]`, at most `limit`.
    pub fn times_between(&self, after: u64, until: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = after;
        while out.len() < limit {
            match self.next_after(at) {
                Some(next) if next <= until => {
                    out.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The delay added to nominal time `nominal` of schedule `schedule_id`: the same on every
    /// node and after every restart.
    pub fn jitter(&self, schedule_id: &str, nominal: u64) -> u64 {
        if self.jitter_ms == 0 {
            return 0;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in schedule_id.as_bytes().iter().chain(&nominal.to_be_bytes()) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash % self.jitter_ms.saturating_add(1)
    }
}

/// Shortest period of a workflow's `cron_schedule` `@every`: a second, as Temporal's.
pub const CRON_EVERY_MS_MIN: u64 = 1_000;

/// A workflow's `cron_schedule`, Temporal's older cron: a standard expression (5 fields, or 6
/// with seconds first), a `@daily`-style nickname or `@every <duration>` (`90s`, `1h30m`),
/// optionally after `CRON_TZ=<IANA zone> `. Each run of the workflow waits until the
/// schedule's next time, counted from the run's start, that is not before its predecessor
/// closed.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    times: CronTimes,
    time_zone: chrono_tz::Tz,
}

#[derive(Debug, Clone)]
enum CronTimes {
    /// Every so many whole seconds after a run's start.
    Every {
        every_ms: u64,
    },
    Expression(Box<croner::Cron>),
}

impl CronSchedule {
    /// Parses `expression`, naming what is wrong with it.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let bad = |reason: String| bad_cron(expression, reason);
        within_cron_bound(expression)?;
        let mut rest = expression.trim();
        let mut time_zone = chrono_tz::UTC;
        if let Some(after) = rest.strip_prefix("CRON_TZ=").or(rest.strip_prefix("TZ=")) {
            let (zone, tail) = after.split_once(' ').unwrap_or((after, ""));
            time_zone = zone
                .parse::<chrono_tz::Tz>()
                .map_err(|_| ScheduleError::UnknownTimeZone { given: zone.into() })?;
            rest = tail.trim();
        }
        let times = match rest.strip_prefix("@every") {
            Some(duration) => {
                let every_ms = parse_duration_ms(duration.trim()).map_err(bad)?;
                // Whole seconds, at least one (how Temporal's cron library counts `@every`).
                CronTimes::Every {
                    every_ms: (every_ms / 1_000 * 1_000).max(CRON_EVERY_MS_MIN),
                }
            }
            None => CronTimes::Expression(Box::new(
                croner::Cron::from_str(rest).map_err(|e| bad(e.to_string()))?,
            )),
        };
        Ok(Self { times, time_zone })
    }

    /// The schedule's first time after `after_unix_ms`, given the run's start `started_unix_ms`.
    fn next(&self, started_unix_ms: u64, after_unix_ms: u64) -> Option<u64> {
        match &self.times {
            CronTimes::Every { every_ms } => {
                let base = started_unix_ms / 1_000 * 1_000;
                let periods = after_unix_ms.saturating_sub(base) / every_ms + 1;
                base.checked_add(periods.checked_mul(*every_ms)?)
            }
            CronTimes::Expression(cron) => {
                let whole_seconds = i64::try_from(after_unix_ms / 1_000).ok()?;
                let from = chrono::DateTime::from_timestamp(whole_seconds, 0)?
                    .with_timezone(&self.time_zone);
                let next = cron.find_next_occurrence(&from, false).ok()?;
                u64::try_from(next.timestamp()).ok()?.checked_mul(1_000)
            }
        }
    }

    /// How long the next run waits for its first workflow task when a run that started at
    /// `started_unix_ms` closed at `closed_unix_ms` (for the first run, both are the start):
    /// until the first schedule time after the start that is not before the close, rounded up
    /// to whole seconds. `None` when the schedule has no such time.
    pub fn backoff_ms(&self, started_unix_ms: u64, closed_unix_ms: u64) -> Option<u64> {
        let mut next = self.next(started_unix_ms, started_unix_ms)?;
        if next < closed_unix_ms {
            next = self.next(started_unix_ms, closed_unix_ms.saturating_sub(1))?;
        }
        Some((next - closed_unix_ms).div_ceil(1_000) * 1_000)
    }
}

/// The error naming `expression` (cut to the length bound) and what is wrong with it.
fn bad_cron(expression: &str, reason: String) -> ScheduleError {
    ScheduleError::BadCron {
        expression: expression.chars().take(CRON_EXPRESSION_BYTES_MAX).collect(),
        reason,
    }
}

/// Refuses a cron expression longer than [`CRON_EXPRESSION_BYTES_MAX`].
fn within_cron_bound(expression: &str) -> Result<(), ScheduleError> {
    if expression.len() > CRON_EXPRESSION_BYTES_MAX {
        return Err(bad_cron(
            expression,
            format!("longer than {CRON_EXPRESSION_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// A duration as Go writes one (`2s`, `1m30s`, `1.5h`, `500ms`), in milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a duration such as 30s, 5m or 1h30m");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * unit_ms;
    }
    if total > SCHEDULE_INTERVAL_MS_MAX as f64 {
        return Err(format!("{text:?} is longer than a hundred years"));
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        crate::visibility::parse_time(text).unwrap()
    }

    /// Proves cron expressions follow their time zone across a daylight-saving change, and
    /// intervals align to the epoch with their offset.
    #[test]
    fn next_times_follow_time_zones_and_offsets() {
        let spec = ScheduleSpec {
            cron: vec!["0 9 * * *".into()],
            time_zone: Some("Europe/Paris".into()),
            ..ScheduleSpec::default()
        }
        .compile()
        .unwrap();
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer (DST from 2026-03-29).
        assert_eq!(
            spec.next_after(ms("2026-03-27T12:00:00Z")),
            Some(ms("2026-03-28T08:00:00Z"))
        );
        assert_eq!(
            spec.next_after(ms("2026-03-28T12:00:00Z")),
            Some(ms("2026-03-29T07:00:00Z"))
        );
        // From a time with milliseconds, the next time is still on a whole second.
        assert_eq!(
            spec.next_after(ms("2026-03-28T12:00:00.919Z")),
            Some(ms("2026-03-29T07:00:00Z"))
        );
        let every_second = ScheduleSpec {
            cron: vec!["* * * * * *".into()],
            ..ScheduleSpec::default()
        }
        .compile()
        .unwrap();
        assert_eq!(every_second.next_after(10_500), Some(11_000));
        assert_eq!(every_second.next_after(11_000), Some(12_000));
        let every = ScheduleSpec {
            intervals: vec![IntervalSpec {
                every_ms: 3_600_000,
                offset_ms: 300_000,
            }],
            ..ScheduleSpec::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            every.next_after(ms("2026-01-01T10:05:00Z")),
            Some(ms("2026-01-01T11:05:00Z"))
        );
        assert_eq!(
            every.times_between(ms("2026-01-01T10:00:00Z"), ms("2026-01-01T13:00:00Z"), 10),
            vec![
                ms("2026-01-01T10:05:00Z"),
                ms("2026-01-01T11:05:00Z"),
                ms("2026-01-01T12:05:00Z")
            ]
        );
    }

    /// Proves start and end bound the times, and jitter is deterministic and bounded.
    #[test]
    fn bounds_and_jitter() {
        let spec = ScheduleSpec {
            intervals: vec![IntervalSpec {
                every_ms: 1_000,
                offset_ms: 0,
            }],
            jitter_ms: 250,
            start_unix_ms: Some(10_500),
            end_unix_ms: Some(13_000),
            ..ScheduleSpec::default()
        }
        .compile()
        .unwrap();
        assert_eq!(spec.next_after(0), Some(11_000));
        assert_eq!(
            spec.times_between(0, 100_000, 10),
            vec![11_000, 12_000, 13_000]
        );
        assert_eq!(spec.next_after(13_000), None);
        for t in [11_000, 12_000, 13_000] {
            let j = spec.jitter("daily-report", t);
            assert!(j <= 250);
            assert_eq!(j, spec.jitter("daily-report", t));
        }
        assert_ne!(
            (11_000..11_100)
                .map(|t| spec.jitter("a", t))
                .collect::<Vec<_>>(),
            (11_000..11_100)
                .map(|t| spec.jitter("b", t))
                .collect::<Vec<_>>()
        );
    }

    /// Proves each malformed spec is refused with an error that names what is wrong.
    #[test]
    fn malformed_specs_are_refused() {
        assert_eq!(
            ScheduleSpec::default().compile().unwrap_err(),
            ScheduleError::Empty
        );
        let bad_cron = ScheduleSpec {
            cron: vec!["61 * * * *".into()],
            ..ScheduleSpec::default()
        };
        assert!(matches!(
            bad_cron.compile(),
            Err(ScheduleError::BadCron { expression, .. }) if expression == "61 * * * *"
        ));
        let bad_zone = ScheduleSpec {
            cron: vec!["0 9 * * *".into()],
            time_zone: Some("Mars/Olympus".into()),
            ..ScheduleSpec::default()
        };
        assert!(matches!(
            bad_zone.compile(),
            Err(ScheduleError::UnknownTimeZone { .. })
        ));
        let short = ScheduleSpec {
            intervals: vec![IntervalSpec {
                every_ms: 10,
                offset_ms: 0,
            }],
            ..ScheduleSpec::default()
        };
        assert!(matches!(
            short.compile(),
            Err(ScheduleError::IntervalTooShort { .. })
        ));
        assert!("sometimes".parse::<OverlapPolicy>().is_err());
        assert!(
            SchedulePolicies {
                catchup_window_ms: 5,
                ..SchedulePolicies::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn cron_schedules_wait_for_the_next_time_after_the_close() {
        let every = CronSchedule::parse("@every 2s").unwrap();
        // A first run waits a whole period.
        assert_eq!(every.backoff_ms(10_400, 10_400), Some(2_000));
        // A run that started at 10.4 s and closed at 11.0 s: the next time is 12 s.
        assert_eq!(every.backoff_ms(10_400, 11_000), Some(1_000));
        // One that ran past two periods waits for the third (16 s), rounded up to seconds.
        assert_eq!(every.backoff_ms(10_400, 15_500), Some(1_000));
        assert_eq!(
            CronSchedule::parse("@every 1m30s")
                .unwrap()
                .backoff_ms(0, 0),
            Some(90_000)
        );
        // Below a second counts as a second.
        assert_eq!(
            CronSchedule::parse("@every 10ms").unwrap().backoff_ms(0, 0),
            Some(1_000)
        );
        // Standard cron: every minute, from 00:00:30 to 00:01:00.
        let minutely = CronSchedule::parse("* * * * *").unwrap();
        assert_eq!(minutely.backoff_ms(30_000, 30_000), Some(30_000));
        assert_eq!(minutely.backoff_ms(30_000, 75_000), Some(45_000));
        // In a time zone: 09:00 in Paris is 08:00 UTC in January 1970.
        let paris = CronSchedule::parse("CRON_TZ=Europe/Paris 0 9 * * *").unwrap();
        assert_eq!(paris.backoff_ms(0, 0), Some(8 * 3_600_000));
        assert!(CronSchedule::parse("@hourly").is_ok());
    }

    #[test]
    fn malformed_cron_schedules_are_refused() {
        for bad in [
            "",
            "not cron",
            "61 * * * *",
            "@every",
            "@every soon",
            "@every 5x",
            "@every 1000000h",
            "CRON_TZ=Mars/Olympus * * * * *",
        ] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("* * * * * {}", "x".repeat(CRON_EXPRESSION_BYTES_MAX));
        assert!(CronSchedule::parse(&long).is_err());
    }
}
