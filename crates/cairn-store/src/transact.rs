//! The retry loop: run a transaction body, commit, and retry on retryable errors with backoff,
//! within an attempt limit and a time budget.

use crate::{Store, StoreError};
use futures::future::BoxFuture;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;
use tokio::time::Instant;

/// Errors a transaction body may return: any type that can carry a [`StoreError`] and say
/// whether it is worth retrying.
pub trait RetryClass: From<StoreError> {
    fn is_retryable(&self) -> bool;
    fn is_maybe_committed(&self) -> bool;
}

impl RetryClass for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
    fn is_maybe_committed(&self) -> bool {
        StoreError::is_maybe_committed(self)
    }
}

/// Bounds of [`transact`]'s retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactOptions {
    /// Most attempts, the first included. Default 100.
    pub attempts_max: u32,
    /// Longest the whole loop may run. Default 30 s.
    pub timeout: Duration,
    /// First backoff after a retryable error. Default 1 ms; doubles per retry.
    pub backoff_initial: Duration,
    /// Backoff cap. Default 200 ms. A random jitter of up to half the backoff is added.
    pub backoff_max: Duration,
    /// Seed of the jitter. Default none: a different jitter per process. A simulation sets
    /// it, so a seed replays the same backoffs.
    pub jitter_seed: Option<u64>,
}

impl Default for TransactOptions {
    fn default() -> Self {
        Self {
            attempts_max: 100,
            timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(200),
            jitter_seed: None,
        }
    }
}

/// What the body is told about the attempt it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// True if an earlier attempt failed with `MaybeCommitted`: its writes may be in the store,
    /// so the body must check before repeating a non-idempotent change.
    pub maybe_committed: bool,
}

/// Runs `body` in a fresh transaction and commits it, retrying on retryable errors.
///
/// The body must be safe to run more than once. After a [`StoreError::MaybeCommitted`] the
/// previous attempt may have been applied; a body that is not naturally idempotent checks a
/// marker it writes (for example the run's state version) before changing anything.
///
/// # Examples
/// ```
/// use cairn_store::{MemStore, Store, Transaction, TransactOptions, StoreError, transact};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemStore::new();
/// let next: i64 = transact(&store, &TransactOptions::default(), |tx, _attempt| {
///     Box::pin(async move {
///         let current = tx.get(b"counter").await?.map_or(0, |v| i64::from_le_bytes(v.try_into().unwrap()));
///         tx.set(b"counter", &(current + 1).to_le_bytes())?;
///         Ok::<_, StoreError>(current + 1)
///     })
/// })
/// .await
/// .unwrap();
/// assert_eq!(next, 1);
/// # });
/// ```
pub async fn transact<S, T, E, F>(store: &S, options: &TransactOptions, mut body: F) -> Result<T, E>
where
    S: Store,
    E: RetryClass + std::fmt::Display,
    F: for<'t> FnMut(&'t mut S::Tx, Attempt) -> BoxFuture<'t, Result<T, E>>,
{
    assert!(options.attempts_max >= 1, "attempts_max must be at least 1");
    let started = Instant::now();
    let mut attempt = Attempt {
        number: 1,
        maybe_committed: false,
    };
    let mut backoff = options.backoff_initial;
    loop {
        let error = match run_once(store, &mut body, attempt).await {
            Ok(value) => return Ok(value),
            Err(error) if !error.is_retryable() => return Err(error),
            Err(error) => error,
        };
        attempt.maybe_committed |= error.is_maybe_committed();
        if attempt.number >= options.attempts_max {
            return Err(E::from(StoreError::RetryLimitReached {
                attempts: attempt.number,
                last: error.to_string(),
            }));
        }
        let jitter = backoff.mul_f64(jitter_fraction(options.jitter_seed, attempt.number) * 0.5);
        if started.elapsed() + backoff + jitter > options.timeout {
            return Err(E::from(StoreError::RetryTimeout {
                elapsed_ms: millis(started.elapsed()),
                limit_ms: millis(options.timeout),
                last: error.to_string(),
            }));
        }
        tracing::debug!(attempt = attempt.number, %error, "retrying transaction");
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(options.backoff_max);
        attempt.number += 1;
    }
}

async fn run_once<S, T, E, F>(store: &S, body: &mut F, attempt: Attempt) -> Result<T, E>
where
    S: Store,
    E: RetryClass,
    F: for<'t> FnMut(&'t mut S::Tx, Attempt) -> BoxFuture<'t, Result<T, E>>,
{
    use crate::Transaction;
    let mut tx = store.begin()?;
    let value = body(&mut tx, attempt).await?;
    tx.commit().await?;
    Ok(value)
}

/// A fraction in [0, 1) that differs between attempts (and, unseeded, between processes), so
/// contending retries spread out. Not for anything that needs real randomness.
fn jitter_fraction(seed: Option<u64>, attempt: u32) -> f64 {
    let hash = match seed {
        Some(seed) => std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default()
            .hash_one((seed, attempt)),
        None => RandomState::new().hash_one(attempt),
    };
    (hash % 1_000) as f64 / 1_000.0
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
