//! `MemStore`: the in-memory reference backend, MVCC with real conflict detection.

use crate::kit::{LatestReader, Lookup, Resolver, WatchRegistry, WriteBuffer, finalize};
use crate::{
    CommitInfo, KeyValue, Limits, RangeRequest, Store, StoreResult, Transaction, Version,
    Versionstamp, Watch,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An in-memory store with FoundationDB's semantics: multi-version reads, optimistic
/// serializable commits, limits and watches. Used by unit tests and the simulated cluster.
///
/// # Examples
/// ```
/// use cairn_store::{MemStore, Store, Transaction};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemStore::new();
/// let mut tx = store.begin().unwrap();
/// tx.set(b"greeting", b"hello").unwrap();
/// tx.commit().await.unwrap();
///
/// let mut tx = store.begin().unwrap();
/// assert_eq!(tx.get(b"greeting").await.unwrap(), Some(b"hello".to_vec()));
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct MemStore {
    inner: Arc<Mutex<MemInner>>,
    limits: Limits,
}

/// One key's versions, oldest first; `None` is a deletion.
type VersionChain = Vec<(Version, Option<Vec<u8>>)>;

#[derive(Debug)]
struct MemInner {
    data: BTreeMap<Vec<u8>, VersionChain>,
    version: Version,
    resolver: Resolver,
    watches: WatchRegistry,
    /// Read versions of live transactions (version → count), for pruning old versions.
    readers: BTreeMap<Version, usize>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store with FoundationDB's limits.
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An empty store with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemInner {
                data: BTreeMap::new(),
                version: 0,
                resolver: Resolver::new(limits.transaction_age_max + Duration::from_secs(1)),
                watches: WatchRegistry::default(),
                readers: BTreeMap::new(),
            })),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A panic while holding the lock leaves the maps consistent (every mutation below is
        // completed before the guard drops), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    type Tx = MemTransaction;

    fn begin(&self) -> StoreResult<MemTransaction> {
        let mut inner = self.lock();
        inner.resolver.prune();
        let read_version = inner.version;
        *inner.readers.entry(read_version).or_default() += 1;
        Ok(MemTransaction {
            store: self.clone(),
            read_version,
            buffer: WriteBuffer::new(self.limits),
            registered: true,
        })
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn backend_name(&self) -> &'static str {
        "mem"
    }
}

impl MemInner {
    fn value_at(&self, key: &[u8], version: Version) -> Option<Vec<u8>> {
        visible(self.data.get(key)?, version).cloned()
    }

    /// Drops versions of `key` that no live reader can see.
    fn prune(&mut self, key: &[u8], horizon: Version) {
        let Some(chain) = self.data.get_mut(key) else {
            return;
        };
        // Keep the newest version at or below the horizon and everything after it.
        let keep_from = chain.iter().rposition(|(v, _)| *v <= horizon).unwrap_or(0);
        chain.drain(..keep_from);
        if chain.len() == 1 && chain[0].1.is_none() && chain[0].0 <= horizon {
            self.data.remove(key);
        }
    }
}

fn visible(chain: &VersionChain, version: Version) -> Option<&Vec<u8>> {
    chain
        .iter()
        .rev()
        .find(|(v, _)| *v <= version)
        .and_then(|(_, value)| value.as_ref())
}

struct Latest<'a>(&'a MemInner);

impl LatestReader for Latest<'_> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.0.value_at(key, self.0.version))
    }

    fn keys_in(&self, begin: &[u8], end: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
        let version = self.0.version;
        Ok(self
            .0
            .data
            .range(begin.to_vec()..end.to_vec())
            .filter(|(_, chain)| visible(chain, version).is_some())
            .map(|(k, _)| k.clone())
            .collect())
    }
}

/// A [`MemStore`] transaction.
#[derive(Debug)]
pub struct MemTransaction {
    store: MemStore,
    read_version: Version,
    buffer: WriteBuffer,
    registered: bool,
}

