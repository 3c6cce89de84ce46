//! What the SDK's integration tests share: per-key counters, the two stores every feature
//! scenario runs on, and a deadline.

#![allow(dead_code, reason = "each test file uses its own share of these")]

use cairn_store::{FaultConfig, FaultStore, MemStore};
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Counts per key (an activity's idempotency key, a call name), so concurrent tests in one
/// binary do not interfere.
pub struct Counts(Mutex<Option<HashMap<String, u32>>>);

impl Counts {
    pub const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Adds one to `key`'s count; returns the new count.
    pub fn bump(&self, key: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map
            .get_or_insert_with(HashMap::new)
            .entry(key.to_string())
            .or_insert(0);
        *count += 1;
        *count
    }

    /// Adds `delta` (which may be negative) to `key`'s count; returns the new count.
    pub fn add(&self, key: &str, delta: i64) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map
            .get_or_insert_with(HashMap::new)
            .entry(key.to_string())
            .or_insert(0);
        *count = u32::try_from(i64::from(*count) + delta).expect("counts stay non-negative");
        *count
    }

    pub fn get(&self, key: &str) -> u32 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|m| m.get(key).copied())
            .unwrap_or(0)
    }
}

/// `MemStore` behind a `FaultStore` faulting 30% of commits: conflicts and both kinds of
/// `MaybeCommitted`, seeded.
pub fn faulty_store(seed: u64) -> FaultStore<MemStore> {
    FaultStore::new(
        MemStore::new(),
        FaultConfig {
            conflict_probability: 0.1,
            maybe_committed_applied_probability: 0.1,
            maybe_committed_lost_probability: 0.1,
            ..FaultConfig::none(seed)
        },
    )
}

/// A durable embedded store in a fresh directory (removed when the guard drops).
pub fn embedded_store() -> (EmbeddedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    (store, dir)
}

/// The embedded store in `dir` opened again after its process crashed, once the crashed
/// node's handles are released (within 30 s).
pub async fn reopen_embedded(dir: &std::path::Path) -> EmbeddedStore {
    within("reopen", async {
        loop {
            match EmbeddedStore::open(EmbeddedConfig::new(dir)) {
                Ok(store) => break store,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
}

/// Awaits `f`, failing the test after 30 s with `what`.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done in 30 s"))
}

/// Runs each scenario `async fn(store, tag)` twice: on the embedded store (module
/// `embedded_store`) and on a faulty `MemStore` seeded with `$seed` (module
/// `faulty_mem_store`), where a scenario that committed 30 times without a fault fails.
#[allow(
    unused_macros,
    reason = "not every test file runs scenarios on both stores"
)]
macro_rules! on_both_stores {
    (seed: $seed:expr; $($scenario:ident),* $(,)?) => {
        mod embedded_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (store, _dir) = crate::common::embedded_store();
                    super::$scenario(store, concat!("e-", stringify!($scenario))).await;
                }
            )*
        }
        mod faulty_mem_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let store = crate::common::faulty_store($seed);
                    super::$scenario(store.clone(), concat!("f-", stringify!($scenario))).await;
                    let stats = store.stats();
                    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
                    // With 30% of commits faulted, 30 commits without a fault would be a bug.
                    assert!(commits < 30 || stats.faults() > 0, "{commits} commits, no fault injected");
                }
            )*
        }
    };
}
#[allow(
    unused_imports,
    reason = "not every test file runs scenarios on both stores"
)]
pub(crate) use on_both_stores;
