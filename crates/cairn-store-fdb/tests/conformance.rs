//! The store conformance suite against a real FoundationDB cluster, when one is configured.
//!
//! Needs the `fdb` feature (libclang to build, libfdb_c to run) and `FDB_CLUSTER_FILE` naming
//! a reachable cluster; without the variable every spec prints why it skipped and returns.
#![cfg(feature = "fdb")]

use cairn_store_fdb::{CLUSTER_FILE_ENV, FdbStore};

async fn connect() -> Option<(FdbStore, ())> {
    let Ok(cluster_file) = std::env::var(CLUSTER_FILE_ENV) else {
        println!("skipped: {CLUSTER_FILE_ENV} not set");
        return None;
    };
    let store = FdbStore::connect(Some(&cluster_file)).expect("connect to FoundationDB");
    Some((store, ()))
}

cairn_store::conformance_tests!(connect());
