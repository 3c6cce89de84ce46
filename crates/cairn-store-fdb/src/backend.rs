//! The mapping itself (feature `fdb`).

use cairn_store::kit::{
    check_range_bounds, check_read_key, check_value, check_write_key, versionstamp_offset,
};
use cairn_store::{
    CommitInfo, KeyValue, Limits, RangeRequest, Store, StoreError, StoreResult, Transaction,
    Version, Versionstamp, Watch,
};
use foundationdb::options::{MutationType, StreamingMode};
use foundationdb::{Database, FdbError, KeySelector, RangeOption};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// FoundationDB error codes this mapping distinguishes.
mod code {
    pub const TRANSACTION_TOO_OLD: i32 = 1007;
    pub const NOT_COMMITTED: i32 = 1020;
    pub const COMMIT_UNKNOWN_RESULT: i32 = 1021;
    pub const TRANSACTION_CANCELLED: i32 = 1025;
    pub const TOO_MANY_WATCHES: i32 = 1032;
    pub const OPERATION_CANCELLED: i32 = 1101;
    pub const KEY_OUTSIDE_LEGAL_RANGE: i32 = 2004;
    pub const INVERTED_RANGE: i32 = 2005;
    pub const TRANSACTION_TOO_LARGE: i32 = 2101;
    pub const KEY_TOO_LARGE: i32 = 2102;
    pub const VALUE_TOO_LARGE: i32 = 2103;
}

/// FoundationDB's client buggify: the client library then fails requests at random, as a
/// faulty network or cluster would (`commit_unknown_result` for commits that did and did not
/// land, among others), which is how a client proves it survives them. Each `CLIENT_BUGGIFY`
/// section of the library is active with probability `activated_percent` (decided once per
/// section and process) and, if active, fires with probability `fired_percent` each time it
/// is passed. Set once per process, before the network starts (see
/// [`FdbStore::connect_with_client_buggify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientBuggify {
    pub activated_percent: i32,
    pub fired_percent: i32,
}

/// The FoundationDB network thread runs once per process and for the rest of it: the client
/// library cannot be restarted after it stops. Holds the client buggify it started with.
static NETWORK: OnceLock<Option<ClientBuggify>> = OnceLock::new();

fn boot_network(buggify: Option<ClientBuggify>) -> StoreResult<()> {
    let running = *NETWORK.get_or_init(|| {
        let mut network = foundationdb::api::FdbApiBuilder::default()
            .build()
            .expect("the FoundationDB API version is selected once per process");
        if let Some(b) = buggify {
            use foundationdb::options::NetworkOption;
            network = network
                .set_option(NetworkOption::ClientBuggifyEnable)
                .and_then(|n| {
                    n.set_option(NetworkOption::ClientBuggifySectionActivatedProbability(
                        b.activated_percent,
                    ))
                })
                .and_then(|n| {
                    n.set_option(NetworkOption::ClientBuggifySectionFiredProbability(
                        b.fired_percent,
                    ))
                })
                .expect("FoundationDB accepts the client buggify options");
        }
        // SAFETY: `boot` must be called at most once per process and its guard must outlive
        // every database handle. The `OnceLock` gives the first property; leaking the guard
        // (never stopping the network) gives the second.
        #[allow(unsafe_code)]
        let guard = unsafe { network.boot() }.expect("the FoundationDB network starts");
        std::mem::forget(guard);
        buggify
    });
    if running != buggify {
        return Err(StoreError::Backend {
            message: format!(
                "the FoundationDB network of this process runs with client buggify {running:?}, \
                 not {buggify:?}: it is set once, before the first connection"
            ),
        });
    }
    Ok(())
}

/// A FoundationDB-backed store.
#[derive(Clone)]
pub struct FdbStore {
    db: Arc<Database>,
    limits: Limits,
}

impl std::fmt::Debug for FdbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbStore").finish_non_exhaustive()
    }
}

impl FdbStore {
    /// Connects using `cluster_file` (or the client library's default when `None`), starting
    /// the network thread on first use.
    pub fn connect(cluster_file: Option<&str>) -> StoreResult<Self> {
        Self::connect_inner(cluster_file, None)
    }

    /// [`Self::connect`], with FoundationDB's client buggify on for the whole process (for
    /// fault tests). Refused if this process already connected without it, or with other
    /// probabilities.
    pub fn connect_with_client_buggify(
        cluster_file: Option<&str>,
        buggify: ClientBuggify,
    ) -> StoreResult<Self> {
        Self::connect_inner(cluster_file, Some(buggify))
    }

