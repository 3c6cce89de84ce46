//! The FoundationDB backend: Cairn's store contract mapped onto the `foundationdb` crate.
//!
//! The contract was shaped after FoundationDB, so this crate is a thin mapping: reads, writes,
//! atomic add (`MutationType::Add`), versionstamped keys (`SetVersionstampedKey`), watches and
//! conflict detection are FoundationDB's own. What it adds:
//! - the same client-side limit checks as the local backends (`cairn_store::kit`), so a bad key
//!   or value is refused at `set` with the same error everywhere rather than at commit;
//! - the error mapping: `not_committed` (1020) → `Conflict`, `commit_unknown_result` (1021) →
//!   `MaybeCommitted`, `transaction_too_old` (1007) → `TransactionTooOld`, and so on.
//!
//! - [`FdbStore::connect_with_client_buggify`]: FoundationDB's client buggify for the process,
//!   so tests meet the library's own random failures (`tests/buggify.rs`).
//!
//! Building it needs libclang (bindgen) and running it needs `libfdb_c`; both sit behind the
//! `fdb` feature, off by default, so `cargo test --workspace` works on a machine without them.
//! CI compile-checks it with `cargo check -p cairn-store-fdb --all-features`, and its
//! conformance suite runs when `FDB_CLUSTER_FILE` names a reachable cluster.

#[cfg(feature = "fdb")]
mod backend;

#[cfg(feature = "fdb")]
pub use backend::{ClientBuggify, FdbStore, FdbTransaction};

/// The environment variable naming the cluster file the conformance tests connect to.
pub const CLUSTER_FILE_ENV: &str = "FDB_CLUSTER_FILE";
