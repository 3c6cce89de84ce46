//! Retry policies for activities (and later child workflows), with Temporal's meaning: the n-th
//! retry waits `initial_interval * backoff_coefficient^(n-1)`, capped at `maximum_interval`,
//! until `maximum_attempts` have been made or an error type listed as non-retryable occurs.

use crate::limits::{ERROR_TYPE_BYTES_MAX, NON_RETRYABLE_ERROR_TYPES_MAX};
use crate::timeouts::{PolicyError, millis_from_wire, millis_to_wire};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a failed attempt is retried. Built with [`RetryPolicy::builder`] or deserialized (both
/// validate); the fields are private so no unvalidated policy exists.
///
/// # Examples
/// ```
/// use cairn_types::{RetryPolicy, RetryDecision};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::builder()
///     .initial_interval(Duration::from_millis(100))
///     .backoff_coefficient(2.0)
///     .maximum_interval(Duration::from_millis(300))
///     .maximum_attempts(4)
///     .non_retryable_error_type("InvalidCardError")
///     .build()
///     .unwrap();
/// assert_eq!(policy.decide(1, "Timeout"), RetryDecision::RetryAfter(Duration::from_millis(100)));
/// assert_eq!(policy.decide(2, "Timeout"), RetryDecision::RetryAfter(Duration::from_millis(200)));
/// assert_eq!(policy.decide(3, "Timeout"), RetryDecision::RetryAfter(Duration::from_millis(300)));
/// assert_eq!(policy.decide(4, "Timeout"), RetryDecision::GiveUpAttemptsExhausted);
/// assert_eq!(policy.decide(1, "InvalidCardError"), RetryDecision::GiveUpNonRetryable);
///
/// assert!(RetryPolicy::builder().backoff_coefficient(0.5).build().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RetryPolicyWire", into = "RetryPolicyWire")]
pub struct RetryPolicy {
    initial_interval: Duration,
    backoff_coefficient: f64,
    maximum_interval: Duration,
    maximum_attempts: Option<u32>,
    non_retryable_error_types: Vec<String>,
}

/// What to do after attempt `n` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Start attempt `n + 1` after this delay.
    RetryAfter(Duration),
    /// `maximum_attempts` attempts have been made.
    GiveUpAttemptsExhausted,
    /// The error's type is listed as non-retryable (or the error said so itself).
    GiveUpNonRetryable,
}

impl Default for RetryPolicy {
    /// Temporal's defaults: 1 s initial interval, coefficient 2, maximum 100 × initial,
    /// unlimited attempts, nothing non-retryable.
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(100),
            maximum_attempts: None,
            non_retryable_error_types: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Starts from the defaults (see [`RetryPolicy::default`]).
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// A policy that never retries: one attempt.
    pub fn no_retries() -> Self {
        Self {
            maximum_attempts: Some(1),
            ..Self::default()
        }
    }

    pub fn initial_interval(&self) -> Duration {
        self.initial_interval
    }
    pub fn backoff_coefficient(&self) -> f64 {
        self.backoff_coefficient
    }
    pub fn maximum_interval(&self) -> Duration {
        self.maximum_interval
    }
    /// `None` means unlimited.
    pub fn maximum_attempts(&self) -> Option<u32> {
        self.maximum_attempts
    }
    pub fn non_retryable_error_types(&self) -> &[String] {
        &self.non_retryable_error_types
    }

    /// The delay before retry number `retry` (1 = the first retry, after attempt 1 failed).
    pub fn backoff(&self, retry: u32) -> Duration {
        assert!(retry >= 1, "retry numbers start at 1");
        let exponent = i32::try_from(retry - 1).unwrap_or(i32::MAX);
        let factor = self.backoff_coefficient.powi(exponent);
        let delay_secs = self.initial_interval.as_secs_f64() * factor;
        let max_secs = self.maximum_interval.as_secs_f64();
        // `min` on a non-finite product (overflow to infinity) still yields the cap.
        Duration::from_secs_f64(delay_secs.min(max_secs))
    }