impl MemTransaction {
    fn unregister(&mut self, inner: &mut MemInner) {
        if !self.registered {
            return;
        }
        self.registered = false;
        if let Some(count) = inner.readers.get_mut(&self.read_version) {
            *count -= 1;
            if *count == 0 {
                inner.readers.remove(&self.read_version);
            }
        }
    }

    fn read(&mut self, key: &[u8], snapshot: bool) -> StoreResult<Option<Vec<u8>>> {
        let lookup = self.buffer.begin_get(key, snapshot)?;
        if let Lookup::Known(v) = lookup {
            return Ok(v);
        }
        let inner = self.store.lock();
        WriteBuffer::resolve(lookup, || Ok(inner.value_at(key, self.read_version)))
    }
}

impl Drop for MemTransaction {
    fn drop(&mut self) {
        if self.registered {
            let store = self.store.clone();
            let mut inner = store.lock();
            self.unregister(&mut inner);
        }
    }
}

impl Transaction for MemTransaction {
    async fn get(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.read(key, false)
    }

    async fn get_snapshot(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.read(key, true)
    }

    async fn get_range(&mut self, range: &RangeRequest) -> StoreResult<Vec<KeyValue>> {
        if !self.buffer.check_range(range)? {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        let inner = store.lock();
        let version = self.read_version;
        let span = inner.data.range(range.begin.clone()..range.end.clone());
        let pairs = span.filter_map(|(k, chain)| {
            visible(chain, version).map(|v| {
                Ok(KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
            })
        });
        if range.reverse {
            let pairs: Vec<_> = pairs.collect();
            self.buffer.merge_range(range, pairs.into_iter().rev())
        } else {
            self.buffer.merge_range(range, pairs)
        }
    }

    crate::buffered_writes!(buffer);

    fn watch(&mut self, key: &[u8]) -> StoreResult<Watch> {
        let armed = self.store.lock().watches.len();
        self.buffer.watch(key, armed)
    }

    async fn commit(mut self) -> StoreResult<CommitInfo> {
        self.buffer.check_commit()?;
        let store = self.store.clone();
        let mut inner = store.lock();
        // What this transaction could read of each watched key, taken while its snapshot is
        // still registered (and so not pruned).
        let snapshot_values: Vec<Option<Vec<u8>>> = self
            .buffer
            .watched_keys()
            .map(|key| inner.value_at(key, self.read_version))
            .collect();
        self.unregister(&mut inner);
        // As on FoundationDB, a transaction that wrote nothing commits without a conflict
        // check: there is nothing to apply.
        if !self.buffer.is_read_only() {
            inner
                .resolver
                .check(self.read_version, self.buffer.read_ranges())?;
        }
        let mut written = BTreeMap::new();
        let info = if self.buffer.is_read_only() {
            CommitInfo {
                version: self.read_version,
                versionstamp: Versionstamp::from_version(self.read_version),
            }
        } else {
            let version = inner.version + 1;
            let versionstamp = Versionstamp::from_version(version);
            let finalized = finalize(self.buffer.take_mutations(), versionstamp, &Latest(&inner))?;
            // Versions older than the oldest live reader's snapshot are unreachable.
            let horizon = inner.readers.keys().next().copied().unwrap_or(version);
            for (key, value) in &finalized.writes {
                inner
                    .data
                    .entry(key.clone())
                    .or_default()
                    .push((version, value.clone()));
                inner.prune(key, horizon);
            }
            inner.version = version;
            inner.watches.notify(&finalized.writes);
            let points = finalized.writes.keys().cloned().collect();
            inner
                .resolver
                .record(version, points, finalized.cleared_ranges);
            if self.buffer.has_watches() {
                written = finalized.writes;
            }
            CommitInfo {
                version,
                versionstamp,
            }
        };
        for ((key, fire), snapshot) in self.buffer.take_watches().into_iter().zip(snapshot_values) {
            let current = inner.value_at(&key, inner.version);
            let baseline = match written.get(&key) {
                Some(value) => value.clone(),
                None => snapshot,
            };
            inner.watches.arm(key, baseline, current.as_deref(), fire);
        }
        Ok(info)
    }
}