    fn connect_inner(
        cluster_file: Option<&str>,
        buggify: Option<ClientBuggify>,
    ) -> StoreResult<Self> {
        boot_network(buggify)?;
        let db = Database::new(cluster_file).map_err(map_error_without_age)?;
        Ok(Self {
            db: Arc::new(db),
            limits: Limits::default(),
        })
    }
}

impl Store for FdbStore {
    type Tx = FdbTransaction;

    fn begin(&self) -> StoreResult<FdbTransaction> {
        let tx = self.db.create_trx().map_err(map_error_without_age)?;
        Ok(FdbTransaction {
            tx,
            limits: self.limits,
            started: Instant::now(),
            wrote: false,
        })
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn backend_name(&self) -> &'static str {
        "fdb"
    }

    /// Reads in flight together, and the transaction caches what it read (read-your-writes).
    fn reads_ahead_pay(&self) -> bool {
        true
    }

    /// A commit is mostly a wait on the cluster's round trips: batches overlap them.
    fn commit_batches_in_flight(&self) -> usize {
        COMMIT_BATCHES_IN_FLIGHT
    }
}

/// Commit batches a node keeps in flight on FoundationDB (`Store::commit_batches_in_flight`).
pub const COMMIT_BATCHES_IN_FLIGHT: usize = 4;

/// A FoundationDB transaction.
pub struct FdbTransaction {
    tx: foundationdb::Transaction,
    limits: Limits,
    started: Instant,
    wrote: bool,
}

impl std::fmt::Debug for FdbTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdbTransaction")
            .field("wrote", &self.wrote)
            .finish_non_exhaustive()
    }
}

fn map_error_without_age(error: FdbError) -> StoreError {
    map_error(error, None, &Limits::default())
}

fn map_error(error: FdbError, started: Option<Instant>, limits: &Limits) -> StoreError {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match error.code() {
        code::NOT_COMMITTED => StoreError::Conflict,
        code::COMMIT_UNKNOWN_RESULT => StoreError::MaybeCommitted,
        code::TRANSACTION_TOO_OLD => StoreError::TransactionTooOld {
            age_ms: started.map_or(0, |s| millis(s.elapsed())),
            limit_ms: millis(limits.transaction_age_max),
        },
        code::TRANSACTION_CANCELLED | code::OPERATION_CANCELLED => StoreError::WatchCancelled,
        code::TOO_MANY_WATCHES => StoreError::TooManyWatches {
            count: limits.watches_max,
            limit: limits.watches_max,
        },
        code::KEY_OUTSIDE_LEGAL_RANGE => StoreError::KeyOutsideLegalRange,
        code::INVERTED_RANGE => StoreError::InvalidRange,
        // FoundationDB does not report the size; the client-side checks catch keys and values
        // before they get here, so only the transaction total can reach these arms in practice.
        code::TRANSACTION_TOO_LARGE => StoreError::TransactionTooLarge {
            size: limits.transaction_bytes_max + 1,
            limit: limits.transaction_bytes_max,
        },
        code::KEY_TOO_LARGE => StoreError::KeyTooLarge {
            size: limits.key_bytes_max + 1,
            limit: limits.key_bytes_max,
        },
        code::VALUE_TOO_LARGE => StoreError::ValueTooLarge {
            size: limits.value_bytes_max + 1,
            limit: limits.value_bytes_max,
        },
        _ if error.is_maybe_committed() => StoreError::MaybeCommitted,
        _ if error.is_retryable_not_committed() => StoreError::Conflict,
        code => StoreError::Backend {
            message: format!("FoundationDB error {code}: {}", error.message()),
        },
    }
}

/// Refuses a transaction past the age limit, as the local backends do. FoundationDB refuses
/// it only once its read version leaves the storage servers' window, which happens some time
/// after 5 s, and never for a read its read-your-writes cache answers: checked here, the limit
/// is the same sharp one on every backend.
fn check_age(started: Instant, limits: &Limits) -> StoreResult<()> {
    let age = started.elapsed();
    if age <= limits.transaction_age_max {
        return Ok(());
    }
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Err(StoreError::TransactionTooOld {
        age_ms: millis(age),
        limit_ms: millis(limits.transaction_age_max),
    })
}

impl FdbTransaction {
    fn fail(&self, error: FdbError) -> StoreError {
        map_error(error, Some(self.started), &self.limits)
    }

    async fn read(&mut self, key: &[u8], snapshot: bool) -> StoreResult<Option<Vec<u8>>> {
        check_read_key(&self.limits, key)?;
        check_age(self.started, &self.limits)?;
        let value = self.tx.get(key, snapshot).await.map_err(|e| self.fail(e))?;
        Ok(value.map(|v| v.to_vec()))
    }
}

