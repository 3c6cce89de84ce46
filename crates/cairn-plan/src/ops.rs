//! The vocabulary of what a transition writes and requires: the writes ([`Op`]), including
//! those decided inside the commit from what it reads there ([`Derive`], through [`TxRead`]),
//! the conditions a request needs ([`Check`]), how a `MaybeCommitted` is settled ([`Verify`]),
//! and why a request did not commit ([`CommitError`]). Below the committer, the planner and
//! everything that builds writes; it knows the store only through `cairn_store`'s traits.

use cairn_store::{KeyValue, RangeRequest, StoreError, StoreResult, Transaction};
use cairn_types::RunId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One write of a request.
#[derive(Clone)]
pub enum Op {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    /// Adds to a little-endian i64 counter (FoundationDB's ADD; never conflicts).
    Add(Vec<u8>, i64),
    /// Removes every key in `[begin, end)`.
    ClearRange(Vec<u8>, Vec<u8>),
    /// A new entry (an encoded `InboxItem`) in the mailbox of `run_id`, whose workflow lives
    /// in `shard`; the shard's holder is woken once the batch commits.
    Mail {
        shard: u32,
        run_id: RunId,
        item: Vec<u8>,
    },
    /// Writes schedule `schedule_id`'s wake-up index entry (`Keys::schedule_wake`) and tells
    /// its shard's holder, as `Mail` does.
    WakeSchedule {
        shard: u32,
        schedule_id: String,
        at_unix_ms: u64,
    },
    /// Writes nothing: a run of `workflow_type` starts in this commit, for the node's metrics
    /// to count once the commit lands (a derived child start says so only if the child's id
    /// was free).
    Started {
        workflow_type: String,
    },
    /// Writes decided inside the transaction from what it reads there (as of the batch,
    /// including earlier requests' writes): a child start that must see whether its workflow id
    /// is free, a close policy that must find a child's current run.
    Derived(Derive),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Set(k, v) => write!(f, "Set({} key bytes, {} value bytes)", k.len(), v.len()),
            Op::Clear(k) => write!(f, "Clear({} key bytes)", k.len()),
            Op::Add(k, d) => write!(f, "Add({} key bytes, {d})", k.len()),
            Op::ClearRange(b, e) => write!(f, "ClearRange({} and {} key bytes)", b.len(), e.len()),
            Op::Mail {
                shard,
                run_id,
                item,
            } => {
                write!(f, "Mail(shard {shard}, run {run_id}, {} bytes)", item.len())
            }
            Op::WakeSchedule {
                shard,
                schedule_id,
                at_unix_ms,
            } => write!(
                f,
                "WakeSchedule(shard {shard}, {schedule_id:?} at {at_unix_ms})"
            ),
            Op::Started { workflow_type } => write!(f, "Started({workflow_type:?})"),
            Op::Derived(derive) => write!(f, "Derived({derive:?})"),
        }
    }
}

/// A store key inside a [`Derivation`], printed as escaped bytes (`t\x02v1\x00…`), as
/// FoundationDB's tools print keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// A boxed store read, as [`TxRead`] returns it.
pub type ReadFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// The reads a [`Derive`] (and a chunked record read) may make inside a transaction.
pub trait TxRead: Send {
    fn read<'a>(&'a mut self, key: &'a [u8]) -> ReadFuture<'a, Option<Vec<u8>>>;
    fn read_range<'a>(&'a mut self, range: &'a RangeRequest) -> ReadFuture<'a, Vec<KeyValue>>;
}

impl<T: Transaction> TxRead for T {
    fn read<'a>(&'a mut self, key: &'a [u8]) -> ReadFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get(key))
    }
    fn read_range<'a>(&'a mut self, range: &'a RangeRequest) -> ReadFuture<'a, Vec<KeyValue>> {
        Box::pin(self.get_range(range))
    }
}

/// The future a [`Derivation`] returns: the writes to make.
pub type DeriveFuture<'t> = Pin<Box<dyn Future<Output = StoreResult<Vec<Op>>> + Send + 't>>;

