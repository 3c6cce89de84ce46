//! The `Store` and `Transaction` traits.

use crate::{Limits, StoreResult};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A commit version. Commits one after another get increasing versions, and a write
/// transaction's version is above the version it read at; commits running at once may share
/// one (FoundationDB commits a batch of transactions at one version). What tells commits apart
/// and orders them is the [`Versionstamp`].
pub type Version = u64;

/// FoundationDB's 10-byte versionstamp: the commit version (8 bytes, big-endian) then the
/// order of the transaction within its commit batch (2 bytes, big-endian). Byte order equals
/// commit order, so keys embedding it form a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Versionstamp(pub [u8; 10]);

impl Versionstamp {
    /// The versionstamp of a backend that commits one transaction per version (local backends).
    pub fn from_version(version: Version) -> Self {
        let mut bytes = [0u8; 10];
        bytes[..8].copy_from_slice(&version.to_be_bytes());
        Self(bytes)
    }

    /// The commit version part.
    pub fn version(&self) -> Version {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[..8]);
        Version::from_be_bytes(v)
    }
}

/// What a successful commit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The version at which the writes became visible. For a transaction that wrote nothing it
    /// is the version it read at.
    pub version: Version,
    /// The versionstamp substituted into this transaction's versionstamped keys: unique to a
    /// write transaction, and ordered as the commits are.
    pub versionstamp: Versionstamp,
}

/// One key-value pair from a range read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A range read: keys in `[begin, end)`, at most `limit` of them, in ascending order unless
/// `reverse`. A `snapshot` read adds no read conflict (FoundationDB's snapshot reads).
///
/// # Examples
/// ```
/// use cairn_store::RangeRequest;
/// let last_three = RangeRequest::new(b"a".to_vec(), b"b".to_vec()).reverse().limit(3);
/// assert!(last_three.reverse);
/// assert_eq!(last_three.limit, Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    pub begin: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: Option<usize>,
    pub reverse: bool,
    pub snapshot: bool,
}

impl RangeRequest {
    /// Every key in `[begin, end)`, ascending, with conflict tracking.
    pub fn new(begin: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            begin: begin.into(),
            end: end.into(),
            limit: None,
            reverse: false,
            snapshot: false,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let (begin, end) = crate::keyspace::prefix_range(prefix);
        Self::new(begin, end)
    }

    /// At most `n` pairs. Default: no limit.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Descending order. Default: ascending.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// No read conflict for this read. Default: conflict-tracked.
    pub fn snapshot(mut self) -> Self {
        self.snapshot = true;
        self
    }
}

/// A store: a factory of transactions. Cheap to clone (handles share one backend).
pub trait Store: Clone + Send + Sync + 'static {
    type Tx: Transaction;

    /// Starts a transaction reading at the latest committed version.
    fn begin(&self) -> StoreResult<Self::Tx>;

    /// The limits this store enforces.
    fn limits(&self) -> Limits;

    /// A short name for logs and reports (`"mem"`, `"embedded"`, `"fdb"`).
    fn backend_name(&self) -> &'static str;

    /// For a store that only one process can have open at a time (the embedded store locks
    /// its directory): an id unique to this opening. Everything written under another opening
    /// was written by a process that has since exited, so a node can treat the membership
    /// records of other openings as dead at once. `None` (the default) for stores that many
    /// processes share (FoundationDB) or that several nodes of one process share (`MemStore`).
    fn exclusive_opening(&self) -> Option<String> {
        None
    }

    /// Whether a transaction's [`Transaction::get_many`] has its reads in flight together,
    /// and a key read in a transaction is answered again from the transaction's own cache
    /// (FoundationDB): then reading ahead the keys a batch will need saves round trips. False
    /// (the default) where reads are local and one after another, so reading ahead would only
    /// read twice.
    fn reads_ahead_pay(&self) -> bool {
        false
    }

    /// How many commit batches a node should have in flight at once: 1 (the default) where a
    /// commit is local work that a second one would only queue behind; more where a commit
    /// is mostly a wait on the network (FoundationDB), so batches overlap their round trips.
    fn commit_batches_in_flight(&self) -> usize {
        1
    }
}

/// One optimistic transaction. Reads see the snapshot at the read version plus this
/// transaction's own writes; writes are buffered until [`Transaction::commit`].
///
/// Dropping a transaction without committing discards it.
pub trait Transaction: Send + 'static {
    /// Reads one key, adding it to the read conflict set.
    fn get(&mut self, key: &[u8]) -> impl Future<Output = StoreResult<Option<Vec<u8>>>> + Send;

    /// Reads several keys, each as [`Self::get`] would (conflict-tracked), answering their
    /// values in the order asked. A backend that can have reads in flight together
    /// (FoundationDB: one round trip for all) overrides it; by default they are read one after
    /// another.
    fn get_many(
        &mut self,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<Vec<Option<Vec<u8>>>>> + Send {
        async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(self.get(key).await?);
            }
            Ok(values)
        }
    }

    /// Reads one key without a read conflict.
    fn get_snapshot(
        &mut self,
        key: &[u8],
    ) -> impl Future<Output = StoreResult<Option<Vec<u8>>>> + Send;

    /// Reads a range. With a limit, only the part of the range actually read joins the conflict
    /// set, as in FoundationDB.
    fn get_range(
        &mut self,
        range: &RangeRequest,
    ) -> impl Future<Output = StoreResult<Vec<KeyValue>>> + Send;

    /// Writes `value` at `key`.
    fn set(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()>;

    /// Removes `key`.
    fn clear(&mut self, key: &[u8]) -> StoreResult<()>;

    /// Removes every key in `[begin, end)`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> StoreResult<()>;

    /// Adds `delta` to the little-endian 64-bit integer at `key` (absent counts as 0), without a
    /// read conflict: concurrent adds all commit. Wraps on overflow, as FoundationDB's `ADD`.
    fn atomic_add(&mut self, key: &[u8], delta: i64) -> StoreResult<()>;

    /// Writes `value` at a key completed at commit: `key` ends with a 4-byte little-endian offset
    /// of a 10-byte placeholder that the commit's versionstamp replaces (FoundationDB's
    /// `SET_VERSIONSTAMPED_KEY`; `keyspace::Subspace::pack_with_versionstamp` builds such keys).
    /// The written key cannot be read back in the same transaction.
    fn set_versionstamped_key(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()>;

    /// Arms a watch on `key` when this transaction commits. The watch resolves once the key's
    /// value differs from its value as of that commit, and fails with
    /// [`crate::StoreError::WatchCancelled`] if the transaction does not commit.
    fn watch(&mut self, key: &[u8]) -> StoreResult<Watch>;

    /// Commits. See the crate docs for what each error means.
    fn commit(self) -> impl Future<Output = StoreResult<CommitInfo>> + Send;
}

/// A pending watch (see [`Transaction::watch`]).
pub struct Watch {
    inner: Pin<Box<dyn Future<Output = StoreResult<()>> + Send>>,
}

impl Watch {
    /// Wraps a backend's watch future.
    pub fn new(inner: impl Future<Output = StoreResult<()>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watch")
    }
}

impl Future for Watch {
    type Output = StoreResult<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