    /// Decides what follows the failure of attempt `attempt` (1-based) with `error_type`.
    pub fn decide(&self, attempt: u32, error_type: &str) -> RetryDecision {
        assert!(attempt >= 1, "attempt numbers start at 1");
        if self
            .non_retryable_error_types
            .iter()
            .any(|t| t == error_type)
        {
            return RetryDecision::GiveUpNonRetryable;
        }
        if self.maximum_attempts.is_some_and(|max| attempt >= max) {
            return RetryDecision::GiveUpAttemptsExhausted;
        }
        RetryDecision::RetryAfter(self.backoff(attempt))
    }

    fn validate(self) -> Result<Self, PolicyError> {
        if self.initial_interval.is_zero() {
            return Err(PolicyError::ZeroInterval {
                field: "initial_interval",
            });
        }
        if !self.backoff_coefficient.is_finite() || self.backoff_coefficient < 1.0 {
            return Err(PolicyError::BackoffCoefficientBelowOne {
                value: self.backoff_coefficient,
            });
        }
        if self.maximum_interval < self.initial_interval {
            return Err(PolicyError::MaximumBelowInitial {
                maximum_ms: self.maximum_interval.as_millis(),
                initial_ms: self.initial_interval.as_millis(),
            });
        }
        if self.maximum_attempts == Some(0) {
            return Err(PolicyError::ZeroMaximumAttempts);
        }
        if self.non_retryable_error_types.len() > NON_RETRYABLE_ERROR_TYPES_MAX {
            return Err(PolicyError::TooManyErrorTypes {
                count: self.non_retryable_error_types.len(),
                max: NON_RETRYABLE_ERROR_TYPES_MAX,
            });
        }
        for name in &self.non_retryable_error_types {
            if name.is_empty() || name.len() > ERROR_TYPE_BYTES_MAX {
                return Err(PolicyError::BadErrorTypeName {
                    name: name.chars().take(64).collect(),
                    max: ERROR_TYPE_BYTES_MAX,
                });
            }
        }
        Ok(self)
    }
}

/// Builder for [`RetryPolicy`]; each setter names its default.
#[derive(Debug, Clone, Default)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicyParts,
}

#[derive(Debug, Clone, Default)]
struct RetryPolicyParts {
    initial_interval: Option<Duration>,
    backoff_coefficient: Option<f64>,
    maximum_interval: Option<Duration>,
    maximum_attempts: Option<u32>,
    non_retryable_error_types: Vec<String>,
}

impl RetryPolicyBuilder {
    /// Delay before the first retry. Default 1 s. Must be non-zero.
    pub fn initial_interval(mut self, value: Duration) -> Self {
        self.policy.initial_interval = Some(value);
        self
    }
    /// Growth of the delay per retry. Default 2.0. Must be finite and at least 1.
    pub fn backoff_coefficient(mut self, value: f64) -> Self {
        self.policy.backoff_coefficient = Some(value);
        self
    }
    /// Cap on the delay. Default 100 × `initial_interval`. Must be at least `initial_interval`.
    pub fn maximum_interval(mut self, value: Duration) -> Self {
        self.policy.maximum_interval = Some(value);
        self
    }
    /// Total attempts including the first. Default unlimited. Must be at least 1.
    pub fn maximum_attempts(mut self, value: u32) -> Self {
        self.policy.maximum_attempts = Some(value);
        self
    }
    /// An error type that is never retried. Default: none.
    pub fn non_retryable_error_type(mut self, name: impl Into<String>) -> Self {
        self.policy.non_retryable_error_types.push(name.into());
        self
    }
    /// Validates and builds.
    pub fn build(self) -> Result<RetryPolicy, PolicyError> {
        let parts = self.policy;
        let initial = parts.initial_interval.unwrap_or(Duration::from_secs(1));
        RetryPolicy {
            initial_interval: initial,
            backoff_coefficient: parts.backoff_coefficient.unwrap_or(2.0),
            maximum_interval: parts
                .maximum_interval
                .unwrap_or_else(|| initial.saturating_mul(100)),
            maximum_attempts: parts.maximum_attempts,
            non_retryable_error_types: parts.non_retryable_error_types,
        }
        .validate()
    }
}

/// The serialized form: intervals in signed milliseconds, so a negative number from an API body
/// is reported as such rather than as a type error.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryPolicyWire {
    initial_interval_ms: i64,
    backoff_coefficient: f64,
    #[serde(default)]
    maximum_interval_ms: Option<i64>,
    #[serde(default)]
    maximum_attempts: Option<u32>,
    #[serde(default)]
    non_retryable_error_types: Vec<String>,
}

