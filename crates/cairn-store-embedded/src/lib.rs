//! The embedded store: Cairn's store contract on one machine, durable on local disk.
//!
//! fjall (an LSM tree with a write-ahead journal) holds the data; this crate adds what
//! FoundationDB does in its cluster and fjall does not do in FoundationDB's way: read versions,
//! the conflict resolver, read-your-writes, atomic adds, versionstamps, watches and limits, all
//! from [`cairn_store::kit`], shared with `MemStore` so both behave identically.
//!
//! Invariants:
//! - A commit is one fjall write batch (one journal record): after a crash it is entirely
//!   present or entirely absent. With [`Durability::Fsync`] (the default) `commit()` returns
//!   only after the journal is fsync'd.
//! - Commits are serialized by one lock (conflict check, batch write, version bump); reads run
//!   in parallel on fjall snapshots. Throughput therefore comes from batching work into fewer
//!   commits, which is the engine's job (commit batching), not from concurrent fsyncs.
//! - The commit version is persisted in the same batch as the data, so versions (and
//!   versionstamps) keep increasing across restarts.
//! - One process per data directory: fjall's lock file refuses a second opener, reported as
//!   [`StoreError::Locked`].
//!
//! Why fjall and not redb: see `docs/BENCHMARKS.md` ("Embedded engine choice").

use cairn_store::kit::{LatestReader, Lookup, Resolver, WatchRegistry, WriteBuffer, finalize};
use cairn_store::{
    CommitInfo, KeyValue, Limits, RangeRequest, Store, StoreError, StoreResult, Transaction,
    Version, Versionstamp, Watch,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Name of the keyspace holding user data.
const DATA_KEYSPACE: &str = "data";
/// Name of the keyspace holding the store's own bookkeeping.
const META_KEYSPACE: &str = "meta";
/// Key in the meta keyspace of the last committed version (8 bytes, big-endian).
const VERSION_KEY: &[u8] = b"version";

/// How hard a commit pushes its data towards the disk before returning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// fsync the journal on every commit: survives power loss. The default.
    #[default]
    Fsync,
    /// Hand the journal to the OS on every commit without fsync: survives the process being
    /// killed, not the machine losing power. For benchmarks labelled as such, and tests.
    OsBuffered,
}

/// Settings of an [`EmbeddedStore`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The data directory; created if missing.
    pub path: PathBuf,
    /// Default [`Durability::Fsync`].
    pub durability: Durability,
    /// Default FoundationDB's ([`Limits::default`]).
    pub limits: Limits,
    /// fjall block cache size in bytes. Default 64 MiB.
    pub cache_bytes: u64,
    /// Largest in-memory write buffer (memtable) of the data keyspace before it is flushed to
    /// disk, in bytes. Default 64 MiB (fjall's). Smaller bounds memory; larger batches flushes.
    pub memtable_bytes: u64,
}

impl EmbeddedConfig {
    /// Defaults for a data directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            limits: Limits::default(),
            cache_bytes: 64 * 1024 * 1024,
            memtable_bytes: 64 * 1024 * 1024,
        }
    }

    /// Sets the durability. Default [`Durability::Fsync`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the limits. Default FoundationDB's.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// The embedded durable store.
///
/// # Examples
/// ```
/// use cairn_store::{Store, Transaction};
/// use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
/// let mut tx = store.begin().unwrap();
/// tx.set(b"k", b"v").unwrap();
/// let info = tx.commit().await.unwrap();
/// drop(store);
///
/// let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
/// let mut tx = store.begin().unwrap();
/// assert_eq!(tx.get(b"k").await.unwrap(), Some(b"v".to_vec()));
/// assert_eq!(store.last_version(), info.version);
/// # });
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("version", &self.last_version())
            .finish()
    }
}