impl Transaction for FdbTransaction {
    async fn get(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.read(key, false).await
    }

    async fn get_snapshot(&mut self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.read(key, true).await
    }

    /// All in flight together: one round trip to the storage servers, not one per key.
    async fn get_many(&mut self, keys: &[Vec<u8>]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        for key in keys {
            check_read_key(&self.limits, key)?;
        }
        check_age(self.started, &self.limits)?;
        let tx = &self.tx;
        let values = futures::future::try_join_all(keys.iter().map(|key| tx.get(key, false)))
            .await
            .map_err(|e| self.fail(e))?;
        Ok(values.into_iter().map(|v| v.map(|v| v.to_vec())).collect())
    }

    async fn get_range(&mut self, range: &RangeRequest) -> StoreResult<Vec<KeyValue>> {
        check_range_bounds(&self.limits, &range.begin, &range.end)?;
        if range.begin >= range.end || range.limit == Some(0) {
            return Ok(Vec::new());
        }
        check_age(self.started, &self.limits)?;
        let mut option = RangeOption {
            begin: KeySelector::first_greater_or_equal(range.begin.clone()),
            end: KeySelector::first_greater_or_equal(range.end.clone()),
            limit: range.limit,
            mode: StreamingMode::WantAll,
            reverse: range.reverse,
            ..RangeOption::default()
        };
        let mut out = Vec::new();
        let mut iteration = 1;
        loop {
            let values = self
                .tx
                .get_range(&option, iteration, range.snapshot)
                .await
                .map_err(|e| self.fail(e))?;
            out.extend(values.iter().map(|kv| KeyValue {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
            }));
            match option.next_range(&values) {
                Some(next) => option = next,
                None => break,
            }
            iteration += 1;
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        check_write_key(&self.limits, key)?;
        check_value(&self.limits, value)?;
        self.wrote = true;
        self.tx.set(key, value);
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> StoreResult<()> {
        check_write_key(&self.limits, key)?;
        self.wrote = true;
        self.tx.clear(key);
        Ok(())
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> StoreResult<()> {
        // The same checks, in the same order, as the local backends.
        check_range_bounds(&self.limits, begin, end)?;
        if begin > end {
            return Err(StoreError::InvalidRange);
        }
        self.wrote = true;
        self.tx.clear_range(begin, end);
        Ok(())
    }

    fn atomic_add(&mut self, key: &[u8], delta: i64) -> StoreResult<()> {
        check_write_key(&self.limits, key)?;
        self.wrote = true;
        self.tx
            .atomic_op(key, &delta.to_le_bytes(), MutationType::Add);
        Ok(())
    }

    fn set_versionstamped_key(&mut self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        let (body, _offset) = versionstamp_offset(key)?;
        check_write_key(&self.limits, body)?;
        check_value(&self.limits, value)?;
        self.wrote = true;
        self.tx
            .atomic_op(key, value, MutationType::SetVersionstampedKey);
        Ok(())
    }

    fn watch(&mut self, key: &[u8]) -> StoreResult<Watch> {
        check_read_key(&self.limits, key)?;
        let limits = self.limits;
        let started = self.started;
        let fired = self.tx.watch(key);
        Ok(Watch::new(async move {
            fired
                .await
                .map_err(|e| map_error(e, Some(started), &limits))
        }))
    }

    async fn commit(self) -> StoreResult<CommitInfo> {
        let Self {
            tx,
            limits,
            started,
            wrote,
        } = self;
        check_age(started, &limits)?;
        if !wrote {
            let read_version = tx
                .get_read_version()
                .await
                .map_err(|e| map_error(e, Some(started), &limits))?;
            tx.commit()
                .await
                .map_err(|e| map_error(*e, Some(started), &limits))?;
            let version = Version::try_from(read_version).unwrap_or(0);
            return Ok(CommitInfo {
                version,
                versionstamp: Versionstamp::from_version(version),
            });
        }
        let stamp = tx.get_versionstamp();
        let committed = tx
            .commit()
            .await
            .map_err(|e| map_error(*e, Some(started), &limits))?;
        let version = committed
            .committed_version()
            .map_err(|e| map_error(e, Some(started), &limits))?;
        let stamp = stamp
            .await
            .map_err(|e| map_error(e, Some(started), &limits))?;
        let mut bytes = [0u8; 10];
        if stamp.len() != bytes.len() {
            return Err(StoreError::Backend {
                message: format!("FoundationDB returned a {}-byte versionstamp", stamp.len()),
            });
        }
        bytes.copy_from_slice(&stamp);
        Ok(CommitInfo {
            version: Version::try_from(version).unwrap_or(0),
            versionstamp: Versionstamp(bytes),
        })
    }
}