impl TryFrom<RetryPolicyWire> for RetryPolicy {
    type Error = PolicyError;
    fn try_from(wire: RetryPolicyWire) -> Result<Self, PolicyError> {
        let initial = millis_from_wire("initial_interval_ms", wire.initial_interval_ms)?;
        let maximum = match wire.maximum_interval_ms {
            Some(ms) => millis_from_wire("maximum_interval_ms", ms)?,
            None => initial.saturating_mul(100),
        };
        RetryPolicy {
            initial_interval: initial,
            backoff_coefficient: wire.backoff_coefficient,
            maximum_interval: maximum,
            maximum_attempts: wire.maximum_attempts,
            non_retryable_error_types: wire.non_retryable_error_types,
        }
        .validate()
    }
}

impl From<RetryPolicy> for RetryPolicyWire {
    fn from(policy: RetryPolicy) -> Self {
        Self {
            initial_interval_ms: millis_to_wire(policy.initial_interval),
            backoff_coefficient: policy.backoff_coefficient,
            maximum_interval_ms: Some(millis_to_wire(policy.maximum_interval)),
            maximum_attempts: policy.maximum_attempts,
            non_retryable_error_types: policy.non_retryable_error_types,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves each kind of nonsense policy is refused with its own error.
    #[test]
    fn nonsense_policies_are_refused() {
        let zero = RetryPolicy::builder()
            .initial_interval(Duration::ZERO)
            .build();
        assert!(matches!(zero, Err(PolicyError::ZeroInterval { .. })));
        let low = RetryPolicy::builder().backoff_coefficient(0.99).build();
        assert!(matches!(
            low,
            Err(PolicyError::BackoffCoefficientBelowOne { .. })
        ));
        let nan = RetryPolicy::builder().backoff_coefficient(f64::NAN).build();
        assert!(matches!(
            nan,
            Err(PolicyError::BackoffCoefficientBelowOne { .. })
        ));
        let inverted = RetryPolicy::builder()
            .initial_interval(Duration::from_secs(2))
            .maximum_interval(Duration::from_secs(1))
            .build();
        assert!(matches!(
            inverted,
            Err(PolicyError::MaximumBelowInitial { .. })
        ));
        let no_attempts = RetryPolicy::builder().maximum_attempts(0).build();
        assert!(matches!(no_attempts, Err(PolicyError::ZeroMaximumAttempts)));
        let empty_name = RetryPolicy::builder().non_retryable_error_type("").build();
        assert!(matches!(
            empty_name,
            Err(PolicyError::BadErrorTypeName { .. })
        ));
    }

    /// Proves a negative interval in serialized input is named in the error, and that a valid
    /// policy round-trips through MessagePack unchanged.
    #[test]
    fn wire_form_validates_and_round_trips() {
        let json_like = RetryPolicyWire {
            initial_interval_ms: -5,
            backoff_coefficient: 2.0,
            maximum_interval_ms: None,
            maximum_attempts: None,
            non_retryable_error_types: vec![],
        };
        let err = RetryPolicy::try_from(json_like).unwrap_err();
        assert_eq!(
            err.to_string(),
            "initial_interval_ms is -5; intervals must be positive"
        );
        let policy = RetryPolicy::builder()
            .maximum_attempts(3)
            .non_retryable_error_type("Fatal")
            .build()
            .unwrap();
        let bytes = rmp_serde::to_vec_named(&policy).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<RetryPolicy>(&bytes).unwrap(),
            policy
        );
    }

    /// Proves the backoff grows geometrically, stops at the cap, and survives huge retry counts.
    #[test]
    fn backoff_is_capped_and_never_overflows() {
        let policy = RetryPolicy::builder()
            .initial_interval(Duration::from_secs(1))
            .backoff_coefficient(3.0)
            .maximum_interval(Duration::from_secs(20))
            .build()
            .unwrap();
        assert_eq!(policy.backoff(1), Duration::from_secs(1));
        assert_eq!(policy.backoff(2), Duration::from_secs(3));
        assert_eq!(policy.backoff(3), Duration::from_secs(9));
        assert_eq!(policy.backoff(4), Duration::from_secs(20));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(20));
        assert_eq!(
            policy.decide(1_000_000, "x"),
            RetryDecision::RetryAfter(Duration::from_secs(20))
        );
    }
}