struct Inner {
    db: Database,
    data: Keyspace,
    meta: Keyspace,
    path: PathBuf,
    limits: Limits,
    persist: PersistMode,
    /// Last committed version; bumped after the batch is visible in fjall.
    version: AtomicU64,
    commit: Mutex<CommitState>,
    /// Guards snapshots against a batch being applied (see [`Inner::snapshot`]): odd while a
    /// batch is applied, bumped before and after it.
    applying: AtomicU64,
    /// While a batch is applied: fjall's next sequence number when it began (the batch's own
    /// is this or later).
    applying_floor: AtomicU64,
    /// Apart from the commit state, so arming or counting watches never waits for an fsync.
    watches: Mutex<WatchRegistry>,
    /// Unique to this opening of the directory (see `Store::exclusive_opening`).
    opening: String,
}

struct CommitState {
    resolver: Resolver,
}

fn backend_error(e: fjall::Error) -> StoreError {
    StoreError::backend(e)
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `config.path`, recovering from the journal after a crash.
    pub fn open(config: EmbeddedConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.path).map_err(StoreError::backend)?;
        let db = Database::builder(&config.path)
            .cache_size(config.cache_bytes)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StoreError::Locked {
                    path: config.path.display().to_string(),
                },
                other => backend_error(other),
            })?;
        let memtable_bytes = config.memtable_bytes;
        let data = db
            .keyspace(DATA_KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes)
            })
            .map_err(backend_error)?;
        let meta = db
            .keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(backend_error)?;
        let version = match meta.get(VERSION_KEY).map_err(backend_error)? {
            Some(bytes) => {
                let bytes: [u8; 8] =
                    bytes.as_ref().try_into().map_err(|_| StoreError::Backend {
                        message:
                            "stored commit version is not 8 bytes; the data directory is corrupt"
                                .into(),
                    })?;
                Version::from_be_bytes(bytes)
            }
            None => 0,
        };
        tracing::info!(path = %config.path.display(), version, "embedded store opened");
        Ok(Self {
            inner: Arc::new(Inner {
                opening: format!(
                    "{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                ),
                db,
                data,
                meta,
                applying: AtomicU64::new(0),
                applying_floor: AtomicU64::new(0),
                path: config.path,
                limits: config.limits,
                persist: match config.durability {
                    Durability::Fsync => PersistMode::SyncAll,
                    Durability::OsBuffered => PersistMode::Buffer,
                },
                version: AtomicU64::new(version),
                commit: Mutex::new(CommitState {
                    resolver: Resolver::new(
                        config.limits.transaction_age_max + Duration::from_secs(1),
                    ),
                }),
                watches: Mutex::new(WatchRegistry::default()),
            }),
        })
    }

    /// The last committed version.
    pub fn last_version(&self) -> Version {
        self.inner.version.load(Ordering::Acquire)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl Inner {
    /// A fjall snapshot that holds every batch whole or not at all. fjall publishes a batch
    /// only once all of it is in the memtable, but a memtable flush or compaction finishing
    /// meanwhile raises the visible sequence number past the batch being applied, and a
    /// snapshot opened then sees part of it (a marker without its task: `snapshot_race.rs`).
    /// Such a snapshot is recognised — a batch was being applied throughout, and the snapshot
    /// reaches past where that batch began — and opened again; otherwise it is whole.
    fn snapshot(&self) -> Snapshot {
        loop {
            let before = self.applying.load(Ordering::Acquire);
            let floor = self.applying_floor.load(Ordering::Acquire);
            let snapshot = self.db.snapshot();
            let after = self.applying.load(Ordering::Acquire);
            if before == after && (before.is_multiple_of(2) || snapshot.seqno() <= floor) {
                return snapshot;
            }
            drop(snapshot);
            std::thread::yield_now();
        }
    }

    fn lock_commit(&self) -> MutexGuard<'_, CommitState> {
        // Commit state stays consistent across a panic: the resolver and registry are only
        // changed after a batch has been written.
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_watches(&self) -> MutexGuard<'_, WatchRegistry> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The values the keys `buffer` watches have in `snapshot`, the transaction's view: the
    /// baselines of its watches (FoundationDB compares against the value the transaction could
    /// read).
    fn watch_baselines(
        &self,
        snapshot: &Snapshot,
        buffer: &WriteBuffer,
    ) -> StoreResult<Vec<Option<Vec<u8>>>> {
        buffer
            .watched_keys()
            .map(|key| {
                snapshot
                    .get(&self.data, key)
                    .map(|v| v.map(|v| v.to_vec()))
                    .map_err(backend_error)
            })
            .collect()
    }

    /// Commits `buffer`; `snapshot_values` are its watches' baselines (`watch_baselines`).
    fn commit(
        &self,
        read_version: Version,
        snapshot_values: Vec<Option<Vec<u8>>>,
        mut buffer: WriteBuffer,
    ) -> StoreResult<CommitInfo> {
        buffer.check_commit()?;
        if buffer.is_read_only() {
            // As on FoundationDB, a transaction that wrote nothing commits at once: there is
            // nothing to apply and so nothing to conflict, and it never waits behind an fsync.
            let watches = buffer.take_watches();
            self.arm_watches(watches, snapshot_values, &BTreeMap::new())?;
            return Ok(CommitInfo {
                version: read_version,
                versionstamp: Versionstamp::from_version(read_version),
            });
        }
        let mut state = self.lock_commit();
        state.resolver.check(read_version, buffer.read_ranges())?;
        let version = self.version.load(Ordering::Acquire) + 1;
        let versionstamp = Versionstamp::from_version(version);
        let finalized = finalize(buffer.take_mutations(), versionstamp, &Latest(&self.data))?;
        let mut batch = self.db.batch().durability(Some(self.persist));
        for (key, value) in &finalized.writes {
            match value {
                Some(v) => batch.insert(&self.data, key.as_slice(), v.as_slice()),
                None => batch.remove(&self.data, key.as_slice()),
            }
        }
        batch.insert(&self.meta, VERSION_KEY, version.to_be_bytes());
        self.applying_floor
            .store(self.db.seqno(), Ordering::Release);
        self.applying.fetch_add(1, Ordering::AcqRel);
        let applied = batch.commit().map_err(backend_error);
        self.applying.fetch_add(1, Ordering::AcqRel);
        applied?;
        self.version.store(version, Ordering::Release);
        self.lock_watches().notify(&finalized.writes);
        // What this commit wrote to keys it watches (their baseline), kept before the written
        // keys move into the resolver as point conflicts, already sorted.
        let watches = buffer.take_watches();
        let written_watched: BTreeMap<Vec<u8>, Option<Vec<u8>>> = watches
            .iter()
            .filter_map(|(key, _)| finalized.writes.get_key_value(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let points = finalized.writes.into_keys().collect();
        state
            .resolver
            .record(version, points, finalized.cleared_ranges);
        drop(state);
        self.arm_watches(watches, snapshot_values, &written_watched)?;
        Ok(CommitInfo {
            version,
            versionstamp,
        })
    }

    /// Arms a committed transaction's watches. The current value is read under the watch lock,
    /// and commits notify under it after their writes are visible, so a change either shows in
    /// that read (the watch fires at once) or notifies the armed watch: none slips between.
    fn arm_watches(
        &self,
        watches: Vec<(Vec<u8>, tokio::sync::oneshot::Sender<StoreResult<()>>)>,
        snapshot_values: Vec<Option<Vec<u8>>>,
        written: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> StoreResult<()> {
        if watches.is_empty() {
            return Ok(());
        }
        let mut registry = self.lock_watches();
        for ((key, fire), snapshot) in watches.into_iter().zip(snapshot_values) {
            let current = self
                .data
                .get(&key)
                .map_err(backend_error)?
                .map(|v| v.to_vec());
            let baseline = match written.get(&key) {
                Some(value) => value.clone(),
                None => snapshot,
            };
            registry.arm(key, baseline, current.as_deref(), fire);
        }
        Ok(())
    }
}

struct Latest<'a>(&'a Keyspace);

impl LatestReader for Latest<'_> {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.0.get(key).map_err(backend_error)?.map(|v| v.to_vec()))
    }

    fn keys_in(&self, begin: &[u8], end: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
        self.0
            .range(begin..end)
            .map(|guard| guard.key().map(|k| k.to_vec()).map_err(backend_error))
            .collect()
    }
}

impl Store for EmbeddedStore {
    type Tx = EmbeddedTransaction;

    fn begin(&self) -> StoreResult<EmbeddedTransaction> {
        // Version first, snapshot second: the snapshot may then include a newer commit than the
        // read version says, which can only cause a spurious conflict, never a missed one.
        let read_version = self.inner.version.load(Ordering::Acquire);
        let snapshot = self.inner.snapshot();
        // Let the resolver forget old commits even when no commit comes (never waits: a commit
        // in progress prunes anyway).
        if let Ok(mut state) = self.inner.commit.try_lock() {
            state.resolver.prune();
        }
        Ok(EmbeddedTransaction {
            store: self.inner.clone(),
            read_version,
            snapshot,
            buffer: WriteBuffer::new(self.inner.limits),
        })
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The directory is locked to one process, so records of other openings are a dead
    /// process's.
    fn exclusive_opening(&self) -> Option<String> {
        Some(self.inner.opening.clone())
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}

/// An [`EmbeddedStore`] transaction.
pub struct EmbeddedTransaction {
    store: Arc<Inner>,
    read_version: Version,
    snapshot: Snapshot,
    buffer: WriteBuffer,
}

impl std::fmt::Debug for EmbeddedTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTransaction")
            .field("read_version", &self.read_version)
            .finish_non_exhaustive()
    }
}

impl EmbeddedTransaction {
    fn read(&mut self, key: &[u8], snapshot: bool) -> StoreResult<Option<Vec<u8>>> {
        let lookup = self.buffer.begin_get(key, snapshot)?;
        if let Lookup::Known(v) = lookup {
            return Ok(v);
        }
        WriteBuffer::resolve(lookup, || {
            Ok(self
                .snapshot
                .get(&self.store.data, key)
                .map_err(backend_error)?
                .map(|v| v.to_vec()))
        })
    }
}

impl Transaction for EmbeddedTransaction {
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
        let iter = self.snapshot.range(
            &self.store.data,
            range.begin.as_slice()..range.end.as_slice(),
        );
        let to_pair = |guard: fjall::Guard| {
            guard
                .into_inner()
                .map(|(k, v)| KeyValue {
                    key: k.to_vec(),
                    value: v.to_vec(),
                })
                .map_err(backend_error)
        };
        if range.reverse {
            self.buffer.merge_range(range, iter.rev().map(to_pair))
        } else {
            self.buffer.merge_range(range, iter.map(to_pair))
        }
    }

    cairn_store::buffered_writes!(buffer);

    fn watch(&mut self, key: &[u8]) -> StoreResult<Watch> {
        let armed = self.store.lock_watches().len();
        self.buffer.watch(key, armed)
    }

    async fn commit(self) -> StoreResult<CommitInfo> {
        let Self {
            store,
            read_version,
            snapshot,
            buffer,
        } = self;
        let baselines = store.watch_baselines(&snapshot, &buffer)?;
        // Release the snapshot before committing so fjall can reclaim old versions sooner.
        drop(snapshot);
        // The commit blocks on fsync; keep it off the async worker threads.
        tokio::task::spawn_blocking(move || store.commit(read_version, baselines, buffer))
            .await
            .map_err(|e| StoreError::Backend {
                message: format!("commit task failed: {e}"),
            })?
    }
}
