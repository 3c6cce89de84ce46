//! The store conformance suite on the embedded backend, each spec on a fresh data directory.

use cairn_store::Limits;
use cairn_store_embedded::{EmbeddedConfig, EmbeddedStore};
use std::time::Duration;

async fn open() -> Option<(EmbeddedStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let limits = Limits::default().with_transaction_age_max(Duration::from_millis(300));
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path()).limits(limits))
        .expect("open embedded store");
    Some((store, dir))
}

cairn_store::conformance_tests!(open());
