//! A store wrapper that records what each node committed, for the checker.
//!
//! It sits directly on the shared `MemStore`, below each node's `FaultStore`, so it sees exactly
//! the commits that landed (an injected "lost" `MaybeCommitted` never reaches it; an "applied"
//! one does). For each landed commit it keeps the node that made it, the commit version, the
//! lease values the transaction read with conflict tracking (the committer's fence and wake
//! reads), and the history events and leases it wrote. Every landed commit, whatever it wrote,
//! also goes into the trace: when (virtual time), which node, its version and a digest of its
//! writes. Two runs of one seed must give the same trace, byte for byte.

use cairn_runtime::{Keys, Lease};
use cairn_store::{
    CommitInfo, KeyValue, Limits, RangeRequest, Store, StoreResult, Transaction, Watch,
};
use cairn_types::{EventId, RunId};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// One landed commit that wrote history or leases.
#[derive(Debug, Clone)]
pub struct AuditedCommit {
    pub node: String,
    pub version: u64,
    /// Leases the transaction read with conflict tracking, by shard (`None`: no lease yet).
    pub lease_reads: BTreeMap<u32, Option<Lease>>,
    pub history_writes: Vec<(RunId, EventId, Vec<u8>)>,
    pub lease_writes: Vec<(u32, Lease)>,
}

/// One landed commit, as the trace records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual milliseconds since the simulation began.
    pub at_ms: u64,
    pub node: String,
    pub version: u64,
    /// SipHash (fixed keys) of every write, in the order the transaction made them.
    pub writes_digest: u64,
}

/// Every audited commit of one simulation, and the trace of every landed commit.
#[derive(Debug)]
pub struct AuditLog {
    keys: Keys,
    commits: Mutex<Vec<AuditedCommit>>,
    trace: Mutex<Vec<TraceEntry>>,
    /// Where the trace's virtual time starts.
    origin: tokio::time::Instant,
}

impl Default for AuditLog {
    fn default() -> Self {
        Self {
            keys: Keys::default(),
            commits: Mutex::default(),
            trace: Mutex::default(),
            origin: tokio::time::Instant::now(),
        }
    }
}

impl AuditLog {
    /// Every landed commit so far, in commit order.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The commits so far, in commit-version order.
    pub fn commits(&self) -> Vec<AuditedCommit> {
        let mut commits = self
            .commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        commits.sort_by_key(|c| c.version);
        commits
    }
}

fn decode_lease(bytes: &[u8]) -> Option<Lease> {
    rmp_serde::from_slice(bytes).ok()
}

/// A node's view of the shared store, audited.
#[derive(Debug, Clone)]
pub struct AuditStore<S> {
    inner: S,
    node: Arc<str>,
    log: Arc<AuditLog>,
}

impl<S: Store> AuditStore<S> {
    pub fn new(inner: S, node: &str, log: Arc<AuditLog>) -> Self {
        Self {
            inner,
            node: node.into(),
            log,
        }
    }
}

impl<S: Store> Store for AuditStore<S> {
    type Tx = AuditTransaction<S::Tx>;

    fn begin(&self) -> StoreResult<Self::Tx> {
        Ok(AuditTransaction {
            inner: self.inner.begin()?,
            node: self.node.clone(),
            log: self.log.clone(),
            lease_reads: BTreeMap::new(),
            history_writes: Vec::new(),
            lease_writes: Vec::new(),
            writes: DefaultHasher::new(),
        })
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn exclusive_opening(&self) -> Option<String> {
        self.inner.exclusive_opening()
    }

    /// Always: the simulated cluster reads ahead as on FoundationDB (the derived writes' keys
    /// with the batch's other reads), so every seed exercises that path; the other tests,
    /// on the local stores, exercise the one without.
    fn reads_ahead_pay(&self) -> bool {
        true
    }

    /// Two: the simulated nodes commit batches in flight together as on FoundationDB, so
    /// every seed interleaves them (and their conflicts); the other tests, on the local
    /// stores, exercise one at a time.
    fn commit_batches_in_flight(&self) -> usize {
        2
    }
}

/// A transaction of an [`AuditStore`].
#[derive(Debug)]
pub struct AuditTransaction<T> {
    inner: T,
    node: Arc<str>,
    log: Arc<AuditLog>,
    lease_reads: BTreeMap<u32, Option<Lease>>,
    history_writes: Vec<(RunId, EventId, Vec<u8>)>,
    lease_writes: Vec<(u32, Lease)>,
    /// Digest of every write so far.
    writes: DefaultHasher,
}

impl<T: Transaction> Transaction for AuditTransaction<T> {
    async fn get(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let value = self.inner.get(key).await?;
        if let Some(shard) = self.log.keys.lease_shard(key) {
            let lease = value.as_deref().and_then(decode_lease);
            self.lease_reads.entry(shard).or_insert(lease);
        }
        Ok(value)
    }

    async fn get_snapshot(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get_snapshot(key).await
    }

    async fn get_range(&mut self, range: &RangeRequest) -> StoreResult<Vec<KeyValue>> {
        self.inner.get_range(range).await
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.inner.set(key, value)?;
        (0u8, key, value).hash(&mut self.writes);
        if let Some((run, event_id)) = self.log.keys.parse_history_event(key) {
            self.history_writes.push((run, event_id, value.to_vec()));
        } else if let Some(shard) = self.log.keys.lease_shard(key)
            && let Some(lease) = decode_lease(value)
        {
            self.lease_writes.push((shard, lease));
        }
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> StoreResult<()> {
        self.inner.clear(key)?;
        (1u8, key).hash(&mut self.writes);
        Ok(())
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> StoreResult<()> {
        self.inner.clear_range(begin, end)?;
        (2u8, begin, end).hash(&mut self.writes);
        Ok(())
    }

    fn atomic_add(&mut self, key: &[u8], delta: i64) -> StoreResult<()> {
        self.inner.atomic_add(key, delta)?;
        (3u8, key, delta).hash(&mut self.writes);
        Ok(())
    }

    fn set_versionstamped_key(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.inner.set_versionstamped_key(key, value)?;
        (4u8, key, value).hash(&mut self.writes);
        Ok(())
    }

    fn watch(&mut self, key: &[u8]) -> StoreResult<Watch> {
        self.inner.watch(key)
    }

    async fn commit(self) -> StoreResult<CommitInfo> {
        let Self {
            inner,
            node,
            log,
            lease_reads,
            history_writes,
            lease_writes,
            writes,
        } = self;
        let info = inner.commit().await?;
        let at_ms = tokio::time::Instant::now().saturating_duration_since(log.origin);
        log.trace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TraceEntry {
                at_ms: u64::try_from(at_ms.as_millis()).unwrap_or(u64::MAX),
                node: node.to_string(),
                version: info.version,
                writes_digest: writes.finish(),
            });
        if !history_writes.is_empty() || !lease_writes.is_empty() {
            log.commits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(AuditedCommit {
                    node: node.to_string(),
                    version: info.version,
                    lease_reads,
                    history_writes,
                    lease_writes,
                });
        }
        Ok(info)
    }
}