/// One kind of write decided inside the commit transaction: a plain struct of what it needs
/// (printable with `{:?}`), defined beside what it writes, whose `derive` reads and returns
/// the writes. Called once per attempt of the batch, so it depends only on its fields and
/// what it reads.
pub trait Derivation: std::fmt::Debug + Send + Sync {
    fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t>;

    /// Keys `derive` reads whatever it finds (a hint): where reading ahead pays, the batch
    /// reads them with its other reads, and `derive`'s own read is then answered from the
    /// transaction's cache. Empty by default.
    fn reads(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// See [`Op::Derived`]: one [`Derivation`], shared by the batch's attempts.
#[derive(Clone)]
pub struct Derive(Arc<dyn Derivation>);

impl std::fmt::Debug for Derive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Derive {
    pub fn new(derivation: impl Derivation + 'static) -> Self {
        Self(Arc::new(derivation))
    }

    /// The writes, as decided from what `tx` reads now.
    pub fn derive<'t>(&'t self, tx: &'t mut dyn TxRead) -> DeriveFuture<'t> {
        self.0.derive(tx)
    }

    /// See [`Derivation::reads`].
    pub fn reads(&self) -> Vec<Vec<u8>> {
        self.0.reads()
    }
}

/// Decides whether a request may proceed, given the current value of its checked key.
pub type CheckFn =
    Box<dyn Fn(Option<&[u8]>) -> Result<(), crate::error::ClientError> + Send + Sync>;

/// A condition a request needs inside the batch transaction: the value of `key` (as of the
/// batch, including earlier requests of the same batch) must satisfy the function, or the
/// request is rejected with its error and writes nothing. The read is conflict-tracked.
///
/// With `range_end`, the value checked is that of the first key in `[key, range_end)` (none
/// if the range is empty), and the whole range is conflict-tracked while it is empty: a write
/// into it by a commit after the batch's read version fails the batch, which is retried.
pub struct Check {
    pub key: Vec<u8>,
    pub range_end: Option<Vec<u8>>,
    pub accept: CheckFn,
}

impl Check {
    /// A check of the value of `key`.
    pub fn key(
        key: Vec<u8>,
        accept: impl Fn(Option<&[u8]>) -> Result<(), crate::error::ClientError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            key,
            range_end: None,
            accept: Box::new(accept),
        }
    }

    /// A check of the value of the first key in `[begin, end)` (none if the range is empty).
    pub fn first_in(
        begin: Vec<u8>,
        end: Vec<u8>,
        accept: impl Fn(Option<&[u8]>) -> Result<(), crate::error::ClientError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            key: begin,
            range_end: Some(end),
            accept: Box::new(accept),
        }
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Op {
    /// Bytes written, as far as known before the transaction (derived writes count once
    /// derived, in the store's own transaction-size check).
    pub fn bytes(&self) -> usize {
        match self {
            Op::Set(k, v) => k.len() + v.len(),
            Op::Clear(k) => k.len(),
            Op::Add(k, _) => k.len() + 8,
            Op::ClearRange(b, e) => b.len() + e.len(),
            Op::Mail { item, .. } => item.len() + 64,
            Op::WakeSchedule { schedule_id, .. } => schedule_id.len() * 2 + 64,
            Op::Started { .. } => 0,
            Op::Derived(_) => 0,
        }
    }
}

/// How to tell, after `MaybeCommitted`, whether a request's batch landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// The key holds a run record whose version is at least this.
    RunVersionAtLeast(u64),
    /// The key exists (a guard key only this request writes).
    Exists,
    /// The key is gone (a delete of a record only this request clears).
    Absent,
    /// The key holds exactly this value (a mark with a unique claim id only this request
    /// writes).
    Holds(Vec<u8>),
}

/// Why a request did not commit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommitError {
    #[error("shard {shard} is no longer owned by this node at epoch {epoch}")]
    Fenced { shard: u32, epoch: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A check of the request failed; nothing of it was written.
    #[error(transparent)]
    Rejected(Box<crate::error::ClientError>),
    /// The committer is gone (the node is stopping); the request's outcome is unknown.
    #[error("the committer stopped before answering")]
    Stopped,
}
