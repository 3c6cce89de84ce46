//! The store's error type: one variant per failure mode, fixed text, values in fields.

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything a store operation can fail with.
///
/// Callers ask [`StoreError::is_retryable`] and [`StoreError::is_maybe_committed`] rather than
/// matching variants; `transact` does that for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A key this transaction read was changed by a transaction that committed after this one's
    /// read version. Nothing was written; retry from the start.
    #[error("transaction conflicted with a concurrent commit; nothing was written, retry it")]
    Conflict,
    /// The commit's outcome is unknown (FoundationDB's `commit_unknown_result`): it may or may not
    /// have been applied. Retrying is safe only for an idempotent transaction.
    #[error("commit outcome unknown: the transaction may or may not have been applied")]
    MaybeCommitted,
    /// The transaction outlived the store's age limit (FoundationDB: 5 s).
    #[error("transaction is {age_ms} ms old; the limit is {limit_ms} ms (transaction_age_ms_max)")]
    TransactionTooOld { age_ms: u64, limit_ms: u64 },
    #[error("key is {size} bytes; the limit is {limit} bytes (key_bytes_max)")]
    KeyTooLarge { size: usize, limit: usize },
    #[error("value is {size} bytes; the limit is {limit} bytes (value_bytes_max)")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("transaction is {size} bytes; the limit is {limit} bytes (transaction_bytes_max)")]
    TransactionTooLarge { size: usize, limit: usize },
    /// Keys starting with 0xFF are FoundationDB's system keyspace.
    #[error("key starts with 0xFF, which is reserved for the store's system keyspace")]
    KeyOutsideLegalRange,
    #[error("range begin sorts after its end; ranges are [begin, end)")]
    InvalidRange,
    #[error(
        "versionstamped key is malformed: it must end with a 4-byte little-endian offset of a 10-byte placeholder inside the key"
    )]
    InvalidVersionstampOffset,
    #[error("{count} watches are active; the limit is {limit} (watches_max)")]
    TooManyWatches { count: usize, limit: usize },
    /// The transaction that registered a watch was dropped or failed to commit.
    #[error("the watch's transaction did not commit, so the watch was never armed")]
    WatchCancelled,
    /// `transact` gave up after this many attempts.
    #[error("gave up after {attempts} attempts; the last error was: {last}")]
    RetryLimitReached { attempts: u32, last: String },
    /// `transact` gave up after its time budget.
    #[error("gave up after {elapsed_ms} ms (limit {limit_ms} ms); the last error was: {last}")]
    RetryTimeout {
        elapsed_ms: u64,
        limit_ms: u64,
        last: String,
    },
    /// Another process holds the data directory.
    #[error("the store at {path} is in use by another process")]
    Locked { path: String },
    /// The backend failed in a way retrying will not fix (I/O error, corruption, closed store).
    #[error("store backend failed: {message}")]
    Backend { message: String },
}

impl StoreError {
    /// True when retrying the whole transaction from the start may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Conflict | Self::MaybeCommitted | Self::TransactionTooOld { .. }
        )
    }

    /// True when the failed commit may nevertheless have been applied.
    pub fn is_maybe_committed(&self) -> bool {
        matches!(self, Self::MaybeCommitted)
    }

    /// Wraps any backend failure.
    pub fn backend(error: impl std::fmt::Display) -> Self {
        Self::Backend {
            message: error.to_string(),
        }
    }
}
